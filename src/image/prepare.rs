//! Spec steps 1-5 for one input: the size plan applied, then the two
//! tensors the model part needs.

use ndarray::{Array3, Array4};

use super::io::{InputImage, InputPixels};
use super::size_plan::{self, SizePlan};
use super::tensor;
use crate::error::Result;

/// Image U in the two forms the model part needs.
pub struct Prepared {
    /// NCHW `[1, 3, H, W]` in [-1, 1]: the encoder's input.
    pub model_input: Array4<f32>,
    /// `[3, H, W]` in [0, 1]: the color fix's source.
    pub source_planes: Array3<f32>,
    /// Whether the input had more than 8 bits per sample.
    pub high_precision: bool,
}

/// Steps 1-5 of the spec: the minimum-size rule, bicubic upscale and Lanczos
/// to multiples of 8 as `plan` says, then the tensors.
pub fn prepare(input: &InputImage, plan: &SizePlan) -> Result<Prepared> {
    Ok(match &input.pixels {
        InputPixels::Rgb8(rgb) => {
            let upscaled = size_plan::apply_size_plan_rgb8(rgb, plan)?;
            Prepared {
                model_input: tensor::rgb8_to_model_input(&upscaled),
                source_planes: tensor::rgb8_to_unit_planes(&upscaled),
                high_precision: false,
            }
        }
        InputPixels::RgbHigh(rgb) => {
            let upscaled = size_plan::apply_size_plan_rgb32f(rgb, plan)?;
            Prepared {
                model_input: tensor::rgb32f_to_model_input(&upscaled),
                source_planes: tensor::rgb32f_to_unit_planes(&upscaled),
                high_precision: true,
            }
        }
    })
}
