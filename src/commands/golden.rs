//! `tadsr-edge golden`: runs a bundle's golden cases on a provider and
//! reports each case's largest error and PSNR against the PyTorch reference.

use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use tadsr_edge::golden::{read_cases, run_case, CaseResult};
use tadsr_edge::pipeline::{Pipeline, PipelineConfig, ProviderChoice, ShapeHint, TilingMode};
use tadsr_edge::runtime::Provider;

use super::{escape_controls, print_line, provider_choice, Outcome};
use crate::args::GoldenArgs;

/// Bound on CPU: fp32 against fp32 PyTorch (see tests/golden_parity.rs).
pub const CPU_MAX_ABS_ERROR: f32 = 1e-4;
/// Bound on a GPU: fp32 with TF32 off; other kernels (cuDNN, cuBLAS) sum in
/// other orders than the CPU's, within 1e-3 in [0, 1] pixel units (1/4 of
/// an 8-bit level).
pub const GPU_MAX_ABS_ERROR: f32 = 1e-3;

pub fn golden(ort_lib: Option<&Path>, args: &GoldenArgs) -> anyhow::Result<Outcome> {
    let golden_dir = args
        .golden
        .clone()
        .unwrap_or_else(|| args.model.join("golden"));
    args.gpu
        .check_provider(matches!(args.provider, crate::args::ProviderArg::Cpu))?;
    let cases = read_cases(&golden_dir)?;
    let mut config = PipelineConfig::new(&args.model);
    config.ort_lib = ort_lib.map(Path::to_path_buf);
    config.provider = provider_choice(args.provider);
    config.threads = args.threads;
    // golden cases run untiled (tadsr_edge::golden::run_case)
    config.shapes = ShapeHint {
        tile_px: 0,
        tiling: TilingMode::Staged,
        largest_side_px: 0,
        // the cases have several sizes
        exact_px: None,
    };
    args.gpu.apply(&mut config);
    let mut pipeline = Pipeline::load(&config)?;
    let on_cpu = config.provider == ProviderChoice::Only(Provider::Cpu);
    let max_abs_error = match (args.max_abs_error, args.min_psnr) {
        (Some(bound), _) => Some(bound),
        (None, Some(_)) => None,
        (None, None) if on_cpu => Some(CPU_MAX_ABS_ERROR),
        (None, None) => Some(GPU_MAX_ABS_ERROR),
    };
    let mut results: Vec<CaseResult> = Vec::with_capacity(cases.len());
    for case in &cases {
        let result = run_case(&mut pipeline, &golden_dir, case)
            .with_context(|| format!("golden case {}", escape_controls(&case.name)))?;
        results.push(result);
    }
    let failed: Vec<&CaseResult> = results
        .iter()
        .filter(|r| {
            // NaN fails both bounds
            max_abs_error.is_some_and(|bound| r.max_abs_error.is_nan() || r.max_abs_error > bound)
                || args
                    .min_psnr
                    .is_some_and(|db| r.psnr_db.is_nan() || r.psnr_db < db)
        })
        .collect();
    let worst = results
        .iter()
        .map(|r| r.max_abs_error)
        .fold(0.0f32, |most, error| {
            if most.is_nan() || error.is_nan() {
                f32::NAN
            } else {
                most.max(error)
            }
        });
    let lowest_psnr = results
        .iter()
        .map(|r| r.psnr_db)
        .fold(f64::INFINITY, |low, db| {
            if low.is_nan() || db.is_nan() {
                f64::NAN
            } else {
                low.min(db)
            }
        });
    if args.json {
        print_line(json!({
            "model": args.model,
            "golden": golden_dir,
            "provider": pipeline.providers(),
            "tf32": args.gpu.tf32,
            "max_abs_error_bound": max_abs_error,
            "min_psnr_bound": args.min_psnr,
            "cases": results,
            "worst_max_abs_error": worst,
            "lowest_psnr_db": lowest_psnr,
            "passed": failed.is_empty(),
        }))?;
    } else {
        for result in &results {
            print_line(format_args!(
                "{}: max |error| {:.2e}, {:.1} dB",
                escape_controls(&result.name),
                result.max_abs_error,
                result.psnr_db
            ))?;
        }
        print_line(format_args!(
            "{} of {} cases within bounds (max |error| <= {}, PSNR >= {}); worst {worst:.2e}, lowest {lowest_psnr:.1} dB",
            results.len() - failed.len(),
            results.len(),
            max_abs_error.map_or("-".to_string(), |b| format!("{b:e}")),
            args.min_psnr.map_or("-".to_string(), |b| format!("{b} dB")),
        ))?;
    }
    if failed.is_empty() {
        Ok(Outcome::Done)
    } else {
        for result in failed {
            stderr_line!(
                "error: golden case {} is outside the bounds: max |error| {:.3e}, {:.1} dB",
                escape_controls(&result.name),
                result.max_abs_error,
                result.psnr_db
            );
        }
        Ok(Outcome::SomeInputsFailed)
    }
}
