//! `sources:` entries: the serde form (`SourceDef`), its validation into `Source` with every
//! problem reported at once under its key (`sources[2].label`), and the compiled file matcher.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::split::Split;

/// File-name patterns used when a source gives no `include`.
pub const DEFAULT_INCLUDE: &[&str] = &[
    "*.flac", "*.wav", "*.wave", "*.ogg", "*.oga", "*.opus", "*.mp3", "*.m4a", "*.aac", "*.aif",
    "*.aiff",
];

/// One entry of the pipeline's `sources:` list, as written (checked by [`validate_sources`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDef {
    /// Unique name; used in shard names and the `source` column.
    pub name: String,
    /// `bonafide` or `spoof`.
    pub label: String,
    /// Folder of audio files (relative paths resolve against the pipeline's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Globs of files to take (default [`DEFAULT_INCLUDE`]). A glob without `/` matches file
    /// names anywhere; one with `/` matches the path relative to `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Globs of files to leave out (same matching as `include`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How files get their split (default `hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitDef>,
    /// Where speaker ids come from (default: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<SpeakerDef>,
    /// Generate the files with a command instead of reading `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateDef>,
}

/// `split:` of a source: `folders`, `hash`, `{ hash: {...} }`, `csv` or `{ csv: {...} }`.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitDef {
    /// A `train/`, `dev/` or `val/`, `test/` component in the path (BRSpeech-DF layout).
    Folders,
    /// Listed in metadata CSV files, one per split (BRSpeech layout).
    Csv(CsvSplitDef),
    /// Seeded hash of the speaker (or of the path when no speaker is known).
    Hash(HashSplitDef),
}

const SPLIT_KINDS: &[&str] = &["folders", "csv", "hash"];

impl Serialize for SplitDef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Folders => s.serialize_str("folders"),
            Self::Csv(def) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("csv", def)?;
                m.end()
            }
            Self::Hash(def) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hash", def)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SplitDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SplitVisitor;
        impl<'de> Visitor<'de> for SplitVisitor {
            type Value = SplitDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`folders`, `csv`, `hash`, or a map with one of them as its only key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SplitDef, E> {
                match v {
                    "folders" => Ok(SplitDef::Folders),
                    "csv" => Ok(SplitDef::Csv(CsvSplitDef::default())),
                    "hash" => Ok(SplitDef::Hash(HashSplitDef::default())),
                    other => Err(E::unknown_variant(other, SPLIT_KINDS)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SplitDef, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                let def = match key.as_str() {
                    "folders" => {
                        map.next_value::<de::IgnoredAny>()?;
                        SplitDef::Folders
                    }
                    "csv" => {
                        SplitDef::Csv(map.next_value::<Option<CsvSplitDef>>()?.unwrap_or_default())
                    }
                    "hash" => SplitDef::Hash(
                        map.next_value::<Option<HashSplitDef>>()?
                            .unwrap_or_default(),
                    ),
                    other => return Err(de::Error::unknown_variant(other, SPLIT_KINDS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "`split` takes one kind, found a second key `{extra}`"
                    )));
                }
                Ok(def)
            }
        }
        d.deserialize_any(SplitVisitor)
    }
}

/// `split: { csv: {...} }`: metadata files (paths relative to `root`) listing each split's
/// files. Defaults follow BRSpeech: `train.csv` / `dev.csv` / `test.csv`, `|`-delimited with a
/// header, the path in `wav_filename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvSplitDef {
    /// CSV file per split (`train`, `val`, `test`); a split may be left out.
    pub files: BTreeMap<Split, PathBuf>,
    /// One-byte field delimiter.
    pub delimiter: String,
    /// Header name of the column holding the audio path (relative to `root`).
    pub path_column: String,
}

impl Default for CsvSplitDef {
    fn default() -> Self {
        Self {
            files: BTreeMap::from([
                (Split::Train, PathBuf::from("train.csv")),
                (Split::Val, PathBuf::from("dev.csv")),
                (Split::Test, PathBuf::from("test.csv")),
            ]),
            delimiter: "|".into(),
            path_column: "wav_filename".into(),
        }
    }
}

/// `split: { hash: {...} }`: per-source override of the stage's ratios.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashSplitDef {
    /// `[train, val, test]` weights (default: the stage's `ratios`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratios: Option<[f64; 3]>,
}

/// `speaker:`: `{ column: client_id }` (a column of the source's split CSVs) or
/// `{ regex: '^(?P<speaker>[^/]+)/' }` (on the path relative to `root`; the group named
/// `speaker`, else group 1, else the whole match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerDef {
    /// Header name of a column of the `split: csv` files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Regular expression on the relative path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `generate:`: run `cmd` once per line of `texts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateDef {
    /// Shell command template with `{text}` and `{out}` (each replaced by a shell-quoted value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Text file, one utterance per line (relative paths resolve against the pipeline's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texts: Option<PathBuf>,
    /// Extension of the files the command writes (default `wav`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
}

/// Class of a source's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Real speech.
    Bonafide,
    /// Synthetic speech.
    Spoof,
}

impl Label {
    /// `bonafide` or `spoof`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bonafide => "bonafide",
            Self::Spoof => "spoof",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked split rule.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitRule {
    /// Split from a path component.
    Folders,
    /// Split from metadata CSV files.
    Csv(CsvRule),
    /// Seeded hash, with an optional ratio override.
    Hash {
        /// `[train, val, test]` weights overriding the stage's.
        ratios: Option<[f64; 3]>,
    },
}

/// A checked CSV split rule (files resolved to absolute paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRule {
    /// Absolute CSV path per split.
    pub files: BTreeMap<Split, PathBuf>,
    /// Field delimiter.
    pub delimiter: u8,
    /// Header of the path column.
    pub path_column: String,
}

/// A checked speaker rule.
#[derive(Debug, Clone)]
pub enum SpeakerRule {
    /// A column of the split CSVs.
    Column(String),
    /// A regex on the relative path.
    Regex(Regex),
}

impl PartialEq for SpeakerRule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Column(a), Self::Column(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl SpeakerRule {
    /// Speaker of `relative_path` under a regex rule (`None` for a column rule, or no match).
    pub fn speaker_from_path(&self, relative_path: &str) -> Option<String> {
        let Self::Regex(re) = self else {
            return None;
        };
        let caps = re.captures(relative_path)?;
        let m = caps
            .name("speaker")
            .or_else(|| caps.get(1))
            .or_else(|| caps.get(0))?;
        (!m.as_str().is_empty()).then(|| m.as_str().to_string())
    }
}

/// A checked `generate:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generate {
    /// Command template.
    pub cmd: String,
    /// Absolute path of the texts file.
    pub texts: PathBuf,
    /// Extension of the outputs.
    pub ext: String,
}

/// Where a source's files come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Files under a folder (absolute).
    Root(PathBuf),
    /// Files made by a command.
    Generate(Generate),
}

/// Include / exclude globs compiled.
#[derive(Debug, Clone)]
pub struct FileMatcher {
    include_names: GlobSet,
    include_paths: GlobSet,
    exclude_names: GlobSet,
    exclude_paths: GlobSet,
}

/// What the matcher says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Take it.
    Include,
    /// Not an include match (not audio by the source's rules).
    NotIncluded,
    /// An include match ruled out by `exclude`.
    Excluded,
}

impl FileMatcher {
    /// Classifies a relative path (`/`-separated).
    pub fn classify(&self, relative_path: &str) -> Match {
        let name = relative_path.rsplit('/').next().unwrap_or(relative_path);
        let included =
            self.include_names.is_match(name) || self.include_paths.is_match(relative_path);
        if !included {
            Match::NotIncluded
        } else if self.exclude_names.is_match(name) || self.exclude_paths.is_match(relative_path) {
            Match::Excluded
        } else {
            Match::Include
        }
    }
}

/// A checked source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Unique name.
    pub name: String,
    /// Class of its files.
    pub label: Label,
    /// Folder or generator.
    pub origin: Origin,
    /// Compiled include / exclude globs.
    pub matcher: FileMatcher,
    /// Split rule.
    pub split: SplitRule,
    /// Speaker rule, if any.
    pub speaker: Option<SpeakerRule>,
    /// The definition it was checked from (for keys and messages).
    pub def: SourceDef,
}

impl Source {
    /// The folder files are read from, for a folder source.
    pub fn root(&self) -> Option<&Path> {
        match &self.origin {
            Origin::Root(root) => Some(root),
            Origin::Generate(_) => None,
        }
    }
}

/// One problem found while checking `sources:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIssue {
    /// Index in the list.
    pub index: usize,
    /// Key inside the entry (`label`, `include[1]`, `split.csv.files.train`); empty for the
    /// entry as a whole.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
    /// The entry is well formed but names a path that does not exist on this machine: a problem
    /// of the environment (a corpus not yet copied, a mount missing), not of the pipeline.
    pub missing: bool,
}

impl SourceIssue {
    /// Full key under `prefix` (e.g. `sources[2].label` for prefix `sources`).
    pub fn key(&self, prefix: &str) -> String {
        if self.field.is_empty() {
            format!("{prefix}[{}]", self.index)
        } else {
            format!("{prefix}[{}].{}", self.index, self.field)
        }
    }
}

impl fmt::Display for SourceIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key("sources"), self.message)
    }
}

struct Checker {
    index: usize,
    issues: Vec<SourceIssue>,
}

impl Checker {
    fn issue(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.issues.push(SourceIssue {
            index: self.index,
            field: field.into(),
            message: message.into(),
            missing: false,
        });
    }

    /// A path the entry names does not exist here (see [`SourceIssue::missing`]).
    fn missing(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.issue(field, message);
        if let Some(last) = self.issues.last_mut() {
            last.missing = true;
        }
    }
}

fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn compile_globs(patterns: &[String], field: &str, c: &mut Checker) -> (GlobSet, GlobSet) {
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for (i, pat) in patterns.iter().enumerate() {
        let by_path = pat.contains('/');
        match GlobBuilder::new(pat.trim_start_matches("./"))
            .case_insensitive(true)
            .literal_separator(by_path)
            .build()
        {
            Ok(g) if by_path => {
                paths.add(g);
            }
            Ok(g) => {
                names.add(g);
            }
            Err(e) => c.issue(
                format!("{field}[{i}]"),
                format!("`{pat}` is not a valid glob: {}", e.kind()),
            ),
        }
    }
    let build = |b: GlobSetBuilder| b.build().unwrap_or_else(|_| GlobSet::empty());
    (build(names), build(paths))
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        && !name.starts_with('.')
}

fn check_split(def: &SourceDef, root: Option<&Path>, c: &mut Checker) -> SplitRule {
    match def
        .split
        .clone()
        .unwrap_or(SplitDef::Hash(HashSplitDef::default()))
    {
        SplitDef::Folders => {
            if def.generate.is_some() {
                c.issue(
                    "split",
                    "`split: folders` needs files in `train/`, `dev/`, `test/` folders; a generated source has none: use `split: hash`",
                );
            }
            SplitRule::Folders
        }
        SplitDef::Hash(h) => {
            if let Some(r) = h.ratios {
                check_ratios(&r, "split.hash.ratios", c);
            }
            SplitRule::Hash { ratios: h.ratios }
        }
        SplitDef::Csv(csv) => {
            if def.generate.is_some() {
                c.issue(
                    "split",
                    "`split: csv` reads metadata files under `root`; a generated source has none: use `split: hash`",
                );
            }
            let delimiter = match csv.delimiter.as_bytes() {
                [b] if b.is_ascii() => *b,
                _ => {
                    c.issue(
                        "split.csv.delimiter",
                        format!(
                            "`{}` must be a single ASCII character such as `|` or `,`",
                            csv.delimiter
                        ),
                    );
                    b'|'
                }
            };
            if csv.files.is_empty() {
                c.issue(
                    "split.csv.files",
                    "list at least one of `train`, `val`, `test`",
                );
            }
            if csv.path_column.is_empty() {
                c.issue(
                    "split.csv.path_column",
                    "name the column that holds the audio path",
                );
            }
            let mut files = BTreeMap::new();
            for (split, file) in &csv.files {
                let abs = root.map_or_else(|| file.clone(), |r| resolve(r, file));
                if root.is_some() && !abs.is_file() {
                    c.missing(
                        format!("split.csv.files.{split}"),
                        format!("`{}` does not exist or is not a file", abs.display()),
                    );
                }
                files.insert(*split, abs);
            }
            SplitRule::Csv(CsvRule {
                files,
                delimiter,
                path_column: csv.path_column,
            })
        }
    }
}

/// Checks `[train, val, test]` weights: finite, non-negative, positive sum.
fn check_ratios(r: &[f64; 3], field: &str, c: &mut Checker) {
    if r.iter().any(|x| !x.is_finite() || *x < 0.0) || r.iter().sum::<f64>() <= 0.0 {
        c.issue(
            field,
            format!(
                "{r:?} must be three non-negative weights [train, val, test] with a positive sum"
            ),
        );
    }
}

fn check_speaker(def: &SourceDef, c: &mut Checker) -> Option<SpeakerRule> {
    let sp = def.speaker.as_ref()?;
    match (&sp.column, &sp.regex) {
        (Some(_), Some(_)) | (None, None) => {
            c.issue(
                "speaker",
                "give exactly one of `column` (a split CSV column) or `regex` (on the path)",
            );
            None
        }
        (Some(col), None) => {
            if !matches!(def.split, Some(SplitDef::Csv(_))) {
                c.issue(
                    "speaker.column",
                    format!("`{col}` is read from the split CSV files, but this source has no `split: csv`; use `speaker: {{ regex: ... }}` instead"),
                );
            }
            Some(SpeakerRule::Column(col.clone()))
        }
        (None, Some(re)) => match Regex::new(re) {
            Ok(r) => Some(SpeakerRule::Regex(r)),
            Err(e) => {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or("").trim().to_string();
                c.issue(
                    "speaker.regex",
                    format!("`{re}` is not a valid regex: {last}"),
                );
                None
            }
        },
    }
}

fn check_generate(g: &GenerateDef, base_dir: &Path, c: &mut Checker) -> Option<Generate> {
    let cmd = match g.cmd.as_deref().map(str::trim) {
        None | Some("") => {
            c.issue("generate.cmd", "missing: give a command template with `{text}` and `{out}`, e.g. `espeak-ng -v pt-br -w {out} {text}`");
            None
        }
        Some(cmd) => {
            for ph in ["{text}", "{out}"] {
                if !cmd.contains(ph) {
                    c.issue("generate.cmd", format!("`{cmd}` has no `{ph}` placeholder"));
                }
            }
            Some(cmd.to_string())
        }
    };
    let texts = match &g.texts {
        None => {
            c.issue(
                "generate.texts",
                "missing: give a text file with one utterance per line",
            );
            None
        }
        Some(t) => {
            let abs = resolve(base_dir, t);
            if !abs.is_file() {
                c.missing(
                    "generate.texts",
                    format!("`{}` does not exist or is not a file", abs.display()),
                );
            }
            Some(abs)
        }
    };
    let ext = g.ext.clone().unwrap_or_else(|| "wav".into());
    if ext.is_empty() || !ext.chars().all(|ch| ch.is_ascii_alphanumeric()) {
        c.issue(
            "generate.ext",
            format!("`{ext}` must be a plain extension such as `wav`"),
        );
    }
    Some(Generate {
        cmd: cmd?,
        texts: texts?,
        ext,
    })
}

/// Checks every source; relative paths resolve against `base_dir` (the pipeline's folder).
/// Returns the checked sources in list order, or every problem found (all sources, all keys).
///
/// # Errors
/// The list of [`SourceIssue`]s when anything is wrong.
pub fn validate_sources(
    defs: &[SourceDef],
    base_dir: &Path,
) -> Result<Vec<Source>, Vec<SourceIssue>> {
    let mut issues = Vec::new();
    let mut sources = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, def) in defs.iter().enumerate() {
        let mut c = Checker {
            index,
            issues: Vec::new(),
        };
        if !name_ok(&def.name) {
            c.issue(
                "name",
                format!("`{}` must be non-empty and use only letters, digits, `-`, `_` and `.` (not first)", def.name),
            );
        }
        if let Some(first) = seen.get(def.name.as_str()) {
            c.issue(
                "name",
                format!(
                    "`{}` is already the name of sources[{first}]; names must be unique",
                    def.name
                ),
            );
        } else {
            seen.insert(&def.name, index);
        }
        let label = match def.label.as_str() {
            "bonafide" => Some(Label::Bonafide),
            "spoof" => Some(Label::Spoof),
            other => {
                c.issue("label", format!("`{other}` must be `bonafide` or `spoof`"));
                None
            }
        };
        let generate = def
            .generate
            .as_ref()
            .and_then(|g| check_generate(g, base_dir, &mut c));
        let origin = match (&def.root, &def.generate) {
            (Some(_), Some(_)) => {
                c.issue(
                    "",
                    "give either `root` (a folder of audio files) or `generate`, not both",
                );
                None
            }
            (None, None) => {
                c.issue(
                    "root",
                    "missing: give `root` (a folder of audio files) or `generate`",
                );
                None
            }
            (Some(root), None) => {
                let abs = resolve(base_dir, root);
                if !abs.is_dir() {
                    c.missing(
                        "root",
                        format!("`{}` does not exist or is not a folder", abs.display()),
                    );
                }
                Some(Origin::Root(abs))
            }
            (None, Some(_)) => generate.map(Origin::Generate),
        };
        let include: Vec<String> = def
            .include
            .clone()
            .unwrap_or_else(|| DEFAULT_INCLUDE.iter().map(|s| (*s).to_string()).collect());
        if include.is_empty() {
            c.issue("include", "is empty, so no file would be taken; leave it out for the default audio extensions");
        }
        let (include_names, include_paths) = compile_globs(&include, "include", &mut c);
        let (exclude_names, exclude_paths) = compile_globs(&def.exclude, "exclude", &mut c);
        let root = match &origin {
            Some(Origin::Root(r)) => Some(r.as_path()),
            _ => None,
        };
        let split = check_split(def, root, &mut c);
        let speaker = check_speaker(def, &mut c);
        if c.issues.is_empty()
            && let (Some(label), Some(origin)) = (label, origin)
        {
            sources.push(Source {
                name: def.name.clone(),
                label,
                origin,
                matcher: FileMatcher {
                    include_names,
                    include_paths,
                    exclude_names,
                    exclude_paths,
                },
                split,
                speaker,
                def: def.clone(),
            });
        }
        issues.extend(c.issues);
    }
    if issues.is_empty() {
        Ok(sources)
    } else {
        Err(issues)
    }
}

/// Checks a `[train, val, test]` ratio triple given as a stage parameter; returns what is
/// wrong with it, if anything.
pub fn ratio_problem(ratios: &[f64; 3]) -> Option<String> {
    let mut c = Checker {
        index: 0,
        issues: Vec::new(),
    };
    check_ratios(ratios, "", &mut c);
    c.issues.pop().map(|i| i.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<SourceDef> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn yaml_forms_of_split_and_speaker_parse() {
        let defs = parse(
            r#"
- name: real
  label: bonafide
  root: real
  split: { csv: { delimiter: "|" } }
  speaker: { column: client_id }
- name: f5tts
  label: spoof
  root: f5
  split: folders
- name: tts2
  label: spoof
  root: x
  split: { hash: { ratios: [8, 1, 1] } }
  speaker: { regex: '^(?P<speaker>[^/]+)/' }
- name: tts3
  label: spoof
  root: x
  split: hash
  include: ["*.wav"]
  exclude: ["bad/**"]
"#,
        );
        assert_eq!(defs.len(), 4);
        let Some(SplitDef::Csv(csv)) = &defs[0].split else {
            panic!("csv split expected")
        };
        assert_eq!(csv.files.get(&Split::Val), Some(&PathBuf::from("dev.csv")));
        assert_eq!(csv.path_column, "wav_filename");
        assert_eq!(defs[1].split, Some(SplitDef::Folders));
        assert_eq!(
            defs[2].split,
            Some(SplitDef::Hash(HashSplitDef {
                ratios: Some([8.0, 1.0, 1.0])
            }))
        );
        assert_eq!(defs[3].split, Some(SplitDef::Hash(HashSplitDef::default())));
        // Serialising and parsing again gives the same definitions.
        let text = serde_yaml::to_string(&defs).unwrap();
        assert_eq!(parse(&text), defs);
        let json = serde_json::to_string(&defs).unwrap();
        assert_eq!(serde_json::from_str::<Vec<SourceDef>>(&json).unwrap(), defs);
    }

    #[test]
    fn unknown_keys_and_split_kinds_are_refused() {
        let err = serde_yaml::from_str::<Vec<SourceDef>>("- {name: a, label: spoof, rot: x}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `rot`"), "{err}");
        let err =
            serde_yaml::from_str::<Vec<SourceDef>>("- {name: a, label: spoof, split: random}")
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown variant `random`"), "{err}");
        let err = serde_yaml::from_str::<Vec<SourceDef>>(
            "- {name: a, label: spoof, split: {csv: {delimiter: ','}, hash: {}}}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("second key `hash`"), "{err}");
        let err = serde_yaml::from_str::<Vec<SourceDef>>(
            "- {name: a, label: spoof, split: {csv: {delim: ','}}}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `delim`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("texts.txt"), "olá\n").unwrap();
        let defs = parse(
            r#"
- name: real
  label: bonafide
  root: real
- name: real
  label: fake
  root: missing
  include: ["*.{flac"]
  speaker: { regex: '(unclosed' }
- name: gen
  label: spoof
  generate: { texts: texts.txt }
- name: gen2
  label: spoof
  root: real
  generate: { cmd: "say {text}", texts: nope.txt }
- name: csvsrc
  label: bonafide
  root: real
  split: { csv: { delimiter: "||" } }
  speaker: { column: client_id }
- name: colnocsv
  label: bonafide
  root: real
  speaker: { column: client_id }
- name: "bad name"
  label: spoof
  root: real
  split: { hash: { ratios: [1, -1, 0] } }
"#,
        );
        let issues = validate_sources(&defs, dir.path()).unwrap_err();
        let keys: Vec<String> = issues.iter().map(|i| i.key("sources")).collect();
        let has = |key: &str, text: &str| {
            assert!(
                issues
                    .iter()
                    .any(|i| i.key("sources") == key && i.message.contains(text)),
                "no `{key}` issue containing `{text}` in {issues:#?}"
            );
        };
        has("sources[1].name", "already the name of sources[0]");
        has("sources[1].label", "`fake` must be `bonafide` or `spoof`");
        has("sources[1].root", "does not exist");
        has("sources[1].include[0]", "not a valid glob");
        has("sources[1].speaker.regex", "not a valid regex");
        has("sources[2].generate.cmd", "missing");
        has("sources[3]", "not both");
        has("sources[3].generate.cmd", "no `{out}` placeholder");
        has("sources[3].generate.texts", "does not exist");
        has("sources[4].split.csv.delimiter", "single ASCII character");
        has("sources[4].split.csv.files.train", "does not exist");
        has("sources[5].speaker.column", "no `split: csv`");
        has("sources[6].name", "letters, digits");
        has("sources[6].split.hash.ratios", "non-negative");
        assert!(
            !keys.iter().any(|k| k.starts_with("sources[0]")),
            "{keys:?}"
        );
        assert_eq!(
            issues[0].to_string(),
            format!("{}: {}", issues[0].key("sources"), issues[0].message)
        );
    }

    #[test]
    fn valid_sources_resolve_and_match_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("texts.txt"), "olá\n").unwrap();
        let defs = parse(
            r#"
- name: real
  label: bonafide
  root: real
  exclude: ["*_bad.wav", "skip/**"]
  speaker: { regex: '^spk(\d+)/' }
- name: gen
  label: spoof
  generate: { cmd: "espeak-ng -w {out} {text}", texts: texts.txt }
"#,
        );
        let sources = validate_sources(&defs, dir.path()).unwrap();
        assert_eq!(sources[0].root(), Some(dir.path().join("real").as_path()));
        assert_eq!(sources[0].label, Label::Bonafide);
        let m = &sources[0].matcher;
        assert_eq!(m.classify("spk1/a.FLAC"), Match::Include);
        assert_eq!(m.classify("a.wav"), Match::Include);
        assert_eq!(m.classify("x/a_bad.wav"), Match::Excluded);
        assert_eq!(m.classify("skip/deep/a.wav"), Match::Excluded);
        assert_eq!(m.classify("notes.txt"), Match::NotIncluded);
        assert_eq!(m.classify("train.csv"), Match::NotIncluded);
        let sp = sources[0].speaker.as_ref().unwrap();
        assert_eq!(sp.speaker_from_path("spk12/x.wav").as_deref(), Some("12"));
        assert_eq!(sp.speaker_from_path("other/x.wav"), None);
        let Origin::Generate(g) = &sources[1].origin else {
            panic!("generated source expected")
        };
        assert_eq!(g.ext, "wav");
        assert_eq!(g.texts, dir.path().join("texts.txt"));
        assert_eq!(sources[1].split, SplitRule::Hash { ratios: None });
    }
}
