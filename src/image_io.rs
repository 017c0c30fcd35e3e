//! Reading input images (formats, size limits, EXIF orientation, gray,
//! alpha, 16-bit) and writing outputs atomically (temporary file, then rename).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Rgb32FImage, RgbImage};

use crate::error::{Error, Result};

/// File extensions accepted as inputs (case-insensitive).
pub const INPUT_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"];

/// Default limits on an input's size.
pub const DEFAULT_MAX_SIDE: u32 = 16384;
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Limits on an input's size, checked before its pixels are decoded.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    pub max_side: u32,
    pub max_pixels: u64,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_side: DEFAULT_MAX_SIDE,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// The color samples of an input, as the pipeline takes them.
#[derive(Debug, Clone)]
pub enum InputPixels {
    /// 8-bit RGB (gray inputs are expanded).
    Rgb8(RgbImage),
    /// 16-bit (or float) inputs: samples on the 0..255 scale, as f32.
    RgbHigh(Rgb32FImage),
}

/// An alpha plane kept aside to be upscaled on its own.
#[derive(Debug, Clone)]
pub enum AlphaPlane {
    /// 8-bit alpha.
    Alpha8(Vec<u8>),
    /// High-precision alpha on the 0..255 scale.
    AlphaHigh(Vec<f32>),
}

/// A decoded input image.
#[derive(Debug, Clone)]
pub struct InputImage {
    pub width: u32,
    pub height: u32,
    pub pixels: InputPixels,
    pub alpha: Option<AlphaPlane>,
}

impl InputImage {
    /// Whether the output should be written with 16-bit samples.
    pub fn is_high_precision(&self) -> bool {
        matches!(self.pixels, InputPixels::RgbHigh(_))
    }

    /// Builds an 8-bit RGB input from memory.
    pub fn from_rgb8(image: RgbImage) -> Self {
        InputImage {
            width: image.width(),
            height: image.height(),
            pixels: InputPixels::Rgb8(image),
            alpha: None,
        }
    }

    /// Classifies a decoded image: gray becomes RGB, alpha is split off,
    /// 16-bit and float samples keep their precision.
    pub fn from_dynamic(image: DynamicImage) -> Self {
        let (width, height) = (image.width(), image.height());
        let has_alpha = image.color().has_alpha();
        let high_precision = image.color().bytes_per_pixel() / image.color().channel_count() > 1;
        let (pixels, alpha) = if high_precision {
            let rgba = image.to_rgba32f();
            let alpha = has_alpha
                .then(|| AlphaPlane::AlphaHigh(rgba.pixels().map(|p| p.0[3] * 255.0).collect()));
            let rgb: Vec<f32> = rgba
                .pixels()
                .flat_map(|p| [p.0[0] * 255.0, p.0[1] * 255.0, p.0[2] * 255.0])
                .collect();
            let rgb = Rgb32FImage::from_raw(width, height, rgb).expect("same size");
            (InputPixels::RgbHigh(rgb), alpha)
        } else {
            let alpha = has_alpha
                .then(|| AlphaPlane::Alpha8(image.to_rgba8().pixels().map(|p| p.0[3]).collect()));
            (InputPixels::Rgb8(image.to_rgb8()), alpha)
        };
        InputImage {
            width,
            height,
            pixels,
            alpha,
        }
    }
}

/// Whether a path's extension names a supported input format.
pub fn has_input_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| INPUT_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Expands the command line's inputs: files as given, folders to the names
/// in them with a supported extension (not recursive, sorted by name). A
/// name found in a folder is kept whatever it is (a FIFO, a dangling
/// symbolic link, ...) except a folder, so that the same rule
/// ([`check_input_file`]) refuses it with a reason, as for a name given
/// explicitly.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| Error::io(input, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| has_input_extension(path) && !path.is_dir())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// Whether `path` is something an input may be: a regular file, or a
/// symbolic link to one. Checked from the metadata, without opening the
/// file (opening a FIFO would block, opening a device may have effects).
pub fn check_input_file(path: &Path) -> Result<()> {
    let fail = |reason: String| Err(Error::Input(reason));
    let link = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail("no such file".to_string())
        }
        Err(e) => return fail(format!("cannot read: {e}")),
    };
    let meta = if link.file_type().is_symlink() {
        match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if is_symlink_loop(&e) => {
                return fail("a symbolic link loop; fix or remove the link".to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let to = std::fs::read_link(path)
                    .map(|t| crate::naming::shown(&t))
                    .unwrap_or_default();
                return fail(format!(
                    "a dangling symbolic link (to {to}, which does not exist)"
                ));
            }
            Err(e) => return fail(format!("cannot follow the symbolic link: {e}")),
        }
    } else {
        link
    };
    if meta.is_file() {
        return Ok(());
    }
    fail(format!(
        "{}, not a regular file; only regular files are read",
        crate::naming::special_file_kind(&meta)
    ))
}

#[cfg(unix)]
fn is_symlink_loop(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn is_symlink_loop(_error: &std::io::Error) -> bool {
    false
}

/// Opens a regular file for reading without ever blocking on a FIFO (the
/// file is opened non-blocking and its type checked on the open handle).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(path)
        .map_err(|e| Error::Input(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::Input(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(Error::Input(format!(
            "{}, not a regular file; only regular files are read",
            crate::naming::special_file_kind(&meta)
        )));
    }
    Ok(file)
}

/// A decoded input and what the user should be told about it.
#[derive(Debug, Clone)]
pub struct DecodedInput {
    pub image: InputImage,
    /// One-line warnings (only the first frame of an animation is used, ...).
    pub notes: Vec<String>,
}

/// Reads one input: checks the size limits from the header, decodes, applies
/// the EXIF orientation. Every failure is an [`Error::Input`] whose message
/// says what is wrong with the file.
pub fn read_input(path: &Path, limits: &InputLimits) -> Result<InputImage> {
    read_input_checked(path, limits, &|_, _| Ok(())).map(|decoded| decoded.image)
}

/// [`read_input`] with a further check of the header's size (`check(width,
/// height)`, before the orientation is applied) that runs before any pixel
/// is decoded, and the notes about the file.
pub fn read_input_checked(
    path: &Path,
    limits: &InputLimits,
    check: &dyn Fn(u32, u32) -> std::result::Result<(), String>,
) -> Result<DecodedInput> {
    check_input_file(path)?;
    let file = open_regular(path)?;
    decode_stream(BufReader::new(file), limits, check)
}

/// Decodes an image held in memory under `limits`: what [`read_input`] does
/// once the file is open (the property tests drive this).
pub fn decode_bytes(bytes: &[u8], limits: &InputLimits) -> Result<DecodedInput> {
    decode_stream(std::io::Cursor::new(bytes), limits, &|_, _| Ok(()))
}

fn decode_stream<R: BufRead + Seek>(
    mut reader: R,
    limits: &InputLimits,
    check: &dyn Fn(u32, u32) -> std::result::Result<(), String>,
) -> Result<DecodedInput> {
    let fail = |reason: String| Error::Input(reason);
    let mut head = Vec::with_capacity(64);
    (&mut reader)
        .take(64)
        .read_to_end(&mut head)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if head.is_empty() {
        return Err(fail("empty file".to_string()));
    }
    let format = supported_format(&head).ok_or_else(|| {
        fail("not an image in a supported format (png, jpg, webp, bmp, tiff)".to_string())
    })?;
    let rewind = |reader: &mut R| {
        reader
            .seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|e| fail(format!("cannot read: {e}")))
    };
    let mut notes = Vec::new();
    rewind(&mut reader)?;
    match format {
        ImageFormat::Jpeg => check_jpeg_complete(&mut reader).map_err(fail)?,
        ImageFormat::WebP => {
            if let Some(frames) = webp_animation_frames(&mut reader) {
                notes.push(format!(
                    "an animated WebP ({frames} frames); only the first frame is upscaled"
                ));
            }
        }
        ImageFormat::Tiff => {
            let pages = tiff_page_count(&mut reader).map_err(fail)?;
            if pages > 1 {
                notes.push(format!(
                    "a TIFF with {pages} pages; only the first page is upscaled"
                ));
            }
        }
        _ => {}
    }
    rewind(&mut reader)?;
    let mut image_reader = ImageReader::with_format(reader, format);
    image_reader.limits(decoder_limits(limits));
    let mut decoder = image_reader
        .into_decoder()
        .map_err(|e| fail(format!("cannot decode: {}", one_line(&e))))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits).map_err(fail)?;
    check(width, height).map_err(fail)?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| {
        fail(format!(
            "cannot decode (truncated or corrupt?): {}",
            one_line(&e)
        ))
    })?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(DecodedInput {
        image: InputImage::from_dynamic(image),
        notes,
    })
}

/// A decoder's message on one line (some end in a newline or hold several).
fn one_line(error: &dyn std::fmt::Display) -> String {
    error
        .to_string()
        .split(|c: char| c.is_control())
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The decoders' own allocation limits: no side over `max_side`, no buffer
/// over what `max_pixels` RGBA 16-bit pixels take (at least 64 MiB, for
/// metadata).
pub fn decoder_limits(limits: &InputLimits) -> image::Limits {
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    decoder_limits
}

/// The format from the first bytes, if it is one this build reads.
fn supported_format(head: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(head).ok()? {
        format @ (ImageFormat::Png
        | ImageFormat::Jpeg
        | ImageFormat::WebP
        | ImageFormat::Bmp
        | ImageFormat::Tiff) => Some(format),
        _ => None,
    }
}

/// Walks a JPEG's segments and entropy-coded data up to its end marker
/// (EOI). The decoder fills a truncated file with gray without an error;
/// this refuses it. Data after EOI is allowed (some cameras append some).
pub fn check_jpeg_complete(mut reader: impl BufRead) -> std::result::Result<(), String> {
    const TRUNCATED: &str =
        "truncated JPEG: the file ends before its end marker (an incomplete download or copy?)";
    let byte = |reader: &mut dyn BufRead| -> std::result::Result<u8, String> {
        let mut one = [0u8; 1];
        reader
            .read_exact(&mut one)
            .map_err(|_| TRUNCATED.to_string())?;
        Ok(one[0])
    };
    if byte(&mut reader)? != 0xFF || byte(&mut reader)? != 0xD8 {
        return Err("not a JPEG (no start marker)".to_string());
    }
    // The marker after the current position: fill bytes and stray data
    // between segments are skipped, as decoders do.
    let mut pending: Option<u8> = None;
    loop {
        let marker = match pending.take() {
            Some(marker) => marker,
            None => {
                while byte(&mut reader)? != 0xFF {}
                let mut marker = byte(&mut reader)?;
                while marker == 0xFF {
                    marker = byte(&mut reader)?;
                }
                marker
            }
        };
        match marker {
            0xD9 => return Ok(()),
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let length = u16::from_be_bytes([byte(&mut reader)?, byte(&mut reader)?]);
        if length < 2 {
            return Err(format!("corrupt JPEG: segment length {length}"));
        }
        skip_exact(&mut reader, u64::from(length) - 2).map_err(|_| TRUNCATED.to_string())?;
        if marker == 0xDA {
            pending = Some(skip_entropy_coded_data(&mut reader).ok_or(TRUNCATED)?);
        }
    }
}

/// Skips a scan's entropy-coded data; returns the marker that ends it.
fn skip_entropy_coded_data(reader: &mut dyn BufRead) -> Option<u8> {
    let mut after_ff = false;
    loop {
        let buffer = reader.fill_buf().ok()?;
        if buffer.is_empty() {
            return None;
        }
        let mut consumed = 0;
        for &b in buffer {
            consumed += 1;
            if after_ff {
                match b {
                    0x00 | 0xD0..=0xD7 => after_ff = false,
                    0xFF => {}
                    marker => {
                        reader.consume(consumed);
                        return Some(marker);
                    }
                }
            } else if b == 0xFF {
                after_ff = true;
            }
        }
        reader.consume(consumed);
    }
}

fn skip_exact(reader: &mut dyn BufRead, count: u64) -> std::io::Result<()> {
    let skipped = std::io::copy(&mut reader.take(count), &mut std::io::sink())?;
    if skipped == count {
        Ok(())
    } else {
        Err(std::io::ErrorKind::UnexpectedEof.into())
    }
}

/// The number of frames of an animated WebP (`None` for a still image or
/// when the container cannot be read; the decoder reports that).
fn webp_animation_frames(reader: &mut (impl Read + Seek)) -> Option<usize> {
    let mut header = [0u8; 12];
    reader.read_exact(&mut header).ok()?;
    if &header[..4] != b"RIFF" || &header[8..12] != b"WEBP" {
        return None;
    }
    let mut animated = false;
    let mut frames = 0usize;
    for _ in 0..1_000_000 {
        let mut chunk = [0u8; 8];
        if reader.read_exact(&mut chunk).is_err() {
            break;
        }
        let size = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let padded = i64::from(size) + i64::from(size & 1);
        match &chunk[..4] {
            b"VP8X" => {
                let mut flags = [0u8; 1];
                reader.read_exact(&mut flags).ok()?;
                animated = flags[0] & 0x02 != 0;
                reader.seek(SeekFrom::Current(padded - 1)).ok()?;
            }
            b"ANMF" => {
                frames += 1;
                reader.seek(SeekFrom::Current(padded)).ok()?;
            }
            _ => {
                reader.seek(SeekFrom::Current(padded)).ok()?;
            }
        }
    }
    animated.then_some(frames.max(1))
}

/// Walks a TIFF's directories (IFDs): returns how many pages it has (at
/// most 10000; 1 when the structure cannot be read, the decoder then says
/// why), or why it is refused: a tag or a strip/tile that claims more bytes
/// than the file holds. The decoder would otherwise reserve memory for such
/// claims (hundreds of MB for a 1 KB file) before finding out.
fn tiff_page_count(reader: &mut (impl Read + Seek)) -> std::result::Result<usize, String> {
    let Ok(file_len) = reader.seek(SeekFrom::End(0)) else {
        return Ok(1);
    };
    if reader.seek(SeekFrom::Start(0)).is_err() {
        return Ok(1);
    }
    match tiff_pages(reader, file_len) {
        Ok(pages) => Ok(pages.max(1)),
        Err(TiffWalk::Unreadable) => Ok(1),
        Err(TiffWalk::Corrupt(reason)) => Err(format!("corrupt TIFF: {reason}")),
    }
}

enum TiffWalk {
    /// The walk could not go on (left to the decoder to report).
    Unreadable,
    /// A claim the file cannot back.
    Corrupt(String),
}

impl From<std::io::Error> for TiffWalk {
    fn from(_: std::io::Error) -> Self {
        TiffWalk::Unreadable
    }
}

fn check_tiff_chunk(chunk_bytes: u64, file_len: u64) -> std::result::Result<(), TiffWalk> {
    if chunk_bytes > file_len {
        return Err(TiffWalk::Corrupt(format!(
            "a strip or tile claims {chunk_bytes} bytes, more than the file ({file_len} bytes)"
        )));
    }
    Ok(())
}

/// Bytes per value of a TIFF field type (8 for unknown types: the largest).
fn tiff_type_size(field_type: u16) -> u64 {
    match field_type {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        _ => 8,
    }
}

fn tiff_pages(
    reader: &mut (impl Read + Seek),
    file_len: u64,
) -> std::result::Result<usize, TiffWalk> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header)?;
    let little = match &header[..2] {
        b"II" => true,
        b"MM" => false,
        _ => return Err(TiffWalk::Unreadable),
    };
    let read_uint = |reader: &mut dyn Read, width: usize| -> std::result::Result<u64, TiffWalk> {
        let mut bytes = [0u8; 8];
        reader.read_exact(&mut bytes[..width])?;
        let bytes = &bytes[..width];
        Ok(if little {
            bytes
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b))
        } else {
            bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b))
        })
    };
    let magic = if little {
        u16::from_le_bytes([header[2], header[3]])
    } else {
        u16::from_be_bytes([header[2], header[3]])
    };
    let big = match magic {
        42 => false,
        43 => true,
        _ => return Err(TiffWalk::Unreadable),
    };
    // Classic: 2-byte entry count, 12-byte entries, 4-byte values/offsets;
    // BigTIFF: 8, 20 and 8.
    let (count_width, offset_width) = if big { (8, 8) } else { (2, 4) };
    let mut offset = if big {
        read_uint(reader, 8)?
    } else {
        let bytes = [header[4], header[5], header[6], header[7]];
        u64::from(if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    };
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    while offset != 0 && pages < 10_000 && seen.insert(offset) {
        reader.seek(SeekFrom::Start(offset))?;
        let entries = read_uint(reader, count_width)?;
        let entry_size = 4 + 2 * offset_width as u64;
        if entries.saturating_mul(entry_size) > file_len {
            return Err(TiffWalk::Corrupt(format!(
                "a directory of {entries} entries is larger than the file ({file_len} bytes)"
            )));
        }
        let mut byte_count_fields = Vec::new();
        let uint_of = |bytes: &[u8]| -> u64 {
            if little {
                bytes
                    .iter()
                    .rev()
                    .fold(0u64, |v, b| (v << 8) | u64::from(*b))
            } else {
                bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b))
            }
        };
        for _ in 0..entries {
            let tag = read_uint(reader, 2)? as u16;
            let field_type = read_uint(reader, 2)? as u16;
            let count = read_uint(reader, offset_width)?;
            let mut raw = [0u8; 8];
            reader.read_exact(&mut raw[..offset_width])?;
            let raw = &raw[..offset_width];
            let value = uint_of(raw);
            let width = tiff_type_size(field_type);
            let bytes = count.saturating_mul(width);
            let inline = bytes <= offset_width as u64;
            if !inline && value.saturating_add(bytes) > file_len {
                return Err(TiffWalk::Corrupt(format!(
                    "tag {tag} claims {bytes} bytes at offset {value}, past the end of the file ({file_len} bytes)"
                )));
            }
            // StripByteCounts and TileByteCounts: no chunk larger than the file.
            if matches!(tag, 279 | 325) && matches!(field_type, 3 | 4 | 16) {
                if inline {
                    for chunk in raw.chunks_exact(width as usize).take(count as usize) {
                        check_tiff_chunk(uint_of(chunk), file_len)?;
                    }
                } else {
                    byte_count_fields.push((width as usize, count, value));
                }
            }
        }
        let next_directory = reader.stream_position()?;
        for (width, count, value) in byte_count_fields {
            reader.seek(SeekFrom::Start(value))?;
            for _ in 0..count {
                check_tiff_chunk(read_uint(reader, width)?, file_len)?;
            }
        }
        reader.seek(SeekFrom::Start(next_directory))?;
        pages += 1;
        offset = match read_uint(reader, offset_width) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    Ok(pages)
}

fn check_size(width: u32, height: u32, limits: &InputLimits) -> std::result::Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("image has zero size ({width}x{height})"));
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(format!(
            "{width}x{height} is larger than {} pixels per side",
            limits.max_side
        ));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(format!(
            "{width}x{height} is {pixels} pixels, over the limit of {} (raise it with --max-pixels)",
            limits.max_pixels
        ));
    }
    Ok(())
}

/// The output format for a path: png unless the extension names another
/// supported one.
pub fn output_format(path: &Path) -> Result<ImageFormat> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
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

/// Writes `image` to `path` atomically: into a new temporary file in the
/// same folder, created exclusively (`O_EXCL`: never through a symbolic link
/// or over an existing file) under an unpredictable name, flushed and synced,
/// then renamed over `path` (a symbolic link at `path` is replaced, not
/// followed). On any error the temporary file is removed and `path` is
/// untouched.
pub fn write_atomically(image: &DynamicImage, path: &Path) -> Result<()> {
    let format = output_format(path)?;
    let image = adapt_to_format(image, format);
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
            .rand_bytes(8);
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
    let forget = |temporary_path: &Path| live_temporaries().retain(|p| p != temporary_path);
    let written = (|| -> std::result::Result<tempfile::NamedTempFile, String> {
        let mut writer = BufWriter::new(temporary);
        image
            .write_to(&mut writer, format)
            .map_err(|e| e.to_string())?;
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

/// Whether `folder` takes new files: a temporary file is created there and
/// removed at once. Run before any computation.
pub fn check_writable_folder(folder: &Path) -> Result<()> {
    tempfile::Builder::new()
        .prefix(TEMPORARY_PREFIX)
        .suffix(TEMPORARY_SUFFIX)
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
    use image::{GrayImage, Luma, Rgba, RgbaImage};

    #[test]
    fn gray_becomes_rgb() {
        let gray = GrayImage::from_pixel(3, 2, Luma([77]));
        let input = InputImage::from_dynamic(DynamicImage::ImageLuma8(gray));
        let InputPixels::Rgb8(rgb) = &input.pixels else {
            panic!("8-bit")
        };
        assert_eq!(rgb.get_pixel(2, 1).0, [77, 77, 77]);
        assert!(input.alpha.is_none());
    }

    #[test]
    fn alpha_is_split_off() {
        let rgba = RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 40]));
        let input = InputImage::from_dynamic(DynamicImage::ImageRgba8(rgba));
        match &input.alpha {
            Some(AlphaPlane::Alpha8(alpha)) => assert_eq!(alpha, &vec![40; 4]),
            other => panic!("expected 8-bit alpha, got {other:?}"),
        }
    }

    #[test]
    fn sixteen_bit_keeps_its_precision() {
        let image =
            image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(1, 1, image::Rgb([65535, 257, 1]));
        let input = InputImage::from_dynamic(DynamicImage::ImageRgb16(image));
        let InputPixels::RgbHigh(rgb) = &input.pixels else {
            panic!("16-bit")
        };
        let p = rgb.get_pixel(0, 0).0;
        assert!(
            (p[0] - 255.0).abs() < 1e-3
                && (p[1] - 1.0).abs() < 1e-3
                && (p[2] - 255.0 / 65535.0).abs() < 1e-5
        );
    }

    #[test]
    fn size_limits() {
        let limits = InputLimits {
            max_side: 100,
            max_pixels: 50 * 50,
        };
        assert!(check_size(0, 10, &limits)
            .unwrap_err()
            .contains("zero size"));
        assert!(check_size(101, 10, &limits)
            .unwrap_err()
            .contains("per side"));
        assert!(check_size(60, 60, &limits)
            .unwrap_err()
            .contains("--max-pixels"));
        assert!(check_size(50, 50, &limits).is_ok());
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3])));
        write_atomically(&image, &path).unwrap();
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

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("out.png");
        let image = DynamicImage::ImageRgb8(RgbImage::new(2, 2));
        assert!(write_atomically(&image, &path).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
