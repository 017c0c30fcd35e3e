//! Everything that touches ONNX Runtime: finding the shared library
//! ([`discovery`]), the one process-wide environment (here), execution
//! providers ([`providers`]) and sessions ([`session`]). No other module
//! uses `ort`.
//!
//! The library never changes the process environment: whether ONNX
//! Runtime's own log is quieted (`ORT_LOG`) is the binary's decision.

pub mod batch;
mod device_io;
pub mod discovery;
pub mod elf;
pub mod gpu_info;
pub mod gpu_libs;
pub mod graph_cache;
pub mod probe;
pub mod providers;
pub mod session;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use crate::error::{Error, Result};

pub use discovery::{cache_dir, locate_library, LibraryLocation, LibrarySource, ORT_PATH_ENV};
pub use probe::ProviderStatus;
pub use providers::{ConvSearch, Provider, SessionOptions, TensorRtOptions};
pub use session::{DType, InputTensor, IoPlacement, ModelSession, OutputTensor, PortInfo};

use discovery::library_version_from_name;
use providers::register_provider;

/// Environment variable: a folder where ONNX Runtime writes each
/// session's profile (per-node kernel times and providers) when it ends.
pub const PROFILE_ENV: &str = "TADSR_EDGE_ORT_PROFILE";

/// The process-wide ONNX Runtime: the loaded library and its environment.
pub struct Runtime {
    environment: ort::environment::Environment,
    library: LibraryLocation,
    version: String,
    /// Each provider's probe result per device, probed once per process.
    statuses: Mutex<HashMap<(Provider, i32), ProviderStatus>>,
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
        if let Some(folder) = std::env::var_os(PROFILE_ENV).filter(|v| !v.is_empty()) {
            if !Path::new(&folder).is_dir() {
                // ONNX Runtime would write the profiles nowhere and say nothing
                return Err(Error::InvalidOption(format!(
                    "{PROFILE_ENV}={}: not a folder; create it, or unset {PROFILE_ENV}",
                    crate::naming::shown(Path::new(&folder))
                )));
            }
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
            statuses: Mutex::new(HashMap::new()),
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

    /// Whether `provider` can really be used on GPU `device_id`: its
    /// libraries load, it opens the probe graph, runs it, and agrees with
    /// the CPU ([`probe`]). Probed once per process and device.
    pub fn provider_status(&self, provider: Provider, device_id: i32) -> ProviderStatus {
        let mut statuses = self
            .statuses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        statuses
            .entry((provider, device_id))
            .or_insert_with(|| self.probe(provider, device_id))
            .clone()
    }

    /// `Ok` when [`Runtime::provider_status`] says usable, else the reason.
    pub fn probe_provider(
        &self,
        provider: Provider,
        device_id: i32,
    ) -> std::result::Result<(), String> {
        let status = self.provider_status(provider, device_id);
        match status.reason {
            None => Ok(()),
            Some(reason) => Err(reason),
        }
    }

    /// Providers usable on `device_id`, in `auto`'s order of preference.
    pub fn usable_providers(&self, device_id: i32) -> Vec<Provider> {
        Provider::PREFERENCE
            .into_iter()
            .filter(|p| self.probe_provider(*p, device_id).is_ok())
            .collect()
    }

    fn probe(&self, provider: Provider, device_id: i32) -> ProviderStatus {
        let mut status = ProviderStatus {
            name: provider.name(),
            usable: false,
            reason: None,
            max_abs_diff_vs_cpu: None,
            gpu: None,
            libraries: Vec::new(),
        };
        let fail = |mut status: ProviderStatus, reason: String| {
            status.reason = Some(reason);
            status
        };
        if provider != Provider::Cpu {
            let compiled_in = match provider {
                Provider::Cuda => ep::CUDA::is_available(),
                Provider::Cpu | Provider::Triton => Ok(false),
                Provider::TensorRt => ep::TensorRT::is_available(),
            };
            match compiled_in {
                Ok(true) => {}
                Ok(false) => {
                    return fail(
                        status,
                        format!(
                            "not in this ONNX Runtime {} build ({}); the GPU set-up, `make setup GPU=1`, installs onnxruntime-gpu",
                            self.version,
                            self.library.path.display()
                        ),
                    )
                }
                Err(e) => return fail(status, e.to_string()),
            }
            let (libraries, missing) = probe::load_provider_libraries(provider, &self.library.path);
            status.libraries = libraries;
            let gpu = gpu_info::gpu_info(device_id);
            status.gpu = Some(gpu.clone());
            if let Some(reason) = missing {
                return fail(status, reason);
            }
            let reference = match self.run_probe(&probe::probe_options(Provider::Cpu, 0)) {
                Ok(output) => output,
                Err(e) => return fail(status, format!("the CPU reference run failed: {e}")),
            };
            let output = match self.run_probe(&probe::probe_options(provider, device_id)) {
                Ok(output) => output,
                Err(e) => return fail(status, probe::explain_gpu_failure(&e, &gpu)),
            };
            let diff = probe::max_abs_diff(&output, &reference);
            status.max_abs_diff_vs_cpu = Some(diff);
            if diff > probe::PROBE_TOLERANCE {
                return fail(
                    status,
                    format!(
                        "it runs but its result differs from the CPU by {diff:e} (more than {:e}): a broken driver or library",
                        probe::PROBE_TOLERANCE
                    ),
                );
            }
        } else if let Err(e) = self.run_probe(&probe::probe_options(Provider::Cpu, 0)) {
            return fail(status, e);
        }
        status.usable = true;
        status
    }

    /// Runs the probe graph on one provider (registration failures are
    /// errors, never a silent CPU fallback).
    fn run_probe(&self, options: &SessionOptions) -> std::result::Result<Vec<f32>, String> {
        let text = |e: ort::Error| e.to_string();
        let mut builder = Session::builder(&self.environment).map_err(text)?;
        if options.threads > 0 {
            builder = builder
                .with_intra_threads(options.threads)
                .map_err(|e| e.to_string())?;
        }
        register_provider(&mut builder, options).map_err(text)?;
        let mut session = builder
            .commit_from_memory(probe::PROBE_GRAPH)
            .map_err(text)?;
        let input = probe::probe_input();
        let tensor =
            TensorRef::from_array_view((probe::PROBE_INPUT_SHAPE.to_vec(), input.as_slice()))
                .map_err(text)?;
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            vec![(Cow::Borrowed("x"), tensor.into())];
        let outputs = session.run(inputs).map_err(text)?;
        let (_, data) = outputs["y"].try_extract_tensor::<f32>().map_err(text)?;
        Ok(data.to_vec())
    }

    /// Where `model`'s optimized graph is cached, when the session would
    /// use the cache (CPU provider, the manifest's sha256 known, the cache
    /// on, a cache folder and the CPU identifiable).
    pub fn graph_cache_entry(
        &self,
        model: &Path,
        options: &SessionOptions,
    ) -> Option<graph_cache::Entry> {
        // a graph pinned to one shape is optimized for it: not cached
        if options.provider != Provider::Cpu
            || !graph_cache::enabled()
            || !options.fixed_dims.is_empty()
        {
            return None;
        }
        let sha256 = options.graph_sha256.as_deref()?;
        graph_cache::Entry::for_graph(&cache_dir()?, model, sha256, &self.version)
    }

    /// Opens one ONNX graph. On the CPU, through the optimized-graph cache
    /// ([`graph_cache`]): the cached graph when there is one, else the
    /// bundle's, saving the optimized graph for next time. Any failure of
    /// the cache falls back to opening the bundle's graph.
    pub fn session(&self, model: &Path, options: &SessionOptions) -> Result<ModelSession> {
        if let Some(entry) = self.graph_cache_entry(model, options) {
            if let Some(cached) = entry.graph() {
                match self.build_session(model, &cached, options, Optimize::AlreadyDone) {
                    Ok(session) => return self.model_session(session, model, options),
                    Err(_) => entry.remove(),
                }
            } else if let Ok(partial) = entry.start() {
                let target = partial.path().join(graph_cache::GRAPH_NAME);
                let saving = Optimize::AllSavedTo(&target);
                if let Ok(session) = self.build_session(model, model, options, saving) {
                    if target.is_file() {
                        let _ = entry.commit(partial);
                    }
                    return self.model_session(session, model, options);
                }
            }
        }
        let session = self
            .build_session(model, model, options, Optimize::All)
            .map_err(|source| session_error(options.provider, model, source))?;
        self.model_session(session, model, options)
    }

    /// A session on `graph` (the bundle's `model` or its cached optimized
    /// graph).
    fn build_session(
        &self,
        model: &Path,
        graph: &Path,
        options: &SessionOptions,
        optimize: Optimize<'_>,
    ) -> std::result::Result<Session, ort::Error> {
        let level = match optimize {
            Optimize::AlreadyDone => GraphOptimizationLevel::Disable,
            Optimize::All | Optimize::AllSavedTo(_) => GraphOptimizationLevel::All,
        };
        let mut builder = Session::builder(&self.environment)?.with_optimization_level(level)?;
        if let Optimize::AllSavedTo(target) = optimize {
            builder = builder
                .with_optimized_model_path(target)?
                .with_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    graph_cache::WEIGHTS_NAME,
                )?
                .with_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    "1024",
                )?;
        }
        builder = builder.with_memory_pattern(options.memory_pattern)?;
        for (name, size) in &options.fixed_dims {
            builder = builder.with_dimension_override(name, *size)?;
        }
        if options.threads > 0 {
            builder = builder.with_intra_threads(options.threads)?;
        }
        if let Some(prefix) = std::env::var_os(PROFILE_ENV).filter(|v| !v.is_empty()) {
            // ONNX Runtime's per-node profile (kernel times, provider of
            // each node), written when the session ends.
            let stem = model
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("graph");
            let parent = model
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|s| s.to_str())
                .unwrap_or("");
            let mut path = std::path::PathBuf::from(prefix);
            path.push(format!("{parent}-{stem}"));
            builder = builder.with_profiling(path)?;
        }
        register_provider(&mut builder, options)?;
        builder.commit_from_file(graph)
    }

    fn model_session(
        &self,
        session: Session,
        model: &Path,
        options: &SessionOptions,
    ) -> Result<ModelSession> {
        let placement = if options.device_io.unwrap_or(options.cuda_graph) {
            IoPlacement::Device {
                cuda: options.provider != Provider::Cpu,
                device_id: options.device_id,
            }
        } else if options
            .io_binding
            .unwrap_or(options.provider != Provider::Cpu)
        {
            IoPlacement::BoundConstants
        } else {
            IoPlacement::Host
        };
        ModelSession::new(
            session,
            model,
            placement,
            options.provider == Provider::Cpu && options.cpu_arena && options.shrink_cpu_arena,
            options.tile_batch,
            &options.fixed_dims,
        )
    }
}

/// How a session optimizes its graph.
#[derive(Clone, Copy)]
enum Optimize<'a> {
    /// Every ONNX Runtime optimization, on every open.
    All,
    /// Every optimization, and the optimized graph saved to this file.
    AllSavedTo(&'a Path),
    /// The graph is an optimized graph saved before: none.
    AlreadyDone,
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
