//! The authors' tiled encoder, as their test path runs it: every call of
//! their time-aware encoder goes through their tiled-VAE hook
//! (`my_utils/vaehook.py`, from the multidiffusion-upscaler project), which
//! splits an image longer than 1024 + 2 x 32 px into tiles of up to 1024 px
//! with 32 px of context and normalizes every GroupNorm with statistics
//! pooled over the tiles, layer by layer: the pixel-weighted mean of the
//! tiles' means and of their (biased) variances. Pure functions here (the
//! tile geometry, the pooling); the pipeline runs the graphs
//! (`pipeline::authors_encoder`).

/// Their encoder tile, in pixels of the upscaled input.
pub const TILE_PX: usize = 1024;
/// Context added on each side of an encoder tile (their `pad` for the encoder).
pub const PAD_PX: usize = 32;

/// One tile: `input` is the padded area the encoder sees, `output` the
/// latent cells it writes, both `[x0, x1, y0, y1]` (pixels / latent cells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderTile {
    pub input: [usize; 4],
    pub output: [usize; 4],
}

impl EncoderTile {
    /// The tile's latent rows and columns to keep, relative to its own
    /// output (`y0, y1, x0, x1`): their `crop_valid_region`.
    pub fn kept_cells(&self) -> [usize; 4] {
        let [ix0, _, iy0, _] = self.input.map(|v| v / 8);
        let [ox0, ox1, oy0, oy1] = self.output;
        [oy0 - iy0, oy1 - iy0, ox0 - ix0, ox1 - ix0]
    }

    /// Pixels the tile's encoder sees (their weight when pooling).
    pub fn pixels(&self) -> usize {
        let [x0, x1, y0, y1] = self.input;
        (x1 - x0) * (y1 - y0)
    }
}

/// Their `get_best_tile_size`: `lower` rounded up to a multiple of 32 (else
/// 16, 8, 4, 2) when that stays within `upper`.
fn best_tile_size(lower: usize, upper: usize) -> usize {
    let mut divider = 32;
    while divider >= 2 {
        let remainder = lower % divider;
        if remainder == 0 {
            return lower;
        }
        let candidate = lower - remainder + divider;
        if candidate <= upper {
            return candidate;
        }
        divider /= 2;
    }
    lower
}

/// Their `split_tiles(h, w)` for the encoder: row by row, the padded input
/// areas and the latent cells each writes. One tile (the whole image) up to
/// 1088 px on the longer side. Sides are multiples of 8 (the upscaled input
/// always is); then every coordinate is too.
pub fn encoder_tiles(height: usize, width: usize) -> Vec<EncoderTile> {
    let count = |side: usize| side.saturating_sub(2 * PAD_PX).div_ceil(TILE_PX).max(1);
    let (rows, cols) = (count(height), count(width));
    let tile_h = best_tile_size(height.saturating_sub(2 * PAD_PX).div_ceil(rows), TILE_PX);
    let tile_w = best_tile_size(width.saturating_sub(2 * PAD_PX).div_ceil(cols), TILE_PX);
    let mut tiles = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            let core = [
                PAD_PX + j * tile_w,
                (PAD_PX + (j + 1) * tile_w).min(width),
                PAD_PX + i * tile_h,
                (PAD_PX + (i + 1) * tile_h).min(height),
            ];
            // near the image's edge the output reaches the edge
            let output = [
                if core[0] > PAD_PX { core[0] } else { 0 },
                if core[1] < width.saturating_sub(PAD_PX) {
                    core[1]
                } else {
                    width
                },
                if core[2] > PAD_PX { core[2] } else { 0 },
                if core[3] < height.saturating_sub(PAD_PX) {
                    core[3]
                } else {
                    height
                },
            ]
            .map(|v| v / 8);
            let input = [
                core[0].saturating_sub(PAD_PX),
                (core[1] + PAD_PX).min(width),
                core[2].saturating_sub(PAD_PX),
                (core[3] + PAD_PX).min(height),
            ];
            tiles.push(EncoderTile { input, output });
        }
    }
    tiles
}

/// Their `GroupNormParam.summary`: per layer and group, the mean of the
/// tiles' means and of their variances, each tile weighted by its pixels.
/// `observed[i]` = tile i's `(mean, var)`, each `[layers * groups]`.
pub fn pool_stats(observed: &[(Vec<f32>, Vec<f32>)], pixels: &[usize]) -> (Vec<f32>, Vec<f32>) {
    // their weights: pixels / max pixels, then / the sum of those (float32)
    let largest = pixels.iter().copied().max().unwrap_or(1).max(1) as f32;
    let scaled: Vec<f32> = pixels.iter().map(|&p| p as f32 / largest).collect();
    let total: f32 = scaled.iter().sum();
    let weights: Vec<f32> = scaled.iter().map(|s| s / total).collect();
    let len = observed.first().map_or(0, |(mean, _)| mean.len());
    let mut mean = vec![0.0f32; len];
    let mut var = vec![0.0f32; len];
    for ((tile_mean, tile_var), weight) in observed.iter().zip(&weights) {
        for (sum, value) in mean.iter_mut().zip(tile_mean) {
            *sum += value * weight;
        }
        for (sum, value) in var.iter_mut().zip(tile_var) {
            *sum += value * weight;
        }
    }
    (mean, var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_1088_px_one_tile_is_the_whole_image() {
        for (h, w) in [(512, 512), (1088, 1088), (64, 1088), (8, 8)] {
            let tiles = encoder_tiles(h, w);
            assert_eq!(tiles.len(), 1, "{h}x{w}");
            assert_eq!(tiles[0].input, [0, w, 0, h]);
            assert_eq!(tiles[0].output, [0, w / 8, 0, h / 8]);
            assert_eq!(tiles[0].kept_cells(), [0, h / 8, 0, w / 8]);
        }
    }

    #[test]
    fn their_split_of_a_1280x960_image() {
        // their log: "split to 1x2 = 2 tiles. Optimal tile size 608x896"
        let tiles = encoder_tiles(960, 1280);
        assert_eq!(
            tiles,
            [
                EncoderTile {
                    input: [0, 672, 0, 960],
                    output: [0, 80, 0, 120]
                },
                EncoderTile {
                    input: [608, 1280, 0, 960],
                    output: [80, 160, 0, 120]
                },
            ]
        );
        // the second tile's first 4 latent columns are context
        assert_eq!(tiles[1].kept_cells(), [0, 120, 4, 84]);
    }

    #[test]
    fn tiles_cover_the_latent_once_and_keep_inside_their_input() {
        for (h, w) in [
            (1096, 200),
            (2048, 2048),
            (1152, 3000),
            (4096, 1160),
            (2176, 2184),
        ] {
            let tiles = encoder_tiles(h, w);
            let mut covered = vec![0u8; (h / 8) * (w / 8)];
            for tile in &tiles {
                let [ox0, ox1, oy0, oy1] = tile.output;
                let [ix0, ix1, iy0, iy1] = tile.input;
                assert!(ix0 / 8 <= ox0 && ox1 <= ix1 / 8 && iy0 / 8 <= oy0 && oy1 <= iy1 / 8);
                assert!(tile.input.iter().all(|v| v % 8 == 0), "{h}x{w}: {tile:?}");
                assert!(ix1 - ix0 <= TILE_PX + 2 * PAD_PX && iy1 - iy0 <= TILE_PX + 2 * PAD_PX);
                for y in oy0..oy1 {
                    for x in ox0..ox1 {
                        covered[y * (w / 8) + x] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{h}x{w}");
        }
    }

    #[test]
    fn best_tile_size_rounds_up_to_32_within_the_tile() {
        assert_eq!(best_tile_size(896, 1024), 896);
        assert_eq!(best_tile_size(516, 1024), 544);
        assert_eq!(best_tile_size(1000, 1024), 1024);
        // 1024 is over 1020: a multiple of 8 then
        assert_eq!(best_tile_size(1010, 1020), 1016);
        assert_eq!(best_tile_size(1011, 1012), 1012);
    }

    #[test]
    fn pooling_weights_tiles_by_their_pixels() {
        // not the pooled variance: the mean of the variances (their formula)
        let observed = vec![
            (vec![0.0, 1.0], vec![1.0, 4.0]),
            (vec![3.0, 1.0], vec![5.0, 4.0]),
        ];
        let (mean, var) = pool_stats(&observed, &[300, 100]);
        let close =
            |got: &[f32], want: [f32; 2]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6);
        assert!(close(&mean, [0.75, 1.0]), "{mean:?}");
        assert!(close(&var, [2.0, 4.0]), "{var:?}");
    }
}
