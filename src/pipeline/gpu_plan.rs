//! What a run will send each stage, known before its sessions open:
//! TensorRT's optimisation profiles (min, opt, max shapes) and the engine
//! cache folder they are built into. Pure functions of the run's tile
//! setting, tiling mode, largest image and prompt. Here rather than in
//! `runtime/`: they are made of the pipeline's tiling modes and the
//! bundle's port names, which `runtime/` does not know.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::TilingMode;
use crate::bundle::{component, port, ComponentSpec};
use crate::tiling::LATENT_TILE;

/// Smallest image side a profile admits, in pixels (8 latent cells).
pub const MIN_SIDE_PX: usize = 64;

/// Sides (pixels, multiples of 8) one stage will see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideRange {
    pub min: usize,
    /// The side engines are tuned for.
    pub opt: usize,
    pub max: usize,
}

impl SideRange {
    fn fixed(side: usize) -> Self {
        SideRange {
            min: side,
            opt: side,
            max: side,
        }
    }

    fn up_to(max: usize, opt: usize) -> Self {
        let max = max.max(MIN_SIDE_PX);
        SideRange {
            min: MIN_SIDE_PX,
            opt: opt.clamp(MIN_SIDE_PX, max),
            max,
        }
    }
}

/// The side ranges of the three stages for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSides {
    pub encoder: SideRange,
    pub unet: SideRange,
    pub decoder: SideRange,
}

/// Rounds up to a multiple of 8.
fn ceil8(value: usize) -> usize {
    value.div_ceil(8) * 8
}

/// What each stage will see. `tile_px` 0 is untiled; `largest_side_px` is
/// the longest side of the largest model input of the run (after the
/// upscale and the minimum-size rule). `fixed_tiles`: every staged tile
/// has exactly the tile's shape (GPU providers pad edge tiles and small
/// images), so the profile is one shape.
pub fn stage_sides(
    tile_px: usize,
    tiling: TilingMode,
    largest_side_px: usize,
    fixed_tiles: bool,
) -> StageSides {
    let largest = ceil8(largest_side_px.max(MIN_SIDE_PX));
    let whole = SideRange::up_to(largest, largest.min(512));
    match (tile_px, tiling) {
        (0, _) => StageSides {
            encoder: whole,
            unet: whole,
            decoder: whole,
        },
        (_, TilingMode::Latent) => {
            // The authors' UNet tiles: 96 latent cells, or the whole latent below that.
            let unet_max = largest.min(LATENT_TILE * 8);
            StageSides {
                encoder: whole,
                unet: SideRange::up_to(unet_max, unet_max),
                decoder: whole,
            }
        }
        (tile, TilingMode::Staged) => {
            let tiles = if fixed_tiles {
                SideRange::fixed(tile)
            } else {
                SideRange::up_to(tile.min(largest), tile.min(largest))
            };
            StageSides {
                encoder: tiles,
                unet: tiles,
                decoder: tiles,
            }
        }
    }
}

/// TensorRT's `trt_profile_{min,opt,max}_shapes` for one graph: every
/// input with its shape at the range's min, opt and max side, for runs of
/// up to `batch` tiles (`--tile-batch`): the batch axis from 1 (min: a
/// group's last, smaller batch) to `batch` (opt and max).
pub fn profile_shapes(
    component_name: &str,
    sides: SideRange,
    latent_channels: usize,
    prompt_shape: [usize; 3],
    batch: usize,
) -> (String, String, String) {
    let shape = |side_px: usize, n: usize| {
        let cells = side_px / 8;
        match component_name {
            component::VAE_ENCODER | component::VAE_ENCODER_TILED => format!(
                "{}:{n}x3x{side_px}x{side_px},{}:{n}",
                port::IMAGE,
                port::TIMESTEP
            ),
            component::UNET => format!(
                "{}:{n}x{latent_channels}x{cells}x{cells},{}:{n},{}:{}x{}x{}",
                port::LATENT,
                port::TIMESTEP,
                port::ENCODER_HIDDEN_STATES,
                prompt_shape[0] * n,
                prompt_shape[1],
                prompt_shape[2]
            ),
            _ => format!("{}:{n}x{latent_channels}x{cells}x{cells}", port::LATENT),
        }
    };
    let batch = batch.max(1);
    (
        shape(sides.min, 1),
        shape(sides.opt, batch),
        shape(sides.max, batch),
    )
}

/// The engine and timing cache folder of one graph under `cache_root`
/// (`<cache>/trt/`): named by the component, the sha256 of its files (as
/// the manifest lists them: re-exported weights get a new folder) and a
/// hash of the profile and the TensorRT settings. TensorRT's own cache
/// names hash only the file name and ports, so the folder is what keeps
/// stale engines from being reused.
pub fn engine_cache_dir(
    cache_root: &Path,
    component_name: &str,
    spec: &ComponentSpec,
    profile: &(String, String, String),
    fp16: bool,
) -> PathBuf {
    let mut weights = Sha256::new();
    weights.update(spec.sha256.as_bytes());
    for file in &spec.external_data {
        weights.update(b"\0");
        weights.update(file.sha256.as_bytes());
    }
    let mut settings = Sha256::new();
    for part in [&profile.0, &profile.1, &profile.2] {
        settings.update(part.as_bytes());
        settings.update(b"\0");
    }
    settings.update(if fp16 { b"fp16" } else { b"fp32" });
    let hex = |digest: &[u8]| {
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    cache_root.join(format!(
        "{component_name}-{}-{}",
        hex(&weights.finalize()),
        hex(&settings.finalize())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_tiles_give_one_shape_per_stage() {
        let sides = stage_sides(512, TilingMode::Staged, 2048, true);
        for range in [sides.encoder, sides.unet, sides.decoder] {
            assert_eq!(range, SideRange::fixed(512));
        }
    }

    #[test]
    fn balanced_tiles_range_up_to_the_tile() {
        let sides = stage_sides(512, TilingMode::Staged, 2048, false);
        assert_eq!(
            sides.unet,
            SideRange {
                min: 64,
                opt: 512,
                max: 512
            }
        );
        // an image smaller than the tile never sends a full tile
        let small = stage_sides(512, TilingMode::Staged, 200, false);
        assert_eq!(
            small.encoder,
            SideRange {
                min: 64,
                opt: 200,
                max: 200
            }
        );
    }

    #[test]
    fn untiled_runs_cover_the_largest_image() {
        let sides = stage_sides(0, TilingMode::Staged, 1001, true);
        assert_eq!(
            sides.encoder,
            SideRange {
                min: 64,
                opt: 512,
                max: 1008
            }
        );
        assert_eq!(sides.unet, sides.encoder);
        let tiny = stage_sides(0, TilingMode::Staged, 16, true);
        assert_eq!(tiny.decoder, SideRange::fixed(64));
    }

    #[test]
    fn latent_tiling_sends_whole_vae_passes_and_768_px_unet_tiles() {
        let sides = stage_sides(512, TilingMode::Latent, 2048, true);
        assert_eq!(
            sides.encoder,
            SideRange {
                min: 64,
                opt: 512,
                max: 2048
            }
        );
        assert_eq!(sides.decoder, sides.encoder);
        assert_eq!(
            sides.unet,
            SideRange {
                min: 64,
                opt: 768,
                max: 768
            }
        );
        let small = stage_sides(512, TilingMode::Latent, 640, true);
        assert_eq!(
            small.unet,
            SideRange {
                min: 64,
                opt: 640,
                max: 640
            }
        );
    }

    #[test]
    fn profiles_name_every_input_with_the_real_prompt_length() {
        let (min, opt, max) = profile_shapes(
            component::UNET,
            SideRange {
                min: 64,
                opt: 512,
                max: 768,
            },
            4,
            [1, 12, 1024],
            1,
        );
        assert_eq!(
            min,
            "latent:1x4x8x8,timestep:1,encoder_hidden_states:1x12x1024"
        );
        assert_eq!(
            opt,
            "latent:1x4x64x64,timestep:1,encoder_hidden_states:1x12x1024"
        );
        assert_eq!(
            max,
            "latent:1x4x96x96,timestep:1,encoder_hidden_states:1x12x1024"
        );
        let (min, _, _) = profile_shapes(
            component::VAE_ENCODER,
            SideRange::fixed(512),
            4,
            [1, 77, 1024],
            1,
        );
        assert_eq!(min, "image:1x3x512x512,timestep:1");
        let (_, _, max) = profile_shapes(
            component::VAE_DECODER,
            SideRange::fixed(512),
            4,
            [1, 77, 1024],
            1,
        );
        assert_eq!(max, "latent:1x4x64x64");
    }

    #[test]
    fn a_tile_batch_widens_the_batch_axis_from_one_to_the_batch() {
        let (min, opt, max) =
            profile_shapes(component::UNET, SideRange::fixed(512), 4, [1, 77, 1024], 4);
        assert_eq!(
            min,
            "latent:1x4x64x64,timestep:1,encoder_hidden_states:1x77x1024"
        );
        assert_eq!(
            opt,
            "latent:4x4x64x64,timestep:4,encoder_hidden_states:4x77x1024"
        );
        assert_eq!(max, opt);
        let (min, _, max) = profile_shapes(
            component::VAE_ENCODER,
            SideRange::fixed(512),
            4,
            [1, 77, 1024],
            2,
        );
        assert_eq!(min, "image:1x3x512x512,timestep:1");
        assert_eq!(max, "image:2x3x512x512,timestep:2");
    }

    fn spec(sha: &str, data_sha: Option<&str>) -> ComponentSpec {
        let mut value = serde_json::json!({
            "file": "unet/model.onnx", "sha256": sha, "inputs": [], "outputs": []
        });
        if let Some(data) = data_sha {
            value["external_data"] =
                serde_json::json!([{"file": "unet/model.onnx.data", "sha256": data}]);
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn cache_folders_change_with_weights_shapes_and_precision() {
        let root = Path::new("/cache/trt");
        let profile = profile_shapes(component::UNET, SideRange::fixed(512), 4, [1, 77, 1024], 1);
        let base = engine_cache_dir(root, "unet", &spec("aa", Some("bb")), &profile, true);
        assert!(base.starts_with(root));
        assert!(base
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("unet-"));
        assert_eq!(
            base,
            engine_cache_dir(root, "unet", &spec("aa", Some("bb")), &profile, true)
        );
        let others = [
            engine_cache_dir(root, "unet", &spec("ab", Some("bb")), &profile, true),
            engine_cache_dir(root, "unet", &spec("aa", Some("bc")), &profile, true),
            engine_cache_dir(root, "unet", &spec("aa", None), &profile, true),
            engine_cache_dir(root, "unet", &spec("aa", Some("bb")), &profile, false),
        ];
        for other in others {
            assert_ne!(base, other);
        }
        // each of the profile's three shapes alone changes the folder: an
        // engine built for smaller images is never picked for larger ones
        let other_shapes =
            profile_shapes(component::UNET, SideRange::fixed(768), 4, [1, 77, 1024], 1);
        let (min, opt, max) = profile.clone();
        let one_changed = [
            (other_shapes.0, opt.clone(), max.clone()),
            (min.clone(), other_shapes.1, max),
            (min, opt, other_shapes.2),
        ];
        for changed in one_changed {
            let folder = engine_cache_dir(root, "unet", &spec("aa", Some("bb")), &changed, true);
            assert_ne!(base, folder, "{changed:?}");
        }
    }
}
