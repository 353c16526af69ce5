//! # worker — the ipfs-accelerate-web engine and its dedicated-worker entry
//!
//! Everything that computes lives here and builds natively: the host↔worker [`protocol`], the
//! error type, and (as it lands) the model readers, storage types, models, sampler and backends.
//! The browser glue is one module, `entry` (wasm32 only), which speaks the protocol over
//! `postMessage` through `worker/js/accel-worker.js`. The same library backs the native `accel`
//! CLI (`src/bin/accel.rs`).
//!
//! The shard format and content addressing belong to the `sw` crate (the cache's domain); this
//! crate reads them through it.

pub mod clock;
pub mod error;
pub mod formats;
pub mod generate;
pub mod futures;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod loader;
pub mod memory;
pub mod model_slot;
pub mod models;
pub mod ops;
pub mod pack;
pub mod eval;
pub mod protocol;
pub mod quant;
pub mod runtime;
pub mod sampler;
pub mod stop;
pub mod tokenizer;
pub mod tensor;

#[cfg(target_arch = "wasm32")]
pub mod entry;

/// The browser engine counts its heap (see [`memory`]): the memory ledger's measured bytes.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: memory::CountingAllocator = memory::CountingAllocator;

pub use error::WorkerError;
