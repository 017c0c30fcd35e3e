//! The GPU libraries ONNX Runtime's CUDA and TensorRT providers open
//! (the CUDA runtime, cuBLAS, cuRAND, cuFFT, cuDNN 9, TensorRT; the
//! versions each provider was built against, read from it): where
//! they are, and loading them before a provider registers, so that a box
//! with only the NVIDIA driver and `make setup GPU=1` needs no
//! `LD_LIBRARY_PATH`.
//!
//! Folders are searched in this order: `TADSR_EDGE_GPU_LIBS` (folders
//! separated by `:`), the folders the set-up recorded in
//! `<cache>/gpu-libs.path`, the `nvidia/*/lib` and `tensorrt_libs` folders
//! beside the ONNX Runtime package in use, those of `python3`'s `nvidia`
//! package. A library in none of them is left to the system loader (a
//! CUDA toolkit in `/usr/local/cuda`, JetPack). Loading a library by its
//! full path makes the providers' later `dlopen` of the same soname find it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Serialize;

/// Environment variable: extra folders holding the GPU libraries, `:`-separated.
pub const GPU_LIBS_ENV: &str = "TADSR_EDGE_GPU_LIBS";

/// File in the set-up cache listing the GPU library folders, one per line.
pub const GPU_LIBS_RECORD: &str = "gpu-libs.path";

/// One library a provider needs, by soname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub soname: String,
    /// What it is, for messages ("cuDNN 9").
    pub what: String,
    /// Whether the provider fails without it (cuFFT and NVRTC are opened
    /// only by some operators).
    pub required: bool,
}

fn needed(soname: &str, what: &str, required: bool) -> Needed {
    Needed {
        soname: soname.to_string(),
        what: what.to_string(),
        required,
    }
}

/// The major version in a soname: 13 for `libcudart.so.13`.
fn soname_major(soname: &str) -> Option<u32> {
    soname
        .rsplit_once(".so.")?
        .1
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// What the CUDA provider opens, in load order (a library's dependencies
/// first). The CUDA runtime, cuBLAS(Lt) and cuRAND sonames are read from
/// the provider library's own `DT_NEEDED` when it can be read (so a CUDA 12
/// build asks for CUDA 12); else those of onnxruntime-gpu 1.31 (CUDA 13).
/// cuFFT and NVRTC follow the CUDA major; cuDNN 9 (opened at run time).
pub fn cuda_needs(provider_library: Option<&Path>) -> Vec<Needed> {
    let linked = provider_library
        .and_then(super::elf::needed_libraries)
        .unwrap_or_default();
    let pick = |family: &str, default: &str| {
        linked
            .iter()
            .find(|n| {
                n.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with(".so."))
            })
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let cudart = pick("libcudart", "libcudart.so.13");
    let cuda_major = soname_major(&cudart).unwrap_or(13);
    let mut needs = vec![
        needed(&cudart, &format!("the CUDA {cuda_major} runtime"), true),
        needed(
            &pick("libcublasLt", &format!("libcublasLt.so.{cuda_major}")),
            "cuBLASLt",
            true,
        ),
        needed(
            &pick("libcublas", &format!("libcublas.so.{cuda_major}")),
            "cuBLAS",
            true,
        ),
        needed(&pick("libcurand", "libcurand.so.10"), "cuRAND", true),
        // cuFFT's soname major is the CUDA major minus one (CUDA 13: libcufft.so.12)
        needed(
            &format!("libcufft.so.{}", cuda_major.saturating_sub(1)),
            "cuFFT",
            false,
        ),
        needed(&format!("libnvrtc.so.{cuda_major}"), "NVRTC", false),
    ];
    for part in [
        "libcudnn_graph",
        "libcudnn_engines_precompiled",
        "libcudnn_engines_runtime_compiled",
        "libcudnn_heuristic",
        "libcudnn_ops",
        "libcudnn_cnn",
        "libcudnn_adv",
        "libcudnn",
    ] {
        needs.push(needed(&format!("{part}.so.9"), "cuDNN 9", true));
    }
    needs
}

/// What the TensorRT provider opens beyond the CUDA provider's libraries:
/// its `DT_NEEDED` TensorRT libraries, else TensorRT 10's.
pub fn tensorrt_needs(provider_library: Option<&Path>) -> Vec<Needed> {
    let linked = provider_library
        .and_then(super::elf::needed_libraries)
        .unwrap_or_default();
    let mut needs: Vec<Needed> = linked
        .iter()
        .filter(|n| n.starts_with("libnvinfer") || n.starts_with("libnvonnxparser"))
        .map(|n| {
            let major = soname_major(n).map_or(String::new(), |m| format!(" {m}"));
            needed(n, &format!("TensorRT{major}"), true)
        })
        .collect();
    if needs.is_empty() {
        needs = vec![
            needed("libnvinfer.so.10", "TensorRT 10", true),
            needed("libnvinfer_plugin.so.10", "TensorRT 10 plugins", false),
            needed("libnvonnxparser.so.10", "TensorRT 10 ONNX parser", true),
        ];
    }
    needs
}

/// How one library was (or was not) loaded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedLibrary {
    pub soname: String,
    /// The file loaded, or `None` when the system loader found it by name.
    pub path: Option<PathBuf>,
}

/// The outcome of loading one provider's libraries.
#[derive(Debug, Clone, Serialize)]
pub struct LibraryReport {
    pub loaded: Vec<LoadedLibrary>,
    /// Why the provider cannot load, naming the first missing library.
    pub missing: Option<String>,
}

/// The folders searched, in order (existing folders only, no repeats).
pub fn search_folders(ort_library: Option<&Path>) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    if let Some(value) = std::env::var_os(GPU_LIBS_ENV) {
        folders.extend(std::env::split_paths(&value));
    }
    if let Some(cache) = super::discovery::cache_dir() {
        if let Ok(text) = std::fs::read_to_string(cache.join(GPU_LIBS_RECORD)) {
            folders.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(PathBuf::from),
            );
        }
    }
    // <site-packages>/onnxruntime/capi/libonnxruntime.so.X -> <site-packages>
    if let Some(site_packages) = ort_library.and_then(|lib| lib.parent()?.parent()?.parent()) {
        folders.extend(wheel_library_folders(site_packages));
    }
    for site_packages in python_site_packages() {
        folders.extend(wheel_library_folders(&site_packages));
    }
    let mut unique: Vec<PathBuf> = Vec::new();
    for folder in folders {
        if folder.is_dir() && !unique.contains(&folder) {
            unique.push(folder);
        }
    }
    unique
}

/// NVIDIA's wheels' library folders below a site-packages folder:
/// `nvidia/<name>/lib` (CUDA 12 layout and cuDNN), `nvidia/cu13/lib`
/// (CUDA 13 layout) and `tensorrt_libs` (TensorRT's libs wheel).
pub fn wheel_library_folders(site_packages: &Path) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    if let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia")) {
        let mut packages: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        packages.sort();
        for package in packages {
            for sub in ["lib", "lib64"] {
                let folder = package.join(sub);
                if folder.is_dir() {
                    folders.push(folder);
                }
            }
        }
    }
    let tensorrt = site_packages.join("tensorrt_libs");
    if tensorrt.is_dir() {
        folders.push(tensorrt);
    }
    folders
}

/// The site-packages folders of `python3`'s `nvidia` and `tensorrt_libs`
/// packages, asked once per process (a GPU box with PyTorch has them).
fn python_site_packages() -> Vec<PathBuf> {
    static FOUND: OnceLock<Vec<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            const PROBE: &str = "import site, sys\nprint('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))";
            let Ok(output) = Command::new("python3")
                .args(["-c", PROBE])
                .stderr(std::process::Stdio::null())
                .output()
            else {
                return Vec::new();
            };
            if !output.status.success() {
                return Vec::new();
            }
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(PathBuf::from)
                .filter(|p| p.join("nvidia").is_dir() || p.join("tensorrt_libs").is_dir())
                .collect()
        })
        .clone()
}

/// The first folder holding `soname`.
pub fn find_in(folders: &[PathBuf], soname: &str) -> Option<PathBuf> {
    folders
        .iter()
        .map(|folder| folder.join(soname))
        .find(|path| path.is_file())
}

/// Loads `needs` in order from `folders` (else by soname through the system
/// loader). First every required library is located, so that a missing one
/// is named (a folder without cuDNN gives the cuDNN reason) before any is
/// loaded; then they are loaded in order, stopping at the first that fails.
pub fn load(needs: &[Needed], folders: &[PathBuf]) -> LibraryReport {
    let located: Vec<Option<PathBuf>> = needs
        .iter()
        .map(|need| find_in(folders, &need.soname))
        .collect();
    for (need, found) in needs.iter().zip(&located) {
        if need.required && found.is_none() {
            if let Err(reason) = open_library(std::ffi::OsStr::new(&need.soname)) {
                return LibraryReport {
                    loaded: Vec::new(),
                    missing: Some(missing_message(need, None, &reason, folders)),
                };
            }
        }
    }
    let mut loaded = Vec::new();
    for (need, found) in needs.iter().zip(located) {
        let result = match &found {
            Some(path) => open_library(path.as_os_str()),
            None => open_library(std::ffi::OsStr::new(&need.soname)),
        };
        match result {
            Ok(()) => loaded.push(LoadedLibrary {
                soname: need.soname.clone(),
                path: found,
            }),
            Err(reason) if need.required => {
                return LibraryReport {
                    loaded,
                    missing: Some(missing_message(need, found.as_deref(), &reason, folders)),
                }
            }
            Err(_) => {}
        }
    }
    LibraryReport {
        loaded,
        missing: None,
    }
}

fn missing_message(
    need: &Needed,
    found: Option<&Path>,
    reason: &str,
    folders: &[PathBuf],
) -> String {
    match found {
        Some(path) => format!(
            "{} ({}) at {} does not load: {reason}",
            need.soname,
            need.what,
            path.display()
        ),
        None => {
            let looked = if folders.is_empty() {
                "no GPU library folders found".to_string()
            } else {
                folders
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "{} not found ({} is needed; looked in: {looked}, and the system loader's path); \
                 run `make setup GPU=1`, or set {GPU_LIBS_ENV} to the folder holding it",
                need.soname, need.what
            )
        }
    }
}

/// `dlopen`s a library for the life of the process.
fn open_library(name: &std::ffi::OsStr) -> Result<(), String> {
    // SAFETY: loading a shared library runs its initialisers; these are
    // NVIDIA's CUDA libraries, loaded exactly as ONNX Runtime would.
    match unsafe { libloading::Library::new(name) } {
        Ok(library) => {
            std::mem::forget(library);
            Ok(())
        }
        Err(error) => Err(error.to_string()),
    }
}

/// The provider library beside libonnxruntime (`libonnxruntime_providers_<name>.so`).
fn provider_library(ort_library: Option<&Path>, name: &str) -> Option<PathBuf> {
    let path = ort_library?
        .parent()?
        .join(format!("libonnxruntime_providers_{name}.so"));
    path.is_file().then_some(path)
}

/// Loads the CUDA provider's libraries once per process.
pub fn load_cuda(ort_library: Option<&Path>) -> &'static LibraryReport {
    static REPORT: OnceLock<LibraryReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        let needs = cuda_needs(provider_library(ort_library, "cuda").as_deref());
        load(&needs, &search_folders(ort_library))
    })
}

/// Loads the TensorRT provider's own libraries once per process (the CUDA
/// ones come from [`load_cuda`]).
pub fn load_tensorrt(ort_library: Option<&Path>) -> &'static LibraryReport {
    static REPORT: OnceLock<LibraryReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        let needs = tensorrt_needs(provider_library(ort_library, "tensorrt").as_deref());
        load(&needs, &search_folders(ort_library))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_cudnn_gives_the_cudnn_reason() {
        // Every CUDA library the provider needs is there (as files), cuDNN is not.
        let folder = tempfile::tempdir().unwrap();
        let needs = cuda_needs(None);
        for need in needs.iter().filter(|n| !n.soname.starts_with("libcudnn")) {
            std::fs::write(folder.path().join(&need.soname), b"").unwrap();
        }
        if open_library(std::ffi::OsStr::new("libcudnn_graph.so.9")).is_ok() {
            return; // a system-wide cuDNN would be found by the loader: nothing to check here
        }
        let report = load(&needs, &[folder.path().to_path_buf()]);
        let reason = report.missing.expect("missing");
        assert!(
            reason.starts_with("libcudnn_graph.so.9 not found (cuDNN 9 is needed"),
            "{reason}"
        );
        assert!(
            reason.contains(&folder.path().display().to_string()),
            "{reason}"
        );
        assert!(reason.contains("make setup GPU=1"), "{reason}");
        assert!(
            report.loaded.is_empty(),
            "nothing is loaded before all are found"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_says_it_does_not_load() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("libcudnn_fake.so.9"), b"not an ELF file").unwrap();
        let needs = [needed("libcudnn_fake.so.9", "cuDNN 9", true)];
        let report = load(&needs, &[folder.path().to_path_buf()]);
        let reason = report.missing.expect("missing");
        assert!(reason.contains("does not load"), "{reason}");
    }

    #[test]
    fn optional_libraries_do_not_stop_loading() {
        let needs = [
            needed("libtadsr_optional_absent.so.1", "something optional", false),
            needed("libc.so.6", "the C library", true),
        ];
        let report = load(&needs, &[]);
        assert!(report.missing.is_none(), "{:?}", report.missing);
        assert_eq!(report.loaded.len(), 1);
        assert_eq!(report.loaded[0].soname, "libc.so.6");
        assert!(
            report.loaded[0].path.is_none(),
            "found by the system loader"
        );
    }

    #[test]
    fn needs_follow_the_cuda_the_provider_was_built_against() {
        let cuda13 = cuda_needs(None);
        assert_eq!(cuda13[0].soname, "libcudart.so.13");
        assert!(cuda13
            .iter()
            .any(|n| n.soname == "libcufft.so.12" && !n.required));
        assert!(cuda13
            .iter()
            .any(|n| n.soname == "libcudnn.so.9" && n.required));
        assert_eq!(soname_major("libcudart.so.12"), Some(12));
        assert_eq!(soname_major("libnvinfer.so.10.13.0"), Some(10));
        assert_eq!(soname_major("libfoo.so"), None);
        // a file that is not a library: the defaults
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libonnxruntime_providers_cuda.so");
        std::fs::write(&fake, b"nothing").unwrap();
        assert_eq!(cuda_needs(Some(&fake)), cuda13);
        assert_eq!(tensorrt_needs(Some(&fake))[0].soname, "libnvinfer.so.10");
    }

    #[test]
    fn wheel_layouts_are_found() {
        let root = tempfile::tempdir().unwrap();
        let sp = root.path();
        for folder in [
            "nvidia/cu13/lib",
            "nvidia/cudnn/lib",
            "nvidia/nothing_here",
            "tensorrt_libs",
        ] {
            std::fs::create_dir_all(sp.join(folder)).unwrap();
        }
        let folders = wheel_library_folders(sp);
        assert_eq!(
            folders,
            vec![
                sp.join("nvidia/cu13/lib"),
                sp.join("nvidia/cudnn/lib"),
                sp.join("tensorrt_libs")
            ]
        );
        std::fs::write(sp.join("nvidia/cudnn/lib/libcudnn.so.9"), b"").unwrap();
        assert_eq!(
            find_in(&folders, "libcudnn.so.9"),
            Some(sp.join("nvidia/cudnn/lib/libcudnn.so.9"))
        );
        assert_eq!(find_in(&folders, "libcublas.so.13"), None);
    }
}
