//! The worker's model runtime (`worker::runtime`), natively on real packed models: what the
//! browser's `loadModel` / `generate` / `embed` / `unloadModel` run, checked against the `accel`
//! CLI on the same pack (the browser side of the same check is tests/e2e/model.test.mjs).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, model_path, smollm2_gguf};
use worker::models::packed_source::PackedModel;
use worker::protocol::{GenerateRequest, ModelKind};
use worker::runtime::{LoadedModel, LoadedModels};

fn accel_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_accel")).args(args).output().expect("run accel");
    assert!(out.status.success(), "accel {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("accel --json prints JSON")
}

/// Packs `input` into a fresh scratch directory and returns the pack's path.
fn packed(input: &Path, name: &str, precision: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("accel-runtime-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    accel_json(&["pack", input.to_str().unwrap(), "--out", dir.to_str().unwrap(), "--name", name, "--precision", precision, "--json"]);
    dir
}

/// Loads the pack the way the worker's entry does: manifest bytes plus each shard's bytes.
fn load(models: &mut LoadedModels, dir: &Path) -> (String, ModelKind) {
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let pack = PackedModel::from_parts(&manifest, |info| worker::loader::map_file(&dir.join(sw::manifest::shard_path(&info.sha256)))).unwrap();
    let model = LoadedModel::from_packed(&pack).unwrap();
    let kind = model.kind();
    (models.insert(&pack.manifest.name, model), kind)
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    common::ids(value)
}

#[test]
fn a_loaded_text_model_generates_what_the_cli_generates() {
    let dir = packed(&smollm2_gguf(), "smollm2-135m", "keep");
    let mut models = LoadedModels::default();
    let (id, kind) = load(&mut models, &dir);
    assert_eq!((id.as_str(), kind), ("smollm2-135m#1", ModelKind::Text));

    let f = fixture("smollm2_once_upon.json");
    let prompt = f["prompt"].as_str().unwrap();
    let request = GenerateRequest { model_id: id.clone(), prompt: prompt.into(), max_tokens: Some(12), temperature: None, top_k: None, top_p: None, seed: None, chat: None };
    let out = models.generate(&request).unwrap();
    assert_eq!(out.prompt_token_ids, ids(&f["prompt_ids"]));
    assert_eq!(out.token_ids, ids(&f["greedy_ids"])[..12], "greedy by default, as the CLI");

    // Chat and sampling options mean what the CLI's flags mean.
    let question = "What is the capital of France?";
    let request = GenerateRequest { prompt: question.into(), temperature: Some(0.8), top_k: Some(40), top_p: Some(0.9), seed: Some(7), chat: Some(true), ..request };
    let out = models.generate(&request).unwrap();
    let cli = accel_json(&["generate", "--model", dir.to_str().unwrap(), "--prompt", question, "--chat", "--max-tokens", "12", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9", "--seed", "7", "--json"]);
    assert_eq!(out.prompt_token_ids, ids(&cli["prompt_token_ids"]));
    assert_eq!(out.token_ids, ids(&cli["token_ids"]));
    assert_eq!(out.text, cli["text"].as_str().unwrap());

    assert_eq!(models.embed(&id, &["a sentence".into()]).unwrap_err().name(), "InvalidParameterError");
    models.unload(&id).unwrap();
    assert!(models.is_empty());
    assert_eq!(models.generate(&request).unwrap_err().name(), "ModelNotLoadedError");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_loaded_embedding_model_embeds_what_the_cli_embeds() {
    let dir = packed(&model_path("minilm"), "minilm-l6", "f32");
    let mut models = LoadedModels::default();
    let (id, kind) = load(&mut models, &dir);
    assert_eq!(kind, ModelKind::Embedding);

    let f = fixture("minilm_three_sentences.json");
    let sentences: Vec<String> = serde_json::from_value(f["sentences"].clone()).unwrap();
    let out = models.embed(&id, &sentences).unwrap();
    let mut args = vec!["embed", "--model", dir.to_str().unwrap(), "--json"];
    args.extend(sentences.iter().map(String::as_str));
    let cli = accel_json(&args);
    // The CLI prints f32s; read back as f32 they are the runtime's exact values.
    let cli_vectors: Vec<Vec<f32>> = serde_json::from_value(cli["embeddings"].clone()).unwrap();
    assert_eq!((out.dim, cli["dim"].as_u64()), (384, Some(384)));
    assert_eq!(out.embeddings, cli_vectors, "the same code natively: identical vectors");

    let request = GenerateRequest { model_id: id.clone(), prompt: "hi".into(), max_tokens: None, temperature: None, top_k: None, top_p: None, seed: None, chat: None };
    assert_eq!(models.generate(&request).unwrap_err().name(), "InvalidParameterError");
    assert_eq!(models.embed(&id, &[]).unwrap_err().name(), "InvalidParameterError");
    std::fs::remove_dir_all(&dir).ok();
}

/// Hooks that record what `run_generation` reports, pause once and cancel after some tokens.
struct Recorder {
    tokens: Vec<worker::protocol::StreamToken>,
    metrics: Vec<worker::protocol::StreamMetrics>,
    steps: usize,
    cancel_after: Option<usize>,
    pause_at_step: Option<usize>,
}

impl worker::runtime::GenerationHooks for Recorder {
    fn on_token(&mut self, token: &worker::protocol::StreamToken) {
        self.tokens.push(token.clone());
    }
    fn on_metrics(&mut self, metrics: &worker::protocol::StreamMetrics) {
        self.metrics.push(metrics.clone());
    }
    async fn between_steps(&mut self) -> std::ops::ControlFlow<(), f64> {
        self.steps += 1;
        if self.cancel_after.is_some_and(|n| self.tokens.len() >= n) {
            return std::ops::ControlFlow::Break(());
        }
        // "Paused" for 250 ms of (pretend) wall clock: left out of the rates.
        std::ops::ControlFlow::Continue(if self.pause_at_step == Some(self.steps) { 250.0 } else { 0.0 })
    }
}

impl Recorder {
    fn new(cancel_after: Option<usize>, pause_at_step: Option<usize>) -> Self {
        Recorder { tokens: vec![], metrics: vec![], steps: 0, cancel_after, pause_at_step }
    }
}

/// Polls a future that never waits (the hooks above answer at once) to its end.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// The worker's step-by-step generation (what `generate` and `generateStream` run in the
/// browser) gives `generate`'s tokens, one event per token; a cancelled one stops early with
/// stop reason `cancelled`, and the model then generates the normal answer again.
#[test]
fn stepwise_generation_streams_the_same_tokens_and_cancels_cleanly() {
    use worker::generate::StopReason;
    use worker::loader::TextModel;
    use worker::runtime::{run_generation, METRICS_EVERY};
    use worker::tensor::SharedBytes;

    let text = TextModel::from_gguf(SharedBytes::from_vec(std::fs::read(smollm2_gguf()).unwrap()), "smollm2").unwrap();
    let mut models = LoadedModels::default();
    let id = models.insert("smollm2-135m", LoadedModel::Text(text));
    let f = fixture("smollm2_once_upon.json");
    let request = GenerateRequest { model_id: id.clone(), prompt: f["prompt"].as_str().unwrap().into(), max_tokens: Some(12), temperature: None, top_k: None, top_p: None, seed: None, chat: None };
    let whole = models.generate(&request).unwrap();
    assert_eq!(whole.token_ids, ids(&f["greedy_ids"])[..12]);

    let prepared = models.prepare_generation(&request).unwrap();
    let mut hooks = Recorder::new(None, Some(3));
    let streamed = block_on(run_generation(&prepared, &mut hooks)).unwrap();
    assert_eq!(streamed.token_ids, whole.token_ids);
    assert_eq!(streamed.text, whole.text);
    assert_eq!(streamed.stop_reason, StopReason::MaxTokens);
    assert_eq!(hooks.tokens.iter().map(|t| t.token_id).collect::<Vec<_>>(), whole.token_ids);
    assert_eq!(hooks.tokens.iter().map(|t| t.text.as_str()).collect::<String>(), whole.text);
    assert!(hooks.tokens.iter().enumerate().all(|(i, t)| t.index == i));
    assert!(hooks.tokens.windows(2).all(|w| w[1].timing.elapsed_ms >= w[0].timing.elapsed_ms));
    // One metrics report every METRICS_EVERY tokens, and a last one.
    assert_eq!(hooks.metrics.len(), 12 / METRICS_EVERY + 1);
    let last = hooks.metrics.last().unwrap();
    assert_eq!((last.tokens, last.paused_ms), (12, 250.0));
    assert!(hooks.steps >= 12, "it gives way between steps ({} times)", hooks.steps);

    let mut hooks = Recorder::new(Some(3), None);
    let cancelled = block_on(run_generation(&prepared, &mut hooks)).unwrap();
    assert_eq!(cancelled.stop_reason, StopReason::Cancelled);
    assert_eq!(cancelled.token_ids, whole.token_ids[..3]);
    assert_eq!(hooks.tokens.len(), 3);
    // Each run has its own KV cache: the next one gives the normal answer.
    assert_eq!(models.generate(&request).unwrap().token_ids, whole.token_ids);
    // Unloading while a prepared generation holds the model leaves that generation working.
    models.unload(&id).unwrap();
    assert_eq!(block_on(run_generation(&prepared, &mut Recorder::new(None, None))).unwrap().token_ids, whole.token_ids);
}

/// Progressive loading, natively: shards arrive one at a time into a model slot (as the
/// browser worker feeds it); a generation started once the minimum viable model is resident
/// runs its prompt through the layers as they arrive and gives the tokens of a fully loaded
/// model. Then the memory ledger and `unloadComponent`.
#[test]
fn a_generation_started_early_computes_as_layers_arrive_and_matches() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use worker::model_slot::LoadState;
    use worker::runtime::run_generation;

    // Small shards, so the model arrives in many steps.
    let dir = std::env::temp_dir().join(format!("accel-runtime-test-{}-progressive", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    accel_json(&["pack", smollm2_gguf().to_str().unwrap(), "--out", dir.to_str().unwrap(), "--name", "smollm2-135m", "--shard-mb", "4", "--json"]);
    let manifest_json = std::fs::read(dir.join("manifest.json")).unwrap();
    let manifest = sw::Manifest::parse(&manifest_json).unwrap();
    assert!(manifest.shards.len() >= 10, "{} shards", manifest.shards.len());

    let f = fixture("smollm2_once_upon.json");
    let mut models = LoadedModels::default();
    let (full_id, _) = load(&mut models, &dir);
    let request = |model_id: &str| GenerateRequest { model_id: model_id.into(), prompt: f["prompt"].as_str().unwrap().into(), max_tokens: Some(8), temperature: None, top_k: None, top_p: None, seed: None, chat: None };
    let reference = models.generate(&request(&full_id)).unwrap();

    // A memory limit below the model's bytes refuses it by name.
    assert_eq!(models.start_load(&manifest_json, Some(manifest.total_bytes / 2)).unwrap_err().name(), "MemoryLimitError");
    let slot = models.start_load(&manifest_json, None).unwrap();
    assert_eq!(slot.minimum_viable_components(), ["tokenizer", "embeddings", "layer.0"]);
    let mut shards = manifest.shards.iter().map(|info| (info.sha256.clone(), std::fs::read(dir.join(sw::manifest::shard_path(&info.sha256))).unwrap()));
    let mut arrived = Vec::new();
    while !slot.minimum_viable_components().iter().all(|c| slot.is_resident(c)) {
        let (hash, bytes) = shards.next().expect("the minimum viable model arrives before the last shard");
        arrived.extend(slot.add_shard(&hash, |a, b| bytes[a as usize..b as usize].to_vec()).unwrap());
    }
    assert!(!slot.complete());
    assert!(arrived.starts_with(&["tokenizer".to_string(), "embeddings".to_string(), "layer.0".to_string()]), "{arrived:?}");

    let prepared = models.prepare_generation(&request(&slot.model_id)).unwrap();
    let mut hooks = Recorder::new(None, None);
    let mut generation = std::pin::pin!(run_generation(&prepared, &mut hooks));
    let mut cx = Context::from_waker(Waker::noop());
    let mut last_shard_at = 0.0;
    let outcome = loop {
        if let Poll::Ready(out) = generation.as_mut().poll(&mut cx) {
            break out;
        }
        match shards.next() {
            Some((hash, bytes)) => {
                slot.add_shard(&hash, |a, b| bytes[a as usize..b as usize].to_vec()).unwrap();
                last_shard_at = worker::clock::epoch_ms();
                slot.changed.notify();
            }
            None if slot.state() == LoadState::Loading => slot.finish_load().unwrap(),
            None => panic!("the generation waits for nothing that is coming"),
        }
    };
    let progressive = outcome.unwrap();
    assert_eq!(progressive.token_ids, reference.token_ids, "the same tokens as a fully loaded model");
    let timings = progressive.timings.progressive.expect("a progressive run reports its layer timeline");
    assert_eq!(timings.layer_done_at_ms.len(), 30);
    assert!(timings.layer_done_at_ms[0] <= last_shard_at, "layer 0 ran before the last shard arrived");
    assert!(timings.waited_ms > 0.0);

    // The ledger: every component's buffer, about the pack's bytes (plus alignment gaps).
    let usage = slot.memory_usage();
    let packed: u64 = manifest.components.iter().map(|c| c.bytes).sum();
    assert!(usage.weights_bytes >= packed && (usage.weights_bytes as f64) < packed as f64 * 1.1, "{} vs {packed}", usage.weights_bytes);
    assert_eq!(usage.kv_cache_bytes, 0, "no generation runs now");
    assert!(usage.reduction > 0.5, "keep (Q4_1/Q8_0) is far smaller than f16: {}", usage.reduction);
    let layer = usage.components.iter().find(|c| c.name == "layer.29").unwrap().bytes;
    let freed = slot.unload_component("layer.29").unwrap();
    assert_eq!(freed, layer);
    assert_eq!(slot.memory_usage().weights_bytes, usage.weights_bytes - layer);
    assert!(!slot.resident_components().contains(&"layer.29".to_string()));
    let err = models.generate(&request(&slot.model_id)).unwrap_err();
    assert_eq!(err.name(), "ComponentNotLoadedError", "{err}");
    assert_eq!(slot.unload_component("layer.99").unwrap_err().name(), "InvalidParameterError");
}
