//! Q2 (this engine's own format, no GGUF equivalent): blocks of 32 weights, an f16 scale `d`,
//! an f16 min `m`, then 8 bytes of 2-bit values q ∈ 0..=3; value = d·q + m. 12 bytes per block
//! (3 bits per weight), so a block is exactly three u32 words for a GPU kernel.
//!
//! ```text
//! byte  0..2  d (f16, little-endian)
//! byte  2..4  m (f16, little-endian)
//! byte  4..12 qs[0..8]: qs[i] bits 2k..2k+2 hold element i + 8k   (i ∈ 0..8, k ∈ 0..4)
//! ```
//!
//! Why strided, like Q4's nibbles: shifting all eight bytes by the same amount and masking
//! (`(qs >> 2k) & 3`) yields eight *consecutive* elements 8k..8k+8, so SIMD decodes a block with
//! a few uniform shifts and one mask and no shuffles. Seen as two u32 words `w0 = qs[0..4]`,
//! `w1 = qs[4..8]`, group g (0..8) of four consecutive elements 4g..4g+4 is the bytes of
//! `(w[g & 1] >> 2·(g >> 1)) & 0x03030303`: one shift and one mask per four values on a GPU.

use super::{cast_blocks, f16_at, PreparedInput, BLOCK};

pub const BLOCK_BYTES: usize = 12;

#[repr(C)]
pub struct BlockQ2 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; BLOCK / 4],
}
const _: () = assert!(std::mem::size_of::<BlockQ2>() == BLOCK_BYTES);

impl BlockQ2 {
    /// The block's 32 values q (0..=3) in element order, four at a time with the u32 word
    /// formula of the module header (the same arithmetic a GPU kernel uses).
    #[inline(always)]
    pub fn values(&self) -> [u8; BLOCK] {
        let w = [u32::from_le_bytes([self.qs[0], self.qs[1], self.qs[2], self.qs[3]]), u32::from_le_bytes([self.qs[4], self.qs[5], self.qs[6], self.qs[7]])];
        let mut out = [0u8; BLOCK];
        for (g, quad) in out.chunks_exact_mut(4).enumerate() {
            quad.copy_from_slice(&((w[g & 1] >> (2 * (g >> 1))) & 0x0303_0303).to_le_bytes());
        }
        out
    }
}

pub fn blocks(bytes: &[u8]) -> &[BlockQ2] {
    cast_blocks(bytes)
}

/// Reference dequantizer: element e straight from the layout definition (byte e % 8, bits
/// 2·(e / 8)), independent of [`BlockQ2::values`] so the tests check one against the other.
pub fn dequantize(blocks: &[BlockQ2], out: &mut [f32]) {
    for (block, out) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let (d, m) = (f16_at(block.d), f16_at(block.m));
        for (e, o) in out.iter_mut().enumerate() {
            let q = (block.qs[e % 8] >> (2 * (e / 8))) & 3;
            *o = d * q as f32 + m;
        }
    }
}

/// Σ_j q_j x_j over one block, in 8 lanes.
#[inline(always)]
pub(crate) fn values_dot(q: &[u8; BLOCK], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for c in 0..BLOCK / 8 {
        for lane in 0..8 {
            let j = c * 8 + lane;
            acc[lane] += q[j] as f32 * x[j];
        }
    }
    acc.iter().sum()
}

/// d·Σ q_j x_j + m·Σ x_j: the min folds into one multiply by the block's input sum.
#[inline]
pub fn dot(blocks: &[BlockQ2], input: &PreparedInput) -> f32 {
    let mut total = 0.0;
    for ((block, x), &sum) in blocks.iter().zip(input.x.chunks_exact(BLOCK)).zip(&input.block_sums) {
        total += f16_at(block.d) * values_dot(&block.values(), x) + f16_at(block.m) * sum;
    }
    total
}
