//! GGUF v2/v3 reader (the llama.cpp file format), bounds-checked everywhere.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64, the
//! metadata key/value pairs, the tensor infos (name, dims, ggml type, offset relative to the
//! data section), then padding to `general.alignment` (default 32) and the tensor data.
//! `dims[0]` is the contiguous dimension: a `[576, 1536]` tensor is 1536 rows of 576 values.
//!
//! The reader works on a byte slice (memory-mapped natively, a downloaded buffer in the
//! browser) and checks every length, count and offset against it, so a truncated or corrupted
//! file is a [`WorkerError::ModelFormat`], never a panic or an absurd allocation.

use std::collections::BTreeMap;

use crate::WorkerError;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// A metadata value, with every GGUF value type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// Any integer type that fits, as u64 (GGUF writers disagree on u32 vs i32 vs u64).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetadataValue::I8(v) => Some(v.into()),
            MetadataValue::I16(v) => Some(v.into()),
            MetadataValue::I32(v) => Some(v.into()),
            MetadataValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The ggml tensor types, with their block geometry. Ids are ggml's `enum ggml_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    I64,
    F64,
    Bf16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => Bf16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block).
    pub fn block_geometry(self) -> (u64, u64) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | Bf16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
        }
    }

    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            Bf16 => "BF16",
        }
    }
}

/// One tensor's entry in the table: where its bytes are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is contiguous.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute offset of the first byte in the file.
    pub offset: usize,
    pub byte_len: usize,
}

impl TensorInfo {
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header. Tensor bytes stay in the caller's buffer: `bytes[t.offset..][..t.byte_len]`.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, MetadataValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: usize,
}

impl GgufFile {
    /// Parses the header of `bytes` and checks every tensor's range lies inside it.
    /// `source_name` (a path or URL) only labels errors.
    pub fn parse(bytes: &[u8], source_name: &str) -> Result<Self, WorkerError> {
        let mut r = Reader { bytes, pos: 0, source_name };
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            return Err(r.error(format!("wrong magic {magic:02x?} (expected \"GGUF\"); this is not a GGUF file")));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(r.error(format!("GGUF version {version} is not supported (only 2 and 3)")));
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;
        // Each entry needs at least 8+4 bytes (key length + type); refuse absurd counts before
        // allocating for them.
        r.check_count(kv_count, 12, "metadata entries")?;
        r.check_count(tensor_count, 8 + 4 + 4 + 8, "tensor infos")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string("metadata key")?;
            let value_type = r.u32("metadata value type")?;
            let value = r.value(value_type, &key, 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => return Err(r.error(format!("general.alignment = {v:?} is not a power of two"))),
            },
        };

        let mut raw = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = r.string("tensor name")?;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.error(format!("tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let dims = (0..n_dims).map(|_| r.u64("tensor dimension")).collect::<Result<Vec<_>, _>>()?;
            let type_id = r.u32("tensor type")?;
            let ggml_type = GgmlType::from_id(type_id)
                .ok_or_else(|| WorkerError::UnsupportedTensorType { tensor: name.clone(), type_name: format!("ggml type id {type_id}") })?;
            let offset = r.u64("tensor offset")?;
            raw.push((name, dims, ggml_type, offset));
        }

        let data_offset = align_up(r.pos as u64, alignment).ok_or_else(|| r.error("data offset overflows".into()))?;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, ggml_type, offset) in raw {
            let byte_len = tensor_byte_len(&name, &dims, ggml_type).map_err(|reason| r.error(reason))?;
            if offset % alignment != 0 {
                return Err(r.error(format!("tensor {name} offset {offset} is not a multiple of the alignment {alignment}")));
            }
            let start = data_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(byte_len));
            match (start, end) {
                (Some(start), Some(end)) if end <= bytes.len() as u64 => tensors.push(TensorInfo {
                    name,
                    dims,
                    ggml_type,
                    offset: start as usize,
                    byte_len: byte_len as usize,
                }),
                _ => {
                    return Err(r.error(format!(
                        "tensor {name} data (offset {offset}, {byte_len} bytes after the data section at {data_offset}) lies outside the file's {} bytes; the file is truncated or corrupted",
                        bytes.len()
                    )))
                }
            }
        }
        Ok(GgufFile { version, metadata, tensors, alignment, data_offset: data_offset as usize })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    /// The string at `key`, or a [`WorkerError::Metadata`] naming the key.
    pub fn require_str(&self, key: &str) -> Result<&str, WorkerError> {
        self.get(key).and_then(MetadataValue::as_str).ok_or_else(|| missing(key, "a string"))
    }

    pub fn require_u64(&self, key: &str) -> Result<u64, WorkerError> {
        self.get(key).and_then(MetadataValue::as_u64).ok_or_else(|| missing(key, "an unsigned integer"))
    }

    pub fn require_f64(&self, key: &str) -> Result<f64, WorkerError> {
        self.get(key).and_then(MetadataValue::as_f64).ok_or_else(|| missing(key, "a number"))
    }

    /// The array of strings at `key` (e.g. `tokenizer.ggml.tokens`).
    pub fn require_str_array(&self, key: &str) -> Result<Vec<&str>, WorkerError> {
        let items = self.get(key).and_then(MetadataValue::as_array).ok_or_else(|| missing(key, "an array of strings"))?;
        items.iter().map(|v| v.as_str().ok_or_else(|| missing(key, "an array of strings"))).collect()
    }
}

fn missing(key: &str, what: &str) -> WorkerError {
    WorkerError::Metadata { key: key.to_owned(), reason: format!("expected {what}") }
}

fn align_up(value: u64, alignment: u64) -> Option<u64> {
    value.checked_add(alignment - 1).map(|v| v / alignment * alignment)
}

fn tensor_byte_len(name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<u64, String> {
    let (block_elems, block_bytes) = ggml_type.block_geometry();
    let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(|| format!("tensor {name} dims {dims:?} overflow"))?;
    if dims[0] % block_elems != 0 {
        return Err(format!("tensor {name} row length {} is not a multiple of the {} block size {block_elems}", dims[0], ggml_type.name()));
    }
    (elements / block_elems).checked_mul(block_bytes).ok_or_else(|| format!("tensor {name} size overflows"))
}

/// A cursor over the file that turns every short read into a named error.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    source_name: &'a str,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: String) -> WorkerError {
        WorkerError::ModelFormat { source_name: self.source_name.to_owned(), format: "GGUF", reason }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WorkerError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(self.error(format!("truncated: needed {n} bytes for the {what} at byte {}, but the file has {}", self.pos, self.bytes.len()))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WorkerError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, WorkerError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, WorkerError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Refuses a count that could not possibly fit in the rest of the file.
    fn check_count(&self, count: u64, min_bytes_each: u64, what: &str) -> Result<(), WorkerError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if count.saturating_mul(min_bytes_each) > remaining {
            return Err(self.error(format!("truncated or corrupted: {count} {what} cannot fit in the remaining {remaining} bytes")));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, WorkerError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).map_err(|_| self.error(format!("{what} length {len} is absurd")))?;
        let start = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error(format!("{what} at byte {start} is not valid UTF-8")))
    }

    fn value(&mut self, value_type: u32, key: &str, depth: u32) -> Result<MetadataValue, WorkerError> {
        use MetadataValue as V;
        Ok(match value_type {
            0 => V::U8(self.array::<1>(key)?[0]),
            1 => V::I8(self.array::<1>(key)?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.array(key)?)),
            3 => V::I16(i16::from_le_bytes(self.array(key)?)),
            4 => V::U32(self.u32(key)?),
            5 => V::I32(i32::from_le_bytes(self.array(key)?)),
            6 => V::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(self.error(format!("metadata {key}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => V::String(self.string(key)?),
            9 => {
                if depth > 0 {
                    // ggml's writer never nests arrays; refusing keeps recursion bounded.
                    return Err(self.error(format!("metadata {key}: nested arrays are not supported")));
                }
                let item_type = self.u32(key)?;
                let count = self.u64(key)?;
                let min_size = match item_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => 1,
                };
                self.check_count(count, min_size, &format!("items of array {key}"))?;
                let items = (0..count).map(|_| self.value(item_type, key, depth + 1)).collect::<Result<Vec<_>, _>>()?;
                V::Array(items)
            }
            10 => V::U64(self.u64(key)?),
            11 => V::I64(i64::from_le_bytes(self.array(key)?)),
            12 => V::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.error(format!("metadata {key} has unknown value type {other}"))),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes GGUF files for tests: metadata and tensors with real layout and padding.
    #[derive(Default)]
    pub struct GgufBuilder {
        kvs: Vec<(String, u32, Vec<u8>)>,
        tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    fn string_bytes(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    impl GgufBuilder {
        pub fn kv_u32(mut self, key: &str, v: u32) -> Self {
            self.kvs.push((key.into(), 4, v.to_le_bytes().to_vec()));
            self
        }
        pub fn kv_f32(mut self, key: &str, v: f32) -> Self {
            self.kvs.push((key.into(), 6, v.to_le_bytes().to_vec()));
            self
        }
        pub fn kv_str(mut self, key: &str, v: &str) -> Self {
            self.kvs.push((key.into(), 8, string_bytes(v)));
            self
        }
        pub fn kv_raw(mut self, key: &str, value_type: u32, bytes: Vec<u8>) -> Self {
            self.kvs.push((key.into(), value_type, bytes));
            self
        }
        pub fn kv_str_array(mut self, key: &str, items: &[&str]) -> Self {
            let mut bytes = 8u32.to_le_bytes().to_vec();
            bytes.extend((items.len() as u64).to_le_bytes());
            for item in items {
                bytes.extend(string_bytes(item));
            }
            self.kvs.push((key.into(), 9, bytes));
            self
        }
        pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
            self.tensors.push((name.into(), dims.to_vec(), type_id, data));
            self
        }
        pub fn build(self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend((self.kvs.len() as u64).to_le_bytes());
            for (key, ty, bytes) in &self.kvs {
                out.extend(string_bytes(key));
                out.extend(ty.to_le_bytes());
                out.extend(bytes);
            }
            let mut offset = 0u64;
            let mut offsets = vec![];
            for (name, dims, ty, data) in &self.tensors {
                out.extend(string_bytes(name));
                out.extend((dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend(d.to_le_bytes());
                }
                out.extend(ty.to_le_bytes());
                out.extend(offset.to_le_bytes());
                offsets.push(offset);
                offset = align_up(offset + data.len() as u64, 32).unwrap();
            }
            out.resize(align_up(out.len() as u64, 32).unwrap() as usize, 0);
            let data_start = out.len();
            for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
                out.resize(data_start + off as usize, 0);
                out.extend(data);
            }
            out
        }
    }

    fn sample() -> Vec<u8> {
        let floats: Vec<u8> = (0..64).flat_map(|i| (i as f32).to_le_bytes()).collect();
        GgufBuilder::default()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 2)
            .kv_f32("llama.rope.freq_base", 10000.0)
            .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "<s>"])
            .kv_raw("flag", 7, vec![1])
            .kv_raw("neg", 11, (-5i64).to_le_bytes().to_vec())
            .tensor("w", &[32, 2], 0, floats)
            .tensor("v", &[4], 0, vec![0; 16])
            .build()
    }

    fn format_error(bytes: &[u8]) -> String {
        match GgufFile::parse(bytes, "test.gguf") {
            Err(e @ WorkerError::ModelFormat { .. }) => e.to_string(),
            other => panic!("expected ModelFormatError, got {other:?}"),
        }
    }

    #[test]
    fn parses_metadata_of_every_kind_and_tensor_table() {
        let bytes = sample();
        let file = GgufFile::parse(&bytes, "t").unwrap();
        assert_eq!(file.version, 3);
        assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
        assert_eq!(file.require_u64("llama.block_count").unwrap(), 2);
        assert_eq!(file.require_f64("llama.rope.freq_base").unwrap(), 10000.0);
        assert_eq!(file.require_str_array("tokenizer.ggml.tokens").unwrap(), vec!["a", "b", "<s>"]);
        assert_eq!(file.get("flag").and_then(MetadataValue::as_bool), Some(true));
        assert_eq!(file.get("neg").and_then(MetadataValue::as_i64), Some(-5));
        let w = file.tensor("w").unwrap();
        assert_eq!((w.dims.clone(), w.ggml_type, w.byte_len), (vec![32, 2], GgmlType::F32, 256));
        assert_eq!(w.offset % 32, 0);
        assert_eq!(&bytes[w.offset..w.offset + 8], &[0, 0, 0, 0, 0, 0, 128, 63]); // 0.0, 1.0
        let v = file.tensor("v").unwrap();
        assert_eq!(v.offset, w.offset + 256);
    }

    #[test]
    fn wrong_magic_is_named() {
        let mut bytes = sample();
        bytes[0] = b'X';
        assert!(format_error(&bytes).contains("wrong magic"));
    }

    #[test]
    fn truncated_header_is_named_at_every_cut() {
        let bytes = sample();
        let file = GgufFile::parse(&bytes, "t").unwrap();
        for cut in (0..file.data_offset).step_by(7) {
            let msg = format_error(&bytes[..cut]);
            assert!(msg.contains("truncated") || msg.contains("outside the file"), "cut at {cut}: {msg}");
        }
    }

    #[test]
    fn truncated_tensor_data_is_named() {
        let bytes = sample();
        let msg = format_error(&bytes[..bytes.len() - 1]);
        assert!(msg.contains("tensor v data") && msg.contains("outside the file"), "{msg}");
    }

    #[test]
    fn tensor_offset_out_of_bounds_is_named() {
        let bytes = GgufBuilder::default().tensor("w", &[4], 0, vec![0; 16]).build();
        let file = GgufFile::parse(&bytes, "t").unwrap();
        // Find w's tensor info (name, 1 dim of 4, then type and offset) and move its offset to 1 GiB.
        let needle = [b'w', 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len() + 4;
        let mut bad = bytes.clone();
        bad[at..at + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
        assert!(format_error(&bad).contains("outside the file"));
        assert_eq!(file.tensors.len(), 1);
    }

    #[test]
    fn unknown_tensor_type_is_named() {
        let bytes = GgufBuilder::default().tensor("w", &[4], 99, vec![0; 16]).build();
        let err = GgufFile::parse(&bytes, "t").unwrap_err();
        assert_eq!(err.name(), "UnsupportedTensorTypeError", "{err}");
    }

    #[test]
    fn absurd_counts_do_not_allocate() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes());
        assert!(format_error(&bytes).contains("cannot fit"));
        let huge_array = GgufBuilder::default().kv_raw("a", 9, [8u32.to_le_bytes().as_slice(), &u64::MAX.to_le_bytes()].concat()).build();
        assert!(format_error(&huge_array).contains("cannot fit"));
    }

    #[test]
    fn bad_version_and_bad_bool_are_named() {
        let mut bytes = sample();
        bytes[4] = 9;
        assert!(format_error(&bytes).contains("version 9"));
        let bad_bool = GgufBuilder::default().kv_raw("b", 7, vec![7]).build();
        assert!(format_error(&bad_bool).contains("bool byte 7"));
    }
}
