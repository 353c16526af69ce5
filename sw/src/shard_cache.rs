//! The shard cache: verified shards in storage, under a budget, shared by every tab.
//!
//! Written against [`RecordStore`] (IndexedDB in the service worker, memory in tests),
//! [`Network`] and [`Platform`], so every decision below is unit-tested natively.
//!
//! ## Records (one [`Table`] each)
//! - `shards`: sha256 → the shard's bytes, complete and verified. One record per shard; a shard
//!   two models share is stored once.
//! - `partials`: `<sha256>:<n>` → chunk n of an interrupted download (see [`crate::download`]).
//! - `shard-meta`: sha256 → [`ShardMeta`]: size, last use, use count, component priority, the
//!   models that reference it, pinned, complete or partial with the byte offset reached.
//! - `models`: name → [`ModelRecord`], written when a manifest passes through.
//! - `state`: [`CacheState`]: the policy's inflation, the configured size, the eviction log.
//!
//! ## A shard request ([`ShardCache::shard`])
//! 1. Stored and intact → served from storage (re-verified: a mismatch is never served).
//! 2. Already downloading for another client → wait for that download (one network fetch for
//!    any number of tabs).
//! 3. Otherwise: make room first ([`crate::policy::plan`] under the budget, evicting before the
//!    first byte is written, never a loading or pinned model's shard, and reserving the shard's
//!    size so concurrent downloads cannot overshoot together), download verified and resumable
//!    from the request URL then the manifest's mirrors, and store. On `QuotaExceededError`
//!    evict as much again and retry once; if it still does not fit, or the budget cannot hold
//!    it, the bytes are served from memory and the answer says why they were not stored.
//!
//! Budget = min(configured `cacheSizeMB`, quota − other usage − reserve) ([`policy::budget`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use futures::channel::oneshot;
use futures::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::download::{self, PartialSink, Sleep};
use crate::manifest::shard_path;
use crate::policy::{self, Plan, Protected, ShardRecord};
use crate::serve::{Network, Source};
use crate::store::{RecordStore, Table};
use crate::{ContentHash, Manifest, SwError};

/// How long a model counts as "loading" (its shards protected) after its last request.
pub const LOADING_TTL_MS: f64 = 120_000.0;
/// Evictions remembered in [`CacheState::evictions`] (shown by `cache.list()`).
pub const EVICTION_LOG_LEN: usize = 64;
/// Storage kept free for the rest of the origin: 10 % of the quota, at most 512 MiB.
pub fn reserve(quota: u64) -> u64 {
    (quota / 10).min(512 << 20)
}

/// What the browser says about storage (`navigator.storage.estimate()`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StorageEstimate {
    pub usage: u64,
    pub quota: u64,
}

/// The clock, timers and storage estimate of the platform.
#[allow(async_fn_in_trait)]
pub trait Platform: Sleep {
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> f64;
    async fn estimate(&self) -> Result<StorageEstimate, SwError>;
    /// SHA-256 of a whole shard (the browser's native WebCrypto; `sha2` natively).
    async fn sha256(&self, bytes: &[u8]) -> Result<ContentHash, SwError> {
        Ok(ContentHash::of(bytes))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ShardState {
    Complete,
    Partial,
}

/// Metadata of a stored (or partly downloaded) shard: the `shard-meta` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardMeta {
    #[serde(flatten)]
    pub record: ShardRecord,
    /// Some model referencing it is pinned.
    pub pinned: bool,
    pub state: ShardState,
    /// Bytes held: all of them when complete, the resume offset when partial.
    pub received: u64,
    /// Partial chunk records held (`<sha256>:0` … `<sha256>:<chunks-1>`).
    pub chunks: u32,
}

/// One shard of a model, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelShard {
    pub sha256: ContentHash,
    pub bytes: u64,
    /// The lowest priority among the components with bytes in this shard.
    pub priority: u32,
}

/// A model whose manifest passed through the cache: the `models` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelRecord {
    pub name: String,
    pub manifest_url: String,
    pub total_bytes: u64,
    pub shards: Vec<ModelShard>,
    /// Base URLs holding the same `shards/` folder, tried in order after the request URL.
    pub mirrors: Vec<String>,
    pub pinned: bool,
    pub last_use: f64,
}

impl ModelRecord {
    pub fn from_manifest(manifest: &Manifest, manifest_url: &str, now: f64) -> Self {
        ModelRecord {
            name: manifest.name.clone(),
            manifest_url: manifest_url.to_owned(),
            total_bytes: manifest.total_bytes,
            shards: manifest.shards.iter().map(|s| ModelShard { sha256: s.sha256.clone(), bytes: s.bytes, priority: manifest.shard_priority(&s.sha256) }).collect(),
            mirrors: manifest.mirrors.clone(),
            pinned: false,
            last_use: now,
        }
    }

    fn has(&self, hash: &ContentHash) -> bool {
        self.shards.iter().any(|s| &s.sha256 == hash)
    }
}

/// One eviction, for the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Eviction {
    pub sha256: ContentHash,
    pub bytes: u64,
    pub models: Vec<String>,
    pub at: f64,
    /// Why: `room for <sha256>`, `quota`, `evict <model>`.
    pub reason: String,
}

/// The `state` record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheState {
    /// GDSF inflation `L` ([`crate::policy`]).
    pub inflation: f64,
    /// `cacheSizeMB` from the host, in bytes.
    pub configured_bytes: Option<u64>,
    /// Most recent last.
    pub evictions: Vec<Eviction>,
}

impl CacheState {
    /// Appends to the eviction log, keeping the newest [`EVICTION_LOG_LEN`].
    fn log_eviction(&mut self, eviction: Eviction) {
        self.evictions.push(eviction);
        let excess = self.evictions.len().saturating_sub(EVICTION_LOG_LEN);
        self.evictions.drain(..excess);
    }
}

const STATE_KEY: &str = "cache";

/// A shard's bytes and how the request was answered.
#[derive(Debug, Clone)]
pub struct ShardAnswer {
    pub bytes: Rc<Vec<u8>>,
    pub source: Source,
    /// Set when the bytes were served but not kept (over budget, quota): the reason.
    pub not_stored: Option<String>,
}

/// Room made for a download before it starts.
enum Room {
    /// This many bytes are reserved in the budget; partial chunks may be written.
    Reserved(u64),
    /// The shard will not be stored (the reason), so nothing is written while it downloads.
    MemoryOnly(String),
    /// No manifest lists the shard's size: room is planned once it has arrived.
    Undecided,
}

/// A model being loaded: protected from eviction until all its shards were served or it has
/// been quiet for [`LOADING_TTL_MS`].
struct Loading {
    until: f64,
    remaining: BTreeSet<ContentHash>,
}

type Waiters = RefCell<HashMap<ContentHash, Vec<oneshot::Sender<Result<ShardAnswer, SwError>>>>>;

pub struct ShardCache<S, N, P> {
    pub store: S,
    pub net: N,
    pub platform: P,
    loading: RefCell<BTreeMap<String, Loading>>,
    /// Bytes reserved for downloads in progress (inside the budget, not yet stored).
    reserved: Cell<u64>,
    /// Serialises "plan, evict, reserve/store" so two downloads never plan on the same bytes.
    room: Mutex<()>,
    /// Downloads in progress → clients waiting for the same shard.
    waiters: Waiters,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T, SwError> {
    serde_json::from_value(value).map_err(|e| SwError::Storage { op: "decode", key: what.to_owned(), reason: e.to_string() })
}

fn encode<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn chunk_key(hash: &ContentHash, index: u32) -> String {
    format!("{hash}:{index}")
}

impl<S: RecordStore, N: Network, P: Platform> ShardCache<S, N, P> {
    pub fn new(store: S, net: N, platform: P) -> Self {
        ShardCache { store, net, platform, loading: RefCell::default(), reserved: Cell::new(0), room: Mutex::new(()), waiters: RefCell::default() }
    }

    // ---- records -------------------------------------------------------------------------

    pub async fn metas(&self) -> Result<Vec<ShardMeta>, SwError> {
        self.store.all_json(Table::ShardMeta).await?.into_iter().map(|v| decode("shard-meta", v)).collect()
    }

    async fn meta(&self, hash: &ContentHash) -> Result<Option<ShardMeta>, SwError> {
        self.store.get_json(Table::ShardMeta, hash.as_str()).await?.map(|v| decode(hash.as_str(), v)).transpose()
    }

    async fn put_meta(&self, meta: &ShardMeta) -> Result<(), SwError> {
        self.store.put_json(Table::ShardMeta, meta.record.hash.as_str(), &encode(meta)).await
    }

    pub async fn models(&self) -> Result<Vec<ModelRecord>, SwError> {
        self.store.all_json(Table::Models).await?.into_iter().map(|v| decode("models", v)).collect()
    }

    async fn model(&self, name: &str) -> Result<ModelRecord, SwError> {
        let value = self.store.get_json(Table::Models, name).await?;
        value.map(|v| decode(name, v)).transpose()?.ok_or_else(|| SwError::CacheRequest { reason: format!("no model named {name:?} is known to the cache (load or prefetch it first)") })
    }

    pub async fn state(&self) -> Result<CacheState, SwError> {
        Ok(self.store.get_json(Table::State, STATE_KEY).await?.map(|v| decode(STATE_KEY, v)).transpose()?.unwrap_or_default())
    }

    async fn put_state(&self, state: &CacheState) -> Result<(), SwError> {
        self.store.put_json(Table::State, STATE_KEY, &encode(state)).await
    }

    /// Deletes a shard's bytes, chunks and metadata.
    async fn delete_shard(&self, meta: &ShardMeta) -> Result<(), SwError> {
        let hash = &meta.record.hash;
        self.store.delete(Table::Shards, hash.as_str()).await?;
        for i in 0..meta.chunks {
            self.store.delete(Table::Partials, &chunk_key(hash, i)).await?;
        }
        self.store.delete(Table::ShardMeta, hash.as_str()).await
    }

    // ---- models --------------------------------------------------------------------------

    /// A manifest passed through (a model load or prefetch begins): remember the model, mark it
    /// loading, and refresh the priorities and owners of its shards already stored.
    pub async fn register_manifest(&self, manifest: &Manifest, manifest_url: &str) -> Result<(), SwError> {
        let now = self.platform.now_ms();
        let mut record = ModelRecord::from_manifest(manifest, manifest_url, now);
        if let Some(old) = self.store.get_json(Table::Models, &record.name).await? {
            record.pinned = decode::<ModelRecord>(&record.name, old)?.pinned;
        }
        self.store.put_json(Table::Models, &record.name, &encode(&record)).await?;
        for shard in &record.shards {
            if let Some(mut meta) = self.meta(&shard.sha256).await? {
                let changed = meta.record.models.insert(record.name.clone()) || shard.priority < meta.record.priority || (record.pinned && !meta.pinned);
                meta.record.priority = meta.record.priority.min(shard.priority);
                meta.pinned |= record.pinned;
                if changed {
                    self.put_meta(&meta).await?;
                }
            }
        }
        self.loading.borrow_mut().insert(record.name.clone(), Loading { until: now + LOADING_TTL_MS, remaining: record.shards.iter().map(|s| s.sha256.clone()).collect() });
        Ok(())
    }

    /// Models that may not lose shards now: pinned ones and those still loading.
    async fn protected(&self) -> Result<Protected, SwError> {
        let now = self.platform.now_ms();
        self.loading.borrow_mut().retain(|_, l| l.until > now && !l.remaining.is_empty());
        let pinned = self.models().await?.into_iter().filter(|m| m.pinned).map(|m| m.name).collect();
        Ok(Protected { pinned, loading: self.loading.borrow().keys().cloned().collect() })
    }

    /// Names of the models now loading (for `list`).
    pub fn loading_models(&self) -> Vec<String> {
        let now = self.platform.now_ms();
        self.loading.borrow().iter().filter(|(_, l)| l.until > now && !l.remaining.is_empty()).map(|(n, _)| n.clone()).collect()
    }

    /// A shard of these models was requested (keeps them loading) or served (one fewer to go).
    fn note(&self, hash: &ContentHash, served: bool) {
        let until = self.platform.now_ms() + LOADING_TTL_MS;
        for loading in self.loading.borrow_mut().values_mut() {
            if loading.remaining.contains(hash) {
                loading.until = until;
                if served {
                    loading.remaining.remove(hash);
                }
            }
        }
    }

    // ---- serving a shard -----------------------------------------------------------------

    /// Answers a request for shard `hash` at `url` (see the module header).
    pub async fn shard(&self, hash: &ContentHash, url: &str) -> Result<ShardAnswer, SwError> {
        self.note(hash, false);
        let answer = self.shard_once(hash, url).await;
        if answer.is_ok() {
            self.note(hash, true);
        }
        answer
    }

    async fn shard_once(&self, hash: &ContentHash, url: &str) -> Result<ShardAnswer, SwError> {
        loop {
            if let Some(answer) = self.stored_answer(hash).await? {
                return Ok(answer);
            }
            let waiting = {
                let mut waiters = self.waiters.borrow_mut();
                match waiters.get_mut(hash) {
                    Some(list) => {
                        let (tx, rx) = oneshot::channel();
                        list.push(tx);
                        Some(rx)
                    }
                    None => {
                        waiters.insert(hash.clone(), Vec::new());
                        None
                    }
                }
            };
            match waiting {
                // Another client's download finished (or failed): share its outcome. If it was
                // abandoned (its future dropped), go round again and take over.
                Some(rx) => match rx.await {
                    Ok(outcome) => return outcome,
                    Err(oneshot::Canceled) => continue,
                },
                None => {
                    let leader = Leader { waiters: &self.waiters, hash };
                    let outcome = self.download_and_store(hash, url).await;
                    leader.finish(&outcome);
                    return outcome;
                }
            }
        }
    }

    /// The stored shard, re-verified, with its use recorded; `None` when absent or damaged
    /// (a damaged record is deleted, so the next step downloads it again).
    async fn stored_answer(&self, hash: &ContentHash) -> Result<Option<ShardAnswer>, SwError> {
        let Some(mut meta) = self.meta(hash).await? else { return Ok(None) };
        if meta.state != ShardState::Complete {
            return Ok(None);
        }
        let bytes = self.store.get_bytes(Table::Shards, hash.as_str()).await?;
        let intact = match &bytes {
            Some(b) if b.len() as u64 == meta.record.bytes => self.platform.sha256(b).await? == *hash,
            _ => false,
        };
        let Some(bytes) = bytes.filter(|_| intact) else {
            self.delete_shard(&meta).await?;
            return Ok(None);
        };
        let inflation = self.state().await?.inflation;
        policy::touch(&mut meta.record, self.platform.now_ms(), inflation);
        self.put_meta(&meta).await?;
        Ok(Some(ShardAnswer { bytes: Rc::new(bytes), source: Source::Store, not_stored: None }))
    }

    async fn download_and_store(&self, hash: &ContentHash, url: &str) -> Result<ShardAnswer, SwError> {
        let models: Vec<ModelRecord> = self.models().await?.into_iter().filter(|m| m.has(hash)).collect();
        let listed = models.iter().flat_map(|m| &m.shards).find(|s| &s.sha256 == hash);
        let expected = listed.map(|s| s.bytes);
        let priority = models.iter().flat_map(|m| &m.shards).filter(|s| &s.sha256 == hash).map(|s| s.priority).min().unwrap_or(u32::MAX / 2);
        let mut urls = vec![url.to_owned()];
        for mirror in models.iter().flat_map(|m| &m.mirrors) {
            let mirrored = format!("{}/{}", mirror.trim_end_matches('/'), shard_path(hash));
            if !urls.contains(&mirrored) {
                urls.push(mirrored);
            }
        }
        let room = match expected {
            Some(size) => self.make_room(hash, size).await?,
            None => Room::Undecided,
        };
        let prefix = match room {
            Room::Reserved(_) => self.stored_prefix(hash).await?,
            Room::MemoryOnly(_) | Room::Undecided => (Vec::new(), 0),
        };
        let sink = ChunkSink { cache: self, hash, enabled: Cell::new(matches!(room, Room::Reserved(_))), chunks: Cell::new(prefix.1), shard_bytes: expected.unwrap_or(0), models: &models, priority };
        let downloaded = download::download(&self.net, &self.platform, hash, expected, &urls, prefix, &sink).await;
        let reserved = match &room {
            Room::Reserved(n) => *n,
            Room::MemoryOnly(_) | Room::Undecided => 0,
        };
        let outcome = match downloaded {
            Ok(done) => {
                let bytes = done.bytes;
                let not_stored = match room {
                    Room::MemoryOnly(reason) => Some(reason),
                    Room::Reserved(_) | Room::Undecided => self.commit(hash, &bytes, reserved, &models, priority, sink.chunks.get()).await,
                };
                Ok(ShardAnswer { bytes: Rc::new(bytes), source: Source::Network, not_stored })
            }
            Err(err) => Err(err),
        };
        self.reserved.set(self.reserved.get().saturating_sub(reserved));
        outcome
    }

    /// The chunks of an earlier, interrupted download of `hash` (empty if none or damaged).
    async fn stored_prefix(&self, hash: &ContentHash) -> Result<(Vec<u8>, u32), SwError> {
        let Some(meta) = self.meta(hash).await? else { return Ok((Vec::new(), 0)) };
        if meta.state != ShardState::Partial {
            return Ok((Vec::new(), 0));
        }
        let mut bytes = Vec::with_capacity(meta.record.bytes as usize);
        for i in 0..meta.chunks {
            match self.store.get_bytes(Table::Partials, &chunk_key(hash, i)).await? {
                Some(chunk) => bytes.extend_from_slice(&chunk),
                None => break,
            }
        }
        if bytes.len() as u64 != meta.received {
            self.delete_shard(&meta).await?;
            return Ok((Vec::new(), 0));
        }
        Ok((bytes, meta.chunks))
    }

    /// The budget now, and the bytes our records take.
    pub async fn budget(&self) -> Result<(u64, StorageEstimate, u64), SwError> {
        let estimate = self.platform.estimate().await?;
        let ours: u64 = self.metas().await?.iter().map(held_bytes).sum();
        let configured = self.state().await?.configured_bytes;
        Ok((policy::budget(configured, estimate.quota, estimate.usage, ours, reserve(estimate.quota)), estimate, ours))
    }

    /// Plans room for `size` more bytes and evicts for it; reserves them on success.
    async fn make_room(&self, hash: &ContentHash, size: u64) -> Result<Room, SwError> {
        let _room = self.room.lock().await;
        let (budget, _, _) = self.budget().await?;
        self.evict_for(hash, size, budget.saturating_sub(self.reserved.get()), format!("room for {hash}")).await.map(|fits| match fits {
            Ok(()) => {
                self.reserved.set(self.reserved.get() + size);
                Room::Reserved(size)
            }
            Err(reason) => Room::MemoryOnly(reason),
        })
    }

    /// Evicts by the policy so that `size` more bytes fit in `budget`. `Ok(Err(reason))` when
    /// they cannot fit even after evicting everything unprotected.
    async fn evict_for(&self, hash: &ContentHash, size: u64, budget: u64, reason: String) -> Result<Result<(), String>, SwError> {
        // Downloads in progress are covered by their reservations, and cannot be evicted.
        let in_flight: BTreeSet<ContentHash> = self.waiters.borrow().keys().cloned().collect();
        let metas: Vec<ShardMeta> = self.metas().await?.into_iter().filter(|m| &m.record.hash != hash && !in_flight.contains(&m.record.hash)).collect();
        let records: Vec<ShardRecord> = metas.iter().map(|m| ShardRecord { bytes: held_bytes(m), ..m.record.clone() }).collect();
        let mut state = self.state().await?;
        let protected = self.protected().await?;
        match policy::plan(&records, size, budget, state.inflation, &protected) {
            Plan::DoesNotFit { needed, available } => Ok(Err(format!(
                "not stored: the shard needs {needed} bytes but the cache budget leaves {available} (models loading or pinned are never evicted); raise cacheSizeMB or free storage"
            ))),
            Plan::Evict { victims, inflation } => {
                let now = self.platform.now_ms();
                for victim in &victims {
                    if let Some(meta) = metas.iter().find(|m| &m.record.hash == victim) {
                        self.delete_shard(meta).await?;
                        state.log_eviction(Eviction { sha256: victim.clone(), bytes: meta.record.bytes, models: meta.record.models.iter().cloned().collect(), at: now, reason: reason.clone() });
                    }
                }
                state.inflation = inflation;
                self.put_state(&state).await?;
                Ok(Ok(()))
            }
        }
    }

    /// Stores a verified shard (its room already reserved); returns why not when it could not.
    async fn commit(&self, hash: &ContentHash, bytes: &[u8], reserved: u64, models: &[ModelRecord], priority: u32, chunks: u32) -> Option<String> {
        let size = bytes.len() as u64;
        if reserved == 0 {
            // No manifest listed the size: plan now that it is known.
            match self.make_room(hash, size).await {
                Ok(Room::Reserved(_)) => self.reserved.set(self.reserved.get().saturating_sub(size)),
                Ok(Room::MemoryOnly(reason)) => return Some(reason),
                Ok(Room::Undecided) => {}
                Err(err) => return Some(err.to_string()),
            }
        }
        // The partial chunks go first: the whole shard is in memory now, and holding both
        // copies at once could overshoot the budget (or the quota) by the shard's size.
        for i in 0..chunks {
            let _ = self.store.delete(Table::Partials, &chunk_key(hash, i)).await;
        }
        let _ = self.store.delete(Table::ShardMeta, hash.as_str()).await;
        let mut written = self.store.put_bytes(Table::Shards, hash.as_str(), bytes).await;
        if let Err(SwError::Quota { .. }) = written {
            // The browser's quota is tighter than its estimate said: free as much again, retry once.
            let _room = self.room.lock().await;
            let ours: u64 = self.metas().await.map(|m| m.iter().map(held_bytes).sum()).unwrap_or(0);
            if let Ok(Ok(())) = self.evict_for(hash, size, ours, "quota".into()).await {
                written = self.store.put_bytes(Table::Shards, hash.as_str(), bytes).await;
            }
        }
        let stored = async {
            written?;
            let inflation = self.state().await?.inflation;
            let mut record = new_record(hash, size, priority, models);
            policy::touch(&mut record, self.platform.now_ms(), inflation);
            let meta = ShardMeta { record, pinned: models.iter().any(|m| m.pinned), state: ShardState::Complete, received: size, chunks: 0 };
            self.put_meta(&meta).await?;
            Ok::<(), SwError>(())
        }
        .await;
        match stored {
            Ok(()) => None,
            Err(err) => {
                // Leave nothing half-written behind: no meta means the bytes are not trusted.
                let _ = self.store.delete(Table::Shards, hash.as_str()).await;
                Some(format!("not stored: {} ({})", err, err.name()))
            }
        }
    }

    // ---- the message API -----------------------------------------------------------------

    /// `cache.list()`: models and shards with their bytes, uses, pinned state; the eviction log.
    pub async fn list(&self) -> Result<serde_json::Value, SwError> {
        let metas = self.metas().await?;
        let loading = self.loading_models();
        let models: Vec<serde_json::Value> = self
            .models()
            .await?
            .into_iter()
            .map(|m| {
                let stored: u64 = m.shards.iter().filter(|s| metas.iter().any(|x| x.record.hash == s.sha256 && x.state == ShardState::Complete)).map(|s| s.bytes).sum();
                json!({
                    "name": m.name, "manifestUrl": m.manifest_url, "totalBytes": m.total_bytes,
                    "storedBytes": stored, "complete": stored == m.total_bytes, "pinned": m.pinned,
                    "loading": loading.contains(&m.name), "lastUse": m.last_use,
                    "shards": m.shards.iter().map(|s| s.sha256.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let state = self.state().await?;
        Ok(json!({ "models": models, "shards": metas, "evictions": state.evictions, "inflation": state.inflation }))
    }

    /// `cache.evict(model)`: drops the model and every shard no other model uses.
    pub async fn evict_model(&self, name: &str) -> Result<serde_json::Value, SwError> {
        let _room = self.room.lock().await;
        let model = self.model(name).await?;
        self.store.delete(Table::Models, name).await?;
        self.loading.borrow_mut().remove(name);
        let (mut freed, mut evicted) = (0, Vec::new());
        let mut state = self.state().await?;
        for mut meta in self.metas().await?.into_iter().filter(|m| model.has(&m.record.hash)) {
            meta.record.models.remove(name);
            if meta.record.models.is_empty() {
                self.delete_shard(&meta).await?;
                freed += held_bytes(&meta);
                state.log_eviction(Eviction { sha256: meta.record.hash.clone(), bytes: meta.record.bytes, models: vec![name.to_owned()], at: self.platform.now_ms(), reason: format!("evict {name}") });
                evicted.push(meta.record.hash.to_string());
            } else {
                self.put_meta(&meta).await?;
            }
        }
        self.put_state(&state).await?;
        Ok(json!({ "model": name, "evicted": evicted, "freedBytes": freed }))
    }

    /// `cache.clear()`: every shard, chunk and model record; the configured size stays.
    pub async fn clear(&self) -> Result<serde_json::Value, SwError> {
        let _room = self.room.lock().await;
        let freed: u64 = self.metas().await?.iter().map(held_bytes).sum();
        for table in [Table::Shards, Table::Partials, Table::ShardMeta, Table::Models] {
            self.store.clear(table).await?;
        }
        let configured_bytes = self.state().await?.configured_bytes;
        self.put_state(&CacheState { configured_bytes, ..CacheState::default() }).await?;
        self.loading.borrow_mut().clear();
        Ok(json!({ "freedBytes": freed }))
    }

    /// `cache.pin(model)` / `cache.unpin(model)`: pinned models are never evicted.
    pub async fn set_pinned(&self, name: &str, pinned: bool) -> Result<serde_json::Value, SwError> {
        let mut model = self.model(name).await?;
        model.pinned = pinned;
        self.store.put_json(Table::Models, name, &encode(&model)).await?;
        let pinned_models: BTreeSet<String> = self.models().await?.into_iter().filter(|m| m.pinned).map(|m| m.name).collect();
        for mut meta in self.metas().await?.into_iter().filter(|m| model.has(&m.record.hash)) {
            meta.pinned = meta.record.models.iter().any(|m| pinned_models.contains(m));
            self.put_meta(&meta).await?;
        }
        Ok(json!({ "model": name, "pinned": pinned }))
    }

    /// `cache.estimate()`: the browser's usage and quota, our bytes and our budget.
    pub async fn estimate(&self) -> Result<serde_json::Value, SwError> {
        let (budget, estimate, ours) = self.budget().await?;
        let configured = self.state().await?.configured_bytes;
        Ok(json!({ "usage": estimate.usage, "quota": estimate.quota, "cacheBytes": ours, "budget": budget, "configuredBytes": configured, "reserve": reserve(estimate.quota) }))
    }

    /// `configure({cacheSizeMB})`: the host's size limit (`null`: the quota decides).
    pub async fn configure(&self, cache_size_mb: Option<f64>) -> Result<serde_json::Value, SwError> {
        if let Some(mb) = cache_size_mb.filter(|mb| !mb.is_finite() || *mb < 0.0) {
            return Err(SwError::CacheRequest { reason: format!("cacheSizeMB must be a non-negative number, got {mb}") });
        }
        let mut state = self.state().await?;
        state.configured_bytes = cache_size_mb.map(|mb| (mb * (1u64 << 20) as f64) as u64);
        self.put_state(&state).await?;
        Ok(json!({ "configuredBytes": state.configured_bytes }))
    }
}

/// The policy's record of a shard not used yet, owned by `models`.
fn new_record(hash: &ContentHash, bytes: u64, priority: u32, models: &[ModelRecord]) -> ShardRecord {
    ShardRecord { hash: hash.clone(), bytes, last_use: 0.0, uses: 0, priority, models: models.iter().map(|m| m.name.clone()).collect(), score: 0.0 }
}

/// Bytes a record holds in storage (a partial holds only what arrived).
fn held_bytes(meta: &ShardMeta) -> u64 {
    match meta.state {
        ShardState::Complete => meta.record.bytes,
        ShardState::Partial => meta.received,
    }
}

/// The client doing a shard's download; hands the outcome to everyone who waited for it.
/// Dropped without finishing (the fetch was abandoned), it wakes them to take over.
struct Leader<'a> {
    waiters: &'a Waiters,
    hash: &'a ContentHash,
}

impl Leader<'_> {
    fn finish(self, outcome: &Result<ShardAnswer, SwError>) {
        for tx in self.waiters.borrow_mut().remove(self.hash).unwrap_or_default() {
            let _ = tx.send(outcome.clone());
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.waiters.borrow_mut().remove(self.hash);
    }
}

/// Writes a download's chunks as `partials` records and keeps the shard's meta at the offset
/// reached, so the next attempt (even after a service-worker restart) resumes with `Range`.
struct ChunkSink<'a, S, N, P> {
    cache: &'a ShardCache<S, N, P>,
    hash: &'a ContentHash,
    /// Off when the shard will not be stored, or after a write failed (quota).
    enabled: Cell<bool>,
    chunks: Cell<u32>,
    /// The whole shard's size (writing is enabled only when the manifest gave it).
    shard_bytes: u64,
    models: &'a [ModelRecord],
    priority: u32,
}

impl<S: RecordStore, N: Network, P: Platform> ChunkSink<'_, S, N, P> {
    async fn write(&self, index: u32, chunk: &[u8], received: u64) -> Result<(), SwError> {
        self.cache.store.put_bytes(Table::Partials, &chunk_key(self.hash, index), chunk).await?;
        let record = ShardRecord { last_use: self.cache.platform.now_ms(), ..new_record(self.hash, self.shard_bytes, self.priority, self.models) };
        let meta = ShardMeta { record, pinned: false, state: ShardState::Partial, received, chunks: index + 1 };
        self.cache.put_meta(&meta).await
    }
}

impl<S: RecordStore, N: Network, P: Platform> PartialSink for ChunkSink<'_, S, N, P> {
    async fn flush(&self, index: u32, chunk: &[u8], received: u64) {
        if self.enabled.get() {
            match self.write(index, chunk, received).await {
                Ok(()) => self.chunks.set(index + 1),
                // Keeping chunks is an optimisation: if storage refuses, download on in memory.
                Err(_) => self.enabled.set(false),
            }
        }
    }

    async fn discard(&self) {
        for i in 0..self.chunks.get() {
            let _ = self.cache.store.delete(Table::Partials, &chunk_key(self.hash, i)).await;
        }
        let _ = self.cache.store.delete(Table::ShardMeta, self.hash.as_str()).await;
        self.chunks.set(0);
    }
}

#[cfg(test)]
#[path = "shard_cache_tests.rs"]
mod tests;
