//! `--tiling latent` on images the authors' code encodes in tiles (longer
//! than 1088 px): their tiles and their GroupNorm statistics, pooled layer
//! by layer ([`crate::authors_encoder_tiles`]), with the bundle's tiled
//! encoder graph (`vae_encoder_tiled`: statistics in and out).
//!
//! Their hook runs all tiles up to a GroupNorm, pools what that GroupNorm
//! sees over the tiles, normalizes every tile with the pooled statistics
//! and goes on to the next. The graph runs a tile whole, with given
//! statistics for every GroupNorm, and returns what each GroupNorm saw. So
//! passes over the tiles reach the same fixed point: pass 0 with each
//! tile's own statistics gets the first layer's pooled statistics right,
//! and pass p, normalizing with the statistics pooled after pass p - 1,
//! gets layers 0..=p right. After one pass per layer the statistics are
//! theirs, and the last pass's latents are their encoder's output (cropped
//! and placed as their `crop_valid_region` does). It costs layers + 1
//! passes of the encoder (23 for SD-2.1's), so it is the fallback: with the
//! bundle's encoder segments ([`super::encoder_segments`]) the same
//! statistics come from one pass; the passes serve bundles without them,
//! a server, and images whose tiles' activations would not fit in memory.
//! (A cheaper fixed-point iteration does not work: started from estimated
//! statistics, the passes diverge before they settle, so only the layer
//! by layer order is sure.)

use std::sync::atomic::Ordering;
use std::time::Instant;

use ndarray::{s, Array3, ArrayView3};

use super::encoder_segments::{EncoderSegmentStages, SegmentedEncode};
use super::shared_stats::SharedStats;
use super::stages::{millis_since, StageTimings};
use super::{Backend, Pipeline};
use crate::authors_encoder_tiles::{encoder_tiles, pool_stats, EncoderTile};
use crate::bundle::port;
use crate::error::{Error, Result};
use crate::runtime::{InputTensor, OutputTensor};
use crate::system_memory::host_budget;

impl Pipeline {
    /// The latent moments `(mean, logvar)` of `image` ([3, H, W]) as the
    /// authors' tiled encoder computes them; None when they encode it in one
    /// piece (the main graph's result is theirs) or the bundle has no tiled
    /// encoder graph.
    pub(super) fn encode_as_authors(
        &mut self,
        image: &ArrayView3<'_, f32>,
        timestep: u32,
        timings: &mut StageTimings,
    ) -> Result<Option<(Array3<f32>, Array3<f32>)>> {
        let (_, height, width) = image.dim();
        let tiles = encoder_tiles(height, width);
        if tiles.len() < 2 {
            return Ok(None);
        }
        self.open_tiled_stages()?;
        if self.encoder_tiled.is_none() {
            return Ok(None);
        }
        let start = Instant::now();
        let crops: Vec<([usize; 4], Vec<f32>)> = tiles
            .iter()
            .map(|tile| {
                let [x0, x1, y0, y1] = tile.input;
                let crop = image
                    .slice(s![.., y0..y1, x0..x1])
                    .as_standard_layout()
                    .to_owned();
                ([1, 3, y1 - y0, x1 - x0], crop.into_raw_vec_and_offset().0)
            })
            .collect();
        let pixels: Vec<usize> = tiles.iter().map(EncoderTile::pixels).collect();
        let moments = match self.encode_by_segments(&crops, &pixels, timestep)? {
            Some(moments) => moments,
            None => self.encode_by_passes(&crops, &pixels, timestep)?,
        };
        timings.encoder += millis_since(start);
        let start = Instant::now();
        let assembled = assemble(&tiles, moments, height / 8, width / 8)?;
        timings.blend += millis_since(start);
        Ok(Some(assembled))
    }

    /// The tiles' moments by the bundle's encoder segments (one pass);
    /// None when the bundle has none, the graphs run on a server, or every
    /// tile's activations would not fit in half the memory available.
    fn encode_by_segments(
        &mut self,
        crops: &[([usize; 4], Vec<f32>)],
        pixels: &[usize],
        timestep: u32,
    ) -> Result<Option<Vec<Vec<OutputTensor>>>> {
        if !self.segments_opened {
            self.segments_opened = true;
            if let (Backend::Local(runtime), Some(tiled)) = (&self.backend, &self.encoder_tiled) {
                self.encoder_segments = EncoderSegmentStages::open(
                    runtime,
                    &self.bundle,
                    &self.config,
                    tiled.provider(),
                )?;
            }
        }
        let Some(segments) = self.encoder_segments.as_mut() else {
            return Ok(None);
        };
        let limit = match self.config.host_memory_limit {
            Some(bytes) => Some(bytes / 2),
            None => host_budget().map(|budget| budget.bytes / 2),
        };
        match segments.encode(crops, pixels, i64::from(timestep), self.cancel, limit)? {
            SegmentedEncode::Moments(moments) => {
                Ok(Some(moments.into_iter().map(Vec::from).collect()))
            }
            SegmentedEncode::TooLarge { needed, limit } => {
                let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
                (self.config.notify)(&format!(
                    "--tiling latent: the encoder segments would hold {:.2} GiB of activations for this \
                     image's {} encoder tiles, more than half the memory this run may use ({:.2} GiB); encoding \
                     it by passes of the tiled encoder instead (the same result, about 23 times slower)",
                    gib(needed),
                    crops.len(),
                    gib(limit * 2)
                ));
                Ok(None)
            }
        }
    }

    /// The tiles' moments by passes of the tiled encoder graph, one per
    /// GroupNorm layer (the fixed point this module's comment explains).
    fn encode_by_passes(
        &mut self,
        crops: &[([usize; 4], Vec<f32>)],
        pixels: &[usize],
        timestep: u32,
    ) -> Result<Vec<Vec<OutputTensor>>> {
        let cancel = self.cancel;
        let Some(tiled) = self.encoder_tiled.as_mut() else {
            return Err(Error::Ort("the tiled encoder graph is not open".into()));
        };
        let timestep_tensor = [i64::from(timestep)];
        let outputs = [
            port::LATENT_MEAN,
            port::LATENT_LOGVAR,
            port::GROUP_NORM_MEAN_OUT,
            port::GROUP_NORM_VAR_OUT,
        ];
        let mut stats: Option<SharedStats> = None;
        let mut moments = Vec::new();
        for _pass in 0..=tiled.layers() {
            if cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                return Err(Error::Interrupted);
            }
            let mut observed = Vec::with_capacity(crops.len());
            moments.clear();
            for (shape, data) in crops {
                let inputs = [
                    (port::IMAGE, InputTensor::Float { shape, data }),
                    (
                        port::TIMESTEP,
                        InputTensor::Int64 {
                            shape: &[1],
                            data: &timestep_tensor,
                        },
                    ),
                ];
                let mut out = tiled.run(inputs, stats.as_ref(), &outputs)?;
                let var = out.pop().expect("four outputs").data;
                let mean = out.pop().expect("four outputs").data;
                observed.push((mean, var));
                moments.push(out);
            }
            let (mean, var) = pool_stats(&observed, pixels);
            if stats.as_ref().is_some_and(|used| used.equals(&mean, &var)) {
                break; // this pass normalized with the fixed point already
            }
            stats = Some(SharedStats::new(mean, var));
        }
        Ok(moments)
    }
}

/// Each tile's kept latent cells put in place (their `crop_valid_region`).
fn assemble(
    tiles: &[EncoderTile],
    moments: Vec<Vec<OutputTensor>>,
    latent_h: usize,
    latent_w: usize,
) -> Result<(Array3<f32>, Array3<f32>)> {
    let mut whole: Option<[Array3<f32>; 2]> = None;
    for (tile, outputs) in tiles.iter().zip(moments) {
        for (index, output) in outputs.into_iter().enumerate() {
            let [1, channels, tile_h, tile_w] = output.shape[..] else {
                return Err(Error::Ort(format!(
                    "the tiled encoder returned latent moments of shape {:?}",
                    output.shape
                )));
            };
            let [ix0, ix1, iy0, iy1] = tile.input;
            if (tile_h, tile_w) != ((iy1 - iy0) / 8, (ix1 - ix0) / 8) {
                return Err(Error::Ort(format!(
                    "the tiled encoder returned {tile_w}x{tile_h} latent cells for a {}x{} tile",
                    ix1 - ix0,
                    iy1 - iy0
                )));
            }
            let planes = whole.get_or_insert_with(|| {
                [(); 2].map(|_| Array3::zeros((channels, latent_h, latent_w)))
            });
            let moment = Array3::from_shape_vec((channels, tile_h, tile_w), output.data)
                .map_err(|e| Error::Ort(e.to_string()))?;
            let [ky0, ky1, kx0, kx1] = tile.kept_cells();
            let [ox0, ox1, oy0, oy1] = tile.output;
            planes[index]
                .slice_mut(s![.., oy0..oy1, ox0..ox1])
                .assign(&moment.slice(s![.., ky0..ky1, kx0..kx1]));
        }
    }
    let [mean, logvar] = whole.ok_or_else(|| Error::Ort("no tile was encoded".into()))?;
    Ok((mean, logvar))
}
