//! The three network stages of one timestep: the time-aware encoder (image
//! -> latent moments), the UNet (latent -> residual), the decoder (clean
//! latent -> image), each over the tiles of its plan, and their timings.

use std::time::Instant;

use ndarray::{Array3, ArrayView3};
use serde::Serialize;

use super::tile_run::{tile_runs, TileRun};
use super::{Pipeline, Progress};
use crate::bundle::{component, port};
use crate::error::Result;
use crate::graph::Graph;
use crate::runtime::{InputTensor, Provider};
use crate::tiling::{self, TilePlan};

/// Where a timed stage's time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpentIn {
    /// A network: time inside ONNX Runtime.
    OnnxRuntime,
    /// Our own code (resizing, blending, color fix, quantization).
    Rust,
}

/// Declares the timed stages once: the [`StageTimings`] field of each, its
/// name in reports, where its time goes. The sum, the run's `--json` line
/// and `bench` all read this one list, so a new stage is one line here.
macro_rules! timed_stages {
    ($($(#[$doc:meta])* $field:ident: $spent_in:ident),+ $(,)?) => {
        /// Milliseconds spent per stage of one image.
        #[derive(Debug, Clone, Copy, Default, Serialize)]
        pub struct StageTimings {
            $($(#[$doc])* pub $field: f64),+
        }

        impl StageTimings {
            /// Each stage's report name and where its time goes, in pipeline order.
            pub const STAGES: &'static [(&'static str, SpentIn)] =
                &[$((stringify!($field), SpentIn::$spent_in)),+];

            /// Each stage's name and milliseconds, in pipeline order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> {
                [$((stringify!($field), self.$field)),+].into_iter()
            }
        }
    };
}

timed_stages! {
    /// Decoding aside: the size plan, resizes, tensors (first timestep only).
    preprocess: Rust,
    encoder: OnnxRuntime,
    unet: OnnxRuntime,
    decoder: OnnxRuntime,
    /// Cutting tiles, blending them, the latent arithmetic between networks.
    blend: Rust,
    color_fix: Rust,
    /// Output size, alpha, quantization.
    postprocess: Rust,
}

impl StageTimings {
    /// Sum of all stages.
    pub fn total(&self) -> f64 {
        self.iter().map(|(_, ms)| ms).sum()
    }
}

pub(super) fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

pub(super) struct Stage {
    pub(super) session: Box<dyn Graph>,
    pub(super) provider: Provider,
    /// The one shape (height, width in pixels) the graph was opened for
    /// ([`super::static_shapes`]); None: any shape.
    pub(super) fixed_px: Option<(usize, usize)>,
    /// The CUDA provider replays the graph's kernels as a CUDA graph.
    pub(super) cuda_graph: bool,
}

impl Stage {
    /// A stage whose graph is closed (while it is reopened): every run fails.
    pub(super) fn closed(provider: Provider) -> Stage {
        Stage {
            session: Box::new(ClosedGraph),
            provider,
            fixed_px: None,
            cuda_graph: false,
        }
    }
}

/// A graph that was closed and could not be reopened.
struct ClosedGraph;

impl Graph for ClosedGraph {
    fn inputs(&self) -> &[crate::runtime::PortInfo] {
        &[]
    }

    fn outputs(&self) -> &[crate::runtime::PortInfo] {
        &[]
    }

    fn set_constant(&mut self, _name: &str, _tensor: InputTensor<'_>) -> Result<()> {
        Err(closed_error())
    }

    fn run(
        &mut self,
        _inputs: &[(&str, InputTensor<'_>)],
        _output_names: &[&str],
    ) -> Result<Vec<crate::runtime::OutputTensor>> {
        Err(closed_error())
    }
}

fn closed_error() -> crate::error::Error {
    crate::error::Error::Ort(
        "the graph was closed to be reopened for another shape, and reopening it failed (see the error before); load the model again".into(),
    )
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
        let output_names = [port::LATENT_MEAN, port::LATENT_LOGVAR];
        let (encoder, encoder_tiled) = (&mut self.encoder, &mut self.encoder_tiled);
        let tiles = TileRun {
            stage: component::VAE_ENCODER,
            provider: encoder.provider,
            plan,
            source: image.view(),
            source_scale: 8,
            output_channels: &[channels, channels],
            output_scale: 1,
            weights: &weights,
            cancel: self.cancel,
            progress,
            network_tile: self.network_tile,
        };
        let group = self.tiles_in_flight;
        let mut moments = tiles.run(group, &mut timings.encoder, &mut timings.blend, |tiles| {
            let timestep = InputTensor::Int64 {
                shape: &[1],
                data: &timestep_tensor,
            };
            let runs = tile_runs(tiles, port::IMAGE, &[(port::TIMESTEP, timestep)]);
            match (&stats, encoder_tiled.as_mut()) {
                (Some(stats), Some(tiled)) => tiled.run_group(runs, Some(stats), &output_names),
                _ => encoder.session.run_group(&runs, &output_names),
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
            stage: component::UNET,
            provider: unet.provider,
            plan,
            source: latent.view(),
            source_scale: 1,
            output_channels: &[channels],
            output_scale: 1,
            weights: &weights,
            cancel: self.cancel,
            progress,
            network_tile: self.network_tile,
        };
        // the prompt embedding and the timestep are the same for every tile:
        // set once (on a GPU, copied to the device once)
        unet.session.set_constant(
            port::TIMESTEP,
            InputTensor::Int64 {
                shape: &[1],
                data: &timestep_tensor,
            },
        )?;
        unet.session.set_constant(
            port::ENCODER_HIDDEN_STATES,
            InputTensor::Float {
                shape: &prompt_shape,
                data: prompt_embeds,
            },
        )?;
        let group = self.tiles_in_flight;
        let mut residual = tiles.run(group, &mut timings.unet, &mut timings.blend, |tiles| {
            let runs = tile_runs(tiles, port::LATENT, &[]);
            unet.session.run_group(&runs, &[port::RESIDUAL])
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
            stage: component::VAE_DECODER,
            provider: decoder.provider,
            plan,
            source: clean_latent.view(),
            source_scale: 1,
            output_channels: &[3],
            output_scale: 8,
            weights: &weights,
            cancel: self.cancel,
            progress,
            network_tile: self.network_tile,
        };
        let group = self.tiles_in_flight;
        let mut image = tiles.run(group, &mut timings.decoder, &mut timings.blend, |tiles| {
            let runs = tile_runs(tiles, port::LATENT, &[]);
            match (&stats, decoder_tiled.as_mut()) {
                (Some(stats), Some(tiled)) => tiled.run_group(runs, Some(stats), &[port::IMAGE]),
                _ => decoder.session.run_group(&runs, &[port::IMAGE]),
            }
        })?;
        Ok(image.pop().expect("one output"))
    }
}
