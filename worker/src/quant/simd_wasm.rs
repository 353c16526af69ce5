//! wasm32 simd128 kernels for integer-activation products (see [`super::integer`]): the browser's
//! CPU path. simd128's integer multiply-add is `i32x4.dot_i16x8_s`, so weights widen to i16
//! (once per block, shared by a tile of tokens) and the i16 activations load as they are — four
//! exact dots per 32-value block, then one f32 multiply-add per block.
//! Prefill tiles 4 tokens per weight row so each weight block is widened once.

#![cfg(all(target_arch = "wasm32", target_feature = "simd128"))]

use std::arch::wasm32::*;

use super::integer::{block_params, QuantizedBatch};
use super::{StorageType, BLOCK};

const TILE: usize = 4;

/// See [`super::integer::rows_dot_batch`] (which checks the shapes).
pub fn rows_dot_batch(ty: StorageType, rows: &[u8], row_bytes: usize, batch: &QuantizedBatch, out: &mut [f32]) {
    // One copy of the loops per storage type, each with `ty` a constant: the per-block branches
    // on the type (block layout, widening) fold away instead of running for every block.
    match ty {
        StorageType::Q4_1 => rows_dot_batch_of(StorageType::Q4_1, rows, row_bytes, batch, out),
        StorageType::Q4_0 => rows_dot_batch_of(StorageType::Q4_0, rows, row_bytes, batch, out),
        StorageType::Q8_0 => rows_dot_batch_of(StorageType::Q8_0, rows, row_bytes, batch, out),
        StorageType::Q3 => rows_dot_batch_of(StorageType::Q3, rows, row_bytes, batch, out),
        StorageType::Q2 => rows_dot_batch_of(StorageType::Q2, rows, row_bytes, batch, out),
        other => rows_dot_batch_of(other, rows, row_bytes, batch, out),
    }
}

#[inline(always)]
fn rows_dot_batch_of(ty: StorageType, rows: &[u8], row_bytes: usize, batch: &QuantizedBatch, out: &mut [f32]) {
    let t = batch.tokens;
    for (row, outs) in rows.chunks_exact(row_bytes).zip(out.chunks_exact_mut(t)) {
        let mut tok = 0;
        while tok + TILE <= t {
            outs[tok..tok + TILE].copy_from_slice(&row_tile::<TILE>(ty, row, batch, tok));
            tok += TILE;
        }
        while tok < t {
            outs[tok] = row_tile::<1>(ty, row, batch, tok)[0];
            tok += 1;
        }
    }
}

/// A block's 32 weights as four i16x8 (values 0..8, 8..16, 16..24, 24..32).
#[inline(always)]
fn widen_block(ty: StorageType, values: &[u8]) -> [v128; 4] {
    if ty == StorageType::Q8_0 {
        let a = v128_load_16(&values[..16]);
        let b = v128_load_16(&values[16..32]);
        [i16x8_extend_low_i8x16(a), i16x8_extend_high_i8x16(a), i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b)]
    } else if ty == StorageType::Q3 || ty == StorageType::Q2 {
        // Strided 2-bit plane (see `q2`): the 8 bytes shifted by 2k and masked are elements
        // 8k..8k+8, so two u64 lanes per register give elements 0..16 and 16..32.
        let qs = u64::from_le_bytes([values[0], values[1], values[2], values[3], values[4], values[5], values[6], values[7]]);
        let mask = u8x16_splat(3);
        let mut lo = v128_and(u64x2(qs, qs >> 2), mask);
        let mut hi = v128_and(u64x2(qs >> 4, qs >> 6), mask);
        if ty == StorageType::Q3 {
            // High-bit plane (see `q3`): lane k of the result needs bit k of every byte (elements
            // 4k..4k+4). simd128 has no per-lane shift, but multiplying by 2^(7−k) (wrapping)
            // moves bit k of each byte to that byte's bit 7 without disturbing it from below.
            let h = u32x4_splat(u32::from_le_bytes([values[8], values[9], values[10], values[11]]));
            let top = u8x16_splat(0x80);
            lo = v128_or(lo, u8x16_shr(v128_and(i32x4_mul(h, u32x4(128, 64, 32, 16)), top), 5));
            hi = v128_or(hi, u8x16_shr(v128_and(i32x4_mul(h, u32x4(8, 4, 2, 1)), top), 5));
        }
        [u16x8_extend_low_u8x16(lo), u16x8_extend_high_u8x16(lo), u16x8_extend_low_u8x16(hi), u16x8_extend_high_u8x16(hi)]
    } else {
        let packed = v128_load_16(&values[..16]);
        let lo = v128_and(packed, u8x16_splat(0x0f));
        let hi = u8x16_shr(packed, 4);
        [u16x8_extend_low_u8x16(lo), u16x8_extend_high_u8x16(lo), u16x8_extend_low_u8x16(hi), u16x8_extend_high_u8x16(hi)]
    }
}

#[inline(always)]
fn v128_load_16(bytes: &[u8]) -> v128 {
    let bytes: &[u8; 16] = bytes.try_into().expect("16 bytes");
    // SAFETY: reads exactly the 16 bytes of `bytes`; v128_load allows unaligned addresses.
    unsafe { v128_load(bytes.as_ptr().cast()) }
}

#[inline(always)]
fn row_tile<const N: usize>(ty: StorageType, row: &[u8], batch: &QuantizedBatch, tok0: usize) -> [f32; N] {
    let nb = batch.blocks_per_token();
    let block_bytes = ty.geometry().1;
    let mut acc = [f32x4_splat(0.0); N];
    let mut offset_terms = [0f32; N];
    for (b, block) in row.chunks_exact(block_bytes).enumerate() {
        let (d_w, b_w, start) = block_params(ty, block);
        let w = widen_block(ty, &block[start..]);
        for n in 0..N {
            let i = (tok0 + n) * nb + b;
            let q = &batch.qs[i * BLOCK..][..BLOCK];
            // SAFETY: four 8 × i16 loads inside `q` (32 values); unaligned loads are allowed.
            let x = unsafe { [0, 8, 16, 24].map(|j| v128_load(q.as_ptr().add(j).cast())) };
            let s01 = i32x4_add(i32x4_dot_i16x8(w[0], x[0]), i32x4_dot_i16x8(w[1], x[1]));
            let s23 = i32x4_add(i32x4_dot_i16x8(w[2], x[2]), i32x4_dot_i16x8(w[3], x[3]));
            let sums = f32x4_convert_i32x4(i32x4_add(s01, s23));
            acc[n] = f32x4_add(acc[n], f32x4_mul(sums, f32x4_splat(d_w * batch.scales[i])));
            offset_terms[n] += b_w * batch.scaled_sums[i];
        }
    }
    let mut out = [0f32; N];
    for n in 0..N {
        let a = acc[n];
        out[n] = (f32x4_extract_lane::<0>(a) + f32x4_extract_lane::<1>(a)) + (f32x4_extract_lane::<2>(a) + f32x4_extract_lane::<3>(a)) + offset_terms[n];
    }
    out
}
