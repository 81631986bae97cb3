//! loxilb's renderings of probe results for `GET /config/endpoint/all`:
//! delays are Go `time.Duration` strings (`fmt.Sprintf("%v", d)`), shown by
//! loxilb for ping probes only, and states are "ok" / "nok".

use std::time::Duration;

use crate::engine::ProbeState;

impl ProbeState {
    /// loxilb's `currState`: "ok" for Up, "nok" for Down.
    pub fn as_loxilb(self) -> &'static str {
        match self {
            ProbeState::Up => "ok",
            ProbeState::Down => "nok",
        }
    }
}

/// Formats `d` as Go's `time.Duration.String()` does: "0s", "850ns",
/// "1.5µs", "1.234567ms", "2.5s", "1m1s", "1h0m0s". Durations past Go's
/// range (about 292 years) saturate.
pub fn go_duration(d: Duration) -> String {
    let u = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000_000_000 {
        let (unit, prec) = match u {
            0..1_000 => return format!("{u}ns"),
            1_000..1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        return format!("{}{unit}", frac(u, prec));
    }
    let secs_part = frac(u % 60_000_000_000, 9);
    let mins = u / 60_000_000_000;
    if mins == 0 {
        return format!("{secs_part}s");
    }
    let hours = mins / 60;
    if hours == 0 {
        return format!("{mins}m{secs_part}s");
    }
    format!("{hours}h{}m{secs_part}s", mins % 60)
}

/// `v / 10^prec` with the fraction's trailing zeros (and a bare point) dropped.
fn frac(v: u64, prec: u32) -> String {
    let p = 10u64.pow(prec);
    let (int, mut f) = (v / p, v % p);
    if f == 0 {
        return int.to_string();
    }
    let mut digits = prec as usize;
    while f % 10 == 0 {
        f /= 10;
        digits -= 1;
    }
    format!("{int}.{f:0digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_duration_strings() {
        let ns = Duration::from_nanos;
        for (d, want) in [
            (ns(0), "0s"),
            (ns(1), "1ns"),
            (ns(999), "999ns"),
            (ns(1_000), "1µs"),
            (ns(1_500), "1.5µs"),
            (ns(1_000_000), "1ms"),
            (ns(1_234_567), "1.234567ms"),
            (ns(1_050_000), "1.05ms"),
            (ns(1_000_000_001), "1.000000001s"),
            (Duration::from_millis(2500), "2.5s"),
            (Duration::from_secs(61), "1m1s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
        ] {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
        assert_eq!(ProbeState::Down.as_loxilb(), "nok");
    }
}
