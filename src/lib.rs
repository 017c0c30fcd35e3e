//! tadsr-edge: TADSR one-step diffusion super-resolution on ONNX Runtime.
//!
//! The library does the work; the `tadsr-edge` binary is a thin command line
//! over it. Stages, each in its own module: [`preprocess`] (resizes, tensors),
//! [`runtime`] (ONNX Runtime, the only module that uses `ort`), [`tiling`]
//! (tile plans and blending), [`schedule`] (the DDPM schedule, the clean
//! latent), [`colorfix`] (adain, wavelet), [`bundle`] (the model folder).

pub mod bundle;
pub mod colorfix;
pub mod error;
pub mod image_io;
pub mod naming;
pub mod npy;
pub mod pipeline;
pub mod preprocess;
pub mod runtime;
pub mod schedule;
pub mod stats;
pub mod tiling;

pub use error::{Error, Result};
