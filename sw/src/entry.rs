//! Service-worker entry (wasm32 only): the thin shell around [`crate::serve`],
//! [`crate::shard_cache`] and [`crate::messages`].
//!
//! `sw/js/accel-sw.js` registers the `install` / `activate` / `fetch` / `message` listeners
//! synchronously (browsers require that) and forwards each event here once the wasm has
//! initialised. This module supplies the platform pieces — a [`Network`] over the global
//! `fetch` (streamed bodies for shards), timers, `navigator.storage.estimate()` — plugs in the
//! IndexedDB stores ([`crate::idb`]), and converts between web-sys objects and the crate's
//! types. Its only state is the shard cache's in-memory bookkeeping (downloads in flight,
//! models loading); browsers stop idle service workers at any time, so everything that must
//! outlive that lives in IndexedDB.

use std::rc::Rc;

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, ReadableStreamDefaultReader, Request, RequestCache, RequestInit, Response, ResponseInit, ServiceWorkerGlobalScope};

use crate::download::Sleep;
use crate::idb::{js_reason, IdbRecords, IdbStore, FILE_STORE, SHELL_STORE};
use crate::messages::{self, fetch_manifest};
use crate::route::{route_request, Route};
use crate::serve::{content_range_start, serve, Fetched, Network, Opened, ResponseBody, Served};
use crate::shard_cache::{Platform, ShardAnswer, ShardCache, StorageEstimate};
use crate::store::{BlobStore, StoredBlob};
use crate::{ContentHash, SwError};

type Cache = ShardCache<IdbRecords, GlobalFetch, WebPlatform>;

thread_local! {
    /// One cache per service-worker instance, shared by every client's requests.
    static CACHE: Rc<Cache> = Rc::new(ShardCache::new(IdbRecords, GlobalFetch { reload: false }, WebPlatform));
}

fn cache() -> Rc<Cache> {
    CACHE.with(Rc::clone)
}

fn global() -> ServiceWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn scope_url() -> String {
    global().registration().scope()
}

/// The one place an [`SwError`] becomes a JS `Error` (with `name` set for callers to match on).
fn to_js_error(err: &SwError) -> JsValue {
    let js = js_sys::Error::new(&err.to_string());
    js.set_name(err.name());
    js.into()
}

/// The global `fetch`, bypassing the HTTP cache when `reload` is set (precaching must see the
/// build on the server, not a stale copy).
struct GlobalFetch {
    reload: bool,
}

impl GlobalFetch {
    async fn fetch(&self, url: &str, init: &RequestInit) -> Result<Response, SwError> {
        let offline = |e: JsValue| SwError::Network { url: url.to_owned(), reason: js_reason(&e) };
        if self.reload {
            init.set_cache(RequestCache::Reload);
        }
        Ok(JsFuture::from(global().fetch_with_str_and_init(url, init)).await.map_err(offline)?.unchecked_into())
    }
}

impl Network for GlobalFetch {
    type Body = StreamBody;

    async fn get(&self, url: &str) -> Result<Fetched, SwError> {
        let offline = |e: JsValue| SwError::Network { url: url.to_owned(), reason: js_reason(&e) };
        let response = self.fetch(url, &RequestInit::new()).await?;
        let content_type = response.headers().get("content-type").ok().flatten().unwrap_or_else(|| "application/octet-stream".into());
        let buffer = JsFuture::from(response.array_buffer().map_err(offline)?).await.map_err(offline)?;
        Ok(Fetched { status: response.status(), content_type, bytes: Uint8Array::new(&buffer).to_vec() })
    }

    async fn open(&self, url: &str, from: u64) -> Result<Opened<StreamBody>, SwError> {
        let init = RequestInit::new();
        // Shards are cached by us, in IndexedDB: keeping a second copy in the HTTP cache would
        // only double their footprint (and a cached 200 could answer a Range request).
        init.set_cache(RequestCache::NoStore);
        if from > 0 {
            let headers = Headers::new().map_err(|e| SwError::Network { url: url.to_owned(), reason: js_reason(&e) })?;
            let _ = headers.set("range", &format!("bytes={from}-"));
            init.set_headers(&headers);
        }
        let response = self.fetch(url, &init).await?;
        let range_start = response.headers().get("content-range").ok().flatten().and_then(|h| content_range_start(&h));
        let reader = response.body().and_then(|b| b.get_reader().dyn_into::<ReadableStreamDefaultReader>().ok());
        Ok(Opened { status: response.status(), range_start, body: StreamBody { url: url.to_owned(), reader, received: 0 } })
    }
}

/// A response body read through its stream reader, chunk by chunk.
pub struct StreamBody {
    url: String,
    reader: Option<ReadableStreamDefaultReader>,
    received: u64,
}

impl ResponseBody for StreamBody {
    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, SwError> {
        let Some(reader) = &self.reader else { return Ok(None) };
        let broken = |e: JsValue, received| SwError::Interrupted { url: self.url.clone(), received, reason: js_reason(&e) };
        let result = JsFuture::from(reader.read()).await.map_err(|e| broken(e, self.received))?;
        if Reflect::get(&result, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            return Ok(None);
        }
        let chunk = Reflect::get(&result, &"value".into()).ok().and_then(|v| v.dyn_into::<Uint8Array>().ok()).map(|v| v.to_vec()).unwrap_or_default();
        self.received += chunk.len() as u64;
        Ok(Some(chunk))
    }
}

/// Clock, timers and storage estimate of the service-worker global.
pub struct WebPlatform;

impl Sleep for WebPlatform {
    async fn sleep(&self, ms: u32) {
        let promise = Promise::new(&mut |resolve, _| {
            let _ = global().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms as i32);
        });
        let _ = JsFuture::from(promise).await;
    }
}

impl Platform for WebPlatform {
    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    async fn estimate(&self) -> Result<StorageEstimate, SwError> {
        let failed = |e: JsValue| SwError::Storage { op: "estimate", key: "navigator.storage".into(), reason: js_reason(&e) };
        let storage = Reflect::get(&global().navigator(), &"storage".into()).map_err(failed)?;
        let estimate: Function = Reflect::get(&storage, &"estimate".into()).map_err(failed)?.dyn_into().map_err(|v: JsValue| failed(v))?;
        let promise: Promise = estimate.call0(&storage).map_err(failed)?.dyn_into().map_err(|v: JsValue| failed(v))?;
        let result = JsFuture::from(promise).await.map_err(failed)?;
        let number = |key: &str| Reflect::get(&result, &key.into()).ok().and_then(|v| v.as_f64()).unwrap_or(0.0) as u64;
        Ok(StorageEstimate { usage: number("usage"), quota: number("quota") })
    }

    async fn sha256(&self, bytes: &[u8]) -> Result<ContentHash, SwError> {
        crate::webcrypto::sha256(&Uint8Array::from(bytes)).await
    }
}

fn respond(status: u16, content_type: &str, body: &[u8], extra: &[(&str, &str)]) -> Result<Response, JsValue> {
    let headers = Headers::new()?;
    headers.set("content-type", content_type)?;
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    let init = ResponseInit::new();
    init.set_status(status);
    init.set_headers(&headers);
    let body = Uint8Array::from(body);
    Response::new_with_opt_buffer_source_and_init(Some(&body), &init)
}

fn respond_shard(answer: &ShardAnswer) -> Result<Response, JsValue> {
    let mut extra = vec![("x-accel-source", answer.source.as_str())];
    // Header values must be ASCII on one line; the reason is ours, so it is.
    let reason = answer.not_stored.as_deref().map(|r| r.replace(['\r', '\n'], " "));
    if let Some(reason) = &reason {
        extra.push(("x-accel-not-stored", reason));
    }
    respond(200, "application/octet-stream", &answer.bytes, &extra)
}

fn respond_served(served: &Served) -> Result<Response, JsValue> {
    let mut extra = vec![("x-accel-source", served.source.as_str())];
    if let Some(err) = &served.store_error {
        extra.push(("x-accel-store-error", err.name()));
    }
    respond(200, &served.blob.content_type, &served.blob.bytes, &extra)
}

fn respond_error(err: &SwError) -> Result<Response, JsValue> {
    let status = match err {
        SwError::HttpStatus { status, .. } => *status,
        _ => 503,
    };
    let body = serde_json::json!({ "name": err.name(), "message": err.to_string() }).to_string();
    respond(status, "application/json", body.as_bytes(), &[("x-accel-error", err.name())])
}

/// `install`: stores every file the app-shell list names, so the app starts offline. The list
/// (`app-shell.json`, written when the site is staged) is optional: a page that embeds only the
/// worker script has no shell to precache.
#[wasm_bindgen]
pub async fn on_install(shell_list_url: String) -> Result<(), JsValue> {
    precache_shell(&shell_list_url).await.map_err(|e| to_js_error(&e))
}

async fn precache_shell(shell_list_url: &str) -> Result<(), SwError> {
    let net = GlobalFetch { reload: true };
    let list = net.get(shell_list_url).await?;
    if list.status == 404 {
        return Ok(());
    }
    if list.status != 200 {
        return Err(SwError::HttpStatus { url: shell_list_url.to_owned(), status: list.status });
    }
    let files: Vec<String> = serde_json::from_slice::<serde_json::Value>(&list.bytes)
        .ok()
        .and_then(|v| serde_json::from_value(v.get("files")?.clone()).ok())
        .ok_or_else(|| SwError::BadUrl { url: format!("{shell_list_url} (expected {{\"files\": [...]}})") })?;
    let store = IdbStore::new(SHELL_STORE);
    for file in files {
        let url = web_sys::Url::new_with_base(&file, shell_list_url).map_err(|_| SwError::BadUrl { url: file.clone() })?;
        let fetched = net.get(&url.href()).await?;
        if fetched.status != 200 {
            return Err(SwError::HttpStatus { url: url.href(), status: fetched.status });
        }
        store.put(&url.pathname(), &StoredBlob { bytes: fetched.bytes, content_type: fetched.content_type }).await?;
    }
    Ok(())
}

/// `fetch`: every request passes through here; [`route_request`] decides what we answer.
#[wasm_bindgen]
pub async fn on_fetch(request: Request) -> Result<Response, JsValue> {
    let has_range = request.headers().has("range").unwrap_or(false);
    let url = request.url();
    let route = route_request(&request.method(), &url, &scope_url(), has_range).unwrap_or(Route::Passthrough);
    let answer = match &route {
        Route::Shard { hash } => return cache().shard(hash, &url).await.map_or_else(|e| respond_error(&e), |a| respond_shard(&a)),
        Route::Manifest { .. } => fetch_manifest(&*cache(), &IdbStore::new(FILE_STORE), &url).await.map(|(served, _)| served),
        Route::ModelFile { .. } => serve(&route, &url, &IdbStore::new(FILE_STORE), &GlobalFetch { reload: false }).await,
        Route::AppShell { .. } => serve(&route, &url, &IdbStore::new(SHELL_STORE), &GlobalFetch { reload: false }).await,
        Route::Passthrough => {
            let response = JsFuture::from(global().fetch_with_request(&request)).await?;
            return Ok(response.unchecked_into());
        }
    };
    match answer {
        Ok(served) => respond_served(&served),
        Err(err) => respond_error(&err),
    }
}

/// `message`: a cache request from host-js (`acc.cache.*`). Resolves to the reply
/// (`{type: "result", value}` or `{type: "error", error: {name, message}}`); `progress` gets
/// prefetch's progress events. Never rejects: every failure is a named error reply.
#[wasm_bindgen]
pub async fn on_message(message: String, progress: Function) -> JsValue {
    let reply = match messages::parse(&message) {
        Ok(request) => {
            let report = |event: serde_json::Value| {
                if let Ok(event) = js_sys::JSON::parse(&event.to_string()) {
                    let _ = progress.call1(&JsValue::NULL, &event);
                }
            };
            match messages::handle(&*cache(), &IdbStore::new(FILE_STORE), request, report).await {
                Ok(value) => serde_json::json!({ "type": "result", "value": value }),
                Err(err) => serde_json::json!({ "type": "error", "error": { "name": err.name(), "message": err.to_string() } }),
            }
        }
        Err(err) => serde_json::json!({ "type": "error", "error": { "name": err.name(), "message": err.to_string() } }),
    };
    js_sys::JSON::parse(&reply.to_string()).unwrap_or(JsValue::NULL)
}
