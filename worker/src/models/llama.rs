//! # Llama-family decoder
//!
//! Llama 2/3, SmolLM2, TinyLlama (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation
//! Language Models", arXiv:2302.13971): pre-norm transformer blocks with RMSNorm, rotary
//! positions, grouped-query attention, a SwiGLU feed-forward, and an LM head that may be tied to
//! the token embedding (SmolLM2's is: its GGUF has no `output.weight`).
//!
//! ```text
//! x = embed[tokens]                                   x: [t, d]
//! for each layer:
//!   h = rmsnorm(x) · attn_norm
//!   q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ                     q: [t, n_head·hd]  k, v: [t, n_kv·hd]
//!   rope(q, k) at positions p0..p0+t;  k, v → cache
//!   x += attend(q, cache[..=p])·Woᵀ                   causal, each query head → head / group
//!   h = rmsnorm(x) · ffn_norm
//!   x += (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ                    [t, d_ff] → [t, d]
//! logits = rmsnorm(x_last) · out_norm · Wheadᵀ        [vocab]
//! ```

use super::gguf_source::GgufSource;
use super::TensorSource;
use crate::formats::gguf::GgufFile;
use crate::ops::activation::swiglu;
use crate::ops::attention::{attend_head, HeadLayout};
use crate::ops::residual::add_in_place;
use crate::ops::rmsnorm::rmsnorm;
use crate::ops::rope::{RopeStyle, RopeTable};
use super::kv_cache::{KvCache, SlidingWindow};
use crate::tensor::{for_each_chunk, matmul_fused, on_compute_pool, Activations, SharedBytes, WeightMatrix};
use crate::WorkerError;

/// Hyper-parameters.
/// Hyper-parameters; also the `hyperparameters` object of a packed Llama's manifest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab: usize,
    pub rope_base: f64,
    pub rms_eps: f32,
    /// The context the model was trained for (an upper bound for the KV cache).
    pub trained_context: usize,
    pub rope_style: RopeStyle,
}

impl LlamaConfig {
    /// From GGUF metadata (`llama.*` keys); the vocabulary size from `token_embd.weight`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, WorkerError> {
        let arch = file.require_str("general.architecture")?;
        if arch != "llama" {
            return Err(WorkerError::UnsupportedArchitecture { architecture: arch.to_owned() });
        }
        let int = |key: &str| file.require_u64(key).map(|v| v as usize);
        let d_model = int("llama.embedding_length")?;
        let n_head = int("llama.attention.head_count")?;
        let n_kv_head = file.get("llama.attention.head_count_kv").and_then(|v| v.as_u64()).map_or(n_head, |v| v as usize);
        let bad = |key: &str, reason: String| WorkerError::Metadata { key: key.to_owned(), reason };
        if n_head == 0 || d_model % n_head != 0 {
            return Err(bad("llama.attention.head_count", format!("{n_head} heads do not divide the width {d_model}")));
        }
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(bad("llama.attention.head_count_kv", format!("{n_kv_head} KV heads do not divide {n_head} query heads")));
        }
        let head_dim = file.get("llama.rope.dimension_count").and_then(|v| v.as_u64()).map_or(d_model / n_head, |v| v as usize);
        if head_dim != d_model / n_head || head_dim % 2 != 0 {
            return Err(bad("llama.rope.dimension_count", format!("{head_dim} (partial rotary embeddings are not supported)")));
        }
        let vocab = file
            .tensor("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| WorkerError::MissingTensor { tensor: "token_embd.weight".into(), architecture: "llama".into() })? as usize;
        Ok(LlamaConfig {
            n_layer: int("llama.block_count")?,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            d_ff: int("llama.feed_forward_length")?,
            vocab,
            rope_base: file.get("llama.rope.freq_base").and_then(|v| v.as_f64()).unwrap_or(10000.0),
            rms_eps: file.require_f64("llama.attention.layer_norm_rms_epsilon")? as f32,
            trained_context: int("llama.context_length")?,
            rope_style: RopeStyle::AdjacentPairs,
        })
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// One transformer block's weights.
#[derive(Debug, Clone)]
pub struct LlamaLayer {
    pub attn_norm: Vec<f32>,
    pub wq: WeightMatrix,
    pub wk: WeightMatrix,
    pub wv: WeightMatrix,
    pub wo: WeightMatrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: WeightMatrix,
    pub w_up: WeightMatrix,
    pub w_down: WeightMatrix,
}

impl LlamaLayer {
    /// Loads block `i` by its GGUF names (`blk.{i}.attn_q.weight`, ...).
    pub fn load(src: &impl TensorSource, c: &LlamaConfig, i: usize) -> Result<Self, WorkerError> {
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        let q_dim = c.n_head * c.head_dim;
        Ok(LlamaLayer {
            attn_norm: src.vector(&name("attn_norm"), c.d_model)?,
            wq: src.matrix(&name("attn_q"), q_dim, c.d_model)?,
            wk: src.matrix(&name("attn_k"), c.kv_dim(), c.d_model)?,
            wv: src.matrix(&name("attn_v"), c.kv_dim(), c.d_model)?,
            wo: src.matrix(&name("attn_output"), c.d_model, q_dim)?,
            ffn_norm: src.vector(&name("ffn_norm"), c.d_model)?,
            w_gate: src.matrix(&name("ffn_gate"), c.d_ff, c.d_model)?,
            w_up: src.matrix(&name("ffn_up"), c.d_ff, c.d_model)?,
            w_down: src.matrix(&name("ffn_down"), c.d_model, c.d_ff)?,
        })
    }

    pub fn byte_len(&self) -> usize {
        let m = [&self.wq, &self.wk, &self.wv, &self.wo, &self.w_gate, &self.w_up, &self.w_down];
        m.iter().map(|w| w.byte_len()).sum::<usize>() + 4 * (self.attn_norm.len() + self.ffn_norm.len())
    }
}

/// A loaded Llama model (weights only; per-sequence state lives in [`LlamaState`]).
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub embed: WeightMatrix,
    pub layers: Vec<LlamaLayer>,
    pub out_norm: Vec<f32>,
    /// `output.weight`, or the token embedding when the head is tied.
    pub lm_head: WeightMatrix,
    /// How activations enter the quantized products (int16 unless the caller asks for f32).
    pub activations: Activations,
}

impl Llama {
    pub fn from_gguf(file: &GgufFile, bytes: SharedBytes) -> Result<Self, WorkerError> {
        let config = LlamaConfig::from_gguf(file)?;
        let src = GgufSource::new(file, bytes, "llama");
        Llama::load(&src, config)
    }

    pub fn load(src: &impl TensorSource, config: LlamaConfig) -> Result<Self, WorkerError> {
        let embed = src.matrix("token_embd.weight", config.vocab, config.d_model)?;
        let layers = (0..config.n_layer).map(|i| LlamaLayer::load(src, &config, i)).collect::<Result<Vec<_>, _>>()?;
        let out_norm = src.vector("output_norm.weight", config.d_model)?;
        let lm_head = if src.contains("output.weight") { src.matrix("output.weight", config.vocab, config.d_model)? } else { embed.clone() };
        Ok(Llama { config, embed, layers, out_norm, lm_head, activations: Activations::default() })
    }

    /// A fresh KV cache for `context` positions (see [`LlamaState::new`]).
    pub fn new_state(&self, context: usize) -> LlamaState {
        LlamaState::new(&self.config, context)
    }

    /// Runs `tokens` after what `state` holds; returns the logits of the last token, or of
    /// every token ([t, vocab]) when `all_logits`. A refused call leaves `state` unchanged.
    pub fn forward(&self, state: &mut LlamaState, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>, WorkerError> {
        let mut pass = LayerwiseForward::start(&self.config, &self.embed, state, tokens)?;
        // One hand-off to the compute pool per call instead of one per matrix product.
        on_compute_pool(|| {
            for layer in &self.layers {
                pass.run_layer(layer, state, self.activations);
            }
            pass.finish(state, &self.out_norm, &self.lm_head, self.activations, all_logits)
        })
    }

    /// Runs independent `sequences` as one batch from empty caches: every matrix product covers
    /// all their tokens at once, while each token attends only to its own sequence and is
    /// rotated for its position in it. Returns the logits of each sequence's last token
    /// ([sequences, vocab]) — what [`Llama::forward`] gives for each on its own. The packer's
    /// calibration runs this, so a matrix sees every calibration token in one product (see
    /// `tensor::calibration`).
    pub fn forward_batch(&self, sequences: &[&[u32]]) -> Result<Vec<f32>, WorkerError> {
        let mut batch = self.start_batch(sequences)?;
        on_compute_pool(|| {
            for layer in &self.layers {
                batch.run_layer(layer, self.activations);
            }
            batch.finish(&self.out_norm, &self.lm_head, self.activations)
        })
    }

    /// [`Llama::forward_batch`] a layer at a time, for a caller that runs something between
    /// layers (the packer's calibration runs the full-precision model's layer i just before the
    /// one being quantized). Embeds the tokens.
    pub fn start_batch(&self, sequences: &[&[u32]]) -> Result<BatchForward, WorkerError> {
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if sequences.iter().any(|s| s.is_empty()) || longest > self.config.trained_context {
            return Err(WorkerError::Protocol { reason: format!("forward_batch() needs sequences of 1 to {} tokens", self.config.trained_context) });
        }
        let total: usize = sequences.iter().map(|s| s.len()).sum();
        let c = &self.config;
        let mut state = LlamaState { rope: RopeTable::new(c.rope_style, c.head_dim, c.rope_base, longest), cache: KvCache::new(c.n_layer, c.kv_dim(), total) };
        let mut pass = LayerwiseForward::start(c, &self.embed, &mut state, &sequences.concat())?;
        let mut last_tokens = Vec::with_capacity(sequences.len());
        for s in sequences {
            let start = pass.sequence_start.len();
            pass.sequence_start.extend(std::iter::repeat_n(start, s.len()));
            last_tokens.push(start + s.len() - 1);
        }
        Ok(BatchForward { pass, state, last_tokens })
    }
}

/// A batch of independent sequences on its way through the layers ([`Llama::start_batch`]).
pub struct BatchForward {
    pass: LayerwiseForward,
    state: LlamaState,
    /// Index of each sequence's last token in the batch.
    last_tokens: Vec<usize>,
}

impl BatchForward {
    /// Runs the next layer (`w` must be its weights: layer 0 first) over every sequence.
    pub fn run_layer(&mut self, w: &LlamaLayer, activations: Activations) {
        self.pass.run_layer(w, &mut self.state, activations);
    }

    /// [`BatchForward::run_layer`] in two halves, for a caller that looks at the residual
    /// stream in between: first the attention ...
    pub fn run_attention(&mut self, w: &LlamaLayer, activations: Activations) {
        self.pass.run_attention(w, &mut self.state, activations);
    }

    /// ... then the feed-forward (the same `w`).
    pub fn run_feed_forward(&mut self, w: &LlamaLayer, activations: Activations) {
        self.pass.run_feed_forward(w, activations);
    }

    /// The residual stream of every token, [tokens, d_model].
    pub fn residual(&self) -> &[f32] {
        &self.pass.x
    }

    /// Runs the feed-forward just run again, from `before` (the residual stream it started from,
    /// as [`BatchForward::residual`] gave it): for a caller that has changed its weights since.
    pub fn rerun_feed_forward(&mut self, w: &LlamaLayer, before: &[f32], activations: Activations) {
        self.pass.x.copy_from_slice(before);
        self.pass.next_layer -= 1;
        self.pass.run_feed_forward(w, activations);
    }

    /// After the last layer: each sequence's last-token logits, [sequences, vocab].
    pub fn finish(mut self, out_norm: &[f32], lm_head: &WeightMatrix, activations: Activations) -> Result<Vec<f32>, WorkerError> {
        self.pass.finish_rows(&mut self.state, out_norm, lm_head, activations, &self.last_tokens)
    }
}

/// One forward pass, a layer at a time: what [`Llama::forward`] does, for a caller that does
/// not have every layer yet. Progressive loading runs a prompt through layer i as soon as layer
/// i is resident, while later layers are still downloading; the results are those of
/// [`Llama::forward`] exactly (the same code, in the same order).
pub struct LayerwiseForward {
    config: LlamaConfig,
    /// The residual stream, [t, d].
    x: Vec<f32>,
    t: usize,
    scratch: Scratch,
    next_layer: usize,
    /// Per token, the cache index where its sequence starts, when several independent sequences
    /// run as one batch ([`Llama::forward_batch`]); empty for one sequence (all start at 0).
    sequence_start: Vec<usize>,
}

impl LayerwiseForward {
    /// Checks `tokens` and makes room for them in `state`, then embeds them (the embedding is
    /// all it needs).
    pub fn start(config: &LlamaConfig, embed: &WeightMatrix, state: &mut LlamaState, tokens: &[u32]) -> Result<Self, WorkerError> {
        let (t, d) = (tokens.len(), config.d_model);
        if t == 0 {
            return Err(WorkerError::Protocol { reason: "forward() needs at least one token".into() });
        }
        if let Some(&tok) = tokens.iter().find(|&&tok| tok as usize >= config.vocab) {
            return Err(WorkerError::Tokenizer { reason: format!("token id {tok} is outside the vocabulary of {}", config.vocab) });
        }
        state.cache.make_room(t, &state.rope)?;
        let mut x = vec![0f32; t * d];
        for (row, &tok) in x.chunks_exact_mut(d).zip(tokens) {
            embed.dequantize_row(tok as usize, row);
        }
        Ok(LayerwiseForward { config: config.clone(), x, t, scratch: Scratch::new(config, t), next_layer: 0, sequence_start: Vec::new() })
    }

    /// The layer [`LayerwiseForward::run_layer`] expects next.
    pub fn next_layer(&self) -> usize {
        self.next_layer
    }

    /// Runs layer [`LayerwiseForward::next_layer`] (`w` must be its weights).
    pub fn run_layer(&mut self, w: &LlamaLayer, state: &mut LlamaState, activations: Activations) {
        self.run_attention(w, state, activations);
        self.run_feed_forward(w, activations);
    }

    /// The first half of [`LayerwiseForward::run_layer`]: attention, added to the residual.
    fn run_attention(&mut self, w: &LlamaLayer, state: &mut LlamaState, activations: Activations) {
        let (c, t, l, s, x) = (&self.config, self.t, self.next_layer, &mut self.scratch, &mut self.x);
        let (kv_dim, q_dim, p0) = (c.kv_dim(), c.n_head * c.head_dim, state.cache.len);

        s.h.copy_from_slice(x);
        for row in s.h.chunks_exact_mut(c.d_model) {
            rmsnorm(row, &w.attn_norm, c.rms_eps);
        }
        matmul_fused(&s.h, t, activations, [(&w.wq, &mut s.q), (&w.wk, &mut s.k), (&w.wv, &mut s.v)]);
        let starts = &self.sequence_start;
        let start = |i: usize| starts.get(i).copied().unwrap_or(0);
        for i in 0..t {
            state.rope.apply(&mut s.q[i * q_dim..][..q_dim], p0 + i - start(i));
            state.rope.apply(&mut s.k[i * kv_dim..][..kv_dim], p0 + i - start(i));
        }
        state.cache.store(l, &s.k, &s.v);

        // Token i sees the cache up to and including itself (causal); every (token, head) pair
        // is independent, so they run in parallel.
        let (q, cache) = (&s.q, &state.cache);
        let layout = HeadLayout { n_head: c.n_head, n_kv_head: c.n_kv_head, head_dim: c.head_dim };
        for_each_chunk(&mut s.attn, c.head_dim, |first, out| {
            let (i, h) = (first / q_dim, first % q_dim / c.head_dim);
            let (keys, values) = cache.visible(l, p0 + i + 1);
            let own = start(i) * kv_dim;
            attend_head(&q[first..][..c.head_dim], h, &keys[own..], &values[own..], layout, None, out);
        });
        w.wo.matmul(&s.attn, &mut s.o, t, activations);
        add_in_place(x, &s.o);
    }

    /// The second half of [`LayerwiseForward::run_layer`]: the SwiGLU feed-forward, added to
    /// the residual; the layer is done.
    fn run_feed_forward(&mut self, w: &LlamaLayer, activations: Activations) {
        let (c, t, s, x) = (&self.config, self.t, &mut self.scratch, &mut self.x);
        s.h.copy_from_slice(x);
        for row in s.h.chunks_exact_mut(c.d_model) {
            rmsnorm(row, &w.ffn_norm, c.rms_eps);
        }
        matmul_fused(&s.h, t, activations, [(&w.w_gate, &mut s.gate), (&w.w_up, &mut s.up)]);
        swiglu(&mut s.gate, &s.up);
        w.w_down.matmul(&s.gate, &mut s.o, t, activations);
        add_in_place(x, &s.o);
        self.next_layer += 1;
    }

    /// After the last layer: the final norm and the LM head. Returns the logits of the last
    /// token, or of every token ([t, vocab]) when `all_logits`; the tokens now count as cached.
    pub fn finish(self, state: &mut LlamaState, out_norm: &[f32], lm_head: &WeightMatrix, activations: Activations, all_logits: bool) -> Result<Vec<f32>, WorkerError> {
        let t = self.t;
        let rows: Vec<usize> = if all_logits { (0..t).collect() } else { vec![t - 1] };
        self.finish_rows(state, out_norm, lm_head, activations, &rows)
    }

    /// [`LayerwiseForward::finish`] for the given token `rows`: their logits, [rows, vocab].
    fn finish_rows(self, state: &mut LlamaState, out_norm: &[f32], lm_head: &WeightMatrix, activations: Activations, rows: &[usize]) -> Result<Vec<f32>, WorkerError> {
        let (c, t, d) = (&self.config, self.t, self.config.d_model);
        if self.next_layer != c.n_layer {
            return Err(WorkerError::Protocol { reason: format!("forward pass finished after {} of {} layers", self.next_layer, c.n_layer) });
        }
        state.cache.len += t;
        let mut h: Vec<f32> = rows.iter().flat_map(|&r| &self.x[r * d..][..d]).copied().collect();
        for row in h.chunks_exact_mut(d) {
            rmsnorm(row, out_norm, c.rms_eps);
        }
        let mut logits = vec![0f32; rows.len() * c.vocab];
        lm_head.matmul(&h, &mut logits, rows.len(), activations);
        Ok(logits)
    }
}

/// Activation buffers of one forward call, reused by every layer.
struct Scratch {
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Scratch {
    fn new(c: &LlamaConfig, t: usize) -> Self {
        let q_dim = c.n_head * c.head_dim;
        let zeros = |n: usize| vec![0f32; t * n];
        Scratch { h: zeros(c.d_model), q: zeros(q_dim), k: zeros(c.kv_dim()), v: zeros(c.kv_dim()), attn: zeros(q_dim), o: zeros(c.d_model), gate: zeros(c.d_ff), up: zeros(c.d_ff) }
    }
}

/// A sequence's decoding state: the KV cache and the RoPE table for its positions.
#[derive(Debug, Clone)]
pub struct LlamaState {
    rope: RopeTable,
    pub cache: KvCache,
}

impl LlamaState {
    /// A fresh KV cache for `context` positions (at most the trained context). Without a
    /// sliding window (see [`LlamaState::slide`]) a full cache refuses more tokens.
    pub fn new(c: &LlamaConfig, context: usize) -> Self {
        let context = context.clamp(1, c.trained_context.max(1));
        LlamaState { rope: RopeTable::new(c.rope_style, c.head_dim, c.rope_base, context), cache: KvCache::new(c.n_layer, c.kv_dim(), context) }
    }

    pub fn reset(&mut self) {
        self.cache.len = 0;
        self.cache.dropped = 0;
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.cache.len
    }

    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    /// Capacity in positions.
    pub fn context(&self) -> usize {
        self.cache.context
    }

    /// Turns on the sliding window: when the cache is full, the oldest entries after the first
    /// `sinks` make room, so generation can run past the context length.
    pub fn slide(mut self, sinks: usize) -> Self {
        self.cache.window = Some(SlidingWindow { sinks });
        self
    }

    /// Whether `tokens` more can be run (sliding the window if there is one).
    pub fn fits(&self, tokens: usize) -> bool {
        self.cache.fits(tokens)
    }

    pub fn byte_len(&self) -> usize {
        self.cache.byte_len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::gguf::tests::GgufBuilder;
    use crate::quant::tests::Rng;

    /// A tiny random Llama as GGUF bytes (f32 weights): 2 layers, width 64, 4 heads over 2 KV
    /// heads, FFN 96, vocabulary 40. `edit` may rename, drop or reshape tensors to make it bad.
    pub fn tiny_llama_gguf(architecture: &str, edit: impl Fn(&str, Vec<u64>) -> Option<(String, Vec<u64>)>) -> Vec<u8> {
        let (d, ff, vocab, kv) = (64u64, 96u64, 40u64, 32u64);
        let mut b = GgufBuilder::default()
            .kv_str("general.architecture", architecture)
            .kv_u32("llama.block_count", 2)
            .kv_u32("llama.embedding_length", d as u32)
            .kv_u32("llama.feed_forward_length", ff as u32)
            .kv_u32("llama.attention.head_count", 4)
            .kv_u32("llama.attention.head_count_kv", 2)
            .kv_u32("llama.context_length", 64)
            .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .kv_f32("llama.rope.freq_base", 10000.0);
        let mut tensors: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![d, vocab]), ("output_norm.weight".into(), vec![d])];
        for i in 0..2 {
            for (name, dims) in [
                ("attn_norm", vec![d]),
                ("attn_q", vec![d, d]),
                ("attn_k", vec![d, kv]),
                ("attn_v", vec![d, kv]),
                ("attn_output", vec![d, d]),
                ("ffn_norm", vec![d]),
                ("ffn_gate", vec![d, ff]),
                ("ffn_up", vec![d, ff]),
                ("ffn_down", vec![ff, d]),
            ] {
                tensors.push((format!("blk.{i}.{name}.weight"), dims));
            }
        }
        let mut rng = Rng(7);
        for (name, dims) in tensors {
            let Some((name, dims)) = edit(&name, dims) else { continue };
            let n: u64 = dims.iter().product();
            let norm = name.contains("norm");
            let data = (0..n).flat_map(|_| (if norm { 1.0 + 0.1 * rng.f32() } else { 0.2 * rng.f32() }).to_le_bytes()).collect();
            b = b.tensor(&name, &dims, 0, data);
        }
        b.build()
    }

    fn load(bytes: Vec<u8>) -> Result<Llama, WorkerError> {
        let file = GgufFile::parse(&bytes, "tiny.gguf")?;
        Llama::from_gguf(&file, SharedBytes::from_vec(bytes))
    }

    #[test]
    fn tiny_model_runs_and_batched_prefill_matches_single_steps() {
        let model = load(tiny_llama_gguf("llama", |n, d| Some((n.into(), d)))).unwrap();
        let tokens = [3, 1, 4, 1, 5, 9, 2, 6];
        let mut a = model.new_state(16);
        let batched = model.forward(&mut a, &tokens, true).unwrap();
        let mut b = model.new_state(16);
        for (i, &t) in tokens.iter().enumerate() {
            let single = model.forward(&mut b, &[t], false).unwrap();
            let row = &batched[i * 40..][..40];
            let worst = row.iter().zip(&single).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "position {i}: {worst}");
        }
    }

    /// Independent sequences run as one batch give each sequence's own last-token logits: no
    /// token attends across sequences, and each is rotated for its position in its sequence.
    #[test]
    fn a_batch_of_sequences_matches_each_sequence_on_its_own() {
        let mut model = load(tiny_llama_gguf("llama", |n, d| Some((n.into(), d)))).unwrap();
        model.activations = Activations::F32;
        let sequences: [&[u32]; 3] = [&[3, 1, 4, 1, 5], &[9, 2], &[6, 5, 3, 5, 8, 9, 7]];
        let batched = model.forward_batch(&sequences).unwrap();
        assert_eq!(batched.len(), 3 * 40);
        for (k, tokens) in sequences.iter().enumerate() {
            let alone = model.forward(&mut model.new_state(16), tokens, false).unwrap();
            let worst = batched[k * 40..][..40].iter().zip(&alone).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "sequence {k}: {worst}");
        }
        assert_eq!(model.forward_batch(&[&[1, 2], &[]]).unwrap_err().name(), "ProtocolError");
    }

    #[test]
    fn unknown_architecture_is_named() {
        let err = load(tiny_llama_gguf("gpt9", |n, d| Some((n.into(), d)))).unwrap_err();
        assert_eq!(err.name(), "UnsupportedArchitectureError", "{err}");
    }

    #[test]
    fn missing_tensor_is_named() {
        let err = load(tiny_llama_gguf("llama", |n, d| (n != "blk.1.ffn_up.weight").then(|| (n.into(), d)))).unwrap_err();
        assert_eq!(err.name(), "MissingTensorError", "{err}");
        assert!(err.to_string().contains("blk.1.ffn_up.weight"));
    }

    #[test]
    fn shape_mismatch_is_named() {
        let err = load(tiny_llama_gguf("llama", |n, d| Some((n.into(), if n == "blk.0.attn_k.weight" { vec![64, 48] } else { d })))).unwrap_err();
        assert_eq!(err.name(), "ShapeMismatchError", "{err}");
    }

    #[test]
    fn out_of_vocabulary_token_is_refused() {
        let model = load(tiny_llama_gguf("llama", |n, d| Some((n.into(), d)))).unwrap();
        let mut state = model.new_state(8);
        assert_eq!(model.forward(&mut state, &[40], false).unwrap_err().name(), "TokenizerError");
    }
}
