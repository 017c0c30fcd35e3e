//! Pixels on their way to and from the model: decoding with limits
//! ([`io`], [`container`]), the Pillow-compatible resampler ([`resample`]),
//! the authors' size rule ([`size_plan`]), image <-> tensor conversion
//! ([`tensor`]), the output image ([`postprocess`]), the color fix
//! ([`colorfix`]), the color profiles carried to outputs ([`color_profile`])
//! and atomic writes ([`write`](mod@write)). Pure Rust: nothing here
//! needs ONNX Runtime.

pub mod color_profile;
pub mod colorfix;
pub mod container;
pub mod io;
pub mod postprocess;
pub mod prepare;
pub mod resample;
pub mod size_plan;
pub mod tensor;
pub mod write;

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

/// Test images shared by the unit tests of this folder.
#[cfg(test)]
pub(crate) mod test_support {
    /// A deterministic, irregular ramp of `width x height x channels` samples.
    pub fn ramp_image(width: u32, height: u32, channels: usize) -> Vec<u8> {
        (0..width as usize * height as usize * channels)
            .map(|index| ((index * 37 + index / 7 * 11) % 256) as u8)
            .collect()
    }
}
