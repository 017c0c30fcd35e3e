//! The authors' size rule (spec steps 2-4): the minimum-size enlargement,
//! the bicubic upscale and the Lanczos crop to multiples of 8, planned from
//! sizes alone and then applied.

use std::borrow::Cow;

use image::{GrayImage, Rgb32FImage, RgbImage};

use super::resample::{check_buffer, resize_f32, resize_u8, ResampleFilter};
use super::PreprocessError;

/// Multiple that the model's input sides must be (the VAE's 8x reduction).
pub const MODEL_SIDE_MULTIPLE: u32 = 8;

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
    let model = (model_side(upscaled.0), model_side(upscaled.1));
    Ok(SizePlan {
        input: (width, height),
        pre_resize,
        upscaled,
        model,
        output,
    })
}

/// Step 4's side: down to a multiple of 8 (the authors' rule), except that
/// a side under 8, which the authors' rule would make 0 (a strip one or two
/// pixels wide with `--process-size 0`), is stretched to 8; the output is
/// still resized to `upscale` x the input.
fn model_side(upscaled: u32) -> u32 {
    if upscaled < MODEL_SIDE_MULTIPLE {
        MODEL_SIDE_MULTIPLE
    } else {
        upscaled - upscaled % MODEL_SIDE_MULTIPLE
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::resample::resize_rgb8;
    use crate::image::test_support::ramp_image;

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
        // a side under 8 after the upscale is stretched to 8, not cut to 0
        let strip = plan_sizes(1, 40, 4, 0).unwrap();
        assert_eq!(
            (strip.upscaled, strip.model, strip.output),
            ((4, 160), (8, 160), (4, 160))
        );
        assert_eq!(plan_sizes(1, 1, 1, 0).unwrap().model, (8, 8));
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
}
