//! The GPU kernels in the browser: the same cases as `gpu_kernels.rs` (in `gpu_cases/`), run by
//! `wasm-bindgen-test` in headless Chromium inside a dedicated worker — where the engine runs —
//! on the WebGPU adapter `--enable-unsafe-webgpu` gives (SwiftShader). Every case waits on the
//! browser's promises (adapter, device, mapAsync), so this also checks the engine never blocks.
//!
//! No adapter is a failure here, never a skip: tests/webdriver.json asks for one.
#![cfg(all(target_arch = "wasm32", feature = "gpu"))]

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

// Every kernel family, every storage type, and the error paths. (The cases are small: a
// software adapter runs them in seconds.)
browser_cases!(
    embedding_gathers_every_storage_type,
    matmul_matches_the_cpu_for_every_storage_type_decode_and_prefill,
    matmul_can_write_kv_cache_rows_at_the_position,
    rmsnorm_and_the_last_token_norm,
    layernorm_matches,
    rope_both_conventions_in_place_and_in_the_cache,
    attention_over_the_cache_decode_and_prefill,
    swiglu_gelu_and_residual,
    argmax_picks_the_first_maximum,
    validation_errors_are_named_not_zeros,
    a_tensor_over_the_binding_limit_is_refused_by_name,
    a_lost_device_is_a_named_error,
);
