//! Finding libonnxruntime: `--ort-lib`, `ORT_DYLIB_PATH`, the set-up's
//! cache, an importable Python onnxruntime, in that order.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

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
pub(super) fn library_version_from_name(path: &Path) -> Option<String> {
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
