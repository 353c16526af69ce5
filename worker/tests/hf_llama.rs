//! The same Llama from an HF-layout safetensors directory: the test converts the SmolLM2 GGUF
//! into one (weights dequantized to f32, llama.cpp's Q/K row permutation undone, the tokenizer
//! written as tokenizer.json) and checks both load to the same logits.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;

use common::{fixture, ids, smollm2_gguf};
use worker::loader::{map_file, TextModel};
use worker::ops::rope::RopeStyle;
use worker::tensor::{Activations, WeightMatrix};

fn dequantized(m: &WeightMatrix) -> Vec<f32> {
    let mut out = vec![0f32; m.rows * m.cols];
    for (r, row) in out.chunks_exact_mut(m.cols).enumerate() {
        m.dequantize_row(r, row);
    }
    out
}

/// GGUF row 2i+s of a head holds HF row s·(hd/2)+i (llama.cpp's convert permutes HF → GGUF).
fn unpermute(gguf: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let mut hf = vec![0f32; gguf.len()];
    for h in 0..heads {
        for i in 0..head_dim / 2 {
            for s in 0..2 {
                let from = (h * head_dim + 2 * i + s) * cols;
                let to = (h * head_dim + s * head_dim / 2 + i) * cols;
                hf[to..to + cols].copy_from_slice(&gguf[from..from + cols]);
            }
        }
    }
    hf
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let end = offset + 4 * data.len();
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    for (_, _, data) in tensors {
        bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(path, bytes).unwrap();
}

fn convert_to_hf(gguf: &TextModel, dir: &Path) {
    let m = &gguf.model;
    let c = &m.config;
    let mat = |name: String, w: &WeightMatrix| (name, vec![w.rows, w.cols], dequantized(w));
    let mut tensors = vec![mat("model.embed_tokens.weight".into(), &m.embed), ("model.norm.weight".into(), vec![c.d_model], m.out_norm.clone())];
    for (i, l) in m.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let (q, k) = (dequantized(&l.wq), dequantized(&l.wk));
        tensors.push((format!("{p}.self_attn.q_proj.weight"), vec![l.wq.rows, l.wq.cols], unpermute(&q, c.n_head, c.head_dim, c.d_model)));
        tensors.push((format!("{p}.self_attn.k_proj.weight"), vec![l.wk.rows, l.wk.cols], unpermute(&k, c.n_kv_head, c.head_dim, c.d_model)));
        tensors.push(mat(format!("{p}.self_attn.v_proj.weight"), &l.wv));
        tensors.push(mat(format!("{p}.self_attn.o_proj.weight"), &l.wo));
        tensors.push(mat(format!("{p}.mlp.gate_proj.weight"), &l.w_gate));
        tensors.push(mat(format!("{p}.mlp.up_proj.weight"), &l.w_up));
        tensors.push(mat(format!("{p}.mlp.down_proj.weight"), &l.w_down));
        tensors.push((format!("{p}.input_layernorm.weight"), vec![c.d_model], l.attn_norm.clone()));
        tensors.push((format!("{p}.post_attention_layernorm.weight"), vec![c.d_model], l.ffn_norm.clone()));
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": c.d_model, "intermediate_size": c.d_ff,
        "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head, "num_hidden_layers": c.n_layer,
        "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_base, "max_position_embeddings": c.trained_context,
        "vocab_size": c.vocab, "tie_word_embeddings": true,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), gguf.tokenizer.inner().to_string(false).unwrap()).unwrap();
}

#[test]
fn hf_safetensors_llama_gives_the_gguf_logits() {
    let mut gguf = TextModel::from_gguf(map_file(&smollm2_gguf()).unwrap(), "smollm2").unwrap();
    // The converted weights are f32, which always take the f32 path; compare like with like.
    gguf.model.activations = Activations::F32;
    let dir = std::env::temp_dir().join(format!("accel-hf-llama-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    convert_to_hf(&gguf, &dir);
    let hf = TextModel::from_hf_dir(&dir);
    let prompt = ids(&fixture("smollm2_once_upon.json")["prompt_ids"]);
    let logits = |m: &TextModel| m.model.forward(&mut m.model.new_state(32), &prompt, false).unwrap();
    let want = logits(&gguf);
    let hf = hf.unwrap();
    assert_eq!(hf.model.config.rope_style, RopeStyle::RotateHalf);
    assert_eq!(hf.tokenizer.encode("Once upon a time, there was a little", false).unwrap(), prompt);
    let got = logits(&hf);
    let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("HF vs GGUF worst |Δlogit| = {worst:.2e}");
    assert!(worst <= 1e-3, "HF safetensors logits differ from the GGUF's by {worst}");

    // Why the convention matters: the same HF weights with GGUF's adjacent-pair RoPE are wrong.
    let mut wrong = hf.clone();
    wrong.model.config.rope_style = RopeStyle::AdjacentPairs;
    let bad = logits(&wrong);
    let off = want.iter().zip(&bad).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(off > 0.5, "adjacent-pair RoPE on HF weights should visibly change the logits (max |Δ| {off})");
    std::fs::remove_dir_all(&dir).ok();
}
