//! Reads a pipeline file and validates its structure: keys, types, names, vars, config
//! includes. Problems are collected (never the first only) as [`Issue`]s with YAML paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::node::{self, Node};
use super::positions::{self, Pos, PositionIndex, child};
use super::{
    ConfigFile, ConfigUse, ExecutorSpec, InvalidPipeline, Issue, Note, Pipeline, Resources,
    SourceText, StageDef, decode, did_you_mean, digest_value, interp, is_contained, render_issues,
    valid_name,
};

/// Keys allowed at the top of a pipeline file.
pub const PIPELINE_KEYS: &[&str] = &["name", "vars", "configs", "sources", "stages", "executor"];
/// Keys allowed in a stage.
pub const STAGE_KEYS: &[&str] = &[
    "kind",
    "needs",
    "params",
    "config",
    "deps",
    "outs",
    "cmd",
    "resources",
    "description",
];

/// Errors reading a pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file does not exist.
    #[error(
        "pipeline file `{path}` not found (pass a pipeline path, or run where `brspeech.yaml` is)"
    )]
    NotFound {
        /// The path looked at.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("cannot read pipeline file `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid pipeline (syntax, or problems found during validation).
    #[error(transparent)]
    Invalid(Box<InvalidPipeline>),
}

/// A pipeline as far as it could be read, with the problems found on the way. Callers add the
/// problems found by later checks (kinds, graph) and render them together.
#[derive(Debug)]
pub struct Loaded {
    /// The pipeline; stages or fields with problems are left out or defaulted.
    pub pipeline: Pipeline,
    /// Structural problems.
    pub issues: Vec<Issue>,
}

/// The workspace root for a pipeline folder: the nearest folder at or above it that holds
/// `.git` or `brspeech.toml`, else the folder itself.
#[must_use]
pub fn find_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.join(".git").exists() || d.join("brspeech.toml").exists())
        .unwrap_or(dir)
        .to_path_buf()
}

/// Reads and validates `file`; `display` is how diagnostics name it.
///
/// # Errors
/// [`SpecError::NotFound`]/[`SpecError::Read`] when the file cannot be read,
/// [`SpecError::Invalid`] when it is not YAML at all.
pub fn load(file: &Path, display: &str) -> Result<Loaded, SpecError> {
    let text = std::fs::read_to_string(file).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SpecError::NotFound {
                path: file.to_path_buf(),
            }
        } else {
            SpecError::Read {
                path: file.to_path_buf(),
                source,
            }
        }
    })?;
    let file = std::path::absolute(file).map_err(|source| SpecError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    load_text(&file, display, text).map_err(|e| SpecError::Invalid(Box::new(e)))
}

/// Validates pipeline `text` as if read from the absolute path `file`.
///
/// # Errors
/// An [`InvalidPipeline`] when the text is not YAML.
pub fn load_text(file: &Path, display: &str, text: String) -> Result<Loaded, InvalidPipeline> {
    let index = PositionIndex::build(&text);
    let source = Arc::new(SourceText {
        name: display.to_owned(),
        text,
        index,
    });
    let root = match node::parse(&source.text) {
        Ok(n) => n,
        Err(e) => {
            let pos = e.location().map(|l| {
                let offset = l.index().min(source.text.len());
                Pos {
                    offset,
                    len: 1,
                    line: l.line(),
                    col: l.column(),
                }
            });
            let message = strip_location(&e.to_string());
            let issue = Issue {
                pos,
                ..Issue::new("", format!("invalid YAML: {message}"))
            };
            return Err(render_issues(&source, &[issue]));
        }
    };
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut cx = Cx { issues: Vec::new() };
    for d in source.index.duplicates() {
        let what = if d.parent == "stages" {
            "stage name"
        } else {
            "key"
        };
        let within = if d.parent.is_empty() {
            String::new()
        } else {
            format!(" in `{}`", d.parent)
        };
        cx.issues.push(Issue {
            pos: Some(d.second),
            notes: vec![Note {
                path: String::new(),
                pos: Some(d.first),
                label: "first defined here".into(),
            }],
            ..Issue::new(
                child(&d.parent, &d.key),
                format!("duplicate {what} `{}`{within}", d.key),
            )
        });
    }
    let mut pipeline = Pipeline {
        name: String::new(),
        file: file.to_path_buf(),
        root: find_root(&dir),
        dir,
        vars: BTreeMap::new(),
        configs: BTreeMap::new(),
        sources: Vec::new(),
        stages: Vec::new(),
        executor: None,
        source: Arc::clone(&source),
    };
    let Node::Map(top) = root else {
        cx.issues.push(Issue::new(
            "",
            "a pipeline file must be a mapping with at least `name` and `stages`",
        ));
        return Ok(Loaded {
            pipeline,
            issues: cx.issues,
        });
    };
    let top = cx.entries(&top, "", PIPELINE_KEYS);

    // vars first: everything else may refer to them.
    if let Some(v) = top.get("vars") {
        match cx.value(v, "vars") {
            Value::Object(m) => pipeline.vars = m.into_iter().collect(),
            Value::Null => {}
            _ => cx.issues.push(Issue::new(
                "vars",
                "`vars` must be a mapping of names to values",
            )),
        }
    }
    match top.get("name") {
        None => cx.issues.push(
            Issue::new("", "the pipeline has no `name`")
                .with_help("add `name: my-pipeline` at the top"),
        ),
        Some(n) => {
            if let Some(name) = cx.field::<String>(n, "name", &pipeline.vars) {
                if valid_name(&name) {
                    pipeline.name = name;
                } else {
                    cx.issues.push(
                        Issue::new("name", format!("invalid pipeline name `{name}`"))
                            .with_help(NAME_HELP),
                    );
                }
            }
        }
    }
    if let Some(c) = top.get("configs")
        && let Some(configs) = cx.field::<BTreeMap<String, String>>(c, "configs", &pipeline.vars)
    {
        for (alias, written) in configs {
            if let Some(cf) = cx.config_file(&pipeline.dir, &alias, &written) {
                pipeline.configs.insert(alias, cf);
            }
        }
    }
    if let Some(s) = top.get("sources") {
        match cx.value(s, "sources") {
            Value::Array(mut items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let p = positions::item("sources", i);
                    if item.is_object() {
                        interp::substitute(item, &p, &pipeline.vars, &mut cx.issues);
                    } else {
                        cx.issues
                            .push(Issue::new(p, "each source must be a mapping"));
                    }
                }
                pipeline.sources = items;
            }
            Value::Null => {}
            _ => cx.issues.push(Issue::new(
                "sources",
                "`sources` must be a list of mappings",
            )),
        }
    }
    if let Some(e) = top.get("executor") {
        pipeline.executor = cx.field::<ExecutorSpec>(e, "executor", &pipeline.vars);
    }
    match top.get("stages") {
        None => cx.issues.push(
            Issue::new("", "the pipeline has no `stages`")
                .with_help("add a `stages:` mapping of stage names to definitions"),
        ),
        Some(Node::Map(entries)) => {
            for (k, v) in entries {
                if let Some(stage) = cx.stage(k, v, &pipeline)
                    && !pipeline.stages.iter().any(|s| s.name == stage.name)
                {
                    pipeline.stages.push(stage);
                }
            }
        }
        Some(Node::Null) => {}
        Some(_) => cx.issues.push(Issue::new(
            "stages",
            "`stages` must be a mapping of stage names to definitions",
        )),
    }
    cx.issues.extend(super::executor::check(&pipeline));
    Ok(Loaded {
        pipeline,
        issues: cx.issues,
    })
}

const NAME_HELP: &str = "names use letters, digits, `_`, `-` and `.`";

struct Cx {
    issues: Vec<Issue>,
}

impl Cx {
    /// The entries of a mapping by key (first occurrence), reporting unknown keys.
    fn entries<'n>(
        &mut self,
        map: &'n [(Node, Node)],
        path: &str,
        known: &[&str],
    ) -> BTreeMap<String, &'n Node> {
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let Some(key) = k.key_text() else {
                self.issues
                    .push(Issue::new(path, "mapping keys must be plain scalars"));
                continue;
            };
            if !known.contains(&key.as_str()) {
                let scope = if path.is_empty() {
                    "the pipeline".to_owned()
                } else {
                    format!("`{path}`")
                };
                self.issues.push(
                    Issue::new(child(path, &key), format!("unknown key `{key}` in {scope}"))
                        .at_key()
                        .with_help(did_you_mean(&key, known.iter().copied()).unwrap_or_else(
                            || {
                                format!(
                                    "allowed keys: {}",
                                    known
                                        .iter()
                                        .map(|k| format!("`{k}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            },
                        )),
                );
                continue;
            }
            out.entry(key).or_insert(v);
        }
        out
    }

    /// A node as JSON, reporting what JSON cannot hold.
    fn value(&mut self, node: &Node, path: &str) -> Value {
        match node {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or_else(
                || {
                    self.issues.push(Issue::new(
                        path,
                        "infinite or NaN numbers are not supported",
                    ));
                    Value::Null
                },
                Value::Number,
            ),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.value(n, &positions::item(path, i)))
                    .collect(),
            ),
            Node::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    match k.key_text() {
                        Some(key) => {
                            let val = self.value(v, &child(path, &key));
                            m.entry(key).or_insert(val);
                        }
                        None => self
                            .issues
                            .push(Issue::new(path, "mapping keys must be plain scalars")),
                    }
                }
                Value::Object(m)
            }
        }
    }

    /// A field decoded into `T` after vars substitution.
    fn field<T: DeserializeOwned>(
        &mut self,
        node: &Node,
        path: &str,
        vars: &BTreeMap<String, Value>,
    ) -> Option<T> {
        let mut v = self.value(node, path);
        let before = self.issues.len();
        interp::substitute(&mut v, path, vars, &mut self.issues);
        if self.issues.len() > before {
            return None;
        }
        match decode::<T>(&v, path) {
            Ok(t) => Some(t),
            Err(issue) => {
                self.issues.push(*issue);
                None
            }
        }
    }

    fn config_file(&mut self, dir: &Path, alias: &str, written: &str) -> Option<ConfigFile> {
        let path = child("configs", alias);
        if !super::valid_name(alias) {
            self.issues.push(
                Issue::new(&path, format!("invalid config alias `{alias}`"))
                    .at_key()
                    .with_help(NAME_HELP),
            );
            return None;
        }
        let file = dir.join(written);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                self.issues.push(Issue::new(
                    &path,
                    format!("cannot read config `{alias}` at `{written}`: {e}"),
                ));
                return None;
            }
        };
        let node = match node::parse(&text) {
            Ok(n) => n,
            Err(e) => {
                self.issues.push(Issue::new(
                    &path,
                    format!("config `{alias}` (`{written}`) is not valid YAML: {e}"),
                ));
                return None;
            }
        };
        let mut sub = Cx { issues: Vec::new() };
        let content = sub.value(&node, "");
        if let Some(first) = sub.issues.first() {
            self.issues.push(Issue::new(
                &path,
                format!(
                    "config `{alias}` (`{written}`): {} at `{}`",
                    first.message, first.path
                ),
            ));
            return None;
        }
        if !content.is_object() {
            self.issues.push(Issue::new(
                &path,
                format!("config `{alias}` (`{written}`) must be a mapping of sections"),
            ));
            return None;
        }
        Some(ConfigFile {
            alias: alias.to_owned(),
            path: file,
            content,
        })
    }

    fn stage(&mut self, key: &Node, node: &Node, pipeline: &Pipeline) -> Option<StageDef> {
        let name = key.key_text()?;
        let path = child("stages", &name);
        if !valid_name(&name) {
            self.issues.push(
                Issue::new(&path, format!("invalid stage name `{name}`"))
                    .at_key()
                    .with_help(NAME_HELP),
            );
        }
        let Node::Map(fields) = node else {
            self.issues.push(Issue::new(
                &path,
                format!("stage `{name}` must be a mapping with at least `kind`"),
            ));
            return None;
        };
        let f = self.entries(fields, &path, STAGE_KEYS);
        let vars = &pipeline.vars;
        let node_at = |k: &str| f.get(k).map(|n| (*n, child(&path, k)));
        let kind = match node_at("kind") {
            Some((n, p)) => self.field::<String>(n, &p, vars).unwrap_or_default(),
            None => {
                self.issues.push(
                    Issue::new(&path, format!("stage `{name}` has no `kind`"))
                        .at_key()
                        .with_help("add `kind: command` (or a built-in kind)"),
                );
                String::new()
            }
        };
        let list = |cx: &mut Cx, k: &str| -> Vec<String> {
            match f.get(k) {
                Some(n) => {
                    let p = child(&path, k);
                    let items: Vec<String> = cx
                        .field::<Option<Vec<String>>>(n, &p, vars)
                        .flatten()
                        .unwrap_or_default();
                    for (i, s) in items.iter().enumerate() {
                        if s.trim().is_empty() {
                            cx.issues.push(Issue::new(
                                positions::item(&p, i),
                                format!("empty entry in `{k}`"),
                            ));
                        }
                    }
                    items
                }
                None => Vec::new(),
            }
        };
        let needs = list(self, "needs");
        let deps = list(self, "deps");
        let outs = list(self, "outs");
        for (i, o) in outs.iter().enumerate() {
            if !o.trim().is_empty() && !is_contained(o) {
                self.issues.push(
                    Issue::new(
                        positions::item(&child(&path, "outs"), i),
                        format!("out `{o}` leaves the pipeline's folder"),
                    )
                    .with_help(
                        "outs are relative paths inside the pipeline's folder, without `..`",
                    ),
                );
            }
        }
        let own_params = match f.get("params") {
            Some(n) => {
                let p = child(&path, "params");
                let mut v = self.value(n, &p);
                interp::substitute(&mut v, &p, vars, &mut self.issues);
                match v {
                    Value::Object(m) => Value::Object(m),
                    Value::Null => Value::Object(serde_json::Map::new()),
                    _ => {
                        self.issues
                            .push(Issue::new(&p, "`params` must be a mapping"));
                        Value::Object(serde_json::Map::new())
                    }
                }
            }
            None => Value::Object(serde_json::Map::new()),
        };
        let cmd =
            node_at("cmd").and_then(|(n, p)| self.field::<Option<String>>(n, &p, vars).flatten());
        let description = node_at("description")
            .and_then(|(n, p)| self.field::<Option<String>>(n, &p, vars).flatten());
        let resources = node_at("resources")
            .and_then(|(n, p)| self.field::<Option<RawResources>>(n, &p, vars).flatten())
            .map(|r| Resources { gpu: r.gpu })
            .unwrap_or_default();
        let mut params = own_params.clone();
        let mut config = None;
        if let Some((n, p)) = node_at("config")
            && let Some(alias) = self.field::<String>(n, &p, vars)
        {
            let cx = &mut *self;
            match pipeline.configs.get(&alias) {
                None if pipeline.configs.is_empty() && !cx.issues.iter().any(|i| i.path.starts_with("configs")) => cx.issues.push(
                    Issue::new(&p, format!("unknown config `{alias}`: the pipeline has no `configs`"))
                        .with_help(format!("add `configs: {{{alias}: path/to/file.yaml}}`")),
                ),
                None => {
                    if !cx.has_issue_at(&child("configs", &alias)) {
                        cx.issues.push(
                            Issue::new(&p, format!("unknown config `{alias}`"))
                                .with_help_opt(did_you_mean(&alias, pipeline.configs.keys().map(String::as_str))),
                        );
                    }
                }
                Some(cf) => match cf.content.get(&kind) {
                    Some(section @ Value::Object(_)) => {
                        params = super::deep_merge(section, &own_params);
                        config = Some(ConfigUse { alias: alias.clone(), section: kind.clone(), digest: digest_value(section) });
                    }
                    Some(_) => cx.issues.push(Issue::new(&p, format!("section `{kind}` of config `{alias}` must be a mapping of params"))),
                    None => cx.issues.push(
                        Issue::new(&p, format!("config `{alias}` (`{}`) has no section `{kind}`", cf.path.display()))
                            .with_help(format!("stages take the section named after their kind; add `{kind}:` to that file")),
                    ),
                },
            }
        }
        let Value::Object(params) = super::canonical(&params) else {
            unreachable!("params are a mapping")
        };
        Some(StageDef {
            name,
            kind,
            needs,
            params: params.into_iter().collect(),
            config,
            deps,
            outs,
            cmd,
            resources,
            description,
        })
    }

    fn has_issue_at(&self, path: &str) -> bool {
        self.issues.iter().any(|i| i.path == path)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    gpu: u32,
}

/// serde_yaml appends "at line L column C" to messages that already carry a location.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indoc::indoc;

    fn issues_of(text: &str) -> Vec<(String, String)> {
        let loaded =
            load_text(Path::new("/nonexistent/p.yaml"), "p.yaml", text.to_owned()).unwrap();
        loaded
            .issues
            .into_iter()
            .map(|i| (i.path, i.message))
            .collect()
    }

    #[test]
    fn a_valid_pipeline_loads_in_file_order() {
        let text = indoc! {r#"
            name: demo
            vars: {n: 3, dir: data}
            stages:
              zeta:
                kind: command
                cmd: echo ${vars.n} > ${vars.dir}/z.txt
                outs: [data/z.txt]
                params: {n: "${vars.n}"}
              alpha:
                kind: command
                needs: [zeta]
                cmd: cat data/z.txt
                resources: {gpu: 1}
        "#};
        let l = load_text(Path::new("/w/p.yaml"), "p.yaml", text.to_owned()).unwrap();
        assert!(l.issues.is_empty(), "{:?}", l.issues);
        let p = l.pipeline;
        assert_eq!(p.name, "demo");
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        assert_eq!(p.stages[0].cmd.as_deref(), Some("echo 3 > data/z.txt"));
        assert_eq!(p.stages[0].params["n"], serde_json::json!(3));
        assert_eq!(p.stages[1].resources.gpu, 1);
        assert_eq!(p.lock_path(), Path::new("/w/p.lock"));
    }

    #[test]
    fn every_structural_problem_is_reported_at_once() {
        let text = indoc! {"
            name: demo
            stagez: {}
            stages:
              a:
                kind: command
                needs: b
                comand: echo
                resources: {gpu: many}
              b:
                cmd: [1]
              a:
                kind: command
        "};
        let got = issues_of(text);
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "stages.a",
                "stagez",
                "stages.a.comand",
                "stages.a.needs",
                "stages.a.resources.gpu",
                "stages.b",
                "stages.b.cmd"
            ],
            "{got:#?}"
        );
        assert!(got[0].1.contains("duplicate stage name `a`"));
        assert!(got[2].1.contains("unknown key `comand`"));
    }

    #[test]
    fn syntax_errors_are_fatal_and_located() {
        let err = load_text(
            Path::new("/w/p.yaml"),
            "p.yaml",
            "name: [x\nstages: {}\n".into(),
        )
        .unwrap_err();
        let text = err.render(false);
        assert!(text.contains("invalid YAML"), "{text}");
        assert!(text.contains("p.yaml:"), "{text}");
    }

    #[test]
    fn config_sections_are_merged_under_params_and_digested() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.yaml"),
            "command: {lr: 0.1, opt: {beta: 0.9}}\nother: {}\n",
        )
        .unwrap();
        let text = "name: d\nconfigs: {model: m.yaml}\nstages:\n  a: {kind: command, cmd: 'true', config: model, params: {opt: {beta: 0.5}}}\n";
        let l = load_text(&dir.path().join("p.yaml"), "p.yaml", text.into()).unwrap();
        assert!(l.issues.is_empty(), "{:?}", l.issues);
        let s = &l.pipeline.stages[0];
        assert_eq!(s.params["lr"], serde_json::json!(0.1));
        assert_eq!(s.params["opt"], serde_json::json!({"beta": 0.5}));
        let c = s.config.as_ref().unwrap();
        assert_eq!((c.alias.as_str(), c.section.as_str()), ("model", "command"));
        assert_eq!(
            c.digest,
            digest_value(&serde_json::json!({"lr": 0.1, "opt": {"beta": 0.9}}))
        );
    }

    #[test]
    fn config_problems_name_the_alias_and_section() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.yaml"), "train_aasist: {lr: 0.1}\n").unwrap();
        let text = "name: d\nconfigs: {model: m.yaml, gone: nope.yaml}\nstages:\n  a: {kind: command, cmd: 'true', config: model}\n  b: {kind: command, cmd: 'true', config: modle}\n";
        let l = load_text(&dir.path().join("p.yaml"), "p.yaml", text.into()).unwrap();
        let got: Vec<(String, String)> =
            l.issues.into_iter().map(|i| (i.path, i.message)).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].1.starts_with("cannot read config `gone`"));
        assert!(got[1].1.contains("has no section `command`"));
        assert_eq!(got[2].1, "unknown config `modle`");
    }

    #[test]
    fn executor_block_is_parsed_and_checked() {
        let text = "name: d\nexecutor: {partition: gpu, time: '01:00:00', extra: ['--exclusive']}\nstages: {}\n";
        let l = load_text(Path::new("/w/p.yaml"), "p.yaml", text.into()).unwrap();
        assert!(l.issues.is_empty());
        let e = l.pipeline.executor.unwrap();
        assert_eq!(e.partition.as_deref(), Some("gpu"));
        assert_eq!(e.extra, ["--exclusive"]);
        let got = issues_of("name: d\nexecutor: {partiton: gpu}\nstages: {}\n");
        assert_eq!(got[0].0, "executor.partiton");
        assert!(got[0].1.contains("unknown field `partiton`"), "{got:?}");
    }
}
