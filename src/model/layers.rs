//! Basic layers over tch tensors with PyTorch's parameter names, buffers (BatchNorm's
//! `num_batches_tracked` included) and default initialisations, so state dicts match
//! `torch.nn` modules key for key.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// Uniform(-b, b) with `b = 1/sqrt(fan_in)`: torch's default for Linear/Conv weights
/// (kaiming-uniform with a = sqrt(5)) and biases.
fn torch_default(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `torch.nn.Linear` (`weight` `[out, in]`, `bias` `[out]`).
/// <https://github.com/pytorch/pytorch/blob/v2.11.0/torch/nn/modules/linear.py>
#[derive(Debug)]
pub struct Linear {
    /// `weight`.
    pub weight: Tensor,
    /// `bias`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Registers `weight` (and `bias`) under `p` with torch's default initialisation.
    pub fn new(p: Path, in_dim: i64, out_dim: i64, bias: bool) -> Linear {
        let weight = p.var("weight", &[out_dim, in_dim], torch_default(in_dim));
        let bias = bias.then(|| p.var("bias", &[out_dim], torch_default(in_dim)));
        Linear { weight, bias }
    }

    /// Like [`Linear::new`] with weights drawn from N(0, std) and zero bias (Hugging Face init).
    pub fn new_normal(p: Path, in_dim: i64, out_dim: i64, std: f64) -> Linear {
        let weight = p.var(
            "weight",
            &[out_dim, in_dim],
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        );
        let bias = Some(p.var("bias", &[out_dim], Init::Const(0.0)));
        Linear { weight, bias }
    }

    /// `x @ weight.T + bias` over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `torch.nn.Conv1d` / `Conv2d` (no dilation).
#[derive(Debug)]
pub struct Conv {
    /// `weight` `[out, in/groups, k...]`.
    pub weight: Tensor,
    /// `bias`.
    pub bias: Option<Tensor>,
    stride: Vec<i64>,
    padding: Vec<i64>,
    groups: i64,
}

impl Conv {
    /// Registers an ungrouped convolution with kernel `kernel` (1 or 2 dims), torch's default
    /// init.
    pub fn new(
        p: Path,
        in_ch: i64,
        out_ch: i64,
        kernel: &[i64],
        stride: &[i64],
        padding: &[i64],
        bias: bool,
    ) -> Conv {
        let groups = 1;
        let fan_in = in_ch * kernel.iter().product::<i64>();
        let mut dims = vec![out_ch, in_ch];
        dims.extend_from_slice(kernel);
        let weight = p.var("weight", &dims, torch_default(fan_in));
        let bias = bias.then(|| p.var("bias", &[out_ch], torch_default(fan_in)));
        Conv {
            weight,
            bias,
            stride: stride.to_vec(),
            padding: padding.to_vec(),
            groups,
        }
    }

    /// Wraps existing tensors (used when the weight is computed, e.g. by weight norm).
    pub fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: &[i64],
        padding: &[i64],
        groups: i64,
    ) -> Conv {
        Conv {
            weight,
            bias,
            stride: stride.to_vec(),
            padding: padding.to_vec(),
            groups,
        }
    }

    /// Applies the convolution with `weight` (the stored one or a computed one).
    pub fn forward_with(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        match self.stride.len() {
            1 => x.conv1d(
                weight,
                self.bias.as_ref(),
                self.stride.as_slice(),
                self.padding.as_slice(),
                [1],
                self.groups,
            ),
            _ => x.conv2d(
                weight,
                self.bias.as_ref(),
                self.stride.as_slice(),
                self.padding.as_slice(),
                [1, 1],
                self.groups,
            ),
        }
    }

    /// Applies the convolution.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with(x, &self.weight)
    }
}

/// `torch.nn.BatchNorm1d/2d` (eps 1e-5, momentum 0.1, affine, running stats and
/// `num_batches_tracked`).
/// <https://github.com/pytorch/pytorch/blob/v2.11.0/torch/nn/modules/batchnorm.py>
#[derive(Debug)]
pub struct BatchNorm {
    /// `weight` (γ).
    pub weight: Tensor,
    /// `bias` (β).
    pub bias: Tensor,
    /// `running_mean`.
    pub running_mean: Tensor,
    /// `running_var`.
    pub running_var: Tensor,
    /// `num_batches_tracked` (int64 scalar).
    pub num_batches_tracked: Tensor,
}

impl BatchNorm {
    /// Registers the parameters and buffers of a batch norm over `features` channels.
    pub fn new(p: Path, features: i64) -> BatchNorm {
        let weight = p.var("weight", &[features], Init::Const(1.0));
        let bias = p.var("bias", &[features], Init::Const(0.0));
        let running_mean = p.zeros_no_train("running_mean", &[features]);
        let running_var = p.ones_no_train("running_var", &[features]);
        let num_batches_tracked = p.add(
            "num_batches_tracked",
            Tensor::zeros([], (Kind::Int64, p.device())),
            false,
        );
        BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
        }
    }

    /// Normalises over dim 1 of `x` (`[N, C]`, `[N, C, L]` or `[N, C, H, W]`); in training mode
    /// with batch statistics, updating the running statistics as torch does (unbiased variance).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            tch::no_grad(|| {
                let mut n = self.num_batches_tracked.shallow_clone();
                let _ = n.g_add_scalar_(1);
            });
        }
        Tensor::batch_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        )
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Debug)]
pub struct LayerNorm {
    /// `weight`.
    pub weight: Tensor,
    /// `bias`.
    pub bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    /// Registers `weight` = 1 and `bias` = 0 over `dim` features.
    pub fn new(p: Path, dim: i64, eps: f64) -> LayerNorm {
        let weight = p.var("weight", &[dim], Init::Const(1.0));
        let bias = p.var("bias", &[dim], Init::Const(0.0));
        LayerNorm {
            weight,
            bias,
            dim,
            eps,
        }
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// `torch.nn.GroupNorm` over `[N, C, L]`.
#[derive(Debug)]
pub struct GroupNorm {
    /// `weight`.
    pub weight: Tensor,
    /// `bias`.
    pub bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    /// Registers an affine group norm.
    pub fn new(p: Path, groups: i64, channels: i64, eps: f64) -> GroupNorm {
        let weight = p.var("weight", &[channels], Init::Const(1.0));
        let bias = p.var("bias", &[channels], Init::Const(0.0));
        GroupNorm {
            weight,
            bias,
            groups,
            eps,
        }
    }

    /// Normalises each group of channels.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}
