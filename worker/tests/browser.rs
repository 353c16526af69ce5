//! In-browser tests of the worker entry, run by `wasm-bindgen-test` in headless Chromium inside a
//! dedicated worker — where the engine really runs — with `--enable-unsafe-webgpu`
//! (tests/webdriver.json), so a (software) WebGPU adapter must be found.
#![cfg(target_arch = "wasm32")]

use serde_json::Value;
use wasm_bindgen_test::*;
use worker::entry::handle_message;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

async fn ask(message: &str) -> Value {
    let reply = handle_message(message.to_owned()).await;
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {reply}"))
}

#[wasm_bindgen_test]
async fn capabilities_report_simd_and_the_webgpu_adapter() {
    let reply = ask(r#"{"id": 5, "type": "capabilities"}"#).await;
    assert_eq!(reply["id"], 5);
    assert_eq!(reply["type"], "result", "{reply}");
    let caps = &reply["value"];
    assert_eq!(caps["wasmSimd"], true, "the wasm must be built with +simd128");
    assert_eq!(caps["webgpu"]["available"], true, "Chromium with --enable-unsafe-webgpu has an adapter: {caps}");
    assert!(caps["webgpu"]["adapter"]["maxStorageBufferBindingSize"].as_f64().unwrap_or(0.0) > 0.0, "{caps}");
}

#[wasm_bindgen_test]
async fn a_missing_file_is_a_named_fetch_error() {
    let reply = ask(r#"{"id": 6, "type": "fetchFile", "url": "/no/such/file.bin"}"#).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["error"]["name"], "FetchError");
    assert!(reply["error"]["message"].as_str().unwrap_or("").contains("404"), "{reply}");
}

#[wasm_bindgen_test]
async fn malformed_messages_get_a_protocol_error_not_a_panic() {
    let reply = ask(r#"{"id": 7, "type": "nonsense"}"#).await;
    assert_eq!((reply["id"].as_u64(), reply["error"]["name"].as_str()), (Some(7), Some("ProtocolError")));
}

/// The simd128 integer kernels (what every browser without WebGPU runs) against the portable
/// reference, on awkward sizes: rows not a multiple of anything, token counts around the tile.
#[wasm_bindgen_test]
fn simd128_integer_kernels_match_the_portable_reference() {
    use worker::quant::integer::{rows_dot_batch, rows_dot_batch_portable, QuantizedBatch};
    use worker::quant::StorageType;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 32) as u32
    };
    for ty in [StorageType::Q4_0, StorageType::Q4_1, StorageType::Q8_0, StorageType::Q3, StorageType::Q2] {
        for (rows, cols, tokens) in [(7, 576, 1), (5, 64, 3), (3, 1536, 6)] {
            let (elems, block_bytes) = ty.geometry();
            let mut w: Vec<u8> = (0..rows * cols / elems * block_bytes).map(|_| next() as u8).collect();
            for block in w.chunks_mut(block_bytes) {
                // Sane f16 scale (and min): 0.01 and -0.02, so sums stay finite.
                block[..2].copy_from_slice(&0x211eu16.to_le_bytes());
                if matches!(ty, StorageType::Q4_1 | StorageType::Q3 | StorageType::Q2) {
                    block[2..4].copy_from_slice(&0xa51eu16.to_le_bytes());
                }
            }
            let xs: Vec<f32> = (0..tokens * cols).map(|_| next() as f32 / u32::MAX as f32 * 4.0 - 2.0).collect();
            let batch = QuantizedBatch::new(&xs, tokens);
            let row_bytes = ty.row_bytes(cols).unwrap();
            let (mut simd, mut portable) = (vec![0.0; rows * tokens], vec![0.0; rows * tokens]);
            rows_dot_batch(ty, &w, row_bytes, &batch, &mut simd);
            rows_dot_batch_portable(ty, &w, row_bytes, &batch, &mut portable);
            let (worst_at, worst) = simd.iter().zip(&portable).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).enumerate().fold((0, 0f32), |w, (i, d)| if d > w.1 { (i, d) } else { w });
            assert!(worst <= 1e-5, "{} {rows}x{cols} t={tokens}: worst relative error {worst} at {worst_at}", ty.name());
        }
    }
}
