//! `run --tile auto` (the default) through the real binary on models/tiny:
//! an image that fits the memory budget runs untiled, byte for byte what
//! `--tile 0` writes; a budget too small for it makes tiles; a bundle
//! without memory figures keeps 512 px tiles and says why.

mod common;

use std::path::Path;

use common::{path_str, photo, tadsr};
use serde_json::Value;

fn json_line(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().next().expect("one --json line")).expect("JSON")
}

fn run_json(input: &Path, output: &Path, extra: &[&str]) -> (Value, String) {
    let mut args = vec![
        "run",
        path_str(input),
        "-o",
        path_str(output),
        "--json",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    let ran = tadsr(&args);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    (json_line(&ran.stdout), ran.stderr)
}

#[test]
fn a_default_run_that_fits_is_identical_to_tile_0_and_differs_from_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    // 200x120 -> 800x480: over one 512 px tile, so the former default tiled it
    photo(200, 120).save(&input).unwrap();
    let (auto, stderr) = run_json(&input, &dir.path().join("auto.png"), &[]);
    assert_eq!(auto["tile"]["reason"], "fits_untiled", "{auto}");
    assert_eq!(auto["tile"]["tile_px"], 0);
    assert!(
        stderr.contains("tiling: untiled: estimated peak"),
        "{stderr}"
    );
    let estimate = auto["tile"]["estimate_bytes"].as_u64().unwrap();
    let budget = auto["tile"]["budget"]["bytes"].as_u64().unwrap();
    assert!(estimate > 0 && estimate <= budget);
    run_json(&input, &dir.path().join("untiled.png"), &["--tile", "0"]);
    run_json(&input, &dir.path().join("tiled.png"), &["--tile", "512"]);
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert!(
        read("auto.png") == read("untiled.png"),
        "auto differs from --tile 0"
    );
    assert!(
        read("auto.png") != read("tiled.png"),
        "tiles changed nothing: the test would not see a tiled default"
    );
}

#[test]
fn a_budget_too_small_for_the_whole_image_makes_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    // 400x300 -> 1600x1200: the pipeline's own whole-image buffers alone
    // (62 B/px) are over 64 MiB, so no untiled plan can fit
    photo(400, 300).save(&input).unwrap();
    let (json, stderr) = run_json(
        &input,
        &dir.path().join("out.png"),
        &["--max-memory", "64M"],
    );
    let tile = &json["tile"];
    assert_ne!(tile["tile_px"], 0, "{json}");
    assert!(
        tile["reason"] == "largest_fitting_tile" || tile["reason"] == "over_budget",
        "{json}"
    );
    assert_eq!(tile["budget"]["source"], "--max-memory");
    assert!(tile["untiled_bytes"].as_u64().unwrap() > 64 << 20);
    assert!(stderr.contains("px tiles"), "{stderr}");
}

#[test]
fn a_bundle_without_memory_figures_keeps_512_px_tiles_and_says_how_to_add_them() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    common::copy_tiny_bundle(&bundle);
    let manifest_path = bundle.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert!(
        manifest.get("memory").is_some(),
        "models/tiny should carry memory figures"
    );
    manifest.as_object_mut().unwrap().remove("memory");
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let input = dir.path().join("in.png");
    photo(200, 120).save(&input).unwrap();
    let output = dir.path().join("out.png");
    let ran = common::run_with_timeout(
        {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
            command.args([
                "run",
                path_str(&input),
                "-o",
                path_str(&output),
                "--json",
                "--threads",
                "1",
                "--provider",
                "cpu",
                "--model",
                path_str(&bundle),
            ]);
            command
        },
        std::time::Duration::from_secs(120),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let json = json_line(&ran.stdout);
    assert_eq!(json["tile"]["reason"], "no_memory_figures");
    assert_eq!(json["tile"]["tile_px"], 512);
    assert!(
        ran.stderr.contains("python -m export.memory"),
        "{}",
        ran.stderr
    );
}
