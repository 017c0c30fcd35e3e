//! tadsr-edge: TADSR one-step diffusion super-resolution on ONNX Runtime.
//!
//! The library does the work; the `tadsr-edge` binary is a thin command line
//! over it. The tree follows the data: [`image`] (decode with limits,
//! resample, size plan, tensors, post-processing, color fix, atomic write),
//! [`pipeline`] (the stage order for one image, the stages, the tile loop,
//! shared statistics), [`runtime`] (ONNX Runtime: the only module that uses
//! `ort`), [`tiling`] (tile plans and blending), [`schedule`] (the DDPM
//! schedule, the clean latent), [`bundle`] (the model folder), [`prompt`]
//! (`--prompt` text to the prompt embedding: tokenizer and text encoder).

pub mod authors_encoder_tiles;
pub mod bundle;
pub mod error;
pub mod golden;
pub mod graph;
pub mod image;
pub mod naming;
pub mod npy;
pub mod pipeline;
pub mod prompt;
pub mod regular_file;
pub mod remote;
pub mod runtime;
pub mod schedule;
pub mod stats;
pub mod system_memory;
pub mod tile_budget;
pub mod tiling;

pub use error::{Error, Result};
