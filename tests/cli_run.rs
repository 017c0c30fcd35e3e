//! `tadsr-edge run` through the real binary on models/tiny: input kinds,
//! failures, batches, naming, tiling modes. Inputs are made from the
//! committed example photos.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use image::{DynamicImage, GenericImageView, ImageEncoder};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> DynamicImage {
    image::open(repo().join("examples").join(name)).expect("example photo")
}

fn tadsr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args(args)
        .args([
            "--model",
            repo().join("models/tiny").to_str().unwrap(),
            "--provider",
            "cpu",
        ])
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Files in a folder, hidden ones included (a leftover temporary file would show).
fn folder_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A small RGB input (keeps the runs short: 48x40 -> 192x160 with --process-size 0).
fn small_rgb() -> DynamicImage {
    example("coffee.png").resize_exact(48, 40, image::imageops::FilterType::Lanczos3)
}

/// `run INPUT -o OUTPUT --process-size 0 EXTRA...` (plain 4x: small inputs stay small).
fn upscale(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        path_str(input),
        "-o",
        path_str(output),
        "--process-size",
        "0",
    ];
    args.extend_from_slice(extra);
    tadsr(&args)
}

#[test]
fn one_file_to_one_file_with_the_right_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    small_rgb().save(&input).unwrap();
    let output = dir.path().join("result.png");
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&output),
        "--process-size",
        "0",
        "-q",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let result = image::open(&output).unwrap();
    assert_eq!(result.dimensions(), (192, 160));
    assert_eq!(result.color(), image::ColorType::Rgb8);
}

/// `--tile 64` alone works: the default overlap (64) would be more than
/// half the tile, so it becomes 32, exactly what `--tile-overlap 32` gives;
/// an overlap given too large stays a usage error.
#[test]
fn small_tiles_take_an_overlap_that_fits_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    small_rgb().save(&input).unwrap();
    let run_tiled = |name: &str, extra: &[&str]| {
        let output = dir.path().join(name);
        let mut args = vec![
            "run",
            path_str(&input),
            "-o",
            path_str(&output),
            "--process-size",
            "0",
            "--tile",
            "64",
            "-q",
        ];
        args.extend_from_slice(extra);
        (tadsr(&args), output)
    };
    let (run, default_output) = run_tiled("default.png", &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (run, given_output) = run_tiled("given.png", &["--tile-overlap", "32"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (run, other_output) = run_tiled("other.png", &["--tile-overlap", "16"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let pixels = |path: &Path| image::open(path).unwrap().to_rgb8().into_raw();
    assert_eq!(pixels(&default_output), pixels(&given_output));
    assert_ne!(
        pixels(&default_output),
        pixels(&other_output),
        "the overlap changes the blend, so equality above says 32 was used"
    );
    let (run, _) = run_tiled("too-wide.png", &["--tile-overlap", "64"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("at most half the tile"),
        "{}",
        stderr(&run)
    );
}

/// Output folders the run creates are removed again when nothing could be
/// written into them; a folder that existed stays.
#[test]
fn folders_created_for_outputs_that_all_failed_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.png");
    std::fs::write(&input, b"not an image").unwrap();
    let out = dir.path().join("new").join("deeper");
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        &format!("{}/", path_str(&out)),
        "-q",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(!dir.path().join("new").exists(), "{}", stderr(&run));
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let run = tadsr(&["run", path_str(&input), "-o", path_str(&existing), "-q"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(existing.is_dir());
}

/// `--cuda-graph` where no graph can run as one (here `auto` finds no
/// usable GPU) says so instead of silently running without.
#[test]
fn a_cuda_graph_asked_for_and_not_applied_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    small_rgb().save(&input).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args([
            "run",
            path_str(&input),
            "-o",
            path_str(&dir.path().join("o.png")),
        ])
        .args(["--process-size", "0", "--cuda-graph", "--model"])
        .arg(repo().join("models/tiny"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    if !stderr(&run).contains("unet on cpu") {
        return; // a machine where auto found a GPU
    }
    assert!(
        stderr(&run).contains("note: --cuda-graph is not applied"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn a_folder_of_one_size_opens_the_graphs_for_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for name in ["a.png", "b.png"] {
        small_rgb().save(inputs.join(name)).unwrap();
    }
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            path_str(&inputs),
            "-o",
            path_str(out),
            "--process-size",
            "0",
            "--tile",
            "0",
        ];
        args.extend_from_slice(extra);
        tadsr(&args)
    };
    // 48x40 inputs, 4x: the graphs see 192x160 (width x height)
    let out = dir.path().join("out");
    let pinned = run(&out, &["--static-shapes", "on"]);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    let text = stderr(&pinned);
    assert!(
        text.contains("graphs opened for one shape (--static-shapes): vae_encoder 192x160, unet 192x160, vae_decoder 192x160"),
        "{text}"
    );
    assert!(!text.contains("reopening"), "{text}");
    assert_eq!(folder_names(&out), ["a.png", "b.png"]);
    // auto on the CPU: free graphs, no note
    let free = run(&dir.path().join("out-free"), &[]);
    assert!(free.status.success(), "{}", stderr(&free));
    assert!(
        !stderr(&free).contains("--static-shapes"),
        "{}",
        stderr(&free)
    );
}

#[test]
fn output_is_upscale_times_the_original_when_the_minimum_size_rule_applies() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.png");
    example("chelsea.png")
        .resize_exact(30, 21, image::imageops::FilterType::Lanczos3)
        .save(&input)
        .unwrap();
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("x.png")),
        "--process-size",
        "128",
        "-q",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        image::open(dir.path().join("x.png")).unwrap().dimensions(),
        (120, 84)
    );
}

#[test]
fn gray_rgba_and_16_bit_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = small_rgb();
    rgb.grayscale().save(dir.path().join("gray.png")).unwrap();
    let mut rgba = rgb.to_rgba8();
    for (x, _, pixel) in rgba.enumerate_pixels_mut() {
        pixel.0[3] = (x * 5).min(255) as u8; // a horizontal alpha ramp
    }
    rgba.save(dir.path().join("rgba.png")).unwrap();
    DynamicImage::ImageRgb16(rgb.to_rgb16())
        .save(dir.path().join("deep.png"))
        .unwrap();
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(dir.path()),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(folder_names(&out), ["deep.png", "gray.png", "rgba.png"]);

    let gray = image::open(out.join("gray.png")).unwrap();
    assert_eq!(
        (gray.dimensions(), gray.color()),
        ((192, 160), image::ColorType::Rgb8)
    );

    let rgba_out = image::open(out.join("rgba.png")).unwrap().to_rgba8();
    assert_eq!(rgba_out.dimensions(), (192, 160));
    let alpha_left = rgba_out.get_pixel(2, 80).0[3];
    let alpha_right = rgba_out.get_pixel(189, 80).0[3];
    assert!(
        alpha_left < 10 && alpha_right > 200,
        "alpha ramp kept: {alpha_left} .. {alpha_right}"
    );

    let deep = image::open(out.join("deep.png")).unwrap();
    assert_eq!(
        deep.color(),
        image::ColorType::Rgb16,
        "16-bit in, 16-bit out"
    );
    let uses_low_bits = deep
        .to_rgb16()
        .pixels()
        .any(|p| p.0.iter().any(|v| v % 257 != 0));
    assert!(uses_low_bits, "16-bit output carries more than 8 bits");
}

/// A JPEG with an EXIF APP1 segment whose orientation tag is `orientation`.
fn jpeg_with_orientation(image: &DynamicImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .write_image(
            image.to_rgb8().as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes()); // first IFD at offset 8
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut with_exif = jpeg[..2].to_vec(); // SOI
    with_exif.extend_from_slice(&[0xFF, 0xE1]);
    with_exif.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    with_exif.extend_from_slice(&app1);
    with_exif.extend_from_slice(&jpeg[2..]);
    with_exif
}

#[test]
fn exif_orientation_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rotated.jpg");
    std::fs::write(&input, jpeg_with_orientation(&small_rgb(), 6)).unwrap(); // 6: rotate 90 degrees clockwise
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("r.png")),
        "--process-size",
        "0",
        "-q",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        image::open(dir.path().join("r.png")).unwrap().dimensions(),
        (160, 192),
        "48x40 turned upright is 40x48"
    );
    // --dry-run reads only headers, and says the same size
    let planned = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("r.png")),
        "--process-size",
        "0",
        "--dry-run",
        "--json",
    ]);
    assert!(planned.status.success(), "{}", stderr(&planned));
    let plan: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    assert_eq!(plan["input_size"], serde_json::json!([40, 48]), "{plan}");
    assert_eq!(plan["output_size"], serde_json::json!([160, 192]), "{plan}");
}

#[test]
fn a_batch_goes_on_past_bad_files_and_leaves_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    small_rgb().save(inputs.join("a_good.png")).unwrap();
    small_rgb()
        .grayscale()
        .save(inputs.join("c_good.jpg"))
        .unwrap();
    std::fs::write(inputs.join("b_text.png"), b"this is not an image").unwrap();
    std::fs::write(inputs.join("d_empty.png"), b"").unwrap();
    let mut png = Vec::new();
    small_rgb()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(inputs.join("e_truncated.png"), &png[..png.len() / 2]).unwrap();
    let missing = dir.path().join("missing.png");
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(&inputs),
        path_str(&missing),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error_lines.len(), 4, "one line per bad input:\n{err}");
    for bad in [
        "b_text.png",
        "d_empty.png",
        "e_truncated.png",
        "missing.png",
    ] {
        assert!(
            error_lines.iter().any(|l| l.contains(bad)),
            "{bad} reported:\n{err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        folder_names(&out),
        ["a_good.png", "c_good.png"],
        "only complete outputs, no temporary files"
    );
}

#[test]
fn an_input_over_the_pixel_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.png");
    small_rgb().save(&input).unwrap();
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("o.png")),
        "--max-pixels",
        "1000",
        "-q",
    ]);
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    assert!(
        err.starts_with("error: ") && err.contains("--max-pixels"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.path().join("o.png").exists());
}

#[test]
fn usage_and_model_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    small_rgb().save(&input).unwrap();
    let o = path_str(&dir.path().join("o.png")).to_string();
    for args in [
        vec!["run", path_str(&input), "-o", &o, "-t", "-1"],
        vec!["run", path_str(&input), "-o", &o, "-t", "1000"],
        vec!["run", path_str(&input), "-o", &o, "--tile", "100"],
        vec!["run", path_str(&input), "-o", &o, "--color-fix", "sepia"],
        vec!["run", path_str(&input), path_str(&input), "-o", &o],
    ] {
        let run = tadsr(&args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
        assert!(!stderr(&run).contains("panicked"));
    }
    let run = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args([
            "run",
            path_str(&input),
            "-o",
            &o,
            "--model",
            path_str(dir.path()),
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("manifest.json"), "{}", stderr(&run));
    assert!(!dir.path().join("o.png").exists());
}

#[test]
fn cuda_where_it_cannot_be_used_is_an_error_not_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    small_rgb().save(&input).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args([
            "run",
            path_str(&input),
            "-o",
            path_str(&dir.path().join("o.png")),
        ])
        .args([
            "--model",
            repo().join("models/tiny").to_str().unwrap(),
            "--provider",
            "cuda",
        ])
        .output()
        .unwrap();
    if run.status.success() {
        return; // a machine with a usable CUDA provider
    }
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("cuda"), "{}", stderr(&run));
}

#[test]
fn several_timesteps_name_outputs_and_json_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cat.png");
    small_rgb().save(&input).unwrap();
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&out),
        "-t",
        "200,800",
        "--process-size",
        "0",
        "--json",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(folder_names(&out), ["cat_t200.png", "cat_t800.png"]);
    let lines: Vec<serde_json::Value> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["timestep"], 200);
    assert_eq!(lines[1]["output_size"], serde_json::json!([192, 160]));
    assert_eq!(lines[0]["provider"]["unet"], "cpu");
    assert!(lines[0]["ms"]["unet"].as_f64().unwrap() > 0.0);
    let a = image::open(out.join("cat_t200.png")).unwrap().to_rgb8();
    let b = image::open(out.join("cat_t800.png")).unwrap().to_rgb8();
    assert_ne!(a, b, "different timesteps give different images");
}

/// `--tiling latent` under the default `--tile auto` tiles the UNet as the
/// authors do even when the image fits untiled (their tiling is part of
/// their output; an earlier auto ran such images untiled, found against the
/// authors' own code by scripts/authors_parity.py).
#[test]
fn latent_tiling_tiles_an_output_over_768_pixels_that_fits_untiled() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    example("coffee.png")
        .resize_exact(200, 196, image::imageops::FilterType::Lanczos3)
        .save(&input)
        .unwrap();
    let output = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let run = upscale(
            &input,
            &path,
            &[&["--tiling", "latent", "-q"], extra].concat(),
        );
        assert!(run.status.success(), "{}", stderr(&run));
        image::open(&path).unwrap().to_rgb8()
    };
    let auto = output("auto.png", &["--max-memory", "64G"]);
    assert_eq!(auto.dimensions(), (800, 784));
    assert_eq!(
        auto,
        output("tiles.png", &["--tile", "768"]),
        "auto = the authors' tiles"
    );
    assert_ne!(
        auto,
        output("whole.png", &["--tile", "0"]),
        "--tile 0 is untiled"
    );
}

/// Beyond 1088 px the authors' code encodes in tiles with GroupNorm
/// statistics pooled layer by layer. models/tiny has encoder segments (one
/// pass); without them, or when their activations would not fit the
/// memory, the tiled encoder runs one pass per layer. Both reach the same
/// statistics (the segments are that graph cut at its GroupNorms), so the
/// same image; their distance to PyTorch is tests/golden_parity.rs's.
#[test]
fn latent_tiling_encodes_beyond_1088_px_alike_by_segments_and_by_passes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    example("coffee.png")
        .resize_exact(288, 160, image::imageops::FilterType::Lanczos3)
        .save(&input)
        .unwrap();
    let without = dir.path().join("no-segments");
    common::copy_tiny_bundle(&without);
    let manifest_path = without.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert!(
        manifest
            .as_object_mut()
            .unwrap()
            .remove("vae_encoder_segments")
            .is_some(),
        "models/tiny should carry encoder segments"
    );
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    std::fs::remove_dir_all(without.join("vae_encoder/segments")).unwrap();

    let output = |name: &str, model: &Path, extra: &[&str]| {
        let path = dir.path().join(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
        command
            .args(["run", path_str(&input), "-o", path_str(&path)])
            .args(["--model", path_str(model), "--provider", "cpu"])
            .args(["--process-size", "0", "--tiling", "latent", "-t", "700"])
            .args(extra);
        let run = command.output().unwrap();
        assert!(run.status.success(), "{}", stderr(&run));
        (image::open(&path).unwrap().to_rgb8(), stderr(&run))
    };
    let (segmented, said) = output("segments.png", &common::tiny_model(), &[]);
    assert_eq!(segmented.dimensions(), (1152, 640));
    assert!(
        said.contains("with the bundle's encoder segments"),
        "{said}"
    );
    let (passes, said) = output("passes.png", &without, &[]);
    assert!(
        said.contains("one pass of the encoder per GroupNorm layer"),
        "{said}"
    );
    let (short_of_memory, said) = output(
        "little.png",
        &common::tiny_model(),
        &["--max-memory", "64M"],
    );
    assert!(said.contains("encoding it by passes"), "{said}");
    assert_eq!(short_of_memory, passes, "the fallback is the passes");
    // the same ONNX operators on the same inputs; a level of rounding at most
    let most = segmented
        .as_raw()
        .iter()
        .zip(passes.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(most <= 1, "segments and passes differ by {most} levels");
    // and the authors' tiles matter: the whole image encoded at once differs
    let (whole, _) = output("whole.png", &without, &["--tile", "0"]);
    assert_ne!(whole, passes);
}

/// `--rounding truncate` makes 8-bit samples as the authors' script does
/// (torchvision's ToPILImage truncates, before and after the color fix):
/// with no color fix that is the rounded output, less one level on about
/// half the samples and never more; a 16-bit input still gives 8 bits, as
/// theirs does. How close it comes to their PNGs: scripts/authors_parity.py.
#[test]
fn truncating_rounding_is_the_authors_8_bit_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    common::photo(96, 80).save(&input).unwrap();
    let output = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let run = upscale(&input, &path, extra);
        assert!(run.status.success(), "{}", stderr(&run));
        image::open(&path).unwrap()
    };
    let rounded = output("round.png", &["--color-fix", "none"]).to_rgb8();
    let truncated = output(
        "truncate.png",
        &["--color-fix", "none", "--rounding", "truncate"],
    )
    .to_rgb8();
    let mut lower = 0usize;
    for (r, t) in rounded.as_raw().iter().zip(truncated.as_raw()) {
        assert!(*r == *t || *r == t + 1, "rounded {r}, truncated {t}");
        lower += usize::from(r != t);
    }
    let share = lower as f64 / rounded.as_raw().len() as f64;
    assert!(
        (0.3..0.7).contains(&share),
        "{share} of the samples one level lower"
    );
    // with the color fix in between, the two differ too (not only by the last step)
    let adain_round = output("adain.png", &[]).to_rgb8();
    let adain_truncate = output("adain-truncate.png", &["--rounding", "truncate"]).to_rgb8();
    assert_ne!(adain_round, adain_truncate);

    let wide = dir.path().join("in16.png");
    image::DynamicImage::ImageRgb16(common::photo(96, 80).to_rgb16())
        .save(&wide)
        .unwrap();
    let path = dir.path().join("wide.png");
    let run = upscale(&wide, &path, &["--rounding", "truncate"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(image::open(&path).unwrap().color(), image::ColorType::Rgb8);
    let path = dir.path().join("wide-round.png");
    let run = upscale(&wide, &path, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(image::open(&path).unwrap().color(), image::ColorType::Rgb16);
}

#[test]
fn help_shows_examples() {
    for args in [
        vec!["--help"],
        vec!["info", "--help"],
        vec!["run", "--help"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
            .args(&args)
            .output()
            .unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains("Examples:"), "{args:?}:\n{text}");
    }
}

/// Three inputs; SIGINT is sent once the second one is being computed (the
/// binary's `computing 2/3` line on stderr, no sleep), which takes far
/// longer than the signal needs: the first output is complete, the second
/// is dropped, the third never starts.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_batch_and_leaves_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    small_rgb().save(inputs.join("a.png")).unwrap();
    for name in ["b.png", "c.png"] {
        example("coffee.png")
            .resize_exact(160, 160, image::imageops::FilterType::Lanczos3)
            .save(inputs.join(name))
            .unwrap();
    }
    let out = dir.path().join("out");
    let mut running = common::Running::spawn(common::tadsr_command(&[
        "run",
        path_str(&inputs),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "--tile",
        "64",
        "--tile-overlap",
        "16",
    ]));
    running.wait_for_line("computing 2/3 ", std::time::Duration::from_secs(120));
    running.signal(libc::SIGINT);
    let run = running.finish(std::time::Duration::from_secs(120));
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains("interrupted by SIGINT"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("computing 3/3"), "{}", run.stderr);
    assert_eq!(
        folder_names(&out),
        ["a.png"],
        "only the complete output, no temporary file"
    );
    assert_eq!(
        image::open(out.join("a.png")).unwrap().dimensions(),
        (192, 160)
    );

    // resumed: the output written before the interruption stays as it is
    let written_before = std::fs::read(out.join("a.png")).unwrap();
    let resumed = upscale(&inputs, &out, &["--skip-existing"]);
    let resumed_stderr = stderr(&resumed);
    assert!(resumed.status.success(), "{resumed_stderr}");
    assert!(
        resumed_stderr.contains(
            "skipping 1 input(s) whose outputs all exist (--skip-existing); 2 to compute"
        ),
        "{resumed_stderr}"
    );
    assert_eq!(folder_names(&out), ["a.png", "b.png", "c.png"]);
    assert_eq!(std::fs::read(out.join("a.png")).unwrap(), written_before);
}

/// A second signal stops the process at once, inside a stage that cannot
/// be cut short (one untiled 512x512 pass): SIGINT and SIGTERM are sent back
/// to back (two different signals are never merged into one) once the input
/// is being computed.
#[cfg(unix)]
#[test]
fn a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.png");
    example("coffee.png")
        .resize_exact(128, 128, image::imageops::FilterType::Lanczos3)
        .save(&input)
        .unwrap();
    let out = dir.path().join("out");
    let mut running = common::Running::spawn(common::tadsr_command(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "--tile",
        "0",
    ]));
    running.wait_for_line("computing 1/1 ", std::time::Duration::from_secs(120));
    running.signal(libc::SIGINT);
    running.signal(libc::SIGTERM);
    let run = running.finish(std::time::Duration::from_secs(120));
    // Sent back to back, the two may be handled in either order: the code
    // is 128 + the one handled first.
    assert!(
        run.code == Some(130) || run.code == Some(143),
        "{:?}: {}",
        run.code,
        run.stderr
    );
    assert!(
        run.stderr.contains("stopped at once by a second signal"),
        "{}",
        run.stderr
    );
    assert!(
        !out.exists() || folder_names(&out).is_empty(),
        "nothing left: {:?}",
        folder_names(&out)
    );
}

/// The ICC profile an image file holds, read by the image crate's decoder
/// for its format.
fn icc_profile_of(path: &Path) -> Option<Vec<u8>> {
    use image::ImageDecoder;
    let mut decoder = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    decoder.icc_profile().unwrap()
}

/// A PNG of `image` with `profile` embedded (iCCP).
fn png_with_profile(image: &DynamicImage, profile: &[u8], path: &Path) {
    let mut encoder = image::codecs::png::PngEncoder::new(std::fs::File::create(path).unwrap());
    encoder.set_icc_profile(profile.to_vec()).unwrap();
    image.write_with_encoder(encoder).unwrap();
}

/// An input's color profile (LittleCMS's sRGB, made by Pillow:
/// tests/fixtures/icc/make_fixtures.py) ends up in every output format that
/// holds one, byte for byte, for JPEG, PNG and TIFF inputs, 16-bit and RGBA ones
/// too; BMP outputs are written without it and say so; a gray profile, which
/// cannot describe the RGB output, is left out with a warning; an input
/// without a profile gives outputs without one.
#[test]
fn the_input_color_profile_is_carried_to_the_outputs() {
    let fixtures = repo().join("tests/fixtures/icc");
    let profile = std::fs::read(fixtures.join("srgb.icc")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tiff = dir.path().join("photo_icc.tiff");
    let mut encoder = image::codecs::tiff::TiffEncoder::new(std::fs::File::create(&tiff).unwrap());
    encoder.set_icc_profile(profile.clone()).unwrap();
    image::open(fixtures.join("photo_icc.png"))
        .unwrap()
        .write_with_encoder(encoder)
        .unwrap();
    for input in [
        fixtures.join("photo_icc.jpg"),
        fixtures.join("photo_icc.png"),
        tiff,
    ] {
        let input_name = input.file_name().unwrap().to_str().unwrap();
        for extension in ["png", "jpg", "webp", "tiff"] {
            let output = dir.path().join(format!("{input_name}.{extension}"));
            let run = upscale(&input, &output, &[]);
            assert!(run.status.success(), "{}", stderr(&run));
            assert!(!stderr(&run).contains("warning"), "{}", stderr(&run));
            assert_eq!(
                icc_profile_of(&output).as_deref(),
                Some(&profile[..]),
                "{input_name} -> .{extension}"
            );
        }
    }

    let small = small_rgb();
    let deep = dir.path().join("deep.png");
    png_with_profile(&DynamicImage::ImageRgb16(small.to_rgb16()), &profile, &deep);
    let rgba = dir.path().join("rgba.png");
    png_with_profile(&DynamicImage::ImageRgba8(small.to_rgba8()), &profile, &rgba);
    for (input, color) in [
        (&deep, image::ColorType::Rgb16),
        (&rgba, image::ColorType::Rgba8),
    ] {
        let output = dir.path().join("out.png");
        let run = upscale(input, &output, &[]);
        assert!(run.status.success(), "{}", stderr(&run));
        assert_eq!(image::open(&output).unwrap().color(), color);
        assert_eq!(icc_profile_of(&output).as_deref(), Some(&profile[..]));
    }

    let bmp = dir.path().join("photo.bmp");
    let run = upscale(&fixtures.join("photo_icc.jpg"), &bmp, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("its ICC color profile is not carried to")
            && stderr(&run).contains("(BMP holds none)"),
        "{}",
        stderr(&run)
    );
    assert_eq!(image::open(&bmp).unwrap().dimensions(), (192, 144));

    let mut gray_profile = profile.clone();
    gray_profile[16..20].copy_from_slice(b"GRAY");
    let gray = dir.path().join("gray.png");
    png_with_profile(&small.grayscale(), &gray_profile, &gray);
    let output = dir.path().join("gray-out.png");
    let run = upscale(&gray, &output, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("its ICC color profile is not carried to the output")
            && stderr(&run).contains("'GRAY'"),
        "{}",
        stderr(&run)
    );
    assert_eq!(icc_profile_of(&output), None);

    let plain = dir.path().join("plain.png");
    small.save(&plain).unwrap();
    let output = dir.path().join("plain-out.png");
    assert!(upscale(&plain, &output, &[]).status.success());
    assert_eq!(icc_profile_of(&output), None);
}

/// `--skip-existing` resumes a batch: an input whose output exists as a
/// regular file is not computed and its output is left byte for byte; a
/// missing output is written; a symbolic link at an output name does not
/// count (it is replaced, its target untouched); with several timesteps
/// only the missing ones are written; when every output exists the model is
/// not even loaded. `--json` accounts for every output.
#[test]
fn skip_existing_resumes_a_batch_and_touches_nothing_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for name in ["a.png", "b.png", "c.png"] {
        small_rgb().save(inputs.join(name)).unwrap();
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // an earlier run's output (any bytes: it must be left as it is)
    let earlier = b"not really a PNG, left by an earlier run".to_vec();
    std::fs::write(out.join("a.png"), &earlier).unwrap();
    let link_target = dir.path().join("elsewhere.png");
    std::fs::write(&link_target, b"someone else's file").unwrap();
    std::os::unix::fs::symlink(&link_target, out.join("c.png")).unwrap();

    let run = upscale(&inputs, &out, &["--skip-existing", "--json", "-q"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(std::fs::read(out.join("a.png")).unwrap(), earlier);
    assert_eq!(
        image::open(out.join("b.png")).unwrap().dimensions(),
        (192, 160)
    );
    assert!(!std::fs::symlink_metadata(out.join("c.png"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        image::open(out.join("c.png")).unwrap().dimensions(),
        (192, 160)
    );
    assert_eq!(std::fs::read(&link_target).unwrap(), b"someone else's file");
    let lines: Vec<serde_json::Value> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let skipped: Vec<&str> = lines
        .iter()
        .filter(|line| line.get("skipped").is_some())
        .map(|line| line["output"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, [path_str(&out.join("a.png"))]);
    assert_eq!(lines.len(), 3, "{lines:?}");

    // everything there now: nothing computed, the model not loaded
    let before: Vec<Vec<u8>> = ["a.png", "b.png", "c.png"]
        .iter()
        .map(|name| std::fs::read(out.join(name)).unwrap())
        .collect();
    let again = tadsr(&[
        "run",
        path_str(&inputs),
        "-o",
        path_str(&out),
        "--skip-existing",
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("skipping 3 input(s) whose outputs all exist")
            && !stderr(&again).contains("loaded"),
        "{}",
        stderr(&again)
    );
    for (name, bytes) in ["a.png", "b.png", "c.png"].iter().zip(&before) {
        assert_eq!(&std::fs::read(out.join(name)).unwrap(), bytes, "{name}");
    }

    // several timesteps: the missing one is written, the existing one left
    let single = dir.path().join("single.png");
    small_rgb().save(&single).unwrap();
    let result = dir.path().join("result.png");
    std::fs::write(dir.path().join("result_t200.png"), &earlier).unwrap();
    let run = upscale(
        &single,
        &result,
        &["-t", "200,500", "--skip-existing", "-q"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        std::fs::read(dir.path().join("result_t200.png")).unwrap(),
        earlier
    );
    assert_eq!(
        image::open(dir.path().join("result_t500.png"))
            .unwrap()
            .dimensions(),
        (192, 160)
    );
}

/// PSNR in dB between two 8-bit RGB images of one size.
fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let squared: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = squared / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}

/// `--format` writes folder outputs in another format (WebP lossless: the
/// PNG's pixels exactly), `--quality` sets the JPEG quality (the default,
/// 95, is closer to the lossless output than 50, and larger), and each is a
/// usage error where it would do nothing.
#[test]
fn folder_outputs_in_another_format_and_the_jpeg_quality() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    small_rgb().save(inputs.join("a.png")).unwrap();
    let upscale_into = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let run = upscale(&inputs, &out, &[&["-q"], extra].concat());
        (out, run)
    };
    let (png, run) = upscale_into("png", &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (webp, run) = upscale_into("webp", &["--format", "webp"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (jpg, run) = upscale_into("jpg", &["--format", "jpg"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (jpg50, run) = upscale_into("jpg50", &["--format", "jpg", "--quality", "50"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(folder_names(&webp), ["a.webp"]);
    assert_eq!(folder_names(&jpg), ["a.jpg"]);

    let lossless = image::open(png.join("a.png")).unwrap().to_rgb8();
    assert_eq!(
        image::open(webp.join("a.webp")).unwrap().to_rgb8(),
        lossless
    );
    let open_jpeg = |folder: &Path| {
        let path = folder.join("a.jpg");
        let decoded = image::ImageReader::open(&path)
            .unwrap()
            .with_guessed_format()
            .unwrap();
        assert_eq!(decoded.format(), Some(image::ImageFormat::Jpeg));
        (
            decoded.decode().unwrap().to_rgb8(),
            std::fs::metadata(&path).unwrap().len(),
        )
    };
    let (at_95, size_95) = open_jpeg(&jpg);
    let (at_50, size_50) = open_jpeg(&jpg50);
    let (psnr_95, psnr_50) = (psnr(&at_95, &lossless), psnr(&at_50, &lossless));
    assert!(
        psnr_95 > psnr_50 + 3.0 && size_95 > size_50,
        "quality 95: {psnr_95:.1} dB, {size_95} bytes; 50: {psnr_50:.1} dB, {size_50} bytes"
    );

    let file = dir.path().join("x.png");
    let run = upscale(&inputs.join("a.png"), &file, &["--format", "jpg"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("--format jpg applies to outputs in a folder"),
        "{}",
        stderr(&run)
    );
    let (_, run) = upscale_into("q", &["--quality", "80"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("--quality applies to JPEG outputs only"),
        "{}",
        stderr(&run)
    );
    assert!(!file.exists() && !dir.path().join("q").exists());
}

/// `--recursive`: the images of subfolders are upscaled into the same
/// subfolders of the output folder (created only where an output is
/// written); hidden folders, symbolic links to folders (a warning) and the
/// output folder itself, here inside the input tree, are not entered, so
/// earlier outputs are never taken as inputs. Without it only the top level
/// is read, as before.
#[cfg(unix)]
#[test]
fn recursive_mirrors_subfolders_and_never_reads_its_own_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("photos");
    for folder in ["2024/05", "2024/empty", ".thumbnails", "out"] {
        std::fs::create_dir_all(tree.join(folder)).unwrap();
    }
    let small = small_rgb();
    for name in [
        "a.png",
        "2024/b.png",
        "2024/05/c.png",
        ".thumbnails/d.png",
        "out/old.png",
    ] {
        small.save(tree.join(name)).unwrap();
    }
    std::fs::write(tree.join("2024/05/broken.png"), b"not a PNG").unwrap();
    std::os::unix::fs::symlink(tree.join("2024"), tree.join("link-to-2024")).unwrap();
    let out = tree.join("out");
    let run = upscale(&tree, &out, &["--recursive"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("broken.png"), "{err}");
    let last_line = err.lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with("done in ")
            && last_line
                .ends_with(": 3 output(s) written, 1 input(s) failed (the error lines above)"),
        "{err}"
    );
    assert!(
        err.contains("link-to-2024: a symbolic link to a folder; not followed"),
        "{err}"
    );
    let mut written: Vec<String> = Vec::new();
    let mut pending = vec![out.clone()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                written.push(
                    path.strip_prefix(&out)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    written.sort();
    assert_eq!(written, ["2024/05/c.png", "2024/b.png", "a.png", "old.png"]);
    assert_eq!(
        image::open(out.join("2024/05/c.png")).unwrap().dimensions(),
        (192, 160)
    );
    assert!(
        !out.join("2024/empty").exists(),
        "no folder without an output"
    );

    // without --recursive: the top level only
    let flat = dir.path().join("flat");
    let run = upscale(&tree, &flat, &["-q"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(folder_names(&flat), ["a.png"]);
}

/// `--dry-run` prints the plan (each output with the sizes from the
/// headers) and writes nothing: not the outputs, not the output folder;
/// outputs `--skip-existing` would leave are not in it, an input refused by
/// the plan still gives its error line and exit 1, and an unreadable header
/// shows as "?".
#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(inputs.join("sub")).unwrap();
    small_rgb().save(inputs.join("a.png")).unwrap();
    small_rgb().save(inputs.join("sub/b.jpg")).unwrap();
    std::fs::write(inputs.join("sub/c.png"), b"not a PNG").unwrap();
    let out = dir.path().join("out");
    let run = upscale(&inputs, &out, &["--recursive", "--dry-run"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let plan = String::from_utf8(run.stdout).unwrap();
    let expected = format!(
        "{} (48x40) -> {} (192x160)\n{} (48x40) -> {} (192x160)\n{} (?) -> {} (?)\n",
        path_str(&inputs.join("a.png")),
        path_str(&out.join("a.png")),
        path_str(&inputs.join("sub/b.jpg")),
        path_str(&out.join("sub/b.png")),
        path_str(&inputs.join("sub/c.png")),
        path_str(&out.join("sub/c.png")),
    );
    assert_eq!(plan, expected);
    assert!(!out.exists(), "a dry run writes nothing");
    // the minimum-size rule enlarges 192x160 for the networks: said too
    let run = tadsr(&[
        "run",
        path_str(&inputs.join("a.png")),
        "-o",
        path_str(&dir.path().join("a.png")),
        "--process-size",
        "512",
        "--dry-run",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let line = String::from_utf8(run.stdout).unwrap();
    assert!(line.contains("(192x160, processed at "), "{line}");

    // with outputs there and --skip-existing: only what is missing; a plan
    // clash (b.jpg and b.png into one output) is refused as in a real run
    std::fs::create_dir(&out).unwrap();
    small_rgb().save(out.join("a.png")).unwrap();
    small_rgb().save(inputs.join("sub/b.png")).unwrap();
    let run = upscale(
        &inputs,
        &out,
        &[
            "--recursive",
            "--dry-run",
            "--skip-existing",
            "--json",
            "-q",
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).contains("b.jpg"), "{}", stderr(&run));
    let lines: Vec<serde_json::Value> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let planned: Vec<(&str, bool)> = lines
        .iter()
        .map(|line| {
            (
                line["output"].as_str().unwrap(),
                line.get("dry_run").is_some(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        [
            (path_str(&out.join("a.png")), false),
            (path_str(&out.join("sub/c.png")), true)
        ],
        "{lines:?}"
    );
    assert_eq!(folder_names(&out), ["a.png"]);

    // an input the size rules refuse gets its error line, as in a real run
    let run = upscale(
        &inputs.join("a.png"),
        &dir.path().join("big.png"),
        &["--dry-run", "--max-pixels", "1000"],
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("a.png: ") && stderr(&run).contains("over the limit of 1000"),
        "{}",
        stderr(&run)
    );
    assert!(run.stdout.is_empty());
}

/// `--prompt` on a bundle without a text encoder (models/tiny has none):
/// refused before anything is computed, with what to do instead; `prompt`
/// says the same. (Prompts on a bundle with a text encoder are tested
/// against PyTorch in export/tests/test_prompt.py.)
#[test]
fn a_prompt_needs_a_text_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.png");
    small_rgb().save(&input).unwrap();
    let out = dir.path().join("out.png");
    let prompts = dir.path().join("prompts");
    std::fs::create_dir(&prompts).unwrap();
    let prompt_dir = ["--prompt-dir", path_str(&prompts)];
    for extra in [
        &["--prompt", "a cat"][..],
        &["--prompt", "a cat", "--dry-run"],
        &prompt_dir,
    ] {
        let run = upscale(&input, &out, extra);
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        let message = stderr(&run);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.contains("has no text encoder") && message.contains("--prompt-embeds"),
            "{message}"
        );
        assert!(!out.exists());
    }
    // --prompt-dir names a folder
    let run = upscale(&input, &out, &["--prompt-dir", path_str(&input)]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("not a folder"), "{}", stderr(&run));
    let run = Command::new(env!("CARGO_BIN_EXE_tadsr-edge"))
        .args(["prompt", "a cat", "--model"])
        .arg(repo().join("models/tiny"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("has no text encoder"),
        "{}",
        stderr(&run)
    );
}
