//! The packed model format: what the browser downloads instead of a GGUF.
//!
//! A packed model is a directory (or URL prefix) holding `manifest.json` and
//! `shards/<sha256-hex>.bin`. Shards are content-addressed — the file name is the SHA-256 of the
//! bytes — so they are verified before they are stored or served, deduplicated between models,
//! and cached forever under their name. The manifest says where every tensor lives:
//!
//! ```text
//! {
//!   "format": "ipfs-accelerate-packed", "version": 1,
//!   "name": "smollm2-135m", "architecture": "llama",
//!   "hyperparameters": {..},              architecture-specific (the engine reads it)
//!   "precision": "keep",                  how the pack was made (informational)
//!   "tokenizer": {"component": "tokenizer", "file": "tokenizer.json", "config": "tokenizer_config.json"},
//!   "tensors": [{"name", "shape": [rows, cols] | [len], "dtype": "q4_1", "shard", "offset", "length"}],
//!   "files":   [{"name", "shard", "offset", "length"}],          non-tensor bytes (tokenizer)
//!   "components": [{"name": "layer.0", "priority": 2, "bytes", "tensors": [names], "files": [names]}],
//!   "shards": [{"sha256", "bytes"}],
//!   "total_bytes": N,                     Σ shard bytes
//!   "mirrors": ["https://…/"]             optional base URLs holding the same shards/ folder
//! }
//! ```
//!
//! Shapes are row-major (`[rows, cols]`, PyTorch order — not GGUF's reversed dims). Components
//! are listed in load order (priority 0 first): tokenizer, embeddings, layer.0 … layer.N-1,
//! final_norm, lm_head. Every tensor and file belongs to exactly one component, and a component's
//! entries are contiguous in as few shards as possible, so loading layer i touches one shard
//! (two where it straddles a boundary). Offsets are 256-byte aligned (WebGPU's storage-buffer
//! offset alignment), so a GPU can bind a tensor straight out of its shard.
//!
//! [`Manifest::parse`] validates strictly: a newer `version` is refused before anything else
//! (the reader cannot know what changed), unknown fields are refused, and every cross-reference
//! (tensor → shard, range → shard size, component → entries, sums) is checked, each failure a
//! named [`SwError`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{ContentHash, SwError};

/// The `format` field of every manifest.
pub const FORMAT: &str = "ipfs-accelerate-packed";
/// The newest manifest version this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of every tensor and file inside its shard.
pub const ALIGNMENT: u64 = 256;
/// Storage types a manifest may name (the engine's `StorageType` names).
pub const DTYPES: &[&str] = &["f32", "f16", "q8_0", "q4_0", "q4_1", "q3", "q2"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub name: String,
    pub architecture: String,
    pub hyperparameters: serde_json::Value,
    pub precision: String,
    pub tokenizer: TokenizerRef,
    pub tensors: Vec<TensorEntry>,
    pub files: Vec<FileEntry>,
    pub components: Vec<Component>,
    pub shards: Vec<ShardInfo>,
    pub total_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// Where the tokenizer is: its component and the names of its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerRef {
    pub component: String,
    /// HF `tokenizer.json`.
    pub file: String,
    /// Special ids, BOS policy and chat template (JSON).
    pub config: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub shard: ContentHash,
    pub offset: u64,
    pub length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub shard: ContentHash,
    pub offset: u64,
    pub length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    pub priority: u32,
    pub bytes: u64,
    pub tensors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    pub sha256: ContentHash,
    pub bytes: u64,
}

impl Manifest {
    /// Parses and validates `manifest.json` bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, SwError> {
        let bad = |reason: String| SwError::Manifest { reason };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        // Format and version first: a newer manifest may not parse as this version's struct,
        // and "upgrade" is the useful answer, not "unknown field".
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => return Err(bad(format!("\"format\" is {other:?}, expected {FORMAT:?}"))),
        }
        let version = value.get("version").and_then(|v| v.as_u64()).ok_or_else(|| bad("\"version\" is missing or not an integer".into()))?;
        if version > FORMAT_VERSION as u64 {
            return Err(SwError::ManifestVersion { found: version, supported: FORMAT_VERSION });
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every cross-reference; see the module header.
    pub fn validate(&self) -> Result<(), SwError> {
        let bad = |reason: String| Err(SwError::Manifest { reason });
        if self.version == 0 {
            return bad("\"version\" 0 does not exist; versions start at 1".into());
        }
        if !is_valid_name(&self.name) {
            return bad(format!("model name {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'", self.name));
        }
        if !self.hyperparameters.is_object() {
            return bad("\"hyperparameters\" must be an object".into());
        }
        let shards: BTreeMap<&ContentHash, u64> = self.shards.iter().map(|s| (&s.sha256, s.bytes)).collect();
        if shards.len() != self.shards.len() {
            return bad("a shard is listed twice".into());
        }
        let total: u64 = self.shards.iter().map(|s| s.bytes).sum();
        if total != self.total_bytes {
            return bad(format!("\"total_bytes\" is {} but the shards add up to {total}", self.total_bytes));
        }
        let mut lengths: BTreeMap<&str, u64> = BTreeMap::new();
        let ranges = self.tensors.iter().map(|t| (&t.name, &t.shard, t.offset, t.length)).chain(self.files.iter().map(|f| (&f.name, &f.shard, f.offset, f.length)));
        for (name, shard, offset, length) in ranges {
            let Some(&size) = shards.get(shard) else { return bad(format!("{name:?} points at shard {shard}, which \"shards\" does not list")) };
            if offset.checked_add(length).is_none_or(|end| end > size) {
                return bad(format!("{name:?} spans bytes {offset}..+{length} of shard {shard}, which has {size}"));
            }
            if lengths.insert(name, length).is_some() {
                return bad(format!("{name:?} is listed twice"));
            }
        }
        for t in &self.tensors {
            if !DTYPES.contains(&t.dtype.as_str()) {
                return bad(format!("tensor {:?} has dtype {:?}; known: {}", t.name, t.dtype, DTYPES.join(", ")));
            }
            if t.shape.is_empty() || t.shape.len() > 2 || t.shape.contains(&0) {
                return bad(format!("tensor {:?} has shape {:?}; expected [len] or [rows, cols]", t.name, t.shape));
            }
        }
        let mut owned: BTreeSet<&str> = BTreeSet::new();
        for (i, c) in self.components.iter().enumerate() {
            if c.priority as usize != i {
                return bad(format!("component {:?} has priority {} but is listed at position {i}; components are listed in load order", c.name, c.priority));
            }
            let mut bytes = 0;
            for entry in c.tensors.iter().chain(&c.files) {
                let Some(&len) = lengths.get(entry.as_str()) else { return bad(format!("component {:?} names {entry:?}, which is not in \"tensors\" or \"files\"", c.name)) };
                if !owned.insert(entry) {
                    return bad(format!("{entry:?} belongs to two components"));
                }
                bytes += len;
            }
            if bytes != c.bytes {
                return bad(format!("component {:?} says {} bytes but its entries hold {bytes}", c.name, c.bytes));
            }
        }
        if let Some(orphan) = lengths.keys().find(|name| !owned.contains(*name)) {
            return bad(format!("{orphan:?} belongs to no component"));
        }
        let tokenizer = self.components.iter().find(|c| c.name == self.tokenizer.component);
        for file in [&self.tokenizer.file, &self.tokenizer.config] {
            if !tokenizer.is_some_and(|c| c.files.contains(file)) {
                return bad(format!("the tokenizer file {file:?} is not in component {:?}", self.tokenizer.component));
            }
        }
        if let Some(m) = self.mirrors.iter().find(|m| !(m.starts_with("https://") || m.starts_with("http://")) || !m.ends_with('/')) {
            return bad(format!("mirror {m:?} must be an http(s) base URL ending in '/'"));
        }
        Ok(())
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The lowest priority among the components with bytes in `shard` (what the cache weighs
    /// it by: a shard holding the tokenizer is worth as much as the tokenizer).
    pub fn shard_priority(&self, shard: &ContentHash) -> u32 {
        self.components.iter().filter(|c| self.component_shards(c).any(|s| s == shard)).map(|c| c.priority).min().unwrap_or(u32::MAX / 2)
    }

    /// The shards holding `component`'s tensors and files (a shard may repeat).
    pub fn component_shards<'a>(&'a self, component: &'a Component) -> impl Iterator<Item = &'a ContentHash> + 'a {
        let tensors = component.tensors.iter().filter_map(|t| self.tensor(t)).map(|t| &t.shard);
        tensors.chain(component.files.iter().filter_map(|f| self.file(f)).map(|f| &f.shard))
    }

    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Where `component`'s bytes are: per shard (in manifest shard order), the one byte range
    /// covering its tensors and files there. A component's tensors are contiguous in the
    /// pack, so the range holds nothing of other components in practice; a loader copies each
    /// range into the component's own buffer, which it can then free on its own.
    pub fn component_ranges(&self, component: &Component) -> Vec<ShardRange> {
        let tensors = component.tensors.iter().filter_map(|t| self.tensor(t)).map(|t| (&t.shard, t.offset, t.length));
        let files = component.files.iter().filter_map(|f| self.file(f)).map(|f| (&f.shard, f.offset, f.length));
        let mut ranges: Vec<ShardRange> = Vec::new();
        for (shard, offset, length) in tensors.chain(files) {
            let end = offset.saturating_add(length);
            match ranges.iter_mut().find(|r| &r.shard == shard) {
                Some(r) => {
                    r.start = r.start.min(offset);
                    r.end = r.end.max(end);
                }
                None => ranges.push(ShardRange { shard: shard.clone(), start: offset, end }),
            }
        }
        let position = |h: &ContentHash| self.shards.iter().position(|s| &s.sha256 == h).unwrap_or(usize::MAX);
        ranges.sort_by_key(|r| position(&r.shard));
        ranges
    }

    /// Pretty JSON with a trailing newline; the same manifest always gives the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Bytes `start..end` of one shard (see [`Manifest::component_ranges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    pub shard: ContentHash,
    pub start: u64,
    pub end: u64,
}

/// A character a model name may hold: it names a directory and a URL path segment.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.".contains(c)
}

/// A non-empty model name of [`is_name_char`]s.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(is_name_char)
}

/// Path of a shard relative to the manifest: `shards/<sha256>.bin`.
pub fn shard_path(hash: &ContentHash) -> String {
    format!("shards/{}.bin", hash.as_str())
}

/// Checks that `bytes` are the shard `info` names (size, then SHA-256).
pub fn verify_shard(info: &ShardInfo, bytes: &[u8]) -> Result<(), SwError> {
    let actual = ContentHash::of(bytes);
    if bytes.len() as u64 != info.bytes || actual != info.sha256 {
        return Err(SwError::Integrity { what: shard_path(&info.sha256), expected: info.sha256.to_string(), actual: format!("{} ({} bytes)", actual, bytes.len()) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid manifest: one shard holding the tokenizer files and one tensor.
    pub fn sample() -> Manifest {
        let shard = ContentHash::of(b"shard");
        Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            name: "tiny".into(),
            architecture: "llama".into(),
            hyperparameters: serde_json::json!({"n_layer": 1}),
            precision: "keep".into(),
            tokenizer: TokenizerRef { component: "tokenizer".into(), file: "tokenizer.json".into(), config: "tokenizer_config.json".into() },
            tensors: vec![TensorEntry { name: "token_embd.weight".into(), shape: vec![4, 32], dtype: "f32".into(), shard: shard.clone(), offset: 512, length: 512 }],
            files: vec![
                FileEntry { name: "tokenizer.json".into(), shard: shard.clone(), offset: 0, length: 100 },
                FileEntry { name: "tokenizer_config.json".into(), shard: shard.clone(), offset: 256, length: 20 },
            ],
            components: vec![
                Component { name: "tokenizer".into(), priority: 0, bytes: 120, tensors: vec![], files: vec!["tokenizer.json".into(), "tokenizer_config.json".into()] },
                Component { name: "embeddings".into(), priority: 1, bytes: 512, tensors: vec!["token_embd.weight".into()], files: vec![] },
            ],
            shards: vec![ShardInfo { sha256: shard, bytes: 1024 }],
            total_bytes: 1024,
            mirrors: vec![],
        }
    }

    fn reparse(edit: impl Fn(&mut serde_json::Value)) -> Result<Manifest, SwError> {
        let mut value = serde_json::to_value(sample()).unwrap();
        edit(&mut value);
        Manifest::parse(&serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn a_valid_manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        assert_eq!(m.to_json(), Manifest::parse(&m.to_json()).unwrap().to_json(), "serialisation is deterministic");
    }

    #[test]
    fn a_newer_version_is_refused_by_name_before_anything_else() {
        let err = reparse(|v| {
            v["version"] = 2.into();
            v["something_new"] = true.into();
        })
        .unwrap_err();
        assert_eq!(err.name(), "ManifestVersionError", "{err}");
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn broken_cross_references_are_manifest_errors() {
        let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>)> = vec![
            ("not JSON", Box::new(|v| *v = "}{".into())),
            ("wrong format", Box::new(|v| v["format"] = "gguf".into())),
            ("unknown field", Box::new(|v| v["extra"] = 1.into())),
            ("unknown shard", Box::new(|v| v["tensors"][0]["shard"] = ContentHash::of(b"other").to_string().into())),
            ("range past the shard", Box::new(|v| v["tensors"][0]["length"] = 600.into())),
            ("offset overflow", Box::new(|v| v["tensors"][0]["offset"] = u64::MAX.into())),
            ("unknown dtype", Box::new(|v| v["tensors"][0]["dtype"] = "q4_k".into())),
            ("empty shape", Box::new(|v| v["tensors"][0]["shape"] = serde_json::json!([]))),
            ("component bytes", Box::new(|v| v["components"][1]["bytes"] = 5.into())),
            ("orphan tensor", Box::new(|v| v["components"][1]["tensors"] = serde_json::json!([]))),
            ("priority order", Box::new(|v| v["components"][1]["priority"] = 7.into())),
            ("total bytes", Box::new(|v| v["total_bytes"] = 1.into())),
            ("bad hash", Box::new(|v| v["shards"][0]["sha256"] = "ABC".into())),
            ("tokenizer file missing", Box::new(|v| v["tokenizer"]["file"] = "vocab.txt".into())),
            ("bad mirror", Box::new(|v| v["mirrors"] = serde_json::json!(["ftp://x/"]))),
            ("bad name", Box::new(|v| v["name"] = "../etc".into())),
        ];
        for (what, edit) in cases {
            let err = reparse(edit).expect_err(what);
            assert_eq!(err.name(), "ManifestError", "{what}: {err}");
        }
    }

    #[test]
    fn shards_are_verified_against_their_name() {
        let info = ShardInfo { sha256: ContentHash::of(b"right"), bytes: 5 };
        assert!(verify_shard(&info, b"right").is_ok());
        let err = verify_shard(&info, b"wrong").unwrap_err();
        assert_eq!(err.name(), "IntegrityError");
        assert!(err.to_string().contains(&shard_path(&info.sha256)), "{err}");
    }
}
