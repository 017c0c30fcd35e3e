//! Fixed-shape tile plans, blend weights and weighted accumulation.
//!
//! Every tile of a plan has the same shape (tiles never shrink at the far
//! edge: the last tile is placed flush with it instead), so one ONNX session
//! shape serves the whole image. Tiles are blended by per-pixel weights:
//! the authors' Gaussian for UNet residuals, a linear feather elsewhere.
//!
//! Over 500 lines only with its unit and property tests beside the code
//! (the code is about 470 lines).

use ndarray::{s, Array3, ArrayView3};
use rayon::prelude::*;

/// The authors' UNet latent tile side (`--latent_tiled_size`).
pub const LATENT_TILE: usize = 96;
/// The authors' UNet latent tile overlap (`--latent_tiled_overlap`).
pub const LATENT_TILE_OVERLAP: usize = 32;
/// Variance of the authors' Gaussian tile weights, in units of the tile side squared.
const GAUSSIAN_VARIANCE: f64 = 0.01;

/// Errors from building plans and accumulating tiles.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TilingError {
    #[error("cannot tile an empty {height}x{width} area")]
    EmptyArea { height: usize, width: usize },
    #[error("tile side must be at least 1")]
    ZeroTile,
    #[error("overlap {overlap} must be smaller than the tile side {tile}")]
    OverlapTooLarge { overlap: usize, tile: usize },
    #[error("tile at ({y}, {x}) of {height}x{width} leaves the {area_height}x{area_width} area")]
    OutOfBounds {
        y: usize,
        x: usize,
        height: usize,
        width: usize,
        area_height: usize,
        area_width: usize,
    },
    #[error("{what} holds {actual} values, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("pixel ({y}, {x}) has zero total weight (no tile covers it)")]
    Uncovered { y: usize, x: usize },
}

/// Tile offsets along one axis: steps of `tile - overlap`, the last tile flush
/// with the far edge (offset `size - tile`). When `size <= tile` there is one
/// tile at 0 (and the caller uses `size` as the tile length).
pub fn plan_axis(size: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if size <= tile {
        return vec![0];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut offsets: Vec<usize> = (0..)
        .map(|index| index * stride)
        .take_while(|&offset| offset + tile < size)
        .collect();
    offsets.push(size - tile);
    offsets
}

/// One tile: rows `y .. y + height`, columns `x .. x + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileRect {
    pub y: usize,
    pub x: usize,
    pub height: usize,
    pub width: usize,
}

impl TileRect {
    /// The rect `factor` times larger (latent -> pixel coordinates for the 8x VAE).
    pub fn scaled_up(&self, factor: usize) -> TileRect {
        TileRect {
            y: self.y * factor,
            x: self.x * factor,
            height: self.height * factor,
            width: self.width * factor,
        }
    }

    /// Number of pixels in the tile.
    pub fn area(&self) -> usize {
        self.height * self.width
    }
}

/// A grid of same-shape tiles over a `height x width` area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilePlan {
    height: usize,
    width: usize,
    tile_height: usize,
    tile_width: usize,
    overlap: usize,
    y_offsets: Vec<usize>,
    x_offsets: Vec<usize>,
}

impl TilePlan {
    /// Tiles of `min(tile, height) x min(tile, width)` overlapping by `overlap`.
    pub fn new(
        height: usize,
        width: usize,
        tile: usize,
        overlap: usize,
    ) -> Result<Self, TilingError> {
        if height == 0 || width == 0 {
            return Err(TilingError::EmptyArea { height, width });
        }
        if tile == 0 {
            return Err(TilingError::ZeroTile);
        }
        if overlap >= tile {
            return Err(TilingError::OverlapTooLarge { overlap, tile });
        }
        Ok(TilePlan {
            height,
            width,
            tile_height: tile.min(height),
            tile_width: tile.min(width),
            overlap,
            y_offsets: plan_axis(height, tile, overlap),
            x_offsets: plan_axis(width, tile, overlap),
        })
    }

    /// The fewest tiles of at most `max_tile` per side that cover the area
    /// with at least `overlap`, each as small as that allows: per axis
    /// `n = ceil((size - overlap) / (max_tile - overlap))` tiles of
    /// `ceil((size + (n - 1) * overlap) / n)`. Compared with [`TilePlan::new`]
    /// this avoids a last tile that mostly repeats its neighbour (a 2048 px
    /// side in 512 px tiles: 5 tiles of 464 instead of 5 of 512). All tiles
    /// still share one shape.
    pub fn balanced(
        height: usize,
        width: usize,
        max_tile: usize,
        overlap: usize,
    ) -> Result<Self, TilingError> {
        let fixed = TilePlan::new(height, width, max_tile, overlap)?;
        let axis_tile = |size: usize| {
            if size <= max_tile {
                return size;
            }
            let count = (size - overlap).div_ceil(max_tile - overlap);
            (size + (count - 1) * overlap).div_ceil(count)
        };
        let (tile_height, tile_width) = (axis_tile(height), axis_tile(width));
        Ok(TilePlan {
            tile_height,
            tile_width,
            y_offsets: plan_axis(height, tile_height, overlap),
            x_offsets: plan_axis(width, tile_width, overlap),
            ..fixed
        })
    }

    /// One tile covering the whole area.
    pub fn whole(height: usize, width: usize) -> Result<Self, TilingError> {
        TilePlan::new(height, width, height.max(width), 0)
    }

    /// The authors' UNet latent tiling: no tiling while `h * w <= 96 * 96`,
    /// else square tiles of `T = min(96, h, w)` overlapping by 32.
    ///
    /// Deviation: where `T <= 32` (a long thin latent) the authors' loop never
    /// ends; here the overlap becomes `T / 2` instead.
    pub fn latent_unet(height: usize, width: usize) -> Result<Self, TilingError> {
        if height * width <= LATENT_TILE * LATENT_TILE {
            return TilePlan::whole(height, width);
        }
        let tile = LATENT_TILE.min(height).min(width);
        let overlap = if LATENT_TILE_OVERLAP < tile {
            LATENT_TILE_OVERLAP
        } else {
            tile / 2
        };
        TilePlan::new(height, width, tile, overlap)
    }

    /// The same grid `factor` times larger (a latent plan as pixel tiles).
    pub fn scaled_up(&self, factor: usize) -> TilePlan {
        let scale = |values: &[usize]| values.iter().map(|v| v * factor).collect();
        TilePlan {
            height: self.height * factor,
            width: self.width * factor,
            tile_height: self.tile_height * factor,
            tile_width: self.tile_width * factor,
            overlap: self.overlap * factor,
            y_offsets: scale(&self.y_offsets),
            x_offsets: scale(&self.x_offsets),
        }
    }

    /// Tiles in row-major order (y outer, x inner).
    pub fn tiles(&self) -> impl Iterator<Item = TileRect> + '_ {
        self.y_offsets.iter().flat_map(move |&y| {
            self.x_offsets.iter().map(move |&x| TileRect {
                y,
                x,
                height: self.tile_height,
                width: self.tile_width,
            })
        })
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.y_offsets.len() * self.x_offsets.len()
    }

    /// Always false: a plan has at least one tile.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether one tile covers everything.
    pub fn is_single(&self) -> bool {
        self.len() == 1
    }

    /// Area size `(height, width)`.
    pub fn area(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// The shape every tile has, `(height, width)`.
    pub fn tile_shape(&self) -> (usize, usize) {
        (self.tile_height, self.tile_width)
    }

    /// The nominal overlap between neighbouring tiles (the last pair may overlap more).
    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// Row offsets of the tile rows.
    pub fn y_offsets(&self) -> &[usize] {
        &self.y_offsets
    }

    /// Column offsets of the tile columns.
    pub fn x_offsets(&self) -> &[usize] {
        &self.x_offsets
    }
}

// ---------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------

/// `g(u) = exp(-(u - m)^2 / len^2 / (2 * 0.01)) / sqrt(2 * pi * 0.01)` for `u` in `0..len`.
pub fn gaussian_profile(len: usize, midpoint: f64) -> Vec<f64> {
    let len_squared = (len * len) as f64;
    let normalizer = (2.0 * std::f64::consts::PI * GAUSSIAN_VARIANCE).sqrt();
    (0..len)
        .map(|u| {
            let distance = u as f64 - midpoint;
            (-distance * distance / len_squared / (2.0 * GAUSSIAN_VARIANCE)).exp() / normalizer
        })
        .collect()
}

/// The authors' midpoints: `(len - 1) / 2` along x but `len / 2` along y
/// (an asymmetry in their `_gaussian_weights`, kept for parity).
pub fn authors_gaussian_midpoints(tile_height: usize, tile_width: usize) -> (f64, f64) {
    (tile_height as f64 / 2.0, (tile_width as f64 - 1.0) / 2.0)
}

/// The authors' UNet tile weights `w(y, x) = g_y(y) * g_x(x)`, row-major
/// `tile_height x tile_width`, computed in `f64` like numpy and stored as `f32`.
pub fn authors_gaussian_weights(tile_height: usize, tile_width: usize) -> Vec<f32> {
    let (midpoint_y, midpoint_x) = authors_gaussian_midpoints(tile_height, tile_width);
    outer_product(
        &gaussian_profile(tile_height, midpoint_y),
        &gaussian_profile(tile_width, midpoint_x),
    )
}

/// A linear ramp `min(1, (i + 1) / (overlap + 1), (len - i) / (overlap + 1))`:
/// two tiles overlapping by `overlap` cross-fade with weights summing to 1,
/// and no weight is ever zero.
pub fn feather_profile(len: usize, overlap: usize) -> Vec<f64> {
    let ramp_len = (overlap + 1) as f64;
    (0..len)
        .map(|i| {
            let from_start = (i + 1) as f64 / ramp_len;
            let from_end = (len - i) as f64 / ramp_len;
            from_start.min(from_end).min(1.0)
        })
        .collect()
}

/// Feathered tile weights (outer product of [`feather_profile`]s), row-major,
/// for decoder pixel tiles and encoder latent-moment tiles.
pub fn feather_weights(tile_height: usize, tile_width: usize, overlap: usize) -> Vec<f32> {
    outer_product(
        &feather_profile(tile_height, overlap),
        &feather_profile(tile_width, overlap),
    )
}

fn outer_product(column: &[f64], row: &[f64]) -> Vec<f32> {
    column
        .iter()
        .flat_map(|&y_weight| {
            row.iter()
                .map(move |&x_weight| (y_weight * x_weight) as f32)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Accumulation
// ---------------------------------------------------------------------------

/// Sums weighted tiles into a `channels x height x width` buffer and the
/// per-pixel weight total; [`TileAccumulator::finalize`] divides.
#[derive(Debug, Clone)]
pub struct TileAccumulator {
    channels: usize,
    height: usize,
    width: usize,
    weighted_sum: Vec<f32>,
    weight_total: Vec<f32>,
}

impl TileAccumulator {
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        TileAccumulator {
            channels,
            height,
            width,
            weighted_sum: vec![0.0; channels * height * width],
            weight_total: vec![0.0; height * width],
        }
    }

    /// `(channels, height, width)` of the result.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Adds `tile` (`channels x rect.height x rect.width`, C order) times
    /// `weights` (`rect.height x rect.width`) at `rect`.
    pub fn add_tile(
        &mut self,
        rect: TileRect,
        tile: &[f32],
        weights: &[f32],
    ) -> Result<(), TilingError> {
        self.check_rect(rect)?;
        check_len("tile", rect.area() * self.channels, tile.len())?;
        check_len("weights", rect.area(), weights.len())?;
        let (height, width) = (self.height, self.width);
        let rect_rows = rect.y..rect.y + rect.height;
        let rect_columns = rect.x..rect.x + rect.width;
        // Rows of all channels in parallel; rows outside the rect are skipped.
        self.weighted_sum
            .par_chunks_mut(width)
            .enumerate()
            .filter(|(row_index, _)| rect_rows.contains(&(row_index % height)))
            .for_each(|(row_index, row)| {
                let (channel, tile_y) = (row_index / height, row_index % height - rect.y);
                let tile_row_start = (channel * rect.height + tile_y) * rect.width;
                let weight_row_start = tile_y * rect.width;
                add_weighted_row(
                    &mut row[rect_columns.clone()],
                    &tile[tile_row_start..tile_row_start + rect.width],
                    &weights[weight_row_start..weight_row_start + rect.width],
                );
            });
        self.weight_total
            .par_chunks_mut(width)
            .skip(rect.y)
            .take(rect.height)
            .zip(weights.par_chunks(rect.width))
            .for_each(|(row, weight_row)| {
                for (total, &weight) in row[rect_columns.clone()].iter_mut().zip(weight_row) {
                    *total += weight;
                }
            });
        Ok(())
    }

    /// [`TileAccumulator::add_tile`] for a `[C, h, w]` array view of any layout.
    pub fn add_tile_view(
        &mut self,
        rect: TileRect,
        tile: ArrayView3<'_, f32>,
        weights: &[f32],
    ) -> Result<(), TilingError> {
        match tile.as_slice() {
            Some(samples) => self.add_tile(rect, samples, weights),
            None => self.add_tile(rect, &tile.iter().copied().collect::<Vec<_>>(), weights),
        }
    }

    fn check_rect(&self, rect: TileRect) -> Result<(), TilingError> {
        if rect.y + rect.height > self.height || rect.x + rect.width > self.width {
            return Err(TilingError::OutOfBounds {
                y: rect.y,
                x: rect.x,
                height: rect.height,
                width: rect.width,
                area_height: self.height,
                area_width: self.width,
            });
        }
        Ok(())
    }

    /// Divides the weighted sum by the weight total: `[C, H, W]`.
    pub fn finalize(self) -> Result<Array3<f32>, TilingError> {
        if let Some(index) = self.weight_total.iter().position(|&total| total <= 0.0) {
            return Err(TilingError::Uncovered {
                y: index / self.width,
                x: index % self.width,
            });
        }
        let mut blended = self.weighted_sum;
        let (height, width) = (self.height, self.width);
        let weight_total = &self.weight_total;
        blended
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(row_index, row)| {
                let y = row_index % height;
                let total_row = &weight_total[y * width..(y + 1) * width];
                for (value, &total) in row.iter_mut().zip(total_row) {
                    *value /= total;
                }
            });
        Ok(
            Array3::from_shape_vec((self.channels, self.height, self.width), blended)
                .expect("buffer has the accumulator's shape"),
        )
    }
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<(), TilingError> {
    if expected != actual {
        return Err(TilingError::Length {
            what,
            expected,
            actual,
        });
    }
    Ok(())
}

/// `sums += values * weights`, element by element.
fn add_weighted_row(sums: &mut [f32], values: &[f32], weights: &[f32]) {
    for ((sum, &value), &weight) in sums.iter_mut().zip(values).zip(weights) {
        *sum += value * weight;
    }
}

/// `tile` `[C, h, w]` grown to `[C, height, width]` (each at least as
/// large) by repeating its last row and column: how a tile smaller than
/// the network's fixed tile shape is sent on a GPU.
pub fn pad_replicate(tile: &Array3<f32>, height: usize, width: usize) -> Array3<f32> {
    let (channels, h, w) = tile.dim();
    assert!(
        h > 0 && w > 0 && height >= h && width >= w,
        "padding only grows a tile"
    );
    Array3::from_shape_fn((channels, height, width), |(c, y, x)| {
        tile[[c, y.min(h - 1), x.min(w - 1)]]
    })
}

/// The top-left `[C, height, width]` of a `[C, H, W]` buffer (C order), as
/// a new buffer: a padded tile's output cut back to the tile.
pub fn crop_top_left(
    data: &[f32],
    channels: usize,
    (full_h, full_w): (usize, usize),
    (height, width): (usize, usize),
) -> Vec<f32> {
    assert!(height <= full_h && width <= full_w && data.len() == channels * full_h * full_w);
    let mut out = Vec::with_capacity(channels * height * width);
    for c in 0..channels {
        for y in 0..height {
            let start = (c * full_h + y) * full_w;
            out.extend_from_slice(&data[start..start + width]);
        }
    }
    out
}

/// Copies the `[C, rect]` window out of a `[C, H, W]` array (C order).
pub fn extract_tile(source: ArrayView3<'_, f32>, rect: TileRect) -> Array3<f32> {
    source
        .slice(s![
            ..,
            rect.y..rect.y + rect.height,
            rect.x..rect.x + rect.width
        ])
        .as_standard_layout()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_repeats_the_last_row_and_column_and_cropping_undoes_it() {
        let tile = Array3::from_shape_fn((2, 2, 3), |(c, y, x)| (c * 100 + y * 10 + x) as f32);
        let padded = pad_replicate(&tile, 4, 5);
        assert_eq!(padded.dim(), (2, 4, 5));
        assert_eq!(padded[[1, 3, 4]], 112.0, "bottom-right repeats the corner");
        assert_eq!(padded[[0, 3, 1]], 11.0, "rows below repeat the last row");
        assert_eq!(
            padded[[0, 1, 4]],
            12.0,
            "columns right repeat the last column"
        );
        let cropped = crop_top_left(padded.as_slice().unwrap(), 2, (4, 5), (2, 3));
        assert_eq!(cropped, tile.as_slice().unwrap());
        // no padding: the same tile
        assert_eq!(pad_replicate(&tile, 2, 3), tile);
    }

    #[test]
    fn balanced_plans_use_the_fewest_smallest_tiles() {
        // 2048 px = 256 latent cells, 512 px tiles = 64, overlap 8.
        let plan = TilePlan::balanced(256, 256, 64, 8).unwrap();
        assert_eq!(plan.tile_shape(), (58, 58));
        assert_eq!(plan.y_offsets(), &[0, 50, 100, 150, 198]);
        let fixed = TilePlan::new(256, 256, 64, 8).unwrap();
        assert_eq!(fixed.len(), plan.len(), "same count as fixed tiles");
        // 1024 px: 3 x 3 either way, but 43-cell tiles instead of 64.
        let plan = TilePlan::balanced(128, 96, 64, 8).unwrap();
        assert_eq!(plan.tile_shape(), (48, 52));
        for size in 1..300 {
            for (tile, overlap) in [(64, 8), (64, 16), (32, 4), (96, 32)] {
                let plan = TilePlan::balanced(size, size, tile, overlap).unwrap();
                let (tile_h, _) = plan.tile_shape();
                assert!(tile_h <= tile && tile_h <= size);
                let offsets = plan.y_offsets();
                assert_eq!(offsets[0], 0);
                assert_eq!(
                    offsets.last().unwrap() + tile_h,
                    size,
                    "flush with the edge"
                );
                for pair in offsets.windows(2) {
                    assert!(
                        pair[0] + tile_h >= pair[1] + overlap.min(tile_h),
                        "overlap kept: {size} {tile} {overlap} {offsets:?}"
                    );
                }
                let fixed = TilePlan::new(size, size, tile, overlap).unwrap();
                assert_eq!(
                    offsets.len(),
                    fixed.y_offsets().len(),
                    "never more tiles than fixed"
                );
            }
        }
    }

    /// The authors' tile count loop, transliterated (for sizes where it ends).
    fn authors_offsets(size: usize, tile: usize, overlap: usize) -> Vec<usize> {
        let mut count = 0;
        let mut covered = 0;
        while covered < size {
            covered = (count * tile).saturating_sub(overlap * count) + tile;
            count += 1;
        }
        (0..count)
            .map(|index| {
                if index == count - 1 {
                    size - tile
                } else {
                    index * tile - overlap * index
                }
            })
            .collect()
    }

    #[test]
    fn axis_offsets() {
        assert_eq!(plan_axis(96, 96, 32), vec![0]);
        assert_eq!(plan_axis(50, 96, 32), vec![0]);
        assert_eq!(plan_axis(100, 96, 32), vec![0, 4]);
        assert_eq!(plan_axis(160, 96, 32), vec![0, 64]);
        assert_eq!(plan_axis(200, 96, 32), vec![0, 64, 104]);
        assert_eq!(plan_axis(10, 4, 0), vec![0, 4, 6]);
    }

    #[test]
    fn axis_offsets_match_the_authors_loop() {
        for tile in [40, 64, 96] {
            for size in tile..400 {
                assert_eq!(
                    plan_axis(size, tile, 32),
                    authors_offsets(size, tile, 32),
                    "{size}"
                );
            }
        }
    }

    #[test]
    fn plans_cover_everything_with_fixed_shapes() {
        for (height, width, tile, overlap) in [
            (97, 300, 96, 32),
            (64, 64, 96, 32),
            (250, 131, 40, 8),
            (9, 9, 2, 1),
        ] {
            let plan = TilePlan::new(height, width, tile, overlap).unwrap();
            let (tile_h, tile_w) = plan.tile_shape();
            let mut hits = vec![0u32; height * width];
            for rect in plan.tiles() {
                assert_eq!((rect.height, rect.width), (tile_h, tile_w));
                assert!(rect.y + rect.height <= height && rect.x + rect.width <= width);
                for y in rect.y..rect.y + rect.height {
                    for x in rect.x..rect.x + rect.width {
                        hits[y * width + x] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&count| count >= 1));
            assert_eq!(plan.tiles().count(), plan.len());
            assert_eq!(*plan.y_offsets().last().unwrap() + tile_h, height);
            assert_eq!(*plan.x_offsets().last().unwrap() + tile_w, width);
            for pair in plan.x_offsets().windows(2) {
                assert!(pair[0] < pair[1]);
                assert!(
                    pair[0] + tile_w >= pair[1] + overlap,
                    "neighbours overlap enough"
                );
            }
        }
    }

    #[test]
    fn latent_unet_plan_follows_the_authors() {
        assert!(TilePlan::latent_unet(96, 96).unwrap().is_single());
        assert!(TilePlan::latent_unet(64, 144).unwrap().is_single());
        let plan = TilePlan::latent_unet(128, 200).unwrap();
        assert_eq!(plan.tile_shape(), (96, 96));
        assert_eq!(plan.overlap(), 32);
        assert_eq!(plan.y_offsets(), &[0, 32]);
        assert_eq!(plan.x_offsets(), &[0, 64, 104]);
        // h * w > 96 * 96 with a short side below 96: square tiles of the short side.
        let plan = TilePlan::latent_unet(50, 200).unwrap();
        assert_eq!(plan.tile_shape(), (50, 50));
        assert_eq!(plan.y_offsets(), &[0]);
        assert_eq!(
            plan.x_offsets(),
            &[0, 18, 36, 54, 72, 90, 108, 126, 144, 150]
        );
        // Thin: the overlap shrinks instead of looping forever.
        let plan = TilePlan::latent_unet(20, 600).unwrap();
        assert_eq!(plan.tile_shape(), (20, 20));
        assert_eq!(plan.overlap(), 10);
        let pixel_plan = plan.scaled_up(8);
        assert_eq!(pixel_plan.tile_shape(), (160, 160));
        assert_eq!(pixel_plan.area(), (160, 4800));
        assert_eq!(pixel_plan.len(), plan.len());
    }

    #[test]
    fn plan_errors() {
        assert_eq!(
            TilePlan::new(0, 5, 4, 1),
            Err(TilingError::EmptyArea {
                height: 0,
                width: 5
            })
        );
        assert_eq!(TilePlan::new(5, 5, 0, 0), Err(TilingError::ZeroTile));
        assert_eq!(
            TilePlan::new(5, 5, 4, 4),
            Err(TilingError::OverlapTooLarge {
                overlap: 4,
                tile: 4
            })
        );
    }

    #[test]
    fn gaussian_weights_match_the_formula_and_asymmetry() {
        let weights = authors_gaussian_weights(4, 4);
        assert_eq!(weights.len(), 16);
        assert!(weights.iter().all(|&w| w > 0.0));
        let g = |u: f64, m: f64| {
            (-(u - m) * (u - m) / 16.0 / 0.02).exp() / (0.02 * std::f64::consts::PI).sqrt()
        };
        let expected = (g(1.0, 2.0) * g(3.0, 1.5)) as f32;
        assert!((weights[4 + 3] - expected).abs() <= expected * 1e-6);
        // x is symmetric about 1.5, y about 2.0.
        assert_eq!(weights[0], weights[3]);
        assert_eq!(weights[4], weights[3 * 4]);
        assert_ne!(weights[0], weights[3 * 4]);
        // Corner weights of a 96 tile are tiny but still positive.
        let big = authors_gaussian_weights(96, 96);
        assert!(big.iter().all(|&w| w > 0.0));
    }

    #[test]
    fn feather_profile_ramps_and_cross_fades() {
        assert_eq!(feather_profile(5, 0), vec![1.0; 5]);
        assert_eq!(
            feather_profile(6, 2),
            vec![1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0, 2.0 / 3.0, 1.0 / 3.0]
        );
        let tile = 10;
        let overlap = 4;
        let left = feather_profile(tile, overlap);
        for j in 0..overlap {
            let total = left[tile - overlap + j] + left[j];
            assert!((total - 1.0).abs() < 1e-12);
        }
        assert!(feather_weights(3, 7, 5).iter().all(|&w| w > 0.0));
    }

    #[test]
    fn feather_weights_are_row_major_outer_products() {
        let (tile_h, tile_w, overlap) = (3, 7, 2);
        let along_y = feather_profile(tile_h, overlap);
        let along_x = feather_profile(tile_w, overlap);
        let weights = feather_weights(tile_h, tile_w, overlap);
        for y in 0..tile_h {
            for x in 0..tile_w {
                assert_eq!(weights[y * tile_w + x], (along_y[y] * along_x[x]) as f32);
            }
        }
    }

    /// Two tiles side by side, one all 0 and one all 1: across their overlap
    /// the blend is the right tile's share of the weight, a linear ramp.
    #[test]
    fn two_tiles_cross_fade_linearly_across_their_overlap() {
        let (height, width, tile, overlap) = (6, 16, 10, 4);
        let plan = TilePlan::new(height, width, tile, overlap).unwrap();
        assert_eq!(plan.x_offsets(), &[0, 6]);
        let (tile_h, tile_w) = plan.tile_shape();
        let weights = feather_weights(tile_h, tile_w, overlap);
        let mut accumulator = TileAccumulator::new(1, height, width);
        for (index, rect) in plan.tiles().enumerate() {
            let tile = vec![index as f32; rect.area()];
            accumulator.add_tile(rect, &tile, &weights).unwrap();
        }
        let blended = accumulator.finalize().unwrap();
        for y in 0..height {
            for x in 0..width {
                let expected = match x {
                    0..6 => 0.0,
                    6..10 => (x - 5) as f32 / (overlap + 1) as f32,
                    _ => 1.0,
                };
                let got = blended[[0, y, x]];
                assert!(
                    (got - expected).abs() < 1e-6,
                    "({y}, {x}): {got} != {expected}"
                );
            }
        }
    }

    fn blend_constant(
        plan: &TilePlan,
        weights: &[f32],
        value: f32,
        channels: usize,
    ) -> Array3<f32> {
        let (height, width) = plan.area();
        let mut accumulator = TileAccumulator::new(channels, height, width);
        for rect in plan.tiles() {
            let tile = vec![value; channels * rect.area()];
            accumulator.add_tile(rect, &tile, weights).unwrap();
        }
        accumulator.finalize().unwrap()
    }

    #[test]
    fn blending_a_constant_gives_the_constant() {
        let plan = TilePlan::latent_unet(130, 211).unwrap();
        let (tile_h, tile_w) = plan.tile_shape();
        for weights in [
            authors_gaussian_weights(tile_h, tile_w),
            feather_weights(tile_h, tile_w, plan.overlap()),
        ] {
            let blended = blend_constant(&plan, &weights, 0.7, 4);
            assert_eq!(blended.shape(), &[4, 130, 211]);
            assert!(blended.iter().all(|&v| (v - 0.7).abs() < 1e-6));
        }
    }

    #[test]
    fn blending_tiles_of_a_ramp_reproduces_it() {
        let (channels, height, width) = (2, 40, 70);
        let source = Array3::from_shape_fn((channels, height, width), |(c, y, x)| {
            (c * 1000 + y * 70 + x) as f32
        });
        let plan = TilePlan::new(height, width, 24, 8).unwrap();
        let (tile_h, tile_w) = plan.tile_shape();
        let weights = feather_weights(tile_h, tile_w, plan.overlap());
        let mut accumulator = TileAccumulator::new(channels, height, width);
        for rect in plan.tiles() {
            let tile = extract_tile(source.view(), rect);
            accumulator
                .add_tile_view(rect, tile.view(), &weights)
                .unwrap();
        }
        let blended = accumulator.finalize().unwrap();
        for (a, b) in blended.iter().zip(source.iter()) {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0));
        }
    }

    #[test]
    fn accumulator_errors() {
        let mut accumulator = TileAccumulator::new(1, 4, 4);
        let rect = TileRect {
            y: 2,
            x: 2,
            height: 3,
            width: 2,
        };
        assert!(matches!(
            accumulator.add_tile(rect, &[0.0; 6], &[1.0; 6]),
            Err(TilingError::OutOfBounds { .. })
        ));
        let rect = TileRect {
            y: 0,
            x: 0,
            height: 2,
            width: 2,
        };
        assert_eq!(
            accumulator.add_tile(rect, &[0.0; 3], &[1.0; 4]),
            Err(TilingError::Length {
                what: "tile",
                expected: 4,
                actual: 3
            })
        );
        accumulator.add_tile(rect, &[1.0; 4], &[1.0; 4]).unwrap();
        assert_eq!(
            accumulator.finalize(),
            Err(TilingError::Uncovered { y: 0, x: 2 })
        );
    }
}
