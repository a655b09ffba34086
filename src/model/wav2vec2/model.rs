//! `Wav2Vec2Model`: feature encoder → feature projection → (training) span masking → encoder.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::Config;
use super::encoder::Encoder;
use super::feature_extractor::{FeatureEncoder, FeatureProjection};
use super::masking::compute_mask_indices;
use crate::model::checkpoint::{HfFiles, load_hf_weights};
use crate::model::error::ModelError;
use crate::model::options::SslOutput;

/// Per-clip z-normalisation of `[B, S]` waveforms: `(x - mean) / sqrt(var + 1e-7)` with the
/// population variance, as `Wav2Vec2FeatureExtractor(do_normalize=True)` does.
pub fn normalize_waveforms(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    let mean = x.mean_dim(-1, true, Kind::Float);
    let var = x.var_dim(-1, false, true);
    (x - mean) / (var + 1e-7).sqrt()
}

/// Everything the forward pass can return (upstream `Wav2Vec2BaseModelOutput` with
/// `output_hidden_states=True`).
#[derive(Debug)]
pub struct Wav2Vec2Output {
    /// The LayerNorm'd CNN features `[B, T, C]` (`extract_features`).
    pub extract_features: Tensor,
    /// `hidden_states[0..=L]` `[B, T, D]`.
    pub hidden_states: Vec<Tensor>,
    /// `last_hidden_state` `[B, T, D]`.
    pub last_hidden_state: Tensor,
}

/// `Wav2Vec2Model` with Hugging Face key names (`feature_extractor.*`, `feature_projection.*`,
/// `encoder.*`, `masked_spec_embed`).
/// <https://github.com/huggingface/transformers/blob/main/src/transformers/models/wav2vec2/modeling_wav2vec2.py>
#[derive(Debug)]
pub struct Wav2Vec2Model {
    feature_extractor: FeatureEncoder,
    feature_projection: FeatureProjection,
    encoder: Encoder,
    masked_spec_embed: Option<Tensor>,
    cfg: Config,
}

impl Wav2Vec2Model {
    /// Registers every parameter under `p` (e.g. `vs.root()` for a Hugging Face checkpoint, or
    /// `root / "ssl_model" / "model"` inside W2V+AASIST), randomly initialised while holding
    /// the process's generator ([`crate::model::rng`]; seed it first for reproducible values).
    pub fn new(p: Path, cfg: &Config) -> Wav2Vec2Model {
        let _rng = crate::model::rng::hold();
        let masked_spec_embed = cfg.has_masked_spec_embed().then(|| {
            p.var(
                "masked_spec_embed",
                &[cfg.hidden_size],
                Init::Uniform { lo: 0.0, up: 1.0 },
            )
        });
        Wav2Vec2Model {
            feature_extractor: FeatureEncoder::new(&p / "feature_extractor", cfg),
            feature_projection: FeatureProjection::new(&p / "feature_projection", cfg),
            encoder: Encoder::new(&p / "encoder", cfg),
            masked_spec_embed,
            cfg: cfg.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Number of transformer layers (`hidden_states` has one more entry).
    pub fn num_layers(&self) -> usize {
        self.encoder.num_layers()
    }

    /// Replaces masked frames by `masked_spec_embed` and masked feature channels by zero, as
    /// upstream `_mask_hidden_states` does in training mode.
    fn mask_hidden_states(&self, h: Tensor, train: bool) -> Tensor {
        if !train || !self.cfg.apply_spec_augment {
            return h;
        }
        let (b, t, d) = h.size3().expect("hidden states are [B, T, D]");
        let mut h = h;
        if self.cfg.mask_time_prob > 0.0
            && let Some(embed) = &self.masked_spec_embed
        {
            let mask = compute_mask_indices(
                b as usize,
                t as usize,
                self.cfg.mask_time_prob,
                self.cfg.mask_time_length.max(0) as usize,
                self.cfg.mask_time_min_masks.max(0) as usize,
            );
            if mask.iter().any(|m| *m) {
                let mask = Tensor::from_slice(&mask)
                    .view([b, t, 1])
                    .to_device(h.device());
                h = h.where_self(
                    &mask.logical_not(),
                    &embed.to_kind(h.kind()).view([1, 1, d]),
                );
            }
        }
        if self.cfg.mask_feature_prob > 0.0 {
            let mask = compute_mask_indices(
                b as usize,
                d as usize,
                self.cfg.mask_feature_prob,
                self.cfg.mask_feature_length.max(0) as usize,
                self.cfg.mask_feature_min_masks.max(0) as usize,
            );
            if mask.iter().any(|m| *m) {
                let mask = Tensor::from_slice(&mask)
                    .view([b, 1, d])
                    .to_device(h.device());
                h = h.masked_fill(&mask, 0.0);
            }
        }
        h
    }

    fn front(&self, input_values: &Tensor, train: bool) -> (Tensor, Tensor) {
        let feats = self.feature_extractor.forward(input_values).transpose(1, 2);
        let (hidden, extract_features) = self.feature_projection.forward_t(&feats, train);
        (self.mask_hidden_states(hidden, train), extract_features)
    }

    /// `last_hidden_state` `[B, T, D]` of normalised `[B, S]` input values.
    pub fn forward_t(&self, input_values: &Tensor, train: bool) -> Tensor {
        self.forward_output(input_values, SslOutput::LastHiddenState, train)
    }

    /// The chosen output tensor; for `hidden_states[k]` the layers after `k` are not run.
    pub fn forward_output(&self, input_values: &Tensor, output: SslOutput, train: bool) -> Tensor {
        let (hidden, _) = self.front(input_values, train);
        let stop = match output {
            SslOutput::LastHiddenState => None,
            SslOutput::HiddenState(k) => Some(k),
        };
        let run = self.encoder.forward_t(&hidden, train, stop, false);
        run.chosen
            .or(run.last)
            .expect("encoder returns the requested state")
    }

    /// Every output: `extract_features`, all `hidden_states` and `last_hidden_state`.
    pub fn forward_all(&self, input_values: &Tensor, train: bool) -> Wav2Vec2Output {
        let (hidden, extract_features) = self.front(input_values, train);
        let run = self.encoder.forward_t(&hidden, train, None, true);
        Wav2Vec2Output {
            extract_features,
            hidden_states: run.hidden_states,
            last_hidden_state: run.last.expect("full encoder run"),
        }
    }
}

/// A Hugging Face wav2vec2 folder loaded strictly into its own `VarStore`.
#[derive(Debug)]
pub struct PretrainedSsl {
    /// The variables (Hugging Face key names, no prefix).
    pub vs: tch::nn::VarStore,
    /// The network.
    pub model: Wav2Vec2Model,
    /// The parsed configuration.
    pub config: Config,
    /// `config.json` verbatim.
    pub raw_config: serde_json::Value,
    /// The folder's files.
    pub files: HfFiles,
    /// Keys of the file that are not part of `Wav2Vec2Model` (pre-training or CTC heads).
    pub set_aside: Vec<String>,
}

impl PretrainedSsl {
    /// Loads `dir` (`config.json` + `model.safetensors`) onto `device`, strictly.
    pub fn load(dir: &std::path::Path, device: tch::Device) -> Result<PretrainedSsl, ModelError> {
        let files = HfFiles::locate(dir)?;
        let (config, raw_config) = Config::from_file(&files.config)?;
        let vs = tch::nn::VarStore::new(device);
        let model = Wav2Vec2Model::new(vs.root(), &config);
        let set_aside = load_hf_weights(&vs, "", &files)?;
        Ok(PretrainedSsl {
            vs,
            model,
            config,
            raw_config,
            files,
            set_aside,
        })
    }
}

/// Writes a Hugging Face wav2vec2 folder (`config.json` + `model.safetensors`) with randomly
/// initialised weights (seeded): for demos, tests and benchmarks that need an SSL model but no
/// pretrained one.
pub fn write_random_hf_folder(
    dir: &std::path::Path,
    cfg: &Config,
    seed: i64,
) -> Result<(), ModelError> {
    cfg.validate(&dir.join("config.json"))?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("create", dir, e))?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    {
        let _rng = crate::model::rng::seeded(seed);
        let _model = Wav2Vec2Model::new(vs.root(), cfg);
    }
    let tensors = crate::model::checkpoint::load::sorted_cpu_variables(&vs);
    crate::model::checkpoint::load::write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let mut json = serde_json::to_value(cfg).expect("config serialises");
    json["architectures"] = serde_json::json!(["Wav2Vec2Model"]);
    let mut text = serde_json::to_string_pretty(&json).expect("JSON value serialises");
    text.push('\n');
    let path = dir.join("config.json");
    std::fs::write(&path, text).map_err(|e| ModelError::io("write", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tiny(layerdrop: f64, mask_time_prob: f64) -> Config {
        Config {
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 32,
            conv_dim: vec![8, 8],
            conv_kernel: vec![10, 3],
            conv_stride: vec![5, 2],
            num_conv_pos_embeddings: 16,
            num_conv_pos_embedding_groups: 4,
            hidden_dropout: 0.0,
            attention_dropout: 0.0,
            activation_dropout: 0.0,
            feat_proj_dropout: 0.0,
            layerdrop,
            mask_time_prob,
            ..Config::default()
        }
    }

    fn wave() -> Tensor {
        normalize_waveforms(&Tensor::randn([2, 4000], (Kind::Float, Device::Cpu)))
    }

    #[test]
    fn random_folders_load_back_and_are_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny(0.1, 0.05);
        write_random_hf_folder(&dir.path().join("a"), &cfg, 5).unwrap();
        write_random_hf_folder(&dir.path().join("b"), &cfg, 5).unwrap();
        let a = std::fs::read(dir.path().join("a/model.safetensors")).unwrap();
        assert_eq!(
            a,
            std::fs::read(dir.path().join("b/model.safetensors")).unwrap()
        );
        let ssl = PretrainedSsl::load(&dir.path().join("a"), Device::Cpu).unwrap();
        assert_eq!(ssl.config, cfg);
        assert!(ssl.set_aside.is_empty());
        assert_eq!(ssl.raw_config["architectures"][0], "Wav2Vec2Model");
    }

    #[test]
    fn training_mode_without_randomness_equals_eval() {
        let _rng = crate::model::rng::seeded(1);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let m = Wav2Vec2Model::new(vs.root(), &tiny(0.0, 0.0));
        let x = wave();
        let (a, b) = tch::no_grad(|| (m.forward_t(&x, true), m.forward_t(&x, false)));
        assert!(a.equal(&b));
    }

    #[test]
    fn layerdrop_one_skips_every_layer() {
        let _rng = crate::model::rng::seeded(2);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let m = Wav2Vec2Model::new(vs.root(), &tiny(1.0, 0.0));
        let x = wave();
        let (trained, all) = tch::no_grad(|| (m.forward_t(&x, true), m.forward_all(&x, false)));
        // Post-LN layout: with every layer dropped the output is the encoder input.
        assert!(trained.allclose(&all.hidden_states[0], 1e-6, 1e-6, false));
        assert!(!trained.allclose(&all.last_hidden_state, 1e-3, 1e-3, false));
    }

    #[test]
    fn time_masking_writes_masked_spec_embed() {
        let _rng = crate::model::rng::seeded(3);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let m = Wav2Vec2Model::new(vs.root(), &tiny(0.0, 0.3));
        let h = Tensor::zeros([2, 60, 16], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| m.mask_hidden_states(h.shallow_clone(), true));
        let embed = m.masked_spec_embed.as_ref().unwrap();
        for b in 0..2 {
            let rows = out.get(b);
            let masked = (0..60)
                .filter(|&t| rows.get(t).allclose(embed, 0.0, 0.0, false))
                .count();
            // mask_time_prob 0.3 of 60 frames in spans of 10: one or two spans (overlaps allowed).
            assert!(
                (10..=20).contains(&masked),
                "row {b}: {masked} masked frames"
            );
            let zero = (0..60)
                .filter(|&t| rows.get(t).abs().sum(Kind::Float).double_value(&[]) == 0.0)
                .count();
            assert_eq!(masked + zero, 60);
        }
        let eval = tch::no_grad(|| m.mask_hidden_states(h.shallow_clone(), false));
        assert!(eval.equal(&h), "no masking in eval mode");
    }
}
