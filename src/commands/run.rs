//! `tadsr-edge run`: the batch over inputs. One bad input prints one line
//! and the batch goes on; every output is written atomically.
//!
//! Over 500 lines: the command's checks before anything runs (inputs,
//! outputs, options, the server) and the batch they feed (workers, fatal
//! errors, each input's steps) read best together; no unit is reused
//! elsewhere. What the UNet is conditioned on (`--prompt`, `--prompt-dir`)
//! is `run_prompt.rs`.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use tadsr_edge::bundle::{Bundle, HashCheck, Manifest};
use tadsr_edge::image::io::{self as image_io, InputLimits};
use tadsr_edge::image::size_plan;
use tadsr_edge::image::tensor::Quantization;
use tadsr_edge::image::write;
use tadsr_edge::naming::{self, shown, shown_os, OutputTarget, Verdict};
use tadsr_edge::pipeline::{
    default_tile_overlap, ColorFix, Pipeline, PipelineConfig, Progress, RunOptions, ShapeHint,
    StageProviders, TilingMode,
};
use tadsr_edge::runtime::Provider;
use tadsr_edge::Error;

use super::run_prompt::{
    check_prompt, prompt_file, prompt_json, read_prompt_file, PromptDir, PromptFailure,
};
use super::signals::{install_signal_handlers, interrupted, INTERRUPTED};
use super::tile_policy::TilePolicy;
use super::{default_model_dir, escape_controls, print_line, provider_choice, ExitNow, Outcome};
use crate::args::{
    ColorFixArg, ProviderArg, RoundingArg, RunArgs, TileArg, TilingArg, MAX_PROCESS_SIZE,
};

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
    // per image under --tile auto (see TilePolicy)
    options.tile_px = match args.tile {
        TileArg::Px(side) => side,
        TileArg::Auto => 0,
    };
    options.tile_overlap_px = args
        .tile_overlap
        .unwrap_or_else(|| default_tile_overlap(options.tile_px));
    options.tiling = tiling_mode(args.tiling);
    if let Some(color_fix) = args.color_fix {
        options.color_fix = match color_fix {
            ColorFixArg::Adain => ColorFix::Adain,
            ColorFixArg::Wavelet => ColorFix::Wavelet,
            ColorFixArg::None => ColorFix::None,
        };
    }
    options.seed = args.seed;
    options.rounding = match args.rounding {
        RoundingArg::Round => Quantization::Round,
        RoundingArg::Truncate => Quantization::Truncate,
    };
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

fn tiling_mode(tiling: TilingArg) -> TilingMode {
    match tiling {
        TilingArg::Staged => TilingMode::Staged,
        TilingArg::Latent => TilingMode::Latent,
    }
}

/// The longest side of the largest image the run will send the networks
/// (TensorRT profiles), from the inputs' headers; bundle defaults assumed
/// 4x and 512 where not given. Unreadable inputs are skipped (they fail
/// later with their own message).
fn largest_model_side(jobs: &[(PathBuf, Vec<PathBuf>)], args: &RunArgs) -> u32 {
    let (upscale, process_size) = (args.upscale.unwrap_or(4), args.process_size.unwrap_or(512));
    jobs.iter()
        .filter_map(|(input, _)| image_io::header_dimensions(input))
        .filter_map(|(w, h)| size_plan::plan_sizes(w, h, upscale, process_size).ok())
        .map(|plan| plan.model.0.max(plan.model.1))
        .max()
        .unwrap_or(0)
}

/// The model-input size (width, height) of every input whose header is
/// readable, with the bundle's defaults where the command line gives none.
fn model_sizes(
    jobs: &[(PathBuf, Vec<PathBuf>)],
    args: &RunArgs,
    manifest: Option<&Manifest>,
) -> Vec<(u32, u32)> {
    let (upscale, process_size) = size_rule(args, manifest);
    jobs.iter()
        .filter_map(|(input, _)| image_io::header_dimensions(input))
        .filter_map(|(w, h)| size_plan::plan_sizes(w, h, upscale, process_size).ok())
        .map(|plan| plan.model)
        .collect()
}

/// The upscale factor and process size a run uses before its bundle is
/// loaded: the command line's, else the manifest's defaults, else 4 and 512.
fn size_rule(args: &RunArgs, manifest: Option<&Manifest>) -> (u32, u32) {
    (
        args.upscale
            .or(manifest.map(|m| m.defaults.upscale))
            .unwrap_or(4),
        args.process_size
            .or(manifest.map(|m| m.defaults.process_size))
            .unwrap_or(512),
    )
}

/// The longest side the authors' encoder takes in one piece: their
/// tiled-VAE hook splits a larger image (1024 px tiles with 32 px of
/// context), pooling GroupNorm statistics over the tiles their way.
const AUTHORS_ENCODER_ONE_TILE_PX: u32 = 1024 + 2 * 32;

/// How a `--tiling latent` run encodes the images the authors' code
/// encodes in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthorsEncoder {
    /// The bundle's encoder segments: their tiles, one pass
    /// (`pipeline::encoder_segments`).
    Segments,
    /// Passes of the tiled encoder graph, one per GroupNorm layer
    /// (`pipeline::authors_encoder`): no segments, or a server.
    Passes,
    /// No tiled encoder graph: whole.
    Whole,
}

/// Under `--tiling latent`, a note when some inputs are larger than the
/// authors' encoder takes whole, saying how this run encodes them.
fn authors_encoder_tiles_note(sizes: &[(u32, u32)], encoder: AuthorsEncoder) -> Option<String> {
    let larger: Vec<(u32, u32)> = sizes
        .iter()
        .copied()
        .filter(|&(w, h)| w.max(h) > AUTHORS_ENCODER_ONE_TILE_PX)
        .collect();
    let (width, height) = largest_model_size(&larger)?;
    let what = format!(
        "--tiling latent: {} input(s) are processed at more than {AUTHORS_ENCODER_ONE_TILE_PX} px on the \
         longer side (the largest at {width}x{height}), which the authors' code encodes in tiles with \
         GroupNorm statistics pooled over them layer by layer",
        larger.len()
    );
    Some(match encoder {
        AuthorsEncoder::Segments => format!(
            "{what}: so does this run, with the bundle's encoder segments (one pass of the encoder, \
             holding every tile's activations at once; by passes, about 23 times slower, where they \
             would take more than half the memory available)"
        ),
        AuthorsEncoder::Passes => format!(
            "{what}: so does this run, at the cost of one pass of the encoder per GroupNorm layer \
             (about 23 times the encoder's time; a bundle with encoder segments, \
             `python -m export.encoder_segments BUNDLE`, does it in one pass where the graphs run here)"
        ),
        AuthorsEncoder::Whole => format!(
            "{what}; this bundle has no tiled encoder graph (exported with --no-tiled-vae), so those \
             images are encoded whole and differ from the authors' outputs (README: Exactness)"
        ),
    })
}

/// The size of the largest image (by pixels) the run will send the
/// networks ([`model_sizes`]); None when no header is readable.
fn largest_model_size(sizes: &[(u32, u32)]) -> Option<(u32, u32)> {
    sizes
        .iter()
        .copied()
        .max_by_key(|(w, h)| u64::from(*w) * u64::from(*h))
}

/// (height, width) when every input has the same model-input size (graphs
/// may then be opened for it, `--static-shapes`); None otherwise. An input
/// whose header cannot be read fails on its own before it reaches a graph.
fn common_model_size(sizes: &[(u32, u32)]) -> Option<(u32, u32)> {
    let (&(width, height), rest) = sizes.split_first()?;
    rest.iter()
        .all(|&size| size == (width, height))
        .then_some((height, width))
}

/// A path as it goes into a `--json` line: the name itself when it is
/// UTF-8 (JSON escapes control characters), the escaped form otherwise.
pub(super) fn json_path(path: &Path) -> String {
    match path.to_str() {
        Some(text) => text.to_string(),
        None => shown(path),
    }
}

/// A message with its control characters escaped: one line, whatever the
/// names in it hold.
fn one_line(text: &str) -> String {
    escape_controls(text)
}

/// A note on the graphs opened for one shape (`--static-shapes`) and run as
/// CUDA graphs (`--cuda-graph`); None when there are none.
fn graph_setup_line(pipeline: &Pipeline) -> Option<String> {
    let pinned: Vec<String> = pipeline
        .fixed_shapes()
        .iter()
        .filter_map(|(name, shape)| shape.map(|(h, w)| format!("{name} {w}x{h}")))
        .collect();
    if pinned.is_empty() {
        return None;
    }
    let graphs: Vec<&str> = pipeline
        .cuda_graphs()
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    let cuda_graphs = if graphs.is_empty() {
        String::new()
    } else {
        format!("; CUDA graphs: {}", graphs.join(", "))
    };
    Some(format!(
        "note: graphs opened for one shape (--static-shapes): {}{cuda_graphs}",
        pinned.join(", ")
    ))
}

/// A note when a bundle whose GroupNorms are in the GPU form (`--group-norm
/// instance`) runs a stage on the CPU, whose kernel sums each group in one
/// float32 run (about 3e-4 off on multi-megapixel groups).
fn cpu_precision_note(pipeline: &Pipeline) -> Option<String> {
    let providers = pipeline.providers();
    let on_cpu =
        [providers.vae_encoder, providers.unet, providers.vae_decoder].contains(&Provider::Cpu);
    (on_cpu && pipeline.bundle().manifest().group_norm_form() == "instance").then(|| {
        "note: this bundle's GroupNorms are in the GPU form (exported with --group-norm instance); on the CPU large images lose precision (about 3e-4 on multi-megapixel groups): for CPU use export with --group-norm rowwise".to_string()
    })
}

/// The options `run` checks before anything else (no bundle needed).
fn check_arguments(args: &RunArgs) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    if let Some(t) = args.timesteps.iter().find(|t| !seen.insert(**t)) {
        return Err(Error::InvalidOption(format!(
            "timestep {t} is given twice in -t; each timestep gives one output"
        ))
        .into());
    }
    if matches!(args.tiling, TilingArg::Latent) {
        // the authors' tiles: 96 latent cells (768 px) with 32 (256 px) of overlap, whatever was asked
        let authors_tile = tadsr_edge::tile_budget::AUTHORS_LATENT_TILE_PX;
        if matches!(args.tile, TileArg::Px(px) if px > 0 && px != authors_tile) {
            return Err(Error::InvalidOption(format!(
                "--tiling latent tiles the UNet in the authors' {authors_tile} px tiles whatever the tile size; \
                 give --tile auto (the default), {authors_tile} or 0 (no tiling), or --tiling staged for tiles of your size"
            ))
            .into());
        }
        if args.tile_overlap.is_some() {
            let cells = tadsr_edge::tiling::LATENT_TILE_OVERLAP;
            return Err(Error::InvalidOption(format!(
                "--tiling latent overlaps the authors' tiles by {} px ({cells} latent cells); \
                 --tile-overlap is for --tiling staged",
                cells * 8
            ))
            .into());
        }
    }
    args.remote.check(args.gpu.tile_batch)?;
    args.gpu
        .check_provider(matches!(args.provider, ProviderArg::Cpu))?;
    Ok(())
}

/// `--format` only for folder outputs (or a file of that format), `--quality`
/// only when the outputs are JPEG: anything else is a usage error, never an
/// option silently ignored.
fn check_output_encoding(target: &OutputTarget, args: &RunArgs) -> anyhow::Result<()> {
    let format = match target {
        OutputTarget::File(file) => write::output_format(file)?,
        OutputTarget::Dir { .. } => args
            .format
            .map_or(image::ImageFormat::Png, |format| format.image_format()),
    };
    if let (OutputTarget::File(file), Some(asked)) = (target, args.format) {
        if asked.image_format() != format {
            return Err(Error::InvalidOption(format!(
                "--format {} applies to outputs in a folder; -o {} names its own format (drop --format, or change the name)",
                asked.extension(),
                shown(file)
            ))
            .into());
        }
    }
    if args.quality.is_some() && format != image::ImageFormat::Jpeg {
        return Err(Error::InvalidOption(format!(
            "--quality applies to JPEG outputs only, and these are {}, written lossless; give --format jpg or an -o name ending in .jpg",
            format.extensions_str().first().copied().unwrap_or("png").to_ascii_uppercase()
        ))
        .into());
    }
    Ok(())
}

/// The bundle's defaults used where the command line gives nothing, checked
/// as the bundle's fault (not "invalid option").
fn check_bundle_defaults(args: &RunArgs, pipeline: &Pipeline) -> anyhow::Result<()> {
    let bundle = pipeline.bundle();
    let defaults = &bundle.manifest().defaults;
    let bad = |reason: String| -> anyhow::Result<()> {
        Err(Error::Bundle {
            path: bundle.root().to_path_buf(),
            reason,
        }
        .into())
    };
    if args.timesteps.is_empty() {
        if let Err(error) = pipeline
            .schedule()
            .validate_timestep(i64::from(defaults.timestep))
        {
            return bad(format!(
                "manifest.json defaults.timestep is {}: {error}; fix the bundle or give -t",
                defaults.timestep
            ));
        }
    }
    if args.upscale.is_none() && !(1..=16).contains(&defaults.upscale) {
        return bad(format!(
            "manifest.json defaults.upscale is {}, outside 1..16; fix the bundle or give --upscale",
            defaults.upscale
        ));
    }
    if args.process_size.is_none() && defaults.process_size > MAX_PROCESS_SIZE {
        return bad(format!(
            "manifest.json defaults.process_size is {}, over {MAX_PROCESS_SIZE}; fix the bundle or give --process-size",
            defaults.process_size
        ));
    }
    Ok(())
}

/// `--skip-existing`: drops the jobs whose outputs all exist and returns the
/// existing outputs of the others (left as they are when written). Says how
/// many inputs were skipped, and with `--json` prints a line per output
/// left.
fn skip_existing_outputs(
    jobs: &mut Vec<(PathBuf, Vec<PathBuf>)>,
    args: &RunArgs,
) -> anyhow::Result<(HashSet<PathBuf>, usize)> {
    let mut existing = HashSet::new();
    let mut skipped = 0usize;
    let mut kept = Vec::with_capacity(jobs.len());
    for (input, outputs) in jobs.drain(..) {
        let present: Vec<&PathBuf> = outputs
            .iter()
            .filter(|output| naming::output_exists(output))
            .collect();
        if args.json {
            for output in &present {
                print_line(json!({
                    "input": json_path(&input),
                    "output": json_path(output),
                    "skipped": "the output exists (--skip-existing)",
                }))?;
            }
        }
        existing.extend(present.iter().map(|output| (*output).clone()));
        if present.len() == outputs.len() {
            skipped += 1;
        } else {
            kept.push((input, outputs));
        }
    }
    *jobs = kept;
    if skipped > 0 && !args.quiet {
        stderr_line!(
            "skipping {skipped} input(s) whose outputs all exist (--skip-existing); {} to compute",
            jobs.len()
        );
    }
    Ok((existing, skipped))
}

/// Whether an input of `width x height` may be processed: the size rule
/// (enlargement of small inputs) within `--max-pixels`. Checked from the
/// header, before any pixel is decoded.
fn check_input_size(
    width: u32,
    height: u32,
    upscale: u32,
    process_size: u32,
    max_pixels: u64,
) -> Result<(), String> {
    let plan =
        size_plan::plan_sizes(width, height, upscale, process_size).map_err(|e| e.to_string())?;
    size_plan::check_plan_bounds(&plan, upscale, process_size, max_pixels)
        .map_err(|e| e.to_string())
}

/// `--dry-run`: one line per output the batch would write (stdout), the
/// input's size from its header and the output's (upscale factor and
/// process size from the command line, else the bundle's manifest, else 4
/// and 512); "?" where the header cannot be read (that input would fail with
/// its reason). An input the size rules refuse gets its error line instead;
/// returns how many.
fn print_plan(
    jobs: &[(PathBuf, Vec<PathBuf>)],
    existing_outputs: &HashSet<PathBuf>,
    target: &OutputTarget,
    args: &RunArgs,
) -> anyhow::Result<usize> {
    let output_folder = match target {
        OutputTarget::Dir { folder, .. } => Some(folder.as_path()),
        OutputTarget::File(_) => None,
    };
    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let bundle = Bundle::open_with(&model_dir, HashCheck::Skip).ok();
    let (upscale, process_size) = size_rule(args, bundle.as_ref().map(Bundle::manifest));
    let mut refused = 0;
    for (input, outputs) in jobs {
        let input_size = image_io::header_dimensions(input);
        if let Some(Err(reason)) =
            input_size.map(|(w, h)| check_input_size(w, h, upscale, process_size, args.max_pixels))
        {
            stderr_line!("error: {}: {}", shown(input), one_line(&reason));
            refused += 1;
            continue;
        }
        // --prompt-dir: the input's prompt file must be there and readable
        let prompt = match &args.prompt_dir {
            None => None,
            Some(dir) => {
                let file = prompt_file(dir, output_folder, input, outputs.first());
                if let Err(reason) = read_prompt_file(&file) {
                    stderr_line!(
                        "error: {}: prompt file {} (--prompt-dir): {}",
                        shown(input),
                        shown(&file),
                        one_line(&reason)
                    );
                    refused += 1;
                    continue;
                }
                Some(file)
            }
        };
        let output_size =
            input_size.map(|(w, h)| (w.saturating_mul(upscale), h.saturating_mul(upscale)));
        // what the networks see: larger than the output when the minimum-size rule enlarges
        let model_size = input_size.and_then(|(w, h)| {
            size_plan::plan_sizes(w, h, upscale, process_size)
                .ok()
                .map(|plan| plan.model)
        });
        let processed = match model_size {
            Some((w, h)) if model_size != output_size => format!(", processed at {w}x{h}"),
            _ => String::new(),
        };
        let shown_size =
            |size: Option<(u32, u32)>| size.map_or("?".to_string(), |(w, h)| format!("{w}x{h}"));
        for output in outputs
            .iter()
            .filter(|output| !existing_outputs.contains(*output))
        {
            if args.json {
                print_line(json!({
                    "input": json_path(input),
                    "output": json_path(output),
                    "input_size": input_size.map(|(w, h)| [w, h]),
                    "output_size": output_size.map(|(w, h)| [w, h]),
                    "model_size": model_size.map(|(w, h)| [w, h]),
                    "prompt_file": prompt.as_deref().map(json_path),
                    "dry_run": true,
                }))?;
            } else {
                print_line(format!(
                    "{} ({}) -> {} ({}{processed}){}",
                    shown(input),
                    shown_size(input_size),
                    shown(output),
                    shown_size(output_size),
                    prompt
                        .as_deref()
                        .map(|file| format!(", prompt {}", shown(file)))
                        .unwrap_or_default()
                ))?;
            }
        }
    }
    Ok(refused)
}

/// The last line of a batch: what it did and how long it took.
fn batch_summary(written: usize, failed: usize, skipped: usize, seconds: f64) -> String {
    let mut parts = vec![format!("{written} output(s) written")];
    if failed > 0 {
        parts.push(format!("{failed} input(s) failed (the error lines above)"));
    }
    if skipped > 0 {
        parts.push(format!("{skipped} input(s) skipped, their outputs exist"));
    }
    format!("done in {seconds:.1} s: {}", parts.join(", "))
}

/// Runs the batch; returns how it ended. Everything that can be checked is
/// checked before the first network runs: the options, every input's file
/// type, the whole input -> output map, the output folder.
pub fn run(ort_lib: Option<&Path>, args: &RunArgs, exit_now: ExitNow) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    install_signal_handlers(exit_now)?;
    check_arguments(args)?;
    let output_folder = std::fs::metadata(&args.output)
        .is_ok_and(|meta| meta.is_dir())
        .then(|| naming::inode(&args.output))
        .flatten();
    let listing = image_io::expand_inputs(&args.inputs, args.recursive, output_folder)
        .context("cannot list the inputs")?;
    for note in &listing.notes {
        stderr_line!("warning: {}", one_line(note));
    }
    for error in &listing.errors {
        stderr_line!("error: {}", one_line(error));
    }
    let (inputs, subfolders) = (listing.files, listing.subfolders);
    if inputs.is_empty() {
        if !listing.errors.is_empty() {
            // the folders given could not be read: said above, one line each
            return Ok(Outcome::SomeInputsFailed);
        }
        anyhow::bail!("no input images found (png, jpg, webp, bmp, tiff)");
    }
    let target = naming::output_target(
        &args.output,
        inputs.len(),
        args.format.map_or("png", |format| format.extension()),
    )?;
    check_output_encoding(&target, args)?;
    check_prompt(args)?;
    let report = |input: &Path, reason: &str| {
        stderr_line!("error: {}: {}", shown(input), one_line(reason));
    };
    let mut failed = listing.errors.len();
    let unusable: Vec<bool> = inputs
        .iter()
        .map(|input| match image_io::check_input_file(input) {
            Ok(()) => false,
            Err(error) => {
                report(input, &error.to_string());
                true
            }
        })
        .collect();
    failed += unusable.iter().filter(|u| **u).count();
    // Output names depend only on how many timesteps are asked (one name per
    // input, or `_t<T>` per timestep), so the plan needs no bundle; the
    // bundle's default timestep is filled in below.
    let planned_timesteps = if args.timesteps.is_empty() {
        vec![0]
    } else {
        args.timesteps.clone()
    };
    let plans = naming::plan_batch(&target, &inputs, &subfolders, &planned_timesteps, &unusable);
    let mut jobs: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    for (plan, unusable) in plans.into_iter().zip(&unusable) {
        match plan.verdict {
            Verdict::Go => jobs.push((
                plan.input,
                plan.outputs.into_iter().map(|(_, output)| output).collect(),
            )),
            Verdict::Duplicate { first } => stderr_line!(
                "warning: {}: the same file as {}, given twice; it is processed once",
                shown(&plan.input),
                shown(&first)
            ),
            Verdict::Refused(_) if *unusable => {}
            Verdict::Refused(error) => {
                report(&plan.input, &error.to_string());
                failed += 1;
            }
        }
    }
    let (existing_outputs, skipped) = if args.skip_existing {
        skip_existing_outputs(&mut jobs, args)?
    } else {
        (HashSet::new(), 0)
    };
    if args.dry_run {
        failed += print_plan(&jobs, &existing_outputs, &target, args)?;
    }
    if args.dry_run || jobs.is_empty() {
        return Ok(if failed > 0 {
            Outcome::SomeInputsFailed
        } else {
            Outcome::Done
        });
    }
    // The output folder, probed now when it exists (a missing one is made
    // once the model has loaded).
    let folder = match &target {
        OutputTarget::Dir { folder, .. } => folder.clone(),
        OutputTarget::File(file) => naming::parent_folder(file).to_path_buf(),
    };
    let folder_exists = folder.is_dir();
    if folder_exists {
        write::check_writable_folder(&folder)?;
    }
    if let Some(outcome) = interrupted() {
        return Ok(outcome);
    }

    let model_dir = args.model.clone().unwrap_or_else(default_model_dir);
    let mut config = PipelineConfig::new(&model_dir);
    config.ort_lib = ort_lib.map(Path::to_path_buf);
    config.provider = provider_choice(args.provider);
    args.gpu.apply(&mut config);
    config.threads = args.threads;
    config.prompt_embeds = args.prompt_embeds.clone();
    config.prompt_text = args.prompt.clone();
    config.server = args.remote.options();
    config.fixed_tiles = args.tile_shape.fixed_tiles();
    // The manifest alone (cheap) for --tile auto's memory figures; a bundle
    // that cannot be read fails in Pipeline::load with its own message.
    let bundle = Bundle::open_with(&model_dir, HashCheck::Skip).ok();
    let manifest = bundle.as_ref().map(|bundle| bundle.manifest().clone());
    let tiling = tiling_mode(args.tiling);
    let mut tile_policy = TilePolicy::new(
        args.tile,
        args.max_memory,
        bundle.as_ref(),
        tiling,
        args.gpu.tile_batch,
        args.tile_shape.fixed_tiles(),
    );
    if args.remote.server.is_some() {
        tile_policy.assume_server_budget();
    } else if super::plans_on_device(args.provider, ort_lib, args.gpu.device.unwrap_or(0)) {
        tile_policy.assume_device_budget(args.gpu.device.unwrap_or(0));
        // --prompt-dir's text encoder will sit beside the GPU stages: room
        // for it before the tile the graphs are opened for is chosen
        let text_encoder = bundle
            .as_ref()
            .filter(|_| args.prompt_dir.is_some())
            .and_then(|bundle| {
                bundle.graph_file_bytes(tadsr_edge::bundle::component::TEXT_ENCODER)
            });
        if let Some(bytes) = text_encoder {
            tile_policy.reserve_device(bytes, super::run_prompt::TEXT_ENCODER_ON_GPU);
        }
    } else {
        // --max-memory is the host's: it bounds what the encoder segments hold
        config.host_memory_limit = args.max_memory;
    }
    let sizes = model_sizes(&jobs, args, manifest.as_ref());
    if tiling == TilingMode::Latent && !args.quiet {
        let encoder = manifest.as_ref().map_or(AuthorsEncoder::Whole, |manifest| {
            match (
                manifest
                    .components
                    .contains_key(tadsr_edge::bundle::component::VAE_ENCODER_TILED),
                manifest.vae_encoder_segments.is_some() && args.remote.server.is_none(),
            ) {
                (true, true) => AuthorsEncoder::Segments,
                (true, false) => AuthorsEncoder::Passes,
                (false, _) => AuthorsEncoder::Whole,
            }
        });
        if let Some(note) = authors_encoder_tiles_note(&sizes, encoder) {
            stderr_line!("note: {note}");
        }
    }
    let engine_decision =
        largest_model_size(&sizes).map(|(width, height)| tile_policy.for_image(width, height));
    config.shapes = ShapeHint {
        tile_px: engine_decision.as_ref().map_or(0, |d| d.tile_px),
        tiling: tiling_mode(args.tiling),
        largest_side_px: match args.provider {
            ProviderArg::Auto | ProviderArg::Tensorrt => largest_model_side(&jobs, args),
            _ => 0,
        },
        exact_px: common_model_size(&sizes),
    };
    if !args.quiet {
        config.notify = |notice| stderr_line!("note: {notice}");
    }
    let load_start = Instant::now();
    let mut pipeline = Pipeline::load(&config)?;
    pipeline.set_cancel_flag(&INTERRUPTED);
    let session_ms = load_start.elapsed().as_secs_f64() * 1e3;
    tile_policy.after_load(&pipeline, args.gpu.device.unwrap_or(0), engine_decision);
    check_bundle_defaults(args, &pipeline)?;
    // --prompt-dir: the text encoder stays open for the batch (CUDA beside GPU stages, else the CPU)
    let prompt_dir = PromptDir::open(args, ort_lib, &pipeline, &target, &mut tile_policy)?;
    let options = run_options(args, &pipeline);
    // Options are checked once, before any work, as usage errors.
    options.check(pipeline.schedule())?;
    let providers = pipeline.providers();
    if !args.quiet {
        for fallback in pipeline.fallbacks() {
            stderr_line!("note: {fallback}");
        }
        let text_encoder = prompt_dir
            .as_ref()
            .and_then(PromptDir::provider)
            .map(|provider| format!(", text encoder (--prompt-dir) on {provider}"))
            .unwrap_or_default();
        stderr_line!(
            "model {} loaded in {session_ms:.0} ms; encoder on {}, unet on {}, decoder on {}{text_encoder}",
            shown(pipeline.bundle().root()),
            providers.vae_encoder,
            providers.unet,
            providers.vae_decoder
        );
        if let Some(line) = graph_setup_line(&pipeline) {
            stderr_line!("{line}");
        }
        if let Some(line) = super::cuda_graph_note(args.gpu.cuda_graph, &pipeline) {
            stderr_line!("{line}");
        }
        if let Some(line) = cpu_precision_note(&pipeline) {
            stderr_line!("{line}");
        }
    }
    if let Some(device) = args.gpu.device {
        let on_gpu = [providers.vae_encoder, providers.unet, providers.vae_decoder]
            .iter()
            .any(|p| *p != Provider::Cpu);
        if !on_gpu {
            stderr_line!("warning: --device {device} is unused: every stage runs on the CPU");
        }
    }
    // the folders this run creates, removed again if it writes nothing
    let created_top = if folder_exists {
        None
    } else {
        folder
            .ancestors()
            .take_while(|f| !f.as_os_str().is_empty() && !f.exists())
            .last()
            .map(Path::to_path_buf)
    };
    // removes them, if still empty, on every way out of this function; a
    // second signal's exit removes them too (signals.rs)
    let _created_folders = CreatedFolders::register(&folder, created_top);
    if !folder_exists {
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create the output folder {}", shown(&folder)))?;
        write::check_writable_folder(&folder)?;
    }
    if let Some(outcome) = interrupted() {
        return Ok(outcome);
    }

    let limits = InputLimits {
        max_pixels: args.max_pixels,
        ..InputLimits::default()
    };
    let inflight = if args.remote.server.is_some() {
        (args.remote.inflight as usize).min(jobs.len()).max(1)
    } else {
        1
    };
    let batch = Batch {
        args,
        options: &options,
        limits,
        tile_policy: &tile_policy,
        providers,
        input_inodes: inputs.iter().filter_map(|i| naming::inode(i)).collect(),
        written: Mutex::new(Default::default()),
        last_tile_note: Mutex::new(String::new()),
        failed: AtomicUsize::new(failed),
        outputs_written: AtomicUsize::new(0),
        next_job: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
        unfinished: AtomicUsize::new(0),
        stdout_failed: AtomicBool::new(false),
        swept_folders: Mutex::new(HashSet::new()),
        show_bars: !args.quiet && inflight == 1 && std::io::stderr().is_terminal(),
        jobs: &jobs,
        existing_outputs,
        server_requests: config.server.as_ref().map(|server| server.requests.clone()),
        prompt: prompt_json(args, &pipeline),
        prompt_dir,
    };
    if inflight == 1 {
        batch.work(&mut pipeline);
    } else {
        // One pipeline per image in flight: with a server each holds only
        // its connection and the prompt, the networks run there.
        // --prompt's text is encoded once: the others get its embedding
        let embedding = pipeline.prompt_embedding();
        let mut extra_config = config.clone();
        if embedding.is_some() {
            extra_config.prompt_text = None;
        }
        let mut pipelines = vec![pipeline];
        for _ in 1..inflight {
            let mut extra = Pipeline::load(&extra_config)?;
            extra.set_cancel_flag(&INTERRUPTED);
            if let Some(embedding) = &embedding {
                extra.set_prompt_embedding(embedding.clone())?;
            }
            pipelines.push(extra);
        }
        std::thread::scope(|scope| {
            for pipeline in pipelines.iter_mut() {
                let batch = &batch;
                scope.spawn(move || batch.work(pipeline));
            }
        });
    }
    if let Some(error) = batch.fatal.lock().map_or(None, |mut fatal| fatal.take()) {
        // Inputs taken but not finished by the stopped workers count too.
        let started = batch.next_job.load(Ordering::SeqCst).min(jobs.len());
        let left = jobs.len() - started + batch.unfinished.load(Ordering::SeqCst);
        let stdout_closed = error.downcast_ref::<super::StdoutClosed>().is_some();
        if !(stdout_closed && left == 0) {
            // A closed stdout ends other commands normally (`| head`); here it
            // left inputs undone, which exit 0 would hide.
            let error = if stdout_closed {
                anyhow::anyhow!("stdout was closed (the reader of the --json lines went away)")
            } else {
                error
            };
            return Err(error.context(format!(
                "the batch stopped with {left} of {} input(s) not processed",
                jobs.len()
            )));
        }
    }
    let failed = batch.failed.load(Ordering::SeqCst);
    if let Some(outcome) = interrupted() {
        return Ok(outcome);
    }
    if !args.quiet && inputs.len() > 1 {
        stderr_line!(
            "{}",
            batch_summary(
                batch.outputs_written.load(Ordering::SeqCst),
                failed,
                skipped,
                started.elapsed().as_secs_f64()
            )
        );
    }
    Ok(if failed > 0 {
        Outcome::SomeInputsFailed
    } else {
        Outcome::Done
    })
}

/// Creates the folder `output` goes in when it is missing (an output of
/// `--recursive` in a subfolder no earlier output went to); returns the
/// topmost folder it created, to remove again if the write fails.
fn make_output_subfolder(output: &Path) -> Result<Option<PathBuf>, String> {
    let folder = naming::parent_folder(output);
    if folder.is_dir() {
        return Ok(None);
    }
    let top = folder
        .ancestors()
        .take_while(|f| !f.as_os_str().is_empty() && !f.exists())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create the output folder {}: {e}", shown(folder)))?;
    Ok(top)
}

/// Removes `folder` and its parents up to `top`, each only if empty: the
/// output folders a run created and wrote nothing into.
fn remove_empty_folders(folder: &Path, top: &Path) {
    for dir in folder.ancestors() {
        if std::fs::remove_dir(dir).is_err() || dir == top {
            break;
        }
    }
}

/// The output folder this run created (and the topmost folder it created
/// for it), for the signal thread's exit.
static CREATED_FOLDERS: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

/// Removes the folders the run created if nothing was written into them.
/// Called on the way out of `run` and by a second signal's immediate exit.
pub(super) fn remove_created_empty_folders() {
    // try_lock: the signal thread must not wait on a thread it is about to end
    let created = match CREATED_FOLDERS.try_lock() {
        Ok(mut created) => created.take(),
        Err(_) => None,
    };
    if let Some((folder, top)) = created {
        remove_empty_folders(&folder, &top);
    }
}

/// Removes the folders a run created, if left empty, when dropped.
struct CreatedFolders;

impl CreatedFolders {
    fn register(folder: &Path, top: Option<PathBuf>) -> CreatedFolders {
        if let (Some(top), Ok(mut created)) = (top, CREATED_FOLDERS.lock()) {
            *created = Some((folder.to_path_buf(), top));
        }
        CreatedFolders
    }
}

impl Drop for CreatedFolders {
    fn drop(&mut self) {
        remove_created_empty_folders();
    }
}

/// Why a worker stops taking inputs.
enum Stop {
    Interrupted,
    /// Ends the batch: an unreachable server, stdout closed.
    Fatal(anyhow::Error),
}

/// The batch's shared state: the jobs, what every worker reads, and what
/// they update (counts, the outputs written so far) under locks.
struct Batch<'a> {
    args: &'a RunArgs,
    options: &'a RunOptions,
    limits: InputLimits,
    tile_policy: &'a TilePolicy,
    providers: StageProviders,
    input_inodes: HashSet<(u64, u64)>,
    written: Mutex<HashMap<(u64, u64), PathBuf>>,
    last_tile_note: Mutex<String>,
    failed: AtomicUsize,
    outputs_written: AtomicUsize,
    next_job: AtomicUsize,
    /// Set on a fatal error (an unreachable server): no new job starts.
    stop: AtomicBool,
    fatal: Mutex<Option<anyhow::Error>>,
    /// Inputs a worker had taken when the batch stopped.
    unfinished: AtomicUsize,
    /// A `--json` line could not be written: no more are tried.
    stdout_failed: AtomicBool,
    /// Output folders already cleared of stale temporary files.
    swept_folders: Mutex<HashSet<PathBuf>>,
    show_bars: bool,
    jobs: &'a [(PathBuf, Vec<PathBuf>)],
    /// With --skip-existing: outputs that existed before the run, left as
    /// they are (an input with one of several timesteps' outputs missing).
    existing_outputs: HashSet<PathBuf>,
    /// With --server: the batch's request slots (`--inflight`), for the
    /// JSON line's count of requests in flight at once.
    server_requests: Option<tadsr_edge::remote::RequestSlots>,
    /// The JSON line's `prompt`: which conditioning the UNet had.
    prompt: serde_json::Value,
    /// `--prompt-dir`: the folder, the output folder (for subfolders) and
    /// the open text encoder, shared by the workers.
    prompt_dir: Option<PromptDir>,
}

impl Batch<'_> {
    /// Before the first write into `folder`: the temporary files a killed
    /// run left there (SIGKILL, out of memory) are removed.
    fn remove_stale_temporaries(&self, folder: &Path) {
        let Ok(mut swept) = self.swept_folders.lock() else {
            return;
        };
        if !swept.insert(folder.to_path_buf()) {
            return;
        }
        let removed = write::remove_stale_temporaries(folder);
        if removed > 0 && !self.args.quiet {
            stderr_line!(
                "note: removed {removed} temporary file(s) that a killed earlier run left in {}",
                shown(folder)
            );
        }
    }

    fn report(&self, input: &Path, reason: &str) {
        stderr_line!("error: {}: {}", shown(input), one_line(reason));
        self.failed.fetch_add(1, Ordering::SeqCst);
    }

    /// The JSON line's `prompt` for `input`, after conditioning `pipeline`
    /// on its prompt file with `--prompt-dir`; Ok(None) when that file
    /// cannot be used (reported as the input's failure). The batch's prompt
    /// without `--prompt-dir`.
    fn condition_on_prompt_file(
        &self,
        pipeline: &mut Pipeline,
        input: &Path,
        output_paths: &[PathBuf],
    ) -> Result<Option<serde_json::Value>, Stop> {
        let Some(prompt_dir) = &self.prompt_dir else {
            return Ok(Some(self.prompt.clone()));
        };
        match prompt_dir.condition(pipeline, input, output_paths) {
            Ok(json) => Ok(Some(json)),
            Err(PromptFailure::Input(reason)) => {
                self.report(input, &reason);
                Ok(None)
            }
            Err(PromptFailure::Batch(error)) => Err(Stop::Fatal(error.into())),
        }
    }

    /// Takes jobs until none is left, the run is interrupted or stopped.
    fn work(&self, pipeline: &mut Pipeline) {
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
                return;
            }
            let index = self.next_job.fetch_add(1, Ordering::SeqCst);
            let Some((input, output_paths)) = self.jobs.get(index) else {
                return;
            };
            match self.process(pipeline, index, input, output_paths) {
                Ok(()) => {}
                Err(Stop::Interrupted) => return,
                Err(Stop::Fatal(error)) => {
                    self.stop.store(true, Ordering::SeqCst);
                    self.unfinished.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut fatal) = self.fatal.lock() {
                        fatal.get_or_insert(error);
                    }
                    return;
                }
            }
        }
    }

    /// One input: read, upscale, write each output. Per-input failures are
    /// reported and counted here; the error returned ends the batch
    /// (an interruption, an unreachable server).
    fn process(
        &self,
        pipeline: &mut Pipeline,
        index: usize,
        input: &Path,
        output_paths: &[PathBuf],
    ) -> Result<(), Stop> {
        let (args, options) = (self.args, self.options);
        if !args.quiet {
            stderr_line!(
                "computing {}/{} {}",
                index + 1,
                self.jobs.len(),
                shown(input)
            );
        }
        let size_check = |width: u32, height: u32| {
            check_input_size(
                width,
                height,
                options.upscale,
                options.process_size,
                args.max_pixels,
            )
        };
        let read_start = Instant::now();
        let decoded = match image_io::read_input_checked(input, &self.limits, &size_check) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.report(input, &error.to_string());
                return Ok(());
            }
        };
        for note in &decoded.notes {
            stderr_line!("warning: {}: {}", shown(input), one_line(note));
        }
        let image = decoded.image;
        let icc_profile = decoded.icc_profile;
        let read_from = decoded.source;
        let read_ms = read_start.elapsed().as_secs_f64() * 1e3;
        let (model_w, model_h) = size_plan::plan_sizes(
            image.width,
            image.height,
            options.upscale,
            options.process_size,
        )
        .map_or((image.width, image.height), |plan| plan.model);
        let tile = self.tile_policy.for_image(model_w, model_h);
        if self.tile_policy.is_auto() && !args.quiet {
            let note = tile.describe();
            if let Ok(mut last) = self.last_tile_note.lock() {
                if *last != note {
                    stderr_line!("tiling: {note}");
                    *last = note;
                }
            }
        }
        let Some(prompt) = self.condition_on_prompt_file(pipeline, input, output_paths)? else {
            return Ok(());
        };
        let mut image_options = options.clone();
        image_options.tile_px = tile.tile_px;
        let bar = TileBar::new(
            self.show_bars,
            &shown_os(input.file_name().unwrap_or_default()),
        );
        let result = pipeline.upscale(&image, &image_options, &bar);
        bar.finish();
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(Error::Interrupted) => return Err(Stop::Interrupted),
            Err(error @ Error::ServerUnreachable { .. }) => return Err(Stop::Fatal(error.into())),
            // a graph opened on first use (the tiled VAE's, the encoder
            // segments) that does not match the manifest or does not load
            // fails every input after this one the same way: the bundle's
            // fault, said once
            Err(error @ (Error::Bundle { .. } | Error::Model { .. })) => {
                return Err(Stop::Fatal(error.into()))
            }
            Err(error) => {
                self.report(input, &error.to_string());
                return Ok(());
            }
        };
        for (upscaled, output_path) in outputs.into_iter().zip(output_paths) {
            if self.existing_outputs.contains(output_path) {
                continue;
            }
            // The clash check, the write and its record are one step for
            // all workers: the folder may have changed since the plan, and
            // a case-insensitive file system makes two names one file.
            let Ok(mut written) = self.written.lock() else {
                self.report(input, "internal error: a worker panicked; not written");
                continue;
            };
            if let Some(inode) = naming::inode(output_path) {
                let clash = if self.input_inodes.contains(&inode) || read_from == Some(inode) {
                    // an input planned, or the file this input's name led to when read
                    Some("is an input of this run".to_string())
                } else {
                    written.get(&inode).map(|earlier| {
                        format!(
                            "is the same file as {}, written earlier in this run (a case-insensitive file system?)",
                            shown(earlier)
                        )
                    })
                };
                if let Some(clash) = clash {
                    drop(written);
                    self.report(
                        input,
                        &format!("its output {} {clash}; not written", shown(output_path)),
                    );
                    continue;
                }
            }
            if icc_profile.is_some()
                && write::output_format(output_path).is_ok_and(|f| !write::holds_icc_profile(f))
            {
                stderr_line!(
                    "warning: {}: its ICC color profile is not carried to {} (BMP holds none); write .png, .jpg, .webp or .tiff to keep it",
                    shown(input),
                    shown(output_path)
                );
            }
            let write_start = Instant::now();
            let encoding = write::Encoding {
                icc_profile: icc_profile.as_deref(),
                jpeg_quality: self.args.quality.unwrap_or(write::DEFAULT_JPEG_QUALITY),
            };
            // --recursive: the output's subfolder, made for its first output
            let made_subfolder = match make_output_subfolder(output_path) {
                Ok(made) => made,
                Err(reason) => {
                    drop(written);
                    self.report(input, &reason);
                    continue;
                }
            };
            self.remove_stale_temporaries(naming::parent_folder(output_path));
            if let Err(error) = write::write_atomically(&upscaled.image, output_path, encoding) {
                if let Some(top) = made_subfolder {
                    remove_empty_folders(naming::parent_folder(output_path), &top);
                }
                drop(written);
                self.report(input, &error.to_string());
                continue;
            }
            if let Some(inode) = naming::inode(output_path) {
                written.insert(inode, output_path.clone());
            }
            drop(written);
            self.outputs_written.fetch_add(1, Ordering::SeqCst);
            let write_ms = write_start.elapsed().as_secs_f64() * 1e3;
            let timings = upscaled.timings;
            if args.json {
                // read, every timed stage the pipeline declares, write, total
                let mut ms = serde_json::Map::new();
                ms.insert("read".into(), json!(read_ms));
                for (stage, stage_ms) in timings.iter() {
                    ms.insert(stage.into(), json!(stage_ms));
                }
                ms.insert("write".into(), json!(write_ms));
                ms.insert("total".into(), json!(timings.total() + write_ms));
                let mut line = json!({
                    "input": json_path(input),
                    "output": json_path(output_path),
                    "input_size": [image.width, image.height],
                    "output_size": [upscaled.image.width(), upscaled.image.height()],
                    "timestep": upscaled.timestep,
                    "prompt": prompt,
                    "provider": self.providers,
                    "tile": tile,
                    "ms": ms,
                });
                if let (Some(requests), Some(url)) = (&self.server_requests, &args.remote.server) {
                    // requests in flight at once so far in this batch (at most --inflight)
                    line["server"] = json!({
                        "url": url,
                        "inflight": requests.capacity(),
                        "requests_in_flight_peak": requests.peak(),
                    });
                }
                if !self.stdout_failed.load(Ordering::SeqCst) {
                    if let Err(error) = print_line(line) {
                        // the report's reader is gone (or stdout full): this input's
                        // outputs are still written, no other input starts
                        self.stdout_failed.store(true, Ordering::SeqCst);
                        self.stop.store(true, Ordering::SeqCst);
                        if let Ok(mut fatal) = self.fatal.lock() {
                            fatal.get_or_insert(error);
                        }
                    }
                }
            } else if !args.quiet {
                stderr_line!(
                    "{} -> {} ({}x{} -> {}x{}, t={}, {:.0} ms)",
                    shown(input),
                    shown(output_path),
                    image.width,
                    image.height,
                    upscaled.image.width(),
                    upscaled.image.height(),
                    upscaled.timestep,
                    timings.total() + write_ms
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{authors_encoder_tiles_note, batch_summary, AuthorsEncoder};

    #[test]
    fn latent_tiling_says_when_the_authors_would_encode_in_tiles() {
        // their hook takes 1088 px whole (1024 + 2 x 32), larger in tiles
        assert_eq!(
            authors_encoder_tiles_note(&[(1088, 1088), (512, 640)], AuthorsEncoder::Segments),
            None
        );
        let sizes = [(1088, 600), (1280, 960), (1096, 200)];
        let note = authors_encoder_tiles_note(&sizes, AuthorsEncoder::Segments).unwrap();
        assert!(
            note.starts_with("--tiling latent: 2 input(s)")
                && note.contains("the largest at 1280x960")
                && note.contains("so does this run, with the bundle's encoder segments"),
            "{note}"
        );
        let passes = authors_encoder_tiles_note(&sizes, AuthorsEncoder::Passes).unwrap();
        assert!(
            passes.contains("one pass of the encoder per GroupNorm layer"),
            "{passes}"
        );
        let without = authors_encoder_tiles_note(&sizes, AuthorsEncoder::Whole).unwrap();
        assert!(without.contains("no tiled encoder graph"), "{without}");
    }

    #[test]
    fn the_summary_names_only_what_happened() {
        assert_eq!(
            batch_summary(3, 0, 0, 12.34),
            "done in 12.3 s: 3 output(s) written"
        );
        assert_eq!(
            batch_summary(2, 1, 4, 0.5),
            "done in 0.5 s: 2 output(s) written, 1 input(s) failed (the error lines above), 4 input(s) skipped, their outputs exist"
        );
    }
}
