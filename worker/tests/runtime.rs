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
