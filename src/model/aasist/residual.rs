//! `Residual_block` of the SSL-variant AASIST encoder (no max-pool), with the dead `bn1`.

use tch::Tensor;
use tch::nn::Path;

use super::Mode;
use crate::model::layers::{BatchNorm, Conv};

/// `Residual_block(nb_filts=[cin, cout], first)`, stored under `encoder.{i}.0`.
/// <https://github.com/TakHemlata/SSL_Anti-spoofing/blob/main/model.py> (`Residual_block`)
///
/// Reference quirk kept: `bn1` (+ SELU) is computed on `x` but its result is discarded
/// (`conv1` reads `x`). Its parameters exist for checkpoint compatibility and never get a
/// gradient; in training mode its running statistics still move, exactly as the reference's.
#[derive(Debug)]
pub(super) struct ResidualBlock {
    bn1: Option<BatchNorm>,
    conv1: Conv,
    bn2: BatchNorm,
    conv2: Conv,
    conv_downsample: Option<Conv>,
}

impl ResidualBlock {
    pub(super) fn new(p: Path, cin: i64, cout: i64, first: bool) -> ResidualBlock {
        ResidualBlock {
            bn1: (!first).then(|| BatchNorm::new(&p / "bn1", cin)),
            conv1: Conv::new(&p / "conv1", cin, cout, &[2, 3], &[1, 1], &[1, 1], true),
            bn2: BatchNorm::new(&p / "bn2", cout),
            conv2: Conv::new(&p / "conv2", cout, cout, &[2, 3], &[1, 1], &[0, 1], true),
            conv_downsample: (cin != cout).then(|| {
                Conv::new(
                    &p / "conv_downsample",
                    cin,
                    cout,
                    &[1, 3],
                    &[1, 1],
                    &[0, 1],
                    true,
                )
            }),
        }
    }

    /// `[B, cin, H, W]` → `[B, cout, H, W]`.
    pub(super) fn forward_t(&self, x: &Tensor, mode: Mode) -> Tensor {
        if mode.batch_stats
            && let Some(bn1) = &self.bn1
        {
            // Dead branch: only its running-statistics update is observable.
            let _ = tch::no_grad(|| bn1.forward_t(x, true));
        }
        let out = self.conv1.forward(x);
        let out = self.bn2.forward_t(&out, mode.batch_stats).selu();
        let out = self.conv2.forward(&out);
        match &self.conv_downsample {
            Some(down) => out + down.forward(x),
            None => out + x,
        }
    }
}
