//! `tadsr-edge info`: ONNX Runtime's version and library, the usable
//! execution providers, and a bundle's summary.

use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use tadsr_edge::bundle::Bundle;
use tadsr_edge::runtime::{Provider, Runtime};

use super::{print_line, Outcome};
use crate::args::InfoArgs;

/// Prints the runtime, its providers and (with `--model`) a bundle summary.
pub fn info(ort_lib: Option<&Path>, args: &InfoArgs) -> anyhow::Result<Outcome> {
    let runtime = Runtime::global(ort_lib)?;
    let providers: Vec<&str> = runtime
        .usable_providers()
        .iter()
        .map(|p| p.name())
        .collect();
    let unusable: Vec<(Provider, String)> = Provider::PREFERENCE
        .into_iter()
        .filter_map(|p| runtime.probe_provider(p).err().map(|reason| (p, reason)))
        .collect();
    let bundle = match &args.model {
        Some(dir) => {
            Some(Bundle::open_with(dir, args.verify).with_context(|| "cannot use the bundle")?)
        }
        None => None,
    };
    if args.json {
        let bundle_json = bundle.as_ref().map(bundle_summary_json);
        let report = json!({
            "onnxruntime": {
                "version": runtime.version(),
                "library": runtime.library().path,
                "found_by": runtime.library().source,
            },
            "providers": providers,
            "unusable_providers": unusable.iter().map(|(p, r)| json!({"provider": p.name(), "reason": r})).collect::<Vec<_>>(),
            "model": bundle_json,
        });
        print_line(report)?;
        return Ok(Outcome::Done);
    }
    print_line(format_args!("tadsr-edge {}", env!("CARGO_PKG_VERSION")))?;
    print_line(format_args!(
        "ONNX Runtime {} ({}, found by {})",
        runtime.version(),
        runtime.library().path.display(),
        runtime.library().source
    ))?;
    print_line(format_args!(
        "execution providers: {}",
        providers.join(", ")
    ))?;
    for (provider, reason) in &unusable {
        print_line(format_args!("  {provider}: not usable: {reason}"))?;
    }
    if let Some(bundle) = &bundle {
        print_bundle_summary(bundle)?;
    }
    Ok(Outcome::Done)
}

fn bundle_summary_json(bundle: &Bundle) -> serde_json::Value {
    let m = bundle.manifest();
    json!({
        "path": bundle.root(),
        "name": m.name,
        "format_version": m.format_version,
        "precision": m.precision,
        "components": m.components.keys().collect::<Vec<_>>(),
        "bytes": bundle.total_bytes(),
        "prompt_embeds_shape": m.prompt.shape,
        "prompt": m.prompt.text,
        "defaults": m.defaults,
        "scaling_factor": m.scaling_factor,
        "provenance": m.provenance,
    })
}

fn print_bundle_summary(bundle: &Bundle) -> anyhow::Result<()> {
    let m = bundle.manifest();
    print_line(format_args!("model: {}", bundle.root().display()))?;
    print_line(format_args!(
        "  name {}, format {}, precision {}, {:.1} MB",
        m.name.as_deref().unwrap_or("-"),
        m.format_version,
        m.precision,
        bundle.total_bytes() as f64 / 1e6
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
    print_line(format_args!(
        "  prompt embedding {:?}{}",
        m.prompt.shape,
        m.prompt
            .text
            .as_ref()
            .map(|t| format!(" from {t:?}"))
            .unwrap_or_default()
    ))?;
    let d = &m.defaults;
    print_line(format_args!(
        "  defaults: timestep {}, upscale {}, process size {}, color fix {}",
        d.timestep, d.upscale, d.process_size, d.color_fix
    ))?;
    Ok(())
}
