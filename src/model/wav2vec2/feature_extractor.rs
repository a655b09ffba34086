//! wav2vec2's convolutional feature encoder and feature projection.

use tch::Tensor;
use tch::nn::{Init, Path};

use super::{Activation, Config};
use crate::model::layers::{Conv, GroupNorm, LayerNorm, Linear};

pub(super) fn activate(x: &Tensor, act: Activation) -> Tensor {
    match act {
        Activation::Gelu => x.gelu("none"),
        Activation::GeluTanh => x.gelu("tanh"),
        Activation::Relu => x.relu(),
        Activation::Silu => x.silu(),
    }
}

/// Normalisation of one conv layer.
#[derive(Debug)]
enum ConvNorm {
    None,
    Group(GroupNorm),
    Layer(LayerNorm),
}

/// One conv layer: `Wav2Vec2NoLayerNormConvLayer`, `Wav2Vec2GroupNormConvLayer` or
/// `Wav2Vec2LayerNormConvLayer`.
/// <https://github.com/huggingface/transformers/blob/main/src/transformers/models/wav2vec2/modeling_wav2vec2.py>
#[derive(Debug)]
struct ConvLayer {
    conv: Conv,
    norm: ConvNorm,
    act: Activation,
}

impl ConvLayer {
    fn new(p: Path, cfg: &Config, i: usize) -> ConvLayer {
        let in_ch = if i == 0 { 1 } else { cfg.conv_dim[i - 1] };
        let out_ch = cfg.conv_dim[i];
        let k = cfg.conv_kernel[i];
        // Upstream init: kaiming-normal weights; the conv bias keeps torch's default.
        let conv_p = &p / "conv";
        let weight = conv_p.var(
            "weight",
            &[out_ch, in_ch, k],
            tch::nn::init::DEFAULT_KAIMING_NORMAL,
        );
        let bias = cfg.conv_bias.then(|| {
            let b = 1.0 / ((in_ch * k) as f64).sqrt();
            conv_p.var("bias", &[out_ch], Init::Uniform { lo: -b, up: b })
        });
        let conv = Conv::from_parts(weight, bias, &[cfg.conv_stride[i]], &[0], 1);
        let norm = match (cfg.feat_extract_norm.as_str(), i) {
            ("layer", _) => ConvNorm::Layer(LayerNorm::new(&p / "layer_norm", out_ch, 1e-5)),
            ("group", 0) => {
                ConvNorm::Group(GroupNorm::new(&p / "layer_norm", out_ch, out_ch, 1e-5))
            }
            _ => ConvNorm::None,
        };
        ConvLayer {
            conv,
            norm,
            act: cfg.feat_activation(),
        }
    }

    /// `[B, C_in, L]` → `[B, C_out, L']`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.conv.forward(x);
        let x = match &self.norm {
            ConvNorm::None => x,
            ConvNorm::Group(g) => g.forward(&x),
            ConvNorm::Layer(l) => l.forward(&x.transpose(-2, -1)).transpose(-2, -1),
        };
        activate(&x, self.act)
    }
}

/// `Wav2Vec2FeatureEncoder` (`feature_extractor.conv_layers.{i}`).
#[derive(Debug)]
pub(super) struct FeatureEncoder {
    conv_layers: Vec<ConvLayer>,
}

impl FeatureEncoder {
    pub(super) fn new(p: Path, cfg: &Config) -> FeatureEncoder {
        let layers = &p / "conv_layers";
        let conv_layers = (0..cfg.conv_dim.len())
            .map(|i| ConvLayer::new(&layers / i, cfg, i))
            .collect();
        FeatureEncoder { conv_layers }
    }

    /// `[B, S]` normalised waveforms → `[B, C, T]`.
    pub(super) fn forward(&self, input_values: &Tensor) -> Tensor {
        let mut x = input_values.unsqueeze(1);
        for layer in &self.conv_layers {
            x = layer.forward(&x);
        }
        x
    }
}

/// `Wav2Vec2FeatureProjection` (`feature_projection.{layer_norm,projection}`).
#[derive(Debug)]
pub(super) struct FeatureProjection {
    layer_norm: LayerNorm,
    projection: Linear,
    dropout: f64,
}

impl FeatureProjection {
    pub(super) fn new(p: Path, cfg: &Config) -> FeatureProjection {
        let c = *cfg.conv_dim.last().unwrap_or(&512);
        FeatureProjection {
            layer_norm: LayerNorm::new(&p / "layer_norm", c, cfg.layer_norm_eps),
            projection: Linear::new_normal(
                &p / "projection",
                c,
                cfg.hidden_size,
                cfg.initializer_range,
            ),
            dropout: cfg.feat_proj_dropout,
        }
    }

    /// `[B, T, C]` → (`[B, T, D]` hidden states, `[B, T, C]` normalised features =
    /// `extract_features`).
    pub(super) fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let norm = self.layer_norm.forward(x);
        let hidden = self.projection.forward(&norm).dropout(self.dropout, train);
        (hidden, norm)
    }
}
