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

#[wasm_bindgen_test]
async fn indexeddb_records_hold_bytes_and_json_tables() {
    use sw::store::{RecordStore, Table};
    let records = sw::idb::IdbRecords;
    for table in Table::ALL {
        records.clear(table).await.expect("clear");
    }
    let shard: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    records.put_bytes(Table::Shards, "abc", &shard).await.expect("put bytes");
    assert_eq!(records.get_bytes(Table::Shards, "abc").await.expect("get bytes"), Some(shard));
    assert_eq!(records.get_bytes(Table::Partials, "abc").await.expect("other table"), None);
    let meta = serde_json::json!({"sha256": "abc", "bytes": 300000, "models": ["m"], "pinned": false});
    records.put_json(Table::ShardMeta, "abc", &meta).await.expect("put json");
    records.put_json(Table::ShardMeta, "abd", &serde_json::json!({"sha256": "abd"})).await.expect("put json");
    assert_eq!(records.get_json(Table::ShardMeta, "abc").await.expect("get json"), Some(meta.clone()));
    assert_eq!(records.all_json(Table::ShardMeta).await.expect("all").len(), 2);
    records.delete(Table::ShardMeta, "abd").await.expect("delete");
    assert_eq!(records.all_json(Table::ShardMeta).await.expect("all"), vec![meta]);
    records.clear(Table::Shards).await.expect("clear");
    assert_eq!(records.get_bytes(Table::Shards, "abc").await.expect("get"), None);
}
