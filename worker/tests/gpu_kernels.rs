//! Every GPU kernel against the CPU op it replaces (the cases are in `gpu_cases/`), natively on
//! whatever Vulkan adapter wgpu finds (lavapipe on a CPU-only machine).
//!
//! Without an adapter each test prints `SKIPPED: no Vulkan adapter` and returns — and fails
//! instead when `ACCEL_REQUIRE_GPU=1` (set by `make test-gpu`), so a CI run without a driver
//! cannot pass silently.
#![cfg(all(feature = "gpu", not(target_arch = "wasm32")))]

mod common;
#[macro_use]
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

every_case!(native_cases);
