//! The AASIST back end of the reference W2V+AASIST ("SSL variant", one output logit): its
//! configuration (always compiled) and, with the `torch` feature, the network in tch with the
//! reference's state-dict keys (`LL.weight`, `encoder.{i}.0.conv1.weight`,
//! `GAT_layer_S.att_weight`, `HtrgGAT_layer_ST11.att_weight12`, `pool_hS1.proj.weight`, ...).
//!
//! Upstream: `SSL_Anti-spoofing/model.py` (`Model`, `Residual_block`, `GraphAttentionLayer`,
//! `HtrgGraphAttentionLayer`, `GraphPool`) and `are_audio_df_polyglots/src/models/w2v_assist.py`
//! (`W2V_AASIST`, 1 logit). Every quirk of spec §1.4 is kept; see docs/model.md.

use serde::{Deserialize, Serialize};

#[cfg(feature = "torch")]
mod gat;
#[cfg(feature = "torch")]
mod model;
#[cfg(feature = "torch")]
mod pool;
#[cfg(feature = "torch")]
mod residual;

#[cfg(feature = "torch")]
pub use model::{Aasist, Trace};

/// Back-end hyper-parameters that are fixed by the reference (spec §1.5).
pub mod consts {
    /// `LL` output width (the "spectral" axis before max-pooling).
    pub const LL_DIM: i64 = 128;
    /// Residual block filters `[in, out]` of blocks 0..5 (`filts[1]`, `[2]`, `[3]`, `[4]` x3).
    pub const BLOCKS: [[i64; 2]; 6] = [[1, 32], [32, 32], [32, 64], [64, 64], [64, 64], [64, 64]];
    /// `gat_dims`.
    pub const GAT_DIMS: [i64; 2] = [64, 32];
    /// Temperatures of GAT-S, GAT-T and every HS-GAL (`temperatures[2]`).
    pub const TEMPERATURES: [f64; 3] = [2.0, 2.0, 100.0];
    /// Pool ratio of every GraphPool.
    pub const POOL_RATIO: f64 = 0.5;
    /// Spectral node count of `pos_S` (floor(128 / 3)).
    pub const SPECTRAL_NODES: i64 = 42;
    /// Input dropout of GAT and HS-GAL layers.
    pub const GAT_INPUT_DROPOUT: f64 = 0.2;
    /// Dropout on GraphPool scores.
    pub const POOL_DROPOUT: f64 = 0.3;
    /// Dropout on the six branch outputs (`drop_way`).
    pub const BRANCH_DROPOUT: f64 = 0.2;
    /// Dropout on the readout (`drop`).
    pub const READOUT_DROPOUT: f64 = 0.5;
}

/// How a forward pass treats BatchNorm and dropout (the reference's `train()`/`eval()`, plus
/// the "train mode without dropout" of the parity fixtures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// BatchNorm uses batch statistics and updates its running statistics.
    pub batch_stats: bool,
    /// Dropout layers are active.
    pub dropout: bool,
}

impl Mode {
    /// `model.eval()`.
    pub const EVAL: Mode = Mode {
        batch_stats: false,
        dropout: false,
    };
    /// `model.train()`.
    pub const TRAIN: Mode = Mode {
        batch_stats: true,
        dropout: true,
    };

    /// `TRAIN` or `EVAL`.
    pub fn from_train(train: bool) -> Mode {
        if train { Mode::TRAIN } else { Mode::EVAL }
    }
}

/// Configuration of the back end: only the SSL feature width varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Width D of the SSL features (`LL` is `Linear(D, 128)`).
    pub ssl_dim: i64,
}

impl Config {
    /// Number of parameters (dead `bn1` included, buffers excluded): 414,313 for D=768 and
    /// 447,081 for D=1024 (spec §1.7).
    pub fn parameter_count(&self) -> i64 {
        // Everything but LL is independent of D: 447,081 - 131,200 = 315,881.
        315_881 + consts::LL_DIM * self.ssl_dim + consts::LL_DIM
    }
}
