//! Reading input images (formats, size limits, EXIF orientation, gray,
//! alpha, 16-bit) and writing outputs atomically (temporary file, then rename).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
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

/// Expands the command line's inputs: files as given, folders to their
/// supported images (not recursive, sorted by name).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| Error::io(input, e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.is_file() && has_input_extension(path))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// Reads one input: checks the size limits from the header, decodes, applies
/// the EXIF orientation. Every failure is an [`Error::Input`] whose message
/// says what is wrong with the file.
pub fn read_input(path: &Path, limits: &InputLimits) -> Result<InputImage> {
    let fail = |reason: String| Error::Input(reason);
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(fail("empty file".to_string()));
    }
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(fail(
            "not an image in a supported format (png, jpg, webp, bmp, tiff)".to_string(),
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| fail(format!("cannot decode: {e}")))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits).map_err(fail)?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| fail(format!("cannot decode (truncated or corrupt?): {e}")))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(InputImage::from_dynamic(image))
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
            "{width}x{height} has {:.1} megapixels, over the limit of {:.1} (raise it with --max-pixels)",
            pixels as f64 / 1e6,
            limits.max_pixels as f64 / 1e6
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

/// Writes `image` to `path` atomically: into a hidden temporary file in the
/// same folder, flushed and synced, then renamed over `path`. On any error
/// the temporary file is removed and `path` is untouched.
pub fn write_atomically(image: &DynamicImage, path: &Path) -> Result<()> {
    let format = output_format(path)?;
    let image = adapt_to_format(image, format);
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let temporary = folder.join(format!(".{name}.{}.partial", std::process::id()));
    let output_error = |reason: String| Error::Output {
        path: path.to_path_buf(),
        reason,
    };
    let written = (|| -> std::result::Result<(), String> {
        let file = File::create(&temporary).map_err(|e| e.to_string())?;
        let mut writer = BufWriter::new(file);
        image
            .write_to(&mut writer, format)
            .map_err(|e| e.to_string())?;
        writer.flush().map_err(|e| e.to_string())?;
        writer
            .into_inner()
            .map_err(|e| e.to_string())?
            .sync_all()
            .map_err(|e| e.to_string())?;
        std::fs::rename(&temporary, path).map_err(|e| e.to_string())
    })();
    if let Err(reason) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(output_error(reason));
    }
    Ok(())
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
