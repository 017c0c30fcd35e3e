//! Graphs opened for one shape. When every call a run makes to a main graph
//! (encoder, UNet, decoder) has the same shape (fixed GPU tiles, or one
//! image size untiled), the graph's named dimensions are pinned at load
//! (ONNX Runtime's free-dimension overrides). ONNX Runtime then folds the
//! graph's shape arithmetic (Shape, Gather, Unsqueeze, Concat), which on a
//! GPU provider otherwise runs on the CPU between the kernels: the SD-size
//! UNet has 3465 nodes after basic optimization, 2130 pinned to 512x512
//! (docs/measurements/static-shapes-node-counts-2026-11-28.txt). On the
//! CPU the pinned graphs were not measurably faster (nano, sd21 UNet at
//! 256x256, within run-to-run noise), so `auto` leaves them free there.
//! Pure functions here; `Pipeline` applies them and reopens a graph
//! without them if a run brings another shape.

use crate::bundle::{ComponentSpec, NAMED_DIMS};
use crate::pipeline::TilingMode;
use crate::runtime::Provider;

/// When graphs are opened for one shape (`--static-shapes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StaticShapes {
    /// On the CUDA provider, when the run's shape is known. Not TensorRT:
    /// it builds its engines for the profile's shapes itself, and how its
    /// profiles meet pinned dimensions has not been run.
    #[default]
    Auto,
    /// On every local provider, when the run's shape is known (measurements, tests).
    On,
    /// Never.
    Off,
}

impl StaticShapes {
    /// Whether a graph on `provider` is opened for one shape when that
    /// shape is known.
    pub fn applies(self, provider: Provider) -> bool {
        match self {
            StaticShapes::Auto => provider == Provider::Cuda,
            StaticShapes::On => true,
            StaticShapes::Off => false,
        }
    }
}

/// The one shape (height, width in pixels) every main-graph call of a run
/// has, if there is one: untiled, the image's (`exact_px`, when every image
/// of the run has that size); staged tiles of one fixed shape, the tile
/// (edge tiles and small images are padded up to it). Balanced tiles and
/// the authors' latent tiling change shape with the image: None.
pub fn network_shape(
    tile_px: u32,
    tiling: TilingMode,
    fixed_tiles: bool,
    exact_px: Option<(u32, u32)>,
) -> Option<(usize, usize)> {
    match (tile_px, tiling) {
        (0, _) => exact_px.map(|(h, w)| (h as usize, w as usize)),
        (tile, TilingMode::Staged) if fixed_tiles => Some((tile as usize, tile as usize)),
        _ => None,
    }
}

/// ONNX Runtime dimension overrides that pin `spec`'s inputs to
/// `shape_px` (height, width in pixels; latent dimensions are an eighth):
/// each named dimension its inputs use, once. `batch` None leaves the
/// batch axis free (`--tile-batch` groups end with a smaller batch).
pub fn dimension_overrides(
    spec: &ComponentSpec,
    shape_px: (usize, usize),
    batch: Option<usize>,
) -> Vec<(String, i64)> {
    let used = |name: &str| {
        spec.inputs
            .iter()
            .flat_map(|port| port.shape.iter())
            .any(|dim| dim.as_str() == Some(name))
    };
    let (height, width) = shape_px;
    NAMED_DIMS
        .iter()
        .filter(|name| used(name))
        .filter_map(|&name| {
            let value = match name {
                "batch" => batch?,
                "height" => height,
                "width" => width,
                "latent_height" => height / 8,
                "latent_width" => width / 8,
                _ => return None,
            };
            Some((name.to_string(), value as i64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(inputs: serde_json::Value) -> ComponentSpec {
        serde_json::from_value(serde_json::json!({
            "file": "g/model.onnx", "sha256": "aa", "inputs": inputs, "outputs": []
        }))
        .unwrap()
    }

    fn port(name: &str, shape: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"name": name, "dtype": "float32", "shape": shape})
    }

    #[test]
    fn one_shape_only_when_every_call_has_it() {
        // untiled: the run's one image size, else nothing
        assert_eq!(
            network_shape(0, TilingMode::Staged, true, Some((512, 768))),
            Some((512, 768))
        );
        assert_eq!(network_shape(0, TilingMode::Staged, true, None), None);
        // fixed tiles: the tile, whatever the image
        assert_eq!(
            network_shape(256, TilingMode::Staged, true, Some((1000, 64))),
            Some((256, 256))
        );
        assert_eq!(
            network_shape(256, TilingMode::Staged, true, None),
            Some((256, 256))
        );
        // balanced tiles and the authors' latent tiling vary with the image
        assert_eq!(
            network_shape(256, TilingMode::Staged, false, Some((256, 256))),
            None
        );
        assert_eq!(
            network_shape(512, TilingMode::Latent, true, Some((512, 512))),
            None
        );
    }

    #[test]
    fn overrides_pin_the_named_dimensions_the_inputs_use() {
        let unet = spec(serde_json::json!([
            port(
                "latent",
                serde_json::json!(["batch", 4, "latent_height", "latent_width"])
            ),
            port("timestep", serde_json::json!(["batch"])),
            port(
                "encoder_hidden_states",
                serde_json::json!(["batch", 77, 1024])
            ),
        ]));
        assert_eq!(
            dimension_overrides(&unet, (512, 768), Some(1)),
            vec![
                ("batch".to_string(), 1),
                ("latent_height".to_string(), 64),
                ("latent_width".to_string(), 96),
            ]
        );
        let encoder = spec(serde_json::json!([
            port("image", serde_json::json!(["batch", 3, "height", "width"])),
            port("timestep", serde_json::json!(["batch"])),
        ]));
        assert_eq!(
            dimension_overrides(&encoder, (256, 128), None),
            vec![("height".to_string(), 256), ("width".to_string(), 128)],
            "a free batch axis stays free"
        );
        let fixed = spec(serde_json::json!([port("x", serde_json::json!([1, 3]))]));
        assert!(dimension_overrides(&fixed, (64, 64), Some(1)).is_empty());
    }

    #[test]
    fn auto_applies_on_cuda_only() {
        assert!(StaticShapes::Auto.applies(Provider::Cuda));
        assert!(!StaticShapes::Auto.applies(Provider::Cpu));
        assert!(!StaticShapes::Auto.applies(Provider::TensorRt));
        assert!(StaticShapes::On.applies(Provider::Cpu));
        assert!(StaticShapes::On.applies(Provider::TensorRt));
        assert!(!StaticShapes::Off.applies(Provider::Cuda));
    }
}
