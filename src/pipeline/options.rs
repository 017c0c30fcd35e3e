//! What a pipeline is built with ([`PipelineConfig`], with the
//! [`ShapeHint`] TensorRT builds for) and what one run asks for
//! ([`RunOptions`]), with their checks.

use std::path::PathBuf;

use serde::Serialize;

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::image::tensor::Quantization;
use crate::remote::ServerOptions;
use crate::runtime::{ConvSearch, Provider, TensorRtOptions};

use super::static_shapes::StaticShapes;
use crate::schedule::NoiseSchedule;

pub use crate::image::colorfix::ColorFix;

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
    /// Replaces it with this text's embedding by the bundle's text encoder
    /// (`--prompt`; not with `prompt_embeds`).
    pub prompt_text: Option<String>,
    /// What the runs will send the networks: TensorRT builds its engines
    /// for this. The tiling itself is [`RunOptions`]'; a run whose tiling
    /// differs is refused on TensorRT ([`ShapeHint::check`]).
    pub shapes: ShapeHint,
    /// Where notices go (TensorRT engine builds); the CLI prints them on stderr.
    pub notify: fn(&str),
    /// Constant inputs (prompt, timestep) held in an I/O binding: Some
    /// forces it on or off; None: on GPU providers only.
    pub io_binding: Option<bool>,
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
    /// Run the graphs on this Triton server instead of ONNX Runtime here
    /// (`--server`); the bundle still gives the manifest and the prompt.
    pub server: Option<ServerOptions>,
    /// Tiles of one stage run as one batched run, up to this many
    /// (`--tile-batch`; 1: one tile per run). Local sessions only.
    pub tile_batch: usize,
    /// Main graphs opened for the runs' one shape (`--static-shapes`; see
    /// `pipeline/static_shapes.rs`).
    pub static_shapes: StaticShapes,
    /// Further CUDA provider settings (`--cuda-option`).
    pub cuda_options: Vec<(String, String)>,
    /// CUDA graphs for the main graphs opened for one shape on CUDA
    /// (`--cuda-graph`): their inputs and outputs held in device memory.
    pub cuda_graph: bool,
    /// Inputs and outputs of graphs opened for one shape held in device
    /// memory at fixed addresses, as CUDA graphs need: Some forces it on
    /// or off (on the CPU: host memory, for tests); None: with `cuda_graph`.
    pub device_io: Option<bool>,
    /// The most host memory a run may plan for (`--max-memory` on a host
    /// run): the encoder segments hold every tile's activations within half
    /// of it; None: half of what the host has available.
    pub host_memory_limit: Option<u64>,
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
            prompt_text: None,
            shapes: ShapeHint::default(),
            notify: |_| {},
            io_binding: None,
            fixed_tiles: None,
            verify_hashes: true,
            tf32: false,
            conv_search: ConvSearch::default(),
            tensorrt: TensorRtOptions::default(),
            host_memory_limit: None,
            server: None,
            tile_batch: 1,
            static_shapes: StaticShapes::default(),
            cuda_options: Vec::new(),
            cuda_graph: false,
            device_io: None,
        }
    }
}

/// The tiling the runs of a pipeline will use, known when its sessions
/// open (TensorRT profiles are built from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeHint {
    /// `RunOptions::tile_px` of the runs.
    pub tile_px: u32,
    /// `RunOptions::tiling` of the runs.
    pub tiling: TilingMode,
    /// Longest side of the largest model input the runs will send, in
    /// pixels (untiled stages); 0: unknown, taken as 2048.
    pub largest_side_px: u32,
    /// (height, width) in pixels of the model input of every image the
    /// runs will send, when they all have one size; None: unknown or several.
    pub exact_px: Option<(u32, u32)>,
}

impl Default for ShapeHint {
    fn default() -> Self {
        ShapeHint {
            tile_px: 512,
            tiling: TilingMode::Staged,
            largest_side_px: 0,
            exact_px: None,
        }
    }
}

impl ShapeHint {
    /// The hint for runs with these options.
    pub fn of(options: &RunOptions, largest_side_px: u32) -> ShapeHint {
        ShapeHint {
            tile_px: options.tile_px,
            tiling: options.tiling,
            largest_side_px,
            exact_px: None,
        }
    }

    /// Refuses a run whose tiling is not the one TensorRT's engines were
    /// built for (they would be rebuilt, or fail, on other shapes).
    pub fn check(&self, options: &RunOptions) -> Result<()> {
        if (self.tile_px, self.tiling) == (options.tile_px, options.tiling) {
            return Ok(());
        }
        Err(Error::InvalidOption(format!(
            "the TensorRT engines were built for --tile {} --tiling {:?}, this run asks for --tile {} --tiling {:?}; load the pipeline with the run's tiling",
            self.tile_px, self.tiling, options.tile_px, options.tiling
        )))
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
    /// Largest pixel tile side; 0 = no tiling. On the CPU tiles are
    /// balanced: the fewest that cover the image, each as small as the
    /// overlap allows; on GPU providers every tile is exactly this size
    /// (see `Pipeline::uses_fixed_tiles`).
    pub tile_px: u32,
    pub tile_overlap_px: u32,
    pub tiling: TilingMode,
    pub color_fix: ColorFix,
    /// None: the posterior mean; Some(seed): a reproducible sample.
    pub seed: Option<u64>,
    /// How samples become 8-bit: `Round` once at the end, or `Truncate`
    /// before and after the color fix, as the authors' script does.
    pub rounding: Quantization,
}

/// The tile overlap when `--tile-overlap` is not given (output pixels).
pub const DEFAULT_TILE_OVERLAP_PX: u32 = 64;

/// The overlap for tiles of `tile_px` when none is given: 64 px, or for
/// tiles under 128 px half the tile rounded down to a multiple of 8 (the
/// most [`RunOptions::check`] allows); 0 (untiled, or `--tile auto` before
/// its choice, always 256 px or more) gives 64.
pub fn default_tile_overlap(tile_px: u32) -> u32 {
    if tile_px == 0 {
        return DEFAULT_TILE_OVERLAP_PX;
    }
    (tile_px / 2 / 8 * 8).min(DEFAULT_TILE_OVERLAP_PX)
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
            tile_overlap_px: DEFAULT_TILE_OVERLAP_PX,
            tiling: TilingMode::Staged,
            color_fix: defaults.color_fix,
            seed: None,
            rounding: Quantization::Round,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(tile_px: u32, tiling: TilingMode) -> RunOptions {
        RunOptions {
            timesteps: vec![500],
            upscale: 4,
            process_size: 512,
            tile_px,
            tile_overlap_px: DEFAULT_TILE_OVERLAP_PX,
            tiling,
            color_fix: ColorFix::Adain,
            seed: None,
            rounding: Quantization::Round,
        }
    }

    #[test]
    fn the_default_overlap_fits_every_tile_side() {
        assert_eq!(default_tile_overlap(0), 64);
        assert_eq!(default_tile_overlap(512), 64);
        assert_eq!(default_tile_overlap(128), 64);
        assert_eq!(default_tile_overlap(120), 56);
        assert_eq!(default_tile_overlap(64), 32);
        assert_eq!(default_tile_overlap(72), 32);
        for tile in (64..=16384).step_by(8) {
            let overlap = default_tile_overlap(tile);
            assert!(
                overlap.is_multiple_of(8) && overlap * 2 <= tile,
                "{tile}: {overlap}"
            );
        }
    }

    #[test]
    fn the_shape_hint_ties_the_load_to_the_runs() {
        let run = options(512, TilingMode::Staged);
        let hint = ShapeHint::of(&run, 2048);
        assert_eq!(hint.largest_side_px, 2048);
        assert!(hint.check(&run).is_ok());
        for other in [
            options(256, TilingMode::Staged),
            options(512, TilingMode::Latent),
        ] {
            let message = hint.check(&other).unwrap_err().to_string();
            assert!(
                message.contains("TensorRT engines were built for --tile 512"),
                "{message}"
            );
        }
    }
}
