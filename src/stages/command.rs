//! The `command` kind: runs `cmd` with `sh -c` from the pipeline's folder, params as
//! `BRSPEECH_PARAM_<KEY>` environment variables, stdout and stderr into the stage log. Its
//! declared `outs` stay in the workspace; the engine stores copies in the cache.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Stage, StageError, StageReport};
use crate::cache::fsutil;
use crate::exec::context::StageCtx;
use crate::spec::{Issue, Pipeline, StageDef, positions};

/// Kind name.
pub const KIND: &str = "command";

/// The `command` kind.
#[derive(Debug, Clone, Copy)]
pub struct Command;

/// How long a cancelled command gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// The environment variables a stage's params become: `BRSPEECH_PARAM_<KEY>` with the key
/// upper-cased and anything not alphanumeric turned into `_`; nested mappings join their keys
/// with `_`. Strings are passed as they are, anything else as JSON.
#[must_use]
pub fn param_env(params: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(&format!("{prefix}_{}", env_key(k)), v, out);
                }
            }
            Value::String(s) => {
                out.insert(prefix.to_owned(), s.clone());
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in params {
        walk(&format!("BRSPEECH_PARAM_{}", env_key(k)), v, &mut out);
    }
    out
}

fn env_key(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `exit status 2` / `killed by signal 9`.
#[must_use]
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

impl Stage for Command {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn version(&self) -> u32 {
        1
    }

    fn check(&self, def: &StageDef, _pipeline: &Pipeline) -> Vec<Issue> {
        let mut issues = Vec::new();
        match def.cmd.as_deref() {
            None => issues.push(
                Issue::new(
                    def.path(),
                    format!("command stage `{}` has no `cmd`", def.name),
                )
                .at_key()
                .with_help("add `cmd: <shell command>`"),
            ),
            Some(c) if c.trim().is_empty() => {
                issues.push(Issue::new(
                    positions::child(&def.path(), "cmd"),
                    format!("command stage `{}` has an empty `cmd`", def.name),
                ));
            }
            Some(_) => {}
        }
        issues
    }

    fn workspace_outs(&self, def: &StageDef) -> Vec<String> {
        def.outs.clone()
    }

    fn run(&self, ctx: &StageCtx<'_>) -> Result<StageReport, StageError> {
        let def = ctx.def();
        let stage = def.name.clone();
        let cmd = def.cmd.clone().unwrap_or_default();
        let dir = &ctx.pipeline().dir;
        // Like DVC: outs are removed before the command runs, so nothing stale is picked up.
        for out in &def.outs {
            fsutil::remove_path(&dir.join(out)).map_err(|source| StageError::Cache {
                stage: stage.clone(),
                source,
            })?;
        }
        let log = ctx.log();
        let io = |path: &std::path::Path| {
            let stage = stage.clone();
            let path = path.to_path_buf();
            move |source| StageError::Io {
                stage,
                path,
                source,
            }
        };
        let stdout = log.file().map_err(io(log.path()))?;
        let stderr = log.file().map_err(io(log.path()))?;
        let mut process = Process::new("sh");
        process
            .arg("-c")
            .arg(&cmd)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env("BRSPEECH_STAGE", &stage)
            .env("BRSPEECH_PIPELINE", &ctx.pipeline().name)
            .envs(param_env(&def.params))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
        // this thread's process dies (kill -9 of brspeech leaves no orphaned command).
        unsafe {
            process.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = process.spawn().map_err(io(std::path::Path::new("sh")))?;
        let pgid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io(std::path::Path::new("sh")))? {
                break status;
            }
            if ctx.is_cancelled() {
                // SAFETY: signalling the child's own process group.
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
                let deadline = Instant::now() + GRACE;
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // SAFETY: as above.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                return Err(StageError::Cancelled { stage });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            return Err(StageError::CommandFailed {
                stage,
                status: describe(status),
                log: log.path().to_path_buf(),
            });
        }
        for out in &def.outs {
            let src = dir.join(out);
            if !src.exists() {
                return Err(StageError::MissingOut {
                    stage,
                    out: out.clone(),
                });
            }
            fsutil::copy_tree(&src, &ctx.out_dir().join(out)).map_err(|source| {
                StageError::Cache {
                    stage: stage.clone(),
                    source,
                }
            })?;
        }
        Ok(StageReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_become_upper_cased_environment_variables() {
        let params: BTreeMap<String, Value> = [
            ("lr".to_owned(), json!(5e-6)),
            ("name".to_owned(), json!("x y")),
            ("opt".to_owned(), json!({"beta-1": 0.9, "on": true})),
            ("list".to_owned(), json!([1, 2])),
        ]
        .into_iter()
        .collect();
        let env = param_env(&params);
        assert_eq!(env["BRSPEECH_PARAM_LR"], "5e-6");
        assert_eq!(env["BRSPEECH_PARAM_NAME"], "x y");
        assert_eq!(env["BRSPEECH_PARAM_OPT_BETA_1"], "0.9");
        assert_eq!(env["BRSPEECH_PARAM_OPT_ON"], "true");
        assert_eq!(env["BRSPEECH_PARAM_LIST"], "[1,2]");
    }
}
