//! [`TensorSource`] over a parsed GGUF file and its bytes.

use super::TensorSource;
use crate::formats::gguf::{GgufFile, TensorInfo};
use crate::quant::StorageType;
use crate::tensor::{SharedBytes, WeightMatrix};
use crate::WorkerError;

pub struct GgufSource<'a> {
    pub file: &'a GgufFile,
    pub bytes: SharedBytes,
    /// Architecture name, for error messages.
    pub architecture: String,
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
        let ty = StorageType::from_ggml(info.ggml_type)
            .ok_or_else(|| WorkerError::UnsupportedTensorType { tensor: name.to_owned(), type_name: info.ggml_type.name().to_owned() })?;
        // parse() already checked the range lies inside the file.
        let bytes = self.bytes.slice(info.offset, info.byte_len).ok_or_else(|| WorkerError::ModelFormat {
            source_name: name.to_owned(),
            format: "GGUF",
            reason: "tensor data outside the buffer".into(),
        })?;
        Ok((info, ty, bytes))
    }
}

impl TensorSource for GgufSource<'_> {
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError> {
        let (_, ty, bytes) = self.checked(name, &[cols, rows])?;
        WeightMatrix::new(name, ty, rows, cols, bytes)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WorkerError> {
        let m = self.matrix_of_one_row(name, len)?;
        let mut out = vec![0.0; len];
        m.dequantize_row(0, &mut out);
        Ok(out)
    }

    fn contains(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }
}

impl GgufSource<'_> {
    fn matrix_of_one_row(&self, name: &str, len: usize) -> Result<WeightMatrix, WorkerError> {
        let (_, ty, bytes) = self.checked(name, &[len])?;
        WeightMatrix::new(name, ty, 1, len, bytes)
    }
}
