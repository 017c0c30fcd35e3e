//! `run --tile`: a fixed side, or `auto` decided per image from the
//! bundle's measured memory figures and the memory budget (see
//! `tadsr_edge::tile_budget`).

use tadsr_edge::bundle::Manifest;
use tadsr_edge::pipeline::{Pipeline, TilingMode};
use tadsr_edge::runtime::{gpu_info, Provider, SessionOptions};
use tadsr_edge::system_memory;
use tadsr_edge::tile_budget::{self, Budget, CostModel, TileDecision};

use crate::args::TileArg;

/// What `--tile auto` plans for on a Triton server when `--max-memory`
/// does not say: 8 GiB, an 8 GB Jetson's or a small GPU's worth.
pub const SERVER_BUDGET_BYTES: u64 = 8 << 30;

/// How each image's tile is chosen.
pub struct TilePolicy {
    requested: Option<u32>,
    cost: Option<CostModel>,
    budget: Budget,
    given_budget: bool,
    tiling: TilingMode,
    /// TensorRT engines are built for one tile: the decision for the run's
    /// largest image, kept for every image.
    pinned: Option<TileDecision>,
    /// The budget was read from the GPU (before loading, with
    /// `--provider cuda`): kept for the run, so the tile the graphs were
    /// opened for stays the tile used.
    device_budget_read: bool,
}

impl TilePolicy {
    /// Before loading: the host's budget (or `--max-memory`).
    pub fn new(
        tile: TileArg,
        max_memory: Option<u64>,
        manifest: Option<&Manifest>,
        tiling: TilingMode,
        tile_batch: u32,
    ) -> Self {
        let budget = match max_memory {
            Some(bytes) => system_memory::given_budget(bytes),
            None => system_memory::host_budget().unwrap_or(Budget {
                bytes: 4 << 30,
                source: "4 GiB assumed: /proc/meminfo is unreadable".into(),
            }),
        };
        TilePolicy {
            requested: match tile {
                TileArg::Auto => None,
                TileArg::Px(side) => Some(side),
            },
            cost: manifest.and_then(CostModel::from_manifest).map(|mut cost| {
                // until `after_load` knows better: every stage on the CPU
                let cpu = SessionOptions::default();
                cost.stages_release_memory = cpu.cpu_arena && cpu.shrink_cpu_arena;
                cost.tile_batch = u64::from(tile_batch.max(1));
                cost
            }),
            budget,
            given_budget: max_memory.is_some(),
            tiling,
            pinned: None,
            device_budget_read: false,
        }
    }

    /// With `--server` and no `--max-memory`: the server's memory is not
    /// known here, so `auto` plans for a server GPU of
    /// [`SERVER_BUDGET_BYTES`].
    pub fn assume_server_budget(&mut self) {
        if !self.given_budget {
            self.budget = Budget {
                bytes: SERVER_BUDGET_BYTES,
                source:
                    "the server's memory, 8 GiB assumed (set --max-memory to what its GPU has free)"
                        .into(),
            };
            self.given_budget = true;
        }
        // the server's sessions keep their memory (an ONNX Runtime arena
        // per model instance)
        self.keep_stage_memory();
    }

    /// `--provider cuda` named: plan with the GPU's memory from the start
    /// (as [`TilePolicy::after_load`] would), so the tile the graphs are
    /// opened for (`--static-shapes`) is the one the images get.
    pub fn assume_device_budget(&mut self, device: u32) {
        if !self.given_budget {
            self.keep_stage_memory();
            self.use_device_budget(device, 0);
        }
    }

    /// The budget from discrete GPU `device`'s memory (a Jetson's GPU
    /// shares the host's memory, which the host budget already is): a share
    /// of it, less when other processes hold memory. `loaded_bytes`: this
    /// run's weights already on the device (after loading), added back to
    /// what is free.
    fn use_device_budget(&mut self, device: u32, loaded_bytes: u64) {
        if self.device_budget_read {
            return;
        }
        let gpu = gpu_info::gpu_info(device as i32);
        if gpu.tegra_release.is_some() {
            return;
        }
        if let Some(mib) = gpu.memory_mib {
            let name = gpu.name.unwrap_or_else(|| format!("GPU {device}"));
            let free = gpu
                .memory_free_mib
                .map(|free_mib| ((free_mib << 20) + loaded_bytes).min(mib << 20));
            self.budget = system_memory::device_budget(mib << 20, free, &name);
            self.device_budget_read = true;
        }
    }

    /// Stages whose memory is not given back after each run (GPU
    /// providers, a server): their activations add up.
    fn keep_stage_memory(&mut self) {
        if let Some(cost) = self.cost.as_mut() {
            cost.stages_release_memory = false;
        }
    }

    pub fn is_auto(&self) -> bool {
        self.requested.is_none()
    }

    /// The tile for an image the networks see as `width` x `height`.
    pub fn for_image(&self, width: u32, height: u32) -> TileDecision {
        if let Some(side) = self.requested {
            return TileDecision::requested(side);
        }
        if let Some(pinned) = &self.pinned {
            return pinned.clone();
        }
        tile_budget::choose_tile(
            self.cost.as_ref(),
            self.tiling,
            width,
            height,
            self.budget.clone(),
        )
    }

    /// After loading: stages on a discrete GPU plan with its memory (unless
    /// `--max-memory` was given); on TensorRT the tile the engines were
    /// built for (`engine_tile_px`, from [`TilePolicy::for_image`] on the
    /// largest image before loading) holds for the whole run.
    pub fn after_load(
        &mut self,
        pipeline: &Pipeline,
        device: u32,
        engine_decision: Option<TileDecision>,
    ) {
        let providers = pipeline.providers();
        let stages = [providers.vae_encoder, providers.unet, providers.vae_decoder];
        if stages.iter().any(|p| *p != Provider::Cpu) {
            self.keep_stage_memory();
        }
        if stages.contains(&Provider::TensorRt) {
            self.pinned = engine_decision;
            return;
        }
        if self.given_budget || stages.iter().all(|p| *p == Provider::Cpu) {
            return;
        }
        // the weights just loaded are no longer free, but they are ours
        let loaded = self.cost.as_ref().map_or(0, CostModel::weights_bytes);
        self.use_device_budget(device, loaded);
    }
}
