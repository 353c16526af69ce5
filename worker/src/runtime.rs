//! The models loaded in one worker, and the requests that use them: `generate`, `embed`,
//! `unloadModel` — plus the pure parts of `loadModel` (where a shard lives, what the reply
//! says). No web-sys here: the wasm entry (`entry.rs`) does the fetching and hands over the
//! verified [`PackedModel`], so everything below is tested natively on the real models.
//!
//! Generation goes through the same code as `accel generate` ([`crate::generate::generate`],
//! [`TextModel::encode_prompt`], the same defaults), so a request gives the same tokens in the
//! browser as the CLI gives natively.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;

use sw::ContentHash;

use crate::generate::{generate, GenerateParams, GeneratedToken, Generation, Generator, Step};
use crate::loader::{TextModel, DEFAULT_SYSTEM_PROMPT};
use crate::models::bert::Embedder;
use crate::models::packed_source::PackedModel;
use crate::protocol::{Embeddings, GenerateRequest, GenerateResult, GenerateTimings, ModelKind, StreamMetrics, StreamToken, TokenTiming, UnloadedModel};
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

/// The worker's loaded models by id. Ids are `<name>#<n>`, n counting loads in this worker, so
/// loading the same model twice gives two independent ids and unloading one leaves the other.
/// Models are reference-counted: a generation in progress keeps its model alive (and never
/// holds this map) across its yields, so an `unloadModel` meanwhile frees it when it ends.
#[derive(Default)]
pub struct LoadedModels {
    models: HashMap<String, Rc<LoadedModel>>,
    loads: u64,
}

impl LoadedModels {
    /// Keeps `model` and returns its new id.
    pub fn insert(&mut self, name: &str, model: LoadedModel) -> String {
        self.loads += 1;
        let id = format!("{name}#{}", self.loads);
        self.models.insert(id.clone(), Rc::new(model));
        id
    }

    fn get(&self, model_id: &str) -> Result<&Rc<LoadedModel>, WorkerError> {
        self.models.get(model_id).ok_or_else(|| WorkerError::ModelNotLoaded { model_id: model_id.to_owned() })
    }

    /// Everything a [`GenerateRequest`] needs before its first step: the model (kept alive by
    /// the returned value), the prompt's ids, the parameters and the context to allocate.
    pub fn prepare_generation(&self, request: &GenerateRequest) -> Result<PreparedGeneration, WorkerError> {
        let model = self.get(&request.model_id)?.clone();
        let LoadedModel::Text(m) = &*model else {
            return Err(wrong_kind(&request.model_id, "an embedding model: use embed, not generate"));
        };
        let params = generate_params(request);
        let system = request.chat.unwrap_or(false).then_some(DEFAULT_SYSTEM_PROMPT);
        let prompt_ids = m.encode_prompt(&request.prompt, request.chat.unwrap_or(false), system)?;
        // Too long a prompt still meets the full context, so it is refused as natively.
        let context = prompt_ids.len().saturating_add(params.max_tokens).min(DEFAULT_CONTEXT);
        Ok(PreparedGeneration { model, prompt_ids, params, context })
    }

    /// Runs [`GenerateRequest`] to completion in one go (native callers; the worker runs
    /// [`run_generation`], which yields between steps).
    pub fn generate(&self, request: &GenerateRequest) -> Result<GenerateResult, WorkerError> {
        let prepared = self.prepare_generation(request)?;
        let m = prepared.text_model();
        let mut state = m.model.new_state(prepared.context);
        let out = generate(&m.model, &m.tokenizer, &mut state, &prepared.prompt_ids, &prepared.params, |_| ControlFlow::Continue(()))?;
        Ok(generate_result(out))
    }

    pub fn embed(&self, model_id: &str, texts: &[String]) -> Result<Embeddings, WorkerError> {
        let LoadedModel::Embedding(embedder) = &**self.get(model_id)? else {
            return Err(wrong_kind(model_id, "a text-generation model: use generate, not embed"));
        };
        if texts.is_empty() {
            return Err(WorkerError::InvalidParameter { reason: "embed needs at least one text".into() });
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embeddings = embedder.embed(&texts)?;
        Ok(Embeddings { dim: embeddings.first().map_or(0, Vec::len), embeddings })
    }

    /// Drops the model; its weights are freed once no request uses them.
    pub fn unload(&mut self, model_id: &str) -> Result<UnloadedModel, WorkerError> {
        self.models.remove(model_id).map(|_| UnloadedModel { model_id: model_id.to_owned() }).ok_or_else(|| WorkerError::ModelNotLoaded { model_id: model_id.to_owned() })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// A generation ready to run (from [`LoadedModels::prepare_generation`]).
pub struct PreparedGeneration {
    model: Rc<LoadedModel>,
    pub prompt_ids: Vec<u32>,
    pub params: GenerateParams,
    /// KV-cache positions to allocate.
    pub context: usize,
}

impl PreparedGeneration {
    fn text_model(&self) -> &TextModel {
        match &*self.model {
            LoadedModel::Text(m) => m,
            LoadedModel::Embedding(_) => unreachable!("prepare_generation only accepts text models"),
        }
    }
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
pub async fn run_generation(prepared: &PreparedGeneration, hooks: &mut impl GenerationHooks) -> Result<GenerateResult, WorkerError> {
    let m = prepared.text_model();
    let mut state = m.model.new_state(prepared.context);
    let mut generator = Generator::new(&m.model, &m.tokenizer, &mut state, &prepared.prompt_ids, &prepared.params)?;
    let mut metrics = MetricsTracker::default();
    loop {
        match generator.step()? {
            Step::Done => break,
            Step::Prefilled { .. } => {}
            Step::Token(token) => {
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
    Ok(generate_result(out))
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
pub fn generate_result(out: Generation) -> GenerateResult {
    GenerateResult {
        prompt_token_ids: out.prompt_token_ids,
        token_ids: out.token_ids,
        text: out.text,
        stop_reason: out.stop_reason,
        timings: GenerateTimings {
            prefill_tokens_per_s: out.timings.prefill_tokens_per_s,
            decode_tokens_per_s: out.timings.decode_tokens_per_s,
            time_to_first_token_ms: out.timings.time_to_first_token_ms,
        },
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

/// For each shard of `manifest` (in its order, the order a load fetches them), the components
/// that are complete once it has arrived: those whose last needed shard it is.
pub fn components_completed_by_shard(manifest: &sw::Manifest) -> Vec<Vec<&sw::manifest::Component>> {
    let position: HashMap<&ContentHash, usize> = manifest.shards.iter().enumerate().map(|(i, s)| (&s.sha256, i)).collect();
    let mut by_shard = vec![Vec::new(); manifest.shards.len()];
    for component in &manifest.components {
        if let Some(last) = manifest.component_shards(component).filter_map(|h| position.get(h)).max() {
            by_shard[*last].push(component);
        }
    }
    by_shard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_completes_with_its_last_shard_in_load_order() {
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
            // layer.0 straddles shards 0 and 1: it completes with shard 1.
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
        let names = |cs: &Vec<&Component>| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        let by_shard: Vec<Vec<String>> = components_completed_by_shard(&manifest).iter().map(names).collect();
        assert_eq!(by_shard, vec![vec!["tokenizer", "embeddings"], vec!["layer.0"], vec!["layer.1", "final_norm"]]);
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
