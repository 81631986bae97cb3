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
    let labels: Vec<String> = r
        .summary
        .iter()
        .map(|s| s.contender.label().to_string())
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
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 && i < labels.len() {
                labels[i].clone()
            } else {
                String::new()
            }
        })
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
