//! Writing outputs: the format from the extension, the input's color
//! profile where the format holds one, then atomically (a `tempfile` in the
//! same folder, synced, then renamed over the target).

use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use image::codecs::{jpeg::JpegEncoder, png::PngEncoder, tiff::TiffEncoder, webp::WebPEncoder};
use image::{DynamicImage, ImageEncoder, ImageError, ImageFormat, ImageResult};

use crate::error::{Error, Result};

/// The output format for a path: png unless the extension names another
/// supported one.
pub fn output_format(path: &Path) -> Result<ImageFormat> {
    let extension = match path.extension() {
        None => None,
        Some(extension) => match extension.to_str() {
            Some(text) => Some(text.to_ascii_lowercase()),
            None => {
                return Err(Error::InvalidOption(format!(
                    "cannot write .{} files; use .png, .jpg, .webp, .bmp or .tiff",
                    extension.to_string_lossy()
                )))
            }
        },
    };
    match extension.as_deref() {
        None | Some("png") => Ok(ImageFormat::Png),
        Some("jpg") | Some("jpeg") => Ok(ImageFormat::Jpeg),
        Some("webp") => Ok(ImageFormat::WebP),
        Some("bmp") => Ok(ImageFormat::Bmp),
        Some("tif") | Some("tiff") => Ok(ImageFormat::Tiff),
        Some(other) => Err(Error::InvalidOption(format!(
            "cannot write .{other} files; use .png, .jpg, .webp, .bmp or .tiff"
        ))),
    }
}

/// Whether files of `format` can hold an ICC color profile as written here
/// (BMP cannot: its encoder writes none).
pub fn holds_icc_profile(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Tiff
    )
}

/// JPEG quality when none is asked for: high, since fine detail is what an
/// upscaler adds (the image crate's own default is 75; nano on
/// examples/coffee.png against the PNG: 48.4 dB at 95, 42.9 dB at 75).
pub const DEFAULT_JPEG_QUALITY: u8 = 95;

/// How an output is encoded besides its format.
#[derive(Debug, Clone, Copy)]
pub struct Encoding<'a> {
    /// Embedded where the format holds one ([`holds_icc_profile`]).
    pub icc_profile: Option<&'a [u8]>,
    /// JPEG quality, 1..=100 (other formats are lossless).
    pub jpeg_quality: u8,
}

impl Default for Encoding<'_> {
    fn default() -> Self {
        Encoding {
            icc_profile: None,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
        }
    }
}

/// Encodes `image` as `format` into `writer` as `encoding` says (PNG with
/// the default compression, JPEG at its quality, WebP lossless).
fn encode<W: Write + Seek>(
    image: &DynamicImage,
    format: ImageFormat,
    encoding: Encoding<'_>,
    writer: &mut W,
) -> ImageResult<()> {
    let icc_profile = encoding.icc_profile;
    fn with_profile(
        image: &DynamicImage,
        mut encoder: impl ImageEncoder,
        icc_profile: Option<&[u8]>,
    ) -> ImageResult<()> {
        if let Some(profile) = icc_profile {
            encoder
                .set_icc_profile(profile.to_vec())
                .map_err(ImageError::Unsupported)?;
        }
        image.write_with_encoder(encoder)
    }
    match format {
        ImageFormat::Png => with_profile(image, PngEncoder::new(writer), icc_profile),
        ImageFormat::Jpeg => with_profile(
            image,
            JpegEncoder::new_with_quality(writer, encoding.jpeg_quality.clamp(1, 100)),
            icc_profile,
        ),
        ImageFormat::WebP => with_profile(image, WebPEncoder::new_lossless(writer), icc_profile),
        ImageFormat::Tiff => with_profile(image, TiffEncoder::new(writer), icc_profile),
        _ => image.write_to(writer, format),
    }
}

/// Temporary files being written now, removed by [`remove_temporary_files`]
/// (the command line calls it when a second signal stops it at once).
static LIVE_TEMPORARIES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn live_temporaries() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE_TEMPORARIES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the temporary files of writes in progress and returns how many
/// there were. Holds the registry's lock on return (a write in progress can
/// then neither create nor rename one), so call it only right before the
/// process exits.
pub fn remove_temporary_files() -> usize {
    let mut live = live_temporaries();
    let count = live.len();
    for path in live.drain(..) {
        let _ = std::fs::remove_file(path);
    }
    std::mem::forget(live);
    count
}

/// Prefix and suffix of the temporary names: `.tadsr-XXXXXXXX.tmp` (19 bytes,
/// so any output name a file system takes can be written).
pub const TEMPORARY_PREFIX: &str = ".tadsr-";
pub const TEMPORARY_SUFFIX: &str = ".tmp";
/// Random characters between them (what the stale-file sweep recognizes too).
const TEMPORARY_RANDOM_CHARS: usize = 8;

/// Writes `image` to `path` atomically ([`write_file_atomically`]), encoded
/// as `encoding` says.
pub fn write_atomically(image: &DynamicImage, path: &Path, encoding: Encoding<'_>) -> Result<()> {
    let format = output_format(path)?;
    let image = adapt_to_format(image, format);
    write_file_atomically(path, |writer| {
        encode(&image, format, encoding, writer).map_err(|e| e.to_string())
    })
}

/// Writes a file atomically: `write` fills a new temporary file in the same
/// folder, created exclusively (`O_EXCL`: never through a symbolic link or
/// over an existing file) under an unpredictable name and registered for
/// removal on a signal ([`remove_temporary_files`]); it is flushed, synced,
/// then renamed over `path` (a symbolic link at `path` is replaced, not
/// followed). On any error the temporary file is removed and `path` is
/// untouched.
pub fn write_file_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<tempfile::NamedTempFile>) -> std::result::Result<(), String>,
) -> Result<()> {
    let folder = crate::naming::parent_folder(path);
    let output_error = |reason: String| Error::Output {
        path: path.to_path_buf(),
        reason,
    };
    let temporary = {
        let mut live = live_temporaries();
        let mut builder = tempfile::Builder::new();
        builder
            .prefix(TEMPORARY_PREFIX)
            .suffix(TEMPORARY_SUFFIX)
            .rand_bytes(TEMPORARY_RANDOM_CHARS);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The umask applies, as for any new file (the default is 0600).
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let temporary = builder
            .tempfile_in(folder)
            .map_err(|e| output_error(e.to_string()))?;
        live.push(temporary.path().to_path_buf());
        temporary
    };
    let temporary_path = temporary.path().to_path_buf();
    // Locked while this process lives: a later run removes the file only once
    // nothing holds the lock (this process was killed: remove_stale_temporaries).
    // A file system without locks refuses both sides, so nothing is removed.
    let _ = temporary.as_file().try_lock();
    // tempfile's errors name the temporary file, which is removed: not the user's concern
    let named = format!(" at path {temporary_path:?}");
    let output_error = |reason: String| output_error(reason.replace(&named, ""));
    let forget = |temporary_path: &Path| live_temporaries().retain(|p| p != temporary_path);
    let written = (|| -> std::result::Result<tempfile::NamedTempFile, String> {
        let mut writer = BufWriter::new(temporary);
        write(&mut writer)?;
        writer.flush().map_err(|e| e.to_string())?;
        let temporary = writer.into_inner().map_err(|e| e.to_string())?;
        temporary.as_file().sync_all().map_err(|e| e.to_string())?;
        Ok(temporary)
    })();
    let temporary = match written {
        Ok(temporary) => temporary,
        Err(reason) => {
            // Dropping the NamedTempFile (inside the closure) removed it.
            forget(&temporary_path);
            return Err(output_error(reason));
        }
    };
    let mut live = live_temporaries();
    let persisted = temporary.persist(path);
    live.retain(|p| p != &temporary_path);
    drop(live);
    persisted.map_err(|e| output_error(e.error.to_string()))?;
    Ok(())
}

/// How old a temporary file must be before [`remove_stale_temporaries`]
/// takes it: its writer locks it right after creating it, so only that
/// instant is unlocked in a live writer's life.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `name` is one of this crate's temporary names.
fn is_temporary_name(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.len() == TEMPORARY_PREFIX.len() + TEMPORARY_RANDOM_CHARS + TEMPORARY_SUFFIX.len()
        && name.starts_with(TEMPORARY_PREFIX)
        && name.ends_with(TEMPORARY_SUFFIX)
}

/// Removes from `folder` the temporary files of writes whose process died
/// (SIGKILL, an out-of-memory kill, a power cut: what no signal handler
/// sees) and returns how many. A temporary file is taken only when it is a
/// regular file (never through a link) older than a few seconds that no
/// process holds locked: a live writer holds its lock until it renames or
/// removes the file, so writes of other runs into the same folder go on.
pub fn remove_stale_temporaries(folder: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    entries
        .filter_map(std::result::Result::ok)
        .filter(|entry| is_temporary_name(&entry.file_name()))
        .filter(|entry| remove_if_stale(&entry.path(), now))
        .count()
}

fn remove_if_stale(path: &Path, now: std::time::SystemTime) -> bool {
    let Ok(seen) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let old_enough = seen
        .modified()
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|age| age >= STALE_AFTER);
    if !seen.file_type().is_file() || !old_enough {
        return false;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let Ok(file) = options.open(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let same = file
            .metadata()
            .is_ok_and(|opened| opened.dev() == seen.dev() && opened.ino() == seen.ino());
        if !same {
            return false;
        }
    }
    // Ok only when no process holds it; an error (no locks here) keeps the file
    file.try_lock().is_ok() && std::fs::remove_file(path).is_ok()
}

/// Whether `folder` takes new files: a temporary file is created there and
/// removed at once. Run before any computation.
pub fn check_writable_folder(folder: &Path) -> Result<()> {
    tempfile::Builder::new()
        .prefix(TEMPORARY_PREFIX)
        .suffix(TEMPORARY_SUFFIX)
        .rand_bytes(TEMPORARY_RANDOM_CHARS)
        .tempfile_in(folder)
        .map(drop)
        .map_err(|e| {
            // The OS's reason, without the temporary name tempfile adds.
            let reason = e
                .get_ref()
                .and_then(|inner| inner.source())
                .map(|source| source.to_string())
                .unwrap_or_else(|| e.to_string());
            Error::Output {
                path: folder.to_path_buf(),
                reason: format!("cannot create files in this folder: {reason}"),
            }
        })
}

/// JPEG has no alpha and no 16-bit; WebP and BMP no 16-bit.
fn adapt_to_format(
    image: &DynamicImage,
    format: ImageFormat,
) -> std::borrow::Cow<'_, DynamicImage> {
    use std::borrow::Cow;
    let sixteen_bit = matches!(
        image,
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_)
    );
    match format {
        ImageFormat::Jpeg => Cow::Owned(DynamicImage::ImageRgb8(image.to_rgb8())),
        ImageFormat::WebP | ImageFormat::Bmp if sixteen_bit => {
            if image.color().has_alpha() {
                Cow::Owned(DynamicImage::ImageRgba8(image.to_rgba8()))
            } else {
                Cow::Owned(DynamicImage::ImageRgb8(image.to_rgb8()))
            }
        }
        _ => Cow::Borrowed(image),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])));
        write_atomically(&image, &path, Encoding::default()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.png")]);
        assert_eq!(
            image::open(&path).unwrap().to_rgb8().get_pixel(3, 3).0,
            [1, 2, 3]
        );
    }

    /// A temporary file as a killed writer leaves it: `age` old, unlocked.
    fn left_temporary(folder: &Path, name: &str, age: std::time::Duration) -> PathBuf {
        let path = folder.join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        path
    }

    #[test]
    fn stale_temporaries_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::Duration::from_secs(60);
        let stale = left_temporary(dir.path(), ".tadsr-AbCdEfGh.tmp", old);
        // a writer still at work: locked
        let live = left_temporary(dir.path(), ".tadsr-LiveOne1.tmp", old);
        let holder = std::fs::File::open(&live).unwrap();
        holder.lock().unwrap();
        // just created: its writer may not have locked it yet
        let fresh = left_temporary(dir.path(), ".tadsr-Fresh123.tmp", std::time::Duration::ZERO);
        // not ours: another length, another prefix, a link to a file of that name
        let other = left_temporary(dir.path(), ".tadsr-AbCdEfGhX.tmp", old);
        let user = left_temporary(dir.path(), "photo.tmp", old);
        let target = left_temporary(dir.path(), "target.png", old);
        let link = dir.path().join(".tadsr-Link4567.tmp");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link).unwrap();

        assert_eq!(remove_stale_temporaries(dir.path()), 1);
        assert!(!stale.exists());
        for kept in [&live, &fresh, &other, &user, &target] {
            assert!(kept.exists(), "{}", kept.display());
        }
        #[cfg(unix)]
        assert!(link.symlink_metadata().is_ok());
        // once its writer is gone, the lock goes with it
        drop(holder);
        assert_eq!(remove_stale_temporaries(dir.path()), 1);
        assert!(!live.exists());
        assert_eq!(remove_stale_temporaries(&dir.path().join("missing")), 0);
    }

    #[test]
    fn a_write_in_progress_is_never_taken_for_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_file_atomically(&path, |writer| {
            let temporary = writer.get_ref().path().to_path_buf();
            // as old as a slow write's file gets: still locked by this writer
            let file = std::fs::File::options()
                .write(true)
                .open(&temporary)
                .unwrap();
            file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(600))
                .unwrap();
            assert_eq!(remove_stale_temporaries(dir.path()), 0);
            assert!(temporary.exists());
            writer.write_all(b"done").map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"done");
    }

    #[test]
    fn errors_do_not_name_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let error = write_file_atomically(&path, |writer| {
            let temporary = writer.get_ref().path().to_path_buf();
            Err(format!("disk full at path {temporary:?}"))
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("disk full"), "{error}");
        assert!(!error.contains(TEMPORARY_PREFIX), "{error}");
    }

    #[test]
    fn an_extension_that_is_not_utf8_is_refused() {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let name = std::ffi::OsStr::from_bytes(b"x.p\xffg");
            assert!(output_format(Path::new(name)).is_err());
        }
        assert_eq!(output_format(Path::new("x")).unwrap(), ImageFormat::Png);
        assert_eq!(
            output_format(Path::new("x.JPEG")).unwrap(),
            ImageFormat::Jpeg
        );
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("out.png");
        let image = DynamicImage::ImageRgb8(RgbImage::new(2, 2));
        assert!(write_atomically(&image, &path, Encoding::default()).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
