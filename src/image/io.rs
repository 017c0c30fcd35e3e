//! Reading input images (formats, size limits, EXIF orientation, gray,
//! alpha, 16-bit) and writing outputs atomically (temporary file, then rename).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::{
    DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Rgb32FImage, RgbImage,
};

use super::container::{
    check_jpeg_complete, png_animation_frames, supported_format, tiff_layout, webp_animation_frames,
};
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

/// The inputs a command line names, in order, each with the subfolder (of
/// the folder it was found in) its outputs go to: empty for files given
/// directly and for those at a folder's top level.
#[derive(Debug, Default)]
pub struct InputListing {
    pub files: Vec<PathBuf>,
    pub subfolders: Vec<PathBuf>,
    /// Subfolders that could not be read: one line each (their images are
    /// missing from the batch, which counts as a failure).
    pub errors: Vec<String>,
    /// Symbolic links to folders met by `--recursive`, not followed.
    pub notes: Vec<String>,
}

/// Expands the command line's inputs: files as given, folders to the names
/// in them with a supported extension (sorted by name), and with
/// `recursive` those of their subfolders too (sorted by path below the
/// folder given). A name found in a folder is kept whatever it is (a FIFO,
/// a dangling symbolic link, ...) except a folder, so that the same rule
/// ([`check_input_file`]) refuses it with a reason, as for a name given
/// explicitly. The walk never follows a symbolic link to a folder (a note
/// says so), never enters hidden folders (names starting with `.`), the
/// folder `skip` (the output folder, by device and inode) or a folder twice.
/// A folder that cannot be read, given or met, is a line in `errors` (its
/// images are missing from the batch; the other inputs go on).
pub fn expand_inputs(
    inputs: &[PathBuf],
    recursive: bool,
    skip: Option<(u64, u64)>,
) -> Result<InputListing> {
    let mut listing = InputListing::default();
    for input in inputs {
        if !input.is_dir() {
            listing.files.push(input.clone());
            listing.subfolders.push(PathBuf::new());
            continue;
        }
        let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut visited = std::collections::HashSet::new();
        visited.extend(crate::naming::inode(input));
        let mut pending = vec![PathBuf::new()];
        while let Some(subfolder) = pending.pop() {
            // (joining an empty subfolder would add a trailing slash to messages)
            let folder = if subfolder.as_os_str().is_empty() {
                input.clone()
            } else {
                input.join(&subfolder)
            };
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) => {
                    listing.errors.push(format!(
                        "{}: cannot read this folder ({e}); its images are not processed",
                        crate::naming::shown(&folder)
                    ));
                    continue;
                }
            };
            for entry in entries.filter_map(|entry| entry.ok()) {
                let path = entry.path();
                let name = entry.file_name();
                let is_real_folder = entry.file_type().is_ok_and(|kind| kind.is_dir());
                if is_real_folder {
                    let hidden = name.as_encoded_bytes().starts_with(b".");
                    let identity = crate::naming::inode(&path);
                    let skipped = identity.is_some() && identity == skip;
                    if recursive
                        && !hidden
                        && !skipped
                        && identity.is_none_or(|id| visited.insert(id))
                    {
                        pending.push(subfolder.join(&name));
                    }
                    continue;
                }
                if path.is_dir() {
                    // a symbolic link to a folder
                    if recursive {
                        listing.notes.push(format!(
                            "{}: a symbolic link to a folder; not followed (--recursive)",
                            crate::naming::shown(&path)
                        ));
                    }
                    continue;
                }
                if has_input_extension(&path) {
                    found.push((subfolder.clone(), path));
                }
            }
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        for (subfolder, path) in found {
            listing.files.push(path);
            listing.subfolders.push(subfolder);
        }
    }
    Ok(listing)
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

/// Opens a regular file for reading without ever blocking on a FIFO.
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    crate::regular_file::open_regular(path).map_err(Error::Input)
}

/// A decoded input and what the user should be told about it.
#[derive(Debug, Clone)]
pub struct DecodedInput {
    pub image: InputImage,
    /// One-line warnings (only the first frame of an animation is used, ...).
    pub notes: Vec<String>,
    /// The input's ICC color profile, to be written into its outputs (only
    /// one that describes RGB samples: [`super::color_profile`]).
    pub icc_profile: Option<Vec<u8>>,
    /// The file actually read, as (device, inode), when read from a file:
    /// an output must never be written over it, whatever its name has
    /// become since the batch was planned.
    pub source: Option<(u64, u64)>,
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
    let source = file_identity(&file);
    let mut decoded = decode_stream(BufReader::new(file), limits, check)?;
    decoded.source = source;
    Ok(decoded)
}

#[cfg(unix)]
fn file_identity(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|meta| (meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_file: &File) -> Option<(u64, u64)> {
    None
}

/// An input's size as it will be upscaled: from its header, turned by its
/// EXIF orientation (a photo taken upright has its sides swapped), or None
/// when it cannot be read. Reads no pixels and never more than a streaming
/// walk: the image crate's own `image_dimensions` reads a whole JPEG file
/// into memory (a 16x16 JPEG padded to 3 GB took 3 GB) and would block on
/// a FIFO.
pub fn header_dimensions(path: &Path) -> Option<(u32, u32)> {
    let mut reader = BufReader::new(open_regular(path).ok()?);
    let format = supported_format(reader.fill_buf().ok()?)?;
    let ((width, height), orientation) = if format == ImageFormat::Jpeg {
        let layout = check_jpeg_complete(&mut reader).ok()?;
        let frame = layout.frame?;
        ((frame.width, frame.height), layout.orientation)
    } else {
        let mut decoder = ImageReader::with_format(reader, format)
            .into_decoder()
            .ok()?;
        (decoder.dimensions(), decoder.orientation().ok())
    };
    Some(if orientation.is_some_and(swaps_sides) {
        (height, width)
    } else {
        (width, height)
    })
}

/// Whether an EXIF orientation turns the image by a quarter.
fn swaps_sides(orientation: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation;
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
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
    // a profile the container walk found (TIFF), else the decoder's
    let mut found_profile = None;
    rewind(&mut reader)?;
    match format {
        ImageFormat::Jpeg => {
            let layout = check_jpeg_complete(&mut reader).map_err(fail)?;
            // the decoder reads its whole input into memory: give it the
            // image's bytes only, not what follows the end marker
            if let Some(frame) = layout.frame {
                check_size(frame.width, frame.height.max(1), limits).map_err(fail)?;
                layout.check_scan_data().map_err(fail)?;
                let pixels = u64::from(frame.width) * u64::from(frame.height.max(1));
                if layout.length > MAX_JPEG_OVERHEAD_BYTES + 32 * pixels {
                    return Err(fail(format!(
                        "corrupt JPEG: {} MiB of data for {}x{} pixels",
                        layout.length >> 20,
                        frame.width,
                        frame.height
                    )));
                }
            }
            rewind(&mut reader)?;
            let mut bytes = Vec::new();
            (&mut reader)
                .take(layout.length)
                .read_to_end(&mut bytes)
                .map_err(|e| fail(format!("cannot read: {e}")))?;
            return decode_with(
                std::io::Cursor::new(bytes),
                format,
                limits,
                check,
                notes,
                None,
            );
        }
        ImageFormat::Png => {
            if let Some(frames) = png_animation_frames(&mut reader).filter(|frames| *frames > 1) {
                notes.push(format!(
                    "an animated PNG ({frames} frames); only the first frame is upscaled"
                ));
            }
        }
        ImageFormat::WebP => {
            if let Some(frames) = webp_animation_frames(&mut reader) {
                notes.push(format!(
                    "an animated WebP ({frames} frames); only the first frame is upscaled"
                ));
            }
        }
        ImageFormat::Tiff => {
            let layout = tiff_layout(&mut reader).map_err(fail)?;
            if layout.pages > 1 {
                notes.push(format!(
                    "a TIFF with {} pages; only the first page is upscaled",
                    layout.pages
                ));
            }
            found_profile = layout.icc_profile;
        }
        _ => {}
    }
    rewind(&mut reader)?;
    decode_with(reader, format, limits, check, notes, found_profile)
}

/// Most bytes a JPEG may hold besides its pixels' data (metadata, ICC
/// profiles, thumbnails); the data itself is at most a few bytes per pixel.
const MAX_JPEG_OVERHEAD_BYTES: u64 = 64 << 20;

/// Decodes `reader` (at the start of a file of `format`) under `limits`.
fn decode_with<R: BufRead + Seek>(
    reader: R,
    format: ImageFormat,
    limits: &InputLimits,
    check: &dyn Fn(u32, u32) -> std::result::Result<(), String>,
    mut notes: Vec<String>,
    found_profile: Option<Vec<u8>>,
) -> Result<DecodedInput> {
    let fail = |reason: String| Error::Input(reason);
    let mut image_reader = ImageReader::with_format(reader, format);
    // The header is read under the allocation limit alone, so that an
    // oversized image is refused below with its size named; the side limits
    // hold again before any pixel is decoded.
    let mut header_limits = decoder_limits(limits);
    header_limits.max_image_width = None;
    header_limits.max_image_height = None;
    image_reader.limits(header_limits);
    let mut decoder = image_reader
        .into_decoder()
        .map_err(|e| fail(decode_failure(&e)))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits).map_err(fail)?;
    check(width, height).map_err(fail)?;
    // the header's allocation limit holds while the decoder reads it
    let profile = match found_profile {
        Some(bytes) => Ok(Some(bytes)),
        None => decoder.icc_profile(),
    };
    let icc_profile = match profile {
        Ok(None) => None,
        Ok(Some(bytes)) => match super::color_profile::rgb_output_profile(&bytes) {
            Ok(carried) => Some(carried.to_vec()),
            Err(reason) => {
                notes.push(format!(
                    "its ICC color profile is not carried to the output: {reason}"
                ));
                None
            }
        },
        Err(e) => {
            notes.push(format!(
                "its ICC color profile cannot be read ({}); not carried to the output",
                one_line(&e)
            ));
            None
        }
    };
    decoder
        .set_limits(decoder_limits(limits))
        .map_err(|e| fail(format!("cannot decode: {}", one_line(&e))))?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| {
        fail(match e {
            ImageError::Unsupported(_) => decode_failure(&e),
            _ => format!("cannot decode (truncated or corrupt?): {}", one_line(&e)),
        })
    })?;
    if let Some(bad) = first_non_finite_sample(&image) {
        return Err(fail(format!(
            "a sample is {bad} (a float image with undefined values); fix or clamp the file first"
        )));
    }
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(DecodedInput {
        image: InputImage::from_dynamic(image),
        notes,
        icc_profile,
        source: None,
    })
}

/// Why a file cannot be decoded, in words a user can act on: a sample
/// layout the decoder does not read (gray float TIFF, YCbCr TIFF, ...) is
/// named as such, with what to do.
fn decode_failure(error: &ImageError) -> String {
    use image::error::UnsupportedErrorKind;
    match error {
        ImageError::Unsupported(unsupported) => match unsupported.kind() {
            UnsupportedErrorKind::Color(color) => format!(
                "cannot decode: its samples are not a layout this program reads (8 or 16 bits, or \
                 float RGB; gray, with or without alpha; the decoder names it {color:?}); save it as \
                 an 8- or 16-bit RGB or gray PNG"
            ),
            _ => format!(
                "cannot decode: {}; save it as an 8- or 16-bit RGB or gray PNG",
                one_line(error)
            ),
        },
        _ => format!("cannot decode: {}", one_line(error)),
    }
}

/// The first NaN or infinite sample of a float image (the only kind that
/// can hold one); it would reach the model and be blamed on it.
fn first_non_finite_sample(image: &DynamicImage) -> Option<f32> {
    let samples: &[f32] = match image {
        DynamicImage::ImageRgb32F(float) => float.as_raw(),
        DynamicImage::ImageRgba32F(float) => float.as_raw(),
        _ => return None,
    };
    samples.iter().copied().find(|v| !v.is_finite())
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

    /// CRC-32 (IEEE) of a PNG chunk's type and data.
    fn png_crc(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(image::RgbImage::new(8, 8))
            .write_to(&mut std::io::Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    /// A header that claims a huge image is refused with its size named,
    /// before any pixel is decoded.
    #[test]
    fn an_oversized_header_is_refused_with_its_size() {
        // PNG: IHDR's width and height (bytes 16..24), then its CRC again
        let mut png = encoded(ImageFormat::Png);
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = png_crc(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        // JPEG: the baseline frame header (FF C0, length, precision, height, width)
        let mut jpeg = encoded(ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        jpeg[sof + 5..sof + 7].copy_from_slice(&20_000u16.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&20_000u16.to_be_bytes());
        for (bytes, expected) in [
            (png, "100000x100000 is larger than 16384 pixels per side"),
            (jpeg, "20000x20000 is larger than 16384 pixels per side"),
        ] {
            let error = match decode_bytes(&bytes, &InputLimits::default()) {
                Ok(_) => panic!("decoded an image whose header is over the limit"),
                Err(error) => error.to_string(),
            };
            assert!(error.contains(expected), "{error}");
        }
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
}
