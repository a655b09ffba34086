//! Executors: how one stage's work is carried out once the engine has decided it must run.
//! The local executor runs the shards one after another in this process (each shard uses
//! rayon inside), then the whole-stage step. The Slurm executor (`exec::slurm`) submits the
//! whole plan at once instead (one job array per sharded stage, one job for each final step,
//! chained by dependencies) and its jobs call the same `run_shard`/`run` and the same commit,
//! so both executors commit the same entries.

use crate::exec::context::StageCtx;
use crate::stages::{ItemCounts, Stage, StageError, StageReport};

/// Runs a stage's work.
pub trait Executor: Send + Sync {
    /// Name shown in messages (`local`, `slurm`).
    fn name(&self) -> &'static str;

    /// Runs shards `0..stage.shard_count()` then `stage.run`, all writing through `ctx`.
    ///
    /// # Errors
    /// The first failing shard or the final step's error.
    fn execute(&self, stage: &dyn Stage, ctx: &StageCtx<'_>) -> Result<StageReport, StageError>;
}

/// Runs everything in this process.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalExecutor;

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn execute(&self, stage: &dyn Stage, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let shards = stage.shard_count(ctx.def(), ctx.pipeline());
        let mut items = ItemCounts::default();
        for shard in 0..shards {
            ctx.check_cancelled()?;
            items += stage.run_shard(ctx, shard)?;
        }
        ctx.check_cancelled()?;
        let mut report = stage.run(ctx)?;
        report.items += items;
        Ok(report)
    }
}
