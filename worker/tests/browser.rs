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
