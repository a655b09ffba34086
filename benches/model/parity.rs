//! `parity-bf16` mode: the reference fixtures (tiny wav2vec2 of both layouts, the AASIST back
//! end at D=768 and D=1024) run on a device in f32 and under bf16 autocast, every output compared
//! with the fixture's float32 values; and `runtime` mode: what libtorch and the driver see.
//!
//! Metrics per tensor, against the fixture `f`: `rel_l2 = ||x - f||_2 / ||f||_2`,
//! `rel_max = max|x - f| / max|f|`, and for f32 the fixture tolerance ratio
//! `max |x - f| / (1e-5 + 1e-4 |f|)` (<= 1 passes, as in tests/model_parity.rs).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use brspeech::model::aasist::{self, Aasist, Mode};
use brspeech::model::checkpoint::load_state_dict;
use brspeech::model::runtime::{resolve_device, set_tf32, with_precision};
use brspeech::model::wav2vec2::PretrainedSsl;
use brspeech::model::{DeviceChoice, Precision, runtime_info};
use serde_json::{Value, json};
use tch::{Cuda, Device, Kind, Tensor};

use crate::common::{GpuMemory, emit, progress};

/// The bf16 criterion: relative L2 error of every compared tensor.
const BF16_REL_L2: f64 = 1e-2;

fn read(dir: &Path, name: &str) -> anyhow::Result<BTreeMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(dir.join(name))
        .map_err(|e| anyhow::anyhow!("reading fixture `{name}`: {e}"))?
        .into_iter()
        .collect())
}

fn compare(x: &Tensor, f: &Tensor) -> Value {
    let x = x.detach().to_device(Device::Cpu).to_kind(Kind::Double);
    let f = f.to_kind(Kind::Double);
    let d = &x - &f;
    let rel_l2 = d.norm().double_value(&[]) / f.norm().double_value(&[]);
    let rel_max = d.abs().max().double_value(&[]) / f.abs().max().double_value(&[]);
    let ratio = (d.abs() / (f.abs() * 1e-4 + 1e-5)).max().double_value(&[]);
    json!({ "rel_l2": rel_l2, "rel_max": rel_max, "tolerance_ratio": ratio })
}

fn row(case: &str, tensor: &str, precision: Precision, device: Device, m: Value) -> Value {
    let effective = crate::effective(precision, device);
    let mut r = json!({
        "kind": "parity", "impl": "brspeech", "case": case, "tensor": tensor,
        "device": format!("{device:?}").to_lowercase(), "dtype": precision.to_string(),
        "dtype_effective": effective.to_string(),
    });
    let obj = r.as_object_mut().expect("an object");
    for (k, v) in m.as_object().expect("an object") {
        obj.insert(k.clone(), v.clone());
    }
    let pass = match precision {
        Precision::F32 => m["tolerance_ratio"].as_f64().is_some_and(|x| x <= 1.0),
        _ => m["rel_l2"].as_f64().is_some_and(|x| x <= BF16_REL_L2),
    };
    obj.insert(
        "criterion".into(),
        json!(match precision {
            Precision::F32 => "|x-f| <= 1e-5 + 1e-4|f| elementwise",
            _ => "||x-f||_2 / ||f||_2 <= 1e-2",
        }),
    );
    obj.insert("pass".into(), json!(pass));
    r
}

fn tiny_ssl(dir: &Path, layout: &str, device: Device) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    std::fs::copy(
        dir.join(format!("ssl_tiny_{layout}_config.json")),
        tmp.path().join("config.json"),
    )?;
    std::fs::copy(
        dir.join(format!("ssl_tiny_{layout}_weights.safetensors")),
        tmp.path().join("model.safetensors"),
    )?;
    let ssl = PretrainedSsl::load(tmp.path(), device)?;
    let io = read(dir, &format!("ssl_tiny_{layout}_io_eval.safetensors"))?;
    let x = io["input_values"].to_device(device);
    for precision in [Precision::F32, Precision::Bf16] {
        let out =
            tch::no_grad(|| with_precision(precision, device, || ssl.model.forward_all(&x, false)));
        let mut outputs = vec![("extract_features".to_string(), out.extract_features)];
        for (i, h) in out.hidden_states.into_iter().enumerate() {
            outputs.push((format!("hidden_states.{i}"), h));
        }
        outputs.push(("last_hidden_state".into(), out.last_hidden_state));
        for (name, t) in outputs {
            let m = compare(&t, &io[&name]);
            emit(row(
                &format!("ssl_tiny_{layout}"),
                &name,
                precision,
                device,
                m,
            ));
        }
    }
    Ok(())
}

fn backend(dir: &Path, set: &str, dim: i64, device: Device) -> anyhow::Result<()> {
    let vs = tch::nn::VarStore::new(device);
    let model = Aasist::new(vs.root(), &aasist::Config { ssl_dim: dim });
    load_state_dict(&vs, &dir.join(format!("backend_{set}_weights.safetensors")))?;
    let io = read(dir, &format!("backend_{set}_io_eval.safetensors"))?;
    let x = io["ssl_feat"].to_device(device);
    for precision in [Precision::F32, Precision::Bf16] {
        let mut trace = Vec::new();
        let logits = tch::no_grad(|| {
            with_precision(precision, device, || {
                model.forward_traced(&x, Mode::EVAL, Some(&mut trace))
            })
        });
        let hidden = trace
            .iter()
            .find(|(n, _)| n == "last_hidden")
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| anyhow::anyhow!("no `last_hidden` in the trace"))?;
        for (name, t) in [("last_hidden", hidden), ("logits", logits)] {
            emit(row(
                &format!("backend_{set}"),
                name,
                precision,
                device,
                compare(&t, &io[name]),
            ));
        }
    }
    Ok(())
}

pub fn bf16(choice: DeviceChoice, fixtures: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let device = resolve_device(choice)?;
    // f32 must be float32 on CUDA (libtorch allows TF32 in cuDNN convolutions by default).
    set_tf32(false);
    for layout in ["group", "layer"] {
        tiny_ssl(fixtures, layout, device)?;
    }
    for (set, dim) in [("base768", 768), ("xlsr300m", 1024)] {
        backend(fixtures, set, dim, device)?;
    }
    progress(
        start,
        &format!("parity fixtures on {device:?} in f32 and bf16"),
    );
    Ok(())
}

pub fn runtime(choice: DeviceChoice, mem: &GpuMemory) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let info = runtime_info();
    emit(json!({
        "kind": "runtime", "impl": "brspeech",
        "info": info, "summary": info.to_string(),
        "has_cudart": tch::utils::has_cudart(),
        "cuda_is_available": Cuda::is_available(),
        "cuda_device_count": Cuda::device_count(),
        "cudnn_is_available": Cuda::cudnn_is_available(),
        "runtime_info_s": t0.elapsed().as_secs_f64(),
        "memory": mem.snapshot(),
    }));
    // A small computation on the device: kernels of this libtorch run on this card.
    let device = resolve_device(choice)?;
    let t1 = Instant::now();
    let a = Tensor::randn([1024, 1024], (Kind::Float, device));
    let s = a.matmul(&a.transpose(0, 1)).trace().double_value(&[]);
    let expected = a.square().sum(Kind::Double).double_value(&[]);
    let ok = ((s - expected) / expected).abs() < 1e-3;
    emit(json!({
        "kind": "runtime_smoke", "impl": "brspeech", "device": format!("{device:?}").to_lowercase(),
        "matmul_ok": ok, "seconds": t1.elapsed().as_secs_f64(), "memory": mem.snapshot(),
    }));
    anyhow::ensure!(ok, "matmul on {device:?} gave {s}, expected {expected}");
    Ok(())
}
