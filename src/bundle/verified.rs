//! Bundle files whose sha256 matched the manifest, remembered between runs.
//!
//! Hashing every file on every load costs more than opening the graphs on
//! large bundles (the SD-2.1-size fp32 bundle: 3.9 GB, 3.2 s on this
//! project's machine with the files in the page cache). After a file's
//! hash has matched, a record under `<cache>/verified/` keeps the sha256
//! it matched and the file's state: device, inode, size, modification and
//! change times (ns). A later load that finds the same file in the same
//! state trusts it without reading it; any write to the file changes its
//! change time (which no user can set back), a replaced file has another
//! inode, so a changed file is hashed again.
//!
//! A state is only recorded once it has settled (modified and changed at
//! least [`SETTLED_SECS`] s before the hash began, and unchanged by the
//! end of it): on a file system with coarse timestamps a write in the same
//! tick as the record would otherwise keep the recorded times. Records are
//! written to a temporary file and renamed; one record per file path, so a
//! re-export replaces its file's record. `TADSR_EDGE_VERIFY_CACHE=0` turns
//! this off; `info --verify` always hashes every file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Environment variable: `0` or `false` turns remembering off.
pub const VERIFY_CACHE_ENV: &str = "TADSR_EDGE_VERIFY_CACHE";

/// A file state is recorded only when it is at least this old.
pub const SETTLED_SECS: i128 = 2;

/// How a bundle's files are checked against the manifest's sha256 on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashCheck {
    /// Not checked (planning before a run, `info` without `--verify`).
    Skip,
    /// Every file hashed, except one whose hash matched before in exactly
    /// its present state (see the module's notes): what a run does.
    Remembered,
    /// Every file hashed (`info --verify`, [`super::Bundle::open`]).
    Full,
}

/// Whether remembering is on (`TADSR_EDGE_VERIFY_CACHE` is not `0`/`false`).
pub fn enabled() -> bool {
    !matches!(
        std::env::var(VERIFY_CACHE_ENV).as_deref(),
        Ok("0") | Ok("false")
    )
}

/// The records kept now: their folder, whether remembering is on, and how
/// many files they cover.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub folder: PathBuf,
    pub enabled: bool,
    pub files: usize,
}

/// Counts the records under `cache_root/verified`.
pub fn summary(cache_root: &Path) -> Summary {
    let folder = cache_root.join("verified");
    let files = fs::read_dir(&folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .count();
    Summary {
        folder,
        enabled: enabled(),
        files,
    }
}

/// What identifies one state of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    device: u64,
    inode: u64,
    len: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileState {
    /// The state of the file at `path` (symbolic links followed); None
    /// where it cannot be read or the platform has no inodes.
    #[cfg(unix)]
    pub fn of(path: &Path) -> Option<FileState> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).ok()?;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Some(FileState {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified_ns: ns(meta.mtime(), meta.mtime_nsec()),
            changed_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }

    #[cfg(not(unix))]
    pub fn of(_path: &Path) -> Option<FileState> {
        None
    }

    /// Whether the file was last modified and changed at least
    /// [`SETTLED_SECS`] before `now`.
    fn settled_at(&self, now: SystemTime) -> bool {
        let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let now_ns = since_epoch.as_nanos() as i128;
        let latest = self.modified_ns.max(self.changed_ns);
        now_ns - latest >= SETTLED_SECS * 1_000_000_000
    }
}

/// The records of verified files under `<cache>/verified/`.
#[derive(Debug, Clone)]
pub struct VerifiedFiles {
    folder: PathBuf,
}

impl VerifiedFiles {
    /// The records under `cache_root` (`<cache>/verified/`).
    pub fn at(cache_root: &Path) -> VerifiedFiles {
        VerifiedFiles {
            folder: cache_root.join("verified"),
        }
    }

    /// The user's records, when remembering is on and there is a cache
    /// folder.
    pub fn user() -> Option<VerifiedFiles> {
        if !enabled() {
            return None;
        }
        crate::runtime::cache_dir().map(|root| VerifiedFiles::at(&root))
    }

    /// The record of the file at `real_path` (resolved: one record per
    /// file, whatever path led to it).
    fn record_path(&self, real_path: &Path) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(real_path.as_os_str().as_encoded_bytes());
        let name: String = hasher.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.folder.join(name)
    }

    /// Whether the file at `real_path` in `state` matched `sha256` before.
    pub fn holds(&self, real_path: &Path, sha256: &str, state: &FileState) -> bool {
        read_record(&self.record_path(real_path)).is_some_and(|recorded| {
            recorded.lines().next() == Some(record_line(sha256, state).trim_end())
        })
    }

    /// Records that the file at `real_path` matched `sha256`, hashed from
    /// `before` (its state when the hash began) at `started`, if it had
    /// settled then and is still in that state. Failures to write are
    /// ignored (the file is hashed again next time).
    pub fn remember(
        &self,
        real_path: &Path,
        sha256: &str,
        before: &FileState,
        started: SystemTime,
    ) {
        if !before.settled_at(started) || FileState::of(real_path).as_ref() != Some(before) {
            return;
        }
        // the file's path on a second line, for pruning
        let text = format!(
            "{}{}\n",
            record_line(sha256, before),
            real_path.to_string_lossy()
        );
        let record = self.record_path(real_path);
        if self.write_record(&record, &text).is_ok() {
            self.remove_records_of_missing_files(&record);
        }
    }

    fn write_record(&self, record: &Path, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        fs::create_dir_all(&self.folder)?;
        let mut temporary = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&self.folder)?;
        temporary.write_all(text.as_bytes())?;
        temporary.persist(record).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes the records of files that are gone (a deleted bundle, a
    /// temporary copy): they could never be used again. `kept`: the record
    /// just written (its path line is lossy for a name that is not UTF-8).
    fn remove_records_of_missing_files(&self, kept: &Path) {
        for entry in fs::read_dir(&self.folder).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') || entry.path() == kept {
                continue;
            }
            let Some(text) = read_record(&entry.path()) else {
                continue;
            };
            if text
                .lines()
                .nth(1)
                .is_some_and(|path| !Path::new(path).exists())
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// A record's text; None for anything but a small regular file (never
/// blocks on a FIFO planted in the cache).
fn read_record(path: &Path) -> Option<String> {
    crate::regular_file::read_text_capped(path, MAX_RECORD_BYTES).ok()
}

/// A record is two short lines; a path is at most 4 KiB.
const MAX_RECORD_BYTES: u64 = 8 << 10;

/// A record's first line: the sha256 (lower case) and the file's state.
fn record_line(sha256: &str, state: &FileState) -> String {
    format!(
        "{} {} {} {} {} {}\n",
        sha256.to_ascii_lowercase(),
        state.device,
        state.inode,
        state.len,
        state.modified_ns,
        state.changed_ns
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    const SHA: &str = "AB12";

    fn later(seconds: u64) -> SystemTime {
        SystemTime::now() + Duration::from_secs(seconds)
    }

    /// A new file `name` in `folder` holding `bytes`, and its state.
    fn new_file(folder: &Path, name: &str, bytes: &[u8]) -> (PathBuf, FileState) {
        let file = folder.join(name);
        fs::write(&file, bytes).unwrap();
        let state = FileState::of(&file).unwrap();
        (file, state)
    }

    #[test]
    fn a_record_holds_only_for_its_hash_and_the_same_file_state() {
        let folder = tempfile::tempdir().unwrap();
        let records = VerifiedFiles::at(&folder.path().join("cache"));
        let (file, state) = new_file(folder.path(), "unet.onnx", b"graph bytes");
        assert!(!records.holds(&file, SHA, &state), "nothing recorded yet");
        records.remember(&file, SHA, &state, later(10));
        assert!(records.holds(&file, SHA, &state));
        assert!(
            records.holds(&file, "ab12", &state),
            "hex case is not a difference"
        );
        assert!(!records.holds(&file, "ab13", &state), "another hash");
        let (other, other_state) = new_file(folder.path(), "other.onnx", b"graph bytes");
        assert!(!records.holds(&other, SHA, &other_state), "another file");

        // the same bytes rewritten in place with the old modification time:
        // the change time still moves
        // (on a file system with whole-second times, wait for the next one:
        // what the settled rule does for real records)
        let whole_seconds = state.changed_ns % 1_000_000_000 == 0;
        std::thread::sleep(Duration::from_millis(if whole_seconds { 1100 } else { 20 }));
        let modified = fs::metadata(&file).unwrap().modified().unwrap();
        fs::write(&file, b"graph bytez").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let rewritten = FileState::of(&file).unwrap();
        assert_eq!(rewritten.len, state.len);
        assert_eq!(rewritten.modified_ns, state.modified_ns);
        assert!(
            !records.holds(&file, SHA, &rewritten),
            "{rewritten:?} vs {state:?}"
        );

        // a file renamed over it: another inode
        let replacement = folder.path().join("replacement");
        fs::write(&replacement, b"graph bytes").unwrap();
        fs::rename(&replacement, &file).unwrap();
        assert!(!records.holds(&file, SHA, &FileState::of(&file).unwrap()));
    }

    #[test]
    fn unsettled_or_changed_files_are_not_recorded() {
        let folder = tempfile::tempdir().unwrap();
        let records = VerifiedFiles::at(folder.path());
        let (file, state) = new_file(folder.path(), "weights.data", b"weights");
        // written just now: a write in the same timestamp tick could follow
        records.remember(&file, SHA, &state, SystemTime::now());
        assert!(!records.holds(&file, SHA, &state));
        // changed while it was being hashed
        let stale = FileState {
            changed_ns: state.changed_ns - 1,
            ..state
        };
        records.remember(&file, SHA, &stale, later(10));
        assert!(!records.holds(&file, SHA, &stale));
        assert!(!records.holds(&file, SHA, &state));
        // settled and unchanged
        records.remember(&file, SHA, &state, later(10));
        assert!(records.holds(&file, SHA, &state));
        // one record per file: a new hash replaces it
        records.remember(&file, "cd34", &state, later(10));
        assert!(records.holds(&file, "cd34", &state));
        assert!(!records.holds(&file, SHA, &state));
        let kept = summary(folder.path());
        assert_eq!(kept.files, 1, "{kept:?}");
        assert_eq!(kept.folder, folder.path().join("verified"));
        // a file that is gone loses its record when another is written
        let (second, second_state) = new_file(folder.path(), "second.data", b"more weights");
        fs::remove_file(&file).unwrap();
        records.remember(&second, SHA, &second_state, later(10));
        assert!(records.holds(&second, SHA, &second_state));
        assert_eq!(
            summary(folder.path()).files,
            1,
            "the removed file's record went"
        );
    }

    #[test]
    fn a_fifo_in_place_of_a_record_is_passed_over() {
        let folder = tempfile::tempdir().unwrap();
        let records = VerifiedFiles::at(folder.path());
        let (file, state) = new_file(folder.path(), "f", b"x");
        fs::create_dir_all(folder.path().join("verified")).unwrap();
        let fifo = records.record_path(&file);
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // neither the check nor the pruning blocks on it
        assert!(!records.holds(&file, SHA, &state));
        let (other, other_state) = new_file(folder.path(), "g", b"y");
        records.remember(&other, SHA, &other_state, later(10));
        assert!(records.holds(&other, SHA, &other_state));
    }

    #[test]
    fn a_name_that_is_not_utf8_keeps_its_record() {
        use std::os::unix::ffi::OsStrExt;
        let folder = tempfile::tempdir().unwrap();
        let records = VerifiedFiles::at(folder.path());
        let file = folder
            .path()
            .join(std::ffi::OsStr::from_bytes(b"unet-\xff.onnx"));
        fs::write(&file, b"graph").unwrap();
        let state = FileState::of(&file).unwrap();
        records.remember(&file, SHA, &state, later(10));
        assert!(records.holds(&file, SHA, &state));
    }

    #[test]
    fn an_unwritable_cache_is_no_error() {
        let folder = tempfile::tempdir().unwrap();
        let blocker = folder.path().join("not-a-folder");
        fs::write(&blocker, b"").unwrap();
        let records = VerifiedFiles::at(&blocker);
        let (file, state) = new_file(folder.path(), "f", b"x");
        records.remember(&file, SHA, &state, later(10));
        assert!(!records.holds(&file, SHA, &state));
    }
}
