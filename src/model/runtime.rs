//! libtorch at run time: device resolution, reduced-precision autocast on CUDA, the runtime
//! report of `brspeech --version`/`doctor`, and turning libtorch failures (CUDA out of memory
//! above all) into [`ModelError`]s instead of panics with backtraces.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use tch::{Cuda, Device};

use crate::model::error::{ModelError, first_line};
use crate::model::options::{DeviceChoice, Precision, RuntimeInfo};

/// Resolves a device choice against what libtorch sees.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device, ModelError> {
    match choice {
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            if !tch::utils::has_cudart() {
                return Err(ModelError::Device {
                    device: choice.to_string(),
                    reason: "this binary's libtorch has no CUDA (build against a CUDA libtorch: `tools/setup-libtorch.sh --full`)".into(),
                });
            }
            if !Cuda::is_available() {
                return Err(ModelError::Device {
                    device: choice.to_string(),
                    reason: "no CUDA device is visible".into(),
                });
            }
            let count = Cuda::device_count();
            if n as i64 >= count {
                return Err(ModelError::Device {
                    device: choice.to_string(),
                    reason: format!("only {count} CUDA device(s) are visible"),
                });
            }
            Ok(Device::Cuda(n))
        }
    }
}

/// A device in the `DeviceChoice` spelling (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Cpu => "cpu".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

// libtorch's autocast dtype setter/getter are C++ functions that tch does not wrap; they take
// `c10::DeviceType` and `c10::ScalarType`, both `enum class : int8_t`, which the x86-64 and
// AArch64 C++ ABIs pass as plain integers.
unsafe extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
}

// `at::globalContext()` and the TF32 switches of `at::Context` (member functions: the object
// pointer is the first argument).
unsafe extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut std::ffi::c_void;
    #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
    fn at_set_allow_tf32_cudnn(ctx: *mut std::ffi::c_void, allowed: bool);
    #[link_name = "_ZN2at7Context18setAllowTF32CuBLASEb"]
    fn at_set_allow_tf32_cublas(ctx: *mut std::ffi::c_void, allowed: bool);
}

/// Allows or forbids TF32 in CUDA convolutions (cuDNN) and matrix products (cuBLAS). libtorch
/// allows it in cuDNN by default, as PyTorch does; parity checks against float32 references
/// turn it off. No effect on the CPU.
pub fn set_tf32(allowed: bool) {
    // SAFETY: `globalContext()` returns libtorch's process-wide context; the setters store a flag.
    unsafe {
        let ctx = at_global_context();
        at_set_allow_tf32_cudnn(ctx, allowed);
        at_set_allow_tf32_cublas(ctx, allowed);
    }
}

const DEVICE_TYPE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

/// Runs `f` under CUDA autocast in `precision` (`f32`, or anything on the CPU: plain call).
pub fn with_precision<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    let dtype = match precision.effective(device.is_cuda()) {
        Precision::F32 => return f(),
        Precision::Bf16 => SCALAR_BFLOAT16,
        Precision::F16 => SCALAR_HALF,
    };
    // SAFETY: plain C++ functions of libtorch_cpu over int8 enums; they only store a value in
    // thread-local autocast state.
    let previous = unsafe { at_get_autocast_dtype(DEVICE_TYPE_CUDA) };
    unsafe { at_set_autocast_dtype(DEVICE_TYPE_CUDA, dtype) };
    let out = tch::autocast(true, f);
    unsafe { at_set_autocast_dtype(DEVICE_TYPE_CUDA, previous) };
    out
}

/// Folder of the `libtorch_cpu.so` this process loaded (from `/proc/self/maps`).
fn loaded_libtorch_dir() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
}

/// Version of a libtorch folder (`<torch>/version.py` of a wheel, or `build-version`).
fn libtorch_version(lib_dir: &std::path::Path) -> Option<String> {
    let torch = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(torch.join("version.py")) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                return Some(v.trim_matches(|c| c == '\'' || c == '"').to_string());
            }
        }
    }
    std::fs::read_to_string(torch.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// GPU model names reported by the NVIDIA driver (`/proc/driver/nvidia/gpus/*/information`).
fn nvidia_device_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("information")).ok()?;
            let model = text
                .lines()
                .find_map(|l| l.strip_prefix("Model:"))?
                .trim()
                .to_string();
            Some((e.file_name().to_string_lossy().into_owned(), model))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, m)| m).collect()
}

/// What libtorch this process runs on.
pub fn runtime_info() -> RuntimeInfo {
    let lib = loaded_libtorch_dir();
    let cuda_linked = tch::utils::has_cudart();
    let cuda_available = cuda_linked && Cuda::is_available();
    let count = if cuda_available {
        Cuda::device_count().max(0) as usize
    } else {
        0
    };
    let cudnn_available = cuda_available && Cuda::cudnn_is_available();
    RuntimeInfo {
        torch_feature: true,
        libtorch_version: lib.as_deref().and_then(libtorch_version),
        libtorch_path: lib.map(|p| p.display().to_string()),
        cuda_linked,
        cuda_available,
        cuda_device_count: count,
        cuda_devices: if cuda_available {
            nvidia_device_names()
        } else {
            Vec::new()
        },
        cudnn_available,
        cudnn_version: cudnn_available.then(tch::utils::version_cudnn),
        cpu_threads: tch::get_num_threads().max(0) as usize,
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "unknown failure".into()
    }
}

/// True for libtorch's allocation failures ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
/// CPU "DefaultCPUAllocator: can't allocate memory").
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("alloc_failed") || m.contains("can't allocate memory")
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent for panics raised inside [`guard`], so a
/// libtorch failure turned into an error does not also print a backtrace.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

/// How a libtorch failure inside [`guard`] is reported.
pub struct GuardCtx<'a> {
    /// What was running (`extract_ssl`, `train_aasist`, `predict`).
    pub stage: &'a str,
    /// What was being done (`scoring a batch`).
    pub action: &'a str,
    /// Batch size in use.
    pub batch_size: usize,
    /// The config key that sets it.
    pub config_key: &'a str,
}

/// Runs `f`, turning a libtorch panic into [`ModelError::OutOfMemory`] (allocation failures) or
/// [`ModelError::TorchPanic`] (anything else), without printing a backtrace.
pub fn guard<T>(
    ctx: &GuardCtx<'_>,
    f: impl FnOnce() -> Result<T, ModelError>,
) -> Result<T, ModelError> {
    install_quiet_hook();
    let was = QUIET.with(|q| q.replace(true));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    match out {
        Ok(r) => r.map_err(|e| match e {
            ModelError::Torch { ref source, .. } if is_out_of_memory(&source.to_string()) => {
                oom(ctx)
            }
            other => other,
        }),
        Err(payload) => {
            let text = panic_text(payload.as_ref());
            if is_out_of_memory(&text) {
                Err(oom(ctx))
            } else {
                let first = first_line(&text)
                    .trim_start_matches("called `Result::unwrap()` on an `Err` value: ")
                    .to_string();
                Err(ModelError::TorchPanic {
                    context: format!("{} in `{}`", ctx.action, ctx.stage),
                    message: first,
                })
            }
        }
    }
}

fn oom(ctx: &GuardCtx<'_>) -> ModelError {
    ModelError::OutOfMemory {
        stage: ctx.stage.into(),
        batch_size: ctx.batch_size,
        config_key: ctx.config_key.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_libtorch_oom_messages() {
        assert!(is_out_of_memory(
            "Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)\")"
        ));
        assert!(is_out_of_memory(
            "CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"
        ));
        assert!(is_out_of_memory(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1e12 bytes"
        ));
        assert!(!is_out_of_memory(
            "shape '[2, 3]' is invalid for input of size 7"
        ));
    }

    #[test]
    fn guard_turns_an_allocation_failure_into_a_clear_error() {
        let ctx = GuardCtx {
            stage: "train_aasist",
            action: "training a batch",
            batch_size: 8,
            config_key: "params.batch_size",
        };
        let e = guard(&ctx, || -> Result<(), ModelError> {
            // 64 Ti floats cannot be allocated: libtorch raises its allocator error.
            let _t = tch::Tensor::f_zeros([1 << 46], (tch::Kind::Float, Device::Cpu)).map_err(
                |source| ModelError::Torch {
                    context: "alloc".into(),
                    source,
                },
            )?;
            Ok(())
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, ModelError::OutOfMemory { batch_size: 8, .. }),
            "{text}"
        );
        assert!(
            text.contains("`params.batch_size`") && text.contains("batch size 8"),
            "{text}"
        );
    }

    #[test]
    fn guard_reports_other_libtorch_panics_without_a_backtrace() {
        let ctx = GuardCtx {
            stage: "predict",
            action: "scoring a batch",
            batch_size: 2,
            config_key: "batch_size",
        };
        let e = guard(&ctx, || -> Result<(), ModelError> {
            let t = tch::Tensor::zeros([2, 3], (tch::Kind::Float, Device::Cpu));
            let _ = t.view([7]);
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(e, ModelError::TorchPanic { .. }), "{e}");
        assert!(e.to_string().contains("`predict`"), "{e}");
    }

    #[test]
    fn runtime_info_finds_the_loaded_libtorch() {
        let info = runtime_info();
        assert!(info.torch_feature);
        assert!(info.libtorch_path.is_some(), "{info:?}");
        assert!(
            info.libtorch_version
                .as_deref()
                .is_some_and(|v| v.starts_with("2.11")),
            "{info:?}"
        );
        assert!(info.cpu_threads >= 1);
        assert!(info.to_string().starts_with("libtorch 2.11"), "{info}");
    }

    #[test]
    fn tf32_switch_is_callable() {
        set_tf32(false);
        set_tf32(true);
    }

    #[test]
    fn cpu_precision_runs_plain_f32() {
        let y = with_precision(Precision::Bf16, Device::Cpu, || {
            tch::Tensor::ones([2], (tch::Kind::Float, Device::Cpu)) * 2
        });
        assert_eq!(y.kind(), tch::Kind::Float);
        assert_eq!(resolve_device(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        if !Cuda::is_available() {
            assert_eq!(resolve_device(DeviceChoice::Auto).unwrap(), Device::Cpu);
            assert!(resolve_device(DeviceChoice::Cuda(0)).is_err());
        }
    }
}
