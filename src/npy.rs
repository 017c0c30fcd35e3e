//! Minimal `.npy` reading and writing: little-endian `float32`, `float16`,
//! `float64` and `uint8` arrays in C order, header versions 1.0, 2.0 and 3.0.
//! Everything is read into an `ndarray::ArrayD<f32>`.
//!
//! Hand-written, not `ndarray-npy`: its 0.10.0 (the release for ndarray
//! 0.17, read for this) has no float16 element type (no `half` support in
//! its source), and it reads one element type fixed at compile time, while
//! a `--prompt-embeds` file may be float16, float32 or float64 and is
//! checked by its header's shape before its data is read. Taking the crate
//! would keep a hand-written float16 path and header dispatch beside it.
//! Over 400 lines with its unit tests beside the code.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The header (magic, version, length, dict, padding) is padded to this multiple.
const HEADER_ALIGNMENT: usize = 64;

/// Errors from reading or writing `.npy` files.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an .npy file (bad magic)")]
    BadMagic,
    #[error("unsupported .npy format version {major}.{minor}")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("truncated .npy data: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("malformed .npy header: {0}")]
    BadHeader(String),
    #[error("unsupported dtype {0:?} (expected '<f4', '<f2', '<f8' or '|u1')")]
    UnsupportedDtype(String),
    #[error("Fortran-order arrays are not supported")]
    FortranOrder,
    #[error("shape {shape:?} holds more elements than any memory does")]
    TooLarge { shape: Vec<usize> },
    #[error("data holds {actual} bytes, shape {shape:?} of {dtype:?} needs {expected}")]
    DataSize {
        shape: Vec<usize>,
        dtype: NpyDtype,
        expected: usize,
        actual: usize,
    },
}

/// Element types this module reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    Float32,
    Float16,
    Float64,
    Uint8,
}

impl NpyDtype {
    fn from_descr(descr: &str) -> Result<Self, NpyError> {
        match descr {
            "<f4" => Ok(NpyDtype::Float32),
            "<f2" => Ok(NpyDtype::Float16),
            "<f8" => Ok(NpyDtype::Float64),
            "|u1" | "<u1" => Ok(NpyDtype::Uint8),
            other => Err(NpyError::UnsupportedDtype(other.to_string())),
        }
    }

    fn descr(self) -> &'static str {
        match self {
            NpyDtype::Float32 => "<f4",
            NpyDtype::Float16 => "<f2",
            NpyDtype::Float64 => "<f8",
            NpyDtype::Uint8 => "|u1",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::Float32 => 4,
            NpyDtype::Float16 => 2,
            NpyDtype::Float64 => 8,
            NpyDtype::Uint8 => 1,
        }
    }
}

/// What the header says about the array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
}

/// Reads an `.npy` file into `f32`.
pub fn read_npy(path: impl AsRef<Path>) -> Result<ArrayD<f32>, NpyError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes)
}

/// Parses `.npy` bytes into `f32`.
pub fn parse_npy(bytes: &[u8]) -> Result<ArrayD<f32>, NpyError> {
    let (header, data_offset) = parse_header(bytes)?;
    let data = &bytes[data_offset..];
    // a header's shape may claim more than any memory holds: never wrap
    let expected = header
        .shape
        .iter()
        .try_fold(header.dtype.size(), |bytes, &side| bytes.checked_mul(side));
    let Some(expected) = expected else {
        return Err(NpyError::TooLarge {
            shape: header.shape,
        });
    };
    if data.len() != expected {
        return Err(NpyError::DataSize {
            shape: header.shape,
            dtype: header.dtype,
            expected,
            actual: data.len(),
        });
    }
    let values = decode_values(data, header.dtype);
    Ok(ArrayD::from_shape_vec(IxDyn(&header.shape), values).expect("length checked above"))
}

fn decode_values(data: &[u8], dtype: NpyDtype) -> Vec<f32> {
    match dtype {
        NpyDtype::Float32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        NpyDtype::Float16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        NpyDtype::Float64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
            .collect(),
        NpyDtype::Uint8 => data.iter().map(|&v| f32::from(v)).collect(),
    }
}

/// Parses the magic, version and header dict; returns the header and where the data starts.
pub fn parse_header(bytes: &[u8]) -> Result<(NpyHeader, usize), NpyError> {
    let prefix = take(bytes, 0, 8)?;
    if &prefix[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (header_len, dict_start) = match major {
        1 => {
            let len = take(bytes, 8, 2)?;
            (usize::from(u16::from_le_bytes([len[0], len[1]])), 10)
        }
        2 | 3 => {
            let len = take(bytes, 8, 4)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
            (len as usize, 12)
        }
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let dict_bytes = take(bytes, dict_start, header_len)?;
    let dict = std::str::from_utf8(dict_bytes)
        .map_err(|_| NpyError::BadHeader("header is not UTF-8".into()))?;
    Ok((parse_header_dict(dict)?, dict_start + header_len))
}

fn take(bytes: &[u8], start: usize, len: usize) -> Result<&[u8], NpyError> {
    bytes.get(start..start + len).ok_or(NpyError::Truncated {
        needed: start + len,
        available: bytes.len(),
    })
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header_dict(dict: &str) -> Result<NpyHeader, NpyError> {
    let descr = dict_value(dict, "descr")?;
    let descr = descr
        .trim_start_matches(['\'', '"'])
        .split(['\'', '"'])
        .next()
        .unwrap_or_default();
    let dtype = NpyDtype::from_descr(descr)?;
    let fortran_order = dict_value(dict, "fortran_order")?;
    if fortran_order.starts_with("True") {
        return Err(NpyError::FortranOrder);
    }
    if !fortran_order.starts_with("False") {
        return Err(NpyError::BadHeader(format!(
            "fortran_order is {fortran_order:?}"
        )));
    }
    let shape = parse_shape(dict_value(dict, "shape")?)?;
    Ok(NpyHeader { dtype, shape })
}

/// The text right after `'key':`, leading spaces removed.
fn dict_value<'a>(dict: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let quoted_single = format!("'{key}'");
    let quoted_double = format!("\"{key}\"");
    let key_end = dict
        .find(&quoted_single)
        .map(|at| at + quoted_single.len())
        .or_else(|| dict.find(&quoted_double).map(|at| at + quoted_double.len()))
        .ok_or_else(|| NpyError::BadHeader(format!("no '{key}' key")))?;
    let rest = dict[key_end..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| NpyError::BadHeader(format!("no ':' after '{key}'")))?;
    Ok(rest.trim_start())
}

fn parse_shape(value: &str) -> Result<Vec<usize>, NpyError> {
    let inner = value
        .strip_prefix('(')
        .and_then(|rest| rest.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or_else(|| NpyError::BadHeader(format!("shape is not a tuple: {value:?}")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|dim| !dim.is_empty())
        .map(|dim| {
            dim.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| NpyError::BadHeader(format!("bad dimension {dim:?}")))
        })
        .collect()
}

/// The full header block (magic through padding) for `shape` and `dtype`.
fn header_bytes(shape: &[usize], dtype: NpyDtype) -> Vec<u8> {
    let shape_text = match shape {
        [single] => format!("({single},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        dtype.descr()
    );
    let fits_v1 = dict.len() + 11 < usize::from(u16::MAX);
    let prefix_len = if fits_v1 { 10 } else { 12 };
    let padded_len = (prefix_len + dict.len() + 1).div_ceil(HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
    let padding = padded_len - prefix_len - dict.len() - 1;
    dict.extend(std::iter::repeat_n(' ', padding));
    dict.push('\n');

    let mut header = Vec::with_capacity(padded_len);
    header.extend_from_slice(MAGIC);
    if fits_v1 {
        header.extend_from_slice(&[1, 0]);
        header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        header.extend_from_slice(&[2, 0]);
        header.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    header.extend_from_slice(dict.as_bytes());
    header
}

/// Encodes an array as `.npy` bytes with element type `dtype` (values are
/// converted; `Uint8` rounds and clamps to 0..=255).
pub fn encode_npy(array: &ArrayViewD<'_, f32>, dtype: NpyDtype) -> Vec<u8> {
    let mut bytes = header_bytes(array.shape(), dtype);
    bytes.reserve(array.len() * dtype.size());
    // `iter()` walks in logical C order whatever the memory layout.
    for &value in array.iter() {
        match dtype {
            NpyDtype::Float32 => bytes.extend_from_slice(&value.to_le_bytes()),
            NpyDtype::Float16 => bytes.extend_from_slice(&f16::from_f32(value).to_le_bytes()),
            NpyDtype::Float64 => bytes.extend_from_slice(&f64::from(value).to_le_bytes()),
            NpyDtype::Uint8 => bytes.push(value.round().clamp(0.0, 255.0) as u8),
        }
    }
    bytes
}

/// Writes an array to an `.npy` file with element type `dtype`.
pub fn write_npy(
    path: impl AsRef<Path>,
    array: &ArrayViewD<'_, f32>,
    dtype: NpyDtype,
) -> Result<(), NpyError> {
    let path = path.as_ref();
    let io_error = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::create(path).map_err(io_error)?;
    file.write_all(&encode_npy(array, dtype)).map_err(io_error)
}

/// Writes a `float32` `.npy` file.
pub fn write_npy_f32(path: impl AsRef<Path>, array: &ArrayViewD<'_, f32>) -> Result<(), NpyError> {
    write_npy(path, array, NpyDtype::Float32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_shape_whose_size_wraps_is_refused_not_a_panic() {
        // 2^62 + 16 floats: 4 bytes each wrap to 64 bytes, which are there
        let header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
            (1u64 << 62) + 16
        );
        let header = format!("{header:<118}\n");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 64]);
        let error = parse_npy(&bytes).unwrap_err();
        assert!(matches!(error, NpyError::TooLarge { .. }), "{error}");
    }

    use super::*;
    use ndarray::{Array, Array2, ShapeBuilder};

    /// Bytes numpy 2.x writes for `np.save(f, np.arange(6, dtype='<f4').reshape(2, 3))`.
    fn numpy_f32_2x3() -> Vec<u8> {
        let mut bytes = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }".to_string();
        dict.extend(std::iter::repeat_n(' ', 118 - dict.len() - 1));
        dict.push('\n');
        bytes.extend_from_slice(dict.as_bytes());
        for value in 0..6 {
            bytes.extend_from_slice(&(value as f32).to_le_bytes());
        }
        bytes
    }

    /// [`numpy_f32_2x3`] with header text `from` replaced by `to` (same length).
    fn with_header_text_replaced(from: &str, to: &str) -> Vec<u8> {
        let mut bytes = numpy_f32_2x3();
        let header = std::str::from_utf8(&bytes[10..128]).unwrap();
        let at = 10 + header.find(from).unwrap();
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        bytes
    }

    #[test]
    fn reads_numpy_bytes() {
        let array = parse_npy(&numpy_f32_2x3()).unwrap();
        assert_eq!(array.shape(), &[2, 3]);
        assert_eq!(array[[1, 2]], 5.0);
    }

    #[test]
    fn round_trips_every_dtype() {
        let array = Array::from_shape_fn((2, 3, 4), |(a, b, c)| (a * 12 + b * 4 + c) as f32 * 0.5)
            .into_dyn();
        for dtype in [
            NpyDtype::Float32,
            NpyDtype::Float16,
            NpyDtype::Float64,
            NpyDtype::Uint8,
        ] {
            let bytes = encode_npy(&array.view(), dtype);
            let (header, data_offset) = parse_header(&bytes).unwrap();
            assert_eq!(data_offset % HEADER_ALIGNMENT, 0);
            assert_eq!(header.dtype, dtype);
            let back = parse_npy(&bytes).unwrap();
            assert_eq!(back.shape(), array.shape());
            let tolerance = if dtype == NpyDtype::Uint8 { 0.5 } else { 0.0 };
            for (a, b) in array.iter().zip(back.iter()) {
                assert!((a - b).abs() <= tolerance, "{dtype:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn scalar_and_vector_shapes() {
        let vector = Array::from_vec(vec![1.0f32, 2.0, 3.0]).into_dyn();
        let bytes = encode_npy(&vector.view(), NpyDtype::Float32);
        assert!(std::str::from_utf8(&bytes[10..64])
            .unwrap()
            .contains("(3,)"));
        assert_eq!(parse_npy(&bytes).unwrap(), vector);
        let scalar = ArrayD::from_elem(IxDyn(&[]), 7.5f32);
        let back = parse_npy(&encode_npy(&scalar.view(), NpyDtype::Float32)).unwrap();
        assert_eq!(back.ndim(), 0);
        assert_eq!(back[IxDyn(&[])], 7.5);
    }

    #[test]
    fn writes_logical_order_for_transposed_views() {
        let array = Array2::from_shape_vec((2, 3).f(), vec![0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0])
            .unwrap()
            .into_dyn();
        let back = parse_npy(&encode_npy(&array.view(), NpyDtype::Float32)).unwrap();
        assert_eq!(back.as_slice().unwrap(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn reads_version_two_headers() {
        let v1 = numpy_f32_2x3();
        let dict = &v1[10..10 + 118];
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        v2.extend_from_slice(dict);
        v2.extend_from_slice(&v1[128..]);
        assert_eq!(parse_npy(&v2).unwrap(), parse_npy(&v1).unwrap());
    }

    #[test]
    fn typed_errors() {
        assert!(matches!(
            parse_npy(b"NUMPY"),
            Err(NpyError::Truncated { .. })
        ));
        assert!(matches!(
            parse_npy(b"\x93NUMPX\x01\x00\x00\x00"),
            Err(NpyError::BadMagic)
        ));
        let mut bytes = numpy_f32_2x3();
        bytes[6] = 9;
        assert!(matches!(
            parse_npy(&bytes),
            Err(NpyError::UnsupportedVersion { major: 9, .. })
        ));
        let fortran = with_header_text_replaced("False", "True ");
        assert!(matches!(parse_npy(&fortran), Err(NpyError::FortranOrder)));
        let big_endian = with_header_text_replaced("<f4", ">f4");
        assert!(matches!(
            parse_npy(&big_endian),
            Err(NpyError::UnsupportedDtype(_))
        ));
        let mut short = numpy_f32_2x3();
        short.pop();
        assert!(matches!(parse_npy(&short), Err(NpyError::DataSize { .. })));
        assert!(matches!(
            read_npy("/nonexistent/file.npy"),
            Err(NpyError::Io { .. })
        ));
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("values.npy");
        let array = Array::from_shape_fn((3, 5), |(r, c)| (r * 5 + c) as f32 - 2.25).into_dyn();
        write_npy_f32(&path, &array.view()).unwrap();
        assert_eq!(read_npy(&path).unwrap(), array);
    }
}
