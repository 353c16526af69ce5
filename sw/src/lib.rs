//! # sw — the shard cache's domain: content addressing, request routing, storage, serving
//!
//! This crate owns everything about *bytes at rest* in ipfs-accelerate-web: how a file or weight
//! shard is addressed (SHA-256), which requests the service worker answers and how (cache-first
//! for model files, network-first with an offline fallback for the app shell), and the storage
//! behind it. The logic is plain Rust, built and tested natively against [`store::MemoryStore`];
//! the only browser code is the service-worker entry (`entry`, wasm32 only), which plugs an
//! IndexedDB store (through `rexie`) and the real `fetch` into the same functions.
//!
//! The worker crate links this library for the manifest and shard types (the shard format is the
//! cache's domain), so nothing here may depend on web-sys outside `entry`.

pub mod content;
pub mod download;
pub mod error;
pub mod manifest;
pub mod messages;
pub mod policy;
pub mod route;
pub mod serve;
pub mod shard_cache;
pub mod store;
#[doc(hidden)]
pub mod testing;

#[cfg(target_arch = "wasm32")]
mod entry;
#[cfg(target_arch = "wasm32")]
pub mod idb;
#[cfg(target_arch = "wasm32")]
pub mod webcrypto;

pub use content::{sha256_hex, ContentHash};
pub use error::SwError;
pub use manifest::Manifest;
pub use route::{route_request, Route};
pub use serve::{serve, Fetched, Network, Served, Source};
pub use store::{BlobStore, MemoryStore, StoredBlob};
