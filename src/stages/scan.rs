//! The `scan_corpus` kind: checks `sources:`, takes every folder source's files from the
//! listing the engine built for the stage key (one walk and one `stat` per file in all; the
//! corpus walk's rules applied to it), runs generated sources' commands through memo entries,
//! fingerprints generated files through the stat cache and writes the manifest
//! (`manifest.csv`), the walk report (`scan.json`), the source definitions (`sources.json`) and
//! the generated files (`generated/<source>/<file>`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::Serialize;

use super::items::{self, generated_path};
use super::{DepSpec, ItemCounts, Stage, StageError, StageReport};
use crate::cache::{ContentDigest, TreeListing, TreeProblemKind};
use crate::corpus::metadata::MANIFEST_HEADER;
use crate::corpus::source::Match;
use crate::corpus::{
    CorpusError, DEFAULT_INCLUDE, FileRecord, Hidden, ManifestRow, Origin, Source, SourceDef,
    SourceScan, WalkProblem, WalkReport, dangling_detail, generate_key, generated_name,
    is_hidden_path, read_texts, run_generate_in,
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

/// One compiled glob set per pattern list in this process: every `deps` call returns the same
/// `Arc`, which is how the stat cache recognises the listing it built for the stage key
/// ([`StageCtx::dep_listing`]).
fn interned_glob_set(patterns: Vec<String>) -> Option<Arc<GlobSet>> {
    type Sets = Mutex<HashMap<Vec<String>, Option<Arc<GlobSet>>>>;
    static SETS: LazyLock<Sets> = LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut sets = SETS.lock().unwrap_or_else(PoisonError::into_inner);
    sets.entry(patterns)
        .or_insert_with_key(|p| glob_set(p).map(Arc::new))
        .clone()
}

/// The name of the dep that holds a folder source's root (as `deps` names it).
fn dep_name(def: &SourceDef) -> Option<String> {
    def.root.as_ref().map(|r| r.to_string_lossy().into_owned())
}

/// What a folder source takes from its root's listing.
#[derive(Debug, Default)]
struct SourceWalk {
    /// The listing, and which of its files the source takes (one flag per file).
    listing: Option<Arc<TreeListing>>,
    taken: Vec<bool>,
    /// Files the source takes that the dep's globs left out (never expected: the globs cover
    /// the source's `include`); fingerprinted separately.
    unlisted: Vec<FileRecord>,
    scan: SourceScan,
    problems: Vec<WalkProblem>,
}

/// Applies the corpus walk's rules to the listing of a source's root: hidden files are counted
/// and skipped, nothing inside a hidden folder is seen, files are classified by the source's
/// `include` / `exclude`, non-UTF-8 names are reported and skipped, and the walk's problems
/// are the source's (those inside hidden folders excepted, which the corpus walk never
/// enters). `own_globs`: the listing was filtered by exactly this source's `include` and the
/// source has no `exclude`, so every listed file is taken and every other one is not audio
/// (what `dep_globs_match_what_the_source_includes` checks) without matching globs again.
fn source_from_listing(source: &Source, listing: &Arc<TreeListing>, own_globs: bool) -> SourceWalk {
    #[derive(Clone, Copy)]
    enum Took {
        File,
        Skipped,
        Excluded,
        Hidden,
        Nothing,
    }
    let root = source.root().unwrap_or(&listing.root);
    let rebase = |p: &Path| {
        p.strip_prefix(&listing.root)
            .map_or_else(|_| p.to_path_buf(), |rel| root.join(rel))
    };
    let rel_of = |p: &Path| {
        p.strip_prefix(&listing.root)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    let mut non_utf8: BTreeSet<String> = BTreeSet::new();
    for p in &listing.problems {
        let rel = rel_of(&p.path);
        let hidden = is_hidden_path(&rel);
        // The corpus walk sees errors at a hidden name (a dangling `.x.flac`, a looping `.l`)
        // but neither enters a hidden folder nor reads a hidden file.
        let seen = match &p.kind {
            TreeProblemKind::Loop { .. } | TreeProblemKind::Dangling => hidden != Hidden::Inside,
            TreeProblemKind::Unreadable { .. } | TreeProblemKind::NonUtf8 => hidden == Hidden::No,
        };
        if matches!(p.kind, TreeProblemKind::NonUtf8) {
            non_utf8.insert(rel);
        }
        if !seen {
            continue;
        }
        let path = rebase(&p.path);
        problems.push(match &p.kind {
            TreeProblemKind::Loop { ancestor } => WalkProblem::Loop {
                source: source.name.clone(),
                path,
                ancestor: rebase(ancestor),
            },
            TreeProblemKind::Dangling => WalkProblem::Unreadable {
                source: source.name.clone(),
                message: dangling_detail(&p.path),
                path,
            },
            TreeProblemKind::Unreadable { message } => WalkProblem::Unreadable {
                source: source.name.clone(),
                path,
                message: message.clone(),
            },
            TreeProblemKind::NonUtf8 => WalkProblem::NonUtf8 {
                source: source.name.clone(),
                path,
            },
        });
    }
    let judge = |rel: &str, listed: bool| -> Took {
        match is_hidden_path(rel) {
            Hidden::Inside => return Took::Nothing,
            Hidden::Name => return Took::Hidden,
            Hidden::No => {}
        }
        if !non_utf8.is_empty() && non_utf8.contains(rel) {
            return Took::Nothing;
        }
        if own_globs {
            return if listed { Took::File } else { Took::Skipped };
        }
        match source.matcher.classify(rel) {
            Match::Include => Took::File,
            Match::NotIncluded => Took::Skipped,
            Match::Excluded => Took::Excluded,
        }
    };
    let files: Vec<(&str, u64, &ContentDigest)> = listing.files().collect();
    let listed: Vec<Took> = files.par_iter().map(|f| judge(f.0, true)).collect();
    let others: Vec<Took> = listing.others.par_iter().map(|r| judge(r, false)).collect();
    let mut walk = SourceWalk {
        problems,
        ..SourceWalk::default()
    };
    let scan = &mut walk.scan;
    for took in listed.iter().chain(&others) {
        match took {
            Took::Skipped => scan.skipped_non_audio += 1,
            Took::Excluded => scan.excluded += 1,
            Took::Hidden => scan.hidden += 1,
            Took::File | Took::Nothing => {}
        }
    }
    walk.taken = listed.iter().map(|t| matches!(t, Took::File)).collect();
    for (f, &taken) in files.iter().zip(&walk.taken) {
        if taken {
            walk.scan.files += 1;
            walk.scan.bytes += f.1;
        }
    }
    walk.listing = Some(Arc::clone(listing));
    for (rel, took) in listing.others.iter().zip(&others) {
        if matches!(took, Took::File) {
            let size = std::fs::metadata(root.join(rel)).map_or(0, |m| m.len());
            walk.scan.files += 1;
            walk.scan.bytes += size;
            walk.unlisted.push(FileRecord {
                source: source.name.clone(),
                path: rel.clone(),
                abs: root.join(rel),
                size,
            });
        }
    }
    walk.scan.name = source.name.clone();
    walk
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
            kind: if message.starts_with("dangling symlink") {
                "dangling_symlink"
            } else {
                "unreadable"
            },
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

    /// Every folder source's files, counts and problems from the listing of its root dep (the
    /// one the stage key was computed from), sorted by source name; the files the listings
    /// lack (fingerprinted by the caller); and the report (counts and problems, no `files`).
    fn walk(
        ctx: &StageCtx<'_>,
        sources: &[Source],
    ) -> Result<(WalkReport, Vec<SourceWalk>, Vec<FileRecord>), StageError> {
        let mut sharing: BTreeMap<String, usize> = BTreeMap::new();
        for s in sources {
            if let Some(name) = dep_name(&s.def) {
                *sharing.entry(name).or_default() += 1;
            }
        }
        let mut per_source: Vec<SourceWalk> = Vec::new();
        for source in sources.iter().filter(|s| s.root().is_some()) {
            let name = dep_name(&source.def).unwrap_or_default();
            let own_globs = sharing.get(&name) == Some(&1) && source.def.exclude.is_empty();
            let walk = match ctx.dep_listing(&name)? {
                Some(listing) => source_from_listing(source, &listing, own_globs),
                // The root vanished after the key was computed.
                None => SourceWalk {
                    scan: SourceScan {
                        name: source.name.clone(),
                        ..SourceScan::default()
                    },
                    problems: vec![WalkProblem::Unreadable {
                        source: source.name.clone(),
                        path: source.root().map(Path::to_path_buf).unwrap_or_default(),
                        message: "the folder does not exist".into(),
                    }],
                    ..SourceWalk::default()
                },
            };
            per_source.push(walk);
        }
        // Sources come in list order; manifest rows are sorted by (source, path).
        per_source.sort_by(|a, b| a.scan.name.cmp(&b.scan.name));
        let mut report = WalkReport::default();
        let mut unlisted = Vec::new();
        for w in &mut per_source {
            unlisted.append(&mut w.unlisted);
            report.problems.append(&mut w.problems);
        }
        // Counts in source-list order, as the corpus walk gives them.
        report.sources = sources
            .iter()
            .filter_map(|s| per_source.iter().find(|w| w.scan.name == s.name))
            .map(|w| w.scan.clone())
            .collect();
        report.problems.sort();
        Ok((report, per_source, unlisted))
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
        let mut roots: BTreeMap<String, (PathBuf, Vec<String>, Vec<String>)> = BTreeMap::new();
        let mut texts: BTreeMap<String, (PathBuf, Vec<String>)> = BTreeMap::new();
        for (_, def) in &defs {
            if let Some(root) = &def.root {
                let name = root.to_string_lossy().into_owned();
                let path = pipeline.dir.join(root);
                let globs = include_globs(def);
                let entry = roots
                    .entry(name)
                    .or_insert_with(|| (path, Vec::new(), Vec::new()));
                entry.1.extend(globs);
                entry.2.push(def.name.clone());
            } else if let Some(t) = def.generate.as_ref().and_then(|g| g.texts.as_ref()) {
                texts
                    .entry(t.to_string_lossy().into_owned())
                    .or_insert_with(|| (pipeline.dir.join(t), Vec::new()))
                    .1
                    .push(def.name.clone());
            }
        }
        let mut deps: Vec<DepSpec> = roots
            .into_iter()
            .map(|(name, (path, globs, sources))| DepSpec {
                name,
                path,
                // A glob that does not compile (the source check reports it) hashes everything.
                include: interned_glob_set(globs),
                about: Some(items::for_sources("the root", &sources)),
            })
            .collect();
        deps.extend(texts.into_iter().map(|(name, (path, sources))| DepSpec {
            name,
            path,
            include: None,
            about: Some(items::for_sources("the texts file", &sources)),
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
        let (walk, folders, unlisted) = Self::walk(ctx, &sources)?;
        lap("walk done (dep listings)");
        Self::judge_walk(ctx, &sources, &walk)?;
        ctx.check_cancelled()?;
        let (generated, counts) = Self::generate(ctx, &sources)?;
        lap("generate done");

        let label_of: BTreeMap<&str, String> = sources
            .iter()
            .map(|s| (s.name.as_str(), s.label.to_string()))
            .collect();
        // Files to fingerprint one by one: generated ones, and any the dep listings lack.
        let mut extra: Vec<ManifestRow> = Vec::new();
        let mut found: Vec<Found> = unlisted
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
        if !found.is_empty() {
            let progress = ctx.progress("fingerprint", found.len() as u64);
            let more: Vec<ManifestRow> = found
                .par_iter()
                .map(|f| {
                    ctx.check_cancelled()?;
                    let t = ctx.fingerprint_tree(&f.abs)?;
                    progress.inc(1);
                    Ok(ManifestRow {
                        path: f.path.clone(),
                        source: f.source.clone(),
                        label: f.label.clone(),
                        size: t.bytes,
                        digest: t.digest.to_hex(),
                    })
                })
                .collect::<Result<_, StageError>>()?;
            progress.finish();
            extra = more;
        }
        lap("fingerprint done");

        // Manifest rows borrow from the listings (no copy per file), then the fingerprinted ones.
        let mut rows: Vec<RowRef<'_>> = Vec::with_capacity(
            folders.iter().map(|w| w.scan.files as usize).sum::<usize>() + extra.len(),
        );
        for w in &folders {
            let Some(listing) = &w.listing else { continue };
            let label = label_of
                .get(w.scan.name.as_str())
                .map_or("", String::as_str);
            for ((path, size, digest), _) in
                listing.files().zip(&w.taken).filter(|(_, taken)| **taken)
            {
                rows.push(RowRef {
                    path,
                    source: &w.scan.name,
                    label,
                    size,
                    digest: Hex::Digest(digest),
                });
            }
        }
        rows.extend(extra.iter().map(|r| RowRef {
            path: &r.path,
            source: &r.source,
            label: &r.label,
            size: r.size,
            digest: Hex::Text(&r.digest),
        }));
        // Folder rows are in (source, path) order; the others join them.
        if !extra.is_empty() {
            rows.sort_by(|a, b| (a.source, a.path).cmp(&(b.source, b.path)));
        }
        let out = ctx.out_dir();
        write_manifest_rows(&out.join(MANIFEST), &rows)
            .map_err(|e| items::corpus_error(&stage, e))?;
        for f in found.iter().skip(found.len() - n_generated) {
            items::link(&stage, &f.abs, &generated_path(out, &f.source, &f.path))?;
        }

        let mut taken: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for r in &rows {
            let t = taken.entry(r.source).or_default();
            t.0 += 1;
            t.1 += r.size;
        }
        let report = ScanReport {
            sources: sources
                .iter()
                .map(|s| {
                    let scan = walk.sources.iter().find(|w| w.name == s.name);
                    let (files, bytes) = taken.get(s.name.as_str()).copied().unwrap_or((0, 0));
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

/// A digest in a manifest row: a listing's, or hex text already.
#[derive(Debug, Clone, Copy)]
enum Hex<'a> {
    Digest(&'a ContentDigest),
    Text(&'a str),
}

impl Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Hex::Digest(d) => d.serialize(s),
            Hex::Text(t) => s.serialize_str(t),
        }
    }
}

/// A [`ManifestRow`] that borrows its fields: the same CSV record.
#[derive(Debug, Clone, Copy, Serialize)]
struct RowRef<'a> {
    path: &'a str,
    source: &'a str,
    label: &'a str,
    size: u64,
    digest: Hex<'a>,
}

/// Writes `manifest.csv` from rows already sorted by (source, path): the bytes
/// [`write_manifest`] writes for the same rows (checked by a test), without a copy per row.
fn write_manifest_rows(path: &Path, rows: &[RowRef<'_>]) -> Result<(), CorpusError> {
    let err = |source| CorpusError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    if rows.is_empty() {
        w.write_record(MANIFEST_HEADER).map_err(err)?;
    }
    for row in rows {
        w.serialize(row).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))
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

    /// The stage's view of a source (its root's dep listing, through the corpus rules) and the
    /// corpus walk agree on files, counts and problems, on a tree with every kind of bad entry.
    #[test]
    fn the_dep_listing_and_the_corpus_walk_agree() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let touch = |rel: &str, body: &[u8]| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        for i in 0..30 {
            touch(&format!("r/spk{}/u{i:02}.flac", i % 3), &[1; 10]);
        }
        touch("r/spk0/LOUD.WAV", &[2; 7]);
        touch("r/spk0/notes.txt", b"x");
        touch("r/train.csv", b"x");
        touch("r/spk1/._u00.flac", b"x");
        touch("r/.cache/x.flac", b"x");
        touch("r/spk2/old_bad.flac", b"x");
        touch("elsewhere/deep/w.flac", &[3; 4]);
        touch("other/z.mp3", &[4; 5]);
        let r = dir.path().join("r");
        symlink(&r, r.join("spk0/loop")).unwrap();
        symlink("..", r.join(".hloop")).unwrap();
        symlink("nowhere.flac", r.join("spk0/dangling.flac")).unwrap();
        symlink("nowhere.flac", r.join(".gone.flac")).unwrap();
        symlink("nowhere.flac", r.join(".cache/gone.flac")).unwrap();
        symlink(dir.path().join("elsewhere"), r.join("linked")).unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"bad-\xff.flac");
        std::fs::write(r.join("spk1").join(bad), b"x").unwrap();

        let defs: Vec<SourceDef> = serde_yaml::from_str(
            r#"
- { name: real, label: bonafide, root: r, exclude: ["*_bad.flac"] }
- { name: wavs, label: spoof, root: r, include: ["spk0/*.wav"] }
- { name: other, label: spoof, root: other }
"#,
        )
        .unwrap();
        let sources = crate::corpus::validate_sources(&defs, dir.path()).unwrap();
        let walked = crate::corpus::walk_sources(&sources);
        assert!(walked.problems.len() >= 5, "{:#?}", walked.problems);

        // One dep per root, with the union of the globs of the sources sharing it.
        let mut roots: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (def, source) in defs.iter().zip(&sources) {
            roots
                .entry(source.root().unwrap().to_path_buf())
                .or_default()
                .extend(include_globs(def));
        }
        let stat = crate::cache::StatCache::in_memory();
        let mut files = Vec::new();
        let mut scans = Vec::new();
        let mut problems = Vec::new();
        for source in &sources {
            let root = source.root().unwrap().to_path_buf();
            let spec = crate::cache::TreeSpec {
                include: interned_glob_set(roots[&root].clone()),
                path: root,
            };
            let listing = stat
                .tree_listing(&spec, &crate::cache::NoProgress)
                .unwrap()
                .unwrap();
            // Sources with their own root and no `exclude` skip the glob matching.
            let own = roots[&listing.root].len() == include_globs(&source.def).len()
                && source.def.exclude.is_empty();
            let w = source_from_listing(source, &listing, own);
            assert!(w.unlisted.is_empty());
            assert_eq!(w.scan, source_from_listing(source, &listing, false).scan);
            let taken = w.listing.iter().flat_map(|l| l.files()).zip(&w.taken);
            for ((path, size, digest), _) in taken.filter(|(_, t)| **t) {
                let abs = source.root().unwrap().join(path);
                assert_eq!(
                    digest,
                    &ContentDigest::of_bytes(&std::fs::read(&abs).unwrap())
                );
                files.push(FileRecord {
                    source: source.name.clone(),
                    path: path.to_owned(),
                    abs,
                    size,
                });
            }
            scans.push(w.scan);
            problems.extend(w.problems);
        }
        files.sort_by(|a, b| (&a.source, &a.path).cmp(&(&b.source, &b.path)));
        problems.sort();
        assert_eq!(files, walked.files);
        assert_eq!(scans, walked.sources);
        assert_eq!(problems, walked.problems);
        let real = &scans[0];
        assert_eq!(
            (
                real.files,
                real.skipped_non_audio,
                real.excluded,
                real.hidden
            ),
            (30 + 1 + 1, 2, 1, 1),
            "{real:?}"
        );
    }

    #[test]
    fn deps_hand_out_the_same_glob_set_every_time() {
        let a = interned_glob_set(vec!["**/*.flac".into()]).unwrap();
        let b = interned_glob_set(vec!["**/*.flac".into()]).unwrap();
        let c = interned_glob_set(vec!["**/*.wav".into()]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn borrowed_manifest_rows_write_the_bytes_of_write_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let digest = ContentDigest::of_bytes(b"x");
        let owned = [
            ManifestRow {
                path: "a, \"quoted\".flac".into(),
                source: "s1".into(),
                label: "spoof".into(),
                size: 3,
                digest: digest.to_hex(),
            },
            ManifestRow {
                path: "b/c.wav".into(),
                source: "s2".into(),
                label: "bonafide".into(),
                size: 0,
                digest: digest.to_hex(),
            },
        ];
        let borrowed: Vec<RowRef<'_>> = owned
            .iter()
            .enumerate()
            .map(|(i, r)| RowRef {
                path: &r.path,
                source: &r.source,
                label: &r.label,
                size: r.size,
                digest: if i == 0 {
                    Hex::Digest(&digest)
                } else {
                    Hex::Text(&r.digest)
                },
            })
            .collect();
        for n in [0, 2] {
            let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
            crate::corpus::write_manifest(&a, &owned[..n]).unwrap();
            write_manifest_rows(&b, &borrowed[..n]).unwrap();
            assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        }
    }
}
