//! Renders `exec::event::Event`s: indicatif bars on a terminal, plain lines otherwise, the
//! final summary table, and the `--json` summary; plus the `status` / `--dry-run` tables.
//! It sees only events (never engine internals).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::event::{Action, Event, EventSink, Outcome, RunSummary, StageStatus};

/// Plain output mentions hashing only when at least this many files must be read.
const PLAIN_HASH_THRESHOLD: u64 = 1000;

/// How a run is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Progress bars (stderr is a terminal).
    Bars,
    /// One line per event.
    Plain,
}

/// The reporter of `brspeech run`: human output on stderr (bars or lines), and with `json`
/// the JSON summary on stdout at the end.
pub struct Reporter {
    style: Style,
    json: bool,
    state: Mutex<ReportState>,
}

struct ReportState {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    err: Box<dyn Write + Send>,
    out: Box<dyn Write + Send>,
}

impl Reporter {
    /// A reporter writing human output to `err` and the JSON summary to `out`.
    #[must_use]
    pub fn new(
        style: Style,
        json: bool,
        err: Box<dyn Write + Send>,
        out: Box<dyn Write + Send>,
    ) -> Self {
        let multi = (style == Style::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Reporter {
            style,
            json,
            state: Mutex::new(ReportState {
                multi,
                bars: HashMap::new(),
                err,
                out,
            }),
        }
    }

    /// A reporter on the process's stderr/stdout, with bars when stderr is a terminal.
    #[must_use]
    pub fn stdio(json: bool) -> Self {
        use std::io::IsTerminal;
        let style = if std::io::stderr().is_terminal() {
            Style::Bars
        } else {
            Style::Plain
        };
        Reporter::new(
            style,
            json,
            Box::new(std::io::stderr()),
            Box::new(std::io::stdout()),
        )
    }
}

fn line(s: &mut ReportState, text: &str) {
    match &s.multi {
        Some(m) => {
            let _ = m.println(text);
        }
        None => {
            let _ = writeln!(s.err, "{text}");
        }
    }
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Seconds as the summary shows them.
#[must_use]
pub fn secs(s: f64) -> String {
    if s >= 60.0 {
        let whole = s.round();
        format!("{}m{:02}s", (whole / 60.0).floor(), whole % 60.0)
    } else {
        format!("{s:.2}s")
    }
}

impl EventSink for Reporter {
    fn emit(&self, event: Event) {
        let Ok(mut s) = self.state.lock() else { return };
        let s = &mut *s;
        match event {
            Event::RunStarted {
                pipeline,
                stages,
                jobs,
            } => {
                let how = if jobs == 0 {
                    "on Slurm".to_owned()
                } else {
                    format!("-j {jobs}")
                };
                line(
                    s,
                    &format!(
                        "running pipeline `{pipeline}`: {stages} stage{} ({how})",
                        if stages == 1 { "" } else { "s" }
                    ),
                );
            }
            Event::LockWaiting { holder } => line(
                s,
                &format!("waiting for the cache lock held by {holder} ..."),
            ),
            Event::LockReclaimed { holder } => line(
                s,
                &format!("note: reclaimed the cache lock left by a run that died ({holder})"),
            ),
            Event::HashingStarted { stage, total } => {
                if let Some(m) = &s.multi {
                    let pb = m.add(ProgressBar::new(total));
                    pb.set_style(bar_style("{spinner} hashing deps of {msg} [{bar:30}] {pos}/{len} files ({per_sec}, eta {eta})"));
                    pb.set_message(format!("`{stage}`"));
                    s.bars.insert(format!("hash:{stage}"), pb);
                } else if total >= PLAIN_HASH_THRESHOLD {
                    line(
                        s,
                        &format!("hashing  {stage}: {total} files not in the stat cache"),
                    );
                }
            }
            Event::HashingProgress { stage, done } => {
                if let Some(pb) = s.bars.get(&format!("hash:{stage}")) {
                    pb.inc(done);
                    if pb.position() >= pb.length().unwrap_or(0) {
                        pb.finish_and_clear();
                    }
                }
            }
            Event::StageStarted { stage, reasons } => {
                if let Some(pb) = s.bars.remove(&format!("hash:{stage}")) {
                    pb.finish_and_clear();
                }
                let why = reasons
                    .first()
                    .map(|r| {
                        format!(
                            "  ({r}{})",
                            if reasons.len() > 1 {
                                format!(", +{} more", reasons.len() - 1)
                            } else {
                                String::new()
                            }
                        )
                    })
                    .unwrap_or_default();
                if let Some(m) = &s.multi {
                    let pb = m.add(ProgressBar::new_spinner());
                    pb.set_style(bar_style("{spinner} {msg} {elapsed}"));
                    pb.set_message(format!("running `{stage}`"));
                    pb.enable_steady_tick(Duration::from_millis(120));
                    s.bars.insert(stage.clone(), pb);
                    line(s, &format!("run      {stage}{why}"));
                } else {
                    line(s, &format!("run      {stage}{why}"));
                }
            }
            Event::StageProgress {
                stage,
                label,
                done,
                total,
            } => {
                if let Some(pb) = s.bars.get(&stage) {
                    if total > 0 && pb.length() != Some(total) {
                        pb.set_length(total);
                        pb.set_style(bar_style(
                            "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
                        ));
                    }
                    pb.set_message(format!("`{stage}` {label}"));
                    pb.set_position(done);
                }
            }
            Event::StageWarning { stage, message } => {
                let who = if stage.is_empty() {
                    String::new()
                } else {
                    format!(" `{stage}`")
                };
                line(s, &format!("warning{who}: {message}"));
            }
            Event::StageFinished {
                stage,
                outcome,
                seconds,
                items,
            } => {
                for key in [stage.clone(), format!("hash:{stage}")] {
                    if let Some(pb) = s.bars.remove(&key) {
                        pb.finish_and_clear();
                    }
                }
                let extra = if items.processed + items.reused > 0 {
                    format!(
                        "  ({} items processed, {} reused)",
                        items.processed, items.reused
                    )
                } else {
                    String::new()
                };
                let time = if outcome == Outcome::Ran {
                    format!("  {}", secs(seconds))
                } else {
                    String::new()
                };
                line(s, &format!("{:<8} {stage}{time}{extra}", outcome.as_str()));
            }
            Event::StageFailed {
                stage,
                message,
                log,
                log_tail,
            } => {
                for key in [stage.clone(), format!("hash:{stage}")] {
                    if let Some(pb) = s.bars.remove(&key) {
                        pb.finish_and_clear();
                    }
                }
                let mut text = format!("FAILED   {stage}: {message}");
                if let Some(log) = log
                    && !message.contains(&log.display().to_string())
                {
                    let _ = write!(text, "\n         full log: {}", log.display());
                }
                for l in log_tail {
                    let _ = write!(text, "\n         | {l}");
                }
                line(s, &text);
            }
            Event::Note { stage, message } => {
                if stage.is_empty() {
                    line(s, &format!("note     {message}"));
                } else {
                    line(s, &format!("note     {stage}: {message}"));
                }
            }
            Event::StageSkipped { stage, because } => {
                line(s, &format!("skipped  {stage}: {because}"))
            }
            Event::RunFinished { summary } => {
                if let Some(m) = s.multi.take() {
                    for (_, pb) in s.bars.drain() {
                        pb.finish_and_clear();
                    }
                    let _ = m.clear();
                }
                let table = summary_table(&summary);
                let _ = write!(s.err, "{table}");
                if self.json {
                    let _ = writeln!(
                        s.out,
                        "{}",
                        serde_json::to_string_pretty(&summary).unwrap_or_default()
                    );
                    let _ = s.out.flush();
                }
                let _ = s.err.flush();
            }
        }
        let _ = self.style;
    }
}

/// The final table: one row per stage, then the counts and the wall-clock time.
#[must_use]
pub fn summary_table(summary: &RunSummary) -> String {
    let mut out = String::new();
    let w = summary
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "\n{:<w$}  {:<9}  {:>8}  items",
        "stage", "outcome", "time"
    );
    for st in &summary.stages {
        let items = match (st.items_processed, st.items_reused) {
            (Some(p), Some(r)) => format!("{p} processed, {r} reused"),
            _ => String::new(),
        };
        let time = if st.outcome == Outcome::Skipped {
            "-".to_owned()
        } else {
            secs(st.seconds)
        };
        let row = format!(
            "{:<w$}  {:<9}  {:>8}  {items}",
            st.name,
            st.outcome.as_str(),
            time
        );
        let _ = writeln!(out, "{}", row.trim_end());
    }
    let _ = writeln!(
        out,
        "{} stage{}: {} ran, {} cached, {} restored, {} failed{}{} in {}",
        summary.stages.len(),
        if summary.stages.len() == 1 { "" } else { "s" },
        summary.count(Outcome::Ran),
        summary.count(Outcome::Cached),
        summary.count(Outcome::Restored),
        summary.count(Outcome::Failed),
        match summary.count(Outcome::Skipped) {
            0 => String::new(),
            n => format!(", {n} skipped"),
        },
        match summary.count(Outcome::Cancelled) {
            0 => String::new(),
            n => format!(", {n} cancelled"),
        },
        secs(summary.seconds),
    );
    out
}

/// Rows of `head` columns followed by reasons, one reason per line (continuation lines keep
/// the head columns blank so reasons line up).
fn reason_rows(out: &mut String, rows: &[(String, &[String])]) {
    let width = rows
        .iter()
        .map(|(h, _)| h.chars().count())
        .max()
        .unwrap_or(0);
    for (head, reasons) in rows {
        let mut reasons = reasons.iter();
        let first = reasons.next().map_or("", String::as_str);
        let _ = writeln!(out, "{}", format!("{head:<width$}  {first}").trim_end());
        for r in reasons {
            let _ = writeln!(out, "{:<width$}  {r}", "");
        }
    }
}

fn name_width(stages: &[StageStatus]) -> usize {
    stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(5)
        .max(5)
}

/// `brspeech status`: one row per stage with its state, then its reasons.
#[must_use]
pub fn status_table(stages: &[StageStatus]) -> String {
    let w = name_width(stages);
    let rows: Vec<(String, &[String])> = stages
        .iter()
        .map(|st| {
            (
                format!("{:<w$}  {:<9}", st.name, st.state.as_str()),
                st.reasons.as_slice(),
            )
        })
        .collect();
    let mut out = String::new();
    reason_rows(&mut out, &rows);
    out
}

/// `brspeech run --dry-run`: what would happen to each selected stage, and why.
#[must_use]
pub fn dry_run_table(stages: &[StageStatus]) -> String {
    let w = name_width(stages);
    let rows: Vec<(String, &[String])> = stages
        .iter()
        .map(|st| {
            let action = match st.action {
                Action::UpToDate => "up to date",
                Action::Restore => "would restore",
                Action::Run => "would run",
            };
            (
                format!("{action:<13}  {:<w$}", st.name),
                st.reasons.as_slice(),
            )
        })
        .collect();
    let mut out = String::new();
    reason_rows(&mut out, &rows);
    let n = |a: Action| stages.iter().filter(|s| s.action == a).count();
    let _ = writeln!(
        out,
        "{} to run, {} to restore, {} up to date",
        n(Action::Run),
        n(Action::Restore),
        n(Action::UpToDate)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::event::{StageSummary, State};
    use crate::stages::ItemCounts;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn st(name: &str, outcome: Outcome, seconds: f64, items: Option<(u64, u64)>) -> StageSummary {
        StageSummary {
            name: name.into(),
            outcome,
            seconds,
            items_processed: items.map(|i| i.0),
            items_reused: items.map(|i| i.1),
            key: None,
            error: None,
            log: None,
        }
    }

    #[test]
    fn plain_lines_and_summary() {
        let (err, out) = (Buf::default(), Buf::default());
        let r = Reporter::new(
            Style::Plain,
            true,
            Box::new(err.clone()),
            Box::new(out.clone()),
        );
        r.emit(Event::RunStarted {
            pipeline: "demo".into(),
            stages: 4,
            jobs: 2,
        });
        r.emit(Event::HashingStarted {
            stage: "prepare".into(),
            total: 3,
        });
        r.emit(Event::StageStarted {
            stage: "count".into(),
            reasons: vec!["params.n: 1 -> 2".into(), "cmd changed".into()],
        });
        r.emit(Event::StageFinished {
            stage: "prepare".into(),
            outcome: Outcome::Cached,
            seconds: 0.01,
            items: ItemCounts::default(),
        });
        r.emit(Event::StageFinished {
            stage: "count".into(),
            outcome: Outcome::Ran,
            seconds: 1.5,
            items: ItemCounts {
                processed: 3,
                reused: 7,
            },
        });
        r.emit(Event::StageFailed {
            stage: "train".into(),
            message: "stage `train` failed: exit status 2; full log: /c/logs/demo/train.log".into(),
            log: Some("/c/logs/demo/train.log".into()),
            log_tail: vec!["boom".into()],
        });
        r.emit(Event::StageSkipped {
            stage: "report".into(),
            because: "upstream `train` did not finish".into(),
        });
        let summary = RunSummary {
            pipeline: "demo".into(),
            ok: false,
            interrupted: false,
            seconds: 61.2,
            stages: vec![
                st("prepare", Outcome::Cached, 0.01, None),
                st("count", Outcome::Ran, 1.5, Some((3, 7))),
                st("train", Outcome::Failed, 0.2, None),
                st("report", Outcome::Skipped, 0.0, None),
            ],
        };
        r.emit(Event::RunFinished { summary });
        insta::assert_snapshot!("plain_run", err.text());
        let json: serde_json::Value = serde_json::from_str(&out.text()).unwrap();
        assert_eq!(json["stages"][1]["outcome"], "ran");
        assert_eq!(json["stages"][1]["items_processed"], 3);
        assert!(json["stages"][0].get("items_processed").is_none());
    }

    #[test]
    fn status_and_dry_run_tables() {
        let stages = vec![
            StageStatus {
                name: "prepare".into(),
                kind: "command".into(),
                state: State::Fresh,
                action: Action::UpToDate,
                reasons: vec![],
                key: None,
            },
            StageStatus {
                name: "count".into(),
                kind: "command".into(),
                state: State::Stale,
                action: Action::Run,
                reasons: vec![
                    "params.n: 1 -> 2".into(),
                    "dep file `data/in.txt` modified".into(),
                ],
                key: None,
            },
            StageStatus {
                name: "report".into(),
                kind: "command".into(),
                state: State::Stale,
                action: Action::Restore,
                reasons: vec!["out `report.txt` missing from the workspace".into()],
                key: None,
            },
        ];
        insta::assert_snapshot!("status", status_table(&stages));
        insta::assert_snapshot!("dry_run", dry_run_table(&stages));
    }
}
