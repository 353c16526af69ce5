//! Weight storage types and their kernels.
//!
//! Weights stay in their stored form (f32, f16, or blocks of 32 quantized values) and are
//! dequantized in registers inside the dot product; activations stay f32, so results track the
//! float reference closely. Each block format is a `#[repr(C)]` struct with a compile-time size
//! check, a reference dequantizer, a slow reference dot (`dot_reference`: dequantize, then
//! multiply) and the fast `dot`; tests cross-check the two on random data.
//!
//! A second, faster path for the block formats quantizes the activations to 16 or 8 bits too
//! and multiplies integers ([`integer`]), with AVX2 ([`simd_x86`]) and simd128 ([`simd_wasm`])
//! kernels.
//!
//! Block layouts are GGUF's (so importing a GGUF tensor is a byte copy): blocks are not 4-byte
//! aligned (Q8_0 is 34 bytes), so scales are read with `from_le_bytes`, never by casting. Q3
//! and Q2 are this engine's own formats (no GGUF equivalent; layouts in [`q3`] and [`q2`]),
//! made by [`quantize`]; [`ggml_import`] dequantizes the GGUF types that have no lossless
//! storage type here (K-quants, Q5, BF16) so they can be requantized on import.

pub mod f16;
pub mod f32;
pub mod ffn_tune;
pub mod ggml_import;
pub mod gptq;
pub mod integer;
pub mod q2;
pub mod q3;
pub mod q4_0;
pub mod q4_1;
pub mod q8_0;
pub mod quantize;
pub(crate) mod simd_wasm;
pub(crate) mod simd_x86;

use serde::{Deserialize, Serialize};

use crate::formats::gguf::GgmlType;

/// Number of weights in one quantization block (every block format here).
pub const BLOCK: usize = 32;

/// How a weight tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    F32,
    F16,
    /// GGUF Q8_0: f16 scale d, 32 × i8; value = d·q.
    Q8_0,
    /// GGUF Q4_0: f16 scale d, 16 bytes of nibbles; value = d·(q − 8).
    Q4_0,
    /// GGUF Q4_1: f16 scale d, f16 min m, 16 bytes of nibbles; value = d·q + m.
    Q4_1,
    /// Own format: f16 scale d, f16 min m, 3-bit q in two bit planes; value = d·q + m.
    Q3,
    /// Own format: f16 scale d, f16 min m, 2-bit q; value = d·q + m.
    Q2,
}

impl StorageType {
    /// (elements per block, bytes per block).
    pub const fn geometry(self) -> (usize, usize) {
        match self {
            StorageType::F32 => (1, 4),
            StorageType::F16 => (1, 2),
            StorageType::Q8_0 => (BLOCK, q8_0::BLOCK_BYTES),
            StorageType::Q4_0 => (BLOCK, q4_0::BLOCK_BYTES),
            StorageType::Q4_1 => (BLOCK, q4_1::BLOCK_BYTES),
            StorageType::Q3 => (BLOCK, q3::BLOCK_BYTES),
            StorageType::Q2 => (BLOCK, q2::BLOCK_BYTES),
        }
    }

    /// Bytes of one row of `cols` values, or None when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        let (elems, bytes) = self.geometry();
        (cols % elems == 0).then(|| cols / elems * bytes)
    }

    /// The storage type a GGUF tensor type maps to losslessly, if any.
    pub fn from_ggml(ty: GgmlType) -> Option<Self> {
        Some(match ty {
            GgmlType::F32 => StorageType::F32,
            GgmlType::F16 => StorageType::F16,
            GgmlType::Q8_0 => StorageType::Q8_0,
            GgmlType::Q4_0 => StorageType::Q4_0,
            GgmlType::Q4_1 => StorageType::Q4_1,
            _ => return None,
        })
    }

    /// The storage type a packed manifest's `dtype` names (see [`StorageType::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_TYPES.into_iter().find(|ty| ty.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            StorageType::F32 => "f32",
            StorageType::F16 => "f16",
            StorageType::Q8_0 => "q8_0",
            StorageType::Q4_0 => "q4_0",
            StorageType::Q4_1 => "q4_1",
            StorageType::Q3 => "q3",
            StorageType::Q2 => "q2",
        }
    }
}

/// The widest kernels this machine runs: what benchmark figures were measured with.
pub fn kernel_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if simd_x86::available() {
        return "avx2+fma";
    }
    if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        "simd128"
    } else {
        "portable"
    }
}

/// Every storage type, in the order of the enum.
pub const ALL_TYPES: [StorageType; 7] =
    [StorageType::F32, StorageType::F16, StorageType::Q8_0, StorageType::Q4_0, StorageType::Q4_1, StorageType::Q3, StorageType::Q2];

/// An activation vector prepared once per matrix-vector product and shared by every row: the
/// values, and their sums per block of 32 (Q4_0 and the min formats Q4_1/Q3/Q2 fold their
/// offset into one multiply by the block sum instead of 32 subtractions).
#[derive(Debug, Clone)]
pub struct PreparedInput<'a> {
    pub x: &'a [f32],
    pub block_sums: Vec<f32>,
}

impl<'a> PreparedInput<'a> {
    pub fn new(x: &'a [f32]) -> Self {
        let block_sums = x.chunks(BLOCK).map(|c| c.iter().sum()).collect();
        PreparedInput { x, block_sums }
    }
}

/// Dequantizes one row (`bytes` holds exactly `out.len()` values). Reference path: clear, slow.
pub fn dequantize_row(ty: StorageType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        StorageType::F32 => f32::dequantize(bytes, out),
        StorageType::F16 => f16::dequantize(bytes, out),
        StorageType::Q8_0 => q8_0::dequantize(q8_0::blocks(bytes), out),
        StorageType::Q4_0 => q4_0::dequantize(q4_0::blocks(bytes), out),
        StorageType::Q4_1 => q4_1::dequantize(q4_1::blocks(bytes), out),
        StorageType::Q3 => q3::dequantize(q3::blocks(bytes), out),
        StorageType::Q2 => q2::dequantize(q2::blocks(bytes), out),
    }
}

/// Reference dot product of one stored row with `x`: dequantize, then multiply in f64.
pub fn dot_row_reference(ty: StorageType, bytes: &[u8], x: &[f32]) -> f32 {
    let mut row = vec![0.0; x.len()];
    dequantize_row(ty, bytes, &mut row);
    row.iter().zip(x).map(|(&w, &v)| w as f64 * v as f64).sum::<f64>() as f32
}

/// Fast dot product of one stored row with a prepared activation.
#[inline]
pub fn dot_row(ty: StorageType, bytes: &[u8], input: &PreparedInput) -> f32 {
    match ty {
        StorageType::F32 => f32::dot(bytes, input.x),
        StorageType::F16 => f16::dot(bytes, input.x),
        StorageType::Q8_0 => q8_0::dot(q8_0::blocks(bytes), input.x),
        StorageType::Q4_0 => q4_0::dot(q4_0::blocks(bytes), input),
        StorageType::Q4_1 => q4_1::dot(q4_1::blocks(bytes), input),
        StorageType::Q3 => q3::dot(q3::blocks(bytes), input),
        StorageType::Q2 => q2::dot(q2::blocks(bytes), input),
    }
}

/// Σ value(i)·x[i] with eight independent accumulators, so the loop vectorizes without
/// reassociating one running sum (the order of f32 additions stays fixed and reproducible).
#[inline(always)]
pub(crate) fn lanes_dot(x: &[f32], value: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.len() / 8;
    for c in 0..chunks {
        for lane in 0..8 {
            let i = c * 8 + lane;
            acc[lane] += value(i) * x[i];
        }
    }
    let mut tail = 0.0;
    for (i, &xi) in x.iter().enumerate().skip(chunks * 8) {
        tail += value(i) * xi;
    }
    acc.iter().sum::<f32>() + tail
}

/// Reads a little-endian f16 (unaligned) as f32.
#[inline(always)]
pub(crate) fn f16_at(bytes: [u8; 2]) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes(bytes))
}

/// f16 → f32, exactly, without branches on the common path. Every block of every quantized
/// product converts one or two f16 scales, and wasm (like x86 without F16C) has no instruction
/// for it: the portable conversion's branches cost as much as the block's SIMD work there.
///
/// The f16's exponent and mantissa, shifted into an f32's, read as an f32 2^112 too small (the
/// biases differ: 127 − 15), for normals and subnormals alike; one exact multiplication by 2^112
/// fixes it. Only infinities and NaNs (exponent all ones) need the slow path.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(bits: u16) -> f32 {
    if bits & 0x7c00 == 0x7c00 {
        return half::f16::from_bits(bits).to_f32();
    }
    let magnitude = f32::from_bits(((bits & 0x7fff) as u32) << 13) * f32::from_bits(0x7780_0000); // × 2^112
    f32::from_bits(magnitude.to_bits() | (((bits & 0x8000) as u32) << 16))
}

/// Reinterprets `bytes` as a slice of `T` blocks. `T` must be a `#[repr(C)]` struct of `u8`
/// arrays only (alignment 1, every bit pattern valid), which every block type here is.
pub(crate) fn cast_blocks<T>(bytes: &[u8]) -> &[T] {
    const { assert!(std::mem::align_of::<T>() == 1) };
    let size = std::mem::size_of::<T>();
    assert!(bytes.len() % size == 0, "{} bytes is not a whole number of {size}-byte blocks", bytes.len());
    // SAFETY: T has alignment 1 and no invalid bit patterns (u8 arrays only), and the length is
    // a whole number of T, so the new slice covers exactly the same initialised bytes.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) }
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let (ours, reference) = (f16_bits_to_f32(bits), half::f16::from_bits(bits).to_f32());
            assert!(ours.to_bits() == reference.to_bits() || (ours.is_nan() && reference.is_nan()), "{bits:#06x}: {ours} vs {reference}");
        }
    }

    use super::*;

    /// A small deterministic generator (xorshift) for test data; no dependency needed.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next_u32(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 32) as u32
        }
        /// Uniform in [-1, 1).
        pub fn f32(&mut self) -> f32 {
            self.next_u32() as f32 / 2_147_483_648.0 - 1.0
        }
        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next_u32() as u8).collect()
        }
    }

    /// A random row of `cols` values in `ty`, with sane f16 scales.
    pub fn random_row(ty: StorageType, cols: usize, rng: &mut Rng) -> Vec<u8> {
        let mut bytes = rng.bytes(ty.row_bytes(cols).unwrap());
        let scale = |rng: &mut Rng| half::f16::from_f32(rng.f32() * 0.05).to_le_bytes();
        match ty {
            StorageType::F32 => bytes = (0..cols).flat_map(|_| rng.f32().to_le_bytes()).collect(),
            StorageType::F16 => bytes = (0..cols).flat_map(|_| half::f16::from_f32(rng.f32()).to_le_bytes()).collect(),
            StorageType::Q8_0 | StorageType::Q4_0 => {
                for block in bytes.chunks_mut(ty.geometry().1) {
                    block[..2].copy_from_slice(&scale(rng));
                }
            }
            StorageType::Q4_1 | StorageType::Q3 | StorageType::Q2 => {
                for block in bytes.chunks_mut(ty.geometry().1) {
                    block[..2].copy_from_slice(&scale(rng));
                    block[2..4].copy_from_slice(&scale(rng));
                }
            }
        }
        bytes
    }

    pub const ALL: [StorageType; 7] = ALL_TYPES;

    #[test]
    fn every_type_is_a_manifest_dtype_and_back() {
        let names: Vec<&str> = ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names, sw::manifest::DTYPES, "the packed format's dtypes are the engine's storage types");
        assert!(ALL.iter().all(|&t| StorageType::from_name(t.name()) == Some(t)));
    }

    #[test]
    fn fast_dot_matches_reference_for_every_type() {
        let mut rng = Rng(0x5eed);
        for ty in ALL {
            for cols in [32, 64, 576, 1536, 32 * 37] {
                let row = random_row(ty, cols, &mut rng);
                let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
                let want = dot_row_reference(ty, &row, &x);
                let got = dot_row(ty, &row, &PreparedInput::new(&x));
                let tol = 1e-5 * (1.0 + want.abs()) * (cols as f32).sqrt();
                assert!((got - want).abs() <= tol, "{} cols={cols}: fast {got} vs reference {want}", ty.name());
            }
        }
    }

    #[test]
    fn row_bytes_refuses_partial_blocks() {
        assert_eq!(StorageType::Q4_1.row_bytes(576), Some(18 * 20));
        assert_eq!(StorageType::Q8_0.row_bytes(33), None);
        assert_eq!(StorageType::F16.row_bytes(33), Some(66));
    }
}
