//! A packed model (manifest + content-addressed shards, see `sw::manifest`) as a
//! [`TensorSource`]: the architectures load from it exactly as from a GGUF, by canonical name.
//!
//! Every shard is verified against its SHA-256 when the model is opened; tensors are views into
//! the shard bytes (memory-mapped natively), never copies.
//!
//! The pack holds *pieces*: byte ranges of shards. A pack opened whole has one piece per shard.
//! The browser worker instead copies each component's range of a shard into a piece of its own
//! as the shard arrives ([`PackedModel::add_piece`]), so a component is usable as soon as its
//! bytes are in (progressive loading) and can be freed on its own
//! ([`PackedModel::release_component`]: `unloadComponent`).

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
    /// Resident bytes, by shard.
    shards: HashMap<ContentHash, Vec<Piece>>,
}

/// Bytes `start..start + bytes.len()` of a shard.
struct Piece {
    start: u64,
    bytes: SharedBytes,
    /// The component it was copied for (`None`: a whole shard).
    component: Option<String>,
}

impl Piece {
    /// Whether bytes `start..end` of the shard are in this piece.
    fn covers(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.start + self.bytes.len() as u64
    }
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
        let mut pack = PackedModel::empty(manifest_json)?;
        for info in &pack.manifest.shards {
            pack.shards.insert(info.sha256.clone(), vec![Piece { start: 0, bytes: shard(info)?, component: None }]);
        }
        Ok(pack)
    }

    /// The validated manifest and no bytes yet: pieces follow with [`PackedModel::add_piece`].
    pub fn empty(manifest_json: &[u8]) -> Result<Self, WorkerError> {
        Ok(PackedModel { manifest: Manifest::parse(manifest_json)?, shards: HashMap::new() })
    }

    /// Keeps `bytes` as bytes `start..` of `shard`, copied for `component` (its range from
    /// [`Manifest::component_ranges`]). The caller has verified the shard they came from.
    pub fn add_piece(&mut self, component: &str, shard: &ContentHash, start: u64, bytes: SharedBytes) {
        self.shards.entry(shard.clone()).or_default().push(Piece { start, bytes, component: Some(component.to_owned()) });
    }

    /// Drops the pieces copied for `component`; returns their bytes. The memory is freed once
    /// no tensor built from them is alive.
    pub fn release_component(&mut self, component: &str) -> u64 {
        let mut released = 0;
        for pieces in self.shards.values_mut() {
            pieces.retain(|p| {
                let keep = p.component.as_deref() != Some(component);
                if !keep {
                    released += p.bytes.len() as u64;
                }
                keep
            });
        }
        released
    }

    /// Whether a piece copied for `component` covers `range`.
    pub fn component_piece_covers(&self, component: &str, range: &sw::manifest::ShardRange) -> bool {
        let pieces = self.shards.get(&range.shard).into_iter().flatten();
        pieces.filter(|p| p.component.as_deref() == Some(component)).any(|p| p.covers(range.start, range.end))
    }

    /// Bytes held for `component` (its pieces).
    pub fn component_bytes(&self, component: &str) -> u64 {
        self.shards.values().flatten().filter(|p| p.component.as_deref() == Some(component)).map(|p| p.bytes.len() as u64).sum()
    }

    /// A packed directory on disk: `manifest.json` and memory-mapped `shards/<hash>.bin`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: &std::path::Path) -> Result<Self, WorkerError> {
        let path = dir.join("manifest.json");
        let json = crate::loader::read_file(&path)?;
        PackedModel::from_parts(&json, |info| crate::loader::map_file(&dir.join(sw::manifest::shard_path(&info.sha256))))
    }

    fn range(&self, what: &str, shard: &ContentHash, offset: u64, length: u64) -> Result<SharedBytes, WorkerError> {
        // A whole pack was validated against the shard sizes, so a miss there means a bug;
        // with pieces it means the component is not resident. Both are reported, never a panic.
        let piece = self.shards.get(shard).into_iter().flatten().find(|p| p.covers(offset, offset + length));
        piece.and_then(|p| p.bytes.slice((offset - p.start) as usize, length as usize)).ok_or_else(|| WorkerError::ModelFormat {
            source_name: what.to_owned(),
            format: "packed model",
            reason: format!("bytes {offset}..+{length} of shard {shard} are not resident"),
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
