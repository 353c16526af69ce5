//! # A Llama on the GPU
//!
//! [`GpuLlama`] takes a loaded CPU [`Llama`] (its public weights; the CPU model is the
//! reference this must match) and puts everything on the device once, at load: every weight
//! matrix in its storage type (a tied LM head shares the embedding's buffer), the norms, the
//! RoPE table, the KV cache for `context` positions, and the activations for passes of up to
//! `max_t` tokens. Then it builds every dispatch — pipelines compiled, bind groups created —
//! in two lists: GEMV matmuls for decode and token-tiled GEMMs for prefill.
//!
//! A pass is one command buffer: write the token ids and the Step uniform (t, position), record
//! the pre-built dispatches, and for the last chunk the final norm, LM head and what the sampler
//! needs: argmax (8 bytes read back, greedy), the top [`GPU_TOP_K`] candidates (top-k sampling:
//! 8 bytes each), or the logits. Per pass the CPU does no allocation on the device.
//!
//! ```text
//! x = embed[tokens]                                        x: [t, d]
//! per layer: h = rmsnorm(x)·attn_norm; q = h·Wqᵀ; K/V rows pos.. of the cache = h·Wkᵀ, h·Wvᵀ
//!            rope(q), rope(cache K rows); a = attention(q, cache); x += a·Woᵀ
//!            h = rmsnorm(x)·ffn_norm; g = silu(h·Wgᵀ) ⊙ h·Wuᵀ; x += g·Wdᵀ
//! logits = rmsnorm(x[t-1])·out_norm · Wheadᵀ; argmax or top-k on the GPU
//! ```
//!
//! Not (yet) on the GPU: the sliding window (a full cache is `ContextOverflowError`), and
//! all-token logits.

use std::sync::Arc;

use super::buffers::{self, storage_f32};
use super::kernels::{step_buffer, Dispatch, GpuMatrix, Kernels, PREFILL_TILE};
use super::pipelines::Step;
use super::GpuContext;
use crate::clock::now_ms;
use crate::futures::LocalBoxFuture;
use crate::generate::{Next, Sequence};
use crate::sampler::Want;
use crate::models::llama::{Llama, LlamaConfig};
use crate::WorkerError;

/// What a pass reads back.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The greedy token id and its logit (8 bytes read back).
    Argmax { token: u32, logit: f32 },
    /// The `k` largest logits with their ids, best first (ties to the lower id).
    TopK(Vec<(u32, f32)>),
    /// The last token's logits over the vocabulary.
    Logits(Vec<f32>),
}

/// How long the load took and what it built.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuLoadReport {
    pub load_ms: f64,
    /// Of which creating (compiling) the pipelines.
    pub pipeline_ms: f64,
    /// Of which the warm-up passes (first dispatch of every pipeline; drivers that compile
    /// lazily, like lavapipe, finish compiling here).
    pub warmup_ms: f64,
    pub pipelines: usize,
    pub weight_bytes: u64,
    pub kv_cache_bytes: u64,
    /// Every buffer of the model: weights, KV cache, activations, uniforms, readback.
    pub total_bytes: u64,
    pub adapter: String,
}

pub struct GpuLlama {
    kernels: Kernels,
    pub config: LlamaConfig,
    context: usize,
    max_t: usize,
    len: usize,
    tokens: wgpu::Buffer,
    step: wgpu::Buffer,
    step_last: wgpu::Buffer,
    logits: wgpu::Buffer,
    result: wgpu::Buffer,
    stage_result: wgpu::Buffer,
    stage_logits: wgpu::Buffer,
    decode: Vec<Dispatch>,
    prefill: Vec<Dispatch>,
    /// Final norm (last token) and LM head.
    head: Vec<Dispatch>,
    /// Top-1 (argmax) and top-[`GPU_TOP_K`] of the logits into `result`.
    pick_argmax: Dispatch,
    pick_top: Dispatch,
    pub report: GpuLoadReport,
    /// Buffers the dispatches' bind groups reference (kept alive with them).
    _resident: Vec<wgpu::Buffer>,
    _matrices: Vec<GpuMatrix>,
}

impl std::fmt::Debug for GpuLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuLlama({} layers, context {}, {:?})", self.config.n_layer, self.context, self.report)
    }
}

/// Tokens per prefill pass (activation buffers are sized for it).
pub const MAX_PASS_TOKENS: usize = 64;

/// The most candidates the GPU picks for top-k sampling (a larger `top_k` reads back the
/// logits). One pass of the top-k kernel costs k scans of the vocabulary spread over 256
/// invocations; 128 covers the usual settings (40, 50, 64, 100).
pub const GPU_TOP_K: usize = 128;

impl GpuLlama {
    /// Uploads `model` and builds every dispatch, with a KV cache of `context` positions (at
    /// most the trained context).
    pub async fn load(ctx: Arc<GpuContext>, model: &Llama, context: usize) -> Result<Self, WorkerError> {
        let start = now_ms();
        let c = model.config.clone();
        let context = context.clamp(1, c.trained_context.max(1));
        let max_t = MAX_PASS_TOKENS.min(context);
        let kernels = Kernels::new(ctx.clone());
        let (d, q_dim, kv_dim, ff) = (c.d_model, c.n_head * c.head_dim, c.kv_dim(), c.d_ff);

        // Weights: embedding (shared with a tied head), then per layer.
        let mut weight_bytes = 0u64;
        let mut upload = |m: &crate::tensor::WeightMatrix| -> Result<GpuMatrix, WorkerError> {
            let g = GpuMatrix::upload(&ctx, m)?;
            weight_bytes += g.buffer.size();
            Ok(g)
        };
        let embed = upload(&model.embed)?;
        let tied = std::ptr::eq(model.lm_head.stored_bytes().as_ptr(), model.embed.stored_bytes().as_ptr()) && model.lm_head.ty == model.embed.ty;
        let lm_head = if tied { None } else { Some(upload(&model.lm_head)?) };
        let mut layers = Vec::with_capacity(c.n_layer);
        for w in &model.layers {
            layers.push([upload(&w.wq)?, upload(&w.wk)?, upload(&w.wv)?, upload(&w.wo)?, upload(&w.w_gate)?, upload(&w.w_up)?, upload(&w.w_down)?]);
        }
        let norms: Vec<[wgpu::Buffer; 2]> = model.layers.iter().map(|w| [storage_f32(&ctx, "attn_norm", &w.attn_norm), storage_f32(&ctx, "ffn_norm", &w.ffn_norm)]).collect();
        let out_norm = storage_f32(&ctx, "output_norm", &model.out_norm);

        // The RoPE angles exactly as ops/rope.rs computes them (f64, then rounded).
        let half = c.head_dim / 2;
        let mut table = Vec::with_capacity(context * half * 2);
        for p in 0..context {
            for i in 0..half {
                let angle = p as f64 * c.rope_base.powf(-((2 * i) as f64) / c.head_dim as f64);
                table.push(angle.cos() as f32);
                table.push(angle.sin() as f32);
            }
        }
        let rope_table = storage_f32(&ctx, "rope_table", &table);

        // KV cache and activations, allocated once.
        let mut kv_cache_bytes = 0;
        let mut caches = Vec::with_capacity(c.n_layer);
        for l in 0..c.n_layer {
            let k = buffers::scratch(&ctx, &format!("k_cache.{l}"), context * kv_dim)?;
            let v = buffers::scratch(&ctx, &format!("v_cache.{l}"), context * kv_dim)?;
            kv_cache_bytes += k.size() + v.size();
            caches.push((k, v));
        }
        let act = |name: &str, n: usize| buffers::scratch(&ctx, name, n);
        let (x, h, q, attn, o) = (act("x", max_t * d)?, act("h", max_t * d)?, act("q", max_t * q_dim)?, act("attn", max_t * q_dim)?, act("o", max_t * d)?);
        let (gate, up) = (act("gate", max_t * ff)?, act("up", max_t * ff)?);
        let scores = act("scores", max_t * c.n_head * context)?;
        let h_last = act("h_last", d)?;
        let logits = act("logits", c.vocab)?;
        let result = buffers::init(&ctx, "top_k", &[0; GPU_TOP_K * 8], wgpu::BufferUsages::STORAGE);
        let tokens = buffers::init(&ctx, "tokens", &vec![0; max_t * 4], wgpu::BufferUsages::STORAGE);
        let step = step_buffer(&ctx, 1, 0);
        let step_last = step_buffer(&ctx, 1, 0);

        // Every dispatch, built once: the layer list twice (decode GEMV, prefill GEMM).
        let k = &kernels;
        let build = |tile: u32| -> Result<Vec<Dispatch>, WorkerError> {
            let mut list = vec![k.embedding(&embed, &tokens, &x, &step, max_t)?];
            for (l, w) in layers.iter().enumerate() {
                let (kc, vc) = &caches[l];
                let [wq, wk, wv, wo, wg, wu, wd] = w;
                list.push(k.rmsnorm(&x, &norms[l][0], &h, &step, d, c.rms_eps, max_t, false)?);
                list.push(k.matmul(wq, &h, &q, &step, max_t, tile, None)?);
                list.push(k.matmul(wk, &h, kc, &step, max_t, tile, Some(context))?);
                list.push(k.matmul(wv, &h, vc, &step, max_t, tile, Some(context))?);
                list.push(k.rope(&rope_table, &q, &step, c.n_head, c.head_dim, c.rope_style, false)?);
                list.push(k.rope(&rope_table, kc, &step, c.n_kv_head, c.head_dim, c.rope_style, true)?);
                list.push(k.attention(&q, kc, vc, &scores, &attn, &step, c.n_head, c.n_kv_head, c.head_dim, context, max_t)?);
                list.push(k.matmul(wo, &attn, &o, &step, max_t, tile, None)?);
                list.push(k.residual(&x, &o, &step, d)?);
                list.push(k.rmsnorm(&x, &norms[l][1], &h, &step, d, c.rms_eps, max_t, false)?);
                list.push(k.matmul(wg, &h, &gate, &step, max_t, tile, None)?);
                list.push(k.matmul(wu, &h, &up, &step, max_t, tile, None)?);
                list.push(k.swiglu(&gate, &up, &step, ff)?);
                list.push(k.matmul(wd, &gate, &o, &step, max_t, tile, None)?);
                list.push(k.residual(&x, &o, &step, d)?);
            }
            Ok(list)
        };
        let decode = build(1)?;
        let prefill = build(PREFILL_TILE)?;
        let head_matrix = lm_head.as_ref().unwrap_or(&embed);
        let head = vec![
            k.rmsnorm(&x, &out_norm, &h_last, &step, d, c.rms_eps, max_t, true)?,
            k.matmul(head_matrix, &h_last, &logits, &step_last, 1, 1, None)?,
        ];
        let pick_argmax = k.top_k(&logits, &result, c.vocab, 1)?;
        let pick_top = k.top_k(&logits, &result, c.vocab, GPU_TOP_K)?;
        ctx.idle().await?;
        let pipeline_ms = kernels.cache.compile_ms();

        // Warm-up: one prefill pass and one decode pass (into cache rows the first real pass
        // overwrites). Drivers may finish compiling a pipeline on its first dispatch (lavapipe
        // JIT-compiles to machine code then); that belongs to the load, not the first token.
        let warm = now_ms();
        for t in [2usize.min(max_t), 1] {
            ctx.queue.write_buffer(&tokens, 0, &[0; 8][..4 * t]);
            ctx.queue.write_buffer(&step, 0, &Step::new(t, 0).to_bytes());
            ctx.queue.write_buffer(&step_last, 0, &Step::new(1, t - 1).to_bytes());
            let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("warm-up") });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("warm-up"), timestamp_writes: None });
                for dispatch in if t == 1 { &decode } else { &prefill }.iter().chain(&head).chain([&pick_argmax]) {
                    dispatch.record(&mut pass, t as u32);
                }
            }
            ctx.queue.submit([encoder.finish()]);
        }
        ctx.idle().await?;
        let warmup_ms = now_ms() - warm;

        let mut matrices: Vec<GpuMatrix> = layers.into_iter().flatten().collect();
        matrices.push(embed);
        matrices.extend(lm_head);
        let mut resident = vec![out_norm, rope_table, x, h, q, attn, o, gate, up, scores, h_last];
        resident.extend(norms.into_iter().flatten());
        resident.extend(caches.into_iter().flat_map(|(k, v)| [k, v]));
        let stage_result = buffers::staging(&ctx, (GPU_TOP_K * 8) as u64);
        let stage_logits = buffers::staging(&ctx, (c.vocab * 4) as u64);
        let own = [&tokens, &step, &step_last, &logits, &result, &stage_result, &stage_logits];
        let total_bytes = weight_bytes + resident.iter().chain(own).map(|b| b.size()).sum::<u64>();
        let report = GpuLoadReport {
            load_ms: now_ms() - start,
            pipeline_ms,
            warmup_ms,
            pipelines: kernels.cache.keys().len(),
            weight_bytes,
            kv_cache_bytes,
            total_bytes,
            adapter: ctx.describe(),
        };
        Ok(GpuLlama {
            stage_result,
            stage_logits,
            kernels,
            config: c,
            context,
            max_t,
            len: 0,
            tokens,
            step,
            step_last,
            logits,
            result,
            decode,
            prefill,
            head,
            pick_argmax,
            pick_top,
            report,
            _resident: resident,
            _matrices: matrices,
        })
    }

    /// Positions in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn context(&self) -> usize {
        self.context
    }

    /// Forgets the sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Whether `tokens` more fit the cache.
    pub fn fits(&self, tokens: usize) -> bool {
        self.len + tokens <= self.context
    }

    /// The pipeline variant keys compiled at load.
    pub fn pipeline_keys(&self) -> Vec<String> {
        self.kernels.cache.keys()
    }

    /// Milliseconds per pipeline variant of one decode step at the current position, each
    /// dispatch submitted and waited for alone (so it includes per-submit overhead): where a
    /// step's time goes. Leaves the sequence as it was (writes only past its end).
    pub async fn profile_decode(&mut self) -> Result<Vec<(String, f64)>, WorkerError> {
        let ctx = self.kernels.ctx.clone();
        ctx.queue.write_buffer(&self.tokens, 0, &0u32.to_le_bytes());
        ctx.queue.write_buffer(&self.step, 0, &Step::new(1, self.len).to_bytes());
        ctx.queue.write_buffer(&self.step_last, 0, &Step::new(1, self.len).to_bytes());
        let mut totals: Vec<(String, f64)> = Vec::new();
        for dispatch in self.decode.iter().chain(&self.head).chain([&self.pick_argmax]) {
            let start = now_ms();
            self.kernels.run(&[dispatch], 1).await?;
            let ms = now_ms() - start;
            match totals.iter_mut().find(|(label, _)| *label == dispatch.label) {
                Some((_, total)) => *total += ms,
                None => totals.push((dispatch.label.clone(), ms)),
            }
        }
        totals.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(totals)
    }

    /// Runs `tokens` after the cached ones (in chunks of up to [`MAX_PASS_TOKENS`]), and reads
    /// back what `want` asks for: the greedy token, the top `k` candidates (`k` ≤
    /// [`GPU_TOP_K`]; a larger `k` reads back the logits) or the last token's logits. A refused
    /// call changes nothing.
    pub async fn forward(&mut self, tokens: &[u32], want: Want) -> Result<Output, WorkerError> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(WorkerError::Protocol { reason: "forward() needs at least one token".into() });
        }
        if let Some(&tok) = tokens.iter().find(|&&tok| tok as usize >= c.vocab) {
            return Err(WorkerError::Tokenizer { reason: format!("token id {tok} is outside the vocabulary of {}", c.vocab) });
        }
        if !self.fits(tokens.len()) {
            return Err(WorkerError::ContextOverflow { tokens: self.len + tokens.len(), context: self.context });
        }
        let want = match want {
            Want::TopK(k) if k > GPU_TOP_K.min(c.vocab) => Want::Logits,
            other => other,
        };
        // What the last chunk picks on the GPU and how many bytes come back.
        let (pick, readback) = match want {
            Want::Token => (Some(&self.pick_argmax), 8),
            Want::TopK(_) => (Some(&self.pick_top), (GPU_TOP_K * 8) as u64),
            Want::Logits => (None, (c.vocab * 4) as u64),
        };
        let ctx = self.kernels.ctx.clone();
        let chunks: Vec<&[u32]> = tokens.chunks(self.max_t).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            let last = n + 1 == chunks.len();
            let t = chunk.len();
            let ids: Vec<u8> = chunk.iter().flat_map(|id| id.to_le_bytes()).collect();
            ctx.queue.write_buffer(&self.tokens, 0, &ids);
            ctx.queue.write_buffer(&self.step, 0, &Step::new(t, self.len).to_bytes());
            ctx.queue.write_buffer(&self.step_last, 0, &Step::new(1, self.len + t - 1).to_bytes());
            let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
                let list = if t == 1 { &self.decode } else { &self.prefill };
                for dispatch in list {
                    dispatch.record(&mut pass, t as u32);
                }
                if last {
                    for dispatch in self.head.iter().chain(pick) {
                        dispatch.record(&mut pass, t as u32);
                    }
                }
            }
            if last {
                match pick {
                    Some(_) => encoder.copy_buffer_to_buffer(&self.result, 0, &self.stage_result, 0, readback),
                    None => encoder.copy_buffer_to_buffer(&self.logits, 0, &self.stage_logits, 0, readback),
                }
            }
            // The next chunk's write_buffer calls land after this submission and before the
            // next one (queue order), so chunks need no wait in between.
            ctx.queue.submit([encoder.finish()]);
            self.len += t;
        }
        let stage = if pick.is_some() { &self.stage_result } else { &self.stage_logits };
        let bytes = buffers::read_staging(&ctx, stage, readback).await?;
        let words: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(match want {
            Want::Token => Output::Argmax { token: words[0], logit: f32::from_bits(words[1]) },
            Want::TopK(k) => Output::TopK(words.chunks_exact(2).take(k).filter(|p| p[0] != u32::MAX).map(|p| (p[0], f32::from_bits(p[1]))).collect()),
            Want::Logits => Output::Logits(words.into_iter().map(f32::from_bits).collect()),
        })
    }
}

impl GpuLlama {
    /// [`GpuLlama::forward`] reading back the last token's logits.
    pub async fn forward_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, WorkerError> {
        match self.forward(tokens, Want::Logits).await? {
            Output::Logits(logits) => Ok(logits),
            other => Err(WorkerError::Protocol { reason: format!("asked the GPU for logits, got {other:?}") }),
        }
    }
}

impl Sequence for GpuLlama {
    fn forward_next<'s>(&'s mut self, tokens: &'s [u32], want: Want) -> LocalBoxFuture<'s, Result<Next, WorkerError>> {
        Box::pin(async move {
            Ok(match self.forward(tokens, want).await? {
                Output::Argmax { token, .. } => Next::Token(token),
                Output::TopK(top) => Next::TopK(top),
                Output::Logits(logits) => Next::Logits(logits),
            })
        })
    }
    fn fits(&self, tokens: usize) -> bool {
        GpuLlama::fits(self, tokens)
    }
    fn len(&self) -> usize {
        self.len
    }
    fn context(&self) -> usize {
        self.context
    }
}
