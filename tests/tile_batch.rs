//! `--tile-batch N` through the real binary on models/tiny (CPU): the tiles
//! of a stage really run as batches of N (ONNX Runtime's own per-node
//! profile shows the convolutions' input batch), and the image is the one
//! of one tile per run.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{path_str, photo, run_with_timeout, tadsr_command};

/// Runs 200x120 -> 800x480 in 256 px tiles (12 per stage) with
/// `--tile-batch batch`, profiling into `profile`; returns the image.
fn upscale(input: &Path, output: &Path, batch: &str, profile: &Path) -> image::RgbImage {
    let mut command = tadsr_command(&[
        "run",
        path_str(input),
        "-o",
        path_str(output),
        "--tile",
        "256",
        "--process-size",
        "0",
        "--threads",
        "1",
        "--tile-batch",
        batch,
        "-q",
    ]);
    command.env("TADSR_EDGE_ORT_PROFILE", profile);
    let ran = run_with_timeout(command, Duration::from_secs(120));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    image::open(output).unwrap().to_rgb8()
}

/// The first dimension of every Conv input in the profiles of `component`.
fn conv_batches(profile: &Path, component: &str) -> Vec<u64> {
    let mut batches = Vec::new();
    for entry in std::fs::read_dir(profile).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{component}-")) {
            continue;
        }
        let events: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for event in events.as_array().unwrap() {
            let args = &event["args"];
            let op = args["op_name"].as_str().unwrap_or("");
            if !op.contains("Conv") {
                continue;
            }
            if let Some(first) = args["input_type_shape"][0]["float"][0].as_u64() {
                batches.push(first);
            }
        }
    }
    batches
}

#[test]
fn tiles_run_in_batches_and_give_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    photo(200, 120).save(&input).unwrap();
    let (one, four) = (dir.path().join("p1"), dir.path().join("p4"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&four).unwrap();

    let single = upscale(&input, &dir.path().join("one.png"), "1", &one);
    let batched = upscale(&input, &dir.path().join("four.png"), "4", &four);

    let unet_single = conv_batches(&one, "unet");
    let unet_batched = conv_batches(&four, "unet");
    assert!(!unet_single.is_empty() && unet_single.iter().all(|&b| b == 1));
    assert!(unet_batched.contains(&4), "{unet_batched:?}");
    // the VAE stages too (the tiled graphs share GroupNorm statistics, which
    // have no batch axis and are the same for every tile)
    assert!(conv_batches(&four, "vae_decoder").contains(&4));
    assert!(conv_batches(&four, "vae_encoder").contains(&4));

    assert_eq!(single.dimensions(), (800, 480));
    assert_eq!(single.dimensions(), batched.dimensions());
    // a batched convolution may round differently in the last bit: at most
    // one level anywhere, almost everywhere none
    let differing = single
        .pixels()
        .zip(batched.pixels())
        .flat_map(|(a, b)| a.0.into_iter().zip(b.0).map(|(x, y)| x.abs_diff(y)))
        .inspect(|d| assert!(*d <= 1, "a difference of {d} levels"))
        .filter(|d| *d > 0)
        .count();
    assert!(
        differing * 1000 < 800 * 480 * 3,
        "{differing} values differ"
    );
}
