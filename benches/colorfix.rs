//! AdaIN and wavelet color fix at 512 and 2048 output pixels per side.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ndarray::Array3;
use tadsr_edge::image::colorfix::{adain_color_fix, wavelet_color_fix};

const OUTPUT_SIDES: [usize; 2] = [512, 2048];

fn test_planes(side: usize, seed: usize) -> Array3<f32> {
    Array3::from_shape_fn((3, side, side), |(c, y, x)| {
        let noise = ((x * 7919 + y * 104_729 + (c + seed) * 31) % 97) as f32 / 970.0;
        (0.2 + 0.5 * x as f32 / side as f32 + 0.1 * c as f32 + noise).min(1.0)
    })
}

fn bench_color_fix(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("colorfix");
    for side in OUTPUT_SIDES {
        group.throughput(Throughput::Elements((side * side) as u64));
        let decoded = test_planes(side, 1);
        let upscaled_input = test_planes(side, 2);
        group.bench_with_input(BenchmarkId::new("adain", side), &side, |bench, _| {
            bench.iter_batched_ref(
                || decoded.clone(),
                |target| {
                    adain_color_fix(target.view_mut(), black_box(upscaled_input.view())).unwrap()
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("wavelet", side), &side, |bench, _| {
            bench.iter_batched_ref(
                || decoded.clone(),
                |target| {
                    wavelet_color_fix(target.view_mut(), black_box(upscaled_input.view())).unwrap()
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn short_config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = short_config();
    targets = bench_color_fix
}
criterion_main!(benches);
