//! Preprocessing: Pillow-compatible resampling, the authors' size rule
//! (spec steps 2-4) and image <-> tensor conversion (spec step 5 and back).
//!
//! The resampler follows the algorithm of Pillow's `Image.resize`
//! (libImaging/Resample.c): a separable convolution, horizontal pass first,
//! with per-output-pixel normalized coefficients. For 8-bit images the
//! coefficients are fixed point with [`PRECISION_BITS`] fractional bits and the
//! intermediate image is 8-bit, exactly like Pillow, so results match Pillow
//! bit for bit. For float images the sums are taken in `f64` and stored as
//! `f32` (Pillow's mode "F").

use std::borrow::Cow;

use image::{GrayImage, ImageBuffer, Rgb, Rgb32FImage, RgbImage};
use ndarray::{Array3, Array4, ArrayView3, Axis};
use rayon::prelude::*;

/// Fractional bits of Pillow's fixed-point 8-bit coefficients (32 - 8 - 2).
pub const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Multiple that the model's input sides must be (the VAE's 8x reduction).
pub const MODEL_SIDE_MULTIPLE: u32 = 8;

/// Errors from resizing, size planning and tensor conversion.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreprocessError {
    #[error("image size {width}x{height} is empty")]
    EmptyImage { width: u32, height: u32 },
    #[error("pixel buffer holds {actual} values, {width}x{height} with {channels} channels needs {expected}")]
    BufferSize {
        width: u32,
        height: u32,
        channels: usize,
        expected: usize,
        actual: usize,
    },
    #[error("unsupported channel count {0} (expected 1 to 4)")]
    UnsupportedChannels(usize),
    #[error("upscale factor must be at least 1")]
    ZeroUpscale,
    #[error("image {width}x{height} upscaled by {upscale} gives {model_width}x{model_height} after cropping to multiples of 8; at least 8x8 is needed")]
    TooSmallForModel {
        width: u32,
        height: u32,
        upscale: u32,
        model_width: u32,
        model_height: u32,
    },
    #[error("image size {width}x{height} times {upscale} overflows")]
    SizeOverflow {
        width: u32,
        height: u32,
        upscale: u32,
    },
    #[error("image is {actual:?} but the size plan was made for {planned:?}")]
    PlanMismatch {
        planned: (u32, u32),
        actual: (u32, u32),
    },
    #[error("planes have shape {0:?}, expected [3, H, W] with H, W > 0")]
    PlaneShape(Vec<usize>),
    #[error("{width}x{height} would be processed at {processed_width}x{processed_height} = {processed} pixels, over the limit of {max_pixels} (give a smaller input, or raise --max-pixels)")]
    TooManyPixels {
        width: u32,
        height: u32,
        processed_width: u32,
        processed_height: u32,
        processed: u64,
        max_pixels: u64,
    },
    #[error("{width}x{height} is too thin for the minimum-size rule: enlarged until its short side is {min_side}, it would be processed at {processed_width}x{processed_height} = {processed} pixels, more than {factor} x {process_size}x{process_size}; give --process-size 0 to upscale it without the enlargement")]
    TooThinToEnlarge {
        width: u32,
        height: u32,
        min_side: u32,
        processed_width: u32,
        processed_height: u32,
        processed: u64,
        factor: u64,
        process_size: u32,
    },
}

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
struct Layout {
    width: usize,
    height: usize,
    channels: usize,
}

impl Layout {
    fn row_len(&self) -> usize {
        self.width * self.channels
    }
}

fn check_buffer(
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

// ---------------------------------------------------------------------------
// Size plan (spec steps 2-4)
// ---------------------------------------------------------------------------

/// The sizes an input image goes through before the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePlan {
    /// The input image `(w, h)`.
    pub input: (u32, u32),
    /// Step 2: bicubic enlargement so the short side reaches `process_size / s`.
    pub pre_resize: Option<(u32, u32)>,
    /// Step 3: `(w' * s, h' * s)` after bicubic, `(w', h')` being the pre-resized size.
    pub upscaled: (u32, u32),
    /// Step 4: `upscaled` cropped down to multiples of 8 by a Lanczos resize (image U).
    pub model: (u32, u32),
    /// What the runtime returns: `(w * s, h * s)` of the original input.
    pub output: (u32, u32),
}

impl SizePlan {
    /// Whether step 4 changes the size (and a Lanczos resize runs).
    pub fn needs_model_resize(&self) -> bool {
        self.model != self.upscaled
    }

    /// Whether the model's result must be resized to reach `output`.
    pub fn needs_output_resize(&self) -> bool {
        self.model != self.output
    }

    /// The largest image of the run, in pixels: the networks' input (the
    /// enlarged size under the minimum-size rule) or the output.
    pub fn processed_size(&self) -> (u32, u32) {
        let area = |(w, h): (u32, u32)| u64::from(w) * u64::from(h);
        if area(self.model) >= area(self.output) {
            self.model
        } else {
            self.output
        }
    }

    /// Pixels of [`SizePlan::processed_size`].
    pub fn processed_pixels(&self) -> u64 {
        let (w, h) = self.processed_size();
        u64::from(w) * u64::from(h)
    }
}

/// The minimum-size rule may make the networks process at most this many
/// times `process_size^2` pixels (4 x 512 x 512 by default, e.g. 512 x 2048):
/// it is meant to bring small inputs up to the model's working size, not to
/// turn a 1 x 2000 strip into half a gigapixel.
pub const MAX_ENLARGED_AREA_FACTOR: u64 = 4;

/// Checks a plan against the bounds on work and memory, before any pixel
/// buffer is made: at most `max_pixels` processed pixels (output size, or
/// the enlarged size under the minimum-size rule), and an enlarged input at
/// most [`MAX_ENLARGED_AREA_FACTOR`] `x process_size^2`.
pub fn check_plan_bounds(
    plan: &SizePlan,
    upscale: u32,
    process_size: u32,
    max_pixels: u64,
) -> Result<(), PreprocessError> {
    let (width, height) = plan.input;
    let (processed_width, processed_height) = plan.processed_size();
    let processed = plan.processed_pixels();
    if plan.pre_resize.is_some() {
        let bound = MAX_ENLARGED_AREA_FACTOR * u64::from(process_size) * u64::from(process_size);
        if processed > bound {
            return Err(PreprocessError::TooThinToEnlarge {
                width,
                height,
                min_side: process_size / upscale.max(1),
                processed_width,
                processed_height,
                processed,
                factor: MAX_ENLARGED_AREA_FACTOR,
                process_size,
            });
        }
    }
    if processed > max_pixels {
        return Err(PreprocessError::TooManyPixels {
            width,
            height,
            processed_width,
            processed_height,
            processed,
            max_pixels,
        });
    }
    Ok(())
}

/// The authors' size rule (spec steps 2-4). `process_size == 0` disables the
/// minimum-size pre-resize.
pub fn plan_sizes(
    width: u32,
    height: u32,
    upscale: u32,
    process_size: u32,
) -> Result<SizePlan, PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::EmptyImage { width, height });
    }
    if upscale == 0 {
        return Err(PreprocessError::ZeroUpscale);
    }
    let pre_resize = min_side_pre_resize(width, height, upscale, process_size);
    let (scaled_from_w, scaled_from_h) = pre_resize.unwrap_or((width, height));
    let upscaled = multiply_size(scaled_from_w, scaled_from_h, upscale)?;
    let output = multiply_size(width, height, upscale)?;
    let model = (
        upscaled.0 - upscaled.0 % MODEL_SIDE_MULTIPLE,
        upscaled.1 - upscaled.1 % MODEL_SIDE_MULTIPLE,
    );
    if model.0 == 0 || model.1 == 0 {
        return Err(PreprocessError::TooSmallForModel {
            width,
            height,
            upscale,
            model_width: model.0,
            model_height: model.1,
        });
    }
    Ok(SizePlan {
        input: (width, height),
        pre_resize,
        upscaled,
        model,
        output,
    })
}

/// Step 2: `scale = (process_size / s) / min(w, h)` and `(int(scale * w), int(scale * h))`,
/// computed in `f64` like the authors' Python.
fn min_side_pre_resize(
    width: u32,
    height: u32,
    upscale: u32,
    process_size: u32,
) -> Option<(u32, u32)> {
    let min_side = process_size / upscale;
    if process_size == 0 || (width >= min_side && height >= min_side) {
        return None;
    }
    let scale = f64::from(min_side) / f64::from(width.min(height));
    Some((
        (scale * f64::from(width)) as u32,
        (scale * f64::from(height)) as u32,
    ))
}

fn multiply_size(width: u32, height: u32, upscale: u32) -> Result<(u32, u32), PreprocessError> {
    let overflow = PreprocessError::SizeOverflow {
        width,
        height,
        upscale,
    };
    match (width.checked_mul(upscale), height.checked_mul(upscale)) {
        (Some(scaled_w), Some(scaled_h)) => Ok((scaled_w, scaled_h)),
        _ => Err(overflow),
    }
}

/// Applies a [`SizePlan`] to an interleaved 8-bit image: bicubic pre-resize,
/// bicubic upscale, Lanczos to multiples of 8; an unchanged size is skipped.
/// Returns the pixels of U, `plan.model` in size.
pub fn apply_size_plan_u8(
    src: &[u8],
    channels: usize,
    plan: &SizePlan,
) -> Result<Vec<u8>, PreprocessError> {
    apply_size_plan(src, channels, plan, resize_u8)
}

/// [`apply_size_plan_u8`] for float images (16-bit inputs).
pub fn apply_size_plan_f32(
    src: &[f32],
    channels: usize,
    plan: &SizePlan,
) -> Result<Vec<f32>, PreprocessError> {
    apply_size_plan(src, channels, plan, resize_f32)
}

type ResizeFn<T> =
    fn(&[T], u32, u32, usize, u32, u32, ResampleFilter) -> Result<Vec<T>, PreprocessError>;

fn apply_size_plan<T: Clone>(
    src: &[T],
    channels: usize,
    plan: &SizePlan,
    resize: ResizeFn<T>,
) -> Result<Vec<T>, PreprocessError> {
    let (width, height) = plan.input;
    check_buffer(src.len(), width, height, channels)?;
    let steps = [
        (plan.pre_resize, ResampleFilter::Bicubic),
        (Some(plan.upscaled), ResampleFilter::Bicubic),
        (Some(plan.model), ResampleFilter::Lanczos),
    ];
    let mut current: Cow<'_, [T]> = Cow::Borrowed(src);
    let mut current_size = plan.input;
    for (target, filter) in steps {
        let Some(target_size) = target else { continue };
        if target_size == current_size {
            continue;
        }
        let (cur_w, cur_h) = current_size;
        current = Cow::Owned(resize(
            &current,
            cur_w,
            cur_h,
            channels,
            target_size.0,
            target_size.1,
            filter,
        )?);
        current_size = target_size;
    }
    Ok(current.into_owned())
}

/// [`apply_size_plan_u8`] for an RGB image; gives image U.
pub fn apply_size_plan_rgb8(
    image: &RgbImage,
    plan: &SizePlan,
) -> Result<RgbImage, PreprocessError> {
    check_plan_input(image.dimensions(), plan)?;
    let pixels = apply_size_plan_u8(image.as_raw(), 3, plan)?;
    Ok(RgbImage::from_raw(plan.model.0, plan.model.1, pixels)
        .expect("plan output has the model size"))
}

/// [`apply_size_plan_u8`] for an alpha plane.
pub fn apply_size_plan_gray8(
    image: &GrayImage,
    plan: &SizePlan,
) -> Result<GrayImage, PreprocessError> {
    check_plan_input(image.dimensions(), plan)?;
    let pixels = apply_size_plan_u8(image.as_raw(), 1, plan)?;
    Ok(GrayImage::from_raw(plan.model.0, plan.model.1, pixels)
        .expect("plan output has the model size"))
}

/// [`apply_size_plan_f32`] for a float RGB image.
pub fn apply_size_plan_rgb32f(
    image: &Rgb32FImage,
    plan: &SizePlan,
) -> Result<Rgb32FImage, PreprocessError> {
    check_plan_input(image.dimensions(), plan)?;
    let pixels = apply_size_plan_f32(image.as_raw(), 3, plan)?;
    Ok(Rgb32FImage::from_raw(plan.model.0, plan.model.1, pixels)
        .expect("plan output has the model size"))
}

fn check_plan_input(actual: (u32, u32), plan: &SizePlan) -> Result<(), PreprocessError> {
    if actual != plan.input {
        return Err(PreprocessError::PlanMismatch {
            planned: plan.input,
            actual,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Image <-> tensor
// ---------------------------------------------------------------------------

/// How a value in [0, 1] becomes an integer sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantization {
    /// `round(v * max)`: the most accurate.
    #[default]
    Round,
    /// `floor(v * max)`: what torchvision's `ToPILImage` does (the authors' output path).
    Truncate,
}

impl Quantization {
    /// `unit_value` clamped to [0, 1], scaled to `0..=max_value` and made whole.
    /// (Integer conversion instead of `f32::round`, which is a libm call on
    /// baseline x86-64; same result for these non-negative values.)
    #[inline]
    fn apply(self, unit_value: f32, max_value: f32) -> u32 {
        let scaled = unit_value.clamp(0.0, 1.0) * max_value;
        let whole = scaled as u32;
        match self {
            Quantization::Round => whole + u32::from(scaled - whole as f32 >= 0.5),
            Quantization::Truncate => whole,
        }
    }
}

/// Splits interleaved RGB samples into a `[3, H, W]` array, mapping each sample with `convert`.
fn interleaved_to_planes<T: Copy + Sync>(
    samples: &[T],
    width: usize,
    height: usize,
    convert: impl Fn(T) -> f32 + Sync,
) -> Array3<f32> {
    let mut planes = Array3::<f32>::zeros((3, height, width));
    let plane_len = width * height;
    let planes_flat = planes.as_slice_mut().expect("new array is contiguous");
    let (red, rest) = planes_flat.split_at_mut(plane_len);
    let (green, blue) = rest.split_at_mut(plane_len);
    red.par_chunks_mut(width)
        .zip(green.par_chunks_mut(width))
        .zip(blue.par_chunks_mut(width))
        .zip(samples.par_chunks(width * 3))
        .for_each(|(((red_row, green_row), blue_row), pixel_row)| {
            for (x, pixel) in pixel_row.chunks_exact(3).enumerate() {
                red_row[x] = convert(pixel[0]);
                green_row[x] = convert(pixel[1]);
                blue_row[x] = convert(pixel[2]);
            }
        });
    planes
}

/// `u / 255 * 2 - 1` in `f32`, the order torchvision's `ToTensor` then `x * 2 - 1` use.
#[inline]
fn model_value_from_u8_scale(sample: f32) -> f32 {
    sample / 255.0 * 2.0 - 1.0
}

/// Image U (8-bit RGB) to the encoder input: NCHW `[1, 3, H, W]` in [-1, 1].
pub fn rgb8_to_model_input(image: &RgbImage) -> Array4<f32> {
    let (width, height) = image.dimensions();
    interleaved_to_planes(image.as_raw(), width as usize, height as usize, |sample| {
        model_value_from_u8_scale(f32::from(sample))
    })
    .insert_axis(Axis(0))
}

/// Float image U with samples on the 0..255 scale (see [`rgb16_to_rgb32f`])
/// to the encoder input: NCHW `[1, 3, H, W]` in [-1, 1].
pub fn rgb32f_to_model_input(image: &Rgb32FImage) -> Array4<f32> {
    let (width, height) = image.dimensions();
    interleaved_to_planes(
        image.as_raw(),
        width as usize,
        height as usize,
        model_value_from_u8_scale,
    )
    .insert_axis(Axis(0))
}

/// Image U (8-bit RGB) as `[3, H, W]` planes in [0, 1] (`u / 255`): the color-fix source.
pub fn rgb8_to_unit_planes(image: &RgbImage) -> Array3<f32> {
    let (width, height) = image.dimensions();
    interleaved_to_planes(image.as_raw(), width as usize, height as usize, |sample| {
        f32::from(sample) / 255.0
    })
}

/// Float image U (0..255 scale) as `[3, H, W]` planes in [0, 1].
pub fn rgb32f_to_unit_planes(image: &Rgb32FImage) -> Array3<f32> {
    let (width, height) = image.dimensions();
    interleaved_to_planes(image.as_raw(), width as usize, height as usize, |sample| {
        sample / 255.0
    })
}

/// A 16-bit RGB image as float samples on the 0..255 scale (`v * 255 / 65535`),
/// ready for [`resize_rgb32f`] and [`rgb32f_to_model_input`].
pub fn rgb16_to_rgb32f(image: &ImageBuffer<Rgb<u16>, Vec<u16>>) -> Rgb32FImage {
    let (width, height) = image.dimensions();
    let samples = image
        .as_raw()
        .par_iter()
        .map(|&sample| f32::from(sample) * (255.0 / 65535.0))
        .collect();
    Rgb32FImage::from_raw(width, height, samples).expect("same size as the input")
}

/// Decoder output in about [-1, 1] to [0, 1], in place: `clamp(y, -1, 1) * 0.5 + 0.5`.
pub fn decoder_output_to_unit(values: &mut [f32]) {
    values
        .par_iter_mut()
        .for_each(|value| *value = value.clamp(-1.0, 1.0) * 0.5 + 0.5);
}

fn plane_dims(planes: &ArrayView3<'_, f32>) -> Result<(usize, usize), PreprocessError> {
    match planes.shape() {
        &[3, height, width] if height > 0 && width > 0 => Ok((height, width)),
        shape => Err(PreprocessError::PlaneShape(shape.to_vec())),
    }
}

/// Interleaves `[3, H, W]` planes into RGB samples with `convert` per value.
fn planes_to_interleaved<T: Copy + Default + Send>(
    planes: &ArrayView3<'_, f32>,
    convert: impl Fn(f32) -> T + Sync,
) -> Result<(u32, u32, Vec<T>), PreprocessError> {
    let (height, width) = plane_dims(planes)?;
    let planes = planes.as_standard_layout();
    let plane_values = planes.as_slice().expect("standard layout is contiguous");
    let (red, rest) = plane_values.split_at(height * width);
    let (green, blue) = rest.split_at(height * width);
    let mut samples = vec![T::default(); height * width * 3];
    samples
        .par_chunks_mut(width * 3)
        .zip(red.par_chunks(width))
        .zip(green.par_chunks(width).zip(blue.par_chunks(width)))
        .for_each(|((pixel_row, red_row), (green_row, blue_row))| {
            let channel_rows = red_row.iter().zip(green_row).zip(blue_row);
            for (pixel, ((&r, &g), &b)) in pixel_row.chunks_exact_mut(3).zip(channel_rows) {
                pixel[0] = convert(r);
                pixel[1] = convert(g);
                pixel[2] = convert(b);
            }
        });
    Ok((width as u32, height as u32, samples))
}

/// `[3, H, W]` planes in [0, 1] (take `.index_axis(Axis(0), 0)` of NCHW) to an 8-bit RGB image.
pub fn unit_planes_to_rgb8(
    planes: ArrayView3<'_, f32>,
    quantization: Quantization,
) -> Result<RgbImage, PreprocessError> {
    let (width, height, samples) =
        planes_to_interleaved(&planes, |value| quantization.apply(value, 255.0) as u8)?;
    Ok(RgbImage::from_raw(width, height, samples).expect("planes give a full image"))
}

/// `[3, H, W]` planes in [0, 1] to a 16-bit RGB image (`round(v * 65535)`).
pub fn unit_planes_to_rgb16(
    planes: ArrayView3<'_, f32>,
) -> Result<ImageBuffer<Rgb<u16>, Vec<u16>>, PreprocessError> {
    let (width, height, samples) = planes_to_interleaved(&planes, |value| {
        Quantization::Round.apply(value, 65535.0) as u16
    })?;
    Ok(ImageBuffer::from_raw(width, height, samples).expect("planes give a full image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp_image(width: u32, height: u32, channels: usize) -> Vec<u8> {
        (0..width as usize * height as usize * channels)
            .map(|index| ((index * 37 + index / 7 * 11) % 256) as u8)
            .collect()
    }

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

    #[test]
    fn plan_without_pre_resize() {
        let plan = plan_sizes(150, 130, 4, 512).unwrap();
        assert_eq!(plan.pre_resize, None);
        assert_eq!(plan.upscaled, (600, 520));
        assert_eq!(plan.model, (600, 520));
        assert_eq!(plan.output, (600, 520));
        assert!(!plan.needs_model_resize());

        let plan = plan_sizes(201, 131, 4, 512).unwrap();
        assert_eq!(plan.upscaled, (804, 524));
        assert_eq!(plan.model, (800, 520));
        assert_eq!(plan.output, (804, 524));
        assert!(plan.needs_model_resize());
        assert!(plan.needs_output_resize());
    }

    #[test]
    fn plan_with_pre_resize_follows_python_arithmetic() {
        // scale = 128 / 50 = 2.56; int(2.56 * 100) = 256, int(2.56 * 50) = 128.
        let plan = plan_sizes(100, 50, 4, 512).unwrap();
        assert_eq!(plan.pre_resize, Some((256, 128)));
        assert_eq!(plan.upscaled, (1024, 512));
        assert_eq!(plan.output, (400, 200));
        // 128 / 3 * 7 = 298.666.. -> 298; 128 / 3 * 3 = 128.0 exactly in f64.
        let plan = plan_sizes(7, 3, 4, 512).unwrap();
        assert_eq!(plan.pre_resize, Some((298, 128)));
        // Only one side short still triggers the rule.
        let plan = plan_sizes(500, 127, 4, 512).unwrap();
        let expected_w = (128.0f64 / 127.0 * 500.0) as u32;
        assert_eq!(plan.pre_resize, Some((expected_w, 128)));
        // process_size 0 disables it.
        let plan = plan_sizes(7, 3, 4, 0).unwrap();
        assert_eq!(plan.pre_resize, None);
        assert_eq!(plan.upscaled, (28, 12));
        assert_eq!(plan.model, (24, 8));
    }

    #[test]
    fn plan_rejects_degenerate_sizes() {
        assert!(matches!(
            plan_sizes(0, 5, 4, 512),
            Err(PreprocessError::EmptyImage { .. })
        ));
        assert_eq!(plan_sizes(5, 5, 0, 512), Err(PreprocessError::ZeroUpscale));
        assert!(matches!(
            plan_sizes(1, 40, 4, 0),
            Err(PreprocessError::TooSmallForModel { .. })
        ));
        assert!(matches!(
            plan_sizes(u32::MAX / 2, 40, 4, 0),
            Err(PreprocessError::SizeOverflow { .. })
        ));
    }

    #[test]
    fn apply_plan_gives_model_size() {
        let plan = plan_sizes(21, 13, 4, 0).unwrap();
        let image = RgbImage::from_raw(21, 13, ramp_image(21, 13, 3)).unwrap();
        let model_image = apply_size_plan_rgb8(&image, &plan).unwrap();
        assert_eq!(model_image.dimensions(), (80, 48));
        let wrong = RgbImage::new(20, 13);
        assert!(matches!(
            apply_size_plan_rgb8(&wrong, &plan),
            Err(PreprocessError::PlanMismatch { .. })
        ));
        // Chained resizes equal the explicit sequence.
        let upscaled = resize_rgb8(&image, 84, 52, ResampleFilter::Bicubic).unwrap();
        let cropped = resize_rgb8(&upscaled, 80, 48, ResampleFilter::Lanczos).unwrap();
        assert_eq!(model_image, cropped);
    }

    #[test]
    fn model_input_round_trip() {
        let image = RgbImage::from_raw(5, 3, ramp_image(5, 3, 3)).unwrap();
        let tensor = rgb8_to_model_input(&image);
        assert_eq!(tensor.shape(), &[1, 3, 3, 5]);
        assert_eq!(
            tensor[[0, 1, 2, 4]],
            f32::from(image.get_pixel(4, 2)[1]) / 255.0 * 2.0 - 1.0
        );
        assert!(tensor.iter().all(|&v| (-1.0..=1.0).contains(&v)));
        let mut unit = tensor.index_axis(Axis(0), 0).to_owned();
        unit.mapv_inplace(|v| v * 0.5 + 0.5);
        let back = unit_planes_to_rgb8(unit.view(), Quantization::Round).unwrap();
        assert_eq!(back, image);
        let unit_planes = rgb8_to_unit_planes(&image);
        let back = unit_planes_to_rgb8(unit_planes.view(), Quantization::Round).unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn quantization_modes() {
        let planes =
            Array3::from_shape_vec((3, 1, 2), vec![0.999, -0.2, 0.5, 1.4, 0.0, 0.002]).unwrap();
        let rounded = unit_planes_to_rgb8(planes.view(), Quantization::Round).unwrap();
        assert_eq!(rounded.as_raw(), &[255, 128, 0, 0, 255, 1]);
        let truncated = unit_planes_to_rgb8(planes.view(), Quantization::Truncate).unwrap();
        assert_eq!(truncated.as_raw(), &[254, 127, 0, 0, 255, 0]);
        let wide = unit_planes_to_rgb16(planes.view()).unwrap();
        assert_eq!(wide.as_raw(), &[65469, 32768, 0, 0, 65535, 131]);
        let bad = Array3::<f32>::zeros((4, 2, 2));
        assert!(matches!(
            unit_planes_to_rgb8(bad.view(), Quantization::Round),
            Err(PreprocessError::PlaneShape(_))
        ));
    }

    #[test]
    fn sixteen_bit_path() {
        let wide: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_raw(2, 1, vec![0, 65535, 32768, 257, 514, 65535]).unwrap();
        let float = rgb16_to_rgb32f(&wide);
        assert_eq!(float.as_raw()[1], 255.0);
        assert!((float.as_raw()[3] - 1.0).abs() < 1e-5);
        let tensor = rgb32f_to_model_input(&float);
        assert_eq!(tensor[[0, 0, 0, 0]], -1.0);
        assert_eq!(tensor[[0, 1, 0, 0]], 1.0);
        let unit = rgb32f_to_unit_planes(&float);
        let back = unit_planes_to_rgb16(unit.view()).unwrap();
        assert_eq!(back, wide);
    }

    #[test]
    fn decoder_output_mapping() {
        let mut values = vec![-1.5, -1.0, 0.0, 0.5, 2.0];
        decoder_output_to_unit(&mut values);
        assert_eq!(values, vec![0.0, 0.0, 0.5, 0.75, 1.0]);
    }
}
