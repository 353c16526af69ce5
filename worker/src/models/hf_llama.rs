//! Llama from a Hugging Face directory (`config.json` + `model.safetensors` + `tokenizer.json`).
//!
//! The decoder is [`super::llama::Llama`]; this module only maps its canonical (GGUF) tensor
//! names onto the HF ones and sets the rotary convention. HF checkpoints keep the Q/K rows in
//! the order the model was trained with, so RoPE rotates *halves* ([`RopeStyle::RotateHalf`]);
//! GGUF's converter permuted those rows so that adjacent pairs rotate instead. Loading HF
//! weights with adjacent-pair RoPE gives fluent-looking garbage — there is a test for it.

use super::llama::LlamaConfig;
use super::TensorSource;
use crate::formats::hf_config::HfLlamaConfig;
use crate::ops::rope::RopeStyle;
use crate::tensor::WeightMatrix;
use crate::WorkerError;

impl LlamaConfig {
    pub fn from_hf(c: &HfLlamaConfig) -> Self {
        LlamaConfig {
            n_layer: c.num_hidden_layers,
            d_model: c.hidden_size,
            n_head: c.num_attention_heads,
            n_kv_head: c.num_key_value_heads,
            head_dim: c.hidden_size / c.num_attention_heads,
            d_ff: c.intermediate_size,
            vocab: c.vocab_size,
            rope_base: c.rope_theta,
            rms_eps: c.rms_norm_eps,
            trained_context: c.max_position_embeddings,
            rope_style: RopeStyle::RotateHalf,
        }
    }
}

/// The HF name of a canonical (GGUF) Llama tensor name.
pub fn hf_tensor_name(gguf: &str) -> String {
    const GLOBAL: [(&str, &str); 3] =
        [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"), ("output.weight", "lm_head.weight")];
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == gguf) {
        return (*hf).to_owned();
    }
    const LAYER: [(&str, &str); 9] = [
        ("attn_norm", "input_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
    ];
    let mapped = gguf.strip_prefix("blk.").and_then(|rest| {
        let (layer, part) = rest.split_once('.')?;
        let part = part.strip_suffix(".weight")?;
        let (_, hf) = LAYER.iter().find(|(g, _)| *g == part)?;
        Some(format!("model.layers.{layer}.{hf}.weight"))
    });
    mapped.unwrap_or_else(|| gguf.to_owned())
}

/// A [`TensorSource`] that answers canonical Llama names from an HF-named source.
pub struct HfLlamaNames<'a, S: TensorSource>(pub &'a S);

impl<S: TensorSource> TensorSource for HfLlamaNames<'_, S> {
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError> {
        self.0.matrix(&hf_tensor_name(name), rows, cols)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WorkerError> {
        self.0.vector(&hf_tensor_name(name), len)
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains(&hf_tensor_name(name))
    }
}

#[cfg(test)]
mod tests {
    use super::hf_tensor_name;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(hf_tensor_name("blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight");
        assert_eq!(hf_tensor_name("blk.0.ffn_norm.weight"), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(hf_tensor_name("token_embd.weight"), "model.embed_tokens.weight");
        assert_eq!(hf_tensor_name("output.weight"), "lm_head.weight");
    }
}
