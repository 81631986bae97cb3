//! Charts of the suites' results, SVG via plotters (and a PNG next to it
//! with rsvg-convert, when installed). They take plain series of
//! [`Spread`]s, so they know nothing of any suite's report.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::stats::Spread;

/// One quantity over the chart's labels: drawn as median bars with min–max
/// whiskers.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Its name (legend or panel title).
    pub name: &'a str,
    /// One value per label.
    pub values: &'a [Spread],
}

/// Two series side by side per label, on one scale (`y_desc`), medians
/// printed with three decimals, a legend at the top right: the UDP suite's
/// offered and delivered Mpps per contender. Written as SVG to `path`.
pub fn paired_bars(
    caption: &str,
    y_desc: &str,
    labels: &[String],
    series: [Series<'_>; 2],
    path: &Path,
) -> Result<()> {
    let n = labels.len().max(1);
    let ymax = series
        .iter()
        .flat_map(|s| s.values.iter())
        .map(|v| v.max)
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.25;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| bar_label(labels, *x))
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    let colors = [RGBColor(170, 190, 220), RGBColor(30, 90, 170)];
    for i in 0..labels.len() {
        let x = i as f64;
        for (k, (s, col)) in series.iter().zip(colors).enumerate() {
            let Some(sp) = s.values.get(i) else { continue };
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
    for (k, (name, col)) in series
        .iter()
        .map(|s| s.name.to_string())
        .zip(colors)
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

/// Two panels side by side, one series each on its own scale, medians
/// printed as integers; each panel's title is its series' name and "median
/// of `reps`": the TCP suite's connections/s and requests/s per contender.
/// Written as SVG to `path`.
pub fn panel_bars(
    labels: &[String],
    series: [Series<'_>; 2],
    reps: u32,
    path: &Path,
) -> Result<()> {
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let n = labels.len().max(1);
    let colors = [RGBColor(30, 90, 170), RGBColor(200, 110, 30)];
    for (panel, (s, col)) in panels.iter().zip(series.iter().zip(colors)) {
        let title = s.name;
        let ymax = s
            .values
            .iter()
            .map(|v| v.max)
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
            .x_label_formatter(&|x| bar_label(labels, *x))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, sp) in s.values.iter().enumerate().take(labels.len()) {
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
