//! Exactness on models/tiny against the PyTorch golden references in
//! models/tiny/golden/ (written by `python -m export.golden` from the PyTorch
//! model, not from our output): fp32, CPU, untiled.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tadsr_edge::image::io::{read_input, InputLimits, InputPixels};
use tadsr_edge::image::{size_plan, tensor};
use tadsr_edge::npy;
use tadsr_edge::pipeline::{
    self, psnr, ColorFix, NoProgress, Pipeline, PipelineConfig, ProviderChoice, RunOptions,
    TilingMode,
};
use tadsr_edge::runtime::Provider;

/// Largest difference allowed between our output and the PyTorch reference,
/// per sample, in [0, 1] pixel units.
///
/// Where it comes from: both sides are fp32; ONNX Runtime and PyTorch sum in
/// other orders, and so do the kernels of different CPUs of our machine kind
/// (AVX-512 or AVX2 only). Measured (2026-11-27, `scripts/cross_cpu_check.sh`):
/// PyTorch's own default / avx2 / avx512 kernels differ from the golden files
/// by up to 2.6e-5; this pipeline differs from them by up to 2.4e-5 natively
/// (AVX-512) and 2.0e-5 under `qemu-x86_64 -cpu Haswell` (AVX2 only). 1e-4 leaves a
/// factor of about 4 and is 1/39 of an 8-bit level, so no visible difference
/// hides under it. Real bugs land far above it: `scripts/mutation_check.sh`
/// plants `alphas_cumprod[t + 1]`, a scaling factor of 0.1822 and 8-bit
/// rounding before the color fix, each of which fails this bound.
const MAX_ABS_ERROR: f32 = 1e-4;

#[derive(Deserialize)]
struct GoldenCase {
    name: String,
    input: String,
    upscale: u32,
    process_size: u32,
    timestep: u32,
    color_fix: String,
    sample: String,
    upscaled: String,
    reference: String,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/golden")
}

fn cases() -> Vec<GoldenCase> {
    let text = std::fs::read_to_string(golden_dir().join("cases.json")).expect("golden cases.json");
    let cases: Vec<GoldenCase> = serde_json::from_str(&text).expect("cases.json parses");
    assert!(
        cases.len() >= 9,
        "expected at least 3 inputs x 3 timesteps, got {}",
        cases.len()
    );
    cases
}

fn cpu_pipeline() -> Pipeline {
    let mut config = PipelineConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny"));
    config.provider = ProviderChoice::Only(Provider::Cpu);
    Pipeline::load(&config).expect("models/tiny loads")
}

fn options_for(case: &GoldenCase) -> RunOptions {
    assert_eq!(
        case.sample, "mean",
        "{}: only posterior-mean references are used here",
        case.name
    );
    RunOptions {
        timesteps: vec![case.timestep],
        upscale: case.upscale,
        process_size: case.process_size,
        tile_px: 0,
        tile_overlap_px: 0,
        tiling: TilingMode::Staged,
        color_fix: case.color_fix.parse::<ColorFix>().expect("known color fix"),
        seed: None,
        rounding: tadsr_edge::image::tensor::Quantization::Round,
    }
}

/// Reference [H, W, 3] as a flat CHW vector, to compare with our planes.
fn reference_chw(case: &GoldenCase) -> (Vec<f32>, (usize, usize)) {
    let reference = npy::read_npy(golden_dir().join(&case.reference)).expect("reference .npy");
    let shape = reference.shape().to_vec();
    assert_eq!(shape.len(), 3, "{}: reference is HWC", case.name);
    assert_eq!(shape[2], 3);
    let chw: Vec<f32> = reference
        .permuted_axes(vec![2, 0, 1])
        .iter()
        .copied()
        .collect();
    (chw, (shape[0], shape[1]))
}

/// The case's input as Pillow upscaled it (the golden file): the model
/// input and the color-fix source.
fn pillow_upscaled(case: &GoldenCase) -> (ndarray::Array4<f32>, ndarray::Array3<f32>) {
    let upscaled = image::open(golden_dir().join(&case.upscaled))
        .unwrap()
        .to_rgb8();
    (
        tensor::rgb8_to_model_input(&upscaled),
        tensor::rgb8_to_unit_planes(&upscaled),
    )
}

/// Runs the model part on image U (`model_input`, `source`) and checks it
/// against the case's reference; returns the largest absolute error.
fn check_against_reference(
    pipeline: &mut Pipeline,
    case: &GoldenCase,
    model_input: &ndarray::Array4<f32>,
    source: &ndarray::Array3<f32>,
    label: &str,
) -> f32 {
    let (ours, _) = pipeline
        .upscale_tensor(
            model_input,
            source,
            case.timestep,
            &options_for(case),
            &NoProgress,
        )
        .unwrap();
    let (reference, (height, width)) = reference_chw(case);
    assert_eq!(ours.dim(), (3, height, width), "{}", case.name);
    let ours = ours.as_slice().unwrap();
    let db = psnr(&reference, ours);
    let max_abs = reference
        .iter()
        .zip(ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "{}: max |error| {max_abs:.2e}, {db:.1} dB ({label})",
        case.name
    );
    assert!(
        max_abs <= MAX_ABS_ERROR,
        "{}: max |error| {max_abs:.3e} > {MAX_ABS_ERROR:e} ({db:.1} dB)",
        case.name
    );
    max_abs
}

#[test]
fn model_part_matches_pytorch_on_pillows_upscaled_image() {
    let mut pipeline = cpu_pipeline();
    let mut worst = 0.0f32;
    for case in cases() {
        let (model_input, source) = pillow_upscaled(&case);
        let error =
            check_against_reference(&mut pipeline, &case, &model_input, &source, "model part");
        worst = worst.max(error);
    }
    eprintln!("worst model-part error: {worst:.2e}");
}

#[test]
fn whole_pipeline_from_the_input_file_matches_pytorch() {
    let mut pipeline = cpu_pipeline();
    for case in cases() {
        let input = read_input(&golden_dir().join(&case.input), &InputLimits::default()).unwrap();
        assert!(matches!(input.pixels, InputPixels::Rgb8(_)));
        let plan =
            size_plan::plan_sizes(input.width, input.height, case.upscale, case.process_size)
                .unwrap();
        let prepared = pipeline::prepare(&input, &plan).unwrap();
        check_against_reference(
            &mut pipeline,
            &case,
            &prepared.model_input,
            &prepared.source_planes,
            "from the input file",
        );
    }
}

#[test]
fn constants_held_in_an_io_binding_give_the_same_result() {
    // What GPU providers do with the prompt embedding and the timestep
    // (bound once, not sent per tile), forced here on the CPU provider.
    let mut config = PipelineConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny"));
    config.provider = ProviderChoice::Only(Provider::Cpu);
    config.io_binding = Some(true);
    let mut pipeline = Pipeline::load(&config).expect("models/tiny loads");
    // every timestep, so rebinding a changed constant is exercised too
    for case in cases() {
        let (model_input, source) = pillow_upscaled(&case);
        check_against_reference(&mut pipeline, &case, &model_input, &source, "I/O binding");
    }
}

/// Notices of graphs reopened for another shape, per test.
static REOPEN_NOTICES: [std::sync::atomic::AtomicUsize; 2] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

fn count_reopen(notice: &str, test: usize) {
    if notice.contains("reopening it for any shape") {
        REOPEN_NOTICES[test].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn graphs_opened_for_one_shape_match_pytorch_and_reopen_for_another() {
    graphs_opened_for_one_shape(false);
}

#[test]
fn inputs_and_outputs_held_at_fixed_addresses_match_pytorch() {
    // what --cuda-graph needs on CUDA (every input and output of a pinned
    // graph in device memory, bound once, rewritten per run), here in host
    // memory on the CPU; the prompt embedding and timesteps change between
    // cases, so changed constants are rewritten too
    graphs_opened_for_one_shape(true);
}

fn graphs_opened_for_one_shape(device_io: bool) {
    // What the CUDA provider does by default (--static-shapes auto), forced here
    // on the CPU: the graphs opened for the wide case's size only.
    let wide = (80u32, 144u32);
    let mut config = PipelineConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny"));
    config.provider = ProviderChoice::Only(Provider::Cpu);
    config.static_shapes = pipeline::StaticShapes::On;
    config.device_io = Some(device_io);
    config.shapes.tile_px = 0;
    config.shapes.exact_px = Some(wide);
    config.notify = if device_io {
        |notice| count_reopen(notice, 1)
    } else {
        |notice| count_reopen(notice, 0)
    };
    let mut pipeline = Pipeline::load(&config).expect("models/tiny loads");
    let pinned = Some((wide.0 as usize, wide.1 as usize));
    for (component, shape) in pipeline.fixed_shapes() {
        assert_eq!(shape, pinned, "{component}");
    }
    for (component, on_device) in pipeline.io_on_device() {
        assert_eq!(on_device, device_io, "{component}");
    }
    let unet_latent = |pipeline: &Pipeline| pipeline.graph_inputs("unet").unwrap()[0].shape.clone();
    // ONNX Runtime really took the overrides: the session reports fixed dims
    assert_eq!(unet_latent(&pipeline), vec![1, 4, 10, 18]);
    let mut ran = (0, 0);
    // the wide cases first (the pinned shape), then the others (reopened)
    let mut ordered = cases();
    ordered.sort_by_key(|case| !case.name.starts_with("wide"));
    for case in ordered {
        let (model_input, source) = pillow_upscaled(&case);
        check_against_reference(&mut pipeline, &case, &model_input, &source, "static shapes");
        if case.name.starts_with("wide") {
            ran.0 += 1;
            assert_eq!(pipeline.fixed_shapes()[1].1, pinned);
        } else {
            ran.1 += 1;
            for (component, shape) in pipeline.fixed_shapes() {
                assert_eq!(shape, None, "{component} reopened for any shape");
            }
        }
    }
    assert!(ran.0 >= 3 && ran.1 >= 3, "{ran:?}");
    assert_eq!(unet_latent(&pipeline), vec![-1, 4, -1, -1]);
    // reopened for any shape: plain sessions again
    for (component, on_device) in pipeline.io_on_device() {
        assert!(!on_device, "{component}");
    }
    // one notice per graph, once
    assert_eq!(
        REOPEN_NOTICES[usize::from(device_io)].load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[test]
fn our_resize_equals_pillow_on_the_golden_inputs() {
    for case in cases() {
        let input = read_input(&golden_dir().join(&case.input), &InputLimits::default()).unwrap();
        let InputPixels::Rgb8(rgb) = &input.pixels else {
            panic!("8-bit input")
        };
        let plan =
            size_plan::plan_sizes(input.width, input.height, case.upscale, case.process_size)
                .unwrap();
        let ours = size_plan::apply_size_plan_rgb8(rgb, &plan).unwrap();
        let pillow = image::open(golden_dir().join(&case.upscaled))
            .unwrap()
            .to_rgb8();
        assert_eq!(ours.dimensions(), pillow.dimensions(), "{}", case.name);
        let worst = ours
            .as_raw()
            .iter()
            .zip(pillow.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        // integer fixed-point arithmetic on both sides: no CPU dependence, so exact
        assert_eq!(worst, 0, "{}: {worst} levels off Pillow", case.name);
    }
}

#[test]
fn the_timestep_changes_the_output() {
    let mut pipeline = cpu_pipeline();
    let case = &cases()[0];
    let (model_input, source) = pillow_upscaled(case);
    let options = options_for(case);
    let (at_100, _) = pipeline
        .upscale_tensor(&model_input, &source, 100, &options, &NoProgress)
        .unwrap();
    let (at_900, _) = pipeline
        .upscale_tensor(&model_input, &source, 900, &options, &NoProgress)
        .unwrap();
    let db = psnr(at_100.as_slice().unwrap(), at_900.as_slice().unwrap());
    assert!(db < 45.0, "t=100 and t=900 should differ, PSNR {db:.1} dB");
}

#[test]
fn a_seed_samples_reproducibly_and_differs_from_the_mean() {
    let mut pipeline = cpu_pipeline();
    let case = &cases()[0];
    let (model_input, source) = pillow_upscaled(case);
    let mean = options_for(case);
    let seeded = RunOptions {
        seed: Some(7),
        ..mean.clone()
    };
    let (from_mean, _) = pipeline
        .upscale_tensor(&model_input, &source, 500, &mean, &NoProgress)
        .unwrap();
    let (first, _) = pipeline
        .upscale_tensor(&model_input, &source, 500, &seeded, &NoProgress)
        .unwrap();
    let (second, _) = pipeline
        .upscale_tensor(&model_input, &source, 500, &seeded, &NoProgress)
        .unwrap();
    assert_eq!(first, second, "same seed, same output");
    assert_ne!(first, from_mean, "a sample is not the mean");
}

/// [`MAX_ABS_ERROR`] for the 896x832 latent-tiling case. Larger images carry
/// more fp32 round-off: ONNX Runtime's float32 reductions (GroupNorm
/// statistics over ~10^5..10^6 values, 11648-token attention) and the
/// random-weight decoder's amplification. Measured 2026-11-27: the same ONNX
/// graphs chained by onnxruntime from Python differ from PyTorch by 8.5e-4
/// at this size, tiled or untiled, so that much is the engine, not this
/// code. 2e-3 leaves about 2.3x over it and still fails the bugs that matter
/// here: PyTorch with the Gaussian midpoints swapped moves this output by
/// 1.7e-2, with `alphas_cumprod[t + 1]` by 8.5e-3.
const LARGE_MAX_ABS_ERROR: f32 = 2e-3;

#[derive(Deserialize)]
struct LatentTilingCase {
    name: String,
    input: String,
    upscale: u32,
    process_size: u32,
    timestep: u32,
    color_fix: String,
    tiling: String,
    output_size: [usize; 2],
    row_step: usize,
    reference_rows: String,
}

/// `--tiling latent` against PyTorch running the authors' UNet tiling
/// (`export/reference.py` `unet_latent_tiled`): a 896x832 output, so 2x2 UNet
/// tiles of 96 latent cells; the reference keeps every `row_step`-th row.
#[test]
fn latent_tiling_matches_pytorch() {
    latent_tiling_case_matches_pytorch("latent_tiling.json");
}

/// The same beyond the authors' encoder tile: a 1152x1088 output, whose
/// encoder runs in their 2 tiles with GroupNorm statistics pooled layer by
/// layer (`export/reference.py` `authors_tiled_encode`; the runtime's
/// `pipeline::authors_encoder`), the UNet in 2x2 latent tiles.
#[test]
fn latent_tiling_beyond_the_authors_encoder_tile_matches_pytorch() {
    latent_tiling_case_matches_pytorch("latent_tiling_authors_encoder.json");
}

fn latent_tiling_case_matches_pytorch(case_file: &str) {
    let text = std::fs::read_to_string(golden_dir().join(case_file)).unwrap();
    let case: LatentTilingCase = serde_json::from_str(&text).unwrap();
    assert_eq!(case.tiling, "latent");
    let input = read_input(&golden_dir().join(&case.input), &InputLimits::default()).unwrap();
    let plan =
        size_plan::plan_sizes(input.width, input.height, case.upscale, case.process_size).unwrap();
    let prepared = pipeline::prepare(&input, &plan).unwrap();
    let options = RunOptions {
        timesteps: vec![case.timestep],
        upscale: case.upscale,
        process_size: case.process_size,
        tile_px: 512,
        tile_overlap_px: 64,
        tiling: TilingMode::Latent,
        color_fix: case.color_fix.parse::<ColorFix>().unwrap(),
        seed: None,
        rounding: tadsr_edge::image::tensor::Quantization::Round,
    };
    let mut pipeline = cpu_pipeline();
    let (ours, _) = pipeline
        .upscale_tensor(
            &prepared.model_input,
            &prepared.source_planes,
            case.timestep,
            &options,
            &NoProgress,
        )
        .unwrap();
    let [width, height] = case.output_size;
    assert_eq!(ours.dim(), (3, height, width));
    let reference = npy::read_npy(golden_dir().join(&case.reference_rows)).unwrap();
    let rows: Vec<usize> = (0..height).step_by(case.row_step).collect();
    assert_eq!(reference.shape(), &[rows.len(), width, 3]);
    let mut max_abs = 0.0f32;
    for (row_index, &y) in rows.iter().enumerate() {
        for x in 0..width {
            for channel in 0..3 {
                let theirs = reference[[row_index, x, channel]];
                max_abs = max_abs.max((ours[[channel, y, x]] - theirs).abs());
            }
        }
    }
    eprintln!("{}: max |error| {max_abs:.2e}", case.name);
    assert!(
        max_abs <= LARGE_MAX_ABS_ERROR,
        "{}: max |error| {max_abs:.3e} > {LARGE_MAX_ABS_ERROR:e}",
        case.name
    );
}
