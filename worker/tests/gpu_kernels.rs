//! Every GPU kernel against the CPU op it replaces (the cases are in `gpu_cases/`), natively on
//! whatever Vulkan adapter wgpu finds (lavapipe on a CPU-only machine).
//!
//! Without an adapter each test prints `SKIPPED: no Vulkan adapter` and returns — and fails
//! instead when `ACCEL_REQUIRE_GPU=1` (set by `make test-gpu`), so a CI run without a driver
//! cannot pass silently.
#![cfg(all(feature = "gpu", not(target_arch = "wasm32")))]

mod common;
mod gpu_cases;

use common::gpu::gpu;
use worker::futures::block_on;

/// One `#[test]` per case, each on a fresh device.
macro_rules! native_cases {
    ($($case:ident),* $(,)?) => {$(
        #[test]
        fn $case() {
            let Some(ctx) = gpu() else { return };
            block_on(gpu_cases::$case(ctx));
        }
    )*};
}

native_cases!(
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
