//! # The `gpu` backend: the engine's kernels on wgpu
//!
//! Natively wgpu runs on Vulkan (lavapipe on a CPU-only machine); the same code is meant to run
//! on browser WebGPU in the worker behind a later `webgpu` feature, so nothing here uses a
//! Vulkan-only API: device acquisition ([`device`]) is the one place that knows about backends,
//! and readback waits through [`block_on`] on a future, never on a backend call.
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
//!               as one command buffer of pre-built dispatches, greedy argmax on the GPU
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

/// Drives a future to completion on this thread (native only: wgpu-core resolves its futures
/// from `Device::poll`, which the callers run; a browser build awaits instead).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => return value,
            Poll::Pending => std::thread::park_timeout(std::time::Duration::from_millis(1)),
        }
    }
}
