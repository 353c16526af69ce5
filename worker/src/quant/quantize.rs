//! Quantizers: f32 values → one row of any [`StorageType`].
//!
//! - F32, F16: byte copies (F16 rounds to nearest, ties to even).
//! - Q8_0, Q4_0: ggml's reference quantizers, so rows match what llama.cpp writes: Q8_0 takes
//!   d = max|x| / 127 and q = round(x / d); Q4_0 takes d = max / −8, where max is the value of
//!   largest magnitude (sign kept, so that extreme lands exactly on level 0), and
//!   q = min(15, ⌊x / d + 8.5⌋). Both quantize with the f32 d and store it as f16, as ggml does.
//! - Q4_1, Q3, Q2 (value = d·q + m, q ∈ 0..=nmax with nmax = 15, 7, 3): d and m are chosen per
//!   block to minimize the block's squared reconstruction error Σ (x − d·q − m)², not just
//!   taken from min and max. With few levels the extremes waste range: a block of 32 Gaussian
//!   values has two outliers, and spending a whole level on each costs the 30 others precision.
//!
//! When packing, matrices whose inputs the calibration pass saw go through GPTQ instead
//! ([`super::gptq`]), which uses this search for each block's starting grid; this module alone
//! serves the rest (the embedding/LM head, and any matrix GPTQ could not factor).
//!
//! The min/scale search, per block of 32:
//!
//! 1. Starting points: min/max (d = (max − min) / nmax, m = min); the same range divided by
//!    nmax + t for t in ±0.25·{1..4} (t > 0 clips the top, t < 0 leaves headroom); centred
//!    ranges shrunk to s = 0.95..0.7 of the full one; and, when the values sit on a lattice
//!    (their smallest gap divides the range into at most nmax steps), that lattice — so
//!    requantizing a dequantized row gives the same values back.
//! 2. From each start, up to four rounds of: round d and m to f16 (what gets stored); assign
//!    q = clamp(round((x − m) / d), 0, nmax), which is optimal for a fixed d and m; score the
//!    block's error with exactly those stored values; then refit d by least squares for that
//!    q (the 2×2 normal equations of Σ (x − d·q − m)²), round it to f16, and refit m for the
//!    rounded d (m = mean(x − d·q)), so the f16 rounding of d is partly absorbed by m. Stop
//!    early when the assignment repeats.
//! 3. Keep the best-scoring (d, m, q) over all starts and rounds. Min/max is one of the
//!    candidates, so the search never does worse than it on a block.
//!
//! On Gaussian rows this lowers the RMS error against plain min/max by 25% for Q2, 14% for Q3
//! and 12% for Q4_1 (the tests print both). A search four times larger (finer grid, ten rounds)
//! gains only another 0.3%, so this one stops here: about fifteen starts of at most four
//! 32-value passes per block.

use half::f16;

use super::{StorageType, BLOCK};

/// Appends one row of `values` stored as `ty` to `out` (`ty.row_bytes(values.len())` bytes).
///
/// # Panics
/// When `values.len()` is not a whole number of `ty`'s blocks (32 values for the block types):
/// the caller chooses the row length, so a mismatch is a programming error, not bad input.
pub fn quantize_row(ty: StorageType, values: &[f32], out: &mut Vec<u8>) {
    quantize_row_weighted(ty, values, None, out)
}

/// [`quantize_row`] minimizing the *importance-weighted* error Σ_j w_j (x_j − x̂_j)² in the
/// min/scale formats (Q4_1, Q3, Q2); the others ignore `importance`. With w_j = E[a_j²], the
/// mean square of the activation that multiplies column j, this is the expected squared error
/// of the matrix product itself (for uncorrelated rounding errors): precision goes where the
/// inputs are large. `importance` has one entry per value of the row.
pub fn quantize_row_weighted(ty: StorageType, values: &[f32], importance: Option<&[f32]>, out: &mut Vec<u8>) {
    let (elems, _) = ty.geometry();
    debug_assert!(importance.is_none_or(|w| w.len() == values.len()));
    assert!(values.len() % elems == 0, "{} values is not a whole number of {} blocks of {elems}", values.len(), ty.name());
    out.reserve(ty.row_bytes(values.len()).unwrap_or(0));
    match ty {
        StorageType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        StorageType::F16 => values.iter().for_each(|&v| out.extend_from_slice(&f16::from_f32(v).to_le_bytes())),
        StorageType::Q8_0 => values.chunks_exact(BLOCK).for_each(|x| quantize_q8_0(x, out)),
        StorageType::Q4_0 => values.chunks_exact(BLOCK).for_each(|x| quantize_q4_0(x, out)),
        StorageType::Q4_1 | StorageType::Q3 | StorageType::Q2 => {
            for (b, x) in values.chunks_exact(BLOCK).enumerate() {
                let w = importance.map_or(&UNIT_WEIGHTS[..], |w| &w[b * BLOCK..][..BLOCK]);
                push_min_scale_block(ty, &fit_weighted(x, w, max_level(ty), Search::LeastSquares), out)
            }
        }
    }
}

/// nmax of the min/scale formats (q ∈ 0..=nmax).
pub(crate) fn max_level(ty: StorageType) -> u8 {
    match ty {
        StorageType::Q4_1 => 15,
        StorageType::Q3 => 7,
        _ => 3,
    }
}

/// Appends one Q4_1, Q3 or Q2 block: d, m, then the values packed as the format's file
/// describes.
pub(crate) fn push_min_scale_block(ty: StorageType, fit: &Fit, out: &mut Vec<u8>) {
    out.extend_from_slice(&fit.d.to_le_bytes());
    out.extend_from_slice(&fit.m.to_le_bytes());
    let q = &fit.q;
    match ty {
        // q4_1.rs: byte j holds element j (low nibble) and j + 16 (high nibble).
        StorageType::Q4_1 => out.extend((0..BLOCK / 2).map(|j| q[j] | q[j + 16] << 4)),
        // q3.rs: ql[i] bits 2k..2k+2 = low bits of element i + 8k; qh[i] bit k = high bit of
        // element i + 4k.
        StorageType::Q3 => {
            out.extend((0..8).map(|i| (0..4).fold(0u8, |b, k| b | (q[i + 8 * k] & 3) << (2 * k))));
            out.extend((0..4).map(|i| (0..8).fold(0u8, |b, k| b | (q[i + 4 * k] >> 2) << k)));
        }
        // q2.rs: qs[i] bits 2k..2k+2 = element i + 8k.
        _ => out.extend((0..8).map(|i| (0..4).fold(0u8, |b, k| b | q[i + 8 * k] << (2 * k)))),
    }
}

/// ggml's `quantize_row_q8_0_ref` for one block.
fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    // `as i8` saturates (and maps NaN to 0), so no value can wrap.
    out.extend(x.iter().map(|&v| (v * inv).round() as i8 as u8));
}

/// ggml's `quantize_row_q4_0_ref` for one block.
fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    // x·inv ∈ [−8, 8], so x·inv + 8.5 > 0 and the truncating cast is ggml's floor.
    let q = |v: f32| ((v * inv + 8.5) as i8).clamp(0, 15) as u8;
    out.extend((0..BLOCK / 2).map(|j| q(x[j]) | q(x[j + 16]) << 4));
}

/// One block's stored scale, min and values, and its squared error Σ (x − d·q − m)².
#[derive(Debug, Clone)]
pub(crate) struct Fit {
    pub d: f16,
    pub m: f16,
    pub q: [u8; BLOCK],
    pub err: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Search {
    /// ggml's Q4_1 reference: d = (max − min) / nmax, m = min (the tests' baseline).
    MinMax,
    /// The search of the module header.
    LeastSquares,
}

/// Rounds to the nearest f16 and back: what a stored scale or min really is.
#[inline]
fn f16_round(v: f32) -> f16 {
    f16::from_f32(v)
}

/// Every value equally important (the unweighted fit).
const UNIT_WEIGHTS: [f32; BLOCK] = [1.0; BLOCK];

/// The best q for stored (d, m) and the resulting weighted squared error, computed exactly as
/// the dequantizers reconstruct (`d·q + m` in f32). Rounding to the nearest level is optimal
/// per value whatever its weight.
fn assign(x: &[f32], w: &[f32], d: f16, m: f16, nmax: u8) -> ([u8; BLOCK], f64) {
    let (d, m) = (d.to_f32(), m.to_f32());
    let mut q = [0u8; BLOCK];
    let mut err = 0f64;
    for ((qj, &xj), &wj) in q.iter_mut().zip(x).zip(w) {
        // d = 0 leaves q = 0 (value m); `as u8` saturates and maps NaN to 0.
        if d != 0.0 {
            *qj = ((xj - m) / d).round().clamp(0.0, nmax as f32) as u8;
        }
        let e = (xj - (d * *qj as f32 + m)) as f64;
        err += wj as f64 * e * e;
    }
    (q, err)
}

/// Refines a start (d, m) by alternating assignment and least squares (module header, step 2),
/// updating `best` whenever a stored (d, m) scores better.
fn refine(x: &[f32], w: &[f32], nmax: u8, d: f32, m: f32, best: &mut Fit) {
    let n: f64 = w.iter().map(|&v| v as f64).sum();
    let (mut d, mut m) = (f16_round(d), f16_round(m));
    let mut previous: Option<[u8; BLOCK]> = None;
    for _ in 0..4 {
        let (q, err) = assign(x, w, d, m, nmax);
        if err < best.err {
            *best = Fit { d, m, q, err };
        }
        if previous == Some(q) {
            break;
        }
        let (mut sq, mut sqq, mut sx, mut sqx) = (0f64, 0f64, 0f64, 0f64);
        // Weighted normal equations of Σ w (x − d·q − m)².
        for ((&qj, &xj), &wj) in q.iter().zip(x).zip(w) {
            let (qj, xj, wj) = (qj as f64, xj as f64, wj as f64);
            sq += wj * qj;
            sqq += wj * qj * qj;
            sx += wj * xj;
            sqx += wj * qj * xj;
        }
        let det = n * sqq - sq * sq;
        // det = 0 when every q is equal: d is then free, keep it and refit m alone.
        if det > 0.0 {
            d = f16_round(((n * sqx - sq * sx) / det) as f32);
        }
        m = f16_round(((sx - d.to_f64() * sq) / n) as f32);
        previous = Some(q);
    }
}

/// Chooses d, m and q for one block of 32 values with `nmax + 1` levels (unweighted).
#[cfg(test)]
pub(crate) fn fit(x: &[f32], nmax: u8, search: Search) -> Fit {
    fit_weighted(x, &UNIT_WEIGHTS, nmax, search)
}

/// [`fit`] minimizing Σ w_j (x_j − d·q_j − m)² (w: one non-negative weight per value).
pub(crate) fn fit_weighted(x: &[f32], w: &[f32], nmax: u8, search: Search) -> Fit {
    let (min, max) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let range = max - min;
    let levels = nmax as f32;
    let (d0, m0) = (f16_round(range / levels), f16_round(min));
    let (q, err) = assign(x, w, d0, m0, nmax);
    let mut best = Fit { d: d0, m: m0, q, err };
    // A constant block is exact with d = 0; non-finite data has nothing to search.
    if search == Search::MinMax || !(range.is_finite() && range > 0.0) {
        return best;
    }
    refine(x, w, nmax, range / levels, min, &mut best);
    for t in [-1.0f32, -0.75, -0.5, -0.25, 0.25, 0.5, 0.75, 1.0] {
        refine(x, w, nmax, range / (levels + t), min, &mut best);
    }
    for s in [0.95f32, 0.9, 0.85, 0.8, 0.7] {
        refine(x, w, nmax, s * range / levels, min + 0.5 * (1.0 - s) * range, &mut best);
    }
    if let Some(steps) = lattice_steps(x, range, nmax) {
        refine(x, w, nmax, range / steps as f32, min, &mut best);
    }
    best
}

/// When the values sit on a lattice of at most `nmax` steps across their range (a dequantized
/// row does), the number of steps: range / smallest gap, if that is close to an integer.
fn lattice_steps(x: &[f32], range: f32, nmax: u8) -> Option<u32> {
    let mut sorted = [0f32; BLOCK];
    sorted[..x.len()].copy_from_slice(x);
    let sorted = &mut sorted[..x.len()];
    sorted.sort_unstable_by(f32::total_cmp);
    // Equal values are one level; anything closer than 1e-4 of the range is f32 noise.
    let gap = sorted.windows(2).map(|w| w[1] - w[0]).filter(|&g| g > 1e-4 * range).fold(f32::INFINITY, f32::min);
    let steps = range / gap;
    let rounded = steps.round();
    ((1.0..=nmax as f32).contains(&rounded) && (steps - rounded).abs() < 1e-2).then_some(rounded as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::{random_row, Rng, ALL};
    use crate::quant::dequantize_row;

    /// Roughly Gaussian (sum of four uniforms, σ ≈ 1), like trained weights.
    fn gaussian_row(cols: usize, rng: &mut Rng) -> Vec<f32> {
        (0..cols).map(|_| (rng.f32() + rng.f32() + rng.f32() + rng.f32()) * 0.866).collect()
    }

    fn round_trip(ty: StorageType, x: &[f32]) -> Vec<f32> {
        let mut bytes = Vec::new();
        quantize_row(ty, x, &mut bytes);
        assert_eq!(bytes.len(), ty.row_bytes(x.len()).unwrap(), "{}", ty.name());
        let mut back = vec![0.0; x.len()];
        dequantize_row(ty, &bytes, &mut back);
        back
    }

    /// RMS error relative to the signal's RMS.
    fn relative_rms(x: &[f32], y: &[f32]) -> f64 {
        let err: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let sig: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
        (err / sig).sqrt()
    }

    #[test]
    fn each_type_stays_within_its_error_bound_and_fewer_bits_cost_more() {
        let mut rng = Rng(0x9a55);
        let x: Vec<f32> = gaussian_row(32 * 512, &mut rng);
        // Relative RMS bounds: the measured values (printed; f16 2.1e-4, q8_0 0.0051, q4_0 0.082,
        // q4_1 0.067, q3 0.140, q2 0.288) with ~8% headroom.
        let bounds = [
            (StorageType::F32, 0.0),
            (StorageType::F16, 3e-4),
            (StorageType::Q8_0, 0.0055),
            (StorageType::Q4_0, 0.09),
            (StorageType::Q4_1, 0.072),
            (StorageType::Q3, 0.15),
            (StorageType::Q2, 0.31),
        ];
        let mut errors = Vec::new();
        for (ty, bound) in bounds {
            let e = relative_rms(&x, &round_trip(ty, &x));
            println!("{:>5}: relative RMS error {e:.5} (bound {bound})", ty.name());
            assert!(e <= bound, "{}: relative RMS error {e} above {bound}", ty.name());
            errors.push((ty, e));
        }
        let e = |ty| errors.iter().find(|(t, _)| *t == ty).map(|(_, e)| *e).unwrap();
        assert!(e(StorageType::Q2) > e(StorageType::Q3));
        assert!(e(StorageType::Q3) > e(StorageType::Q4_1));
        assert!(e(StorageType::Q4_1) > e(StorageType::Q8_0));
        assert!(e(StorageType::Q8_0) > e(StorageType::F16));
    }

    #[test]
    fn least_squares_search_beats_min_max() {
        let mut rng = Rng(77);
        let x = gaussian_row(32 * 512, &mut rng);
        for (name, nmax, min_gain) in [("q2", 3u8, 0.20), ("q3", 7, 0.10), ("q4_1", 15, 0.08)] {
            let (mut plain, mut searched) = (0f64, 0f64);
            for block in x.chunks_exact(BLOCK) {
                let a = fit(block, nmax, Search::MinMax);
                let b = fit(block, nmax, Search::LeastSquares);
                // Min/max is a candidate of the search, so no block may get worse.
                assert!(b.err <= a.err, "{name}: search {} worse than min/max {}", b.err, a.err);
                plain += a.err;
                searched += b.err;
            }
            let sig: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
            let (plain, searched) = ((plain / sig).sqrt(), (searched / sig).sqrt());
            println!("{name}: relative RMS error min/max {plain:.5}, least squares {searched:.5} ({:.1}% lower)", 100.0 * (1.0 - searched / plain));
            assert!(searched < plain * (1.0 - min_gain), "{name}: {searched} vs min/max {plain}");
        }
    }

    /// Quantizing a dequantized row again reproduces its values: a row imported from a
    /// quantized model and stored again does not lose more.
    #[test]
    fn requantization_is_stable() {
        let mut rng = Rng(4242);
        let x = gaussian_row(32 * 256, &mut rng);
        for ty in [StorageType::Q8_0, StorageType::Q4_0, StorageType::Q4_1, StorageType::Q3, StorageType::Q2] {
            let once = round_trip(ty, &x);
            let twice = round_trip(ty, &once);
            let mut worst = 0f32;
            for (b, (o, t)) in once.chunks(BLOCK).zip(twice.chunks(BLOCK)).enumerate() {
                let scale = o.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (j, (a, c)) in o.iter().zip(t).enumerate() {
                    assert!((a - c).abs() <= 1e-3 * scale, "{} block {b} [{j}]: {a} then {c}", ty.name());
                    worst = worst.max((a - c).abs() / scale);
                }
            }
            println!("{:>5}: requantized values move by at most {worst:.2e} of their block's max", ty.name());
        }
        // Rows quantized the ggml way (min/max, so level 0 is always used) requantize exactly.
        for ty in [StorageType::Q4_1, StorageType::Q3, StorageType::Q2] {
            let mut row = Vec::new();
            x.chunks_exact(BLOCK).for_each(|b| push_min_scale_block(ty, &fit(b, max_level(ty), Search::MinMax), &mut row));
            let mut values = vec![0.0; x.len()];
            dequantize_row(ty, &row, &mut values);
            assert_eq!(round_trip(ty, &values), values, "min/max {}", ty.name());
        }
        // Arbitrary Q4_1 rows (random nibbles, scales of either sign, low levels unused) come
        // back within the f16 rounding of a new min: the lattice is found, but its lowest used
        // level (or, for d < 0, its highest) becomes m, which f16 may not hold exactly.
        for _ in 0..8 {
            let row = random_row(StorageType::Q4_1, 32 * 64, &mut rng);
            let mut values = vec![0.0; 32 * 64];
            dequantize_row(StorageType::Q4_1, &row, &mut values);
            let again = round_trip(StorageType::Q4_1, &values);
            let mut worst = 0f32;
            for (b, (o, t)) in values.chunks(BLOCK).zip(again.chunks(BLOCK)).enumerate() {
                let scale = o.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (j, (a, c)) in o.iter().zip(t).enumerate() {
                    assert!((a - c).abs() <= 1e-3 * scale, "foreign q4_1 block {b} [{j}]: {a} then {c}");
                    worst = worst.max((a - c).abs() / scale);
                }
            }
            println!("foreign q4_1: requantized values move by at most {worst:.2e} of their block's max");
        }
    }

    #[test]
    fn values_on_a_full_lattice_come_back_exactly() {
        // Every level used, in a pattern that differs per element, so a packing mistake in any
        // bit plane changes some value.
        for (ty, nmax) in [(StorageType::Q4_1, 15u32), (StorageType::Q3, 7), (StorageType::Q2, 3)] {
            let x: Vec<f32> = (0..64u32).map(|e| 0.25 * ((e * 5 + e / 32) % (nmax + 1)) as f32 - 1.5).collect();
            assert_eq!(round_trip(ty, &x), x, "{}", ty.name());
        }
    }

    #[test]
    fn ggml_reference_quantizers_on_a_known_block() {
        let mut x = [0f32; BLOCK];
        x[0] = -4.0; // the extreme: Q4_0 d = -4 / -8 = 0.5, and it lands on level 0
        x[1] = 3.5;
        x[2] = 0.24;
        x[3] = 1.25;
        let mut q4 = Vec::new();
        quantize_row(StorageType::Q4_0, &x, &mut q4);
        assert_eq!(f16::from_le_bytes([q4[0], q4[1]]).to_f32(), 0.5);
        // q = ⌊x / d + 8.5⌋: −4 → 0, 3.5 → ⌊15.5⌋ = 15, 0.24 → ⌊8.98⌋ = 8, 1.25 → 11; zeros → 8.
        assert_eq!([q4[2] & 15, q4[3] & 15, q4[4] & 15, q4[5] & 15, q4[6] & 15], [0, 15, 8, 11, 8]);
        let mut q8 = Vec::new();
        quantize_row(StorageType::Q8_0, &x, &mut q8);
        let d = f16::from_le_bytes([q8[0], q8[1]]).to_f32();
        assert!((d - 4.0 / 127.0).abs() < 1e-5);
        // q = round(x · 127 / 4): −127, 111.125 → 111, 7.62 → 8, 39.69 → 40.
        assert_eq!([q8[2] as i8, q8[3] as i8, q8[4] as i8, q8[5] as i8, q8[6] as i8], [-127, 111, 8, 40, 0]);
    }

    #[test]
    fn zero_and_constant_blocks_give_exact_values_without_nan() {
        for ty in ALL {
            let zeros = round_trip(ty, &[0.0; 64]);
            assert!(zeros.iter().all(|&v| v == 0.0), "{}: {zeros:?}", ty.name());
            // One zero block next to a live one, and a block of tiny values (f16 subnormals).
            let mut x = vec![0.0; 96];
            x[32..64].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 * 0.1 - 1.0);
            x[64..].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 * 1e-7);
            let back = round_trip(ty, &x);
            assert!(back.iter().all(|v| v.is_finite()), "{}: {back:?}", ty.name());
            assert!(back[..32].iter().all(|&v| v == 0.0), "{}", ty.name());
        }
        for ty in [StorageType::Q4_1, StorageType::Q3, StorageType::Q2] {
            let back = round_trip(ty, &[0.3; 32]);
            assert!(back.iter().all(|&v| v == f16::from_f32(0.3).to_f32()), "{}: {back:?}", ty.name());
        }
    }
}
