//! Plots of an evaluation, each written as SVG and PNG with plotters: DET curve (probit axes),
//! ROC curve, score histograms per spoof source, training curves. PNG text is drawn with the
//! embedded DejaVu Sans (`assets/`, Bitstream Vera licence), so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use super::MetricsError;
use super::eer::{det_curve, eer};
use super::roc::{auc, roc_curve};
use super::scores::{Label, ScoreRow, ScoreSet};

/// DejaVu Sans 2.37 (Debian `fonts-dejavu-core`), licence in `assets/DejaVuSans.LICENSE`.
static FONT: &[u8] = include_bytes!("assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Curve colours (pooled curve is black); repeat after eight sources.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const BONA_COLOUR: RGBColor = RGBColor(31, 119, 180);
const SPOOF_COLOUR: RGBColor = RGBColor(214, 39, 40);

/// A named score set drawn as one curve.
#[derive(Debug, Clone, Copy)]
pub struct Curve<'a> {
    /// Legend name (`all sources`, a source name).
    pub name: &'a str,
    /// Its scores.
    pub set: &'a ScoreSet,
}

/// The two files of one plot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlotFiles {
    /// Vector version.
    pub svg: PathBuf,
    /// Raster version.
    pub png: PathBuf,
}

/// One epoch of training, as the training curves need it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (1-based or 0-based, as logged).
    pub epoch: u32,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Validation loss.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// Validation EER (fraction).
    #[serde(default)]
    pub val_eer: Option<f64>,
    /// Validation accuracy at logit 0 (fraction).
    #[serde(default)]
    pub val_accuracy: Option<f64>,
}

/// Standard normal quantile Φ⁻¹(p), the DET axis transform (−∞ at 0, +∞ at 1).
#[must_use]
pub fn probit(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

fn register_embedded_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_owned())
    })
    .clone()
}

type DrawResult = Result<(), String>;

fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A figure that can draw itself on any plotters backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Draws `fig` into `<stem>.svg` and `<stem>.png`.
fn render(fig: &impl Figure, stem: &Path) -> Result<PlotFiles, MetricsError> {
    let svg = with_suffix(stem, "svg");
    let png = with_suffix(stem, "png");
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |message: String| MetricsError::Plot { path, message }
    };
    register_embedded_font().map_err(fail(&png))?;
    {
        let root = SVGBackend::new(&svg, fig.size()).into_drawing_area();
        fig.draw(&root).map_err(fail(&svg))?;
        root.present().map_err(msg).map_err(fail(&svg))?;
    }
    {
        let root = BitMapBackend::new(&png, fig.size()).into_drawing_area();
        fig.draw(&root).map_err(fail(&png))?;
        root.present().map_err(msg).map_err(fail(&png))?;
    }
    Ok(PlotFiles { svg, png })
}

/// The legend box every figure uses, at `position`, its labels in `font_size`.
fn legend_box<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    font_size: u32,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .label_font(font(font_size))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .position(position)
        .draw()
        .map_err(msg)
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// `0.0123` → `1.23`, `0.4` → `40`: a rate as a short percentage.
fn pct(p: f64) -> String {
    let v = p * 100.0;
    let s = if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else if v >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn curve_style(i: usize) -> ShapeStyle {
    if i == 0 {
        BLACK.stroke_width(3)
    } else {
        PALETTE[(i - 1) % PALETTE.len()].stroke_width(2)
    }
}

// ---------------------------------------------------------------------------------------------
// DET

/// Rates shown on DET axes (as ticks); the axes span a sub-range of these.
const DET_TICKS: [f64; 19] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
    0.7, 0.8, 0.9, 0.95,
];

/// A DET axis: linear in probit space, ticks at chosen rates, labels in percent.
#[derive(Clone)]
struct ProbitAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for ProbitAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = (value - self.lo) / (self.hi - self.lo);
        #[allow(clippy::cast_possible_truncation)]
        let offset = (f64::from(limit.1 - limit.0) * frac).round() as i32;
        limit.0 + offset
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for ProbitAxis {
    fn format(value: &f64) -> String {
        pct(Normal::standard().cdf(*value))
    }
}

struct DetLine {
    legend: String,
    style: ShapeStyle,
    points: Vec<(f64, f64)>,
    eer: f64,
}

struct DetFigure {
    lines: Vec<DetLine>,
    lo: f64,
    hi: f64,
}

impl DetFigure {
    fn new(curves: &[Curve<'_>]) -> Self {
        // Smallest non-zero rate any curve can show, halved: the lower end of the axes.
        let min_rate = curves
            .iter()
            .map(|c| 1.0 / c.set.bonafide().len().max(c.set.spoof().len()) as f64)
            .fold(1.0, f64::min);
        let lo = DET_TICKS
            .iter()
            .copied()
            .rev()
            .find(|&t| t <= min_rate / 2.0)
            .unwrap_or(DET_TICKS[0]);
        let hi = DET_TICKS[DET_TICKS.len() - 1];
        let lines = curves
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let det = det_curve(c.set);
                let e = eer(c.set).eer;
                DetLine {
                    legend: format!("{} (EER {:.2}%)", c.name, e * 100.0),
                    style: curve_style(i),
                    points: det_polyline(&det.far, &det.frr, lo, hi),
                    eer: probit(e.clamp(lo, hi)),
                }
            })
            .collect();
        Self { lines, lo, hi }
    }
}

/// DET points in probit space, clipped to `[lo, hi]`, keeping only the corners of the staircase
/// (a run of steps along one axis is one straight segment) and dropping repeated points.
fn det_polyline(far: &[f64], frr: &[f64], lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let n = far.len();
    let mut out: Vec<(f64, f64)> = Vec::new();
    for i in 0..n {
        #[allow(clippy::float_cmp)]
        let corner = i == 0
            || i + 1 == n
            || (far[i] != far[i - 1]) != (far[i + 1] != far[i])
            || (frr[i] != frr[i - 1]) != (frr[i + 1] != frr[i]);
        if corner {
            let p = (probit(far[i].clamp(lo, hi)), probit(frr[i].clamp(lo, hi)));
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
    }
    out
}

impl Figure for DetFigure {
    fn size(&self) -> (u32, u32) {
        (900, 820)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(msg)?;
        let (plo, phi) = (probit(self.lo), probit(self.hi));
        let ticks: Vec<f64> = DET_TICKS
            .iter()
            .copied()
            .filter(|&t| t >= self.lo && t <= self.hi)
            .map(probit)
            .collect();
        let mut chart = ChartBuilder::on(root)
            .caption("DET curve", font(30))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(75)
            .build_cartesian_2d(
                ProbitAxis {
                    lo: plo,
                    hi: phi,
                    ticks: ticks.clone(),
                },
                ProbitAxis {
                    lo: plo,
                    hi: phi,
                    ticks,
                },
            )
            .map_err(msg)?;
        chart
            .configure_mesh()
            .x_desc("False acceptance rate, spoof accepted (%)")
            .y_desc("False rejection rate, bona fide rejected (%)")
            .label_style(font(17))
            .axis_desc_style(font(20))
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.15))
            .draw()
            .map_err(msg)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(plo, plo), (phi, phi)],
                6,
                6,
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(msg)?;
        for line in &self.lines {
            let style = line.style;
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(msg)?
                .label(line.legend.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            chart
                .draw_series(std::iter::once(Circle::new(
                    (line.eer, line.eer),
                    6,
                    style.color.stroke_width(2),
                )))
                .map_err(msg)?;
        }
        legend_box(&mut chart, 18, SeriesLabelPosition::UpperRight)
    }
}

/// DET curve(s): false rejection (bona fide) against false acceptance (spoof) on probit axes,
/// from the ASVspoof DET of each curve, the EER point circled, written to `<stem>.svg` and
/// `<stem>.png`. The first curve is drawn in black (the pooled one, by convention).
///
/// # Errors
/// [`MetricsError::Plot`] naming the file; [`MetricsError::InvalidOption`] for no curves.
pub fn plot_det(curves: &[Curve<'_>], stem: &Path) -> Result<PlotFiles, MetricsError> {
    require_curves(curves)?;
    render(&DetFigure::new(curves), stem)
}

fn require_curves(curves: &[Curve<'_>]) -> Result<(), MetricsError> {
    if curves.is_empty() {
        return Err(MetricsError::InvalidOption {
            key: "curves",
            message: "at least one curve is needed to draw a plot".into(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ROC

struct RocLine {
    legend: String,
    style: ShapeStyle,
    points: Vec<(f64, f64)>,
}

struct RocFigure {
    lines: Vec<RocLine>,
}

impl Figure for RocFigure {
    fn size(&self) -> (u32, u32) {
        (900, 820)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(msg)?;
        let mut chart = ChartBuilder::on(root)
            .caption("ROC curve (bona fide = positive)", font(30))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(75)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .x_desc("False positive rate (spoof accepted)")
            .y_desc("True positive rate (bona fide accepted)")
            .x_labels(11)
            .y_labels(11)
            .label_style(font(17))
            .axis_desc_style(font(20))
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.15))
            .draw()
            .map_err(msg)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                6,
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(msg)?;
        for line in &self.lines {
            let style = line.style;
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(msg)?
                .label(line.legend.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        legend_box(&mut chart, 18, SeriesLabelPosition::LowerRight)
    }
}

/// ROC curve(s) (true positive rate against false positive rate, bona fide positive) with the
/// AUC in the legend, written to `<stem>.svg` and `<stem>.png`.
///
/// # Errors
/// [`MetricsError::Plot`] naming the file; [`MetricsError::InvalidOption`] for no curves.
pub fn plot_roc(curves: &[Curve<'_>], stem: &Path) -> Result<PlotFiles, MetricsError> {
    require_curves(curves)?;
    let lines = curves
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let roc = roc_curve(c.set, true);
            RocLine {
                legend: format!("{} (AUC {:.4})", c.name, auc(c.set)),
                style: curve_style(i),
                points: roc.fpr.into_iter().zip(roc.tpr).collect(),
            }
        })
        .collect();
    render(&RocFigure { lines }, stem)
}

// ---------------------------------------------------------------------------------------------
// Histograms

struct HistPanel {
    title: String,
    bona: Vec<f64>,
    spoof: Vec<f64>,
    spoof_name: String,
}

struct HistFigure {
    panels: Vec<HistPanel>,
    lo: f64,
    width: f64,
    y_max: f64,
    threshold: f64,
}

const HIST_COLS: usize = 2;

impl HistFigure {
    fn grid(&self) -> (usize, usize) {
        let cols = if self.panels.len() == 1 { 1 } else { HIST_COLS };
        (self.panels.len().div_ceil(cols), cols)
    }

    fn bins(&self) -> usize {
        self.panels.first().map_or(0, |p| p.bona.len())
    }
}

/// Shares of `scores` in `bins` bins of `width` starting at `lo` (last bin closed).
fn binned(scores: &[f64], lo: f64, width: f64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0u64; bins];
    for &s in scores {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = (((s - lo) / width).floor().max(0.0) as usize).min(bins - 1);
        counts[i] += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = scores.len().max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    counts.into_iter().map(|c| c as f64 / n).collect()
}

impl Figure for HistFigure {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.grid();
        let w = if cols == 1 { 900 } else { 1400 };
        #[allow(clippy::cast_possible_truncation)]
        let h = 80 + 420 * rows as u32;
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(msg)?;
        let root = root
            .titled(
                "Score histograms: bona fide vs each spoof source (share of class per bin)",
                font(28),
            )
            .map_err(msg)?;
        let (rows, cols) = self.grid();
        let areas = root.split_evenly((rows, cols));
        #[allow(clippy::cast_precision_loss)]
        let hi = self.lo + self.width * self.bins() as f64;
        for (panel, area) in self.panels.iter().zip(areas) {
            let mut chart = ChartBuilder::on(&area)
                .caption(&panel.title, font(20))
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(65)
                .build_cartesian_2d(self.lo..hi, 0.0..self.y_max)
                .map_err(msg)?;
            chart
                .configure_mesh()
                .x_desc("logit")
                .y_desc("share of class")
                .label_style(font(15))
                .axis_desc_style(font(17))
                .light_line_style(WHITE)
                .bold_line_style(BLACK.mix(0.1))
                .draw()
                .map_err(msg)?;
            for (shares, colour, name) in [
                (&panel.bona, BONA_COLOUR, "bona fide (all sources)"),
                (&panel.spoof, SPOOF_COLOUR, panel.spoof_name.as_str()),
            ] {
                #[allow(clippy::cast_precision_loss)]
                let bars = shares.iter().enumerate().map(|(i, &h)| {
                    let x0 = self.lo + self.width * i as f64;
                    Rectangle::new([(x0, 0.0), (x0 + self.width, h)], colour.mix(0.45).filled())
                });
                chart
                    .draw_series(bars)
                    .map_err(msg)?
                    .label(name.to_owned())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 18, y + 6)], colour.mix(0.6).filled())
                    });
            }
            if self.threshold >= self.lo && self.threshold <= hi {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(self.threshold, 0.0), (self.threshold, self.y_max)],
                        5,
                        5,
                        BLACK.stroke_width(2),
                    ))
                    .map_err(msg)?
                    .label(format!("threshold {}", self.threshold))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
            }
            legend_box(&mut chart, 15, SeriesLabelPosition::UpperLeft)?;
        }
        Ok(())
    }
}

/// Histograms of the logits: one panel per spoof source, each overlaying all bona fide clips
/// and that source's clips (share of the class per bin, shared bins and axes), the decision
/// `threshold` dashed, the source's EER in the panel title. Written to `<stem>.svg` and
/// `<stem>.png`.
///
/// # Errors
/// [`MetricsError::NoBonafide`] / [`MetricsError::NoSpoof`], non-finite logits,
/// [`MetricsError::Plot`].
pub fn plot_histograms(
    rows: &[ScoreRow],
    threshold: f64,
    stem: &Path,
) -> Result<PlotFiles, MetricsError> {
    let sets = super::summary::per_source_sets(rows)?;
    if sets.is_empty() {
        return Err(MetricsError::NoSpoof {
            subset: "the scores to plot".into(),
        });
    }
    let all: Vec<f64> = rows.iter().map(|r| r.logit).collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| {
            (a.min(s), b.max(s))
        });
    if hi - lo < 1e-9 {
        lo -= 0.5;
        hi += 0.5;
    }
    // Rice rule on the number of clips, within [10, 60] bins.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let bins = ((2.0 * (all.len() as f64).cbrt()).ceil() as usize).clamp(10, 60);
    #[allow(clippy::cast_precision_loss)]
    let width = (hi - lo) / bins as f64;
    let bona: Vec<f64> = rows
        .iter()
        .filter(|r| r.label == Label::Bonafide)
        .map(|r| r.logit)
        .collect();
    let bona_shares = binned(&bona, lo, width, bins);
    let mut panels = Vec::with_capacity(sets.len());
    let mut y_max = bona_shares.iter().copied().fold(0.0, f64::max);
    for (source, set) in &sets {
        let spoof = binned(set.spoof(), lo, width, bins);
        y_max = spoof.iter().copied().fold(y_max, f64::max);
        panels.push(HistPanel {
            title: format!(
                "bona fide vs {source} (EER {:.2}%, {} clips)",
                eer(set).eer * 100.0,
                set.spoof().len()
            ),
            bona: bona_shares.clone(),
            spoof,
            spoof_name: source.clone(),
        });
    }
    render(
        &HistFigure {
            panels,
            lo,
            width,
            y_max: (y_max * 1.45).max(1e-3),
            threshold,
        },
        stem,
    )
}

// ---------------------------------------------------------------------------------------------
// Training curves

struct TrainingFigure {
    epochs: Vec<EpochRecord>,
}

fn finite_points(
    epochs: &[EpochRecord],
    f: impl Fn(&EpochRecord) -> Option<f64>,
) -> Vec<(f64, f64)> {
    epochs
        .iter()
        .filter_map(|e| {
            f(e).filter(|v| v.is_finite())
                .map(|v| (f64::from(e.epoch), v))
        })
        .collect()
}

fn padded_range(values: impl Iterator<Item = f64>, floor_zero: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let lo = if floor_zero {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    (lo, hi + pad)
}

impl Figure for TrainingFigure {
    fn size(&self) -> (u32, u32) {
        (1400, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(msg)?;
        let root = root.titled("Training curves", font(28)).map_err(msg)?;
        let (left, right) = root.split_horizontally(700);
        let (e0, e1) = self
            .epochs
            .iter()
            .fold((u32::MAX, 0), |(a, b), e| (a.min(e.epoch), b.max(e.epoch)));
        let (x0, x1) = (f64::from(e0) - 0.5, f64::from(e1) + 0.5);
        let x_labels = usize::try_from(e1 - e0 + 2).unwrap_or(usize::MAX).min(12);

        let train = finite_points(&self.epochs, |e| Some(e.train_loss));
        let val = finite_points(&self.epochs, |e| e.val_loss);
        let (ylo, yhi) = padded_range(train.iter().chain(&val).map(|p| p.1), true);
        draw_panel(
            &left,
            x0..x1,
            x_labels,
            Panel {
                caption: "Loss",
                y_desc: "loss",
                y_range: ylo..yhi,
                whole_y_labels: false,
                legend: SeriesLabelPosition::UpperRight,
                series: [
                    (&train, BONA_COLOUR, "train loss"),
                    (&val, SPOOF_COLOUR, "validation loss"),
                ],
            },
        )?;

        let eer: Vec<(f64, f64)> = finite_points(&self.epochs, |e| e.val_eer.map(|v| v * 100.0));
        let acc: Vec<(f64, f64)> =
            finite_points(&self.epochs, |e| e.val_accuracy.map(|v| v * 100.0));
        let (plo, phi) = padded_range(eer.iter().chain(&acc).map(|p| p.1), true);
        draw_panel(
            &right,
            x0..x1,
            x_labels,
            Panel {
                caption: "Validation EER and accuracy",
                y_desc: "%",
                y_range: plo..phi.min(100.5),
                whole_y_labels: true,
                legend: SeriesLabelPosition::MiddleRight,
                series: [
                    (&eer, SPOOF_COLOUR, "validation EER (%)"),
                    (&acc, PALETTE[2], "validation accuracy (%)"),
                ],
            },
        )
    }
}

/// One panel of the training figure: line series with markers over epochs.
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    y_range: std::ops::Range<f64>,
    /// Y labels without decimals (percentages).
    whole_y_labels: bool,
    legend: SeriesLabelPosition,
    /// Each series (empty series are left out).
    series: [Series<'a>; 2],
}

/// A series of a panel: its points, colour and legend name.
type Series<'a> = (&'a [(f64, f64)], RGBColor, &'a str);

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x: std::ops::Range<f64>,
    x_labels: usize,
    panel: Panel<'_>,
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, font(22))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(x, panel.y_range)
        .map_err(msg)?;
    let whole = |v: &f64| format!("{v:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.x_desc("epoch")
        .y_desc(panel.y_desc)
        .x_labels(x_labels)
        .x_label_formatter(&whole)
        .label_style(font(16))
        .axis_desc_style(font(18))
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12));
    if panel.whole_y_labels {
        mesh.y_label_formatter(&whole);
    }
    mesh.draw().map_err(msg)?;
    for (points, colour, name) in panel.series {
        if points.is_empty() {
            continue;
        }
        let style = colour.stroke_width(3);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(msg)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(msg)?;
    }
    legend_box(&mut chart, 16, panel.legend)
}

/// Training curves: train and validation loss per epoch (left), validation EER and accuracy in
/// percent (right); missing or non-finite values are skipped. Written to `<stem>.svg` and
/// `<stem>.png`.
///
/// # Errors
/// [`MetricsError::InvalidOption`] for no epochs, [`MetricsError::Plot`].
pub fn plot_training(epochs: &[EpochRecord], stem: &Path) -> Result<PlotFiles, MetricsError> {
    if epochs.is_empty() {
        return Err(MetricsError::InvalidOption {
            key: "epochs",
            message: "at least one epoch record is needed to draw training curves".into(),
        });
    }
    let mut epochs = epochs.to_vec();
    epochs.sort_by_key(|e| e.epoch);
    render(&TrainingFigure { epochs }, stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probit_is_the_normal_quantile() {
        assert!(probit(0.5).abs() < 1e-12);
        assert!((probit(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
        assert!((probit(0.01) + 2.326_347_874_040_841).abs() < 1e-9);
        assert_eq!(probit(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn percentages_are_short() {
        assert_eq!(pct(0.0001), "0.01");
        assert_eq!(pct(0.001), "0.1");
        assert_eq!(pct(0.02), "2");
        assert_eq!(pct(0.4), "40");
        assert_eq!(pct(0.15366666), "15");
        assert_eq!(pct(0.0536), "5.4");
        assert_eq!(pct(0.0), "0");
    }

    #[test]
    fn det_polyline_keeps_only_corners() {
        // A staircase: three steps right, two up, one right.
        let far = [1.0, 0.75, 0.5, 0.25, 0.25, 0.25, 0.0];
        let frr = [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0];
        let lo = 0.0001;
        let hi = 0.95;
        let pts = det_polyline(&far, &frr, lo, hi);
        let p = |x: f64, y: f64| (probit(x.clamp(lo, hi)), probit(y.clamp(lo, hi)));
        assert_eq!(
            pts,
            vec![p(1.0, 0.0), p(0.25, 0.0), p(0.25, 1.0), p(0.0, 1.0)]
        );
    }

    #[test]
    fn binning_shares_sum_to_one() {
        let shares = binned(&[0.0, 0.1, 0.5, 1.0, 1.0], 0.0, 0.25, 4);
        assert_eq!(shares, vec![0.4, 0.0, 0.2, 0.4]);
    }
}
