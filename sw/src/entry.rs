//! Service-worker entry (wasm32 only): the thin shell around [`crate::serve`].
//!
//! `sw/js/accel-sw.js` registers the `install` / `activate` / `fetch` listeners synchronously
//! (browsers require that) and forwards each event here once the wasm has initialised. This
//! module supplies the network piece — a [`Network`] over the global `fetch` — plugs in the
//! IndexedDB store ([`crate::idb`]), and converts between web-sys objects and the crate's
//! types. It keeps no state beyond an open database handle: browsers stop idle service workers
//! at any time, so everything that matters lives in IndexedDB.

use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestCache, RequestInit, Response, ResponseInit, ServiceWorkerGlobalScope};

use crate::route::{route_request, Route};
use crate::serve::{serve, Fetched, Network, Served};
use crate::idb::{js_reason, IdbStore, FILE_STORE, SHELL_STORE};
use crate::store::{BlobStore, StoredBlob};
use crate::SwError;

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

impl Network for GlobalFetch {
    async fn get(&self, url: &str) -> Result<Fetched, SwError> {
        let offline = |e: JsValue| SwError::Network { url: url.to_owned(), reason: js_reason(&e) };
        let init = RequestInit::new();
        if self.reload {
            init.set_cache(RequestCache::Reload);
        }
        let response: Response = JsFuture::from(global().fetch_with_str_and_init(url, &init)).await.map_err(offline)?.unchecked_into();
        let content_type = response.headers().get("content-type").ok().flatten().unwrap_or_else(|| "application/octet-stream".into());
        let buffer = JsFuture::from(response.array_buffer().map_err(offline)?).await.map_err(offline)?;
        Ok(Fetched { status: response.status(), content_type, bytes: Uint8Array::new(&buffer).to_vec() })
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
    let store = match &route {
        Route::ModelFile { .. } => IdbStore::new(FILE_STORE),
        Route::AppShell { .. } => IdbStore::new(SHELL_STORE),
        Route::Passthrough => {
            let response = JsFuture::from(global().fetch_with_request(&request)).await?;
            return Ok(response.unchecked_into());
        }
    };
    match serve(&route, &url, &store, &GlobalFetch { reload: false }).await {
        Ok(served) => respond_served(&served),
        Err(err) => respond_error(&err),
    }
}
