//! The library's error type. Every message tells the user what went wrong and,
//! where there is one, what to do about it.

use std::path::PathBuf;

/// Errors of the tadsr-edge library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No ONNX Runtime shared library could be found.
    #[error(
        "ONNX Runtime library not found (looked in: {searched}); run `make setup` \
         (or `make setup GPU=1` for CUDA/TensorRT), or set ORT_DYLIB_PATH / --ort-lib \
         to a libonnxruntime.so from the PyPI onnxruntime wheel"
    )]
    OrtNotFound { searched: String },

    /// A library file was found but could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {reason}; point ORT_DYLIB_PATH / --ort-lib at a libonnxruntime.so 1.17 or newer")]
    OrtLoad { path: PathBuf, reason: String },

    /// Something ONNX Runtime returned is not what the graph promised
    /// (shapes, statistics), or no provider could open a graph.
    #[error("ONNX Runtime: {0}")]
    Ort(String),

    /// An ONNX Runtime call failed.
    #[error("ONNX Runtime: {0}")]
    OrtApi(#[from] ort::Error),

    /// An ONNX Runtime call on one graph failed.
    #[error("ONNX Runtime: {}: {source}", path.display())]
    OrtIn {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },

    /// ONNX Runtime refused a model file itself (not a readable ONNX graph),
    /// whichever provider was asked for: the bundle's fault.
    #[error("model {}: {source}; the bundle's graph is damaged (check it with `tadsr-edge info --verify`)", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },

    /// An execution provider was asked for but cannot be used here.
    #[error("execution provider {provider} is not usable here: {reason}")]
    ProviderUnavailable { provider: String, reason: String },

    /// A bundle exported with `--fusions cuda` and no CUDA provider to run it.
    #[error("model bundle {} was exported with --fusions cuda: its graphs hold operators ONNX Runtime runs on CUDA only, and {reason}; run it with --provider cuda on an NVIDIA GPU, or export it again without --fusions to run it on the CPU", path.display())]
    NeedsCuda { path: PathBuf, reason: String },

    /// The model bundle is missing, malformed or inconsistent.
    #[error("model bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },

    /// The `--prompt-embeds` file cannot be used.
    #[error("prompt embedding {path}: {reason}")]
    PromptEmbeds { path: PathBuf, reason: String },

    /// `--prompt` cannot be encoded (no text encoder, a tokenizer this
    /// runtime does not read, a text too long to tokenize).
    #[error("--prompt: {0}")]
    Prompt(String),

    /// An input image cannot be used.
    #[error("{0}")]
    Input(String),

    /// An image could not be resized or converted (kept as the source).
    #[error("{0}")]
    Image(#[from] crate::image::PreprocessError),

    /// A tile plan could not be made or blended for these options.
    #[error("invalid option: {0}")]
    Tiling(#[from] crate::tiling::TilingError),

    /// A timestep or the clean-latent arithmetic was refused.
    #[error("invalid option: {0}")]
    Schedule(#[from] crate::schedule::ScheduleError),

    /// The color fix was refused (planes of different shapes).
    #[error("invalid option: {0}")]
    ColorFix(#[from] crate::image::colorfix::ColorFixError),

    /// A run option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// An output could not be written.
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },

    /// A network stage produced NaN or infinity (an fp16 overflow, TF32 or
    /// a broken provider), caught before it reaches an image.
    #[error("{stage} produced {value} at element {index} of a tile (on {provider}); {hint}")]
    NonFinite {
        stage: &'static str,
        provider: String,
        value: f32,
        index: usize,
        hint: &'static str,
    },

    /// A Triton server (`--server`) answered but refused: a missing model,
    /// a request the model does not take, a malformed response.
    #[error("Triton server {url}: {reason}")]
    Server { url: String, reason: String },

    /// A Triton server could not be reached, or kept failing transiently,
    /// over every retry. Ends a batch: every following input would fail
    /// the same way.
    #[error("Triton server {url} is unreachable ({what}: {reason}; {tries} tries over {seconds:.1} s): start it, or check --server")]
    ServerUnreachable {
        url: String,
        what: String,
        reason: String,
        tries: u32,
        seconds: f64,
    },

    /// The run was interrupted (Ctrl-C).
    #[error("interrupted")]
    Interrupted,

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bundle(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Bundle {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl Error {
    /// The process exit code for this error when it ends a whole command:
    /// 130 for an interruption (128 + SIGINT), 2 (usage, model or runtime:
    /// nothing could run) for every other kind. Per-input failures do not
    /// end a command; the binary counts them (exit 1).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted => 130,
            _ => 2,
        }
    }
}

/// Result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PreprocessError;

    #[test]
    fn module_errors_are_kept_as_sources_with_their_message() {
        let preprocess = PreprocessError::EmptyImage {
            width: 0,
            height: 3,
        };
        let message = preprocess.to_string();
        let error = Error::from(preprocess);
        assert_eq!(error.to_string(), message);
        let source = std::error::Error::source(&error).expect("the module error is the source");
        assert!(source.downcast_ref::<PreprocessError>().is_some());
        assert_eq!(error.exit_code(), 2);
        assert_eq!(Error::Interrupted.exit_code(), 130);
    }
}
