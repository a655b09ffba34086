//! GPU memory used by this process, read from the NVIDIA driver through NVML (loaded at run
//! time; `None` on machines without it or without CUDA).

use std::sync::OnceLock;

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;

static NVML: OnceLock<Option<Nvml>> = OnceLock::new();

/// Bytes of GPU memory held by this process on all devices, when the driver reports it.
pub(crate) fn process_memory_bytes(device: tch::Device) -> Option<u64> {
    if !device.is_cuda() {
        return None;
    }
    let nvml = NVML.get_or_init(|| Nvml::init().ok()).as_ref()?;
    let pid = std::process::id();
    let mut total = None;
    for i in 0..nvml.device_count().ok()? {
        let Ok(dev) = nvml.device_by_index(i) else {
            continue;
        };
        let Ok(procs) = dev.running_compute_processes() else {
            continue;
        };
        for p in procs.into_iter().filter(|p| p.pid == pid) {
            if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                *total.get_or_insert(0) += bytes;
            }
        }
    }
    total
}
