//! The wav2vec2 family (Hugging Face `Wav2Vec2Model`): its `config.json` (always compiled) and,
//! with the `torch` feature, the network in tch with the checkpoint's own key names.
//!
//! Upstream: `transformers/models/wav2vec2/configuration_wav2vec2.py` and `modeling_wav2vec2.py`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::error::ModelError;

#[cfg(feature = "torch")]
mod encoder;
#[cfg(feature = "torch")]
mod feature_extractor;
#[cfg(feature = "torch")]
mod masking;
#[cfg(feature = "torch")]
mod model;

#[cfg(feature = "torch")]
pub use model::{
    PretrainedSsl, Wav2Vec2Model, Wav2Vec2Output, normalize_waveforms, write_random_hf_folder,
};

/// The architecture fields of a Hugging Face wav2vec2 `config.json` (field names as upstream;
/// other fields of the file are ignored here but kept verbatim by checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `model_type`; must be `wav2vec2`.
    pub model_type: String,
    /// `hidden_size` (D: 768 base, 1024 large / XLS-R 300M).
    pub hidden_size: i64,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: i64,
    /// `intermediate_size` (feed-forward width).
    pub intermediate_size: i64,
    /// `hidden_act` (`gelu`, `gelu_new`, `relu`, `silu`/`swish`).
    pub hidden_act: String,
    /// `hidden_dropout`.
    pub hidden_dropout: f64,
    /// `activation_dropout`.
    pub activation_dropout: f64,
    /// `attention_dropout`.
    pub attention_dropout: f64,
    /// `feat_proj_dropout`.
    pub feat_proj_dropout: f64,
    /// `layerdrop`.
    pub layerdrop: f64,
    /// `layer_norm_eps`.
    pub layer_norm_eps: f64,
    /// `initializer_range` (random initialisation only).
    pub initializer_range: f64,
    /// `feat_extract_norm`: `group` (GroupNorm on conv 0) or `layer` (LayerNorm on every conv).
    pub feat_extract_norm: String,
    /// `feat_extract_activation`.
    pub feat_extract_activation: String,
    /// `conv_dim`.
    pub conv_dim: Vec<i64>,
    /// `conv_stride`.
    pub conv_stride: Vec<i64>,
    /// `conv_kernel`.
    pub conv_kernel: Vec<i64>,
    /// `conv_bias`.
    pub conv_bias: bool,
    /// `num_conv_pos_embeddings` (positional conv kernel).
    pub num_conv_pos_embeddings: i64,
    /// `num_conv_pos_embedding_groups`.
    pub num_conv_pos_embedding_groups: i64,
    /// `do_stable_layer_norm`: pre-LN encoder with a final LayerNorm (large / XLS-R).
    pub do_stable_layer_norm: bool,
    /// `apply_spec_augment`.
    pub apply_spec_augment: bool,
    /// `mask_time_prob`.
    pub mask_time_prob: f64,
    /// `mask_time_length`.
    pub mask_time_length: i64,
    /// `mask_time_min_masks`.
    pub mask_time_min_masks: i64,
    /// `mask_feature_prob`.
    pub mask_feature_prob: f64,
    /// `mask_feature_length`.
    pub mask_feature_length: i64,
    /// `mask_feature_min_masks`.
    pub mask_feature_min_masks: i64,
    /// `add_adapter` (unsupported when true).
    pub add_adapter: bool,
    /// `adapter_attn_dim` (unsupported when set).
    pub adapter_attn_dim: Option<i64>,
}

impl Default for Config {
    /// The upstream defaults (`Wav2Vec2Config()`, the wav2vec2-base architecture).
    fn default() -> Self {
        Config {
            model_type: "wav2vec2".into(),
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            hidden_dropout: 0.1,
            activation_dropout: 0.1,
            attention_dropout: 0.1,
            feat_proj_dropout: 0.0,
            layerdrop: 0.1,
            layer_norm_eps: 1e-5,
            initializer_range: 0.02,
            feat_extract_norm: "group".into(),
            feat_extract_activation: "gelu".into(),
            conv_dim: vec![512; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: false,
            num_conv_pos_embeddings: 128,
            num_conv_pos_embedding_groups: 16,
            do_stable_layer_norm: false,
            apply_spec_augment: true,
            mask_time_prob: 0.05,
            mask_time_length: 10,
            mask_time_min_masks: 2,
            mask_feature_prob: 0.0,
            mask_feature_length: 10,
            mask_feature_min_masks: 0,
            add_adapter: false,
            adapter_attn_dim: None,
        }
    }
}

/// Activation functions the wav2vec2 family uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`gelu`).
    Gelu,
    /// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// ReLU.
    Relu,
    /// SiLU (`silu`, `swish`).
    Silu,
}

impl Activation {
    fn parse(name: &str) -> Option<Activation> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        }
    }
}

impl Config {
    /// Parses and validates a Hugging Face `config.json` value; `path` names it in errors.
    pub fn from_json(value: &serde_json::Value, path: &Path) -> Result<Config, ModelError> {
        let cfg: Config =
            serde_json::from_value(value.clone()).map_err(|source| ModelError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<(Config, serde_json::Value), ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io("read", path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let cfg = Config::from_json(&value, path)?;
        Ok((cfg, value))
    }

    /// Checks that the configuration describes a wav2vec2 model this port implements.
    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::config(path, m));
        if self.model_type != "wav2vec2" {
            return bad(format!(
                "`model_type` is `{}`; only `wav2vec2` checkpoints (base, large, XLS-R, XLSR-53 and their fine-tunes) are supported",
                self.model_type
            ));
        }
        if self.feat_extract_norm != "group" && self.feat_extract_norm != "layer" {
            return bad(format!(
                "`feat_extract_norm` is `{}`; expected `group` or `layer`",
                self.feat_extract_norm
            ));
        }
        for (key, act) in [
            ("hidden_act", &self.hidden_act),
            ("feat_extract_activation", &self.feat_extract_activation),
        ] {
            if Activation::parse(act).is_none() {
                return bad(format!(
                    "`{key}` is `{act}`; supported: gelu, gelu_new, relu, silu"
                ));
            }
        }
        let n = self.conv_dim.len();
        if n == 0 || self.conv_stride.len() != n || self.conv_kernel.len() != n {
            return bad(
                "`conv_dim`, `conv_stride` and `conv_kernel` must be non-empty and equally long"
                    .into(),
            );
        }
        if self.hidden_size <= 0
            || self.num_attention_heads <= 0
            || self.hidden_size % self.num_attention_heads != 0
        {
            return bad(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_conv_pos_embedding_groups <= 0
            || self.hidden_size % self.num_conv_pos_embedding_groups != 0
        {
            return bad(
                "`hidden_size` must be a multiple of `num_conv_pos_embedding_groups`".into(),
            );
        }
        if self.add_adapter || self.adapter_attn_dim.is_some() {
            return bad(
                "adapter layers (`add_adapter`, `adapter_attn_dim`) are not supported".into(),
            );
        }
        if self.num_hidden_layers == 0 {
            return bad("`num_hidden_layers` must be at least 1".into());
        }
        Ok(())
    }

    /// Checks that `output` exists in this model (`hidden_states[k]` needs k <= layers).
    pub fn check_output(
        &self,
        output: crate::model::options::SslOutput,
        path: &Path,
    ) -> Result<(), ModelError> {
        match output {
            crate::model::options::SslOutput::HiddenState(k) if k > self.num_hidden_layers => {
                Err(ModelError::config(
                    path,
                    format!(
                        "hidden state {k} asked for, the model has {} layers (hidden states 0..={})",
                        self.num_hidden_layers, self.num_hidden_layers
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The hidden activation.
    pub fn hidden_activation(&self) -> Activation {
        Activation::parse(&self.hidden_act).unwrap_or(Activation::Gelu)
    }

    /// The feature-extractor (and positional conv) activation.
    pub fn feat_activation(&self) -> Activation {
        Activation::parse(&self.feat_extract_activation).unwrap_or(Activation::Gelu)
    }

    /// Whether the model has the learned `masked_spec_embed` (upstream: only when a masking
    /// probability is positive).
    pub fn has_masked_spec_embed(&self) -> bool {
        self.mask_time_prob > 0.0 || self.mask_feature_prob > 0.0
    }

    /// Frames produced for `samples` input samples (each conv: `floor((L - k) / s) + 1`).
    pub fn frames_for(&self, samples: usize) -> usize {
        let mut len = samples as i64;
        for (k, s) in self.conv_kernel.iter().zip(&self.conv_stride) {
            if len < *k {
                return 0;
            }
            len = (len - k) / s + 1;
        }
        len as usize
    }

    /// Smallest input length that yields at least one frame.
    pub fn min_samples(&self) -> usize {
        // Invert the conv stack: need L_i >= k_i at every layer.
        let mut need = 1i64;
        for (k, s) in self.conv_kernel.iter().zip(&self.conv_stride).rev() {
            need = (need - 1) * s + k;
        }
        need as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts_match_the_reference_table() {
        let cfg = Config::default();
        assert_eq!(cfg.frames_for(64_600), 201);
        assert_eq!(cfg.frames_for(64_000), 199);
        assert_eq!(cfg.frames_for(48_000), 149);
        assert_eq!(cfg.frames_for(16_000), 49);
        assert_eq!(cfg.frames_for(cfg.min_samples()), 1);
        assert_eq!(cfg.frames_for(cfg.min_samples() - 1), 0);
    }

    #[test]
    fn rejects_other_model_types_and_adapters() {
        let p = Path::new("config.json");
        let mut v = serde_json::to_value(Config::default()).unwrap();
        v["model_type"] = "hubert".into();
        let e = Config::from_json(&v, p).unwrap_err().to_string();
        assert!(e.contains("`hubert`"), "{e}");
        let mut v = serde_json::to_value(Config::default()).unwrap();
        v["add_adapter"] = true.into();
        assert!(Config::from_json(&v, p).is_err());
        let mut v = serde_json::to_value(Config::default()).unwrap();
        v["hidden_act"] = "mish".into();
        let e = Config::from_json(&v, p).unwrap_err().to_string();
        assert!(e.contains("`hidden_act`"), "{e}");
    }

    #[test]
    fn reads_the_fixture_configs() {
        for layout in ["layer", "group"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
                "tests/fixtures/parity/ssl_tiny_{layout}_config.json"
            ));
            let (cfg, _) = Config::from_file(&path).unwrap();
            assert_eq!(cfg.hidden_size, 64);
            assert_eq!(cfg.feat_extract_norm, layout);
            assert_eq!(cfg.do_stable_layer_norm, layout == "layer");
            assert_eq!(cfg.frames_for(16_000), 49);
        }
    }
}
