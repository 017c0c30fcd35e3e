//! Color correction of the decoded image against the upscaled input U
//! (spec step 11): AdaIN statistics transfer and the wavelet low-band swap.
//!
//! Both work on `[C, H, W]` float planes in [0, 1] (take `.index_axis(Axis(0), 0)`
//! of an NCHW tensor), change the target in place and clamp it to [0, 1].
//!
//! Over 500 lines only with its unit tests beside the code (the code is
//! about 360 lines).

use std::fmt;
use std::str::FromStr;

use ndarray::{ArrayView3, ArrayViewMut3};
use rayon::prelude::*;

/// Added to the unbiased variance before the square root (the authors' `eps`).
pub const ADAIN_EPSILON: f64 = 1e-5;
/// Levels of the wavelet decomposition.
pub const WAVELET_LEVELS: usize = 5;

/// Errors from color correction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ColorFixError {
    #[error("target planes {target_shape:?} and source planes {source_shape:?} differ in shape")]
    ShapeMismatch {
        target_shape: Vec<usize>,
        source_shape: Vec<usize>,
    },
    #[error("planes of shape {0:?} are empty")]
    Empty(Vec<usize>),
    #[error("unknown color fix {0:?} (expected adain, wavelet or none)")]
    UnknownMethod(String),
}

/// Which correction to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorFix {
    /// Per-channel mean and standard deviation of U (the authors' default).
    #[default]
    Adain,
    /// High frequencies of the result, lowest band of U.
    Wavelet,
    /// Leave the result as it is.
    None,
}

impl ColorFix {
    /// Applies the correction to `target` (the decoded image) against `source` (U).
    pub fn apply(
        self,
        target: ArrayViewMut3<'_, f32>,
        source: ArrayView3<'_, f32>,
    ) -> Result<(), ColorFixError> {
        match self {
            ColorFix::Adain => adain_color_fix(target, source),
            ColorFix::Wavelet => wavelet_color_fix(target, source),
            ColorFix::None => Ok(()),
        }
    }

    /// The name used on the command line and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ColorFix::Adain => "adain",
            ColorFix::Wavelet => "wavelet",
            ColorFix::None => "none",
        }
    }
}

impl fmt::Display for ColorFix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for ColorFix {
    type Err = ColorFixError;

    /// Accepts `adain`, `wavelet`, `none` (and the authors' `nofix`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "adain" => Ok(ColorFix::Adain),
            "wavelet" => Ok(ColorFix::Wavelet),
            "none" | "nofix" => Ok(ColorFix::None),
            _ => Err(ColorFixError::UnknownMethod(name.to_string())),
        }
    }
}

/// As a manifest's `defaults.color_fix`: the names [`FromStr`] accepts; any
/// other is refused, naming the field (never silently adain).
impl<'de> serde::Deserialize<'de> for ColorFix {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "defaults.color_fix is {text:?}, expected one of adain, wavelet, none"
            ))
        })
    }
}

// ---------------------------------------------------------------------------
// Plane plumbing
// ---------------------------------------------------------------------------

/// Runs `fix_plane(target_plane, source_plane, height, width)` for each channel
/// in turn (the work inside a plane is parallel), on contiguous copies where
/// the views are not in standard layout.
fn for_each_channel(
    mut target: ArrayViewMut3<'_, f32>,
    source: ArrayView3<'_, f32>,
    mut fix_plane: impl FnMut(&mut [f32], &[f32], usize, usize),
) -> Result<(), ColorFixError> {
    if target.shape() != source.shape() {
        return Err(ColorFixError::ShapeMismatch {
            target_shape: target.shape().to_vec(),
            source_shape: source.shape().to_vec(),
        });
    }
    if target.is_empty() {
        return Err(ColorFixError::Empty(target.shape().to_vec()));
    }
    let (height, width) = (target.shape()[1], target.shape()[2]);
    let plane_len = height * width;
    let source = source.as_standard_layout();
    let source_samples = source.as_slice().expect("standard layout is contiguous");
    let mut fix_all = |target_samples: &mut [f32]| {
        target_samples
            .chunks_exact_mut(plane_len)
            .zip(source_samples.chunks_exact(plane_len))
            .for_each(|(target_plane, source_plane)| {
                fix_plane(target_plane, source_plane, height, width)
            });
    };
    match target.as_slice_mut() {
        Some(target_samples) => fix_all(target_samples),
        None => {
            let mut owned = target.as_standard_layout().into_owned();
            fix_all(owned.as_slice_mut().expect("standard layout is contiguous"));
            target.assign(&owned);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// AdaIN
// ---------------------------------------------------------------------------

/// Mean and `sqrt(unbiased variance + 1e-5)` of one channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelStats {
    pub mean: f64,
    pub std: f64,
}

/// Samples per parallel work item when summing a plane.
const STATS_CHUNK: usize = 1 << 14;
/// Independent accumulators per sum, so the inner loop vectorizes.
const STATS_LANES: usize = 8;

/// `(sum of d, sum of d^2)` with `d = v - shift`, in `f64`.
fn shifted_sums(samples: &[f32], shift: f64) -> (f64, f64) {
    let mut lane_sums = [0.0f64; STATS_LANES];
    let mut lane_squares = [0.0f64; STATS_LANES];
    let chunks = samples.chunks_exact(STATS_LANES);
    let remainder = chunks.remainder();
    for chunk in chunks {
        let lanes = lane_sums.iter_mut().zip(lane_squares.iter_mut());
        for ((sum, square), &value) in lanes.zip(chunk) {
            let deviation = f64::from(value) - shift;
            *sum += deviation;
            *square += deviation * deviation;
        }
    }
    let mut sum: f64 = lane_sums.iter().sum();
    let mut square: f64 = lane_squares.iter().sum();
    for &value in remainder {
        let deviation = f64::from(value) - shift;
        sum += deviation;
        square += deviation * deviation;
    }
    (sum, square)
}

/// [`ChannelStats`] of a plane in one pass, accumulated in `f64` around the
/// first sample (so no precision is lost to a large mean). A single sample
/// has variance 0 here (torch gives NaN).
pub fn channel_stats(plane: &[f32]) -> ChannelStats {
    let count = plane.len() as f64;
    let shift = plane.first().map_or(0.0, |&first| f64::from(first));
    let (sum, square) = plane
        .par_chunks(STATS_CHUNK)
        .map(|chunk| shifted_sums(chunk, shift))
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let mean_deviation = if plane.is_empty() { 0.0 } else { sum / count };
    let variance = if plane.len() > 1 {
        ((square - sum * mean_deviation) / (count - 1.0)).max(0.0)
    } else {
        0.0
    };
    ChannelStats {
        mean: shift + mean_deviation,
        std: (variance + ADAIN_EPSILON).sqrt(),
    }
}

fn adain_plane(target: &mut [f32], source: &[f32]) {
    let target_stats = channel_stats(target);
    let source_stats = channel_stats(source);
    let (target_mean, target_std) = (target_stats.mean as f32, target_stats.std as f32);
    let (source_mean, source_std) = (source_stats.mean as f32, source_stats.std as f32);
    // The authors' order of operations, in f32 like torch.
    target.par_iter_mut().for_each(|sample| {
        let normalized = (*sample - target_mean) / target_std;
        *sample = (normalized * source_std + source_mean).clamp(0.0, 1.0);
    });
}

/// AdaIN color fix: per channel `(y - mean_y) / std_y * std_u + mean_u`,
/// clamped to [0, 1]. `target` is y (changed in place), `source` is U.
pub fn adain_color_fix(
    target: ArrayViewMut3<'_, f32>,
    source: ArrayView3<'_, f32>,
) -> Result<(), ColorFixError> {
    for_each_channel(target, source, |target_plane, source_plane, _, _| {
        adain_plane(target_plane, source_plane)
    })
}

// ---------------------------------------------------------------------------
// Wavelet
// ---------------------------------------------------------------------------

/// Work buffers for one plane's decomposition, reused across levels and planes.
struct BlurBuffers {
    current: Vec<f32>,
    blurred: Vec<f32>,
    row_blurred: Vec<f32>,
}

impl BlurBuffers {
    fn new(plane_len: usize) -> Self {
        BlurBuffers {
            current: vec![0.0; plane_len],
            blurred: vec![0.0; plane_len],
            row_blurred: vec![0.0; plane_len],
        }
    }
}

/// `[1, 2, 1] / 4` along a row with taps `radius` apart, edges replicated.
fn blur_row(row: &[f32], radius: usize, blurred: &mut [f32]) {
    let width = row.len();
    let last = width - 1;
    let blur_at = |x: usize| {
        let left = row[x.saturating_sub(radius)];
        let right = row[(x + radius).min(last)];
        0.25 * (left + right) + 0.5 * row[x]
    };
    let left_edge_end = radius.min(width);
    let right_edge_start = width.saturating_sub(radius).max(left_edge_end);
    for (x, out) in blurred.iter_mut().enumerate().take(left_edge_end) {
        *out = blur_at(x);
    }
    if right_edge_start > left_edge_end {
        // Interior: no clamping, three shifted slices.
        let interior_len = right_edge_start - left_edge_end;
        let lefts = &row[..interior_len];
        let centers = &row[radius..radius + interior_len];
        let rights = &row[2 * radius..2 * radius + interior_len];
        let outs = &mut blurred[radius..radius + interior_len];
        for (((out, &left), &center), &right) in outs.iter_mut().zip(lefts).zip(centers).zip(rights)
        {
            *out = 0.25 * (left + right) + 0.5 * center;
        }
    }
    for (x, out) in blurred.iter_mut().enumerate().skip(right_edge_start) {
        *out = blur_at(x);
    }
}

/// `[1, 2, 1] / 4` down the columns: one output row from three input rows.
fn blur_column_rows(above: &[f32], center: &[f32], below: &[f32], blurred: &mut [f32]) {
    for (((out, &up), &mid), &down) in blurred.iter_mut().zip(above).zip(center).zip(below) {
        *out = 0.25 * (up + down) + 0.5 * mid;
    }
}

/// One wavelet blur: the 3x3 kernel `[[1,2,1],[2,4,2],[1,2,1]] / 16` with
/// dilation `radius` and replicate padding `radius`, as two separable passes
/// (`row_blurred` holds the horizontal pass).
pub fn wavelet_blur(
    plane: &[f32],
    height: usize,
    width: usize,
    radius: usize,
    blurred: &mut [f32],
    row_blurred: &mut [f32],
) {
    row_blurred
        .par_chunks_mut(width)
        .zip(plane.par_chunks(width))
        .for_each(|(out_row, in_row)| blur_row(in_row, radius, out_row));
    let rows = &*row_blurred;
    let row_at = |y: usize| &rows[y * width..(y + 1) * width];
    blurred
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(y, out_row)| {
            let above = row_at(y.saturating_sub(radius));
            let below = row_at((y + radius).min(height - 1));
            blur_column_rows(above, row_at(y), below, out_row);
        });
}

/// The lowest band of `plane`: [`WAVELET_LEVELS`] blurs with radius 1, 2, 4, ...
/// each applied to the previous one. Leaves it in `buffers.current`.
fn low_band(plane: &[f32], height: usize, width: usize, buffers: &mut BlurBuffers) {
    for level in 0..WAVELET_LEVELS {
        let radius = 1 << level;
        let level_input = if level == 0 {
            plane
        } else {
            &buffers.current[..]
        };
        wavelet_blur(
            level_input,
            height,
            width,
            radius,
            &mut buffers.blurred,
            &mut buffers.row_blurred,
        );
        std::mem::swap(&mut buffers.current, &mut buffers.blurred);
    }
}

/// The authors' high band is the sum over levels of (level input - its blur);
/// that sum telescopes to `plane - low_band(plane)`, which is computed here
/// (fewer passes, one rounding instead of five).
fn wavelet_plane(
    target: &mut [f32],
    source: &[f32],
    height: usize,
    width: usize,
    buffers: &mut BlurBuffers,
) {
    low_band(target, height, width, buffers);
    target
        .par_iter_mut()
        .zip(buffers.current.par_iter())
        .for_each(|(sample, &low)| *sample -= low);
    low_band(source, height, width, buffers);
    target
        .par_iter_mut()
        .zip(buffers.current.par_iter())
        .for_each(|(high, &low)| *high = (*high + low).clamp(0.0, 1.0));
}

/// Wavelet color fix: the target's high frequencies (5 levels of a dilated
/// 3x3 blur) plus the source's lowest band, clamped to [0, 1].
pub fn wavelet_color_fix(
    target: ArrayViewMut3<'_, f32>,
    source: ArrayView3<'_, f32>,
) -> Result<(), ColorFixError> {
    let mut buffers: Option<BlurBuffers> = None;
    for_each_channel(
        target,
        source,
        |target_plane, source_plane, height, width| {
            let buffers = buffers.get_or_insert_with(|| BlurBuffers::new(target_plane.len()));
            wavelet_plane(target_plane, source_plane, height, width, buffers);
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, Axis};
    use std::path::Path;

    fn textured(channels: usize, height: usize, width: usize, seed: u32) -> Array3<f32> {
        Array3::from_shape_fn((channels, height, width), |(c, y, x)| {
            let hash = (x as u32 * 73_856_093)
                ^ (y as u32 * 19_349_663)
                ^ ((c as u32 + seed) * 83_492_791);
            let noise = (hash % 1000) as f32 / 1000.0;
            (0.3 + 0.2 * (x as f32 / width as f32) + 0.1 * c as f32 + 0.2 * noise).clamp(0.0, 1.0)
        })
    }

    fn max_abs_diff(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn names_parse() {
        assert_eq!("adain".parse(), Ok(ColorFix::Adain));
        assert_eq!("Wavelet".parse(), Ok(ColorFix::Wavelet));
        assert_eq!("nofix".parse(), Ok(ColorFix::None));
        assert!("sharpen".parse::<ColorFix>().is_err());
        assert_eq!(ColorFix::Wavelet.to_string(), "wavelet");
        assert_eq!(ColorFix::default(), ColorFix::Adain);
    }

    #[test]
    fn stats_of_a_known_plane() {
        let stats = channel_stats(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(stats.mean, 2.5);
        assert!((stats.std - (5.0f64 / 3.0 + 1e-5).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn adain_against_itself_is_identity() {
        let image = textured(3, 17, 23, 1);
        let mut target = image.clone();
        adain_color_fix(target.view_mut(), image.view()).unwrap();
        assert!(max_abs_diff(&target, &image) <= 1e-5);
    }

    #[test]
    fn adain_transfers_mean_and_std() {
        let source = textured(3, 20, 30, 2);
        let original = textured(3, 20, 30, 9).mapv(|v| v * 0.5 + 0.1);
        let mut target = original.clone();
        adain_color_fix(target.view_mut(), source.view()).unwrap();
        let planes = target.axis_iter(Axis(0)).zip(source.axis_iter(Axis(0)));
        for (channel, (target_plane, source_plane)) in planes.enumerate() {
            let ours = channel_stats(target_plane.as_slice().unwrap());
            let theirs = channel_stats(source_plane.as_slice().unwrap());
            let before = channel_stats(original.index_axis(Axis(0), channel).as_slice().unwrap());
            // var' = var_y / (var_y + eps) * (var_u + eps), and the stats add eps again.
            let variance = |stats: ChannelStats| stats.std * stats.std - ADAIN_EPSILON;
            let expected_std =
                (variance(before) / (before.std * before.std) * theirs.std * theirs.std
                    + ADAIN_EPSILON)
                    .sqrt();
            assert!((ours.mean - theirs.mean).abs() < 1e-6);
            assert!(
                (ours.std - expected_std).abs() < 1e-6,
                "{} vs {expected_std}",
                ours.std
            );
        }
    }

    #[test]
    fn adain_of_a_constant_target_gives_the_source_mean() {
        let source = textured(3, 8, 8, 3);
        let mut target = Array3::from_elem((3, 8, 8), 0.9f32);
        adain_color_fix(target.view_mut(), source.view()).unwrap();
        for (target_plane, source_plane) in target.axis_iter(Axis(0)).zip(source.axis_iter(Axis(0)))
        {
            let mean = channel_stats(source_plane.as_slice().unwrap()).mean as f32;
            assert!(target_plane.iter().all(|&v| (v - mean).abs() < 1e-6));
        }
    }

    #[test]
    fn blur_of_a_constant_is_the_constant() {
        let plane = vec![0.25f32; 7 * 5];
        let mut blurred = vec![0.0; 35];
        let mut scratch = vec![0.0; 35];
        for radius in [1, 2, 4, 8, 16] {
            wavelet_blur(&plane, 7, 5, radius, &mut blurred, &mut scratch);
            assert!(blurred.iter().all(|&v| v == 0.25));
        }
    }

    #[test]
    fn blur_matches_the_dilated_3x3_kernel() {
        let (height, width) = (6, 9);
        let plane: Vec<f32> = (0..height * width)
            .map(|i| ((i * 7919) % 101) as f32 / 101.0)
            .collect();
        let kernel = [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]];
        for radius in [1usize, 2, 4, 8] {
            let mut blurred = vec![0.0; plane.len()];
            let mut scratch = vec![0.0; plane.len()];
            wavelet_blur(&plane, height, width, radius, &mut blurred, &mut scratch);
            for y in 0..height {
                for x in 0..width {
                    let mut expected = 0.0f64;
                    for (ky, kernel_row) in kernel.iter().enumerate() {
                        for (kx, &weight) in kernel_row.iter().enumerate() {
                            let sy = (y as isize + (ky as isize - 1) * radius as isize)
                                .clamp(0, height as isize - 1);
                            let sx = (x as isize + (kx as isize - 1) * radius as isize)
                                .clamp(0, width as isize - 1);
                            expected +=
                                weight / 16.0 * f64::from(plane[sy as usize * width + sx as usize]);
                        }
                    }
                    let ours = f64::from(blurred[y * width + x]);
                    assert!((ours - expected).abs() < 1e-6, "r={radius} ({y},{x})");
                }
            }
        }
    }

    #[test]
    fn wavelet_of_identical_images_is_identity() {
        let image = textured(3, 19, 26, 4);
        let mut target = image.clone();
        wavelet_color_fix(target.view_mut(), image.view()).unwrap();
        assert!(max_abs_diff(&target, &image) <= 1e-5);
    }

    #[test]
    fn wavelet_takes_the_low_band_from_the_source() {
        // Constant images have no high frequencies: the result is the source constant.
        let source = Array3::from_elem((3, 9, 12), 0.2f32);
        let mut target = Array3::from_elem((3, 9, 12), 0.8f32);
        wavelet_color_fix(target.view_mut(), source.view()).unwrap();
        assert!(target.iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn non_standard_layouts_work() {
        let image = textured(3, 10, 12, 5);
        let source = textured(3, 10, 12, 6);
        let mut expected = image.clone();
        wavelet_color_fix(expected.view_mut(), source.view()).unwrap();
        // The same data transposed in memory (H and W swapped twice).
        let mut transposed = image
            .clone()
            .permuted_axes([0, 2, 1])
            .as_standard_layout()
            .into_owned();
        let target_view = transposed.view_mut().permuted_axes([0, 2, 1]);
        let source_transposed = source
            .clone()
            .permuted_axes([0, 2, 1])
            .as_standard_layout()
            .into_owned();
        wavelet_color_fix(
            target_view,
            source_transposed.view().permuted_axes([0, 2, 1]),
        )
        .unwrap();
        let result = transposed.permuted_axes([0, 2, 1]);
        assert!(max_abs_diff(&result.to_owned(), &expected) == 0.0);
    }

    #[test]
    fn shape_errors() {
        let mut target = Array3::<f32>::zeros((3, 4, 4));
        let source = Array3::<f32>::zeros((3, 4, 5));
        assert!(matches!(
            ColorFix::Adain.apply(target.view_mut(), source.view()),
            Err(ColorFixError::ShapeMismatch { .. })
        ));
        let mut empty = Array3::<f32>::zeros((3, 0, 4));
        let empty_source = empty.clone();
        assert!(matches!(
            wavelet_color_fix(empty.view_mut(), empty_source.view()),
            Err(ColorFixError::Empty(_))
        ));
        let unchanged = target.clone();
        assert_eq!(
            ColorFix::None.apply(target.view_mut(), unchanged.view()),
            Ok(())
        );
    }

    /// Compares with PyTorch references made by tests/fixtures/colorfix/make_fixtures.py.
    #[test]
    fn matches_pytorch_references() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/colorfix");
        let load = |name: &str| -> Array3<f32> {
            crate::npy::read_npy(dir.join(name))
                .unwrap_or_else(|err| panic!("{name}: {err}"))
                .into_dimensionality()
                .expect("[C, H, W]")
        };
        for case in ["photo", "tiny"] {
            let content = load(&format!("{case}_content.npy"));
            let style = load(&format!("{case}_style.npy"));
            for (method, name) in [(ColorFix::Adain, "adain"), (ColorFix::Wavelet, "wavelet")] {
                let expected = load(&format!("{case}_{name}.npy"));
                let mut ours = content.clone();
                method.apply(ours.view_mut(), style.view()).unwrap();
                let error = max_abs_diff(&ours, &expected);
                eprintln!("{case} {name}: max |ours - torch| = {error:e}");
                assert!(error <= 1e-5, "{case} {name}: {error}");
            }
        }
    }
}
