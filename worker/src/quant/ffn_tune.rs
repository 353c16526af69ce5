//! Block-wise reconstruction of a SwiGLU feed-forward after GPTQ (after EfficientQAT's Block-AP,
//! Chen et al. 2024, restricted to the quantization parameters): with every code fixed, the
//! per-block scales d and mins m of the feed-forward's low-bit matrices are tuned *jointly* by
//! gradient descent so that the quantized block's output on calibration inputs matches a target
//! — the full-precision feed-forward's output plus the drift of the residual stream, the same
//! target down's upstream correction aims at.
//!
//! Why on top of GPTQ: GPTQ quantizes gate, up and down one at a time, each against its own
//! *linear* output. What matters is the block's output, and gate's error reaches it through
//! SiLU, the product with up and then down: an error where SiLU is flat or up is small costs
//! nothing, one where both are large costs a lot. Only the block's own gradient sees that. The
//! codes stay GPTQ's (a 2-bit code is one of four points, not something a gradient moves), so
//! the tuned parameters are two per block of 32 weights: few enough that a few thousand tokens
//! constrain them, and the bytes keep their format.
//!
//! Shapes (n tokens, D = d_model, F = the feed-forward's width; W = d·q + m per block of 32):
//!
//! ```text
//! X [n, D] inputs (after the norm)   T [n, D] targets
//! G = X·Wgᵀ, U = X·Wuᵀ                [n, F]
//! A = silu(G) ⊙ U                     [n, F]
//! O = A·Wdᵀ                           [n, D]      L = mean((O − T)²)
//! R = ∂L/∂O = 2(O − T)/(n·D)
//! ∂L/∂Wd = Rᵀ·A [D, F]    ∂L/∂A = R·Wd [n, F]
//! ∂L/∂U = ∂L/∂A ⊙ silu(G)    ∂L/∂G = ∂L/∂A ⊙ U ⊙ silu′(G),  silu′(g) = σ(g)(1 + g(1 − σ(g)))
//! ∂L/∂Wu = (∂L/∂U)ᵀ·X, ∂L/∂Wg = (∂L/∂G)ᵀ·X   [F, D]
//! per block: ∂L/∂d = Σ ∂L/∂w · q,  ∂L/∂m = Σ ∂L/∂w
//! ```
//!
//! Each step takes a different strided slice of the calibration tokens (a deterministic
//! mini-batch), so the whole corpus is seen without paying for it at every step; the update is
//! Adam's, with a step size relative to the matrix's mean |scale|. Every product goes through
//! the engine's f32 batch kernel, so the result is deterministic.
//!
//! Measured on SmolLM2 `mixed` (README): perplexity 39.465 → 39.352. Per layer it removes 9 %
//! of the residual stream's error at layer 0, under 1 % past layer 12, and neither a larger
//! step nor three times the steps does better: with the codes fixed, this is about all two
//! numbers per block can do. Letting the codes move as well (latent codes moved by damped
//! Newton steps on these gradients, one flip per row and step) cut every layer's error further
//! but lost 3.8 % perplexity on held-out text: with ~59k calibration tokens the flips fit the
//! corpus (README, "GPTQ, step by step"), so the codes stay fixed.

use half::f16;

use super::{f16_at, BLOCK};
use crate::tensor::{Activations, SharedBytes, WeightMatrix};

/// How long and how hard to tune.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Adam steps.
    pub steps: usize,
    /// Tokens per step.
    pub batch: usize,
    /// Adam's step size, as a fraction of the matrix's mean |scale|.
    pub learning_rate: f32,
}

/// A min/scale matrix (Q4_1, Q3, Q2) split into its fixed codes and its per-block (scale, min),
/// which are tuned when `tunable`.
pub struct BlockParams {
    pub rows: usize,
    pub cols: usize,
    /// [rows, cols]: each weight's code q (0..=the format's top level), as f32.
    codes: Vec<f32>,
    /// [rows, cols / 32] each.
    scales: Vec<f32>,
    mins: Vec<f32>,
    pub tunable: bool,
}

impl BlockParams {
    /// `m`'s codes and block parameters; None unless it is in a min/scale format.
    pub fn of(m: &WeightMatrix, tunable: bool) -> Option<Self> {
        if !super::gptq::applies(m.ty) || m.cols % BLOCK != 0 {
            return None;
        }
        let (rows, cols) = (m.rows, m.cols);
        let row_bytes = m.ty.row_bytes(cols)?;
        let block_bytes = m.ty.geometry().1;
        let per_row = cols / BLOCK;
        let (mut codes, mut scales, mut mins) = (vec![0f32; rows * cols], Vec::with_capacity(rows * per_row), Vec::with_capacity(rows * per_row));
        // Every min format starts a block with d then m (f16): decoding a copy whose blocks say
        // d = 1, m = 0 yields the codes themselves (exact: they are small integers).
        let mut unit = vec![0u8; row_bytes];
        for (row, out) in m.stored_bytes().chunks_exact(row_bytes).zip(codes.chunks_exact_mut(cols)) {
            unit.copy_from_slice(row);
            for block in unit.chunks_exact_mut(block_bytes) {
                scales.push(f16_at([block[0], block[1]]));
                mins.push(f16_at([block[2], block[3]]));
                block[..2].copy_from_slice(&f16::ONE.to_le_bytes());
                block[2..4].copy_from_slice(&f16::ZERO.to_le_bytes());
            }
            super::dequantize_row(m.ty, &unit, out);
        }
        Some(BlockParams { rows, cols, codes, scales, mins, tunable })
    }

    /// The weights the parameters give, [rows, cols]: d·q + m, the dequantizers' arithmetic.
    pub fn weights(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.codes.len()];
        for ((w, q), (&d, &m)) in w.chunks_exact_mut(BLOCK).zip(self.codes.chunks_exact(BLOCK)).zip(self.scales.iter().zip(&self.mins)) {
            for (w, &q) in w.iter_mut().zip(q) {
                *w = d * q + m;
            }
        }
        w
    }

    /// `like` (the matrix these parameters came from) with every block's d and m replaced by
    /// the tuned ones, rounded to f16.
    pub fn encode(&self, like: &WeightMatrix) -> Option<WeightMatrix> {
        let block_bytes = like.ty.geometry().1;
        let mut bytes = like.stored_bytes().to_vec();
        for (block, (&d, &m)) in bytes.chunks_exact_mut(block_bytes).zip(self.scales.iter().zip(&self.mins)) {
            block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            block[2..4].copy_from_slice(&f16::from_f32(m).to_le_bytes());
        }
        WeightMatrix::new(&like.name, like.ty, like.rows, like.cols, SharedBytes::from_vec(bytes)).ok()
    }

    /// ∂L/∂W ([rows, cols]) → (∂L/∂d, ∂L/∂m) per block.
    fn block_gradients(&self, dw: &[f32]) -> (Vec<f32>, Vec<f32>) {
        dw.chunks_exact(BLOCK)
            .zip(self.codes.chunks_exact(BLOCK))
            .map(|(g, q)| {
                let (mut dd, mut dm) = (0f32, 0f32);
                for (&g, &q) in g.iter().zip(q) {
                    dd += g * q;
                    dm += g;
                }
                (dd, dm)
            })
            .unzip()
    }

    fn mean_abs_scale(&self) -> f32 {
        (self.scales.iter().map(|d| d.abs() as f64).sum::<f64>() / self.scales.len().max(1) as f64) as f32
    }
}

/// Adam (Kingma & Ba 2015) over one parameter vector.
struct Adam {
    first: Vec<f32>,
    second: Vec<f32>,
}

impl Adam {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;

    fn new(n: usize) -> Self {
        Adam { first: vec![0.0; n], second: vec![0.0; n] }
    }

    /// One update of `params` by `grads` at step `step` (1-based).
    fn update(&mut self, params: &mut [f32], grads: &[f32], step: i32, learning_rate: f32) {
        let (c1, c2) = (1.0 - Self::BETA1.powi(step), 1.0 - Self::BETA2.powi(step));
        for ((p, &g), (m, v)) in params.iter_mut().zip(grads).zip(self.first.iter_mut().zip(self.second.iter_mut())) {
            *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
            *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
            // The gradients here are tiny (a mean over ~10⁶ outputs): ε must be tinier still.
            *p -= learning_rate * (*m / c1) / ((*v / c2).sqrt() + 1e-30);
        }
    }
}

/// xs·Wᵀ for f32 weights `w` ([rows, cols]) and xs ([t, cols]) → [t, rows], through the engine's
/// batch kernel.
fn product(w: &[f32], rows: usize, cols: usize, xs: &[f32], t: usize) -> Vec<f32> {
    let mut out = vec![0f32; t * rows];
    if let Ok(m) = WeightMatrix::from_f32("ffn_tune", rows, cols, w) {
        m.product(xs, &mut out, t, Activations::F32);
    }
    out
}

/// The rows `picked` of `m` ([_, cols]).
fn gather(m: &[f32], cols: usize, picked: &[usize]) -> Vec<f32> {
    picked.iter().flat_map(|&i| &m[i * cols..][..cols]).copied().collect()
}

/// The feed-forward's loss and its gradients with respect to each matrix's weights, on one batch
/// of `t` tokens (see the module header): (L, [∂L/∂Wg, ∂L/∂Wu, ∂L/∂Wd]); a frozen matrix's
/// gradient is left empty.
fn loss_and_gradients(ffn: [&BlockParams; 3], x: &[f32], target: &[f32], t: usize) -> (f64, [Vec<f32>; 3]) {
    let [gate, up, down] = ffn;
    let (d_model, width) = (gate.cols, gate.rows);
    let (wg, wu, wd) = (gate.weights(), up.weights(), down.weights());
    let g = product(&wg, width, d_model, x, t);
    let u = product(&wu, width, d_model, x, t);
    let sigmoid: Vec<f32> = g.iter().map(|&g| 1.0 / (1.0 + (-g).exp())).collect();
    let a: Vec<f32> = g.iter().zip(&sigmoid).zip(&u).map(|((&g, &s), &u)| g * s * u).collect();
    let o = product(&wd, d_model, width, &a, t);
    let n = o.len() as f64;
    let loss = o.iter().zip(target).map(|(&o, &y)| ((o - y) as f64).powi(2)).sum::<f64>() / n;
    let r: Vec<f32> = o.iter().zip(target).map(|(&o, &y)| (2.0 * (o - y) as f64 / n) as f32).collect();
    let transpose = super::gptq::transpose;
    let dwd = if down.tunable { product(&transpose(&a, width), width, t, &transpose(&r, d_model), d_model) } else { Vec::new() };
    let mut grads = [Vec::new(), Vec::new(), dwd];
    if gate.tunable || up.tunable {
        // ∂L/∂A = R·Wd, as a product with Wdᵀ's rows.
        let da = product(&transpose(&wd, width), width, d_model, &r, t);
        let x_columns = transpose(x, d_model);
        let weight_gradient = |d_out: Vec<f32>| product(&x_columns, d_model, t, &transpose(&d_out, width), width);
        if gate.tunable {
            let dg = da.iter().zip(&g).zip(&sigmoid).zip(&u).map(|(((&da, &g), &s), &u)| da * u * s * (1.0 + g * (1.0 - s))).collect();
            grads[0] = weight_gradient(dg);
        }
        if up.tunable {
            grads[1] = weight_gradient(da.iter().zip(&g).zip(&sigmoid).map(|((&da, &g), &s)| da * g * s).collect());
        }
    }
    (loss, grads)
}

/// Tunes the scales and mins of the tunable matrices of `ffn` = [gate, up, down] (gate and up
/// [F, D], down [D, F]) so that the block maps `inputs` ([n, D]) to `targets` ([n, D]); returns
/// each step's mini-batch loss.
pub fn tune(ffn: [&mut BlockParams; 3], inputs: &[f32], targets: &[f32], settings: Settings) -> Vec<f64> {
    let [gate, up, down] = ffn;
    let d_model = gate.cols;
    let n = inputs.len() / d_model.max(1);
    // Step s takes tokens s mod stride, s mod stride + stride, …: slices that each span the
    // corpus, in turn (the last n mod batch tokens are never taken: under 3% of SmolLM2's).
    // A corpus under two batches is taken whole at every step instead: with a stride of 1,
    // the slices would all be its first `batch` tokens.
    let batch = if n < 2 * settings.batch { n } else { settings.batch };
    if batch == 0 || targets.len() != inputs.len() {
        return Vec::new();
    }
    let stride = n / batch;
    let mut adams: Vec<[Adam; 2]> = [&*gate, &*up, &*down].iter().map(|p| [Adam::new(p.scales.len()), Adam::new(p.mins.len())]).collect();
    let rates: Vec<f32> = [&*gate, &*up, &*down].iter().map(|p| settings.learning_rate * p.mean_abs_scale()).collect();
    let mut losses = Vec::with_capacity(settings.steps);
    for step in 0..settings.steps {
        let picked: Vec<usize> = (0..batch).map(|i| i * stride + step % stride).collect();
        let (x, target) = (gather(inputs, d_model, &picked), gather(targets, d_model, &picked));
        let (loss, grads) = loss_and_gradients([&*gate, &*up, &*down], &x, &target, batch);
        losses.push(loss);
        for (((params, grad), [adam_d, adam_m]), &rate) in [&mut *gate, &mut *up, &mut *down].into_iter().zip(&grads).zip(&mut adams).zip(&rates) {
            if !params.tunable {
                continue;
            }
            let (dd, dm) = params.block_gradients(grad);
            adam_d.update(&mut params.scales, &dd, step as i32 + 1, rate);
            adam_m.update(&mut params.mins, &dm, step as i32 + 1, rate);
        }
    }
    losses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::Rng;
    use crate::quant::StorageType;

    /// A random min/scale matrix of `ty`, [rows, cols].
    fn random_matrix(name: &str, ty: StorageType, rows: usize, cols: usize, rng: &mut Rng) -> WeightMatrix {
        let values: Vec<f32> = (0..rows * cols).map(|_| rng.f32() * 0.2).collect();
        let mut bytes = Vec::new();
        for row in values.chunks_exact(cols) {
            crate::quant::quantize::quantize_row(ty, row, &mut bytes);
        }
        WeightMatrix::new(name, ty, rows, cols, SharedBytes::from_vec(bytes)).expect("whole blocks")
    }

    #[test]
    fn split_and_encode_round_trip_the_bytes() {
        let mut rng = Rng(7);
        for ty in [StorageType::Q2, StorageType::Q3, StorageType::Q4_1] {
            let m = random_matrix("w", ty, 3, 64, &mut rng);
            let params = BlockParams::of(&m, true).expect("a min format");
            let mut expected = vec![0f32; 3 * 64];
            for (r, row) in expected.chunks_exact_mut(64).enumerate() {
                m.dequantize_row(r, row);
            }
            assert_eq!(params.weights(), expected, "{ty:?}");
            assert_eq!(params.encode(&m).expect("same shape").stored_bytes(), m.stored_bytes(), "{ty:?}");
        }
        assert!(BlockParams::of(&random_matrix("w", StorageType::Q8_0, 1, 32, &mut rng), true).is_none());
    }

    /// A small feed-forward (D = 64, F = 96) with 2-bit gate/up/down and a target made by a
    /// slightly different one.
    fn problem(rng: &mut Rng) -> ([BlockParams; 3], Vec<f32>, Vec<f32>) {
        let (d, f, n) = (64, 96, 256);
        let gate = random_matrix("gate", StorageType::Q2, f, d, rng);
        let up = random_matrix("up", StorageType::Q2, f, d, rng);
        let down = random_matrix("down", StorageType::Q2, d, f, rng);
        let ffn = [&gate, &up, &down].map(|m| BlockParams::of(m, true).expect("q2"));
        let inputs: Vec<f32> = (0..n * d).map(|_| rng.f32() * 4.0).collect();
        let mut truth = [&gate, &up, &down].map(|m| BlockParams::of(m, true).expect("q2"));
        for p in &mut truth {
            for s in &mut p.scales {
                *s *= 1.0 + 0.3 * rng.f32();
            }
        }
        let (x, t) = (&inputs, n);
        let g = product(&truth[0].weights(), f, d, x, t);
        let u = product(&truth[1].weights(), f, d, x, t);
        let a: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect();
        let targets = product(&truth[2].weights(), d, f, &a, t);
        (ffn, inputs, targets)
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng(11);
        let (mut ffn, inputs, targets) = problem(&mut rng);
        let t = inputs.len() / 64;
        let (_, grads) = loss_and_gradients([&ffn[0], &ffn[1], &ffn[2]], &inputs, &targets, t);
        for k in 0..3 {
            let (dd, dm) = ffn[k].block_gradients(&grads[k]);
            for (block, is_scale) in [(0, true), (5, false), (17, true)] {
                let analytic = if is_scale { dd[block] } else { dm[block] } as f64;
                let h = 1e-3f32;
                let mut at = |delta: f32| {
                    let param = if is_scale { &mut ffn[k].scales[block] } else { &mut ffn[k].mins[block] };
                    let saved = *param;
                    *param += delta;
                    let loss = loss_and_gradients([&ffn[0], &ffn[1], &ffn[2]], &inputs, &targets, t).0;
                    let param = if is_scale { &mut ffn[k].scales[block] } else { &mut ffn[k].mins[block] };
                    *param = saved;
                    loss
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
                assert!((analytic - numeric).abs() <= 0.02 * numeric.abs().max(1e-6), "matrix {k}, block {block}: {analytic} vs {numeric}");
            }
        }
    }

    #[test]
    fn tuning_lowers_the_loss_and_leaves_frozen_matrices_alone() {
        let mut rng = Rng(3);
        let (mut ffn, inputs, targets) = problem(&mut rng);
        ffn[1].tunable = false;
        let frozen = ffn[1].weights();
        let [gate, up, down] = &mut ffn;
        let losses = tune([gate, up, down], &inputs, &targets, Settings { steps: 60, batch: 128, learning_rate: 0.01 });
        let t = inputs.len() / 64;
        let after = loss_and_gradients([&ffn[0], &ffn[1], &ffn[2]], &inputs, &targets, t).0;
        assert!(after < 0.5 * losses[0], "loss {} → {after}", losses[0]);
        assert_eq!(ffn[1].weights(), frozen);
    }
}
