//! Q4_1 (GGUF layout): blocks of 32, f16 scale `d`, f16 min `m`, then 16 bytes of nibbles;
//! element j (0..16) is the low nibble of byte j, element j+16 the high nibble; value = d·q + m.
//! SmolLM2's default GGUF stores every projection this way.

use super::{cast_blocks, f16_at, PreparedInput, BLOCK};

pub const BLOCK_BYTES: usize = 20;

#[repr(C)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; BLOCK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == BLOCK_BYTES);

pub fn blocks(bytes: &[u8]) -> &[BlockQ4_1] {
    cast_blocks(bytes)
}

pub fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (block, out) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let (d, m) = (f16_at(block.d), f16_at(block.m));
        for (j, &b) in block.qs.iter().enumerate() {
            out[j] = d * (b & 0x0f) as f32 + m;
            out[j + 16] = d * (b >> 4) as f32 + m;
        }
    }
}

/// Σ_j q_j x_j over one block's 32 nibbles (low nibbles pair with x[0..16], high with x[16..32]).
#[inline(always)]
pub(crate) fn nibble_dot(qs: &[u8; BLOCK / 2], x: &[f32]) -> f32 {
    let mut lo = [0f32; 16];
    let mut hi = [0f32; 16];
    for j in 0..16 {
        lo[j] = (qs[j] & 0x0f) as f32 * x[j];
        hi[j] = (qs[j] >> 4) as f32 * x[j + 16];
    }
    let mut acc = [0f32; 8];
    for lane in 0..8 {
        acc[lane] = (lo[lane] + lo[lane + 8]) + (hi[lane] + hi[lane + 8]);
    }
    acc.iter().sum()
}

/// d·Σ q_j x_j + m·Σ x_j: the min folds into one multiply by the block's input sum.
#[inline]
pub fn dot(blocks: &[BlockQ4_1], input: &PreparedInput) -> f32 {
    let mut total = 0.0;
    for ((block, x), &sum) in blocks.iter().zip(input.x.chunks_exact(BLOCK)).zip(&input.block_sums) {
        total += f16_at(block.d) * nibble_dot(&block.qs, x) + f16_at(block.m) * sum;
    }
    total
}
