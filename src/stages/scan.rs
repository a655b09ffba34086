//! The `scan_corpus` kind: checks `sources:`, walks every folder source, runs generated
//! sources' commands through memo entries, fingerprints every file through the engine's stat
//! cache and writes the manifest (`manifest.csv`), the walk report (`scan.json`), the source
//! definitions (`sources.json`) and the generated files (`generated/<source>/<file>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::Serialize;

use super::items::{self, generated_path};
use super::{DepSpec, ItemCounts, Stage, StageError, StageReport};
use crate::corpus::{
    DEFAULT_INCLUDE, ManifestRow, Origin, Source, SourceDef, WalkProblem, WalkReport, generate_key,
    generated_name, read_texts, run_generate_in, walk_sources, write_manifest,
};
use crate::exec::context::{KeyCtx, StageCtx};
use crate::spec::{Issue, Pipeline, StageDef, canonical};

/// Kind name.
pub const KIND: &str = "scan_corpus";

/// Manifest file name in the stage output.
pub const MANIFEST: &str = "manifest.csv";

/// Memo namespace of generated files.
const GENERATE_NS: &str = "generate";

/// Warnings shown one by one before they are summed up.
const MAX_WARNINGS: usize = 20;

/// The `scan_corpus` kind.
#[derive(Debug, Clone, Copy)]
pub struct ScanCorpus;

/// `scan_corpus` takes no params (everything is in `sources:`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// `scan.json`: what the walk saw.
#[derive(Debug, Serialize)]
struct ScanReport {
    sources: Vec<SourceReport>,
    problems: Vec<ProblemReport>,
}

#[derive(Debug, Serialize)]
struct SourceReport {
    name: String,
    label: String,
    origin: &'static str,
    files: u64,
    bytes: u64,
    skipped_non_audio: u64,
    excluded: u64,
    hidden: u64,
}

#[derive(Debug, Serialize)]
struct ProblemReport {
    source: String,
    kind: &'static str,
    path: String,
    detail: String,
}

/// A file to fingerprint.
struct Found {
    source: String,
    label: String,
    path: String,
    abs: PathBuf,
}

/// Globs of `include` as the engine's dep filter sees them (paths relative to the root): a
/// glob without `/` matches the file name at any depth.
fn include_globs(def: &SourceDef) -> Vec<String> {
    let include: Vec<String> = def
        .include
        .clone()
        .unwrap_or_else(|| DEFAULT_INCLUDE.iter().map(|s| (*s).to_owned()).collect());
    include
        .into_iter()
        .map(|p| {
            let p = p.trim_start_matches("./").to_owned();
            if p.contains('/') {
                p
            } else {
                format!("**/{p}")
            }
        })
        .collect()
}

fn glob_set(patterns: &[String]) -> Option<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(
            GlobBuilder::new(p)
                .case_insensitive(true)
                .literal_separator(true)
                .build()
                .ok()?,
        );
    }
    b.build().ok()
}

fn relative_to(path: &Path, root: Option<&Path>) -> String {
    root.and_then(|r| path.strip_prefix(r).ok())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn problem_report(p: &WalkProblem, sources: &[Source]) -> ProblemReport {
    let root = |name: &str| {
        sources
            .iter()
            .find(|s| s.name == name)
            .and_then(Source::root)
    };
    match p {
        WalkProblem::Loop {
            source,
            path,
            ancestor,
        } => ProblemReport {
            source: source.clone(),
            kind: "symlink_loop",
            path: relative_to(path, root(source)),
            detail: format!("points back to `{}`", relative_to(ancestor, root(source))),
        },
        WalkProblem::Unreadable {
            source,
            path,
            message,
        } => ProblemReport {
            source: source.clone(),
            kind: "unreadable",
            path: relative_to(path, root(source)),
            detail: message.clone(),
        },
        WalkProblem::NonUtf8 { source, path } => ProblemReport {
            source: source.clone(),
            kind: "non_utf8_name",
            path: relative_to(path, root(source)),
            detail: "skipped: the name is not UTF-8".into(),
        },
    }
}

impl ScanCorpus {
    /// Runs every generated source's command for its texts (memo entries keyed by
    /// (command, text)); returns the files and the generate counts.
    fn generate(
        ctx: &StageCtx<'_>,
        sources: &[Source],
    ) -> Result<(Vec<Found>, ItemCounts), StageError> {
        let stage = ctx.name();
        let mut found = Vec::new();
        let processed = AtomicU64::new(0);
        let reused = AtomicU64::new(0);
        for source in sources {
            let Origin::Generate(g) = &source.origin else {
                continue;
            };
            let texts = read_texts(&g.texts).map_err(|e| items::corpus_error(stage, e))?;
            if texts.is_empty() {
                return Err(StageError::Environment {
                    stage: stage.to_owned(),
                    message: format!(
                        "source `{}` has no audio files: `{}` has no text lines (empty lines and `#` comments are skipped)",
                        source.name,
                        g.texts.display()
                    ),
                });
            }
            let progress = ctx.progress(&format!("generate {}", source.name), texts.len() as u64);
            let files: Vec<Found> = texts
                .par_iter()
                .map(|text| {
                    ctx.check_cancelled()?;
                    let key = generate_key(&g.cmd, text);
                    let name = generated_name(&key, &g.ext);
                    let mut ran = false;
                    let dir = ctx.memo(GENERATE_NS, &key, |tmp| {
                        ran = true;
                        run_generate_in(Some(&ctx.pipeline().dir), &g.cmd, text, &tmp.join(&name))
                            .map_err(|e| StageError::Environment {
                                stage: stage.to_owned(),
                                message: format!(
                                    "source `{}`: generating text `{text}` failed: {e}",
                                    source.name
                                ),
                            })
                    })?;
                    if ran { &processed } else { &reused }.fetch_add(1, Ordering::Relaxed);
                    progress.inc(1);
                    Ok(Found {
                        source: source.name.clone(),
                        label: source.label.to_string(),
                        path: name.clone(),
                        abs: dir.join(&name),
                    })
                })
                .collect::<Result<_, StageError>>()?;
            progress.finish();
            found.extend(files);
        }
        Ok((
            found,
            ItemCounts {
                processed: processed.into_inner(),
                reused: reused.into_inner(),
            },
        ))
    }

    /// Reports walk problems as warnings (not fatal) and fails on sources without files.
    fn judge_walk(
        ctx: &StageCtx<'_>,
        sources: &[Source],
        walk: &WalkReport,
    ) -> Result<(), StageError> {
        for p in walk.problems.iter().take(MAX_WARNINGS) {
            ctx.warn(p.to_string());
        }
        if walk.problems.len() > MAX_WARNINGS {
            ctx.warn(format!(
                "{} more walk problems; all are listed in `scan.json`",
                walk.problems.len() - MAX_WARNINGS
            ));
        }
        for scan in &walk.sources {
            ctx.log().line(&format!(
                "source `{}`: {} audio files ({} bytes); skipped: {} not matching `include`, {} excluded, {} hidden",
                scan.name, scan.files, scan.bytes, scan.skipped_non_audio, scan.excluded, scan.hidden
            ));
        }
        let empty: Vec<String> = walk
            .empty_sources()
            .into_iter()
            .map(|name| {
                let scan = walk.sources.iter().find(|s| s.name == name);
                let root = sources
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(Source::root)
                    .map(|r| r.display().to_string())
                    .unwrap_or_default();
                let detail = scan.map_or_else(String::new, |s| {
                    format!(
                        " ({} files match no `include` glob, {} are excluded, {} are hidden)",
                        s.skipped_non_audio, s.excluded, s.hidden
                    )
                });
                format!("source `{name}` has no audio files under `{root}`{detail}")
            })
            .collect();
        if !empty.is_empty() {
            return Err(StageError::Environment {
                stage: ctx.name().to_owned(),
                message: format!("{}; check its `root` and `include`", empty.join("; ")),
            });
        }
        Ok(())
    }
}

impl Stage for ScanCorpus {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, def: &StageDef, pipeline: &Pipeline) -> Vec<Issue> {
        let mut issues = items::params_issues::<Params>(def);
        if pipeline.sources.is_empty() {
            issues.push(
                Issue::new(
                    def.path(),
                    format!(
                        "stage `{}` scans the pipeline's `sources:`, but there are none",
                        def.name
                    ),
                )
                .at_key()
                .with_help(
                    "add `sources:` with `name`, `label` and `root` (or `generate`) per source",
                ),
            );
        }
        issues.extend(items::check_sources(pipeline));
        issues
    }

    /// Every folder source's root, filtered by its `include` globs (sources sharing a root share
    /// one dep), and every generated source's texts file.
    fn deps(&self, _def: &StageDef, pipeline: &Pipeline) -> Vec<DepSpec> {
        let (defs, _) = items::source_defs(pipeline);
        let mut roots: BTreeMap<String, (PathBuf, Vec<String>)> = BTreeMap::new();
        let mut texts: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (_, def) in &defs {
            if let Some(root) = &def.root {
                let name = root.to_string_lossy().into_owned();
                let path = pipeline.dir.join(root);
                let globs = include_globs(def);
                roots
                    .entry(name)
                    .or_insert_with(|| (path, Vec::new()))
                    .1
                    .extend(globs);
            } else if let Some(t) = def.generate.as_ref().and_then(|g| g.texts.as_ref()) {
                texts.insert(t.to_string_lossy().into_owned(), pipeline.dir.join(t));
            }
        }
        let mut deps: Vec<DepSpec> = roots
            .into_iter()
            .map(|(name, (path, globs))| DepSpec {
                name,
                path,
                // A glob that does not compile (the source check reports it) hashes everything.
                include: glob_set(&globs).map(Arc::new),
            })
            .collect();
        deps.extend(texts.into_iter().map(|(name, path)| DepSpec {
            name,
            path,
            include: None,
        }));
        deps
    }

    /// One identity per source (`sources.<name>`): the digest of its definition, so a changed
    /// label, split rule or command reruns the scan (and, through `sources.json`, what follows).
    fn identities(&self, ctx: &KeyCtx<'_>) -> Result<BTreeMap<String, String>, StageError> {
        Ok(ctx
            .pipeline
            .sources
            .iter()
            .zip(items::source_names(ctx.pipeline))
            .map(|(v, name)| {
                let bytes = serde_json::to_vec(&canonical(v)).unwrap_or_default();
                (
                    format!("sources.{name}"),
                    blake3::hash(&bytes).to_hex().to_string(),
                )
            })
            .collect())
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let stage = ctx.name().to_owned();
        let _: Params = ctx.params()?;
        let sources = items::sources(ctx.pipeline(), &stage)?;
        let started = std::time::Instant::now();
        let lap = |what: &str| {
            ctx.log()
                .line(&format!("{what}: {:.3} s", started.elapsed().as_secs_f64()));
        };
        let walk = walk_sources(&sources);
        lap("walk done");
        Self::judge_walk(ctx, &sources, &walk)?;
        ctx.check_cancelled()?;
        let (generated, counts) = Self::generate(ctx, &sources)?;

        let label_of: BTreeMap<&str, String> = sources
            .iter()
            .map(|s| (s.name.as_str(), s.label.to_string()))
            .collect();
        let mut found: Vec<Found> = walk
            .files
            .iter()
            .map(|f| Found {
                source: f.source.clone(),
                label: label_of.get(f.source.as_str()).cloned().unwrap_or_default(),
                path: f.path.clone(),
                abs: f.abs.clone(),
            })
            .collect();
        let n_generated = generated.len();
        found.extend(generated);

        lap("generate done");
        let progress = ctx.progress("fingerprint", found.len() as u64);
        let rows: Vec<ManifestRow> = found
            .par_chunks(512)
            .map(|chunk| {
                ctx.check_cancelled()?;
                let rows = chunk
                    .iter()
                    .map(|f| {
                        let t = ctx.fingerprint_tree(&f.abs)?;
                        Ok(ManifestRow {
                            path: f.path.clone(),
                            source: f.source.clone(),
                            label: f.label.clone(),
                            size: t.bytes,
                            digest: t.digest.to_hex(),
                        })
                    })
                    .collect::<Result<Vec<_>, StageError>>();
                progress.inc(chunk.len() as u64);
                rows
            })
            .collect::<Result<Vec<Vec<_>>, StageError>>()?
            .into_iter()
            .flatten()
            .collect();
        progress.finish();
        lap("fingerprint done");

        let out = ctx.out_dir();
        let manifest = out.join(MANIFEST);
        write_manifest(&manifest, &rows).map_err(|e| items::corpus_error(&stage, e))?;
        for f in found.iter().skip(found.len() - n_generated) {
            items::link(&stage, &f.abs, &generated_path(out, &f.source, &f.path))?;
        }

        let report = ScanReport {
            sources: sources
                .iter()
                .map(|s| {
                    let scan = walk.sources.iter().find(|w| w.name == s.name);
                    let (files, bytes) = rows
                        .iter()
                        .filter(|r| r.source == s.name)
                        .fold((0, 0), |(n, b), r| (n + 1, b + r.size));
                    SourceReport {
                        name: s.name.clone(),
                        label: s.label.to_string(),
                        origin: if s.root().is_some() {
                            "folder"
                        } else {
                            "generate"
                        },
                        files,
                        bytes,
                        skipped_non_audio: scan.map_or(0, |w| w.skipped_non_audio),
                        excluded: scan.map_or(0, |w| w.excluded),
                        hidden: scan.map_or(0, |w| w.hidden),
                    }
                })
                .collect(),
            problems: walk
                .problems
                .iter()
                .map(|p| problem_report(p, &sources))
                .collect(),
        };
        write_json(&stage, &out.join("scan.json"), &report)?;
        let defs: Vec<&SourceDef> = sources.iter().map(|s| &s.def).collect();
        write_json(&stage, &out.join("sources.json"), &defs)?;
        lap("outputs written");
        ctx.log().line(&format!(
            "{} files in {} sources ({} generated: {} new, {} reused)",
            rows.len(),
            sources.len(),
            n_generated,
            counts.processed,
            counts.reused
        ));
        Ok(StageReport { items: counts })
    }
}

fn write_json<T: Serialize>(stage: &str, path: &Path, value: &T) -> Result<(), StageError> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    std::fs::write(path, text).map_err(|e| items::io_error(stage, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::validate_sources;

    /// The dep filter hashes exactly the files the walk takes, except excluded and hidden ones
    /// (globs cannot express "not"; hashing them too only reruns the scan, whose output is then
    /// unchanged).
    #[test]
    fn dep_globs_match_what_the_source_includes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("r")).unwrap();
        let defs: Vec<SourceDef> = serde_yaml::from_str(
            r#"
- name: default
  label: spoof
  root: r
- name: custom
  label: spoof
  root: r
  include: ["*.FLAC", "train/**/*.wav", "./top/*.mp3"]
"#,
        )
        .unwrap();
        let sources = validate_sources(&defs, dir.path()).unwrap();
        let paths = [
            "a.flac",
            "x/y/A.Flac",
            "b.wav",
            "train/s1/c.wav",
            "train/c.WAV",
            "dev/c.wav",
            "top/d.mp3",
            "top/sub/d.mp3",
            "notes.txt",
            "train.csv",
            "x/e.opus",
            "x/f.mp3.txt",
        ];
        for (def, source) in defs.iter().zip(&sources) {
            let globs = glob_set(&include_globs(def)).unwrap();
            for p in paths {
                let walk = source.matcher.classify(p) == crate::corpus::source::Match::Include;
                assert_eq!(globs.is_match(p), walk, "`{p}` in source `{}`", def.name);
            }
        }
    }
}
