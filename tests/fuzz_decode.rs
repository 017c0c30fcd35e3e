//! Property tests (the fuzz target `decode` of scripts/fuzz.sh): image
//! decoding under limits. Mutated small PNG, JPEG, WebP, BMP and TIFF files
//! and arbitrary bytes must give `Ok` or a typed [`Error::Input`], never a
//! panic, never an image over the limits, never an allocation past them.
//!
//! `cargo test` runs a few dozen cases; `PROPTEST_CASES=N` runs more (the
//! fuzz script loops with new seeds for a fixed time). A panicking input is
//! saved under `$FUZZ_CRASHERS_DIR` (default: the target's tmp folder) so
//! that it can be kept in tests/fixtures/crashers/decode/.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use image::{DynamicImage, ImageFormat};
use proptest::prelude::*;
use tadsr_edge::image::io::{decode_bytes, InputLimits};
use tadsr_edge::Error;

mod fuzz_support;
use fuzz_support::{config, note_in_flight, save_crasher};

// ---------------------------------------------------------------------------
// Allocation accounting, per thread (tests run in parallel threads).
// ---------------------------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + size as isize;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - size as isize));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// bookkeeping touches only const-initialized thread-local cells.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            note_alloc(layout.size());
        }
        pointer
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            note_alloc(layout.size());
        }
        pointer
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        note_free(layout.size());
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            note_free(layout.size());
            note_alloc(new_size);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak extra bytes live and the
/// largest single allocation made on this thread meanwhile.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let start = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(start));
    LARGEST.with(|l| l.set(0));
    let result = f();
    let peak = PEAK.with(|p| p.get()) - start;
    (result, peak.max(0) as usize, LARGEST.with(|l| l.get()))
}

// ---------------------------------------------------------------------------
// Seeds and mutations
// ---------------------------------------------------------------------------

/// The limits the properties decode under: small, so that a header that
/// lies about its size is caught by them.
const LIMITS: InputLimits = InputLimits {
    max_side: 512,
    max_pixels: 512 * 512,
};

/// What any decode may allocate at most: the decoders' own budget
/// (`decoder_limits`: at least 64 MiB) and the conversions after it.
const ALLOCATION_BUDGET: usize = 96 << 20;

fn gradient(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgba16(image::ImageBuffer::from_fn(width, height, |x, y| {
        image::Rgba([
            (x * 4000) as u16,
            (y * 3000) as u16,
            ((x + y) * 1000) as u16,
            (65535 - x * 2000) as u16,
        ])
    }))
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .expect("seed encodes");
    bytes
}

/// `image` as `format` with the committed sRGB ICC profile embedded
/// (tests/fixtures/icc/srgb.icc), so that the mutations reach the decoders'
/// profile parsing and ours.
fn encode_with_profile(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    use image::codecs::{jpeg::JpegEncoder, png::PngEncoder, tiff::TiffEncoder, webp::WebPEncoder};
    use image::ImageEncoder;
    fn with(image: &DynamicImage, mut encoder: impl ImageEncoder) {
        encoder.set_icc_profile(srgb_profile()).unwrap();
        image.write_with_encoder(encoder).expect("seed encodes");
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    match format {
        ImageFormat::Png => with(image, PngEncoder::new(&mut bytes)),
        ImageFormat::Jpeg => with(image, JpegEncoder::new(&mut bytes)),
        ImageFormat::WebP => with(image, WebPEncoder::new_lossless(&mut bytes)),
        ImageFormat::Tiff => with(image, TiffEncoder::new(&mut bytes)),
        _ => unreachable!("no profile for {format:?}"),
    }
    bytes.into_inner()
}

fn srgb_profile() -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/icc/srgb.icc"))
        .unwrap()
}

/// How many of [`seeds`] (the last ones) hold an ICC profile.
const SEEDS_WITH_PROFILE: usize = 4;

/// Small valid files of every supported format and several pixel types.
fn seeds() -> Vec<Vec<u8>> {
    let image = gradient(13, 9);
    let rgb8 = DynamicImage::ImageRgb8(image.to_rgb8());
    let rgba8 = DynamicImage::ImageRgba8(image.to_rgba8());
    let gray = DynamicImage::ImageLuma8(image.to_luma8());
    let rgb16 = DynamicImage::ImageRgb16(image.to_rgb16());
    vec![
        encode(&rgb8, ImageFormat::Png),
        encode(&image, ImageFormat::Png),
        encode(&gray, ImageFormat::Png),
        encode(
            &DynamicImage::ImageRgb8(image::RgbImage::new(1, 1)),
            ImageFormat::Png,
        ),
        encode(&rgb8, ImageFormat::Jpeg),
        encode(&gray, ImageFormat::Jpeg),
        encode(&rgb8, ImageFormat::WebP),
        encode(&rgba8, ImageFormat::WebP),
        encode(&rgb8, ImageFormat::Bmp),
        encode(&rgba8, ImageFormat::Bmp),
        encode(&rgb8, ImageFormat::Tiff),
        encode(&rgb16, ImageFormat::Tiff),
        encode_with_profile(&rgb8, ImageFormat::Png),
        encode_with_profile(&rgb8, ImageFormat::Jpeg),
        encode_with_profile(&rgba8, ImageFormat::WebP),
        encode_with_profile(&rgb16, ImageFormat::Tiff),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        value: u8,
    },
    /// Overwrites 1, 2 or 4 bytes with a value that often breaks parsers.
    Interesting {
        at: usize,
        width: u8,
        value: u32,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Copies a slice of the file elsewhere in it (duplicated chunks).
    Splice {
        from: usize,
        to: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u32),
        Just(1),
        Just(0x7F),
        Just(0x80),
        Just(0xFF),
        Just(0xFFFF),
        Just(0x7FFF_FFFF),
        Just(0x8000_0000),
        Just(u32::MAX),
        any::<u32>(),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        (
            any::<usize>(),
            prop_oneof![Just(1u8), Just(2), Just(4)],
            interesting
        )
            .prop_map(|(at, width, value)| Mutation::Interesting { at, width, value }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(from, to, len)| Mutation::Splice {
            from,
            to,
            len
        }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match mutation {
        Mutation::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Set { at, value } => bytes[at % n] = *value,
        Mutation::Interesting { at, width, value } => {
            let at = at % n;
            let le = value.to_le_bytes();
            let be = value.to_be_bytes();
            // Half the time big-endian (PNG, JPEG), half little (BMP, WebP, TIFF II).
            let source: &[u8] = if at.is_multiple_of(2) {
                &be[4 - *width as usize..]
            } else {
                &le[..*width as usize]
            };
            for (i, b) in source.iter().enumerate() {
                if at + i < n {
                    bytes[at + i] = *b;
                }
            }
        }
        Mutation::Insert { at, bytes: new } => {
            let at = at % (n + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(n);
            bytes.drain(at..end);
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::Splice { from, to, len } => {
            let from = from % n;
            let end = (from + len).min(n);
            let chunk = bytes[from..end].to_vec();
            let to = to % (bytes.len() + 1);
            bytes.splice(to..to, chunk);
        }
    }
}

// ---------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------

/// Decodes `bytes` and checks every promise; returns why one was broken
/// (the input is then saved).
fn check_decode(bytes: &[u8]) -> Result<(), String> {
    note_in_flight("decode", "bin", bytes);
    check_decode_promises(bytes).map_err(|broken| {
        let saved = save_crasher("decode", "bin", bytes);
        format!("{broken} (input saved to {})", saved.display())
    })
}

fn check_decode_promises(bytes: &[u8]) -> Result<(), String> {
    let caught = std::panic::catch_unwind(|| measured(|| decode_bytes(bytes, &LIMITS)));
    let Ok((result, peak, largest)) = caught else {
        return Err("decoding panicked".to_string());
    };
    if peak > ALLOCATION_BUDGET || largest > ALLOCATION_BUDGET {
        return Err(format!(
            "decoding allocated {peak} bytes at the peak, {largest} at once, over {ALLOCATION_BUDGET}"
        ));
    }
    match result {
        Ok(decoded) => {
            let pixels = u64::from(decoded.image.width) * u64::from(decoded.image.height);
            if decoded.image.width == 0
                || decoded.image.height == 0
                || decoded.image.width.max(decoded.image.height) > LIMITS.max_side
                || pixels > LIMITS.max_pixels
            {
                return Err(format!(
                    "decoded {}x{}, outside the limits",
                    decoded.image.width, decoded.image.height
                ));
            }
            Ok(())
        }
        Err(Error::Input(message))
            if !message.is_empty() && !message.chars().any(char::is_control) =>
        {
            Ok(())
        }
        Err(other) => Err(format!("not a one-line input error: {other:?}")),
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn mutated_images_decode_or_fail_cleanly(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let seeds = seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if let Err(broken) = check_decode(&bytes) {
            prop_assert!(false, "{}", broken);
        }
    }

    #[test]
    fn arbitrary_bytes_behind_a_magic_number_decode_or_fail_cleanly(
        magic in prop_oneof![
            Just(b"\x89PNG\r\n\x1a\n".to_vec()),
            Just(b"\xFF\xD8\xFF".to_vec()),
            Just(b"RIFF\x20\x00\x00\x00WEBPVP8L".to_vec()),
            Just(b"RIFF\x20\x00\x00\x00WEBPVP8X".to_vec()),
            Just(b"BM".to_vec()),
            Just(b"II*\x00".to_vec()),
            Just(b"MM\x00*".to_vec()),
            Just(b"II+\x00".to_vec()),
            Just(Vec::new()),
        ],
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = magic;
        bytes.extend_from_slice(&tail);
        if let Err(broken) = check_decode(&bytes) {
            prop_assert!(false, "{}", broken);
        }
    }
}

#[test]
fn every_seed_decodes() {
    let seeds = seeds();
    for (index, seed) in seeds.iter().enumerate() {
        let decoded = decode_bytes(seed, &LIMITS).unwrap_or_else(|e| panic!("seed {index}: {e}"));
        let size = (decoded.image.width, decoded.image.height);
        assert!(size == (13, 9) || size == (1, 1), "seed {index}: {size:?}");
        let with_profile = index >= seeds.len() - SEEDS_WITH_PROFILE;
        assert_eq!(
            decoded.icc_profile,
            with_profile.then(srgb_profile),
            "seed {index}"
        );
    }
}

/// Every input a fuzz run found is kept here and must stay fixed.
#[test]
fn kept_crashers_stay_fixed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crashers/decode");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Err(broken) = check_decode(&bytes) {
            panic!("{}: {broken}", path.display());
        }
    }
}
