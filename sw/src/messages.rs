//! The cache's message API: what `acc.cache.*` in host-js asks the service worker over
//! `postMessage` (a `MessageChannel` port carries the reply and progress events).
//!
//! ```text
//! host → sw   {type: "list"} | {type: "evict", model} | {type: "clear"} | {type: "estimate"}
//!             {type: "pin", model} | {type: "unpin", model} | {type: "prefetch", url}
//!             {type: "configure", cacheSizeMB: number | null}
//! sw → host   {type: "progress", model, shard, index, count, loadedBytes, totalBytes, source}  (prefetch)
//!             {type: "result", value} | {type: "error", error: {name, message}}
//! ```
//!
//! `persist()` is not here: `navigator.storage.persist()` exists only in windows, so host-js
//! asks the browser itself.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::manifest::shard_path;
use crate::route::{storage_key, Route};
use crate::serve::{serve, Network, Served};
use crate::shard_cache::{Platform, ShardCache};
use crate::store::{BlobStore, RecordStore};
use crate::{Manifest, SwError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum CacheRequest {
    List,
    Evict { model: String },
    Clear,
    Estimate,
    Pin { model: String },
    Unpin { model: String },
    Prefetch { url: String },
    Configure {
        #[serde(rename = "cacheSizeMB")]
        cache_size_mb: Option<f64>,
    },
}

pub fn parse(message: &str) -> Result<CacheRequest, SwError> {
    serde_json::from_str(message).map_err(|e| SwError::CacheRequest { reason: format!("{e} in {message}") })
}

/// A manifest request: network-first with the stored copy as the offline fallback (`files`),
/// and, when the bytes are a valid manifest, the model is registered with the cache. Invalid
/// bytes are still served: the engine reports the named manifest error to the user.
pub async fn fetch_manifest<S: RecordStore, N: Network, P: Platform, F: BlobStore>(cache: &ShardCache<S, N, P>, files: &F, url: &str) -> Result<(Served, Result<Manifest, SwError>), SwError> {
    let served = serve(&Route::Manifest { key: storage_key(url)? }, url, files, &cache.net).await?;
    let manifest = Manifest::parse(&served.blob.bytes);
    if let Ok(manifest) = &manifest {
        cache.register_manifest(manifest, url).await?;
    }
    Ok((served, manifest))
}

/// Handles one request; `progress` receives prefetch's events.
pub async fn handle<S: RecordStore, N: Network, P: Platform, F: BlobStore>(cache: &ShardCache<S, N, P>, files: &F, request: CacheRequest, progress: impl Fn(Value)) -> Result<Value, SwError> {
    match request {
        CacheRequest::List => cache.list().await,
        CacheRequest::Evict { model } => cache.evict_model(&model).await,
        CacheRequest::Clear => cache.clear().await,
        CacheRequest::Estimate => cache.estimate().await,
        CacheRequest::Pin { model } => cache.set_pinned(&model, true).await,
        CacheRequest::Unpin { model } => cache.set_pinned(&model, false).await,
        CacheRequest::Configure { cache_size_mb } => cache.configure(cache_size_mb).await,
        CacheRequest::Prefetch { url } => prefetch(cache, files, &url, progress).await,
    }
}

/// Downloads a whole model for offline use: the manifest, then every shard through the cache.
async fn prefetch<S: RecordStore, N: Network, P: Platform, F: BlobStore>(cache: &ShardCache<S, N, P>, files: &F, url: &str, progress: impl Fn(Value)) -> Result<Value, SwError> {
    let manifest = fetch_manifest(cache, files, url).await?.1?;
    let base = url.rsplit_once('/').map_or(url, |(dir, _)| dir);
    let (mut loaded, mut not_stored, mut from_network) = (0u64, Vec::new(), 0u64);
    for (index, shard) in manifest.shards.iter().enumerate() {
        let answer = cache.shard(&shard.sha256, &format!("{base}/{}", shard_path(&shard.sha256))).await?;
        loaded += shard.bytes;
        if answer.source == crate::Source::Network {
            from_network += shard.bytes;
        }
        if let Some(reason) = &answer.not_stored {
            not_stored.push(json!({ "sha256": shard.sha256, "reason": reason }));
        }
        progress(json!({
            "type": "progress", "model": manifest.name, "shard": shard.sha256, "index": index,
            "count": manifest.shards.len(), "loadedBytes": loaded, "totalBytes": manifest.total_bytes,
            "source": answer.source.as_str(),
        }));
    }
    Ok(json!({ "model": manifest.name, "totalBytes": manifest.total_bytes, "downloadedBytes": from_network, "stored": not_stored.is_empty(), "notStored": not_stored }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_the_host_names() {
        assert_eq!(parse(r#"{"type":"configure","cacheSizeMB":12.5}"#).unwrap(), CacheRequest::Configure { cache_size_mb: Some(12.5) });
        assert_eq!(parse(r#"{"type":"configure","cacheSizeMB":null}"#).unwrap(), CacheRequest::Configure { cache_size_mb: None });
        assert_eq!(parse(r#"{"type":"evict","model":"m"}"#).unwrap(), CacheRequest::Evict { model: "m".into() });
        assert_eq!(parse(r#"{"type":"prefetch","url":"http://h/models/m/manifest.json"}"#).unwrap(), CacheRequest::Prefetch { url: "http://h/models/m/manifest.json".into() });
        for bad in [r#"{"type":"explode"}"#, r#"{"type":"evict"}"#, "nope", r#"{"model":"m"}"#] {
            assert_eq!(parse(bad).unwrap_err().name(), "CacheRequestError", "{bad}");
        }
    }
}
