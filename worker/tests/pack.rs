//! `accel pack` and packed models: a `keep` pack reproduces the GGUF bit for bit, packs are
//! deterministic and content-addressed, perplexity matches the reference, and bad input is a
//! named error that leaves nothing behind.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, ids, model_path, smollm2_gguf};
use worker::eval::perplexity;
use worker::loader::{load_embedder, load_text_model, TextModel};
use worker::tensor::Activations;

fn accel(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_accel")).args(args).output().expect("run accel");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("accel-pack-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pack(input: &Path, out: &Path, extra: &[&str]) {
    let (code, stdout, stderr) = accel(&[&["pack", input.to_str().unwrap(), "--out", out.to_str().unwrap()], extra].concat());
    assert_eq!(code, 0, "accel pack failed: {stderr}");
    assert!(stdout.contains("packed"), "{stdout}");
}

fn eval_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/eval_text.txt")).unwrap()
}

#[test]
fn keep_pack_gives_the_gguf_logits_bit_for_bit() {
    let dir = scratch("keep");
    let out = dir.join("smollm2");
    pack(&smollm2_gguf(), &out, &["--name", "smollm2-135m", "--shard-mb", "8"]);
    let gguf = load_text_model(&smollm2_gguf()).unwrap();
    let packed = load_text_model(&out).unwrap();
    let f = fixture("smollm2_once_upon.json");
    let prompt = ids(&f["prompt_ids"]);
    assert_eq!(packed.tokenizer.encode("Once upon a time, there was a little", false).unwrap(), prompt, "the packed tokenizer encodes alike");
    for activations in [Activations::F32, Activations::Int16] {
        let run = |m: &TextModel| {
            let mut model = m.model.clone();
            model.activations = activations;
            let mut state = model.new_state(64);
            let mut logits = model.forward(&mut state, &prompt, false).unwrap();
            let first = logits.clone();
            let mut greedy = vec![];
            for _ in 0..12 {
                let next = logits.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
                greedy.push(next);
                logits = model.forward(&mut state, &[next], false).unwrap();
            }
            (first, greedy)
        };
        let (a, greedy_a) = run(&gguf);
        let (b, greedy_b) = run(&packed);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{activations:?}: logits differ");
        assert_eq!(greedy_a, greedy_b);
        assert_eq!(greedy_b, ids(&f["greedy_ids"])[..12], "{activations:?}: the fixture's first 12 greedy tokens");
    }
    // The chat template and special ids travel with the pack.
    assert_eq!(packed.tokenizer.chat_template, gguf.tokenizer.chat_template);
    assert_eq!(packed.tokenizer.eos_ids, gguf.tokenizer.eos_ids);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn packs_are_content_addressed_deterministic_and_grouped_by_component() {
    let dir = scratch("determinism");
    let (a, b) = (dir.join("a"), dir.join("b"));
    pack(&smollm2_gguf(), &a, &["--name", "smollm2-135m", "--shard-mb", "4"]);
    pack(&smollm2_gguf(), &b, &["--name", "smollm2-135m", "--shard-mb", "4"]);
    let manifest_a = std::fs::read(a.join("manifest.json")).unwrap();
    assert_eq!(manifest_a, std::fs::read(b.join("manifest.json")).unwrap(), "same input, same manifest");
    let manifest = sw::Manifest::parse(&manifest_a).unwrap();
    for shard in &manifest.shards {
        let path = sw::manifest::shard_path(&shard.sha256);
        let bytes = std::fs::read(a.join(&path)).unwrap();
        assert_eq!(sw::sha256_hex(&bytes), shard.sha256.as_str(), "{path} is named by its hash");
        assert_eq!(bytes, std::fs::read(b.join(&path)).unwrap(), "{path} is identical in both packs");
    }
    let names: Vec<&str> = manifest.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names[..3], ["tokenizer", "embeddings", "layer.0"]);
    assert_eq!(names.last(), Some(&"final_norm"), "SmolLM2's head is tied to the embeddings");
    assert_eq!(names.len(), 3 + 30);
    // A layer (~2.2 MB in Q4_1) never straddles two 4 MiB shards.
    for c in manifest.components.iter().filter(|c| c.name.starts_with("layer.")) {
        let shards: std::collections::BTreeSet<_> = c.tensors.iter().map(|t| &manifest.tensor(t).unwrap().shard).collect();
        assert_eq!(shards.len(), 1, "{} spans {} shards", c.name, shards.len());
    }
    assert!(manifest.tensors.iter().all(|t| t.offset % sw::manifest::ALIGNMENT == 0));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn perplexity_matches_the_reference_on_the_gguf_and_the_keep_pack() {
    let dir = scratch("eval");
    let out = dir.join("smollm2");
    pack(&smollm2_gguf(), &out, &["--name", "smollm2-135m"]);
    let text = eval_text();
    for path in [smollm2_gguf(), out.clone()] {
        let mut m = load_text_model(&path).unwrap();
        for activations in [Activations::F32, Activations::Int16] {
            m.model.activations = activations;
            let p = perplexity(&m.model, &m.tokenizer, &text, 128).unwrap();
            assert_eq!(p.tokens, 549, "MODELS.md: eval_text.txt is 549 SmolLM2 tokens");
            let rel = (p.perplexity - 31.039).abs() / 31.039;
            eprintln!("{} {activations:?}: perplexity {:.4} (mean NLL {:.5}), {:.4}% from the reference", path.display(), p.perplexity, p.mean_nll, rel * 100.0);
            assert!(rel <= 1e-3, "{}: perplexity {} is not within 0.1% of 31.039", path.display(), p.perplexity);
        }
    }
    // The CLI's JSON shape.
    let (code, stdout, stderr) = accel(&["eval", "--model", out.to_str().unwrap(), "--text", "../tests/fixtures/eval_text.txt", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["tokens"], 549);
    assert!((json["perplexity"].as_f64().unwrap() - 31.039).abs() < 0.04, "{json}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The decoder calibration corpus: bounded sequences, enough tokens for GPTQ's H of the widest
/// matrix (1,536 columns) many times over, and none of the evaluation text in it.
#[test]
fn calibration_corpus_is_bounded_sequences_without_the_evaluation_text() {
    let tokenizer = load_text_model(&smollm2_gguf()).unwrap().tokenizer;
    let sequences = worker::pack::calibration_sequences(&tokenizer, 1024).unwrap();
    assert!(sequences.iter().all(|s| !s.is_empty() && s.len() <= 1024));
    let total: usize = sequences.iter().map(Vec::len).sum();
    println!("calibration corpus: {} sequences, {total} tokens", sequences.len());
    assert!(sequences.len() >= 25 && total >= 25_000, "{} sequences, {total} tokens", sequences.len());
    let corpus = worker::pack::CALIBRATION_CORPUS.concat();
    let eval = eval_text();
    let words: Vec<&str> = eval.split_whitespace().collect();
    for window in words.windows(8) {
        assert!(!corpus.contains(&window.join(" ")), "the calibration corpus quotes the evaluation text: {:?}", window.join(" "));
    }
}

#[test]
fn minilm_packs_at_f16_and_still_embeds_like_f32() {
    let dir = scratch("minilm");
    let out = dir.join("minilm");
    let hf = model_path("minilm");
    pack(&hf, &out, &["--name", "minilm-l6", "--precision", "f16"]);
    let sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."];
    let (a, b) = (load_embedder(&hf).unwrap().embed(&sentences).unwrap(), load_embedder(&out).unwrap().embed(&sentences).unwrap());
    for (x, y) in a.iter().zip(&b) {
        let cos: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        assert!(cos > 0.9999, "cosine {cos}");
    }
    let manifest = sw::Manifest::parse(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.architecture, "bert");
    assert!(manifest.tensors.iter().filter(|t| t.shape.len() == 2).all(|t| t.dtype == "f16"));
    assert!(manifest.tensors.iter().filter(|t| t.shape.len() == 1).all(|t| t.dtype == "f32"), "biases and norms stay f32");
    std::fs::remove_dir_all(&dir).ok();
}

/// Each bad input is one named error line, a non-zero exit, and no output directory (or the
/// existing one untouched), with no staging directory left behind.
#[test]
fn bad_pack_input_is_named_and_leaves_nothing_behind() {
    let dir = scratch("bad");
    let gguf = smollm2_gguf();
    let gguf = gguf.to_str().unwrap();
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let (unknown_key, malformed) = (dir.join("unknown-key.json"), dir.join("malformed.json"));
    std::fs::write(&unknown_key, r#"{"attention.querry": 4}"#).unwrap();
    std::fs::write(&malformed, "{ not json").unwrap();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("unreadable input", vec!["pack", "/no/such/model.gguf", "--out", out_s], "IoError"),
        ("unknown precision", vec!["pack", gguf, "--out", out_s, "--precision", "q5"], "InvalidParameterError"),
        ("unknown config key", vec!["pack", gguf, "--out", out_s, "--precision-config", unknown_key.to_str().unwrap()], "InvalidParameterError"),
        ("malformed config", vec!["pack", gguf, "--out", out_s, "--precision-config", malformed.to_str().unwrap()], "InvalidParameterError"),
        ("zero shard size", vec!["pack", gguf, "--out", out_s, "--shard-mb", "0"], "InvalidParameterError"),
    ];
    for (what, args, name) in cases {
        let (code, _, stderr) = accel(&args);
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(stderr.starts_with(&format!("error: {name}: ")) && stderr.trim().lines().count() == 1, "{what}: {stderr}");
        assert!(!out.exists(), "{what} left {out_s} behind");
    }

    // An output directory holding another model is refused and left as it was.
    let other = dir.join("other");
    pack(&model_path("minilm"), &other, &["--name", "minilm-l6", "--precision", "f16"]);
    let before = std::fs::read(other.join("manifest.json")).unwrap();
    let (code, _, stderr) = accel(&["pack", gguf, "--out", other.to_str().unwrap(), "--name", "smollm2-135m"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("InvalidParameterError") && stderr.contains("minilm-l6"), "{stderr}");
    assert_eq!(std::fs::read(other.join("manifest.json")).unwrap(), before);

    // A shard whose bytes do not match its name is refused when the model loads.
    let corrupt = dir.join("corrupt");
    copy_dir(&other, &corrupt);
    let manifest = sw::Manifest::parse(&before).unwrap();
    let shard = corrupt.join(sw::manifest::shard_path(&manifest.shards[0].sha256));
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let (code, _, stderr) = accel(&["embed", "--model", corrupt.to_str().unwrap(), "hello"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: IntegrityError: "), "{stderr}");

    // A manifest from a newer format version is refused by name.
    let newer = dir.join("newer");
    copy_dir(&other, &newer);
    let text = String::from_utf8(before.clone()).unwrap().replacen("\"version\": 1", "\"version\": 2", 1);
    std::fs::write(newer.join("manifest.json"), text).unwrap();
    let (code, _, stderr) = accel(&["embed", "--model", newer.to_str().unwrap(), "hello"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: ManifestVersionError: "), "{stderr}");

    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains("packing")).collect();
    assert!(leftovers.is_empty(), "staging directories left behind: {leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("shards")).unwrap();
    std::fs::copy(from.join("manifest.json"), to.join("manifest.json")).unwrap();
    for entry in std::fs::read_dir(from.join("shards")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("shards").join(entry.file_name())).unwrap();
    }
}
