//! A packed model (manifest + content-addressed shards, see `sw::manifest`) as a
//! [`TensorSource`]: the architectures load from it exactly as from a GGUF, by canonical name.
//!
//! Every shard is verified against its SHA-256 when the model is opened; tensors are views into
//! the shard bytes (memory-mapped natively), never copies.

use std::collections::HashMap;

use sw::manifest::{verify_shard, ShardInfo, TensorEntry};
use sw::{ContentHash, Manifest};

use super::TensorSource;
use crate::quant::StorageType;
use crate::tensor::{SharedBytes, WeightMatrix};
use crate::tokenizer::Tokenizer;
use crate::WorkerError;

pub struct PackedModel {
    pub manifest: Manifest,
    shards: HashMap<ContentHash, SharedBytes>,
}

impl PackedModel {
    /// Parses the manifest, then asks `shard` for each shard's bytes and verifies them.
    pub fn from_parts(manifest_json: &[u8], mut shard: impl FnMut(&ShardInfo) -> Result<SharedBytes, WorkerError>) -> Result<Self, WorkerError> {
        Self::assemble(manifest_json, |info| {
            let bytes = shard(info)?;
            verify_shard(info, &bytes)?;
            Ok(bytes)
        })
    }

    /// As [`PackedModel::from_parts`], for a caller that has checked every shard's SHA-256
    /// itself (the browser worker, with WebCrypto: ~10× faster than hashing in wasm). Sizes are
    /// still checked here.
    pub fn from_verified_parts(manifest_json: &[u8], mut shard: impl FnMut(&ShardInfo) -> Result<SharedBytes, WorkerError>) -> Result<Self, WorkerError> {
        Self::assemble(manifest_json, |info| {
            let bytes = shard(info)?;
            if bytes.len() as u64 != info.bytes {
                return Err(sw::SwError::Integrity { what: sw::manifest::shard_path(&info.sha256), expected: format!("{} bytes", info.bytes), actual: format!("{} bytes", bytes.len()) }.into());
            }
            Ok(bytes)
        })
    }

    fn assemble(manifest_json: &[u8], mut shard: impl FnMut(&ShardInfo) -> Result<SharedBytes, WorkerError>) -> Result<Self, WorkerError> {
        let manifest = Manifest::parse(manifest_json)?;
        let mut shards = HashMap::new();
        for info in &manifest.shards {
            shards.insert(info.sha256.clone(), shard(info)?);
        }
        Ok(PackedModel { manifest, shards })
    }

    /// A packed directory on disk: `manifest.json` and memory-mapped `shards/<hash>.bin`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: &std::path::Path) -> Result<Self, WorkerError> {
        let path = dir.join("manifest.json");
        let json = crate::loader::read_file(&path)?;
        PackedModel::from_parts(&json, |info| crate::loader::map_file(&dir.join(sw::manifest::shard_path(&info.sha256))))
    }

    fn range(&self, what: &str, shard: &ContentHash, offset: u64, length: u64) -> Result<SharedBytes, WorkerError> {
        // The manifest was validated against the shard sizes and the shards against the
        // manifest, so a miss here means a bug, still reported rather than panicking.
        self.shards.get(shard).and_then(|b| b.slice(offset as usize, length as usize)).ok_or_else(|| WorkerError::ModelFormat {
            source_name: what.to_owned(),
            format: "packed model",
            reason: format!("bytes {offset}..+{length} are not in shard {shard}"),
        })
    }

    /// A non-tensor file of the pack (the tokenizer's).
    pub fn file(&self, name: &str) -> Result<SharedBytes, WorkerError> {
        let entry = self.manifest.file(name).ok_or_else(|| WorkerError::ModelFormat {
            source_name: self.manifest.name.clone(),
            format: "packed model",
            reason: format!("the manifest lists no file {name:?}"),
        })?;
        self.range(name, &entry.shard, entry.offset, entry.length)
    }

    pub fn tokenizer(&self) -> Result<Tokenizer, WorkerError> {
        let t = &self.manifest.tokenizer;
        Tokenizer::from_packed(&self.file(&t.file)?, &self.file(&t.config)?)
    }

    /// The architecture's hyper-parameters from the manifest.
    pub fn hyperparameters<T: serde::de::DeserializeOwned>(&self) -> Result<T, WorkerError> {
        serde_json::from_value(self.manifest.hyperparameters.clone()).map_err(|e| WorkerError::Metadata { key: "hyperparameters".into(), reason: format!("{e} (in {}'s manifest)", self.manifest.name) })
    }

    fn entry(&self, name: &str, shape: &[usize]) -> Result<(&TensorEntry, StorageType), WorkerError> {
        let t = self.manifest.tensor(name).ok_or_else(|| WorkerError::MissingTensor { tensor: name.to_owned(), architecture: self.manifest.architecture.clone() })?;
        let found: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        if found != shape {
            return Err(WorkerError::ShapeMismatch { tensor: name.to_owned(), expected: shape.to_vec(), found });
        }
        let ty = StorageType::from_name(&t.dtype).ok_or_else(|| WorkerError::UnsupportedTensorType { tensor: name.to_owned(), type_name: t.dtype.clone() })?;
        Ok((t, ty))
    }
}

impl TensorSource for PackedModel {
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError> {
        let (t, ty) = self.entry(name, &[rows, cols])?;
        WeightMatrix::new(name, ty, rows, cols, self.range(name, &t.shard, t.offset, t.length)?)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WorkerError> {
        let (t, ty) = self.entry(name, &[len])?;
        WeightMatrix::vector(name, ty, len, self.range(name, &t.shard, t.offset, t.length)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.manifest.tensor(name).is_some()
    }
}
