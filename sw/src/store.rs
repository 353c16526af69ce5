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
