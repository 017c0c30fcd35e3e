//! The three network stages of one timestep: the time-aware encoder (image
//! -> latent moments), the UNet (latent -> residual), the decoder (clean
//! latent -> image), each over the tiles of its plan, and their timings.

use std::time::Instant;

use ndarray::{Array3, ArrayView3};
use serde::Serialize;

use super::tile_run::TileRun;
use super::{Pipeline, Progress};
use crate::error::Result;
use crate::runtime::{InputTensor, ModelSession, Provider};
use crate::tiling::{self, TilePlan};

/// Milliseconds spent per stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimings {
    pub preprocess: f64,
    pub encoder: f64,
    pub unet: f64,
    pub decoder: f64,
    pub blend: f64,
    pub color_fix: f64,
    pub postprocess: f64,
}

impl StageTimings {
    /// Sum of all stages.
    pub fn total(&self) -> f64 {
        self.preprocess
            + self.encoder
            + self.unet
            + self.decoder
            + self.blend
            + self.color_fix
            + self.postprocess
    }
}

pub(super) fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

pub(super) struct Stage {
    pub(super) session: ModelSession,
    pub(super) provider: Provider,
}

impl Pipeline {
    pub(super) fn encode(
        &mut self,
        image: &ArrayView3<'_, f32>,
        timestep: u32,
        plan: &TilePlan,
        sample_tile: usize,
        timings: &mut StageTimings,
        progress: &dyn Progress,
    ) -> Result<(Array3<f32>, Array3<f32>)> {
        let channels = self.bundle.manifest().latent_channels;
        let stats = self.encoder_shared_stats(image, timestep, plan, sample_tile, timings)?;
        let (tile_h, tile_w) = plan.tile_shape();
        let weights = tiling::feather_weights(tile_h, tile_w, plan.overlap());
        let timestep_tensor = [i64::from(timestep)];
        let output_names = ["latent_mean", "latent_logvar"];
        let (encoder, encoder_tiled) = (&mut self.encoder, &mut self.encoder_tiled);
        let tiles = TileRun {
            plan,
            source: image.view(),
            source_scale: 8,
            output_channels: &[channels, channels],
            output_scale: 1,
            weights: &weights,
            cancel: self.cancel,
            progress,
        };
        let mut moments = tiles.run(&mut timings.encoder, &mut timings.blend, |shape, tile| {
            let inputs = [
                ("image", InputTensor::Float { shape, data: tile }),
                (
                    "timestep",
                    InputTensor::Int64 {
                        shape: &[1],
                        data: &timestep_tensor,
                    },
                ),
            ];
            match (&stats, encoder_tiled.as_mut()) {
                (Some(stats), Some(tiled)) => tiled.run(inputs, Some(stats), &output_names),
                _ => encoder.session.run(&inputs, &output_names),
            }
        })?;
        let latent_logvar = moments.pop().expect("two outputs");
        let latent_mean = moments.pop().expect("two outputs");
        Ok((latent_mean, latent_logvar))
    }

    pub(super) fn denoise(
        &mut self,
        latent: &Array3<f32>,
        timestep: u32,
        plan: &TilePlan,
        timings: &mut StageTimings,
        progress: &dyn Progress,
    ) -> Result<Array3<f32>> {
        let channels = latent.dim().0;
        let (tile_h, tile_w) = plan.tile_shape();
        let weights = tiling::authors_gaussian_weights(tile_h, tile_w);
        let timestep_tensor = [i64::from(timestep)];
        let (unet, prompt_embeds, prompt_shape) =
            (&mut self.unet, &self.prompt_embeds, self.prompt_shape);
        let tiles = TileRun {
            plan,
            source: latent.view(),
            source_scale: 1,
            output_channels: &[channels],
            output_scale: 1,
            weights: &weights,
            cancel: self.cancel,
            progress,
        };
        let mut residual = tiles.run(&mut timings.unet, &mut timings.blend, |shape, tile| {
            unet.session.run(
                &[
                    ("latent", InputTensor::Float { shape, data: tile }),
                    (
                        "timestep",
                        InputTensor::Int64 {
                            shape: &[1],
                            data: &timestep_tensor,
                        },
                    ),
                    (
                        "encoder_hidden_states",
                        InputTensor::Float {
                            shape: &prompt_shape,
                            data: prompt_embeds,
                        },
                    ),
                ],
                &["residual"],
            )
        })?;
        Ok(residual.pop().expect("one output"))
    }

    pub(super) fn decode(
        &mut self,
        clean_latent: &Array3<f32>,
        plan: &TilePlan,
        sample_tile: usize,
        timings: &mut StageTimings,
        progress: &dyn Progress,
    ) -> Result<Array3<f32>> {
        let stats = self.decoder_shared_stats(clean_latent, plan, sample_tile, timings)?;
        let (tile_h, tile_w) = plan.tile_shape();
        let weights = tiling::feather_weights(tile_h * 8, tile_w * 8, plan.overlap() * 8);
        let (decoder, decoder_tiled) = (&mut self.decoder, &mut self.decoder_tiled);
        let tiles = TileRun {
            plan,
            source: clean_latent.view(),
            source_scale: 1,
            output_channels: &[3],
            output_scale: 8,
            weights: &weights,
            cancel: self.cancel,
            progress,
        };
        let mut image = tiles.run(&mut timings.decoder, &mut timings.blend, |shape, tile| {
            let inputs = [("latent", InputTensor::Float { shape, data: tile })];
            match (&stats, decoder_tiled.as_mut()) {
                (Some(stats), Some(tiled)) => tiled.run(inputs, Some(stats), &["image"]),
                _ => decoder.session.run(&inputs, &["image"]),
            }
        })?;
        Ok(image.pop().expect("one output"))
    }
}
