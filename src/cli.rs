//! Command-line parsing, exit codes and what the user sees.
//!
//! Exit codes: 0 success, 1 at least one input failed (the others were
//! written), 2 usage, model or runtime errors (nothing could run).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use tadsr_edge::bundle::Bundle;
use tadsr_edge::runtime::{Provider, Runtime};

/// Exit code when some inputs failed.
pub const EXIT_INPUT_FAILED: i32 = 1;
/// Exit code for usage, model and runtime errors.
pub const EXIT_SETUP_FAILED: i32 = 2;

const ROOT_EXAMPLES: &str = "\
Examples:
  tadsr-edge info --model models/tiny
  tadsr-edge run photo.png -o photo_x4.png --model models/tiny
  tadsr-edge run photos/ -o out/ --tile 512 --timestep 200,500,800

ONNX Runtime is found in this order: --ort-lib, ORT_DYLIB_PATH, the set-up's
cache (${XDG_CACHE_HOME:-~/.cache}/tadsr-edge, written by `make setup`), an
importable Python onnxruntime.";

const INFO_EXAMPLES: &str = "\
Examples:
  tadsr-edge info
  tadsr-edge info --model models/tiny
  tadsr-edge info --model models/sd21 --json";

#[derive(Parser, Debug)]
#[command(name = "tadsr-edge", version, about = "TADSR one-step diffusion 4x super-resolution on ONNX Runtime", after_help = ROOT_EXAMPLES)]
pub struct Cli {
    /// Path of libonnxruntime.so (or a folder holding it); overrides ORT_DYLIB_PATH.
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show ONNX Runtime's version and library, the usable execution providers, and a bundle's summary.
    #[command(after_help = INFO_EXAMPLES)]
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model bundle folder (holding manifest.json).
    #[arg(long, short = 'm', value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also check every file's sha256 (slow on large bundles).
    #[arg(long)]
    pub verify: bool,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_SETUP_FAILED } else { 0 };
            let _ = error.print();
            return code;
        }
    };
    let result = match &cli.command {
        Command::Info(args) => info(cli.ort_lib.as_deref(), args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            EXIT_SETUP_FAILED
        }
    }
}

/// An error and its causes on one line.
pub fn one_line(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

fn info(ort_lib: Option<&Path>, args: &InfoArgs) -> anyhow::Result<i32> {
    let runtime = Runtime::global(ort_lib)?;
    let providers: Vec<&str> = runtime.usable_providers().iter().map(|p| p.name()).collect();
    let unusable: Vec<(Provider, String)> = Provider::PREFERENCE
        .into_iter()
        .filter_map(|p| runtime.probe_provider(p).err().map(|reason| (p, reason)))
        .collect();
    let bundle = match &args.model {
        Some(dir) => Some(Bundle::open_with(dir, args.verify).with_context(|| "cannot use the bundle")?),
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
        println!("{report}");
        return Ok(0);
    }
    println!("tadsr-edge {}", env!("CARGO_PKG_VERSION"));
    println!(
        "ONNX Runtime {} ({}, found by {})",
        runtime.version(),
        runtime.library().path.display(),
        runtime.library().source
    );
    println!("execution providers: {}", providers.join(", "));
    for (provider, reason) in &unusable {
        println!("  {provider}: not usable: {reason}");
    }
    if let Some(bundle) = &bundle {
        print_bundle_summary(bundle);
    }
    Ok(0)
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

fn print_bundle_summary(bundle: &Bundle) {
    let m = bundle.manifest();
    println!("model: {}", bundle.root().display());
    println!(
        "  name {}, format {}, precision {}, {:.1} MB",
        m.name.as_deref().unwrap_or("-"),
        m.format_version,
        m.precision,
        bundle.total_bytes() as f64 / 1e6
    );
    for (name, component) in &m.components {
        let ports = |ports: &[tadsr_edge::bundle::PortSpec]| {
            ports
                .iter()
                .map(|p| format!("{}:{}", p.name, p.dtype))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  {name}: {} ({}) -> ({})",
            component.file,
            ports(&component.inputs),
            ports(&component.outputs)
        );
    }
    println!(
        "  prompt embedding {:?}{}",
        m.prompt.shape,
        m.prompt
            .text
            .as_ref()
            .map(|t| format!(" from {t:?}"))
            .unwrap_or_default()
    );
    let d = &m.defaults;
    println!(
        "  defaults: timestep {}, upscale {}, process size {}, color fix {}",
        d.timestep, d.upscale, d.process_size, d.color_fix
    );
}
