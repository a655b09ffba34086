//! Adam with coupled L2 weight decay, written over tensors so that its state (first and second
//! moments, step counts) can be saved with each epoch and restored on resume.
//!
//! tch's built-in optimisers keep their state inside libtorch's C++ optimiser objects and offer
//! no way to read or write it, so a resumed run could not continue bit-identically. This is
//! torch's single-tensor `Adam(weight_decay=wd)` update (torch/optim/adam.py, `amsgrad=False`):
//! `g += wd * p; m = lerp(m, g, 1 - b1); v = b2 * v + (1 - b2) * g * g; step += 1;
//! p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)`. A parameter that gets no
//! gradient in a step (the dead `bn1`, a LayerDrop-skipped layer) is skipped entirely, as torch
//! skips parameters whose `.grad` is `None`.

use std::collections::BTreeMap;

use tch::Tensor;

/// Adam state for a set of named parameters.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    params: Vec<(String, Tensor)>,
    exp_avg: BTreeMap<String, Tensor>,
    exp_avg_sq: BTreeMap<String, Tensor>,
    steps: BTreeMap<String, i64>,
}

impl Adam {
    /// An optimiser over `params` (name, tensor) with no state yet.
    pub fn new(
        params: Vec<(String, Tensor)>,
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    ) -> Adam {
        Adam {
            lr,
            betas,
            eps,
            weight_decay,
            params,
            exp_avg: BTreeMap::new(),
            exp_avg_sq: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Applies one update with `grads[i]` for `params[i]`; undefined gradients are skipped.
    pub fn step(&mut self, grads: &[Tensor]) {
        let (b1, b2) = self.betas;
        tch::no_grad(|| {
            for ((name, p), g) in self.params.iter().zip(grads) {
                if !g.defined() {
                    continue;
                }
                let g = if self.weight_decay != 0.0 {
                    g + p * self.weight_decay
                } else {
                    g.shallow_clone()
                };
                let m = self
                    .exp_avg
                    .entry(name.clone())
                    .or_insert_with(|| p.zeros_like());
                let v = self
                    .exp_avg_sq
                    .entry(name.clone())
                    .or_insert_with(|| p.zeros_like());
                let step = self.steps.entry(name.clone()).or_insert(0);
                let _ = m.lerp_(&g, 1.0 - b1);
                let _ = v.g_mul_scalar_(b2);
                let _ = v.addcmul_(&(&g * (1.0 - b2)), &g);
                *step += 1;
                let bias1 = 1.0 - b1.powi(*step as i32);
                let bias2 = 1.0 - b2.powi(*step as i32);
                let step_size = self.lr / bias1;
                let denom = v.sqrt() / bias2.sqrt() + self.eps;
                let mut p = p.shallow_clone();
                let _ = p.addcdiv_(&(&*m * -step_size), &denom);
            }
        });
    }

    /// Step counts of the parameters that have state.
    pub fn steps(&self) -> &BTreeMap<String, i64> {
        &self.steps
    }

    /// The state as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`, on the CPU) and step
    /// counts, for saving.
    pub fn state(&self) -> (Vec<(String, Tensor)>, BTreeMap<String, i64>) {
        let mut tensors = Vec::new();
        for (name, m) in &self.exp_avg {
            tensors.push((format!("exp_avg.{name}"), to_cpu_owned(m)));
            tensors.push((
                format!("exp_avg_sq.{name}"),
                to_cpu_owned(&self.exp_avg_sq[name]),
            ));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        (tensors, self.steps.clone())
    }

    /// Restores a saved state; every entry must name a parameter of this optimiser with its
    /// shape.
    pub fn load_state(
        &mut self,
        tensors: Vec<(String, Tensor)>,
        steps: BTreeMap<String, i64>,
    ) -> Result<(), String> {
        let by_name: BTreeMap<&str, &Tensor> =
            self.params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (key, t) in tensors {
            let (map, name) = if let Some(n) = key.strip_prefix("exp_avg_sq.") {
                (&mut v, n.to_string())
            } else if let Some(n) = key.strip_prefix("exp_avg.") {
                (&mut m, n.to_string())
            } else {
                return Err(format!("unexpected optimizer tensor `{key}`"));
            };
            let p = by_name
                .get(name.as_str())
                .ok_or_else(|| format!("optimizer state for unknown parameter `{name}`"))?;
            if p.size() != t.size() {
                return Err(format!(
                    "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                    t.size(),
                    p.size()
                ));
            }
            map.insert(name, t.to_kind(p.kind()).to_device(p.device()).copy());
        }
        if m.len() != v.len()
            || m.keys()
                .any(|k| !v.contains_key(k) || !steps.contains_key(k))
        {
            return Err("optimizer state is incomplete (moments and step counts disagree)".into());
        }
        self.exp_avg = m;
        self.exp_avg_sq = v;
        self.steps = steps;
        Ok(())
    }
}

/// A CPU copy that shares no storage with the optimiser's state.
fn to_cpu_owned(t: &Tensor) -> Tensor {
    if t.device() == tch::Device::Cpu {
        t.copy()
    } else {
        t.to_device(tch::Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Values printed by torch 2.11: `p = [1, -2, 3]`, `Adam([p], lr=0.1, weight_decay=0.01)`,
    /// three steps with the gradients below.
    #[test]
    fn matches_torch_adam_with_coupled_weight_decay() {
        let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let mut opt = Adam::new(
            vec![("p".into(), p.shallow_clone())],
            0.1,
            (0.9, 0.999),
            1e-8,
            0.01,
        );
        let grads = [[0.5f32, 0.5, 0.5], [-1.0, 0.0, 2.0], [0.25, -0.5, 1.0]];
        let torch = [
            [
                0.900_000_035_762_786_9f64,
                -2.099_999_904_632_568_4,
                2.900_000_095_367_431_6,
            ],
            [
                0.935_523_688_793_182_4,
                -2.163_687_467_575_073_2,
                2.811_073_303_222_656_2,
            ],
            [
                0.947_781_264_781_951_9,
                -2.150_013_208_389_282_2,
                2.721_224_784_851_074,
            ],
        ];
        for (g, want) in grads.iter().zip(torch) {
            opt.step(&[Tensor::from_slice(g)]);
            let got = Vec::<f32>::try_from(&p.detach()).unwrap();
            for i in 0..3 {
                assert!(
                    (got[i] as f64 - want[i]).abs() < 1e-6,
                    "{got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn skips_parameters_without_gradient_and_round_trips_its_state() {
        let a = Tensor::ones([2], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([2], (Kind::Float, Device::Cpu));
        let mut opt = Adam::new(
            vec![
                ("a".into(), a.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            0.1,
            (0.9, 0.999),
            1e-8,
            0.1,
        );
        opt.step(&[Tensor::ones([2], (Kind::Float, Device::Cpu)), Tensor::new()]);
        assert!(
            b.equal(&Tensor::ones([2], (Kind::Float, Device::Cpu))),
            "no gradient, no update, no decay"
        );
        let (tensors, steps) = opt.state();
        assert_eq!(tensors.len(), 2);
        assert_eq!(steps.get("a"), Some(&1));
        assert!(!steps.contains_key("b"));
        let mut other = Adam::new(
            vec![("a".into(), a.copy()), ("b".into(), b.copy())],
            0.1,
            (0.9, 0.999),
            1e-8,
            0.1,
        );
        other.load_state(tensors, steps).unwrap();
        let g = Tensor::from_slice(&[0.3f32, -0.7]);
        opt.step(&[g.shallow_clone(), Tensor::new()]);
        other.step(&[g, Tensor::new()]);
        assert!(
            opt.params()[0].1.equal(&other.params()[0].1),
            "restored state continues identically"
        );
        assert!(
            other
                .load_state(
                    vec![(
                        "exp_avg.zzz".into(),
                        Tensor::zeros([2], (Kind::Float, Device::Cpu))
                    )],
                    BTreeMap::new()
                )
                .is_err()
        );
    }
}
