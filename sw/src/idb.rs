//! IndexedDB storage (wasm32 only), through `rexie`: the browser's [`BlobStore`].
//!
//! One database, `ipfs-accelerate`, with one object store per kind of record. A record is a
//! whole file `{bytes: Uint8Array, contentType: string}` keyed by its absolute path. Works in any
//! global that has `indexedDB` (service worker, dedicated worker, page).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Object, Reflect, Uint8Array};
use rexie::{ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};

use crate::store::{BlobStore, StoredBlob};
use crate::SwError;

pub const DB_NAME: &str = "ipfs-accelerate";
pub const DB_VERSION: u32 = 1;
/// App-shell files (html, js, wasm), keyed by absolute path.
pub const SHELL_STORE: &str = "shell";
/// Model files, keyed by absolute path (packed shards will be keyed by content hash).
pub const FILE_STORE: &str = "files";

thread_local! {
    static DATABASE: RefCell<Option<Rc<Rexie>>> = const { RefCell::new(None) };
}

async fn database() -> Result<Rc<Rexie>, SwError> {
    if let Some(db) = DATABASE.with(|d| d.borrow().clone()) {
        return Ok(db);
    }
    let db = Rexie::builder(DB_NAME)
        .version(DB_VERSION)
        .add_object_store(ObjectStore::new(SHELL_STORE))
        .add_object_store(ObjectStore::new(FILE_STORE))
        .build()
        .await
        .map_err(|e| storage_error("open", DB_NAME, e))?;
    let db = Rc::new(db);
    DATABASE.with(|d| *d.borrow_mut() = Some(db.clone()));
    Ok(db)
}

/// An IndexedDB object store holding [`StoredBlob`]s as `{bytes: Uint8Array, contentType}`.
pub struct IdbStore {
    name: &'static str,
}

impl IdbStore {
    /// A handle on object store `name` (one of the `*_STORE` constants).
    pub fn new(name: &'static str) -> Self {
        IdbStore { name }
    }
}

impl BlobStore for IdbStore {
    async fn get(&self, key: &str) -> Result<Option<StoredBlob>, SwError> {
        let db = database().await?;
        let tx = db.transaction(&[self.name], TransactionMode::ReadOnly).map_err(|e| storage_error("get", key, e))?;
        let store = tx.store(self.name).map_err(|e| storage_error("get", key, e))?;
        let Some(record) = store.get(key.into()).await.map_err(|e| storage_error("get", key, e))? else {
            return Ok(None);
        };
        // A record we cannot read is treated as absent (and overwritten by the next fetch)
        // rather than trusted.
        let bytes = Reflect::get(&record, &"bytes".into()).ok().and_then(|b| b.dyn_into::<Uint8Array>().ok());
        let content_type = Reflect::get(&record, &"contentType".into()).ok().and_then(|c| c.as_string());
        Ok(bytes.zip(content_type).map(|(bytes, content_type)| StoredBlob { bytes: bytes.to_vec(), content_type }))
    }

    async fn put(&self, key: &str, blob: &StoredBlob) -> Result<(), SwError> {
        let db = database().await?;
        let record = Object::new();
        let set = |field: &str, value: JsValue| Reflect::set(&record, &field.into(), &value).map_err(|e| storage_error("put", key, js_reason(&e)));
        set("bytes", Uint8Array::from(blob.bytes.as_slice()).into())?;
        set("contentType", blob.content_type.as_str().into())?;
        let tx = db.transaction(&[self.name], TransactionMode::ReadWrite).map_err(|e| storage_error("put", key, e))?;
        let store = tx.store(self.name).map_err(|e| storage_error("put", key, e))?;
        store.put(&record, Some(&key.into())).await.map_err(|e| storage_error("put", key, e))?;
        tx.done().await.map_err(|e| storage_error("put", key, e))?;
        Ok(())
    }
}

fn storage_error(op: &'static str, key: &str, err: impl std::fmt::Display) -> SwError {
    SwError::Storage { op, key: key.to_owned(), reason: err.to_string() }
}

/// The message of a thrown JS value, whatever its type.
pub fn js_reason(err: &JsValue) -> String {
    err.as_string()
        .or_else(|| err.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{err:?}"))
}
