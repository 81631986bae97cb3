//! What the harness reports and how: the generator's loss and latency
//! accounting and the suites' medians ([`stats`]), charts ([`chart`]), and
//! the Markdown + JSON files every suite writes, with the facts each
//! report's header records (here).
//!
//! Nothing here knows a suite: each suite builds its own report type and
//! tables and hands them to these functions.

pub mod chart;
pub mod stats;

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use xlb_testkit::sh;

/// Write `markdown` to `dir/name.md` and `report` as pretty JSON to
/// `dir/name.json`, creating `dir`.
pub fn write(dir: &Path, name: &str, markdown: &str, report: &impl Serialize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(report)?,
    )?;
    Ok(())
}

/// Now, UTC (`date -u`), for a report's header.
pub fn utc_now() -> String {
    sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The running kernel (`uname -r`), for a report's header.
pub fn kernel() -> String {
    sh(&["uname", "-r"]).unwrap_or_default().trim().to_string()
}

/// A ratio as the tables print it ("1.23×"), or "–" when there is none.
pub fn times(ratio: Option<f64>) -> String {
    ratio.map_or("–".to_string(), |v| format!("{v:.2}×"))
}

/// Repetitions in a list of runs numbered from 0 (the highest plus one).
pub fn reps(rep_numbers: impl Iterator<Item = u32>) -> u32 {
    rep_numbers.max().map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_print_with_two_decimals_or_a_dash() {
        assert_eq!(times(Some(1.3333)), "1.33×");
        assert_eq!(times(None), "–");
        assert_eq!(reps([0, 2, 1].into_iter()), 3);
        assert_eq!(reps(std::iter::empty()), 0);
    }
}
