//! The models in one worker, and the requests that use them: `generate`, `embed`,
//! `unloadModel` — plus the pure parts of `loadModel` (where a shard lives, the slot a model
//! fills as it arrives: [`ModelSlot`]). No web-sys here: the wasm entry (`entry.rs`) fetches
//! and feeds verified bytes in, so everything below is tested natively on the real models.
//!
//! Generation goes through the same code as `accel generate` ([`Generator`],
//! [`encode_prompt`], the same defaults), so a request gives the same tokens in the browser as
//! the CLI gives natively — also when it starts before the model has fully arrived
//! ([`run_generation`] then runs the prompt through each layer as that layer becomes resident).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;

use sw::ContentHash;

use crate::clock::{epoch_ms, now_ms};
use crate::generate::{generate, GenerateParams, GeneratedToken, Generation, Generator, Step};
use crate::loader::{encode_prompt, TextModel, DEFAULT_SYSTEM_PROMPT};
use crate::model_slot::ModelSlot;
use crate::models::bert::Embedder;
use crate::models::llama::{LayerwiseForward, LlamaState};
use crate::models::packed_source::PackedModel;
use crate::protocol::{Embeddings, GenerateRequest, GenerateResult, GenerateTimings, ModelKind, PerformanceMetrics, ProgressiveTimings, StreamMetrics, StreamToken, TokenTiming, UnloadedModel};
use crate::tensor::{on_compute_pool, Activations};
use crate::WorkerError;

/// KV-cache positions at most, as `accel generate`'s default `--context`. A request allocates
/// only what it can use (prompt + `maxTokens`), which cannot change its tokens: the CLI's cache
/// is never filled past that either.
pub const DEFAULT_CONTEXT: usize = 2048;

/// A loaded model: what it can do decides which requests it answers.
pub enum LoadedModel {
    Text(TextModel),
    Embedding(Embedder),
}

impl LoadedModel {
    /// Builds the architecture the manifest names: `bert` embeds, anything else must be a
    /// Llama (`TextModel::from_packed` refuses other architectures by name).
    pub fn from_packed(pack: &PackedModel) -> Result<Self, WorkerError> {
        if pack.manifest.architecture == "bert" {
            Ok(LoadedModel::Embedding(Embedder::from_packed(pack)?))
        } else {
            Ok(LoadedModel::Text(TextModel::from_packed(pack)?))
        }
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            LoadedModel::Text(_) => ModelKind::Text,
            LoadedModel::Embedding(_) => ModelKind::Embedding,
        }
    }
}

/// The worker's models by id. Ids are `<name>#<n>`, n counting loads in this worker, so
/// loading the same model twice gives two independent ids and unloading one leaves the other.
/// A model is here from the moment its manifest is valid ([`ModelSlot`]: requests wait for the
/// components they need). Slots are reference-counted: a generation in progress keeps its model
/// alive (and never holds this map) across its yields, so an `unloadModel` meanwhile frees it
/// when it ends.
#[derive(Default)]
pub struct LoadedModels {
    models: HashMap<String, Rc<ModelSlot>>,
    loads: u64,
}

impl LoadedModels {
    /// Keeps a built `model` and returns its new id (native callers and tests).
    pub fn insert(&mut self, name: &str, model: LoadedModel) -> String {
        let id = self.next_id(name);
        self.models.insert(id.clone(), Rc::new(ModelSlot::from_model(id.clone(), model)));
        id
    }

    /// A new slot for the pack whose manifest is `manifest_json`, nothing resident yet;
    /// refused when its bytes would take the models' weights past `max_memory_bytes`.
    pub fn start_load(&mut self, manifest_json: &[u8], max_memory_bytes: Option<u64>) -> Result<Rc<ModelSlot>, WorkerError> {
        let manifest = sw::Manifest::parse(manifest_json)?;
        if let Some(limit) = max_memory_bytes {
            let held: u64 = self.models.values().map(|s| s.memory_usage().weights_bytes).sum();
            if held + manifest.total_bytes > limit {
                return Err(WorkerError::MemoryLimit { model: manifest.name, needed: manifest.total_bytes, total: held + manifest.total_bytes, limit });
            }
        }
        let name = manifest.name;
        let id = self.next_id(&name);
        let slot = Rc::new(ModelSlot::new(id.clone(), manifest_json)?);
        self.models.insert(id, slot.clone());
        Ok(slot)
    }

    fn next_id(&mut self, name: &str) -> String {
        self.loads += 1;
        format!("{name}#{}", self.loads)
    }

    pub fn slot(&self, model_id: &str) -> Result<Rc<ModelSlot>, WorkerError> {
        self.models.get(model_id).cloned().ok_or_else(|| WorkerError::ModelNotLoaded { model_id: model_id.to_owned() })
    }

    /// Everything a [`GenerateRequest`] needs before its first step, from `slot`'s tokenizer:
    /// the prompt's ids, the parameters and the context to allocate. The model itself may
    /// still be arriving ([`run_progressive_generation`]).
    pub fn prepare_generation(&self, request: &GenerateRequest) -> Result<PreparedGeneration, WorkerError> {
        prepare_generation(&self.slot(&request.model_id)?, request)
    }

    /// Runs [`GenerateRequest`] to completion in one go on a fully resident model (native
    /// callers; the worker runs [`run_generation`], which yields between steps).
    pub fn generate(&self, request: &GenerateRequest) -> Result<GenerateResult, WorkerError> {
        let prepared = self.prepare_generation(request)?;
        let model = prepared.model.clone().ok_or_else(|| WorkerError::ComponentNotLoaded { model_id: request.model_id.clone(), component: "the whole model".into() })?;
        let m = text_model(&model, &request.model_id)?;
        let mut state = m.model.new_state(prepared.context);
        let out = generate(&m.model, &m.tokenizer, &mut state, &prepared.prompt_ids, &prepared.params, |_| ControlFlow::Continue(()))?;
        Ok(generate_result(out, None))
    }

    /// Embeds with a fully resident embedding model.
    pub fn embed(&self, model_id: &str, texts: &[String]) -> Result<Embeddings, WorkerError> {
        let slot = self.slot(model_id)?;
        let model = slot.ready().ok_or_else(|| WorkerError::ComponentNotLoaded { model_id: model_id.to_owned(), component: "the whole model".into() })?;
        embed_with(&model, model_id, texts)
    }

    /// Drops the model; its weights are freed once no request uses them, and a load still
    /// running for it stops.
    pub fn unload(&mut self, model_id: &str) -> Result<UnloadedModel, WorkerError> {
        let slot = self.models.remove(model_id).ok_or_else(|| WorkerError::ModelNotLoaded { model_id: model_id.to_owned() })?;
        slot.unload();
        Ok(UnloadedModel { model_id: model_id.to_owned() })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// See [`LoadedModels::prepare_generation`].
pub fn prepare_generation(slot: &Rc<ModelSlot>, request: &GenerateRequest) -> Result<PreparedGeneration, WorkerError> {
    if slot.kind() != ModelKind::Text {
        return Err(wrong_kind(&request.model_id, "an embedding model: use embed, not generate"));
    }
    let tokenizer = slot.tokenizer().ok_or_else(|| WorkerError::ComponentNotLoaded { model_id: request.model_id.clone(), component: crate::model_slot::TOKENIZER.into() })?;
    let params = generate_params(request);
    let chat = request.chat.unwrap_or(false);
    let prompt_ids = encode_prompt(&tokenizer, &request.prompt, chat, chat.then_some(DEFAULT_SYSTEM_PROMPT))?;
    // Too long a prompt still meets the full context, so it is refused as natively.
    let context = prompt_ids.len().saturating_add(params.max_tokens).min(DEFAULT_CONTEXT);
    Ok(PreparedGeneration { slot: slot.clone(), model: slot.ready(), prompt_ids, params, context })
}

/// Embeds `texts` with a built embedding model.
pub fn embed_with(model: &LoadedModel, model_id: &str, texts: &[String]) -> Result<Embeddings, WorkerError> {
    let LoadedModel::Embedding(embedder) = model else {
        return Err(wrong_kind(model_id, "a text-generation model: use generate, not embed"));
    };
    if texts.is_empty() {
        return Err(WorkerError::InvalidParameter { reason: "embed needs at least one text".into() });
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embeddings = embedder.embed(&texts)?;
    Ok(Embeddings { dim: embeddings.first().map_or(0, Vec::len), embeddings })
}

fn text_model<'a>(model: &'a LoadedModel, model_id: &str) -> Result<&'a TextModel, WorkerError> {
    match model {
        LoadedModel::Text(m) => Ok(m),
        LoadedModel::Embedding(_) => Err(wrong_kind(model_id, "an embedding model: use embed, not generate")),
    }
}

/// A generation ready to run (from [`LoadedModels::prepare_generation`]).
pub struct PreparedGeneration {
    slot: Rc<ModelSlot>,
    /// The built model when it was ready at preparation: the generation keeps it even if the
    /// model is unloaded meanwhile.
    model: Option<Rc<LoadedModel>>,
    pub prompt_ids: Vec<u32>,
    pub params: GenerateParams,
    /// KV-cache positions to allocate.
    pub context: usize,
}

/// What [`run_generation`] asks of its caller between steps and tells it along the way.
#[allow(async_fn_in_trait)] // single-threaded (the worker's one thread): no Send bound wanted
pub trait GenerationHooks {
    /// A token was generated (not called for a final end-of-sequence token).
    fn on_token(&mut self, token: &StreamToken);
    /// Progress so far: after every [`METRICS_EVERY`] tokens, and once at the end.
    fn on_metrics(&mut self, metrics: &StreamMetrics);
    /// Between two steps: give way to other work (the worker yields to its event loop here
    /// and waits while paused). `Continue(ms)` goes on, `ms` being time spent paused (left out
    /// of the rates); `Break` cancels.
    async fn between_steps(&mut self) -> ControlFlow<(), f64>;
}

/// How many tokens between two [`GenerationHooks::on_metrics`] calls.
pub const METRICS_EVERY: usize = 8;

/// Runs a prepared generation step by step with a fresh KV cache, calling `hooks` between
/// steps. Gives the same tokens as [`LoadedModels::generate`] (the same [`Generator`]); a
/// cancelled run ends with stop reason `cancelled` and the tokens made so far.
///
/// While the model is still arriving, the prompt's first prefill chunk goes through the
/// layers as they become resident ([`ModelSlot::wait_for`] per layer); generation proper
/// starts once the last component is in. The tokens are the same either way.
pub async fn run_generation(prepared: &PreparedGeneration, hooks: &mut impl GenerationHooks) -> Result<GenerateResult, WorkerError> {
    #[cfg(feature = "gpu")]
    if prepared.slot.on_gpu() {
        return run_gpu_generation(prepared, hooks).await;
    }
    let slot = &prepared.slot;
    let model_id = slot.model_id.clone();
    let start = now_ms();
    let (model, mut state, prefix) = match prepared.model.clone() {
        Some(model) => {
            let state = text_model(&model, &model_id)?.model.new_state(prepared.context);
            (model, state, None)
        }
        None => {
            let mut state = LlamaState::new(&slot.llama_config()?, prepared.context);
            let prefix = progressive_prefill(prepared, &mut state).await?;
            (slot.wait_ready().await?, state, Some(prefix))
        }
    };
    let _kv = slot.hold_kv_cache(state.byte_len());
    let m = text_model(&model, &model_id)?;
    let prefilled = prefix.as_ref().map_or(0, |p| p.tokens);
    let mut generator = Generator::after_prefix(&m.model, &m.tokenizer, &mut state, &prepared.prompt_ids, &prepared.params, prefilled)?;
    if let Some(prefix) = &prefix {
        generator.prefilled_before(prefix.tokens, prefix.logits.clone(), start);
    }
    drive(slot, generator, hooks, prefix).await
}

/// The generation on the GPU model (a load with backend `webgpu`): it waits for the upload
/// (and for another generation on the same model to end: the KV cache is the GPU's), then runs
/// the same [`Generator`] over it. No progressive prefill: the GPU needs every weight first.
#[cfg(feature = "gpu")]
async fn run_gpu_generation(prepared: &PreparedGeneration, hooks: &mut impl GenerationHooks) -> Result<GenerateResult, WorkerError> {
    let slot = &prepared.slot;
    // The GPU model is all a generation needs besides the tokenizer (the engine's copies of
    // the weights are freed once it is uploaded: ModelSlot::move_to_gpu).
    let mut lease = slot.lease_gpu().await?;
    let tokenizer = slot.tokenizer().ok_or_else(|| WorkerError::ComponentNotLoaded { model_id: slot.model_id.clone(), component: crate::model_slot::TOKENIZER.into() })?;
    let gpu = lease.model()?;
    gpu.reset();
    let generator = Generator::on(Box::new(gpu), &tokenizer, &prepared.prompt_ids, &prepared.params)?;
    drive(slot, generator, hooks, None).await
}

/// Steps `generator` to the end, calling `hooks` between steps, and records the result.
async fn drive(slot: &ModelSlot, mut generator: Generator<'_>, hooks: &mut impl GenerationHooks, prefix: Option<PrefilledPrefix>) -> Result<GenerateResult, WorkerError> {
    let mut metrics = MetricsTracker::default();
    let mut first_token_at_ms = 0.0;
    loop {
        match generator.step().await? {
            Step::Done => break,
            Step::Prefilled { .. } => {}
            Step::Token(token) => {
                if token.index == 0 {
                    first_token_at_ms = epoch_ms();
                }
                hooks.on_token(&stream_token(&token));
                metrics.token(&token);
                if metrics.tokens % METRICS_EVERY == 0 {
                    hooks.on_metrics(&metrics.report());
                }
            }
        }
        if generator.is_done() {
            break;
        }
        match hooks.between_steps().await {
            ControlFlow::Continue(paused_ms) => {
                generator.exclude_ms(paused_ms);
                metrics.paused_ms += paused_ms;
            }
            ControlFlow::Break(()) => {
                generator.cancel();
                break;
            }
        }
    }
    let out = generator.finish()?;
    let mut last = metrics.report();
    last.decode_tokens_per_s = out.timings.decode_tokens_per_s;
    last.time_to_first_token_ms = out.timings.time_to_first_token_ms;
    hooks.on_metrics(&last);
    let progressive = prefix.map(|p| ProgressiveTimings { layer_done_at_ms: p.layer_done_at_ms, waited_ms: p.waited_ms, first_token_at_ms });
    let result = generate_result(out, progressive);
    slot.metrics.borrow_mut().record_generation(&result);
    Ok(result)
}

/// Waits for `components`; returns how long that took.
async fn timed_wait(slot: &ModelSlot, components: &[&str]) -> Result<f64, WorkerError> {
    let since = now_ms();
    slot.wait_for(components).await?;
    Ok(now_ms() - since)
}

/// The first prefill chunk, run through each layer as soon as it is resident.
struct PrefilledPrefix {
    tokens: usize,
    logits: Vec<f32>,
    layer_done_at_ms: Vec<f64>,
    waited_ms: f64,
}

async fn progressive_prefill(prepared: &PreparedGeneration, state: &mut LlamaState) -> Result<PrefilledPrefix, WorkerError> {
    let slot = &prepared.slot;
    let config = slot.llama_config()?;
    let tokens = &prepared.prompt_ids[..prepared.prompt_ids.len().min(prepared.params.prefill_chunk.max(1))];
    let mut waited_ms = timed_wait(slot, &["embeddings"]).await?;
    let embed = slot.matrix("token_embd.weight", config.vocab, config.d_model)?;
    // Compute in the order of the prompt; state is untouched if the prompt is refused here.
    let mut pass = LayerwiseForward::start(&config, &embed, state, tokens)?;
    drop(embed);
    let mut layer_done_at_ms = Vec::with_capacity(config.n_layer);
    let activations = Activations::default();
    for l in 0..config.n_layer {
        waited_ms += timed_wait(slot, &[&format!("layer.{l}")]).await?;
        let layer = slot.llama_layer(&config, l)?;
        on_compute_pool(|| pass.run_layer(&layer, state, activations));
        layer_done_at_ms.push(epoch_ms());
    }
    // The head (and anything else left) comes from the built model.
    let model = slot.wait_ready().await?;
    let m = text_model(&model, &slot.model_id)?;
    let logits = on_compute_pool(|| pass.finish(state, &m.model.out_norm, &m.model.lm_head, m.model.activations, false))?;
    Ok(PrefilledPrefix { tokens: tokens.len(), logits, layer_done_at_ms, waited_ms })
}

fn stream_token(token: &GeneratedToken) -> StreamToken {
    StreamToken { text: token.text.clone(), token_id: token.token_id, index: token.index, timing: TokenTiming { elapsed_ms: token.elapsed_ms, step_ms: token.step_ms } }
}

#[derive(Default)]
struct MetricsTracker {
    tokens: usize,
    first_ms: f64,
    last_ms: f64,
    paused_ms: f64,
    paused_before_first: f64,
}

impl MetricsTracker {
    fn token(&mut self, token: &GeneratedToken) {
        self.tokens += 1;
        if self.tokens == 1 {
            self.first_ms = token.elapsed_ms;
            self.paused_before_first = self.paused_ms;
        }
        self.last_ms = token.elapsed_ms;
    }

    fn report(&self) -> StreamMetrics {
        let decode_ms = self.last_ms - self.first_ms - (self.paused_ms - self.paused_before_first);
        StreamMetrics {
            tokens: self.tokens,
            elapsed_ms: self.last_ms,
            paused_ms: self.paused_ms,
            time_to_first_token_ms: self.first_ms - self.paused_before_first,
            decode_tokens_per_s: if decode_ms > 0.0 { (self.tokens - 1) as f64 * 1000.0 / decode_ms } else { 0.0 },
        }
    }
}

/// The protocol's result for a finished generation.
pub fn generate_result(out: Generation, progressive: Option<ProgressiveTimings>) -> GenerateResult {
    GenerateResult {
        prompt_token_ids: out.prompt_token_ids,
        token_ids: out.token_ids,
        text: out.text,
        stop_reason: out.stop_reason,
        timings: GenerateTimings {
            prefill_tokens_per_s: out.timings.prefill_tokens_per_s,
            decode_tokens_per_s: out.timings.decode_tokens_per_s,
            time_to_first_token_ms: out.timings.time_to_first_token_ms,
            progressive,
        },
    }
}

impl PerformanceMetrics {
    /// Counts a finished generation; its rates become the latest.
    pub fn record_generation(&mut self, result: &GenerateResult) {
        self.generations += 1;
        self.tokens_generated += result.token_ids.len() as u64;
        self.time_to_first_token_ms = result.timings.time_to_first_token_ms;
        self.prefill_tokens_per_s = result.timings.prefill_tokens_per_s;
        self.decode_tokens_per_s = result.timings.decode_tokens_per_s;
    }
}

fn wrong_kind(model_id: &str, what: &str) -> WorkerError {
    WorkerError::InvalidParameter { reason: format!("model {model_id} is {what}") }
}

/// The request's options over `accel generate`'s defaults (which are [`GenerateParams`]'s).
pub fn generate_params(request: &GenerateRequest) -> GenerateParams {
    let mut params = GenerateParams::default();
    let s = &mut params.sampler;
    params.max_tokens = request.max_tokens.unwrap_or(params.max_tokens);
    s.temperature = request.temperature.unwrap_or(s.temperature);
    s.top_k = request.top_k.unwrap_or(s.top_k);
    s.top_p = request.top_p.unwrap_or(s.top_p);
    s.seed = request.seed.or(s.seed);
    params
}

/// Where a packed model's shard is: `shards/<sha256>.bin` next to the manifest (its URL's
/// query and fragment are not part of the folder).
pub fn shard_url(manifest_url: &str, shard: &ContentHash) -> String {
    let path_end = manifest_url.find(['?', '#']).unwrap_or(manifest_url.len());
    let folder_end = manifest_url[..path_end].rfind('/').map_or(0, |i| i + 1);
    format!("{}{}", &manifest_url[..folder_end], sw::manifest::shard_path(shard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_straddling_two_shards_has_a_range_in_each() {
        use sw::manifest::{Component, FileEntry, ShardInfo, TensorEntry, TokenizerRef};
        let shard = |i: u8| ContentHash::of(&[i]);
        let tensor = |name: &str, s: u8| TensorEntry { name: name.into(), shape: vec![64], dtype: "f32".into(), shard: shard(s), offset: 0, length: 256 };
        let component = |name: &str, priority: u32, tensors: &[&str], files: &[&str]| Component {
            name: name.into(),
            priority,
            bytes: 256,
            tensors: tensors.iter().map(|t| t.to_string()).collect(),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        let manifest = sw::Manifest {
            format: sw::manifest::FORMAT.into(),
            version: sw::manifest::FORMAT_VERSION,
            name: "m".into(),
            architecture: "llama".into(),
            hyperparameters: serde_json::json!({}),
            precision: "keep".into(),
            tokenizer: TokenizerRef { component: "tokenizer".into(), file: "tokenizer.json".into(), config: "tokenizer_config.json".into() },
            // layer.0 straddles shards 0 and 1.
            tensors: vec![tensor("emb", 0), tensor("l0.a", 0), tensor("l0.b", 1), tensor("l1", 2), tensor("norm", 2)],
            files: vec![FileEntry { name: "tokenizer.json".into(), shard: shard(0), offset: 0, length: 10 }],
            components: vec![
                component("tokenizer", 0, &[], &["tokenizer.json"]),
                component("embeddings", 1, &["emb"], &[]),
                component("layer.0", 2, &["l0.a", "l0.b"], &[]),
                component("layer.1", 3, &["l1"], &[]),
                component("final_norm", 4, &["norm"], &[]),
            ],
            shards: (0..3).map(|i| ShardInfo { sha256: shard(i), bytes: 1024 }).collect(),
            total_bytes: 3072,
            mirrors: vec![],
        };
        let ranges = |name: &str| manifest.component_ranges(manifest.components.iter().find(|c| c.name == name).unwrap());
        let range = |s: u8, start: u64, end: u64| sw::manifest::ShardRange { shard: shard(s), start, end };
        assert_eq!(ranges("layer.0"), vec![range(0, 0, 256), range(1, 0, 256)]);
        // Tensors and files of one component in one shard make one range over both.
        assert_eq!(ranges("tokenizer"), vec![range(0, 0, 10)]);
        assert_eq!(ranges("final_norm"), vec![range(2, 0, 256)]);
    }

    #[test]
    fn shards_are_beside_the_manifest() {
        let hash = ContentHash::of(b"x");
        let expected = format!("https://h/models/m/shards/{hash}.bin");
        assert_eq!(shard_url("https://h/models/m/manifest.json", &hash), expected);
        assert_eq!(shard_url("https://h/models/m/manifest.json?v=2#top", &hash), expected);
        assert_eq!(shard_url("https://h/models/m/", &hash), expected);
    }

    #[test]
    fn absent_options_are_the_cli_defaults() {
        let request = GenerateRequest { model_id: "m".into(), prompt: "p".into(), max_tokens: None, temperature: None, top_k: None, top_p: None, seed: None, chat: None };
        assert_eq!(generate_params(&request), GenerateParams::default());
        let request = GenerateRequest { max_tokens: Some(5), temperature: Some(0.7), top_k: Some(40), top_p: Some(0.9), seed: Some(3), ..request };
        let params = generate_params(&request);
        assert_eq!((params.max_tokens, params.sampler.temperature, params.sampler.top_k, params.sampler.top_p, params.sampler.seed), (5, 0.7, 40, 0.9, Some(3)));
    }

    #[test]
    fn unknown_ids_are_named_errors() {
        let mut models = LoadedModels::default();
        let request = GenerateRequest { model_id: "gone#1".into(), prompt: "p".into(), max_tokens: None, temperature: None, top_k: None, top_p: None, seed: None, chat: None };
        assert_eq!(models.generate(&request).unwrap_err().name(), "ModelNotLoadedError");
        assert_eq!(models.embed("gone#1", &["a".into()]).unwrap_err().name(), "ModelNotLoadedError");
        assert_eq!(models.unload("gone#1").unwrap_err().name(), "ModelNotLoadedError");
    }
}
