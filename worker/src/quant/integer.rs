//! Integer activations: the fast path for quantized weights.
//!
//! The activation vector is quantized once per product into blocks of 32 i16 with one f32 scale
//! (`d = max|x| / 32767`, `q = round(x / d)`). The inner product of a quantized weight block with
//! an activation block is then an exact integer sum accumulated in i32 (u8 nibbles, 3-bit or
//! 2-bit values × i16 for Q4_0/Q4_1/Q3/Q2, i8 × i16 for Q8_0; at most 32·128·32767 < 2³¹),
//! and each block costs one float multiply:
//!
//! ```text
//! block(w)·block(x) ≈ d_w·d_x·Σ n_j q_j + b_w·(d_x·Σ q_j)
//!   Q4_1, Q3, Q2: n = unsigned value, b_w = m (the block min)
//!   Q4_0: n = nibble, b_w = −8·d_w                 Q8_0: n = i8 weight, b_w = 0
//! ```
//!
//! The only error is the activation's rounding, half a step of `max|x| / 32767` per value: on
//! SmolLM2 the logits move by under 1e-3 (the fidelity tests allow 1e-2), so near-ties keep
//! their order. Why not 8 bits, as llama.cpp does? We measured it: only ~5% faster here, but
//! logits moved by up to 0.55 and flipped the fixtures' near-ties (margins of 0.08).
//!
//! Three implementations of [`rows_dot_batch`], chosen once: AVX2 (x86_64, detected at run
//! time), simd128 (wasm32 built with `+simd128`), and a portable one that is also the test
//! reference for the other two. Integer sums are exact in all three; only the order of the
//! per-block float accumulation differs (8 or 4 lanes vs one), so results agree to ~1e-6 relative.

use super::{f16_at, StorageType, BLOCK};

/// Activations of `tokens` rows of `cols` values, quantized per block of 32.
#[derive(Debug, Clone, Default)]
pub struct QuantizedBatch {
    pub tokens: usize,
    pub cols: usize,
    /// [tokens, cols] quantized values.
    pub qs: Vec<i16>,
    /// [tokens, cols / 32] block scales `d_x`.
    pub scales: Vec<f32>,
    /// [tokens, cols / 32] `d_x · Σ q` per block (what the Q4 offsets multiply).
    pub scaled_sums: Vec<f32>,
}

impl QuantizedBatch {
    /// Quantizes xs: [tokens, cols]. `cols` must be a whole number of blocks (every quantized
    /// weight matrix's is, which is the only time this path is taken).
    pub fn new(xs: &[f32], tokens: usize) -> Self {
        let cols = xs.len() / tokens.max(1);
        debug_assert!(cols % BLOCK == 0 && cols * tokens == xs.len());
        let blocks = xs.len() / BLOCK;
        let mut batch = QuantizedBatch { tokens, cols, qs: vec![0; xs.len()], scales: vec![0.0; blocks], scaled_sums: vec![0.0; blocks] };
        for (b, (x, q)) in xs.chunks_exact(BLOCK).zip(batch.qs.chunks_exact_mut(BLOCK)).enumerate() {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 32767.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in q.iter_mut().zip(x) {
                *q = round_small(v * inv) as i16;
                sum += *q as i32;
            }
            batch.scales[b] = d;
            batch.scaled_sums[b] = d * sum as f32;
        }
        batch
    }

    pub fn blocks_per_token(&self) -> usize {
        self.cols / BLOCK
    }
}

/// Rounds |v| ≤ 2²² to the nearest integer, ties to even, without a libm call: adding 1.5·2²³
/// leaves no fraction bits, so the FPU's default rounding does the work. Same result on every
/// IEEE target (no fast-math here), unlike `round()`, which is a function call on baseline x86.
#[inline(always)]
fn round_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Whether `ty` has an integer kernel (the quantized block formats).
pub fn supports(ty: StorageType) -> bool {
    matches!(ty, StorageType::Q4_0 | StorageType::Q4_1 | StorageType::Q8_0 | StorageType::Q3 | StorageType::Q2)
}

/// out[r·t + tok] = row r of `rows` · token `tok` of `batch`, for every row and token.
/// rows: [n, row_bytes] blocks of `ty` (which [`supports`]); out: [n, batch.tokens].
pub fn rows_dot_batch(ty: StorageType, rows: &[u8], row_bytes: usize, batch: &QuantizedBatch, out: &mut [f32]) {
    assert!(supports(ty), "{} has no integer kernel", ty.name());
    assert_eq!(rows.len() / row_bytes * batch.tokens, out.len());
    assert_eq!(row_bytes, ty.row_bytes(batch.cols).unwrap_or(0));
    #[cfg(target_arch = "x86_64")]
    if super::simd_x86::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time), and the shapes were
        // checked above: every row holds batch.cols / 32 blocks and `out` has a slot per product.
        unsafe { super::simd_x86::rows_dot_batch(ty, rows, row_bytes, batch, out) };
        return;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::simd_wasm::rows_dot_batch(ty, rows, row_bytes, batch, out);
        return;
    }
    #[allow(unreachable_code)]
    rows_dot_batch_portable(ty, rows, row_bytes, batch, out)
}

/// The weight block's `(d_w, b_w)` (see the module header) and where its values start.
#[inline(always)]
pub(crate) fn block_params(ty: StorageType, block: &[u8]) -> (f32, f32, usize) {
    let d = f16_at([block[0], block[1]]);
    match ty {
        StorageType::Q4_0 => (d, -8.0 * d, 2),
        StorageType::Q4_1 | StorageType::Q3 | StorageType::Q2 => (d, f16_at([block[2], block[3]]), 4),
        _ => (d, 0.0, 2),
    }
}

/// Portable implementation (any target) and the reference the SIMD versions are tested against.
pub fn rows_dot_batch_portable(ty: StorageType, rows: &[u8], row_bytes: usize, batch: &QuantizedBatch, out: &mut [f32]) {
    let block_bytes = ty.geometry().1;
    let (t, nb) = (batch.tokens, batch.blocks_per_token());
    for (row, outs) in rows.chunks_exact(row_bytes).zip(out.chunks_exact_mut(t)) {
        for (tok, o) in outs.iter_mut().enumerate() {
            let mut total = 0f32;
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let (d_w, b_w, start) = block_params(ty, block);
                let i = tok * nb + b;
                let q = |j: usize| batch.qs[i * BLOCK + j] as i32;
                let values = &block[start..];
                let unsigned_dot = |n: [u8; BLOCK]| (0..BLOCK).map(|j| n[j] as i32 * q(j)).sum::<i32>();
                let idot: i32 = match ty {
                    StorageType::Q8_0 => (0..BLOCK).map(|j| (values[j] as i8) as i32 * q(j)).sum(),
                    StorageType::Q3 => unsigned_dot(super::q3::blocks(block)[0].values()),
                    StorageType::Q2 => unsigned_dot(super::q2::blocks(block)[0].values()),
                    _ => (0..BLOCK / 2).map(|j| (values[j] & 0x0f) as i32 * q(j) + (values[j] >> 4) as i32 * q(j + 16)).sum(),
                };
                total += d_w * batch.scales[i] * idot as f32 + b_w * batch.scaled_sums[i];
            }
            *o = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::{random_row, Rng};
    use crate::quant::{dot_row_reference, dot_row, PreparedInput};

    const TYPES: [StorageType; 5] = [StorageType::Q4_0, StorageType::Q4_1, StorageType::Q8_0, StorageType::Q3, StorageType::Q2];

    fn random_case(ty: StorageType, rows: usize, cols: usize, tokens: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
        let w: Vec<u8> = (0..rows).flat_map(|_| random_row(ty, cols, rng)).collect();
        let xs: Vec<f32> = (0..tokens * cols).map(|_| rng.f32() * 3.0).collect();
        (w, xs)
    }

    #[test]
    fn quantized_activations_round_trip_within_half_a_step() {
        let mut rng = Rng(3);
        let xs: Vec<f32> = (0..96).map(|_| rng.f32() * 5.0).collect();
        let batch = QuantizedBatch::new(&xs, 1);
        for (i, &x) in xs.iter().enumerate() {
            let d = batch.scales[i / BLOCK];
            assert!((batch.qs[i] as f32 * d - x).abs() <= 0.5 * d + 1e-6, "value {i}");
        }
        for (v, want) in [(2.5, 2.0), (3.5, 4.0), (-2.5, -2.0), (126.6, 127.0), (-0.4, 0.0)] {
            assert_eq!(round_small(v), want, "round({v})");
        }
        let zeros = QuantizedBatch::new(&[0.0; 32], 1);
        assert!(zeros.qs.iter().all(|&q| q == 0) && zeros.scales[0] == 0.0);
    }

    #[test]
    fn the_selected_kernel_matches_the_portable_one() {
        let mut rng = Rng(11);
        for ty in TYPES {
            // Awkward sizes: token counts around the 4-token tile, odd row counts.
            for (rows, cols, tokens) in [(1, 32, 1), (7, 576, 1), (5, 64, 3), (3, 1536, 4), (9, 96, 9)] {
                let (w, xs) = random_case(ty, rows, cols, tokens, &mut rng);
                let batch = QuantizedBatch::new(&xs, tokens);
                let row_bytes = ty.row_bytes(cols).unwrap();
                let (mut fast, mut slow) = (vec![0.0; rows * tokens], vec![0.0; rows * tokens]);
                rows_dot_batch(ty, &w, row_bytes, &batch, &mut fast);
                rows_dot_batch_portable(ty, &w, row_bytes, &batch, &mut slow);
                for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{} {rows}x{cols} t={tokens} [{i}]: {a} vs {b}", ty.name());
                }
            }
        }
    }

    #[test]
    fn integer_activations_track_the_f32_reference() {
        let mut rng = Rng(5);
        for ty in TYPES {
            let cols = 576;
            let (w, xs) = random_case(ty, 16, cols, 1, &mut rng);
            let batch = QuantizedBatch::new(&xs, 1);
            let row_bytes = ty.row_bytes(cols).unwrap();
            let mut fast = vec![0.0; 16];
            rows_dot_batch(ty, &w, row_bytes, &batch, &mut fast);
            for (r, got) in fast.iter().enumerate() {
                let row = &w[r * row_bytes..][..row_bytes];
                let want = dot_row_reference(ty, row, &xs);
                let exact = dot_row(ty, row, &PreparedInput::new(&xs));
                let magnitude: f32 = {
                    let mut deq = vec![0.0; cols];
                    crate::quant::dequantize_row(ty, row, &mut deq);
                    deq.iter().zip(&xs).map(|(a, b)| (a * b).abs()).sum()
                };
                // Rounding x to half a step of max|x|/32767 moves the sum by at most ~Σ|w·x|/65534.
                assert!((got - want).abs() <= 5e-5 * magnitude, "{} row {r}: {got}, reference {want} (Σ|wx| {magnitude})", ty.name());
                assert!((exact - want).abs() <= 1e-4 * (1.0 + magnitude), "{} row {r}: f32 path {exact} vs {want}", ty.name());
            }
        }
    }
}
