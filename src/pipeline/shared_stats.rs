//! GroupNorm statistics shared by every tile of one image: the optional
//! `vae_encoder_tiled` / `vae_decoder_tiled` graphs run once on a
//! subsample of the whole image for the statistics, then on each tile with
//! them, so tiles are normalized alike.

use std::time::Instant;

use ndarray::{Array3, ArrayView3};

use super::stages::{millis_since, Stage, StageTimings};
use super::Pipeline;
use crate::bundle::check_graph_ports;
use crate::bundle::port;
use crate::bundle::{Bundle, MAX_GROUP_NORM_DIM};
use crate::error::{Error, Result};
use crate::runtime::{InputTensor, OutputTensor};
use crate::tiling::TilePlan;

impl Pipeline {
    /// GroupNorm statistics for a tiled encode: the tiled encoder graph run
    /// with its own statistics on a nearest-neighbour subsample of the whole
    /// image that fits a `sample_tile` square (latent cells; at least the
    /// plan's tile). `None` for a single tile (the main graph runs, exactly
    /// as untiled) or a bundle without the graph (per-tile statistics, as
    /// before).
    pub(super) fn encoder_shared_stats(
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
                port::IMAGE,
                InputTensor::Float {
                    shape: &shape,
                    data: sample.as_slice().expect("standard layout"),
                },
            ),
            (
                port::TIMESTEP,
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
    pub(super) fn decoder_shared_stats(
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
            port::LATENT,
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
pub(super) struct TiledStage {
    stage: Stage,
    layers: usize,
    groups: usize,
}

/// GroupNorm statistics shared by every tile of one image, `[layers, groups]`.
pub(super) struct SharedStats {
    mean: Vec<f32>,
    var: Vec<f32>,
}

const TILED_STATS_INPUTS: [&str; 3] = [
    port::GROUP_NORM_MEAN,
    port::GROUP_NORM_VAR,
    port::GROUP_NORM_FIXED,
];
const TILED_STATS_OUTPUTS: [&str; 2] = [port::GROUP_NORM_MEAN_OUT, port::GROUP_NORM_VAR_OUT];

impl SharedStats {
    /// Statistics `[layers * groups]` each, row-major.
    pub(super) fn new(mean: Vec<f32>, var: Vec<f32>) -> SharedStats {
        SharedStats { mean, var }
    }

    /// Whether these are exactly `mean` and `var`.
    pub(super) fn equals(&self, mean: &[f32], var: &[f32]) -> bool {
        self.mean == mean && self.var == var
    }
}

impl TiledStage {
    /// The graph's GroupNorm layers.
    pub(super) fn layers(&self) -> usize {
        self.layers
    }

    /// Where the graph runs.
    pub(super) fn provider(&self) -> crate::runtime::Provider {
        self.stage.provider
    }

    /// Runs the graph on the main graph's `inputs` with the statistics
    /// `stats` (None: each GroupNorm's own).
    pub(super) fn run<const N: usize>(
        &mut self,
        inputs: [(&str, InputTensor<'_>); N],
        stats: Option<&SharedStats>,
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let mut outputs = self.run_group(vec![inputs.to_vec()], stats, output_names)?;
        Ok(outputs.pop().expect("one run"))
    }

    /// [`TiledStage::run`] once per entry of `runs` (the tiles of one
    /// group), through [`Graph::run_group`].
    pub(super) fn run_group(
        &mut self,
        runs: Vec<Vec<(&str, InputTensor<'_>)>>,
        stats: Option<&SharedStats>,
        output_names: &[&str],
    ) -> Result<Vec<Vec<OutputTensor>>> {
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
        let stats_inputs = [
            (
                TILED_STATS_INPUTS[0],
                InputTensor::Float {
                    shape: &shape,
                    data: mean,
                },
            ),
            (
                TILED_STATS_INPUTS[1],
                InputTensor::Float {
                    shape: &shape,
                    data: var,
                },
            ),
            (
                TILED_STATS_INPUTS[2],
                InputTensor::Float {
                    shape: &[1],
                    data: fixed,
                },
            ),
        ];
        let runs: Vec<Vec<(&str, InputTensor<'_>)>> = runs
            .into_iter()
            .map(|mut inputs| {
                inputs.extend_from_slice(&stats_inputs);
                inputs
            })
            .collect();
        self.stage.session.run_group(&runs, output_names)
    }

    /// The statistics each GroupNorm computes on `inputs` (own statistics).
    pub(super) fn own_stats<const N: usize>(
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
pub(super) fn open_tiled_stage(
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
                "{component}: input \"group_norm_mean\" must have a fixed shape [layers, groups], \
                 each 1..={MAX_GROUP_NORM_DIM}"
            ),
        )
    };
    let (layers, groups) = match dims.as_deref() {
        Some(&[layers, groups])
            if (1..=MAX_GROUP_NORM_DIM).contains(&layers)
                && (1..=MAX_GROUP_NORM_DIM).contains(&groups) =>
        {
            (layers, groups)
        }
        _ => return Err(shape_error()),
    };
    let stage = open(component)?;
    check_graph_ports(
        bundle,
        component,
        stage.session.inputs(),
        stage.session.outputs(),
    )?;
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
}
