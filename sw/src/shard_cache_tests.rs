//! Native tests of the shard cache against in-memory storage and a scripted network.

use std::cell::Cell;

use futures::executor::block_on;

use super::*;
use crate::manifest::{Component, ShardInfo, TensorEntry, TokenizerRef, FORMAT, FORMAT_VERSION};
use crate::store::MemoryRecords;
use crate::testing::ScriptedNetwork;

const MIB: u64 = 1 << 20;
const BASE: &str = "http://h/models";

/// Ticks one millisecond per reading, so every use has its own time.
struct TestPlatform {
    now: Cell<f64>,
    quota: Cell<u64>,
}

impl Sleep for TestPlatform {
    async fn sleep(&self, _ms: u32) {}
}

impl Platform for TestPlatform {
    fn now_ms(&self) -> f64 {
        self.now.set(self.now.get() + 1.0);
        self.now.get()
    }
    async fn estimate(&self) -> Result<StorageEstimate, SwError> {
        Ok(StorageEstimate { usage: 0, quota: self.quota.get() })
    }
}

type Cache = ShardCache<MemoryRecords, ScriptedNetwork, TestPlatform>;

fn cache() -> Cache {
    let net = ScriptedNetwork { online: Cell::new(true), ..Default::default() };
    ShardCache::new(MemoryRecords::new(), net, TestPlatform { now: Cell::new(1000.0), quota: Cell::new(100 << 30) })
}

/// Distinct shard contents: `len` bytes derived from `tag`.
fn bytes_of(tag: &str, len: u64) -> Vec<u8> {
    let seed = tag.bytes().fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..len).map(|i| seed.wrapping_add((i % 251) as u8).wrapping_mul(13)).collect()
}

/// A model whose shard i (of `sizes_mib[i]` MiB) holds component i (priority i), served by
/// the scripted network at `<BASE>/<name>/shards/<hash>.bin`.
struct TestModel {
    manifest: Manifest,
    shards: Vec<(ContentHash, Vec<u8>)>,
}

impl TestModel {
    fn new(cache: &Cache, name: &str, sizes_mib: &[u64]) -> Self {
        let shards: Vec<(ContentHash, Vec<u8>)> = sizes_mib
            .iter()
            .enumerate()
            .map(|(i, &mib)| {
                let bytes = bytes_of(&format!("{name}/{i}"), mib * MIB);
                (ContentHash::of(&bytes), bytes)
            })
            .collect();
        let manifest = Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            name: name.into(),
            architecture: "bert".into(),
            hyperparameters: json!({}),
            precision: "f32".into(),
            tokenizer: TokenizerRef { component: "c0".into(), file: "t".into(), config: "c".into() },
            tensors: shards.iter().enumerate().map(|(i, (h, b))| TensorEntry { name: format!("t{i}"), shape: vec![b.len() as u64 / 4], dtype: "f32".into(), shard: h.clone(), offset: 0, length: b.len() as u64 }).collect(),
            files: vec![],
            components: shards.iter().enumerate().map(|(i, (_, b))| Component { name: format!("c{i}"), priority: i as u32, bytes: b.len() as u64, tensors: vec![format!("t{i}")], files: vec![] }).collect(),
            shards: shards.iter().map(|(h, b)| ShardInfo { sha256: h.clone(), bytes: b.len() as u64 }).collect(),
            total_bytes: shards.iter().map(|(_, b)| b.len() as u64).sum(),
            mirrors: vec![],
        };
        let model = TestModel { manifest, shards };
        for i in 0..model.shards.len() {
            cache.net.put(&model.url(i), 200, &model.shards[i].1);
        }
        model
    }

    fn url(&self, i: usize) -> String {
        format!("{BASE}/{}/{}", self.manifest.name, shard_path(&self.shards[i].0))
    }

    /// What a client's load does: the manifest, then every shard in order.
    fn load(&self, cache: &Cache) -> Vec<ShardAnswer> {
        block_on(cache.register_manifest(&self.manifest, &format!("{BASE}/{}/manifest.json", self.manifest.name))).unwrap();
        (0..self.shards.len()).map(|i| self.get(cache, i).unwrap()).collect()
    }

    fn get(&self, cache: &Cache, i: usize) -> Result<ShardAnswer, SwError> {
        block_on(cache.shard(&self.shards[i].0, &self.url(i)))
    }

    fn hash(&self, i: usize) -> ContentHash {
        self.shards[i].0.clone()
    }
}

fn stored(cache: &Cache) -> Vec<String> {
    cache.store.keys(Table::Shards)
}

fn configure_mib(cache: &Cache, mib: f64) {
    block_on(cache.configure(Some(mib))).unwrap();
}

#[test]
fn a_shard_is_downloaded_once_then_served_verified_from_storage_offline() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[1, 2]);
    let first = a.load(&cache);
    assert!(first.iter().all(|s| s.source == Source::Network && s.not_stored.is_none()));
    cache.net.online.set(false);
    let again = a.load(&cache);
    assert!(again.iter().all(|s| s.source == Source::Store));
    assert_eq!(*again[1].bytes, a.shards[1].1);
    let meta = block_on(cache.meta(&a.hash(1))).unwrap().unwrap();
    assert_eq!((meta.record.uses, meta.state, meta.record.models.iter().map(String::as_str).collect::<Vec<_>>()), (2, ShardState::Complete, vec!["a"]));
    assert_eq!(meta.record.priority, 1);
}

#[test]
fn damaged_storage_is_never_served_but_downloaded_again() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[1]);
    a.load(&cache);
    let mut damaged = a.shards[0].1.clone();
    damaged[9] ^= 1;
    block_on(cache.store.put_bytes(Table::Shards, a.hash(0).as_str(), &damaged)).unwrap();
    let answer = a.get(&cache, 0).unwrap();
    assert_eq!((answer.source, &*answer.bytes), (Source::Network, &a.shards[0].1));
}

#[test]
fn corrupt_downloads_are_not_stored_and_a_mirror_with_the_right_bytes_is_used() {
    let cache = cache();
    let mut a = TestModel::new(&cache, "a", &[1]);
    let mut flipped = a.shards[0].1.clone();
    flipped[100] ^= 0x55;
    cache.net.put(&a.url(0), 200, &flipped);
    block_on(cache.register_manifest(&a.manifest, "http://h/models/a/manifest.json")).unwrap();
    let err = a.get(&cache, 0).unwrap_err();
    assert_eq!(err.name(), "IntegrityError");
    assert!(stored(&cache).is_empty() && cache.store.keys(Table::Partials).is_empty() && block_on(cache.metas()).unwrap().is_empty(), "nothing of it is kept");

    a.manifest.mirrors = vec!["http://mirror/a/".into()];
    cache.net.put(&format!("http://mirror/a/{}", shard_path(&a.hash(0))), 200, &a.shards[0].1);
    block_on(cache.register_manifest(&a.manifest, "http://h/models/a/manifest.json")).unwrap();
    let answer = a.get(&cache, 0).unwrap();
    assert_eq!(*answer.bytes, a.shards[0].1);
    assert_eq!(stored(&cache), vec![a.hash(0).to_string()]);
}

#[test]
fn an_interrupted_download_resumes_from_stored_chunks_after_a_restart() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[10]);
    block_on(cache.register_manifest(&a.manifest, "http://h/models/a/manifest.json")).unwrap();
    // Every attempt of the first request breaks off at 6 MiB (the retries resume, get nothing).
    cache.net.drop_after.borrow_mut().insert(a.url(0), vec![6 * MIB as usize; download::ATTEMPTS_PER_URL as usize]);
    assert_eq!(a.get(&cache, 0).unwrap_err().name(), "DownloadInterruptedError");
    let partial = block_on(cache.meta(&a.hash(0))).unwrap().unwrap();
    assert_eq!((partial.state, partial.received), (ShardState::Partial, 6 * MIB));
    assert!(stored(&cache).is_empty());

    // The service worker is stopped and started again: only storage survives.
    let ShardCache { store, net, platform, .. } = cache;
    net.log.borrow_mut().clear();
    let cache = ShardCache::new(store, net, platform);
    let answer = a.get(&cache, 0).unwrap();
    assert_eq!(*answer.bytes, a.shards[0].1);
    assert_eq!(cache.net.ranges(), vec![Some(6 * MIB)], "one request, for the missing bytes only");
    assert!(cache.store.keys(Table::Partials).is_empty(), "chunks are dropped once the shard is whole");
    assert_eq!(block_on(cache.meta(&a.hash(0))).unwrap().unwrap().state, ShardState::Complete);
}

#[test]
fn concurrent_requests_for_one_shard_make_one_network_fetch() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[2]);
    block_on(cache.register_manifest(&a.manifest, "http://h/models/a/manifest.json")).unwrap();
    let (hash, url) = (a.hash(0), a.url(0));
    let (x, y, z) = block_on(futures::future::join3(cache.shard(&hash, &url), cache.shard(&hash, &url), cache.shard(&hash, &url)));
    for answer in [x, y, z] {
        assert_eq!(*answer.unwrap().bytes, a.shards[0].1);
    }
    assert_eq!(cache.net.opens_of(&url), 1);
}

/// The eviction log's hashes, in order.
fn evicted(cache: &Cache) -> Vec<ContentHash> {
    block_on(cache.state()).unwrap().evictions.into_iter().map(|e| e.sha256).collect()
}

#[test]
fn a_then_b_then_a_evicts_by_the_policy_and_never_the_loading_model() {
    let cache = cache();
    // A: tokenizer-ish 1 MiB (priority 0), 4 MiB (1), 2 MiB (2), 4 MiB (3) = 11 MiB; B the same.
    let a = TestModel::new(&cache, "a", &[1, 4, 2, 4]);
    let b = TestModel::new(&cache, "b", &[1, 4, 2, 4]);
    configure_mib(&cache, 16.5); // 1.5 models
    let budget = 16.5 * MIB as f64;
    let check = |what: &str| {
        let held = cache.store.stored_bytes(Table::Shards) + cache.store.stored_bytes(Table::Partials);
        assert!(held as f64 <= budget, "{what}: {held} bytes stored, over the budget");
    };
    a.load(&cache);
    check("after A");
    assert!(evicted(&cache).is_empty());

    b.load(&cache);
    check("after B");
    // B's 11 MiB need 5.5 MiB of A's: lowest value first = weight(priority)/size: A's 4 MiB
    // layer (priority 3: 1.5/4) then its 4 MiB embeddings (priority 1: 2/4). A's 2 MiB
    // (2.67/2) and 1 MiB tokenizer (3/1) stay.
    assert_eq!(evicted(&cache), vec![a.hash(3), a.hash(1)]);
    assert!(b.shards.iter().all(|(h, _)| stored(&cache).contains(&h.to_string())), "all of B is stored");

    let again = a.load(&cache);
    check("after A again");
    assert_eq!(again.iter().map(|s| s.source).collect::<Vec<_>>(), vec![Source::Store, Source::Network, Source::Store, Source::Network]);
    let log = evicted(&cache);
    // A is loading, so room for its two 4 MiB shards comes from B alone, lowest score first:
    // B's embeddings (L 0 + 2/4 = 0.5) then B's last layer (stored after the evictions for it
    // raised L to 0.5: 0.5 + 1.5/4 = 0.875) — recency through the inflation.
    assert_eq!(&log[2..], &[b.hash(1), b.hash(3)]);
    assert!(log[2..].iter().all(|h| b.shards.iter().any(|(x, _)| x == h)), "the loading model lost nothing");
}

#[test]
fn pinned_models_keep_their_shards_and_a_model_too_big_runs_from_memory() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[2, 2]);
    let b = TestModel::new(&cache, "b", &[2, 2]);
    configure_mib(&cache, 5.0);
    a.load(&cache);
    block_on(cache.set_pinned("a", true)).unwrap();
    let answers = b.load(&cache);
    // A is pinned: only 1 MiB is left for B, so neither of B's 2 MiB shards is stored.
    assert!(answers.iter().all(|s| s.source == Source::Network && s.not_stored.as_deref().is_some_and(|r| r.contains("budget"))), "{:?}", answers.iter().map(|a| &a.not_stored).collect::<Vec<_>>());
    assert_eq!(*answers[1].bytes, b.shards[1].1, "served from memory all the same");
    assert_eq!(stored(&cache).len(), 2);
    assert!(evicted(&cache).is_empty());
    block_on(cache.set_pinned("a", false)).unwrap();
    b.load(&cache);
    assert_eq!(evicted(&cache).len(), 2, "unpinned, A makes room");
}

#[test]
fn a_quota_error_evicts_and_retries_once_then_serves_from_memory() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[2, 2]);
    let b = TestModel::new(&cache, "b", &[2]);
    a.load(&cache);
    // The browser refuses more than 5 MiB although its estimate said plenty.
    cache.store.quota.set(Some(5 * MIB));
    let answer = &b.load(&cache)[0];
    assert!(answer.not_stored.is_none(), "evicting one of A's shards made room: {:?}", answer.not_stored);
    assert_eq!(block_on(cache.state()).unwrap().evictions.last().map(|e| e.reason.as_str()), Some("quota"));
    cache.store.quota.set(Some(MIB));
    let c = TestModel::new(&cache, "c", &[3]);
    let answer = &c.load(&cache)[0];
    assert!(answer.not_stored.as_deref().is_some_and(|r| r.contains("QuotaError")), "{:?}", answer.not_stored);
    assert_eq!(*answer.bytes, c.shards[0].1);
}

#[test]
fn the_message_api_lists_evicts_and_clears() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[1, 1]);
    let b = TestModel::new(&cache, "b", &[1]);
    // B shares A's first shard: stored once, owned by both.
    let mut b_manifest = b.manifest.clone();
    b_manifest.shards.push(ShardInfo { sha256: a.hash(0), bytes: MIB });
    b_manifest.tensors.push(TensorEntry { shard: a.hash(0), name: "shared".into(), ..b_manifest.tensors[0].clone() });
    b_manifest.components[0].tensors.push("shared".into());
    a.load(&cache);
    block_on(cache.register_manifest(&b_manifest, "http://h/models/b/manifest.json")).unwrap();
    b.get(&cache, 0).unwrap();
    block_on(cache.shard(&a.hash(0), &a.url(0))).unwrap();

    let list = block_on(cache.list()).unwrap();
    assert_eq!(list["models"].as_array().unwrap().len(), 2);
    assert_eq!(list["shards"].as_array().unwrap().len(), 3, "the shared shard is one record");
    let shared = list["shards"].as_array().unwrap().iter().find(|s| s["sha256"] == a.hash(0).as_str()).unwrap();
    assert_eq!(shared["models"], json!(["a", "b"]));
    assert_eq!(list["models"][0]["complete"], json!(true));

    let evicted = block_on(cache.evict_model("a")).unwrap();
    assert_eq!(evicted["evicted"], json!([a.hash(1).as_str()]), "the shared shard stays for B");
    assert_eq!(stored(&cache).len(), 2);
    assert_eq!(block_on(cache.evict_model("a")).unwrap_err().name(), "CacheRequestError");

    configure_mib(&cache, 64.0);
    let cleared = block_on(cache.clear()).unwrap();
    assert_eq!(cleared["freedBytes"], json!(2 * MIB));
    assert!(stored(&cache).is_empty() && block_on(cache.models()).unwrap().is_empty());
    assert_eq!(block_on(cache.state()).unwrap().configured_bytes, Some(64 * MIB), "the configured size survives a clear");
    assert_eq!(block_on(cache.configure(Some(-1.0))).unwrap_err().name(), "CacheRequestError");
}

#[test]
fn a_shard_no_manifest_lists_is_still_verified_and_stored_by_its_hash() {
    let cache = cache();
    let a = TestModel::new(&cache, "a", &[1]);
    // No register_manifest: the size is unknown until the bytes are in, the hash is the check.
    let answer = a.get(&cache, 0).unwrap();
    assert_eq!((answer.source, answer.not_stored.as_deref()), (Source::Network, None));
    assert_eq!(stored(&cache), vec![a.hash(0).to_string()]);
    let mut wrong = a.shards[0].1.clone();
    wrong[0] ^= 1;
    let other = ContentHash::of(b"something else");
    cache.net.put("http://h/models/x/shards/other.bin", 200, &wrong);
    assert_eq!(block_on(cache.shard(&other, "http://h/models/x/shards/other.bin")).unwrap_err().name(), "IntegrityError");
}
