//! x86_64 kernels (AVX2 + FMA + F16C, detected at run time so one binary runs everywhere).
//!
//! Two families:
//! - integer-activation products ([`rows_dot_batch`], see [`super::integer`]): a block of 32
//!   weights widens to two registers of 16 × i16 (Q4: low nibbles are values 0..16, high
//!   nibbles 16..32; Q8_0: sign-extended; Q3/Q2: per-dword variable shifts lay the strided bit
//!   planes out in element order, see [`two_bit_values`]), `vpmaddwd` multiplies them with the
//!   i16 activations
//!   straight into 8 × i32 (exact), which convert once to f32 and take one FMA per block;
//! - [`with_avx2`]: the portable f32-activation kernels compiled with AVX2/FMA enabled, so LLVM
//!   vectorises them 8 wide. Same operation order, same results.
//!
//! Prefill tiles 4 tokens per weight row: each weight block is decoded once and multiplied with
//! four activation blocks while it sits in a register.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::integer::QuantizedBatch;
use super::{StorageType, BLOCK};

/// Whether this CPU runs the kernels here (cached by std after the first query).
#[inline]
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// Tokens per tile in prefill: four accumulators plus a decoded block fit the 16 ymm registers.
const TILE: usize = 4;

/// See [`super::integer::rows_dot_batch`] (which checks the shapes).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]); `rows` must hold whole rows of
/// `batch.cols` values of `ty` and `out` one slot per (row, token).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows_dot_batch(ty: StorageType, rows: &[u8], row_bytes: usize, batch: &QuantizedBatch, out: &mut [f32]) {
    match ty {
        StorageType::Q4_0 => rows_kind::<Q4_0>(rows, row_bytes, batch, out),
        StorageType::Q4_1 => rows_kind::<Q4_1>(rows, row_bytes, batch, out),
        StorageType::Q8_0 => rows_kind::<Q8_0>(rows, row_bytes, batch, out),
        StorageType::Q3 => rows_kind::<Q3>(rows, row_bytes, batch, out),
        StorageType::Q2 => rows_kind::<Q2>(rows, row_bytes, batch, out),
        _ => unreachable!("checked by integer::rows_dot_batch"),
    }
}

/// Q4_0 = 0, Q4_1 = 1, Q8_0 = 2, Q3 = 3, Q2 = 4: a const parameter so each format gets its
/// own loop.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
const Q3: u8 = 3;
const Q2: u8 = 4;

#[inline(always)]
unsafe fn rows_kind<const KIND: u8>(rows: &[u8], row_bytes: usize, batch: &QuantizedBatch, out: &mut [f32]) {
    let t = batch.tokens;
    for (row, outs) in rows.chunks_exact(row_bytes).zip(out.chunks_exact_mut(t)) {
        let mut tok = 0;
        while tok + TILE <= t {
            outs[tok..tok + TILE].copy_from_slice(&row_tile::<KIND, TILE>(row.as_ptr(), batch, tok));
            tok += TILE;
        }
        while tok < t {
            outs[tok] = row_tile::<KIND, 1>(row.as_ptr(), batch, tok)[0];
            tok += 1;
        }
    }
}

#[inline(always)]
unsafe fn f16_to_f32(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// One weight row times `N` consecutive tokens starting at `tok0`.
#[inline(always)]
unsafe fn row_tile<const KIND: u8, const N: usize>(row: *const u8, batch: &QuantizedBatch, tok0: usize) -> [f32; N] {
    let nb = batch.blocks_per_token();
    let block_bytes = match KIND {
        Q4_0 => super::q4_0::BLOCK_BYTES,
        Q4_1 => super::q4_1::BLOCK_BYTES,
        Q3 => super::q3::BLOCK_BYTES,
        Q2 => super::q2::BLOCK_BYTES,
        _ => super::q8_0::BLOCK_BYTES,
    };
    let mut acc = [_mm256_setzero_ps(); N];
    let mut offset_terms = [0f32; N];
    for b in 0..nb {
        let p = row.add(b * block_bytes);
        let d_w = f16_to_f32(p);
        let (values, b_w) = match KIND {
            Q4_0 => (p.add(2), -8.0 * d_w),
            Q4_1 | Q3 | Q2 => (p.add(4), f16_to_f32(p.add(2))),
            _ => (p.add(2), 0.0),
        };
        // Weights 0..16 and 16..32 as i16.
        let (w0, w1) = if KIND == Q8_0 {
            (_mm256_cvtepi8_epi16(_mm_loadu_si128(values.cast())), _mm256_cvtepi8_epi16(_mm_loadu_si128(values.add(16).cast())))
        } else if KIND == Q3 || KIND == Q2 {
            let mut v = two_bit_values(values);
            if KIND == Q3 {
                v = _mm256_or_si256(v, q3_high_bits(values.add(8)));
            }
            (_mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)), _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(v)))
        } else {
            let packed = _mm_loadu_si128(values.cast());
            let mask = _mm_set1_epi8(0x0f);
            (_mm256_cvtepu8_epi16(_mm_and_si128(packed, mask)), _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), mask)))
        };
        for n in 0..N {
            let i = (tok0 + n) * nb + b;
            let x = batch.qs.as_ptr().add(i * BLOCK);
            let sums = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256(x.cast())), _mm256_madd_epi16(w1, _mm256_loadu_si256(x.add(16).cast())));
            let scale = _mm256_set1_ps(d_w * *batch.scales.get_unchecked(i));
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[n]);
            if KIND != Q8_0 {
                offset_terms[n] += b_w * *batch.scaled_sums.get_unchecked(i);
            }
        }
    }
    let mut out = [0f32; N];
    for n in 0..N {
        out[n] = hsum(acc[n]) + offset_terms[n];
    }
    out
}

/// The 32 two-bit values of a Q2 block (or Q3's low bits), one per byte in element order, from
/// the 8 strided bytes at `qs` (see `q2`'s layout): with the two u32 words w0, w1 broadcast as
/// [w0, w1, w0, w1, …], dword j shifted right by 2·(j / 2) holds elements 4j..4j+4 in its bytes.
#[inline(always)]
unsafe fn two_bit_values(qs: *const u8) -> __m256i {
    let words = _mm256_set1_epi64x(std::ptr::read_unaligned(qs.cast::<i64>()));
    _mm256_and_si256(_mm256_srlv_epi32(words, _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6)), _mm256_set1_epi8(3))
}

/// Q3's high-bit plane (the u32 at `qh`, see `q3`'s layout) as 0 or 4 per element, one per byte
/// in element order: dword k of the broadcast shifted right by k holds elements 4k..4k+4 in the
/// low bit of its bytes.
#[inline(always)]
unsafe fn q3_high_bits(qh: *const u8) -> __m256i {
    let h = _mm256_set1_epi32(std::ptr::read_unaligned(qh.cast::<i32>()));
    let bits = _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), _mm256_set1_epi8(1));
    // Values are 0 or 1 per byte, so a dword shift cannot carry across bytes.
    _mm256_slli_epi32::<2>(bits)
}

/// Runs `f` with AVX2/FMA/F16C enabled, so the portable kernels it inlines vectorise 8 wide
/// (no fast-math: the order of float operations, hence the results, are unchanged).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Two weight rows against four tokens: [`dot4_f32`] for `w[0]` and for `w[1]` in one pass, so
/// each token load feeds two accumulator chains (six loads per 64 multiply-adds instead of ten;
/// the calibration batch's products were load-bound). Same arithmetic per (row, token) as
/// [`dot4_f32`], so bit-identical results.
///
/// # Safety
/// The CPU must have AVX2 ([`available`]); both rows the same length, every `xs[k]` at least it.
#[target_feature(enable = "avx2")]
pub unsafe fn dot2x4_f32(w: [&[f32]; 2], xs: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = w[0].len();
    debug_assert!(w[1].len() == n && xs.iter().all(|x| x.len() >= n));
    let chunks = n / 8;
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    for c in 0..chunks {
        let wv = [_mm256_loadu_ps(w[0].as_ptr().add(c * 8)), _mm256_loadu_ps(w[1].as_ptr().add(c * 8))];
        for (k, x) in xs.iter().enumerate() {
            let xv = _mm256_loadu_ps(x.as_ptr().add(c * 8));
            acc[0][k] = _mm256_add_ps(acc[0][k], _mm256_mul_ps(xv, wv[0]));
            acc[1][k] = _mm256_add_ps(acc[1][k], _mm256_mul_ps(xv, wv[1]));
        }
    }
    let mut out = [[0f32; 4]; 2];
    for ((o_row, acc_row), w) in out.iter_mut().zip(acc).zip(w) {
        for ((o, a), x) in o_row.iter_mut().zip(acc_row).zip(&xs) {
            *o = finish_dot(a, w, x, chunks * 8);
        }
    }
    out
}

/// The end of one of these dot products, in `crate::tensor::dot_f32`'s order: the eight lanes
/// of `acc` summed in order, plus the products of the tail `from..` summed in order.
#[inline(always)]
unsafe fn finish_dot(acc: __m256, w: &[f32], x: &[f32], from: usize) -> f32 {
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    let mut tail = 0.0;
    for i in from..w.len() {
        tail += x[i] * w[i];
    }
    lanes.iter().sum::<f32>() + tail
}

/// [`crate::tensor::dot4_f32`] in AVX2 registers, for the f32-activation prefill. The portable
/// loop does not vectorise well inside [`with_avx2`] (LLVM keeps its 4 × 8 accumulators in
/// shuffled SSE registers and spills them: ~6 G multiply-adds/s on two cores for a 30k-token
/// calibration batch). Same arithmetic: per token eight lanes, each a product then a sum (no
/// FMA), the lanes summed in order, then the tail — bit-identical results.
///
/// # Safety
/// The CPU must have AVX2 ([`available`]); every `xs[k]` must hold at least `w.len()` values.
#[target_feature(enable = "avx2")]
pub unsafe fn dot4_f32(w: &[f32], xs: [&[f32]; 4]) -> [f32; 4] {
    let n = w.len();
    debug_assert!(xs.iter().all(|x| x.len() >= n));
    let chunks = n / 8;
    let mut acc = [_mm256_setzero_ps(); 4];
    for c in 0..chunks {
        let wv = _mm256_loadu_ps(w.as_ptr().add(c * 8));
        for (a, x) in acc.iter_mut().zip(&xs) {
            *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(c * 8)), wv));
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), x) in out.iter_mut().zip(acc).zip(&xs) {
        *o = finish_dot(a, w, x, chunks * 8);
    }
    out
}
