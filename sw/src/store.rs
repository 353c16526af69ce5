//! Storage behind a trait: the service worker plugs in IndexedDB (`entry`), native tests use
//! [`MemoryStore`]. Records are whole files (later: whole shards), never per tensor, so one
//! lookup answers one request.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::SwError;

/// One stored file: its bytes and the `Content-Type` it was served with (a `.wasm` must come back
/// as `application/wasm`, or streaming compilation refuses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// A key → blob store. Futures are not `Send`: in the browser everything runs on one thread.
#[allow(async_fn_in_trait)]
pub trait BlobStore {
    async fn get(&self, key: &str) -> Result<Option<StoredBlob>, SwError>;
    async fn put(&self, key: &str, blob: &StoredBlob) -> Result<(), SwError>;
}

/// In-memory store for native tests (and the place to run from when storage is refused).
#[derive(Debug, Default)]
pub struct MemoryStore {
    blobs: RefCell<HashMap<String, StoredBlob>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.blobs.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.borrow().is_empty()
    }
}

impl BlobStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<StoredBlob>, SwError> {
        Ok(self.blobs.borrow().get(key).cloned())
    }

    async fn put(&self, key: &str, blob: &StoredBlob) -> Result<(), SwError> {
        self.blobs.borrow_mut().insert(key.to_owned(), blob.clone());
        Ok(())
    }
}

/// The shard cache's tables (IndexedDB object stores of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Verified, complete shards: sha256 → bytes. One record per shard, never per tensor.
    Shards,
    /// Chunks of interrupted downloads: `<sha256>:<index>` → bytes, kept to resume with `Range`.
    Partials,
    /// Per-shard metadata (`ShardMeta`): sha256 → JSON.
    ShardMeta,
    /// Models whose manifests the cache has seen (`ModelRecord`): name → JSON.
    Models,
    /// Cache-wide state (`CacheState`: inflation, configured size, eviction log): one record.
    State,
}

impl Table {
    pub const ALL: [Table; 5] = [Table::Shards, Table::Partials, Table::ShardMeta, Table::Models, Table::State];

    pub fn name(self) -> &'static str {
        match self {
            Table::Shards => "shards",
            Table::Partials => "partials",
            Table::ShardMeta => "shard-meta",
            Table::Models => "models",
            Table::State => "state",
        }
    }

    /// Tables whose records are bytes; the others hold JSON documents.
    pub fn holds_bytes(self) -> bool {
        matches!(self, Table::Shards | Table::Partials)
    }
}

/// Keyed records in [`Table`]s: bytes or JSON documents. IndexedDB in the browser
/// (`idb::IdbRecords`), [`MemoryRecords`] natively. Writes of bytes may fail with
/// [`SwError::Quota`], which the cache answers by evicting and retrying once.
#[allow(async_fn_in_trait)]
pub trait RecordStore {
    async fn get_bytes(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, SwError>;
    async fn put_bytes(&self, table: Table, key: &str, bytes: &[u8]) -> Result<(), SwError>;
    async fn get_json(&self, table: Table, key: &str) -> Result<Option<serde_json::Value>, SwError>;
    async fn put_json(&self, table: Table, key: &str, value: &serde_json::Value) -> Result<(), SwError>;
    /// Every JSON document in `table` (metadata tables are small: one record per shard/model).
    async fn all_json(&self, table: Table) -> Result<Vec<serde_json::Value>, SwError>;
    async fn delete(&self, table: Table, key: &str) -> Result<(), SwError>;
    async fn clear(&self, table: Table) -> Result<(), SwError>;
}

/// In-memory [`RecordStore`] for native tests, with an optional byte quota that makes byte
/// writes fail the way IndexedDB's `QuotaExceededError` does.
#[derive(Debug, Default)]
pub struct MemoryRecords {
    bytes: RefCell<HashMap<(Table, String), Vec<u8>>>,
    json: RefCell<HashMap<(Table, String), serde_json::Value>>,
    /// When set, a byte write that would take the stored bytes past this fails with `Quota`.
    pub quota: std::cell::Cell<Option<u64>>,
}

impl MemoryRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held in `table`.
    pub fn stored_bytes(&self, table: Table) -> u64 {
        self.bytes.borrow().iter().filter(|((t, _), _)| *t == table).map(|(_, b)| b.len() as u64).sum()
    }

    /// Keys held in `table`, sorted.
    pub fn keys(&self, table: Table) -> Vec<String> {
        let mut keys: Vec<String> = self.bytes.borrow().keys().chain(self.json.borrow().keys()).filter(|(t, _)| *t == table).map(|(_, k)| k.clone()).collect();
        keys.sort();
        keys
    }
}

impl RecordStore for MemoryRecords {
    async fn get_bytes(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, SwError> {
        Ok(self.bytes.borrow().get(&(table, key.to_owned())).cloned())
    }

    async fn put_bytes(&self, table: Table, key: &str, bytes: &[u8]) -> Result<(), SwError> {
        let id = (table, key.to_owned());
        if let Some(quota) = self.quota.get() {
            let others: u64 = self.bytes.borrow().iter().filter(|(k, _)| **k != id).map(|(_, b)| b.len() as u64).sum();
            if others + bytes.len() as u64 > quota {
                return Err(SwError::Quota { key: key.to_owned(), reason: "QuotaExceededError (simulated)".into() });
            }
        }
        self.bytes.borrow_mut().insert(id, bytes.to_vec());
        Ok(())
    }

    async fn get_json(&self, table: Table, key: &str) -> Result<Option<serde_json::Value>, SwError> {
        Ok(self.json.borrow().get(&(table, key.to_owned())).cloned())
    }

    async fn put_json(&self, table: Table, key: &str, value: &serde_json::Value) -> Result<(), SwError> {
        self.json.borrow_mut().insert((table, key.to_owned()), value.clone());
        Ok(())
    }

    async fn all_json(&self, table: Table) -> Result<Vec<serde_json::Value>, SwError> {
        let json = self.json.borrow();
        let mut entries: Vec<(&String, &serde_json::Value)> = json.iter().filter(|((t, _), _)| *t == table).map(|((_, k), v)| (k, v)).collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        Ok(entries.into_iter().map(|(_, v)| v.clone()).collect())
    }

    async fn delete(&self, table: Table, key: &str) -> Result<(), SwError> {
        let id = (table, key.to_owned());
        self.bytes.borrow_mut().remove(&id);
        self.json.borrow_mut().remove(&id);
        Ok(())
    }

    async fn clear(&self, table: Table) -> Result<(), SwError> {
        self.bytes.borrow_mut().retain(|(t, _), _| *t != table);
        self.json.borrow_mut().retain(|(t, _), _| *t != table);
        Ok(())
    }
}
