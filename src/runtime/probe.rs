//! A provider is usable only when it has run: load its libraries, open
//! `probe.onnx` (a Conv, a MatMul, a reduction) on it, run it and compare
//! with the CPU. The reasons it can fail are turned into what to do.

use serde::Serialize;

use super::gpu_info::GpuInfo;
use super::gpu_libs::{self, LoadedLibrary};
use super::providers::{Provider, SessionOptions};

/// The probe graph: x [1, 4, 16, 16] -> y [1, 8, 16, 16], both float32
/// (written by `src/runtime/make_probe_graph.py`).
pub const PROBE_GRAPH: &[u8] = include_bytes!("probe.onnx");
pub const PROBE_INPUT_SHAPE: [usize; 4] = [1, 4, 16, 16];

/// Largest difference from the CPU that still counts as the same result.
/// The probe's outputs are sigmoids in (0, 1) of sums of 36 + 16 products of
/// multiples of 1/64: fp32 on any device agrees to ~1e-6; TF32 (10-bit
/// mantissa) to ~1e-3; a wrong kernel is off by far more.
pub const PROBE_TOLERANCE: f32 = 2e-3;

/// What `info` reports for one provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    pub name: &'static str,
    pub usable: bool,
    /// Why it cannot be used (None when usable).
    pub reason: Option<String>,
    /// The probe's largest difference from the CPU.
    pub max_abs_diff_vs_cpu: Option<f32>,
    /// The GPU and library versions (GPU providers only).
    pub gpu: Option<GpuInfo>,
    /// The GPU libraries loaded, and from where.
    pub libraries: Vec<LoadedLibrary>,
}

/// The probe's input: a fixed pattern in [-1, 1].
pub fn probe_input() -> Vec<f32> {
    let count: usize = PROBE_INPUT_SHAPE.iter().product();
    (0..count)
        .map(|i| ((i * 29 % 41) as f32 - 20.0) / 20.0)
        .collect()
}

/// The largest absolute difference between two outputs (infinite when they
/// differ in length or one holds NaN).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0.0f32, |worst, (x, y)| {
        let diff = (x - y).abs();
        if diff.is_nan() {
            f32::INFINITY
        } else {
            worst.max(diff)
        }
    })
}

/// Turns an ONNX Runtime error from a GPU run into what it means here.
pub fn explain_gpu_failure(message: &str, gpu: &GpuInfo) -> String {
    let lower = message.to_ascii_lowercase();
    let sm = gpu.sm_name().unwrap_or_else(|| "this GPU".to_string());
    if lower.contains("no kernel image is available") || lower.contains("invalid device function") {
        let mut reason = format!("no kernels for {sm} in this ONNX Runtime build");
        if gpu.tegra_release.is_some() {
            reason.push_str(
                "; on a Jetson use JetPack's ONNX Runtime build (see the README's Jetson section)",
            );
        }
        return format!("{reason} ({message})");
    }
    if lower.contains("driver version is insufficient") || lower.contains("cuda driver version") {
        let supports = gpu.driver_cuda.as_deref().unwrap_or("an older CUDA");
        return format!(
            "the NVIDIA driver supports CUDA {supports}, this ONNX Runtime build needs CUDA 13: update the driver ({message})"
        );
    }
    if lower.contains("no cuda-capable device") || lower.contains("cudaerrornodevice") {
        return format!("no CUDA GPU is visible ({message})");
    }
    if lower.contains("libcuda.so") && lower.contains("cannot open shared object") {
        return format!(
            "the NVIDIA driver is not installed (libcuda.so.1 not found): the set-up brings CUDA's and cuDNN's libraries, the driver must come from the system ({message})"
        );
    }
    if lower.contains("invalid device ordinal") {
        return format!("there is no GPU with that --device number ({message})");
    }
    message.to_string()
}

/// The libraries `provider` needs, loaded; the reason when one is missing.
pub fn load_provider_libraries(
    provider: Provider,
    ort_library: &std::path::Path,
) -> (Vec<LoadedLibrary>, Option<String>) {
    let mut libraries = Vec::new();
    if provider == Provider::Cpu {
        return (libraries, None);
    }
    let cuda = gpu_libs::load_cuda(Some(ort_library));
    libraries.extend(cuda.loaded.iter().cloned());
    if let Some(missing) = &cuda.missing {
        return (libraries, Some(missing.clone()));
    }
    if provider == Provider::TensorRt {
        let tensorrt = gpu_libs::load_tensorrt(Some(ort_library));
        libraries.extend(tensorrt.loaded.iter().cloned());
        if let Some(missing) = &tensorrt.missing {
            return (libraries, Some(missing.clone()));
        }
    }
    (libraries, None)
}

/// Options the probe opens its session with on `provider`.
pub fn probe_options(provider: Provider, device_id: i32) -> SessionOptions {
    SessionOptions {
        provider,
        device_id,
        threads: 1,
        ..SessionOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_graph_is_the_committed_file() {
        // ONNX protobuf starts with ir_version (field 1, varint) = 8.
        assert_eq!(&PROBE_GRAPH[..2], &[0x08, 0x08]);
        assert_eq!(probe_input().len(), 4 * 16 * 16);
        assert!(probe_input().iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn a_missing_driver_is_named_as_such() {
        let message = "Failed to load library libonnxruntime_providers_cuda.so with error: libcuda.so.1: cannot open shared object file: No such file or directory";
        let reason = explain_gpu_failure(message, &GpuInfo::default());
        assert!(
            reason.starts_with("the NVIDIA driver is not installed (libcuda.so.1 not found)"),
            "{reason}"
        );
        assert!(reason.ends_with(&format!("({message})")), "{reason}");
    }

    #[test]
    fn differences_count_nan_as_infinite() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert_eq!(max_abs_diff(&[1.0], &[f32::NAN]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f32::INFINITY);
    }

    #[test]
    fn missing_kernels_name_the_architecture() {
        let orin = GpuInfo {
            compute_capability: Some("8.7".into()),
            tegra_release: Some("# R36 (release), REVISION: 4.0".into()),
            ..GpuInfo::default()
        };
        let reason = explain_gpu_failure(
            "CUDA failure 209: no kernel image is available for execution on the device",
            &orin,
        );
        assert!(
            reason.starts_with("no kernels for sm_87 in this ONNX Runtime build"),
            "{reason}"
        );
        assert!(reason.contains("JetPack"), "{reason}");
    }

    #[test]
    fn an_old_driver_says_to_update_it() {
        let old = GpuInfo {
            driver_cuda: Some("12.4".into()),
            ..GpuInfo::default()
        };
        let reason = explain_gpu_failure(
            "CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version",
            &old,
        );
        assert!(
            reason.contains("supports CUDA 12.4") && reason.contains("update the driver"),
            "{reason}"
        );
    }

    #[test]
    fn unknown_failures_are_kept_verbatim() {
        assert_eq!(
            explain_gpu_failure("something else", &GpuInfo::default()),
            "something else"
        );
    }
}
