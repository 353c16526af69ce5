//! Model architectures. Each reads its hyper-parameters and weights through a
//! [`TensorSource`], so one implementation serves GGUF files, HF directories and packed models.

pub mod bert;
pub mod gguf_source;
pub mod hf_llama;
pub mod kv_cache;
pub mod llama;
pub mod packed_source;

use crate::tensor::WeightMatrix;
use crate::WorkerError;

/// Where a model's named tensors come from. Names are the source's own; each architecture maps
/// its canonical names (GGUF's) onto the source's.
pub trait TensorSource {
    /// A `rows × cols` matrix (GGUF dims `[cols, rows]`), in its stored type.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError>;
    /// A vector of `len` values (norm weights, biases), as f32.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, WorkerError>;
    fn contains(&self, name: &str) -> bool;
}
