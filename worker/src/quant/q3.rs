//! Q3 (this engine's own format, no GGUF equivalent): blocks of 32 weights, an f16 scale `d`,
//! an f16 min `m`, then the low two bits and the high bit of each 3-bit value q ∈ 0..=7 in
//! separate planes; value = d·q + m. 16 bytes per block (4 bits per weight, scales included), so a
//! block is exactly four u32 words for a GPU kernel.
//!
//! ```text
//! byte  0..2   d (f16, little-endian)
//! byte  2..4   m (f16, little-endian)
//! byte  4..12  ql[0..8]: ql[i] bits 2k..2k+2 hold the low bits of element i + 8k  (as Q2's qs)
//! byte 12..16  qh[0..4]: qh[i] bit k holds the high bit (value 4) of element i + 4k (k ∈ 0..8)
//! q(e) = ((ql[e % 8] >> 2·(e / 8)) & 3) | (((qh[e % 4] >> (e / 4)) & 1) << 2)
//! ```
//!
//! Why this high-bit plane: both planes are strided so that one uniform shift and a byte mask
//! yields *consecutive* elements. With u32 words `l0 = ql[0..4]`, `l1 = ql[4..8]`, `h = qh`,
//! group g (0..8) of four consecutive elements 4g..4g+4 is the bytes of
//!
//! ```text
//! ((l[g & 1] >> 2·(g >> 1)) & 0x03030303) | (((h >> g) & 0x01010101) << 2)
//! ```
//!
//! (three shifts, two masks, one or per four values; a GPU kernel gets four packed u8 values
//! per word, ready for a packed-byte dot). On AVX2 one `vpsrlvd` of the broadcast `h` by
//! 0..8 lays all 32 high bits out in element order in a single register; on simd128, which
//! has no per-lane shift, an i32 multiply by 2^(7−k) does the same job (see `simd_wasm`).
//! A plain bitmask (bit e = element e) would instead need a byte shuffle plus a compare per
//! register on the CPU side.

use super::{cast_blocks, f16_at, PreparedInput, BLOCK};

pub const BLOCK_BYTES: usize = 16;

#[repr(C)]
pub struct BlockQ3 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub ql: [u8; BLOCK / 4],
    pub qh: [u8; BLOCK / 8],
}
const _: () = assert!(std::mem::size_of::<BlockQ3>() == BLOCK_BYTES);

impl BlockQ3 {
    /// The block's 32 values q (0..=7) in element order, four at a time with the u32 word
    /// formula of the module header (the same arithmetic a GPU kernel uses).
    #[inline(always)]
    pub fn values(&self) -> [u8; BLOCK] {
        let l = [u32::from_le_bytes([self.ql[0], self.ql[1], self.ql[2], self.ql[3]]), u32::from_le_bytes([self.ql[4], self.ql[5], self.ql[6], self.ql[7]])];
        let h = u32::from_le_bytes(self.qh);
        let mut out = [0u8; BLOCK];
        for (g, quad) in out.chunks_exact_mut(4).enumerate() {
            let word = ((l[g & 1] >> (2 * (g >> 1))) & 0x0303_0303) | (((h >> g) & 0x0101_0101) << 2);
            quad.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

pub fn blocks(bytes: &[u8]) -> &[BlockQ3] {
    cast_blocks(bytes)
}

/// Reference dequantizer: element e straight from the per-element formula of the module
/// header, independent of [`BlockQ3::values`] so the tests check one against the other.
pub fn dequantize(blocks: &[BlockQ3], out: &mut [f32]) {
    for (block, out) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let (d, m) = (f16_at(block.d), f16_at(block.m));
        for (e, o) in out.iter_mut().enumerate() {
            let low = (block.ql[e % 8] >> (2 * (e / 8))) & 3;
            let high = (block.qh[e % 4] >> (e / 4)) & 1;
            *o = d * (low | high << 2) as f32 + m;
        }
    }
}

/// d·Σ q_j x_j + m·Σ x_j: the min folds into one multiply by the block's input sum.
#[inline]
pub fn dot(blocks: &[BlockQ3], input: &PreparedInput) -> f32 {
    let mut total = 0.0;
    for ((block, x), &sum) in blocks.iter().zip(input.x.chunks_exact(BLOCK)).zip(&input.block_sums) {
        total += f16_at(block.d) * super::q2::values_dot(&block.values(), x) + f16_at(block.m) * sum;
    }
    total
}
