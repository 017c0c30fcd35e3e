//! `tadsr-edge bench`: latency per stage, end to end, throughput and peak
//! memory for one output size.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;

use tadsr_edge::bundle::{Bundle, HashCheck};
use tadsr_edge::image::io::InputImage;
use tadsr_edge::image::resample::{self, ResampleFilter};
use tadsr_edge::image::write;
use tadsr_edge::pipeline::{
    default_tile_overlap, NoProgress, Pipeline, PipelineConfig, RunOptions, ShapeHint, SpentIn,
    StageTimings, TilingMode,
};
use tadsr_edge::runtime::{gpu_info, Provider};
use tadsr_edge::stats::{self, Summary};

use super::tile_policy::TilePolicy;
use super::{default_model_dir, print_line, provider_choice, Outcome};
use crate::args::BenchArgs;

/// The stages reported, in pipeline order: the pipeline's timed stages
/// ([`StageTimings::STAGES`]), then writing the output (ours, not ONNX
/// Runtime's).
fn stages() -> Vec<(&'static str, SpentIn)> {
    let mut stages = StageTimings::STAGES.to_vec();
    stages.push(("write", SpentIn::Rust));
    stages
}

/// A low-resolution input of `side` x `side` pixels: the given photo (or
/// the committed example) resized with Lanczos.
fn bench_input(input: Option<&Path>, side: u32) -> anyhow::Result<InputImage> {
    let default_photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee.png");
    let photo_path = input.unwrap_or(&default_photo);
    let photo = image::open(photo_path)
        .with_context(|| {
            format!(
                "cannot read the benchmark input {} (give one with --input)",
                photo_path.display()
            )
        })?
        .to_rgb8();
    let resized = resample::resize_rgb8(&photo, side, side, ResampleFilter::Lanczos)?;
    Ok(InputImage::from_rgb8(resized))
}

/// Runs the benchmark and prints its report.
pub fn bench(ort_lib: Option<&Path>, args: &BenchArgs) -> anyhow::Result<Outcome> {
    let mut config = PipelineConfig::new(args.model.clone().unwrap_or_else(default_model_dir));
    config.ort_lib = ort_lib.map(Path::to_path_buf);
    config.provider = provider_choice(args.provider);
    config.threads = args.threads;
    args.gpu.apply(&mut config);
    // --tile auto: decided as `run` decides it, for this size
    let bundle = Bundle::open_with(&config.model_dir, HashCheck::Skip).ok();
    let mut tile_policy = TilePolicy::new(
        args.tile,
        None,
        bundle.as_ref(),
        TilingMode::Staged,
        args.gpu.tile_batch,
        None,
    );
    if args.remote.server.is_some() {
        tile_policy.assume_server_budget();
    } else if super::plans_on_device(args.provider, ort_lib, args.gpu.device.unwrap_or(0)) {
        tile_policy.assume_device_budget(args.gpu.device.unwrap_or(0));
    }
    let engine_decision = tile_policy.for_image(args.size, args.size);
    config.shapes = ShapeHint {
        tile_px: engine_decision.tile_px,
        tiling: TilingMode::Staged,
        largest_side_px: args.size,
        exact_px: Some((args.size, args.size)),
    };
    config.notify = |notice| stderr_line!("note: {notice}");
    config.verify_hashes = false;
    config.server = args.remote.options();
    args.remote.check(args.gpu.tile_batch)?;
    args.gpu
        .check_provider(matches!(args.provider, crate::args::ProviderArg::Cpu))?;
    // what this run takes of the GPU's memory: NVML's free memory before
    // loading and after the runs (the whole device's: other processes count)
    let gpu_asked =
        !matches!(args.provider, crate::args::ProviderArg::Cpu) && args.remote.server.is_none();
    let device_free_before = gpu_asked
        .then(|| gpu_info::gpu_info(args.gpu.device_id()).memory_free_mib)
        .flatten();
    let load_start = Instant::now();
    let mut pipeline = Pipeline::load(&config)?;
    let session_ms = load_start.elapsed().as_secs_f64() * 1e3;

    tile_policy.after_load(
        &pipeline,
        args.gpu.device.unwrap_or(0),
        Some(engine_decision),
    );
    if let Some(line) = super::cuda_graph_note(args.gpu.cuda_graph, &pipeline) {
        stderr_line!("{line}");
    }
    let tile = tile_policy.for_image(args.size, args.size);
    if tile_policy.is_auto() {
        stderr_line!("tiling: {}", tile.describe());
    }
    let mut options = RunOptions::from_bundle(pipeline.bundle());
    options.process_size = 0;
    options.tile_px = tile.tile_px;
    options.tile_overlap_px = args
        .tile_overlap
        .unwrap_or_else(|| default_tile_overlap(options.tile_px));
    options.tiling = TilingMode::Staged;
    if let Some(timestep) = args.timestep {
        options.timesteps = vec![timestep];
    }
    options.check(pipeline.schedule())?;
    if args.size == 0 || !args.size.is_multiple_of(8 * options.upscale) {
        anyhow::bail!(
            "--size {} must be a positive multiple of {}",
            args.size,
            8 * options.upscale
        );
    }
    let input = bench_input(args.input.as_deref(), args.size / options.upscale)?;
    if args.remote.server.is_some() {
        return bench_inflight(args, &config, pipeline, &input, &options);
    }
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let output_path = scratch.path().join("bench.png");

    let stages = stages();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); stages.len()];
    let mut end_to_end = Vec::new();
    let mut in_memory = Vec::new();
    for run in 0..args.warmup + args.runs {
        let start = Instant::now();
        let mut outputs = pipeline.upscale(&input, &options, &NoProgress)?;
        let upscaled = outputs.pop().context("the pipeline gave no output")?;
        let upscale_ms = start.elapsed().as_secs_f64() * 1e3;
        let write_start = Instant::now();
        write::write_atomically(&upscaled.image, &output_path, write::Encoding::default())?;
        let write_ms = write_start.elapsed().as_secs_f64() * 1e3;
        let total_ms = start.elapsed().as_secs_f64() * 1e3;
        if run < args.warmup {
            continue;
        }
        let per_stage = upscaled.timings.iter().map(|(_, ms)| ms).chain([write_ms]);
        for (stage_samples, value) in samples.iter_mut().zip(per_stage) {
            stage_samples.push(value);
        }
        end_to_end.push(total_ms);
        in_memory.push(upscale_ms);
        if !args.json {
            stderr_line!(
                "run {}/{}: {total_ms:.0} ms",
                run + 1 - args.warmup,
                args.runs
            );
        }
    }
    let summaries: Vec<Summary> = samples.iter().filter_map(|s| stats::summarize(s)).collect();
    let total = stats::summarize(&end_to_end).context("--runs must be at least 1")?;
    // image in memory to image in memory: the scope of scripts/torch_gpu_bench.py (plus the 4x resize)
    let upscale_only = stats::summarize(&in_memory).context("--runs must be at least 1")?;
    let rust_side_p50: f64 = stages
        .iter()
        .zip(&summaries)
        .filter(|((_, spent_in), _)| *spent_in == SpentIn::Rust)
        .map(|(_, summary)| summary.p50)
        .sum();
    let output_megapixels = f64::from(args.size) * f64::from(args.size) / 1e6;
    let throughput = output_megapixels / (total.p50 / 1e3);
    let peak_rss = stats::peak_rss_bytes();
    let providers = pipeline.providers();
    let on_gpu = [providers.vae_encoder, providers.unet, providers.vae_decoder]
        .iter()
        .any(|p| matches!(p, Provider::Cuda | Provider::TensorRt));
    let device_memory_used = device_free_before.filter(|_| on_gpu).and_then(|before| {
        let after = gpu_info::gpu_info(args.gpu.device_id()).memory_free_mib?;
        Some(before.saturating_sub(after) << 20)
    });
    // --tile auto's estimate for this image and tile, to hold against the
    // peak RSS (CPU) or the device memory used (GPU)
    let estimated_peak = tile_policy.estimate(args.size, args.size, options.tile_px);

    if args.json {
        let stages_json: serde_json::Map<String, serde_json::Value> = stages
            .iter()
            .zip(&summaries)
            .map(|((name, _), summary)| (name.to_string(), json!(summary)))
            .collect();
        print_line(json!({
                "model": pipeline.bundle().root(),
                "size": args.size,
                "tile": options.tile_px,
                "tile_overlap": options.tile_overlap_px,
                "tile_batch": args.gpu.tile_batch,
                "tile_decision": tile,
                "timestep": options.timesteps.first(),
                "runs": args.runs,
                "warmup": args.warmup,
                "threads": args.threads,
                "device": args.gpu.device_id(),
                "tf32": args.gpu.tf32,
                "cudnn_conv_search": format!("{:?}", args.gpu.cudnn_conv_search).to_lowercase(),
                "cuda_options": args.gpu.cuda_options.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "provider": providers,
                "static_shapes": static_shapes_json(&pipeline),
                "cuda_graph": pipeline
                    .cuda_graphs()
                    .iter()
                    .map(|(name, on)| (name.to_string(), json!(on)))
                    .collect::<serde_json::Map<_, _>>(),
                "session_creation_ms": session_ms,
                "stages_ms": stages_json,
                "end_to_end_ms": total,
                "upscale_ms": upscale_only,
                "rust_side_share_p50": rust_side_p50 / total.p50,
                "output_megapixels_per_second": throughput,
                "peak_rss_bytes": peak_rss,
                "device_memory_used_bytes": device_memory_used,
                "estimated_peak_bytes": estimated_peak,
        }))?;
        return Ok(Outcome::Done);
    }
    print_line(format_args!(
        "tadsr-edge bench: {} -> {}x{} output, tile {}, {} runs after {} warm-up, encoder {} / unet {} / decoder {}",
        pipeline.bundle().root().display(),
        args.size,
        args.size,
        options.tile_px,
        args.runs,
        args.warmup,
        providers.vae_encoder,
        providers.unet,
        providers.vae_decoder
    ))?;
    print_line(format_args!("session creation: {session_ms:.0} ms"))?;
    print_line(format_args!(
        "{:<12} {:>10} {:>10} {:>10}",
        "stage", "p50 ms", "p95 ms", "min ms"
    ))?;
    for ((name, _), summary) in stages.iter().zip(&summaries) {
        print_line(format_args!(
            "{name:<12} {:>10.1} {:>10.1} {:>10.1}",
            summary.p50, summary.p95, summary.min
        ))?;
    }
    print_line(format_args!(
        "{:<12} {:>10.1} {:>10.1} {:>10.1}",
        "end to end", total.p50, total.p95, total.min
    ))?;
    print_line(format_args!(
        "{:<12} {:>10.1} {:>10.1} {:>10.1}   (end to end without writing the PNG)",
        "in memory", upscale_only.p50, upscale_only.p95, upscale_only.min
    ))?;
    print_line(format_args!(
        "throughput: {throughput:.3} output megapixels/s"
    ))?;
    print_line(format_args!(
        "outside ONNX Runtime: {:.2}% of p50",
        100.0 * rust_side_p50 / total.p50
    ))?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    if let Some(bytes) = peak_rss {
        print_line(format_args!("peak RSS: {:.0} MiB", mib(bytes)))?;
    }
    if let Some(bytes) = device_memory_used {
        print_line(format_args!(
            "GPU memory taken (NVML, whole device): {:.0} MiB",
            mib(bytes)
        ))?;
    }
    if let Some(bytes) = estimated_peak {
        print_line(format_args!(
            "--tile auto's estimate for this size and tile: {:.0} MiB",
            mib(bytes)
        ))?;
    }
    Ok(Outcome::Done)
}

/// `bench --server URL [--inflight N]`: N images in flight at once, each
/// worker with its own pipeline; latency per image and throughput over the
/// measured runs (every worker runs `--runs` images after `--warmup`).
fn bench_inflight(
    args: &BenchArgs,
    config: &PipelineConfig,
    first: Pipeline,
    input: &InputImage,
    options: &RunOptions,
) -> anyhow::Result<Outcome> {
    let workers = args.remote.inflight as usize;
    let mut pipelines = vec![first];
    for _ in 1..workers {
        pipelines.push(Pipeline::load(config)?);
    }
    let barrier = std::sync::Barrier::new(workers + 1);
    let (latencies, wall_s) = std::thread::scope(|scope| -> anyhow::Result<(Vec<f64>, f64)> {
        let handles: Vec<_> = pipelines
            .iter_mut()
            .map(|pipeline| {
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let warm = (0..args.warmup)
                        .try_for_each(|_| pipeline.upscale(input, options, &NoProgress).map(drop));
                    barrier.wait();
                    warm?;
                    (0..args.runs)
                        .map(|_| {
                            let start = Instant::now();
                            pipeline.upscale(input, options, &NoProgress)?;
                            Ok(start.elapsed().as_secs_f64() * 1e3)
                        })
                        .collect()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut latencies = Vec::new();
        for handle in handles {
            let worker = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a benchmark worker panicked"))?;
            latencies.extend(worker?);
        }
        Ok((latencies, start.elapsed().as_secs_f64()))
    })?;
    let latency = stats::summarize(&latencies).context("--runs must be at least 1")?;
    let images = latencies.len() as f64;
    let images_per_minute = images / wall_s * 60.0;
    let output_megapixels = f64::from(args.size) * f64::from(args.size) / 1e6;
    let server = args.remote.server.as_deref().unwrap_or_default();
    let peak_requests = config.server.as_ref().map_or(0, |s| s.requests.peak());
    if args.json {
        print_line(json!({
            "model": config.model_dir,
            "server": server,
            "inflight": workers,
            "size": args.size,
            "tile": options.tile_px,
            "runs": latencies.len(),
            "warmup": args.warmup * workers,
            "latency_ms": latency,
            "wall_s": wall_s,
            "images_per_minute": images_per_minute,
            "output_megapixels_per_second": images * output_megapixels / wall_s,
            "requests_in_flight_peak": peak_requests,
        }))?;
        return Ok(Outcome::Done);
    }
    print_line(format_args!(
        "tadsr-edge bench: {} on {server}, {}x{} output, tile {}, {} in flight, {} images after {} warm-up",
        config.model_dir.display(),
        args.size,
        args.size,
        options.tile_px,
        workers,
        latencies.len(),
        args.warmup * workers
    ))?;
    print_line(format_args!(
        "latency per image: p50 {:.1} ms, p95 {:.1} ms, min {:.1} ms",
        latency.p50, latency.p95, latency.min
    ))?;
    print_line(format_args!(
        "throughput: {images_per_minute:.1} images/minute ({:.3} output megapixels/s); at most {peak_requests} request(s) in flight",
        images * output_megapixels / wall_s
    ))?;
    Ok(Outcome::Done)
}

/// Each main graph's fixed shape ([height, width] in pixels), null where
/// it takes any shape (`--static-shapes`).
fn static_shapes_json(pipeline: &Pipeline) -> serde_json::Value {
    pipeline
        .fixed_shapes()
        .iter()
        .map(|(name, shape)| (name.to_string(), json!(shape.map(|(h, w)| [h, w]))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
