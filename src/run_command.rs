//! `tadsr-edge run`: the batch over inputs. One bad input prints one line
//! and the batch goes on; every output is written atomically.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use tadsr_edge::image_io::{self, InputLimits};
use tadsr_edge::naming::{self, OutputTarget};
use tadsr_edge::pipeline::{
    ColorFix, Pipeline, PipelineConfig, Progress, ProviderChoice, RunOptions, TilingMode,
};
use tadsr_edge::runtime::Provider;
use tadsr_edge::Error;

use crate::cli::{ColorFixArg, ProviderArg, RunArgs, TilingArg, EXIT_INPUT_FAILED};

/// Exit code after Ctrl-C.
const EXIT_INTERRUPTED: i32 = 130;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The model folder when `--model` is not given.
pub fn default_model_dir() -> PathBuf {
    let real = PathBuf::from("models/tadsr");
    if real.join("manifest.json").is_file() {
        real
    } else {
        PathBuf::from("models/tiny")
    }
}

pub fn provider_choice(arg: ProviderArg) -> ProviderChoice {
    match arg {
        ProviderArg::Auto => ProviderChoice::Auto,
        ProviderArg::Cpu => ProviderChoice::Only(Provider::Cpu),
        ProviderArg::Cuda => ProviderChoice::Only(Provider::Cuda),
        ProviderArg::Tensorrt => ProviderChoice::Only(Provider::TensorRt),
    }
}

fn run_options(args: &RunArgs, pipeline: &Pipeline) -> RunOptions {
    let mut options = RunOptions::from_bundle(pipeline.bundle());
    if !args.timesteps.is_empty() {
        options.timesteps = args.timesteps.clone();
    }
    if let Some(upscale) = args.upscale {
        options.upscale = upscale;
    }
    if let Some(process_size) = args.process_size {
        options.process_size = process_size;
    }
    options.tile_px = args.tile;
    options.tile_overlap_px = args.tile_overlap;
    options.tiling = match args.tiling {
        TilingArg::Staged => TilingMode::Staged,
        TilingArg::Latent => TilingMode::Latent,
    };
    if let Some(color_fix) = args.color_fix {
        options.color_fix = match color_fix {
            ColorFixArg::Adain => ColorFix::Adain,
            ColorFixArg::Wavelet => ColorFix::Wavelet,
            ColorFixArg::None => ColorFix::None,
        };
    }
    options.seed = args.seed;
    options
}

/// A progress bar over one image's tiles, or nothing when hidden.
struct TileBar(Option<ProgressBar>);

impl TileBar {
    fn new(visible: bool, label: &str) -> Self {
        if !visible {
            return TileBar(None);
        }
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} tiles {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        TileBar(Some(bar))
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Progress for TileBar {
    fn start(&self, total_steps: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total_steps);
        }
    }
    fn step(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}

/// Runs the batch; returns the exit code.
pub fn run(ort_lib: Option<&Path>, args: &RunArgs) -> anyhow::Result<i32> {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: stop now. Outputs are renamed into place only
            // when complete, so nothing partial is left under its name.
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    let inputs = image_io::expand_inputs(&args.inputs).context("cannot list the inputs")?;
    if inputs.is_empty() {
        anyhow::bail!("no input images found (png, jpg, webp, bmp, tiff)");
    }
    let target = naming::output_target(&args.output, inputs.len())?;
    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let mut config = PipelineConfig::new(&model_dir);
    config.ort_lib = ort_lib.map(Path::to_path_buf);
    config.provider = provider_choice(args.provider);
    config.device_id = args.device;
    config.threads = args.threads;
    config.prompt_embeds = args.prompt_embeds.clone();
    config.tile_px = args.tile;
    let load_start = Instant::now();
    let mut pipeline = Pipeline::load(&config)?;
    pipeline.set_cancel_flag(&INTERRUPTED);
    let session_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let options = run_options(args, &pipeline);
    // Options are checked once, before any work, as usage errors.
    options.check(pipeline.schedule())?;
    let providers = pipeline.providers();
    if !args.quiet {
        for fallback in pipeline.fallbacks() {
            eprintln!("note: {fallback}");
        }
        eprintln!(
            "model {} loaded in {session_ms:.0} ms; encoder on {}, unet on {}, decoder on {}",
            pipeline.bundle().root().display(),
            providers.vae_encoder,
            providers.unet,
            providers.vae_decoder
        );
    }
    if let OutputTarget::Dir(dir) = &target {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
    }
    let limits = InputLimits {
        max_pixels: args.max_pixels,
        ..InputLimits::default()
    };
    let show_bars = !args.quiet && std::io::stderr().is_terminal();
    let collisions = naming::check_collisions(&target, &inputs, &options.timesteps);
    let several_timesteps = options.timesteps.len() > 1;
    let mut failed = 0usize;
    for (input, collision) in inputs.iter().zip(collisions) {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let report_failure = |error: &Error| {
            eprintln!(
                "error: {}: {}",
                input.display(),
                error.to_string().replace('\n', " ")
            )
        };
        if let Err(error) = collision {
            report_failure(&error);
            failed += 1;
            continue;
        }
        let read_start = Instant::now();
        let image = match image_io::read_input(input, &limits) {
            Ok(image) => image,
            Err(error) => {
                report_failure(&error);
                failed += 1;
                continue;
            }
        };
        let read_ms = read_start.elapsed().as_secs_f64() * 1e3;
        let bar = TileBar::new(
            show_bars,
            &input.file_name().unwrap_or_default().to_string_lossy(),
        );
        let result = pipeline.upscale(&image, &options, &bar);
        bar.finish();
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(Error::Interrupted) => break,
            Err(error) => {
                report_failure(&error);
                failed += 1;
                continue;
            }
        };
        for upscaled in outputs {
            let output_path =
                naming::output_path(&target, input, upscaled.timestep, several_timesteps);
            let write_start = Instant::now();
            if let Err(error) = image_io::write_atomically(&upscaled.image, &output_path) {
                report_failure(&error);
                failed += 1;
                continue;
            }
            let write_ms = write_start.elapsed().as_secs_f64() * 1e3;
            let timings = upscaled.timings;
            if args.json {
                println!(
                    "{}",
                    json!({
                        "input": input,
                        "output": output_path,
                        "input_size": [image.width, image.height],
                        "output_size": [upscaled.image.width(), upscaled.image.height()],
                        "timestep": upscaled.timestep,
                        "provider": providers,
                        "ms": {
                            "read": read_ms,
                            "preprocess": timings.preprocess,
                            "encoder": timings.encoder,
                            "unet": timings.unet,
                            "decoder": timings.decoder,
                            "blend": timings.blend,
                            "color_fix": timings.color_fix,
                            "postprocess": timings.postprocess,
                            "write": write_ms,
                            "total": timings.total() + write_ms,
                        },
                    })
                );
            } else if !args.quiet {
                eprintln!(
                    "{} -> {} ({}x{} -> {}x{}, t={}, {:.0} ms)",
                    input.display(),
                    output_path.display(),
                    image.width,
                    image.height,
                    upscaled.image.width(),
                    upscaled.image.height(),
                    upscaled.timestep,
                    timings.total() + write_ms
                );
            }
        }
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!(
            "error: interrupted; outputs already written are complete, nothing partial was left"
        );
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(if failed > 0 { EXIT_INPUT_FAILED } else { 0 })
}
