//! Q8_0 (GGUF layout): blocks of 32 weights, an f16 scale `d` then 32 × i8; value = d·q.

use super::{cast_blocks, f16_at, BLOCK};

pub const BLOCK_BYTES: usize = 34;

#[repr(C)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [u8; BLOCK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == BLOCK_BYTES);

pub fn blocks(bytes: &[u8]) -> &[BlockQ8_0] {
    cast_blocks(bytes)
}

pub fn dequantize(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (block, out) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let d = f16_at(block.d);
        for (o, &q) in out.iter_mut().zip(&block.qs) {
            *o = d * (q as i8) as f32;
        }
    }
}

/// Σ_blocks d · Σ_j q_j x_j, with the inner sum in 8 lanes.
#[inline]
pub fn dot(blocks: &[BlockQ8_0], x: &[f32]) -> f32 {
    let mut total = 0.0;
    for (block, x) in blocks.iter().zip(x.chunks_exact(BLOCK)) {
        let mut acc = [0f32; 8];
        for c in 0..BLOCK / 8 {
            for lane in 0..8 {
                let j = c * 8 + lane;
                acc[lane] += (block.qs[j] as i8) as f32 * x[j];
            }
        }
        total += f16_at(block.d) * acc.iter().sum::<f32>();
    }
    total
}
