//! Issue 14, "Hostile input": each reproduction of the issue through the
//! real binary on models/tiny. Nothing may be lost (no input replaced, no
//! file written outside the output names, nothing left behind), nothing may
//! hang or take minutes or gigabytes for a tiny input, and every refusal is
//! one line with the documented exit code.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use image::{GenericImageView, ImageFormat};

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn png_bytes(width: u32, height: u32) -> Vec<u8> {
    encoded(&photo(width, height), ImageFormat::Png)
}

fn jpeg_bytes(width: u32, height: u32) -> Vec<u8> {
    encoded(&photo(width, height), ImageFormat::Jpeg)
}

// ---------------------------------------------------------------------------
// 1. An output never replaces an input (data loss)
// ---------------------------------------------------------------------------

#[test]
fn an_output_never_replaces_another_input_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (cx, cy) = (dir.path().join("cx"), dir.path().join("cy"));
    std::fs::create_dir_all(&cx).unwrap();
    std::fs::create_dir_all(&cy).unwrap();
    let jpeg = jpeg_bytes(48, 40);
    let png = png_bytes(40, 32);
    write(&cx.join("a.jpg"), &jpeg);
    write(&cy.join("a.png"), &png);
    let (x, y) = (
        path_str(&cx.join("a.jpg")).to_string(),
        path_str(&cy.join("a.png")).to_string(),
    );
    // As files in both orders, and as the folders.
    for inputs in [
        vec![x.as_str(), y.as_str()],
        vec![y.as_str(), x.as_str()],
        vec![path_str(&cx), path_str(&cy)],
    ] {
        let mut args = vec!["run"];
        args.extend(&inputs);
        args.extend(["-o", path_str(&cy), "--process-size", "0", "-q"]);
        let run = tadsr(&args);
        assert_eq!(run.code, Some(1), "{inputs:?}: {}", run.stderr);
        assert_eq!(run.error_lines().len(), 2, "{inputs:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("would overwrite the input"),
            "{}",
            run.stderr
        );
        assert_eq!(
            std::fs::read(cy.join("a.png")).unwrap(),
            png,
            "cy/a.png intact"
        );
        assert_eq!(
            std::fs::read(cx.join("a.jpg")).unwrap(),
            jpeg,
            "cx/a.jpg intact"
        );
        assert_eq!(folder_names(&cy), ["a.png"], "nothing else written in cy");
    }
}

#[test]
fn two_inputs_for_one_output_are_both_refused_before_computing() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.jpg"), &jpeg_bytes(48, 40));
    write(&dir.path().join("a.png"), &png_bytes(48, 40));
    write(&dir.path().join("b.png"), &png_bytes(48, 40));
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
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 2, "{}", run.stderr);
    assert!(errors
        .iter()
        .all(|l| l.contains("would also be the output of")));
    assert_eq!(
        folder_names(&out),
        ["b.png"],
        "which one wins is no accident"
    );
}

// ---------------------------------------------------------------------------
// 2. Temporary files: exclusive, unpredictable, never through a symlink
// ---------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn a_symlink_planted_at_a_temporary_name_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.png");
    write(&input, &png_bytes(48, 40));
    let victim = dir.path().join("victim.txt");
    write(&victim, b"precious");
    let out = dir.path().join("o");
    std::fs::create_dir(&out).unwrap();
    let mut running = Running::spawn(tadsr_command(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
    ]));
    // The name the old code used (`.x.png.<pid>.partial`), planted before the
    // model has even loaded.
    let planted = out.join(format!(".x.png.{}.partial", running.pid()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    running.wait_for_line("model ", Duration::from_secs(60));
    let run = running.finish(Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    std::fs::remove_file(&planted).unwrap();
    let written = out.join("x.png");
    assert!(std::fs::symlink_metadata(&written).unwrap().is_file());
    assert_eq!(image::open(&written).unwrap().dimensions(), (192, 160));
    assert_eq!(folder_names(&out), ["x.png"], "no temporary file left");
}

#[cfg(unix)]
#[test]
fn a_symlink_at_the_output_name_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.png");
    write(&input, &png_bytes(48, 40));
    let victim = dir.path().join("victim.txt");
    write(&victim, b"precious");
    let out = dir.path().join("o");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("x.png")).unwrap();
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(out.join("x.png"))
        .unwrap()
        .is_file());
}

// ---------------------------------------------------------------------------
// 3. Thin images: bounded before any big allocation; the batch goes on
// ---------------------------------------------------------------------------

#[test]
fn thin_images_are_refused_at_once_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    image::RgbImage::from_pixel(1, 2000, image::Rgb([200, 100, 50]))
        .save(inputs.join("a_1x2000.png"))
        .unwrap();
    image::RgbImage::from_pixel(1, 40, image::Rgb([20, 100, 150]))
        .save(inputs.join("b_1x40.png"))
        .unwrap();
    write(&inputs.join("c_good.png"), &png_bytes(32, 32));
    let out = dir.path().join("out");
    // The default process size (512) applies: c_good (32x32) is enlarged to
    // 128x128 as the authors' rule says; the thin ones would be 512x1024000
    // and 512x20480.
    let run = tadsr(&["run", path_str(&inputs), "-o", path_str(&out), "-q"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 2, "{}", run.stderr);
    for (line, name) in errors.iter().zip(["a_1x2000.png", "b_1x40.png"]) {
        assert!(
            line.contains(name) && line.contains("--process-size 0"),
            "{line}"
        );
    }
    assert_eq!(folder_names(&out), ["c_good.png"]);
    // Generous for a loaded machine: the old code took 92 s on the 1x40 strip
    // alone and aborted on the 1x2000 one (a 6.3 GB buffer).
    assert!(run.seconds < 60.0, "took {:.1} s", run.seconds);
    assert!(
        run.peak_mb < 1000.0,
        "peak memory {:.0} MB for three tiny inputs",
        run.peak_mb
    );
    // The advice works, even for a strip one pixel wide (4 px after the
    // upscale, processed 8 px wide, written 4 px wide).
    let strip = out.join("strip.png");
    let run = tadsr(&[
        "run",
        path_str(&inputs.join("a_1x2000.png")),
        "-o",
        path_str(&strip),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(image::image_dimensions(&strip).unwrap(), (4, 8000));
}

#[test]
fn the_processed_size_is_bounded_by_max_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    // 48x40 is 1920 input pixels but 192x160 = 30720 processed ones.
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("o.png")),
        "--process-size",
        "0",
        "--max-pixels",
        "10000",
        "-q",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("192x160 = 30720 pixels, over the limit of 10000"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// 4. A truncated JPEG is refused
// ---------------------------------------------------------------------------

#[test]
fn a_truncated_jpeg_is_refused_and_trailing_data_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = jpeg_bytes(48, 40);
    write(&dir.path().join("half.jpg"), &jpeg[..jpeg.len() / 2]);
    write(&dir.path().join("no_end.jpg"), &jpeg[..jpeg.len() - 2]);
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(b"some camera's trailer");
    write(&dir.path().join("trailer.jpg"), &trailing);
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
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 2, "{}", run.stderr);
    assert!(
        errors.iter().all(|l| l.contains("truncated JPEG")),
        "{errors:?}"
    );
    assert_eq!(folder_names(&out), ["trailer.png"]);
}

/// Where a JPEG's scan data starts (after the SOS segment) and its frame
/// header's height field.
fn jpeg_offsets(jpeg: &[u8]) -> (usize, usize) {
    let find = |marker: u8| {
        jpeg.windows(2)
            .position(|w| w == [0xFF, marker])
            .expect("marker")
    };
    let sos = find(0xDA);
    let sos_length = usize::from(u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]));
    (sos + 2 + sos_length, find(0xC0) + 5)
}

#[test]
fn a_jpeg_without_its_data_a_padded_jpeg_and_a_nan_tiff_end_as_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let jpeg = jpeg_bytes(48, 40);
    let (data_start, height_at) = jpeg_offsets(&jpeg);
    // the scan emptied: the decoder used to "decode" a made-up image
    let mut empty_scan = jpeg[..data_start].to_vec();
    empty_scan.extend_from_slice(&[0xFF, 0xD9]);
    write(&inputs.join("a_empty_scan.jpg"), &empty_scan);
    // a header claiming 2048x2048 over 48x40 pixels' data: it used to run
    // at 8192x8192, 15 GB within 30 s
    let mut claims_more = jpeg.clone();
    claims_more[height_at..height_at + 4].copy_from_slice(&[0x08, 0x00, 0x08, 0x00]);
    write(&inputs.join("b_claims_2048.jpg"), &claims_more);
    // a float TIFF with a NaN sample: an input fault, not the model's
    let mut float = image::Rgb32FImage::from_pixel(24, 20, image::Rgb([0.5, 0.25, 0.75]));
    float.put_pixel(3, 4, image::Rgb([f32::NAN, 0.5, 0.5]));
    image::DynamicImage::ImageRgb32F(float)
        .save(inputs.join("c_nan.tiff"))
        .unwrap();
    // a good JPEG followed by 2 GiB (sparse) of whatever: allowed, and not
    // read (the decoder reads its whole input into memory)
    write(&inputs.join("d_padded.jpg"), &jpeg);
    std::fs::OpenOptions::new()
        .write(true)
        .open(inputs.join("d_padded.jpg"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let out = dir.path().join("out");
    let run = tadsr(&["run", path_str(&inputs), "-o", path_str(&out), "-q"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 3, "{}", run.stderr);
    for (line, (name, reason)) in errors.iter().zip([
        (
            "a_empty_scan.jpg",
            "0 bytes of image data cannot hold 48x40",
        ),
        ("b_claims_2048.jpg", "cannot hold 2048x2048"),
        ("c_nan.tiff", "a sample is NaN"),
    ]) {
        assert!(line.contains(name) && line.contains(reason), "{line}");
    }
    assert_eq!(folder_names(&out), ["d_padded.png"]);
    assert!(
        run.peak_mb < 1000.0,
        "peak memory {:.0} MB for tiny inputs",
        run.peak_mb
    );
}

// ---------------------------------------------------------------------------
// 5. --threads is bounded
// ---------------------------------------------------------------------------

#[test]
fn threads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    let output = dir.path().join("o.png");
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&output),
        "--threads",
        "100000",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("per usable CPU"), "{}", run.stderr);
    assert!(run.seconds < 10.0);
    assert!(!output.exists());
}

// ---------------------------------------------------------------------------
// 6. FIFOs, devices, sockets: one rule for explicit inputs and folder scans
// ---------------------------------------------------------------------------

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
}

#[cfg(unix)]
#[test]
fn fifos_and_devices_are_refused_without_opening_them() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    mkfifo(&inputs.join("scanned.png"));
    write(&inputs.join("good.png"), &png_bytes(48, 40));
    let explicit = dir.path().join("explicit.png");
    mkfifo(&explicit);
    let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock.png")).unwrap();
    let out = dir.path().join("out");
    let run = run_with_timeout(
        tadsr_command(&[
            "run",
            path_str(&inputs),
            path_str(&explicit),
            "/dev/null",
            path_str(&dir.path().join("sock.png")),
            "-o",
            path_str(&out),
            "--process-size",
            "0",
            "-q",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 4, "{}", run.stderr);
    assert!(run
        .stderr
        .contains("scanned.png: a FIFO (named pipe), not a regular file"));
    assert!(run
        .stderr
        .contains("explicit.png: a FIFO (named pipe), not a regular file"));
    assert!(run
        .stderr
        .contains("/dev/null: a character device, not a regular file"));
    assert!(run
        .stderr
        .contains("sock.png: a socket, not a regular file"));
    assert!(!run.stderr.contains("empty file"));
    assert_eq!(folder_names(&out), ["good.png"]);
}

// ---------------------------------------------------------------------------
// 7. SIGTERM and SIGHUP end the run cleanly (Ctrl-C: tests/cli_run.rs)
// ---------------------------------------------------------------------------

/// Three inputs; the signal is sent once the second one is being computed
/// (the `computing 2/3` line), which takes far longer than the signal needs.
#[cfg(unix)]
fn signal_during_the_second_input(signal: libc::c_int) -> (Ran, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    write(&inputs.join("a.png"), &png_bytes(32, 32));
    for name in ["b.png", "c.png"] {
        write(&inputs.join(name), &png_bytes(160, 160));
    }
    let out = dir.path().join("out");
    let mut running = Running::spawn(tadsr_command(&[
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
    running.wait_for_line("computing 2/3 ", Duration::from_secs(120));
    running.signal(signal);
    let run = running.finish(Duration::from_secs(120));
    let names = folder_names(&out);
    for name in &names {
        image::open(out.join(name)).expect("every file left is a complete image");
    }
    (run, names)
}

/// A signal before anything is written leaves none of the folders the run
/// created for its outputs, whether the run ends at its next check (one
/// signal) or at once (a second one).
#[cfg(unix)]
#[test]
fn an_early_signal_leaves_no_created_output_folder() {
    for signals in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.png");
        write(&input, &png_bytes(160, 160));
        let out = dir.path().join("out");
        let mut running = Running::spawn(tadsr_command(&[
            "run",
            path_str(&input),
            "-o",
            path_str(&out.join("deeper/")),
            "--process-size",
            "0",
        ]));
        // printed once the model is loaded, just before the folders are made
        running.wait_for_line("model ", Duration::from_secs(120));
        for _ in 0..signals {
            running.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(20));
        }
        let run = running.finish(Duration::from_secs(120));
        assert_eq!(run.code, Some(143), "{signals} signal(s): {}", run.stderr);
        assert!(
            !out.exists(),
            "{signals} signal(s): {:?} left",
            folder_names(&out)
        );
    }
}

#[cfg(unix)]
#[test]
fn sigterm_stops_cleanly_with_143() {
    let (run, names) = signal_during_the_second_input(libc::SIGTERM);
    assert_eq!(run.killed_by, None, "{}", run.stderr);
    assert_eq!(run.code, Some(143), "{}", run.stderr);
    assert!(
        run.stderr.contains("interrupted by SIGTERM"),
        "{}",
        run.stderr
    );
    assert_eq!(
        names,
        ["a.png"],
        "only the complete output, no temporary file"
    );
}

#[cfg(unix)]
#[test]
fn sighup_stops_cleanly_with_129() {
    let (run, names) = signal_during_the_second_input(libc::SIGHUP);
    assert_eq!(run.code, Some(129), "{}", run.stderr);
    assert!(
        run.stderr.contains("interrupted by SIGHUP"),
        "{}",
        run.stderr
    );
    assert_eq!(
        names,
        ["a.png"],
        "only the complete output, no temporary file"
    );
}

/// The other signals that would end the process (SIGQUIT is Ctrl-\\;
/// SIGXCPU comes at a CPU time limit) stop it as cleanly.
#[cfg(unix)]
#[test]
fn sigquit_and_sigxcpu_stop_cleanly_too() {
    for (signal, name) in [(libc::SIGQUIT, "SIGQUIT"), (libc::SIGXCPU, "SIGXCPU")] {
        let (run, names) = signal_during_the_second_input(signal);
        assert_eq!(run.killed_by, None, "{name}: {}", run.stderr);
        assert_eq!(run.code, Some(128 + signal), "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("interrupted by {name}")),
            "{}",
            run.stderr
        );
        assert_eq!(
            names,
            ["a.png"],
            "{name}: only the complete output, no temporary file"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. Long names: the temporary name never makes a legal name fail
// ---------------------------------------------------------------------------

#[test]
fn a_250_byte_name_is_written_and_a_too_long_one_refused_before_computing() {
    let dir = tempfile::tempdir().unwrap();
    let stem = "n".repeat(250);
    let input = dir.path().join(format!("{stem}.png"));
    write(&input, &png_bytes(48, 40));
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(folder_names(&out), [format!("{stem}.png")]);

    // With two timesteps the names get `_t200`: 259 bytes, refused up front.
    let out2 = dir.path().join("out2");
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&out2),
        "-t",
        "200,800",
        "--process-size",
        "0",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("output name is 259 bytes long"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("computing"),
        "refused before the model loads"
    );
    assert!(!out2.exists() || folder_names(&out2).is_empty());
}

// ---------------------------------------------------------------------------
// 9. One line per error whatever the names; non-UTF-8 names stay distinct
// ---------------------------------------------------------------------------

#[test]
fn a_newline_in_a_name_cannot_forge_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("a\nerror: forged.png");
    write(&bad, b"not an image");
    let run = tadsr(&[
        "run",
        path_str(&bad),
        "-o",
        path_str(&dir.path().join("out")),
        "-q",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("a\\nerror: forged.png"),
        "{}",
        run.stderr
    );
}

#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_map_to_distinct_outputs() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let e9 = inputs.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    let e8 = inputs.join(std::ffi::OsStr::from_bytes(b"caf\xe8.png"));
    write(&e9, &png_bytes(48, 40));
    write(&e8, &png_bytes(40, 48));
    let out = dir.path().join("out");
    let run = run_with_timeout(
        {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
            command
                .arg("run")
                .arg(&inputs)
                .arg("-o")
                .arg(&out)
                .args(["--process-size", "0", "--json", "--provider", "cpu"])
                .arg("--model")
                .arg(tiny_model());
            command
        },
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let written: Vec<Vec<u8>> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(written.len(), 2, "two inputs, two outputs");
    assert!(written.contains(&b"caf\xe9.png".to_vec()));
    assert!(written.contains(&b"caf\xe8.png".to_vec()));
    assert_eq!(
        image::open(out.join(std::ffi::OsStr::from_bytes(b"caf\xe8.png")))
            .unwrap()
            .dimensions(),
        (160, 192)
    );
    assert!(run.stdout.contains(r#"caf\\xE9.png"#), "{}", run.stdout);
    assert!(run.stdout.contains(r#"caf\\xE8.png"#), "{}", run.stdout);
}

// ---------------------------------------------------------------------------
// 10 and 12. Output problems are found before computing
// ---------------------------------------------------------------------------

#[test]
fn output_problems_are_usage_errors_found_before_computing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    let missing_parent = dir.path().join("missing/x.png");
    let gif = dir.path().join("x.gif");
    let mut cases = vec![
        (path_str(&missing_parent).to_string(), "does not exist"),
        (path_str(&gif).to_string(), "cannot write .gif files"),
        ("-".to_string(), "standard output"),
        (
            "/dev/null".to_string(),
            "a character device, not a file or a folder",
        ),
    ];
    if cfg!(target_os = "linux") {
        // A folder nobody can create files in, even root.
        cases.push((
            "/proc/x.png".to_string(),
            "cannot create files in this folder",
        ));
    }
    for (output, expected) in cases {
        let mut command = tadsr_command(&["run", path_str(&input), "-o", &output]);
        command.current_dir(dir.path());
        let run = run_with_timeout(command, Duration::from_secs(60));
        assert_eq!(run.code, Some(2), "-o {output}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "-o {output}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "-o {output}: {}", run.stderr);
        assert!(!run.stderr.contains("computing"), "{}", run.stderr);
    }
    assert!(!dir.path().join("-").exists(), "-o - made no folder");
    assert!(!missing_parent.exists() && !gif.exists());
}

// ---------------------------------------------------------------------------
// 11 and 14. --prompt-embeds: finite values, its own messages
// ---------------------------------------------------------------------------

/// The bundle's prompt embedding with value 0 replaced.
fn embeds_with_first_value(value: f32) -> Vec<u8> {
    let mut bytes = std::fs::read(tiny_model().join("prompt_embeds.npy")).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data = 10 + header_len;
    bytes[data..data + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

#[test]
fn non_finite_prompt_embeds_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    for (name, value, shown) in [
        ("nan.npy", f32::NAN, "NaN"),
        ("inf.npy", f32::INFINITY, "inf"),
    ] {
        let embeds = dir.path().join(name);
        write(&embeds, &embeds_with_first_value(value));
        let output = dir.path().join("o.png");
        let run = tadsr(&[
            "run",
            path_str(&input),
            "-o",
            path_str(&output),
            "--prompt-embeds",
            path_str(&embeds),
            "-q",
        ]);
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(
            run.stderr.starts_with("error: prompt embedding ")
                && run.stderr.contains(shown)
                && run.stderr.contains("finite"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("model bundle"), "{}", run.stderr);
        assert!(!output.exists());
    }
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("o.png")),
        "--prompt-embeds",
        "/dev/zero",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("a character device"), "{}", run.stderr);
    // a token count the UNet was not exported for: refused at load, not
    // per image by ONNX Runtime
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 10, 32), }";
    let padded = format!("{header:<117}\n");
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    npy.extend_from_slice(padded.as_bytes());
    npy.extend(std::iter::repeat_n(0u8, 10 * 32 * 4));
    let ten_tokens = dir.path().join("ten.npy");
    write(&ten_tokens, &npy);
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("o.png")),
        "--prompt-embeds",
        path_str(&ten_tokens),
    ]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("takes exactly 77 tokens") && !run.stderr.contains("computing"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// 13. Silent choices are said
// ---------------------------------------------------------------------------

#[test]
fn duplicate_timesteps_and_a_device_on_the_cpu_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    let o = dir.path().join("out");
    let run = tadsr(&["run", path_str(&input), "-o", path_str(&o), "-t", "500,500"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("timestep 500 is given twice"),
        "{}",
        run.stderr
    );
    let run = tadsr(&["run", path_str(&input), "-o", path_str(&o), "--device", "3"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--device 3"), "{}", run.stderr);
    // golden says the same of --device on the CPU
    let run = tadsr(&["golden", "--device", "3"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--device 3"), "{}", run.stderr);
    // --tiling latent has the authors' tiles: a tile size or overlap it would ignore is refused
    for extra in [&["--tile", "64"][..], &["--tile-overlap", "16"][..]] {
        let mut args = vec![
            "run",
            path_str(&input),
            "-o",
            path_str(&o),
            "--tiling",
            "latent",
        ];
        args.extend_from_slice(extra);
        let run = tadsr(&args);
        assert_eq!(run.code, Some(2), "{extra:?}: {}", run.stderr);
        assert_eq!(run.error_lines().len(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("--tiling latent"), "{}", run.stderr);
    }
    for tile in ["0", "auto", "768"] {
        let args = [
            "run",
            path_str(&input),
            "--dry-run",
            "-o",
            path_str(&o),
            "--tiling",
            "latent",
            "--tile",
            tile,
        ];
        let run = tadsr(&args);
        assert_eq!(run.code, Some(0), "--tile {tile}: {}", run.stderr);
    }
    assert!(!o.exists());
}

#[test]
fn a_device_under_auto_that_no_stage_uses_gets_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    let run = run_with_timeout(
        {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
            command.args([
                "run",
                path_str(&input),
                "-o",
                path_str(&dir.path().join("o.png")),
                "--process-size",
                "0",
                "--device",
                "99",
                "--model",
                path_str(&tiny_model()),
            ]);
            command
        },
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    if run.stderr.contains("unet on cpu") && run.stderr.contains("decoder on cpu") {
        assert!(
            run.stderr
                .contains("warning: --device 99 is unused: every stage runs on the CPU"),
            "{}",
            run.stderr
        );
    }
}

/// A two-frame animated WebP made of the lossless encoder's bitstream.
fn animated_webp(image: &image::DynamicImage) -> Vec<u8> {
    let still = encoded(image, ImageFormat::WebP);
    assert_eq!(&still[12..16], b"VP8L", "a lossless still");
    let size = u32::from_le_bytes(still[16..20].try_into().unwrap()) as usize;
    let mut vp8l = still[12..20 + size].to_vec();
    if size % 2 == 1 {
        vp8l.push(0);
    }
    let u24 = |v: u32| v.to_le_bytes()[..3].to_vec();
    let (w, h) = image.dimensions();
    let mut chunks = Vec::new();
    let mut chunk = |name: &[u8], payload: Vec<u8>| {
        chunks.extend_from_slice(name);
        chunks.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        chunks.extend_from_slice(&payload);
        if payload.len() % 2 == 1 {
            chunks.push(0);
        }
    };
    chunk(
        b"VP8X",
        [vec![0x02, 0, 0, 0], u24(w - 1), u24(h - 1)].concat(),
    );
    chunk(b"ANIM", vec![0, 0, 0, 0, 0, 0]);
    for _ in 0..2 {
        let header = [u24(0), u24(0), u24(w - 1), u24(h - 1), u24(100), vec![0]].concat();
        chunk(b"ANMF", [header, vp8l.clone()].concat());
    }
    let mut riff = b"RIFF".to_vec();
    riff.extend_from_slice(&((chunks.len() + 4) as u32).to_le_bytes());
    riff.extend_from_slice(b"WEBP");
    riff.extend_from_slice(&chunks);
    riff
}

fn two_page_tiff(image: &image::DynamicImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut encoder = tiff::encoder::TiffEncoder::new(&mut bytes).unwrap();
    let rgb = image.to_rgb8();
    for _ in 0..2 {
        encoder
            .write_image::<tiff::encoder::colortype::RGB8>(rgb.width(), rgb.height(), rgb.as_raw())
            .unwrap();
    }
    bytes.into_inner()
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn png_chunk(name: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = !0u32;
    for &byte in name.iter().chain(data) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(name);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&(!crc).to_be_bytes());
    chunk
}

/// An APNG declaring `frames` frames: a still PNG with an acTL chunk after
/// its header (its image is the first frame as decoders show it).
fn animated_png(image: &image::DynamicImage, frames: u32) -> Vec<u8> {
    let still = encoded(image, ImageFormat::Png);
    let after_header = 8 + 8 + 13 + 4; // signature, IHDR's length/type, data, CRC
    assert_eq!(&still[12..16], b"IHDR");
    let actl = [frames.to_be_bytes(), 0u32.to_be_bytes()].concat();
    [
        &still[..after_header],
        &png_chunk(b"acTL", &actl),
        &still[after_header..],
    ]
    .concat()
}

#[test]
fn animations_and_pages_get_a_warning_and_the_first_frame_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let picture = photo(48, 40);
    write(&inputs.join("anim.webp"), &animated_webp(&picture));
    write(&inputs.join("pages.tiff"), &two_page_tiff(&picture));
    write(&inputs.join("apng.png"), &animated_png(&picture, 3));
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(&inputs),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 3, "{}", run.stderr);
    assert!(warnings[0].contains("anim.webp: an animated WebP (2 frames); only the first frame"));
    assert!(warnings[1].contains("apng.png: an animated PNG (3 frames); only the first frame"));
    assert!(warnings[2].contains("pages.tiff: a TIFF with 2 pages; only the first page"));
    assert_eq!(folder_names(&out), ["anim.png", "apng.png", "pages.png"]);
    for name in ["anim.png", "apng.png", "pages.png"] {
        assert_eq!(
            image::open(out.join(name)).unwrap().dimensions(),
            (192, 160)
        );
    }
}

#[cfg(unix)]
#[test]
fn dangling_and_looping_symlinks_in_a_folder_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    write(&inputs.join("good.png"), &png_bytes(48, 40));
    std::os::unix::fs::symlink("nowhere.png", inputs.join("dangling.png")).unwrap();
    std::os::unix::fs::symlink("loop.png", inputs.join("loop.png")).unwrap();
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(&inputs),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.error_lines().len(), 2, "{}", run.stderr);
    assert!(run
        .stderr
        .contains("dangling.png: a dangling symbolic link"));
    assert!(run.stderr.contains("loop.png: a symbolic link loop"));
    assert_eq!(folder_names(&out), ["good.png"]);
}

// ---------------------------------------------------------------------------
// 14. Messages that say what is wrong
// ---------------------------------------------------------------------------

#[test]
fn max_pixels_zero_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    let run = tadsr(&[
        "run",
        path_str(&input),
        "-o",
        path_str(&dir.path().join("o.png")),
        "--max-pixels",
        "0",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--max-pixels"), "{}", run.stderr);
    assert!(!run.stderr.contains("0.0"), "{}", run.stderr);
}

/// The command line's own errors (a bad value, a missing option, an unknown
/// command) are one line too, with clap's tip, without the usage block.
#[test]
fn command_line_errors_are_one_line() {
    for (args, expected) in [
        (
            &["run", "a.png", "-o", "x/", "--threads", "-1"][..],
            "'-- -1'",
        ),
        (&["run", "a.png"][..], "--output"),
        (
            &["run", "a.png", "-o", "x/", "--tiling", "foo"][..],
            "staged, latent",
        ),
        (&["frob"][..], "'frob'"),
        // bench would allocate the whole input before noticing (a 100000 px side: 9 GB, then an abort)
        (&["bench", "--size", "100000"][..], "1..=8192"),
        (&["bench", "--size", "4294967264"][..], "1..=8192"),
        // a NaN bound would pass every case
        (
            &["golden", "--max-abs-error", "NaN"][..],
            "finite number over 0",
        ),
        (&["golden", "--min-psnr", "inf"][..], "finite number over 0"),
    ] {
        let run = tadsr(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(
            lines[0].starts_with("error: ")
                && lines[0].contains(expected)
                && lines[0].contains("--help"),
            "{args:?}: {}",
            lines[0]
        );
    }
    let help = tadsr(&["run", "--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("Usage:"), "{}", help.stdout);
}

#[test]
fn the_same_input_twice_is_processed_once_with_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.png");
    write(&input, &png_bytes(48, 40));
    let again = dir.path().join(".").join("a.png");
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(&input),
        path_str(&again),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("given twice; it is processed once"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("already the output"), "{}", run.stderr);
    assert_eq!(folder_names(&out), ["a.png"]);
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The issue's bundle had `defaults.timestep` 0, which the bundle format now
/// allows (it indexes alphas_cumprod[0]); one outside the schedule is the
/// bundle's fault, not an "invalid option" of the user's.
#[test]
fn a_bundle_with_a_bad_default_timestep_is_the_bundle_s_fault() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    copy_folder(&tiny_model(), &bundle);
    let manifest_path = bundle.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["defaults"]["timestep"] = 5000.into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let input = dir.path().join("in.png");
    write(&input, &png_bytes(48, 40));
    let run = run_with_timeout(
        {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
            command.args([
                "run",
                path_str(&input),
                "-o",
                path_str(&dir.path().join("o.png")),
                "--provider",
                "cpu",
                "--model",
                path_str(&bundle),
            ]);
            command
        },
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: model bundle ")
            && run.stderr.contains("defaults.timestep is 5000"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("invalid option"), "{}", run.stderr);
    // info warns of it; info --verify, which checks a bundle, fails on it
    let info = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
        command
            .args(["info", "--model", path_str(&bundle)])
            .args(extra);
        run_with_timeout(command, Duration::from_secs(120))
    };
    let run = info(&[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: manifest.json defaults.timestep is 5000"),
        "{}",
        run.stderr
    );
    let run = info(&["--verify"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.error_lines().len(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("defaults.timestep is 5000"),
        "{}",
        run.stderr
    );
}

/// A graph opened on first use that does not fit the manifest (here the
/// tiled decoder swapped for the tiled encoder, its hash updated) fails the
/// bundle once, exit 2, not every input of the batch one by one; and a graph
/// whose fixed sizes differ from the manifest's is refused when it opens.
#[test]
fn a_bundle_fault_found_mid_batch_stops_the_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    copy_folder(&tiny_model(), &bundle);
    std::fs::copy(
        bundle.join("vae_encoder/tiled.onnx"),
        bundle.join("vae_decoder/tiled.onnx"),
    )
    .unwrap();
    let manifest_path = bundle.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["components"]["vae_decoder_tiled"]["sha256"] = serde_json::Value::from(
        tadsr_edge::bundle::sha256_file(&bundle.join("vae_decoder/tiled.onnx")).unwrap(),
    );
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for name in ["a.png", "b.png", "c.png"] {
        write(&inputs.join(name), &png_bytes(48, 48));
    }
    let out = dir.path().join("out");
    let tiled = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
        command.args([
            "run",
            path_str(&inputs),
            "-o",
            path_str(&out),
            "--model",
            path_str(&bundle),
            "--provider",
            "cpu",
            "--process-size",
            "0",
            "--tile",
            "64",
            "-q",
        ]);
        run_with_timeout(command, Duration::from_secs(120))
    };
    let run = tiled();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("vae_decoder_tiled") && errors[0].contains("3 input(s) not processed"),
        "{}",
        errors[0]
    );
    assert!(!out.exists());

    // the statistics inputs' fixed size changed in the manifest only
    copy_folder(&tiny_model(), &bundle);
    manifest = serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["components"]["vae_decoder_tiled"]["inputs"][1]["shape"] = serde_json::json!([31, 8]);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let run = tiled();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("axis 0 is 30 in the graph but 31 in the manifest"),
        "{}",
        run.stderr
    );

    let rehash = |bundle: &Path, component: &str, file: &str| {
        let mut manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
                .unwrap();
        manifest["components"][component]["sha256"] =
            serde_json::Value::from(tadsr_edge::bundle::sha256_file(&bundle.join(file)).unwrap());
        std::fs::write(bundle.join("manifest.json"), manifest.to_string()).unwrap();
    };
    // a damaged graph, its hash updated: ONNX Runtime cannot load it; said once
    copy_folder(&tiny_model(), &bundle);
    let tiled_decoder = bundle.join("vae_decoder/tiled.onnx");
    let bytes = std::fs::read(&tiled_decoder).unwrap();
    std::fs::write(&tiled_decoder, &bytes[..bytes.len() / 2]).unwrap();
    rehash(&bundle, "vae_decoder_tiled", "vae_decoder/tiled.onnx");
    let run = tiled();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("the bundle's graph is damaged")
            && errors[0].contains("3 input(s) not processed"),
        "{}",
        errors[0]
    );
    assert!(!out.exists());

    // the main decoder swapped for the tiled one (hash updated): it needs
    // inputs the manifest does not list; refused when the graphs open
    copy_folder(&tiny_model(), &bundle);
    std::fs::copy(
        bundle.join("vae_decoder/tiled.onnx"),
        bundle.join("vae_decoder/model.onnx"),
    )
    .unwrap();
    rehash(&bundle, "vae_decoder", "vae_decoder/model.onnx");
    let run = tiled();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.error_lines().len(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("vae_decoder graph needs an input \"group_norm_mean\""),
        "{}",
        run.stderr
    );
    assert!(!out.exists());
}

/// golden reads a bundle's case list as strictly as run reads the bundle:
/// a case's options are checked before anything is computed, and a NaN
/// reference fails (it would pass every bound).
#[test]
fn hostile_golden_cases_are_refused_before_computing_and_nan_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    copy_folder(&tiny_model(), &bundle);
    let cases_path = bundle.join("golden/cases.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&cases_path).unwrap()).unwrap();
    let first = cases[0].clone();
    let golden = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tadsr-edge"));
        command.args(["golden", "--model", path_str(&bundle), "--threads", "1"]);
        run_with_timeout(command, Duration::from_secs(120))
    };
    for (key, value, said) in [
        ("upscale", 1000, "upscale 1000"),
        ("process_size", 8192, "more than a golden case may"),
    ] {
        let mut case = first.clone();
        case[key] = value.into();
        std::fs::write(&cases_path, serde_json::json!([case]).to_string()).unwrap();
        let run = golden();
        assert_eq!(run.code, Some(2), "{key}: {}", run.stderr);
        assert!(run.stderr.contains(said), "{key}: {}", run.stderr);
        assert!(run.seconds < 30.0 && run.peak_mb < 2000.0, "{key}: {run:?}");
    }
    std::fs::write(&cases_path, serde_json::json!([first]).to_string()).unwrap();
    let reference = bundle
        .join("golden")
        .join(first["reference"].as_str().unwrap());
    let shape = tadsr_edge::npy::read_npy(&reference)
        .unwrap()
        .shape()
        .to_vec();
    let nan = ndarray::ArrayD::<f32>::from_elem(ndarray::IxDyn(&shape), f32::NAN);
    tadsr_edge::npy::write_npy_f32(&reference, &nan.view()).unwrap();
    let run = golden();
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("outside the bounds: max |error| NaN"),
        "{}",
        run.stderr
    );
}

#[test]
fn nothing_is_left_behind_after_a_mixed_batch() {
    // Every refusal of this file in one batch: still only complete outputs.
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    write(&inputs.join("good.png"), &png_bytes(48, 40));
    write(&inputs.join("text.png"), b"not an image");
    let jpeg = jpeg_bytes(48, 40);
    write(&inputs.join("cut.jpg"), &jpeg[..jpeg.len() / 3]);
    let out = dir.path().join("out");
    let run = tadsr(&[
        "run",
        path_str(&inputs),
        "-o",
        path_str(&out),
        "--process-size",
        "0",
        "-q",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(folder_names(&out), ["good.png"]);
    assert!(!run.stderr.contains("panicked"));
}

// ---------------------------------------------------------------------------
// 17. Where messages and files cannot go
// ---------------------------------------------------------------------------

/// Three small inputs in a folder, and the output folder's path.
fn three_inputs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let inputs = dir.join("in");
    std::fs::create_dir(&inputs).unwrap();
    for name in ["a.png", "b.png", "c.png"] {
        write(&inputs.join(name), &png_bytes(32, 24));
    }
    (inputs, dir.join("out"))
}

/// `run INPUTS -o OUT --process-size 0 EXTRA...` on models/tiny.
fn run_into(inputs: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut args = vec![
        "run",
        path_str(inputs),
        "-o",
        path_str(out),
        "--process-size",
        "0",
    ];
    args.extend_from_slice(extra);
    tadsr_command(&args)
}

/// A pipe whose reader is gone: every write to it fails (EPIPE).
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

/// stderr closed (`2>&1 | head`) or full: the messages are lost, not the
/// batch (std's eprintln! panics then).
#[test]
fn a_closed_stderr_loses_messages_not_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, out) = three_inputs(dir.path());
    let mut command = run_into(&inputs, &out, &[]);
    command.stderr(closed_pipe());
    let status = command.status().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(folder_names(&out), ["a.png", "b.png", "c.png"]);
}

/// stdout closed under --json (`| head -n 1`): the input whose line failed
/// is still written, no other starts, and the exit says so (not 0).
#[test]
fn a_closed_stdout_under_json_stops_the_batch_and_says_how_much_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, out) = three_inputs(dir.path());
    let mut command = run_into(&inputs, &out, &["--json", "-q"]);
    command.stdout(closed_pipe());
    let run = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("2 of 3 input(s) not processed")
            && lines[0].contains("stdout was closed"),
        "{stderr}"
    );
    assert_eq!(folder_names(&out), ["a.png"]);
}

/// A file size limit (`ulimit -f`): SIGXFSZ would kill the process in the
/// middle of a write; the write fails instead, one line per input, nothing
/// left behind.
#[cfg(unix)]
#[test]
fn a_file_size_limit_fails_each_write_and_leaves_nothing() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (inputs, out) = three_inputs(dir.path());
    std::fs::create_dir(&out).unwrap();
    let mut command = run_into(&inputs, &out, &["-q"]);
    // outputs are 128x96 PNGs of a photo, far over 2 KiB; the graph cache is off (it writes files too)
    command.env("TADSR_EDGE_GRAPH_CACHE", "0");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2048,
                rlim_max: 2048,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = run_with_timeout(command, Duration::from_secs(120));
    assert_eq!(run.killed_by, None, "{}", run.stderr);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.error_lines().len(), 3, "{}", run.stderr);
    assert!(run.stderr.contains("File too large"), "{}", run.stderr);
    assert!(
        !run.stderr.contains(".tadsr-"),
        "no temporary name in messages: {}",
        run.stderr
    );
    assert!(folder_names(&out).is_empty(), "{:?}", folder_names(&out));
}

/// A run killed outright (SIGKILL, out of memory) leaves its temporary file;
/// the next run into that folder removes it, but never one a live writer
/// holds.
#[test]
fn a_killed_runs_temporary_file_is_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, out) = three_inputs(dir.path());
    std::fs::create_dir(&out).unwrap();
    let a_minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    let left = out.join(".tadsr-Killed12.tmp");
    std::fs::File::create(&left)
        .unwrap()
        .set_modified(a_minute_ago)
        .unwrap();
    let live = out.join(".tadsr-Writing1.tmp");
    let writer = std::fs::File::create(&live).unwrap();
    writer.set_modified(a_minute_ago).unwrap();
    writer.lock().unwrap();
    let run = run_with_timeout(run_into(&inputs, &out, &[]), Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("removed 1 temporary file(s) that a killed earlier run left in"),
        "{}",
        run.stderr
    );
    assert_eq!(
        folder_names(&out),
        [".tadsr-Writing1.tmp", "a.png", "b.png", "c.png"]
    );
}
