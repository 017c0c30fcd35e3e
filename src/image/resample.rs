//! Pillow-compatible resampling: bicubic, Lanczos (and the other filters of
//! [`ResampleFilter`]) for 8-bit and float images.
//!
//! Hand-written, not a crate: it follows Pillow's `Image.resize`
//! (libImaging/Resample.c) exactly: a separable convolution, horizontal
//! pass first, with per-output-pixel normalized coefficients. For 8-bit
//! images the coefficients are fixed point with [`PRECISION_BITS`]
//! fractional bits and the intermediate image is 8-bit, as in Pillow, so
//! results match Pillow bit for bit (tests/resize_pillow.rs demands 0 levels
//! of difference against Pillow's own output; a general-purpose resizer
//! such as `fast_image_resize` rounds differently). For float images the
//! sums are taken in `f64` and stored as `f32` (Pillow's mode "F").
//!
//! Over 500 lines only with its unit tests beside the code (the code is
//! about 560 lines: two kernels, 8-bit fixed point and float, share one
//! two-pass driver; splitting them would spread one algorithm over files).

use std::borrow::Cow;

use image::{GrayImage, Rgb32FImage, RgbImage};
use rayon::prelude::*;

pub use super::PreprocessError;

/// Fractional bits of Pillow's fixed-point 8-bit coefficients (32 - 8 - 2).
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

// ---------------------------------------------------------------------------
// Filters and coefficients
// ---------------------------------------------------------------------------

/// The two Pillow filters the pipeline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleFilter {
    /// Pillow `BICUBIC`: cubic convolution with a = -0.5, support 2.
    Bicubic,
    /// Pillow `LANCZOS`: sinc windowed by sinc, a = 3, support 3.
    Lanczos,
}

impl ResampleFilter {
    /// Half-width of the filter in input pixels at scale 1.
    pub fn support(self) -> f64 {
        match self {
            ResampleFilter::Bicubic => 2.0,
            ResampleFilter::Lanczos => 3.0,
        }
    }

    /// Filter value at distance `x` (in filter units).
    pub fn weight(self, x: f64) -> f64 {
        match self {
            ResampleFilter::Bicubic => bicubic_weight(x),
            ResampleFilter::Lanczos => lanczos_weight(x),
        }
    }
}

fn bicubic_weight(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let angle = x * std::f64::consts::PI;
    angle.sin() / angle
}

fn lanczos_weight(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// The input pixels that feed one output pixel: `start .. start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TapSpan {
    start: usize,
    len: usize,
}

/// Normalized resampling coefficients for one axis, `taps_per_output` per output pixel.
#[derive(Debug, Clone)]
struct AxisCoefficients {
    taps_per_output: usize,
    spans: Vec<TapSpan>,
    weights: Vec<f64>,
}

impl AxisCoefficients {
    fn new(in_size: usize, out_size: usize, filter: ResampleFilter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        let taps_per_output = support.ceil() as usize * 2 + 1;
        let inverse_filter_scale = 1.0 / filter_scale;

        let mut spans = Vec::with_capacity(out_size);
        let mut weights = vec![0.0; out_size * taps_per_output];
        for (out_index, row) in weights.chunks_exact_mut(taps_per_output).enumerate() {
            let center = (out_index as f64 + 0.5) * scale;
            // `as i64` truncates toward zero like C's (int) cast.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let len = end.saturating_sub(first);
            let mut weight_sum = 0.0;
            for (tap, weight) in row[..len].iter_mut().enumerate() {
                let distance = (tap + first) as f64 - center + 0.5;
                *weight = filter.weight(distance * inverse_filter_scale);
                weight_sum += *weight;
            }
            if weight_sum != 0.0 {
                row[..len]
                    .iter_mut()
                    .for_each(|weight| *weight /= weight_sum);
            }
            spans.push(TapSpan { start: first, len });
        }
        AxisCoefficients {
            taps_per_output,
            spans,
            weights,
        }
    }

    fn weights_of(&self, out_index: usize) -> &[f64] {
        let offset = out_index * self.taps_per_output;
        &self.weights[offset..offset + self.spans[out_index].len]
    }

    /// First and one-past-last input index that any output pixel reads.
    fn input_range(&self) -> (usize, usize) {
        let first = self.spans.first().map_or(0, |span| span.start);
        let end = self.spans.last().map_or(0, |span| span.start + span.len);
        (first, end)
    }

    /// Pillow's fixed-point conversion: round half away from zero.
    fn to_fixed_point(&self) -> FixedCoefficients {
        let one = f64::from(1u32 << PRECISION_BITS);
        let weights = self
            .weights
            .iter()
            .map(|&weight| {
                if weight < 0.0 {
                    (-0.5 + weight * one) as i32
                } else {
                    (0.5 + weight * one) as i32
                }
            })
            .collect();
        FixedCoefficients {
            taps_per_output: self.taps_per_output,
            spans: self.spans.clone(),
            weights,
        }
    }
}

/// [`AxisCoefficients`] in Pillow's 8-bit fixed point.
#[derive(Debug, Clone)]
struct FixedCoefficients {
    taps_per_output: usize,
    spans: Vec<TapSpan>,
    weights: Vec<i32>,
}

impl FixedCoefficients {
    fn weights_of(&self, out_index: usize) -> &[i32] {
        let offset = out_index * self.taps_per_output;
        &self.weights[offset..offset + self.spans[out_index].len]
    }
}

const FIXED_ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

#[inline]
fn clip_fixed_to_u8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

// ---------------------------------------------------------------------------
// Generic two-pass driver
// ---------------------------------------------------------------------------

/// Geometry of an interleaved image buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    width: usize,
    height: usize,
    channels: usize,
}

impl Layout {
    fn row_len(&self) -> usize {
        self.width * self.channels
    }
}

pub(super) fn check_buffer(
    len: usize,
    width: u32,
    height: u32,
    channels: usize,
) -> Result<Layout, PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::EmptyImage { width, height });
    }
    if !(1..=4).contains(&channels) {
        return Err(PreprocessError::UnsupportedChannels(channels));
    }
    let expected = width as usize * height as usize * channels;
    if len != expected {
        return Err(PreprocessError::BufferSize {
            width,
            height,
            channels,
            expected,
            actual: len,
        });
    }
    Ok(Layout {
        width: width as usize,
        height: height as usize,
        channels,
    })
}

fn check_target(width: u32, height: u32) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::EmptyImage { width, height });
    }
    Ok(())
}

/// Per-sample arithmetic of one resampling precision (8-bit fixed point or float).
trait ResampleKernel: Sync {
    type Sample: Copy + Send + Sync + Default;

    /// Horizontal pass over the `layout.height` rows of `input`; each output row
    /// is `output.len() / layout.height` samples.
    fn horizontal(&self, input: &[Self::Sample], layout: Layout, output: &mut [Self::Sample]);

    /// Vertical pass: every output row (`row_len` samples) from the `input` rows
    /// its span names.
    fn vertical(&self, input: &[Self::Sample], row_len: usize, output: &mut [Self::Sample]);
}

/// Runs Pillow's two passes: horizontal over only the rows the vertical pass
/// needs, then vertical. A pass whose size is unchanged is skipped.
fn resample_two_pass<K, MakeKernel>(
    src: &[K::Sample],
    layout: Layout,
    new_width: usize,
    new_height: usize,
    filter: ResampleFilter,
    make_kernel: MakeKernel,
) -> Vec<K::Sample>
where
    K: ResampleKernel,
    MakeKernel: Fn(AxisCoefficients) -> K,
{
    let vertical = AxisCoefficients::new(layout.height, new_height, filter);
    let (first_row, end_row) = vertical.input_range();

    let row_band: Cow<'_, [K::Sample]> = if new_width != layout.width {
        let horizontal = make_kernel(AxisCoefficients::new(layout.width, new_width, filter));
        let band_rows = end_row - first_row;
        let band_input = &src[first_row * layout.row_len()..end_row * layout.row_len()];
        let mut band = vec![K::Sample::default(); band_rows * new_width * layout.channels];
        let band_layout = Layout {
            height: band_rows,
            ..layout
        };
        horizontal.horizontal(band_input, band_layout, &mut band);
        Cow::Owned(band)
    } else {
        Cow::Borrowed(&src[first_row * layout.row_len()..end_row * layout.row_len()])
    };

    if new_height == layout.height {
        return row_band.into_owned();
    }
    let row_len = new_width * layout.channels;
    let mut output = vec![K::Sample::default(); new_height * row_len];
    let vertical = make_kernel(shift_spans(vertical, first_row));
    vertical.vertical(&row_band, row_len, &mut output);
    output
}

/// Re-bases the spans so that row `first_row` of the source is row 0 of the band.
fn shift_spans(mut coefficients: AxisCoefficients, first_row: usize) -> AxisCoefficients {
    for span in &mut coefficients.spans {
        span.start -= first_row;
    }
    coefficients
}

// ---------------------------------------------------------------------------
// 8-bit kernel (Pillow's fixed point)
// ---------------------------------------------------------------------------

struct FixedPointKernel {
    coefficients: FixedCoefficients,
}

impl FixedPointKernel {
    fn horizontal_row<const C: usize>(&self, input_row: &[u8], output_row: &mut [u8]) {
        for (out_x, out_pixel) in output_row.chunks_exact_mut(C).enumerate() {
            let span = self.coefficients.spans[out_x];
            let weights = self.coefficients.weights_of(out_x);
            let taps = &input_row[span.start * C..(span.start + span.len) * C];
            let mut sums = [FIXED_ROUNDING; C];
            for (pixel, &weight) in taps.chunks_exact(C).zip(weights) {
                for channel in 0..C {
                    sums[channel] += i32::from(pixel[channel]) * weight;
                }
            }
            for channel in 0..C {
                out_pixel[channel] = clip_fixed_to_u8(sums[channel]);
            }
        }
    }

    fn horizontal_rows<const C: usize>(&self, input: &[u8], layout: Layout, output: &mut [u8]) {
        let out_row_len = output.len() / layout.height;
        output
            .par_chunks_mut(out_row_len)
            .zip(input.par_chunks(layout.row_len()))
            .for_each(|(output_row, input_row)| self.horizontal_row::<C>(input_row, output_row));
    }
}

impl ResampleKernel for FixedPointKernel {
    type Sample = u8;

    fn horizontal(&self, input: &[u8], layout: Layout, output: &mut [u8]) {
        match layout.channels {
            1 => self.horizontal_rows::<1>(input, layout, output),
            2 => self.horizontal_rows::<2>(input, layout, output),
            3 => self.horizontal_rows::<3>(input, layout, output),
            _ => self.horizontal_rows::<4>(input, layout, output),
        }
    }

    fn vertical(&self, input: &[u8], row_len: usize, output: &mut [u8]) {
        output.par_chunks_mut(row_len).enumerate().for_each_init(
            || vec![0i32; row_len],
            |sums, (out_y, output_row)| {
                sums.fill(FIXED_ROUNDING);
                let span = self.coefficients.spans[out_y];
                let weights = self.coefficients.weights_of(out_y);
                for (tap, &weight) in weights.iter().enumerate() {
                    let row_start = (span.start + tap) * row_len;
                    let input_row = &input[row_start..row_start + row_len];
                    for (sum, &sample) in sums.iter_mut().zip(input_row) {
                        *sum += i32::from(sample) * weight;
                    }
                }
                for (out_sample, &sum) in output_row.iter_mut().zip(sums.iter()) {
                    *out_sample = clip_fixed_to_u8(sum);
                }
            },
        );
    }
}

// ---------------------------------------------------------------------------
// Float kernel (Pillow's mode "F": f64 sums, f32 storage)
// ---------------------------------------------------------------------------

struct FloatKernel {
    coefficients: AxisCoefficients,
}

impl FloatKernel {
    fn horizontal_row(&self, input_row: &[f32], channels: usize, output_row: &mut [f32]) {
        let mut sums = [0.0f64; 4];
        for (out_x, out_pixel) in output_row.chunks_exact_mut(channels).enumerate() {
            let span = self.coefficients.spans[out_x];
            let weights = self.coefficients.weights_of(out_x);
            let taps = &input_row[span.start * channels..(span.start + span.len) * channels];
            sums.fill(0.0);
            for (pixel, &weight) in taps.chunks_exact(channels).zip(weights) {
                for (sum, &sample) in sums.iter_mut().zip(pixel) {
                    *sum += f64::from(sample) * weight;
                }
            }
            for (out_sample, &sum) in out_pixel.iter_mut().zip(sums.iter()) {
                *out_sample = sum as f32;
            }
        }
    }
}

impl ResampleKernel for FloatKernel {
    type Sample = f32;

    fn horizontal(&self, input: &[f32], layout: Layout, output: &mut [f32]) {
        let out_row_len = output.len() / layout.height;
        output
            .par_chunks_mut(out_row_len)
            .zip(input.par_chunks(layout.row_len()))
            .for_each(|(output_row, input_row)| {
                self.horizontal_row(input_row, layout.channels, output_row)
            });
    }

    fn vertical(&self, input: &[f32], row_len: usize, output: &mut [f32]) {
        output.par_chunks_mut(row_len).enumerate().for_each_init(
            || vec![0f64; row_len],
            |sums, (out_y, output_row)| {
                sums.fill(0.0);
                let span = self.coefficients.spans[out_y];
                let weights = self.coefficients.weights_of(out_y);
                for (tap, &weight) in weights.iter().enumerate() {
                    let row_start = (span.start + tap) * row_len;
                    let input_row = &input[row_start..row_start + row_len];
                    for (sum, &sample) in sums.iter_mut().zip(input_row) {
                        *sum += f64::from(sample) * weight;
                    }
                }
                for (out_sample, &sum) in output_row.iter_mut().zip(sums.iter()) {
                    *out_sample = sum as f32;
                }
            },
        );
    }
}

// ---------------------------------------------------------------------------
// Public resizing API
// ---------------------------------------------------------------------------

/// Resizes an interleaved 8-bit image (`channels` 1 to 4, row-major) exactly
/// like Pillow's `Image.resize` for modes "L" and "RGB" (and "RGBA" without
/// premultiplication). Returns a copy when the size is unchanged.
pub fn resize_u8(
    src: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    new_width: u32,
    new_height: u32,
    filter: ResampleFilter,
) -> Result<Vec<u8>, PreprocessError> {
    let layout = check_buffer(src.len(), width, height, channels)?;
    check_target(new_width, new_height)?;
    Ok(resample_two_pass(
        src,
        layout,
        new_width as usize,
        new_height as usize,
        filter,
        |coefficients| FixedPointKernel {
            coefficients: coefficients.to_fixed_point(),
        },
    ))
}

/// Resizes an interleaved float image like Pillow's mode "F" (per channel):
/// sums in `f64`, intermediate and result in `f32`, no clamping. Use it for
/// 16-bit inputs converted to float.
pub fn resize_f32(
    src: &[f32],
    width: u32,
    height: u32,
    channels: usize,
    new_width: u32,
    new_height: u32,
    filter: ResampleFilter,
) -> Result<Vec<f32>, PreprocessError> {
    let layout = check_buffer(src.len(), width, height, channels)?;
    check_target(new_width, new_height)?;
    Ok(resample_two_pass(
        src,
        layout,
        new_width as usize,
        new_height as usize,
        filter,
        |coefficients| FloatKernel { coefficients },
    ))
}

/// [`resize_u8`] for an `image` RGB buffer.
pub fn resize_rgb8(
    image: &RgbImage,
    new_width: u32,
    new_height: u32,
    filter: ResampleFilter,
) -> Result<RgbImage, PreprocessError> {
    let (width, height) = image.dimensions();
    let pixels = resize_u8(
        image.as_raw(),
        width,
        height,
        3,
        new_width,
        new_height,
        filter,
    )?;
    Ok(RgbImage::from_raw(new_width, new_height, pixels)
        .expect("resize output has the planned size"))
}

/// [`resize_u8`] for a single-channel buffer (an alpha plane).
pub fn resize_gray8(
    image: &GrayImage,
    new_width: u32,
    new_height: u32,
    filter: ResampleFilter,
) -> Result<GrayImage, PreprocessError> {
    let (width, height) = image.dimensions();
    let pixels = resize_u8(
        image.as_raw(),
        width,
        height,
        1,
        new_width,
        new_height,
        filter,
    )?;
    Ok(GrayImage::from_raw(new_width, new_height, pixels)
        .expect("resize output has the planned size"))
}

/// [`resize_f32`] for an `image` float RGB buffer.
pub fn resize_rgb32f(
    image: &Rgb32FImage,
    new_width: u32,
    new_height: u32,
    filter: ResampleFilter,
) -> Result<Rgb32FImage, PreprocessError> {
    let (width, height) = image.dimensions();
    let pixels = resize_f32(
        image.as_raw(),
        width,
        height,
        3,
        new_width,
        new_height,
        filter,
    )?;
    Ok(Rgb32FImage::from_raw(new_width, new_height, pixels)
        .expect("resize output has the planned size"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_support::ramp_image;

    #[test]
    fn coefficients_are_normalized_and_in_bounds() {
        for filter in [ResampleFilter::Bicubic, ResampleFilter::Lanczos] {
            for (in_size, out_size) in [(13, 52), (52, 48), (100, 33), (7, 7), (1, 5)] {
                let coefficients = AxisCoefficients::new(in_size, out_size, filter);
                for out_index in 0..out_size {
                    let span = coefficients.spans[out_index];
                    assert!(span.start + span.len <= in_size);
                    assert!(span.len >= 1);
                    let sum: f64 = coefficients.weights_of(out_index).iter().sum();
                    assert!(
                        (sum - 1.0).abs() < 1e-12,
                        "{filter:?} {in_size}->{out_size}"
                    );
                }
            }
        }
    }

    #[test]
    fn pillow_known_bicubic_coefficients() {
        // 2x upscale: output 0 is centered at 0.25; the span is int(-1.25)..int(2.75)
        // clipped to 0..2, and input pixel i sits at i + 0.5.
        let coefficients = AxisCoefficients::new(4, 8, ResampleFilter::Bicubic);
        assert_eq!(coefficients.spans[0], TapSpan { start: 0, len: 2 });
        let raw = [bicubic_weight(0.25), bicubic_weight(1.25)];
        let sum: f64 = raw.iter().sum();
        for (weight, expected) in coefficients.weights_of(0).iter().zip(raw) {
            assert!((weight - expected / sum).abs() < 1e-15);
        }
    }

    #[test]
    fn filters_are_interpolating() {
        assert_eq!(bicubic_weight(0.0), 1.0);
        assert_eq!(bicubic_weight(1.0), 0.0);
        assert_eq!(bicubic_weight(2.0), 0.0);
        assert_eq!(lanczos_weight(0.0), 1.0);
        assert!(lanczos_weight(1.0).abs() < 1e-15);
        assert_eq!(lanczos_weight(3.0), 0.0);
        assert!(lanczos_weight(-3.0).abs() < 1e-15);
    }

    #[test]
    fn same_size_is_a_copy() {
        let pixels = ramp_image(9, 5, 3);
        let resized = resize_u8(&pixels, 9, 5, 3, 9, 5, ResampleFilter::Lanczos).unwrap();
        assert_eq!(resized, pixels);
    }

    #[test]
    fn constant_image_stays_constant() {
        for channels in 1..=4 {
            let pixels = vec![173u8; 11 * 7 * channels];
            for filter in [ResampleFilter::Bicubic, ResampleFilter::Lanczos] {
                for (new_w, new_h) in [(44, 28), (8, 5), (11, 21), (30, 7)] {
                    let resized =
                        resize_u8(&pixels, 11, 7, channels, new_w, new_h, filter).unwrap();
                    assert_eq!(resized.len(), new_w as usize * new_h as usize * channels);
                    assert!(
                        resized.iter().all(|&v| v == 173),
                        "{filter:?} {new_w}x{new_h}"
                    );
                }
            }
        }
    }

    #[test]
    fn float_path_follows_fixed_point_up_to_its_intermediate_rounding() {
        let width = 13;
        let height = 9;
        let pixels = ramp_image(width, height, 3);
        let floats: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
        for filter in [ResampleFilter::Bicubic, ResampleFilter::Lanczos] {
            let fixed = resize_u8(&pixels, width, height, 3, 52, 36, filter).unwrap();
            let float = resize_f32(&floats, width, height, 3, 52, 36, filter).unwrap();
            // The 8-bit path rounds and clips its intermediate (after the
            // horizontal pass); the float path does not. On this ramp the
            // clipped overshoot moves outputs by up to about 40 levels, so
            // this bound only says the two paths compute the same resize.
            let clipped_inside = fixed
                .iter()
                .zip(&float)
                .filter(|(_, &f)| (0.0..=255.0).contains(&f))
                .map(|(&u, &f)| (f32::from(u) - f).abs())
                .fold(0.0f32, f32::max);
            assert!(clipped_inside <= 40.0, "{filter:?}: {clipped_inside}");
        }
        // A smooth image leaves no room for intermediate rounding to matter much.
        let smooth: Vec<u8> = (0..20 * 20)
            .map(|i| ((i % 20) * 6 + (i / 20) * 4) as u8)
            .collect();
        let smooth_f: Vec<f32> = smooth.iter().map(|&v| f32::from(v)).collect();
        let fixed = resize_u8(&smooth, 20, 20, 1, 80, 80, ResampleFilter::Bicubic).unwrap();
        let float = resize_f32(&smooth_f, 20, 20, 1, 80, 80, ResampleFilter::Bicubic).unwrap();
        for (&u, &f) in fixed.iter().zip(&float) {
            assert!((f32::from(u) - f.clamp(0.0, 255.0)).abs() <= 1.0);
        }
    }

    #[test]
    fn rejects_bad_buffers() {
        assert_eq!(
            resize_u8(&[0; 5], 2, 2, 1, 4, 4, ResampleFilter::Bicubic),
            Err(PreprocessError::BufferSize {
                width: 2,
                height: 2,
                channels: 1,
                expected: 4,
                actual: 5
            })
        );
        assert!(matches!(
            resize_u8(&[0; 4], 2, 2, 1, 0, 4, ResampleFilter::Bicubic),
            Err(PreprocessError::EmptyImage { .. })
        ));
        assert_eq!(
            resize_u8(&[0; 10], 1, 2, 5, 4, 4, ResampleFilter::Bicubic),
            Err(PreprocessError::UnsupportedChannels(5))
        );
    }
}
