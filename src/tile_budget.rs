//! `--tile auto`: tile only when memory demands it.
//!
//! The peak memory of a run is estimated from figures the exporter measured
//! for each graph of the bundle (`manifest.json` `memory`, see
//! docs/bundle-format.md: the session's weights and its peak activations at
//! a few image sizes, from ONNX Runtime's peak RSS) plus what the pipeline
//! itself holds per pixel of the whole image ([`PIPELINE_BYTES_PER_PIXEL`]).
//! Between measured sizes the activations are interpolated; beyond the
//! largest they grow with the square of the pixels (self-attention over
//! every latent cell holds a cells x cells matrix), which overestimates
//! rather than under. An image whose untiled estimate fits the
//! budget runs untiled, exactly as `--tile 0`; otherwise the largest tile
//! (a multiple of [`TILE_STEP_PX`]) whose estimate fits. Everything here is
//! pure: the budget comes in as a number (see [`crate::system_memory`]).
//! Over 500 lines only with its unit tests beside the code (the code is
//! about 310).

use serde::Serialize;

use crate::bundle::{component, Manifest, StageMemory};
use crate::pipeline::TilingMode;

/// Bytes the pipeline holds per pixel of the (upscaled) image outside the
/// networks, an upper bound counted from its whole-image buffers alive
/// while decoding: the model input and the color-fix source as f32 (12 +
/// 12), the decoder's blended output and its weights (12 + 4), a color-fix
/// plane set (12), the upscaled 8/16-bit image and the output (up to 6 + 4);
/// latent-sized buffers (1/64 per channel) left out. Measured on this
/// project's 2-core machine (`/usr/bin/time -f %M tadsr-edge run --model
/// models/tiny --tile 256 --threads 1`, noise inputs of 256, 512 and 768
/// px): peak RSS 278, 348 and 614 MB, i.e. 22 B/px from 1024^2 to 2048^2
/// outputs and 51 B/px from 2048^2 to 3072^2.
pub const PIPELINE_BYTES_PER_PIXEL: u64 = 62;

/// Auto tiles are multiples of this (output pixels).
pub const TILE_STEP_PX: u32 = 64;

/// The smallest tile `--tile auto` chooses.
pub const MIN_AUTO_TILE_PX: u32 = 256;

/// The tile `--tile auto` takes for a bundle without memory figures (the
/// former default).
pub const FALLBACK_TILE_PX: u32 = 512;

/// The tile `--tiling latent` plans with: the authors' 96 latent cells.
pub const AUTHORS_LATENT_TILE_PX: u32 = 768;

/// The measured cost of the three stages.
#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    pub encoder: StageMemory,
    pub unet: StageMemory,
    pub decoder: StageMemory,
    /// Weights of the tiled-VAE graphs, which the pipeline opens on the
    /// first tiled image (staged tiling) when the bundle has them, taken as
    /// the plain encoder's and decoder's (the same weights; they are not
    /// measured apart).
    pub extra_weights_bytes: u64,
    /// Whether each stage gives its activations back when its run ends
    /// (ONNX Runtime's CPU arena shrunk after every run, the default on the
    /// CPU): the peak is then the largest stage's, not their sum.
    pub stages_release_memory: bool,
    /// Tiles run together as one batch (`--tile-batch`): a tiled stage
    /// holds this many tiles' activations at once.
    pub tile_batch: u64,
    /// The graph files' sizes, when known.
    pub graph_files: Option<GraphFileBytes>,
    /// Which stages (encoder, UNet, decoder) run on a GPU provider or a
    /// server: their weights count as their files' bytes.
    pub on_device: [bool; 3],
    /// Staged tiles are all sent at the tile's full shape (GPU providers,
    /// a server, `--tile-shape fixed`): a side of the image smaller than
    /// the tile is padded up to it, so a tile costs its whole square.
    pub fixed_tiles: bool,
}

/// Bytes of the bundle's graph files (each `.onnx` with its external
/// data): the weights a GPU provider copies to the device. The measured
/// `weights_bytes` are the CPU provider's, with its prepacked copies and,
/// for an fp16 graph, the float32 casts it makes while creating the session
/// (sd21 fp16 UNet: 6.0 to 6.3 GB measured for a 1.73 GB file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphFileBytes {
    pub encoder: u64,
    pub unet: u64,
    pub decoder: u64,
    /// 0 where the bundle has no tiled-VAE encoder.
    pub encoder_tiled: u64,
    /// 0 where the bundle has no tiled-VAE decoder.
    pub decoder_tiled: u64,
}

impl CostModel {
    /// The figures of the three main graphs, or None when the manifest has
    /// none (or lacks one of them).
    pub fn from_manifest(manifest: &Manifest) -> Option<CostModel> {
        let figures = &manifest.memory.as_ref()?.components;
        let stage = |name: &str| {
            figures
                .get(name)
                .filter(|s| !s.activations.is_empty())
                .cloned()
        };
        let (encoder, unet, decoder) = (
            stage(component::VAE_ENCODER)?,
            stage(component::UNET)?,
            stage(component::VAE_DECODER)?,
        );
        let has = |name: &str| manifest.components.contains_key(name);
        let extra_weights_bytes = saturating_sum([
            u64::from(has(component::VAE_ENCODER_TILED)) * encoder.weights_bytes,
            u64::from(has(component::VAE_DECODER_TILED)) * decoder.weights_bytes,
        ]);
        Some(CostModel {
            encoder,
            unet,
            decoder,
            extra_weights_bytes,
            stages_release_memory: false,
            tile_batch: 1,
            graph_files: None,
            on_device: [false; 3],
            fixed_tiles: false,
        })
    }

    /// The main graphs' weights (what loading puts on the device).
    pub fn weights_bytes(&self) -> u64 {
        self.weights(false)
    }

    fn weights(&self, staged_tiles: bool) -> u64 {
        let measured = [
            self.encoder.weights_bytes,
            self.unet.weights_bytes,
            self.decoder.weights_bytes,
        ];
        let Some(files) = self.graph_files else {
            let extra = if staged_tiles {
                self.extra_weights_bytes
            } else {
                0
            };
            return saturating_sum(measured.into_iter().chain([extra]));
        };
        // a stage on a device holds its file's bytes, on the CPU the measured figure
        let held = |stage: usize, file: u64| {
            if self.on_device[stage] {
                file
            } else {
                measured[stage]
            }
        };
        let main = [
            held(0, files.encoder),
            held(1, files.unet),
            held(2, files.decoder),
        ];
        // a tiled-VAE graph (where the bundle has one) holds what its plain
        // graph does, where it runs
        let tiled = [(0, files.encoder_tiled), (2, files.decoder_tiled)]
            .into_iter()
            .filter(|&(_, file)| staged_tiles && file > 0)
            .map(|(stage, file)| held(stage, file));
        saturating_sum(main.into_iter().chain(tiled))
    }
}

/// The sum, or `u64::MAX` where it would overflow: figures from a damaged
/// manifest make an estimate over any budget, never one wrapped round to a
/// small number.
fn saturating_sum(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0, u64::saturating_add)
}

/// A stage's activation bytes on `pixels`: the first measured point's
/// below it, linear between points, and beyond the last point its bytes
/// times `(pixels / last)^2`.
pub fn activations(stage: &StageMemory, pixels: u64) -> u64 {
    let points = &stage.activations;
    let Some(&(first_px, first_bytes)) = points.first() else {
        return 0;
    };
    if pixels <= first_px {
        return first_bytes;
    }
    for pair in points.windows(2) {
        let ((p0, b0), (p1, b1)) = (pair[0], pair[1]);
        if pixels <= p1 && p1 > p0 {
            let share = (pixels - p0) as f64 / (p1 - p0) as f64;
            return (b0 as f64 + share * (b1 as f64 - b0 as f64))
                .max(0.0)
                .ceil() as u64;
        }
    }
    let &(last_px, last_bytes) = points.last().expect("not empty");
    let growth = pixels as f64 / last_px.max(1) as f64;
    (last_bytes as f64 * growth * growth).ceil() as u64
}

/// Estimated peak bytes of one image of `width` x `height` (upscaled)
/// pixels with tiles of `tile_px` (0: untiled): every graph's weights, every
/// stage's activations on the largest piece it sees (the largest stage's
/// when stages release their memory after each run, else summed: an arena
/// that is not shrunk keeps each session's peak while the sessions live),
/// and the pipeline's whole-image buffers.
pub fn peak_bytes(
    model: &CostModel,
    tiling: TilingMode,
    width: u32,
    height: u32,
    tile_px: u32,
) -> u64 {
    let image = u64::from(width) * u64::from(height);
    let tile = |side: u32| -> u64 {
        let (w, h) = (width.min(side), height.min(side));
        u64::from(w) * u64::from(h)
    };
    let (encoder_px, unet_px, decoder_px) = match (tile_px, tiling) {
        (0, _) => (image, image, image),
        // the authors' latent tiling: 96-cell UNet tiles, the VAE untiled
        (_, TilingMode::Latent) => (image, tile(768), image),
        // every tile padded to the full square, even a single one
        (side, TilingMode::Staged) if model.fixed_tiles => {
            let square = u64::from(side) * u64::from(side);
            (square, square, square)
        }
        (side, TilingMode::Staged) => (tile(side), tile(side), tile(side)),
    };
    // a stage that runs in tiles holds `tile_batch` of them at once
    let batched = |stage_px: u64| {
        if stage_px < image {
            model.tile_batch.max(1)
        } else {
            1
        }
    };
    let each = [
        activations(&model.encoder, encoder_px).saturating_mul(batched(encoder_px)),
        activations(&model.unet, unet_px).saturating_mul(batched(unet_px)),
        activations(&model.decoder, decoder_px).saturating_mul(batched(decoder_px)),
    ];
    let stages = if model.stages_release_memory {
        each.into_iter().max().unwrap_or(0)
    } else {
        saturating_sum(each)
    };
    let staged_tiles = tile_px > 0 && tiling == TilingMode::Staged;
    saturating_sum([
        model.weights(staged_tiles),
        stages,
        PIPELINE_BYTES_PER_PIXEL.saturating_mul(image),
    ])
}

/// Where the budget came from (shown to the user).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    pub bytes: u64,
    pub source: String,
}

/// Why a tile size was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TileReason {
    /// `--tile N` given.
    Requested,
    /// The untiled estimate fits the budget.
    FitsUntiled,
    /// The largest tile whose estimate fits.
    LargestFittingTile,
    /// Even the smallest auto tile is over the budget (the run goes on).
    OverBudget,
    /// The bundle has no memory figures.
    NoMemoryFigures,
    /// `--tiling latent`: the authors' UNet tiles, whatever the budget.
    AuthorsLatentTiling,
}

/// The tile a run uses and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TileDecision {
    pub tile_px: u32,
    pub reason: TileReason,
    /// Estimated peak bytes with this tile (None without figures).
    pub estimate_bytes: Option<u64>,
    /// Estimated peak bytes untiled (None without figures).
    pub untiled_bytes: Option<u64>,
    pub budget: Option<Budget>,
}

impl TileDecision {
    /// `--tile N`: kept as given.
    pub fn requested(tile_px: u32) -> TileDecision {
        TileDecision {
            tile_px,
            reason: TileReason::Requested,
            estimate_bytes: None,
            untiled_bytes: None,
            budget: None,
        }
    }

    /// One line for the user, e.g. `untiled: estimated 1.2 GiB of a 20.1 GiB budget (...)`.
    pub fn describe(&self) -> String {
        let plan = match self.tile_px {
            0 => "untiled".to_string(),
            side => format!("{side} px tiles"),
        };
        let budget = self
            .budget
            .as_ref()
            .map(|b| format!("{} ({})", gib(b.bytes), b.source))
            .unwrap_or_default();
        let estimate = self.estimate_bytes.map(gib).unwrap_or_default();
        let untiled = self.untiled_bytes.map(gib).unwrap_or_default();
        match self.reason {
            TileReason::Requested => format!("{plan} (--tile {})", self.tile_px),
            TileReason::FitsUntiled => {
                format!("{plan}: estimated peak {estimate} fits the budget {budget}")
            }
            TileReason::AuthorsLatentTiling => format!(
                "the authors' latent tiling (--tiling latent): 96x96-cell UNet tiles where the \
                 latent is larger, the VAE whole; estimated peak {estimate} fits the budget {budget}"
            ),
            TileReason::LargestFittingTile => format!(
                "{plan}: untiled would need an estimated {untiled}, over the budget {budget}; \
                 the largest tile that fits needs {estimate}"
            ),
            TileReason::OverBudget if self.estimate_bytes == Some(u64::MAX) => format!(
                "{plan}: the bundle's memory figures add up to more than can be counted, \
                 over the budget {budget}: manifest.json looks damaged (measure again with \
                 `python -m export.memory --bundle DIR`, or give --tile)"
            ),
            TileReason::OverBudget => format!(
                "{plan}: even these need an estimated {estimate}, over the budget {budget}; \
                 the run may run out of memory (give --tile, or free memory)"
            ),
            TileReason::NoMemoryFigures => format!(
                "{plan}: the bundle's manifest.json has no memory figures \
                 (add them with `python -m export.memory --bundle DIR`)"
            ),
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// `--tile auto` for the largest image of a run (`width` x `height`
/// upscaled pixels): untiled when it fits `budget`, else the largest tile
/// (multiples of [`TILE_STEP_PX`], from the image's longer side down to
/// [`MIN_AUTO_TILE_PX`]; with fixed tiles from its shorter side itself in
/// steps of [`TILE_STEP_PX`], so that no tile is padded) that fits; the
/// smallest if none does.
pub fn choose_tile(
    model: Option<&CostModel>,
    tiling: TilingMode,
    width: u32,
    height: u32,
    budget: Budget,
) -> TileDecision {
    let Some(model) = model else {
        return TileDecision {
            tile_px: FALLBACK_TILE_PX,
            reason: TileReason::NoMemoryFigures,
            estimate_bytes: None,
            untiled_bytes: None,
            budget: Some(budget),
        };
    };
    let untiled = peak_bytes(model, tiling, width, height, 0);
    let decision = |tile_px, reason, estimate| TileDecision {
        tile_px,
        reason,
        estimate_bytes: Some(estimate),
        untiled_bytes: Some(untiled),
        budget: Some(budget.clone()),
    };
    if tiling == TilingMode::Latent {
        // The authors' tiling is part of what their code computes, not a
        // memory choice: their 96-cell UNet tiles whenever the latent
        // exceeds 96x96 (the plan leaves smaller latents whole), whatever
        // the budget. Untiled only with `--tile 0`.
        let estimate = peak_bytes(model, tiling, width, height, AUTHORS_LATENT_TILE_PX);
        let reason = if estimate <= budget.bytes {
            TileReason::AuthorsLatentTiling
        } else {
            TileReason::OverBudget
        };
        return decision(AUTHORS_LATENT_TILE_PX, reason, estimate);
    }
    if untiled <= budget.bytes {
        return decision(0, TileReason::FitsUntiled, untiled);
    }
    let mut side = if model.fixed_tiles {
        // a tile larger than the short side would be padded: work on the
        // padding, and the padded edge differs from an untiled run
        // (docs/measurements/nano-gpu-shape-padding-2026-11-28.md)
        width.min(height) / 8 * 8
    } else {
        width.max(height).div_ceil(TILE_STEP_PX) * TILE_STEP_PX
    }
    .max(MIN_AUTO_TILE_PX);
    loop {
        let estimate = peak_bytes(model, tiling, width, height, side);
        if estimate <= budget.bytes {
            return decision(side, TileReason::LargestFittingTile, estimate);
        }
        if side <= MIN_AUTO_TILE_PX {
            return decision(side, TileReason::OverBudget, estimate);
        }
        side = (side - TILE_STEP_PX).max(MIN_AUTO_TILE_PX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Activations linear in pixels through two points (256^2 and 512^2).
    fn stage(weights_mb: u64, fixed_mb: u64, bytes_per_pixel: u64) -> StageMemory {
        let point = |px: u64| (px, (fixed_mb << 20) + bytes_per_pixel * px);
        StageMemory {
            weights_bytes: weights_mb << 20,
            activations: vec![point(256 * 256), point(512 * 512)],
        }
    }

    fn model() -> CostModel {
        CostModel {
            encoder: stage(100, 10, 2000),
            unet: stage(1000, 20, 300),
            decoder: stage(200, 10, 4000),
            extra_weights_bytes: 0,
            stages_release_memory: false,
            tile_batch: 1,
            graph_files: None,
            on_device: [false; 3],
            fixed_tiles: false,
        }
    }

    fn budget(mib: u64) -> Budget {
        Budget {
            bytes: mib << 20,
            source: "test".into(),
        }
    }

    #[test]
    fn the_tiled_vae_graphs_weights_count_when_the_bundle_has_them() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny/manifest.json");
        let mut manifest: Manifest =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let with_tiled = CostModel::from_manifest(&manifest).expect("tiny has memory figures");
        assert_eq!(
            with_tiled.extra_weights_bytes,
            with_tiled.encoder.weights_bytes + with_tiled.decoder.weights_bytes
        );
        manifest.components.remove(component::VAE_ENCODER_TILED);
        manifest.components.remove(component::VAE_DECODER_TILED);
        assert_eq!(
            CostModel::from_manifest(&manifest)
                .unwrap()
                .extra_weights_bytes,
            0
        );
        manifest.memory = None;
        assert!(CostModel::from_manifest(&manifest).is_none());
    }

    #[test]
    fn the_tiled_vae_graphs_weights_count_only_for_staged_tiles() {
        let mut with_tiled = model();
        with_tiled.extra_weights_bytes = 300 << 20;
        let plain = model();
        // untiled and the authors' latent tiling never open the tiled-VAE graphs
        for (tiling, tile) in [(TilingMode::Staged, 0), (TilingMode::Latent, 512)] {
            assert_eq!(
                peak_bytes(&with_tiled, tiling, 2048, 2048, tile),
                peak_bytes(&plain, tiling, 2048, 2048, tile)
            );
        }
        assert_eq!(
            peak_bytes(&with_tiled, TilingMode::Staged, 2048, 2048, 512),
            peak_bytes(&plain, TilingMode::Staged, 2048, 2048, 512) + (300 << 20)
        );
    }

    #[test]
    fn stages_on_a_gpu_count_their_graph_files_as_weights() {
        let mib = |n: u64| n << 20;
        let mut m = model(); // measured weights 100 + 1000 + 200 MiB
        let cpu_untiled = peak_bytes(&m, TilingMode::Staged, 2048, 2048, 0);
        m.graph_files = Some(GraphFileBytes {
            encoder: mib(40),
            unet: mib(300),
            decoder: mib(60),
            encoder_tiled: mib(41),
            decoder_tiled: 0, // no tiled decoder in this bundle
        });
        // on the CPU the measured figures hold, files known or not
        assert_eq!(m.weights_bytes(), mib(1300));
        assert_eq!(
            peak_bytes(&m, TilingMode::Staged, 2048, 2048, 0),
            cpu_untiled
        );
        assert_eq!(m.weights(true), mib(1300 + 100));
        m.on_device = [true; 3];
        assert_eq!(m.weights_bytes(), mib(400));
        assert_eq!(m.weights(true), mib(400 + 41));
        assert_eq!(
            peak_bytes(&m, TilingMode::Staged, 2048, 2048, 0),
            cpu_untiled - mib(900)
        );
        // only the UNet on the GPU
        m.on_device = [false, true, false];
        assert_eq!(m.weights_bytes(), mib(100 + 300 + 200));
        assert_eq!(m.weights(true), mib(600 + 100));
        // without file sizes the measured figures are all there is
        m.graph_files = None;
        m.on_device = [true; 3];
        assert_eq!(m.weights_bytes(), mib(1300));
    }

    #[test]
    fn figures_too_large_to_add_make_an_estimate_over_any_budget() {
        // a damaged manifest: the sum must not wrap round to a small number
        let mut m = model();
        m.unet.weights_bytes = u64::MAX;
        m.decoder.weights_bytes = u64::MAX;
        m.extra_weights_bytes = u64::MAX;
        for tile in [0, 512] {
            assert_eq!(
                peak_bytes(&m, TilingMode::Staged, 1024, 1024, tile),
                u64::MAX
            );
        }
        let decision = choose_tile(Some(&m), TilingMode::Staged, 1024, 1024, budget(64 << 10));
        assert_eq!(decision.reason, TileReason::OverBudget);
        assert!(decision.describe().contains("manifest.json looks damaged"));
        let mut m = model();
        m.encoder.activations = vec![(100, u64::MAX - 1), (200, u64::MAX)];
        m.tile_batch = 8;
        assert_eq!(
            peak_bytes(&m, TilingMode::Staged, 4096, 4096, 512),
            u64::MAX
        );
        m.graph_files = Some(GraphFileBytes {
            unet: u64::MAX,
            ..GraphFileBytes::default()
        });
        m.on_device = [true; 3];
        assert_eq!(m.weights_bytes(), u64::MAX);
    }

    #[test]
    fn activations_interpolate_between_points_and_grow_quadratically_beyond() {
        let stage = StageMemory {
            weights_bytes: 0,
            activations: vec![(100, 1000), (200, 3000), (400, 5000)],
        };
        assert_eq!(activations(&stage, 10), 1000);
        assert_eq!(activations(&stage, 100), 1000);
        assert_eq!(activations(&stage, 150), 2000);
        assert_eq!(activations(&stage, 300), 4000);
        assert_eq!(activations(&stage, 400), 5000);
        assert_eq!(activations(&stage, 800), 20000);
    }

    #[test]
    fn peak_counts_weights_every_stage_and_the_whole_image_buffers() {
        let m = model();
        let (image, tile) = (1024u64 * 1024, 512u64 * 512);
        let stages = |px: u64| {
            activations(&m.encoder, px) + activations(&m.unet, px) + activations(&m.decoder, px)
        };
        let want = (1300u64 << 20) + stages(image) + PIPELINE_BYTES_PER_PIXEL * image;
        assert_eq!(peak_bytes(&m, TilingMode::Staged, 1024, 1024, 0), want);
        // tiles bound the activations, not the whole-image buffers
        let tiled = (1300u64 << 20) + stages(tile) + PIPELINE_BYTES_PER_PIXEL * image;
        assert_eq!(
            tiled,
            (1340u64 << 20) + 6300 * tile + PIPELINE_BYTES_PER_PIXEL * image
        );
        assert_eq!(peak_bytes(&m, TilingMode::Staged, 1024, 1024, 512), tiled);
        // a tile larger than the image costs what the image does
        assert_eq!(
            peak_bytes(&m, TilingMode::Staged, 300, 200, 512),
            peak_bytes(&m, TilingMode::Staged, 300, 200, 0)
        );
    }

    #[test]
    fn fixed_tiles_cost_their_whole_square_even_where_the_image_is_smaller() {
        let mut m = model();
        let stages = |m: &CostModel, px: u64| {
            activations(&m.encoder, px) + activations(&m.unet, px) + activations(&m.decoder, px)
        };
        // 1024x200 in 512 px tiles: balanced tiles are 512x200, fixed ones
        // are padded to 512x512
        let balanced = peak_bytes(&m, TilingMode::Staged, 1024, 200, 512);
        m.fixed_tiles = true;
        let fixed = peak_bytes(&m, TilingMode::Staged, 1024, 200, 512);
        assert_eq!(
            fixed - balanced,
            stages(&m, 512 * 512) - stages(&m, 512 * 200)
        );
        // one tile larger than the whole image: padded, not the image's cost
        assert_eq!(
            peak_bytes(&m, TilingMode::Staged, 300, 200, 512)
                - peak_bytes(&m, TilingMode::Staged, 300, 200, 0),
            stages(&m, 512 * 512) - stages(&m, 300 * 200)
        );
        // tiles inside the image: the same either way
        m.fixed_tiles = false;
        let inside = peak_bytes(&m, TilingMode::Staged, 2048, 1024, 512);
        m.fixed_tiles = true;
        assert_eq!(peak_bytes(&m, TilingMode::Staged, 2048, 1024, 512), inside);
    }

    #[test]
    fn auto_with_fixed_tiles_never_picks_a_tile_past_the_short_side() {
        // a wide strip that does not fit untiled; balanced 1024 px tiles
        // (1024x600) just fit
        let (width, height) = (8192, 600);
        let mut m = model();
        let b = Budget {
            bytes: peak_bytes(&m, TilingMode::Staged, width, height, 1024),
            source: "test".into(),
        };
        assert!(peak_bytes(&m, TilingMode::Staged, width, height, 0) > b.bytes);
        let balanced = choose_tile(Some(&m), TilingMode::Staged, width, height, b.clone());
        assert_eq!(balanced.tile_px, 1024, "{balanced:?}");
        m.fixed_tiles = true;
        let fixed = choose_tile(Some(&m), TilingMode::Staged, width, height, b.clone());
        // the short side itself: one row of tiles, none padded
        assert_eq!(
            (fixed.tile_px, fixed.reason),
            (600, TileReason::LargestFittingTile)
        );
        // a budget under that: one step down
        let tighter = Budget {
            bytes: peak_bytes(&m, TilingMode::Staged, width, height, 600) - 1,
            source: "test".into(),
        };
        let fixed = choose_tile(Some(&m), TilingMode::Staged, width, height, tighter);
        assert_eq!(fixed.tile_px, 600 - TILE_STEP_PX);
        // below the smallest auto tile, the smallest it is (and padded)
        let strip = choose_tile(Some(&m), TilingMode::Staged, 8192, 100, budget(1 << 10));
        assert_eq!(strip.tile_px, MIN_AUTO_TILE_PX);
    }

    #[test]
    fn stages_that_release_their_memory_count_the_largest_stage_only() {
        let mut m = model();
        m.stages_release_memory = true;
        let image = 1024u64 * 1024;
        let largest = activations(&m.encoder, image)
            .max(activations(&m.unet, image))
            .max(activations(&m.decoder, image));
        assert_eq!(largest, activations(&m.decoder, image));
        let want = (1300u64 << 20) + largest + PIPELINE_BYTES_PER_PIXEL * image;
        assert_eq!(peak_bytes(&m, TilingMode::Staged, 1024, 1024, 0), want);
        let held = model();
        assert!(peak_bytes(&held, TilingMode::Staged, 1024, 1024, 0) > want);
    }

    #[test]
    fn a_tile_batch_multiplies_the_activations_of_tiled_stages_only() {
        let mut m = model();
        let tiled = peak_bytes(&m, TilingMode::Staged, 1024, 1024, 512);
        let untiled = peak_bytes(&m, TilingMode::Staged, 1024, 1024, 0);
        m.tile_batch = 4;
        let tile = 512u64 * 512;
        let stages = activations(&m.encoder, tile)
            + activations(&m.unet, tile)
            + activations(&m.decoder, tile);
        assert_eq!(
            peak_bytes(&m, TilingMode::Staged, 1024, 1024, 512),
            tiled + 3 * stages
        );
        // untiled, a batch changes nothing
        assert_eq!(peak_bytes(&m, TilingMode::Staged, 1024, 1024, 0), untiled);
    }

    #[test]
    fn latent_tiling_leaves_the_vae_untiled() {
        let m = model();
        let (image, unet_tile) = (2048u64 * 2048, 768u64 * 768);
        let want = (1300u64 << 20)
            + activations(&m.encoder, image)
            + activations(&m.unet, unet_tile)
            + activations(&m.decoder, image)
            + PIPELINE_BYTES_PER_PIXEL * image;
        assert_eq!(peak_bytes(&m, TilingMode::Latent, 2048, 2048, 768), want);
    }

    #[test]
    fn an_image_that_fits_runs_untiled() {
        let m = model();
        let decision = choose_tile(Some(&m), TilingMode::Staged, 768, 512, budget(8 << 10));
        assert_eq!(decision.tile_px, 0);
        assert_eq!(decision.reason, TileReason::FitsUntiled);
        assert!(decision.describe().starts_with("untiled: estimated peak"));
    }

    #[test]
    fn the_largest_fitting_tile_is_chosen_and_one_step_larger_does_not_fit() {
        let m = model();
        let b = budget(3 << 10);
        let decision = choose_tile(Some(&m), TilingMode::Staged, 4096, 4096, b.clone());
        assert_eq!(decision.reason, TileReason::LargestFittingTile);
        let side = decision.tile_px;
        assert!(side.is_multiple_of(TILE_STEP_PX) && (MIN_AUTO_TILE_PX..4096).contains(&side));
        assert!(peak_bytes(&m, TilingMode::Staged, 4096, 4096, side) <= b.bytes);
        assert!(peak_bytes(&m, TilingMode::Staged, 4096, 4096, side + TILE_STEP_PX) > b.bytes);
        assert_eq!(
            decision.estimate_bytes,
            Some(peak_bytes(&m, TilingMode::Staged, 4096, 4096, side))
        );
    }

    #[test]
    fn over_budget_takes_the_smallest_tile_and_says_so() {
        let m = model();
        let decision = choose_tile(Some(&m), TilingMode::Staged, 4096, 4096, budget(100));
        assert_eq!(
            (decision.tile_px, decision.reason),
            (MIN_AUTO_TILE_PX, TileReason::OverBudget)
        );
        assert!(decision.describe().contains("over the budget"));
    }

    #[test]
    fn without_figures_the_former_default_is_kept() {
        let decision = choose_tile(None, TilingMode::Staged, 768, 512, budget(1 << 20));
        assert_eq!(
            (decision.tile_px, decision.reason),
            (FALLBACK_TILE_PX, TileReason::NoMemoryFigures)
        );
        assert!(decision.describe().contains("python -m export.memory"));
    }

    #[test]
    fn latent_mode_always_uses_the_authors_tiles() {
        // their tiling is part of their output, not a memory choice: an
        // image that fits untiled still gets it (found against the authors'
        // own code, scripts/authors_parity.py: auto had run such an image
        // untiled, up to 255 levels away from theirs on random weights)
        let m = model();
        for (side, budget_mib) in [(8192, 4 << 10), (896, 64 << 10), (512, 64 << 10)] {
            let decision =
                choose_tile(Some(&m), TilingMode::Latent, side, side, budget(budget_mib));
            assert_eq!(decision.tile_px, AUTHORS_LATENT_TILE_PX, "{side} px");
        }
        let fits = choose_tile(Some(&m), TilingMode::Latent, 896, 832, budget(64 << 10));
        assert_eq!(fits.reason, TileReason::AuthorsLatentTiling);
        assert!(fits.describe().contains("the authors' latent tiling"));
        let over = choose_tile(Some(&m), TilingMode::Latent, 8192, 8192, budget(1));
        assert_eq!(over.reason, TileReason::OverBudget);
    }
}
