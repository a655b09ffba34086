//! Checkpoints: the model checkpoint folder format (`config.json` + `model.safetensors`, see
//! docs/model.md), Hugging Face wav2vec2 folders (file discovery, pickle refusal, digests) and,
//! with the `torch` feature, strict state-dict loading, saving, import and export.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::aasist;
use crate::model::error::ModelError;
use crate::model::options::{Preprocessing, SslOutput};
use crate::model::wav2vec2;

#[cfg(feature = "torch")]
pub(crate) mod load;

/// Value of `format` in a model checkpoint's `config.json`.
pub const FORMAT: &str = "brspeech-model";
/// Current `format_version`.
pub const FORMAT_VERSION: u32 = 1;
/// Value of `architecture`.
pub const ARCHITECTURE: &str = "w2v_aasist";
/// Prefix of the SSL keys inside a full W2V+AASIST state dict.
pub const SSL_PREFIX: &str = "ssl_model.model.";

/// Digest of a Hugging Face wav2vec2 checkpoint folder: blake3 of its weight bytes
/// (`model.safetensors`, or every shard in name order) and of its `config.json` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslDigest {
    /// `blake3:<hex>` of the weights.
    pub weights: String,
    /// `blake3:<hex>` of `config.json` (informative: configs are compared by content).
    pub config: String,
}

impl std::fmt::Display for SslDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.weights)
    }
}

/// The SSL part of a model checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslSection {
    /// True when `model.safetensors` holds the SSL weights (`ssl_model.model.*`); false for a
    /// back-end-only checkpoint trained on frozen features of the SSL named by `digest`.
    pub embedded: bool,
    /// The SSL tensor the back end reads.
    pub output: SslOutput,
    /// The Hugging Face `config.json` of the SSL model, verbatim.
    pub config: serde_json::Value,
    /// Digest of the SSL checkpoint folder the model was built from (required when not
    /// embedded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<SslDigest>,
    /// Where that folder was (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `config.json` of a model checkpoint folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    /// The SSL front end.
    pub ssl: SslSection,
    /// The AASIST back end.
    pub backend: aasist::Config,
    /// How audio is prepared before the model.
    pub preprocessing: Preprocessing,
    /// Free-form provenance (training run, epoch, metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

impl CheckpointConfig {
    /// A configuration for an SSL config, back end and preprocessing.
    pub fn new(
        ssl: SslSection,
        backend: aasist::Config,
        preprocessing: Preprocessing,
    ) -> CheckpointConfig {
        CheckpointConfig {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            architecture: ARCHITECTURE.into(),
            ssl,
            backend,
            preprocessing,
            training: None,
        }
    }

    /// Reads and validates `DIR/config.json` of a model checkpoint folder.
    pub fn read(dir: &Path) -> Result<CheckpointConfig, ModelError> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                hint: "a model checkpoint folder holds `config.json` and `model.safetensors` (see `brspeech model import`)"
                    .into(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io("read", &path, e))?;
        let cfg: CheckpointConfig =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: path.clone(),
                source,
            })?;
        cfg.validate(&path)?;
        Ok(cfg)
    }

    /// Checks format, version, architecture and the consistency of the parts.
    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        if self.format != FORMAT || self.architecture != ARCHITECTURE {
            return Err(ModelError::config(
                path,
                format!(
                    "expected `format` `{FORMAT}` and `architecture` `{ARCHITECTURE}`: this is not a brspeech model checkpoint"
                ),
            ));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(ModelError::config(
                path,
                format!(
                    "`format_version` {} is not supported (this build reads {FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        let ssl = self.ssl_config(path)?;
        if ssl.hidden_size != self.backend.ssl_dim {
            return Err(ModelError::config(
                path,
                format!(
                    "`backend.ssl_dim` {} differs from the SSL `hidden_size` {}",
                    self.backend.ssl_dim, ssl.hidden_size
                ),
            ));
        }
        ssl.check_output(self.ssl.output, path)?;
        if !self.ssl.embedded && self.ssl.digest.is_none() {
            return Err(ModelError::config(
                path,
                "a back-end-only checkpoint must name its SSL checkpoint in `ssl.digest`",
            ));
        }
        if self.preprocessing.samples == 0 || self.preprocessing.sample_rate == 0 {
            return Err(ModelError::config(
                path,
                "`preprocessing.samples` and `preprocessing.sample_rate` must be positive",
            ));
        }
        Ok(())
    }

    /// The parsed SSL configuration.
    pub fn ssl_config(&self, path: &Path) -> Result<wav2vec2::Config, ModelError> {
        wav2vec2::Config::from_json(&self.ssl.config, path)
    }

    /// Writes `DIR/config.json` (pretty, trailing newline).
    pub fn write(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join("config.json");
        let mut text = serde_json::to_string_pretty(self).expect("checkpoint config serialises");
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| ModelError::io("write", &path, e))
    }
}

/// Extensions of pickle-based checkpoints, which are refused.
const PICKLE_EXTENSIONS: [&str; 5] = ["bin", "pt", "pth", "ckpt", "pkl"];

fn is_pickle_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Refuses a pickle file given where a safetensors state dict is expected (by extension, or by
/// content: a zip archive or a pickle stream).
pub fn refuse_pickle_state_dict(path: &Path) -> Result<(), ModelError> {
    let how = format!(
        "python -c \"import torch; from safetensors.torch import save_file; sd = torch.load('{p}', map_location='cpu', weights_only=True); save_file({{k: v.contiguous() for k, v in sd.items()}}, '{p}.safetensors')\"",
        p = path.display()
    );
    if is_pickle_name(path) {
        return Err(ModelError::PickleRefused {
            path: path.to_path_buf(),
            how,
        });
    }
    // A safetensors file starts with its header length (u64 LE) and then the JSON header `{`;
    // torch.save writes a zip archive (`PK`) or a raw pickle stream (0x80).
    let mut head = [0u8; 9];
    if let Ok(mut f) = std::fs::File::open(path) {
        use std::io::Read;
        if f.read_exact(&mut head).is_ok()
            && head[8] != b'{'
            && (head[..2] == *b"PK" || head[0] == 0x80)
        {
            return Err(ModelError::PickleRefused {
                path: path.to_path_buf(),
                how,
            });
        }
    }
    Ok(())
}

/// The files of a Hugging Face wav2vec2 checkpoint folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfFiles {
    /// The folder.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`, or every shard named by `model.safetensors.index.json` (sorted).
    pub weights: Vec<PathBuf>,
}

impl HfFiles {
    /// Finds `config.json` and the safetensors weights of `dir`; a folder with only pickle
    /// weights (`pytorch_model.bin`) is refused with the command that converts it.
    pub fn locate(dir: &Path) -> Result<HfFiles, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected a Hugging Face wav2vec2 folder with `config.json` and `model.safetensors`".into(),
            });
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(ModelError::MissingFile {
                path: config,
                hint: "a Hugging Face wav2vec2 folder holds `config.json` and `model.safetensors`"
                    .into(),
            });
        }
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let weights = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            let text =
                std::fs::read_to_string(&index).map_err(|e| ModelError::io("read", &index, e))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    path: index.clone(),
                    source,
                })?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::config(&index, "`weight_map` is missing"))?;
            let mut shards: Vec<PathBuf> = map
                .values()
                .filter_map(|v| v.as_str())
                .map(|f| dir.join(f))
                .collect();
            shards.sort();
            shards.dedup();
            for s in &shards {
                if !s.is_file() {
                    return Err(ModelError::MissingFile {
                        path: s.clone(),
                        hint: format!("named by `{}`", index.display()),
                    });
                }
            }
            shards
        } else {
            let pickle = ["pytorch_model.bin", "model.bin", "model.pt"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file());
            return Err(match pickle {
                Some(path) => ModelError::PickleRefused {
                    how: format!(
                        "python -c \"from transformers import Wav2Vec2Model; Wav2Vec2Model.from_pretrained('{d}').save_pretrained('{d}-safetensors', safe_serialization=True)\" and use `{d}-safetensors`",
                        d = dir.display()
                    ),
                    path,
                },
                None => ModelError::MissingFile {
                    path: single,
                    hint:
                        "a Hugging Face wav2vec2 folder holds `config.json` and `model.safetensors`"
                            .into(),
                },
            });
        };
        Ok(HfFiles {
            dir: dir.to_path_buf(),
            config,
            weights,
        })
    }

    /// blake3 digests of the weights (all files, in order) and of `config.json`.
    pub fn digest(&self) -> Result<SslDigest, ModelError> {
        let mut weights = blake3::Hasher::new();
        for w in &self.weights {
            weights
                .update_mmap_rayon(w)
                .map_err(|e| ModelError::io("read", w, e))?;
        }
        let mut config = blake3::Hasher::new();
        config
            .update_mmap(&self.config)
            .map_err(|e| ModelError::io("read", &self.config, e))?;
        Ok(SslDigest {
            weights: format!("blake3:{}", weights.finalize().to_hex()),
            config: format!("blake3:{}", config.finalize().to_hex()),
        })
    }
}

impl SslSection {
    /// The SSL section of a back-end-only (frozen-mode) checkpoint: the Hugging Face folder's
    /// configuration and digest, not its weights.
    pub fn external(ssl_dir: &Path, output: SslOutput) -> Result<SslSection, ModelError> {
        let files = HfFiles::locate(ssl_dir)?;
        let (cfg, raw) = wav2vec2::Config::from_file(&files.config)?;
        cfg.check_output(output, &files.config)?;
        Ok(SslSection {
            embedded: false,
            output,
            config: raw,
            digest: Some(files.digest()?),
            source: Some(ssl_dir.display().to_string()),
        })
    }
}

/// Copies a model checkpoint (`config.json` + `model.safetensors`, nothing else: training
/// epoch folders also hold optimizer state) into `to`, hard-linking when possible. The
/// configuration is validated first.
pub fn copy_checkpoint(from: &Path, to: &Path) -> Result<(), ModelError> {
    CheckpointConfig::read(from)?;
    std::fs::create_dir_all(to).map_err(|e| ModelError::io("create", to, e))?;
    for name in ["model.safetensors", "config.json"] {
        let (src, dst) = (from.join(name), to.join(name));
        if !src.is_file() {
            return Err(ModelError::MissingFile {
                path: src,
                hint: "a model checkpoint folder holds `config.json` and `model.safetensors`"
                    .into(),
            });
        }
        if dst.exists() {
            std::fs::remove_file(&dst).map_err(|e| ModelError::io("remove", &dst, e))?;
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| ModelError::io("copy", &src, e))?;
        }
    }
    Ok(())
}

/// Digest of a Hugging Face wav2vec2 folder (for stage keys and back-end-only checkpoints).
pub fn ssl_digest(dir: &Path) -> Result<SslDigest, ModelError> {
    HfFiles::locate(dir)?.digest()
}

/// Loads a safetensors state dict into `vs` strictly: every variable must be present with its
/// shape and nothing else may be there (the positional conv's `weight_g`/`weight_v` spelling is
/// accepted for `parametrizations.weight.original0/1`). Pickle files are refused.
#[cfg(feature = "torch")]
pub fn load_state_dict(vs: &tch::nn::VarStore, path: &Path) -> Result<(), ModelError> {
    let tensors = load::read_safetensors(path)?
        .into_iter()
        .map(|mut n| {
            n.name = load::normalize_key(&n.name);
            n
        })
        .collect();
    load::load_strict(vs, tensors, path, &|_| true, &|_| false).map(|_| ())
}

/// Loads the weights of a Hugging Face wav2vec2 folder into `vs` under `prefix` (`""` for a
/// bare `Wav2Vec2Model`, [`SSL_PREFIX`] inside W2V+AASIST). Head keys of
/// `...ForPreTraining`/`...ForCTC` files (outside the `wav2vec2.` prefix) are set aside and
/// returned; a `masked_spec_embed` the configuration does not use is ignored likewise.
#[cfg(feature = "torch")]
pub fn load_hf_weights(
    vs: &tch::nn::VarStore,
    prefix: &str,
    files: &HfFiles,
) -> Result<Vec<String>, ModelError> {
    let (tensors, mut set_aside) = load::read_hf_ssl(files)?;
    let tensors = tensors
        .into_iter()
        .map(|mut n| {
            n.name = format!("{prefix}{}", n.name);
            n
        })
        .collect();
    let spec_embed = format!("{prefix}masked_spec_embed");
    let report = load::load_strict(vs, tensors, &files.dir, &|k| k.starts_with(prefix), &|k| {
        k == spec_embed
    })?;
    set_aside.extend(report.ignored);
    Ok(set_aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_files_are_refused_by_name_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("aasist.pth");
        std::fs::write(&bin, b"whatever").unwrap();
        let e = refuse_pickle_state_dict(&bin).unwrap_err();
        assert!(matches!(e, ModelError::PickleRefused { .. }));
        assert!(e.to_string().contains("save_file"), "{e}");
        let zip = dir.path().join("aasist.weights");
        std::fs::write(&zip, b"PK\x03\x04rest of a zip").unwrap();
        assert!(refuse_pickle_state_dict(&zip).is_err());
        // A safetensors header whose length starts with 0x80 or "PK" is not mistaken for one.
        for len in [0x80u64, 0x4B50] {
            let ok = dir.path().join(format!("aasist-{len}.safetensors"));
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            std::fs::write(&ok, bytes).unwrap();
            assert!(refuse_pickle_state_dict(&ok).is_ok());
        }
    }

    #[test]
    fn hf_folder_with_only_pytorch_model_bin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin"), b"\x80\x02").unwrap();
        let e = HfFiles::locate(dir.path()).unwrap_err();
        assert!(matches!(e, ModelError::PickleRefused { .. }), "{e}");
        assert!(e.to_string().contains("safe_serialization=True"), "{e}");
    }

    fn sample_config() -> CheckpointConfig {
        let ssl = serde_json::to_value(wav2vec2::Config::default()).unwrap();
        CheckpointConfig::new(
            SslSection {
                embedded: true,
                output: SslOutput::LastHiddenState,
                config: ssl,
                digest: None,
                source: None,
            },
            aasist::Config { ssl_dim: 768 },
            Preprocessing::default(),
        )
    }

    #[test]
    fn checkpoint_config_round_trips_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sample_config();
        cfg.write(dir.path()).unwrap();
        assert_eq!(CheckpointConfig::read(dir.path()).unwrap(), cfg);

        let write_edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(&cfg).unwrap();
            f(&mut v);
            std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
            CheckpointConfig::read(dir.path()).unwrap_err().to_string()
        };
        assert!(write_edit(&|v| v["format_version"] = 2.into()).contains("`format_version` 2"));
        assert!(
            write_edit(&|v| v["backend"]["ssl_dim"] = 1024.into())
                .contains("`backend.ssl_dim` 1024")
        );
        assert!(write_edit(&|v| v["extra"] = true.into()).contains("unknown field"));
        assert!(
            write_edit(&|v| v["ssl"]["output"] = serde_json::json!({"hidden_state": 13}))
                .contains("hidden state 13")
        );
        assert!(write_edit(&|v| v["ssl"]["embedded"] = false.into()).contains("`ssl.digest`"));
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        assert!(matches!(
            CheckpointConfig::read(dir.path()),
            Err(ModelError::MissingFile { .. })
        ));
    }

    #[test]
    fn digest_changes_with_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"aaaa").unwrap();
        let d1 = ssl_digest(dir.path()).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"aaab").unwrap();
        let d2 = ssl_digest(dir.path()).unwrap();
        assert_ne!(d1.weights, d2.weights);
        assert_eq!(d1.config, d2.config);
        assert!(d1.weights.starts_with("blake3:"));
    }
}
