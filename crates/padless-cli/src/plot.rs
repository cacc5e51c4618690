//! Training curves: `padless plot LOG.csv`, and the SVG that `train` writes beside its log.
//!
//! A log is a CSV file with a header: an `epoch` column and any numeric columns (a blank cell
//! is a missing value; a column with text in it is left out). Each column becomes a series,
//! on one of up to three panels: losses (a name with `loss` in it), rates and accuracies
//! (`acc`, `accuracy`, `wer`, `per`, `rate`, `error`, `score` among its `_`-separated words),
//! and the rest (the learning rate `lr`, for example). A validation series (`val_x`) is drawn
//! dashed in the colour of `x`.
//!
//! With `--y COLUMN`, `padless plot` compares logs instead: that column of each log on one
//! panel, against `--x` (the epoch, another column, or `minutes` from the `seconds` column),
//! each log's curve named by its file, as a learning curve of several runs.
//!
//! The SVG holds its text as `<text>` elements that the viewer renders, so drawing it needs no
//! font files (plotters' font features are off).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// Flags of `padless plot`.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// A CSV log: an `epoch` column, then numeric columns (the `log.csv` of `padless train`,
    /// the log of `g2p train`); several logs with `--y` to compare them.
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// Where the SVG goes [default: the first log's path with the extension `.svg`].
    #[arg(long, value_name = "PLOT.svg")]
    out: Option<PathBuf>,
    /// Compare the logs on this column (for example `val_wer`): one curve per log.
    #[arg(long, value_name = "COLUMN")]
    y: Option<String>,
    /// The horizontal axis of `--y`: `epoch`, a numeric column, or `minutes` (the `seconds`
    /// column divided by 60).
    #[arg(long, value_name = "COLUMN", default_value = "epoch", requires = "y")]
    x: String,
}

/// Runs `padless plot`: draws the log (or compares the logs on `--y`) and prints the SVG's
/// path on stdout.
///
/// # Errors
/// As [`write_svg`] and [`write_comparison_svg`]; several logs without `--y`.
pub fn run(args: PlotArgs) -> Result<()> {
    let out = args
        .out
        .unwrap_or_else(|| args.logs[0].with_extension("svg"));
    crate::paths::check_output_file("--out", &out)?;
    let inputs: Vec<(&str, Option<&Path>)> = args
        .logs
        .iter()
        .map(|l| ("LOG", Some(l.as_path())))
        .collect();
    crate::paths::check_outputs(&inputs, &[("--out", &out)])?;
    match &args.y {
        Some(y) => write_comparison_svg(&args.logs, &args.x, y, &out)?,
        None if args.logs.len() == 1 => write_svg(&args.logs[0], &out)?,
        None => bail!(
            "{} logs are compared on one column: expected --y COLUMN (such as val_wer), found none",
            args.logs.len()
        ),
    }
    println!("{}", out.display());
    Ok(())
}

/// The points `(x, y)` of one log for the columns `x` (`epoch`, `minutes` or a column) and
/// `y`, where both are present.
fn curve(log: &Log, x: &str, y: &str) -> Result<Vec<(f64, f64)>> {
    let column = |name: &str| -> Result<&Series> {
        log.series.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = log.series.iter().map(|s| s.name.as_str()).collect();
            anyhow::anyhow!("expected a numeric column `{name}`, found {names:?}")
        })
    };
    let xs: Vec<Option<f64>> = match x {
        "epoch" => log.epochs.iter().map(|&e| Some(e as f64)).collect(),
        "minutes" => column("seconds")?
            .values
            .iter()
            .map(|v| v.map(|s| s / 60.0))
            .collect(),
        other => column(other)?.values.clone(),
    };
    let ys = &column(y)?.values;
    Ok(xs
        .iter()
        .zip(ys)
        .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
        .collect())
}

/// Draws column `y` of each log against `x` on one panel into `out_svg`, each curve named
/// by its log's file name.
///
/// # Errors
/// A missing or malformed log, a log without the columns, or an SVG that cannot be written.
pub fn write_comparison_svg(logs: &[PathBuf], x: &str, y: &str, out_svg: &Path) -> Result<()> {
    let mut curves = Vec::with_capacity(logs.len());
    for path in logs {
        let log = read_log(path)?;
        let points = curve(&log, x, y).with_context(|| format!("reading {}", path.display()))?;
        ensure!(
            !points.is_empty(),
            "{}: expected rows with both `{x}` and `{y}`, found none",
            path.display()
        );
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        curves.push((name, points));
    }
    draw_comparison(&curves, x, y, out_svg)
        .with_context(|| format!("writing {}", out_svg.display()))
}

fn draw_comparison(
    curves: &[(String, Vec<(f64, f64)>)],
    x: &str,
    y: &str,
    out: &Path,
) -> Result<()> {
    let points = || curves.iter().flat_map(|(_, p)| p.iter());
    let root = SVGBackend::new(out, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = chart_on(&root, format!("{y} against {x}"))
        .build_cartesian_2d(
            padded(bounds(points().map(|p| p.0))),
            padded(bounds(points().map(|p| p.1))),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .x_labels(10)
        .y_labels(8)
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    for (index, (name, points)) in curves.iter().enumerate() {
        let (r, g, b) = COLORS[index % COLORS.len()];
        let style = ShapeStyle::from(RGBColor(r, g, b).to_rgba()).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(plot_error)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3, style.filled().stroke_width(1))),
            )
            .map_err(plot_error)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Draws the curves of the CSV log `log_csv` (an `epoch` column and numeric columns) into the
/// SVG file `out_svg`: losses on one panel, rates and accuracies on another, other columns on
/// a third; validation series dashed.
///
/// # Errors
/// A missing or malformed log (no header, no `epoch` column, an epoch that is not a whole
/// number, no numeric column, no row), or an SVG that cannot be written.
pub fn write_svg(log_csv: &Path, out_svg: &Path) -> Result<()> {
    let log = read_log(log_csv)?;
    draw(&log, log_csv, out_svg).with_context(|| format!("writing {}", out_svg.display()))
}

/// A log's columns: the epochs and one series per numeric column.
#[derive(Debug, PartialEq)]
struct Log {
    epochs: Vec<i64>,
    series: Vec<Series>,
}

/// One numeric column; `None` where its cell is blank.
#[derive(Debug, PartialEq)]
struct Series {
    name: String,
    values: Vec<Option<f64>>,
}

/// Memory per byte of a log once parsed (every value an `f64`).
const LOG_BYTES_PER_BYTE: u64 = 8;

fn read_log(path: &Path) -> Result<Log> {
    let text = crate::paths::read_text(path, LOG_BYTES_PER_BYTE)?;
    parse_log(&text).with_context(|| format!("reading {}", path.display()))
}

fn parse_log(text: &str) -> Result<Log> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let Some(epoch_column) = header.iter().position(|c| c == "epoch") else {
        bail!("expected a column named `epoch`, found columns {header:?}");
    };
    let mut epochs = Vec::new();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for record in reader.records() {
        let record = record?;
        let line = record.position().map_or(0, csv::Position::line);
        let epoch = &record[epoch_column];
        let value: f64 = epoch.parse().map_err(|_| {
            anyhow::anyhow!("line {line}: expected a whole number of epochs, found `{epoch}`")
        })?;
        ensure!(
            value.fract() == 0.0 && value.abs() < 1e15,
            "line {line}: expected a whole number of epochs, found `{epoch}`"
        );
        epochs.push(value as i64);
        for (column, cell) in record.iter().enumerate() {
            cells[column].push(cell.to_string());
        }
    }
    ensure!(
        !epochs.is_empty(),
        "expected at least one row after the header, found none"
    );
    let series: Vec<Series> = header
        .iter()
        .zip(cells)
        .enumerate()
        .filter(|&(column, _)| column != epoch_column)
        .filter_map(|(_, (name, cells))| {
            let values: Option<Vec<Option<f64>>> = cells
                .iter()
                .map(|c| match c.as_str() {
                    "" => Some(None),
                    c => c.parse::<f64>().ok().filter(|v| v.is_finite()).map(Some),
                })
                .collect();
            let values = values.filter(|v| v.iter().any(Option::is_some))?;
            Some(Series {
                name: name.clone(),
                values,
            })
        })
        .collect();
    ensure!(
        !series.is_empty(),
        "expected a numeric column besides `epoch`, found columns {header:?}"
    );
    Ok(Log { epochs, series })
}

/// The panels a series can go on, in the order drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Panel {
    Losses,
    Rates,
    Other,
}

impl Panel {
    fn of(name: &str) -> Panel {
        let name = name.to_ascii_lowercase();
        if name.contains("loss") {
            return Panel::Losses;
        }
        const RATES: [&str; 7] = ["acc", "accuracy", "wer", "per", "rate", "error", "score"];
        if name.split('_').any(|word| RATES.contains(&word)) {
            Panel::Rates
        } else {
            Panel::Other
        }
    }

    fn title(self) -> &'static str {
        match self {
            Panel::Losses => "losses",
            Panel::Rates => "rates and accuracies",
            Panel::Other => "other",
        }
    }
}

/// Series colours: matplotlib's "tab10", strong enough on white to tell apart.
const COLORS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// A series' name without the validation prefix, which picks its colour.
fn base_name(name: &str) -> &str {
    name.strip_prefix("val_").unwrap_or(name)
}

fn draw(log: &Log, log_csv: &Path, out_svg: &Path) -> Result<()> {
    let panels: Vec<(Panel, Vec<&Series>)> = [Panel::Losses, Panel::Rates, Panel::Other]
        .into_iter()
        .map(|panel| {
            let series = log
                .series
                .iter()
                .filter(|s| Panel::of(&s.name) == panel)
                .collect();
            (panel, series)
        })
        .filter(|(_, series): &(Panel, Vec<&Series>)| !series.is_empty())
        .collect();
    let mut bases: Vec<&str> = Vec::new();
    for series in &log.series {
        let base = base_name(&series.name);
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    let color = |name: &str| {
        let index = bases
            .iter()
            .position(|&b| b == base_name(name))
            .unwrap_or(0);
        let (r, g, b) = COLORS[index % COLORS.len()];
        RGBColor(r, g, b).to_rgba()
    };

    const PANEL_WIDTH: u32 = 480;
    let root =
        SVGBackend::new(out_svg, (PANEL_WIDTH * panels.len() as u32, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let file_name = log_csv.file_name().map_or_else(
        || log_csv.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let root = root
        .titled(&file_name, ("sans-serif", 22))
        .map_err(plot_error)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (panel, series)) in areas.iter().zip(&panels) {
        draw_panel(area, &log.epochs, *panel, series, &color)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    epochs: &[i64],
    panel: Panel,
    series: &[&Series],
    color: &dyn Fn(&str) -> RGBAColor,
) -> Result<()> {
    let (first, last) = (
        *epochs.iter().min().expect("a row"),
        *epochs.iter().max().expect("a row"),
    );
    let x_range = if first == last {
        first - 1..last + 1
    } else {
        first..last
    };
    let (low, high) = bounds(
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
    );
    let mut chart = chart_on(area, panel.title())
        .build_cartesian_2d(x_range, padded((low, high)))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(10)
        .y_labels(8)
        // No minor grid: none on the float axis, and at most one (unseen) on the integer axis,
        // whose key points plotters cannot compute for a limit of 0.
        .y_max_light_lines(0)
        .x_max_light_lines(1)
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    for s in series {
        let style = ShapeStyle::from(color(&s.name)).stroke_width(2);
        let dashed = s.name.starts_with("val_");
        let points: Vec<(i64, f64)> = epochs
            .iter()
            .zip(&s.values)
            .filter_map(|(&e, v)| v.map(|v| (e, v)))
            .collect();
        // A blank cell breaks the line: each run of consecutive values is drawn on its own.
        for run in runs(epochs, &s.values) {
            if dashed {
                chart
                    .draw_series(DashedLineSeries::new(run, 6, 4, style))
                    .map_err(plot_error)?;
            } else {
                chart
                    .draw_series(LineSeries::new(run, style))
                    .map_err(plot_error)?;
            }
        }
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3, style.filled().stroke_width(1))),
            )
            .map_err(plot_error)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                if dashed {
                    DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 4, style).into_dyn()
                } else {
                    PathElement::new(vec![(x, y), (x + 20, y)], style).into_dyn()
                }
            });
    }
    // The legend goes where the curves end up least: most curves fall (losses, error rates)
    // and end low, accuracies rise and end high.
    let ends_high = {
        let ends: Vec<f64> = series
            .iter()
            .filter_map(|s| s.values.iter().rev().flatten().next())
            .map(|&v| {
                if high > low {
                    (v - low) / (high - low)
                } else {
                    0.5
                }
            })
            .collect();
        ends.iter().sum::<f64>() / ends.len().max(1) as f64 > 0.5
    };
    chart
        .configure_series_labels()
        .position(if ends_high {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// The runs of consecutive present values of a series, as points.
/// A chart on `area` with `caption` and the margins and label areas every plot here uses.
fn chart_on<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: impl AsRef<str>,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(40)
        .y_label_area_size(64);
    builder
}

/// The smallest and the largest of `values`.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// `lo..hi` with 5% of its width added on each side (10% of the value, at least 1e-4, when
/// the two are equal), so no point sits on the frame.
fn padded((lo, hi): (f64, f64)) -> std::ops::Range<f64> {
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.1 * lo.abs().max(1e-3)
    };
    lo - pad..hi + pad
}

fn runs(epochs: &[i64], values: &[Option<f64>]) -> Vec<Vec<(i64, f64)>> {
    let mut runs: Vec<Vec<(i64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (&epoch, value) in epochs.iter().zip(values) {
        match value {
            Some(v) => current.push((epoch, *v)),
            None if !current.is_empty() => runs.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// plotters' drawing errors borrow the backend's error type; this keeps their message.
fn plot_error<E: std::error::Error + Send + Sync>(err: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_parses_into_numeric_series_with_gaps() {
        let log = parse_log("epoch,loss,note,val_loss\n1,0.5,a,\n2,0.25,b,0.4\n").unwrap();
        assert_eq!(log.epochs, vec![1, 2]);
        assert_eq!(
            log.series,
            vec![
                Series {
                    name: "loss".into(),
                    values: vec![Some(0.5), Some(0.25)]
                },
                Series {
                    name: "val_loss".into(),
                    values: vec![None, Some(0.4)]
                },
            ]
        );
    }

    #[test]
    fn bad_logs_name_what_was_expected_and_found() {
        let err = parse_log("step,loss\n1,0.5\n").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "expected a column named `epoch`, found columns [\"step\", \"loss\"]"
        );
        let err = parse_log("epoch,loss\n1.5,0.5\n").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "line 2: expected a whole number of epochs, found `1.5`"
        );
        let err = parse_log("epoch,loss\n").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "expected at least one row after the header, found none"
        );
        let err = parse_log("epoch,name\n1,x\n").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "expected a numeric column besides `epoch`, found columns [\"epoch\", \"name\"]"
        );
    }

    #[test]
    fn a_comparison_curve_reads_minutes_from_seconds_and_skips_gaps() {
        let log = parse_log("epoch,val_wer,seconds\n1,0.5,60\n2,,120\n3,0.25,270\n").unwrap();
        assert_eq!(
            curve(&log, "minutes", "val_wer").unwrap(),
            vec![(1.0, 0.5), (4.5, 0.25)]
        );
        assert_eq!(
            curve(&log, "epoch", "val_wer").unwrap(),
            vec![(1.0, 0.5), (3.0, 0.25)]
        );
        let err = curve(&log, "epoch", "val_per").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "expected a numeric column `val_per`, found [\"val_wer\", \"seconds\"]"
        );
    }

    #[test]
    fn series_go_to_the_panel_of_their_name() {
        for (name, panel) in [
            ("loss", Panel::Losses),
            ("val_loss", Panel::Losses),
            ("accuracy", Panel::Rates),
            ("val_sequence_accuracy", Panel::Rates),
            ("val_wer", Panel::Rates),
            ("avg_val_per", Panel::Rates),
            ("lr", Panel::Other),
            ("seconds", Panel::Other),
            ("temperature", Panel::Other),
        ] {
            assert_eq!(Panel::of(name), panel, "{name}");
        }
    }

    #[test]
    fn blank_cells_split_a_series_into_runs() {
        let epochs = [1, 2, 3, 4, 5];
        let values = [Some(1.0), None, Some(3.0), Some(4.0), None];
        assert_eq!(
            runs(&epochs, &values),
            vec![vec![(1, 1.0)], vec![(3, 3.0), (4, 4.0)]]
        );
    }
}
