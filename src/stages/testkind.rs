//! A kind that exists only in unit tests: exercises the built-in side of the contract
//! (shards, memo entries, `out_dir`, `prev_output`, upstream inputs, item counts, resume dir).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{ItemCounts, Stage, StageError, StageReport};
use crate::exec::context::StageCtx;
use crate::spec::{Issue, Pipeline, StageDef};

/// Kind name.
pub(crate) const KIND: &str = "test_items";

/// Writes one memo entry per item (`items` param), in two shards, then lists them.
pub(crate) struct TestItems;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    items: u32,
}

impl Stage for TestItems {
    fn kind(&self) -> &'static str {
        KIND
    }
    fn version(&self) -> u32 {
        1
    }
    fn check(&self, def: &StageDef, _: &Pipeline) -> Vec<Issue> {
        def.params_as::<Params>()
            .err()
            .map(|i| vec![*i])
            .unwrap_or_default()
    }
    fn shard_count(&self, _: &StageDef, _: &Pipeline) -> u32 {
        2
    }
    fn run_shard(&self, ctx: &StageCtx<'_>, shard: u32) -> Result<ItemCounts, StageError> {
        let p: Params = ctx.params()?;
        let processed = AtomicU64::new(0);
        let mut counts = ItemCounts::default();
        for i in (0..p.items).filter(|i| i % 2 == shard) {
            let before = processed.load(Ordering::SeqCst);
            ctx.memo("test", &format!("item-{i}"), |tmp| {
                processed.fetch_add(1, Ordering::SeqCst);
                std::fs::write(tmp.join("v"), format!("{i}\n")).map_err(|source| StageError::Io {
                    stage: ctx.name().to_owned(),
                    path: tmp.to_path_buf(),
                    source,
                })
            })?;
            if processed.load(Ordering::SeqCst) > before {
                counts.processed += 1
            } else {
                counts.reused += 1
            }
        }
        Ok(counts)
    }
    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let p: Params = ctx.params()?;
        let io = |path: &std::path::Path, source| StageError::Io {
            stage: ctx.name().to_owned(),
            path: path.to_path_buf(),
            source,
        };
        let scratch = ctx.resume_dir()?;
        std::fs::write(scratch.join("checkpoint"), "1").map_err(|e| io(&scratch, e))?;
        let prev = ctx.prev_output().map_or(0, |d| {
            std::fs::read_to_string(d.join("items.txt")).map_or(0, |s| s.lines().count())
        });
        let upstream: usize = ctx
            .inputs()
            .values()
            .map(|d| std::fs::read_to_string(d.join("items.txt")).map_or(0, |s| s.lines().count()))
            .sum();
        let list: String = (0..p.items).map(|i| format!("item-{i}\n")).collect();
        let out = ctx.out_dir().join("items.txt");
        std::fs::write(&out, list).map_err(|e| io(&out, e))?;
        let info = ctx.out_dir().join("info.txt");
        std::fs::write(&info, format!("prev {prev}\nupstream {upstream}\n"))
            .map_err(|e| io(&info, e))?;
        let progress = ctx.progress("items", u64::from(p.items));
        progress.inc(u64::from(p.items));
        progress.finish();
        Ok(StageReport::default())
    }
}
