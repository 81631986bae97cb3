//! The bench report as a bar chart (SVG via plotters; the harness converts
//! it to PNG with rsvg-convert when available): per contender, offered and
//! delivered Mpps (median bars, min–max whiskers).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::bench::BenchReport;

/// Draw `r` into an SVG file at `path`.
pub fn bars(r: &BenchReport, path: &Path) -> Result<()> {
    let n = r.summary.len().max(1);
    let ymax = r
        .summary
        .iter()
        .map(|s| s.offered.max.max(s.delivered.max))
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.25;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let reps = r.runs.iter().map(|x| x.rep).max().map_or(0, |m| m + 1);
    let placements = {
        let mut v: Vec<_> = r.summary.iter().map(|s| s.placement).collect();
        v.dedup();
        v.len()
    };
    let labels: Vec<String> = r
        .summary
        .iter()
        .map(|s| {
            if placements > 1 {
                format!("{} ({})", s.contender.short(), s.placement.short())
            } else {
                s.contender.label().to_string()
            }
        })
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("UDP 64 B, 1024 flows: Mpps (median of {reps}, min-max whiskers)"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| bar_label(&labels, *x))
        .y_desc("million packets per second")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    let offered = RGBColor(170, 190, 220);
    let delivered = RGBColor(30, 90, 170);
    for (i, s) in r.summary.iter().enumerate() {
        let x = i as f64;
        for (k, (sp, col)) in [(&s.offered, offered), (&s.delivered, delivered)]
            .into_iter()
            .enumerate()
        {
            let x0 = x + 0.18 + k as f64 * 0.32;
            let x1 = x0 + 0.3;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, sp.median)],
                    col.filled(),
                )))
                .map_err(|e| anyhow!("{e:?}"))?;
            let xm = (x0 + x1) / 2.0;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(xm, sp.min), (xm, sp.max)],
                    BLACK.stroke_width(2),
                )))
                .map_err(|e| anyhow!("{e:?}"))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{:.3}", sp.median),
                    (x0 + 0.02, sp.max + ymax * 0.02),
                    ("sans-serif", 14),
                )))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
    }
    // Legend, drawn by hand (two swatches, top right).
    for (k, (name, col)) in [("offered", offered), ("delivered", delivered)]
        .into_iter()
        .enumerate()
    {
        let y = ymax * (0.95 - 0.06 * k as f64);
        let x = n as f64 - 0.55;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x, y), (x + 0.08, y - ymax * 0.035)],
                col.filled(),
            )))
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                name,
                (x + 0.11, y),
                ("sans-serif", 15),
            )))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Convert an SVG to a PNG next to it, when librsvg's converter is
/// installed (scripts/deps.sh); best effort.
pub fn to_png(svg: &Path) {
    let png = svg.with_extension("png");
    let _ = std::process::Command::new("rsvg-convert")
        .args(["-b", "white", "-o"])
        .arg(&png)
        .arg(svg)
        .status();
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// Grouped bars: per contender, connections/s and keep-alive requests/s
/// (median bars, min–max whiskers), on two panels with their own scales.
pub fn tcp_bars(r: &crate::tcp::TcpReport, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let reps = r.runs.iter().map(|x| x.rep).max().map_or(0, |m| m + 1);
    let n = r.summary.len().max(1);
    let labels: Vec<String> = r
        .summary
        .iter()
        .map(|s| s.contender.short().to_string())
        .collect();
    type Pick = fn(&crate::tcp::TcpSummary) -> crate::bench::Spread;
    let sets: [(&str, Pick, RGBColor); 2] = [
        (
            "connections/s (new connection per request)",
            |s| s.conn,
            RGBColor(30, 90, 170),
        ),
        (
            "requests/s (keep-alive)",
            |s| s.keepalive,
            RGBColor(200, 110, 30),
        ),
    ];
    for (panel, (title, pick, col)) in panels.iter().zip(sets) {
        let ymax = r
            .summary
            .iter()
            .map(|s| pick(s).max)
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.2;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{title}, median of {reps}"), ("sans-serif", 17))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| bar_label(&labels, *x))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, s) in r.summary.iter().enumerate() {
            let sp = pick(s);
            let (x0, x1) = (i as f64 + 0.2, i as f64 + 0.8);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, sp.median)],
                    col.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(i as f64 + 0.5, sp.min), (i as f64 + 0.5, sp.max)],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{:.0}", sp.median),
                    (x0, sp.max + ymax * 0.02),
                    ("sans-serif", 13),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Latency CDFs, one line per series: (label, [(µs, fraction 0..1)]); the
/// x axis is logarithmic.
pub fn latency_cdf(title: &str, series: &[(String, Vec<(f64, f64)>)], path: &Path) -> Result<()> {
    let pts = || series.iter().flat_map(|s| s.1.iter());
    let xmin = pts().map(|p| p.0).fold(f64::INFINITY, f64::min).max(1.0);
    let xmax = pts().map(|p| p.0).fold(0.0f64, f64::max).max(xmin * 10.0);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((xmin * 0.8..xmax * 1.2).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency, µs (log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("fraction of requests ≤ x")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (i, (name, s)) in series.iter().enumerate() {
        let col = Palette99::pick(i).to_rgba();
        // A step line through the (value, fraction) points.
        chart
            .draw_series(LineSeries::new(s.iter().copied(), col.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The label under bar `i` of a bar chart with bars on `[i, i + 1)`: only
/// the tick at the bar's middle is named, every other tick is blank.
fn bar_label(labels: &[String], x: f64) -> String {
    let i = x.floor() as usize;
    if (x - x.floor() - 0.5).abs() < 1e-6 && i < labels.len() {
        labels[i].clone()
    } else {
        String::new()
    }
}
