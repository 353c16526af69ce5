//! One constructor per op. Each checks shapes against the buffers it is given, fetches the
//! cached pipeline of its variant, writes the op's [`Dims`] into its own small uniform buffer
//! and builds the bind group — once, at load — and returns a [`Dispatch`] that a command
//! encoder records as many times as it likes (every decode step re-records the same list).
//!
//! Shapes (t = tokens in the pass, read from the Step uniform at run time):
//! ```text
//! embedding  W [vocab, d] (stored type), tokens [t]        → out [t, d]
//! matmul     W [rows, cols] (stored type), x [t, cols]      → y [t, rows]  (or cache rows at pos)
//! rmsnorm    x [t, d], g [d]                                → y [t, d]     (or last token → [1, d])
//! layernorm  x [t, d], gamma [d], beta [d]                  → y [t, d]
//! rope       x [t, heads·hd] (or cache rows at pos), table [positions, hd/2] (cos, sin)
//! attention  q [t, heads·hd], k/v cache [ctx, kv·hd], scores [t, heads, ctx] → out [t, heads·hd]
//! swiglu     gate [t, ff] ← silu(gate) ⊙ up;  gelu  x [t, d] in place;  residual x += o
//! top_k      logits [n] → result [k × (index, value bits)], best first (k = 1: argmax)
//! ```

use std::sync::Arc;

use super::pipelines::{Dims, Family, PipelineCache, Variant};
use super::GpuContext;
use crate::ops::rope::RopeStyle;
use crate::quant::StorageType;
use crate::WorkerError;

/// Workgroup size of the row / element kernels (a multiple of every subgroup size, and within
/// WebGPU's guaranteed 256 invocations).
pub const WG: u32 = 64;
/// Workgroup size of the single-workgroup top-k (and argmax).
pub const TOPK_WG: u32 = 256;
/// Invocations per weight row in the matmul (`LANES` in matmul.wgsl). Measured on lavapipe
/// (SmolLM2's 1536×576 Q4_1 GEMV, 2 shared cores): 1 lane 5.5 ms, 2: 4.6, 4: 3.9, 8: 6.0.
pub const MATMUL_LANES: u32 = 4;
/// Tokens per invocation of the prefill GEMM.
pub const PREFILL_TILE: u32 = 4;

/// A weight matrix on the GPU: `rows × cols` in its storage type, GPU block layout.
pub struct GpuMatrix {
    pub name: String,
    pub ty: StorageType,
    pub rows: usize,
    pub cols: usize,
    pub buffer: wgpu::Buffer,
}

impl std::fmt::Debug for GpuMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuMatrix({} {}×{} {})", self.name, self.rows, self.cols, self.ty.name())
    }
}

impl GpuMatrix {
    pub fn upload(ctx: &GpuContext, m: &crate::tensor::WeightMatrix) -> Result<Self, WorkerError> {
        Ok(GpuMatrix { name: m.name.clone(), ty: m.ty, rows: m.rows, cols: m.cols, buffer: super::buffers::upload_weights(ctx, m)? })
    }
}

/// How many workgroups along y: the token axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAxis {
    /// One (top-k, the last-token norm).
    One,
    /// One per token.
    PerToken,
    /// One per `n` tokens (the GEMM's token tile).
    Tiles(u32),
}

/// A recorded-once dispatch: pipeline, bind group and grid.
pub struct Dispatch {
    pub label: String,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    /// Workgroups along x (fixed by the op's shape).
    pub x: u32,
    pub y: TokenAxis,
    /// The op's uniform buffer (kept alive with the bind group).
    _dims: wgpu::Buffer,
}

impl Dispatch {
    /// Records this dispatch for a pass of `t` tokens.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, t: u32) {
        let y = match self.y {
            TokenAxis::One => 1,
            TokenAxis::PerToken => t,
            TokenAxis::Tiles(n) => t.div_ceil(n),
        };
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.x, y.max(1), 1);
    }
}

/// The op constructors, sharing one device and one pipeline cache.
pub struct Kernels {
    pub ctx: Arc<GpuContext>,
    pub cache: PipelineCache,
}

fn shape_error(what: &str, expected: usize, found: usize) -> WorkerError {
    WorkerError::ShapeMismatch { tensor: what.to_owned(), expected: vec![expected], found: vec![found] }
}

/// Checks that `buffer` holds at least `floats` f32 values.
fn need(buffer: &wgpu::Buffer, floats: usize, what: &str) -> Result<(), WorkerError> {
    let have = buffer.size() as usize / 4;
    if have < floats {
        return Err(shape_error(&format!("{what} (f32 values in its GPU buffer)"), floats, have));
    }
    Ok(())
}

impl Kernels {
    pub fn new(ctx: Arc<GpuContext>) -> Self {
        Kernels { ctx, cache: PipelineCache::default() }
    }

    fn dispatch(&self, variant: Variant, dims: Dims, step: Option<&wgpu::Buffer>, buffers: &[&wgpu::Buffer], x: u32, y: TokenAxis) -> Result<Dispatch, WorkerError> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        if x > max {
            return Err(WorkerError::GpuLimit { tensor: variant.key(), bytes: x as u64, limit: "maxComputeWorkgroupsPerDimension", max: max as u64 });
        }
        let pipeline = self.cache.get(&self.ctx, variant)?;
        let dims_buffer = super::buffers::init(&self.ctx, "dims", &dims.to_bytes(), wgpu::BufferUsages::UNIFORM);
        let mut all: Vec<&wgpu::Buffer> = vec![&dims_buffer];
        all.extend(step);
        all.extend_from_slice(buffers);
        let entries: Vec<wgpu::BindGroupEntry> = all.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        let label = variant.key();
        let bind_group = self.ctx.scoped(&format!("bind group of {label}"), || {
            self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(&label), layout: &pipeline.get_bind_group_layout(0), entries: &entries })
        })?;
        Ok(Dispatch { label, pipeline, bind_group, x, y, _dims: dims_buffer })
    }

    /// out[i] = W[tokens[i]] for up to `max_t` tokens.
    pub fn embedding(&self, w: &GpuMatrix, tokens: &wgpu::Buffer, out: &wgpu::Buffer, step: &wgpu::Buffer, max_t: usize) -> Result<Dispatch, WorkerError> {
        need(out, max_t * w.cols, "embedding output")?;
        let dims = Dims { rows: w.rows as u32, cols: w.cols as u32, ..Dims::default() };
        self.dispatch(Variant::weights(Family::Embedding, w.ty, 1, WG), dims, Some(step), &[&w.buffer, tokens, out], (w.cols as u32).div_ceil(WG), TokenAxis::PerToken)
    }

    /// y = x·Wᵀ for up to `max_t` tokens; `tile` tokens per invocation (1: GEMV). With
    /// `cache_rows: Some(n)`, y is a KV cache of n rows and the pass writes rows pos..pos+t.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(&self, w: &GpuMatrix, x: &wgpu::Buffer, y: &wgpu::Buffer, step: &wgpu::Buffer, max_t: usize, tile: u32, cache_rows: Option<usize>) -> Result<Dispatch, WorkerError> {
        self.matmul_lanes(w, x, y, step, max_t, tile, cache_rows, MATMUL_LANES)
    }

    /// [`Kernels::matmul`] with `lanes` invocations per row (1, 2, 4 or 8; comparisons).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_lanes(&self, w: &GpuMatrix, x: &wgpu::Buffer, y: &wgpu::Buffer, step: &wgpu::Buffer, max_t: usize, tile: u32, cache_rows: Option<usize>, lanes: u32) -> Result<Dispatch, WorkerError> {
        if !matches!(lanes, 1 | 2 | 4 | 8) {
            return Err(WorkerError::InvalidParameter { reason: format!("matmul lanes {lanes}: expected 1, 2, 4 or 8") });
        }
        if w.ty.row_bytes(w.cols).is_none() {
            return Err(shape_error(&format!("{} (columns must be whole {}-value blocks)", w.name, w.ty.geometry().0), w.cols.next_multiple_of(w.ty.geometry().0), w.cols));
        }
        need(x, max_t * w.cols, &format!("input of {}", w.name))?;
        need(y, cache_rows.unwrap_or(max_t) * w.rows, &format!("output of {}", w.name))?;
        let dims = Dims { rows: w.rows as u32, cols: w.cols as u32, flags: if cache_rows.is_some() { 2 } else { 0 }, ..Dims::default() };
        // The shader has exactly two token tiles: 1 (GEMV) and 4 (GEMM).
        let tile = if tile <= 1 { 1 } else { PREFILL_TILE };
        let variant = Variant { lanes, ..Variant::weights(Family::Matmul, w.ty, tile, WG) };
        self.dispatch(variant, dims, Some(step), &[&w.buffer, x, y], (w.rows as u32).div_ceil(WG / lanes), TokenAxis::Tiles(tile))
    }

    /// RMSNorm of every token (or, with `last_only`, of the last token into row 0).
    pub fn rmsnorm(&self, x: &wgpu::Buffer, g: &wgpu::Buffer, y: &wgpu::Buffer, step: &wgpu::Buffer, cols: usize, eps: f32, max_t: usize, last_only: bool) -> Result<Dispatch, WorkerError> {
        need(g, cols, "RMSNorm weight")?;
        need(x, max_t * cols, "RMSNorm input")?;
        need(y, if last_only { cols } else { max_t * cols }, "RMSNorm output")?;
        let dims = Dims { cols: cols as u32, eps, flags: last_only as u32, ..Dims::default() };
        // The last-token variant still needs t (to find the last row), so it keeps the Step.
        self.dispatch(Variant::new(Family::RmsNorm, WG), dims, Some(step), &[x, g, y], 1, if last_only { TokenAxis::One } else { TokenAxis::PerToken })
    }

    pub fn layernorm(&self, x: &wgpu::Buffer, gamma: &wgpu::Buffer, beta: &wgpu::Buffer, y: &wgpu::Buffer, step: &wgpu::Buffer, cols: usize, eps: f32, max_t: usize) -> Result<Dispatch, WorkerError> {
        need(gamma, cols, "LayerNorm gamma")?;
        need(beta, cols, "LayerNorm beta")?;
        need(x, max_t * cols, "LayerNorm input")?;
        need(y, max_t * cols, "LayerNorm output")?;
        let dims = Dims { cols: cols as u32, eps, ..Dims::default() };
        self.dispatch(Variant::new(Family::LayerNorm, WG), dims, Some(step), &[x, gamma, beta, y], 1, TokenAxis::PerToken)
    }

    /// RoPE in place on `x` ([t, heads·head_dim], or KV-cache rows at pos with `rows_at_pos`).
    pub fn rope(&self, table: &wgpu::Buffer, x: &wgpu::Buffer, step: &wgpu::Buffer, heads: usize, head_dim: usize, style: RopeStyle, rows_at_pos: bool) -> Result<Dispatch, WorkerError> {
        if head_dim % 2 != 0 {
            return Err(shape_error("RoPE head_dim (must be even)", head_dim + 1, head_dim));
        }
        let flags = (style == RopeStyle::RotateHalf) as u32 | if rows_at_pos { 2 } else { 0 };
        let dims = Dims { heads: heads as u32, head_dim: head_dim as u32, flags, ..Dims::default() };
        let pairs = (heads * head_dim / 2) as u32;
        self.dispatch(Variant::new(Family::Rope, WG), dims, Some(step), &[table, x], pairs.div_ceil(WG), TokenAxis::PerToken)
    }

    /// Causal attention of up to `max_t` query tokens over a KV cache of `context` rows.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(&self, q: &wgpu::Buffer, k: &wgpu::Buffer, v: &wgpu::Buffer, scores: &wgpu::Buffer, out: &wgpu::Buffer, step: &wgpu::Buffer, heads: usize, kv_heads: usize, head_dim: usize, context: usize, max_t: usize) -> Result<Dispatch, WorkerError> {
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(shape_error("attention KV heads (must divide the query heads)", heads, kv_heads));
        }
        need(q, max_t * heads * head_dim, "attention queries")?;
        need(k, context * kv_heads * head_dim, "attention key cache")?;
        need(v, context * kv_heads * head_dim, "attention value cache")?;
        need(scores, max_t * heads * context, "attention scores")?;
        need(out, max_t * heads * head_dim, "attention output")?;
        let dims = Dims { heads: heads as u32, kv_heads: kv_heads as u32, head_dim: head_dim as u32, scale: 1.0 / (head_dim as f32).sqrt(), context: context as u32, ..Dims::default() };
        self.dispatch(Variant::new(Family::Attention, WG), dims, Some(step), &[q, k, v, scores, out], heads as u32, TokenAxis::PerToken)
    }

    /// gate ← silu(gate) ⊙ up, [t, cols].
    pub fn swiglu(&self, gate: &wgpu::Buffer, up: &wgpu::Buffer, step: &wgpu::Buffer, cols: usize) -> Result<Dispatch, WorkerError> {
        let dims = Dims { cols: cols as u32, ..Dims::default() };
        self.dispatch(Variant::new(Family::Swiglu, WG), dims, Some(step), &[gate, up], (cols as u32).div_ceil(WG), TokenAxis::PerToken)
    }

    /// x ← gelu(x), [t, cols] (the auto layout of the `gelu` entry point binds only `a`).
    pub fn gelu(&self, x: &wgpu::Buffer, step: &wgpu::Buffer, cols: usize) -> Result<Dispatch, WorkerError> {
        let dims = Dims { cols: cols as u32, ..Dims::default() };
        self.dispatch(Variant::new(Family::Gelu, WG), dims, Some(step), &[x], (cols as u32).div_ceil(WG), TokenAxis::PerToken)
    }

    /// x += o, [t, cols].
    pub fn residual(&self, x: &wgpu::Buffer, o: &wgpu::Buffer, step: &wgpu::Buffer, cols: usize) -> Result<Dispatch, WorkerError> {
        let dims = Dims { cols: cols as u32, ..Dims::default() };
        self.dispatch(Variant::new(Family::Residual, WG), dims, Some(step), &[x, o], (cols as u32).div_ceil(WG), TokenAxis::PerToken)
    }

    /// result = the `k` largest of `logits[..n]` as (index, value bits) pairs, best first, ties
    /// to the lower index (the CPU sampler's order); `k = 1` is greedy argmax.
    pub fn top_k(&self, logits: &wgpu::Buffer, result: &wgpu::Buffer, n: usize, k: usize) -> Result<Dispatch, WorkerError> {
        let k = k.max(1);
        need(logits, n, "top-k logits")?;
        need(result, 2 * k, "top-k result (2 words per candidate)")?;
        let dims = Dims { rows: k as u32, cols: n as u32, ..Dims::default() };
        self.dispatch(Variant::new(Family::TopK, TOPK_WG), dims, None, &[logits, result], 1, TokenAxis::One)
    }

    /// Records `dispatches` for `t` tokens in one compute pass, submits, waits, and checks for
    /// validation errors (tests and one-off ops; the model keeps its own encoder).
    pub async fn run(&self, dispatches: &[&Dispatch], t: u32) -> Result<(), WorkerError> {
        let mut encoder = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kernels") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("kernels"), timestamp_writes: None });
            for d in dispatches {
                d.record(&mut pass, t);
            }
        }
        self.ctx.queue.submit([encoder.finish()]);
        self.ctx.idle().await
    }
}

/// A Step uniform buffer (written per pass with `queue.write_buffer`).
pub fn step_buffer(ctx: &GpuContext, t: usize, pos: usize) -> wgpu::Buffer {
    super::buffers::init(ctx, "step", &super::pipelines::Step::new(t, pos).to_bytes(), wgpu::BufferUsages::UNIFORM)
}
