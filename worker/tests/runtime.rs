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
