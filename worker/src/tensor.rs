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

    /// Row `r` as f32 (embedding lookup). `out.len() == cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        quant::dequantize_row(self.ty, self.row(r), out);
    }

    /// y = W·x. x: [cols] → y: [rows].
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        debug_assert_eq!((x.len(), y.len()), (self.cols, self.rows));
        let input = PreparedInput::new(x);
        for_each_chunk(y, ROWS_PER_TASK, |first_row, chunk| {
            for (i, out) in chunk.iter_mut().enumerate() {
                *out = quant::dot_row(self.ty, self.row(first_row + i), &input);
            }
        });
    }

    /// Y = X·Wᵀ for a batch of tokens. xs: [t, cols] → ys: [t, rows].
    ///
    /// Each weight row is dequantized once into a buffer and reused by all `t` tokens, so the
    /// weights stream through memory once per batch instead of once per token.
    pub fn matmul(&self, xs: &[f32], ys: &mut [f32], t: usize) {
        debug_assert_eq!((xs.len(), ys.len()), (t * self.cols, t * self.rows));
        if t == 1 {
            return self.matvec(xs, ys);
        }
        // Work on the transposed output [rows, t] so each task owns whole weight rows.
        let mut yt = vec![0f32; self.rows * t];
        for_each_chunk(&mut yt, ROWS_PER_TASK * t, |first, chunk| {
            let mut w = vec![0f32; self.cols];
            for (i, outs) in chunk.chunks_mut(t).enumerate() {
                self.dequantize_row(first / t + i, &mut w);
                for (tok, out) in outs.iter_mut().enumerate() {
                    *out = dot_f32(&w, &xs[tok * self.cols..][..self.cols]);
                }
            }
        });
        for r in 0..self.rows {
            for tok in 0..t {
                ys[tok * self.rows + r] = yt[r * t + tok];
            }
        }
    }
}

/// f32 dot product (eight independent accumulators; see [`quant::lanes_dot`]).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    quant::lanes_dot(b, |i| a[i])
}

/// Runs `f(first_index, chunk)` over `chunk`-sized pieces of `out`: in parallel natively.
fn for_each_chunk(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Send + Sync) {
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
            w.matmul(&xs, &mut batched, t);
            for tok in 0..t {
                let mut single = vec![0.0; rows];
                w.matvec(&xs[tok * cols..][..cols], &mut single);
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
