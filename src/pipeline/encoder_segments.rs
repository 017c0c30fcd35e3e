//! The authors' tiled encoder (`--tiling latent`, images longer than
//! 1088 px) in one pass, with the bundle's encoder segments
//! (`vae_encoder_segments`, export/encoder_segments.py): the tiled encoder
//! graph cut at its GroupNorms, in the order they run.
//!
//! Their hook runs every tile up to a GroupNorm, pools what it sees over
//! the tiles, normalizes each tile with the pooled statistics and goes on.
//! The segments do exactly that: segment s runs on every tile (its
//! activations carried from the segments before, held here per tile) and
//! gives what its GroupNorm observed; the pooled statistics fill that
//! layer's row for the segments after; the last gives the latent moments.
//! One pass of the encoder instead of one per layer
//! ([`super::authors_encoder`]), at the price of holding every tile's
//! activations at once: when they would not fit in memory, the caller
//! falls back to the passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::authors_encoder_tiles::pool_stats;
use crate::bundle::{port, segment_port, Bundle};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::runtime::{InputTensor, OutputTensor, Provider, Runtime, SessionOptions};

use super::options::PipelineConfig;

/// One segment, opened.
struct SegmentStage {
    graph: Box<dyn Graph>,
    /// The statistics row its GroupNorm observes; None: the last segment.
    layer: Option<usize>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Carried states no later segment takes: dropped after this one.
    last_use: Vec<String>,
}

/// The bundle's encoder segments, opened on one provider.
pub(super) struct EncoderSegmentStages {
    segments: Vec<SegmentStage>,
    groups: usize,
    layers: usize,
}

/// What [`EncoderSegmentStages::encode`] came to.
pub(super) enum SegmentedEncode {
    /// Each tile's `[latent_mean, latent_logvar]`.
    Moments(Vec<[OutputTensor; 2]>),
    /// Every tile's activations would take `needed` bytes, more than `limit`.
    TooLarge { needed: u64, limit: u64 },
}

/// The states each segment is the last to take (dropped after it runs).
fn last_uses(inputs: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (number, names) in inputs.iter().enumerate() {
        for name in names {
            if name.starts_with(segment_port::STATE_PREFIX) {
                last.insert(name, number);
            }
        }
    }
    let mut per_segment = vec![Vec::new(); inputs.len()];
    for (name, number) in last {
        per_segment[number].push(name.to_string());
    }
    per_segment
}

/// Bytes of `state` held for one tile.
fn state_bytes(state: &HashMap<String, OutputTensor>) -> u64 {
    state
        .values()
        .map(|tensor| (tensor.data.len() * std::mem::size_of::<f32>()) as u64)
        .sum()
}

/// The bytes every tile's state takes when tile 0's takes `first_bytes`
/// (tiles scale with their pixels).
fn projected_bytes(first_bytes: u64, pixels: &[usize]) -> u64 {
    let first = pixels.first().copied().unwrap_or(1).max(1) as f64;
    let total: f64 = pixels.iter().map(|&p| p as f64).sum();
    (first_bytes as f64 * total / first).ceil() as u64
}

impl EncoderSegmentStages {
    /// Opens the bundle's segments on `provider` (TensorRT: CUDA, no engine
    /// per segment); None when the bundle has none.
    pub(super) fn open(
        runtime: &Runtime,
        bundle: &Bundle,
        config: &PipelineConfig,
        provider: Provider,
    ) -> Result<Option<EncoderSegmentStages>> {
        let Some(cut) = &bundle.manifest().vae_encoder_segments else {
            return Ok(None);
        };
        let provider = match provider {
            Provider::TensorRt => Provider::Cuda,
            other => other,
        };
        let inputs: Vec<Vec<String>> = cut.segments.iter().map(|s| s.inputs.clone()).collect();
        let mut segments = Vec::with_capacity(cut.segments.len());
        for ((number, spec), last_use) in cut.segments.iter().enumerate().zip(last_uses(&inputs)) {
            let path = bundle.resolve(&spec.file)?;
            let options = SessionOptions {
                provider,
                device_id: config.device_id,
                threads: config.threads,
                tf32: config.tf32,
                conv_search: config.conv_search,
                io_binding: config.io_binding,
                graph_sha256: Some(spec.sha256.clone()),
                cuda_options: config.cuda_options.clone(),
                // without ONNX Runtime's CPU arena: each of the many sessions would
                // keep its first (largest) block after shrinking, about the
                // encoder's activations each (sd21 at 1280x960: 17.7 GB peak with
                // it, 9.9 without the segments); without it the blocks go back
                // after every run, and the runs were no slower
                cpu_arena: false,
                ..SessionOptions::default()
            };
            let session = runtime.session(&path, &options)?;
            for (direction, names, ports) in [
                ("input", &spec.inputs, session.inputs()),
                ("output", &spec.outputs, session.outputs()),
            ] {
                if let Some(missing) = names.iter().find(|n| !ports.iter().any(|p| &p.name == *n)) {
                    return Err(Error::bundle(
                        bundle.root(),
                        format!(
                            "encoder segment {number} ({}) has no {direction} {missing:?}",
                            spec.file
                        ),
                    ));
                }
            }
            segments.push(SegmentStage {
                graph: Box::new(session),
                layer: spec.layer,
                inputs: spec.inputs.clone(),
                outputs: spec.outputs.clone(),
                last_use,
            });
        }
        Ok(Some(EncoderSegmentStages {
            segments,
            groups: cut.group_norm.groups,
            layers: cut.group_norm.layers,
        }))
    }

    /// The latent moments of each crop (`(shape, data)`, NCHW, of `pixels`
    /// pixels) with GroupNorm statistics pooled over the crops layer by
    /// layer. Gives up with [`SegmentedEncode::TooLarge`] as soon as the
    /// tiles' carried activations would pass `limit` bytes.
    pub(super) fn encode(
        &mut self,
        crops: &[([usize; 4], Vec<f32>)],
        pixels: &[usize],
        timestep: i64,
        cancel: Option<&AtomicBool>,
        limit: Option<u64>,
    ) -> Result<SegmentedEncode> {
        let (layers, groups) = (self.layers, self.groups);
        let stats_shape = [layers, groups];
        let mut mean = vec![0.0f32; layers * groups];
        let mut var = vec![1.0f32; layers * groups];
        let timestep = [timestep];
        let fixed = [1.0f32];
        let mut states: Vec<HashMap<String, OutputTensor>> = vec![HashMap::new(); crops.len()];
        let mut moments = Vec::with_capacity(crops.len());
        for (number, segment) in self.segments.iter_mut().enumerate() {
            if cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
                return Err(Error::Interrupted);
            }
            let mut observed = Vec::with_capacity(crops.len());
            for (tile, (shape, data)) in crops.iter().enumerate() {
                let outputs = {
                    let state = &states[tile];
                    let inputs = segment
                        .inputs
                        .iter()
                        .map(|name| {
                            let tensor = match name.as_str() {
                                port::IMAGE => InputTensor::Float { shape, data },
                                port::TIMESTEP => InputTensor::Int64 {
                                    shape: &[1],
                                    data: &timestep,
                                },
                                port::GROUP_NORM_MEAN => InputTensor::Float {
                                    shape: &stats_shape,
                                    data: &mean,
                                },
                                port::GROUP_NORM_VAR => InputTensor::Float {
                                    shape: &stats_shape,
                                    data: &var,
                                },
                                port::GROUP_NORM_FIXED => InputTensor::Float {
                                    shape: &[1],
                                    data: &fixed,
                                },
                                carried => {
                                    let held = state.get(carried).ok_or_else(|| {
                                        Error::Ort(format!(
                                            "encoder segment {number} takes {carried:?}, which no earlier segment gave"
                                        ))
                                    })?;
                                    InputTensor::Float {
                                        shape: &held.shape,
                                        data: &held.data,
                                    }
                                }
                            };
                            Ok((name.as_str(), tensor))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let names: Vec<&str> = segment.outputs.iter().map(String::as_str).collect();
                    segment.graph.run(&inputs, &names)?
                };
                let state = &mut states[tile];
                for name in &segment.last_use {
                    state.remove(name);
                }
                let mut results: HashMap<&str, OutputTensor> = HashMap::new();
                for (name, tensor) in segment.outputs.iter().zip(outputs) {
                    if name.starts_with(segment_port::STATE_PREFIX) {
                        state.insert(name.clone(), tensor);
                    } else {
                        results.insert(name.as_str(), tensor);
                    }
                }
                let mut take = |name: &str| {
                    results.remove(name).ok_or_else(|| {
                        Error::Ort(format!("encoder segment {number} gave no {name:?}"))
                    })
                };
                match segment.layer {
                    Some(_) => {
                        let layer_mean = take(segment_port::LAYER_MEAN)?.data;
                        let layer_var = take(segment_port::LAYER_VAR)?.data;
                        if layer_mean.len() != groups || layer_var.len() != groups {
                            return Err(Error::Ort(format!(
                                "encoder segment {number} gave {} statistics, expected {groups}",
                                layer_mean.len()
                            )));
                        }
                        observed.push((layer_mean, layer_var));
                    }
                    None => moments.push([take(port::LATENT_MEAN)?, take(port::LATENT_LOGVAR)?]),
                }
                if tile == 0 && crops.len() > 1 {
                    let needed = projected_bytes(state_bytes(&states[0]), pixels);
                    if let Some(limit) = limit.filter(|&limit| needed > limit) {
                        return Ok(SegmentedEncode::TooLarge { needed, limit });
                    }
                }
            }
            if let Some(row) = segment.layer {
                let (pooled_mean, pooled_var) = pool_stats(&observed, pixels);
                mean[row * groups..(row + 1) * groups].copy_from_slice(&pooled_mean);
                var[row * groups..(row + 1) * groups].copy_from_slice(&pooled_var);
            }
        }
        Ok(SegmentedEncode::Moments(moments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_state_is_dropped_after_the_last_segment_that_takes_it() {
        let inputs = vec![
            names(&["image"]),
            names(&["state_000", "group_norm_mean"]),
            names(&["state_000", "state_001"]),
            names(&["state_002", "timestep"]),
        ];
        let mut last = last_uses(&inputs);
        for list in &mut last {
            list.sort();
        }
        assert_eq!(
            last,
            vec![
                Vec::<String>::new(),
                vec![],
                names(&["state_000", "state_001"]),
                names(&["state_002"])
            ]
        );
    }

    #[test]
    fn memory_projects_from_the_first_tile_by_pixels() {
        assert_eq!(projected_bytes(1000, &[100, 100, 50]), 2500);
        assert_eq!(projected_bytes(1000, &[100]), 1000);
        assert_eq!(projected_bytes(0, &[100, 100]), 0);
        let state: HashMap<String, OutputTensor> = [(
            "state_000".to_string(),
            OutputTensor {
                shape: vec![1, 2, 3, 4],
                data: vec![0.0; 24],
            },
        )]
        .into_iter()
        .collect();
        assert_eq!(state_bytes(&state), 96);
    }
}
