//! Pipeline files: YAML → validated [`Pipeline`] (vars, config includes, stage definitions),
//! with every problem located at `file:line:column` and rendered through miette
//! (docs/pipeline-spec.md, docs/architecture.md).

mod diagnostic;
pub mod executor;
mod interp;
mod load;
mod node;
pub mod positions;
mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use diagnostic::{InvalidPipeline, render_issues};
pub use executor::{ExecutorSpec, StageExecutorSpec};
pub use load::{Loaded, SpecError, find_root, load, load_text};
pub use positions::{Pos, PositionIndex};
pub use raw::schema_json;

/// Parameters of a stage: canonical (sorted) JSON values by name.
pub type Params = BTreeMap<String, Value>;

/// A validated pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `name:`; names the lock file records and `outputs/<name>/`.
    pub name: String,
    /// Absolute path of the pipeline file.
    pub file: PathBuf,
    /// Folder of the pipeline file: relative paths (deps, outs, configs, `cmd`) start here.
    pub dir: PathBuf,
    /// Workspace root: nearest folder at or above `dir` holding `.git` or `brspeech.toml`.
    pub root: PathBuf,
    /// `vars:` after loading (already substituted everywhere else).
    pub vars: BTreeMap<String, Value>,
    /// `configs:` by alias.
    pub configs: BTreeMap<String, ConfigFile>,
    /// `sources:` kept raw (one JSON object per entry); the corpus kinds validate them.
    pub sources: Vec<Value>,
    /// `stages:` in file order.
    pub stages: Vec<StageDef>,
    /// `executor:` (settings of the Slurm executor; the local one ignores them).
    pub executor: Option<ExecutorSpec>,
    /// The pipeline text and its position index, for diagnostics.
    pub source: Arc<SourceText>,
}

impl Pipeline {
    /// The stage named `name`.
    #[must_use]
    pub fn stage(&self, name: &str) -> Option<&StageDef> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// A path written in the pipeline, resolved against the pipeline's folder.
    #[must_use]
    pub fn resolve(&self, written: &str) -> PathBuf {
        self.dir.join(written)
    }

    /// The lock file beside the pipeline file (`full.yaml` → `full.lock`).
    #[must_use]
    pub fn lock_path(&self) -> PathBuf {
        self.file.with_extension("lock")
    }
}

/// A pipeline file's text, display name and YAML position index.
#[derive(Debug, Clone)]
pub struct SourceText {
    /// Name shown in diagnostics (the path as given on the command line).
    pub name: String,
    /// The file's text.
    pub text: String,
    /// YAML path → position.
    pub index: PositionIndex,
}

/// A config file included with `configs: {alias: path}`.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The alias stages name in `config:`.
    pub alias: String,
    /// Absolute path.
    pub path: PathBuf,
    /// The whole file's content.
    pub content: Value,
}

/// Which config section a stage took its default params from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUse {
    /// Alias in `configs:`.
    pub alias: String,
    /// Section name (the stage's kind).
    pub section: String,
    /// blake3 (hex) of the section's canonical JSON; part of the stage key.
    pub digest: String,
}

/// Declared resources of a stage; the scheduler never over-subscribes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// GPUs held while the stage runs.
    pub gpu: u32,
}

/// One stage of a pipeline.
#[derive(Debug, Clone)]
pub struct StageDef {
    /// Name (the key under `stages:`).
    pub name: String,
    /// `kind:` (`command`, `scan_corpus`, ...).
    pub kind: String,
    /// `needs:`: upstream stages whose outputs this stage reads.
    pub needs: Vec<String>,
    /// Effective params: the config section (if any) deep-merged under the stage's own `params`.
    pub params: Params,
    /// The config section used, if `config:` is set.
    pub config: Option<ConfigUse>,
    /// `deps:` as written (relative to the pipeline's folder, or absolute).
    pub deps: Vec<String>,
    /// `outs:` as written (relative to the pipeline's folder).
    pub outs: Vec<String>,
    /// `cmd:` (command stages).
    pub cmd: Option<String>,
    /// `resources:`.
    pub resources: Resources,
    /// `description:`.
    pub description: Option<String>,
}

impl StageDef {
    /// YAML path of this stage's definition (`stages.<name>`).
    #[must_use]
    pub fn path(&self) -> String {
        positions::child("stages", &self.name)
    }

    /// The params decoded into a typed struct. Each problem comes back as an [`Issue`] located
    /// at `stages.<name>.params.<field>`.
    ///
    /// # Errors
    /// One issue describing the first field that does not fit `P`.
    pub fn params_as<P: DeserializeOwned>(&self) -> Result<P, Box<Issue>> {
        let base = positions::child(&self.path(), "params");
        decode(
            &Value::Object(self.params.clone().into_iter().collect()),
            &base,
        )
    }
}

/// Decodes a JSON value taken from the pipeline into `T`, reporting where it failed.
///
/// # Errors
/// An [`Issue`] at `base` plus the inner path of the failing field.
pub fn decode<T: DeserializeOwned>(value: &Value, base: &str) -> Result<T, Box<Issue>> {
    serde_path_to_error::deserialize::<_, T>(value.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            base.to_owned()
        } else {
            join_serde_path(base, &inner)
        };
        Box::new(Issue::new(path, e.into_inner().to_string()))
    })
}

fn join_serde_path(base: &str, inner: &str) -> String {
    let mut out = base.to_owned();
    for seg in inner.split('.') {
        match seg.split_once('[') {
            Some((head, rest)) => {
                if !head.is_empty() {
                    out = positions::child(&out, head);
                }
                out.push('[');
                out.push_str(rest);
            }
            None => out = positions::child(&out, seg),
        }
    }
    out
}

/// One problem in a pipeline, located by YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// YAML path the problem concerns (`stages.train.params.lr`).
    pub path: String,
    /// Point at the key (unknown keys, names) rather than the value.
    pub at_key: bool,
    /// Explicit position, when not derived from `path` (syntax errors).
    pub pos: Option<Pos>,
    /// What is wrong (lowercase, names in backticks).
    pub message: String,
    /// What to do about it (did-you-mean, allowed values).
    pub help: Option<String>,
    /// Other places worth showing (`first defined here`).
    pub notes: Vec<Note>,
}

/// A secondary place shown with an [`Issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// YAML path, or empty when `pos` is set.
    pub path: String,
    /// Explicit position.
    pub pos: Option<Pos>,
    /// Label printed there.
    pub label: String,
}

impl Issue {
    /// A problem with the value at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            path: path.into(),
            at_key: false,
            pos: None,
            message: message.into(),
            help: None,
            notes: Vec::new(),
        }
    }

    /// Points at the key rather than its value.
    #[must_use]
    pub fn at_key(mut self) -> Self {
        self.at_key = true;
        self
    }

    /// Adds a hint.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a hint when there is one.
    #[must_use]
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Shows another place (by YAML path, at its key).
    #[must_use]
    pub fn with_note(mut self, path: impl Into<String>, label: impl Into<String>) -> Self {
        self.notes.push(Note {
            path: path.into(),
            pos: None,
            label: label.into(),
        });
        self
    }
}

/// `did you mean `x`?` for a misspelt name, when a candidate is close enough.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let budget = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            (
                strsim::damerau_levenshtein(name, c),
                strsim::jaro_winkler(name, c),
                c,
            )
        })
        .filter(|(dist, jw, _)| *dist <= budget || *jw >= 0.85)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| format!("did you mean `{c}`?"))
}

/// Deep-merges `over` onto `base`: mappings merge key by key, anything else is replaced.
#[must_use]
pub fn deep_merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match b.get(k) {
                    Some(bv) => deep_merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => over.clone(),
    }
}

/// The same value with every mapping's keys in sorted order (hashing and display use this).
#[must_use]
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// blake3 (hex) of a value's canonical JSON.
#[must_use]
pub fn digest_value(value: &Value) -> String {
    let bytes = serde_json::to_vec(&canonical(value)).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

/// Display form of a value in reasons and messages (`5e-6`, `"text"`, `[1,2]`).
#[must_use]
pub fn display_value(value: &Value) -> String {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f != 0.0 && (f.abs() < 1e-3 || f.abs() >= 1e7) => format!("{f:e}"),
            (_, _, Some(f)) => format!("{f:?}"),
            _ => n.to_string(),
        },
        Value::String(s) => format!("{s:?}"),
        other => serde_json::to_string(&canonical(other)).unwrap_or_default(),
    }
}

/// Whether `name` is usable as a stage or pipeline name (also a folder name under `outputs/`).
#[must_use]
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Rejects paths that leave the pipeline's folder (`..`) or are absolute.
#[must_use]
pub fn is_contained(written: &str) -> bool {
    let p = Path::new(written);
    !p.is_absolute()
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_merge_keeps_base_keys_and_lets_params_win() {
        let base = json!({"lr": 1e-4, "opt": {"beta": 0.9, "eps": 1e-8}, "list": [1, 2]});
        let over = json!({"opt": {"beta": 0.95}, "list": [3]});
        assert_eq!(
            deep_merge(&base, &over),
            json!({"lr": 1e-4, "opt": {"beta": 0.95, "eps": 1e-8}, "list": [3]})
        );
    }

    #[test]
    fn floats_display_like_their_yaml() {
        assert_eq!(display_value(&json!(5e-6)), "5e-6");
        assert_eq!(display_value(&json!(1e-5)), "1e-5");
        assert_eq!(display_value(&json!(0.5)), "0.5");
        assert_eq!(display_value(&json!(3)), "3");
        assert_eq!(display_value(&json!("a")), "\"a\"");
    }

    #[test]
    fn did_you_mean_finds_close_names_only() {
        let names = ["prepare", "train", "evaluate"];
        assert_eq!(
            did_you_mean("trian", names).as_deref(),
            Some("did you mean `train`?")
        );
        assert_eq!(did_you_mean("zzz", names), None);
    }

    #[test]
    fn serde_paths_join_onto_yaml_paths() {
        assert_eq!(
            join_serde_path("stages.a.params", "lr"),
            "stages.a.params.lr"
        );
        assert_eq!(join_serde_path("sources", "[2].root"), "sources[2].root");
        assert_eq!(join_serde_path("a", "b[1].c"), "a.b[1].c");
    }

    #[test]
    fn containment() {
        assert!(is_contained("data/out.txt"));
        assert!(!is_contained("../out.txt"));
        assert!(!is_contained("/tmp/out.txt"));
    }
}
