//! A bundle's golden cases: inputs with PyTorch references written by
//! `python -m export --golden` (`golden/cases.json`), run through the whole
//! pipeline on any provider and measured against the reference. This is how
//! a GPU (or a new machine) proves it computes the model, not only that it
//! runs (`tadsr-edge golden`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::io::{read_input, InputLimits};
use crate::image::size_plan;
use crate::npy;
use crate::pipeline::{self, psnr, ColorFix, NoProgress, Pipeline, RunOptions, TilingMode};

/// One case of `cases.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenCase {
    pub name: String,
    /// Input image, relative to the golden folder.
    pub input: String,
    pub upscale: u32,
    pub process_size: u32,
    pub timestep: u32,
    pub color_fix: String,
    /// `mean`: the posterior mean (the only kind run here).
    pub sample: String,
    /// The reference output, [H, W, 3] float32 in [0, 1].
    pub reference: String,
}

/// How one case came out.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub max_abs_error: f32,
    pub psnr_db: f64,
}

/// Largest file read as `cases.json`.
const MAX_CASES_BYTES: u64 = 1 << 20;

/// Reads `<dir>/cases.json`.
pub fn read_cases(dir: &Path) -> Result<Vec<GoldenCase>> {
    let path = case_file(dir, "cases.json")?;
    let fail = |reason: String| Error::bundle(&path, reason);
    // a regular file only (a FIFO would be waited on forever), read no further than the cap
    let text = crate::regular_file::read_text_capped(&path, MAX_CASES_BYTES).map_err(fail)?;
    let cases: Vec<GoldenCase> =
        serde_json::from_str(&text).map_err(|e| fail(format!("not a list of cases: {e}")))?;
    if cases.is_empty() {
        return Err(fail("no cases".into()));
    }
    Ok(cases)
}

/// Where a case's file lies, refusing names that leave the folder, by
/// their components or through a symbolic link.
fn case_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let relative = Path::new(name);
    let outside = || {
        Error::bundle(
            dir,
            format!("case file {name:?} is outside the golden folder"),
        )
    };
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(outside());
    }
    let path = dir.join(relative);
    let real_dir = dir
        .canonicalize()
        .map_err(|e| Error::bundle(dir, format!("cannot read the golden folder: {e}")))?;
    match path.canonicalize() {
        Ok(real) if !real.starts_with(&real_dir) => Err(outside()),
        // a missing file is reported by whoever opens it, with its name
        _ => Ok(path),
    }
}

/// Most pixels a golden case may make the networks process: the cases are
/// small references computed by PyTorch, run untiled; a hostile case list
/// must not ask for gigabytes (8192 x 8192 untiled took 19.7 GB on tiny).
pub const MAX_CASE_PIXELS: u64 = 2048 * 2048;

/// Largest reference file read: a float32 image of [`MAX_CASE_PIXELS`].
const MAX_REFERENCE_BYTES: u64 = MAX_CASE_PIXELS * 3 * 4 + 4096;

/// Runs one case through the whole pipeline (decode, resize, networks,
/// color fix; untiled) and compares the float output with the reference.
pub fn run_case(pipeline: &mut Pipeline, dir: &Path, case: &GoldenCase) -> Result<CaseResult> {
    if case.sample != "mean" {
        return Err(Error::bundle(
            dir,
            format!(
                "{}: sample {:?}; only posterior-mean cases can be compared",
                case.name, case.sample
            ),
        ));
    }
    let color_fix: ColorFix = case
        .color_fix
        .parse()
        .map_err(|e| Error::bundle(dir, format!("{}: {e}", case.name)))?;
    let options = RunOptions {
        timesteps: vec![case.timestep],
        upscale: case.upscale,
        process_size: case.process_size,
        tile_px: 0,
        tile_overlap_px: 0,
        tiling: TilingMode::Staged,
        color_fix,
        seed: None,
        rounding: crate::image::tensor::Quantization::Round,
    };
    // the case's options are checked before anything is computed
    options
        .check(pipeline.schedule())
        .map_err(|e| Error::bundle(dir, format!("{}: {e}", case.name)))?;
    let input = read_input(&case_file(dir, &case.input)?, &InputLimits::default())?;
    let plan = size_plan::plan_sizes(input.width, input.height, case.upscale, case.process_size)?;
    let (model_width, model_height) = plan.model;
    if u64::from(model_width) * u64::from(model_height) > MAX_CASE_PIXELS {
        return Err(Error::bundle(
            dir,
            format!(
                "{}: the networks would process {model_width}x{model_height}, more than a golden case may \
                 ({MAX_CASE_PIXELS} pixels, untiled)",
                case.name
            ),
        ));
    }
    let prepared = pipeline::prepare(&input, &plan)?;
    let (ours, _) = pipeline.upscale_tensor(
        &prepared.model_input,
        &prepared.source_planes,
        case.timestep,
        &options,
        &NoProgress,
    )?;
    let reference_path = case_file(dir, &case.reference)?;
    let reference_bytes =
        crate::regular_file::read_bytes_capped(&reference_path, MAX_REFERENCE_BYTES)
            .map_err(|reason| Error::bundle(&reference_path, reason))?;
    let reference = npy::parse_npy(&reference_bytes)
        .map_err(|e| Error::bundle(&reference_path, e.to_string()))?;
    let shape = reference.shape().to_vec();
    let (_, height, width) = ours.dim();
    if shape != [height, width, 3] {
        return Err(Error::bundle(
            &reference_path,
            format!("reference shape {shape:?}, the output is [{height}, {width}, 3]"),
        ));
    }
    let reference_chw: Vec<f32> = reference
        .permuted_axes(vec![2, 0, 1])
        .iter()
        .copied()
        .collect();
    let ours = ours.as_slice().expect("standard layout");
    let max_abs_error = reference_chw
        .iter()
        .zip(ours)
        .map(|(a, b)| (a - b).abs())
        // NaN (in the reference or ours) is kept: f32::max would drop it and pass the case
        .fold(0.0f32, |most, error| {
            if most.is_nan() || error.is_nan() {
                f32::NAN
            } else {
                most.max(error)
            }
        });
    Ok(CaseResult {
        name: case.name.clone(),
        max_abs_error,
        psnr_db: psnr(&reference_chw, ours),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_files_stay_inside_the_folder() {
        let bundle = tempfile::tempdir().unwrap();
        let dir = bundle.path().join("golden");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(case_file(&dir, "a.png").unwrap(), dir.join("a.png"));
        for bad in ["../manifest.json", "/etc/passwd", "x/../../y"] {
            assert!(case_file(&dir, bad).is_err(), "{bad}");
        }
        // nor through a symbolic link (a case list read from elsewhere)
        let elsewhere = bundle.path().join("cases.json");
        std::fs::write(&elsewhere, "[]").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&elsewhere, dir.join("cases.json")).unwrap();
            let error = read_cases(&dir).unwrap_err().to_string();
            assert!(error.contains("outside the golden folder"), "{error}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_as_the_case_list_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cases.json");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let error = read_cases(dir.path()).unwrap_err().to_string();
        assert!(error.contains("FIFO"), "{error}");
    }

    #[test]
    fn a_missing_or_empty_case_list_is_the_bundles_fault() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_cases(dir.path())
            .unwrap_err()
            .to_string()
            .contains("cases.json"));
        std::fs::write(dir.path().join("cases.json"), "[]").unwrap();
        assert!(read_cases(dir.path())
            .unwrap_err()
            .to_string()
            .contains("no cases"));
    }
}
