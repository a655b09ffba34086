//! The whole W2V+AASIST model (`ssl_model.model.*` + back end in one `VarStore`, the reference
//! state-dict layout) and model checkpoint folders in memory: load, build, save.

use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::model::aasist::{Aasist, Mode};
use crate::model::checkpoint::load::{
    load_strict, normalize_key, read_safetensors, sorted_cpu_variables, write_safetensors,
};
use crate::model::checkpoint::{CheckpointConfig, SSL_PREFIX};
use crate::model::error::ModelError;
use crate::model::options::SslOutput;
use crate::model::wav2vec2::{self, Wav2Vec2Model, normalize_waveforms};

/// `W2V_AASIST` (are_audio_df_polyglots): per-clip normalisation → wav2vec2 → AASIST → 1 logit.
/// <https://github.com/bartlomiejmarek/are_audio_df_polyglots/blob/main/src/models/w2v_assist.py>
#[derive(Debug)]
pub struct W2vAasist {
    /// `ssl_model.model`.
    pub ssl: Wav2Vec2Model,
    /// The back end (state-dict root).
    pub backend: Aasist,
    /// The SSL tensor the back end reads.
    pub output: SslOutput,
}

impl W2vAasist {
    /// Registers both parts under `root` (the SSL under `ssl_model.model`).
    pub fn new(root: tch::nn::Path, ssl: &wav2vec2::Config, output: SslOutput) -> W2vAasist {
        W2vAasist {
            ssl: Wav2Vec2Model::new(&root / "ssl_model" / "model", ssl),
            backend: Aasist::new(
                root,
                &crate::model::aasist::Config {
                    ssl_dim: ssl.hidden_size,
                },
            ),
            output,
        }
    }

    /// Raw waveforms `[B, S]` → logits `[B, 1]`; `train` puts both parts in training mode
    /// (SSL dropout, LayerDrop and time masking; back-end dropout and batch statistics).
    pub fn forward_t(&self, waveforms: &Tensor, train: bool) -> Tensor {
        let feats = self
            .ssl
            .forward_output(&normalize_waveforms(waveforms), self.output, train);
        self.backend
            .forward_traced(&feats, Mode::from_train(train), None)
    }
}

/// A model checkpoint folder in memory.
#[derive(Debug)]
pub struct ModelCheckpoint {
    /// `config.json`.
    pub config: CheckpointConfig,
    /// Every variable (SSL under `ssl_model.model.` when embedded, back end at the root).
    pub vs: VarStore,
    /// The SSL network when the checkpoint embeds it.
    pub ssl: Option<Wav2Vec2Model>,
    /// The back end.
    pub backend: Aasist,
}

impl ModelCheckpoint {
    /// Builds the networks a configuration describes, randomly initialised (the back end as the
    /// reference initialises it).
    pub fn build(config: CheckpointConfig, device: Device) -> Result<ModelCheckpoint, ModelError> {
        let where_ = Path::new("checkpoint config");
        config.validate(where_)?;
        let ssl_cfg = config.ssl_config(where_)?;
        let vs = VarStore::new(device);
        let root = vs.root();
        let ssl = config
            .ssl
            .embedded
            .then(|| Wav2Vec2Model::new(&root / "ssl_model" / "model", &ssl_cfg));
        let backend = Aasist::new(root, &config.backend);
        Ok(ModelCheckpoint {
            config,
            vs,
            ssl,
            backend,
        })
    }

    /// Loads `dir` (`config.json` + `model.safetensors`) strictly onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<ModelCheckpoint, ModelError> {
        let config = CheckpointConfig::read(dir)?;
        let ckpt = ModelCheckpoint::build(config, device)?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(ModelError::MissingFile {
                path: weights,
                hint: "a model checkpoint folder holds `config.json` and `model.safetensors`"
                    .into(),
            });
        }
        ckpt.load_weights(&weights)?;
        Ok(ckpt)
    }

    /// Loads a state dict in the reference layout into this checkpoint's variables, strictly.
    pub fn load_weights(&self, path: &Path) -> Result<(), ModelError> {
        let tensors = read_safetensors(path)?
            .into_iter()
            .map(|mut n| {
                n.name = normalize_key(&n.name);
                n
            })
            .collect();
        load_strict(&self.vs, tensors, path, &|_| true, &|_| false).map(|_| ())
    }

    /// The model's variables in the reference state-dict layout, sorted, on the CPU.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        sorted_cpu_variables(&self.vs)
    }

    /// Number of parameters (trainable variables).
    pub fn parameter_count(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Scores raw waveforms `[B, S]` with the embedded SSL (eval mode, no gradient).
    pub fn forward_waveforms(&self, waveforms: &Tensor, train: bool) -> Option<Tensor> {
        let ssl = self.ssl.as_ref()?;
        let feats = ssl.forward_output(
            &normalize_waveforms(waveforms),
            self.config.ssl.output,
            train,
        );
        Some(self.backend.forward_t(&feats, train))
    }

    /// Writes the folder: `model.safetensors` then `config.json`, each through a temporary file
    /// renamed into place.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        write_checkpoint_files(dir, &self.config, &self.state_dict())
    }
}

/// Keys of the back end in a state dict (everything outside `ssl_model.`).
pub(crate) fn is_backend_key(key: &str) -> bool {
    !key.starts_with("ssl_model.")
}

/// Writes `config.json` and `model.safetensors` into `dir` (created if needed).
pub(crate) fn write_checkpoint_files(
    dir: &Path,
    config: &CheckpointConfig,
    tensors: &[(String, Tensor)],
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("create", dir, e))?;
    let weights = dir.join("model.safetensors");
    let tmp = dir.join(".model.safetensors.tmp");
    write_safetensors(&tmp, tensors)?;
    std::fs::rename(&tmp, &weights).map_err(|e| ModelError::io("rename", &tmp, e))?;
    let tmp_dir = tempfile::Builder::new()
        .prefix(".config")
        .tempdir_in(dir)
        .map_err(|e| ModelError::io("create", dir, e))?;
    config.write(tmp_dir.path())?;
    let target = dir.join("config.json");
    std::fs::rename(tmp_dir.path().join("config.json"), &target)
        .map_err(|e| ModelError::io("rename", &target, e))?;
    Ok(())
}

/// Renames the SSL keys of a Hugging Face state dict into the full-model layout.
pub(crate) fn with_ssl_prefix(key: &str) -> String {
    format!("{SSL_PREFIX}{key}")
}

/// Fails unless `dir` is absent or an empty folder.
pub(crate) fn ensure_fresh_dir(dir: &Path) -> Result<(), ModelError> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| ModelError::io("read", dir, e))?
            .next()
            .is_none();
        if !empty {
            return Err(ModelError::config(
                PathBuf::from(dir),
                "the output folder exists and is not empty; choose a new folder or remove it",
            ));
        }
    }
    Ok(())
}
