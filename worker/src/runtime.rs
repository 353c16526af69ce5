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

use sw::ContentHash;

use crate::generate::{generate, GenerateParams};
use crate::loader::{TextModel, DEFAULT_SYSTEM_PROMPT};
use crate::models::bert::Embedder;
use crate::models::packed_source::PackedModel;
use crate::protocol::{Embeddings, GenerateRequest, GenerateResult, GenerateTimings, ModelKind, UnloadedModel};
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
#[derive(Default)]
pub struct LoadedModels {
    models: HashMap<String, LoadedModel>,
    loads: u64,
}

impl LoadedModels {
    /// Keeps `model` and returns its new id.
    pub fn insert(&mut self, name: &str, model: LoadedModel) -> String {
        self.loads += 1;
        let id = format!("{name}#{}", self.loads);
        self.models.insert(id.clone(), model);
        id
    }

    fn get(&self, model_id: &str) -> Result<&LoadedModel, WorkerError> {
        self.models.get(model_id).ok_or_else(|| WorkerError::ModelNotLoaded { model_id: model_id.to_owned() })
    }

    /// Runs [`GenerateRequest`] to completion (the worker's thread is busy meanwhile).
    pub fn generate(&self, request: &GenerateRequest) -> Result<GenerateResult, WorkerError> {
        let LoadedModel::Text(m) = self.get(&request.model_id)? else {
            return Err(wrong_kind(&request.model_id, "an embedding model: use embed, not generate"));
        };
        let params = generate_params(request);
        let system = request.chat.unwrap_or(false).then_some(DEFAULT_SYSTEM_PROMPT);
        let prompt_ids = m.encode_prompt(&request.prompt, request.chat.unwrap_or(false), system)?;
        // Too long a prompt still meets the full context, so it is refused as natively.
        let context = prompt_ids.len().saturating_add(params.max_tokens).min(DEFAULT_CONTEXT);
        let mut state = m.model.new_state(context);
        let out = generate(&m.model, &m.tokenizer, &mut state, &prompt_ids, &params, |_| ControlFlow::Continue(()))?;
        Ok(GenerateResult {
            prompt_token_ids: out.prompt_token_ids,
            token_ids: out.token_ids,
            text: out.text,
            stop_reason: out.stop_reason,
            timings: GenerateTimings {
                prefill_tokens_per_s: out.timings.prefill_tokens_per_s,
                decode_tokens_per_s: out.timings.decode_tokens_per_s,
                time_to_first_token_ms: out.timings.time_to_first_token_ms,
            },
        })
    }

    pub fn embed(&self, model_id: &str, texts: &[String]) -> Result<Embeddings, WorkerError> {
        let LoadedModel::Embedding(embedder) = self.get(model_id)? else {
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
