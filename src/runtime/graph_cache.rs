//! Optimized graphs kept between runs (CPU provider).
//!
//! Opening a graph with all of ONNX Runtime's optimizations costs most of a
//! run's start-up on big graphs: for the SD-2.1-size UNet (3.4 GB) 6.9 s,
//! of which 5.4 s are the layout transforms (NCHWc blocking of the
//! convolution weights), against 1.3 s to open the same graph already
//! optimized. The first open of a graph saves ONNX Runtime's optimized
//! graph under `<cache>/graphs/<key>/`; later opens load it with the
//! optimizations off.
//!
//! The optimized graph is specific to the CPU it was made on (the NCHWc
//! block size follows the vector width: AVX2 and AVX-512 differ) and to
//! the ONNX Runtime version, so both are part of the key, with the graph's
//! sha256 from the manifest and the size and modification time of the
//! graph and its weights file (a graph edited in place is not the cached
//! one). An entry is written in a temporary folder and renamed when
//! complete; an entry that fails to open is removed and the graph opened
//! from the bundle. Each entry records the graph file it was made from
//! (`source`): a new entry for the same file (a re-export, an edit)
//! removes the older ones, and the entries of graph files that are gone,
//! so the cache holds one copy per existing graph file.
//! `TADSR_EDGE_GRAPH_CACHE=0` turns the cache off; deleting the `graphs`
//! folder clears it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// Environment variable: `0` or `false` turns the cache off.
pub const GRAPH_CACHE_ENV: &str = "TADSR_EDGE_GRAPH_CACHE";

/// Temporary folders are named `.partial-<pid>-<random>`.
const PARTIAL_PREFIX: &str = ".partial-";

/// Removes the temporary folders of processes that are gone (killed while
/// writing an entry: a half-written graph can be gigabytes).
fn remove_abandoned(graphs: &Path) {
    let Ok(entries) = fs::read_dir(graphs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PARTIAL_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this id exists (signal 0 probes without sending).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// What the cache holds now: its folder, complete entries and their bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub folder: PathBuf,
    pub enabled: bool,
    pub entries: usize,
    pub bytes: u64,
}

/// Counts the complete entries under `cache_root/graphs` and their size.
pub fn summary(cache_root: &Path) -> Summary {
    let folder = cache_root.join("graphs");
    let (mut entries, mut bytes) = (0, 0);
    for entry in fs::read_dir(&folder).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !path.join(GRAPH_NAME).is_file() {
            continue;
        }
        entries += 1;
        for file in fs::read_dir(&path).into_iter().flatten().flatten() {
            bytes += file.metadata().map_or(0, |m| m.len());
        }
    }
    Summary {
        folder,
        enabled: enabled(),
        entries,
        bytes,
    }
}

/// The file in an entry naming the graph file it was made from.
pub const SOURCE_NAME: &str = "source";

/// The graph file's name inside an entry; its weights go next to it in
/// [`WEIGHTS_NAME`].
pub const GRAPH_NAME: &str = "model.onnx";
pub const WEIGHTS_NAME: &str = "model.onnx.data";

/// Whether the cache is on (`TADSR_EDGE_GRAPH_CACHE` is not `0`/`false`).
pub fn enabled() -> bool {
    !matches!(
        std::env::var(GRAPH_CACHE_ENV).as_deref(),
        Ok("0") | Ok("false")
    )
}

/// The lines of the first processor in `/proc/cpuinfo` that decide which
/// kernels and layouts ONNX Runtime picks (x86: vendor, model, flags;
/// ARM: implementer, part, features), or None when there are none.
pub fn cpu_signature(cpuinfo: &str) -> Option<String> {
    const KEYS: [&str; 8] = [
        "vendor_id",
        "model name",
        "flags",
        "Features",
        "CPU implementer",
        "CPU architecture",
        "CPU variant",
        "CPU part",
    ];
    let first = cpuinfo.split("\n\n").next().unwrap_or("");
    let lines: Vec<String> = first
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            let key = key.trim();
            KEYS.contains(&key).then(|| {
                format!(
                    "{key}={}",
                    value.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            })
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Size and modification time of a file, as part of a key ("-" when absent).
fn file_stamp(path: &Path) -> String {
    fs::metadata(path)
        .ok()
        .map(|meta| {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}@{modified}", meta.len())
        })
        .unwrap_or_else(|| "-".into())
}

/// The cache key of one graph: its sha256, the ONNX Runtime version, the
/// CPU signature, and the stamps of the graph and its weights file.
pub fn key(
    graph_sha256: &str,
    ort_version: &str,
    cpu_signature: &str,
    graph_stamp: &str,
    weights_stamp: &str,
) -> String {
    let mut hasher = Sha256::new();
    for part in [
        "tadsr-edge optimized graph v1 (ORT_ENABLE_ALL, CPU)",
        graph_sha256,
        ort_version,
        cpu_signature,
        graph_stamp,
        weights_stamp,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One graph's place in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `<cache>/graphs/<key>`.
    pub folder: PathBuf,
    /// The bundle's graph file (absolute when it could be resolved).
    pub source: PathBuf,
}

impl Entry {
    /// The entry of `model` (a bundle's graph with the manifest's
    /// `graph_sha256`) under `cache_root`, or None when the CPU cannot be
    /// identified.
    pub fn for_graph(
        cache_root: &Path,
        model: &Path,
        graph_sha256: &str,
        ort_version: &str,
    ) -> Option<Entry> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
        let cpu = cpu_signature(&cpuinfo)?;
        let weights =
            model.with_file_name(format!("{}.data", model.file_name()?.to_string_lossy()));
        let key = key(
            graph_sha256,
            ort_version,
            &cpu,
            &file_stamp(model),
            &file_stamp(&weights),
        );
        Some(Entry {
            folder: cache_root.join("graphs").join(key),
            source: fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf()),
        })
    }

    /// The optimized graph, when the entry is complete.
    pub fn graph(&self) -> Option<PathBuf> {
        let path = self.folder.join(GRAPH_NAME);
        path.is_file().then_some(path)
    }

    /// A new, empty temporary folder next to the entry (created
    /// exclusively), to be [`Entry::commit`]ted when the graph is written.
    pub fn start(&self) -> std::io::Result<tempfile::TempDir> {
        let parent = self
            .folder
            .parent()
            .ok_or_else(|| std::io::Error::other("cache entry without a parent folder"))?;
        fs::create_dir_all(parent)?;
        remove_abandoned(parent);
        tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{}-", std::process::id()))
            .tempdir_in(parent)
    }

    /// Renames a written temporary folder to the entry (another process
    /// that got there first wins; this one's copy is dropped), then removes
    /// the older entries made from the same graph file.
    pub fn commit(&self, written: tempfile::TempDir) -> std::io::Result<()> {
        fs::write(
            written.path().join(SOURCE_NAME),
            self.source.to_string_lossy().as_bytes(),
        )?;
        let path = written.keep();
        if let Err(error) = fs::rename(&path, &self.folder) {
            let _ = fs::remove_dir_all(&path);
            if self.graph().is_none() {
                return Err(error);
            }
        }
        self.remove_older_copies();
        Ok(())
    }

    /// Entries beside this one made from the same graph file, or from a
    /// graph file that no longer exists.
    fn remove_older_copies(&self) {
        let (Some(parent), Some(own)) = (self.folder.parent(), self.folder.file_name()) else {
            return;
        };
        let Ok(siblings) = fs::read_dir(parent) else {
            return;
        };
        let source = self.source.to_string_lossy();
        for sibling in siblings.flatten() {
            let name = sibling.file_name();
            if name == own || name.to_string_lossy().starts_with('.') {
                continue;
            }
            // the same graph file (an older copy), or one that is gone (a
            // deleted bundle: its entry could never be used again)
            let recorded = fs::read_to_string(sibling.path().join(SOURCE_NAME));
            if recorded.is_ok_and(|recorded| recorded == source || !Path::new(&recorded).exists()) {
                let _ = fs::remove_dir_all(sibling.path());
            }
        }
    }

    /// Removes a broken entry.
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.folder);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu MHz\t\t: 2445.404\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f\nbogomips\t: 4890.80\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\ncpu MHz\t\t: 1000.0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f\n";

    #[test]
    fn the_cpu_signature_keeps_what_picks_kernels_and_ignores_clock_and_core() {
        let signature = cpu_signature(X86).unwrap();
        assert_eq!(
            signature,
            "vendor_id=AuthenticAMD\nmodel name=AMD EPYC 9B14\nflags=fpu avx2 avx512f"
        );
        let other_clock = X86.replace("2445.404", "3000.0");
        assert_eq!(cpu_signature(&other_clock).unwrap(), signature);
        let avx2_only = X86.replace("avx2 avx512f", "avx2");
        assert_ne!(cpu_signature(&avx2_only).unwrap(), signature);
        let arm = "processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n";
        assert_eq!(
            cpu_signature(arm).unwrap(),
            "Features=fp asimd\nCPU implementer=0x41\nCPU part=0xd42"
        );
        assert_eq!(cpu_signature("nothing useful\n"), None);
    }

    #[test]
    fn folders_left_by_dead_processes_are_removed_and_live_ones_kept() {
        let graphs = tempfile::tempdir().unwrap();
        let own = graphs
            .path()
            .join(format!("{PARTIAL_PREFIX}{}-abc", std::process::id()));
        // pid_max is at most 2^22 on Linux: this one cannot exist
        let dead = graphs.path().join(format!("{PARTIAL_PREFIX}99999999-abc"));
        let entry = graphs.path().join("0123456789abcdef");
        for folder in [&own, &dead, &entry] {
            fs::create_dir_all(folder).unwrap();
        }
        remove_abandoned(graphs.path());
        assert!(own.is_dir() && entry.is_dir());
        assert!(!dead.exists());
    }

    #[test]
    fn the_summary_counts_complete_entries_only() {
        let root = tempfile::tempdir().unwrap();
        let graphs = root.path().join("graphs");
        fs::create_dir_all(graphs.join("aaaa")).unwrap();
        fs::write(graphs.join("aaaa").join(GRAPH_NAME), [0u8; 100]).unwrap();
        fs::write(graphs.join("aaaa").join(WEIGHTS_NAME), [0u8; 1000]).unwrap();
        fs::create_dir_all(graphs.join("bbbb")).unwrap(); // no graph: incomplete
        fs::create_dir_all(graphs.join(".partial-1-x")).unwrap();
        fs::write(graphs.join(".partial-1-x").join(GRAPH_NAME), [0u8; 10]).unwrap();
        let summary = summary(root.path());
        assert_eq!((summary.entries, summary.bytes), (1, 1100));
        assert_eq!(summary.folder, graphs);
        let empty = super::summary(&root.path().join("nowhere"));
        assert_eq!((empty.entries, empty.bytes), (0, 0));
    }

    #[test]
    fn every_part_of_the_key_changes_it() {
        let base = key("abc", "1.32.0", "cpu", "10@1", "20@2");
        assert_eq!(base.len(), 32);
        assert_eq!(base, key("abc", "1.32.0", "cpu", "10@1", "20@2"));
        for other in [
            key("abd", "1.32.0", "cpu", "10@1", "20@2"),
            key("abc", "1.31.1", "cpu", "10@1", "20@2"),
            key("abc", "1.32.0", "cpu2", "10@1", "20@2"),
            key("abc", "1.32.0", "cpu", "10@3", "20@2"),
            key("abc", "1.32.0", "cpu", "10@1", "-"),
        ] {
            assert_ne!(other, base);
        }
    }

    /// Writes `graph` into a new temporary folder of `entry` and commits it.
    fn commit(entry: &Entry, graph: &[u8]) {
        let written = entry.start().unwrap();
        fs::write(written.path().join(GRAPH_NAME), graph).unwrap();
        entry.commit(written).unwrap();
    }

    #[test]
    fn an_entry_is_complete_only_after_commit_and_a_second_commit_keeps_the_first() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("model.onnx");
        fs::write(&model, b"graph").unwrap();
        let Some(entry) = Entry::for_graph(root.path(), &model, "sha", "1.32.0") else {
            return; // no /proc/cpuinfo here: the cache is off
        };
        assert!(entry.graph().is_none());
        let first = entry.start().unwrap();
        fs::write(first.path().join(GRAPH_NAME), b"first").unwrap();
        assert!(entry.graph().is_none(), "not visible before the rename");
        entry.commit(first).unwrap();
        commit(&entry, b"second");
        assert_eq!(fs::read(entry.graph().unwrap()).unwrap(), b"first");
        let leftovers: Vec<_> = fs::read_dir(entry.folder.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        // an entry whose graph file was deleted goes with the next commit
        let gone_model = root.path().join("gone.onnx");
        fs::write(&gone_model, b"a graph deleted later").unwrap();
        let gone = Entry::for_graph(root.path(), &gone_model, "sha3", "1.32.0").unwrap();
        commit(&gone, b"gone");
        fs::remove_file(&gone_model).unwrap();
        assert!(gone.graph().is_some());
        // an entry of another graph file stays
        let other_model = root.path().join("other.onnx");
        fs::write(&other_model, b"another graph").unwrap();
        let other = Entry::for_graph(root.path(), &other_model, "sha2", "1.32.0").unwrap();
        commit(&other, b"other");
        // editing the graph makes another entry, which replaces the first
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&model, b"graph, edited").unwrap();
        let edited = Entry::for_graph(root.path(), &model, "sha", "1.32.0").unwrap();
        assert_ne!(edited, entry);
        commit(&edited, b"edited");
        assert!(
            entry.graph().is_none(),
            "the older copy of the same file is gone"
        );
        assert!(edited.graph().is_some() && other.graph().is_some());
        assert!(gone.graph().is_none(), "the deleted graph's entry is gone");
        edited.remove();
        assert!(edited.graph().is_none());
    }
}
