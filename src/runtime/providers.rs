//! Execution providers: the names users type, session options, and the one
//! place that registers a provider (with its TensorRT profile and caches)
//! on a session builder.

use std::fmt;
use std::path::PathBuf;

use ort::ep;
use ort::session::builder::SessionBuilder;

/// An execution provider the user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
}

impl Provider {
    /// The name users type and see.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        }
    }

    /// Order `auto` tries them in.
    pub const PREFERENCE: [Provider; 3] = [Provider::TensorRt, Provider::Cuda, Provider::Cpu];
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How sessions are made.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub provider: Provider,
    pub device_id: i32,
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per core).
    pub threads: usize,
    /// TensorRT engine cache folder.
    pub engine_cache: Option<PathBuf>,
    /// TensorRT optimisation profile: (min, opt, max) shapes per input, e.g.
    /// `latent:1x4x64x64`.
    pub trt_profile: Option<(String, String, String)>,
    /// ONNX Runtime's CPU memory arena (keeps freed blocks for reuse).
    pub cpu_arena: bool,
    /// ONNX Runtime's memory pattern planning (per input shape).
    pub memory_pattern: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            provider: Provider::Cpu,
            device_id: 0,
            threads: 0,
            engine_cache: None,
            trt_profile: None,
            cpu_arena: env_flag("TADSR_EDGE_CPU_ARENA", true),
            memory_pattern: env_flag("TADSR_EDGE_MEMORY_PATTERN", true),
        }
    }
}

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") | Ok("false") => false,
        Ok("1") | Ok("true") => true,
        _ => default,
    }
}

pub(super) fn register_provider(
    builder: &mut SessionBuilder,
    options: &SessionOptions,
) -> std::result::Result<(), ort::Error> {
    match options.provider {
        Provider::Cpu => ep::CPU::default()
            .with_arena_allocator(options.cpu_arena)
            .build()
            .error_on_failure()
            .register(builder),
        Provider::Cuda => ep::CUDA::default()
            .with_device_id(options.device_id)
            .build()
            .error_on_failure()
            .register(builder),
        Provider::TensorRt => {
            let mut trt = ep::TensorRT::default()
                .with_device_id(options.device_id)
                .with_fp16(true);
            if let Some(cache) = &options.engine_cache {
                let cache = cache.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&cache)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&cache);
            }
            if let Some((min, opt, max)) = &options.trt_profile {
                trt = trt
                    .with_profile_min_shapes(min)
                    .with_profile_opt_shapes(opt)
                    .with_profile_max_shapes(max);
            }
            trt.build().error_on_failure().register(builder)
        }
    }
}
