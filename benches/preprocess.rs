//! Resizing (Pillow bicubic x4 and Lanczos to multiples of 8) and tensor
//! conversion at 512 and 2048 output pixels per side.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use image::RgbImage;
use tadsr_edge::image::resample::{resize_rgb8, ResampleFilter};
use tadsr_edge::image::tensor::{rgb8_to_model_input, unit_planes_to_rgb8, Quantization};

const OUTPUT_SIDES: [u32; 2] = [512, 2048];

/// A deterministic photo-like RGB image.
fn test_image(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let hash = x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663);
        let noise = (hash % 23) as u8;
        image::Rgb([
            ((x * 255 / width) as u8).saturating_add(noise),
            ((y * 255 / height) as u8).saturating_add(noise),
            (((x + y) % 256) as u8) / 2 + noise,
        ])
    })
}

fn bench_resize(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("resize");
    for side in OUTPUT_SIDES {
        group.throughput(Throughput::Elements(u64::from(side * side)));
        let low_res = test_image(side / 4, side / 4);
        group.bench_with_input(
            BenchmarkId::new("bicubic_x4", side),
            &low_res,
            |bench, image| {
                bench.iter(|| {
                    resize_rgb8(black_box(image), side, side, ResampleFilter::Bicubic).unwrap()
                })
            },
        );
        // Step 4 on an upscaled image 4 px too large per side.
        let upscaled = test_image(side + 4, side + 4);
        group.bench_with_input(
            BenchmarkId::new("lanczos_to_mult8", side),
            &upscaled,
            |bench, image| {
                bench.iter(|| {
                    resize_rgb8(black_box(image), side, side, ResampleFilter::Lanczos).unwrap()
                })
            },
        );
    }
    group.finish();
}

fn bench_tensor_conversion(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("tensor");
    for side in OUTPUT_SIDES {
        group.throughput(Throughput::Elements(u64::from(side * side)));
        let image = test_image(side, side);
        group.bench_with_input(
            BenchmarkId::new("rgb8_to_nchw", side),
            &image,
            |bench, image| bench.iter(|| rgb8_to_model_input(black_box(image))),
        );
        let planes = rgb8_to_model_input(&image)
            .index_axis_move(ndarray::Axis(0), 0)
            .mapv(|v| v * 0.5 + 0.5);
        group.bench_with_input(
            BenchmarkId::new("planes_to_rgb8", side),
            &planes,
            |bench, planes| {
                bench.iter(|| {
                    unit_planes_to_rgb8(black_box(planes.view()), Quantization::Round).unwrap()
                })
            },
        );
    }
    group.finish();
}

fn short_config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = short_config();
    targets = bench_resize, bench_tensor_conversion
}
criterion_main!(benches);
