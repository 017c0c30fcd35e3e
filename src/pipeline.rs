//! The TADSR pipeline for one image: preprocess once, then per timestep
//! encode (time-aware) -> UNet -> clean latent -> decode -> color fix ->
//! output size, alpha and quantization. Stages run whole or over tiles.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use image::{DynamicImage, ImageBuffer, Luma, Rgb32FImage};
use ndarray::{Array3, Array4, ArrayView3, Axis};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::image_io::{AlphaPlane, InputImage, InputPixels};
use crate::npy;
use crate::preprocess::{self, Quantization, ResampleFilter, SizePlan};
use crate::runtime::{InputTensor, ModelSession, OutputTensor, Provider, Runtime, SessionOptions};
use crate::schedule::{self, NoiseSchedule};
use crate::tiling::{self, TileAccumulator, TilePlan, TileRect};

/// Which execution provider to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// TensorRT, then CUDA, then CPU: the first that works, per stage.
    Auto,
    /// Exactly this one; an error if it cannot be used.
    Only(Provider),
}

/// How a pipeline is built.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub model_dir: PathBuf,
    pub ort_lib: Option<PathBuf>,
    pub provider: ProviderChoice,
    pub device_id: i32,
    /// Intra-op threads per session; 0 = one per core.
    pub threads: usize,
    /// Replaces the bundle's default prompt embedding ([1, 77, D] .npy).
    pub prompt_embeds: Option<PathBuf>,
    /// Tile size in pixels the sessions will mostly see (TensorRT profiles).
    pub tile_px: u32,
    /// Check every file's sha256 on load.
    pub verify_hashes: bool,
}

impl PipelineConfig {
    /// Defaults for a bundle folder: auto provider, all cores, 512 px tiles.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        PipelineConfig {
            model_dir: model_dir.into(),
            ort_lib: None,
            provider: ProviderChoice::Auto,
            device_id: 0,
            threads: 0,
            prompt_embeds: None,
            tile_px: 512,
            verify_hashes: true,
        }
    }
}

/// How tiles are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TilingMode {
    /// Encoder over pixel tiles, UNet over latent tiles, decoder over latent
    /// tiles with a feathered pixel blend: bounded memory for any size.
    Staged,
    /// Only the UNet, exactly as the authors do (96-latent tiles, overlap 32,
    /// their Gaussian weights, when the latent exceeds 96x96).
    Latent,
}

pub use crate::colorfix::ColorFix;

/// Options of one upscaling run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Timesteps (each gives one output); the authors' default is 500.
    pub timesteps: Vec<u32>,
    pub upscale: u32,
    /// Minimum-size rule: inputs whose short side is below
    /// `process_size / upscale` are enlarged first; 0 turns the rule off.
    pub process_size: u32,
    /// Largest pixel tile side; 0 = no tiling. Tiles are balanced: the
    /// fewest that cover the image, each as small as the overlap allows.
    pub tile_px: u32,
    pub tile_overlap_px: u32,
    pub tiling: TilingMode,
    pub color_fix: ColorFix,
    /// None: the posterior mean; Some(seed): a reproducible sample.
    pub seed: Option<u64>,
}

impl RunOptions {
    /// The bundle's defaults, untiled, posterior mean.
    pub fn from_bundle(bundle: &Bundle) -> RunOptions {
        let defaults = &bundle.manifest().defaults;
        RunOptions {
            timesteps: vec![defaults.timestep],
            upscale: defaults.upscale,
            process_size: defaults.process_size,
            tile_px: 0,
            tile_overlap_px: 64,
            tiling: TilingMode::Staged,
            color_fix: defaults.color_fix.parse().unwrap_or(ColorFix::Adain),
            seed: None,
        }
    }

    /// Checks every option; timesteps against the bundle's `schedule`.
    pub fn check(&self, schedule: &NoiseSchedule) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidOption(m));
        if self.timesteps.is_empty() {
            return invalid("at least one timestep is needed".into());
        }
        for &timestep in &self.timesteps {
            if let Err(error) = schedule.validate_timestep(i64::from(timestep)) {
                return invalid(error.to_string());
            }
        }
        if !(1..=16).contains(&self.upscale) {
            return invalid(format!("upscale {} is outside 1..16", self.upscale));
        }
        if self.tile_px != 0 {
            if self.tile_px < 64 || !self.tile_px.is_multiple_of(8) {
                return invalid(format!(
                    "--tile {} must be 0 or a multiple of 8 of at least 64",
                    self.tile_px
                ));
            }
            if !self.tile_overlap_px.is_multiple_of(8) || self.tile_overlap_px * 2 > self.tile_px {
                return invalid(format!(
                    "--tile-overlap {} must be a multiple of 8 and at most half the tile",
                    self.tile_overlap_px
                ));
            }
        }
        Ok(())
    }
}

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

fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// Where each stage runs.
#[derive(Debug, Clone, Serialize)]
pub struct StageProviders {
    pub vae_encoder: Provider,
    pub unet: Provider,
    pub vae_decoder: Provider,
}

/// One output image.
pub struct Upscaled {
    pub timestep: u32,
    /// The final image: RGB(A), 8 or 16 bit, `upscale x` the input size.
    pub image: DynamicImage,
    pub timings: StageTimings,
}

/// Reports progress over the tiles of one image.
pub trait Progress {
    /// The number of steps (tile runs) the image will take.
    fn start(&self, total_steps: u64);
    /// One step done.
    fn step(&self);
}

/// A progress sink that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _total_steps: u64) {}
    fn step(&self) {}
}

struct Stage {
    session: ModelSession,
    provider: Provider,
}

/// A loaded bundle, ready to upscale images.
pub struct Pipeline {
    bundle: Bundle,
    encoder: Stage,
    unet: Stage,
    decoder: Stage,
    /// Optional VAE graphs that take shared GroupNorm statistics: every tile
    /// of a tiled encode or decode is normalized alike (else per tile).
    encoder_tiled: Option<TiledStage>,
    decoder_tiled: Option<TiledStage>,
    schedule: NoiseSchedule,
    prompt_embeds: Vec<f32>,
    prompt_shape: [usize; 3],
    /// Provider attempts that failed under `auto`, for the user to see.
    fallbacks: Vec<String>,
    cancel: Option<&'static AtomicBool>,
}

impl Pipeline {
    /// Opens and validates the bundle and creates the three sessions.
    pub fn load(config: &PipelineConfig) -> Result<Pipeline> {
        let runtime = Runtime::global(config.ort_lib.as_deref())?;
        let bundle = Bundle::open_with(&config.model_dir, config.verify_hashes)?;
        let schedule = noise_schedule(&bundle)?;
        let (prompt_embeds, prompt_shape) =
            load_prompt_embeds(&bundle, config.prompt_embeds.as_deref())?;
        let mut fallbacks = Vec::new();
        let mut open = |component: &str| -> Result<Stage> {
            let path = bundle.resolve(&bundle.component(component).file)?;
            open_stage(runtime, &bundle, &path, component, config, &mut fallbacks)
        };
        let encoder = open("vae_encoder")?;
        let unet = open("unet")?;
        let decoder = open("vae_decoder")?;
        check_session_ports(&bundle, "vae_encoder", &encoder.session)?;
        check_session_ports(&bundle, "unet", &unet.session)?;
        check_session_ports(&bundle, "vae_decoder", &decoder.session)?;
        let encoder_tiled = open_tiled_stage(&mut open, &bundle, "vae_encoder_tiled")?;
        let decoder_tiled = open_tiled_stage(&mut open, &bundle, "vae_decoder_tiled")?;
        Ok(Pipeline {
            bundle,
            encoder,
            unet,
            decoder,
            encoder_tiled,
            decoder_tiled,
            schedule,
            prompt_embeds,
            prompt_shape,
            fallbacks,
            cancel: None,
        })
    }

    /// The bundle in use.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The bundle's noise schedule (valid timesteps are its indices).
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Where each stage runs.
    pub fn providers(&self) -> StageProviders {
        StageProviders {
            vae_encoder: self.encoder.provider,
            unet: self.unet.provider,
            vae_decoder: self.decoder.provider,
        }
    }

    /// Providers that `auto` tried and could not use, with the reason.
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// A flag that, once set (Ctrl-C), stops the work at the next tile.
    pub fn set_cancel_flag(&mut self, flag: &'static AtomicBool) {
        self.cancel = Some(flag);
    }

    /// Upscales one image at every timestep of `options`; the input's
    /// decoding and resizing are shared by the timesteps.
    pub fn upscale(
        &mut self,
        input: &InputImage,
        options: &RunOptions,
        progress: &dyn Progress,
    ) -> Result<Vec<Upscaled>> {
        options.check(&self.schedule)?;
        let start = Instant::now();
        let plan = preprocess::plan_sizes(
            input.width,
            input.height,
            options.upscale,
            options.process_size,
        )
        .map_err(|e| Error::Input(e.to_string()))?;
        let prepared = prepare(input, &plan)?;
        let preprocess_ms = millis_since(start);

        let (height, width) = (plan.model.1 as usize, plan.model.0 as usize);
        progress.start(
            self.steps_per_timestep(height, width, options) * options.timesteps.len() as u64,
        );
        let mut outputs = Vec::with_capacity(options.timesteps.len());
        for (index, &timestep) in options.timesteps.iter().enumerate() {
            let (mut planes, mut timings) = self.upscale_tensor(
                &prepared.model_input,
                &prepared.source_planes,
                timestep,
                options,
                progress,
            )?;
            if index == 0 {
                timings.preprocess = preprocess_ms;
            }
            let start = Instant::now();
            let image = finish_image(&mut planes, &plan, input, prepared.high_precision)?;
            timings.postprocess = millis_since(start);
            outputs.push(Upscaled {
                timestep,
                image,
                timings,
            });
        }
        Ok(outputs)
    }

    fn steps_per_timestep(&self, height: usize, width: usize, options: &RunOptions) -> u64 {
        self.plans(height, width, options)
            .map(|plans| plans.iter().map(|plan| plan.len() as u64).sum())
            .unwrap_or(0)
    }

    /// Tile plans of the three stages, all in latent cells (the encoder's
    /// pixel tiles and the decoder's outputs are these scaled up by 8).
    fn plans(&self, height: usize, width: usize, options: &RunOptions) -> Result<[TilePlan; 3]> {
        let (latent_h, latent_w) = (height / 8, width / 8);
        let to_error = |e: tiling::TilingError| Error::InvalidOption(e.to_string());
        let whole = TilePlan::whole(latent_h, latent_w).map_err(to_error)?;
        Ok(match (options.tile_px, options.tiling) {
            (0, _) => [whole.clone(), whole.clone(), whole],
            (_, TilingMode::Latent) => {
                let unet = TilePlan::latent_unet(latent_h, latent_w).map_err(to_error)?;
                [whole.clone(), unet, whole]
            }
            (tile_px, TilingMode::Staged) => {
                let tile = tile_px as usize / 8;
                let overlap = options.tile_overlap_px as usize / 8;
                let staged =
                    TilePlan::balanced(latent_h, latent_w, tile, overlap).map_err(to_error)?;
                [staged.clone(), staged.clone(), staged]
            }
        })
    }

    /// Steps 5-11 of the spec on image U: `model_input` is NCHW [1,3,H,W] in
    /// [-1,1], `source_planes` U as [3,H,W] in [0,1] (the color-fix source).
    /// Returns the color-fixed image as [3,H,W] in [0,1], unquantized.
    pub fn upscale_tensor(
        &mut self,
        model_input: &Array4<f32>,
        source_planes: &Array3<f32>,
        timestep: u32,
        options: &RunOptions,
        progress: &dyn Progress,
    ) -> Result<(Array3<f32>, StageTimings)> {
        options.check(&self.schedule)?;
        let (height, width) = (model_input.shape()[2], model_input.shape()[3]);
        if height % 8 != 0 || width % 8 != 0 || height == 0 || width == 0 {
            return Err(Error::InvalidOption(format!(
                "model input {width}x{height} is not a multiple of 8"
            )));
        }
        let [encoder_plan, unet_plan, decoder_plan] = self.plans(height, width, options)?;
        let mut timings = StageTimings::default();
        let image = model_input.index_axis(Axis(0), 0);

        // the shared GroupNorm statistics come from a sample of up to one
        // requested tile (balanced plans may use smaller tiles)
        let sample_tile = options.tile_px as usize / 8;
        let (latent_mean, latent_logvar) = self.encode(
            &image,
            timestep,
            &encoder_plan,
            sample_tile,
            &mut timings,
            progress,
        )?;
        let scaling_factor = self.bundle.manifest().scaling_factor;
        let start = Instant::now();
        let latent = match options.seed {
            None => latent_mean.mapv(|m| m * scaling_factor),
            Some(seed) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut latent = latent_mean;
                for (value, logvar) in latent.iter_mut().zip(latent_logvar.iter()) {
                    let noise: f32 = StandardNormal.sample(&mut rng);
                    *value = (*value + (0.5 * logvar).exp() * noise) * scaling_factor;
                }
                latent
            }
        };
        timings.blend += millis_since(start);

        let residual = self.denoise(&latent, timestep, &unet_plan, &mut timings, progress)?;
        let start = Instant::now();
        let alpha_cumprod = self
            .schedule
            .alpha_cumprod(i64::from(timestep))
            .map_err(|e| Error::InvalidOption(e.to_string()))?;
        let mut clean_latent = latent;
        schedule::clean_latent_in_place(
            clean_latent.as_slice_mut().expect("contiguous"),
            residual.as_slice().expect("contiguous"),
            alpha_cumprod,
        )
        .map_err(|e| Error::InvalidOption(e.to_string()))?;
        if !self.bundle.decoder_takes_scaled_latent() {
            clean_latent.mapv_inplace(|v| v / scaling_factor);
        }
        timings.blend += millis_since(start);

        let mut decoded = self.decode(
            &clean_latent,
            &decoder_plan,
            sample_tile,
            &mut timings,
            progress,
        )?;
        let start = Instant::now();
        preprocess::decoder_output_to_unit(decoded.as_slice_mut().expect("contiguous"));
        options
            .color_fix
            .apply(decoded.view_mut(), source_planes.view())
            .map_err(|e| Error::InvalidOption(e.to_string()))?;
        timings.color_fix += millis_since(start);
        Ok((decoded, timings))
    }

    fn encode(
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

    fn denoise(
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

    fn decode(
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

    /// GroupNorm statistics for a tiled encode: the tiled encoder graph run
    /// with its own statistics on a nearest-neighbour subsample of the whole
    /// image that fits a `sample_tile` square (latent cells; at least the
    /// plan's tile). `None` for a single tile (the main graph runs, exactly
    /// as untiled) or a bundle without the graph (per-tile statistics, as
    /// before).
    fn encoder_shared_stats(
        &mut self,
        image: &ArrayView3<'_, f32>,
        timestep: u32,
        plan: &TilePlan,
        sample_tile: usize,
        timings: &mut StageTimings,
    ) -> Result<Option<SharedStats>> {
        let Some(tiled) = self.encoder_tiled.as_mut() else {
            return Ok(None);
        };
        if plan.is_single() {
            return Ok(None);
        }
        let start = Instant::now();
        let (sample_h, sample_w) = stats_sample_shape(plan, sample_tile);
        let sample = subsample(image.view(), sample_h * 8, sample_w * 8);
        timings.blend += millis_since(start);
        let start = Instant::now();
        let shape = [1, 3, sample_h * 8, sample_w * 8];
        let timestep_tensor = [i64::from(timestep)];
        let inputs = [
            (
                "image",
                InputTensor::Float {
                    shape: &shape,
                    data: sample.as_slice().expect("standard layout"),
                },
            ),
            (
                "timestep",
                InputTensor::Int64 {
                    shape: &[1],
                    data: &timestep_tensor,
                },
            ),
        ];
        let stats = tiled.own_stats(inputs)?;
        timings.encoder += millis_since(start);
        Ok(Some(stats))
    }

    /// GroupNorm statistics for a tiled decode, as [`Self::encoder_shared_stats`]
    /// does for the encoder (the subsample is taken from the latent).
    fn decoder_shared_stats(
        &mut self,
        latent: &Array3<f32>,
        plan: &TilePlan,
        sample_tile: usize,
        timings: &mut StageTimings,
    ) -> Result<Option<SharedStats>> {
        let Some(tiled) = self.decoder_tiled.as_mut() else {
            return Ok(None);
        };
        if plan.is_single() {
            return Ok(None);
        }
        let start = Instant::now();
        let (sample_h, sample_w) = stats_sample_shape(plan, sample_tile);
        let sample = subsample(latent.view(), sample_h, sample_w);
        timings.blend += millis_since(start);
        let start = Instant::now();
        let shape = [1, latent.dim().0, sample_h, sample_w];
        let inputs = [(
            "latent",
            InputTensor::Float {
                shape: &shape,
                data: sample.as_slice().expect("standard layout"),
            },
        )];
        let stats = tiled.own_stats(inputs)?;
        timings.decoder += millis_since(start);
        Ok(Some(stats))
    }
}

/// A VAE graph with shared GroupNorm statistics (`vae_encoder_tiled`,
/// `vae_decoder_tiled`): the main graph's inputs and outputs plus
/// `group_norm_mean`, `group_norm_var` ([layers, groups]) and
/// `group_norm_fixed` ([1]: 1 = normalize with those, 0 = with each
/// GroupNorm's own statistics) in, `group_norm_mean_out`,
/// `group_norm_var_out` (what each GroupNorm got) out.
struct TiledStage {
    stage: Stage,
    layers: usize,
    groups: usize,
}

/// GroupNorm statistics shared by every tile of one image, `[layers, groups]`.
struct SharedStats {
    mean: Vec<f32>,
    var: Vec<f32>,
}

const TILED_STATS_INPUTS: [&str; 3] = ["group_norm_mean", "group_norm_var", "group_norm_fixed"];
const TILED_STATS_OUTPUTS: [&str; 2] = ["group_norm_mean_out", "group_norm_var_out"];

impl TiledStage {
    /// Runs the graph on the main graph's `inputs` with the statistics
    /// `stats` (None: each GroupNorm's own).
    fn run<const N: usize>(
        &mut self,
        inputs: [(&str, InputTensor<'_>); N],
        stats: Option<&SharedStats>,
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let shape = [self.layers, self.groups];
        let count = self.layers * self.groups;
        let (own_mean, own_var) = match stats {
            Some(_) => (Vec::new(), Vec::new()),
            None => (vec![0.0; count], vec![1.0; count]),
        };
        let (mean, var, fixed): (&[f32], &[f32], &[f32]) = match stats {
            Some(stats) => (&stats.mean, &stats.var, &[1.0]),
            None => (&own_mean, &own_var, &[0.0]),
        };
        let mut all: Vec<(&str, InputTensor<'_>)> = inputs.into_iter().collect();
        for (name, data) in TILED_STATS_INPUTS.into_iter().zip([mean, var]) {
            all.push((
                name,
                InputTensor::Float {
                    shape: &shape,
                    data,
                },
            ));
        }
        all.push((
            TILED_STATS_INPUTS[2],
            InputTensor::Float {
                shape: &[1],
                data: fixed,
            },
        ));
        self.stage.session.run(&all, output_names)
    }

    /// The statistics each GroupNorm computes on `inputs` (own statistics).
    fn own_stats<const N: usize>(
        &mut self,
        inputs: [(&str, InputTensor<'_>); N],
    ) -> Result<SharedStats> {
        let mut outputs = self.run(inputs, None, &TILED_STATS_OUTPUTS)?;
        let var = outputs.pop().expect("two outputs");
        let mean = outputs.pop().expect("two outputs");
        let expected = [self.layers, self.groups];
        for output in [&mean, &var] {
            if output.shape != expected {
                return Err(Error::Ort(format!(
                    "a tiled VAE graph returned GroupNorm statistics of shape {:?}, expected {expected:?}",
                    output.shape
                )));
            }
        }
        if !mean.data.iter().all(|v| v.is_finite())
            || !var.data.iter().all(|v| v.is_finite() && *v >= 0.0)
        {
            return Err(Error::Ort(
                "a tiled VAE graph returned GroupNorm statistics that are not finite".into(),
            ));
        }
        Ok(SharedStats {
            mean: mean.data,
            var: var.data,
        })
    }
}

/// Opens an optional tiled VAE graph when the manifest lists it; its
/// `[layers, groups]` come from the manifest's `group_norm_mean` port.
fn open_tiled_stage(
    open: &mut dyn FnMut(&str) -> Result<Stage>,
    bundle: &Bundle,
    component: &str,
) -> Result<Option<TiledStage>> {
    let Some(spec) = bundle.manifest().components.get(component) else {
        return Ok(None);
    };
    let dims: Option<Vec<usize>> = spec
        .inputs
        .iter()
        .find(|port| port.name == TILED_STATS_INPUTS[0])
        .and_then(|port| {
            port.shape
                .iter()
                .map(|d| d.as_u64().map(|v| v as usize))
                .collect()
        });
    let shape_error = || {
        Error::bundle(
            bundle.root(),
            format!(
                "{component}: input \"group_norm_mean\" must have a fixed shape [layers, groups]"
            ),
        )
    };
    let (layers, groups) = match dims.as_deref() {
        Some(&[layers, groups]) if layers > 0 && groups > 0 => (layers, groups),
        _ => return Err(shape_error()),
    };
    let stage = open(component)?;
    check_session_ports(bundle, component, &stage.session)?;
    for name in TILED_STATS_INPUTS {
        if !stage.session.inputs().iter().any(|port| port.name == name) {
            return Err(Error::bundle(
                bundle.root(),
                format!("{component} graph has no input {name:?}"),
            ));
        }
    }
    for name in TILED_STATS_OUTPUTS {
        if !stage.session.outputs().iter().any(|port| port.name == name) {
            return Err(Error::bundle(
                bundle.root(),
                format!("{component} graph has no output {name:?}"),
            ));
        }
    }
    Ok(Some(TiledStage {
        stage,
        layers,
        groups,
    }))
}

/// Size in latent cells of the sample the shared statistics are computed on:
/// the whole area scaled (same factor on both axes) to fit a tile of
/// `plan`, or a `sample_tile` square where that is larger (a requested tile
/// side: balanced plans may use smaller tiles, and a larger sample estimates
/// better), at least 8 cells (64 px, the smallest TensorRT profile shape)
/// where the area has them.
fn stats_sample_shape(plan: &TilePlan, sample_tile: usize) -> (usize, usize) {
    let (height, width) = plan.area();
    let (tile_h, tile_w) = plan.tile_shape();
    let bound_h = tile_h.max(sample_tile.min(height));
    let bound_w = tile_w.max(sample_tile.min(width));
    // the tighter of bound_h / height and bound_w / width, as a fraction
    let (numerator, denominator) = if bound_h * width <= bound_w * height {
        (bound_h, height)
    } else {
        (bound_w, width)
    };
    let side = |size: usize| (size * numerator / denominator).max(size.min(8)).max(1);
    (side(height), side(width))
}

/// Nearest-neighbour resample of `[C, H, W]` to `[C, height, width]`: output
/// row `i` is source row `floor((i + 0.5) * H / height)`, columns alike.
fn subsample(source: ArrayView3<'_, f32>, height: usize, width: usize) -> Array3<f32> {
    let (channels, source_h, source_w) = source.dim();
    let rows: Vec<usize> = (0..height)
        .map(|i| (2 * i + 1) * source_h / (2 * height))
        .collect();
    let columns: Vec<usize> = (0..width)
        .map(|i| (2 * i + 1) * source_w / (2 * width))
        .collect();
    Array3::from_shape_fn((channels, height, width), |(c, y, x)| {
        source[[c, rows[y], columns[x]]]
    })
}

/// One stage's tile loop: cut each tile of `plan` out of `source`, run it,
/// and blend every output of the graph over the whole area. Rects of `plan`
/// are in latent cells; `source_scale` and `output_scale` map them to the
/// source's and the outputs' own cells (8 for pixels).
struct TileRun<'a> {
    plan: &'a TilePlan,
    source: ArrayView3<'a, f32>,
    source_scale: usize,
    /// Channels of each graph output, in order.
    output_channels: &'a [usize],
    output_scale: usize,
    /// Blend weights of one output tile.
    weights: &'a [f32],
    cancel: Option<&'static AtomicBool>,
    progress: &'a dyn Progress,
}

impl TileRun<'_> {
    /// `run_tile(shape, data)` runs one `[1, C, h, w]` tile. Time in it goes
    /// to `network_ms`, cutting and blending to `blend_ms`. A single tile's
    /// outputs are returned as they are (exactly the untiled result).
    fn run(
        &self,
        network_ms: &mut f64,
        blend_ms: &mut f64,
        mut run_tile: impl FnMut(&[usize], &[f32]) -> Result<Vec<OutputTensor>>,
    ) -> Result<Vec<Array3<f32>>> {
        let (height, width) = self.plan.area();
        let (out_h, out_w) = (height * self.output_scale, width * self.output_scale);
        let mut sums: Vec<TileAccumulator> = self
            .output_channels
            .iter()
            .map(|&channels| TileAccumulator::new(channels, out_h, out_w))
            .collect();
        for rect in self.plan.tiles() {
            if self.cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                return Err(Error::Interrupted);
            }
            let start = Instant::now();
            let source_rect = rect.scaled_up(self.source_scale);
            let tile = tiling::extract_tile(self.source, source_rect);
            let shape = [1, tile.dim().0, source_rect.height, source_rect.width];
            *blend_ms += millis_since(start);
            let start = Instant::now();
            let outputs = run_tile(&shape, tile.as_slice().expect("standard layout"))?;
            *network_ms += millis_since(start);
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
        let start = Instant::now();
        let blended = sums.into_iter().map(finalize).collect();
        *blend_ms += millis_since(start);
        blended
    }
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
    sum.finalize()
        .map_err(|e| Error::InvalidOption(e.to_string()))
}

/// Most training timesteps a bundle's schedule may have (the models use 1000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The bundle's noise schedule ([`NoiseSchedule::from_spec`]), refused as
/// the bundle's fault when it would be computed for more than
/// [`MAX_TRAIN_TIMESTEPS`] steps (a hostile manifest must not make a huge
/// allocation) or when a computed value falls outside (0, 1] (NaN betas).
pub fn noise_schedule(bundle: &Bundle) -> Result<NoiseSchedule> {
    let spec = &bundle.manifest().schedule;
    let fail = |reason: String| Error::bundle(bundle.root(), format!("schedule: {reason}"));
    if spec.alphas_cumprod.is_empty() && spec.num_train_timesteps > MAX_TRAIN_TIMESTEPS {
        return Err(fail(format!(
            "num_train_timesteps is {}, over {MAX_TRAIN_TIMESTEPS}",
            spec.num_train_timesteps
        )));
    }
    let schedule = NoiseSchedule::from_spec(spec).map_err(|e| fail(e.to_string()))?;
    // from_spec checks listed values; computed ones are checked the same way.
    NoiseSchedule::from_alphas_cumprod(schedule.alphas_cumprod().to_vec())
        .map_err(|e| fail(format!("{e}; check beta_start and beta_end")))
}

/// Largest prompt embedding file read (a [1, 77, 1024] float32 one is 315 KB).
const MAX_PROMPT_EMBEDS_BYTES: u64 = 64 << 20;

fn load_prompt_embeds(
    bundle: &Bundle,
    replacement: Option<&Path>,
) -> Result<(Vec<f32>, [usize; 3])> {
    let path = match replacement {
        Some(path) => path.to_path_buf(),
        None => bundle.resolve(&bundle.manifest().prompt.embeds_file)?,
    };
    // A file given with --prompt-embeds is the user's, not the bundle's.
    let fail = |reason: String| match replacement {
        Some(_) => Error::PromptEmbeds {
            path: path.clone(),
            reason,
        },
        None => Error::bundle(&path, format!("prompt embedding: {reason}")),
    };
    let bytes = {
        use std::io::Read as _;
        crate::image_io::check_input_file(&path).map_err(|e| fail(e.to_string()))?;
        let file = crate::image_io::open_regular(&path).map_err(|e| fail(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_PROMPT_EMBEDS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_PROMPT_EMBEDS_BYTES {
            return Err(fail(format!(
                "larger than {} MiB; a prompt embedding is [1, tokens, dim] floats",
                MAX_PROMPT_EMBEDS_BYTES >> 20
            )));
        }
        bytes
    };
    let expected = &bundle.manifest().prompt.shape;
    let (header, _) = npy::parse_header(&bytes).map_err(|e| fail(e.to_string()))?;
    let shape = header.shape.clone();
    if shape.len() != 3
        || shape[0] != 1
        || shape[1] == 0
        || shape[1] > 4096
        || shape[2] != expected[2]
    {
        return Err(fail(format!(
            "shape {shape:?}; the model needs [1, tokens, {}] with 1..4096 tokens",
            expected[2]
        )));
    }
    let array = npy::parse_npy(&bytes).map_err(|e| fail(e.to_string()))?;
    if let Some(index) = array.iter().position(|v| !v.is_finite()) {
        return Err(fail(format!(
            "value {index} is {}; every value must be a finite number",
            array.iter().nth(index).copied().unwrap_or(f32::NAN)
        )));
    }
    Ok((
        array.iter().copied().collect(),
        [shape[0], shape[1], shape[2]],
    ))
}

fn open_stage(
    runtime: &Runtime,
    bundle: &Bundle,
    path: &Path,
    component: &str,
    config: &PipelineConfig,
    fallbacks: &mut Vec<String>,
) -> Result<Stage> {
    let candidates: Vec<Provider> = match config.provider {
        ProviderChoice::Auto => Provider::PREFERENCE.to_vec(),
        ProviderChoice::Only(provider) => vec![provider],
    };
    let mut last_error = None;
    for provider in candidates {
        if provider != Provider::Cpu {
            if let Err(reason) = runtime.probe_provider(provider) {
                if config.provider == ProviderChoice::Auto {
                    let note = format!("auto: {provider} not usable: {reason}");
                    if !fallbacks.contains(&note) {
                        fallbacks.push(note);
                    }
                    continue;
                }
                return Err(Error::ProviderUnavailable {
                    provider: provider.to_string(),
                    reason,
                });
            }
        }
        let options = SessionOptions {
            provider,
            device_id: config.device_id,
            threads: config.threads,
            engine_cache: Some(bundle.root().join(".trt-cache")),
            trt_profile: trt_profile(component, config.tile_px, bundle),
            ..SessionOptions::default()
        };
        match runtime.session(path, &options) {
            Ok(session) => return Ok(Stage { session, provider }),
            Err(error) if config.provider == ProviderChoice::Auto && provider != Provider::Cpu => {
                fallbacks.push(format!("{component}: {provider} failed: {error}"));
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Ort(format!("{component}: no provider could open it"))))
}

/// TensorRT profile shapes for a stage: from 64 px up to the tile size, the
/// tile size being the shape built for.
fn trt_profile(component: &str, tile_px: u32, bundle: &Bundle) -> Option<(String, String, String)> {
    let tile = tile_px.max(64) as usize;
    let channels = bundle.manifest().latent_channels;
    let tokens = bundle.manifest().prompt.shape[1];
    let dim = bundle.manifest().prompt.shape[2];
    let shape = |side_px: usize| match component {
        "vae_encoder" | "vae_encoder_tiled" => {
            format!("image:1x3x{side_px}x{side_px},timestep:1")
        }
        "unet" => format!(
            "latent:1x{channels}x{0}x{0},timestep:1,encoder_hidden_states:1x{tokens}x{dim}",
            side_px / 8
        ),
        _ => format!("latent:1x{channels}x{0}x{0}", side_px / 8),
    };
    Some((shape(64), shape(tile), shape(tile)))
}

fn check_session_ports(bundle: &Bundle, component: &str, session: &ModelSession) -> Result<()> {
    let spec = bundle.component(component);
    for (direction, expected, actual) in [
        ("input", &spec.inputs, session.inputs()),
        ("output", &spec.outputs, session.outputs()),
    ] {
        for port in expected {
            let found = actual.iter().find(|p| p.name == port.name).ok_or_else(|| {
                Error::bundle(
                    bundle.root(),
                    format!("{component} graph has no {direction} {:?}", port.name),
                )
            })?;
            if found.dtype.name() != port.dtype {
                return Err(Error::bundle(
                    bundle.root(),
                    format!(
                        "{component} {direction} {:?} is {} in the graph but {} in the manifest",
                        port.name,
                        found.dtype.name(),
                        port.dtype
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Image U in the two forms the model part needs.
pub struct Prepared {
    /// NCHW `[1, 3, H, W]` in [-1, 1]: the encoder's input.
    pub model_input: Array4<f32>,
    /// `[3, H, W]` in [0, 1]: the color fix's source.
    pub source_planes: Array3<f32>,
    /// Whether the input had more than 8 bits per sample.
    pub high_precision: bool,
}

/// Steps 1-5 of the spec: the minimum-size rule, bicubic upscale and Lanczos
/// to multiples of 8 as `plan` says, then the tensors.
pub fn prepare(input: &InputImage, plan: &SizePlan) -> Result<Prepared> {
    let to_input_error = |e: preprocess::PreprocessError| Error::Input(e.to_string());
    Ok(match &input.pixels {
        InputPixels::Rgb8(rgb) => {
            let upscaled = preprocess::apply_size_plan_rgb8(rgb, plan).map_err(to_input_error)?;
            Prepared {
                model_input: preprocess::rgb8_to_model_input(&upscaled),
                source_planes: preprocess::rgb8_to_unit_planes(&upscaled),
                high_precision: false,
            }
        }
        InputPixels::RgbHigh(rgb) => {
            let upscaled = preprocess::apply_size_plan_rgb32f(rgb, plan).map_err(to_input_error)?;
            Prepared {
                model_input: preprocess::rgb32f_to_model_input(&upscaled),
                source_planes: preprocess::rgb32f_to_unit_planes(&upscaled),
                high_precision: true,
            }
        }
    })
}

/// From color-fixed planes at the model's size to the output image: resize to
/// `upscale x` the input (when the multiple-of-8 crop or the minimum-size rule
/// changed it), put the alpha back, quantize to 8 or 16 bits.
fn finish_image(
    planes: &mut Array3<f32>,
    plan: &SizePlan,
    input: &InputImage,
    high_precision: bool,
) -> Result<DynamicImage> {
    let (out_w, out_h) = plan.output;
    let planes = if plan.needs_output_resize() {
        let (_, height, width) = planes.dim();
        let interleaved: Vec<f32> = planes
            .view()
            .permuted_axes([1, 2, 0])
            .iter()
            .map(|v| v * 255.0)
            .collect();
        let image = Rgb32FImage::from_raw(width as u32, height as u32, interleaved)
            .expect("planes give a full image");
        let resized = preprocess::resize_rgb32f(&image, out_w, out_h, ResampleFilter::Bicubic)
            .map_err(|e| Error::Input(e.to_string()))?;
        let mut resized_planes = preprocess::rgb32f_to_unit_planes(&resized);
        resized_planes.mapv_inplace(|v| v.clamp(0.0, 1.0));
        resized_planes
    } else {
        std::mem::take(planes)
    };
    let to_error = |e: preprocess::PreprocessError| Error::Input(e.to_string());
    let alpha = match &input.alpha {
        None => None,
        Some(AlphaPlane::Alpha8(alpha)) => Some(
            preprocess::resize_u8(
                alpha,
                input.width,
                input.height,
                1,
                out_w,
                out_h,
                ResampleFilter::Bicubic,
            )
            .map_err(to_error)?
            .iter()
            .map(|a| f32::from(*a) / 255.0)
            .collect::<Vec<f32>>(),
        ),
        Some(AlphaPlane::AlphaHigh(alpha)) => Some(
            preprocess::resize_f32(
                alpha,
                input.width,
                input.height,
                1,
                out_w,
                out_h,
                ResampleFilter::Bicubic,
            )
            .map_err(to_error)?
            .iter()
            .map(|a| (a / 255.0).clamp(0.0, 1.0))
            .collect(),
        ),
    };
    let rgb = planes.view();
    Ok(match (high_precision, alpha) {
        (false, None) => DynamicImage::ImageRgb8(
            preprocess::unit_planes_to_rgb8(rgb, Quantization::Round).map_err(to_error)?,
        ),
        (true, None) => {
            DynamicImage::ImageRgb16(preprocess::unit_planes_to_rgb16(rgb).map_err(to_error)?)
        }
        (false, Some(alpha)) => {
            let rgb8 =
                preprocess::unit_planes_to_rgb8(rgb, Quantization::Round).map_err(to_error)?;
            let alpha8: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_raw(
                out_w,
                out_h,
                alpha.iter().map(|a| (a * 255.0).round() as u8).collect(),
            )
            .expect("alpha has the output size");
            let mut rgba = DynamicImage::ImageRgb8(rgb8).to_rgba8();
            for (pixel, a) in rgba.pixels_mut().zip(alpha8.pixels()) {
                pixel.0[3] = a.0[0];
            }
            DynamicImage::ImageRgba8(rgba)
        }
        (true, Some(alpha)) => {
            let rgb16 = preprocess::unit_planes_to_rgb16(rgb).map_err(to_error)?;
            let mut rgba = DynamicImage::ImageRgb16(rgb16).to_rgba16();
            for (pixel, a) in rgba.pixels_mut().zip(alpha.iter()) {
                pixel.0[3] = (a * 65535.0).round() as u16;
            }
            DynamicImage::ImageRgba16(rgba)
        }
    })
}

/// PSNR in dB between two equally long sample sets in [0, 1].
pub fn psnr(reference: &[f32], actual: &[f32]) -> f64 {
    assert_eq!(reference.len(), actual.len(), "PSNR needs equal sizes");
    let squared: f64 = reference
        .iter()
        .zip(actual)
        .map(|(r, a)| f64::from(r - a).powi(2))
        .sum();
    let mse = squared / reference.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (1.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_sample_fits_one_tile_at_the_image_aspect() {
        // 1024 px square, 512 px tiles: balanced 3x3 tiles of 48 cells, the
        // sample fills a requested 64-cell tile
        let plan = TilePlan::balanced(128, 128, 64, 8).unwrap();
        assert_eq!(plan.tile_shape(), (48, 48));
        assert_eq!(stats_sample_shape(&plan, 64), (64, 64));
        assert_eq!(stats_sample_shape(&plan, 0), (48, 48));
        // a wide image: the width decides, the height keeps the aspect
        let plan = TilePlan::new(40, 256, 64, 8).unwrap();
        assert_eq!(plan.tile_shape(), (40, 64));
        assert_eq!(stats_sample_shape(&plan, 64), (10, 64));
        // never below 8 cells (64 px, the smallest TensorRT profile shape)
        let plan = TilePlan::new(12, 512, 64, 8).unwrap();
        assert_eq!(stats_sample_shape(&plan, 64), (8, 64));
        let plan = TilePlan::new(5, 512, 64, 8).unwrap();
        assert_eq!(stats_sample_shape(&plan, 64), (5, 64));
        for (height, width) in [(128, 128), (40, 256), (12, 512), (300, 77), (65, 64)] {
            let plan = TilePlan::balanced(height, width, 64, 8).unwrap();
            let (sample_h, sample_w) = stats_sample_shape(&plan, 64);
            let (tile_h, tile_w) = plan.tile_shape();
            assert!(sample_h <= tile_h.max(64) && sample_w <= tile_w.max(64));
            assert!(sample_h <= height && sample_w <= width, "{height}x{width}");
            assert!(sample_h >= 1 && sample_w >= 1);
        }
    }

    #[test]
    fn subsample_takes_the_nearest_samples() {
        let source = Array3::from_shape_fn((2, 4, 6), |(c, y, x)| (c * 100 + y * 10 + x) as f32);
        let half = subsample(source.view(), 2, 3);
        assert_eq!(half.dim(), (2, 2, 3));
        // rows 1, 3 and columns 1, 3, 5: floor((i + 0.5) * 2)
        assert_eq!(
            half.iter().copied().collect::<Vec<_>>(),
            vec![11.0, 13.0, 15.0, 31.0, 33.0, 35.0, 111.0, 113.0, 115.0, 131.0, 133.0, 135.0]
        );
        assert_eq!(subsample(source.view(), 4, 6), source);
        let odd = subsample(source.view(), 3, 4);
        assert_eq!(odd[[0, 0, 0]], 0.0);
        assert_eq!(odd[[0, 2, 3]], 35.0);
    }

    #[test]
    fn psnr_of_known_errors() {
        assert_eq!(psnr(&[0.5, 0.5], &[0.5, 0.5]), f64::INFINITY);
        let db = psnr(&[0.0; 4], &[0.1; 4]);
        assert!((db - 20.0).abs() < 1e-6, "{db}");
    }

    #[test]
    fn options_are_validated() {
        let options = RunOptions {
            timesteps: vec![500],
            upscale: 4,
            process_size: 512,
            tile_px: 512,
            tile_overlap_px: 64,
            tiling: TilingMode::Staged,
            color_fix: ColorFix::Adain,
            seed: None,
        };
        let schedule = NoiseSchedule::sd21();
        assert!(options.check(&schedule).is_ok());
        // t = 0 indexes alphas_cumprod[0], as the bundle format allows
        assert!(RunOptions {
            timesteps: vec![0],
            ..options.clone()
        }
        .check(&schedule)
        .is_ok());
        assert!(RunOptions {
            timesteps: vec![1000],
            ..options.clone()
        }
        .check(&schedule)
        .is_err());
        assert!(RunOptions {
            timesteps: vec![],
            ..options.clone()
        }
        .check(&schedule)
        .is_err());
        assert!(RunOptions {
            tile_px: 500,
            ..options.clone()
        }
        .check(&schedule)
        .is_err());
        assert!(RunOptions {
            tile_overlap_px: 300,
            ..options.clone()
        }
        .check(&schedule)
        .is_err());
        assert!(RunOptions {
            tile_px: 0,
            tile_overlap_px: 3,
            ..options
        }
        .check(&schedule)
        .is_ok());
    }
}
