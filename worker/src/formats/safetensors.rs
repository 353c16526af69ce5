//! safetensors reader (the Hugging Face weight format), bounds-checked everywhere, and a
//! [`TensorSource`] over it.
//!
//! Layout: an 8-byte little-endian header length `n`, then `n` bytes of UTF-8 JSON
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then the
//! data section; `data_offsets` are relative to the data section's start. Tensors are row-major
//! with the last dimension contiguous, so a PyTorch `Linear` weight `[out, in]` is `out` rows of
//! `in` values: exactly a [`WeightMatrix`] with `rows = out, cols = in` (no transposition).
//!
//! The reader works on [`SharedBytes`] (memory-mapped natively by [`SafetensorsFile::open`], a
//! downloaded buffer in the browser) and checks the header length, every offset and every byte
//! count against it, so a truncated or corrupted file is a [`WorkerError::ModelFormat`], never a
//! panic or an out-of-bounds read. A dtype this engine cannot compute with (I64 `position_ids`,
//! F64, …) is accepted by the parser and refused only when a model asks for that tensor.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::models::TensorSource;
use crate::quant::StorageType;
use crate::tensor::{SharedBytes, WeightMatrix};
use crate::WorkerError;

const FORMAT: &str = "safetensors";
/// The reference implementation's limit; a header larger than this is corruption, not a model.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes per element of the dtypes the safetensors spec defines (None: unknown to this reader,
/// whose byte length cannot be checked).
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// One tensor's header entry, validated: `byte_len` bytes at absolute `offset` in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub byte_len: usize,
}

/// The header entry as written; validated into [`TensorInfo`].
#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A parsed safetensors file: the tensor table, the free-form metadata and the bytes.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    pub source_name: String,
    pub metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, TensorInfo>,
    bytes: SharedBytes,
}

impl SafetensorsFile {
    /// Parses and bounds-checks the header of `bytes`; `source_name` appears in errors.
    pub fn parse(bytes: SharedBytes, source_name: &str) -> Result<Self, WorkerError> {
        let bad = |reason: String| WorkerError::ModelFormat { source_name: source_name.to_owned(), format: FORMAT, reason };
        let len_bytes: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(format!("truncated header: the file has {} bytes, fewer than the 8-byte header length", bytes.len())))?;
        let header_len = u64::from_le_bytes(len_bytes);
        let available = bytes.len() as u64 - 8;
        if header_len > available {
            return Err(bad(format!("the header length {header_len} runs past the end of the file ({available} bytes follow it)")));
        }
        if header_len > MAX_HEADER_BYTES {
            return Err(bad(format!("the header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit")));
        }
        // header_len <= bytes.len() - 8, so both conversions and the slice are in range.
        let data_start = 8 + header_len as usize;
        let header = &bytes[8..data_start];
        let data_len = bytes.len() - data_start;

        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
        let mut metadata = BTreeMap::new();
        let mut tensors = BTreeMap::new();
        for (name, value) in entries {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value).map_err(|e| bad(format!("__metadata__ is not a map of strings: {e}")))?;
                continue;
            }
            let raw: RawTensor = serde_json::from_value(value).map_err(|e| bad(format!("tensor {name}: malformed entry: {e}")))?;
            let info = validate(raw, data_start, data_len).map_err(|reason| bad(format!("tensor {name}: {reason}")))?;
            tensors.insert(name, info);
        }
        Ok(SafetensorsFile { source_name: source_name.to_owned(), metadata, tensors, bytes })
    }

    /// Memory-maps and parses the file at `path` (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self, WorkerError> {
        let io = |e: std::io::Error| WorkerError::Io { path: path.display().to_string(), reason: e.to_string() };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lives as long as the Arc inside SharedBytes. As with
        // any mmap, another process truncating or rewriting the file while it is mapped would
        // change the bytes under us (or fault); model files are written once and then only read,
        // and mapping them is what lets a 90 MB model load without copying it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        SafetensorsFile::parse(SharedBytes::new(std::sync::Arc::new(map)), &path.display().to_string())
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// A tensor's values in a type the kernels read: F32 and F16 as stored (a view, no copy),
    /// BF16 widened to an owned f32 buffer (there is no bf16 storage type; widening is exact).
    pub fn tensor_data(&self, name: &str, info: &TensorInfo) -> Result<(StorageType, SharedBytes), WorkerError> {
        let stored = self.bytes.slice(info.offset, info.byte_len).ok_or_else(|| WorkerError::ModelFormat {
            source_name: self.source_name.clone(),
            format: FORMAT,
            reason: format!("tensor {name} lies outside the buffer"),
        })?;
        match info.dtype.as_str() {
            "F32" => Ok((StorageType::F32, stored)),
            "F16" => Ok((StorageType::F16, stored)),
            "BF16" => Ok((StorageType::F32, SharedBytes::from_vec(bf16_to_f32_bytes(&stored)))),
            other => Err(WorkerError::UnsupportedTensorType { tensor: name.to_owned(), type_name: other.to_owned() }),
        }
    }
}

/// Checks one entry against the data section (`data_len` bytes from `data_start`).
fn validate(raw: RawTensor, data_start: usize, data_len: usize) -> Result<TensorInfo, String> {
    let [begin, end] = raw.data_offsets;
    if begin > end {
        return Err(format!("data_offsets [{begin}, {end}] end before they begin"));
    }
    if end > data_len as u64 {
        return Err(format!("data_offsets [{begin}, {end}] run past the data section ({data_len} bytes)"));
    }
    // end <= data_len, a usize, so neither conversion below can fail.
    let (begin, end) = (begin as usize, end as usize);
    let shape = raw
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} is too large for this platform")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(size) = dtype_size(&raw.dtype) {
        let expected = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        if expected != Some(end - begin) {
            let want = expected.map_or("more than usize::MAX".to_owned(), |e| e.to_string());
            return Err(format!("shape {shape:?} of {} needs {want} bytes but data_offsets [{begin}, {end}] hold {}", raw.dtype, end - begin));
        }
    }
    Ok(TensorInfo { dtype: raw.dtype, shape, offset: data_start + begin, byte_len: end - begin })
}

/// Little-endian bf16 (the top half of an f32) → little-endian f32 bytes.
fn bf16_to_f32_bytes(bytes: &[u8]) -> Vec<u8> {
    bytes.chunks_exact(2).flat_map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16).to_le_bytes()).collect()
}

/// [`TensorSource`] over a safetensors file. Names are looked up as given, then with each
/// alternative prefix (`bert.` for BERT checkpoints saved from `BertForMaskedLM` & co., whose
/// encoder tensors are `bert.embeddings.…`; sentence-transformers' MiniLM has no prefix).
#[derive(Debug, Clone)]
pub struct SafetensorsSource {
    pub file: SafetensorsFile,
    /// Architecture name, for error messages.
    pub architecture: String,
    pub prefixes: Vec<String>,
}

impl SafetensorsSource {
    pub fn new(file: SafetensorsFile, architecture: &str) -> Self {
        SafetensorsSource { file, architecture: architecture.to_owned(), prefixes: Vec::new() }
    }

    /// Also accept every name with `prefix` in front of it.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefixes.push(prefix.to_owned());
        self
    }

    /// The stored name and entry `name` resolves to.
    fn resolve(&self, name: &str) -> Option<(String, &TensorInfo)> {
        if let Some(info) = self.file.tensor(name) {
            return Some((name.to_owned(), info));
        }
        self.prefixes.iter().map(|p| format!("{p}{name}")).find_map(|n| self.file.tensor(&n).map(|info| (n, info)))
    }

    /// The entry for `name` with exactly `expected` shape, as kernel-ready bytes.
    fn checked(&self, name: &str, expected: &[usize]) -> Result<(String, StorageType, SharedBytes), WorkerError> {
        let (stored, info) = self
            .resolve(name)
            .ok_or_else(|| WorkerError::MissingTensor { tensor: name.to_owned(), architecture: self.architecture.clone() })?;
        if info.shape != expected {
            return Err(WorkerError::ShapeMismatch { tensor: stored, expected: expected.to_vec(), found: info.shape.clone() });
        }
        let (ty, bytes) = self.file.tensor_data(&stored, info)?;
        Ok((stored, ty, bytes))
    }
}

impl TensorSource for SafetensorsSource {
    /// `[rows, cols]` as stored (PyTorch `[out, in]`).
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError> {
        let (stored, ty, bytes) = self.checked(name, &[rows, cols])?;
        WeightMatrix::new(&stored, ty, rows, cols, bytes)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WorkerError> {
        let (stored, ty, bytes) = self.checked(name, &[len])?;
        WeightMatrix::vector(&stored, ty, len, bytes)
    }

    fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a safetensors file from (name, dtype, shape, bytes), packed in order.
    pub fn build(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.len();
            data.extend_from_slice(bytes);
            header.insert((*name).into(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}));
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.extend_from_slice(&data);
        file
    }

    pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn parse(bytes: Vec<u8>) -> Result<SafetensorsFile, WorkerError> {
        SafetensorsFile::parse(SharedBytes::from_vec(bytes), "test")
    }

    #[test]
    fn reads_f32_f16_bf16_and_metadata() {
        let f16: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let bf16: Vec<u8> = [0.15625f32, -3.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let file = parse(build(&[
            ("w", "F32", &[2, 3], f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("h", "F16", &[2], f16),
            ("b", "BF16", &[2], bf16),
            ("ids", "I64", &[1, 2], vec![0; 16]),
        ]))
        .unwrap();
        assert_eq!(file.metadata.get("format").map(String::as_str), Some("pt"));
        let src = SafetensorsSource::new(file, "test");
        let w = src.matrix("w", 2, 3).unwrap();
        let mut row = [0.0; 3];
        w.dequantize_row(1, &mut row);
        assert_eq!(row, [4.0, 5.0, 6.0]);
        assert_eq!(src.vector("h", 2).unwrap(), [1.5, -2.0]);
        assert_eq!(src.vector("b", 2).unwrap(), [0.15625, -3.0]);
        assert_eq!(src.vector("ids", 2).unwrap_err().name(), "ShapeMismatchError");
        assert_eq!(src.matrix("ids", 1, 2).unwrap_err().name(), "UnsupportedTensorTypeError");
        assert_eq!(src.matrix("w", 3, 2).unwrap_err().name(), "ShapeMismatchError");
        assert_eq!(src.vector("nope", 2).unwrap_err().name(), "MissingTensorError");
    }

    #[test]
    fn prefixed_names_resolve() {
        let file = parse(build(&[("bert.x", "F32", &[1], f32_bytes(&[7.0]))])).unwrap();
        let plain = SafetensorsSource::new(file.clone(), "bert");
        assert!(!plain.contains("x"));
        let src = SafetensorsSource::new(file, "bert").with_prefix("bert.");
        assert!(src.contains("x") && src.contains("bert.x"));
        assert_eq!(src.vector("x", 1).unwrap(), [7.0]);
    }

    #[test]
    fn corrupt_files_are_named_errors() {
        let good = build(&[("w", "F32", &[2], f32_bytes(&[1.0, 2.0]))]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short length", vec![1, 0, 0]),
            ("length past end", {
                let mut b = good.clone();
                b[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
                b
            }),
            ("huge length", {
                let mut b = good.clone();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            }),
            ("data truncated", good[..good.len() - 1].to_vec()),
            ("not json", {
                let mut b = 4u64.to_le_bytes().to_vec();
                b.extend_from_slice(b"nope");
                b
            }),
        ];
        for (what, bytes) in cases {
            let err = parse(bytes).unwrap_err();
            assert_eq!(err.name(), "ModelFormatError", "{what}: {err}");
        }
    }

    #[test]
    fn offsets_and_sizes_are_checked() {
        let header = |entry: &str| {
            let json = format!("{{\"w\": {entry}}}");
            let mut b = (json.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(json.as_bytes());
            b.extend_from_slice(&[0; 8]);
            b
        };
        for entry in [
            r#"{"dtype": "F32", "shape": [2], "data_offsets": [4, 0]}"#,
            r#"{"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}"#,
            r#"{"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}"#,
            r#"{"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}"#,
            r#"{"dtype": "F32", "shape": [2]}"#,
        ] {
            let err = parse(header(entry)).unwrap_err();
            assert_eq!(err.name(), "ModelFormatError", "{entry}: {err}");
        }
        // An unknown dtype parses (its size is unknowable) but is refused on use.
        let file = parse(header(r#"{"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}"#)).unwrap();
        let err = SafetensorsSource::new(file, "t").vector("w", 2).unwrap_err();
        assert_eq!(err.name(), "UnsupportedTensorTypeError");
    }
}
