//! `--plot FILE.svg`: the distribution of replication delays, one line per
//! node, as a cumulative curve on a logarithmic time axis (the median and
//! the tail both readable on one chart).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// One curve: a label and its samples in milliseconds.
#[derive(Debug)]
pub struct Series {
    pub label: String,
    pub ms: Vec<f64>,
}

/// The points of the cumulative distribution of `ms`: (delay, % of samples
/// at or below it), at most `max_points` of them, always ending at the
/// maximum.
pub fn cdf_points(ms: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = ms.iter().copied().filter(|x| x.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 || max_points == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max_points).max(1);
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted[i], 100.0 * (i + 1) as f64 / n as f64))
        .collect();
    if points.last().map(|p| p.1) != Some(100.0) {
        points.push((sorted[n - 1], 100.0));
    }
    points
}

/// Draws the cumulative delay distribution of every series into an SVG file.
pub fn delay_cdf(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s.label.as_str(), cdf_points(&s.ms, 2_000)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let lowest = curves
        .iter()
        .flat_map(|(_, p)| p.first().map(|x| x.0))
        .fold(f64::INFINITY, f64::min);
    let highest = curves
        .iter()
        .flat_map(|(_, p)| p.last().map(|x| x.0))
        .fold(0.0, f64::max);
    // A log axis needs a positive range; pad it a little on both sides.
    let x_from = (lowest * 0.8).max(0.01);
    let x_to = (highest * 1.25).max(x_from * 10.0);

    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((x_from..x_to).log_scale(), 0.0..100.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("delay from the scheduled send time (ms, log scale)")
        .y_desc("writes arrived (%)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_rises_to_every_sample_and_is_thinned() {
        let ms: Vec<f64> = (1..=10).map(f64::from).collect();
        let all = cdf_points(&ms, 100);
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], (1.0, 10.0));
        assert_eq!(all[9], (10.0, 100.0));
        let thin = cdf_points(&ms, 3);
        assert!(thin.len() <= 4, "{thin:?}");
        assert_eq!(thin.last(), Some(&(10.0, 100.0)));
        assert!(thin.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert!(cdf_points(&[], 10).is_empty());
    }

    #[test]
    fn writes_an_svg_with_one_curve_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delay.svg");
        let series = vec![
            Series {
                label: "node 1".into(),
                ms: vec![1.0, 2.0, 3.0],
            },
            Series {
                label: "node 2".into(),
                ms: vec![2.0, 4.0, 9.0],
            },
        ];
        delay_cdf(&path, "test", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("node 1") && svg.contains("node 2"));
        // A curve and a legend sample per node, drawn two pixels wide; axes
        // and ticks are one pixel wide.
        let wide = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(r#"stroke-width="2""#))
            .count();
        assert_eq!(wide, 4, "{svg}");
    }
}
