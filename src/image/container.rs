//! What a file's own bytes say before a decoder runs: its format from the
//! first bytes, a JPEG's end marker, a WebP's frame count, a TIFF's pages
//! (walked with bounds, so a hostile file cannot make the walk loop or read
//! past its end).

use std::io::{BufRead, Read, Seek, SeekFrom};

use image::ImageFormat;

use super::color_profile::MAX_PROFILE_BYTES;

/// The format from the first bytes, if it is one this build reads.
pub(super) fn supported_format(head: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(head).ok()? {
        format @ (ImageFormat::Png
        | ImageFormat::Jpeg
        | ImageFormat::WebP
        | ImageFormat::Bmp
        | ImageFormat::Tiff) => Some(format),
        _ => None,
    }
}

/// A JPEG's frame header (SOF): its size and how its scans are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegFrame {
    pub width: u32,
    /// 0 when a DNL marker gives it later.
    pub height: u32,
    /// Largest horizontal and vertical sampling factors (an MCU's size in blocks).
    pub max_sampling: (u32, u32),
    /// Baseline, extended or progressive Huffman coding: every 8x8 block
    /// takes at least one bit. (Arithmetic and lossless coding are not held to that.)
    pub huffman_dct: bool,
}

impl JpegFrame {
    /// Minimum Units of one scan covering the image: each is at least one
    /// block of every component.
    pub fn mcu_count(&self) -> u64 {
        let (h, v) = self.max_sampling;
        u64::from(self.width.div_ceil(8 * h.max(1))) * u64::from(self.height.div_ceil(8 * v.max(1)))
    }
}

/// What the walk of a complete JPEG found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegLayout {
    /// Bytes from the start marker through the end marker (what a decoder
    /// needs; what follows EOI is not the image's).
    pub length: u64,
    /// Bytes of entropy-coded data over all scans.
    pub entropy_bytes: u64,
    /// The first frame header, if any.
    pub frame: Option<JpegFrame>,
    /// The EXIF orientation of the first APP1 Exif segment, if any.
    pub orientation: Option<image::metadata::Orientation>,
}

/// A reader that counts what was consumed.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        self.count += amount as u64;
        self.inner.consume(amount);
    }
}

/// Walks a JPEG's segments and entropy-coded data up to its end marker
/// (EOI). The decoder fills a truncated file with gray without an error;
/// this refuses it ([`JpegLayout::check_scan_data`] refuses a scan too
/// short for the frame: a header claiming 2048x2048 over no data would
/// otherwise be "decoded"). Data after EOI is allowed (some cameras append
/// some) and not read.
pub fn check_jpeg_complete(reader: impl BufRead) -> std::result::Result<JpegLayout, String> {
    const TRUNCATED: &str =
        "truncated JPEG: the file ends before its end marker (an incomplete download or copy?)";
    let mut reader = Counted {
        inner: reader,
        count: 0,
    };
    let byte = |reader: &mut Counted<_>| -> std::result::Result<u8, String> {
        let mut one = [0u8; 1];
        reader
            .read_exact(&mut one)
            .map_err(|_| TRUNCATED.to_string())?;
        Ok(one[0])
    };
    if byte(&mut reader)? != 0xFF || byte(&mut reader)? != 0xD8 {
        return Err("not a JPEG (no start marker)".to_string());
    }
    let mut entropy_bytes = 0u64;
    let mut frame = None;
    let mut orientation = None;
    let mut exif_seen = false;
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
            0xD9 => break,
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let length = u16::from_be_bytes([byte(&mut reader)?, byte(&mut reader)?]);
        if length < 2 {
            return Err(format!("corrupt JPEG: segment length {length}"));
        }
        let is_frame = matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
        // APP1: EXIF (segments are at most 64 KiB)
        let is_app1 = marker == 0xE1 && !exif_seen;
        if (is_frame && frame.is_none()) || is_app1 {
            let mut segment = vec![0u8; usize::from(length) - 2];
            reader
                .read_exact(&mut segment)
                .map_err(|_| TRUNCATED.to_string())?;
            if is_app1 {
                if let Some(tiff) = segment.strip_prefix(b"Exif\0\0") {
                    exif_seen = true;
                    orientation = image::metadata::Orientation::from_exif_chunk(tiff);
                }
            } else {
                frame = Some(parse_frame(marker, &segment)?);
            }
        } else {
            skip_exact(&mut reader, u64::from(length) - 2).map_err(|_| TRUNCATED.to_string())?;
        }
        if marker == 0xDA {
            let start = reader.count;
            let next = skip_entropy_coded_data(&mut reader).ok_or(TRUNCATED)?;
            // the marker's two bytes are not data
            entropy_bytes += (reader.count - start).saturating_sub(2);
            pending = Some(next);
        }
    }
    Ok(JpegLayout {
        length: reader.count,
        entropy_bytes,
        frame,
        orientation,
    })
}

impl JpegLayout {
    /// Refuses scans too short to hold the frame's pixels: a Huffman-coded
    /// block takes at least one bit, and every MCU holds at least one block.
    pub fn check_scan_data(&self) -> std::result::Result<(), String> {
        if let Some(frame) = self.frame.filter(|f| f.huffman_dct && f.height > 0) {
            if self.entropy_bytes.saturating_mul(8) < frame.mcu_count() {
                return Err(format!(
                    "corrupt JPEG: {} bytes of image data cannot hold {}x{} pixels (a damaged or cut file?)",
                    self.entropy_bytes, frame.width, frame.height
                ));
            }
        }
        Ok(())
    }
}

/// A frame header's fields (after the length).
fn parse_frame(marker: u8, segment: &[u8]) -> std::result::Result<JpegFrame, String> {
    let corrupt = || "corrupt JPEG: frame header too short".to_string();
    let field = |at: usize| segment.get(at).copied().ok_or_else(corrupt);
    let height = u32::from(u16::from_be_bytes([field(1)?, field(2)?]));
    let width = u32::from(u16::from_be_bytes([field(3)?, field(4)?]));
    let components = usize::from(field(5)?);
    let mut max_sampling = (1, 1);
    for index in 0..components {
        let sampling = field(6 + 3 * index + 1)?;
        max_sampling.0 = max_sampling.0.max(u32::from(sampling >> 4));
        max_sampling.1 = max_sampling.1.max(u32::from(sampling & 0x0F));
    }
    Ok(JpegFrame {
        width,
        height,
        max_sampling,
        huffman_dct: matches!(marker, 0xC0..=0xC2),
    })
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
pub(super) fn webp_animation_frames(reader: &mut (impl Read + Seek)) -> Option<usize> {
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

/// The number of frames an animated PNG (APNG) declares in its `acTL`
/// chunk (`None` for a still PNG or when the chunks cannot be read; the
/// decoder reports that). Only the chunks before the image data are read.
pub(super) fn png_animation_frames(reader: &mut (impl Read + Seek)) -> Option<u32> {
    let mut signature = [0u8; 8];
    reader.read_exact(&mut signature).ok()?;
    if &signature != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    for _ in 0..100_000 {
        let mut chunk = [0u8; 8];
        reader.read_exact(&mut chunk).ok()?;
        let length = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        match &chunk[4..] {
            b"acTL" => {
                let mut frames = [0u8; 4];
                reader.read_exact(&mut frames).ok()?;
                return Some(u32::from_be_bytes(frames));
            }
            b"IDAT" | b"IEND" => return None,
            // the data and its CRC
            _ => {
                reader.seek(SeekFrom::Current(i64::from(length) + 4)).ok()?;
            }
        }
    }
    None
}

/// What the walk of a TIFF's directories found.
pub(super) struct TiffLayout {
    /// Pages (directories), at least 1.
    pub pages: usize,
    /// The first page's ICC profile (tag 34675), when it has one of at most
    /// [`MAX_PROFILE_BYTES`]. Read here because the image crate's TIFF
    /// decoder reads tags under a limit of the image's own byte size (a
    /// 588-byte profile of a 13x9 image is refused).
    pub icc_profile: Option<Vec<u8>>,
}

/// Walks a TIFF's directories (IFDs): how many pages it has (at most 10000;
/// 1 when the structure cannot be read, the decoder then says why) and the
/// first page's ICC profile, or why it is refused: a tag or a strip/tile
/// that claims more bytes than the file holds. The decoder would otherwise
/// reserve memory for such claims (hundreds of MB for a 1 KB file) before
/// finding out.
pub(super) fn tiff_layout(
    reader: &mut (impl Read + Seek),
) -> std::result::Result<TiffLayout, String> {
    let unreadable = TiffLayout {
        pages: 1,
        icc_profile: None,
    };
    let Ok(file_len) = reader.seek(SeekFrom::End(0)) else {
        return Ok(unreadable);
    };
    if reader.seek(SeekFrom::Start(0)).is_err() {
        return Ok(unreadable);
    }
    match tiff_pages(reader, file_len) {
        Ok((pages, profile_at)) => {
            let icc_profile = profile_at.and_then(|(offset, len)| {
                let mut bytes = vec![0u8; len];
                reader.seek(SeekFrom::Start(offset)).ok()?;
                reader.read_exact(&mut bytes).ok()?;
                Some(bytes)
            });
            Ok(TiffLayout {
                pages: pages.max(1),
                icc_profile,
            })
        }
        Err(TiffWalk::Unreadable) => Ok(unreadable),
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

/// The TIFF tag of an embedded ICC profile.
const TIFF_ICC_PROFILE_TAG: u16 = 34675;

/// Pages, and where the first page's ICC profile lies (offset, bytes).
fn tiff_pages(
    reader: &mut (impl Read + Seek),
    file_len: u64,
) -> std::result::Result<(usize, Option<(u64, usize)>), TiffWalk> {
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
    let mut profile_at = None;
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
            if tag == TIFF_ICC_PROFILE_TAG
                && pages == 0
                && profile_at.is_none()
                && matches!(field_type, 1 | 7)
                && !inline
                && bytes <= MAX_PROFILE_BYTES as u64
            {
                profile_at = Some((value, bytes as usize));
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
    Ok((pages, profile_at))
}
