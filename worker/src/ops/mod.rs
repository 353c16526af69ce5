//! The element-wise and per-row operations of the models, on f32 activations. One file per op
//! family; the WebGPU backend's kernels share the stems (`rmsnorm.rs` ↔ `shaders/rmsnorm.wgsl`).
//! These CPU versions are also the reference every other backend is tested against.

pub mod activation;
pub mod attention;
pub mod layernorm;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
