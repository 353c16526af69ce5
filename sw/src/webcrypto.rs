//! SHA-256 through the browser's WebCrypto (wasm32 only): `crypto.subtle.digest`.
//!
//! Native code (BoringSSL, with the CPU's SHA instructions) hashes a 30 MB shard in a few
//! milliseconds; the portable `sha2` crate compiled to wasm takes ~10× longer. Every warm model
//! load hashes every shard twice (the service worker before serving it, the engine worker before
//! using it), so this is most of what a load from IndexedDB costs. Downloads still hash as they
//! stream ([`crate::download`]): WebCrypto has no incremental digest.

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::idb::js_reason;
use crate::{ContentHash, SwError};

/// The SHA-256 of `bytes` (a view on JS memory: no copy into wasm is needed).
pub async fn sha256(bytes: &Uint8Array) -> Result<ContentHash, SwError> {
    let failed = |e: JsValue| SwError::Storage { op: "digest", key: "crypto.subtle".into(), reason: js_reason(&e) };
    let subtle = Reflect::get(&Reflect::get(&js_sys::global(), &"crypto".into()).map_err(failed)?, &"subtle".into()).map_err(failed)?;
    let digest: Function = Reflect::get(&subtle, &"digest".into()).map_err(failed)?.dyn_into().map_err(failed)?;
    let promise: Promise = digest.call2(&subtle, &"SHA-256".into(), bytes).map_err(failed)?.dyn_into().map_err(failed)?;
    let buffer = JsFuture::from(promise).await.map_err(failed)?;
    ContentHash::parse(&hex::encode(Uint8Array::new(&buffer).to_vec()))
}
