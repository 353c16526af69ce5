//! How a routed request is answered: the caching strategies, written once against the
//! [`BlobStore`] and [`Network`] traits so they are tested natively and run unchanged in the
//! service worker.

use crate::route::Route;
use crate::store::{BlobStore, StoredBlob};
use crate::SwError;

/// A network answer, already read into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub status: u16,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The network as the service worker sees it. `Err` means no answer at all (offline, refused);
/// an HTTP error status is an `Ok` with that status.
#[allow(async_fn_in_trait)]
pub trait Network {
    type Body: ResponseBody;
    /// The whole body at once (app shell, manifests: small files).
    async fn get(&self, url: &str) -> Result<Fetched, SwError>;
    /// A streamed body, from byte `from` on (`Range: bytes=<from>-` when `from > 0`), for
    /// shards: verified as it streams and resumable.
    async fn open(&self, url: &str, from: u64) -> Result<Opened<Self::Body>, SwError>;
}

/// A response whose body is still arriving.
pub struct Opened<B> {
    pub status: u16,
    /// The first byte of a 206's `Content-Range` (`bytes <start>-<end>/<size>`).
    pub range_start: Option<u64>,
    pub body: B,
}

/// A body read chunk by chunk. `Ok(None)` is the normal end; `Err` a broken transfer
/// ([`SwError::Interrupted`]).
#[allow(async_fn_in_trait)]
pub trait ResponseBody {
    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, SwError>;
}

/// `bytes 100-199/1000` → 100.
pub fn content_range_start(header: &str) -> Option<u64> {
    let rest = header.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// Where the bytes of an answer came from; the entry reports it in the `x-accel-source` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Network,
    Store,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Network => "network",
            Source::Store => "store",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub blob: StoredBlob,
    pub source: Source,
    /// Set when the bytes were served but could not be stored (quota, storage error): the
    /// answer is still good, it just will not be there offline.
    pub store_error: Option<SwError>,
}

/// Answers `url` along `route`. `Route::Shard` is [`crate::shard_cache`]'s and
/// `Route::Passthrough` the entry's business (it forwards the original request untouched); both
/// are refused here.
pub async fn serve<S: BlobStore, N: Network>(route: &Route, url: &str, store: &S, net: &N) -> Result<Served, SwError> {
    match route {
        Route::ModelFile { key } => {
            if let Some(blob) = store.get(key).await? {
                return Ok(Served { blob, source: Source::Store, store_error: None });
            }
            let blob = expect_ok(url, net.get(url).await?)?;
            let store_error = store.put(key, &blob).await.err();
            Ok(Served { blob, source: Source::Network, store_error })
        }
        Route::AppShell { key } | Route::Manifest { key } => match net.get(url).await {
            Ok(fetched) => {
                let blob = expect_ok(url, fetched)?;
                let store_error = store.put(key, &blob).await.err();
                Ok(Served { blob, source: Source::Network, store_error })
            }
            Err(offline) => match store.get(key).await? {
                Some(blob) => Ok(Served { blob, source: Source::Store, store_error: None }),
                None => Err(offline),
            },
        },
        // Shards are the shard cache's; passthrough is forwarded untouched by the entry.
        Route::Shard { .. } | Route::Passthrough => Err(SwError::BadUrl { url: url.to_owned() }),
    }
}

fn expect_ok(url: &str, fetched: Fetched) -> Result<StoredBlob, SwError> {
    if fetched.status == 200 {
        Ok(StoredBlob { bytes: fetched.bytes, content_type: fetched.content_type })
    } else {
        Err(SwError::HttpStatus { url: url.to_owned(), status: fetched.status })
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::store::MemoryStore;
    use crate::testing::ScriptedNetwork;

    const URL: &str = "http://h/models/m/a.bin";

    fn model_route() -> Route {
        Route::ModelFile { key: "/models/m/a.bin".into() }
    }

    #[test]
    fn model_file_is_fetched_once_then_served_from_store_offline() {
        let (store, net) = (MemoryStore::new(), ScriptedNetwork::with(URL, 200, b"weights"));
        let first = block_on(serve(&model_route(), URL, &store, &net)).unwrap();
        assert_eq!((first.source, first.blob.bytes.as_slice()), (Source::Network, &b"weights"[..]));
        net.online.set(false);
        let second = block_on(serve(&model_route(), URL, &store, &net)).unwrap();
        assert_eq!((second.source, second.blob.bytes.as_slice()), (Source::Store, &b"weights"[..]));
        assert_eq!(net.requests.get(), 1, "a stored model file must not touch the network");
    }

    #[test]
    fn http_errors_are_named_and_never_stored() {
        let (store, net) = (MemoryStore::new(), ScriptedNetwork::with(URL, 500, b"oops"));
        let err = block_on(serve(&model_route(), URL, &store, &net)).unwrap_err();
        assert_eq!(err, SwError::HttpStatus { url: URL.into(), status: 500 });
        assert!(store.is_empty());
    }

    #[test]
    fn offline_and_uncached_is_a_network_error() {
        let (store, net) = (MemoryStore::new(), ScriptedNetwork::with(URL, 200, b"x"));
        net.online.set(false);
        let err = block_on(serve(&model_route(), URL, &store, &net)).unwrap_err();
        assert_eq!(err.name(), "NetworkError");
    }

    #[test]
    fn app_shell_prefers_network_and_falls_back_to_store() {
        let url = "http://h/index.html";
        let route = Route::AppShell { key: "/index.html".into() };
        let (store, net) = (MemoryStore::new(), ScriptedNetwork::with(url, 200, b"v1"));
        assert_eq!(block_on(serve(&route, url, &store, &net)).unwrap().source, Source::Network);
        // A new build on the server is served at once, and replaces the stored copy.
        net.files.borrow_mut().get_mut(url).unwrap().bytes = b"v2".to_vec();
        let fresh = block_on(serve(&route, url, &store, &net)).unwrap();
        assert_eq!((fresh.source, fresh.blob.bytes.as_slice()), (Source::Network, &b"v2"[..]));
        net.online.set(false);
        let offline = block_on(serve(&route, url, &store, &net)).unwrap();
        assert_eq!((offline.source, offline.blob.bytes.as_slice()), (Source::Store, &b"v2"[..]));
    }
}
