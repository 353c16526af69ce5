//! IndexedDB storage (wasm32 only), through `rexie`: the browser's [`BlobStore`] and
//! [`RecordStore`].
//!
//! One database, `ipfs-accelerate`, with one object store per kind of record: `shell` and
//! `files` hold whole files `{bytes: Uint8Array, contentType: string}` keyed by absolute path;
//! the shard cache's tables ([`Table`]) hold a `Uint8Array` (shards, partial chunks) or a plain
//! object (metadata), so DevTools (and the tests) can read them. Works in any global that has
//! `indexedDB` (service worker, dedicated worker, page).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Object, Reflect, Uint8Array};
use rexie::{ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};

use crate::store::{BlobStore, RecordStore, StoredBlob, Table};
use crate::SwError;

pub const DB_NAME: &str = "ipfs-accelerate";
/// 2: the shard cache's tables.
pub const DB_VERSION: u32 = 2;
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
    let mut builder = Rexie::builder(DB_NAME).version(DB_VERSION).add_object_store(ObjectStore::new(SHELL_STORE)).add_object_store(ObjectStore::new(FILE_STORE));
    for table in Table::ALL {
        builder = builder.add_object_store(ObjectStore::new(table.name()));
    }
    let db = builder
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

/// IndexedDB's failures as [`SwError`]s; `QuotaExceededError` becomes [`SwError::Quota`] (the
/// cache evicts and retries on it).
fn storage_error(op: &'static str, key: &str, err: impl std::fmt::Debug + std::fmt::Display) -> SwError {
    let reason = format!("{err} ({err:?})");
    if reason.contains("QuotaExceeded") {
        return SwError::Quota { key: key.to_owned(), reason };
    }
    SwError::Storage { op, key: key.to_owned(), reason }
}

/// The shard cache's tables in IndexedDB.
pub struct IdbRecords;

impl IdbRecords {
    async fn get(&self, table: Table, key: &str) -> Result<Option<JsValue>, SwError> {
        let db = database().await?;
        let tx = db.transaction(&[table.name()], TransactionMode::ReadOnly).map_err(|e| storage_error("get", key, e))?;
        let store = tx.store(table.name()).map_err(|e| storage_error("get", key, e))?;
        store.get(key.into()).await.map_err(|e| storage_error("get", key, e))
    }

    async fn put(&self, table: Table, key: &str, value: &JsValue) -> Result<(), SwError> {
        let db = database().await?;
        let tx = db.transaction(&[table.name()], TransactionMode::ReadWrite).map_err(|e| storage_error("put", key, e))?;
        let store = tx.store(table.name()).map_err(|e| storage_error("put", key, e))?;
        store.put(value, Some(&key.into())).await.map_err(|e| storage_error("put", key, e))?;
        // The quota is enforced at commit: only `done` says whether the bytes are really stored.
        tx.done().await.map_err(|e| storage_error("put", key, e))?;
        Ok(())
    }
}

fn json_to_js(key: &str, value: &serde_json::Value) -> Result<JsValue, SwError> {
    js_sys::JSON::parse(&value.to_string()).map_err(|e| storage_error("encode", key, js_reason(&e)))
}

fn js_to_json(key: &str, value: &JsValue) -> Result<serde_json::Value, SwError> {
    let text: String = js_sys::JSON::stringify(value).map_err(|e| storage_error("decode", key, js_reason(&e)))?.into();
    serde_json::from_str(&text).map_err(|e| storage_error("decode", key, e))
}

impl RecordStore for IdbRecords {
    async fn get_bytes(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, SwError> {
        // A record that is not bytes is treated as absent (and replaced), not trusted.
        Ok(self.get(table, key).await?.and_then(|v| v.dyn_into::<Uint8Array>().ok()).map(|b| b.to_vec()))
    }

    async fn put_bytes(&self, table: Table, key: &str, bytes: &[u8]) -> Result<(), SwError> {
        self.put(table, key, &Uint8Array::from(bytes).into()).await
    }

    async fn get_json(&self, table: Table, key: &str) -> Result<Option<serde_json::Value>, SwError> {
        self.get(table, key).await?.map(|v| js_to_json(key, &v)).transpose()
    }

    async fn put_json(&self, table: Table, key: &str, value: &serde_json::Value) -> Result<(), SwError> {
        self.put(table, key, &json_to_js(key, value)?).await
    }

    async fn all_json(&self, table: Table) -> Result<Vec<serde_json::Value>, SwError> {
        let db = database().await?;
        let name = table.name();
        let tx = db.transaction(&[name], TransactionMode::ReadOnly).map_err(|e| storage_error("list", name, e))?;
        let store = tx.store(name).map_err(|e| storage_error("list", name, e))?;
        let values = store.get_all(None, None).await.map_err(|e| storage_error("list", name, e))?;
        values.iter().map(|v| js_to_json(name, v)).collect()
    }

    async fn delete(&self, table: Table, key: &str) -> Result<(), SwError> {
        let db = database().await?;
        let tx = db.transaction(&[table.name()], TransactionMode::ReadWrite).map_err(|e| storage_error("delete", key, e))?;
        let store = tx.store(table.name()).map_err(|e| storage_error("delete", key, e))?;
        store.delete(key.into()).await.map_err(|e| storage_error("delete", key, e))?;
        tx.done().await.map_err(|e| storage_error("delete", key, e))?;
        Ok(())
    }

    async fn clear(&self, table: Table) -> Result<(), SwError> {
        let db = database().await?;
        let name = table.name();
        let tx = db.transaction(&[name], TransactionMode::ReadWrite).map_err(|e| storage_error("clear", name, e))?;
        let store = tx.store(name).map_err(|e| storage_error("clear", name, e))?;
        store.clear().await.map_err(|e| storage_error("clear", name, e))?;
        tx.done().await.map_err(|e| storage_error("clear", name, e))?;
        Ok(())
    }
}

/// The message of a thrown JS value, whatever its type.
pub fn js_reason(err: &JsValue) -> String {
    err.as_string()
        .or_else(|| err.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{err:?}"))
}
