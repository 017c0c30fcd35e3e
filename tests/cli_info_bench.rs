//! `tadsr-edge info` and `tadsr-edge bench` through the real binary on
//! models/tiny: their success paths, text and `--json`, checked against the
//! manifest read here independently and against the reports' own arithmetic.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod common;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> String {
    repo().join("models/tiny").to_str().unwrap().to_string()
}

fn tadsr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout(output)).expect("stdout is one JSON object")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(repo().join("models/tiny/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn info_json_describes_the_runtime_and_the_bundle() {
    let report = json(&tadsr(&["info", "--model", &tiny(), "--json"]));
    let manifest = manifest();

    let ort = &report["onnxruntime"];
    let library = ort["library"].as_str().expect("onnxruntime.library");
    assert!(Path::new(library).is_file(), "{library}");
    let version = ort["version"].as_str().expect("onnxruntime.version");
    assert!(
        version.split('.').count() == 3 && library.contains(version),
        "version {version} of {library}"
    );
    assert!(ort["found_by"].is_string());

    let providers = report["providers"].as_array().expect("providers");
    let names: Vec<&str> = providers
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tensorrt", "cuda", "cpu"]);
    for provider in providers {
        let usable = provider["usable"].as_bool().expect("usable");
        // usable exactly when there is no reason; a reason is never empty
        match provider["reason"].as_str() {
            Some(reason) => assert!(!usable && !reason.is_empty(), "{provider}"),
            None => assert!(usable, "{provider}"),
        }
        if provider["name"] == "cpu" {
            assert!(usable && provider["gpu"].is_null(), "{provider}");
        }
    }

    let model = &report["model"];
    assert_eq!(
        model["graph_forms"],
        serde_json::json!({"group_norm": "rowwise", "attention": "onnx", "fusions": "none"})
    );
    assert_eq!(model["name"], manifest["name"]);
    assert_eq!(model["precision"], manifest["precision"]);
    assert_eq!(model["format_version"], manifest["format_version"]);
    assert_eq!(model["defaults"], manifest["defaults"]);
    assert_eq!(model["provenance"], manifest["provenance"]);
    assert_eq!(model["prompt_embeds_shape"], manifest["prompt"]["shape"]);
    let mut components: Vec<&String> = manifest["components"].as_object().unwrap().keys().collect();
    components.sort();
    let listed: Vec<&str> = model["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(listed, components, "components");
    assert_eq!(
        model["encoder_segments"].as_u64(),
        Some(
            manifest["vae_encoder_segments"]["segments"]
                .as_array()
                .unwrap()
                .len() as u64
        )
    );
    assert!(model["bytes"].as_u64().unwrap() > 1_000_000);
}

#[test]
fn info_text_names_the_library_the_providers_and_the_bundle() {
    let output = tadsr(&["info", "--model", &tiny()]);
    assert!(output.status.success());
    let text = stdout(&output);
    let json_report = json(&tadsr(&["info", "--model", &tiny(), "--json"]));
    for needle in [
        json_report["onnxruntime"]["version"].as_str().unwrap(),
        json_report["onnxruntime"]["library"].as_str().unwrap(),
        "cpu",
        manifest()["name"].as_str().unwrap(),
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// `bench --model tiny --provider cpu --size SIZE --runs RUNS --warmup 0`
/// plus `extra`.
fn bench(size: &str, runs: &str, extra: &[&str]) -> Output {
    let tiny = tiny();
    let mut args = vec![
        "bench",
        "--model",
        &tiny,
        "--provider",
        "cpu",
        "--size",
        size,
        "--runs",
        runs,
        "--warmup",
        "0",
    ];
    args.extend_from_slice(extra);
    tadsr(&args)
}

#[test]
fn bench_json_reports_consistent_timings() {
    let (size, runs) = (64u64, 2u64);
    let report = json(&bench(
        &size.to_string(),
        &runs.to_string(),
        &["--tile", "0", "--threads", "1", "--json"],
    ));
    assert_eq!(report["size"], size);
    assert_eq!(report["runs"], runs);
    assert_eq!(report["tile"], 0);
    assert_eq!(report["tile_batch"], 1);
    // the bundle's default timestep (models/tiny's manifest)
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/tiny/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["timestep"], manifest["defaults"]["timestep"]);
    for stage in ["vae_encoder", "unet", "vae_decoder"] {
        assert_eq!(report["provider"][stage], "cpu", "{stage}");
    }
    let stat = |value: &Value, key: &str| value[key].as_f64().unwrap_or_else(|| panic!("{key}"));
    let stages = report["stages_ms"].as_object().expect("stages_ms");
    for stage in [
        "preprocess",
        "encoder",
        "unet",
        "decoder",
        "color_fix",
        "write",
    ] {
        let timing = &stages[stage];
        let (min, p50, p95) = (
            stat(timing, "min"),
            stat(timing, "p50"),
            stat(timing, "p95"),
        );
        assert!(0.0 <= min && min <= p50 && p50 <= p95, "{stage}: {timing}");
    }
    for stage in ["encoder", "unet", "decoder"] {
        assert!(stat(&stages[stage], "min") > 0.0, "{stage} ran");
    }
    let end_to_end = &report["end_to_end_ms"];
    let p50 = stat(end_to_end, "p50");
    let slowest_stage_min = ["encoder", "unet", "decoder"]
        .iter()
        .map(|s| stat(&stages[*s], "min"))
        .fold(0.0, f64::max);
    assert!(stat(end_to_end, "min") >= slowest_stage_min);
    // the same runs without writing the PNG
    let upscale = &report["upscale_ms"];
    assert!(stat(upscale, "min") >= slowest_stage_min);
    assert!(stat(upscale, "min") <= stat(end_to_end, "min"));
    assert!(stat(upscale, "p50") <= p50);
    let megapixels = (size * size) as f64 / 1e6;
    let throughput = stat(&report, "output_megapixels_per_second");
    assert!(
        (throughput - megapixels / (p50 / 1e3)).abs() <= 1e-9 * throughput.max(1.0),
        "throughput {throughput} vs {megapixels} MP in {p50} ms"
    );
    let share = stat(&report, "rust_side_share_p50");
    assert!((0.0..=1.0).contains(&share), "{share}");
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 10 << 20);
    assert!(stat(&report, "session_creation_ms") > 0.0);
}

#[test]
fn bench_json_records_the_tiling_and_timestep_it_ran_with() {
    let report = json(&bench(
        "128",
        "1",
        &[
            "--tile",
            "64",
            "--tile-overlap",
            "16",
            "--tile-batch",
            "2",
            "-t",
            "300",
            "--json",
        ],
    ));
    assert_eq!(report["tile"], 64);
    assert_eq!(report["tile_overlap"], 16);
    assert_eq!(report["tile_batch"], 2);
    assert_eq!(report["timestep"], 300);
}

#[test]
fn bench_json_holds_the_tile_auto_estimate_beside_the_measured_peak() {
    let report = |tile: &str| json(&bench("512", "1", &["--tile", tile, "--json"]));
    let (untiled, tiled) = (report("0"), report("256"));
    for r in [&untiled, &tiled] {
        // on the CPU nothing is read from a GPU
        assert_eq!(r["device_memory_used_bytes"], Value::Null, "{r}");
    }
    let estimate = |r: &Value| {
        r["estimated_peak_bytes"]
            .as_u64()
            .expect("tiny has figures")
    };
    assert!(estimate(&tiled) < estimate(&untiled));
    // The estimate is the bundle's measured figures (weights + activations at 512 px +
    // whole-image buffers), built to err high; the run's peak RSS also holds the ONNX Runtime
    // library and allocator slack. Seen here: 301 MiB estimated, 275 MiB peak. Weights alone
    // (78 MB) would fail the first bound; summing the stages' activations where the CPU hands
    // each stage's back (589 MiB) the second.
    let rss = untiled["peak_rss_bytes"]
        .as_u64()
        .expect("Linux reports a peak");
    let est = estimate(&untiled);
    assert!(
        rss as f64 <= 1.5 * est as f64 && est as f64 <= 1.8 * rss as f64,
        "estimate {est} vs peak RSS {rss}"
    );
}

#[test]
fn bench_json_says_which_graphs_were_opened_for_one_shape() {
    let report = |extra: &[&str]| {
        let mut args = vec!["--tile", "0", "--threads", "1", "--json"];
        args.extend_from_slice(extra);
        json(&bench("64", "1", &args))
    };
    // auto: pinned on GPU providers only; this run is on the CPU
    let auto = report(&[]);
    for stage in ["vae_encoder", "unet", "vae_decoder"] {
        assert_eq!(auto["static_shapes"][stage], Value::Null, "{stage}: {auto}");
    }
    assert_eq!(auto["cuda_options"], serde_json::json!([]));
    let pinned = report(&["--static-shapes", "on"]);
    for stage in ["vae_encoder", "unet", "vae_decoder"] {
        assert_eq!(
            pinned["static_shapes"][stage],
            serde_json::json!([64, 64]),
            "{stage}: {pinned}"
        );
    }
}

#[test]
fn gpu_settings_with_the_cpu_provider_are_usage_errors() {
    for extra in [
        &["--cuda-option", "prefer_nhwc=1"][..],
        &["--device", "0"][..],
    ] {
        let mut args = vec!["--tile", "0"];
        args.extend_from_slice(extra);
        let output = bench("64", "1", &args);
        assert_eq!(output.status.code(), Some(2), "{extra:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--provider cpu"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    // a setting tadsr-edge has its own flag for names the flag
    let output = bench("64", "1", &["--cuda-option", "use_tf32=1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tf32"));
}

#[test]
fn bench_tile_auto_decides_as_run_does() {
    let with_tile = |tile: &str| {
        json(&bench(
            "128",
            "1",
            &["--tile", tile, "--threads", "1", "--json"],
        ))
    };
    // 128 px fits any machine that runs the tests: untiled, and why
    let auto = with_tile("auto");
    assert_eq!(auto["tile"], 0, "{auto}");
    assert_eq!(auto["tile_decision"]["reason"], "fits_untiled", "{auto}");
    assert!(auto["tile_decision"]["budget"]["bytes"].as_u64().unwrap() > 0);
    // a number keeps its meaning
    let given = with_tile("128");
    assert_eq!(given["tile"], 128);
    assert_eq!(given["tile_decision"]["reason"], "requested");
}

#[test]
fn bench_text_shows_the_stages() {
    let output = bench("64", "1", &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    for needle in ["encoder", "unet", "decoder", "p50"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// `tadsr-edge ... | head -c1`: the reader goes away before the report is
/// written; that is a normal end (exit 0, no panic), as for any Unix tool.
fn ends_normally_into_a_closed_pipe(args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // closed before the binary writes (it loads ONNX Runtime first)
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("the binary ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn a_closed_stdout_is_a_normal_end() {
    ends_normally_into_a_closed_pipe(&["info", "--model", &tiny(), "--json"]);
    ends_normally_into_a_closed_pipe(&["info", "--model", &tiny()]);
    ends_normally_into_a_closed_pipe(&["--help"]);
}

#[test]
fn golden_reports_every_case_against_the_pytorch_references() {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("models/tiny/golden/cases.json")).unwrap(),
    )
    .unwrap();
    let report = json(&tadsr(&["golden", "--model", &tiny(), "--json"]));
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["provider"]["unet"], "cpu");
    let results = report["cases"].as_array().expect("cases");
    let names: Vec<&Value> = results.iter().map(|r| &r["name"]).collect();
    let expected: Vec<&Value> = cases.iter().map(|c| &c["name"]).collect();
    assert_eq!(names, expected, "every case, in order");
    let bound = report["max_abs_error_bound"].as_f64().unwrap();
    assert!(
        (bound - 1e-4).abs() < 1e-9,
        "the CPU bound is 1e-4: {bound}"
    );
    let worst = results
        .iter()
        .map(|r| r["max_abs_error"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(worst > 0.0 && worst <= bound, "worst {worst}");
    assert_eq!(report["worst_max_abs_error"].as_f64().unwrap(), worst);
}

#[test]
fn golden_fails_cases_outside_a_tighter_bound_and_names_them() {
    let output = tadsr(&["golden", "--model", &tiny(), "--max-abs-error", "1e-9"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "cases over the bound fail the command"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: golden case square_t100 is outside the bounds"),
        "{stderr}"
    );
    assert!(
        stdout(&output).contains("0 of 11 cases within bounds"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn golden_on_a_provider_that_cannot_run_here_is_a_clear_error() {
    if json(&tadsr(&["info", "--json"]))["providers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "cuda" && p["usable"] == true)
    {
        return; // a GPU machine: nothing to refuse
    }
    let output = tadsr(&["golden", "--model", &tiny(), "--provider", "cuda"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("execution provider cuda is not usable here:"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

fn plan(budget: &str, extra: &[&str]) -> Value {
    let tiny = tiny();
    let mut args = vec!["info", "--model", &tiny, "--json", "--max-memory", budget];
    args.extend_from_slice(extra);
    json(&tadsr(&args))["plan"].clone()
}

#[test]
fn info_plan_says_what_tile_auto_would_choose_on_the_cpu_and_on_a_gpu() {
    let cpu = plan("64G", &["--plan", "512x512", "--plan-on", "cpu"]);
    let gpu = plan("64G", &["--plan", "512x512", "--plan-on", "gpu"]);
    for p in [&cpu, &gpu] {
        assert_eq!(
            (p["width"].as_u64(), p["height"].as_u64()),
            (Some(512), Some(512))
        );
        assert_eq!(p["decision"]["reason"], "fits_untiled", "{p}");
        assert_eq!(p["decision"]["tile_px"], 0);
    }
    assert_eq!(
        (cpu["on"].as_str(), gpu["on"].as_str()),
        (Some("cpu"), Some("gpu"))
    );
    // The two differ by the manifest's figures, read here: a GPU holds the graph files as weights
    // and keeps every stage's activations; the CPU holds the measured weights and hands each
    // stage's activations back.
    let manifest = manifest();
    let stages = ["vae_encoder", "unet", "vae_decoder"];
    let figures = &manifest["memory"]["components"];
    let measured: u64 = stages
        .iter()
        .map(|s| figures[s]["weights_bytes"].as_u64().unwrap())
        .sum();
    let files: u64 = stages
        .iter()
        .map(|s| {
            let file = manifest["components"][s]["file"].as_str().unwrap();
            std::fs::metadata(repo().join("models/tiny").join(file))
                .unwrap()
                .len()
        })
        .sum();
    let at_512: Vec<u64> = stages
        .iter()
        .map(|s| {
            let points = figures[s]["activations"].as_array().unwrap();
            let point = points
                .iter()
                .find(|p| p[0] == 512 * 512)
                .expect("measured at 512 px");
            point[1].as_u64().unwrap()
        })
        .collect();
    let (sum, largest) = (at_512.iter().sum::<u64>(), *at_512.iter().max().unwrap());
    let estimate = |p: &Value| p["decision"]["estimate_bytes"].as_u64().unwrap();
    assert_eq!(
        estimate(&gpu) + measured + largest,
        estimate(&cpu) + files + sum
    );

    // a small budget: the largest tile that fits, or the smallest and a warning
    let tight = plan("1200M", &["--plan", "4096x2048", "--plan-on", "cpu"]);
    assert_eq!(
        tight["decision"]["reason"], "largest_fitting_tile",
        "{tight}"
    );
    let side = tight["decision"]["tile_px"].as_u64().unwrap();
    assert!((256..4096).contains(&side) && side.is_multiple_of(64));
    assert!(estimate(&tight) <= 1200 << 20);
    let over = plan("100M", &["--plan", "4096x2048"]);
    assert_eq!(over["decision"]["reason"], "over_budget", "{over}");
    assert_eq!(over["decision"]["tile_px"], 256);
}

#[test]
fn on_a_gpu_auto_tiles_stay_within_the_short_side() {
    // a wide strip that does not fit untiled: on the CPU (balanced tiles)
    // a tile may be wider than the strip is high, on a GPU (every tile sent
    // square) that tile would be padded: auto stops at the short side
    let cpu = plan("4G", &["--plan", "4096x600", "--plan-on", "cpu"]);
    let gpu = plan("4G", &["--plan", "4096x600", "--plan-on", "gpu"]);
    for p in [&cpu, &gpu] {
        assert_eq!(p["decision"]["reason"], "largest_fitting_tile", "{p}");
    }
    assert!(cpu["decision"]["tile_px"].as_u64().unwrap() > 600, "{cpu}");
    assert_eq!(gpu["decision"]["tile_px"], 600, "{gpu}");
}

#[test]
fn info_plan_refuses_what_is_not_an_output_size() {
    let tiny = tiny();
    for bad in ["512", "0x512", "512x", "70000x512", "5x-5", "axb"] {
        let output = tadsr(&["info", "--model", &tiny, "--plan", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--plan"), "{bad}: {stderr}");
    }
    // --plan needs a bundle, --plan-on a --plan
    assert_eq!(tadsr(&["info", "--plan", "64x64"]).status.code(), Some(2));
    assert_eq!(
        tadsr(&["info", "--model", &tiny, "--plan-on", "gpu"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn info_plan_with_memory_figures_too_large_to_add_says_the_manifest_looks_damaged() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_tiny_bundle(dir.path());
    let mut manifest = manifest();
    for stage in ["unet", "vae_decoder"] {
        manifest["memory"]["components"][stage]["weights_bytes"] = Value::from(u64::MAX);
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    let model = dir.path().to_str().unwrap();
    let args = [
        "info",
        "--model",
        model,
        "--plan",
        "512x512",
        "--max-memory",
        "4G",
    ];
    let output = tadsr(&args);
    assert!(output.status.success());
    let text = stdout(&output);
    // summed with wrapping, these figures once gave "untiled: estimated peak 0.24 GiB"
    assert!(text.contains("manifest.json looks damaged"), "{text}");
    let plan = json(&tadsr(&[&args[..], &["--json"]].concat()))["plan"].clone();
    assert_eq!(plan["decision"]["estimate_bytes"], Value::from(u64::MAX));
    assert_eq!(plan["decision"]["reason"], "over_budget");
}
