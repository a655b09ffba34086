//! The pipeline file's shape as serde types, used for the JSON schema
//! (`docs/schema/pipeline.schema.json`, drift-tested) and to keep the key lists honest.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::ExecutorSpec;

/// A brspeech pipeline file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "read by serde and schemars only")]
pub(crate) struct RawPipeline {
    /// Pipeline name: names `outputs/<name>/` and the lock file's records.
    name: String,
    /// Reusable values, substituted wherever `${vars.NAME}` is written.
    #[serde(default)]
    vars: BTreeMap<String, serde_json::Value>,
    /// Config files by alias; a stage's `config: ALIAS` takes the section named after its kind.
    #[serde(default)]
    configs: BTreeMap<String, String>,
    /// Corpus sources, validated by the corpus stage kinds.
    #[serde(default)]
    sources: Vec<BTreeMap<String, serde_json::Value>>,
    /// Stages by name.
    stages: BTreeMap<String, RawStage>,
    /// Cluster executor settings (Slurm); ignored by the local executor.
    #[serde(default)]
    executor: Option<ExecutorSpec>,
}

/// One stage.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "read by serde and schemars only")]
pub(crate) struct RawStage {
    /// Stage kind: `command`, `scan_corpus`, `build_metadata`, `chunk_audio`, `extract_ssl`,
    /// `train_aasist`, `evaluate`.
    kind: String,
    /// Upstream stages whose outputs this stage reads.
    #[serde(default)]
    needs: Vec<String>,
    /// Parameters (part of the stage key; `command` stages get them as `BRSPEECH_PARAM_<KEY>`).
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    /// Alias of a config file whose section named after this stage's kind gives default params.
    #[serde(default)]
    config: Option<String>,
    /// Files or folders read, relative to the pipeline's folder (content is part of the key).
    #[serde(default)]
    deps: Vec<String>,
    /// Files or folders written by a `command` stage, relative to the pipeline's folder.
    #[serde(default)]
    outs: Vec<String>,
    /// Shell command of a `command` stage, run with `sh -c` from the pipeline's folder.
    #[serde(default)]
    cmd: Option<String>,
    /// Resources held while running.
    #[serde(default)]
    resources: Option<RawResourcesSchema>,
    /// Free text shown by `graph` and `status`.
    #[serde(default)]
    description: Option<String>,
}

/// Resources a stage holds while it runs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "read by serde and schemars only")]
pub(crate) struct RawResourcesSchema {
    /// GPUs (the scheduler runs at most `--gpus` worth of GPU stages at once).
    #[serde(default)]
    gpu: u32,
}

/// The JSON schema of pipeline files, pretty-printed.
#[must_use]
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(RawPipeline);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::super::load::{PIPELINE_KEYS, STAGE_KEYS};
    use super::*;

    fn props(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }

    #[test]
    fn schema_and_validator_agree_on_keys() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        let mut top: Vec<String> = PIPELINE_KEYS.iter().map(|s| (*s).to_owned()).collect();
        top.sort();
        assert_eq!(props(&schema), top);
        let mut stage: Vec<String> = STAGE_KEYS.iter().map(|s| (*s).to_owned()).collect();
        stage.sort();
        assert_eq!(props(&schema["$defs"]["RawStage"]), stage);
    }

    #[test]
    fn committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/schema/pipeline.schema.json");
        let now = schema_json();
        if std::env::var_os("BRSPEECH_BLESS").is_some() {
            std::fs::write(&path, &now).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed, now,
            "docs/schema/pipeline.schema.json is stale: rerun with BRSPEECH_BLESS=1"
        );
    }
}
