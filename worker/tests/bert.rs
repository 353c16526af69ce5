//! all-MiniLM-L6-v2 (BERT, safetensors) against the independent float reference in
//! tests/fixtures, and the safetensors / config.json readers against broken files.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{fixture, ids, model_path};
use worker::formats::hf_config::{BertConfig, HfConfig};
use worker::formats::safetensors::{SafetensorsFile, SafetensorsSource};
use worker::models::bert::{Bert, Embedder};
use worker::tensor::SharedBytes;
use worker::WorkerError;

/// Loaded once: every test here that needs the model shares it.
fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| Embedder::from_hf_dir(&model_path("minilm")).expect("load MiniLM"))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
    (dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()) as f32
}

#[test]
fn three_sentences_match_the_reference() {
    let f = fixture("minilm_three_sentences.json");
    let sentences: Vec<&str> = f["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let model = embedder();
    for (text, want) in sentences.iter().zip(f["ids"].as_array().unwrap()) {
        assert_eq!(model.tokenize(text).unwrap(), ids(want), "ids of {text:?}");
    }

    // Timed twice: the first call also faults the memory-mapped weights in.
    let mut emb = Vec::new();
    for run in ["cold", "warm"] {
        let start = std::time::Instant::now();
        emb = model.embed(&sentences).unwrap();
        let elapsed = start.elapsed().as_secs_f64();
        println!("{run}: {} sentences in {:.1} ms ({:.1} embeddings/s)", emb.len(), elapsed * 1e3, emb.len() as f64 / elapsed);
    }

    for (i, e) in emb.iter().enumerate() {
        assert_eq!(e.len(), 384);
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "embedding {i} has norm {norm}");
    }
    // The reference rounds the cosines to 4 decimals (±5e-5), hence 1e-4.
    let mut worst_cos = 0f32;
    for (i, row) in f["cosine"].as_array().unwrap().iter().enumerate() {
        for (j, want) in row.as_array().unwrap().iter().enumerate() {
            let (got, want) = (cosine(&emb[i], &emb[j]), want.as_f64().unwrap() as f32);
            worst_cos = worst_cos.max((got - want).abs());
            assert!((got - want).abs() <= 1e-4, "cosine[{i}][{j}] = {got}, reference {want}");
        }
    }
    let mut worst_first8 = 0f32;
    for (k, want) in f["emb0_first8"].as_array().unwrap().iter().enumerate() {
        let (got, want) = (emb[0][k], want.as_f64().unwrap() as f32);
        worst_first8 = worst_first8.max((got - want).abs());
        assert!((got - want).abs() <= 1e-4, "embedding 0 value {k} = {got}, reference {want}");
    }
    println!("worst |Δ| vs reference: cosine {worst_cos:.2e}, first 8 values {worst_first8:.2e}");
}

#[test]
fn batch_equals_one_by_one() {
    let model = embedder();
    let texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium.", "A much longer sentence, so that every other one in this batch is padded by several tokens."];
    let batch = model.embed(&texts).unwrap();
    for (text, together) in texts.iter().zip(&batch) {
        let alone = model.bert.embed_ids(&model.tokenize(text).unwrap()).unwrap();
        let worst = together.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{text:?}: batched differs from alone by {worst}");
    }
}

#[test]
fn too_long_input_is_a_context_overflow() {
    let model = embedder();
    let err = model.embed(&[&"word ".repeat(600)]).unwrap_err();
    assert!(matches!(err, WorkerError::ContextOverflow { context: 512, .. }), "{err}");
}

// ---- broken files ----------------------------------------------------------------------------

/// A safetensors file: 8-byte length, the header JSON as written, then `data`.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(data);
    file
}

fn parse(bytes: Vec<u8>) -> Result<SafetensorsFile, WorkerError> {
    SafetensorsFile::parse(SharedBytes::from_vec(bytes), "broken.safetensors")
}

fn assert_model_format(result: Result<SafetensorsFile, WorkerError>, what: &str) {
    match result {
        Err(WorkerError::ModelFormat { format: "safetensors", reason, .. }) => println!("{what}: {reason}"),
        other => panic!("{what}: expected a safetensors ModelFormatError, got {other:?}"),
    }
}

const TINY_CONFIG: &str = r#"{"model_type": "bert", "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 8, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 8,
    "vocab_size": 10, "type_vocab_size": 2}"#;

fn tiny_config() -> BertConfig {
    match HfConfig::parse(TINY_CONFIG.as_bytes(), "config.json").unwrap() {
        HfConfig::Bert(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_header_is_a_model_format_error() {
    assert_model_format(parse(vec![]), "empty file");
    assert_model_format(parse(vec![16, 0, 0, 0]), "4 bytes");
    let good = safetensors(r#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, &[0; 8]);
    assert_model_format(parse(good[..20].to_vec()), "header cut short");
}

#[test]
fn header_length_beyond_the_file_is_a_model_format_error() {
    let mut bytes = safetensors(r#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, &[0; 8]);
    let past = bytes.len() as u64;
    bytes[..8].copy_from_slice(&past.to_le_bytes());
    assert_model_format(parse(bytes), "header length past the end");
}

#[test]
fn data_offsets_out_of_bounds_are_model_format_errors() {
    for (what, header) in [
        ("end past the data", r#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#),
        ("begin after end", r#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}"#),
        ("huge offsets", r#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [18446744073709551600, 18446744073709551608]}}"#),
        ("size does not match the shape", r#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#),
        ("offsets missing", r#"{"w": {"dtype": "F32", "shape": [2]}}"#),
    ] {
        assert_model_format(parse(safetensors(header, &[0; 8])), what);
    }
}

#[test]
fn unknown_dtype_is_unsupported_when_used() {
    let file = parse(safetensors(r#"{"w": {"dtype": "Q9_K", "shape": [2], "data_offsets": [0, 8]}}"#, &[0; 8])).unwrap();
    let err = worker::models::TensorSource::vector(&SafetensorsSource::new(file, "bert"), "w", 2).unwrap_err();
    assert!(matches!(&err, WorkerError::UnsupportedTensorType { type_name, .. } if type_name == "Q9_K"), "{err:?}");
    assert_eq!(err.name(), "UnsupportedTensorTypeError");
}

#[test]
fn wrong_shape_for_a_needed_tensor_is_a_shape_mismatch() {
    // Word embeddings [10, 3] where hidden_size 4 needs [10, 4].
    let header = r#"{"embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [10, 3], "data_offsets": [0, 120]}}"#;
    let file = parse(safetensors(header, &[0; 120])).unwrap();
    let err = Bert::load(&SafetensorsSource::new(file, "bert"), tiny_config()).unwrap_err();
    assert_eq!(
        err,
        WorkerError::ShapeMismatch { tensor: "embeddings.word_embeddings.weight".into(), expected: vec![10, 4], found: vec![10, 3] }
    );
    assert_eq!(err.name(), "ShapeMismatchError");

    // Right shape, but the rest of the model is absent.
    let header = r#"{"bert.embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [10, 4], "data_offsets": [0, 160]}}"#;
    let file = parse(safetensors(header, &[0; 160])).unwrap();
    let err = Bert::load(&SafetensorsSource::new(file, "bert").with_prefix("bert."), tiny_config()).unwrap_err();
    assert_eq!(err.name(), "MissingTensorError", "{err}");
}

/// A scratch directory for a fake model, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("accel-bert-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unknown_model_type_is_unsupported_architecture() {
    let err = HfConfig::parse(TINY_CONFIG.replace("\"bert\"", "\"gpt9\"").as_bytes(), "config.json").unwrap_err();
    assert_eq!(err.name(), "UnsupportedArchitectureError");

    // Through the directory loader too, before it touches the (absent) weights.
    let dir = ScratchDir::new("gpt9");
    std::fs::write(dir.0.join("config.json"), TINY_CONFIG.replace("\"bert\"", "\"gpt9\"")).unwrap();
    let err = Bert::from_hf_dir(&dir.0).unwrap_err();
    assert_eq!(err, WorkerError::UnsupportedArchitecture { architecture: "gpt9".into() });
}

#[test]
fn broken_files_on_disk_are_named_errors() {
    let dir = ScratchDir::new("broken");
    std::fs::write(dir.0.join("config.json"), TINY_CONFIG).unwrap();
    let err = Bert::from_hf_dir(&dir.0).unwrap_err();
    assert_eq!(err.name(), "IoError", "no model.safetensors: {err}");
    // A truncated (memory-mapped) file, then an empty one.
    std::fs::write(dir.0.join("model.safetensors"), [8u8, 0, 0]).unwrap();
    assert_eq!(Bert::from_hf_dir(&dir.0).unwrap_err().name(), "ModelFormatError");
    std::fs::write(dir.0.join("model.safetensors"), []).unwrap();
    assert_eq!(Bert::from_hf_dir(&dir.0).unwrap_err().name(), "ModelFormatError");
    std::fs::write(dir.0.join("config.json"), TINY_CONFIG.replace("\"hidden_size\": 4,", "")).unwrap();
    let err = Bert::from_hf_dir(&dir.0).unwrap_err();
    assert!(matches!(&err, WorkerError::Metadata { key, .. } if key == "hidden_size"), "{err:?}");
}
