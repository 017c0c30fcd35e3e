//! tadsr-edge as a library: open a bundle once, upscale images with it.
//!
//! ```sh
//! cargo run --release --example upscale -- models/nano examples/coffee.png /tmp/coffee-x4.png [TILE_PX]
//! ```
//!
//! The same steps as `tadsr-edge run` on one file, without its batch
//! handling: ONNX Runtime is found as the binary finds it (`ORT_DYLIB_PATH`,
//! then where `make setup-runtime` put it), the bundle's defaults are the
//! run's (timestep, color fix, upscale), and the output is written through a
//! temporary file renamed when complete.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use tadsr_edge::image::io::{read_input_checked, InputLimits};
use tadsr_edge::image::write::{write_atomically, Encoding};
use tadsr_edge::pipeline::{NoProgress, Pipeline, PipelineConfig, RunOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: upscale BUNDLE_DIR INPUT OUTPUT [TILE_PX]");
        return ExitCode::from(2);
    }
    let tile_px = match args.get(3).map(|text| text.parse::<u32>()) {
        None => 0,
        Some(Ok(px)) => px,
        Some(Err(_)) => {
            eprintln!("error: TILE_PX must be a whole number of pixels (0: untiled)");
            return ExitCode::from(2);
        }
    };
    match upscale(&args[0], &args[1], &args[2], tile_px) {
        Ok(()) => ExitCode::SUCCESS,
        // the library's errors say what to do; {:#} prints the context too, in one line
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn upscale(bundle: &str, input: &str, output: &str, tile_px: u32) -> anyhow::Result<()> {
    // Sessions open here (and ONNX Runtime loads): keep the pipeline for every image.
    let mut config = PipelineConfig::new(bundle);
    config.notify = |notice| eprintln!("note: {notice}");
    let mut pipeline = Pipeline::load(&config).with_context(|| format!("bundle {bundle}"))?;

    // Size limits are checked from the file's header, before any decoding;
    // the EXIF orientation is applied, the ICC profile kept for the output.
    let no_further_check = |_width: u32, _height: u32| Ok(());
    let decoded = read_input_checked(
        &PathBuf::from(input),
        &InputLimits::default(),
        &no_further_check,
    )
    .with_context(|| format!("input {input}"))?;
    for note in &decoded.notes {
        eprintln!("note: {input}: {note}");
    }
    let image = decoded.image;

    let mut options = RunOptions::from_bundle(pipeline.bundle());
    options.tile_px = tile_px;
    options.check(pipeline.schedule())?;
    // One output per timestep in options.timesteps (the bundle's default: one).
    for upscaled in pipeline.upscale(&image, &options, &NoProgress)? {
        let encoding = Encoding {
            icc_profile: decoded.icc_profile.as_deref(),
            ..Encoding::default()
        };
        write_atomically(&upscaled.image, &PathBuf::from(output), encoding)
            .with_context(|| format!("output {output}"))?;
        eprintln!(
            "{input} -> {output}: {}x{} at t = {}, {:.0} ms",
            upscaled.image.width(),
            upscaled.image.height(),
            upscaled.timestep,
            upscaled.timings.total(),
        );
    }
    Ok(())
}
