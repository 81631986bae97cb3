//! Rate pacing for the generator: a token bucket over a monotonic clock the
//! caller passes in (so tests drive it with fabricated times).
//!
//! Invariant: over any interval, packets allowed ≤ rate × elapsed + burst.
//! A generator that falls behind (preempted, ring full) does not catch up in
//! one burst at line rate: debt beyond `max_debt` is forgiven and counted, so
//! the offered rate stays honest (reported, not hidden).

/// Paces sends at a fixed rate, or not at all (`rate = None`: as fast as possible).
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_pps: Option<u64>,
    start_ns: u64,
    /// Packets credited as sent (actually sent + forgiven).
    credited: u64,
    burst: u64,
    max_debt: u64,
    forgiven: u64,
}

impl Pacer {
    /// A pacer starting at `start_ns`; at most `burst` packets per allowance.
    pub fn new(rate_pps: Option<u64>, burst: u32, start_ns: u64) -> Pacer {
        let burst = u64::from(burst.max(1));
        // Debt worth 1 ms of traffic (at least a few bursts) may be caught up.
        let max_debt = rate_pps.map_or(u64::MAX, |r| (r / 1000).max(4 * burst));
        Pacer {
            rate_pps: rate_pps.filter(|&r| r > 0),
            start_ns,
            credited: 0,
            burst,
            max_debt,
            forgiven: 0,
        }
    }

    fn due(&self, now_ns: u64) -> u64 {
        match self.rate_pps {
            None => u64::MAX,
            Some(r) => {
                let el = u128::from(now_ns.saturating_sub(self.start_ns));
                (el * u128::from(r) / 1_000_000_000) as u64
            }
        }
    }

    /// How many packets may go out at `now_ns` (0..=burst). Forgives debt
    /// beyond the limit as a side effect.
    pub fn allowance(&mut self, now_ns: u64) -> u64 {
        if self.rate_pps.is_none() {
            return self.burst;
        }
        let due = self.due(now_ns);
        let debt = due.saturating_sub(self.credited);
        if debt > self.max_debt {
            let f = debt - self.max_debt;
            self.forgiven += f;
            self.credited += f;
        }
        due.saturating_sub(self.credited).min(self.burst)
    }

    /// Record `n` packets sent.
    pub fn sent(&mut self, n: u64) {
        self.credited += n;
    }

    /// Nanoseconds from `now_ns` until the next packet is due (0 if one is).
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        let Some(r) = self.rate_pps else { return 0 };
        if self.due(now_ns) > self.credited {
            return 0;
        }
        // The time at which due() reaches credited + 1.
        let next = (u128::from(self.credited) + 1) * 1_000_000_000;
        let at = self.start_ns as u128 + next.div_ceil(u128::from(r));
        (at.saturating_sub(u128::from(now_ns))) as u64
    }

    /// Packets the generator fell behind by and did not send (rate mode).
    pub fn forgiven(&self) -> u64 {
        self.forgiven
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn unpaced_always_allows_a_burst() {
        let mut p = Pacer::new(None, 64, 0);
        assert_eq!(p.allowance(0), 64);
        p.sent(64);
        assert_eq!(p.allowance(0), 64);
        assert_eq!(p.wait_ns(0), 0);
    }

    #[test]
    fn a_steady_sender_gets_exactly_the_rate() {
        // 1 Mpps, polled every microsecond for one second.
        let mut p = Pacer::new(Some(1_000_000), 64, 5_000);
        let mut sent = 0;
        for us in 0..=1_000_000u64 {
            let a = p.allowance(5_000 + us * 1_000);
            p.sent(a);
            sent += a;
        }
        assert_eq!(sent, 1_000_000);
        assert_eq!(p.forgiven(), 0);
    }

    #[test]
    fn allowance_is_capped_by_the_burst_and_never_exceeds_the_rate() {
        let mut p = Pacer::new(Some(10_000_000), 32, 0);
        // 100 µs = 1000 packets due, but one call hands out at most 32.
        assert_eq!(p.allowance(100_000), 32);
        let mut total = 0;
        for _ in 0..100 {
            let a = p.allowance(100_000);
            p.sent(a);
            total += a;
        }
        assert_eq!(total, 1000, "no more than due at a fixed instant");
        assert_eq!(p.allowance(100_000), 0);
    }

    #[test]
    fn a_stall_is_forgiven_beyond_one_millisecond_of_debt() {
        let mut p = Pacer::new(Some(1_000_000), 64, 0);
        // Stalled for 100 ms: 100k packets due; only 1 ms (1000) may be caught up.
        let mut caught_up = 0;
        loop {
            let a = p.allowance(100 * MS);
            if a == 0 {
                break;
            }
            p.sent(a);
            caught_up += a;
        }
        assert_eq!(caught_up, 1000);
        assert_eq!(p.forgiven(), 99_000);
        // Then the rate continues from there.
        assert_eq!(p.allowance(100 * MS + 10_000), 10);
    }

    #[test]
    fn wait_reports_the_time_to_the_next_packet() {
        let mut p = Pacer::new(Some(1_000), 8, 0); // one per ms
        assert_eq!(p.allowance(0), 0);
        assert_eq!(p.wait_ns(0), MS);
        assert_eq!(p.allowance(MS), 1);
        p.sent(1);
        assert_eq!(p.wait_ns(MS), MS);
        assert_eq!(p.wait_ns(MS + MS / 2), MS / 2);
        assert_eq!(p.wait_ns(3 * MS), 0);
    }
}
