//! From color-fixed planes at the model's size to the output image (spec
//! steps 11-12): the output size, the alpha plane put back, 8 or 16 bits;
//! and PSNR, the measure the tests use.

use image::{DynamicImage, ImageBuffer, Luma, Rgb32FImage};
use ndarray::Array3;

use super::io::{AlphaPlane, InputImage};
use super::resample::{self, ResampleFilter};
use super::size_plan::SizePlan;
use super::tensor::{self, Quantization};
use crate::error::Result;

/// From color-fixed planes at the model's size to the output image: resize to
/// `upscale x` the input (when the multiple-of-8 crop or the minimum-size rule
/// changed it), put the alpha back, quantize to 8 (as `quantization` says)
/// or 16 bits.
pub fn finish_image(
    planes: &mut Array3<f32>,
    plan: &SizePlan,
    input: &InputImage,
    high_precision: bool,
    quantization: Quantization,
) -> Result<DynamicImage> {
    let (out_w, out_h) = plan.output;
    let planes = if plan.needs_output_resize() {
        let (_, height, width) = planes.dim();
        let interleaved: Vec<f32> = planes
            .view()
            .permuted_axes([1, 2, 0])
            .iter()
            .map(|v| v * 255.0)
            .collect();
        let image = Rgb32FImage::from_raw(width as u32, height as u32, interleaved)
            .expect("planes give a full image");
        let resized = resample::resize_rgb32f(&image, out_w, out_h, ResampleFilter::Bicubic)?;
        let mut resized_planes = tensor::rgb32f_to_unit_planes(&resized);
        resized_planes.mapv_inplace(|v| v.clamp(0.0, 1.0));
        resized_planes
    } else {
        std::mem::take(planes)
    };
    let alpha = match &input.alpha {
        None => None,
        Some(AlphaPlane::Alpha8(alpha)) => Some(
            resample::resize_u8(
                alpha,
                input.width,
                input.height,
                1,
                out_w,
                out_h,
                ResampleFilter::Bicubic,
            )?
            .iter()
            .map(|a| f32::from(*a) / 255.0)
            .collect::<Vec<f32>>(),
        ),
        Some(AlphaPlane::AlphaHigh(alpha)) => Some(
            resample::resize_f32(
                alpha,
                input.width,
                input.height,
                1,
                out_w,
                out_h,
                ResampleFilter::Bicubic,
            )?
            .iter()
            .map(|a| (a / 255.0).clamp(0.0, 1.0))
            .collect(),
        ),
    };
    let rgb = planes.view();
    Ok(match (high_precision, alpha) {
        (false, None) => DynamicImage::ImageRgb8(tensor::unit_planes_to_rgb8(rgb, quantization)?),
        (true, None) => DynamicImage::ImageRgb16(tensor::unit_planes_to_rgb16(rgb)?),
        (false, Some(alpha)) => {
            let rgb8 = tensor::unit_planes_to_rgb8(rgb, quantization)?;
            let alpha8: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_raw(
                out_w,
                out_h,
                alpha.iter().map(|a| (a * 255.0).round() as u8).collect(),
            )
            .expect("alpha has the output size");
            let mut rgba = DynamicImage::ImageRgb8(rgb8).to_rgba8();
            for (pixel, a) in rgba.pixels_mut().zip(alpha8.pixels()) {
                pixel.0[3] = a.0[0];
            }
            DynamicImage::ImageRgba8(rgba)
        }
        (true, Some(alpha)) => {
            let rgb16 = tensor::unit_planes_to_rgb16(rgb)?;
            let mut rgba = DynamicImage::ImageRgb16(rgb16).to_rgba16();
            for (pixel, a) in rgba.pixels_mut().zip(alpha.iter()) {
                pixel.0[3] = (a * 65535.0).round() as u16;
            }
            DynamicImage::ImageRgba16(rgba)
        }
    })
}

/// PSNR in dB between two equally long sample sets in [0, 1].
pub fn psnr(reference: &[f32], actual: &[f32]) -> f64 {
    assert_eq!(reference.len(), actual.len(), "PSNR needs equal sizes");
    let squared: f64 = reference
        .iter()
        .zip(actual)
        .map(|(r, a)| f64::from(r - a).powi(2))
        .sum();
    let mse = squared / reference.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (1.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_known_errors() {
        assert_eq!(psnr(&[0.5, 0.5], &[0.5, 0.5]), f64::INFINITY);
        let db = psnr(&[0.0; 4], &[0.1; 4]);
        assert!((db - 20.0).abs() < 1e-6, "{db}");
    }
}
