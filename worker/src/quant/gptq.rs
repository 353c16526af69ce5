//! GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers") for the min/scale formats Q4_1, Q3 and Q2: quantize a matrix so
//! that its *products* on calibration inputs change as little as possible, not its weights.
//!
//! For a matrix W (rows × cols, y = W·x) and calibration inputs X (tokens × cols), the error of
//! row r is (w − ŵ)ᵀ H (w − ŵ) with H = XᵀX ([`Gram`], cols × cols). Rounding each weight on its
//! own ignores H's off-diagonal part: inputs are strongly correlated in a transformer, so the
//! error of one column can be largely cancelled by nudging the columns that move with it.
//! GPTQ walks the columns in order; after rounding column j it spreads the error over the
//! columns not yet rounded, optimally for H (the OBS update), using the upper Cholesky factor
//! U of H⁻¹ (H⁻¹ = UᵀU):
//!
//! ```text
//! e = (w_j − ŵ_j) / U_jj;   w_k −= e · U_jk   for every k > j
//! ```
//!
//! **Fixed blocks.** Our formats give every 32 consecutive weights of a row one f16 scale d and
//! min m. So the walk goes block by block: at the start of a block, d and m are chosen from
//! the block's *current* values (already corrected for the errors of earlier blocks) with the
//! least-squares search of [`super::quantize`], weighting column j by 1 / U_jj² (the cost of
//! an error in column j once the later columns have compensated what they can; see
//! [`ColumnWeights`]); then the block's 32 columns are rounded one by one on that grid, each
//! error spreading to the rest of the row. (GPTQ's act-order, which walks columns by
//! decreasing H_jj, does not fit fixed blocks: a block's scale would be chosen before most of
//! its values were final. Not done.)
//!
//! **Refit.** Once a row's codes are all known, every block's (d, m) is re-chosen jointly by
//! least squares in H ([`refit_scales`]): the grids GPTQ picked from still-moving values move
//! to where the final codes want them (kept only when the stored, f16-rounded result is better).
//! Then a few rounds of coordinate descent on the codes ([`polish_codes`]), each followed by
//! another refit. The descent minimizes the *damped* error, like the walk; the refit the bare
//! one. Both choices are measured (SmolLM2 `mixed`, 39.465 as they are): refitting in the damped
//! H too gave 41.16, descending in the bare H too 42.90, and descending in twice the walk's λ
//! 41.22: the descent's damping sits at the walk's. Presumably a row's hundreds of codes can fit
//! the calibration tokens' H too closely, where its 2 unknowns per block cannot.
//!
//! **Damping.** H is singular when the calibration text has fewer tokens than H has columns,
//! and ill-conditioned anyway; as in the paper, [`damping`] × mean(diag H) is added to the
//! diagonal before factoring. Columns that the calibration never excites then get a small
//! positive weight instead of none. At 3 and 2 bits it is ten times heavier than at 4: the
//! larger rounding errors make GPTQ push more onto the later columns, and that compensation
//! follows the calibration tokens' H rather than the model's.
//!
//! Rows are independent given U, so they run in parallel; everything is deterministic (the
//! same weights and inputs give the same bytes).

use super::quantize::{fit_weighted, max_level, push_min_scale_block, Fit, Search};
use super::{StorageType, BLOCK};

/// Fraction of the mean diagonal added to H's diagonal before factoring, for 4-bit targets
/// (see [`damping`]). The paper uses 1% with ~260k calibration tokens. Measured on SmolLM2
/// `mixed` (perplexity, with the code polish, no upstream correction; since then `mixed` uses
/// [`LOW_BIT_DAMP`]): with the ~30k-token corpus 0.5% → 61.22, 2% → 55.68,
/// 10% → 58.35; with the earlier 2k-token text, 10% had been best (1%: 94.98, 10%: 78.18,
/// 100%: 105.3, before the refit) — fewer tokens, a noisier H, more damping.
pub const DAMP: f64 = 0.02;

/// Damping for 3- and 2-bit targets (see [`damping`]). Measured on SmolLM2 `mixed` with both
/// upstream corrections (which share the damped factor: their ridge λ is this too), ~30k
/// calibration tokens: 2% → 43.10, 5% → 41.68, 10% → 40.85, 20% → 40.15; with ~59k tokens,
/// 20% → 39.46, while 5% for GPTQ with a separate 30% for the corrections gave 41.23 — the
/// rounding itself wants the heavy damping here, not only the least-squares corrections — and
/// 40% at 2 bits (20% at 3) 40.68: past 20% it turns.
pub const LOW_BIT_DAMP: f64 = 0.20;

/// GPTQ's damping for a target format, also the ridge λ of the upstream correction
/// ([`correct_for_upstream_error`]): [`DAMP`] at 4 bits, [`LOW_BIT_DAMP`] at 3 and 2 bits, where
/// every rounding error is larger and so is what the walk pushes onto the columns after it —
/// compensation that fits the calibration tokens' H more than the model's.
pub fn damping(target: StorageType) -> f64 {
    match target {
        StorageType::Q3 | StorageType::Q2 => LOW_BIT_DAMP,
        _ => DAMP,
    }
}

/// Tokens per f32 partial sum in [`Gram::of`].
const GRAM_CHUNK: usize = 128;

/// Whether GPTQ applies to `ty`: the min/scale formats (Q8_0 and the float types are close
/// enough to exact that plain rounding is what llama.cpp and everyone else do).
pub fn applies(ty: StorageType) -> bool {
    matches!(ty, StorageType::Q4_1 | StorageType::Q3 | StorageType::Q2)
}

/// H = XᵀX of one matrix's inputs: cols × cols, symmetric, row-major, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Gram {
    pub cols: usize,
    pub h: Vec<f64>,
    /// How many input rows (tokens) were summed.
    pub tokens: usize,
}

impl Gram {
    /// H of `xs` ([tokens, cols], row-major); see [`column_products`] for how.
    pub fn of(xs: &[f32], cols: usize) -> Gram {
        assert!(cols > 0 && xs.len() % cols == 0, "{} inputs is not a whole number of rows of {cols}", xs.len());
        let columns = transpose(xs, cols);
        // The upper triangle, then mirrored.
        let mut h = column_products(&columns, cols, &columns, cols, true);
        for i in 0..cols {
            for j in 0..i {
                h[i * cols + j] = h[j * cols + i];
            }
        }
        Gram { cols, h, tokens: xs.len() / cols }
    }

    /// Mean square of each input column, E[a_j²] = H_jj / tokens.
    pub fn mean_squares(&self) -> Vec<f32> {
        (0..self.cols).map(|j| (self.h[j * self.cols + j] / self.tokens.max(1) as f64) as f32).collect()
    }
}

/// [tokens, cols] row-major → [cols, tokens]: each input column contiguous.
pub(crate) fn transpose(xs: &[f32], cols: usize) -> Vec<f32> {
    let tokens = xs.len() / cols;
    let mut columns = vec![0f32; cols * tokens];
    for (t, row) in xs.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            columns[j * tokens + t] = v;
        }
    }
    columns
}

/// P = AᵀB for two inputs over the same tokens, given as columns ([a_cols, tokens] and
/// [b_cols, tokens], from [`transpose`]): a_cols × b_cols, row-major f64,
/// P_ij = Σ_t A[t, i]·B[t, j] — only j ≥ i when `upper` (A = B, the rest left 0). Blocked so
/// that tens of thousands of tokens stay cheap: the tokens are taken in chunks of
/// [`GRAM_CHUNK`], each chunk's dot products
/// summed in f32 (short sums, exact enough for a statistic) and added to P in f64, chunk after
/// chunk. Rows of P are split into fixed blocks that run in parallel natively, each summing in
/// the same order whatever the thread count, so the result is deterministic.
fn column_products(a: &[f32], a_cols: usize, b: &[f32], b_cols: usize, upper: bool) -> Vec<f64> {
    let tokens = a.len() / a_cols.max(1);
    debug_assert!(b.len() == tokens * b_cols && (!upper || a_cols == b_cols));
    let cols = b_cols;
    // Block k owns rows [k·ROWS, (k+1)·ROWS) of P: [rows, cols] in f64.
    const ROWS: usize = 32;
    let blocks: Vec<usize> = (0..a_cols.div_ceil(ROWS)).collect();
    let avx2 = crate::tensor::has_avx2();
    let rows_of = crate::tensor::parallel_map(blocks, |k| {
        crate::tensor::with_wide_simd(|| {
            let rows = k * ROWS..((k + 1) * ROWS).min(a_cols);
            let mut acc = vec![0f64; rows.len() * cols];
            for start in (0..tokens).step_by(GRAM_CHUNK) {
                let len = GRAM_CHUNK.min(tokens - start);
                fn column(m: &[f32], j: usize, tokens: usize, start: usize, len: usize) -> &[f32] {
                    &m[j * tokens + start..][..len]
                }
                let column = |m, j| column(m, j, tokens, start, len);
                for i in rows.clone().step_by(4) {
                    // Four rows of P at once share every load of B's column j.
                    let group = (rows.end - i).min(4);
                    let lhs: [&[f32]; 4] = std::array::from_fn(|r| column(a, i + r.min(group - 1)));
                    let mut add = |j: usize, dots: [f32; 4]| {
                        for (r, &d) in dots.iter().enumerate().take(group) {
                            if !upper || j >= i + r {
                                acc[(i + r - rows.start) * cols + j] += d as f64;
                            }
                        }
                    };
                    let mut j = if upper { i } else { 0 };
                    while j < cols {
                        #[cfg(target_arch = "x86_64")]
                        if avx2 && j + 1 < cols {
                            // Two columns of B per pass: each load of A's four columns feeds
                            // both (the products here are load-bound); the same sums.
                            // SAFETY: AVX2 seen on this CPU; every column slice holds `len`.
                            let [first, second] = unsafe { super::simd_x86::dot2x4_f32([column(b, j), column(b, j + 1)], lhs) };
                            add(j, first);
                            add(j + 1, second);
                            j += 2;
                            continue;
                        }
                        add(j, crate::tensor::dot4_f32_dispatch(avx2, column(b, j), lhs));
                        j += 1;
                    }
                }
            }
            acc
        })
    });
    rows_of.concat()
}

/// C = A_refᵀ·A for the full-precision model's inputs of a matrix and the ones it receives in
/// the calibration pass, over the same tokens ([tokens, cols] each): cols × cols, row-major,
/// C_ij = Σ_t ref[t, i]·a[t, j] (see [`correct_for_upstream_error`]).
pub fn cross_gram(reference: &[f32], xs: &[f32], cols: usize) -> Vec<f64> {
    assert!(cols > 0 && xs.len() % cols == 0 && reference.len() == xs.len(), "cross_gram: {} and {} inputs of {cols} columns", reference.len(), xs.len());
    column_products(&transpose(reference, cols), cols, &transpose(xs, cols), cols, false)
}

/// D = Δᵀ·A for a matrix's inputs A ([tokens, cols]) and the drift Δ ([tokens, rows]) of the
/// residual stream its outputs are added to: rows × cols, row-major (see
/// [`correct_for_upstream_error`]).
pub fn drift_gram(drift: &[f32], rows: usize, xs: &[f32], cols: usize) -> Vec<f64> {
    assert!(rows > 0 && cols > 0 && xs.len() % cols == 0 && drift.len() / rows == xs.len() / cols && drift.len() % rows == 0, "drift_gram: {} drift values of {rows}, {} inputs of {cols}", drift.len(), xs.len());
    column_products(&transpose(drift, rows), rows, &transpose(xs, cols), cols, false)
}

/// Corrects a matrix for the error of the layers before it (after GPTAQ, Li et al. 2025,
/// "asymmetric calibration"): sequential GPTQ quantizes W for the inputs A it receives from the
/// already-quantized layers, but the output to reproduce is the full-precision model's,
/// W·a_ref. Each row w becomes the w̃ minimizing ‖A_ref·w − A·w̃‖² + λ‖w̃ − w‖², i.e.
/// w̃ = (w·C + λw)·(H + λI)⁻¹ with C = A_refᵀA ([`cross_gram`]), H = AᵀA, and
/// (H + λI)⁻¹ = UᵀU (`u` and its λ from [`inverse_cholesky_upper_damped`]); GPTQ then rounds
/// w̃ as usual. `weights` is rows × cols row-major, corrected in place.
///
/// A matrix whose outputs are added to the residual stream (attention output, down) can also
/// be asked to cancel what the quantized layers before it have already moved that stream away
/// from the full-precision model's, the drift δ_t = x_ref,t − x_t at the point where its output
/// is added: row k then aims at w_k·a_ref + δ_k, which adds row k of D = ΔᵀA ([`drift_gram`],
/// rows × cols) to r below.
pub fn correct_for_upstream_error(weights: &mut [f32], cols: usize, cross: &[f64], drift: Option<&[f64]>, u: &[f32], lambda: f64) {
    assert!(cross.len() == cols * cols && u.len() == cols * cols && weights.len() % cols == 0);
    assert!(drift.is_none_or(|d| d.len() == weights.len()));
    let rows: Vec<(usize, &mut [f32])> = weights.chunks_exact_mut(cols).enumerate().collect();
    crate::tensor::parallel_map(rows, |(k, w)| {
        // r = w·C + λw (+ row k of D)
        let mut r: Vec<f64> = w.iter().map(|&v| lambda * v as f64).collect();
        if let Some(d) = drift {
            r.iter_mut().zip(&d[k * cols..][..cols]).for_each(|(o, &v)| *o += v);
        }
        for (&wi, c) in w.iter().zip(cross.chunks_exact(cols)) {
            for (o, &c) in r.iter_mut().zip(c) {
                *o += wi as f64 * c;
            }
        }
        // v = r·Uᵀ: v_i = Σ_{j ≥ i} r_j U_ij; then w̃ = v·U: w̃_k = Σ_{i ≤ k} v_i U_ik.
        let mut out = vec![0f64; cols];
        for i in 0..cols {
            let row = &u[i * cols + i..(i + 1) * cols];
            let vi: f64 = row.iter().zip(&r[i..]).map(|(&uij, &rj)| uij as f64 * rj).sum();
            for (o, &uik) in out[i..].iter_mut().zip(row) {
                *o += vi * uik as f64;
            }
        }
        for (d, o) in w.iter_mut().zip(out) {
            *d = o as f32;
        }
    });
}

/// Eight independent f64 accumulators (vectorizes; fixed summation order).
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// In-place lower Cholesky factor of the n × n symmetric `a` (row-major; only the lower
/// triangle is read, the upper is zeroed). None when `a` is not positive definite.
fn cholesky_lower(a: &mut [f64], n: usize) -> Option<()> {
    for i in 0..n {
        for j in 0..=i {
            let (row_i, row_j) = (&a[i * n..][..j], &a[j * n..][..j]);
            let s = a[i * n + j] - dot_f64(row_i, row_j);
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return None;
                }
                a[i * n + i] = s.sqrt();
            } else {
                a[i * n + j] = s / a[j * n + j];
            }
        }
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    Some(())
}

/// The inverse of a lower-triangular n × n matrix with a positive diagonal (row-major), row by
/// row: row i of L⁻¹ is (e_i − Σ_{k<i} L_ik · row k of L⁻¹) / L_ii.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        let mut row = vec![0f64; i + 1];
        row[i] = 1.0;
        for k in 0..i {
            let c = l[i * n + k];
            if c != 0.0 {
                for (r, &v) in row.iter_mut().zip(&inv[k * n..][..=k]) {
                    *r -= c * v;
                }
            }
        }
        let d = l[i * n + i];
        for (o, r) in inv[i * n..][..=i].iter_mut().zip(row) {
            *o = r / d;
        }
    }
    inv
}

/// The upper Cholesky factor U of (H + λI)⁻¹, (H + λI)⁻¹ = UᵀU, as f32 (cols × cols,
/// row-major), with λ = `damp` × mean(diag H); λ grows tenfold (up to four times) if the
/// damped H is still not positive definite. None only for a matrix that stays indefinite.
///
/// Without forming the inverse: with P the order-reversing permutation and P(H + λI)P = L̃L̃ᵀ,
/// (H + λI)⁻¹ = (P L̃⁻¹ P)ᵀ (P L̃⁻¹ P), and P L̃⁻¹ P is upper triangular with a positive
/// diagonal — so U = P L̃⁻¹ P: one Cholesky and one triangular inverse.
pub fn inverse_cholesky_upper(gram: &Gram, damp: f64) -> Option<Vec<f32>> {
    inverse_cholesky_upper_damped(gram, damp).map(|(u, _)| u)
}

/// [`inverse_cholesky_upper`] with the λ it finally added to the diagonal.
pub fn inverse_cholesky_upper_damped(gram: &Gram, damp: f64) -> Option<(Vec<f32>, f64)> {
    let n = gram.cols;
    let mean_diag = (0..n).map(|j| gram.h[j * n + j]).sum::<f64>() / n.max(1) as f64;
    // An all-zero H (inputs never seen) still needs a positive definite matrix.
    let mut lambda = damp * if mean_diag > 0.0 { mean_diag } else { 1.0 };
    for _ in 0..5 {
        let mut reversed = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                reversed[i * n + j] = gram.h[(n - 1 - i) * n + (n - 1 - j)];
            }
            reversed[i * n + i] += lambda;
        }
        if cholesky_lower(&mut reversed, n).is_some() {
            let inv = invert_lower(&reversed, n);
            let mut u = vec![0f32; n * n];
            for i in 0..n {
                for j in i..n {
                    u[i * n + j] = inv[(n - 1 - i) * n + (n - 1 - j)] as f32;
                }
            }
            return Some((u, lambda));
        }
        lambda *= 10.0;
    }
    None
}

/// Rounds of (code descent, refit) after GPTQ in the packer.
pub const POLISH_ROUNDS: usize = 3;

/// Passes over a row's columns per round of code descent (it stops early once no code moves).
const POLISH_SWEEPS: usize = 4;

/// Coordinate descent on the codes after GPTQ and the refit ([`polish_codes`]), alternating
/// with the refit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polish {
    /// λ of the damped H the descent minimizes in (the one GPTQ's factor was made with; λ = 0
    /// and 2λ measured worse, see the module header).
    pub lambda: f64,
    /// Rounds of (descent, refit).
    pub rounds: usize,
}

/// How a block's columns are weighted when its scale and min are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnWeights {
    /// 1 / U_jj²: what an error left in column j costs after the later columns compensated it
    /// (the OBS loss of rounding w_j alone).
    Compensated,
    /// H_jj: the mean square of the input (the plain importance weighting, no compensation).
    InputPower,
}

/// GPTQ of a whole matrix: `weights` is rows × cols row-major f32, `u` from
/// [`inverse_cholesky_upper`] for this matrix's inputs; returns the matrix stored as `ty`
/// (one of [`applies`]' types), rows in order.
///
/// # Panics
/// When `ty` is not a min/scale format, or the sizes disagree (programming errors: the packer
/// checks shapes before it gets here).
#[allow(clippy::too_many_arguments)]
pub fn quantize_matrix(ty: StorageType, weights: &[f32], cols: usize, u: &[f32], h_diag: &[f64], weighting: ColumnWeights, refit: Option<&[f64]>, polish: Option<Polish>) -> Vec<u8> {
    assert!(applies(ty), "GPTQ does not apply to {}", ty.name());
    assert!(cols % BLOCK == 0 && weights.len() % cols == 0 && u.len() == cols * cols && h_diag.len() == cols);
    let column_weights: Vec<f32> = match weighting {
        ColumnWeights::Compensated => (0..cols).map(|j| 1.0 / (u[j * cols + j] * u[j * cols + j])).collect(),
        ColumnWeights::InputPower => h_diag.iter().map(|&v| v as f32).collect(),
    };
    let rows: Vec<&[f32]> = weights.chunks_exact(cols).collect();
    let encoded = crate::tensor::parallel_map(rows, |row| {
        let mut out = Vec::with_capacity(ty.row_bytes(cols).unwrap_or(0));
        let mut fits = quantize_row(ty, row, u, &column_weights);
        if let Some(h) = refit {
            refit_scales(row, h, &mut fits);
            if let Some(polish) = polish {
                for _ in 0..polish.rounds {
                    if polish_codes(row, h, polish.lambda, &mut fits, max_level(ty), POLISH_SWEEPS) == 0 {
                        break;
                    }
                    refit_scales(row, h, &mut fits);
                }
            }
        }
        for fit in &fits {
            push_min_scale_block(ty, fit, &mut out);
        }
        out
    });
    encoded.concat()
}

/// Coordinate descent on a row's codes for its product error in the damped H
/// (E = eᵀ(H + λI)e, e = w − ŵ), the grids fixed: each code moves one level up or down when
/// that lowers E (QuantEase, Behdin et al. 2023, quantizes this way from scratch; here it
/// polishes GPTQ's greedy walk, which never revisits a column once rounded, and the refit that
/// moved the grids under the codes). With g = (H + λI)e kept up to date, trying a column costs
/// O(1) and a move O(cols). Up to `sweeps` passes over the columns; returns how many codes moved.
fn polish_codes(w: &[f32], h: &[f64], lambda: f64, fits: &mut [Fit], nmax: u8, sweeps: usize) -> usize {
    let n = w.len();
    let e: Vec<f64> = w.iter().zip(reconstruct(fits)).map(|(&a, b)| a as f64 - b).collect();
    let mut g: Vec<f64> = (0..n).map(|i| dot_f64(&h[i * n..][..n], &e) + lambda * e[i]).collect();
    let mut moved = 0;
    for _ in 0..sweeps {
        let mut moved_now = 0;
        for j in 0..n {
            let fit = &mut fits[j / BLOCK];
            let (d, q) = (fit.d.to_f64(), fit.q[j % BLOCK]);
            let hjj = h[j * n + j] + lambda;
            // ŵ_j += s·d changes E by −(2·s·d·g_j − d²·h_jj).
            let gain = |s: f64| 2.0 * s * d * g[j] - d * d * hjj;
            let threshold = 1e-12 * hjj * d * d;
            let step = if q < nmax && gain(1.0) > threshold {
                1.0
            } else if q > 0 && gain(-1.0) > threshold {
                -1.0
            } else {
                continue;
            };
            fit.q[j % BLOCK] = (q as f64 + step) as u8;
            // e_j −= delta, so g = (H + λI)e loses delta times column j.
            let delta = step * d;
            for (gi, &hij) in g.iter_mut().zip(&h[j * n..][..n]) {
                *gi -= delta * hij;
            }
            g[j] -= delta * lambda;
            moved_now += 1;
        }
        moved += moved_now;
        if moved_now == 0 {
            break;
        }
    }
    moved
}

/// The row's reconstruction from its blocks' (d, m, q).
fn reconstruct(fits: &[Fit]) -> Vec<f64> {
    fits.iter().flat_map(|f| f.q.iter().map(move |&q| f.d.to_f64() * q as f64 + f.m.to_f64())).collect()
}

/// (w − ŵ)ᵀ H (w − ŵ) for one row.
fn row_error(w: &[f32], what: &[f64], h: &[f64]) -> f64 {
    let e: Vec<f64> = w.iter().zip(what).map(|(&a, b)| a as f64 - b).collect();
    let n = e.len();
    (0..n).map(|i| e[i] * dot_f64(&h[i * n..][..n], &e)).sum()
}

/// Given the codes, re-chooses every block's (d, m) of a row jointly to minimize the row's
/// product error (w − ŵ)ᵀ H (w − ŵ), ŵ_j = d_b·q_j + m_b for j in block b: linear least squares
/// in the 2·blocks unknowns, (AᵀHA)θ = AᵀHw. GPTQ chose each block's grid from values that
/// were still moving; this puts the grids where the codes, all known now, want them. Kept only
/// when it lowers the error with the f16-rounded values actually stored. In the bare H, not the
/// damped one of the walk and the descent: that measured worse (module header).
fn refit_scales(w: &[f32], h: &[f64], fits: &mut [Fit]) {
    let (n, k) = (w.len(), 2 * fits.len());
    // Column c of A: q_j (c = 2b) or 1 (c = 2b + 1) on block b's columns, 0 elsewhere.
    let a = |c: usize, j: usize| if j / BLOCK != c / 2 { 0.0 } else if c % 2 == 0 { fits[c / 2].q[j % BLOCK] as f64 } else { 1.0 };
    // HA: n × k, column c = Σ_{j in its block} H[:, j]·A[j, c].
    let mut ha = vec![0f64; n * k];
    for (h_row, ha_row) in h.chunks_exact(n).zip(ha.chunks_exact_mut(k)) {
        for (b, fit) in fits.iter().enumerate() {
            let hb = &h_row[b * BLOCK..][..BLOCK];
            ha_row[2 * b] = hb.iter().zip(&fit.q).map(|(&v, &q)| v * q as f64).sum();
            ha_row[2 * b + 1] = hb.iter().sum();
        }
    }
    let mut ata = vec![0f64; k * k];
    let mut atw = vec![0f64; k];
    for c in 0..k {
        let block = c / 2 * BLOCK;
        for j in block..block + BLOCK {
            let ajc = a(c, j);
            for (e, &v) in ata[c * k..][..k].iter_mut().zip(&ha[j * k..][..k]) {
                *e += ajc * v;
            }
        }
        atw[c] = (0..n).map(|i| ha[i * k + c] * w[i] as f64).sum();
    }
    // A tiny ridge keeps a block whose codes are all equal (d free) solvable.
    let ridge = 1e-9 * (0..k).map(|c| ata[c * k + c]).sum::<f64>() / k as f64;
    (0..k).for_each(|c| ata[c * k + c] += ridge);
    if cholesky_lower(&mut ata, k).is_none() {
        return;
    }
    // Solve L y = b, then Lᵀ θ = y.
    let mut y = atw;
    for i in 0..k {
        y[i] = (y[i] - dot_f64(&ata[i * k..][..i], &y[..i])) / ata[i * k + i];
    }
    for i in (0..k).rev() {
        let s: f64 = (i + 1..k).map(|r| ata[r * k + i] * y[r]).sum();
        y[i] = (y[i] - s) / ata[i * k + i];
    }
    let before = row_error(w, &reconstruct(fits), h);
    let candidate: Vec<Fit> = fits.iter().enumerate().map(|(b, f)| Fit { d: half::f16::from_f64(y[2 * b]), m: half::f16::from_f64(y[2 * b + 1]), q: f.q, err: f.err }).collect();
    let after = row_error(w, &reconstruct(&candidate), h);
    if after.is_finite() && after < before {
        fits.clone_from_slice(&candidate);
    }
}

/// One row's GPTQ walk (module header): the blocks' stored (d, m, q), in order.
fn quantize_row(ty: StorageType, row: &[f32], u: &[f32], column_weights: &[f32]) -> Vec<Fit> {
    let (cols, nmax) = (row.len(), max_level(ty));
    let mut w = row.to_vec();
    let mut fits = Vec::with_capacity(cols / BLOCK);
    for start in (0..cols).step_by(BLOCK) {
        let mut fit = fit_weighted(&w[start..start + BLOCK], &column_weights[start..start + BLOCK], nmax, Search::LeastSquares);
        let (d, m) = (fit.d.to_f32(), fit.m.to_f32());
        for j in start..start + BLOCK {
            // Round on the block's grid (as `quantize::assign`), then spread the error.
            let q = if d != 0.0 { ((w[j] - m) / d).round().clamp(0.0, nmax as f32) as u8 } else { 0 };
            fit.q[j - start] = q;
            let e = (w[j] - (d * q as f32 + m)) / u[j * cols + j];
            for (wk, &ujk) in w[j + 1..].iter_mut().zip(&u[j * cols + j + 1..(j + 1) * cols]) {
                *wk -= e * ujk;
            }
        }
        fits.push(fit);
    }
    fits
}

/// The output error Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r) = ‖X Wᵀ − X Ŵᵀ‖² of a quantized matrix
/// (for tests and diagnostics).
pub fn output_error(weights: &[f32], quantized: &[f32], gram: &Gram) -> f64 {
    let n = gram.cols;
    weights
        .chunks_exact(n)
        .zip(quantized.chunks_exact(n))
        .map(|(w, q)| {
            let e: Vec<f64> = w.iter().zip(q).map(|(a, b)| (a - b) as f64).collect();
            (0..n).map(|i| e[i] * dot_f64(&gram.h[i * n..][..n], &e)).sum::<f64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize::quantize_row_weighted;
    use crate::quant::tests::Rng;
    use crate::quant::{dequantize_row, StorageType};

    /// Inputs with strongly correlated columns, like a transformer's hidden states: a few
    /// shared latent factors plus a little independent noise, and some columns much louder.
    fn correlated_inputs(tokens: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
        let factors = 6;
        let mix: Vec<f32> = (0..factors * cols).map(|_| rng.f32()).collect();
        let loud: Vec<f32> = (0..cols).map(|j| if j % 7 == 0 { 4.0 } else { 1.0 }).collect();
        let mut xs = Vec::with_capacity(tokens * cols);
        for _ in 0..tokens {
            let z: Vec<f32> = (0..factors).map(|_| rng.f32()).collect();
            for j in 0..cols {
                let latent: f32 = (0..factors).map(|f| z[f] * mix[f * cols + j]).sum();
                xs.push(loud[j] * (latent + 0.1 * rng.f32()));
            }
        }
        xs
    }

    fn dequantize_matrix(ty: StorageType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
        let row_bytes = ty.row_bytes(cols).unwrap();
        let mut out = vec![0f32; rows * cols];
        for (r, o) in out.chunks_exact_mut(cols).enumerate() {
            dequantize_row(ty, &bytes[r * row_bytes..][..row_bytes], o);
        }
        out
    }

    #[test]
    fn inverse_cholesky_factor_reproduces_the_damped_inverse() {
        let mut rng = Rng(5);
        let (tokens, n) = (40, 24);
        let gram = Gram::of(&correlated_inputs(tokens, n, &mut rng), n);
        let u = inverse_cholesky_upper(&gram, DAMP).unwrap();
        let lambda = DAMP * (0..n).map(|j| gram.h[j * n + j]).sum::<f64>() / n as f64;
        // (UᵀU)(H + λI) must be the identity.
        for i in 0..n {
            for j in 0..n {
                assert_eq!(u[i * n + j] != 0.0 && j < i, false, "U is not upper triangular at ({i}, {j})");
                let hinv_ij = |a: usize, b: usize| (0..n).map(|k| u[k * n + a] as f64 * u[k * n + b] as f64).sum::<f64>();
                let v: f64 = (0..n).map(|k| hinv_ij(i, k) * (gram.h[k * n + j] + if k == j { lambda } else { 0.0 })).sum();
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((v - expected).abs() < 1e-3, "(UᵀU)(H+λI)[{i}][{j}] = {v}");
            }
        }
    }

    /// The blocked, chunked Gram and cross product equal the plain f64 XᵀX and XᵀY (sizes that
    /// are no multiple of the row block, the 4-row group or the token chunk).
    #[test]
    fn blocked_gram_matches_the_plain_product() {
        let mut rng = Rng(17);
        let (tokens, cols) = (300, 70);
        let xs: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
        let g = Gram::of(&xs, cols);
        for i in 0..cols {
            for j in 0..cols {
                let plain: f64 = (0..tokens).map(|t| xs[t * cols + i] as f64 * xs[t * cols + j] as f64).sum();
                assert!((g.h[i * cols + j] - plain).abs() <= 1e-5 * plain.abs().max(1.0), "H[{i}][{j}] = {} vs {plain}", g.h[i * cols + j]);
            }
        }
        let ys: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
        let c = cross_gram(&xs, &ys, cols);
        for i in 0..cols {
            for j in 0..cols {
                let plain: f64 = (0..tokens).map(|t| xs[t * cols + i] as f64 * ys[t * cols + j] as f64).sum();
                assert!((c[i * cols + j] - plain).abs() <= 1e-5 * plain.abs().max(1.0), "C[{i}][{j}] = {} vs {plain}", c[i * cols + j]);
            }
        }
        // A product of two widths: 37 drift columns against the 70 input columns.
        let drift: Vec<f32> = (0..tokens * 37).map(|_| rng.f32()).collect();
        let d = drift_gram(&drift, 37, &xs, cols);
        for k in 0..37 {
            for j in 0..cols {
                let plain: f64 = (0..tokens).map(|t| drift[t * 37 + k] as f64 * xs[t * cols + j] as f64).sum();
                assert!((d[k * cols + j] - plain).abs() <= 1e-5 * plain.abs().max(1.0), "D[{k}][{j}] = {} vs {plain}", d[k * cols + j]);
            }
        }
    }

    #[test]
    fn gram_is_xt_x_and_mean_squares_its_diagonal() {
        let xs = [1.0f32, 2.0, 0.0, -1.0, 3.0, 1.0]; // 2 tokens × 3 columns
        let g = Gram::of(&xs, 3);
        assert_eq!(g.h, vec![2.0, -1.0, -1.0, -1.0, 13.0, 3.0, -1.0, 3.0, 1.0]);
        assert_eq!(g.mean_squares(), vec![1.0, 6.5, 0.5]);
    }

    /// The point of GPTQ: on correlated inputs the product error ‖XWᵀ − XŴᵀ‖² is far below
    /// what rounding each block on its own gives, for every min/scale format.
    #[test]
    fn gptq_lowers_the_output_error_of_plain_rounding() {
        let mut rng = Rng(2024);
        let (rows, cols, tokens) = (48, 128, 512);
        let weights: Vec<f32> = (0..rows * cols).map(|_| rng.f32() + rng.f32() + rng.f32()).collect();
        let xs = correlated_inputs(tokens, cols, &mut rng);
        let gram = Gram::of(&xs, cols);
        let u = inverse_cholesky_upper(&gram, DAMP).unwrap();
        let diag: Vec<f64> = (0..cols).map(|j| gram.h[j * cols + j]).collect();
        let importance = gram.mean_squares();
        for (ty, min_gain) in [(StorageType::Q2, 0.5), (StorageType::Q3, 0.5), (StorageType::Q4_1, 0.5)] {
            let mut plain = Vec::new();
            for row in weights.chunks_exact(cols) {
                quantize_row_weighted(ty, row, Some(&importance), &mut plain);
            }
            let plain = output_error(&weights, &dequantize_matrix(ty, &plain, rows, cols), &gram);
            for weighting in [ColumnWeights::Compensated, ColumnWeights::InputPower] {
                let bytes = quantize_matrix(ty, &weights, cols, &u, &diag, weighting, None, None);
                assert_eq!(bytes.len(), rows * ty.row_bytes(cols).unwrap());
                let gptq = output_error(&weights, &dequantize_matrix(ty, &bytes, rows, cols), &gram);
                println!("{} ({weighting:?}): output error plain {plain:.4e}, GPTQ {gptq:.4e} ({:.1}% lower)", ty.name(), 100.0 * (1.0 - gptq / plain));
                assert!(gptq < plain * (1.0 - min_gain), "{}: GPTQ {gptq} vs plain {plain}", ty.name());
                // Refitting the grids to the final codes never makes a row worse.
                let bytes = quantize_matrix(ty, &weights, cols, &u, &diag, weighting, Some(&gram.h), None);
                let refit = output_error(&weights, &dequantize_matrix(ty, &bytes, rows, cols), &gram);
                println!("{} ({weighting:?}): with the least-squares refit {refit:.4e}", ty.name());
                assert!(refit <= gptq, "{}: refit {refit} vs {gptq}", ty.name());
            }
        }
    }

    /// The descent on the codes only ever lowers the damped product error it minimizes, and
    /// (with the refits between rounds) the plain one too on these inputs.
    #[test]
    fn polishing_the_codes_lowers_the_product_error() {
        let mut rng = Rng(31);
        let (rows, cols, tokens) = (24, 128, 400);
        let weights: Vec<f32> = (0..rows * cols).map(|_| rng.f32() + rng.f32()).collect();
        let gram = Gram::of(&correlated_inputs(tokens, cols, &mut rng), cols);
        // 10 % damping: with the packer's lighter damping, GPTQ's codes on these small
        // synthetic inputs can already be locally optimal, leaving the descent nothing to show.
        let (u, lambda) = inverse_cholesky_upper_damped(&gram, 0.1).unwrap();
        let diag: Vec<f64> = (0..cols).map(|j| gram.h[j * cols + j]).collect();
        let damped: Vec<f64> = (0..cols * cols).map(|k| gram.h[k] + if k % (cols + 1) == 0 { lambda } else { 0.0 }).collect();
        let column_weights: Vec<f32> = (0..cols).map(|j| 1.0 / (u[j * cols + j] * u[j * cols + j])).collect();
        let mut moved = 0;
        for row in weights.chunks_exact(cols) {
            let mut fits = quantize_row(StorageType::Q2, row, &u, &column_weights);
            refit_scales(row, &gram.h, &mut fits);
            let before = row_error(row, &reconstruct(&fits), &damped);
            moved += polish_codes(row, &gram.h, lambda, &mut fits, max_level(StorageType::Q2), POLISH_SWEEPS);
            assert!(row_error(row, &reconstruct(&fits), &damped) <= before * (1.0 + 1e-9));
        }
        assert!(moved > 0, "GPTQ's greedy codes are never all locally optimal");
        let error = |polish| {
            let bytes = quantize_matrix(StorageType::Q2, &weights, cols, &u, &diag, ColumnWeights::Compensated, Some(&gram.h), polish);
            output_error(&weights, &dequantize_matrix(StorageType::Q2, &bytes, rows, cols), &gram)
        };
        let (plain, polished) = (error(None), error(Some(Polish { lambda, rounds: POLISH_ROUNDS })));
        println!("Q2 output error: GPTQ + refit {plain:.4e}, polished {polished:.4e}");
        assert!(polished < plain, "{polished} vs {plain}");
    }

    /// Σ_t ‖W·ref_t (+ δ_t) − W₂·a_t‖²: how far the corrected `w2` on the inputs `xs` misses
    /// the outputs `w` gives on `reference` (plus the drift δ, [tokens, rows], when given).
    fn correction_miss(w: &[f32], w2: &[f32], reference: &[f32], xs: &[f32], cols: usize, drift: Option<&[f32]>) -> f64 {
        let rows = w.len() / cols;
        let mut total = 0.0;
        for (t, (r, a)) in reference.chunks_exact(cols).zip(xs.chunks_exact(cols)).enumerate() {
            for k in 0..rows {
                let target: f64 = (0..cols).map(|j| w[k * cols + j] as f64 * r[j] as f64).sum::<f64>() + drift.map_or(0.0, |d| d[t * rows + k] as f64);
                let y: f64 = (0..cols).map(|j| w2[k * cols + j] as f64 * a[j] as f64).sum();
                total += (target - y).powi(2);
            }
        }
        total
    }

    /// The correction towards the reference inputs: none when they are the inputs themselves,
    /// and when they differ, the corrected matrix reproduces the reference outputs better.
    #[test]
    fn upstream_correction_targets_the_reference_outputs() {
        let mut rng = Rng(8);
        let (rows, cols, tokens) = (6, 32, 300);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32()).collect();
        let reference = correlated_inputs(tokens, cols, &mut rng);
        let xs: Vec<f32> = reference.iter().map(|&v| v + 0.2 * rng.f32()).collect();
        let miss = |w2: &[f32]| correction_miss(&w, w2, &reference, &xs, cols, None);
        let gram = Gram::of(&xs, cols);
        let (u, lambda) = inverse_cholesky_upper_damped(&gram, 0.01).unwrap();
        let mut corrected = w.clone();
        correct_for_upstream_error(&mut corrected, cols, &cross_gram(&reference, &xs, cols), None, &u, lambda);
        assert!(miss(&corrected) < 0.7 * miss(&w), "{} vs {}", miss(&corrected), miss(&w));
        let self_gram = Gram::of(&reference, cols);
        let (u, lambda) = inverse_cholesky_upper_damped(&self_gram, DAMP).unwrap();
        let mut same = w.clone();
        correct_for_upstream_error(&mut same, cols, &cross_gram(&reference, &reference, cols), None, &u, lambda);
        assert!(same.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-4), "no upstream error, no correction");
    }

    /// With the residual stream's drift δ (here partly predictable from the inputs), each row
    /// is corrected to reproduce w·a_ref + δ, and does so better than without the drift term.
    #[test]
    fn drift_correction_also_cancels_the_residual_drift() {
        let mut rng = Rng(12);
        let (rows, cols, tokens) = (5, 32, 400);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32()).collect();
        let xs = correlated_inputs(tokens, cols, &mut rng);
        let reference: Vec<f32> = xs.iter().map(|&v| v + 0.1 * rng.f32()).collect();
        let mixing: Vec<f32> = (0..rows * cols).map(|_| 0.3 * rng.f32()).collect();
        let drift: Vec<f32> = xs.chunks_exact(cols).flat_map(|a| (0..rows).map(|k| (0..cols).map(|j| mixing[k * cols + j] * a[j]).sum::<f32>()).collect::<Vec<_>>()).map(|v| v + 0.05 * rng.f32()).collect();
        let miss = |w2: &[f32]| correction_miss(&w, w2, &reference, &xs, cols, Some(&drift));
        let gram = Gram::of(&xs, cols);
        let (u, lambda) = inverse_cholesky_upper_damped(&gram, 0.01).unwrap();
        let cross = cross_gram(&reference, &xs, cols);
        let (mut plain, mut with_drift) = (w.clone(), w.clone());
        correct_for_upstream_error(&mut plain, cols, &cross, None, &u, lambda);
        correct_for_upstream_error(&mut with_drift, cols, &cross, Some(&drift_gram(&drift, rows, &xs, cols)), &u, lambda);
        assert!(miss(&with_drift) < 0.5 * miss(&plain), "{} vs {}", miss(&with_drift), miss(&plain));
    }

    #[test]
    fn gptq_is_deterministic_and_survives_dead_columns() {
        let mut rng = Rng(99);
        let (rows, cols, tokens) = (8, 64, 16); // fewer tokens than columns: H is singular
        let weights: Vec<f32> = (0..rows * cols).map(|_| rng.f32()).collect();
        let mut xs = correlated_inputs(tokens, cols, &mut rng);
        for row in xs.chunks_exact_mut(cols) {
            row[3] = 0.0; // a column the calibration never excites
        }
        let gram = Gram::of(&xs, cols);
        let u = inverse_cholesky_upper(&gram, DAMP).unwrap();
        let diag: Vec<f64> = (0..cols).map(|j| gram.h[j * cols + j]).collect();
        let a = quantize_matrix(StorageType::Q2, &weights, cols, &u, &diag, ColumnWeights::Compensated, None, None);
        let b = quantize_matrix(StorageType::Q2, &weights, cols, &u, &diag, ColumnWeights::Compensated, None, None);
        assert_eq!(a, b);
        let back = dequantize_matrix(StorageType::Q2, &a, rows, cols);
        assert!(back.iter().all(|v| v.is_finite()));
        // Even an all-zero H (no calibration at all) factors, as the damped identity.
        assert!(inverse_cholesky_upper(&Gram { cols, h: vec![0.0; cols * cols], tokens: 0 }, DAMP).is_some());
    }
}
