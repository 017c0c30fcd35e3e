//! Tiling against no tiling on a bundle whose graphs have no spatial mixing
//! (tests/fixtures/graphs/pointwise: each latent cell depends on its own 8x8
//! pixel block only). Every tile then computes exactly what the whole image
//! computes at its cells, so any tile plan must give the untiled output up to
//! the blend's own round-off (a weighted mean of equal values: a few ulps).
//! A misplaced tile, a gap in a plan or a tile blended into the wrong place
//! moves pixels by whole image values instead.
//!
//! The same fixture folder holds decoders whose *graph* disagrees with the
//! manifest (renamed output, float64 input): loading must refuse them, and
//! the three graphs with float16 ports (pointwise_fp16, as an fp16 bundle's)
//! for the half-precision input and output paths.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tadsr_edge::image::resample::{self, ResampleFilter};
use tadsr_edge::image::tensor;
use tadsr_edge::pipeline::{
    ColorFix, NoProgress, Pipeline, PipelineConfig, ProviderChoice, RunOptions, TilingMode,
};
use tadsr_edge::runtime::Provider;

/// A weighted mean of equal fp32 values differs from them by a few ulps
/// (products, a sum of up to four tiles' terms, one division).
const BLEND_ULPS: f32 = 8.0;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A bundle in `dir`: models/tiny's manifest (schedule, prompt, defaults)
/// with the pointwise graphs, and `decoder` as the decoder's graph file.
fn pointwise_bundle(dir: &Path, decoder: &str) -> PathBuf {
    let graphs = repo().join("tests/fixtures/graphs");
    let tiny = repo().join("models/tiny");
    let text = std::fs::read_to_string(tiny.join("manifest.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    // the encoder segments are cut from the tiled encoder: they go with it
    manifest
        .as_object_mut()
        .unwrap()
        .remove("vae_encoder_segments");
    let components = manifest["components"].as_object_mut().unwrap();
    components.remove("vae_encoder_tiled");
    components.remove("vae_decoder_tiled");
    for (name, source) in [
        ("vae_encoder", graphs.join("pointwise/vae_encoder.onnx")),
        ("unet", graphs.join("pointwise/unet.onnx")),
        ("vae_decoder", graphs.join(decoder)),
    ] {
        let file = format!("{name}.onnx");
        std::fs::copy(&source, dir.join(&file)).unwrap();
        components[name]["file"] = file.clone().into();
        components[name]["sha256"] = sha256_hex(&dir.join(&file)).into();
    }
    std::fs::copy(
        tiny.join("prompt_embeds.npy"),
        dir.join("prompt_embeds.npy"),
    )
    .unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}

/// [`pointwise_bundle`] with the float16-port graphs (pointwise_fp16) and
/// a manifest that says so, as an fp16 export's does.
fn pointwise_fp16_bundle(dir: &Path) -> PathBuf {
    pointwise_bundle(dir, "pointwise/vae_decoder.onnx");
    let graphs = repo().join("tests/fixtures/graphs/pointwise_fp16");
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["precision"] = "fp16".into();
    for name in ["vae_encoder", "unet", "vae_decoder"] {
        let file = format!("{name}.onnx");
        std::fs::copy(graphs.join(&file), dir.join(&file)).unwrap();
        let component = &mut manifest["components"][name];
        component["sha256"] = sha256_hex(&dir.join(&file)).into();
        for ports in ["inputs", "outputs"] {
            for port in component[ports].as_array_mut().unwrap() {
                if port["dtype"] == "float32" {
                    port["dtype"] = "float16".into();
                }
            }
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    dir.to_path_buf()
}

fn load(dir: &Path) -> tadsr_edge::Result<Pipeline> {
    let mut config = PipelineConfig::new(dir);
    config.provider = ProviderChoice::Only(Provider::Cpu);
    Pipeline::load(&config)
}

/// Model input and color-fix source of a `width x height` crop-and-resize of
/// examples/coffee.png (a real photo: every tile sees different content).
fn photo(width: u32, height: u32) -> (ndarray::Array4<f32>, ndarray::Array3<f32>) {
    let photo = image::open(repo().join("examples/coffee.png"))
        .unwrap()
        .to_rgb8();
    let resized = resample::resize_rgb8(&photo, width, height, ResampleFilter::Bicubic).unwrap();
    (
        tensor::rgb8_to_model_input(&resized),
        tensor::rgb8_to_unit_planes(&resized),
    )
}

fn options(tile_px: u32, tile_overlap_px: u32, tiling: TilingMode) -> RunOptions {
    RunOptions {
        timesteps: vec![500],
        upscale: 4,
        process_size: 0,
        tile_px,
        tile_overlap_px,
        tiling,
        color_fix: ColorFix::None,
        seed: None,
        rounding: tadsr_edge::image::tensor::Quantization::Round,
    }
}

fn run(pipeline: &mut Pipeline, width: u32, height: u32, options: &RunOptions) -> Vec<f32> {
    let (input, source) = photo(width, height);
    let (planes, _) = pipeline
        .upscale_tensor(&input, &source, 500, options, &NoProgress)
        .expect("run");
    planes.into_raw_vec_and_offset().0
}

/// Largest difference in ulps of the untiled value.
fn worst_ulps(untiled: &[f32], tiled: &[f32]) -> f32 {
    assert_eq!(untiled.len(), tiled.len());
    untiled
        .iter()
        .zip(tiled)
        .map(|(a, b)| (a - b).abs() / (a.abs().max(f32::MIN_POSITIVE) * f32::EPSILON))
        .fold(0.0, f32::max)
}

/// Staged tiling of `pipeline` against its untiled output, for each size
/// and (tile, overlap): within [`BLEND_ULPS`].
fn assert_staged_tiles_match_untiled(
    pipeline: &mut Pipeline,
    label: &str,
    sizes: &[(u32, u32)],
    tiles: &[(u32, u32)],
) {
    for &(width, height) in sizes {
        let untiled = run(pipeline, width, height, &options(0, 0, TilingMode::Staged));
        for &(tile_px, overlap_px) in tiles {
            let tiled = run(
                pipeline,
                width,
                height,
                &options(tile_px, overlap_px, TilingMode::Staged),
            );
            let ulps = worst_ulps(&untiled, &tiled);
            eprintln!("{label} {width}x{height} --tile {tile_px} --tile-overlap {overlap_px}: {ulps} ulps");
            assert!(
                ulps <= BLEND_ULPS,
                "{label} {width}x{height}, tile {tile_px}, overlap {overlap_px}: {ulps} ulps off untiled"
            );
        }
    }
}

#[test]
fn fixed_gpu_tile_shapes_give_the_untiled_output_on_a_pointwise_graph() {
    // What GPU providers do: every tile at the requested shape, the last one
    // flush with the edge, sides smaller than a tile padded by repetition and
    // cut back. Forced here on the CPU, where the result must not change.
    let dir = tempfile::tempdir().unwrap();
    let bundle = pointwise_bundle(dir.path(), "pointwise/vae_decoder.onnx");
    let mut config = PipelineConfig::new(&bundle);
    config.provider = ProviderChoice::Only(Provider::Cpu);
    config.fixed_tiles = Some(true);
    let mut pipeline = Pipeline::load(&config).unwrap();
    // 512: both sides padded; 256 with 200x136: one padded tile; 256
    // with 424x328: flush last tiles; 96: many tiles, no padding
    assert_staged_tiles_match_untiled(
        &mut pipeline,
        "fixed tiles",
        &[(200, 136), (424, 328)],
        &[(512, 64), (256, 64), (96, 24)],
    );
}

/// An fp16 bundle's half-precision ports, through plain sessions and
/// through graphs pinned to the image's shape with every input and output
/// held at fixed addresses (what `--cuda-graph` runs on CUDA; host memory
/// here): the same output, and the fp32 graphs' output up to float16
/// rounding of the ports.
#[test]
fn float16_ports_give_the_float32_output_in_host_and_fixed_memory() {
    let (width, height) = (200u32, 136u32);
    let untiled = options(0, 0, TilingMode::Staged);
    let fp32_dir = tempfile::tempdir().unwrap();
    let fp32_bundle = pointwise_bundle(fp32_dir.path(), "pointwise/vae_decoder.onnx");
    let fp32 = run(&mut load(&fp32_bundle).unwrap(), width, height, &untiled);
    let dir = tempfile::tempdir().unwrap();
    let bundle = pointwise_fp16_bundle(dir.path());
    let plain = run(&mut load(&bundle).unwrap(), width, height, &untiled);
    let mut config = PipelineConfig::new(&bundle);
    config.provider = ProviderChoice::Only(Provider::Cpu);
    config.static_shapes = tadsr_edge::pipeline::StaticShapes::On;
    config.device_io = Some(true);
    config.shapes.tile_px = 0;
    // (height, width), as ShapeHint holds it
    config.shapes.exact_px = Some((height, width));
    let mut fixed = Pipeline::load(&config).unwrap();
    for (component, shape) in fixed.fixed_shapes() {
        assert_eq!(
            shape,
            Some((height as usize, width as usize)),
            "{component}"
        );
    }
    for (component, on_device) in fixed.io_on_device() {
        assert!(on_device, "{component}");
    }
    // twice: the second run rewrites the tensors bound by the first
    for _ in 0..2 {
        assert_eq!(run(&mut fixed, width, height, &untiled), plain);
    }
    // image in [0, 1]: three float16 roundings of values below 4 (input,
    // latents, output) move it by at most a few 2^-11
    let worst = fp32
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("fp16 ports vs fp32 graphs: max abs difference {worst:.2e}");
    assert!(worst > 0.0 && worst < 8.0 / 2048.0, "{worst}");
}

#[test]
fn staged_tiles_give_the_untiled_output_on_a_pointwise_graph() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = load(&pointwise_bundle(dir.path(), "pointwise/vae_decoder.onnx")).unwrap();
    // sides that are not multiples of the tile, overlaps of 1 to 8 latent cells
    assert_staged_tiles_match_untiled(
        &mut pipeline,
        "balanced tiles",
        &[(200, 136), (424, 328)],
        &[(64, 8), (64, 32), (96, 24), (128, 64), (256, 64)],
    );
}

#[test]
fn latent_tiling_gives_the_untiled_output_on_a_pointwise_graph() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = load(&pointwise_bundle(dir.path(), "pointwise/vae_decoder.onnx")).unwrap();
    // 1000x840 pixels: a 125x105 latent, above the authors' 96x96 limit, so
    // the UNet runs in 96-cell tiles with a 32-cell overlap
    let (width, height) = (1000, 840);
    let untiled = run(
        &mut pipeline,
        width,
        height,
        &options(0, 0, TilingMode::Staged),
    );
    let tiled = run(
        &mut pipeline,
        width,
        height,
        &options(512, 64, TilingMode::Latent),
    );
    let ulps = worst_ulps(&untiled, &tiled);
    eprintln!("{width}x{height} --tiling latent: {ulps} ulps");
    assert!(ulps <= BLEND_ULPS, "{ulps} ulps off untiled");
}

#[test]
fn a_graph_whose_ports_disagree_with_the_manifest_is_refused() {
    for (decoder, expected) in [
        (
            "ports/vae_decoder_output_renamed.onnx",
            "vae_decoder graph has no output \"image\"",
        ),
        (
            "ports/vae_decoder_input_float64.onnx",
            "vae_decoder input \"latent\" is float64 in the graph but float32 in the manifest",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let error = load(&pointwise_bundle(dir.path(), decoder))
            .err()
            .unwrap_or_else(|| panic!("{decoder}: loaded"))
            .to_string();
        assert!(error.contains(expected), "{decoder}: {error}");
        assert!(error.contains("model bundle"), "{decoder}: {error}");
    }
    // and the same manifest with the matching graph loads
    let dir = tempfile::tempdir().unwrap();
    load(&pointwise_bundle(dir.path(), "pointwise/vae_decoder.onnx")).unwrap();
}
