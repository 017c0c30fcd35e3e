//! The command line's arguments: clap definitions and their value checks,
//! nothing else. Read by `commands/` and `main.rs`; uses only the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Largest `--process-size`.
pub const MAX_PROCESS_SIZE: u32 = 8192;
/// Largest `--tile` and `--tile-overlap`.
pub const MAX_TILE: u32 = 16384;
/// Largest `--max-pixels` (16384 x 16384 x 16).
pub const MAX_MAX_PIXELS: u64 = 1 << 32;
/// Largest `--device`.
pub const MAX_DEVICE: u32 = 255;
/// `--threads` may be at most this many times the usable CPUs: more
/// intra-op threads than cores only slow ONNX Runtime down.
pub const THREADS_PER_CPU: usize = 4;

/// The usable CPUs (affinity and cgroup limits included).
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--tile`: `auto` (tile only when the image does not fit the memory
/// budget) or a side in pixels (0: no tiling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileArg {
    Auto,
    Px(u32),
}

fn parse_tile(text: &str) -> Result<TileArg, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(TileArg::Auto);
    }
    let side: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is neither auto nor a whole number of pixels"))?;
    if side > MAX_TILE {
        return Err(format!("{side} is over the largest tile, {MAX_TILE}"));
    }
    Ok(TileArg::Px(side))
}

/// `info --plan WxH`: an output image's size, each side 1 to
/// [`MAX_PLAN_SIDE`].
fn parse_output_size(text: &str) -> Result<(u32, u32), String> {
    let usage = || format!("{text:?} is not WxH (e.g. 2048x1536, output pixels)");
    let (width, height) = text.split_once(['x', 'X']).ok_or_else(usage)?;
    let side = |part: &str| -> Result<u32, String> {
        let value: u32 = part.trim().parse().map_err(|_| usage())?;
        if value == 0 || value > MAX_PLAN_SIDE {
            return Err(format!(
                "{value} is not a side from 1 to {MAX_PLAN_SIDE} (4x the largest input side)"
            ));
        }
        Ok(value)
    };
    Ok((side(width)?, side(height)?))
}

/// The largest output side `info --plan` takes: 4x the largest input side
/// the image reader accepts.
pub const MAX_PLAN_SIDE: u32 = 4 * tadsr_edge::image::io::DEFAULT_MAX_SIDE;

/// Where `info --plan` plans the stages to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanOn {
    /// ONNX Runtime's CPU provider: each stage hands its memory back after
    /// its run; the weights are the measured figures.
    Cpu,
    /// CUDA or TensorRT: the budget is the GPU's (a Jetson's: the host's);
    /// sessions keep their memory; the weights are the graph files' bytes.
    Gpu,
}

fn parse_max_memory(text: &str) -> Result<u64, String> {
    tadsr_edge::system_memory::parse_size(text)
}

/// `--threads`: 0 (one per core) up to [`THREADS_PER_CPU`] x the usable CPUs.
/// A bound of `golden`: a finite number over 0 (NaN would pass every case).
fn parse_bound<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + Into<f64> + Copy,
{
    let value: T = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    let number: f64 = value.into();
    if !number.is_finite() || number <= 0.0 {
        return Err(format!("{text:?}: give a finite number over 0"));
    }
    Ok(value)
}

fn parse_threads(text: &str) -> Result<usize, String> {
    let threads: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    let cpus = usable_cpus();
    let max = THREADS_PER_CPU * cpus;
    if threads > max {
        return Err(format!(
            "{threads} is over {max} ({THREADS_PER_CPU} per usable CPU, {cpus} here); 0 uses one per core"
        ));
    }
    Ok(threads)
}

const ROOT_EXAMPLES: &str = "\
Examples:
  tadsr-edge info --model models/tiny
  tadsr-edge run photo.png -o photo_x4.png --model models/tiny
  tadsr-edge run photos/ -o out/ --tile 512 --timestep 200,500,800

ONNX Runtime is found in this order: --ort-lib, ORT_DYLIB_PATH, the set-up's
cache (${XDG_CACHE_HOME:-~/.cache}/tadsr-edge, written by `make setup`), an
importable Python onnxruntime.";

const RUN_EXAMPLES: &str = "\
Examples:
  tadsr-edge run photo.png -o photo_x4.png
  tadsr-edge run photos/ -o out/ --tile 512 --tile-overlap 64
  tadsr-edge run a.jpg b.png -o out/ -t 200,500,800 --json
  tadsr-edge run scan.tiff -o big.png --provider cpu --threads 2 --seed 7
  tadsr-edge run photos/ -o out/ --skip-existing   (resume an interrupted batch)

Exit codes: 0 all written; 1 some inputs failed (one line each, the rest were
written); 2 usage, model or runtime errors; 130 SIGINT (Ctrl-C), 143 SIGTERM,
129 SIGHUP: stopped cleanly, only complete outputs left (--skip-existing resumes).";

const BENCH_EXAMPLES: &str = "\
Examples:
  tadsr-edge bench --model models/tiny --size 512 --runs 10
  tadsr-edge bench --model models/sd21 --size 512 --runs 3 --warmup 1 --threads 2 --json
  tadsr-edge bench --model models/sd21 --size 2048 --tile 512 --runs 1 --warmup 0";

const INFO_EXAMPLES: &str = "\
Examples:
  tadsr-edge info
  tadsr-edge info --model models/tiny
  tadsr-edge info --model models/sd21 --json
  tadsr-edge info --model models/sd21 --plan 2048x1536 --plan-on gpu --max-memory 6G";

#[derive(Parser, Debug)]
#[command(name = "tadsr-edge", version, about = "TADSR one-step diffusion 4x super-resolution on ONNX Runtime", after_help = ROOT_EXAMPLES)]
pub struct Cli {
    /// Path of libonnxruntime.so (or a folder holding it); overrides ORT_DYLIB_PATH.
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Upscale images (files or folders) with a model bundle.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Measure latency per stage, end to end, throughput and peak memory.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
    /// Show ONNX Runtime's version and library, the usable execution providers, a bundle's summary, and (--plan WxH) the tile --tile auto would choose.
    #[command(after_help = INFO_EXAMPLES)]
    Info(InfoArgs),
    /// Run a bundle's golden cases (PyTorch references) on a provider and report the error.
    #[command(after_help = GOLDEN_EXAMPLES)]
    Golden(GoldenArgs),
    /// Tokenize a prompt with a bundle's tokenizer; with -o, write its embedding by the bundle's text encoder as a .npy for --prompt-embeds.
    #[command(after_help = PROMPT_EXAMPLES)]
    Prompt(PromptArgs),
}

const PROMPT_EXAMPLES: &str = "\
Examples:
  tadsr-edge prompt --model models/tadsr \"a photo of a cat, sharp fur\"
  tadsr-edge prompt --model models/tadsr \"a photo of a cat, sharp fur\" -o cat.npy
  tadsr-edge run photo.png -o photo_x4.png --model models/tadsr --prompt-embeds cat.npy";

/// `tadsr-edge prompt`.
#[derive(Debug, Args)]
pub struct PromptArgs {
    /// The text, encoded exactly as given (the authors' code conditions on "TAGS, PROMPT,").
    pub text: String,
    /// Model bundle folder with a text encoder (exported with --text-encoder) [default: models/tadsr if present, else models/nano, else models/tiny].
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Write the prompt embedding here ([1, tokens, width] float32 .npy, written atomically), for `run --prompt-embeds`. Without it only the tokens are shown and no model is loaded.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Intra-op threads for the text encoder; 0 = one per core; at most 4 per usable CPU.
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    pub threads: usize,
    /// One JSON object on stdout (the ids, the token counts, the file written).
    #[arg(long)]
    pub json: bool,
}

const GOLDEN_EXAMPLES: &str = "\
Examples:
  tadsr-edge golden --model models/tiny --provider cuda
  tadsr-edge golden --model models/tiny-fp16 --golden models/tiny/golden --provider cuda --min-psnr 35";

/// GPU settings shared by run, bench and golden.
#[derive(Args, Debug, Clone)]
pub struct GpuArgs {
    /// GPU index (0..255) for cuda and tensorrt [default: 0]; an error with --provider cpu.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=MAX_DEVICE as i64))]
    pub device: Option<u32>,
    /// Allow TF32 tensor-core math for fp32 graphs on CUDA (faster; results move by ~1e-3).
    #[arg(long)]
    pub tf32: bool,
    /// How cuDNN picks convolution algorithms on CUDA (heuristic: no search; exhaustive: benchmark each shape first).
    #[arg(long, value_enum, default_value_t = ConvSearchArg::Heuristic)]
    pub cudnn_conv_search: ConvSearchArg,
    /// TensorRT fp16 kernels.
    #[arg(long, value_enum, default_value_t = OnOff::On, value_name = "on|off")]
    pub trt_fp16: OnOff,
    /// Most scratch memory a TensorRT engine build may use, in MiB.
    #[arg(long, default_value_t = tadsr_edge::runtime::providers::DEFAULT_TRT_WORKSPACE_MIB, value_name = "MIB", value_parser = parse_workspace)]
    pub trt_workspace_mib: usize,
    /// Tiles of one shape run as one batch of up to N (the graphs have a batch axis): fewer, larger runs, for GPUs; 1 = one tile per run. Memory grows with N.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub tile_batch: u32,
    /// Open the encoder, UNet and decoder for the run's one shape when every image (untiled) or every tile (fixed tiles) has it: ONNX Runtime then folds the graphs' shape arithmetic, which a GPU provider runs on the CPU between kernels. auto: on the CUDA provider (TensorRT builds for its profile's shapes itself).
    #[arg(long, value_enum, default_value_t = StaticShapesArg::Auto)]
    pub static_shapes: StaticShapesArg,
    /// A further CUDA provider setting, KEY=VALUE (repeatable), e.g. prefer_nhwc=1; for measurements. Known keys: prefer_nhwc, fuse_conv_bias, cudnn_conv_use_max_workspace, cudnn_conv1d_pad_to_nc1d, gpu_mem_limit, arena_extend_strategy, do_copy_in_default_stream, use_ep_level_unified_stream, enable_skip_layer_norm_strict_mode, sdpa_kernel, tunable_op_enable, tunable_op_tuning_enable, tunable_op_max_tuning_duration_ms. An error with --provider cpu.
    #[arg(long = "cuda-option", value_name = "KEY=VALUE", value_parser = tadsr_edge::runtime::providers::parse_cuda_option)]
    pub cuda_options: Vec<(String, String)>,
    /// CUDA graphs: the CUDA provider captures each graph opened for one shape (--static-shapes) once and replays it, with its inputs and outputs in GPU memory at fixed addresses. Not yet measured on a GPU; a graph the provider refuses opens without, with a note.
    #[arg(long)]
    pub cuda_graph: bool,
}

impl GpuArgs {
    /// The device number (0 when not given).
    pub fn device_id(&self) -> i32 {
        self.device.map_or(0, |d| d as i32)
    }

    /// Refuses GPU settings with `--provider cpu`, where they mean nothing.
    pub fn check_provider(&self, cpu_only: bool) -> Result<(), tadsr_edge::error::Error> {
        let invalid = |m: String| Err(tadsr_edge::error::Error::InvalidOption(m));
        if !cpu_only {
            return Ok(());
        }
        if let Some(device) = self.device {
            return invalid(format!(
                "--device {device} selects a GPU for --provider cuda or tensorrt; it means nothing with --provider cpu"
            ));
        }
        if self.cuda_graph {
            return invalid(
                "--cuda-graph is for --provider cuda; it means nothing with --provider cpu".into(),
            );
        }
        if let Some((key, value)) = self.cuda_options.first() {
            return invalid(format!(
                "--cuda-option {key}={value} is for --provider cuda or tensorrt; it means nothing with --provider cpu"
            ));
        }
        Ok(())
    }

    /// Sets the pipeline's GPU options.
    pub fn apply(&self, config: &mut tadsr_edge::pipeline::PipelineConfig) {
        config.device_id = self.device_id();
        config.tf32 = self.tf32;
        config.conv_search = match self.cudnn_conv_search {
            ConvSearchArg::Heuristic => tadsr_edge::runtime::ConvSearch::Heuristic,
            ConvSearchArg::Exhaustive => tadsr_edge::runtime::ConvSearch::Exhaustive,
            ConvSearchArg::Default => tadsr_edge::runtime::ConvSearch::Default,
        };
        config.tensorrt.fp16 = self.trt_fp16 == OnOff::On;
        config.tensorrt.workspace_bytes = self.trt_workspace_mib << 20;
        config.tile_batch = self.tile_batch as usize;
        config.cuda_options = self.cuda_options.clone();
        config.cuda_graph = self.cuda_graph;
        config.static_shapes = match self.static_shapes {
            StaticShapesArg::Auto => tadsr_edge::pipeline::StaticShapes::Auto,
            StaticShapesArg::On => tadsr_edge::pipeline::StaticShapes::On,
            StaticShapesArg::Off => tadsr_edge::pipeline::StaticShapes::Off,
        };
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaticShapesArg {
    Auto,
    On,
    Off,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvSearchArg {
    Heuristic,
    Exhaustive,
    Default,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

fn parse_workspace(text: &str) -> Result<usize, String> {
    let mib: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of MiB"))?;
    if !(64..=1 << 20).contains(&mib) {
        return Err(format!("{mib} MiB is outside 64..1048576"));
    }
    Ok(mib)
}

/// Running the networks on a Triton Inference Server.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Run the three networks on a Triton Inference Server (its KServe v2 HTTP endpoint, e.g. http://127.0.0.1:8000) serving the repository `python -m export.triton` wrote for this bundle; the rest runs here. --model still names the bundle (manifest, prompt).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: images in flight at once (1..64), so one client keeps several server instances or GPUs busy.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub inflight: u32,
    /// With --server: seconds one request may take (1..86400).
    #[arg(long, default_value_t = 300, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub server_timeout: u64,
    /// With --server: tries after the first on transient errors (connection refused, timeouts, HTTP 429/502/503/504), waiting 0.25 s, then twice as long each time (at most 5 s).
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retries: u32,
}

impl ServerArgs {
    /// Options that only mean something with --server, and `--tile-batch`
    /// (`tile_batch`), which means nothing with it.
    pub fn check(&self, tile_batch: u32) -> Result<(), tadsr_edge::Error> {
        if self.server.is_some() && tile_batch > 1 {
            return Err(tadsr_edge::Error::InvalidOption(format!(
                "--tile-batch {tile_batch} is for local runs: with --server the tiles go as separate requests (--inflight), which the server batches (dynamic batching)"
            )));
        }
        if self.server.is_none() && self.inflight > 1 {
            return Err(tadsr_edge::Error::InvalidOption(format!(
                "--inflight {} needs --server: locally the cores are shared by one image at a time (see --threads)",
                self.inflight
            )));
        }
        Ok(())
    }

    /// The client's settings, when --server is given.
    pub fn options(&self) -> Option<tadsr_edge::remote::ServerOptions> {
        self.server.as_deref().map(|url| {
            let mut options = tadsr_edge::remote::ServerOptions::new(url);
            options.request_timeout = std::time::Duration::from_secs(self.server_timeout);
            options.retries = self.retries;
            options.requests = tadsr_edge::remote::RequestSlots::new(self.inflight as usize);
            options
        })
    }
}

#[derive(Args, Debug)]
pub struct GoldenArgs {
    /// Model bundle folder.
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: PathBuf,
    /// Folder with cases.json and the references [default: the bundle's golden/].
    #[arg(long, value_name = "DIR")]
    pub golden: Option<PathBuf>,
    /// Execution provider.
    #[arg(long, value_enum, default_value_t = ProviderArg::Cpu)]
    pub provider: ProviderArg,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Largest error allowed per sample, pixels in [0, 1] [default: 1e-4 on cpu, 1e-3 on a GPU; none with --min-psnr].
    #[arg(long, value_name = "X", value_parser = parse_bound::<f32>)]
    pub max_abs_error: Option<f32>,
    /// Smallest PSNR allowed per case, in dB (for fp16 bundles against fp32 references).
    #[arg(long, value_name = "DB", value_parser = parse_bound::<f64>)]
    pub min_psnr: Option<f64>,
    /// Intra-op threads per session; 0 = one per core.
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    pub threads: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Input images or folders (their subfolders too with --recursive): png, jpg, webp, bmp, tiff.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output file (one input) or folder (created if missing).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Model bundle folder [default: models/tadsr if present, else models/nano, else models/tiny].
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Timestep(s) 0..999 (the bundle's schedule): small = faithful, large = more generated detail. Several give several outputs.
    #[arg(
        short = 't',
        long = "timestep",
        value_delimiter = ',',
        value_name = "T[,T...]"
    )]
    pub timesteps: Vec<u32>,
    /// Upscale factor, 1..16 [default: the bundle's, 4].
    #[arg(short = 's', long, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub upscale: Option<u32>,
    /// Inputs whose short side is below process-size/upscale are enlarged first; 0 = off, at most 8192 [default: the bundle's, 512].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(0..=MAX_PROCESS_SIZE as i64))]
    pub process_size: Option<u32>,
    /// auto: no tiles when the image fits the memory budget (--max-memory, else what the machine has free), else the largest tile that fits. Or a tile side in output pixels (0 = no tiling; a multiple of 8 from 64 to 16384). See --tile-shape.
    #[arg(long, default_value = "auto", value_name = "auto|PX", value_parser = parse_tile)]
    pub tile: TileArg,
    /// Memory a run may plan for with --tile auto, e.g. 6G or 800M [default: the machine's available memory less 10%, or 80% of the GPU's].
    #[arg(long, value_name = "SIZE", value_parser = parse_max_memory)]
    pub max_memory: Option<u64>,
    /// Overlap between tiles in output pixels (multiple of 8, at most half the tile) [default: 64; for tiles under 128 px half the tile, rounded down to a multiple of 8].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(0..=MAX_TILE as i64))]
    pub tile_overlap: Option<u32>,
    /// staged: encoder, UNet and decoder all tiled (bounded memory); latent: only the UNet, in the authors' 96-cell tiles wherever the latent is larger (also under --tile auto; --tile 0 turns it off), the VAE whole.
    #[arg(long, value_enum, default_value_t = TilingArg::Staged)]
    pub tiling: TilingArg,
    /// Staged tiles all of the tile's shape (fixed: one GPU engine or plan, batches on a server; edge tiles overlap more) or the fewest that cover the image (balanced); auto: fixed on GPUs and with --server, balanced on the CPU.
    #[arg(long, value_enum, default_value_t = TileShapeArg::Auto)]
    pub tile_shape: TileShapeArg,
    /// Color fix against the upscaled input [default: the bundle's, adain].
    #[arg(long, value_enum)]
    pub color_fix: Option<ColorFixArg>,
    /// How samples become 8-bit: round (once, at the end: the most accurate) or truncate (before and after the color fix, as the authors' test script does through torchvision's ToPILImage: their PNGs value for value, about half a level darker; 8-bit outputs even for 16-bit inputs).
    #[arg(long, value_enum, default_value_t = RoundingArg::Round)]
    pub rounding: RoundingArg,
    /// Execution provider; auto tries tensorrt, cuda, cpu.
    #[arg(long, value_enum, default_value_t = ProviderArg::Auto)]
    pub provider: ProviderArg,
    #[command(flatten)]
    pub gpu: GpuArgs,
    #[command(flatten)]
    pub remote: ServerArgs,
    /// Sample the latent with this seed instead of taking the posterior mean.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Prompt embedding [1, 77, D] .npy replacing the bundle's default.
    #[arg(long, value_name = "FILE")]
    pub prompt_embeds: Option<PathBuf>,
    /// Text the UNet is conditioned on instead of the bundle's default prompt, encoded by the bundle's tokenizer and text encoder (bundles exported with --text-encoder; run on the CPU, once). Encoded exactly as given: the authors' code conditions on "TAGS, PROMPT,".
    #[arg(long, value_name = "TEXT", conflicts_with = "prompt_embeds")]
    pub prompt: Option<String>,
    /// A text per input, from DIR/NAME.txt (NAME: the input's file name up to its first dot, in the subfolder of its output under -o DIR), encoded by the bundle's text encoder: the layout of the txt/ folder the authors' test script writes beside its outputs, so their per-image tags reproduce. An input without its file fails (one line), the others go on.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["prompt", "prompt_embeds"])]
    pub prompt_dir: Option<PathBuf>,
    /// Intra-op threads per session; 0 = one per core; at most 4 per usable CPU.
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    pub threads: usize,
    /// Most pixels processed for one input (its output, or its enlarged size under the minimum-size rule), 1..2^32.
    #[arg(long, default_value_t = tadsr_edge::image::io::DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(1..=MAX_MAX_PIXELS))]
    pub max_pixels: u64,
    /// Read folders with their subfolders: outputs go to the same subfolders under -o DIR (created as needed). Symbolic links to folders, hidden folders (.name) and the output folder itself are not entered
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Format of the outputs written into a folder (-o DIR); with -o FILE its extension decides [default: png]
    #[arg(long, value_enum)]
    pub format: Option<OutputFormatArg>,
    /// JPEG quality of .jpg outputs, 1..100 (PNG, TIFF, BMP and WebP are written lossless) [default: 95]
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,
    /// Leave the outputs that already exist as regular files, and skip the inputs whose outputs all exist: a batch resumed after an interruption redoes nothing (outputs are written atomically, so one that exists is complete)
    #[arg(long)]
    pub skip_existing: bool,
    /// Compute nothing: print the plan, each input and the output it would get (sizes from the headers), after every check that needs no model; nothing is written
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// One JSON line per output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileShapeArg {
    Auto,
    Fixed,
    Balanced,
}

impl TileShapeArg {
    /// [`tadsr_edge::pipeline::PipelineConfig::fixed_tiles`].
    pub fn fixed_tiles(self) -> Option<bool> {
        match self {
            TileShapeArg::Auto => None,
            TileShapeArg::Fixed => Some(true),
            TileShapeArg::Balanced => Some(false),
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TilingArg {
    Staged,
    Latent,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormatArg {
    Png,
    Jpg,
    Webp,
    Bmp,
    Tiff,
}

impl OutputFormatArg {
    /// The image format it names.
    pub fn image_format(self) -> image::ImageFormat {
        match self {
            OutputFormatArg::Png => image::ImageFormat::Png,
            OutputFormatArg::Jpg => image::ImageFormat::Jpeg,
            OutputFormatArg::Webp => image::ImageFormat::WebP,
            OutputFormatArg::Bmp => image::ImageFormat::Bmp,
            OutputFormatArg::Tiff => image::ImageFormat::Tiff,
        }
    }

    /// The extension of files of this format.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormatArg::Png => "png",
            OutputFormatArg::Jpg => "jpg",
            OutputFormatArg::Webp => "webp",
            OutputFormatArg::Bmp => "bmp",
            OutputFormatArg::Tiff => "tiff",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundingArg {
    Round,
    Truncate,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ColorFixArg {
    Adain,
    Wavelet,
    None,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ProviderArg {
    Auto,
    Cpu,
    Cuda,
    Tensorrt,
}

/// The largest `bench --size`: its square is `run`'s default `--max-pixels`
/// (a larger one would only run out of memory).
pub const MAX_BENCH_SIZE: u32 = 8192;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model bundle folder [default: models/tadsr if present, else models/nano, else models/tiny].
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output side in pixels (the input is size/upscale, square), up to 8192: the most pixels `run` takes by default (--max-pixels).
    #[arg(long, default_value_t = 512, value_name = "PX",
          value_parser = clap::value_parser!(u32).range(1..=MAX_BENCH_SIZE as i64))]
    pub size: u32,
    /// Tile side in output pixels (0 = no tiling), or auto: what `run` would choose for this size (the machine's free memory, or the GPU's; a server: 8 GiB).
    #[arg(long, default_value = "512", value_name = "auto|PX", value_parser = parse_tile)]
    pub tile: TileArg,
    /// Overlap between tiles in output pixels [default: 64; for tiles under 128 px half the tile, rounded down to a multiple of 8].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(0..=MAX_TILE as i64))]
    pub tile_overlap: Option<u32>,
    /// Measured runs.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Unmeasured runs first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[command(flatten)]
    pub remote: ServerArgs,
    /// Execution provider; auto tries tensorrt, cuda, cpu.
    #[arg(long, value_enum, default_value_t = ProviderArg::Auto)]
    pub provider: ProviderArg,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Intra-op threads per session; 0 = one per core; at most 4 per usable CPU.
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    pub threads: usize,
    /// Timestep [default: the bundle's, 500].
    #[arg(short = 't', long)]
    pub timestep: Option<u32>,
    /// Photo to benchmark on [default: examples/coffee.png].
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model bundle folder (holding manifest.json).
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also check every file's sha256, all of them read again (a run reads only files changed since their last match; slow on large bundles).
    #[arg(long)]
    pub verify: bool,
    /// GPU the providers are probed on [default: 0].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=MAX_DEVICE as i64))]
    pub device: Option<u32>,
    /// With --model: what `run --tile auto` would choose for an output
    /// (upscaled) image of WxH pixels, and its estimated peak memory.
    #[arg(long, value_name = "WxH", value_parser = parse_output_size, requires = "model")]
    pub plan: Option<(u32, u32)>,
    /// Plan for stages on the CPU or on a GPU [default: gpu when CUDA or TensorRT is usable here, else cpu].
    #[arg(long, value_enum, requires = "plan")]
    pub plan_on: Option<PlanOn>,
    /// The budget --plan plans for, e.g. 6G or 800M [default: as `run`: the machine's available memory less 10%, or 80% of the GPU's].
    #[arg(long, value_name = "SIZE", value_parser = parse_max_memory, requires = "plan")]
    pub max_memory: Option<u64>,
}
