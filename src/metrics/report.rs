//! The evaluation report: the numbers of `metrics.json` (pooled and per-source EER with its
//! confidence interval, AUC, threshold metrics, counts) and the plots together, as Markdown and
//! as a standalone HTML page; plots are linked by relative paths.

use std::path::{Path, PathBuf};

use super::plots::PlotFiles;
use super::summary::Metrics;

/// The plots a report links (any may be missing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportPlots {
    /// DET curve.
    pub det: Option<PlotFiles>,
    /// ROC curve.
    pub roc: Option<PlotFiles>,
    /// Score histograms per source.
    pub histograms: Option<PlotFiles>,
    /// Training curves.
    pub training: Option<PlotFiles>,
}

impl ReportPlots {
    /// The same plots with paths made relative to `dir` (paths outside `dir` are kept as
    /// they are).
    #[must_use]
    pub fn relative_to(&self, dir: &Path) -> Self {
        let rel = |p: &PathBuf| {
            p.strip_prefix(dir)
                .map_or_else(|_| p.clone(), Path::to_path_buf)
        };
        let map = |f: &Option<PlotFiles>| {
            f.as_ref().map(|f| PlotFiles {
                svg: rel(&f.svg),
                png: rel(&f.png),
            })
        };
        Self {
            det: map(&self.det),
            roc: map(&self.roc),
            histograms: map(&self.histograms),
            training: map(&self.training),
        }
    }

    /// The plots present, with their titles, in report order.
    fn titled(&self) -> impl Iterator<Item = (&'static str, &PlotFiles)> {
        [
            ("DET curve", &self.det),
            ("ROC curve", &self.roc),
            ("Score histograms", &self.histograms),
            ("Training curves", &self.training),
        ]
        .into_iter()
        .filter_map(|(t, p)| p.as_ref().map(|p| (t, p)))
    }

    /// Every plot present.
    pub fn all(&self) -> impl Iterator<Item = &PlotFiles> {
        self.titled().map(|(_, p)| p)
    }
}

fn pct(v: f64) -> String {
    format!("{:.2} %", v * 100.0)
}

fn link(p: &Path) -> String {
    // Relative links always use forward slashes.
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Rows of the main table: (quantity, value).
fn summary_rows(m: &Metrics) -> Vec<(String, String)> {
    let c = &m.confusion;
    vec![
        (
            "EER (ASVspoof definition, pooled)".into(),
            format!("{} at logit {:.4}", pct(m.eer), m.eer_threshold),
        ),
        (
            format!(
                "EER {:.0} % CI (bootstrap, {} resamples, seed {})",
                m.bootstrap.level * 100.0,
                m.bootstrap.resamples,
                m.bootstrap.seed
            ),
            format!("[{}, {}]", pct(m.eer_ci95.lo), pct(m.eer_ci95.hi)),
        ),
        (
            "EER (interpolated ROC)".into(),
            format!(
                "{} at logit {:.4}",
                pct(m.eer_interp),
                m.eer_interp_threshold
            ),
        ),
        ("AUC".into(), format!("{:.4}", m.auc)),
        (
            format!("accuracy at logit ≥ {}", m.threshold),
            pct(m.accuracy),
        ),
        (
            "precision / recall / F1 (bona fide positive)".into(),
            format!("{:.4} / {:.4} / {:.4}", m.precision, m.recall, m.f1),
        ),
        (
            "confusion (tp / fp / tn / fn)".into(),
            format!("{} / {} / {} / {}", c.tp, c.fp, c.tn, c.fn_),
        ),
        (
            "clips".into(),
            format!("{} bona fide, {} spoof", m.counts.bonafide, m.counts.spoof),
        ),
    ]
}

/// Escapes the characters that would break a Markdown table cell or start markup.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(
            ch,
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '#'
        ) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The report as Markdown: summary table, per-source EER table, clip counts per source, run
/// information, then the plots (PNG inline, SVG linked).
#[must_use]
pub fn render_markdown(m: &Metrics, plots: &ReportPlots, title: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", md(title));
    s.push_str(
        "Scores are bona fide logits (bona fide = positive class). EERs are fractions shown in \
         percent; see docs/metrics.md for the definitions.\n\n",
    );
    s.push_str("| quantity | value |\n|---|---|\n");
    for (k, v) in summary_rows(m) {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push_str("\n## EER per spoof source (all bona fide clips vs that source)\n\n");
    s.push_str("| source | spoof clips | EER | threshold (logit) |\n|---|---:|---:|---:|\n");
    for (source, e) in &m.per_source {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} |",
            md(source),
            e.n_spoof,
            pct(e.eer),
            e.eer_threshold
        );
    }
    s.push_str("\n## Clips per source\n\n| source | clips |\n|---|---:|\n");
    for (source, n) in &m.counts.per_source {
        let _ = writeln!(s, "| {} | {} |", md(source), n);
    }
    if !m.run.is_empty() {
        s.push_str("\n## Run\n\n| key | value |\n|---|---|\n");
        for (k, v) in &m.run {
            let _ = writeln!(s, "| {} | {} |", md(k), md(&v.to_string()));
        }
    }
    let mut plots = plots.titled().peekable();
    if plots.peek().is_some() {
        s.push_str("\n## Plots\n");
        for (title, p) in plots {
            let _ = writeln!(
                s,
                "\n### {title}\n\n![{title}]({}) ([SVG]({}))",
                link(&p.png),
                link(&p.svg)
            );
        }
    }
    s
}

/// The report as a standalone HTML page (same content as [`render_markdown`]; plots as SVG
/// images with a PNG link).
#[must_use]
pub fn render_html(m: &Metrics, plots: &ReportPlots, title: &str) -> String {
    use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:.3em .7em;text-align:left}}\
         td.n{{text-align:right}}img{{max-width:100%;border:1px solid #ddd}}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        text(title),
        text(title)
    );
    s.push_str(
        "<p>Scores are bona fide logits (bona fide = positive class). EERs are fractions shown \
         in percent; see docs/metrics.md for the definitions.</p>\n<table>\n\
         <tr><th>quantity</th><th>value</th></tr>\n",
    );
    for (k, v) in summary_rows(m) {
        let _ = writeln!(s, "<tr><td>{}</td><td>{}</td></tr>", text(&k), text(&v));
    }
    s.push_str(
        "</table>\n<h2>EER per spoof source (all bona fide clips vs that source)</h2>\n<table>\n\
         <tr><th>source</th><th>spoof clips</th><th>EER</th><th>threshold (logit)</th></tr>\n",
    );
    for (source, e) in &m.per_source {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.4}</td></tr>",
            text(source),
            e.n_spoof,
            text(&pct(e.eer)),
            e.eer_threshold
        );
    }
    s.push_str(
        "</table>\n<h2>Clips per source</h2>\n<table>\n<tr><th>source</th><th>clips</th></tr>\n",
    );
    for (source, n) in &m.counts.per_source {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            text(source),
            n
        );
    }
    s.push_str("</table>\n");
    if !m.run.is_empty() {
        s.push_str("<h2>Run</h2>\n<table>\n<tr><th>key</th><th>value</th></tr>\n");
        for (k, v) in &m.run {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td></tr>",
                text(k),
                text(&v.to_string())
            );
        }
        s.push_str("</table>\n");
    }
    for (title, p) in plots.titled() {
        let _ = writeln!(
            s,
            "<h2>{t}</h2>\n<p><img src=\"{svg}\" alt=\"{t}\"><br><a href=\"{png}\">PNG</a></p>",
            t = text(title),
            svg = attr(&link(&p.svg)),
            png = attr(&link(&p.png)),
        );
    }
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::scores::{Label, ScoreRow};
    use crate::metrics::summary::{MetricsOptions, compute_metrics};

    fn metrics() -> Metrics {
        let rows: Vec<ScoreRow> = [
            ("a", "real", Label::Bonafide, 1.0),
            ("b", "real", Label::Bonafide, -0.2),
            ("c", "tts|x", Label::Spoof, -1.0),
            ("d", "<tts>", Label::Spoof, 0.5),
        ]
        .into_iter()
        .map(|(p, s, l, v)| ScoreRow {
            path: p.into(),
            source: s.into(),
            label: l,
            logit: v,
        })
        .collect();
        let mut m = compute_metrics(&rows, &MetricsOptions::default()).unwrap();
        m.run.insert("model".into(), serde_json::json!("abc123"));
        m
    }

    fn plots() -> ReportPlots {
        let f = |n: &str| PlotFiles {
            svg: PathBuf::from(format!("/out/plots/{n}.svg")),
            png: PathBuf::from(format!("/out/plots/{n}.png")),
        };
        ReportPlots {
            det: Some(f("det")),
            roc: Some(f("roc")),
            histograms: None,
            training: None,
        }
        .relative_to(Path::new("/out"))
    }

    #[test]
    fn markdown_shows_numbers_and_relative_plot_links() {
        let m = metrics();
        let text = render_markdown(&m, &plots(), "Evaluation report");
        assert!(text.contains(&format!(
            "| EER (ASVspoof definition, pooled) | {}",
            pct(m.eer)
        )));
        assert!(text.contains(&format!("[{}, {}]", pct(m.eer_ci95.lo), pct(m.eer_ci95.hi))));
        assert!(text.contains("| tts\\|x | 1 |"), "{text}");
        assert!(text.contains("| \\<tts\\> | 1 |"), "{text}");
        assert!(text.contains("![DET curve](plots/det.png) ([SVG](plots/det.svg))"));
        assert!(!text.contains("Score histograms"));
        assert!(text.contains("| model | \"abc123\" |"));
    }

    #[test]
    fn html_escapes_names() {
        let text = render_html(&metrics(), &plots(), "Report <1>");
        assert!(text.contains("<title>Report &lt;1&gt;</title>"));
        assert!(text.contains("<td>&lt;tts&gt;</td>"));
        assert!(text.contains("<img src=\"plots/roc.svg\" alt=\"ROC curve\">"));
        assert!(text.ends_with("</html>\n"));
    }
}
