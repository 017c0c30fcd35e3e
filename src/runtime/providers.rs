//! Execution providers: the names users type, session options, and the one
//! place that registers a provider (with its TensorRT profile and caches)
//! on a session builder.

use std::fmt;
use std::path::PathBuf;

use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider as _};
use ort::session::builder::SessionBuilder;

/// An execution provider the user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
    /// Not an ONNX Runtime provider: the stage runs on a Triton Inference
    /// Server (`run --server`), wherever that server puts it.
    Triton,
}

impl Provider {
    /// The name users type and see.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::Triton => "triton",
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

/// TensorRT's settings for one session.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRtOptions {
    /// Let TensorRT choose fp16 kernels (`--trt-fp16`).
    pub fp16: bool,
    /// Most scratch memory an engine build may take, in bytes (`--trt-workspace-mib`).
    pub workspace_bytes: usize,
    /// Engine and timing cache folder: one folder per graph and shapes
    /// (see `pipeline::gpu_plan::engine_cache_dir`); None: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Optimisation profile (min, opt, max): `name:dims,name:dims`.
    pub profile: Option<(String, String, String)>,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions {
            fp16: true,
            workspace_bytes: DEFAULT_TRT_WORKSPACE_MIB << 20,
            cache_dir: None,
            profile: None,
        }
    }
}

/// TensorRT's default build workspace: 4 GiB (its own default of 0 means
/// all device memory, on a Jetson all of RAM).
pub const DEFAULT_TRT_WORKSPACE_MIB: usize = 4096;

/// How cuDNN picks convolution algorithms on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvSearch {
    /// cuDNN's heuristics: no search. Measured on an H200 (sd21 fp16,
    /// 512x512): 61.5 ms end to end, against 190-262 ms with `Exhaustive`,
    /// whose VAE runs spent 75 of 91 ms outside the kernels.
    #[default]
    Heuristic,
    /// Benchmark every algorithm on the first run of each shape (ONNX
    /// Runtime's own default).
    Exhaustive,
    /// cuDNN's default algorithm.
    Default,
}

/// How sessions are made.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub provider: Provider,
    pub device_id: i32,
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per core).
    pub threads: usize,
    /// Allow TF32 tensor-core math for fp32 on CUDA (off: results match the
    /// CPU to ~1e-6 instead of ~1e-3).
    pub tf32: bool,
    /// cuDNN's convolution algorithm choice on CUDA.
    pub conv_search: ConvSearch,
    pub tensorrt: TensorRtOptions,
    /// ONNX Runtime's CPU memory arena (keeps freed blocks for reuse).
    pub cpu_arena: bool,
    /// ONNX Runtime's memory pattern planning (per input shape).
    pub memory_pattern: bool,
    /// Return the CPU arena's free memory to the system after every run, so
    /// that the sessions of a pipeline do not each hold their peak.
    pub shrink_cpu_arena: bool,
    /// Hold constant inputs in an I/O binding (copied to the device once);
    /// None: on GPU providers only.
    pub io_binding: Option<bool>,
    /// The graph's sha256 from the bundle manifest: with it, CPU sessions
    /// keep their optimized graph in the cache ([`super::graph_cache`]).
    pub graph_sha256: Option<String>,
    /// Tiles of one shape run together as one batch of up to this many
    /// (`--tile-batch`; 1: one tile per run).
    pub tile_batch: usize,
    /// Named dimensions pinned at load (ONNX Runtime's free-dimension
    /// overrides; see `pipeline::static_shapes`): the graph then accepts
    /// only that shape.
    pub fixed_dims: Vec<(String, i64)>,
    /// Further CUDA provider settings (`--cuda-option`, checked by
    /// [`parse_cuda_option`]), for CUDA and for CUDA behind TensorRT.
    pub cuda_options: Vec<(String, String)>,
    /// CUDA graphs (`--cuda-graph`): the CUDA provider captures the graph's
    /// kernels once and replays them; needs every dimension pinned
    /// (`fixed_dims`) and the inputs and outputs in device memory.
    pub cuda_graph: bool,
    /// Every input and output held in device memory at a fixed address
    /// (`super::device_io`); None: exactly when `cuda_graph`. Forced on in
    /// tests to check the path on the CPU.
    pub device_io: Option<bool>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            provider: Provider::Cpu,
            device_id: 0,
            threads: 0,
            tf32: false,
            conv_search: ConvSearch::default(),
            tensorrt: TensorRtOptions::default(),
            cpu_arena: env_flag("TADSR_EDGE_CPU_ARENA", true),
            memory_pattern: env_flag("TADSR_EDGE_MEMORY_PATTERN", true),
            shrink_cpu_arena: env_flag("TADSR_EDGE_ARENA_SHRINK", true),
            io_binding: None,
            graph_sha256: None,
            tile_batch: 1,
            fixed_dims: Vec::new(),
            cuda_options: Vec::new(),
            cuda_graph: false,
            device_io: None,
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

fn cuda_provider(options: &SessionOptions) -> ep::ExecutionProviderDispatch {
    let search = match options.conv_search {
        ConvSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
        ConvSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
        ConvSearch::Default => ep::cuda::ConvAlgorithmSearch::Default,
    };
    let mut cuda = ep::CUDA::default()
        .with_device_id(options.device_id)
        .with_tf32(options.tf32)
        .with_conv_algorithm_search(search);
    for (key, value) in &options.cuda_options {
        cuda = cuda.with_arbitrary_config(key, value);
    }
    if options.cuda_graph {
        cuda = cuda.with_cuda_graph(true);
    }
    cuda.build().error_on_failure()
}

/// CUDA provider settings `--cuda-option` passes on (ONNX Runtime 1.31's
/// names), with what each does.
pub const CUDA_OPTIONS: &[(&str, &str)] = &[
    (
        "prefer_nhwc",
        "0|1: NHWC layout for convolutions and norms (tensor cores without transposes)",
    ),
    (
        "fuse_conv_bias",
        "0|1: the bias add fused into cuDNN convolutions",
    ),
    (
        "cudnn_conv_use_max_workspace",
        "0|1: let cuDNN take as much workspace as its fastest algorithm wants",
    ),
    (
        "cudnn_conv1d_pad_to_nc1d",
        "0|1: 1-D convolutions padded as [N,C,1,D]",
    ),
    ("gpu_mem_limit", "bytes the provider's arena may hold"),
    (
        "arena_extend_strategy",
        "kNextPowerOfTwo|kSameAsRequested: how the arena grows",
    ),
    (
        "do_copy_in_default_stream",
        "0|1: copies in the compute stream",
    ),
    (
        "use_ep_level_unified_stream",
        "0|1: one stream for the provider",
    ),
    (
        "enable_skip_layer_norm_strict_mode",
        "0|1: exact SkipLayerNorm accumulation",
    ),
    (
        "sdpa_kernel",
        "attention kernels (flags) for fused attention nodes",
    ),
    ("tunable_op_enable", "0|1: tunable kernels"),
    (
        "tunable_op_tuning_enable",
        "0|1: tune tunable kernels on first use",
    ),
    (
        "tunable_op_max_tuning_duration_ms",
        "most milliseconds one tuning may take",
    ),
];

/// Checks one `--cuda-option KEY=VALUE`: a key from [`CUDA_OPTIONS`] (the
/// settings tadsr-edge has its own flag for are refused with the flag's
/// name) and a plain value.
pub fn parse_cuda_option(text: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    let own_flag = match key {
        "device_id" => Some("--device"),
        "use_tf32" => Some("--tf32"),
        "cudnn_conv_algo_search" => Some("--cudnn-conv-search"),
        // it needs the inputs and outputs in device memory, which --cuda-graph sets up
        "enable_cuda_graph" => Some("--cuda-graph"),
        _ => None,
    };
    if let Some(flag) = own_flag {
        return Err(format!("{key} is set with {flag}"));
    }
    if !CUDA_OPTIONS.iter().any(|(known, _)| *known == key) {
        let known: Vec<&str> = CUDA_OPTIONS.iter().map(|(k, _)| *k).collect();
        return Err(format!(
            "unknown CUDA option {key:?}; known: {}",
            known.join(", ")
        ));
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_.-|".contains(c);
    if value.is_empty() || !value.chars().all(plain) {
        return Err(format!(
            "{key}: value {value:?} must be a plain word or number"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Registers the session's provider. TensorRT gets the CUDA provider
/// registered behind it, for the nodes TensorRT does not take.
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
        Provider::Cuda => cuda_provider(options).register(builder),
        Provider::TensorRt => {
            let settings = &options.tensorrt;
            let mut trt = ep::TensorRT::default()
                .with_device_id(options.device_id)
                .with_fp16(settings.fp16)
                .with_max_workspace_size(settings.workspace_bytes);
            if let Some(cache) = &settings.cache_dir {
                let cache = cache.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&cache)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&cache);
            }
            if let Some((min, opt, max)) = &settings.profile {
                trt = trt
                    .with_profile_min_shapes(min)
                    .with_profile_opt_shapes(opt)
                    .with_profile_max_shapes(max);
            }
            trt.build().error_on_failure().register(builder)?;
            cuda_provider(options).register(builder)
        }
        Provider::Triton => Err(ort::Error::new(
            "triton is not an ONNX Runtime provider (use run --server)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_options_are_known_keys_with_plain_values() {
        assert_eq!(
            parse_cuda_option("prefer_nhwc=1"),
            Ok(("prefer_nhwc".to_string(), "1".to_string()))
        );
        assert!(parse_cuda_option("arena_extend_strategy=kSameAsRequested").is_ok());
        let refused = |text: &str| parse_cuda_option(text).unwrap_err();
        assert!(refused("prefer_nhwc").contains("KEY=VALUE"));
        assert!(refused("use_tf32=1").contains("--tf32"));
        assert!(refused("device_id=1").contains("--device"));
        assert!(refused("cudnn_conv_algo_search=EXHAUSTIVE").contains("--cudnn-conv-search"));
        assert!(refused("enable_cuda_graph=1").contains("--cuda-graph"));
        assert!(refused("prefer_nchw=1").contains("unknown CUDA option"));
        assert!(refused("prefer_nhwc=").contains("plain"));
        assert!(refused("prefer_nhwc=1;rm").contains("plain"));
    }
}
