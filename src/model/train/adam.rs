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

use tch::{Kind, Tensor};

/// Adam state for a set of named parameters.
///
/// Parameters of one floating dtype and device are moved into one flat buffer (each parameter
/// becomes a view of it, through `set_data`), and so are the moments. A step updates each run
/// of consecutive parameters that have a gradient (and the same step count) with a few kernels
/// over that slice of the buffer, instead of about ten kernels per parameter tensor, which
/// matters on a GPU where the back end has 175 small tensors. Parameters are sorted by name, so
/// a layer skipped by LayerDrop or the dead `bn1` only splits the buffer into a few runs. The
/// arithmetic per element is exactly the per-tensor update.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    params: Vec<(String, Tensor)>,
    /// Flat parameter and moment buffers; `None` when the parameters do not share one dtype
    /// and device.
    flat: Option<Flat>,
    exp_avg: BTreeMap<String, Tensor>,
    exp_avg_sq: BTreeMap<String, Tensor>,
    steps: BTreeMap<String, i64>,
}

#[derive(Debug)]
struct Flat {
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// (offset, numel) of each parameter (by its index in `Adam::params`) in the buffers.
    spans: Vec<(i64, i64)>,
    /// Parameter indices in buffer order.
    order: Vec<usize>,
    /// The parameters that had a gradient in the last step, and whether the buffers were
    /// already laid out again to put such a set first.
    last_active: Vec<bool>,
    relaid: bool,
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
        let flat = Flat::new(&params);
        let mut adam = Adam {
            lr,
            betas,
            eps,
            weight_decay,
            params,
            flat,
            exp_avg: BTreeMap::new(),
            exp_avg_sq: BTreeMap::new(),
            steps: BTreeMap::new(),
        };
        if adam.flat.is_some() {
            adam.refresh_views();
        }
        adam
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
        if self.flat.is_some() {
            self.step_flat(grads);
        } else {
            self.step_each(grads);
        }
    }

    fn step_each(&mut self, grads: &[Tensor]) {
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

    /// The flat update, one run of parameters that are consecutive in the buffers, have a
    /// gradient and the same step count (hence the same bias corrections) at a time.
    ///
    /// The first time the same set of parameters gets gradients in two steps in a row and
    /// they are not one run (the dead `bn1` of the back end sits between live parameters), the
    /// buffers are laid out again once with that set first: frozen-mode training then updates
    /// one run per step.
    fn step_flat(&mut self, grads: &[Tensor]) {
        let active: Vec<bool> = grads.iter().map(Tensor::defined).collect();
        let mut runs = self.runs(&active);
        let flat = self.flat.as_mut().expect("flat buffers");
        if runs.len() > 1 && !flat.relaid && flat.last_active == active {
            flat.relayout(&self.params, &active);
            self.refresh_views();
            runs = self.runs(&active);
        }
        let flat = self.flat.as_mut().expect("flat buffers");
        flat.last_active = active;
        let (b1, b2) = self.betas;
        let flat = self.flat.as_ref().expect("flat buffers");
        tch::no_grad(|| {
            for (members, step) in &runs {
                let off = flat.spans[members[0]].0;
                let len: i64 = members.iter().map(|&i| flat.spans[i].1).sum();
                let g = if members.len() == 1 {
                    grads[members[0]].reshape([-1])
                } else {
                    let parts: Vec<Tensor> =
                        members.iter().map(|&i| grads[i].reshape([-1])).collect();
                    Tensor::cat(&parts, 0)
                };
                let mut p = flat.param.narrow(0, off, len);
                let mut m = flat.exp_avg.narrow(0, off, len);
                let mut v = flat.exp_avg_sq.narrow(0, off, len);
                let g = if self.weight_decay != 0.0 {
                    g + &p * self.weight_decay
                } else {
                    g
                };
                let _ = m.lerp_(&g, 1.0 - b1);
                let _ = v.g_mul_scalar_(b2);
                let _ = v.addcmul_(&(&g * (1.0 - b2)), &g);
                let step = step + 1;
                let bias1 = 1.0 - b1.powi(step as i32);
                let bias2 = 1.0 - b2.powi(step as i32);
                let step_size = self.lr / bias1;
                let denom = v.sqrt() / bias2.sqrt() + self.eps;
                let _ = p.addcdiv_(&(&m * -step_size), &denom);
                for &i in members {
                    self.steps.insert(self.params[i].0.clone(), step);
                }
            }
        });
    }

    /// Runs of `active` parameters consecutive in the buffers with equal step counts:
    /// (parameter indices in buffer order, step count before this update).
    fn runs(&self, active: &[bool]) -> Vec<(Vec<usize>, i64)> {
        let flat = self.flat.as_ref().expect("flat buffers");
        let mut runs: Vec<(Vec<usize>, i64)> = Vec::new();
        let mut prev: Option<usize> = None;
        for (pos, &i) in flat.order.iter().enumerate() {
            if !active[i] {
                continue;
            }
            let step = self.steps.get(&self.params[i].0).copied().unwrap_or(0);
            match runs.last_mut() {
                Some((members, s)) if prev == Some(pos - 1) && *s == step => members.push(i),
                _ => runs.push((vec![i], step)),
            }
            prev = Some(pos);
        }
        runs
    }

    /// The per-parameter moment views, after the buffers moved.
    fn refresh_views(&mut self) {
        let flat = self.flat.as_ref().expect("flat buffers");
        for ((name, p), &(off, n)) in self.params.iter().zip(&flat.spans) {
            self.exp_avg.insert(
                name.clone(),
                flat.exp_avg.narrow(0, off, n).view(p.size().as_slice()),
            );
            self.exp_avg_sq.insert(
                name.clone(),
                flat.exp_avg_sq.narrow(0, off, n).view(p.size().as_slice()),
            );
        }
    }

    /// Step counts of the parameters that have state.
    pub fn steps(&self) -> &BTreeMap<String, i64> {
        &self.steps
    }

    /// The state as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`, on the CPU) and step
    /// counts, for saving. Only parameters that have been updated have state.
    pub fn state(&self) -> (Vec<(String, Tensor)>, BTreeMap<String, i64>) {
        let mut tensors = Vec::new();
        for (name, m) in &self.exp_avg {
            if !self.steps.contains_key(name) {
                continue;
            }
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
        if self.flat.is_some() {
            tch::no_grad(|| {
                for (name, t) in &m {
                    self.exp_avg[name].shallow_clone().copy_(t);
                    self.exp_avg_sq[name].shallow_clone().copy_(&v[name]);
                }
            });
        } else {
            self.exp_avg = m;
            self.exp_avg_sq = v;
        }
        self.steps = steps;
        Ok(())
    }
}

impl Flat {
    /// Moves `params` into one flat buffer (each parameter's data becomes a view of it), when
    /// they share one floating dtype and device.
    fn new(params: &[(String, Tensor)]) -> Option<Flat> {
        let first = &params.first()?.1;
        let (kind, device) = (first.kind(), first.device());
        if !matches!(
            kind,
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        ) || params
            .iter()
            .any(|(_, p)| p.kind() != kind || p.device() != device)
        {
            return None;
        }
        let order: Vec<usize> = (0..params.len()).collect();
        let (param, spans) = pack(params, &order, |i| params[i].1.shallow_clone());
        let total = param.numel() as i64;
        point_at(params, &param, &spans);
        Some(Flat {
            exp_avg: Tensor::zeros([total], (kind, device)),
            exp_avg_sq: Tensor::zeros([total], (kind, device)),
            param,
            spans,
            order,
            last_active: Vec::new(),
            relaid: false,
        })
    }

    /// Lays the buffers out again with the `active` parameters first (each group in its
    /// current order); values are copied, not changed.
    fn relayout(&mut self, params: &[(String, Tensor)], active: &[bool]) {
        let order: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&i| active[i])
            .chain(self.order.iter().copied().filter(|&i| !active[i]))
            .collect();
        let view =
            |buf: &Tensor, spans: &[(i64, i64)], i: usize| buf.narrow(0, spans[i].0, spans[i].1);
        let old = self.spans.clone();
        let (param, spans) = pack(params, &order, |i| view(&self.param, &old, i));
        let (exp_avg, _) = pack(params, &order, |i| view(&self.exp_avg, &old, i));
        let (exp_avg_sq, _) = pack(params, &order, |i| view(&self.exp_avg_sq, &old, i));
        point_at(params, &param, &spans);
        *self = Flat {
            param,
            exp_avg,
            exp_avg_sq,
            spans,
            order,
            last_active: Vec::new(),
            relaid: true,
        };
    }
}

/// One buffer holding `part(i)` for the parameters in `order`, and each parameter's span in it.
fn pack(
    params: &[(String, Tensor)],
    order: &[usize],
    part: impl Fn(usize) -> Tensor,
) -> (Tensor, Vec<(i64, i64)>) {
    let mut spans = vec![(0i64, 0i64); params.len()];
    let mut total = 0i64;
    for &i in order {
        let n = params[i].1.numel() as i64;
        spans[i] = (total, n);
        total += n;
    }
    let buf = tch::no_grad(|| {
        Tensor::cat(
            &order
                .iter()
                .map(|&i| part(i).reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        )
    });
    (buf, spans)
}

/// Makes every parameter's data a view of `buf` at its span.
fn point_at(params: &[(String, Tensor)], buf: &Tensor, spans: &[(i64, i64)]) {
    for ((_, p), &(off, n)) in params.iter().zip(spans) {
        let mut p = p.shallow_clone();
        p.set_data(&buf.narrow(0, off, n).view(p.size().as_slice()));
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

    /// The flat update equals the per-tensor update bit for bit, including parameters that
    /// never get a gradient (as the dead `bn1`) or skip steps (so that step counts, and bias
    /// corrections, differ), and across the one-time re-layout of the buffers.
    #[test]
    fn flat_update_equals_per_tensor_update() {
        let shapes: [&[i64]; 5] = [&[3, 2], &[5], &[1], &[2, 2, 2], &[4]];
        let rng = crate::model::rng::hold();
        let make = |seed: i64| {
            rng.seed(seed);
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (
                        format!("p{i}"),
                        Tensor::randn(*s, (Kind::Float, Device::Cpu)),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut flat = Adam::new(make(7), 0.01, (0.9, 0.999), 1e-8, 0.05);
        let mut each = Adam::new(make(7), 0.01, (0.9, 0.999), 1e-8, 0.05);
        each.flat = None;
        each.exp_avg.clear();
        each.exp_avg_sq.clear();
        assert!(flat.flat.is_some());
        rng.seed(99);
        for step in 0..8 {
            let grads: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    // p2 never has a gradient; p1 skips step 1, p4 steps 0 and 1: the set
                    // {0, 1, 3, 4} repeats from step 2 as two runs, which triggers the
                    // re-layout at step 3.
                    if i == 2 || (i == 1 && step == 1) || (i == 4 && step < 2) {
                        Tensor::new()
                    } else {
                        Tensor::randn(*s, (Kind::Float, Device::Cpu))
                    }
                })
                .collect();
            flat.step(&grads);
            each.step(&grads);
            for ((n, a), (_, b)) in flat.params().iter().zip(each.params()) {
                assert!(a.equal(b), "{n} differs after step {step}");
            }
        }
        assert!(
            flat.flat.as_ref().unwrap().relaid,
            "the buffers were laid out again"
        );
        assert_eq!(flat.steps(), each.steps());
        let (fs, _) = flat.state();
        let (es, _) = each.state();
        assert_eq!(fs.len(), es.len());
        for ((na, a), (nb, b)) in fs.iter().zip(&es) {
            assert_eq!(na, nb);
            assert!(a.equal(b), "{na} differs");
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
