//! `run --tile`: a fixed side, or `auto` decided per image from the
//! bundle's measured memory figures and the memory budget (see
//! `tadsr_edge::tile_budget`).

use tadsr_edge::bundle::{component, Bundle};
use tadsr_edge::pipeline::{Pipeline, TilingMode};
use tadsr_edge::runtime::{gpu_info, Provider, SessionOptions};
use tadsr_edge::system_memory;
use tadsr_edge::tile_budget::{self, Budget, CostModel, GraphFileBytes, TileDecision};

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
    /// The budget was read from the GPU (before loading, when the run
    /// plans on a GPU provider): kept for the run, so the tile the graphs
    /// were opened for stays the tile used.
    device_budget_read: bool,
    /// The host's budget (or `--max-memory`), for a run planned on a GPU
    /// whose stages all ended on the CPU.
    host_budget: Budget,
    /// `--tile-shape`: fixed (`Some(true)`), balanced (`Some(false)`), or
    /// `None`: fixed on GPUs and servers, balanced on the CPU.
    tile_shape: Option<bool>,
    /// The stages run on a server (`--server`): the budget is its memory.
    server: bool,
    /// [`TilePolicy::reserve_device`] has taken its bytes off.
    device_reserved: bool,
}

impl TilePolicy {
    /// Before loading: the host's budget (or `--max-memory`). `bundle`:
    /// opened without hashing (its manifest's memory figures and its graph
    /// files' sizes).
    pub fn new(
        tile: TileArg,
        max_memory: Option<u64>,
        bundle: Option<&Bundle>,
        tiling: TilingMode,
        tile_batch: u32,
        tile_shape: Option<bool>,
    ) -> Self {
        let budget = match max_memory {
            Some(bytes) => system_memory::given_budget(bytes),
            None => system_memory::host_budget().unwrap_or(Budget {
                bytes: 4 << 30,
                source: "4 GiB assumed: /proc/meminfo is unreadable".into(),
            }),
        };
        let mut policy = TilePolicy {
            requested: match tile {
                TileArg::Auto => None,
                TileArg::Px(side) => Some(side),
            },
            cost: bundle.and_then(|bundle| {
                let mut cost = CostModel::from_manifest(bundle.manifest())?;
                // until `after_load` knows better: every stage on the CPU
                cost.stages_release_memory = cpu_stages_release_memory();
                cost.tile_batch = u64::from(tile_batch.max(1));
                cost.graph_files = graph_files(bundle);
                Some(cost)
            }),
            host_budget: budget.clone(),
            budget,
            given_budget: max_memory.is_some(),
            tiling,
            pinned: None,
            device_budget_read: false,
            tile_shape,
            server: false,
            device_reserved: false,
        };
        policy.set_fixed_tiles(false);
        policy
    }

    /// With `--server` and no `--max-memory`: the server's memory is not
    /// known here, so `auto` plans for a server GPU of
    /// [`SERVER_BUDGET_BYTES`].
    pub fn assume_server_budget(&mut self) {
        self.server = true;
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
        // per model instance), its weights as large as the graph files
        self.keep_stage_memory();
        self.weights_on_device([true; 3]);
        self.set_fixed_tiles(true);
    }

    /// The run plans on a GPU provider (`--provider cuda` or `tensorrt`,
    /// or `auto` choosing one): plan with the GPU's memory from the start
    /// (as [`TilePolicy::after_load`] would), so the tile the graphs are
    /// opened for (`--static-shapes`, TensorRT's engines) is the one the
    /// images get.
    pub fn assume_device_budget(&mut self, device: u32) {
        // GPU sessions keep their memory, --max-memory given or not
        self.keep_stage_memory();
        self.weights_on_device([true; 3]);
        self.set_fixed_tiles(true);
        if !self.given_budget {
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
                .map(|free_mib| (free_mib << 20).saturating_add(loaded_bytes).min(mib << 20));
            self.budget = system_memory::device_budget(mib << 20, free, &name);
            self.device_budget_read = true;
        }
    }

    /// Every stage on the CPU: the host's budget, the measured weights, and
    /// each stage's memory handed back after its run (the default).
    fn plan_for_cpu(&mut self) {
        self.budget = self.host_budget.clone();
        self.device_budget_read = false;
        if let Some(cost) = self.cost.as_mut() {
            cost.stages_release_memory = cpu_stages_release_memory();
            cost.on_device = [false; 3];
        }
        self.set_fixed_tiles(false);
    }

    /// Whether staged tiles go at their full shape, as `--tile-shape` says
    /// or else as the pipeline decides where the stages run (`on_gpu`: a
    /// GPU provider or a server).
    fn set_fixed_tiles(&mut self, on_gpu: bool) {
        let fixed = self.tile_shape.unwrap_or(on_gpu);
        if let Some(cost) = self.cost.as_mut() {
            cost.fixed_tiles = fixed;
        }
    }

    /// Stages whose memory is not given back after each run (GPU
    /// providers, a server): their activations add up.
    fn keep_stage_memory(&mut self) {
        if let Some(cost) = self.cost.as_mut() {
            cost.stages_release_memory = false;
        }
    }

    /// Stages (encoder, UNet, decoder) that hold their weights on a GPU
    /// or a server: as many bytes as their graph files, not the CPU
    /// provider's measured figure.
    fn weights_on_device(&mut self, stages: [bool; 3]) {
        if let Some(cost) = self.cost.as_mut() {
            cost.on_device = stages;
        }
    }

    /// The estimated peak bytes of one `width` x `height` image with tiles
    /// of `tile_px` (0: untiled) where the stages run now; None without
    /// memory figures.
    pub fn estimate(&self, width: u32, height: u32, tile_px: u32) -> Option<u64> {
        let cost = self.cost.as_ref()?;
        Some(tile_budget::peak_bytes(
            cost,
            self.tiling,
            width,
            height,
            tile_px,
        ))
    }

    /// Memory held on the host beside the stages for the whole run (the
    /// text encoder of `--prompt-dir`): taken off the host's budget, and off
    /// the budget in use when that is the host's.
    pub fn reserve_host(&mut self, bytes: u64, what: &str) {
        let planning_on_host = self.budget_is_host();
        self.host_budget = Budget {
            bytes: self.host_budget.bytes.saturating_sub(bytes),
            source: format!(
                "{} less {:.2} GiB for {what}",
                self.host_budget.source,
                bytes as f64 / f64::from(1u32 << 30)
            ),
        };
        if planning_on_host {
            self.budget = self.host_budget.clone();
        }
    }

    /// Memory held on the GPU beside the stages for the whole run (the
    /// text encoder of `--prompt-dir`, on CUDA next to CUDA stages): taken
    /// once off the budget in use (the GPU's, or on a Jetson the host's
    /// memory that its GPU shares). Called before loading, when the run
    /// plans on a GPU, so that the tile the graphs are opened for already
    /// leaves room for it; again after loading it does nothing.
    pub fn reserve_device(&mut self, bytes: u64, what: &str) {
        if self.device_reserved || self.server {
            return;
        }
        self.device_reserved = true;
        self.budget = Budget {
            bytes: self.budget.bytes.saturating_sub(bytes),
            source: format!(
                "{} less {:.2} GiB for {what}",
                self.budget.source,
                bytes as f64 / f64::from(1u32 << 30)
            ),
        };
    }

    /// Whether the budget in use is the host's memory: not a server's,
    /// not one read from a discrete GPU, not `--max-memory` given for
    /// stages on a GPU (taken as the GPU's; on a Jetson, whose GPU shares
    /// the host's memory, that leaves held host memory uncounted).
    fn budget_is_host(&self) -> bool {
        let on_device = self
            .cost
            .as_ref()
            .is_some_and(|cost| cost.on_device.iter().any(|&on| on));
        !(self.server || self.device_budget_read || (self.given_budget && on_device))
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
        if stages.iter().all(|p| *p == Provider::Cpu) {
            // planned for a GPU that no stage ended on (auto fell back)
            self.plan_for_cpu();
            return;
        }
        self.keep_stage_memory();
        self.weights_on_device(stages.map(|p| p != Provider::Cpu));
        if let Some(cost) = self.cost.as_mut() {
            cost.fixed_tiles = pipeline.uses_fixed_tiles();
        }
        if stages.contains(&Provider::TensorRt) {
            self.pinned = engine_decision;
            return;
        }
        if self.given_budget {
            return;
        }
        // the weights just loaded are no longer free, but they are ours
        let loaded = self.cost.as_ref().map_or(0, CostModel::weights_bytes);
        self.use_device_budget(device, loaded);
    }
}

/// Whether CPU sessions hand their arena back after each run (the
/// default session options), so that one stage's memory is free while the
/// next runs.
fn cpu_stages_release_memory() -> bool {
    let cpu = SessionOptions::default();
    cpu.cpu_arena && cpu.shrink_cpu_arena
}

/// The sizes of `bundle`'s main graph files (None when one cannot be read).
fn graph_files(bundle: &Bundle) -> Option<GraphFileBytes> {
    let size = |name: &str| bundle.graph_file_bytes(name);
    let optional = |name: &str| {
        if bundle.manifest().components.contains_key(name) {
            size(name)
        } else {
            Some(0)
        }
    };
    Some(GraphFileBytes {
        encoder: size(component::VAE_ENCODER)?,
        unet: size(component::UNET)?,
        decoder: size(component::VAE_DECODER)?,
        encoder_tiled: optional(component::VAE_ENCODER_TILED)?,
        decoder_tiled: optional(component::VAE_DECODER_TILED)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tadsr_edge::bundle::HashCheck;

    fn tiny() -> Bundle {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
        Bundle::open_with(&dir, HashCheck::Skip).expect("models/tiny opens")
    }

    #[test]
    fn stages_on_a_device_or_a_server_weigh_their_graph_files() {
        let bundle = tiny();
        let files = graph_files(&bundle).expect("tiny's graph files are readable");
        let size = |name: &str| std::fs::metadata(bundle.root().join(name)).unwrap().len();
        assert_eq!(files.unet, size("unet/model.onnx"));
        assert_eq!(files.decoder_tiled, size("vae_decoder/tiled.onnx"));
        let figures = &bundle.manifest().memory.as_ref().unwrap().components;
        let measured: u64 = figures.values().map(|stage| stage.weights_bytes).sum();
        let on_files = files.encoder + files.unet + files.decoder;

        let policy = |max_memory| {
            TilePolicy::new(
                TileArg::Auto,
                max_memory,
                Some(&bundle),
                TilingMode::Staged,
                1,
                None,
            )
        };
        let on_cpu = policy(Some(64 << 30));
        let mut on_server = policy(Some(64 << 30));
        on_server.assume_server_budget();
        // untiled 512: the CPU takes the largest stage's activations, a server their sum
        let sum_of_stages: u64 = figures
            .values()
            .map(|stage| tile_budget::activations(stage, 512 * 512))
            .sum();
        let largest = figures
            .values()
            .map(|stage| tile_budget::activations(stage, 512 * 512))
            .max()
            .unwrap();
        assert_eq!(
            on_server.estimate(512, 512, 0).unwrap() + measured + largest,
            on_cpu.estimate(512, 512, 0).unwrap() + on_files + sum_of_stages
        );
        // --provider cuda named: the same before loading (its sessions keep their memory too)
        let mut on_gpu = policy(Some(64 << 30));
        on_gpu.assume_device_budget(0);
        assert_eq!(
            on_gpu.estimate(1024, 768, 256),
            on_server.estimate(1024, 768, 256)
        );
        // planned on a GPU, every stage ended on the CPU (auto fell back): the CPU's plan again
        on_gpu.plan_for_cpu();
        for (width, height, tile) in [(512, 512, 0), (1024, 768, 256)] {
            assert_eq!(
                on_gpu.estimate(width, height, tile),
                on_cpu.estimate(width, height, tile)
            );
        }
        assert_eq!(on_gpu.budget, on_cpu.budget);
    }

    /// --prompt-dir's text encoder stays loaded: its bytes come off the
    /// host's budget (and the budget in use when that is the host's), not
    /// off a server's.
    #[test]
    fn memory_held_beside_the_stages_comes_off_the_host_budget() {
        let bundle = tiny();
        let policy = || {
            TilePolicy::new(
                TileArg::Auto,
                Some(8 << 30),
                Some(&bundle),
                TilingMode::Staged,
                1,
                None,
            )
        };
        let mut on_cpu = policy();
        let before = on_cpu.budget.bytes;
        on_cpu.reserve_host(3 << 30, "the text encoder");
        assert_eq!(on_cpu.budget.bytes, before - (3 << 30));
        assert!(on_cpu
            .budget
            .source
            .ends_with("less 3.00 GiB for the text encoder"));
        // a budget this small picks a smaller tile for a large image
        let (wide, tight) = (policy().for_image(4096, 4096), on_cpu.for_image(4096, 4096));
        assert!(
            tight.tile_px < wide.tile_px,
            "{} vs {}",
            tight.tile_px,
            wide.tile_px
        );
        let mut on_server = policy();
        on_server.assume_server_budget();
        let server_budget = on_server.budget.clone();
        on_server.reserve_host(3 << 30, "the text encoder");
        assert_eq!(on_server.budget, server_budget);
        // --max-memory given for stages on a GPU is the GPU's: untouched too
        let mut on_gpu = policy();
        on_gpu.assume_device_budget(0);
        let gpu_budget = on_gpu.budget.clone();
        on_gpu.reserve_host(3 << 30, "the text encoder");
        assert_eq!(on_gpu.budget, gpu_budget);
        // and if its stages all end on the CPU, the host's plan has it
        on_gpu.plan_for_cpu();
        assert_eq!(on_gpu.budget, on_cpu.budget);
    }

    #[test]
    fn memory_held_on_the_gpu_comes_off_the_budget_in_use_once() {
        let bundle = tiny();
        let mut on_gpu = TilePolicy::new(
            TileArg::Auto,
            Some(8 << 30),
            Some(&bundle),
            TilingMode::Staged,
            1,
            None,
        );
        on_gpu.assume_device_budget(0);
        let before = on_gpu.budget.bytes;
        on_gpu.reserve_device(3 << 30, "the text encoder");
        assert_eq!(on_gpu.budget.bytes, before - (3 << 30));
        assert!(on_gpu
            .budget
            .source
            .ends_with("less 3.00 GiB for the text encoder"));
        // before loading and again after: taken once
        on_gpu.reserve_device(3 << 30, "the text encoder");
        assert_eq!(on_gpu.budget.bytes, before - (3 << 30));
        // stages that all end on the CPU plan with the host's memory, which
        // the GPU's reservation never touched
        let host = on_gpu.host_budget.clone();
        on_gpu.plan_for_cpu();
        assert_eq!(on_gpu.budget, host);
        // a server's budget: the client's text encoder is not on it
        let mut on_server = TilePolicy::new(
            TileArg::Auto,
            None,
            Some(&bundle),
            TilingMode::Staged,
            1,
            None,
        );
        on_server.assume_server_budget();
        let server_budget = on_server.budget.clone();
        on_server.reserve_device(3 << 30, "the text encoder");
        assert_eq!(on_server.budget, server_budget);
    }
}
