//! # The `gpu` backend: the engine's kernels on wgpu
//!
//! Natively wgpu runs on Vulkan (lavapipe on a CPU-only machine); in the browser worker the same
//! code runs on `navigator.gpu` (wasm32, the `webgpu` feature). Nothing here uses a Vulkan-only
//! API, and nothing blocks: device acquisition, every readback and every wait are `async`
//! (the browser resolves them from its event loop; natively [`crate::futures::block_on`] drives
//! them, wgpu firing its callbacks from `Device::poll`). Device acquisition ([`device`]) is the
//! one place that knows about backends.
//!
//! ```text
//! device.rs     GpuContext: adapter + device with the adapter's real limits, optional
//!               features (shader-f16, subgroups), validation / device-lost capture
//! pipelines.rs  the WGSL registry (shaders/*.wgsl, include_str!), Dims/Step uniforms, and the
//!               pipeline cache keyed by variant (`matmul_q4_1_t4_wg64`), the key being the label
//! buffers.rs    weight upload (GPU block layouts), storage / uniform helpers, readback
//! kernels.rs    one constructor per op: checks shapes, fetches the pipeline, builds the bind
//!               group; returns a Dispatch (pipeline, bind group, grid) to record later
//! llama.rs      GpuLlama: a Llama's weights, KV cache and activations on the GPU, a decode step
//!               as one command buffer of pre-built dispatches; argmax / top-k on the GPU
//! ```
//!
//! Every kernel is tested against the CPU ops on awkward sizes (`worker/tests/gpu_kernels.rs`).

pub mod buffers;
pub mod device;
pub mod kernels;
pub mod llama;
pub mod pipelines;

pub use device::GpuContext;
/// The wgpu this backend was built with (tests and callers name its types through this).
pub use wgpu;
pub use llama::GpuLlama;
