//! The TADSR pipeline for one image: preprocess once, then per timestep
//! encode (time-aware) -> UNet -> clean latent -> decode -> color fix ->
//! output size, alpha and quantization. Stages run whole or over tiles.
//!
//! Here: the options, the stage order for one image and the tile plans.
//! `stages` declares and runs each network stage, `tile_run` is the tile
//! loop they share, `shared_stats` the GroupNorm statistics shared across
//! tiles, `loading` what [`Pipeline::load`] reads from the bundle.
//!
//! Over 500 lines only with its unit tests beside the code (the code is
//! under 470).

mod authors_encoder;
mod encoder_segments;
mod gpu_plan;
mod graph_setup;
mod loading;
mod options;
mod shared_stats;
mod stages;
mod static_shapes;
mod tile_run;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use image::DynamicImage;
use ndarray::{Array3, Array4, Axis};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::bundle::{check_graph_ports, component, Bundle, HashCheck};
use crate::error::{Error, Result};
use crate::image::io::InputImage;
use crate::image::size_plan;
use crate::image::tensor::{self, Quantization};
use crate::remote::Server;
use crate::runtime::{Provider, Runtime, SessionOptions};
use crate::schedule::{self, NoiseSchedule};
use crate::tiling::TilePlan;

pub use crate::image::colorfix::ColorFix;
pub use crate::image::postprocess::{finish_image, psnr};
pub use crate::image::prepare::{prepare, Prepared};
pub use loading::{noise_schedule, MAX_TRAIN_TIMESTEPS};
pub use options::{
    default_tile_overlap, PipelineConfig, ProviderChoice, RunOptions, ShapeHint, TilingMode,
};
pub use stages::{SpentIn, StageTimings};
pub use static_shapes::StaticShapes;

use loading::{encode_prompt_text, load_prompt_embeds, open_stage};
use shared_stats::{open_tiled_stage, TiledStage};
use stages::{millis_since, Stage};

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

/// Opens one component's graph where the graphs run.
fn open_component(
    backend: &Backend,
    bundle: &Bundle,
    config: &PipelineConfig,
    prompt_shape: [usize; 3],
    fallbacks: &mut Vec<String>,
    component: &str,
    pin_shape: bool,
) -> Result<Stage> {
    match backend {
        // Triton models are named like the manifest's components.
        Backend::Server(server) => Ok(Stage {
            session: Box::new(server.model(component, &bundle.component(component).sha256)?),
            provider: Provider::Triton,
            fixed_px: None,
            cuda_graph: false,
        }),
        Backend::Local(runtime) => {
            let path = bundle.resolve(&bundle.component(component).file)?;
            open_stage(
                runtime,
                bundle,
                &path,
                component,
                config,
                prompt_shape,
                fallbacks,
                pin_shape,
            )
        }
    }
}

/// Where the graphs run.
enum Backend {
    Local(&'static Runtime),
    Server(Server),
}

/// A loaded bundle, ready to upscale images.
pub struct Pipeline {
    bundle: Bundle,
    encoder: Stage,
    unet: Stage,
    decoder: Stage,
    /// Optional VAE graphs that take shared GroupNorm statistics: every tile
    /// of a tiled encode or decode is normalized alike (else per tile).
    /// Opened on the first tiled image only ([`Pipeline::open_tiled_stages`]):
    /// a run that tiles nothing never holds their weights.
    encoder_tiled: Option<TiledStage>,
    decoder_tiled: Option<TiledStage>,
    tiled_opened: bool,
    /// The bundle's encoder segments (`--tiling latent` beyond the authors'
    /// encoder tile), opened on the first image that needs them.
    encoder_segments: Option<encoder_segments::EncoderSegmentStages>,
    segments_opened: bool,
    backend: Backend,
    /// What the pipeline was loaded with (to open the tiled graphs later).
    config: PipelineConfig,
    schedule: NoiseSchedule,
    prompt_embeds: Vec<f32>,
    prompt_shape: [usize; 3],
    /// How `--prompt` was tokenized (None: an embedding file).
    prompt_encoding: Option<crate::prompt::Encoding>,
    /// Provider attempts that failed under `auto`, for the user to see.
    fallbacks: Vec<String>,
    cancel: Option<&'static AtomicBool>,
    /// [`PipelineConfig::fixed_tiles`].
    fixed_tiles: Option<bool>,
    /// What the TensorRT engines were built for.
    shapes: ShapeHint,
    /// The current run's fixed tile shape on GPUs ([`Pipeline::network_tile_for`]).
    network_tile: Option<(usize, usize)>,
    /// Tiles of one stage handed to the graph at once: with a server,
    /// `--inflight` (one request each, in flight together); locally
    /// `--tile-batch` (one batched run).
    tiles_in_flight: usize,
}

/// Where a text encoder kept open beside the stages runs, given the UNet's
/// provider: CUDA when the UNet runs on a GPU (a 77-token pass there takes
/// milliseconds against about a second on a few CPU cores; not TensorRT,
/// which would build an engine for it first), else the CPU. A text encoded
/// once per run (`--prompt`) stays on the CPU: it is encoded before the
/// stages are opened, and one pass costs less than opening it on a GPU.
/// With a server (`Triton`) the text encoder runs on this machine's CPU.
pub fn text_encoder_provider(unet: Provider) -> Provider {
    match unet {
        Provider::Cuda | Provider::TensorRt => Provider::Cuda,
        Provider::Cpu | Provider::Triton => Provider::Cpu,
    }
}

impl Pipeline {
    /// Opens and validates the bundle and creates the three sessions.
    pub fn load(config: &PipelineConfig) -> Result<Pipeline> {
        // With a server, the graphs run there: no ONNX Runtime is loaded here.
        let backend = match &config.server {
            Some(options) => Backend::Server(Server::connect(options.clone())?),
            None => Backend::Local(Runtime::global(config.ort_lib.as_deref())?),
        };
        let bundle = Bundle::open_with(
            &config.model_dir,
            if config.verify_hashes {
                HashCheck::Remembered
            } else {
                HashCheck::Skip
            },
        )?;
        let schedule = noise_schedule(&bundle)?;
        let (prompt_embeds, prompt_shape, prompt_encoding) = match &config.prompt_text {
            Some(text) => {
                let runtime = match &backend {
                    Backend::Local(runtime) => runtime,
                    Backend::Server(_) => Runtime::global(config.ort_lib.as_deref())?,
                };
                let embedding = encode_prompt_text(runtime, &bundle, text, config.threads)?;
                (embedding.values, embedding.shape, Some(embedding.encoding))
            }
            None => {
                let (values, shape) = load_prompt_embeds(&bundle, config.prompt_embeds.as_deref())?;
                (values, shape, None)
            }
        };
        let mut fallbacks = Vec::new();
        let mut open = |component: &str| -> Result<Stage> {
            open_component(
                &backend,
                &bundle,
                config,
                prompt_shape,
                &mut fallbacks,
                component,
                true,
            )
        };
        let encoder = open(component::VAE_ENCODER)?;
        let unet = open(component::UNET)?;
        let decoder = open(component::VAE_DECODER)?;
        check_graph_ports(
            &bundle,
            component::VAE_ENCODER,
            encoder.session.inputs(),
            encoder.session.outputs(),
        )?;
        check_graph_ports(
            &bundle,
            component::UNET,
            unet.session.inputs(),
            unet.session.outputs(),
        )?;
        check_graph_ports(
            &bundle,
            component::VAE_DECODER,
            decoder.session.inputs(),
            decoder.session.outputs(),
        )?;
        Ok(Pipeline {
            bundle,
            encoder,
            unet,
            decoder,
            // opened on the first image that is tiled (TiledGraphs::ensure)
            encoder_tiled: None,
            decoder_tiled: None,
            tiled_opened: false,
            encoder_segments: None,
            segments_opened: false,
            backend,
            config: config.clone(),
            schedule,
            prompt_embeds,
            prompt_shape,
            prompt_encoding,
            fallbacks,
            cancel: None,
            fixed_tiles: config.fixed_tiles,
            shapes: config.shapes,
            network_tile: None,
            tiles_in_flight: config
                .server
                .as_ref()
                .map_or(config.tile_batch.max(1), |server| server.inflight()),
        })
    }

    /// How `--prompt`'s text was tokenized; None when the embedding came
    /// from a file (the bundle's or `--prompt-embeds`).
    pub fn prompt_encoding(&self) -> Option<&crate::prompt::Encoding> {
        self.prompt_encoding.as_ref()
    }

    /// The embedding of `--prompt`'s text in use, to hand to another
    /// pipeline of the same run (None: an embedding file's).
    pub fn prompt_embedding(&self) -> Option<crate::prompt::PromptEmbedding> {
        self.prompt_encoding
            .as_ref()
            .map(|encoding| crate::prompt::PromptEmbedding {
                values: self.prompt_embeds.clone(),
                shape: self.prompt_shape,
                encoding: encoding.clone(),
            })
    }

    /// Conditions the next images on `embedding` (`--prompt-dir`: one text
    /// per image). It must have the shape the pipeline was opened with (the
    /// graphs, TensorRT profiles and a server's batches are made for it).
    pub fn set_prompt_embedding(
        &mut self,
        embedding: crate::prompt::PromptEmbedding,
    ) -> Result<()> {
        if embedding.shape != self.prompt_shape {
            return Err(Error::Prompt(format!(
                "an embedding of shape {:?}; this pipeline takes {:?}",
                embedding.shape, self.prompt_shape
            )));
        }
        self.prompt_embeds = embedding.values;
        self.prompt_encoding = Some(embedding.encoding);
        Ok(())
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

    /// Where `--prompt-dir`'s text encoder runs beside these stages, and
    /// how: see [`text_encoder_provider`]; on CUDA with the UNet's device,
    /// TF32 setting and `--cuda-option`s.
    pub fn text_encoder_options(&self) -> SessionOptions {
        let provider = text_encoder_provider(self.unet.provider);
        let on_gpu = provider != Provider::Cpu;
        SessionOptions {
            provider,
            device_id: self.config.device_id,
            threads: self.config.threads,
            tf32: on_gpu && self.config.tf32,
            cuda_options: if on_gpu {
                self.config.cuda_options.clone()
            } else {
                Vec::new()
            },
            ..SessionOptions::default()
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
            let image = finish_image(
                &mut planes,
                &plan,
                input,
                // their script writes 8 bits whatever the input
                prepared.high_precision && options.rounding == Quantization::Round,
                options.rounding,
            )?;
            timings.postprocess = millis_since(start);
            outputs.push(Upscaled {
                timestep,
                image,
                timings,
            });
        }
        Ok(outputs)
    }

    /// Opens the bundle's tiled-VAE graphs (shared GroupNorm statistics),
    /// once, when the first tiled image needs them.
    fn open_tiled_stages(&mut self) -> Result<()> {
        if self.tiled_opened {
            return Ok(());
        }
        let (backend, bundle, config) = (&self.backend, &self.bundle, &self.config);
        let (prompt_shape, fallbacks) = (self.prompt_shape, &mut self.fallbacks);
        let mut open = |component: &str| -> Result<Stage> {
            open_component(
                backend,
                bundle,
                config,
                prompt_shape,
                fallbacks,
                component,
                false,
            )
        };
        self.encoder_tiled = open_tiled_stage(&mut open, bundle, component::VAE_ENCODER_TILED)?;
        self.decoder_tiled = open_tiled_stage(&mut open, bundle, component::VAE_DECODER_TILED)?;
        self.tiled_opened = true;
        Ok(())
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
                let staged = if self.uses_fixed_tiles() {
                    TilePlan::new(latent_h, latent_w, tile, overlap)?
                } else {
                    TilePlan::balanced(latent_h, latent_w, tile, overlap)?
                };
                [staged.clone(), staged.clone(), staged]
            }
        })
    }

    fn on_tensorrt(&self) -> bool {
        [
            self.encoder.provider,
            self.unet.provider,
            self.decoder.provider,
        ]
        .contains(&Provider::TensorRt)
    }

    /// Whether staged tiles keep one shape: on GPU providers every tile is
    /// the requested tile (the last one flush with the edge; an image
    /// smaller than a tile padded up to it), so one cuDNN plan or TensorRT
    /// engine serves every image. On the CPU, balanced tiles (less work).
    pub fn uses_fixed_tiles(&self) -> bool {
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
    /// [`Pipeline::uses_fixed_tiles`]); None: tiles as planned.
    fn network_tile_for(&self, options: &RunOptions) -> Option<(usize, usize)> {
        let tile = options.tile_px as usize / 8;
        (tile > 0 && options.tiling == TilingMode::Staged && self.uses_fixed_tiles())
            .then_some((tile, tile))
    }

    /// Steps 5-11 of the spec on image U: `model_input` is NCHW `[1, 3, H, W]`
    /// in -1..1, `source_planes` U as `[3, H, W]` in 0..1 (the color-fix
    /// source). Returns the color-fixed image as `[3, H, W]` in 0..1,
    /// unquantized.
    pub fn upscale_tensor(
        &mut self,
        model_input: &Array4<f32>,
        source_planes: &Array3<f32>,
        timestep: u32,
        options: &RunOptions,
        progress: &dyn Progress,
    ) -> Result<(Array3<f32>, StageTimings)> {
        let first =
            self.upscale_tensor_once(model_input, source_planes, timestep, options, progress);
        match first {
            Err(error) if self.runs_cuda_graphs() && Self::may_be_cuda_graph_fault(&error) => {
                (self.config.notify)(&format!(
                    "a CUDA graph run failed ({error}); reopening the graphs without CUDA graphs and running this image again"
                ));
                if let Err(reopen) = self.drop_cuda_graphs() {
                    // a sticky CUDA error fails the reopening too: report both
                    return Err(Error::Ort(format!(
                        "a CUDA graph run failed ({error}), and reopening the graphs without CUDA graphs failed too: {reopen}"
                    )));
                }
                self.upscale_tensor_once(model_input, source_planes, timestep, options, progress)
            }
            other => other,
        }
    }

    /// One attempt of [`Pipeline::upscale_tensor`].
    fn upscale_tensor_once(
        &mut self,
        model_input: &Array4<f32>,
        source_planes: &Array3<f32>,
        timestep: u32,
        options: &RunOptions,
        progress: &dyn Progress,
    ) -> Result<(Array3<f32>, StageTimings)> {
        options.check(&self.schedule)?;
        if self.on_tensorrt() {
            self.shapes.check(options)?;
        }
        let (height, width) = (model_input.shape()[2], model_input.shape()[3]);
        if height % 8 != 0 || width % 8 != 0 || height == 0 || width == 0 {
            return Err(Error::InvalidOption(format!(
                "model input {width}x{height} is not a multiple of 8"
            )));
        }
        let [encoder_plan, unet_plan, decoder_plan] = self.plans(height, width, options)?;
        if encoder_plan.len() > 1 || decoder_plan.len() > 1 {
            self.open_tiled_stages()?;
        }
        self.network_tile = self.network_tile_for(options);
        self.unpin_other_shapes(options, height, width)?;
        let mut timings = StageTimings::default();
        let image = model_input.index_axis(Axis(0), 0);

        // the shared GroupNorm statistics come from a sample of up to one
        // requested tile (balanced plans may use smaller tiles)
        let sample_tile = options.tile_px as usize / 8;
        // --tiling latent: the encoder as the authors' code runs it (in
        // their tiles beyond 1088 px; whole below, which is the same)
        let as_authors = if options.tiling == TilingMode::Latent && options.tile_px != 0 {
            self.encode_as_authors(&image, timestep, &mut timings)?
        } else {
            None
        };
        let (latent_mean, latent_logvar) = match as_authors {
            Some(moments) => {
                progress.step(); // the encoder plan's one step
                moments
            }
            None => self.encode(
                &image,
                timestep,
                &encoder_plan,
                sample_tile,
                &mut timings,
                progress,
            )?,
        };
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
        if options.rounding == Quantization::Truncate {
            // the authors' script: to 8 bits (truncating), then the color fix
            tensor::to_8bit_levels(
                decoded.as_slice_mut().expect("contiguous"),
                options.rounding,
            );
        }
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
    fn a_text_encoder_beside_gpu_stages_runs_on_cuda() {
        assert_eq!(text_encoder_provider(Provider::Cuda), Provider::Cuda);
        // TensorRT would build an engine for it first: CUDA instead
        assert_eq!(text_encoder_provider(Provider::TensorRt), Provider::Cuda);
        assert_eq!(text_encoder_provider(Provider::Cpu), Provider::Cpu);
        // with a server, on this machine: its CPU
        assert_eq!(text_encoder_provider(Provider::Triton), Provider::Cpu);
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
            rounding: crate::image::tensor::Quantization::Round,
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
