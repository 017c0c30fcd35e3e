//! Tile planning and blending at 512 and 2048 output pixels per side:
//! the UNet latent plan with Gaussian weights (4 channels, latent = side / 8)
//! and the same plan scaled to pixels with feathered weights (3 channels).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tadsr_edge::tiling::{authors_gaussian_weights, feather_weights, TileAccumulator, TilePlan};

const OUTPUT_SIDES: [usize; 2] = [512, 2048];
const VAE_SCALE: usize = 8;

/// Plans, makes weights and blends constant tiles of `channels` over `plan`.
fn blend_plan(plan: &TilePlan, channels: usize, weights: &[f32]) -> ndarray::Array3<f32> {
    let (height, width) = plan.area();
    let (tile_h, tile_w) = plan.tile_shape();
    let tile = vec![0.5f32; channels * tile_h * tile_w];
    let mut accumulator = TileAccumulator::new(channels, height, width);
    for rect in plan.tiles() {
        accumulator
            .add_tile(rect, black_box(&tile), weights)
            .unwrap();
    }
    accumulator.finalize().unwrap()
}

fn bench_tiling(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("tiling");
    for side in OUTPUT_SIDES {
        let latent_side = side / VAE_SCALE;
        group.throughput(Throughput::Elements((side * side) as u64));
        group.bench_with_input(
            BenchmarkId::new("latent_plan_gaussian_blend", side),
            &latent_side,
            |bench, &latent| {
                bench.iter(|| {
                    let plan = TilePlan::latent_unet(latent, latent).unwrap();
                    let (tile_h, tile_w) = plan.tile_shape();
                    blend_plan(&plan, 4, &authors_gaussian_weights(tile_h, tile_w))
                })
            },
        );
        let pixel_plan = TilePlan::latent_unet(latent_side, latent_side)
            .unwrap()
            .scaled_up(VAE_SCALE);
        let (tile_h, tile_w) = pixel_plan.tile_shape();
        let feather = feather_weights(tile_h, tile_w, pixel_plan.overlap());
        group.bench_with_input(
            BenchmarkId::new("pixel_feather_blend", side),
            &pixel_plan,
            |bench, plan| bench.iter(|| blend_plan(plan, 3, &feather)),
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
    targets = bench_tiling
}
criterion_main!(benches);
