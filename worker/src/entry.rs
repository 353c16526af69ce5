//! Dedicated-worker entry (wasm32 only).
//!
//! `worker/js/accel-worker.js` passes every host message here as a JSON string and posts back
//! the JSON reply. Nothing in here panics on input: malformed messages, failed fetches, bad
//! models and a missing WebGPU all come back as replies, so the worker survives every request.
//!
//! Loaded models live in a thread-local [`LoadedModels`] (the worker has one thread). A load
//! awaits its downloads without holding it, so other requests are answered meanwhile; the
//! model is added only once every shard is verified and the model built. `embed` runs
//! synchronously to the end. `generate` and `generateStream` run step by step
//! ([`run_generation`]) on their own reference to the model, yielding to the event loop between
//! steps (a `MessageChannel` round trip: no timer clamping), so the worker keeps answering —
//! `pause` / `resume` / `cancel` above all. A paused generation awaits a promise that `resume`
//! or `cancel` resolves: it computes nothing meanwhile.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Response, WorkerGlobalScope};

use crate::clock::now_ms;
use crate::model_slot::{LoadState, ModelSlot, TOKENIZER};
use crate::protocol::{self, AdapterSummary, Capabilities, ComponentInfo, FetchedFile, GenerateRequest, GenerateResult, LoadProgress, LoadStarted, LoadedModelInfo, LoadedShard, ModelKind, Reply, Request, ResidentComponents, StreamControlResult, StreamMetrics, StreamState, StreamToken, UnloadedComponent, WebGpuReport};
use crate::runtime::{embed_with, prepare_generation, run_generation, shard_url, GenerationHooks, LoadedModels};
use crate::WorkerError;

thread_local! {
    static MODELS: RefCell<LoadedModels> = RefCell::new(LoadedModels::default());
    /// The generations running now, by request id: what `pause` / `resume` / `cancel` reach.
    static RUNNING: RefCell<HashMap<u64, Rc<Control>>> = RefCell::new(HashMap::new());
    /// The worker's GPU device, acquired by the first `webgpu` load and shared by every model
    /// on the GPU; a lost one is dropped and the next load acquires a new device.
    #[cfg(feature = "gpu")]
    static GPU: RefCell<Option<std::sync::Arc<crate::gpu::GpuContext>>> = const { RefCell::new(None) };
}

/// Handles one host message (JSON) and returns the final reply (JSON). Progress events of a
/// `generateStream` are dropped; use [`handle_message_with_events`] to receive them.
#[wasm_bindgen]
pub async fn handle_message(message: String) -> String {
    handle_message_with_events(message, None).await
}

/// Handles one host message (JSON) and returns the final reply (JSON); `emit` is called with
/// each progress event (a JSON reply: `token`, `metrics`) before it.
#[wasm_bindgen]
pub async fn handle_message_with_events(message: String, emit: Option<Function>) -> String {
    let reply = match protocol::parse_request(&message) {
        Ok(envelope) => {
            let id = envelope.id;
            match envelope.request {
                Request::Capabilities => protocol::reply(id, Ok(capabilities().await)),
                Request::FetchFile { url } => protocol::reply(id, fetch_file(&url).await),
                Request::LoadModel { url, backend, max_memory_bytes } => protocol::reply(id, load_model(id, &url, backend.as_deref(), max_memory_bytes, emit.as_ref()).await),
                Request::Generate(request) => protocol::reply(id, generate(id, &request, None).await),
                Request::GenerateStream(request) => protocol::reply(id, generate(id, &request, emit).await),
                Request::Pause { target } => protocol::reply(id, control(target, Command::Pause)),
                Request::Resume { target } => protocol::reply(id, control(target, Command::Resume)),
                Request::Cancel { target, reason: _ } => protocol::reply(id, control(target, Command::Cancel)),
                Request::Embed { model_id, texts } => protocol::reply(id, embed(&model_id, &texts).await),
                Request::UnloadModel { model_id } => protocol::reply(id, MODELS.with(|m| m.borrow_mut().unload(&model_id))),
                Request::WaitForComponents { model_id, components } => protocol::reply(id, wait_for_components(&model_id, &components).await),
                Request::UnloadComponent { model_id, component } => protocol::reply(
                    id,
                    slot(&model_id).and_then(|s| s.unload_component(&component)).map(|freed_bytes| UnloadedComponent { model_id, component, freed_bytes }),
                ),
                Request::MemoryUsage { model_id } => protocol::reply(id, slot(&model_id).map(|s| s.memory_usage())),
                Request::PerformanceMetrics { model_id } => protocol::reply(id, slot(&model_id).map(|s| s.metrics.borrow().clone())),
            }
        }
        // Without an id the host cannot route the reply; id 0 is reserved for exactly this.
        Err((id, err)) => Reply::Error { id: id.unwrap_or(0), error: (&err).into() },
    };
    serde_json::to_string(&reply).unwrap_or_else(|e| {
        format!(r#"{{"id":0,"type":"error","error":{{"name":"ProtocolError","message":"cannot encode reply: {e}"}}}}"#)
    })
}

/// Sends one event reply (JSON) to the host, when it listens.
fn emit_reply(emit: Option<&Function>, reply: &Reply) {
    if let (Some(emit), Ok(json)) = (emit, serde_json::to_string(reply)) {
        let _ = emit.call1(&JsValue::NULL, &JsValue::from_str(&json));
    }
}

/// What `pause` / `resume` / `cancel` set for one running generation.
#[derive(Default)]
struct Control {
    paused: Cell<bool>,
    cancelled: Cell<bool>,
    /// Resolves the promise a paused generation awaits (set while it waits).
    wake: RefCell<Option<Function>>,
}

impl Control {
    fn wake(&self) {
        if let Some(resolve) = self.wake.borrow_mut().take() {
            let _ = resolve.call0(&JsValue::NULL);
        }
    }
}

enum Command {
    Pause,
    Resume,
    Cancel,
}

fn control(target: u64, command: Command) -> Result<StreamControlResult, WorkerError> {
    let control = RUNNING.with(|r| r.borrow().get(&target).cloned()).ok_or(WorkerError::StreamNotFound { target })?;
    match command {
        Command::Pause => control.paused.set(true),
        Command::Resume => {
            control.paused.set(false);
            control.wake();
        }
        Command::Cancel => {
            control.cancelled.set(true);
            control.wake();
        }
    }
    let state = if control.cancelled.get() {
        StreamState::Cancelled
    } else if control.paused.get() {
        StreamState::Paused
    } else {
        StreamState::Generating
    };
    Ok(StreamControlResult { target, state })
}

fn slot(model_id: &str) -> Result<Rc<ModelSlot>, WorkerError> {
    MODELS.with(|m| m.borrow().slot(model_id))
}

async fn wait_for_components(model_id: &str, components: &[String]) -> Result<ResidentComponents, WorkerError> {
    let slot = slot(model_id)?;
    let names: Vec<&str> = components.iter().map(String::as_str).collect();
    slot.wait_for(&names).await?;
    Ok(ResidentComponents { model_id: model_id.to_owned(), resident: slot.resident_components() })
}

/// Embeds once the whole model is resident (an embedding model needs every layer).
async fn embed(model_id: &str, texts: &[String]) -> Result<protocol::Embeddings, WorkerError> {
    let model = slot(model_id)?.wait_ready().await?;
    embed_with(&model, model_id, texts)
}

/// Runs a generation registered under its request id (so it can be paused and cancelled),
/// sending `token` / `metrics` events through `emit` when given. A model still loading is
/// used as it arrives: the prompt goes through each layer once that layer is resident.
async fn generate(id: u64, request: &GenerateRequest, emit: Option<Function>) -> Result<GenerateResult, WorkerError> {
    let slot = slot(&request.model_id)?;
    if slot.kind() == ModelKind::Text && !slot.component_names().is_empty() {
        slot.wait_for(&[TOKENIZER]).await?;
    }
    let prepared = prepare_generation(&slot, request)?;
    let control = Rc::new(Control::default());
    RUNNING.with(|r| r.borrow_mut().insert(id, control.clone()));
    let mut hooks = WorkerHooks { id, emit, control };
    let outcome = run_generation(&prepared, &mut hooks).await;
    RUNNING.with(|r| r.borrow_mut().remove(&id));
    outcome
}

struct WorkerHooks {
    id: u64,
    emit: Option<Function>,
    control: Rc<Control>,
}

impl WorkerHooks {
    fn send(&self, reply: Reply) {
        emit_reply(self.emit.as_ref(), &reply);
    }
}

impl GenerationHooks for WorkerHooks {
    fn on_token(&mut self, token: &StreamToken) {
        self.send(Reply::Token { id: self.id, value: token.clone() });
    }

    fn on_metrics(&mut self, metrics: &StreamMetrics) {
        self.send(Reply::Metrics { id: self.id, value: metrics.clone() });
    }

    async fn between_steps(&mut self) -> ControlFlow<(), f64> {
        yield_to_event_loop().await;
        let mut paused_ms = 0.0;
        while self.control.paused.get() && !self.control.cancelled.get() {
            let since = now_ms();
            let control = self.control.clone();
            let resumed = Promise::new(&mut |resolve, _reject| {
                *control.wake.borrow_mut() = Some(resolve);
            });
            let _ = JsFuture::from(resumed).await;
            paused_ms += now_ms() - since;
        }
        if self.control.cancelled.get() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(paused_ms)
        }
    }
}

/// Lets every queued task run (host messages above all) before continuing: resolves from a
/// `MessageChannel` message, a fresh task that, unlike `setTimeout(0)`, is never clamped to 4 ms.
async fn yield_to_event_loop() {
    // The channel is held here until its message arrived, so it cannot be collected before.
    let Ok(channel) = web_sys::MessageChannel::new() else { return };
    let promise = Promise::new(&mut |resolve, _reject| {
        channel.port1().set_onmessage(Some(&resolve));
        if channel.port2().post_message(&JsValue::NULL).is_err() {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(promise).await;
    channel.port1().set_onmessage(None);
    channel.port1().close();
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

/// One successful download: the body (still in JS memory) and the headers the service worker
/// adds.
struct Download {
    body: Uint8Array,
    /// SHA-256 of the body, by WebCrypto (before the copy into wasm memory).
    sha256: Option<sw::ContentHash>,
    /// `x-accel-source`; `"network"` when no service worker answered.
    source: String,
    /// `x-accel-not-stored`: why the service worker could not keep it.
    not_stored: Option<String>,
}

/// GETs `url`. A non-2xx answer is an error named by the service worker when it named one
/// (`x-accel-error`, see [`WorkerError::from_failed_fetch`]), else a `FetchError`.
async fn download(url: &str, digest: bool) -> Result<Download, WorkerError> {
    let response = response_of(url, start_fetch(url)).await?;
    read_body(url, response, digest).await
}

/// Sends a GET for `url`; the request is on its way when this returns.
fn start_fetch(url: &str) -> JsFuture {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    JsFuture::from(scope.fetch_with_str(url))
}

/// The response to a started fetch (headers; the body may still be arriving).
async fn response_of(url: &str, pending: JsFuture) -> Result<Response, WorkerError> {
    let response = pending.await.map_err(|e| WorkerError::Fetch { url: url.to_owned(), reason: js_message(&e) })?;
    Ok(response.unchecked_into())
}

async fn read_body(url: &str, response: Response, digest: bool) -> Result<Download, WorkerError> {
    let failed = |reason: String| WorkerError::Fetch { url: url.to_owned(), reason };
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let body = async {
        let buffer = response.array_buffer().map_err(|e| failed(js_message(&e)))?;
        Ok::<_, WorkerError>(Uint8Array::new(&JsFuture::from(buffer).await.map_err(|e| failed(js_message(&e)))?))
    };
    if !response.ok() {
        // The body only refines the message; a body that cannot be read leaves it out.
        let bytes = body.await.map(|b| b.to_vec()).unwrap_or_default();
        return Err(WorkerError::from_failed_fetch(url, response.status(), header("x-accel-error").as_deref(), &bytes));
    }
    let body = body.await?;
    let sha256 = if digest { Some(sw::webcrypto::sha256(&body).await?) } else { None };
    Ok(Download { body, sha256, source: header("x-accel-source").unwrap_or_else(|| "network".into()), not_stored: header("x-accel-not-stored") })
}

/// Where a load's generations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Wasm,
    WebGpu,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Wasm => "wasm",
            Backend::WebGpu => "webgpu",
        }
    }
}

/// The backend a load runs on, or why the asked one cannot run. `auto` picks WebGPU when the
/// adapter is real hardware; a software adapter (`isFallbackAdapter`, e.g. SwiftShader) is
/// slower than the WASM SIMD CPU backend, so `auto` runs on the CPU there — `webgpu` still
/// gets it when asked for by name.
async fn choose_backend(backend: Option<&str>) -> Result<Backend, WorkerError> {
    match backend.unwrap_or("auto") {
        "wasm" | "cpu" => Ok(Backend::Wasm),
        "auto" => {
            let navigator = get(&js_sys::global(), "navigator");
            let report = probe_webgpu(&navigator).await;
            let hardware = report.adapter.is_some_and(|a| !a.is_fallback_adapter);
            if cfg!(feature = "gpu") && hardware && gpu_context().await.is_ok() {
                Ok(Backend::WebGpu)
            } else {
                Ok(Backend::Wasm)
            }
        }
        name @ ("webgpu" | "gpu") => match gpu_context().await {
            Ok(_) => Ok(Backend::WebGpu),
            Err(WorkerError::BackendUnavailable { reason, .. }) => Err(WorkerError::BackendUnavailable { backend: name.to_owned(), reason: format!("{reason}; load with backend 'wasm' (or 'auto')") }),
            Err(other) => Err(other),
        },
        other => Err(WorkerError::InvalidParameter { reason: format!("unknown backend {other:?}; use 'auto', 'wasm' or 'webgpu'") }),
    }
}

/// The worker's GPU device (acquired once; again after a loss).
#[cfg(feature = "gpu")]
async fn gpu_context() -> Result<std::sync::Arc<crate::gpu::GpuContext>, WorkerError> {
    if let Some(ctx) = GPU.with(|g| g.borrow().clone()).filter(|ctx| !ctx.is_lost()) {
        return Ok(ctx);
    }
    let navigator = get(&js_sys::global(), "navigator");
    if let Some(reason) = probe_webgpu(&navigator).await.reason {
        return Err(WorkerError::BackendUnavailable { backend: "webgpu".into(), reason });
    }
    let ctx = crate::gpu::GpuContext::acquire().await?;
    GPU.with(|g| *g.borrow_mut() = Some(ctx.clone()));
    Ok(ctx)
}

#[cfg(not(feature = "gpu"))]
async fn gpu_context() -> Result<(), WorkerError> {
    let navigator = get(&js_sys::global(), "navigator");
    let reason = probe_webgpu(&navigator).await.reason.unwrap_or_else(|| "this build of the engine has no WebGPU backend (built without the `webgpu` feature)".into());
    Err(WorkerError::BackendUnavailable { backend: "webgpu".into(), reason })
}

/// Uploads a loaded text model to the GPU: every weight, the KV cache for the default context
/// and the activations, with every pipeline compiled and warmed up.
#[cfg(feature = "gpu")]
async fn upload_to_gpu(slot: &ModelSlot) -> Result<crate::protocol::GpuLoadInfo, WorkerError> {
    let model = slot.ready().ok_or_else(|| WorkerError::ComponentNotLoaded { model_id: slot.model_id.clone(), component: "the whole model".into() })?;
    let crate::runtime::LoadedModel::Text(m) = &*model else {
        return Err(WorkerError::BackendUnavailable { backend: "webgpu".into(), reason: "embedding models run on the CPU backend only; load with backend 'wasm'".into() });
    };
    let ctx = gpu_context().await?;
    let gpu = crate::gpu::GpuLlama::load(ctx, &m.model, crate::runtime::DEFAULT_CONTEXT).await?;
    let r = &gpu.report;
    let info = crate::protocol::GpuLoadInfo { adapter: r.adapter.clone(), load_ms: r.load_ms, pipeline_ms: r.pipeline_ms, pipelines: r.pipelines, bytes: r.total_bytes, context: gpu.context() };
    slot.move_to_gpu(gpu);
    Ok(info)
}

/// Downloads the manifest at `url`, registers the model (a `started` event: its id is usable
/// from now on), then downloads every shard beside it in manifest order, verifies each
/// (WebCrypto; the service worker verified it too, but the engine checks what it runs),
/// copies each component's bytes into a buffer of its own and reports it resident.
async fn load_model(id: u64, url: &str, backend: Option<&str>, max_memory_bytes: Option<u64>, emit: Option<&Function>) -> Result<LoadedModelInfo, WorkerError> {
    let backend = choose_backend(backend).await?;
    let start = now_ms();
    let manifest_json = download(url, false).await?.body.to_vec();
    let manifest = sw::Manifest::parse(&manifest_json)?;
    if backend == Backend::WebGpu && manifest.architecture == "bert" {
        // Refused before any shard is fetched: the GPU kernels cover the Llama family only.
        return Err(WorkerError::BackendUnavailable { backend: "webgpu".into(), reason: format!("{} is an embedding model ({}); embedding models run on the CPU backend only: load with backend 'wasm' (or 'auto')", manifest.name, manifest.architecture) });
    }
    let slot = MODELS.with(|m| m.borrow_mut().start_load(&manifest_json, max_memory_bytes))?;
    if backend == Backend::WebGpu {
        slot.use_gpu();
    }
    let outcome = fill_slot(id, url, &slot, manifest, start, emit).await.map(|info| LoadedModelInfo { backend: backend.name().into(), ..info });
    #[cfg(feature = "gpu")]
    let outcome = match outcome {
        Ok(info) if backend == Backend::WebGpu => upload_to_gpu(&slot).await.map(|gpu| LoadedModelInfo { gpu: Some(gpu), load_ms: now_ms() - start, ..info }),
        other => other,
    };
    if let Err(err) = &outcome {
        // A failed load leaves nothing behind: waiters get the error, the id is gone.
        slot.fail(err.clone());
        MODELS.with(|m| {
            let mut models = m.borrow_mut();
            if models.slot(&slot.model_id).is_ok_and(|s| Rc::ptr_eq(&s, &slot)) {
                let _ = models.unload(&slot.model_id);
            }
        });
    }
    outcome
}

async fn fill_slot(id: u64, url: &str, slot: &Rc<ModelSlot>, manifest: sw::Manifest, start: f64, emit: Option<&Function>) -> Result<LoadedModelInfo, WorkerError> {
    let minimum_viable = slot.minimum_viable_components();
    let started = LoadStarted {
        model_id: slot.model_id.clone(),
        name: manifest.name.clone(),
        architecture: manifest.architecture.clone(),
        kind: slot.kind(),
        total_bytes: manifest.total_bytes,
        components: manifest.components.iter().map(|c| ComponentInfo { name: c.name.clone(), bytes: c.bytes, priority: c.priority }).collect(),
        minimum_viable: minimum_viable.clone(),
    };
    emit_reply(emit, &Reply::Started { id, value: started });

    let mut shards = Vec::with_capacity(manifest.shards.len());
    let mut loaded_bytes = 0u64;
    let urls: Vec<String> = manifest.shards.iter().map(|info| shard_url(url, &info.sha256)).collect();
    let mut pending = urls.first().map(|u| start_fetch(u));
    for (index, info) in manifest.shards.iter().enumerate() {
        let shard = &urls[index];
        let Some(this) = pending.take() else { break };
        // Headers mean the service worker is done with this shard (it answers only once the
        // bytes are verified and stored): ask for the next one now, so it reads shard i+1 while
        // this thread copies and hashes shard i. The service worker still sees one shard at a
        // time, in manifest order.
        let response = response_of(shard, this).await?;
        pending = urls.get(index + 1).map(|u| start_fetch(u));
        let got = read_body(shard, response, true).await?;
        if slot.state() == LoadState::Unloaded {
            return Err(WorkerError::Aborted { reason: format!("model {} was unloaded while it was loading", slot.model_id) });
        }
        if got.sha256.as_ref() != Some(&info.sha256) || got.body.length() as u64 != info.bytes {
            let actual = got.sha256.map_or_else(|| "no digest".into(), |h| h.to_string());
            return Err(sw::SwError::Integrity { what: shard_url(url, &info.sha256), expected: info.sha256.to_string(), actual }.into());
        }
        // Each component's range goes from JS memory straight into its own buffer.
        let body = &got.body;
        let completed = slot.add_shard(&info.sha256, |from, to| body.subarray(from as u32, to as u32).to_vec())?;
        loaded_bytes += info.bytes;
        let elapsed_ms = now_ms() - start;
        let progress = loaded_bytes as f64 / manifest.total_bytes.max(1) as f64;
        let memory_bytes = slot.memory_usage().weights_bytes;
        for name in &completed {
            let component_bytes = manifest.components.iter().find(|c| &c.name == name).map_or(0, |c| c.bytes);
            let event = LoadProgress {
                progress,
                component: name.clone(),
                component_bytes,
                loaded_bytes,
                total_bytes: manifest.total_bytes,
                elapsed_ms,
                eta_ms: if progress >= 1.0 { 0.0 } else { elapsed_ms * (1.0 - progress) / progress.max(1e-9) },
                memory_bytes,
                source: got.source.clone(),
            };
            emit_reply(emit, &Reply::Progress { id, value: event });
        }
        if slot.metrics.borrow().minimum_viable_ms == 0.0 && minimum_viable.iter().all(|c| slot.is_resident(c)) {
            slot.metrics.borrow_mut().minimum_viable_ms = elapsed_ms;
        }
        // Wake the requests waiting for these components (a progressive prefill above all).
        slot.changed.notify();
        shards.push(LoadedShard { sha256: info.sha256.to_string(), bytes: info.bytes, source: got.source, stored: got.not_stored.is_none(), not_stored: got.not_stored });
    }
    slot.finish_load()?;
    let load_ms = now_ms() - start;
    slot.metrics.borrow_mut().load_ms = load_ms;
    Ok(LoadedModelInfo { model_id: slot.model_id.clone(), name: manifest.name, architecture: manifest.architecture, kind: slot.kind(), total_bytes: manifest.total_bytes, load_ms, shards, backend: Backend::Wasm.name().into(), gpu: None })
}

/// `fetchFile` answers every failure as a `FetchError` (its contract since the plumbing
/// checks), with the service worker's name, when it gave one, in the message.
async fn fetch_file(url: &str) -> Result<FetchedFile, WorkerError> {
    let got = download(url, true).await.map_err(|err| match err {
        WorkerError::ServiceWorker { name, url, message } => WorkerError::Fetch { url, reason: format!("{message} ({name} from the service worker)") },
        other => other,
    })?;
    let sha256 = got.sha256.map_or_else(|| sw::sha256_hex(&got.body.to_vec()), |h| h.to_string());
    Ok(FetchedFile { url: url.to_owned(), bytes: got.body.length() as u64, sha256, source: got.source })
}
