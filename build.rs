//! Build script: runtime search path for libtorch and the CUDA link (see docs/libtorch.md).
//!
//! torch-sys (links = "tch") exports `DEP_TCH_LIBTORCH_LIB`, the folder holding libtorch's
//! shared libraries. We add it to the binary's RPATH so `brspeech` and the test binaries start
//! without `LD_LIBRARY_PATH`. rustc links with `--as-needed`, which silently drops
//! `libtorch_cuda.so` (nothing references its symbols directly), so CUDA would never be
//! available; when the libtorch folder is a full CUDA install we force the link.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=BRSPEECH_LINK_CUDA");
    let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        // Built without the `torch` feature: nothing to link.
        return;
    };
    let lib = Path::new(&lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = match env::var("BRSPEECH_LINK_CUDA").as_deref() {
        Ok("1" | "yes" | "force") => true,
        Ok("0" | "no") => false,
        _ => cuda_usable(lib),
    };
    if cuda {
        // libtorch_cuda pulls cuBLAS/cuDNN from the nvidia wheels through its own RUNPATH; when
        // those are not installed on the build machine (a lean install with forced CUDA), let the
        // linker leave their symbols to the run-time loader.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
        println!("cargo:rustc-cfg=brspeech_cuda_linked");
    }
    println!("cargo:rustc-check-cfg=cfg(brspeech_cuda_linked)");
}

/// A libtorch folder can run CUDA when `libtorch_cuda.so` is there *and* the CUDA math
/// libraries it needs are installed (full pip install: `site-packages/nvidia/cublas`, or a
/// system CUDA). The lean CPU install has `libtorch_cuda.so` but not cuBLAS: forcing the link
/// there would stop the binary from starting.
fn cuda_usable(lib: &Path) -> bool {
    if !lib.join("libtorch_cuda.so").exists() {
        return false;
    }
    // <site-packages>/torch/lib -> <site-packages>/nvidia/{cublas,cu13/lib}
    let site = lib.parent().and_then(Path::parent);
    let pip_cublas = site.is_some_and(|s| {
        ["nvidia/cublas/lib", "nvidia/cu13/lib/libcublas.so.13"]
            .iter()
            .any(|p| s.join(p).exists())
    });
    pip_cublas || lib.join("libcublas.so").exists()
}
