//! The generator's receive-side accounting: per-flow sequence tracking (received, reordered,
//! highest sequence seen), a latency histogram with ~1.5 % resolution, and
//! the loss report that ties TX and RX counts together.
//!
//! Definitions (what the summary's numbers mean):
//! - *reordered*: a packet whose sequence is below the highest already seen
//!   in its flow (late arrival); duplicates count here too.
//! - *lost*: sent − received per flow (when the TX counts are known); else
//!   the estimate (highest seq + 1) − received, which cannot see tail loss.
//! - latency: RX time − TX stamp, both CLOCK_MONOTONIC on the same host.
//!
//! And the summaries the suites put in their tables: [`Spread`] (median,
//! min, max over repetitions).

use serde::Serialize;

use crate::frames::{Stamp, MAX_FLOWS};

/// Sub-buckets per power of two (6 bits: worst-case error 1/64).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Bucket count covering all of u64.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// A log-linear histogram of nanosecond values (HDR-style, fixed memory).
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros()); // >= SUB_BITS
    let shift = e - u64::from(SUB_BITS);
    let mant = (v >> shift) - SUB; // 0..SUB
    (SUB + shift * SUB + mant) as usize
}

fn bucket_low(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let mant = (i - SUB) % SUB + SUB;
    mant << shift
}

impl Histogram {
    /// Add one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Add another histogram's values.
    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1): the lower bound of the bucket that
    /// holds the ⌈q·n⌉-th smallest value, clamped to [min, max]. 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The value at each of `percents` (0..=100), as (percent, value) pairs:
    /// a CDF to plot.
    pub fn cdf(&self, percents: &[f64]) -> Vec<(f64, u64)> {
        if self.total == 0 {
            return Vec::new();
        }
        percents
            .iter()
            .map(|&p| {
                let v = if p <= 0.0 {
                    self.min
                } else if p >= 100.0 {
                    self.max
                } else {
                    self.quantile(p / 100.0)
                };
                (p, v)
            })
            .collect()
    }

    /// Summary for reports.
    pub fn summary(&self) -> LatencySummary {
        let n = self.total;
        LatencySummary {
            samples: n,
            min_ns: if n == 0 { 0 } else { self.min },
            p50_ns: self.quantile(0.50),
            p90_ns: self.quantile(0.90),
            p99_ns: self.quantile(0.99),
            max_ns: self.max,
            mean_ns: if n == 0 {
                0
            } else {
                (self.sum / u128::from(n)) as u64
            },
        }
    }
}

/// The percent points a latency CDF is reported at.
pub const CDF_POINTS: [f64; 29] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0,
    70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 97.5, 99.0, 99.5, 99.9, 99.99, 100.0,
];

/// Latency percentiles, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub samples: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: u64,
}

/// One flow's receive state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowRx {
    /// Packets received.
    pub received: u64,
    /// Highest sequence + 1 seen (0 = nothing yet).
    pub next_seq: u64,
    /// Packets that arrived after a higher sequence of the same flow.
    pub reordered: u64,
}

/// Everything one receiver counted.
#[derive(Debug, Clone, Default)]
pub struct RxStats {
    /// Per flow, indexed by the stamp's flow number.
    pub flows: Vec<FlowRx>,
    /// Stamped packets.
    pub packets: u64,
    /// Their bytes (buffer lengths, without FCS).
    pub bytes: u64,
    /// Frames without a (valid) stamp: someone else's traffic.
    pub foreign: u64,
    /// Stamped frames whose L4 checksum does not verify.
    pub bad_checksum: u64,
    /// Latency of stamped packets.
    pub latency: Histogram,
}

impl RxStats {
    /// Account one stamped packet received at `rx_ns`.
    #[inline]
    pub fn record(&mut self, s: &Stamp, rx_ns: u64, bytes: usize) {
        if s.flow >= MAX_FLOWS {
            self.foreign += 1;
            return;
        }
        let i = s.flow as usize;
        if i >= self.flows.len() {
            self.flows.resize(i + 1, FlowRx::default());
        }
        let f = &mut self.flows[i];
        f.received += 1;
        let seq = u64::from(s.seq);
        if seq < f.next_seq {
            f.reordered += 1;
        } else {
            f.next_seq = seq + 1;
        }
        self.packets += 1;
        self.bytes += bytes as u64;
        self.latency.record(rx_ns.saturating_sub(s.tx_ns));
    }

    /// Fold another receiver's counts in (flows are disjoint or additive).
    pub fn merge(&mut self, o: &RxStats) {
        if o.flows.len() > self.flows.len() {
            self.flows.resize(o.flows.len(), FlowRx::default());
        }
        for (a, b) in self.flows.iter_mut().zip(&o.flows) {
            a.received += b.received;
            a.reordered += b.reordered;
            a.next_seq = a.next_seq.max(b.next_seq);
        }
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.foreign += o.foreign;
        self.bad_checksum += o.bad_checksum;
        self.latency.merge(&o.latency);
    }

    /// Reordered packets over all flows.
    pub fn reordered(&self) -> u64 {
        self.flows.iter().map(|f| f.reordered).sum()
    }
}

/// The loss picture of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LossReport {
    /// Packets sent (or, without TX counts, the highest sequences + 1).
    pub sent: u64,
    /// Stamped packets received.
    pub received: u64,
    /// sent − received, per flow, never negative.
    pub lost: u64,
    /// Received beyond what a flow sent (duplicates).
    pub duplicates: u64,
    /// Late arrivals.
    pub reordered: u64,
    /// Whether `sent` came from the sender (exact) or from sequences (estimate).
    pub exact: bool,
}

impl LossReport {
    /// Loss as a fraction of sent (0 when nothing was sent).
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64
        }
    }
}

/// Tie per-flow TX counts to what arrived: `sent = received + lost − duplicates`.
pub fn account(sent_per_flow: &[u64], rx: &RxStats) -> LossReport {
    let mut r = LossReport {
        exact: true,
        reordered: rx.reordered(),
        ..LossReport::default()
    };
    let n = sent_per_flow.len().max(rx.flows.len());
    for i in 0..n {
        let sent = sent_per_flow.get(i).copied().unwrap_or(0);
        let got = rx.flows.get(i).map_or(0, |f| f.received);
        r.sent += sent;
        r.received += got;
        r.lost += sent.saturating_sub(got);
        r.duplicates += got.saturating_sub(sent);
    }
    r
}

/// Without TX counts: each flow is assumed to have sent up to its highest
/// sequence seen (tail loss is invisible).
pub fn estimate(rx: &RxStats) -> LossReport {
    let sent: Vec<u64> = rx.flows.iter().map(|f| f.next_seq).collect();
    LossReport {
        exact: false,
        ..account(&sent, rx)
    }
}

/// Median, min, max of one metric.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

/// Median/min/max of `v` (empty → zeros).
pub fn spread(v: &[f64]) -> Spread {
    if v.is_empty() {
        return Spread::default();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Spread {
        median,
        min: s[0],
        max: s[n - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_min_max() {
        let s = spread(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[1.0, 4.0]).median, 2.5);
        assert_eq!(spread(&[]).median, 0.0);
    }

    #[test]
    fn the_cdf_is_monotonic_and_spans_min_to_max() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 100);
        }
        let c = h.cdf(&CDF_POINTS);
        assert_eq!(c.len(), CDF_POINTS.len());
        assert_eq!(c[0], (0.0, 100));
        assert_eq!(c.last().copied(), Some((100.0, 1_000_000)));
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1), "{c:?}");
        let p50 = c.iter().find(|x| x.0 == 50.0).expect("p50").1;
        assert!((p50 as f64 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        assert!(Histogram::default().cdf(&CDF_POINTS).is_empty());
    }

    fn st(flow: u32, seq: u32, tx_ns: u64) -> Stamp {
        Stamp { flow, seq, tx_ns }
    }

    #[test]
    fn buckets_are_monotone_and_tight() {
        let mut last = 0;
        for v in (0..1_000_000u64).step_by(7).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= last, "{v}");
            last = b;
            let lo = bucket_low(b);
            assert!(lo <= v, "{v}: low {lo}");
            // Within 1/64 of the value.
            assert!(v - lo <= v / 64 + 1, "{v}: low {lo}");
            assert!(b < BUCKETS);
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1_000); // 1 µs .. 10 ms, uniform
        }
        let s = h.summary();
        assert_eq!(s.samples, 10_000);
        assert_eq!(s.min_ns, 1_000);
        assert_eq!(s.max_ns, 10_000_000);
        let near = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.02, "{got} vs {want}");
        };
        near(s.p50_ns, 5_000_000);
        near(s.p90_ns, 9_000_000);
        near(s.p99_ns, 9_900_000);
        near(s.mean_ns, 5_000_500);
        assert_eq!(Histogram::default().summary(), LatencySummary::default());
    }

    #[test]
    fn a_single_value_is_every_percentile() {
        let mut h = Histogram::default();
        h.record(12_345);
        let s = h.summary();
        assert_eq!(
            (s.p50_ns, s.p99_ns, s.min_ns, s.max_ns),
            (12_345, 12_345, 12_345, 12_345)
        );
    }

    #[test]
    fn in_order_delivery_has_no_reordering_and_exact_loss() {
        let mut rx = RxStats::default();
        for seq in 0..100 {
            if seq % 10 != 3 {
                rx.record(&st(0, seq, 0), 500, 60);
            }
        }
        for seq in 0..50 {
            rx.record(&st(1, seq, 0), 500, 60);
        }
        let r = account(&[100, 60], &rx);
        assert_eq!(r.sent, 160);
        assert_eq!(r.received, 140);
        assert_eq!(r.lost, 20);
        assert_eq!(r.reordered, 0);
        assert_eq!(r.sent, r.received + r.lost - r.duplicates);
        assert!((r.loss_ratio() - 0.125).abs() < 1e-9);
        // Without TX counts the tail loss of flow 1 is invisible.
        let e = estimate(&rx);
        assert!(!e.exact);
        assert_eq!((e.sent, e.lost), (150, 10));
        assert_eq!(rx.latency.summary().p50_ns, 500);
        assert_eq!(rx.bytes, 140 * 60);
    }

    #[test]
    fn late_arrivals_and_duplicates_are_counted() {
        let mut rx = RxStats::default();
        for seq in [0, 1, 3, 2, 4, 4, 7, 5, 6] {
            rx.record(&st(2, seq, 0), 0, 60);
        }
        assert_eq!(
            rx.reordered(),
            4,
            "2 after 3; the second 4; 5 and 6 after 7"
        );
        let r = account(&[0, 0, 8], &rx);
        assert_eq!((r.received, r.lost, r.duplicates), (9, 0, 1));
        assert_eq!(r.sent + r.duplicates, r.received + r.lost);
    }

    #[test]
    fn merge_adds_flows_and_histograms() {
        let mut a = RxStats::default();
        let mut b = RxStats::default();
        a.record(&st(0, 0, 100), 200, 60);
        b.record(&st(3, 0, 100), 400, 60);
        b.bad_checksum = 2;
        a.merge(&b);
        assert_eq!(a.flows.len(), 4);
        assert_eq!(a.packets, 2);
        assert_eq!(a.bad_checksum, 2);
        assert_eq!(a.latency.summary().max_ns, 300);
        assert_eq!(a.latency.summary().min_ns, 100);
    }

    #[test]
    fn absurd_flow_numbers_are_foreign_not_allocations() {
        let mut rx = RxStats::default();
        rx.record(&st(u32::MAX, 0, 0), 0, 60);
        assert_eq!(rx.foreign, 1);
        assert!(rx.flows.is_empty());
    }
}
