//! [`TensorSource`] over a parsed GGUF file and its bytes.

use super::TensorSource;
use crate::formats::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::quant::ggml_import::dequantize_ggml;
use crate::quant::StorageType;
use crate::tensor::{SharedBytes, WeightMatrix};
use crate::WorkerError;

pub struct GgufSource<'a> {
    pub file: &'a GgufFile,
    pub bytes: SharedBytes,
    /// Architecture name, for error messages.
    pub architecture: String,
    /// Packing only: tensors in GGUF types the engine does not run (K-quants, Q5_x, BF16) are
    /// dequantized to f32 instead of refused, so the packer can requantize them. Each such
    /// tensor is noted here with the storage type of about the same size (`keep` uses it).
    pub imported: Option<std::cell::RefCell<Vec<(String, StorageType)>>>,
}

impl<'a> GgufSource<'a> {
    pub fn new(file: &'a GgufFile, bytes: SharedBytes, architecture: &str) -> Self {
        GgufSource { file, bytes, architecture: architecture.to_owned(), imported: None }
    }

    /// A source that imports foreign tensor types (see [`GgufSource::imported`]).
    pub fn importing(file: &'a GgufFile, bytes: SharedBytes, architecture: &str) -> Self {
        GgufSource { imported: Some(Default::default()), ..GgufSource::new(file, bytes, architecture) }
    }
}

/// The storage type closest in size to a GGUF type (what `keep` turns an imported tensor into):
/// 5 bits or more → Q8_0, 4 → Q4_1, 3 → Q3, 2 → Q2; BF16 → F32 (exact).
fn nearest_storage(ty: GgmlType) -> StorageType {
    let (elems, bytes) = ty.block_geometry();
    match (ty, 8.0 * bytes as f64 / elems as f64) {
        (GgmlType::Bf16, _) => StorageType::F32,
        (_, bits) if bits >= 5.0 => StorageType::Q8_0,
        (_, bits) if bits >= 4.0 => StorageType::Q4_1,
        (_, bits) if bits >= 3.0 => StorageType::Q3,
        _ => StorageType::Q2,
    }
}

impl GgufSource<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, WorkerError> {
        self.file.tensor(name).ok_or_else(|| WorkerError::MissingTensor { tensor: name.to_owned(), architecture: self.architecture.clone() })
    }

    fn checked(&self, name: &str, expected: &[usize]) -> Result<(&TensorInfo, StorageType, SharedBytes), WorkerError> {
        let info = self.info(name)?;
        let found: Vec<usize> = info.dims.iter().map(|&d| d as usize).collect();
        if found != expected {
            return Err(WorkerError::ShapeMismatch { tensor: name.to_owned(), expected: expected.to_vec(), found });
        }
        // parse() already checked the range lies inside the file.
        let bytes = self.bytes.slice(info.offset, info.byte_len).ok_or_else(|| WorkerError::ModelFormat {
            source_name: name.to_owned(),
            format: "GGUF",
            reason: "tensor data outside the buffer".into(),
        })?;
        let unsupported = || WorkerError::UnsupportedTensorType { tensor: name.to_owned(), type_name: info.ggml_type.name().to_owned() };
        match (StorageType::from_ggml(info.ggml_type), &self.imported) {
            (Some(ty), _) => Ok((info, ty, bytes)),
            (None, Some(imported)) => {
                let mut values = vec![0f32; found.iter().product()];
                dequantize_ggml(info.ggml_type, &bytes, &mut values).map_err(|e| match e {
                    WorkerError::UnsupportedTensorType { .. } => unsupported(),
                    other => other,
                })?;
                imported.borrow_mut().push((name.to_owned(), nearest_storage(info.ggml_type)));
                Ok((info, StorageType::F32, SharedBytes::from_vec(values.iter().flat_map(|v| v.to_le_bytes()).collect())))
            }
            (None, None) => Err(unsupported()),
        }
    }
}

impl TensorSource for GgufSource<'_> {
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError> {
        let (_, ty, bytes) = self.checked(name, &[cols, rows])?;
        WeightMatrix::new(name, ty, rows, cols, bytes)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WorkerError> {
        let (_, ty, bytes) = self.checked(name, &[len])?;
        WeightMatrix::vector(name, ty, len, bytes)
    }

    fn contains(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf::tests::GgufBuilder;
    use crate::quant::tests::Rng;

    /// A Q4_K matrix (2 rows of 256): refused when running, imported as f32 when packing.
    #[test]
    fn foreign_types_are_imported_only_when_packing() {
        let mut rng = Rng(9);
        let mut data = rng.bytes(2 * 144);
        for block in data.chunks_mut(144) {
            block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            block[2..4].copy_from_slice(&half::f16::from_f32(0.02).to_le_bytes());
        }
        let bytes = GgufBuilder::default().kv_str("general.architecture", "llama").tensor("w", &[256, 2], 12, data.clone()).build();
        let file = GgufFile::parse(&bytes, "q4k.gguf").unwrap();
        let shared = SharedBytes::from_vec(bytes.clone());
        let err = GgufSource::new(&file, shared.clone(), "llama").matrix("w", 2, 256).unwrap_err();
        assert_eq!(err.name(), "UnsupportedTensorTypeError");
        let importing = GgufSource::importing(&file, shared, "llama");
        let m = importing.matrix("w", 2, 256).unwrap();
        assert_eq!(m.ty, StorageType::F32);
        let mut want = vec![0f32; 512];
        dequantize_ggml(GgmlType::Q4K, &data, &mut want).unwrap();
        let mut row = vec![0f32; 256];
        for r in 0..2 {
            m.dequantize_row(r, &mut row);
            assert_eq!(row, want[r * 256..][..256]);
        }
        assert_eq!(importing.imported.unwrap().into_inner(), vec![("w".to_owned(), StorageType::Q4_1)]);
    }
}
