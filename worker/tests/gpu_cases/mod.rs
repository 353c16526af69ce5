//! The GPU kernel cases: every kernel against the CPU op it replaces, on seeded random inputs
//! of awkward sizes (rows, widths and token counts that are not multiples of the workgroup or
//! the token tile), with a stated tolerance and the worst index reported on failure.
//!
//! Each case is an `async fn` over an acquired [`GpuContext`], so the same code runs natively
//! (`gpu_kernels.rs`: lavapipe, driven by `block_on`) and in headless Chromium inside a
//! dedicated worker (`browser_gpu.rs`: SwiftShader WebGPU, awaited).

/// Calls `$runner!(case, case, …)` with every case: each suite turns the list into its tests.
macro_rules! every_case {
    ($runner:ident) => {
        $runner!(
            embedding_gathers_every_storage_type,
            matmul_matches_the_cpu_for_every_storage_type_decode_and_prefill,
            matmul_can_write_kv_cache_rows_at_the_position,
            rmsnorm_and_the_last_token_norm,
            layernorm_matches,
            rope_both_conventions_in_place_and_in_the_cache,
            attention_over_the_cache_decode_and_prefill,
            swiglu_gelu_and_residual,
            argmax_picks_the_first_maximum,
            top_k_matches_the_cpu_order,
            validation_errors_are_named_not_zeros,
            a_tensor_over_the_binding_limit_is_refused_by_name,
            a_lost_device_is_a_named_error,
        );
    };
}

use std::sync::Arc;

use worker::gpu::buffers::{self, read_f32, storage_f32};
use worker::gpu::kernels::{step_buffer, GpuMatrix, Kernels, PREFILL_TILE};
use worker::gpu::{wgpu, GpuContext};
use worker::ops::rope::{RopeStyle, RopeTable};
use worker::quant::{StorageType, ALL_TYPES};
use worker::tensor::{Activations, SharedBytes, WeightMatrix};

struct Rng(u64);
impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        self.next_u32() as f32 / 2_147_483_648.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// A random `rows × cols` matrix in `ty` with sane f16 scales and mins.
fn random_matrix(ty: StorageType, rows: usize, cols: usize, rng: &mut Rng) -> WeightMatrix {
    let row_bytes = ty.row_bytes(cols).expect("whole blocks");
    let mut bytes: Vec<u8> = (0..rows * row_bytes).map(|_| rng.next_u32() as u8).collect();
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match ty {
        StorageType::F32 => bytes = (0..rows * cols).flat_map(|_| rng.f32().to_le_bytes()).collect(),
        StorageType::F16 => bytes = (0..rows * cols).flat_map(|_| f16(rng.f32())).collect(),
        _ => {
            let with_min = matches!(ty, StorageType::Q4_1 | StorageType::Q3 | StorageType::Q2);
            for block in bytes.chunks_mut(ty.geometry().1) {
                block[..2].copy_from_slice(&f16(rng.f32() * 0.05));
                if with_min {
                    block[2..4].copy_from_slice(&f16(rng.f32() * 0.05));
                }
            }
        }
    }
    WeightMatrix::new("w", ty, rows, cols, SharedBytes::from_vec(bytes)).expect("matrix")
}

/// Asserts |got − want| ≤ atol + rtol·|want| everywhere; reports the worst index.
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if !(excess <= worst.1) || (i == 0 && !(excess <= 0.0)) {
            worst = (i, if excess.is_nan() { f32::INFINITY } else { excess });
        }
    }
    let (i, excess) = worst;
    assert!(excess <= 0.0, "{what}: worst at index {i}: gpu {} vs cpu {} (|Δ| = {}, tolerance {} + {}·|cpu|)", got[i], want[i], (got[i] - want[i]).abs(), atol, rtol);
    // A kernel that silently did nothing reads back zeros; random references are never all zero.
    assert!(want.iter().all(|&w| w == 0.0) || got.iter().any(|&g| g != 0.0), "{what}: the GPU returned only zeros");
}

pub fn kernels(ctx: &Arc<GpuContext>) -> Kernels {
    Kernels::new(ctx.clone())
}

pub async fn embedding_gathers_every_storage_type(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(1);
    for ty in ALL_TYPES {
        let (rows, cols) = (37, if ty.geometry().0 == 1 { 75 } else { 96 });
        let m = random_matrix(ty, rows, cols, &mut rng);
        let ids = [5u32, 0, 36, 17, 5];
        let w = GpuMatrix::upload(&ctx, &m).unwrap();
        let tokens = buffers::init(&ctx, "tokens", &ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>(), wgpu::BufferUsages::STORAGE);
        let out = buffers::scratch(&ctx, "out", ids.len() * cols).unwrap();
        let step = step_buffer(&ctx, ids.len(), 0);
        let d = k.embedding(&w, &tokens, &out, &step, ids.len()).unwrap();
        k.run(&[&d], ids.len() as u32).await.unwrap();
        let got = read_f32(&ctx, &out, ids.len() * cols).await.unwrap();
        let mut want = vec![0f32; ids.len() * cols];
        for (row, &id) in want.chunks_exact_mut(cols).zip(&ids) {
            m.dequantize_row(id as usize, row);
        }
        // Same arithmetic (d·q + m in f32): exact but for fused multiply-add rounding.
        assert_close(&format!("embedding {}", ty.name()), &got, &want, 1e-6, 1e-6);
    }
}

pub async fn matmul_matches_the_cpu_for_every_storage_type_decode_and_prefill(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(2);
    for ty in ALL_TYPES {
        let (rows, cols) = (131, if ty.geometry().0 == 1 { 75 } else { 96 });
        let m = random_matrix(ty, rows, cols, &mut rng);
        let w = GpuMatrix::upload(&ctx, &m).unwrap();
        for (t, tile, lanes) in [(1usize, 1u32, 4u32), (7, PREFILL_TILE, 4), (5, 1, 4), (3, 1, 1), (6, PREFILL_TILE, 8), (2, 1, 2)] {
            let xs = rng.vec(t * cols);
            let x = storage_f32(&ctx, "x", &xs);
            let y = buffers::scratch(&ctx, "y", t * rows).unwrap();
            let step = step_buffer(&ctx, t, 0);
            let d = k.matmul_lanes(&w, &x, &y, &step, t, tile, None, lanes).unwrap();
            k.run(&[&d], t as u32).await.unwrap();
            let got = read_f32(&ctx, &y, t * rows).await.unwrap();
            let mut want = vec![0f32; t * rows];
            m.matmul(&xs, &mut want, t, Activations::F32);
            // f32 sums of `cols` products in another order: ~1e-6 relative per term.
            assert_close(&format!("matmul {} t={t} tile={tile} lanes={lanes}", ty.name()), &got, &want, 2e-5 * (cols as f32).sqrt(), 1e-5);
        }
    }
}

pub async fn matmul_can_write_kv_cache_rows_at_the_position(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(3);
    let (rows, cols, t, pos, context) = (70, 64, 3, 5, 11);
    let m = random_matrix(StorageType::Q4_1, rows, cols, &mut rng);
    let w = GpuMatrix::upload(&ctx, &m).unwrap();
    let xs = rng.vec(t * cols);
    let x = storage_f32(&ctx, "x", &xs);
    let cache = buffers::scratch(&ctx, "cache", context * rows).unwrap();
    let step = step_buffer(&ctx, t, pos);
    let d = k.matmul(&w, &x, &cache, &step, t, PREFILL_TILE, Some(context)).unwrap();
    k.run(&[&d], t as u32).await.unwrap();
    let got = read_f32(&ctx, &cache, context * rows).await.unwrap();
    let mut want = vec![0f32; context * rows];
    m.matmul(&xs, &mut want[pos * rows..(pos + t) * rows], t, Activations::F32);
    assert_close("matmul into cache rows 5..8", &got, &want, 1e-4, 1e-5);
}

pub async fn rmsnorm_and_the_last_token_norm(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(4);
    let (t, d, eps) = (3, 75, 1e-5);
    let (xs, g) = (rng.vec(t * d), rng.vec(d));
    let (x, gb) = (storage_f32(&ctx, "x", &xs), storage_f32(&ctx, "g", &g));
    let y = buffers::scratch(&ctx, "y", t * d).unwrap();
    let last = buffers::scratch(&ctx, "last", d).unwrap();
    let step = step_buffer(&ctx, t, 0);
    let all = k.rmsnorm(&x, &gb, &y, &step, d, eps, t, false).unwrap();
    let one = k.rmsnorm(&x, &gb, &last, &step, d, eps, t, true).unwrap();
    k.run(&[&all, &one], t as u32).await.unwrap();
    let mut want = xs.clone();
    worker::ops::rmsnorm::rmsnorm(&mut want, &g, eps);
    assert_close("rmsnorm", &read_f32(&ctx, &y, t * d).await.unwrap(), &want, 1e-6, 1e-5);
    assert_close("rmsnorm last token", &read_f32(&ctx, &last, d).await.unwrap(), &want[(t - 1) * d..], 1e-6, 1e-5);
}

pub async fn layernorm_matches(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(5);
    let (t, d, eps) = (4, 131, 1e-12);
    let (xs, g, b) = (rng.vec(t * d), rng.vec(d), rng.vec(d));
    let x = storage_f32(&ctx, "x", &xs);
    let (gb, bb) = (storage_f32(&ctx, "gamma", &g), storage_f32(&ctx, "beta", &b));
    let y = buffers::scratch(&ctx, "y", t * d).unwrap();
    let step = step_buffer(&ctx, t, 0);
    let dispatch = k.layernorm(&x, &gb, &bb, &y, &step, d, eps, t).unwrap();
    k.run(&[&dispatch], t as u32).await.unwrap();
    let mut want = xs.clone();
    worker::ops::layernorm::layernorm(&mut want, &g, &b, eps);
    assert_close("layernorm", &read_f32(&ctx, &y, t * d).await.unwrap(), &want, 1e-5, 1e-5);
}

pub async fn rope_both_conventions_in_place_and_in_the_cache(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(6);
    let (heads, hd, t, pos, context, base) = (3, 10, 5, 7, 20, 10000.0);
    for style in [RopeStyle::AdjacentPairs, RopeStyle::RotateHalf] {
        for at_pos in [false, true] {
            let rows = if at_pos { context } else { t };
            let xs = rng.vec(rows * heads * hd);
            let x = storage_f32(&ctx, "x", &xs);
            let mut table = vec![];
            for p in 0..context {
                for i in 0..hd / 2 {
                    let angle = p as f64 * f64::powf(base, -((2 * i) as f64) / hd as f64);
                    table.extend([angle.cos() as f32, angle.sin() as f32]);
                }
            }
            let tb = storage_f32(&ctx, "table", &table);
            let step = step_buffer(&ctx, t, pos);
            let dispatch = k.rope(&tb, &x, &step, heads, hd, style, at_pos).unwrap();
            k.run(&[&dispatch], t as u32).await.unwrap();
            let cpu = RopeTable::new(style, hd, base, context);
            let mut want = xs.clone();
            for i in 0..t {
                let row = if at_pos { pos + i } else { i };
                cpu.apply(&mut want[row * heads * hd..][..heads * hd], pos + i);
            }
            assert_close(&format!("rope {style:?} at_pos={at_pos}"), &read_f32(&ctx, &x, xs.len()).await.unwrap(), &want, 1e-6, 1e-5);
        }
    }
}

pub async fn attention_over_the_cache_decode_and_prefill(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(7);
    let (heads, kv_heads, hd, context) = (6, 2, 20, 150);
    let kv_dim = kv_heads * hd;
    for (t, pos) in [(1usize, 0usize), (1, 137), (5, 9), (70, 3)] {
        let qs = rng.vec(t * heads * hd);
        let (ks, vs) = (rng.vec(context * kv_dim), rng.vec(context * kv_dim));
        let (q, kb, vb) = (storage_f32(&ctx, "q", &qs), storage_f32(&ctx, "k", &ks), storage_f32(&ctx, "v", &vs));
        let scores = buffers::scratch(&ctx, "scores", t * heads * context).unwrap();
        let out = buffers::scratch(&ctx, "out", t * heads * hd).unwrap();
        let step = step_buffer(&ctx, t, pos);
        let dispatch = k.attention(&q, &kb, &vb, &scores, &out, &step, heads, kv_heads, hd, context, t).unwrap();
        k.run(&[&dispatch], t as u32).await.unwrap();
        let layout = worker::ops::attention::HeadLayout { n_head: heads, n_kv_head: kv_heads, head_dim: hd };
        let mut want = vec![0f32; t * heads * hd];
        for i in 0..t {
            let n = pos + i + 1;
            for h in 0..heads {
                let at = (i * heads + h) * hd;
                worker::ops::attention::attend_head(&qs[at..at + hd], h, &ks[..n * kv_dim], &vs[..n * kv_dim], layout, None, &mut want[at..at + hd]);
            }
        }
        assert_close(&format!("attention t={t} pos={pos}"), &read_f32(&ctx, &out, want.len()).await.unwrap(), &want, 1e-5, 1e-4);
    }
}

pub async fn swiglu_gelu_and_residual(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(8);
    let (t, n) = (3, 75);
    let (gs, us) = (rng.vec(t * n).iter().map(|v| v * 6.0).collect::<Vec<_>>(), rng.vec(t * n));
    let (g, u) = (storage_f32(&ctx, "gate", &gs), storage_f32(&ctx, "up", &us));
    let x = storage_f32(&ctx, "x", &gs);
    let r = storage_f32(&ctx, "r", &us);
    let step = step_buffer(&ctx, t, 0);
    let a = k.swiglu(&g, &u, &step, n).unwrap();
    let b = k.gelu(&x, &step, n).unwrap();
    let c = k.residual(&r, &u, &step, n).unwrap();
    k.run(&[&a, &b, &c], t as u32).await.unwrap();
    let mut want = gs.clone();
    worker::ops::activation::swiglu(&mut want, &us);
    assert_close("swiglu", &read_f32(&ctx, &g, t * n).await.unwrap(), &want, 1e-6, 1e-5);
    let mut want = gs.clone();
    worker::ops::activation::gelu(&mut want);
    assert_close("gelu", &read_f32(&ctx, &x, t * n).await.unwrap(), &want, 1e-6, 1e-5);
    let want: Vec<f32> = us.iter().map(|v| v + v).collect();
    assert_close("residual", &read_f32(&ctx, &r, t * n).await.unwrap(), &want, 0.0, 0.0);
}

pub async fn argmax_picks_the_first_maximum(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(9);
    for n in [1usize, 255, 1003, 49_157] {
        let mut v = rng.vec(n);
        let at = n * 2 / 3;
        v[at] = 7.5;
        if at + 1 < n {
            v[n - 1] = 7.5; // a tie later on: the first one wins, as on the CPU
        }
        let logits = storage_f32(&ctx, "logits", &v);
        let result = buffers::init(&ctx, "result", &[0; 8], wgpu::BufferUsages::STORAGE);
        let d = k.top_k(&logits, &result, n, 1).unwrap();
        k.run(&[&d], 1).await.unwrap();
        let got = read_f32(&ctx, &result, 2).await.unwrap();
        assert_eq!((got[0].to_bits() as usize, got[1]), (at, 7.5), "argmax over {n}");
    }
}

/// The k best in the CPU sampler's order (value descending, lower id first on ties), with
/// ties straddling the cut, and k past the end padded with "none" (index u32::MAX).
pub async fn top_k_matches_the_cpu_order(ctx: Arc<GpuContext>) {
    let k = kernels(&ctx);
    let mut rng = Rng(11);
    for (n, want) in [(49_157usize, 128usize), (1003, 40), (300, 1), (5, 8)] {
        // Values on a coarse grid, so many ties, some across the k-th place.
        let v: Vec<f32> = (0..n).map(|_| (rng.f32() * 40.0).round() / 4.0).collect();
        let logits = storage_f32(&ctx, "logits", &v);
        let result = buffers::scratch(&ctx, "result", 2 * want).unwrap();
        let d = k.top_k(&logits, &result, n, want).unwrap();
        k.run(&[&d], 1).await.unwrap();
        let words: Vec<u32> = read_f32(&ctx, &result, 2 * want).await.unwrap().into_iter().map(f32::to_bits).collect();
        let got: Vec<(u32, f32)> = words.chunks_exact(2).map(|p| (p[0], f32::from_bits(p[1]))).collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]).then(a.cmp(&b)));
        let expected: Vec<(u32, f32)> = (0..want).map(|i| order.get(i).map_or((u32::MAX, 0.0), |&id| (id, v[id as usize]))).collect();
        if let Some(i) = (0..want).find(|&i| got[i] != expected[i]) {
            panic!("top-{want} of {n}: first difference at rank {i}: gpu {:?} vs cpu {:?}", got[i], expected[i]);
        }
    }
}

pub async fn validation_errors_are_named_not_zeros(ctx: Arc<GpuContext>) {
    // Inside a scope: the helper turns the captured error into GpuValidationError.
    // (Natively the scope's verdict comes back at once; in the browser it is a promise, so the
    // error is queued and the next wait reports it — still named, still a failure.)
    let err = match ctx.scoped("a broken shader", || ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("broken"), source: wgpu::ShaderSource::Wgsl("fn main( {".into()) })) {
        Err(err) => err,
        Ok(_) => ctx.idle().await.unwrap_err(),
    };
    assert!(err.to_string().contains("a broken shader"), "{err}");
    assert_eq!(err.name(), "GpuValidationError", "{err}");
    // Outside any scope: the uncaptured-error handler records it and the next check fails.
    let _ = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("broken2"), source: wgpu::ShaderSource::Wgsl("fn main( {".into()) });
    let err = ctx.idle().await.unwrap_err();
    assert_eq!(err.name(), "GpuValidationError", "{err}");
    assert!(ctx.check().is_ok(), "a reported error is not reported twice");
}

pub async fn a_tensor_over_the_binding_limit_is_refused_by_name(ctx: Arc<GpuContext>) {
    let mut ctx = Arc::try_unwrap(ctx).expect("the only reference");
    ctx.limits.max_storage_buffer_binding_size = 4096;
    let m = random_matrix(StorageType::Q8_0, 200, 64, &mut Rng(10));
    let err = GpuMatrix::upload(&ctx, &m).unwrap_err();
    assert_eq!(err.name(), "GpuLimitError");
    assert!(err.to_string().contains("maxStorageBufferBindingSize") && err.to_string().contains("4096"), "{err}");
}

pub async fn a_lost_device_is_a_named_error(ctx: Arc<GpuContext>) {
    let x = storage_f32(&ctx, "x", &[1.0; 4]);
    ctx.destroy();
    let err = read_f32(&ctx, &x, 4).await.unwrap_err();
    assert_eq!(err.name(), "GpuDeviceLostError", "{err}");
    assert!(ctx.is_lost(), "the context knows it is lost (callers re-acquire on that)");
    // The engine recovers without restarting: a new device, and kernels run again.
    let fresh = GpuContext::acquire().await.expect("a new device after the loss");
    let y = storage_f32(&fresh, "y", &[2.0, 3.0]);
    assert_eq!(read_f32(&fresh, &y, 2).await.unwrap(), vec![2.0, 3.0]);
}
