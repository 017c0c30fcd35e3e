//! Property tests (the fuzz target `tiling` of scripts/fuzz.sh): the tile
//! planners. For arbitrary sizes, tile sides and overlaps every planner
//! gives a plan or a typed error, never a panic; a plan covers the whole
//! area, keeps every tile inside it, gives all tiles one shape no larger
//! than asked, and neighbours overlap by at least the overlap asked.
//! `--tile auto`'s choice (`tile_budget::choose_tile`), for arbitrary
//! memory figures, budgets and image sizes: a tile the runtime accepts,
//! within the budget when it says it fits, never past a fixed-tile run's
//! short side unless that side is under the smallest auto tile.
//!
//! `PROPTEST_CASES=N` sets the cases.

use proptest::prelude::*;
use tadsr_edge::bundle::StageMemory;
use tadsr_edge::pipeline::TilingMode;
use tadsr_edge::tile_budget::{
    choose_tile, peak_bytes, Budget, CostModel, TileReason, AUTHORS_LATENT_TILE_PX,
    MIN_AUTO_TILE_PX,
};
use tadsr_edge::tiling::{plan_axis, TilePlan, TilingError};

mod fuzz_support;
use fuzz_support::config;

/// Checks one axis of a plan: offsets sorted, in bounds, covering
/// `0..size`, neighbours overlapping by at least `overlap`.
fn check_axis(size: usize, tile: usize, offsets: &[usize], overlap: usize) -> Result<(), String> {
    if tile == 0 || tile > size {
        return Err(format!("tile side {tile} for a side of {size}"));
    }
    let Some(&first) = offsets.first() else {
        return Err("no tiles".into());
    };
    if first != 0 {
        return Err(format!("the first tile starts at {first}"));
    }
    let last = *offsets.last().unwrap();
    if last + tile != size {
        return Err(format!("the last tile ends at {} of {size}", last + tile));
    }
    for pair in offsets.windows(2) {
        if pair[1] <= pair[0] {
            return Err(format!("offsets not increasing: {pair:?}"));
        }
        if pair[0] + tile < pair[1] {
            return Err(format!(
                "tiles at {} and {} (side {tile}) leave a gap",
                pair[0], pair[1]
            ));
        }
        if pair[0] + tile < pair[1] + overlap.min(tile) {
            return Err(format!(
                "tiles at {} and {} (side {tile}) overlap by less than {overlap}",
                pair[0], pair[1]
            ));
        }
    }
    Ok(())
}

fn check_plan(
    plan: &TilePlan,
    height: usize,
    width: usize,
    max_tile: Option<usize>,
    overlap: usize,
) -> Result<(), String> {
    if plan.area() != (height, width) {
        return Err(format!("area {:?} for {height}x{width}", plan.area()));
    }
    let (tile_h, tile_w) = plan.tile_shape();
    if let Some(max_tile) = max_tile {
        if tile_h > max_tile.min(height) || tile_w > max_tile.min(width) {
            return Err(format!("tile {tile_h}x{tile_w} over {max_tile}"));
        }
    }
    // Overlap is only owed where there are several tiles on an axis.
    check_axis(height, tile_h, plan.y_offsets(), overlap).map_err(|e| format!("rows: {e}"))?;
    check_axis(width, tile_w, plan.x_offsets(), overlap).map_err(|e| format!("columns: {e}"))?;
    // Every tile of the grid is one shape and in bounds (the axes are
    // checked above; the first tiles are checked as rects, plans may hold
    // millions).
    let count = plan.len();
    if count != plan.y_offsets().len() * plan.x_offsets().len() {
        return Err(format!(
            "{count} tiles for a {}x{} grid",
            plan.y_offsets().len(),
            plan.x_offsets().len()
        ));
    }
    for tile in plan.tiles().take(4) {
        if (tile.height, tile.width) != (tile_h, tile_w)
            || tile.y + tile.height > height
            || tile.x + tile.width > width
        {
            return Err(format!("tile {tile:?} of a {height}x{width} area"));
        }
    }
    Ok(())
}

/// Sides as the pipeline makes them (latent cells: up to 16384 * 16 / 8)
/// and some very small ones.
fn side() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=16, 1usize..=600, 1usize..=32768]
}

/// A stage's figures: weights and activations at 256, 512 and 768 px
/// (anything from nothing to absurd, not necessarily growing).
fn stage_memory() -> impl Strategy<Value = StageMemory> {
    let bytes = prop_oneof![0u64..=1 << 20, 0u64..=64 << 30, Just(u64::MAX / 3)];
    (bytes.clone(), prop::collection::vec(bytes, 1..=3)).prop_map(|(weights_bytes, values)| {
        StageMemory {
            weights_bytes,
            activations: values
                .into_iter()
                .zip([256u64, 512, 768])
                .map(|(value, side)| (side * side, value))
                .collect(),
        }
    })
}

fn cost_model() -> impl Strategy<Value = CostModel> {
    (
        stage_memory(),
        stage_memory(),
        stage_memory(),
        any::<bool>(),
        1u64..=8,
        any::<bool>(),
    )
        .prop_map(
            |(encoder, unet, decoder, releases, tile_batch, fixed_tiles)| CostModel {
                encoder,
                unet,
                decoder,
                extra_weights_bytes: 0,
                stages_release_memory: releases,
                tile_batch,
                graph_files: None,
                on_device: [false; 3],
                fixed_tiles,
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn auto_tiles_are_valid_within_budget_and_never_padded_by_choice(
        model in cost_model(),
        width in 8u32..=65536,
        height in 8u32..=65536,
        budget in prop_oneof![0u64..=1 << 30, 0u64..=u64::MAX],
        latent in any::<bool>(),
    ) {
        let tiling = if latent { TilingMode::Latent } else { TilingMode::Staged };
        let (width, height) = (width / 8 * 8, height / 8 * 8);
        let budget = Budget { bytes: budget, source: "fuzz".into() };
        let decision = choose_tile(Some(&model), tiling, width, height, budget.clone());
        let side = decision.tile_px;
        let estimate = decision.estimate_bytes.unwrap();
        prop_assert_eq!(estimate, peak_bytes(&model, tiling, width, height, side));
        match decision.reason {
            TileReason::FitsUntiled => prop_assert!(side == 0 && estimate <= budget.bytes),
            TileReason::LargestFittingTile => prop_assert!(side > 0 && estimate <= budget.bytes),
            TileReason::OverBudget => prop_assert!(side > 0 && estimate > budget.bytes),
            // the authors' tiles whatever the budget (their tiling is part of their output)
            TileReason::AuthorsLatentTiling => prop_assert!(latent && side == AUTHORS_LATENT_TILE_PX && estimate <= budget.bytes),
            other => prop_assert!(false, "unexpected {other:?}"),
        }
        if latent {
            prop_assert_eq!(side, AUTHORS_LATENT_TILE_PX);
        }
        if side > 0 {
            // what `--tile` accepts
            prop_assert!(side.is_multiple_of(8) && (64..=65536).contains(&side), "{side}");
        }
        if side > 0 && model.fixed_tiles && !latent {
            let short = width.min(height);
            prop_assert!(side <= short.max(MIN_AUTO_TILE_PX), "{side} for {width}x{height}");
        }
    }

    #[test]
    fn balanced_plans_cover_the_area(
        height in side(),
        width in side(),
        max_tile in 1usize..=2048,
        overlap in 0usize..=1024,
    ) {
        match TilePlan::balanced(height, width, max_tile, overlap) {
            Ok(plan) => {
                let checked = check_plan(&plan, height, width, Some(max_tile), overlap);
                prop_assert!(checked.is_ok(), "balanced({height}, {width}, {max_tile}, {overlap}): {}", checked.unwrap_err());
            }
            Err(TilingError::OverlapTooLarge { .. }) => prop_assert!(overlap >= max_tile),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn fixed_plans_cover_the_area(
        height in side(),
        width in side(),
        tile in 1usize..=2048,
        overlap in 0usize..=1024,
    ) {
        match TilePlan::new(height, width, tile, overlap) {
            Ok(plan) => {
                let checked = check_plan(&plan, height, width, Some(tile), overlap);
                prop_assert!(checked.is_ok(), "new({height}, {width}, {tile}, {overlap}): {}", checked.unwrap_err());
            }
            Err(TilingError::OverlapTooLarge { .. }) => prop_assert!(overlap >= tile),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn the_authors_latent_plan_covers_the_area(height in side(), width in side()) {
        let plan = TilePlan::latent_unet(height, width);
        prop_assert!(plan.is_ok(), "{plan:?}");
        let plan = plan.unwrap();
        let (tile_h, _) = plan.tile_shape();
        let overlap = if plan.len() > 1 { plan.overlap() } else { 0 };
        let checked = check_plan(&plan, height, width, None, overlap.min(tile_h));
        prop_assert!(checked.is_ok(), "latent_unet({height}, {width}): {}", checked.unwrap_err());
    }

    #[test]
    fn whole_and_scaled_plans_stay_consistent(height in side(), width in side(), factor in 1usize..=8) {
        let plan = TilePlan::whole(height, width).unwrap();
        prop_assert_eq!(plan.len(), 1);
        let scaled = TilePlan::balanced(height, width, 64, 8).unwrap().scaled_up(factor);
        let checked = check_plan(&scaled, height * factor, width * factor, None, 8 * factor);
        prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
    }

    #[test]
    fn axis_plans_never_panic(size in 0usize..=100_000, tile in 0usize..=4096, overlap in 0usize..=8192) {
        let offsets = plan_axis(size, tile.max(1), overlap);
        prop_assert!(!offsets.is_empty());
    }

    #[test]
    fn empty_areas_and_zero_tiles_are_typed_errors(size in 0usize..=8, tile in 0usize..=2) {
        let result = TilePlan::balanced(size, size, tile, 0);
        if size == 0 {
            prop_assert!(matches!(result, Err(TilingError::EmptyArea { .. })), "{:?}", result);
        } else if tile == 0 {
            prop_assert!(matches!(result, Err(TilingError::ZeroTile)), "{:?}", result);
        } else {
            prop_assert!(result.is_ok());
        }
    }
}
