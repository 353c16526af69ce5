//! Q4_0 (GGUF layout): blocks of 32, an f16 scale `d` then 16 bytes of nibbles; element j
//! (0..16) is the low nibble of byte j, element j+16 the high nibble; value = d·(q − 8).

use super::{cast_blocks, f16_at, PreparedInput, BLOCK};

pub const BLOCK_BYTES: usize = 18;

#[repr(C)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; BLOCK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == BLOCK_BYTES);

pub fn blocks(bytes: &[u8]) -> &[BlockQ4_0] {
    cast_blocks(bytes)
}

pub fn dequantize(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (block, out) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let d = f16_at(block.d);
        for (j, &b) in block.qs.iter().enumerate() {
            out[j] = d * ((b & 0x0f) as i32 - 8) as f32;
            out[j + 16] = d * ((b >> 4) as i32 - 8) as f32;
        }
    }
}

/// d·(Σ q_j x_j − 8·Σ x_j): the offset folds into one multiply by the block's input sum.
#[inline]
pub fn dot(blocks: &[BlockQ4_0], input: &PreparedInput) -> f32 {
    let mut total = 0.0;
    for ((block, x), &sum) in blocks.iter().zip(input.x.chunks_exact(BLOCK)).zip(&input.block_sums) {
        total += f16_at(block.d) * (super::q4_1::nibble_dot(&block.qs, x) - 8.0 * sum);
    }
    total
}
