//! Graph attention layers of AASIST: the homogeneous `GraphAttentionLayer` (GAT-S, GAT-T) and
//! the heterogeneous stacking `HtrgGraphAttentionLayer` (HS-GAL, with a master node).

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::Mode;
use super::consts::GAT_INPUT_DROPOUT;
use crate::model::layers::{BatchNorm, Linear};

/// xavier-normal on an `[out, 1]` tensor: std = sqrt(2 / (out + 1)).
fn attention_vector(p: &Path, name: &str, out: i64) -> Tensor {
    let std = (2.0 / (out + 1) as f64).sqrt();
    p.var(
        name,
        &[out, 1],
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )
}

/// `P[b, i, j, :] = x[b, i, :] * x[b, j, :]` (`_pairwise_mul_nodes`).
fn pairwise_mul_nodes(x: &Tensor) -> Tensor {
    let n = x.size()[1];
    let xe = x.unsqueeze(2).expand([-1, -1, n, -1], false);
    let mirror = xe.transpose(1, 2);
    xe * mirror
}

/// BatchNorm1d over `[B * N, out]` (`_apply_BN`).
fn apply_bn(bn: &BatchNorm, x: &Tensor, train: bool) -> Tensor {
    let size = x.size();
    let out = *size.last().expect("node features");
    bn.forward_t(&x.reshape([-1, out]), train)
        .view(size.as_slice())
}

/// `GraphAttentionLayer(in, out, temperature)`.
/// <https://github.com/TakHemlata/SSL_Anti-spoofing/blob/main/model.py> (`GraphAttentionLayer`)
#[derive(Debug)]
pub(super) struct GraphAttentionLayer {
    att_proj: Linear,
    att_weight: Tensor,
    proj_with_att: Linear,
    proj_without_att: Linear,
    bn: BatchNorm,
    temp: f64,
}

impl GraphAttentionLayer {
    pub(super) fn new(p: Path, in_dim: i64, out_dim: i64, temp: f64) -> GraphAttentionLayer {
        GraphAttentionLayer {
            att_proj: Linear::new(&p / "att_proj", in_dim, out_dim, true),
            att_weight: attention_vector(&p, "att_weight", out_dim),
            proj_with_att: Linear::new(&p / "proj_with_att", in_dim, out_dim, true),
            proj_without_att: Linear::new(&p / "proj_without_att", in_dim, out_dim, true),
            bn: BatchNorm::new(&p / "bn", out_dim),
            temp,
        }
    }

    /// `[B, N, in]` → `[B, N, out]`.
    pub(super) fn forward_t(&self, x: &Tensor, mode: Mode) -> Tensor {
        let x = x.dropout(GAT_INPUT_DROPOUT, mode.dropout);
        // Attention map: softmax over dim -2 (the first node index), as the reference.
        let att = self
            .att_proj
            .forward(&pairwise_mul_nodes(&x))
            .tanh()
            .matmul(&self.att_weight);
        let att = (att / self.temp).softmax(-2, Kind::Float);
        let with = self.proj_with_att.forward(&att.squeeze_dim(-1).matmul(&x));
        let without = self.proj_without_att.forward(&x);
        apply_bn(&self.bn, &(with + without), mode.batch_stats).selu()
    }
}

/// `HtrgGraphAttentionLayer(in, out, temperature)`.
/// <https://github.com/TakHemlata/SSL_Anti-spoofing/blob/main/model.py> (`HtrgGraphAttentionLayer`)
#[derive(Debug)]
pub(super) struct HtrgGraphAttentionLayer {
    proj_type1: Linear,
    proj_type2: Linear,
    att_proj: Linear,
    att_proj_m: Linear,
    att_weight11: Tensor,
    att_weight22: Tensor,
    att_weight12: Tensor,
    att_weight_m: Tensor,
    proj_with_att: Linear,
    proj_without_att: Linear,
    proj_with_att_m: Linear,
    proj_without_att_m: Linear,
    bn: BatchNorm,
    temp: f64,
}

impl HtrgGraphAttentionLayer {
    pub(super) fn new(p: Path, in_dim: i64, out_dim: i64, temp: f64) -> HtrgGraphAttentionLayer {
        HtrgGraphAttentionLayer {
            proj_type1: Linear::new(&p / "proj_type1", in_dim, in_dim, true),
            proj_type2: Linear::new(&p / "proj_type2", in_dim, in_dim, true),
            att_proj: Linear::new(&p / "att_proj", in_dim, out_dim, true),
            att_proj_m: Linear::new(&p / "att_projM", in_dim, out_dim, true),
            att_weight11: attention_vector(&p, "att_weight11", out_dim),
            att_weight22: attention_vector(&p, "att_weight22", out_dim),
            att_weight12: attention_vector(&p, "att_weight12", out_dim),
            att_weight_m: attention_vector(&p, "att_weightM", out_dim),
            proj_with_att: Linear::new(&p / "proj_with_att", in_dim, out_dim, true),
            proj_without_att: Linear::new(&p / "proj_without_att", in_dim, out_dim, true),
            proj_with_att_m: Linear::new(&p / "proj_with_attM", in_dim, out_dim, true),
            proj_without_att_m: Linear::new(&p / "proj_without_attM", in_dim, out_dim, true),
            bn: BatchNorm::new(&p / "bn", out_dim),
            temp,
        }
    }

    /// Heterogeneous attention map over `x = [T nodes; S nodes]`: `a11` on the T-T block,
    /// `a22` on S-S and `a12` on both cross blocks; softmax over dim -2 of the whole board.
    fn derive_att_map(&self, x: &Tensor, n1: i64, n2: i64) -> Tensor {
        let q = self.att_proj.forward(&pairwise_mul_nodes(x)).tanh();
        let rows_t = q.narrow(1, 0, n1);
        let rows_s = q.narrow(1, n1, n2);
        let top = Tensor::cat(
            &[
                rows_t.narrow(2, 0, n1).matmul(&self.att_weight11),
                rows_t.narrow(2, n1, n2).matmul(&self.att_weight12),
            ],
            2,
        );
        let bottom = Tensor::cat(
            &[
                rows_s.narrow(2, 0, n1).matmul(&self.att_weight12),
                rows_s.narrow(2, n1, n2).matmul(&self.att_weight22),
            ],
            2,
        );
        let board = Tensor::cat(&[top, bottom], 1);
        (board / self.temp).softmax(-2, Kind::Float)
    }

    /// Master-node update from the old master and the (dropped-out) nodes.
    fn update_master(&self, x: &Tensor, master: &Tensor) -> Tensor {
        let att = self
            .att_proj_m
            .forward(&(x * master))
            .tanh()
            .matmul(&self.att_weight_m);
        let att = (att / self.temp).softmax(-2, Kind::Float);
        let with = self
            .proj_with_att_m
            .forward(&att.squeeze_dim(-1).unsqueeze(1).matmul(x));
        let without = self.proj_without_att_m.forward(master);
        with + without
    }

    /// `(x1 [B, N1, in], x2 [B, N2, in], master [B or 1, 1, in])` →
    /// `(x1 [B, N1, out], x2 [B, N2, out], master [B, 1, out])`.
    pub(super) fn forward_t(
        &self,
        x1: &Tensor,
        x2: &Tensor,
        master: &Tensor,
        mode: Mode,
    ) -> (Tensor, Tensor, Tensor) {
        let n1 = x1.size()[1];
        let n2 = x2.size()[1];
        let x = Tensor::cat(
            &[self.proj_type1.forward(x1), self.proj_type2.forward(x2)],
            1,
        );
        let x = x.dropout(GAT_INPUT_DROPOUT, mode.dropout);
        let att = self.derive_att_map(&x, n1, n2);
        let master = self.update_master(&x, master);
        let with = self.proj_with_att.forward(&att.squeeze_dim(-1).matmul(&x));
        let without = self.proj_without_att.forward(&x);
        let y = apply_bn(&self.bn, &(with + without), mode.batch_stats).selu();
        (y.narrow(1, 0, n1), y.narrow(1, n1, n2), master)
    }
}
