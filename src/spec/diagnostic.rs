//! Renders [`Issue`]s as miette diagnostics: one report per pipeline, each problem a related
//! diagnostic with its `file:line:column` snippet, sorted by position.

use std::sync::Arc;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan,
};

use super::{Issue, Pos, SourceText};

/// One located problem.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct IssueDiagnostic {
    message: String,
    #[source_code]
    src: NamedSource<Arc<str>>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    #[help]
    help: Option<String>,
    /// `file:line:column` of the main label, for plain-text consumers.
    location: String,
}

/// A pipeline file with problems: what `validate`, `run`, `status` and `graph` report (exit 3).
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{}", self.headline())]
pub struct InvalidPipeline {
    file: String,
    #[related]
    issues: Vec<IssueDiagnostic>,
}

impl InvalidPipeline {
    fn headline(&self) -> String {
        let n = self.issues.len();
        format!(
            "pipeline `{}` is invalid: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )
    }

    /// Number of problems.
    #[must_use]
    pub fn len(&self) -> usize {
        self.issues.len()
    }

    /// Whether there are no problems (never true for a constructed report).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.issues.is_empty()
    }

    /// `file:line:column: message` for each problem.
    #[must_use]
    pub fn locations(&self) -> Vec<String> {
        self.issues
            .iter()
            .map(|i| format!("{}: {}", i.location, i.message))
            .collect()
    }

    /// The full report with snippets; `color` for terminals.
    #[must_use]
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        let mut out = String::new();
        if handler.render_report(&mut out, self).is_err() {
            return self.locations().join("\n");
        }
        out
    }
}

fn span(pos: Pos) -> SourceSpan {
    SourceSpan::new(pos.offset.into(), pos.len)
}

fn locate(source: &SourceText, issue: &Issue) -> Pos {
    issue
        .pos
        .or_else(|| source.index.locate(&issue.path, issue.at_key))
        .unwrap_or(Pos {
            offset: 0,
            len: 1,
            line: 1,
            col: 1,
        })
}

/// Turns issues into one report over `source`, in file order.
#[must_use]
pub fn render_issues(source: &SourceText, issues: &[Issue]) -> InvalidPipeline {
    let text: Arc<str> = Arc::from(source.text.as_str());
    let mut located: Vec<(Pos, &Issue)> = issues.iter().map(|i| (locate(source, i), i)).collect();
    located.sort_by_key(|(p, _)| (p.offset, p.len));
    located.dedup_by(|a, b| a.1 == b.1);
    let issues = located
        .into_iter()
        .map(|(pos, issue)| {
            let mut labels = vec![LabeledSpan::new_primary_with_span(
                Some(label_for(issue)),
                span(pos),
            )];
            for note in &issue.notes {
                let p = note.pos.or_else(|| source.index.locate(&note.path, true));
                if let Some(p) = p {
                    labels.push(LabeledSpan::new_with_span(
                        Some(note.label.clone()),
                        span(p),
                    ));
                }
            }
            IssueDiagnostic {
                message: issue.message.clone(),
                src: NamedSource::new(source.name.clone(), Arc::clone(&text)),
                labels,
                help: issue.help.clone(),
                location: format!("{}:{}:{}", source.name, pos.line, pos.col),
            }
        })
        .collect();
    InvalidPipeline {
        file: source.name.clone(),
        issues,
    }
}

fn label_for(issue: &Issue) -> String {
    if issue.at_key {
        "this key".to_owned()
    } else {
        "here".to_owned()
    }
}
