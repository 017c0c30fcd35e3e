//! `tadsr-edge info`: ONNX Runtime's version and library, the usable
//! execution providers, a bundle's summary and (`--plan WxH`) the tile
//! `run --tile auto` would choose for an output size.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use tadsr_edge::bundle::{verified, Bundle, HashCheck};
use tadsr_edge::pipeline::TilingMode;
use tadsr_edge::runtime::gpu_info::GpuInfo;
use tadsr_edge::runtime::{cache_dir, graph_cache, Provider, ProviderStatus, Runtime};
use tadsr_edge::tile_budget::TileDecision;

use super::tile_policy::TilePolicy;
use super::{escape_controls, print_line, Outcome};
use crate::args::{InfoArgs, PlanOn, ProviderArg, TileArg};

/// Prints the runtime, each provider's probe on `--device` (usable or the
/// reason, the GPU and library versions) and (with `--model`) a bundle summary.
pub fn info(ort_lib: Option<&Path>, args: &InfoArgs) -> anyhow::Result<Outcome> {
    let runtime = Runtime::global(ort_lib)?;
    let device = args.device.map_or(0, |d| d as i32);
    let statuses: Vec<ProviderStatus> = Provider::PREFERENCE
        .into_iter()
        .map(|p| runtime.provider_status(p, device))
        .collect();
    let bundle = match &args.model {
        Some(dir) => Some(
            Bundle::open_with(
                dir,
                if args.verify {
                    HashCheck::Full
                } else {
                    HashCheck::Skip
                },
            )
            .with_context(|| "cannot use the bundle")?,
        ),
        None => None,
    };
    // what `run` would refuse in the bundle's defaults when no option replaces them
    let default_problems = bundle.as_ref().map(default_problems).unwrap_or_default();
    if !args.verify {
        for problem in &default_problems {
            stderr_line!("warning: {}", escape_controls(problem));
        }
    }
    let outcome = || -> anyhow::Result<Outcome> {
        match &bundle {
            // --verify checks the bundle: one `run` cannot use as it is fails
            Some(bundle) if args.verify && !default_problems.is_empty() => {
                Err(tadsr_edge::Error::Bundle {
                    path: bundle.root().to_path_buf(),
                    reason: default_problems.join("; "),
                }
                .into())
            }
            _ => Ok(Outcome::Done),
        }
    };
    let plan = match (&bundle, args.plan) {
        (Some(bundle), Some((width, height))) => {
            // as `run --provider auto` plans (the probes above are kept)
            let on = args.plan_on.unwrap_or(
                if super::plans_on_device(ProviderArg::Auto, ort_lib, device as u32) {
                    PlanOn::Gpu
                } else {
                    PlanOn::Cpu
                },
            );
            Some(tile_plan(
                bundle,
                width,
                height,
                on,
                args.max_memory,
                device,
            ))
        }
        _ => None,
    };
    if args.json {
        let bundle_json = bundle.as_ref().map(bundle_summary_json);
        let report = json!({
            "onnxruntime": {
                "version": runtime.version(),
                "library": runtime.library().path,
                "found_by": runtime.library().source,
            },
            "graph_cache": graph_cache_summary(),
            "verified_files": verified_files_summary(),
            "device": device,
            "providers": statuses,
            "model": bundle_json,
            "plan": plan,
        });
        print_line(report)?;
        return outcome();
    }
    print_line(format_args!("tadsr-edge {}", env!("CARGO_PKG_VERSION")))?;
    print_line(format_args!(
        "ONNX Runtime {} ({}, found by {})",
        runtime.version(),
        runtime.library().path.display(),
        runtime.library().source
    ))?;
    let usable: Vec<&str> = statuses
        .iter()
        .filter(|s| s.usable)
        .map(|s| s.name)
        .collect();
    if let Some(cache) = graph_cache_summary() {
        print_line(format_args!(
            "optimized-graph cache: {} ({} graph(s), {:.2} GB{})",
            cache.folder.display(),
            cache.entries,
            cache.bytes as f64 / 1e9,
            if cache.enabled {
                ""
            } else {
                "; off: TADSR_EDGE_GRAPH_CACHE=0"
            }
        ))?;
    }
    if let Some(records) = verified_files_summary() {
        print_line(format_args!(
            "sha256 checks remembered: {} ({} file(s){})",
            records.folder.display(),
            records.files,
            if records.enabled {
                ""
            } else {
                "; off: TADSR_EDGE_VERIFY_CACHE=0"
            }
        ))?;
    }
    print_line(format_args!("execution providers: {}", usable.join(", ")))?;
    for status in &statuses {
        if let Some(reason) = &status.reason {
            print_line(format_args!("  {}: not usable: {reason}", status.name))?;
        }
    }
    if let Some(gpu) = statuses.iter().find_map(|s| s.gpu.as_ref()) {
        print_gpu(device, gpu)?;
    }
    if let Some(bundle) = &bundle {
        print_bundle_summary(bundle)?;
    }
    if let Some(plan) = &plan {
        print_line(format_args!(
            "--tile auto for a {}x{} output on the {}: {}",
            plan.width,
            plan.height,
            plan.on,
            plan.decision.describe()
        ))?;
    }
    outcome()
}

/// `info --plan`: what `run --tile auto` would choose.
#[derive(Serialize)]
struct TilePlan {
    width: u32,
    height: u32,
    on: &'static str,
    decision: TileDecision,
}

fn tile_plan(
    bundle: &Bundle,
    width: u32,
    height: u32,
    on: PlanOn,
    max_memory: Option<u64>,
    device: i32,
) -> TilePlan {
    let mut policy = TilePolicy::new(
        TileArg::Auto,
        max_memory,
        Some(bundle),
        TilingMode::Staged,
        1,
        None,
    );
    let on = match on {
        PlanOn::Cpu => "cpu",
        PlanOn::Gpu => {
            policy.assume_device_budget(device.max(0) as u32);
            "gpu"
        }
    };
    TilePlan {
        width,
        height,
        on,
        decision: policy.for_image(width, height),
    }
}

fn print_gpu(device: i32, gpu: &GpuInfo) -> anyhow::Result<()> {
    let field = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_string());
    match &gpu.name {
        Some(name) => print_line(format_args!(
            "GPU {device}: {name}, compute capability {}, {} MiB{}",
            field(&gpu.compute_capability),
            gpu.memory_mib.map_or("-".to_string(), |m| m.to_string()),
            gpu.memory_free_mib
                .map_or(String::new(), |free| format!(" ({free} MiB free)"))
        ))?,
        None => print_line(format_args!("GPU {device}: none found"))?,
    }
    print_line(format_args!(
        "  driver {} (CUDA {}), CUDA runtime {}, cuDNN {}, TensorRT {}",
        field(&gpu.driver),
        field(&gpu.driver_cuda),
        field(&gpu.cuda_runtime),
        field(&gpu.cudnn),
        field(&gpu.tensorrt)
    ))?;
    if let Some(tegra) = &gpu.tegra_release {
        print_line(format_args!("  Jetson: {tegra}"))?;
    }
    Ok(())
}

fn bundle_summary_json(bundle: &Bundle) -> serde_json::Value {
    let m = bundle.manifest();
    json!({
        "path": bundle.root(),
        "name": m.name,
        "format_version": m.format_version,
        "precision": m.precision,
        "components": m.components.keys().collect::<Vec<_>>(),
        "encoder_segments": m.vae_encoder_segments.as_ref().map(|cut| cut.segments.len()),
        "bytes": bundle.total_bytes(),
        "prompt_embeds_shape": m.prompt.shape,
        "prompt": m.prompt.text,
        "text_prompts": tadsr_edge::prompt::has_text_encoder(bundle),
        "defaults": m.defaults,
        "scaling_factor": m.scaling_factor,
        "graph_forms": {
            "group_norm": m.group_norm_form(),
            "attention": m.attention_form(),
            "fusions": m.fusions_form(),
        },
        "provenance": m.provenance,
    })
}

fn print_bundle_summary(bundle: &Bundle) -> anyhow::Result<()> {
    let m = bundle.manifest();
    print_line(format_args!("model: {}", bundle.root().display()))?;
    print_line(format_args!(
        "  name {}, format {}, precision {}, {:.1} MB",
        // the manifest's text, so no control character can forge a line
        escape_controls(m.name.as_deref().unwrap_or("-")),
        m.format_version,
        m.precision,
        bundle.total_bytes() as f64 / 1e6
    ))?;
    print_line(format_args!(
        "  graph forms: GroupNorm {}, attention {}, fusions {}{}",
        m.group_norm_form(),
        m.attention_form(),
        m.fusions_form(),
        if m.needs_cuda() {
            " (runs on CUDA only)"
        } else {
            ""
        }
    ))?;
    for (name, component) in &m.components {
        let ports = |ports: &[tadsr_edge::bundle::PortSpec]| {
            ports
                .iter()
                .map(|p| format!("{}:{}", p.name, p.dtype))
                .collect::<Vec<_>>()
                .join(", ")
        };
        print_line(format_args!(
            "  {name}: {} ({}) -> ({})",
            component.file,
            ports(&component.inputs),
            ports(&component.outputs)
        ))?;
    }
    if let Some(cut) = &m.vae_encoder_segments {
        print_line(format_args!(
            "  vae_encoder_segments: {} graphs, vae_encoder_tiled cut at its {} GroupNorm layers \
             (--tiling latent beyond 1088 px in one pass of the encoder)",
            cut.segments.len(),
            cut.group_norm.layers
        ))?;
    }
    print_line(format_args!(
        "  prompt embedding {:?}{}",
        m.prompt.shape,
        m.prompt
            .text
            .as_ref()
            .map(|t| format!(" from {t:?}"))
            .unwrap_or_default()
    ))?;
    print_line(if tadsr_edge::prompt::has_text_encoder(bundle) {
        "  --prompt TEXT, --prompt-dir DIR: yes (the bundle's text encoder and tokenizer)"
    } else {
        "  --prompt TEXT, --prompt-dir DIR: no (no text encoder in the bundle; --prompt-embeds FILE replaces the default)"
    })?;
    let d = &m.defaults;
    print_line(format_args!(
        "  defaults: timestep {}, upscale {}, process size {}, color fix {}",
        d.timestep, d.upscale, d.process_size, d.color_fix
    ))?;
    Ok(())
}

/// The remembered sha256 checks' folder and count (None without a cache folder).
fn verified_files_summary() -> Option<verified::Summary> {
    cache_dir().map(|root| verified::summary(&root))
}

/// The optimized-graph cache's folder and size (None without a cache folder).
fn graph_cache_summary() -> Option<graph_cache::Summary> {
    cache_dir().map(|root| graph_cache::summary(&root))
}

/// The bundle's defaults that `run` refuses when no option replaces them
/// (the timestep outside the schedule, the upscale or process size out of
/// range), one sentence each.
fn default_problems(bundle: &Bundle) -> Vec<String> {
    let defaults = &bundle.manifest().defaults;
    let mut problems = Vec::new();
    match tadsr_edge::pipeline::noise_schedule(bundle) {
        Err(error) => problems.push(error.to_string()),
        Ok(schedule) => {
            if let Err(error) = schedule.validate_timestep(i64::from(defaults.timestep)) {
                problems.push(format!(
                    "manifest.json defaults.timestep is {}: {error}; run needs -t until the bundle is fixed",
                    defaults.timestep
                ));
            }
        }
    }
    if !(1..=16).contains(&defaults.upscale) {
        problems.push(format!(
            "manifest.json defaults.upscale is {}, outside 1..16; run needs --upscale until the bundle is fixed",
            defaults.upscale
        ));
    }
    if defaults.process_size > crate::args::MAX_PROCESS_SIZE {
        problems.push(format!(
            "manifest.json defaults.process_size is {}, over {}; run needs --process-size until the bundle is fixed",
            defaults.process_size,
            crate::args::MAX_PROCESS_SIZE
        ));
    }
    problems
}
