//! Compares the resampler in `tadsr_edge::preprocess` with real Pillow output.
//!
//! The fixtures in tests/fixtures/resize/ come from `make_fixtures.py` there
//! (Pillow version in index.json). Pillow's 8-bit path is integer arithmetic
//! after the coefficients, so the goal is identity; the test allows at most
//! one step of difference per sample and prints how many samples differ.

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use serde::Deserialize;
use tadsr_edge::image::resample::{resize_f32, resize_gray8, resize_rgb8, ResampleFilter};
use tadsr_edge::image::size_plan::{apply_size_plan_rgb8, plan_sizes};
use tadsr_edge::npy::read_npy;

#[derive(Deserialize)]
struct FixtureIndex {
    pillow_version: String,
    resize: Vec<ResizeCase>,
    pipeline: Vec<PipelineCase>,
    float: Vec<FloatCase>,
}

#[derive(Deserialize)]
struct ResizeCase {
    input: String,
    mode: String,
    filter: String,
    size: (u32, u32),
    expected: String,
}

#[derive(Deserialize)]
struct PipelineCase {
    input: String,
    upscale: u32,
    process_size: u32,
    pre_resize: Option<(u32, u32)>,
    upscaled: (u32, u32),
    model: (u32, u32),
    expected: String,
}

#[derive(Deserialize)]
struct FloatCase {
    input: String,
    filter: String,
    size: (usize, usize),
    expected: String,
}

/// How far our samples are from Pillow's.
#[derive(Debug, Default)]
struct SampleDiff {
    max_abs: u8,
    off_by_one: usize,
    total: usize,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize")
}

fn load_index() -> FixtureIndex {
    let text = std::fs::read_to_string(fixture_dir().join("index.json")).expect("index.json");
    serde_json::from_str(&text).expect("valid index.json")
}

fn load_rgb(name: &str) -> RgbImage {
    image::open(fixture_dir().join(name))
        .unwrap_or_else(|err| panic!("{name}: {err}"))
        .to_rgb8()
}

fn load_gray(name: &str) -> GrayImage {
    image::open(fixture_dir().join(name))
        .unwrap_or_else(|err| panic!("{name}: {err}"))
        .to_luma8()
}

/// The green channel, as `Image.getchannel("G")` gives it.
fn green_channel(image: &RgbImage) -> GrayImage {
    let (width, height) = image.dimensions();
    let green = image.pixels().map(|pixel| pixel[1]).collect();
    GrayImage::from_raw(width, height, green).expect("one sample per pixel")
}

fn filter_named(name: &str) -> ResampleFilter {
    match name {
        "bicubic" => ResampleFilter::Bicubic,
        "lanczos" => ResampleFilter::Lanczos,
        other => panic!("unknown filter {other}"),
    }
}

fn compare_samples(ours: &[u8], pillow: &[u8]) -> SampleDiff {
    assert_eq!(ours.len(), pillow.len(), "sample counts differ");
    let mut diff = SampleDiff {
        total: ours.len(),
        ..SampleDiff::default()
    };
    for (&a, &b) in ours.iter().zip(pillow) {
        let abs = a.abs_diff(b);
        diff.max_abs = diff.max_abs.max(abs);
        diff.off_by_one += usize::from(abs == 1);
    }
    diff
}

fn check_diff(label: &str, diff: &SampleDiff) {
    println!(
        "{label}: max |diff| {}, {} of {} samples off by one",
        diff.max_abs, diff.off_by_one, diff.total
    );
    // Pillow and we both resample 8-bit images in integer fixed point (22-bit
    // coefficients, the same rounding): no float, no CPU dependence, so exact.
    assert_eq!(diff.max_abs, 0, "{label}: {diff:?}");
}

#[test]
fn eight_bit_resizes_match_pillow() {
    let index = load_index();
    println!("fixtures from Pillow {}", index.pillow_version);
    let mut total_off_by_one = 0;
    for case in &index.resize {
        let source = load_rgb(&case.input);
        let filter = filter_named(&case.filter);
        let (width, height) = case.size;
        let label = format!(
            "{} {} {} -> {width}x{height}",
            case.input, case.mode, case.filter
        );
        let diff = match case.mode.as_str() {
            "RGB" => {
                let ours = resize_rgb8(&source, width, height, filter).unwrap();
                compare_samples(ours.as_raw(), load_rgb(&case.expected).as_raw())
            }
            "L" => {
                let ours = resize_gray8(&green_channel(&source), width, height, filter).unwrap();
                compare_samples(ours.as_raw(), load_gray(&case.expected).as_raw())
            }
            other => panic!("unknown mode {other}"),
        };
        check_diff(&label, &diff);
        total_off_by_one += diff.off_by_one;
    }
    println!("all 8-bit cases: {total_off_by_one} samples off by one");
}

#[test]
fn size_rule_and_chain_match_the_authors_python() {
    let index = load_index();
    for case in &index.pipeline {
        let source = load_rgb(&case.input);
        let (width, height) = source.dimensions();
        let plan = plan_sizes(width, height, case.upscale, case.process_size).unwrap();
        let label = format!("{} s={} p={}", case.input, case.upscale, case.process_size);
        assert_eq!(plan.pre_resize, case.pre_resize, "{label}");
        assert_eq!(plan.upscaled, case.upscaled, "{label}");
        assert_eq!(plan.model, case.model, "{label}");
        assert_eq!(plan.output, (width * case.upscale, height * case.upscale));
        let ours = apply_size_plan_rgb8(&source, &plan).unwrap();
        let diff = compare_samples(ours.as_raw(), load_rgb(&case.expected).as_raw());
        check_diff(&label, &diff);
    }
}

#[test]
fn float_resizes_match_pillow_mode_f() {
    let index = load_index();
    for case in &index.float {
        let source = read_npy(fixture_dir().join(&case.input)).unwrap();
        let (height, width) = (source.shape()[0], source.shape()[1]);
        let expected = read_npy(fixture_dir().join(&case.expected)).unwrap();
        let (new_width, new_height) = case.size;
        assert_eq!(expected.shape(), &[new_height, new_width]);
        let ours = resize_f32(
            source.as_slice().unwrap(),
            width as u32,
            height as u32,
            1,
            new_width as u32,
            new_height as u32,
            filter_named(&case.filter),
        )
        .unwrap();
        let max_abs = ours
            .iter()
            .zip(expected.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{} {} -> {new_width}x{new_height}: max |diff| {max_abs:e}",
            case.input, case.filter
        );
        // Pillow's "F" mode sums in double and stores float32, and so do we:
        // at most an ulp of values up to 255 (3e-5) could differ.
        assert!(max_abs <= 1e-4, "{}: {max_abs}", case.expected);
    }
}
