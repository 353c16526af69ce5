//! The GPU kernels in the browser: the same cases as `gpu_kernels.rs` (in `gpu_cases/`), run by
//! `wasm-bindgen-test` in headless Chromium inside a dedicated worker — where the engine runs —
//! on the WebGPU adapter `--enable-unsafe-webgpu` gives (SwiftShader). Every case waits on the
//! browser's promises (adapter, device, mapAsync), so this also checks the engine never blocks.
//!
//! No adapter is a failure here, never a skip: tests/webdriver.json asks for one.
#![cfg(all(target_arch = "wasm32", feature = "gpu"))]

#[macro_use]
mod gpu_cases;

use std::sync::Arc;

use wasm_bindgen_test::*;
use worker::gpu::GpuContext;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

async fn gpu() -> Arc<GpuContext> {
    GpuContext::acquire().await.unwrap_or_else(|e| panic!("Chromium with --enable-unsafe-webgpu must offer an adapter: {e}"))
}

/// One `#[wasm_bindgen_test]` per case, each on a fresh device.
macro_rules! browser_cases {
    ($($case:ident),* $(,)?) => {$(
        #[wasm_bindgen_test]
        async fn $case() {
            gpu_cases::$case(gpu().await).await;
        }
    )*};
}

// Every case: every kernel family, every storage type, and the error paths. (They are small:
// a software adapter runs them in seconds.)
every_case!(browser_cases);
