//! The AASIST back end (`W2V_AASIST` minus `ssl_model`): SSL features `[B, T, D]` → one logit.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::consts::{
    BLOCKS, BRANCH_DROPOUT, GAT_DIMS, LL_DIM, POOL_RATIO, READOUT_DROPOUT, SPECTRAL_NODES,
    TEMPERATURES,
};
use super::gat::{GraphAttentionLayer, HtrgGraphAttentionLayer};
use super::pool::GraphPool;
use super::residual::ResidualBlock;
use super::{Config, Mode};
use crate::model::layers::{BatchNorm, Conv, Linear};

/// Named intermediates of one forward pass, in the order of the parity fixtures
/// (`ssl_feat`, `LL`, `LL_T_unsq`, `maxpool3x3`, ..., `last_hidden`, `logits`).
pub type Trace = Vec<(String, Tensor)>;

fn record(trace: &mut Option<&mut Trace>, name: &str, t: &Tensor) {
    if let Some(tr) = trace.as_deref_mut() {
        tr.push((name.to_string(), t.shallow_clone()));
    }
}

/// `W2V_AASIST`'s back end with the reference key names.
/// <https://github.com/bartlomiejmarek/are_audio_df_polyglots/blob/main/src/models/w2v_assist.py>
#[derive(Debug)]
pub struct Aasist {
    ll: Linear,
    first_bn: BatchNorm,
    first_bn1: BatchNorm,
    encoder: Vec<ResidualBlock>,
    attention_0: Conv,
    attention_2: BatchNorm,
    attention_3: Conv,
    pos_s: Tensor,
    master1: Tensor,
    master2: Tensor,
    gat_layer_s: GraphAttentionLayer,
    gat_layer_t: GraphAttentionLayer,
    htrg_gat_layer_st11: HtrgGraphAttentionLayer,
    htrg_gat_layer_st12: HtrgGraphAttentionLayer,
    htrg_gat_layer_st21: HtrgGraphAttentionLayer,
    htrg_gat_layer_st22: HtrgGraphAttentionLayer,
    pool_s: GraphPool,
    pool_t: GraphPool,
    pool_hs1: GraphPool,
    pool_ht1: GraphPool,
    pool_hs2: GraphPool,
    pool_ht2: GraphPool,
    out_layer: Linear,
    cfg: Config,
}

impl Aasist {
    /// Registers every parameter and buffer under `p` (the state-dict root), with the
    /// reference's initialisation, drawn while holding the process's generator
    /// ([`crate::model::rng`]; seed it first for reproducible values).
    pub fn new(p: Path, cfg: &Config) -> Aasist {
        let _rng = crate::model::rng::hold();
        let enc = &p / "encoder";
        let encoder = BLOCKS
            .iter()
            .enumerate()
            .map(|(i, [cin, cout])| ResidualBlock::new(&enc / i / 0, *cin, *cout, i == 0))
            .collect();
        let att = &p / "attention";
        let [g0, g1] = GAT_DIMS;
        let filt = BLOCKS[5][1];
        Aasist {
            ll: Linear::new(&p / "LL", cfg.ssl_dim, LL_DIM, true),
            first_bn: BatchNorm::new(&p / "first_bn", 1),
            first_bn1: BatchNorm::new(&p / "first_bn1", filt),
            encoder,
            attention_0: Conv::new(&att / 0, filt, 128, &[1, 1], &[1, 1], &[0, 0], true),
            attention_2: BatchNorm::new(&att / 2, 128),
            attention_3: Conv::new(&att / 3, 128, filt, &[1, 1], &[1, 1], &[0, 0], true),
            pos_s: p.var(
                "pos_S",
                &[1, SPECTRAL_NODES, filt],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            master1: p.var(
                "master1",
                &[1, 1, g0],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            master2: p.var(
                "master2",
                &[1, 1, g0],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            gat_layer_s: GraphAttentionLayer::new(&p / "GAT_layer_S", filt, g0, TEMPERATURES[0]),
            gat_layer_t: GraphAttentionLayer::new(&p / "GAT_layer_T", filt, g0, TEMPERATURES[1]),
            htrg_gat_layer_st11: HtrgGraphAttentionLayer::new(
                &p / "HtrgGAT_layer_ST11",
                g0,
                g1,
                TEMPERATURES[2],
            ),
            htrg_gat_layer_st12: HtrgGraphAttentionLayer::new(
                &p / "HtrgGAT_layer_ST12",
                g1,
                g1,
                TEMPERATURES[2],
            ),
            htrg_gat_layer_st21: HtrgGraphAttentionLayer::new(
                &p / "HtrgGAT_layer_ST21",
                g0,
                g1,
                TEMPERATURES[2],
            ),
            htrg_gat_layer_st22: HtrgGraphAttentionLayer::new(
                &p / "HtrgGAT_layer_ST22",
                g1,
                g1,
                TEMPERATURES[2],
            ),
            pool_s: GraphPool::new(&p / "pool_S", g0, POOL_RATIO),
            pool_t: GraphPool::new(&p / "pool_T", g0, POOL_RATIO),
            pool_hs1: GraphPool::new(&p / "pool_hS1", g1, POOL_RATIO),
            pool_ht1: GraphPool::new(&p / "pool_hT1", g1, POOL_RATIO),
            pool_hs2: GraphPool::new(&p / "pool_hS2", g1, POOL_RATIO),
            pool_ht2: GraphPool::new(&p / "pool_hT2", g1, POOL_RATIO),
            out_layer: Linear::new(&p / "out_layer", 5 * g1, 1, true),
            cfg: *cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// SSL features `[B, T, D]` → logits `[B, 1]` (`train`: dropout on, batch statistics).
    pub fn forward_t(&self, ssl_feat: &Tensor, train: bool) -> Tensor {
        self.forward_traced(ssl_feat, Mode::from_train(train), None)
    }

    /// The forward pass in `mode`, recording the named intermediates of the parity fixtures
    /// into `trace` when given.
    pub fn forward_traced(
        &self,
        ssl_feat: &Tensor,
        mode: Mode,
        mut trace: Option<&mut Trace>,
    ) -> Tensor {
        let tr = &mut trace;
        record(tr, "ssl_feat", ssl_feat);
        let x = self.ll.forward(ssl_feat);
        record(tr, "LL", &x);
        let x = x.transpose(1, 2).unsqueeze(1);
        record(tr, "LL_T_unsq", &x);
        let x = x.max_pool2d([3, 3], [3, 3], [0, 0], [1, 1], false);
        record(tr, "maxpool3x3", &x);
        let mut x = self.first_bn.forward_t(&x, mode.batch_stats).selu();
        record(tr, "first_bn_selu", &x);
        for (i, block) in self.encoder.iter().enumerate() {
            x = block.forward_t(&x, mode);
            record(tr, &format!("encoder_{i}"), &x);
        }
        let x = self.first_bn1.forward_t(&x, mode.batch_stats).selu();
        record(tr, "first_bn1_selu", &x);
        let w = self.attention_0.forward(&x).selu();
        let w = self
            .attention_3
            .forward(&self.attention_2.forward_t(&w, mode.batch_stats));
        record(tr, "attn_w", &w);

        // Spectral self-attentive pooling (softmax over time) + positional embedding.
        let m_s = (&x * w.softmax(-1, Kind::Float)).sum_dim_intlist(-1, false, Kind::Float);
        record(tr, "sap_S", &m_s);
        let e_s = m_s.transpose(1, 2) + &self.pos_s;
        record(tr, "e_S", &e_s);
        let gat_s = self.gat_layer_s.forward_t(&e_s, mode);
        record(tr, "gat_S", &gat_s);
        let out_s = self.pool_s.forward_t(&gat_s, mode);
        record(tr, "pool_S", &out_s);

        // Temporal self-attentive pooling (softmax over frequency).
        let m_t = (&x * w.softmax(-2, Kind::Float)).sum_dim_intlist(-2, false, Kind::Float);
        record(tr, "sap_T", &m_t);
        let e_t = m_t.transpose(1, 2);
        record(tr, "e_T", &e_t);
        let gat_t = self.gat_layer_t.forward_t(&e_t, mode);
        record(tr, "gat_T", &gat_t);
        let out_t = self.pool_t.forward_t(&gat_t, mode);
        record(tr, "pool_T", &out_t);

        // Branch 1: the raw `master1` parameter (1, 1, 64) is broadcast over the batch.
        let (t1, s1, m1) = self
            .htrg_gat_layer_st11
            .forward_t(&out_t, &out_s, &self.master1, mode);
        record(tr, "ST11_T", &t1);
        record(tr, "ST11_S", &s1);
        record(tr, "ST11_M", &m1);
        let s1 = self.pool_hs1.forward_t(&s1, mode);
        record(tr, "pool_hS1", &s1);
        let t1 = self.pool_ht1.forward_t(&t1, mode);
        record(tr, "pool_hT1", &t1);
        let (dt, ds, dm) = self.htrg_gat_layer_st12.forward_t(&t1, &s1, &m1, mode);
        let (t1, s1, m1) = (t1 + dt, s1 + ds, m1 + dm);
        record(tr, "branch1_T", &t1);
        record(tr, "branch1_S", &s1);
        record(tr, "branch1_M", &m1);

        // Branch 2.
        let (t2, s2, m2) = self
            .htrg_gat_layer_st21
            .forward_t(&out_t, &out_s, &self.master2, mode);
        let s2 = self.pool_hs2.forward_t(&s2, mode);
        record(tr, "pool_hS2", &s2);
        let t2 = self.pool_ht2.forward_t(&t2, mode);
        record(tr, "pool_hT2", &t2);
        let (dt, ds, dm) = self.htrg_gat_layer_st22.forward_t(&t2, &s2, &m2, mode);
        let (t2, s2, m2) = (t2 + dt, s2 + ds, m2 + dm);
        record(tr, "branch2_T", &t2);
        record(tr, "branch2_S", &s2);
        record(tr, "branch2_M", &m2);

        let drop = |t: &Tensor| t.dropout(BRANCH_DROPOUT, mode.dropout);
        let out_t = drop(&t1).maximum(&drop(&t2));
        let out_s = drop(&s1).maximum(&drop(&s2));
        let master = drop(&m1).maximum(&drop(&m2));
        record(tr, "max_T", &out_t);
        record(tr, "max_S", &out_s);
        record(tr, "max_M", &master);

        // Readout: abs inside the max, plain mean, master.
        let (t_max, _) = out_t.abs().max_dim(1, false);
        let t_avg = out_t.mean_dim(1, false, Kind::Float);
        let (s_max, _) = out_s.abs().max_dim(1, false);
        let s_avg = out_s.mean_dim(1, false, Kind::Float);
        let last_hidden = Tensor::cat(&[t_max, t_avg, s_max, s_avg, master.squeeze_dim(1)], 1);
        record(tr, "last_hidden", &last_hidden);
        let logits = self
            .out_layer
            .forward(&last_hidden.dropout(READOUT_DROPOUT, mode.dropout));
        record(tr, "logits", &logits);
        logits
    }
}
