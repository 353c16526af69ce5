//! The host ↔ worker protocol: every message type that crosses `postMessage`, as JSON.
//!
//! Mirrors `host-js/protocol.js` field for field; both sides' tests parse the shared examples in
//! `tests/fixtures/protocol.json`, so a rename on one side fails the other's tests.
//!
//! ```text
//! host → worker   {"id": 7, "type": "fetchFile", "url": "/models/x"}
//!                 {"id": 8, "type": "loadModel", "url": "https://site/models/smollm2-135m/manifest.json"}
//!                 {"id": 9, "type": "generate", "modelId": "smollm2-135m#1", "prompt": "..", "maxTokens": 12}
//!                 {"id": 10, "type": "embed", "modelId": "minilm-l6#2", "texts": [".."]}
//!                 {"id": 11, "type": "unloadModel", "modelId": "smollm2-135m#1"}
//!                 {"id": 12, "type": "generateStream", "modelId": "smollm2-135m#1", "prompt": ".."}
//!                 {"id": 13, "type": "pause", "target": 12}     (also resume; cancel takes "reason"?)
//! worker → host   {"id": 7, "type": "result", "value": {...}}
//!                 {"id": 7, "type": "error", "error": {"name": "FetchError", "message": "..."}}
//!                 {"id": 12, "type": "token", "value": {"text": " girl", "tokenId": 8180, "index": 0, "timing": {..}}}
//!                 {"id": 8, "type": "progress", "value": {"progress": 0.3, "component": "layer.4", ...}}   (loadModel)
//!                 {"id": 12, "type": "metrics", "value": {"tokens": 8, ..}}
//! ```
//!
//! Every request gets exactly one final reply (`result` or `error`); a `generateStream` gets
//! `token` events (one per generated token, in order) and `metrics` events before it. The
//! worker handles requests concurrently: a generation yields to the event loop between steps,
//! so `pause` / `resume` / `cancel` (and any other request) are answered while it runs.

use serde::{Deserialize, Serialize};

use crate::generate::StopReason;
use crate::WorkerError;

/// A request from the host, with the id its reply will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub id: u64,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// What this worker can run on: WebGPU adapter, WASM SIMD, threads.
    Capabilities,
    /// Fetch a file (through the service worker when one controls the page) and report its
    /// size, SHA-256 and where the bytes came from. The plumbing check under every model load.
    FetchFile { url: String },
    /// Download a packed model (`url`: absolute URL of its `manifest.json`; shards are read
    /// from `shards/<sha256>.bin` beside it), verify every shard and keep the model loaded.
    /// A `started` event ([`LoadStarted`]) comes as soon as the manifest is valid (the model id
    /// is usable from then on: requests wait for the components they need), then a `progress`
    /// event per resident component, then [`LoadedModelInfo`]. `backend`: `auto` (default),
    /// `wasm` / `cpu`, or `webgpu` / `gpu` (refused with `BackendUnavailableError` where it
    /// cannot run).
    LoadModel {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backend: Option<String>,
        /// Refuse the load (`MemoryLimitError`) when the engine's models would then hold more
        /// than this many bytes of weights (the host's `maxMemoryUsageMB`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_memory_bytes: Option<u64>,
    },
    /// Generate text with a loaded text model. Replies [`GenerateResult`].
    Generate(GenerateRequest),
    /// Sentence embeddings from a loaded embedding model. Replies [`Embeddings`].
    Embed { model_id: String, texts: Vec<String> },
    /// Free a loaded model. Replies [`UnloadedModel`].
    UnloadModel { model_id: String },
    /// Resolves once `components` of a model are resident (waits while it loads). Replies
    /// [`ResidentComponents`].
    WaitForComponents { model_id: String, components: Vec<String> },
    /// Frees one component of a loaded model. Replies [`UnloadedComponent`].
    UnloadComponent { model_id: String, component: String },
    /// The model's memory ledger. Replies [`MemoryUsage`].
    MemoryUsage { model_id: String },
    /// Load and generation timings of a model. Replies [`PerformanceMetrics`].
    PerformanceMetrics { model_id: String },
    /// [`Request::Generate`] with progress: a `token` event ([`StreamToken`]) per generated
    /// token and `metrics` events ([`StreamMetrics`]), then the [`GenerateResult`] (stop reason
    /// `cancelled` when cancelled).
    GenerateStream(GenerateRequest),
    /// Stop computing generation `target` (a `generate` or `generateStream` id) after its
    /// current step until `resume`. Replies [`StreamControlResult`].
    Pause { target: u64 },
    /// Continue paused generation `target`. Replies [`StreamControlResult`].
    Resume { target: u64 },
    /// End generation `target` after its current step; it replies its result so far with stop
    /// reason `cancelled`. Replies [`StreamControlResult`].
    Cancel {
        target: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// [`Request::Generate`]. Absent options take the native CLI's defaults (`accel generate`):
/// 128 tokens, temperature 0 (greedy), top-k and top-p off, the sampler's default seed, no
/// chat template — so the same request gives the same tokens in the browser and natively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateRequest {
    pub model_id: String,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Wrap the prompt in the model's chat template as one user turn, with the default system
    /// prompt (as `accel generate --chat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
}

/// A reply to request `id`: its result, or a named error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Reply {
    Result { id: u64, value: serde_json::Value },
    Error { id: u64, error: ErrorPayload },
    /// A progress event of a `generateStream`; the final `result` or `error` follows.
    Token { id: u64, value: StreamToken },
    Metrics { id: u64, value: StreamMetrics },
    /// A progress event of a `loadModel`: one per component whose bytes have all arrived and
    /// been verified, in manifest (load) order; the final `result` or `error` follows.
    Progress { id: u64, value: LoadProgress },
    /// The first event of a `loadModel`: the manifest is valid and the model has its id.
    Started { id: u64, value: LoadStarted },
}

/// See [`Reply::Started`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadStarted {
    pub model_id: String,
    pub name: String,
    pub architecture: String,
    pub kind: ModelKind,
    pub total_bytes: u64,
    /// In load order.
    pub components: Vec<ComponentInfo>,
    /// What `waitForMinimumViableModel` waits for: tokenizer, embeddings and the first layer
    /// of a text model; every component of an embedding model.
    pub minimum_viable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    pub name: String,
    pub bytes: u64,
    pub priority: u32,
}

/// Result of [`Request::WaitForComponents`]: every resident component, in load order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResidentComponents {
    pub model_id: String,
    pub resident: Vec<String>,
}

/// Result of [`Request::UnloadComponent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnloadedComponent {
    pub model_id: String,
    pub component: String,
    /// What the engine released (the component's buffers).
    pub freed_bytes: u64,
}

/// Result of [`Request::MemoryUsage`]: the engine's ledger for one model. Component bytes are
/// the buffers allocated for them (the tokenizer's includes its in-memory tables, measured by
/// the allocator); the KV cache is that of the generations running now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryUsage {
    pub model_id: String,
    /// weightsBytes + kvCacheBytes.
    pub total_bytes: u64,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    /// The pack's bytes (what was downloaded).
    pub packed_bytes: u64,
    /// The same tensors at f16: the size before quantization.
    pub original_bytes: u64,
    /// 1 − (weightsBytes + the GPU's weight bytes, on WebGPU) / originalBytes.
    pub reduction: f64,
    pub components: Vec<ComponentMemory>,
    /// Everything the engine's heap holds now (every model, buffers, caches), counted by its
    /// allocator; absent where nothing counts (native builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_heap_bytes: Option<u64>,
    /// GPU memory of the model (backend `webgpu`): its weights in their storage types, its KV
    /// cache for the whole context and its activations — allocated once at load. Not part of
    /// `totalBytes`, which counts the engine's own (wasm) memory.
    #[serde(default)]
    pub gpu_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentMemory {
    pub name: String,
    /// Held by the engine now (0 once unloaded).
    pub bytes: u64,
    /// The component's bytes in the pack.
    pub packed_bytes: u64,
    pub resident: bool,
}

/// Result of [`Request::PerformanceMetrics`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceMetrics {
    /// From the manifest request to every component resident (0 while loading).
    pub load_ms: f64,
    /// From the manifest request to the minimum viable model (0 while not yet).
    pub minimum_viable_ms: f64,
    /// Generations finished on this model.
    pub generations: u64,
    pub tokens_generated: u64,
    /// Of the last generation.
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// One component of a model arrived (see [`Reply::Progress`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadProgress {
    /// Fraction of the model's bytes arrived, 0..=1; the last event of a load says 1.
    pub progress: f64,
    /// The component now complete (`tokenizer`, `embeddings`, `layer.0`, …).
    pub component: String,
    /// That component's bytes.
    pub component_bytes: u64,
    pub loaded_bytes: u64,
    pub total_bytes: u64,
    /// Since the load started.
    pub elapsed_ms: f64,
    /// At the rate so far; 0 when done.
    pub eta_ms: f64,
    /// Shard bytes the engine holds now (what the load has taken so far).
    pub memory_bytes: u64,
    /// Where the shard that completed it came from: `store` (IndexedDB) or `network`.
    pub source: String,
}

/// One generated token of a `generateStream` (not sent for a final end-of-sequence token,
/// which only ends generation; the result's `tokenIds` has it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamToken {
    /// The text this token made visible (may be empty while a character is incomplete). The
    /// texts of all events, in order, make the result's `text`.
    pub text: String,
    pub token_id: u32,
    /// 0 for the first generated token.
    pub index: usize,
    pub timing: TokenTiming,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenTiming {
    /// Since generation started (wall clock, pauses included).
    pub elapsed_ms: f64,
    /// Spent computing this token (forward pass and sampling).
    pub step_ms: f64,
}

/// Progress of a `generateStream`: every few tokens, and once just before the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamMetrics {
    /// Tokens streamed so far.
    pub tokens: usize,
    /// Since generation started, at the last token (pauses included).
    pub elapsed_ms: f64,
    /// Time spent paused.
    pub paused_ms: f64,
    pub time_to_first_token_ms: f64,
    /// Tokens after the first per second of decoding (pauses left out).
    pub decode_tokens_per_s: f64,
}

/// Result of [`Request::Pause`], [`Request::Resume`] and [`Request::Cancel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamControlResult {
    pub target: u64,
    pub state: StreamState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamState {
    Generating,
    Paused,
    /// Ends after the current step; the target's result follows.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    pub name: String,
    pub message: String,
}

impl From<&WorkerError> for ErrorPayload {
    fn from(err: &WorkerError) -> Self {
        ErrorPayload { name: err.name().to_owned(), message: err.to_string() }
    }
}

/// Result of [`Request::Capabilities`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub webgpu: WebGpuReport,
    /// The CPU backend was compiled with 128-bit WASM SIMD.
    pub wasm_simd: bool,
    pub cross_origin_isolated: bool,
    pub hardware_concurrency: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebGpuReport {
    pub available: bool,
    /// Why not, when `available` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterSummary {
    pub vendor: String,
    pub architecture: String,
    pub description: String,
    pub is_fallback_adapter: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub max_storage_buffer_binding_size: f64,
    pub max_buffer_size: f64,
}

/// Result of [`Request::FetchFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchedFile {
    pub url: String,
    pub bytes: u64,
    pub sha256: String,
    /// `"store"` (IndexedDB, via the service worker), or `"network"`.
    pub source: String,
}

/// Result of [`Request::LoadModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedModelInfo {
    /// What later requests name this model by (unique in this worker).
    pub model_id: String,
    /// The manifest's `name`.
    pub name: String,
    /// The manifest's `architecture` (`llama`, `bert`).
    pub architecture: String,
    pub kind: ModelKind,
    /// Σ shard bytes.
    pub total_bytes: u64,
    /// From the manifest request to a model ready to run.
    pub load_ms: f64,
    pub shards: Vec<LoadedShard>,
    /// Where generations run: `wasm` (the CPU backend, WASM SIMD) or `webgpu`.
    pub backend: String,
    /// The model on the GPU (backend `webgpu`): the adapter and what the upload took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuLoadInfo>,
}

/// A model's upload to the GPU: weights, KV cache and activations allocated once, every
/// pipeline compiled (and warmed up) before the first request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuLoadInfo {
    /// Adapter, backend, binding limit, optional features.
    pub adapter: String,
    /// The whole upload (buffers, pipelines, warm-up).
    pub load_ms: f64,
    /// Of which compiling pipelines.
    pub pipeline_ms: f64,
    pub pipelines: usize,
    /// Bytes of GPU buffers: weights (in their storage types), KV cache, activations.
    pub bytes: u64,
    /// KV-cache positions allocated.
    pub context: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ModelKind {
    /// Generates text (`generate`).
    Text,
    /// Embeds sentences (`embed`).
    Embedding,
}

/// How one shard of a loaded model arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedShard {
    pub sha256: String,
    pub bytes: u64,
    /// The response's `x-accel-source`: `"store"` (IndexedDB, via the service worker) or
    /// `"network"` (also when no service worker answered).
    pub source: String,
    /// False when the response carried `x-accel-not-stored`: the service worker served the
    /// shard but could not keep it (quota, storage failure), so the next load downloads again.
    pub stored: bool,
    /// The `x-accel-not-stored` reason, when `stored` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_stored: Option<String>,
}

/// Result of [`Request::Generate`]: `accel generate --json`'s object, in camelCase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResult {
    pub prompt_token_ids: Vec<u32>,
    /// Every sampled id, including a final EOS.
    pub token_ids: Vec<u32>,
    /// The generated text (no EOS).
    pub text: String,
    /// Why generation ended: `eos`, `stopSequence`, `maxTokens`, `contextFull`, `cancelled`.
    pub stop_reason: StopReason,
    pub timings: GenerateTimings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateTimings {
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub time_to_first_token_ms: f64,
    /// Only for a generation that started before its model was fully resident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive: Option<ProgressiveTimings>,
}

/// How a generation overlapped its model's download (progressive loading).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressiveTimings {
    /// Wall-clock time (ms since the Unix epoch, comparable with a server's log) at which the
    /// prompt's pass through each layer finished, layer 0 first.
    pub layer_done_at_ms: Vec<f64>,
    /// Time spent waiting for layers to arrive.
    pub waited_ms: f64,
    /// Wall-clock time (ms since the epoch) of the first token.
    pub first_token_at_ms: f64,
}

/// Result of [`Request::Embed`]: one mean-pooled, L2-normalised vector per text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub dim: usize,
    pub embeddings: Vec<Vec<f32>>,
}

/// Result of [`Request::UnloadModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnloadedModel {
    pub model_id: String,
}

/// Parses one host message. The id is recovered even from a request we cannot parse, so the
/// host's pending promise still gets its (error) reply.
pub fn parse_request(message: &str) -> Result<RequestEnvelope, (Option<u64>, WorkerError)> {
    serde_json::from_str(message).map_err(|e| {
        let id = serde_json::from_str::<serde_json::Value>(message).ok().and_then(|v| v.get("id")?.as_u64());
        (id, WorkerError::Protocol { reason: e.to_string() })
    })
}

/// The reply for request `id` given the handler's outcome.
pub fn reply<T: Serialize>(id: u64, outcome: Result<T, WorkerError>) -> Reply {
    match outcome.and_then(|v| serde_json::to_value(v).map_err(|e| WorkerError::Protocol { reason: e.to_string() })) {
        Ok(value) => Reply::Result { id, value },
        Err(err) => Reply::Error { id, error: ErrorPayload::from(&err) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> serde_json::Value {
        let text = include_str!("../../tests/fixtures/protocol.json");
        serde_json::from_str(text).expect("tests/fixtures/protocol.json is valid JSON")
    }

    #[test]
    fn every_fixture_request_round_trips() {
        let f = fixtures();
        let requests = f["requests"].as_array().unwrap();
        assert!(!requests.is_empty());
        for example in requests {
            let parsed: RequestEnvelope = serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_eq!(serde_json::to_value(&parsed).unwrap(), *example);
        }
    }

    #[test]
    fn every_fixture_reply_round_trips() {
        let f = fixtures();
        for example in f["replies"].as_array().unwrap() {
            let parsed: Reply = serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_eq!(serde_json::to_value(&parsed).unwrap(), *example);
        }
        let caps: Capabilities = serde_json::from_value(f["capabilities"].clone()).unwrap();
        assert!(caps.webgpu.available);
        let fetched: FetchedFile = serde_json::from_value(f["fetchedFile"].clone()).unwrap();
        assert_eq!(fetched.sha256.len(), 64);
    }

    /// Each result example parses as its type and serialises back to exactly the example.
    fn round_trips<T: serde::de::DeserializeOwned + Serialize>(example: &serde_json::Value) -> T {
        let parsed: T = serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), *example);
        parsed
    }

    #[test]
    fn every_fixture_model_result_round_trips() {
        let f = fixtures();
        let loaded: LoadedModelInfo = round_trips(&f["loadedModel"]);
        assert_eq!(loaded.kind, ModelKind::Text);
        assert_eq!((loaded.shards[0].stored, loaded.shards[1].stored), (true, false));
        assert!(loaded.shards[1].not_stored.is_some());
        let generated: GenerateResult = round_trips(&f["generateResult"]);
        assert_eq!(generated.stop_reason, StopReason::MaxTokens);
        let embedded: Embeddings = round_trips(&f["embeddings"]);
        assert_eq!(embedded.embeddings[0].len(), embedded.dim);
        round_trips::<UnloadedModel>(&f["unloadedModel"]);
        // The stream replies' final result is a generate result, here a cancelled one.
        let stream_result = f["replies"].as_array().unwrap().iter().find(|r| r["id"] == 8 && r["type"] == "result").unwrap();
        let cancelled: GenerateResult = round_trips(&stream_result["value"]);
        assert_eq!(cancelled.stop_reason, StopReason::Cancelled);
        let not_found = WorkerError::StreamNotFound { target: 8 };
        let reply = reply::<()>(13, Err(not_found));
        assert_eq!(serde_json::to_value(&reply).unwrap(), *f["replies"].as_array().unwrap().last().unwrap(), "the fixture's message is the worker's");
        let control: StreamControlResult = round_trips(&f["streamControl"]);
        assert_eq!((control.target, control.state), (8, StreamState::Paused));
        round_trips::<ResidentComponents>(&f["residentComponents"]);
        assert_eq!(round_trips::<UnloadedComponent>(&f["unloadedComponent"]).freed_bytes, 2216448);
        let usage: MemoryUsage = round_trips(&f["memoryUsage"]);
        assert_eq!(usage.total_bytes, usage.weights_bytes + usage.kv_cache_bytes);
        assert!(!usage.components[1].resident);
        round_trips::<PerformanceMetrics>(&f["performanceMetrics"]);
        let progressive: GenerateResult = round_trips(&f["progressiveTimings"]);
        assert_eq!(progressive.timings.progressive.map(|p| p.layer_done_at_ms.len()), Some(2));
    }

    #[test]
    fn stream_requests_and_events_parse() {
        let envelope = parse_request(r#"{"id": 8, "type": "generateStream", "modelId": "m#1", "prompt": "hi", "maxTokens": 4}"#).unwrap();
        let Request::GenerateStream(g) = envelope.request else { panic!("{envelope:?}") };
        assert_eq!(g.max_tokens, Some(4));
        let envelope = parse_request(r#"{"id": 9, "type": "cancel", "target": 8, "reason": "user"}"#).unwrap();
        assert_eq!(envelope.request, Request::Cancel { target: 8, reason: Some("user".into()) });
        let envelope = parse_request(r#"{"id": 10, "type": "cancel", "target": 8}"#).unwrap();
        assert_eq!(envelope.request, Request::Cancel { target: 8, reason: None });
        let (_, err) = parse_request(r#"{"id": 11, "type": "pause"}"#).unwrap_err();
        assert!(err.to_string().contains("target"), "{err}");
        let token = Reply::Token { id: 8, value: StreamToken { text: " girl".into(), token_id: 8180, index: 0, timing: TokenTiming { elapsed_ms: 1.5, step_ms: 0.5 } } };
        let json = serde_json::to_value(&token).unwrap();
        assert_eq!(json["type"], "token");
        assert_eq!(json["value"]["tokenId"], 8180);
        assert_eq!(json["value"]["timing"]["elapsedMs"], 1.5);
    }

    #[test]
    fn generate_requests_parse_every_option_and_refuse_unknown_ones() {
        let envelope = parse_request(r#"{"id": 1, "type": "generate", "modelId": "m#1", "prompt": "hi", "maxTokens": 3, "temperature": 0, "topK": 1, "topP": 1, "seed": 7, "chat": false}"#).unwrap();
        let Request::Generate(g) = envelope.request else { panic!("{envelope:?}") };
        assert_eq!((g.max_tokens, g.temperature, g.top_k, g.top_p, g.seed, g.chat), (Some(3), Some(0.0), Some(1), Some(1.0), Some(7), Some(false)));
        // A misspelt option is refused, not silently ignored (it would change the output).
        let (id, err) = parse_request(r#"{"id": 2, "type": "generate", "modelId": "m#1", "prompt": "hi", "max_tokens": 3}"#).unwrap_err();
        assert_eq!((id, err.name()), (Some(2), "ProtocolError"));
        assert!(err.to_string().contains("max_tokens"), "{err}");
        let (_, err) = parse_request(r#"{"id": 3, "type": "embed", "modelId": "m#1"}"#).unwrap_err();
        assert!(err.to_string().contains("texts"), "{err}");
    }

    #[test]
    fn malformed_requests_keep_their_id_and_get_a_named_error() {
        let (id, err) = parse_request(r#"{"id": 9, "type": "launchMissiles"}"#).unwrap_err();
        assert_eq!((id, err.name()), (Some(9), "ProtocolError"));
        let (id, err) = parse_request("not json").unwrap_err();
        assert_eq!((id, err.name()), (None, "ProtocolError"));
        let (_, err) = parse_request(r#"{"id": 1, "type": "fetchFile"}"#).unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
    }

    #[test]
    fn reply_carries_result_or_named_error() {
        let ok = reply(3, Ok(FetchedFile { url: "/a".into(), bytes: 1, sha256: "0".repeat(64), source: "network".into() }));
        assert!(matches!(ok, Reply::Result { id: 3, .. }));
        let err = reply::<()>(4, Err(WorkerError::Fetch { url: "/a".into(), reason: "HTTP 404".into() }));
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["name"], "FetchError");
    }
}
