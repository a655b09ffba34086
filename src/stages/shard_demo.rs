//! The `shard_demo` kind: a small sharded kind for trying out and testing executors (local and
//! Slurm) without audio or models. Its items are the lines of a `list` file, or
//! `item-0..item-N` (`items: N`), or else the first column of its upstream stages' `items.txt`; each shard computes the items whose
//! `blake3(item) mod shards` is its number into memo entries, optionally sleeping `work_ms` per
//! item; the whole-stage step writes `items.txt` (`item<TAB>value`, in input order).
//!
//! Test hooks, which are part of the key like every param: `trace` (a file each shard and the
//! final step append a line to when they start, so tests can count executions) and
//! `fail_shard` + `fail_while` (that shard fails while the named file exists; the file is not a
//! dep, so removing it fixes the failure without changing the key).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{ItemCounts, Stage, StageError, StageReport};
use crate::exec::context::StageCtx;
use crate::spec::{Issue, Pipeline, StageDef, positions};

/// Kind name.
pub const KIND: &str = "shard_demo";

/// The `shard_demo` kind.
#[derive(Debug, Clone, Copy)]
pub struct ShardDemo;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Items `item-0..item-N` (when there is no upstream stage and no `list`).
    #[serde(default)]
    items: Option<u32>,
    /// A file (relative to the pipeline) whose lines are the items; must be one of `deps`.
    #[serde(default)]
    list: Option<String>,
    /// Number of shards.
    #[serde(default = "one")]
    shards: u32,
    /// Milliseconds of simulated work per computed item.
    #[serde(default)]
    work_ms: u64,
    /// Milliseconds of simulated work per shard, whatever its items (benchmarks).
    #[serde(default)]
    shard_ms: u64,
    /// Mixed into every value (another salt = other values).
    #[serde(default)]
    salt: String,
    /// File each shard and the final step append a line to when they start.
    #[serde(default)]
    trace: Option<String>,
    /// The shard that fails while `fail_while` exists.
    #[serde(default)]
    fail_shard: Option<u32>,
    /// File whose existence makes `fail_shard` fail.
    #[serde(default)]
    fail_while: Option<String>,
}

fn one() -> u32 {
    1
}

fn params(def: &StageDef) -> Option<Params> {
    def.params_as::<Params>().ok()
}

fn io_error(stage: &str, path: &Path, source: std::io::Error) -> StageError {
    StageError::Io {
        stage: stage.to_owned(),
        path: path.to_path_buf(),
        source,
    }
}

/// The shard an item belongs to.
fn shard_of(item: &str, shards: u32) -> u32 {
    let h = blake3::hash(item.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u32::try_from(u64::from_le_bytes(first) % u64::from(shards.max(1))).unwrap_or(0)
}

fn value_of(salt: &str, item: &str) -> String {
    blake3::hash(format!("{salt}\u{0}{item}").as_bytes()).to_hex()[..16].to_owned()
}

fn memo_key(salt: &str, item: &str) -> String {
    blake3::hash(format!("shard_demo/1\u{0}{salt}\u{0}{item}").as_bytes())
        .to_hex()
        .to_string()
}

fn items(ctx: &StageCtx<'_>, p: &Params) -> Result<Vec<String>, StageError> {
    let read_lines = |path: &Path| -> Result<Vec<String>, StageError> {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(ctx.name(), path, e))?;
        Ok(text
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    };
    if let Some(list) = &p.list {
        return read_lines(&ctx.resolve(list));
    }
    if let Some(n) = p.items {
        return Ok((0..n).map(|i| format!("item-{i}")).collect());
    }
    let mut all = Vec::new();
    for dir in ctx.inputs().values() {
        let path = dir.join("items.txt");
        if path.is_file() {
            all.extend(read_lines(&path)?);
        }
    }
    Ok(all)
}

fn trace(ctx: &StageCtx<'_>, p: &Params, what: &str) -> Result<(), StageError> {
    let Some(t) = &p.trace else { return Ok(()) };
    let path = ctx.resolve(t);
    let line = format!("{} {what} pid {}\n", ctx.name(), std::process::id());
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| io_error(ctx.name(), &path, e))
}

fn compute(
    ctx: &StageCtx<'_>,
    p: &Params,
    item: &str,
    work: bool,
) -> Result<(String, bool), StageError> {
    let mut computed = false;
    let dir = ctx.memo(KIND, &memo_key(&p.salt, item), |tmp| {
        computed = true;
        if work && p.work_ms > 0 {
            std::thread::sleep(Duration::from_millis(p.work_ms));
        }
        let path = tmp.join("value");
        std::fs::write(&path, value_of(&p.salt, item)).map_err(|e| io_error(ctx.name(), &path, e))
    })?;
    let path = dir.join("value");
    let value = std::fs::read_to_string(&path).map_err(|e| io_error(ctx.name(), &path, e))?;
    Ok((value, computed))
}

impl Stage for ShardDemo {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, def: &StageDef, _pipeline: &Pipeline) -> Vec<Issue> {
        let p = match def.params_as::<Params>() {
            Ok(p) => p,
            Err(issue) => return vec![*issue],
        };
        let at = |field: &str| positions::child(&positions::child(&def.path(), "params"), field);
        let mut issues = Vec::new();
        if p.shards == 0 || p.shards > 1_000_000 {
            issues.push(Issue::new(
                at("shards"),
                "`shards` must be between 1 and 1000000",
            ));
        }
        if p.items.is_some() && p.list.is_some() {
            issues.push(Issue::new(at("list"), "give `items` or `list`, not both"));
        }
        if let Some(list) = &p.list
            && !def.deps.contains(list)
        {
            issues.push(
                Issue::new(
                    at("list"),
                    format!("`list` file `{list}` is not among the stage's `deps`"),
                )
                .with_help(format!(
                    "add `deps: [{list}]` so changes to it rerun the stage"
                )),
            );
        }
        if p.fail_shard.is_some() != p.fail_while.is_some() {
            issues.push(Issue::new(
                at("fail_shard"),
                "`fail_shard` and `fail_while` go together",
            ));
        }
        issues
    }

    fn shard_count(&self, def: &StageDef, _pipeline: &Pipeline) -> u32 {
        params(def).map_or(1, |p| p.shards.max(1))
    }

    fn run_shard(&self, ctx: &StageCtx<'_>, shard: u32) -> Result<ItemCounts, StageError> {
        let p: Params = ctx.params()?;
        trace(ctx, &p, &format!("shard {shard}"))?;
        if p.fail_shard == Some(shard)
            && let Some(flag) = &p.fail_while
            && ctx.resolve(flag).exists()
        {
            return Err(StageError::Environment {
                stage: ctx.name().to_owned(),
                message: format!(
                    "shard {shard} fails while `{flag}` exists (`fail_while` of `shard_demo`); remove the file and run again"
                ),
            });
        }
        if p.shard_ms > 0 {
            std::thread::sleep(Duration::from_millis(p.shard_ms));
        }
        let mut counts = ItemCounts::default();
        let mine: Vec<String> = items(ctx, &p)?
            .into_iter()
            .filter(|i| shard_of(i, p.shards) == shard)
            .collect();
        let progress = ctx.progress(&format!("shard {shard} items"), mine.len() as u64);
        for item in &mine {
            ctx.check_cancelled()?;
            let (_, computed) = compute(ctx, &p, item, true)?;
            if computed {
                counts.processed += 1;
            } else {
                counts.reused += 1;
            }
            progress.inc(1);
        }
        progress.finish();
        ctx.log().line(&format!(
            "shard {shard}: {} items computed, {} reused",
            counts.processed, counts.reused
        ));
        Ok(counts)
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let p: Params = ctx.params()?;
        trace(ctx, &p, "run")?;
        let mut text = String::new();
        for item in items(ctx, &p)? {
            ctx.check_cancelled()?;
            // Normally every value is in its memo entry already; one that is not (a shard's
            // entry collected meanwhile) is computed here without the simulated work.
            let (value, _) = compute(ctx, &p, &item, false)?;
            text.push_str(&item);
            text.push('\t');
            text.push_str(&value);
            text.push('\n');
        }
        let out = ctx.out_dir().join("items.txt");
        std::fs::write(&out, text).map_err(|e| io_error(ctx.name(), &out, e))?;
        Ok(StageReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_spread_over_every_shard_stably() {
        let shards = 4;
        let mut seen = [0u32; 4];
        for i in 0..200 {
            let s = shard_of(&format!("item-{i}"), shards);
            assert_eq!(s, shard_of(&format!("item-{i}"), shards));
            seen[s as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
        assert_ne!(value_of("", "a"), value_of("x", "a"));
        assert_eq!(value_of("", "a").len(), 16);
    }
}
