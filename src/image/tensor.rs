//! Image <-> tensor (spec step 5 and back): interleaved samples to NCHW in
//! [-1, 1] or `[3, H, W]` in [0, 1], and the decoder's output back to
//! quantized samples.

use image::{ImageBuffer, Rgb, Rgb32FImage, RgbImage};
use ndarray::{Array3, Array4, ArrayView3, Axis};
use rayon::prelude::*;

use super::PreprocessError;

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
/// ready for [`resize_rgb32f`](super::resample::resize_rgb32f) and [`rgb32f_to_model_input`].
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
/// Each value in [0, 1] made an 8-bit level and back (`level / 255`), as
/// `quantization` makes it: what the authors' script does to the decoded
/// image before its color fix (torchvision's `ToPILImage`, then `ToTensor`).
pub fn to_8bit_levels(values: &mut [f32], quantization: Quantization) {
    values
        .par_iter_mut()
        .for_each(|value| *value = quantization.apply(*value, 255.0) as f32 / 255.0);
}

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
    use crate::image::test_support::ramp_image;

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
    fn eight_bit_levels_as_the_authors_script_makes_them() {
        // torchvision: mul(255) in float32, then a cast that truncates; ToTensor divides by 255
        let mut values = vec![0.999f32, 0.5, 1.0, 0.0, 1.3, -0.1, 254.5 / 255.0];
        to_8bit_levels(&mut values, Quantization::Truncate);
        let levels: Vec<f32> = [254.0f32, 127.0, 255.0, 0.0, 255.0, 0.0, 254.0]
            .iter()
            .map(|l| l / 255.0)
            .collect();
        assert_eq!(values, levels);
        let mut values = vec![0.999f32, 0.5, 254.5 / 255.0];
        to_8bit_levels(&mut values, Quantization::Round);
        assert_eq!(values, vec![1.0, 128.0 / 255.0, 1.0]);
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
