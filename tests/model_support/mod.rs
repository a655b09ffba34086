//! Shared helpers of the model test binaries: fixture paths, tolerance checks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use tch::{Kind, Tensor};

/// `tests/fixtures/parity/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

/// Every tensor of a fixture file, by name.
pub fn read_fixture(name: &str) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name))
        .unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
        .into_iter()
        .collect()
}

/// `report.json` of the fixtures.
pub fn report() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("report.json")).unwrap()).unwrap()
}

/// max over elements of `|port - fixture| / (atol + rtol * |fixture|)`; <= 1 passes.
pub fn tolerance_ratio(port: &Tensor, fixture: &Tensor, atol: f64, rtol: f64) -> f64 {
    assert_eq!(port.size(), fixture.size(), "shape");
    let p = port
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Double);
    let f = fixture.to_kind(Kind::Double);
    let ratio = (&p - &f).abs() / (f.abs() * rtol + atol);
    ratio.max().double_value(&[])
}

/// Asserts the forward tolerance (atol 1e-5, rtol 1e-4) and returns the ratio.
pub fn assert_forward(name: &str, port: &Tensor, fixture: &Tensor) -> f64 {
    let r = tolerance_ratio(port, fixture, 1e-5, 1e-4);
    assert!(r <= 1.0, "`{name}`: forward tolerance ratio {r:.3} > 1");
    r
}

/// The gradient rules of the fixtures README §2: strict (atol 1e-6, rtol 1e-3); when that fails,
/// atol += 2e-2 * max|fixture|; structurally-zero gradients need |port| <= 1e-5.
pub fn assert_grad(name: &str, port: &Tensor, fixture: &Tensor, structurally_zero: bool) -> f64 {
    let port = &port.to_device(tch::Device::Cpu);
    if structurally_zero {
        let m = port.abs().max().double_value(&[]);
        assert!(
            m <= 1e-5,
            "`{name}` is structurally zero but |grad| reaches {m:e}"
        );
        return m / 1e-5;
    }
    let strict = tolerance_ratio(port, fixture, 1e-6, 1e-3);
    if strict <= 1.0 {
        return strict;
    }
    let absmax = fixture.abs().max().double_value(&[]);
    let fallback = tolerance_ratio(port, fixture, 1e-6 + 2e-2 * absmax, 1e-3);
    assert!(
        fallback <= 1.0,
        "`{name}`: gradient ratio strict {strict:.3}, fallback {fallback:.3} > 1"
    );
    fallback
}

/// One libtorch thread: the machines that run the tests are shared, and OpenMP threads that
/// spin-wait on busy cores make multi-threaded runs orders of magnitude slower.
pub fn single_thread() {
    tch::set_num_threads(1);
}

/// The device the parity checks run on: the CPU, or CUDA with `BRSPEECH_TEST_DEVICE=cuda`
/// (TF32 then off, so float32 is float32).
pub fn device() -> tch::Device {
    match std::env::var("BRSPEECH_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            assert!(
                tch::Cuda::is_available(),
                "BRSPEECH_TEST_DEVICE=cuda but libtorch sees no CUDA device"
            );
            brspeech::model::runtime::set_tf32(false);
            tch::Device::Cuda(0)
        }
        _ => tch::Device::Cpu,
    }
}
