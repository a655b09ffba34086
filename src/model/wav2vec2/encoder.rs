//! wav2vec2's transformer encoder: positional conv embedding (weight norm), self-attention,
//! feed-forward, and the two layer orders (post-LN "group" layout, pre-LN "stable" layout).

use tch::nn::{Init, Path};
use tch::{Device, Kind, Tensor};

use super::feature_extractor::activate;
use super::{Activation, Config};
use crate::model::layers::{LayerNorm, Linear};

/// `Wav2Vec2PositionalConvEmbedding`: grouped conv with weight norm over dim 2, "same" padding
/// (one frame removed for even kernels), activation.
/// Keys: `conv.parametrizations.weight.original0` (g, `[1, 1, K]`), `...original1`
/// (v, `[D, D/G, K]`), `conv.bias`.
#[derive(Debug)]
struct PositionalConvEmbedding {
    weight_g: Tensor,
    weight_v: Tensor,
    bias: Tensor,
    kernel: i64,
    groups: i64,
    act: Activation,
}

impl PositionalConvEmbedding {
    fn new(p: Path, cfg: &Config) -> PositionalConvEmbedding {
        let d = cfg.hidden_size;
        let k = cfg.num_conv_pos_embeddings;
        let g = cfg.num_conv_pos_embedding_groups;
        let conv = &p / "conv";
        let w = &conv / "parametrizations" / "weight";
        let std = 2.0 * (1.0 / (k * d) as f64).sqrt();
        let weight_v = w.var(
            "original1",
            &[d, d / g, k],
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        );
        let norm = tch::no_grad(|| Tensor::norm_except_dim(&weight_v, 2, 2));
        let weight_g = w.var_copy("original0", &norm);
        let bias = conv.var("bias", &[d], Init::Const(0.0));
        PositionalConvEmbedding {
            weight_g,
            weight_v,
            bias,
            kernel: k,
            groups: g,
            act: cfg.feat_activation(),
        }
    }

    /// `[B, T, D]` → `[B, T, D]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let weight = Tensor::internal_weight_norm(&self.weight_v, &self.weight_g, 2);
        let y = x.transpose(1, 2).conv1d(
            &weight,
            Some(&self.bias),
            [1],
            [self.kernel / 2],
            [1],
            self.groups,
        );
        let y = if self.kernel % 2 == 0 {
            y.narrow(2, 0, y.size()[2] - 1)
        } else {
            y
        };
        activate(&y, self.act).transpose(1, 2)
    }
}

/// `Wav2Vec2Attention` (bidirectional multi-head self-attention, scaled dot product).
#[derive(Debug)]
struct Attention {
    k_proj: Linear,
    v_proj: Linear,
    q_proj: Linear,
    out_proj: Linear,
    heads: i64,
    dropout: f64,
}

impl Attention {
    fn new(p: Path, cfg: &Config) -> Attention {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        Attention {
            k_proj: Linear::new_normal(&p / "k_proj", d, d, std),
            v_proj: Linear::new_normal(&p / "v_proj", d, d, std),
            q_proj: Linear::new_normal(&p / "q_proj", d, d, std),
            out_proj: Linear::new_normal(&p / "out_proj", d, d, std),
            heads: cfg.num_attention_heads,
            dropout: cfg.attention_dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, d) = x.size3().expect("attention input is [B, T, D]");
        let hd = d / self.heads;
        let split = |y: Tensor| y.view([b, t, self.heads, hd]).transpose(1, 2);
        let q = split(self.q_proj.forward(x));
        let k = split(self.k_proj.forward(x));
        let v = split(self.v_proj.forward(x));
        let p = if train { self.dropout } else { 0.0 };
        let o =
            Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, false, None, false);
        self.out_proj.forward(&o.transpose(1, 2).reshape([b, t, d]))
    }
}

/// `Wav2Vec2FeedForward`.
#[derive(Debug)]
struct FeedForward {
    intermediate_dense: Linear,
    output_dense: Linear,
    act: Activation,
    activation_dropout: f64,
    hidden_dropout: f64,
}

impl FeedForward {
    fn new(p: Path, cfg: &Config) -> FeedForward {
        let std = cfg.initializer_range;
        FeedForward {
            intermediate_dense: Linear::new_normal(
                &p / "intermediate_dense",
                cfg.hidden_size,
                cfg.intermediate_size,
                std,
            ),
            output_dense: Linear::new_normal(
                &p / "output_dense",
                cfg.intermediate_size,
                cfg.hidden_size,
                std,
            ),
            act: cfg.hidden_activation(),
            activation_dropout: cfg.activation_dropout,
            hidden_dropout: cfg.hidden_dropout,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let h = activate(&self.intermediate_dense.forward(x), self.act)
            .dropout(self.activation_dropout, train);
        self.output_dense
            .forward(&h)
            .dropout(self.hidden_dropout, train)
    }
}

/// `Wav2Vec2EncoderLayer` (post-LN) or `Wav2Vec2EncoderLayerStableLayerNorm` (pre-LN).
#[derive(Debug)]
struct EncoderLayer {
    attention: Attention,
    layer_norm: LayerNorm,
    feed_forward: FeedForward,
    final_layer_norm: LayerNorm,
    dropout: f64,
    stable: bool,
}

impl EncoderLayer {
    fn new(p: Path, cfg: &Config) -> EncoderLayer {
        EncoderLayer {
            attention: Attention::new(&p / "attention", cfg),
            layer_norm: LayerNorm::new(&p / "layer_norm", cfg.hidden_size, cfg.layer_norm_eps),
            feed_forward: FeedForward::new(&p / "feed_forward", cfg),
            final_layer_norm: LayerNorm::new(
                &p / "final_layer_norm",
                cfg.hidden_size,
                cfg.layer_norm_eps,
            ),
            dropout: cfg.hidden_dropout,
            stable: cfg.do_stable_layer_norm,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if self.stable {
            let h = self
                .attention
                .forward_t(&self.layer_norm.forward(x), train)
                .dropout(self.dropout, train);
            let h = x + h;
            let ff = self
                .feed_forward
                .forward_t(&self.final_layer_norm.forward(&h), train);
            h + ff
        } else {
            let h = self
                .attention
                .forward_t(x, train)
                .dropout(self.dropout, train);
            let h = self.layer_norm.forward(&(x + h));
            let ff = self.feed_forward.forward_t(&h, train);
            self.final_layer_norm.forward(&(h + ff))
        }
    }
}

/// What the encoder should return.
pub(super) struct EncoderRun {
    /// `hidden_states[0..=n]` as upstream numbers them (collected only when asked).
    pub hidden_states: Vec<Tensor>,
    /// The final output (`last_hidden_state`), when the encoder ran to the end.
    pub last: Option<Tensor>,
    /// `hidden_states[stop]`, when the run stopped early at a chosen layer.
    pub chosen: Option<Tensor>,
}

/// `Wav2Vec2Encoder` / `Wav2Vec2EncoderStableLayerNorm` (`encoder.*`).
#[derive(Debug)]
pub(super) struct Encoder {
    pos_conv_embed: PositionalConvEmbedding,
    layer_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    dropout: f64,
    layerdrop: f64,
    stable: bool,
}

impl Encoder {
    pub(super) fn new(p: Path, cfg: &Config) -> Encoder {
        let layers_p = &p / "layers";
        Encoder {
            pos_conv_embed: PositionalConvEmbedding::new(&p / "pos_conv_embed", cfg),
            layer_norm: LayerNorm::new(&p / "layer_norm", cfg.hidden_size, cfg.layer_norm_eps),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| EncoderLayer::new(&layers_p / i, cfg))
                .collect(),
            dropout: cfg.hidden_dropout,
            layerdrop: cfg.layerdrop,
            stable: cfg.do_stable_layer_norm,
        }
    }

    pub(super) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs the encoder on projected features `[B, T, D]`. With `stop = Some(k)` it returns
    /// `hidden_states[k]` without running the layers after it; `collect` keeps every state.
    pub(super) fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
        stop: Option<usize>,
        collect: bool,
    ) -> EncoderRun {
        let pos = self.pos_conv_embed.forward(x);
        let mut h = x + pos;
        if !self.stable {
            h = self.layer_norm.forward(&h);
        }
        h = h.dropout(self.dropout, train);
        let mut hidden_states = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if collect {
                hidden_states.push(h.shallow_clone());
            }
            if stop == Some(i) {
                return EncoderRun {
                    hidden_states,
                    last: None,
                    chosen: Some(h),
                };
            }
            // LayerDrop: a uniform draw per layer on the CPU generator, as upstream.
            let skip = train
                && self.layerdrop > 0.0
                && Tensor::rand([], (Kind::Float, Device::Cpu)).double_value(&[]) < self.layerdrop;
            if !skip {
                h = layer.forward_t(&h, train);
            }
        }
        if collect {
            hidden_states.push(h.shallow_clone());
        }
        if stop == Some(self.layers.len()) {
            return EncoderRun {
                hidden_states,
                last: None,
                chosen: Some(h),
            };
        }
        let last = if self.stable {
            self.layer_norm.forward(&h)
        } else {
            h
        };
        EncoderRun {
            hidden_states,
            last: Some(last),
            chosen: None,
        }
    }
}
