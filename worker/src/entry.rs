//! Dedicated-worker entry (wasm32 only).
//!
//! `worker/js/accel-worker.js` passes every host message here as a JSON string and posts back
//! the JSON reply. Nothing in here panics on input: malformed messages, failed fetches and a
//! missing WebGPU all come back as replies, so the worker survives every request.

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Response, WorkerGlobalScope};

use crate::protocol::{self, AdapterSummary, Capabilities, FetchedFile, Reply, Request, WebGpuReport};
use crate::WorkerError;

/// Handles one host message (JSON) and returns the reply (JSON).
#[wasm_bindgen]
pub async fn handle_message(message: String) -> String {
    let reply = match protocol::parse_request(&message) {
        Ok(envelope) => match envelope.request {
            Request::Capabilities => protocol::reply(envelope.id, Ok(capabilities().await)),
            Request::FetchFile { url } => protocol::reply(envelope.id, fetch_file(&url).await),
        },
        // Without an id the host cannot route the reply; id 0 is reserved for exactly this.
        Err((id, err)) => Reply::Error { id: id.unwrap_or(0), error: (&err).into() },
    };
    serde_json::to_string(&reply).unwrap_or_else(|e| {
        format!(r#"{{"id":0,"type":"error","error":{{"name":"ProtocolError","message":"cannot encode reply: {e}"}}}}"#)
    })
}

fn get(target: &JsValue, key: &str) -> JsValue {
    Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn get_string(target: &JsValue, key: &str) -> String {
    get(target, key).as_string().unwrap_or_default()
}

fn js_message(err: &JsValue) -> String {
    err.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).or_else(|| err.as_string()).unwrap_or_else(|| format!("{err:?}"))
}

async fn capabilities() -> Capabilities {
    let global = js_sys::global();
    let navigator = get(&global, "navigator");
    Capabilities {
        webgpu: probe_webgpu(&navigator).await,
        wasm_simd: cfg!(target_feature = "simd128"),
        cross_origin_isolated: get(&global, "crossOriginIsolated").as_bool().unwrap_or(false),
        hardware_concurrency: get(&navigator, "hardwareConcurrency").as_f64().unwrap_or(1.0) as u32,
    }
}

/// Asks `navigator.gpu` for an adapter. Goes through `Reflect` rather than web-sys's WebGPU
/// bindings (still behind `web_sys_unstable_apis`); the GPU backend proper uses wgpu.
async fn probe_webgpu(navigator: &JsValue) -> WebGpuReport {
    let unavailable = |reason: String| WebGpuReport { available: false, reason: Some(reason), adapter: None };
    let gpu = get(navigator, "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return unavailable("navigator.gpu is missing: this browser has no WebGPU (or it is disabled)".into());
    }
    let Ok(request_adapter) = get(&gpu, "requestAdapter").dyn_into::<Function>() else {
        return unavailable("navigator.gpu.requestAdapter is not a function".into());
    };
    let adapter = match request_adapter.call0(&gpu).map(|p| p.dyn_into::<Promise>()) {
        Ok(Ok(promise)) => JsFuture::from(promise).await,
        Ok(Err(_)) => return unavailable("requestAdapter() did not return a promise".into()),
        Err(e) => Err(e),
    };
    let adapter = match adapter {
        Ok(a) if !a.is_null() && !a.is_undefined() => a,
        Ok(_) => return unavailable("navigator.gpu.requestAdapter() returned null: no usable GPU adapter".into()),
        Err(e) => return unavailable(format!("requestAdapter() failed: {}", js_message(&e))),
    };
    let info = get(&adapter, "info");
    let features = get(&adapter, "features");
    let has_feature = |name: &str| {
        get(&features, "has").dyn_into::<Function>().ok().and_then(|has| has.call1(&features, &name.into()).ok()).and_then(|v| v.as_bool()).unwrap_or(false)
    };
    let limits = get(&adapter, "limits");
    let fallback = get(&info, "isFallbackAdapter").as_bool().or_else(|| get(&adapter, "isFallbackAdapter").as_bool()).unwrap_or(false);
    WebGpuReport {
        available: true,
        reason: None,
        adapter: Some(AdapterSummary {
            vendor: get_string(&info, "vendor"),
            architecture: get_string(&info, "architecture"),
            description: get_string(&info, "description"),
            is_fallback_adapter: fallback,
            shader_f16: has_feature("shader-f16"),
            subgroups: has_feature("subgroups"),
            max_storage_buffer_binding_size: get(&limits, "maxStorageBufferBindingSize").as_f64().unwrap_or(0.0),
            max_buffer_size: get(&limits, "maxBufferSize").as_f64().unwrap_or(0.0),
        }),
    }
}

async fn fetch_file(url: &str) -> Result<FetchedFile, WorkerError> {
    let failed = |reason: String| WorkerError::Fetch { url: url.to_owned(), reason };
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let response: Response = JsFuture::from(scope.fetch_with_str(url)).await.map_err(|e| failed(js_message(&e)))?.unchecked_into();
    let header = |name: &str| response.headers().get(name).ok().flatten();
    if !response.ok() {
        let named = header("x-accel-error").map(|n| format!(" ({n} from the service worker)")).unwrap_or_default();
        return Err(failed(format!("HTTP {}{named}", response.status())));
    }
    let buffer = response.array_buffer().map_err(|e| failed(js_message(&e)))?;
    let bytes = Uint8Array::new(&JsFuture::from(buffer).await.map_err(|e| failed(js_message(&e)))?).to_vec();
    Ok(FetchedFile {
        url: url.to_owned(),
        bytes: bytes.len() as u64,
        sha256: sw::sha256_hex(&bytes),
        source: header("x-accel-source").unwrap_or_else(|| "network".into()),
    })
}
