//! The TADSR pipeline for one image: preprocess once, then per timestep
//! encode (time-aware) -> UNet -> clean latent -> decode -> color fix ->
//! output size, alpha and quantization. Stages run whole or over tiles.
//!
//! Here: the options, the stage order for one image and the tile plans.
//! [`stages`] declares and runs each network stage, [`tile_run`] is the tile
//! loop they share, [`shared_stats`] the GroupNorm statistics shared across
//! tiles, [`loading`] what `Pipeline::load` reads from the bundle.

mod gpu_plan;
mod loading;
mod shared_stats;
mod stages;
mod tile_run;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use image::DynamicImage;
use ndarray::{Array3, Array4, Axis};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::bundle::{component, Bundle};
use crate::error::{Error, Result};
use crate::image::io::InputImage;
use crate::image::size_plan;
use crate::image::tensor;
use crate::runtime::{ConvSearch, Provider, Runtime, TensorRtOptions};
use crate::schedule::{self, NoiseSchedule};
use crate::tiling::TilePlan;

pub use crate::image::colorfix::ColorFix;
pub use crate::image::postprocess::{finish_image, psnr};
pub use crate::image::prepare::{prepare, Prepared};
pub use loading::{noise_schedule, MAX_TRAIN_TIMESTEPS};
pub use stages::{SpentIn, StageTimings};

use loading::{check_session_ports, load_prompt_embeds, open_stage};
use shared_stats::{open_tiled_stage, TiledStage};
use stages::{millis_since, Stage};

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
    /// How the run tiles (TensorRT profiles).
    pub tiling: TilingMode,
    /// Longest side of the largest model input the run will send, in
    /// pixels (TensorRT profiles of untiled stages); 0: unknown, 2048.
    pub largest_side_px: u32,
    /// Where notices go (TensorRT engine builds); the CLI prints them on stderr.
    pub notify: fn(&str),
    /// Staged tiles of one fixed shape (Some(true)) or balanced (Some(false));
    /// None: fixed exactly when a stage runs on a GPU provider.
    pub fixed_tiles: Option<bool>,
    /// Check every file's sha256 on load.
    pub verify_hashes: bool,
    /// Allow TF32 math for fp32 graphs on CUDA (`--tf32`).
    pub tf32: bool,
    /// cuDNN's convolution algorithm choice (`--cudnn-conv-search`).
    pub conv_search: ConvSearch,
    /// TensorRT's fp16, workspace and cache settings (profiles are made per stage).
    pub tensorrt: TensorRtOptions,
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
            tiling: TilingMode::Staged,
            largest_side_px: 0,
            notify: |_| {},
            fixed_tiles: None,
            verify_hashes: true,
            tf32: false,
            conv_search: ConvSearch::default(),
            tensorrt: TensorRtOptions::default(),
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
            color_fix: defaults.color_fix,
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
    /// [`PipelineConfig::fixed_tiles`].
    fixed_tiles: Option<bool>,
    /// The current run's fixed tile shape on GPUs ([`Pipeline::network_tile_for`]).
    network_tile: Option<(usize, usize)>,
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
            open_stage(
                runtime,
                &bundle,
                &path,
                component,
                config,
                prompt_shape,
                &mut fallbacks,
            )
        };
        let encoder = open(component::VAE_ENCODER)?;
        let unet = open(component::UNET)?;
        let decoder = open(component::VAE_DECODER)?;
        check_session_ports(&bundle, component::VAE_ENCODER, &encoder.session)?;
        check_session_ports(&bundle, component::UNET, &unet.session)?;
        check_session_ports(&bundle, component::VAE_DECODER, &decoder.session)?;
        let encoder_tiled = open_tiled_stage(&mut open, &bundle, component::VAE_ENCODER_TILED)?;
        let decoder_tiled = open_tiled_stage(&mut open, &bundle, component::VAE_DECODER_TILED)?;
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
            fixed_tiles: config.fixed_tiles,
            network_tile: None,
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
        let plan = size_plan::plan_sizes(
            input.width,
            input.height,
            options.upscale,
            options.process_size,
        )?;
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
        let whole = TilePlan::whole(latent_h, latent_w)?;
        Ok(match (options.tile_px, options.tiling) {
            (0, _) => [whole.clone(), whole.clone(), whole],
            (_, TilingMode::Latent) => {
                let unet = TilePlan::latent_unet(latent_h, latent_w)?;
                [whole.clone(), unet, whole]
            }
            (tile_px, TilingMode::Staged) => {
                let tile = tile_px as usize / 8;
                let overlap = options.tile_overlap_px as usize / 8;
                let staged = if self.fixed_tile_shapes() {
                    TilePlan::new(latent_h, latent_w, tile, overlap)?
                } else {
                    TilePlan::balanced(latent_h, latent_w, tile, overlap)?
                };
                [staged.clone(), staged.clone(), staged]
            }
        })
    }

    /// Whether staged tiles keep one shape: on GPU providers every tile is
    /// the requested tile (the last one flush with the edge; an image
    /// smaller than a tile padded up to it), so one cuDNN plan or TensorRT
    /// engine serves every image. On the CPU, balanced tiles (less work).
    fn fixed_tile_shapes(&self) -> bool {
        self.fixed_tiles.unwrap_or_else(|| {
            [
                self.encoder.provider,
                self.unet.provider,
                self.decoder.provider,
            ]
            .iter()
            .any(|p| *p != Provider::Cpu)
        })
    }

    /// The shape every staged tile is sent at, in latent cells (see
    /// [`Pipeline::fixed_tile_shapes`]); None: tiles as planned.
    fn network_tile_for(&self, options: &RunOptions) -> Option<(usize, usize)> {
        let tile = options.tile_px as usize / 8;
        (tile > 0 && options.tiling == TilingMode::Staged && self.fixed_tile_shapes())
            .then_some((tile, tile))
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
        self.network_tile = self.network_tile_for(options);
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
        let alpha_cumprod = self.schedule.alpha_cumprod(i64::from(timestep))?;
        let mut clean_latent = latent;
        schedule::clean_latent_in_place(
            clean_latent.as_slice_mut().expect("contiguous"),
            residual.as_slice().expect("contiguous"),
            alpha_cumprod,
        )?;
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
        tensor::decoder_output_to_unit(decoded.as_slice_mut().expect("contiguous"));
        options
            .color_fix
            .apply(decoded.view_mut(), source_planes.view())?;
        timings.color_fix += millis_since(start);
        Ok((decoded, timings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
