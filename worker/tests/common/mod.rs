//! Shared by the native integration tests: where the real models and reference fixtures are.
#![allow(dead_code)]

use std::path::PathBuf;

/// A file from the model cache (`$ACCEL_CACHE`, default `~/.cache/ipfs-accelerate`), which
/// `scripts/fetch-models.sh` fills. A missing model fails the test loudly, never skips it.
pub fn model_path(relative: &str) -> PathBuf {
    let cache = std::env::var_os("ACCEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/ipfs-accelerate"));
    let path = cache.join(relative);
    assert!(path.exists(), "model file {} is missing: run scripts/fetch-models.sh (or `make setup`)", path.display());
    path
}

pub fn smollm2_gguf() -> PathBuf {
    model_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A reference fixture from tests/fixtures (copied from ../shared/fixtures).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value.as_array().expect("an array of ids").iter().map(|v| v.as_u64().expect("an id") as u32).collect()
}

/// The GPU for the `gpu` feature's tests: an adapter, or `None` after printing
/// `SKIPPED: no Vulkan adapter` — and a failure instead when `ACCEL_REQUIRE_GPU=1` (what
/// `make test-gpu` sets), so a run without a driver never passes silently.
#[cfg(feature = "gpu")]
pub mod gpu {
    pub fn gpu() -> Option<std::sync::Arc<worker::gpu::GpuContext>> {
        match worker::gpu::GpuContext::new() {
            Ok(ctx) => Some(ctx),
            Err(e) => {
                assert!(std::env::var("ACCEL_REQUIRE_GPU").as_deref() != Ok("1"), "ACCEL_REQUIRE_GPU=1 but {e}");
                eprintln!("SKIPPED: no Vulkan adapter ({e})");
                None
            }
        }
    }
}
