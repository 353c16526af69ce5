//! The `accel` binary as users run it: flags and `--json` shapes of BRIEF.md.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::process::Command;

use common::{model_path, smollm2_gguf};

fn accel(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_accel")).args(args).output().expect("run accel");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn generate_json_reports_ids_text_and_timings() {
    let gguf = smollm2_gguf();
    let (code, json, err) = accel(&["generate", "--model", gguf.to_str().unwrap(), "--prompt", "What is the capital of France?", "--chat", "--max-tokens", "12", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["text"], "The capital of France is Paris.", "{json}");
    assert_eq!(json["prompt_token_ids"].as_array().unwrap().len(), 37);
    assert_eq!(json["token_ids"].as_array().unwrap().last().unwrap(), 2, "ends on <|im_end|>");
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_ms"] {
        assert!(json["timings"][key].as_f64().unwrap_or(0.0) > 0.0, "timings.{key} in {json}");
    }
}

#[test]
fn logits_json_lists_the_top_tokens() {
    let gguf = smollm2_gguf();
    let (code, json, err) = accel(&["logits", "--model", gguf.to_str().unwrap(), "--prompt", "Once upon a time, there was a little", "--top", "3", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["top"][0][0], 8180, "\" girl\" first: {json}");
    assert_eq!(json["top"].as_array().unwrap().len(), 3);
}

#[test]
fn embed_json_gives_unit_vectors() {
    let dir = model_path("minilm");
    let (code, json, err) = accel(&["embed", "--model", dir.to_str().unwrap(), "--json", "The weather is lovely today.", "He drove to the stadium."]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["dim"], 384);
    for e in json["embeddings"].as_array().unwrap() {
        let norm: f64 = e.as_array().unwrap().iter().map(|v| v.as_f64().unwrap().powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn bad_input_exits_nonzero_with_one_named_line() {
    let (code, _, err) = accel(&["generate", "--model", "/nonexistent.gguf", "--prompt", "hi"]);
    assert_eq!((code, err.trim().lines().count()), (1, 1), "{err}");
    assert!(err.starts_with("error: IoError:"), "{err}");
    let (code, _, err) = accel(&["generate", "--model", smollm2_gguf().to_str().unwrap(), "--prompt", "hi", "--temperature", "-1"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: InvalidParameterError:") && err.contains("temperature"), "{err}");
    let (code, _, err) = accel(&["generate", "--model", smollm2_gguf().to_str().unwrap(), "--prompt", &"word ".repeat(100), "--context", "16"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: ContextOverflowError:"), "{err}");
    let (code, _, err) = accel(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn sliding_window_runs_past_the_context_and_activations_are_selectable() {
    let gguf = smollm2_gguf();
    let base = ["generate", "--model", gguf.to_str().unwrap(), "--prompt", "Once upon a time", "--context", "16", "--max-tokens", "24", "--json"];
    let (code, fixed, err) = accel(&base);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fixed["stop_reason"], "contextFull", "{fixed}");
    let (code, sliding, err) = accel(&[&base[..], &["--sliding-window", "--attention-sinks", "2"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(sliding["token_ids"].as_array().unwrap().len(), 24, "{sliding}");
    let (code, exact, err) = accel(&[&base[..], &["--activations", "f32"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(exact["token_ids"], fixed["token_ids"], "greedy tokens agree on both activation paths");
    let (code, _, err) = accel(&[&base[..], &["--activations", "int3"]].concat());
    assert_eq!(code, 2, "an unknown path is a usage error: {err}");
    assert!(err.contains("int16"), "{err}");
}

/// `--backend gpu` (a build with the `gpu` feature, on lavapipe natively): the same greedy
/// tokens as the cpu backend, the same JSON shape. Skips loudly without an adapter.
#[cfg(feature = "gpu")]
#[test]
fn generate_runs_on_the_gpu_backend() {
    if common::gpu::gpu().is_none() {
        return;
    }
    let gguf = smollm2_gguf();
    let (code, json, err) = accel(&["generate", "--model", gguf.to_str().unwrap(), "--prompt", "Once upon a time, there was a little", "--max-tokens", "4", "--backend", "gpu", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json["token_ids"], serde_json::json!([8180, 3365, 20391, 617]), "{json}");
    assert!(err.contains("pipelines created"), "the load reports its pipeline time: {err}");
}
