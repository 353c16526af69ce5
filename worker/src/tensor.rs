//! Weight matrices in their stored form, and the matrix products the models are made of.
//!
//! A [`WeightMatrix`] is `rows × cols` values in one [`StorageType`], row-major (GGUF's
//! `[cols, rows]` with `dims[0] = cols` contiguous), borrowing its bytes from a shared buffer
//! (the memory-mapped file natively, the downloaded shard in the browser). Products never
//! dequantize a whole matrix: each row is decoded in registers (`matvec`, decode) or into one
//! row-sized buffer reused across a batch of tokens (`matmul`, prefill).
//!
//! Natively the rows are split across the rayon pool (both cores); on wasm32 the loop runs on
//! the worker's one thread.

use std::ops::Deref;
use std::sync::Arc;

use crate::quant::{self, PreparedInput, StorageType};
use crate::WorkerError;

/// A cheaply clonable view into a shared, immutable byte buffer.
#[derive(Clone)]
pub struct SharedBytes {
    buffer: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    len: usize,
}

impl SharedBytes {
    pub fn new(buffer: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        let len = (*buffer).as_ref().len();
        SharedBytes { buffer, start: 0, len }
    }

    pub fn from_vec(bytes: Vec<u8>) -> Self {
        SharedBytes::new(Arc::new(bytes))
    }

    /// The sub-range `[start, start + len)` of this view, or None when it does not fit.
    pub fn slice(&self, start: usize, len: usize) -> Option<SharedBytes> {
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| SharedBytes { buffer: self.buffer.clone(), start: self.start + start, len })
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &(*self.buffer).as_ref()[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBytes({} bytes at {})", self.len, self.start)
    }
}

/// `rows × cols` weights in one storage type; row r is `bytes[r·row_bytes ..][.. row_bytes]`.
#[derive(Debug, Clone)]
pub struct WeightMatrix {
    pub name: String,
    pub ty: StorageType,
    pub rows: usize,
    pub cols: usize,
    row_bytes: usize,
    bytes: SharedBytes,
}

/// Rows per parallel task: big enough to amortise scheduling, small enough to balance 2 cores.
const ROWS_PER_TASK: usize = 64;

impl WeightMatrix {
    /// Wraps stored bytes, checking they hold exactly `rows × cols` values of `ty`.
    pub fn new(name: &str, ty: StorageType, rows: usize, cols: usize, bytes: SharedBytes) -> Result<Self, WorkerError> {
        let row_bytes = ty.row_bytes(cols).ok_or_else(|| WorkerError::ShapeMismatch {
            tensor: name.to_owned(),
            expected: vec![rows, cols.next_multiple_of(ty.geometry().0)],
            found: vec![rows, cols],
        })?;
        if row_bytes.checked_mul(rows) != Some(bytes.len()) {
            return Err(WorkerError::ModelFormat {
                source_name: name.to_owned(),
                format: "weight tensor",
                reason: format!("{} bytes cannot hold {rows}×{cols} {} values ({} expected)", bytes.len(), ty.name(), row_bytes.saturating_mul(rows)),
            });
        }
        Ok(WeightMatrix { name: name.to_owned(), ty, rows, cols, row_bytes, bytes })
    }

    /// A stored vector (norm weights, biases) as f32, size-checked like a one-row matrix.
    pub fn vector(name: &str, ty: StorageType, len: usize, bytes: SharedBytes) -> Result<Vec<f32>, WorkerError> {
        let m = WeightMatrix::new(name, ty, 1, len, bytes)?;
        let mut out = vec![0.0; len];
        m.dequantize_row(0, &mut out);
        Ok(out)
    }

    /// f32 weights from values (tests, small tensors).
    pub fn from_f32(name: &str, rows: usize, cols: usize, values: &[f32]) -> Result<Self, WorkerError> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        WeightMatrix::new(name, StorageType::F32, rows, cols, SharedBytes::from_vec(bytes))
    }

    pub fn row(&self, r: usize) -> &[u8] {
        &self.bytes[r * self.row_bytes..][..self.row_bytes]
    }

    /// Bytes this matrix occupies in its stored form.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The stored bytes, row-major (what a packer copies).
    pub fn stored_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Row `r` as f32 (embedding lookup). `out.len() == cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        quant::dequantize_row(self.ty, self.row(r), out);
    }

    /// y = W·x. x: [cols] → y: [rows].
    pub fn matvec(&self, x: &[f32], y: &mut [f32], activations: Activations) {
        self.matmul(x, y, 1, activations)
    }

    /// Y = X·Wᵀ for a batch of tokens. xs: [t, cols] → ys: [t, rows].
    ///
    /// Rows are split across the pool; within a task each weight row is decoded once for the
    /// whole batch (into registers on the integer paths, into a row buffer on the f32 path), so the
    /// weights stream through memory once per batch instead of once per token.
    pub fn matmul(&self, xs: &[f32], ys: &mut [f32], t: usize, activations: Activations) {
        debug_assert_eq!((xs.len(), ys.len()), (t * self.cols, t * self.rows));
        if calibration::active() {
            if let Some(replacement) = calibration::observe(self, xs) {
                return replacement.product(xs, ys, t, activations);
            }
        }
        self.product(xs, ys, t, activations)
    }

    /// [`WeightMatrix::matmul`] without the calibration hook.
    pub(crate) fn product(&self, xs: &[f32], ys: &mut [f32], t: usize, activations: Activations) {
        let prepared = Prepared::new(self.ty, xs, t, activations);
        if t == 1 {
            return for_each_chunk(ys, ROWS_PER_TASK, |first, chunk| self.product_rows(first, chunk, &prepared));
        }
        // Tasks own whole weight rows, so they write the transposed output [rows, t].
        let mut transposed = vec![0f32; self.rows * t];
        for_each_chunk(&mut transposed, ROWS_PER_TASK * t, |first, chunk| self.product_rows(first / t, chunk, &prepared));
        for r in 0..self.rows {
            for tok in 0..t {
                ys[tok * self.rows + r] = transposed[r * t + tok];
            }
        }
    }

    /// Rows `first..` of this matrix times every prepared token: out: [n_rows, t].
    fn product_rows(&self, first: usize, out: &mut [f32], prepared: &Prepared) {
        let t = prepared.tokens();
        let n = out.len() / t;
        let rows = &self.bytes[first * self.row_bytes..][..n * self.row_bytes];
        match prepared {
            Prepared::Integer(batch) => quant::integer::rows_dot_batch(self.ty, rows, self.row_bytes, batch, out),
            Prepared::Single(input) => with_wide_simd(|| {
                for (row, o) in rows.chunks_exact(self.row_bytes).zip(out) {
                    *o = quant::dot_row(self.ty, row, input);
                }
            }),
            Prepared::Batch { xs, .. } => with_wide_simd(|| {
                // Cache blocking: ROW_TILE rows are dequantized once, then met by the tokens a
                // tile at a time, so rows and tokens both stay in L2. (One pass over every token
                // per row streams all of `xs` from memory once per row: a calibration batch of
                // 30k tokens ran memory-bound at a fraction of the arithmetic speed.)
                const ROW_TILE: usize = 16;
                const TOKEN_TILE: usize = 64;
                let (cols, avx2) = (self.cols, has_avx2());
                let mut w = vec![0f32; ROW_TILE * cols];
                for (row_tile, out_tile) in rows.chunks(ROW_TILE * self.row_bytes).zip(out.chunks_mut(ROW_TILE * t)) {
                    for (row, w) in row_tile.chunks_exact(self.row_bytes).zip(w.chunks_exact_mut(cols)) {
                        quant::dequantize_row(self.ty, row, w);
                    }
                    for first in (0..t).step_by(TOKEN_TILE) {
                        let tokens = TOKEN_TILE.min(t - first);
                        let x = |k: usize| &xs[(first + k) * cols..][..cols];
                        let done = tokens - tokens % 4;
                        // Rows in pairs (the tile's last row may be alone).
                        for (w_pair, outs_pair) in w.chunks(2 * cols).zip(out_tile.chunks_mut(2 * t)) {
                            #[cfg(target_arch = "x86_64")]
                            if avx2 && outs_pair.len() == 2 * t {
                                // Two rows × four tokens per pass: each token load feeds both
                                // rows; per (row, token) the same sums as dot_f32.
                                let (w0, w1) = w_pair.split_at(cols);
                                let (o0, o1) = outs_pair.split_at_mut(t);
                                for k in (0..done).step_by(4) {
                                    // SAFETY: AVX2 was seen on this CPU (`has_avx2`); both rows
                                    // hold `cols` values and so does every x(k).
                                    let [r0, r1] = unsafe { quant::simd_x86::dot2x4_f32([w0, w1], [x(k), x(k + 1), x(k + 2), x(k + 3)]) };
                                    o0[first + k..][..4].copy_from_slice(&r0);
                                    o1[first + k..][..4].copy_from_slice(&r1);
                                }
                                for k in done..tokens {
                                    o0[first + k] = dot_f32(w0, x(k));
                                    o1[first + k] = dot_f32(w1, x(k));
                                }
                                continue;
                            }
                            for (w, outs) in w_pair.chunks_exact(cols).zip(outs_pair.chunks_exact_mut(t)) {
                                // Four tokens per pass over the row: one load of w feeds four
                                // independent accumulator chains (latency hidden, half the
                                // loads), same sums as dot_f32.
                                let mut groups = outs[first..first + tokens].chunks_exact_mut(4);
                                for (g, o) in (&mut groups).enumerate() {
                                    o.copy_from_slice(&dot4_f32_dispatch(avx2, w, [x(4 * g), x(4 * g + 1), x(4 * g + 2), x(4 * g + 3)]));
                                }
                                for (k, o) in groups.into_remainder().iter_mut().enumerate() {
                                    *o = dot_f32(w, x(done + k));
                                }
                            }
                        }
                    }
                }
            }),
        }
    }
}

/// Activations made ready for products with one kind of weights, once per input.
enum Prepared<'a> {
    /// Quantized to i16 (block-format weights on the int16 path).
    Integer(quant::integer::QuantizedBatch),
    /// One f32 token with its block sums.
    Single(PreparedInput<'a>),
    /// Several f32 tokens [t, cols].
    Batch { xs: &'a [f32], t: usize },
}

impl<'a> Prepared<'a> {
    fn new(ty: StorageType, xs: &'a [f32], t: usize, activations: Activations) -> Self {
        if activations == Activations::Int16 && quant::integer::supports(ty) {
            Prepared::Integer(quant::integer::QuantizedBatch::new(xs, t))
        } else if t == 1 {
            Prepared::Single(PreparedInput::new(xs))
        } else {
            Prepared::Batch { xs, t }
        }
    }

    fn tokens(&self) -> usize {
        match self {
            Prepared::Integer(batch) => batch.tokens,
            Prepared::Single(_) => 1,
            Prepared::Batch { t, .. } => *t,
        }
    }
}

/// Several matrices reading the same input (q, k and v; gate and up): the input is prepared
/// once, and for one token all their rows share one parallel loop — one fork-join instead of
/// one per matrix, which is a visible share of a decode step on small models.
pub fn matmul_fused<const N: usize>(xs: &[f32], t: usize, activations: Activations, products: [(&WeightMatrix, &mut [f32]); N]) {
    let first_ty = products[0].0.ty;
    // One prepared input must suit every matrix: all take integer activations or none does.
    let same_kind = products.iter().all(|(w, _)| quant::integer::supports(w.ty) == quant::integer::supports(first_ty));
    if t != 1 || !same_kind || calibration::active() {
        for (w, out) in products {
            w.matmul(xs, out, t, activations);
        }
        return;
    }
    let prepared = Prepared::new(first_ty, xs, 1, activations);
    let mut tasks: Vec<(&WeightMatrix, usize, &mut [f32])> = Vec::new();
    for (w, out) in products {
        debug_assert_eq!((xs.len(), out.len()), (w.cols, w.rows));
        tasks.extend(out.chunks_mut(ROWS_PER_TASK).enumerate().map(|(i, chunk)| (w, i * ROWS_PER_TASK, chunk)));
    }
    parallel_map(tasks, |(w, first, chunk)| w.product_rows(first, chunk, &prepared));
}

/// `f` over every item, in parallel natively (on the rayon pool), in order on wasm32; results
/// in item order.
pub fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Send + Sync) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        items.into_par_iter().map(f).collect()
    }
    #[cfg(target_arch = "wasm32")]
    items.into_iter().map(f).collect()
}

/// What the packer learns from running the model on calibration text (`accel pack`): while
/// [`calibration::record`] runs a model, every matrix product notes the mean square of each
/// input column, E[a_j²] — the weight of column j's rounding error in the product's output —
/// and, when the packer supplies a [`calibration::Substitute`], hands the matrix and its inputs
/// to it and continues with the replacement it returns.
///
/// Substitution is what makes GPTQ sequential: the replacement (the matrix as it will be
/// packed) computes the product's output, so every later matrix is quantized for the inputs it
/// will really see — those of the already quantized layers before it, errors included. This
/// needs each matrix to see all calibration tokens in one product, which holds because the
/// calibration pass is one forward call (a Llama's calibration sequences as one batch,
/// `Llama::forward_batch`, or one padded batch for BERT); a matrix is substituted on its first product and reused after that.
pub mod calibration {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::WeightMatrix;

    /// The packer's quantizer: a matrix and its calibration inputs ([tokens, cols]) → the
    /// matrix to continue with, or None to keep it.
    pub type Substitute = dyn Fn(&WeightMatrix, &[f32]) -> Option<WeightMatrix> + Send + Sync;

    /// What one recording found.
    #[derive(Default)]
    pub struct Recorded {
        /// Matrix name → mean square of each input column.
        pub mean_squares: HashMap<String, Vec<f32>>,
        /// Matrix name → the replacement the substitute returned.
        pub substituted: HashMap<String, WeightMatrix>,
    }

    #[derive(Default)]
    struct State {
        /// Per matrix name: Σ a_j² per column and the number of rows seen.
        sums: HashMap<String, (Vec<f64>, u64)>,
        substitute: Option<Arc<Substitute>>,
        substituted: HashMap<String, WeightMatrix>,
    }

    static ACTIVE: AtomicBool = AtomicBool::new(false);
    static STATE: Mutex<Option<State>> = Mutex::new(None);

    #[inline]
    pub(crate) fn active() -> bool {
        ACTIVE.load(Ordering::Relaxed)
    }

    fn state() -> std::sync::MutexGuard<'static, Option<State>> {
        STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes the inputs `xs` ([t, cols]) of a product with `w`; returns the matrix to compute
    /// it with instead of `w`, if the substitute replaced it (now or on an earlier product).
    pub(crate) fn observe(w: &WeightMatrix, xs: &[f32]) -> Option<WeightMatrix> {
        let substitute = {
            let mut guard = state();
            let state = guard.get_or_insert_with(State::default);
            let (sums, rows) = state.sums.entry(w.name.clone()).or_insert_with(|| (vec![0.0; w.cols], 0));
            for row in xs.chunks_exact(w.cols) {
                for (s, &a) in sums.iter_mut().zip(row) {
                    *s += a as f64 * a as f64;
                }
                *rows += 1;
            }
            if let Some(done) = state.substituted.get(&w.name) {
                return Some(done.clone());
            }
            state.substitute.clone()?
        };
        // Quantizing takes seconds and runs its own parallel loops: not under the lock.
        let replacement = substitute(w, xs)?;
        state().get_or_insert_with(State::default).substituted.insert(w.name.clone(), replacement.clone());
        Some(replacement)
    }

    /// The replacement the substitute returned for matrix `name` in the running recording.
    pub fn substituted(name: &str) -> Option<WeightMatrix> {
        state().as_ref()?.substituted.get(name).cloned()
    }

    /// Makes `m` the replacement for the matrix of its name in the running recording: later
    /// products with that matrix use it, and the recording returns it.
    pub fn replace_substituted(m: WeightMatrix) {
        state().get_or_insert_with(State::default).substituted.insert(m.name.clone(), m);
    }

    /// Runs `f` (a forward pass over calibration text), with `substitute` deciding what each
    /// matrix becomes; returns, per matrix name, the mean square of each input column and the
    /// replacements. One recording at a time (the statistics are global).
    pub fn record<R>(substitute: Option<Arc<Substitute>>, f: impl FnOnce() -> R) -> (R, Recorded) {
        *state() = Some(State { substitute, ..State::default() });
        ACTIVE.store(true, Ordering::Relaxed);
        let result = f();
        ACTIVE.store(false, Ordering::Relaxed);
        let state = state().take().unwrap_or_default();
        let mean_squares = state.sums.into_iter().map(|(name, (sums, rows))| (name, sums.iter().map(|&s| (s / rows.max(1) as f64) as f32).collect())).collect();
        (result, Recorded { mean_squares, substituted: state.substituted })
    }
}

/// How activations enter products with quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// f32 activations, weights dequantized in registers: the float reference's arithmetic.
    F32,
    /// Activations quantized to 16 bits per block of 32 for exact integer products with
    /// Q4_0/Q4_1/Q8_0/Q3/Q2 weights (other types use f32): several times faster, logits within ~1e-3
    /// of the f32 path (see `quant::integer`). The default.
    #[default]
    Int16,
}

impl Activations {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" | "exact" => Some(Activations::F32),
            "int16" | "fast" => Some(Activations::Int16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activations::F32 => "f32",
            Activations::Int16 => "int16",
        }
    }
}

/// Runs `f` compiled for the widest SIMD this CPU has (AVX2+FMA natively, detected at run
/// time); the portable kernels inlined into it vectorise 8 wide with unchanged results.
#[inline(always)]
pub(crate) fn with_wide_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if quant::simd_x86::available() {
        // SAFETY: the CPU has the features the wrapper enables (checked just above).
        return unsafe { quant::simd_x86::with_avx2(f) };
    }
    f()
}

/// f32 dot product (eight independent accumulators; see [`quant::lanes_dot`]).
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // `quant::lanes_dot`'s arithmetic written over fixed chunks of eight, which LLVM keeps in one
    // vector register (through `lanes_dot`'s index closure it kept bounds checks and scalar
    // code). Same products and sums in the same order, so bit-identical results.
    let a = &a[..b.len()];
    let whole = b.len() / 8 * 8;
    let mut acc = [0f32; 8];
    for (x, y) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
        for lane in 0..8 {
            acc[lane] += x[lane] * y[lane];
        }
    }
    let mut tail = 0.0;
    for (x, y) in a[whole..].iter().zip(&b[whole..]) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// [`dot4_f32`] through the AVX2 kernel when `avx2` (from `quant::simd_x86::available()`, asked
/// once by the caller), else the portable loop; the results are bit-identical either way.
#[inline(always)]
pub(crate) fn dot4_f32_dispatch(avx2: bool, w: &[f32], xs: [&[f32]; 4]) -> [f32; 4] {
    let xs = xs.map(|x| &x[..w.len()]);
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller saw AVX2 on this CPU; every x holds w.len() values (sliced above).
        return unsafe { quant::simd_x86::dot4_f32(w, xs) };
    }
    let _ = avx2;
    dot4_f32(w, xs)
}

/// Whether [`dot4_f32_dispatch`] may take its AVX2 kernel on this CPU.
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return quant::simd_x86::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `[dot_f32(w, x) for x in xs]`, four at once, each summed in exactly `dot_f32`'s order (eight
/// lanes, then the lanes, then the tail), so the results are bit-identical to it.
#[inline(always)]
pub fn dot4_f32(w: &[f32], xs: [&[f32]; 4]) -> [f32; 4] {
    let n = w.len();
    let xs = xs.map(|x| &x[..n]);
    let mut acc = [[0f32; 8]; 4];
    let chunks = n / 8;
    for c in 0..chunks {
        let wc = &w[c * 8..][..8];
        for (a, x) in acc.iter_mut().zip(&xs) {
            let xc = &x[c * 8..][..8];
            for lane in 0..8 {
                a[lane] += xc[lane] * wc[lane];
            }
        }
    }
    let mut out = [0f32; 4];
    for (k, (a, x)) in acc.iter().zip(&xs).enumerate() {
        let mut tail = 0.0;
        for i in chunks * 8..n {
            tail += x[i] * w[i];
        }
        out[k] = a.iter().sum::<f32>() + tail;
    }
    out
}

/// Runs `f` on a compute-pool thread natively (so the parallel loops inside it fork from a pool
/// worker instead of each waking the pool from outside: one hand-off per call, not one per
/// matrix); on wasm32 just runs it.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(not(target_arch = "wasm32"))]
    if rayon::current_thread_index().is_none() {
        return rayon::scope(|_| f());
    }
    f()
}

/// Runs `f(first_index, chunk)` over `chunk`-sized pieces of `out`: in parallel natively.
pub(crate) fn for_each_chunk(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Send + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i * chunk, c));
    }
    #[cfg(target_arch = "wasm32")]
    for (i, c) in out.chunks_mut(chunk).enumerate() {
        f(i * chunk, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::{random_row, Rng};

    #[test]
    fn dot4_is_bit_identical_to_four_dots() {
        let mut rng = Rng(11);
        for n in [1, 7, 8, 9, 31, 384, 1000] {
            let v = |rng: &mut Rng| (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect::<Vec<f32>>();
            let (w, xs) = (v(&mut rng), [v(&mut rng), v(&mut rng), v(&mut rng), v(&mut rng)]);
            let four = dot4_f32(&w, [&xs[0], &xs[1], &xs[2], &xs[3]]);
            // The AVX2 kernel too, where this CPU has it.
            let kernel = dot4_f32_dispatch(has_avx2(), &w, [&xs[0], &xs[1], &xs[2], &xs[3]]);
            for k in 0..4 {
                assert_eq!(four[k].to_bits(), dot_f32(&w, &xs[k]).to_bits(), "n {n}, token {k}");
                assert_eq!(kernel[k].to_bits(), four[k].to_bits(), "n {n}, token {k}: AVX2 kernel");
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                let w2: Vec<f32> = w.iter().map(|v| v * 0.5 - 1.0).collect();
                // SAFETY: AVX2 checked; both rows and every x hold n values.
                let pair = unsafe { quant::simd_x86::dot2x4_f32([&w, &w2], [&xs[0], &xs[1], &xs[2], &xs[3]]) };
                for k in 0..4 {
                    assert_eq!(pair[0][k].to_bits(), four[k].to_bits(), "n {n}, token {k}: 2×4 kernel, row 0");
                    assert_eq!(pair[1][k].to_bits(), dot_f32(&w2, &xs[k]).to_bits(), "n {n}, token {k}: 2×4 kernel, row 1");
                }
            }
        }
    }

    #[test]
    fn dot_f32_sums_in_lanes_dots_order() {
        // dot_f32 is lanes_dot written over fixed chunks (so it vectorises); the results must
        // not move by a bit, or packs and logits would change with it.
        let mut rng = Rng(5);
        for n in [1, 7, 8, 9, 31, 64, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect();
            assert_eq!(dot_f32(&a, &b).to_bits(), quant::lanes_dot(&b, |i| a[i]).to_bits(), "n {n}");
        }
    }

    fn random_matrix(ty: StorageType, rows: usize, cols: usize, rng: &mut Rng) -> WeightMatrix {
        let bytes: Vec<u8> = (0..rows).flat_map(|_| random_row(ty, cols, rng)).collect();
        WeightMatrix::new("w", ty, rows, cols, SharedBytes::from_vec(bytes)).unwrap()
    }

    #[test]
    fn matmul_equals_matvec_per_token() {
        let mut rng = Rng(42);
        for ty in [StorageType::F32, StorageType::Q8_0, StorageType::Q4_1] {
            let (rows, cols, t) = (131, 96, 5);
            let w = random_matrix(ty, rows, cols, &mut rng);
            let xs: Vec<f32> = (0..t * cols).map(|_| rng.f32()).collect();
            let mut batched = vec![0.0; t * rows];
            w.matmul(&xs, &mut batched, t, Activations::F32);
            for tok in 0..t {
                let mut single = vec![0.0; rows];
                w.matvec(&xs[tok * cols..][..cols], &mut single, Activations::F32);
                for r in 0..rows {
                    let (a, b) = (batched[tok * rows + r], single[r]);
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{} token {tok} row {r}: {a} vs {b}", ty.name());
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_named_errors() {
        let bytes = SharedBytes::from_vec(vec![0; 40]);
        let err = WeightMatrix::new("w", StorageType::Q4_1, 2, 33, bytes.clone()).unwrap_err();
        assert_eq!(err.name(), "ShapeMismatchError");
        let err = WeightMatrix::new("w", StorageType::Q4_1, 3, 32, bytes).unwrap_err();
        assert_eq!(err.name(), "ModelFormatError");
    }

    #[test]
    fn shared_bytes_slices_are_bounds_checked() {
        let bytes = SharedBytes::from_vec((0..10).collect());
        let s = bytes.slice(2, 5).unwrap();
        assert_eq!(&*s, &[2, 3, 4, 5, 6]);
        assert!(s.slice(3, 3).is_none());
        assert!(bytes.slice(usize::MAX, 2).is_none());
    }
}
