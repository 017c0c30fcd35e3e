//! The tile loop one stage runs: cut each tile, run the graph on it, blend
//! its outputs into the whole area; stops at the next tile when cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::{Array3, ArrayView3};

use super::stages::millis_since;
use super::Progress;
use crate::error::{Error, Result};
use crate::runtime::{InputTensor, OutputTensor, Provider};
use crate::tiling::{self, TileAccumulator, TilePlan, TileRect};

/// One stage's tile loop: cut each tile of `plan` out of `source`, run it,
/// and blend every output of the graph over the whole area. Rects of `plan`
/// are in latent cells; `source_scale` and `output_scale` map them to the
/// source's and the outputs' own cells (8 for pixels).
pub(super) struct TileRun<'a> {
    /// The stage's name in messages (`vae_encoder`, `unet`, `vae_decoder`).
    pub(super) stage: &'static str,
    /// Where it runs, for messages.
    pub(super) provider: Provider,
    pub(super) plan: &'a TilePlan,
    pub(super) source: ArrayView3<'a, f32>,
    pub(super) source_scale: usize,
    /// Channels of each graph output, in order.
    pub(super) output_channels: &'a [usize],
    pub(super) output_scale: usize,
    /// Blend weights of one output tile.
    pub(super) weights: &'a [f32],
    pub(super) cancel: Option<&'static AtomicBool>,
    pub(super) progress: &'a dyn Progress,
    /// The shape (in plan cells) every tile is sent at, smaller tiles padded
    /// by repetition and their outputs cut back: one shape for GPU
    /// providers (one engine, one cuDNN plan). None: tiles as they are.
    pub(super) network_tile: Option<(usize, usize)>,
}

/// One tile cut out of the source, as sent to the graph: `[1, C, h, w]`.
pub(super) struct TileInput {
    pub(super) shape: [usize; 4],
    pub(super) data: Vec<f32>,
}

impl TileInput {
    /// This tile as the graph input `port`.
    pub(super) fn as_input(&self, port: &'static str) -> (&'static str, InputTensor<'_>) {
        (
            port,
            InputTensor::Float {
                shape: &self.shape,
                data: &self.data,
            },
        )
    }
}

/// One run per tile: each tile as the input `port`, with `extra` inputs
/// (the same for every tile).
pub(super) fn tile_runs<'a>(
    tiles: &'a [TileInput],
    port: &'static str,
    extra: &[(&'static str, InputTensor<'a>)],
) -> Vec<Vec<(&'static str, InputTensor<'a>)>> {
    tiles
        .iter()
        .map(|tile| {
            let mut inputs = vec![tile.as_input(port)];
            inputs.extend_from_slice(extra);
            inputs
        })
        .collect()
}

impl TileRun<'_> {
    /// `run_tiles(tiles)` runs the graph on up to `group` tiles (one
    /// `[1, C, h, w]` run each; a server has them in flight at once) and
    /// returns each tile's outputs in order. Time in it goes to
    /// `network_ms`, cutting and blending to `blend_ms`. Tiles are blended
    /// in plan order whatever the group, so the result does not depend on
    /// it. A single tile's outputs are returned as they are (exactly the
    /// untiled result).
    pub(super) fn run(
        &self,
        group: usize,
        network_ms: &mut f64,
        blend_ms: &mut f64,
        mut run_tiles: impl FnMut(&[TileInput]) -> Result<Vec<Vec<OutputTensor>>>,
    ) -> Result<Vec<Array3<f32>>> {
        let (height, width) = self.plan.area();
        let (out_h, out_w) = (height * self.output_scale, width * self.output_scale);
        let mut sums: Vec<TileAccumulator> = self
            .output_channels
            .iter()
            .map(|&channels| TileAccumulator::new(channels, out_h, out_w))
            .collect();
        let rects: Vec<TileRect> = self.plan.tiles().collect();
        for rects in rects.chunks(group.max(1)) {
            if self.cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                return Err(Error::Interrupted);
            }
            let start = Instant::now();
            let (tiles, padding): (Vec<TileInput>, Vec<Option<(usize, usize)>>) =
                rects.iter().map(|&rect| self.cut(rect)).unzip();
            *blend_ms += millis_since(start);
            let start = Instant::now();
            let outputs = run_tiles(&tiles)?;
            *network_ms += millis_since(start);
            drop(tiles);
            if outputs.len() != rects.len() {
                return Err(Error::Ort(format!(
                    "{} returned {} results for {} tiles",
                    self.stage,
                    outputs.len(),
                    rects.len()
                )));
            }
            for ((&rect, padded), mut outputs) in rects.iter().zip(padding).zip(outputs) {
                if let Some((h, w)) = padded {
                    self.crop_padding(&mut outputs, rect, (h, w))?;
                }
                for output in &outputs {
                    check_finite(self.stage, self.provider, &output.data)?;
                }
                self.progress.step();
                if self.plan.is_single() {
                    return outputs
                        .into_iter()
                        .zip(self.output_channels)
                        .map(|(output, &channels)| into_chw(output, channels, out_h, out_w))
                        .collect();
                }
                let start = Instant::now();
                let output_rect = rect.scaled_up(self.output_scale);
                for (sum, output) in sums.iter_mut().zip(&outputs) {
                    add_tile(sum, output_rect, &output.data, self.weights)?;
                }
                *blend_ms += millis_since(start);
            }
        }
        let start = Instant::now();
        let blended = sums.into_iter().map(finalize).collect();
        *blend_ms += millis_since(start);
        blended
    }

    /// The source under `rect`, padded by repetition to the network tile
    /// shape when that is set and larger (the padded shape is returned).
    fn cut(&self, rect: TileRect) -> (TileInput, Option<(usize, usize)>) {
        let source_rect = rect.scaled_up(self.source_scale);
        let mut tile = tiling::extract_tile(self.source, source_rect);
        let padded = self
            .network_tile
            .map(|(h, w)| (h.max(rect.height), w.max(rect.width)))
            .filter(|&(h, w)| (h, w) != (rect.height, rect.width));
        if let Some((h, w)) = padded {
            tile = tiling::pad_replicate(&tile, h * self.source_scale, w * self.source_scale);
        }
        let (channels, tile_h, tile_w) = tile.dim();
        let data = if tile.is_standard_layout() {
            tile.into_raw_vec_and_offset().0
        } else {
            tile.iter().copied().collect()
        };
        let input = TileInput {
            shape: [1, channels, tile_h, tile_w],
            data,
        };
        (input, padded)
    }

    /// Cuts a padded tile's outputs back to the tile (`padded` in plan cells).
    fn crop_padding(
        &self,
        outputs: &mut [OutputTensor],
        rect: TileRect,
        padded: (usize, usize),
    ) -> Result<()> {
        let scale = self.output_scale;
        for (output, &channels) in outputs.iter_mut().zip(self.output_channels) {
            let full = (padded.0 * scale, padded.1 * scale);
            if output.data.len() != channels * full.0 * full.1 {
                return Err(Error::Ort(format!(
                    "a graph returned shape {:?} for a padded tile, expected [1, {channels}, {}, {}]",
                    output.shape, full.0, full.1
                )));
            }
            let kept = (rect.height * scale, rect.width * scale);
            output.data = tiling::crop_top_left(&output.data, channels, full, kept);
            output.shape = vec![1, channels, kept.0, kept.1];
        }
        Ok(())
    }
}

/// Refuses a stage output holding NaN or infinity, naming the stage.
pub(super) fn check_finite(stage: &'static str, provider: Provider, data: &[f32]) -> Result<()> {
    let Some(index) = data.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let hint = if provider == Provider::Cpu {
        "the bundle's weights or graph are broken (check it with `tadsr-edge info --verify`)"
    } else {
        "an fp16 overflow or a provider fault: try an fp32 bundle, --trt-fp16 off, or --provider cpu"
    };
    Err(Error::NonFinite {
        stage,
        provider: provider.to_string(),
        value: data[index],
        index,
        hint,
    })
}

/// A graph's `[1, C, H, W]` output as a `[C, H, W]` array, checking its size.
fn into_chw(
    output: OutputTensor,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Array3<f32>> {
    let expected = [1, channels, height, width];
    if output.shape != expected {
        return Err(Error::Ort(format!(
            "a graph returned shape {:?}, expected {expected:?}",
            output.shape
        )));
    }
    Ok(Array3::from_shape_vec((channels, height, width), output.data).expect("shape checked"))
}

fn add_tile(
    sum: &mut TileAccumulator,
    rect: TileRect,
    data: &[f32],
    weights: &[f32],
) -> Result<()> {
    sum.add_tile(rect, data, weights)
        .map_err(|e| Error::Ort(format!("a graph returned a tile of the wrong size: {e}")))
}

fn finalize(sum: TileAccumulator) -> Result<Array3<f32>> {
    Ok(sum.finalize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_outputs_name_the_stage_and_the_element() {
        assert!(check_finite("unet", Provider::Cuda, &[0.0, 1.0, -2.5]).is_ok());
        let error = check_finite("unet", Provider::Cuda, &[0.0, f32::NAN, 1.0]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("unet produced NaN at element 1 of a tile (on cuda)"),
            "{message}"
        );
        assert!(message.contains("fp16"), "{message}");
        let error = check_finite("vae_decoder", Provider::Cpu, &[f32::INFINITY]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("vae_decoder produced inf at element 0"),
            "{message}"
        );
        assert!(message.contains("info --verify"), "{message}");
    }
}
