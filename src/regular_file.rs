//! Opening a file that must be a regular file (an input image, a bundle's
//! manifest or graph) without ever blocking: a FIFO put where a file was
//! expected would otherwise hang the open until someone writes to it, and a
//! device would be read for ever.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Opens `path` for reading, non-blocking, and checks the type of what was
/// opened (not of the path, which could be swapped in between). The error is
/// a sentence fragment: "cannot open: ...", "a FIFO (named pipe), not a
/// regular file; ...".
pub fn open_regular(path: &Path) -> Result<File, String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{}, not a regular file; only regular files are read",
            crate::naming::special_file_kind(&meta)
        ));
    }
    Ok(file)
}

/// The text of regular file `path`, refused when it is over `max_bytes`
/// (read no further than that, whatever the file claims).
pub fn read_text_capped(path: &Path, max_bytes: u64) -> Result<String, String> {
    String::from_utf8(read_bytes_capped(path, max_bytes)?)
        .map_err(|_| "cannot read: stream did not contain valid UTF-8".to_string())
}

/// The bytes of regular file `path`, refused when it is over `max_bytes`
/// (read no further than that, whatever the file claims).
pub fn read_bytes_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        let limit = if max_bytes >= 1 << 20 {
            format!("{} MiB", max_bytes >> 20)
        } else {
            format!("{} KiB", max_bytes >> 10)
        };
        return Err(format!("over {limit}, far more than such a file holds"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_and_a_long_file_is_read_no_further_than_the_cap() {
        let dir = std::env::temp_dir().join(format!("tadsr-regular-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // no writer: a blocking open would hang here
        let error = open_regular(&fifo).unwrap_err();
        assert!(error.contains("FIFO"), "{error}");
        assert!(open_regular(&dir)
            .unwrap_err()
            .contains("not a regular file"));
        let long = dir.join("long.json");
        std::fs::write(&long, vec![b' '; 3 << 20]).unwrap();
        assert!(read_text_capped(&long, 2 << 20)
            .unwrap_err()
            .contains("over 2 MiB"));
        assert_eq!(read_text_capped(&long, 4 << 20).unwrap().len(), 3 << 20);
        // a cap under 1 MiB is said in KiB (a prompt file's: 64 KiB), never "0 MiB"
        assert!(read_text_capped(&long, 64 << 10)
            .unwrap_err()
            .contains("over 64 KiB"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
