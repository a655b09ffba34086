//! `GraphPool`: sigmoid node scores, keep the top-k nodes (sorted by descending score).

use tch::Tensor;
use tch::nn::Path;

use super::Mode;
use super::consts::POOL_DROPOUT;
use crate::model::layers::Linear;

/// `GraphPool(k, in_dim, p=0.3)`.
/// <https://github.com/TakHemlata/SSL_Anti-spoofing/blob/main/model.py> (`GraphPool`)
#[derive(Debug)]
pub(super) struct GraphPool {
    proj: Linear,
    ratio: f64,
}

impl GraphPool {
    pub(super) fn new(p: Path, in_dim: i64, ratio: f64) -> GraphPool {
        GraphPool {
            proj: Linear::new(&p / "proj", in_dim, 1, true),
            ratio,
        }
    }

    /// `[B, N, F]` → `[B, max(floor(N * ratio), 1), F]`: the kept nodes scaled by their score,
    /// in descending score order. Dropout touches only the scores' input.
    pub(super) fn forward_t(&self, h: &Tensor, mode: Mode) -> Tensor {
        let size = h.size();
        let (n, f) = (size[1], size[2]);
        let scores = self
            .proj
            .forward(&h.dropout(POOL_DROPOUT, mode.dropout))
            .sigmoid();
        let k = ((n as f64 * self.ratio) as i64).max(1);
        let (_, idx) = scores.topk(k, 1, true, true);
        let idx = idx.expand([-1, -1, f], false);
        (h * scores).gather(1, &idx, false)
    }
}
