//! Everything that touches ONNX Runtime: finding the shared library, the one
//! process-wide environment, execution providers and sessions. No other module
//! uses `ort`.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use half::f16;
use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::error::{Error, Result};

/// Environment variable naming the library file (also what `ort` itself reads).
pub const ORT_PATH_ENV: &str = "ORT_DYLIB_PATH";

/// Where the library was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LibrarySource {
    /// `--ort-lib` on the command line.
    Flag,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The set-up's cache (`make setup`).
    SetupCache,
    /// An importable Python `onnxruntime` package.
    PythonPackage,
}

impl fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LibrarySource::Flag => "--ort-lib",
            LibrarySource::EnvVar => ORT_PATH_ENV,
            LibrarySource::SetupCache => "set-up cache",
            LibrarySource::PythonPackage => "python onnxruntime package",
        })
    }
}

/// A located libonnxruntime.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LibraryLocation {
    pub path: PathBuf,
    pub source: LibrarySource,
}

/// The set-up's cache folder: `$XDG_CACHE_HOME/tadsr-edge` or `~/.cache/tadsr-edge`.
pub fn cache_dir() -> Option<PathBuf> {
    let non_empty = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("tadsr-edge"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".cache").join("tadsr-edge"))
}

/// Finds the shared library, in this order: `explicit` (`--ort-lib`),
/// `ORT_DYLIB_PATH`, the set-up's cache, an importable Python `onnxruntime`.
///
/// An explicit path or variable that points nowhere is an error, not a reason
/// to look elsewhere: the user asked for that library.
pub fn locate_library(explicit: Option<&Path>) -> Result<LibraryLocation> {
    if let Some(path) = explicit {
        return resolve_given(path, LibrarySource::Flag);
    }
    if let Some(value) = std::env::var_os(ORT_PATH_ENV).filter(|v| !v.is_empty()) {
        return resolve_given(Path::new(&value), LibrarySource::EnvVar);
    }
    let mut searched = Vec::new();
    if let Some(cache) = cache_dir() {
        searched.push(cache.display().to_string());
        if let Some(path) = library_in_cache(&cache) {
            return Ok(LibraryLocation {
                path,
                source: LibrarySource::SetupCache,
            });
        }
    }
    searched.push("python3 -c 'import onnxruntime'".to_string());
    if let Some(path) = library_from_python() {
        return Ok(LibraryLocation {
            path,
            source: LibrarySource::PythonPackage,
        });
    }
    Err(Error::OrtNotFound {
        searched: format!("--ort-lib, {ORT_PATH_ENV}, {}", searched.join(", ")),
    })
}

fn resolve_given(path: &Path, source: LibrarySource) -> Result<LibraryLocation> {
    let found = if path.is_dir() {
        library_in_dir(path)
    } else if path.is_file() {
        Some(path.to_path_buf())
    } else {
        None
    };
    found
        .map(|path| LibraryLocation { path, source })
        .ok_or_else(|| Error::OrtLoad {
            path: path.to_path_buf(),
            reason: format!("no libonnxruntime.so there (given by {source})"),
        })
}

/// The library in a folder: the folder itself, `onnxruntime/capi/` or `capi/`
/// below it. The highest versioned `libonnxruntime.so.X.Y.Z` wins.
fn library_in_dir(dir: &Path) -> Option<PathBuf> {
    [
        dir.to_path_buf(),
        dir.join("onnxruntime").join("capi"),
        dir.join("capi"),
    ]
    .iter()
    .find_map(|candidate| {
        let mut libraries: Vec<PathBuf> = std::fs::read_dir(candidate)
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n == "libonnxruntime.so" || n.starts_with("libonnxruntime.so.")
                })
            })
            .collect();
        libraries.sort_by_key(|path| version_key(path));
        libraries.pop()
    })
}

fn version_key(path: &Path) -> Vec<u32> {
    library_version_from_name(path)
        .map(|v| v.split('.').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// `1.32.0` from `libonnxruntime.so.1.32.0`.
fn library_version_from_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("libonnxruntime.so.").map(str::to_string)
}

/// The set-up writes the library's path into `<cache>/onnxruntime.path`;
/// without that file, any `<cache>/onnxruntime*` folder holding a library.
fn library_in_cache(cache: &Path) -> Option<PathBuf> {
    if let Ok(recorded) = std::fs::read_to_string(cache.join("onnxruntime.path")) {
        let recorded = PathBuf::from(recorded.trim());
        if recorded.is_file() {
            return Some(recorded);
        }
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("onnxruntime"))
                && p.is_dir()
        })
        .collect();
    folders.sort();
    folders
        .iter()
        .rev()
        .find_map(|folder| library_in_dir(folder))
}

fn library_from_python() -> Option<PathBuf> {
    const PROBE: &str = "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))";
    ["python3", "python"].iter().find_map(|python| {
        let output = Command::new(python)
            .args(["-c", PROBE])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let package_dir = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
        library_in_dir(&package_dir.join("capi"))
    })
}

/// An execution provider the user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
}

impl Provider {
    /// The name users type and see.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        }
    }

    /// Order `auto` tries them in.
    pub const PREFERENCE: [Provider; 3] = [Provider::TensorRt, Provider::Cuda, Provider::Cpu];
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How sessions are made.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub provider: Provider,
    pub device_id: i32,
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per core).
    pub threads: usize,
    /// TensorRT engine cache folder.
    pub engine_cache: Option<PathBuf>,
    /// TensorRT optimisation profile: (min, opt, max) shapes per input, e.g.
    /// `latent:1x4x64x64`.
    pub trt_profile: Option<(String, String, String)>,
    /// ONNX Runtime's CPU memory arena (keeps freed blocks for reuse).
    pub cpu_arena: bool,
    /// ONNX Runtime's memory pattern planning (per input shape).
    pub memory_pattern: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            provider: Provider::Cpu,
            device_id: 0,
            threads: 0,
            engine_cache: None,
            trt_profile: None,
            cpu_arena: env_flag("TADSR_EDGE_CPU_ARENA", true),
            memory_pattern: env_flag("TADSR_EDGE_MEMORY_PATTERN", true),
        }
    }
}

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
        // ONNX Runtime's own log would repeat our errors on stderr; keep only
        // fatal messages unless the user asked for more (ORT_LOG=warning...).
        if std::env::var_os("ORT_LOG").is_none() {
            std::env::set_var("ORT_LOG", "fatal");
        }
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
        let session = build().map_err(|e| match options.provider {
            Provider::Cpu => Error::Ort(format!("{}: {e}", model.display())),
            other => Error::ProviderUnavailable {
                provider: other.to_string(),
                reason: e.to_string(),
            },
        })?;
        ModelSession::new(session, model)
    }
}

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") | Ok("false") => false,
        Ok("1") | Ok("true") => true,
        _ => default,
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

fn register_provider(
    builder: &mut SessionBuilder,
    options: &SessionOptions,
) -> std::result::Result<(), ort::Error> {
    match options.provider {
        Provider::Cpu => ep::CPU::default()
            .with_arena_allocator(options.cpu_arena)
            .build()
            .error_on_failure()
            .register(builder),
        Provider::Cuda => ep::CUDA::default()
            .with_device_id(options.device_id)
            .build()
            .error_on_failure()
            .register(builder),
        Provider::TensorRt => {
            let mut trt = ep::TensorRT::default()
                .with_device_id(options.device_id)
                .with_fp16(true);
            if let Some(cache) = &options.engine_cache {
                let cache = cache.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&cache)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&cache);
            }
            if let Some((min, opt, max)) = &options.trt_profile {
                trt = trt
                    .with_profile_min_shapes(min)
                    .with_profile_opt_shapes(opt)
                    .with_profile_max_shapes(max);
            }
            trt.build().error_on_failure().register(builder)
        }
    }
}

/// Element type of a graph input or output, as the bundle manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    Float32,
    Float16,
    Int64,
    /// A type the bundle format does not use, by its ONNX name.
    Other(&'static str),
}

impl DType {
    /// The manifest's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float16 => "float16",
            DType::Int64 => "int64",
            DType::Other(name) => name,
        }
    }
}

/// Name and element type of one graph input or output.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub dtype: DType,
}

/// An input tensor handed to [`ModelSession::run`]. Float data is always f32
/// on our side; fp16 graphs get it converted here.
pub enum InputTensor<'a> {
    Float { shape: &'a [usize], data: &'a [f32] },
    Int64 { shape: &'a [usize], data: &'a [i64] },
}

/// An output tensor: shape and f32 data (fp16 outputs are widened).
#[derive(Debug, Clone)]
pub struct OutputTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// One open ONNX graph.
pub struct ModelSession {
    session: Session,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    model: PathBuf,
}

fn port_info(name: &str, dtype: &ValueType) -> PortInfo {
    let dtype = match dtype {
        ValueType::Tensor { ty, .. } => match ty {
            TensorElementType::Float32 => DType::Float32,
            TensorElementType::Float16 => DType::Float16,
            TensorElementType::Int64 => DType::Int64,
            TensorElementType::Float64 => DType::Other("float64"),
            TensorElementType::Bfloat16 => DType::Other("bfloat16"),
            TensorElementType::Int32 => DType::Other("int32"),
            TensorElementType::Int16 => DType::Other("int16"),
            TensorElementType::Int8 => DType::Other("int8"),
            TensorElementType::Uint8 => DType::Other("uint8"),
            TensorElementType::Bool => DType::Other("bool"),
            TensorElementType::String => DType::Other("string"),
            _ => DType::Other("another tensor type"),
        },
        _ => DType::Other("not a tensor"),
    };
    PortInfo {
        name: name.to_string(),
        dtype,
    }
}

impl ModelSession {
    fn new(session: Session, model: &Path) -> Result<Self> {
        let inputs = session
            .inputs()
            .iter()
            .map(|o| port_info(o.name(), o.dtype()))
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| port_info(o.name(), o.dtype()))
            .collect();
        Ok(ModelSession {
            session,
            inputs,
            outputs,
            model: model.to_path_buf(),
        })
    }

    /// The graph's inputs.
    pub fn inputs(&self) -> &[PortInfo] {
        &self.inputs
    }

    /// The graph's outputs.
    pub fn outputs(&self) -> &[PortInfo] {
        &self.outputs
    }

    fn input_dtype(&self, name: &str) -> Result<DType> {
        self.inputs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.dtype)
            .ok_or_else(|| Error::Ort(format!("{}: no input named {name}", self.model.display())))
    }

    /// Runs the graph on named inputs and returns the named outputs, in order.
    pub fn run(
        &mut self,
        inputs: &[(&str, InputTensor<'_>)],
        output_names: &[&str],
    ) -> Result<Vec<OutputTensor>> {
        let mut half_buffers: Vec<Vec<f16>> = Vec::new();
        let mut wants_half = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let half = matches!(tensor, InputTensor::Float { .. })
                && self.input_dtype(name)? == DType::Float16;
            if let (true, InputTensor::Float { data, .. }) = (half, tensor) {
                half_buffers.push(data.iter().map(|v| f16::from_f32(*v)).collect());
            }
            wants_half.push(half);
        }
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        let mut half_iter = half_buffers.iter();
        for ((name, tensor), half) in inputs.iter().zip(wants_half) {
            let value: SessionInputValue<'_> = match tensor {
                InputTensor::Float { shape, data } => {
                    if half {
                        let buffer = half_iter.next().expect("one buffer per fp16 input");
                        TensorRef::from_array_view((shape.to_vec(), buffer.as_slice()))?.into()
                    } else {
                        TensorRef::from_array_view((shape.to_vec(), *data))?.into()
                    }
                }
                InputTensor::Int64 { shape, data } => {
                    TensorRef::from_array_view((shape.to_vec(), *data))?.into()
                }
            };
            values.push((Cow::Borrowed(*name), value));
        }
        let model = self.model.display().to_string();
        let outputs = self
            .session
            .run(values)
            .map_err(|e| Error::Ort(format!("{model}: {e}")))?;
        output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(*name)
                    .ok_or_else(|| Error::Ort(format!("{model}: no output named {name}")))?;
                if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
                    return Ok(OutputTensor {
                        shape: shape.iter().map(|d| *d as usize).collect(),
                        data: data.to_vec(),
                    });
                }
                let (shape, data) = value.try_extract_tensor::<f16>()?;
                Ok(OutputTensor {
                    shape: shape.iter().map(|d| *d as usize).collect(),
                    data: data.iter().map(|v| v.to_f32()).collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_file_name() {
        let path = Path::new("/x/onnxruntime/capi/libonnxruntime.so.1.32.0");
        assert_eq!(library_version_from_name(path).as_deref(), Some("1.32.0"));
        assert_eq!(version_key(path), vec![1, 32, 0]);
    }

    #[test]
    fn version_comes_from_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release";
        assert_eq!(version_from_build_info(info).as_deref(), Some("1.32.0"));
        assert_eq!(version_from_build_info("nothing here"), None);
    }

    #[test]
    fn finds_the_highest_library_in_a_wheel_layout() {
        let root = tempfile::tempdir().unwrap();
        let capi = root.path().join("onnxruntime").join("capi");
        std::fs::create_dir_all(&capi).unwrap();
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(capi.join(name), b"").unwrap();
        }
        let found = library_in_dir(root.path()).unwrap();
        assert_eq!(found, capi.join("libonnxruntime.so.1.32.0"));
    }

    #[test]
    fn a_given_path_that_points_nowhere_is_an_error() {
        let error = resolve_given(
            Path::new("/nonexistent/libonnxruntime.so"),
            LibrarySource::EnvVar,
        )
        .unwrap_err();
        assert!(error.to_string().contains("ORT_DYLIB_PATH"), "{error}");
    }
}
