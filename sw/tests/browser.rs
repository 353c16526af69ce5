//! In-browser tests of the IndexedDB store and the caching strategy on top of it, run by
//! `wasm-bindgen-test` in headless Chromium inside a dedicated worker (see Makefile `test-wasm`).
#![cfg(target_arch = "wasm32")]

use sw::idb::{IdbStore, FILE_STORE};
use sw::testing::ScriptedNetwork;
use sw::{serve, BlobStore, Route, Source, StoredBlob};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

#[wasm_bindgen_test]
async fn indexeddb_store_round_trips_bytes_and_content_type() {
    let store = IdbStore::new(FILE_STORE);
    let blob = StoredBlob { bytes: (0..=255u8).cycle().take(70_000).collect(), content_type: "application/wasm".into() };
    store.put("/models/t/roundtrip.bin", &blob).await.expect("put");
    assert_eq!(store.get("/models/t/roundtrip.bin").await.expect("get"), Some(blob));
    assert_eq!(store.get("/models/t/never-stored.bin").await.expect("get"), None);
}

#[wasm_bindgen_test]
async fn model_file_is_served_from_indexeddb_once_stored_even_offline() {
    let url = "http://test/models/t/cached.bin";
    let route = Route::ModelFile { key: "/models/t/cached.bin".into() };
    let (store, net) = (IdbStore::new(FILE_STORE), ScriptedNetwork::with(url, 200, b"shard bytes"));
    let first = serve(&route, url, &store, &net).await.expect("first fetch");
    assert_eq!(first.source, Source::Network);
    assert_eq!(first.store_error, None);
    net.online.set(false);
    let again = serve(&route, url, &store, &net).await.expect("served from IndexedDB");
    assert_eq!((again.source, again.blob.bytes.as_slice()), (Source::Store, &b"shard bytes"[..]));
    assert_eq!(net.requests.get(), 1);
}
