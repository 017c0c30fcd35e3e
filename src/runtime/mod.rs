//! Everything that touches ONNX Runtime: finding the shared library
//! ([`discovery`]), the one process-wide environment (here), execution
//! providers ([`providers`]) and sessions ([`session`]). No other module
//! uses `ort`.
//!
//! The library never changes the process environment: whether ONNX
//! Runtime's own log is quieted (`ORT_LOG`) is the binary's decision.

pub mod discovery;
pub mod providers;
pub mod session;

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::error::{Error, Result};

pub use discovery::{cache_dir, locate_library, LibraryLocation, LibrarySource, ORT_PATH_ENV};
pub use providers::{Provider, SessionOptions};
pub use session::{DType, InputTensor, ModelSession, OutputTensor, PortInfo};

use discovery::library_version_from_name;
use providers::register_provider;

/// The process-wide ONNX Runtime: the loaded library and its environment.
pub struct Runtime {
    environment: ort::environment::Environment,
    library: LibraryLocation,
    version: String,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

impl Runtime {
    /// Loads ONNX Runtime once per process (later calls return the same one,
    /// whatever library they ask for: a process can load only one).
    pub fn global(explicit_library: Option<&Path>) -> Result<&'static Runtime> {
        if let Some(runtime) = RUNTIME.get() {
            return Ok(runtime);
        }
        let _guard = RUNTIME_INIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(runtime) = RUNTIME.get() {
            return Ok(runtime);
        }
        let library = locate_library(explicit_library)?;
        let builder = ort::init_from(&library.path).map_err(|e| Error::OrtLoad {
            path: library.path.clone(),
            reason: e.to_string(),
        })?;
        let environment = builder
            .with_name("tadsr-edge")
            .with_telemetry(false)
            .build()
            .map_err(|e| Error::OrtLoad {
                path: library.path.clone(),
                reason: e.to_string(),
            })?;
        let version = library_version_from_name(&library.path)
            .or_else(|| version_from_build_info(ort::info()))
            .unwrap_or_else(|| "unknown".to_string());
        Ok(RUNTIME.get_or_init(|| Runtime {
            environment,
            library,
            version,
        }))
    }

    /// The library file in use and how it was found.
    pub fn library(&self) -> &LibraryLocation {
        &self.library
    }

    /// ONNX Runtime's version, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether a provider can really be used: compiled into this library and
    /// its provider library (and CUDA/cuDNN/TensorRT) loads.
    pub fn probe_provider(&self, provider: Provider) -> std::result::Result<(), String> {
        let compiled_in = match provider {
            Provider::Cpu => return Ok(()),
            Provider::Cuda => ep::CUDA::is_available(),
            Provider::TensorRt => ep::TensorRT::is_available(),
        };
        match compiled_in {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "not in this ONNX Runtime {} build (the GPU set-up, `make setup GPU=1`, installs onnxruntime-gpu)",
                    self.version
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        let mut builder = Session::builder(&self.environment).map_err(|e| e.to_string())?;
        let options = SessionOptions {
            provider,
            ..SessionOptions::default()
        };
        register_provider(&mut builder, &options).map_err(|e| e.to_string())
    }

    /// Providers usable here, in `auto`'s order of preference.
    pub fn usable_providers(&self) -> Vec<Provider> {
        Provider::PREFERENCE
            .into_iter()
            .filter(|p| self.probe_provider(*p).is_ok())
            .collect()
    }

    /// Opens one ONNX graph.
    pub fn session(&self, model: &Path, options: &SessionOptions) -> Result<ModelSession> {
        let build = || -> std::result::Result<Session, ort::Error> {
            let mut builder = Session::builder(&self.environment)?
                .with_optimization_level(GraphOptimizationLevel::All)?;
            builder = builder.with_memory_pattern(options.memory_pattern)?;
            if options.threads > 0 {
                builder = builder.with_intra_threads(options.threads)?;
            }
            register_provider(&mut builder, options)?;
            builder.commit_from_file(model)
        };
        let session = build().map_err(|source| session_error(options.provider, model, source))?;
        ModelSession::new(session, model)
    }
}

/// Whether ONNX Runtime refused the model file itself (unreadable, not an
/// ONNX graph, an invalid graph), whatever the provider.
pub fn is_model_fault(error: &ort::Error) -> bool {
    use ort::error::ErrorCode;
    matches!(
        error.code(),
        ErrorCode::InvalidProtobuf
            | ErrorCode::InvalidGraph
            | ErrorCode::NoSuchFile
            | ErrorCode::NoModel
    )
}

/// A failed session creation, classified: the model's fault is a model
/// error under any provider; any other failure under a GPU provider means
/// the provider cannot run here; under the CPU an ONNX Runtime error.
pub fn session_error(provider: Provider, model: &Path, source: ort::Error) -> Error {
    if is_model_fault(&source) {
        return Error::Model {
            path: model.to_path_buf(),
            source,
        };
    }
    match provider {
        Provider::Cpu => Error::OrtIn {
            path: model.to_path_buf(),
            source,
        },
        other => Error::ProviderUnavailable {
            provider: other.to_string(),
            reason: source.to_string(),
        },
    }
}

fn version_from_build_info(info: &str) -> Option<String> {
    let start = info.find("rel-")? + 4;
    let rest = &info[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    Some(rest[..end].to_string()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_model_is_the_model_fault_under_every_provider() {
        use ort::error::ErrorCode;
        // ort's errors are made through the loaded library
        Runtime::global(None).expect("ONNX Runtime must be found (run `make setup`)");
        let model = Path::new("models/x/unet.onnx");
        for provider in Provider::PREFERENCE {
            let corrupt =
                ort::Error::new_with_code(ErrorCode::InvalidProtobuf, "Protobuf parsing failed");
            let error = session_error(provider, model, corrupt);
            assert!(
                matches!(error, Error::Model { .. }),
                "{provider}: {error:?}"
            );
            assert!(error.to_string().contains("models/x/unet.onnx"), "{error}");
            assert!(
                std::error::Error::source(&error).is_some(),
                "the source is kept"
            );
        }
        let other = || ort::Error::new_with_code(ErrorCode::EngineError, "CUDA failure 100");
        assert!(matches!(
            session_error(Provider::Cuda, model, other()),
            Error::ProviderUnavailable { .. }
        ));
        assert!(matches!(
            session_error(Provider::Cpu, model, other()),
            Error::OrtIn { .. }
        ));
    }

    #[test]
    fn version_comes_from_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release";
        assert_eq!(version_from_build_info(info).as_deref(), Some("1.32.0"));
        assert_eq!(version_from_build_info("nothing here"), None);
    }
}
