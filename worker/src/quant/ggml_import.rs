//! Dequantizers for GGUF tensor types, for importing models whose types have no lossless
//! [`StorageType`](super::StorageType) here (BF16, Q5_0/Q5_1, the K-quants): dequantize to f32,
//! then store with [`super::quantize::quantize_row`] in a type the kernels read.
//!
//! Layouts follow ggml (`ggml-common.h`, `dequantize_row_*` in `ggml-quants.c`); all scales are
//! little-endian f16 read with `from_le_bytes`, since blocks are not 2- or 4-byte aligned.
//!
//! ```text
//! Q5_0  (32, 22): d, qh[4], qs[16]              v = d·(q − 16)
//! Q5_1  (32, 24): d, m, qh[4], qs[16]           v = d·q + m
//!   q(j) = nibble j of qs (low nibbles 0..16, high 16..32) | bit j of qh (u32) · 16
//! Q2_K (256, 84): scales[16], qs[64], d, dmin    16 sub-blocks of 16; scale byte s: low
//!   nibble × d is the sub-block scale, high nibble × dmin the min subtracted; v = dl·q − ml
//! Q3_K (256,110): hmask[32], qs[64], scales[12], d   16 sub-blocks of 16, 6-bit signed
//!   scales (stored +32), q = low 2 bits − 4 unless the hmask bit is set; v = d·(sc − 32)·q
//! Q4_K (256,144): d, dmin, scales[12], qs[128]  8 sub-blocks of 32, 6-bit scale and min
//!   each; v = d·sc·q − dmin·m
//! Q5_K (256,176): d, dmin, scales[12], qh[32], qs[128]   Q4_K plus a high bit (+16) from qh
//! Q6_K (256,210): ql[128], qh[64], scales[16] (i8), d   16 sub-blocks of 16; 4 low bits
//!   from ql, 2 high bits from qh; v = d·sc·(q − 32)
//! ```
//!
//! Within a 256-value super-block the 2-bit planes (Q2_K, Q3_K) run in two halves of 128:
//! byte l (0..32) of the half's 32 bytes holds values l, l+32, l+64, l+96 at shifts 0, 2, 4, 6;
//! the 4-bit planes (Q4_K, Q5_K) run in four chunks of 64: byte l holds value l (low nibble)
//! and l+32 (high nibble). The per-function comments spell out the rest.

use super::{cast_blocks, f16_at};
use crate::formats::gguf::GgmlType;
use crate::WorkerError;

/// Values per K-quant super-block.
const QK_K: usize = 256;

#[repr(C)]
struct BlockQ5_0 {
    d: [u8; 2],
    qh: [u8; 4],
    qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

#[repr(C)]
struct BlockQ5_1 {
    d: [u8; 2],
    m: [u8; 2],
    qh: [u8; 4],
    qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

#[repr(C)]
struct BlockQ2K {
    scales: [u8; QK_K / 16],
    qs: [u8; QK_K / 4],
    d: [u8; 2],
    dmin: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

#[repr(C)]
struct BlockQ3K {
    hmask: [u8; QK_K / 8],
    qs: [u8; QK_K / 4],
    scales: [u8; 12],
    d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

#[repr(C)]
struct BlockQ4K {
    d: [u8; 2],
    dmin: [u8; 2],
    scales: [u8; 12],
    qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

#[repr(C)]
struct BlockQ5K {
    d: [u8; 2],
    dmin: [u8; 2],
    scales: [u8; 12],
    qh: [u8; QK_K / 8],
    qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

#[repr(C)]
struct BlockQ6K {
    ql: [u8; QK_K / 2],
    qh: [u8; QK_K / 4],
    scales: [u8; QK_K / 16],
    d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// Dequantizes `out.len()` values of GGUF type `ty` from `bytes`.
///
/// Errors: [`WorkerError::UnsupportedTensorType`] for types without a dequantizer here (Q8_1,
/// Q8_K, the integer and f64 types); [`WorkerError::ModelFormat`] when `out.len()` is not a whole
/// number of `ty`'s blocks or `bytes` is not exactly their size. Neither error knows the
/// tensor's name (`tensor` / `source_name` say so); callers that do can rebuild the error.
pub fn dequantize_ggml(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), WorkerError> {
    use GgmlType::*;
    if !matches!(ty, F32 | F16 | Bf16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2K | Q3K | Q4K | Q5K | Q6K) {
        return Err(WorkerError::UnsupportedTensorType { tensor: "(unnamed tensor)".into(), type_name: ty.name().into() });
    }
    let (elems, block_bytes) = ty.block_geometry();
    let (elems, block_bytes) = (elems as usize, block_bytes as usize);
    let expected = (out.len() % elems == 0).then(|| out.len() / elems * block_bytes);
    if expected != Some(bytes.len()) {
        let reason = format!(
            "{} bytes for {} values, but {} stores blocks of {elems} values in {block_bytes} bytes",
            bytes.len(),
            out.len(),
            ty.name()
        );
        return Err(WorkerError::ModelFormat { source_name: format!("{} tensor data", ty.name()), format: "GGUF", reason });
    }
    match ty {
        F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        F16 => super::f16::dequantize(bytes, out),
        // bf16 is the top half of an f32.
        Bf16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        Q8_0 => super::q8_0::dequantize(super::q8_0::blocks(bytes), out),
        Q4_0 => super::q4_0::dequantize(super::q4_0::blocks(bytes), out),
        Q4_1 => super::q4_1::dequantize(super::q4_1::blocks(bytes), out),
        Q5_0 => {
            for (b, out) in cast_blocks::<BlockQ5_0>(bytes).iter().zip(out.chunks_exact_mut(32)) {
                let d = f16_at(b.d);
                five_bit_values(&b.qs, b.qh, |j, q| out[j] = d * (q as i32 - 16) as f32);
            }
        }
        Q5_1 => {
            for (b, out) in cast_blocks::<BlockQ5_1>(bytes).iter().zip(out.chunks_exact_mut(32)) {
                let (d, m) = (f16_at(b.d), f16_at(b.m));
                five_bit_values(&b.qs, b.qh, |j, q| out[j] = d * q as f32 + m);
            }
        }
        Q2K => cast_blocks::<BlockQ2K>(bytes).iter().zip(out.chunks_exact_mut(QK_K)).for_each(|(b, o)| q2_k(b, o)),
        Q3K => cast_blocks::<BlockQ3K>(bytes).iter().zip(out.chunks_exact_mut(QK_K)).for_each(|(b, o)| q3_k(b, o)),
        Q4K => cast_blocks::<BlockQ4K>(bytes).iter().zip(out.chunks_exact_mut(QK_K)).for_each(|(b, o)| q4_k(b, o)),
        Q5K => cast_blocks::<BlockQ5K>(bytes).iter().zip(out.chunks_exact_mut(QK_K)).for_each(|(b, o)| q5_k(b, o)),
        Q6K => cast_blocks::<BlockQ6K>(bytes).iter().zip(out.chunks_exact_mut(QK_K)).for_each(|(b, o)| q6_k(b, o)),
        _ => unreachable!("filtered above"),
    }
    Ok(())
}

/// Q5_0/Q5_1's 5-bit values: calls `set(j, q)` for j in 0..32.
#[inline]
fn five_bit_values(qs: &[u8; 16], qh: [u8; 4], mut set: impl FnMut(usize, u8)) {
    let qh = u32::from_le_bytes(qh);
    for (j, &byte) in qs.iter().enumerate() {
        let high = |bit: usize| (((qh >> bit) & 1) as u8) << 4;
        set(j, (byte & 0x0f) | high(j));
        set(j + 16, (byte >> 4) | high(j + 16));
    }
}

/// Value index inside a 2-bit-plane super-block (Q2_K, Q3_K): half n (0..2), shift 2k (k 0..4),
/// sub-block h (0..2) of 16, position l → 128n + 32k + 16h + l; its scale is number 8n + 2k + h
/// (scales run in output order) and its bits are byte 16h + l of the half's 32, at shift 2k.
fn q2_k(b: &BlockQ2K, out: &mut [f32]) {
    let (d, dmin) = (f16_at(b.d), f16_at(b.dmin));
    for n in 0..2 {
        let qs = &b.qs[32 * n..][..32];
        for k in 0..4 {
            for h in 0..2 {
                let sc = b.scales[8 * n + 2 * k + h];
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                for l in 0..16 {
                    let q = (qs[16 * h + l] >> (2 * k)) & 3;
                    out[128 * n + 32 * k + 16 * h + l] = dl * q as f32 - ml;
                }
            }
        }
    }
}

/// Q3_K's sixteen 6-bit scales (already minus 32). Scale j's low four bits are the low nibble
/// of byte j (j < 8) or the high nibble of byte j − 8; its top two bits are bits 2·(j / 4) of
/// byte 8 + j % 4.
fn q3_k_scales(s: &[u8; 12]) -> [i32; 16] {
    std::array::from_fn(|j| {
        let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | high << 4) as i32 - 32
    })
}

/// Same index map as [`q2_k`]; the high bit of value 128n + 32k + 16h + l is bit 4n + k of
/// hmask[16h + l], and a *clear* bit subtracts 4 (q ∈ −4..=3).
fn q3_k(b: &BlockQ3K, out: &mut [f32]) {
    let d = f16_at(b.d);
    let scales = q3_k_scales(&b.scales);
    for n in 0..2 {
        let qs = &b.qs[32 * n..][..32];
        for k in 0..4 {
            for h in 0..2 {
                let dl = d * scales[8 * n + 2 * k + h] as f32;
                for l in 0..16 {
                    let low = ((qs[16 * h + l] >> (2 * k)) & 3) as i32;
                    let high_set = b.hmask[16 * h + l] & (1 << (4 * n + k)) != 0;
                    out[128 * n + 32 * k + 16 * h + l] = dl * (low - if high_set { 0 } else { 4 }) as f32;
                }
            }
        }
    }
}

/// Q4_K/Q5_K's 6-bit (scale, min) of sub-block j (0..8): bytes 0..4 hold scales 0..4 in their
/// low six bits, bytes 4..8 mins 0..4; for j ≥ 4, byte j + 4 holds the low nibbles (scale low,
/// min high) and the top two bits of bytes j − 4 (scale) and j (min) the high bits.
fn k4_scale_min(s: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4, (s[j + 4] >> 4) | (s[j] >> 6) << 4)
    }
}

/// Chunk c (0..4) of 64 values: byte l of qs[32c..32c+32] holds value 64c + l in its low nibble
/// (sub-block 2c) and 64c + 32 + l in its high nibble (sub-block 2c + 1).
fn q4_k(b: &BlockQ4K, out: &mut [f32]) {
    let (d, dmin) = (f16_at(b.d), f16_at(b.dmin));
    for c in 0..4 {
        let qs = &b.qs[32 * c..][..32];
        let (sc_lo, m_lo) = k4_scale_min(&b.scales, 2 * c);
        let (sc_hi, m_hi) = k4_scale_min(&b.scales, 2 * c + 1);
        let (d_lo, min_lo, d_hi, min_hi) = (d * sc_lo as f32, dmin * m_lo as f32, d * sc_hi as f32, dmin * m_hi as f32);
        for l in 0..32 {
            out[64 * c + l] = d_lo * (qs[l] & 0x0f) as f32 - min_lo;
            out[64 * c + 32 + l] = d_hi * (qs[l] >> 4) as f32 - min_hi;
        }
    }
}

/// Q4_K's layout plus a fifth bit: value 64c + l takes bit 2c of qh[l], 64c + 32 + l bit 2c + 1.
fn q5_k(b: &BlockQ5K, out: &mut [f32]) {
    let (d, dmin) = (f16_at(b.d), f16_at(b.dmin));
    for c in 0..4 {
        let qs = &b.qs[32 * c..][..32];
        let (sc_lo, m_lo) = k4_scale_min(&b.scales, 2 * c);
        let (sc_hi, m_hi) = k4_scale_min(&b.scales, 2 * c + 1);
        let (d_lo, min_lo, d_hi, min_hi) = (d * sc_lo as f32, dmin * m_lo as f32, d * sc_hi as f32, dmin * m_hi as f32);
        for l in 0..32 {
            let high = |bit: usize| ((b.qh[l] >> bit) & 1) << 4;
            out[64 * c + l] = d_lo * ((qs[l] & 0x0f) | high(2 * c)) as f32 - min_lo;
            out[64 * c + 32 + l] = d_hi * ((qs[l] >> 4) | high(2 * c + 1)) as f32 - min_hi;
        }
    }
}

/// Two halves n of 128 values, each with 64 bytes of ql, 32 of qh and 8 scales. Value
/// 128n + 32t + l (t 0..4, l 0..32): low nibble of ql[64n + l] (t = 0) or ql[64n + 32 + l]
/// (t = 1), high nibbles for t = 2, 3; top two bits from qh[32n + l] at shift 2t; scale
/// 8n + 2t + l / 16.
fn q6_k(b: &BlockQ6K, out: &mut [f32]) {
    let d = f16_at(b.d);
    for n in 0..2 {
        let (ql, qh) = (&b.ql[64 * n..][..64], &b.qh[32 * n..][..32]);
        for t in 0..4 {
            for l in 0..32 {
                let byte = ql[32 * (t & 1) + l];
                let low = if t < 2 { byte & 0x0f } else { byte >> 4 };
                let q = (low | ((qh[l] >> (2 * t)) & 3) << 4) as i32 - 32;
                let scale = b.scales[8 * n + 2 * t + l / 16] as i8;
                out[128 * n + 32 * t + l] = d * scale as f32 * q as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::{random_row, Rng};
    use crate::quant::{dequantize_row, StorageType};

    fn f16_bytes(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    fn run(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        match dequantize_ggml(ty, bytes, &mut out) {
            Ok(()) => out,
            Err(e) => panic!("{}: {e}", ty.name()),
        }
    }

    #[test]
    fn types_with_a_storage_type_agree_with_dequantize_row() {
        let mut rng = Rng(31);
        for (ggml, ty) in [
            (GgmlType::F32, StorageType::F32),
            (GgmlType::F16, StorageType::F16),
            (GgmlType::Q8_0, StorageType::Q8_0),
            (GgmlType::Q4_0, StorageType::Q4_0),
            (GgmlType::Q4_1, StorageType::Q4_1),
        ] {
            assert_eq!(StorageType::from_ggml(ggml), Some(ty));
            let row = random_row(ty, 256, &mut rng);
            let mut want = vec![0.0; 256];
            dequantize_row(ty, &row, &mut want);
            assert_eq!(run(ggml, &row, 256), want, "{}", ggml.name());
        }
    }

    #[test]
    fn bf16_is_the_top_half_of_f32() {
        let bytes: Vec<u8> = [0x3fc0u16, 0xc040, 0x0000, 0x7f80].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(run(GgmlType::Bf16, &bytes, 4), [1.5, -3.0, 0.0, f32::INFINITY]);
    }

    #[test]
    fn q5_0_and_q5_1_blocks() {
        // qs[0] = 0x21: value 0 has low bits 1, value 16 has 2; qh sets the fifth bit of values
        // 0 and 17 only.
        let mut qs = [0u8; 16];
        qs[0] = 0x21;
        qs[1] = 0x03;
        let qh = (1u32 | 1 << 17).to_le_bytes();
        let mut q5_0 = f16_bytes(0.5).to_vec();
        q5_0.extend_from_slice(&qh);
        q5_0.extend_from_slice(&qs);
        let v = run(GgmlType::Q5_0, &q5_0, 32);
        // d·(q − 16): q(0) = 17, q(1) = 3, q(16) = 2, q(17) = 16, q(2) = 0.
        assert_eq!([v[0], v[1], v[16], v[17], v[2]], [0.5, -6.5, -7.0, 0.0, -8.0]);

        let mut q5_1 = f16_bytes(0.25).to_vec();
        q5_1.extend_from_slice(&f16_bytes(-1.0));
        q5_1.extend_from_slice(&qh);
        q5_1.extend_from_slice(&qs);
        let v = run(GgmlType::Q5_1, &q5_1, 32);
        // d·q + m.
        assert_eq!([v[0], v[1], v[16], v[17], v[2]], [3.25, -0.25, -0.5, 3.0, -1.0]);
    }

    #[test]
    fn q2_k_block() {
        // Scale byte i: low nibble i, high nibble 15 − i. Every qs byte 0b11_10_01_00, so the
        // value at shift 2k is k.
        let mut b: Vec<u8> = (0..16u8).map(|i| i | (15 - i) << 4).collect();
        b.extend([0xe4u8; 64]);
        b.extend(f16_bytes(0.5));
        b.extend(f16_bytes(0.25));
        let v = run(GgmlType::Q2K, &b, 256);
        // Value 37 = 32·1 + 5: half 0, k = 1, sub-block 0 → scale byte 2: 0.5·2·1 − 0.25·13.
        assert_eq!(v[37], -2.25);
        // Value 245 = 128 + 32·3 + 16 + 5: scale byte 15: 0.5·15·3 − 0.25·0.
        assert_eq!(v[245], 22.5);
        // Value 0: scale byte 0, q = 0: −0.25·15.
        assert_eq!(v[0], -3.75);
        // Value 150 = 128 + 16 + 6: k = 0, sub-block 1 → byte 9, q = 0: −0.25·6.
        assert_eq!(v[150], -1.5);
    }

    /// Packs sixteen 6-bit Q3_K scales (stored values 0..64) the way ggml's quantizer does.
    fn pack_q3_k_scales(stored: [u8; 16]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for (j, &l) in stored.iter().enumerate() {
            if j < 8 {
                s[j] |= l & 0x0f;
            } else {
                s[j - 8] |= (l & 0x0f) << 4;
            }
            s[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
        }
        s
    }

    #[test]
    fn q3_k_block() {
        // Scale j = 3·(j − 8), stored + 32 (8..=53, so the top bits are exercised).
        let stored: [u8; 16] = std::array::from_fn(|j| (32 + 3 * (j as i32 - 8)) as u8);
        assert_eq!(q3_k_scales(&pack_q3_k_scales(stored)), std::array::from_fn(|j| 3 * (j as i32 - 8)));
        // hmask: even bytes 0x55 (bits 0, 2, 4, 6), odd bytes 0; qs bytes 0b11_10_01_00.
        let mut b: Vec<u8> = (0..32).map(|i| if i % 2 == 0 { 0x55 } else { 0 }).collect();
        b.extend([0xe4u8; 64]);
        b.extend(pack_q3_k_scales(stored));
        b.extend(f16_bytes(0.5));
        let v = run(GgmlType::Q3K, &b, 256);
        // Value 68 = 32·2 + 4: half 0, k = 2, sub-block 0 → scale 4 = −12; hmask[4] bit 2 set:
        // q = 2. 0.5·(−12)·2.
        assert_eq!(v[68], -12.0);
        // Value 211 = 128 + 64 + 16 + 3: k = 2, sub-block 1 → scale 13 = 15; hmask[19] = 0:
        // q = 2 − 4. 0.5·15·(−2).
        assert_eq!(v[211], -15.0);
        // Value 160 = 128 + 32: half 1, k = 1 → hmask bit 5 (clear in 0x55) and scale 10 = 6:
        // q = 1 − 4. 0.5·6·(−3).
        assert_eq!(v[160], -9.0);
        // Value 0: k = 0, hmask[0] bit 0 set, q = 0.
        assert_eq!(v[0], 0.0);
    }

    const K4_SCALES: [u8; 8] = [1, 2, 3, 4, 20, 33, 47, 63];
    const K4_MINS: [u8; 8] = [5, 6, 7, 8, 17, 40, 50, 61];

    /// Packs eight 6-bit scales and mins the way ggml's Q4_K/Q5_K quantizers do.
    fn pack_k4_scales(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = sc[j];
                s[j + 4] = m[j];
            } else {
                s[j + 4] = (sc[j] & 0x0f) | (m[j] & 0x0f) << 4;
                s[j - 4] |= (sc[j] >> 4) << 6;
                s[j] |= (m[j] >> 4) << 6;
            }
        }
        s
    }

    #[test]
    fn q4_k_block() {
        let scales = pack_k4_scales(K4_SCALES, K4_MINS);
        for j in 0..8 {
            assert_eq!(k4_scale_min(&scales, j), (K4_SCALES[j], K4_MINS[j]), "sub-block {j}");
        }
        let mut b = f16_bytes(0.5).to_vec();
        b.extend(f16_bytes(0.125));
        b.extend(scales);
        b.extend([0x93u8; 128]); // low nibble 3, high nibble 9
        let v = run(GgmlType::Q4K, &b, 256);
        assert_eq!(v[5], 0.5 * 1.0 * 3.0 - 0.125 * 5.0); // sub-block 0
        assert_eq!(v[40], 0.5 * 2.0 * 9.0 - 0.125 * 6.0); // sub-block 1: high nibbles
        assert_eq!(v[167], 0.5 * 33.0 * 9.0 - 0.125 * 40.0); // 64·2 + 32 + 7: sub-block 5
        assert_eq!(v[193], 0.5 * 47.0 * 3.0 - 0.125 * 50.0); // 64·3 + 1: sub-block 6
        assert_eq!(v[255], 0.5 * 63.0 * 9.0 - 0.125 * 61.0); // sub-block 7
    }

    #[test]
    fn q5_k_block() {
        let mut b = f16_bytes(0.5).to_vec();
        b.extend(f16_bytes(0.125));
        b.extend(pack_k4_scales(K4_SCALES, K4_MINS));
        b.extend([0b0000_0100u8; 32]); // the fifth bit of chunk 1's low nibbles only
        b.extend([0x93u8; 128]);
        let v = run(GgmlType::Q5K, &b, 256);
        assert_eq!(v[3], 0.5 * 1.0 * 3.0 - 0.125 * 5.0);
        assert_eq!(v[64 + 3], 0.5 * 3.0 * (3.0 + 16.0) - 0.125 * 7.0);
        assert_eq!(v[96 + 3], 0.5 * 4.0 * 9.0 - 0.125 * 8.0);
        assert_eq!(v[255], 0.5 * 63.0 * 9.0 - 0.125 * 61.0);
    }

    #[test]
    fn q6_k_block() {
        // ql bytes 0x4a (low 10, high 4), qh bytes 0b11_10_01_00 (top bits 0, 1, 2, 3 for
        // t = 0..4), scales i − 8. So q(t) = 10 − 32, 26 − 32, 36 − 32, 52 − 32.
        let mut b = vec![0x4au8; 128];
        b.extend([0xe4u8; 64]);
        b.extend((0..16).map(|i| (i as i8 - 8) as u8));
        b.extend(f16_bytes(0.25));
        let v = run(GgmlType::Q6K, &b, 256);
        assert_eq!(v[0], 0.25 * -8.0 * -22.0); // t = 0, scale 0
        assert_eq!(v[32 + 5], 0.25 * -6.0 * -6.0); // t = 1, scale 2
        assert_eq!(v[64 + 20], 0.25 * -3.0 * 4.0); // t = 2, l = 20: scale 5
        assert_eq!(v[128 + 96 + 17], 0.25 * 7.0 * 20.0); // half 1, t = 3, l = 17: scale 15
    }

    #[test]
    fn wrong_lengths_and_unsupported_types_are_named_errors() {
        let mut out = vec![0.0; 256];
        for (ty, len) in [(GgmlType::Q4K, 143), (GgmlType::Q6K, 211), (GgmlType::Q8_0, 34 * 8 - 1), (GgmlType::F16, 511)] {
            match dequantize_ggml(ty, &vec![0; len], &mut out) {
                Err(WorkerError::ModelFormat { reason, .. }) => assert!(reason.contains(ty.name()), "{reason}"),
                other => panic!("{}: expected ModelFormat, got {other:?}", ty.name()),
            }
        }
        // 100 values are not a whole number of 256-value super-blocks.
        match dequantize_ggml(GgmlType::Q2K, &[0; 84], &mut out[..100]) {
            Err(WorkerError::ModelFormat { .. }) => {}
            other => panic!("expected ModelFormat, got {other:?}"),
        }
        for ty in [GgmlType::Q8_1, GgmlType::Q8K, GgmlType::I8, GgmlType::F64] {
            match dequantize_ggml(ty, &[], &mut []) {
                Err(WorkerError::UnsupportedTensorType { type_name, .. }) => assert_eq!(type_name, ty.name()),
                other => panic!("{}: expected UnsupportedTensorType, got {other:?}", ty.name()),
            }
        }
    }
}
