//! One model in the worker, from its manifest on: which components are resident, the model
//! assembled once all of them are, and the memory ledger.
//!
//! ```text
//!   manifest ──► ModelSlot ──add_shard()──► component pieces ──all resident──► Rc<LoadedModel>
//!                  │  resident: {tokenizer, embeddings, layer.0, …}      (assemble)
//!                  │  changed: wakes whoever waits for a component (progressive prefill)
//!                  └─ unload_component(): drops its pieces and the assembled model
//! ```
//!
//! A shard's bytes are copied per component ([`sw::Manifest::component_ranges`]) into buffers
//! of their own, so a component is usable the moment its last byte is in and can be freed on
//! its own. The ledger counts those buffers (exactly what was allocated), the tokenizer's
//! in-memory size (measured by the counting allocator in the browser) and the live KV caches.
//! Single-threaded by design (the worker has one thread): interior mutability through
//! `RefCell`/`Cell`, and no borrow is ever held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use sw::manifest::ShardRange;

use crate::loader::TextModel;
use crate::memory;
use crate::models::bert::Embedder;
use crate::models::llama::{LlamaConfig, LlamaLayer};
use crate::models::packed_source::PackedModel;
use crate::models::TensorSource;
use crate::protocol::{ComponentMemory, MemoryUsage, ModelKind, PerformanceMetrics};
use crate::runtime::LoadedModel;
use crate::tensor::{SharedBytes, WeightMatrix};
use crate::tokenizer::Tokenizer;
use crate::WorkerError;

/// The tokenizer component's name (the manifest's `tokenizer.component`, normally this).
pub const TOKENIZER: &str = "tokenizer";

/// Where a slot's load stands.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadState {
    Loading,
    /// Every component arrived (some may have been unloaded since).
    Loaded,
    Failed(WorkerError),
    /// `unloadModel`: the slot is gone from the worker; a load still running stops.
    Unloaded,
}

pub struct ModelSlot {
    pub model_id: String,
    /// `None` for a model built natively without a pack ([`ModelSlot::from_model`]).
    pack: RefCell<Option<PackedModel>>,
    /// Each component's byte ranges ([`sw::Manifest::component_ranges`]), in load order:
    /// computed once, read for every arriving shard.
    ranges: Vec<(String, Vec<ShardRange>)>,
    kind: ModelKind,
    resident: RefCell<BTreeSet<String>>,
    tokenizer: RefCell<Option<Arc<Tokenizer>>>,
    /// The tokenizer object's own allocations (beyond its component's bytes).
    tokenizer_heap: Cell<u64>,
    ready: RefCell<Option<Rc<LoadedModel>>>,
    state: RefCell<LoadState>,
    /// Wakes waiters whenever a component arrives or the load ends.
    pub changed: Changed,
    /// Bytes of the KV caches of this model's generations running now.
    kv_cache_bytes: Cell<u64>,
    pub metrics: RefCell<PerformanceMetrics>,
    /// The load asked for the GPU backend: generations run on [`ModelSlot::lease_gpu`]'s model.
    on_gpu: Cell<bool>,
    /// Bytes of the model's GPU buffers (weights, KV cache, activations), for the ledger, and
    /// of those the weights (for the reduction against f16).
    gpu_bytes: Cell<u64>,
    gpu_weight_bytes: Cell<u64>,
    /// The model on the GPU, once uploaded; out on lease while a generation runs (its KV cache
    /// lives on the GPU, so one generation at a time: the next waits for the lease).
    #[cfg(feature = "gpu")]
    gpu: RefCell<Option<crate::gpu::GpuLlama>>,
}

impl ModelSlot {
    /// A slot for a pack about to arrive (nothing resident yet).
    pub fn new(model_id: String, manifest_json: &[u8]) -> Result<Self, WorkerError> {
        let pack = PackedModel::empty(manifest_json)?;
        let kind = if pack.manifest.architecture == "bert" { ModelKind::Embedding } else { ModelKind::Text };
        Ok(Self::with(model_id, Some(pack), kind, LoadState::Loading))
    }

    /// A slot holding an already built model (native callers and tests).
    pub fn from_model(model_id: String, model: LoadedModel) -> Self {
        let slot = Self::with(model_id, None, model.kind(), LoadState::Loaded);
        if let LoadedModel::Text(m) = &model {
            *slot.tokenizer.borrow_mut() = Some(m.tokenizer.clone());
        }
        *slot.ready.borrow_mut() = Some(Rc::new(model));
        slot
    }

    fn with(model_id: String, pack: Option<PackedModel>, kind: ModelKind, state: LoadState) -> Self {
        let ranges = pack.as_ref().map(|p| p.manifest.components.iter().map(|c| (c.name.clone(), p.manifest.component_ranges(c))).collect()).unwrap_or_default();
        ModelSlot {
            model_id,
            pack: RefCell::new(pack),
            ranges,
            kind,
            resident: RefCell::default(),
            tokenizer: RefCell::default(),
            tokenizer_heap: Cell::new(0),
            ready: RefCell::default(),
            state: RefCell::new(state),
            changed: Changed::default(),
            kv_cache_bytes: Cell::new(0),
            metrics: RefCell::default(),
            on_gpu: Cell::new(false),
            gpu_bytes: Cell::new(0),
            gpu_weight_bytes: Cell::new(0),
            #[cfg(feature = "gpu")]
            gpu: RefCell::default(),
        }
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    pub fn state(&self) -> LoadState {
        self.state.borrow().clone()
    }

    /// Names of the manifest's components, in load order.
    pub fn component_names(&self) -> Vec<String> {
        self.pack.borrow().as_ref().map(|p| p.manifest.components.iter().map(|c| c.name.clone()).collect()).unwrap_or_default()
    }

    /// What `waitForMinimumViableModel` waits for: a text model generates (progressively) once
    /// its tokenizer, embeddings and first layer are resident; an embedding model needs all.
    pub fn minimum_viable_components(&self) -> Vec<String> {
        let names = self.component_names();
        match self.kind {
            ModelKind::Text => [TOKENIZER, "embeddings", "layer.0"].iter().map(|c| c.to_string()).filter(|c| names.contains(c)).collect(),
            ModelKind::Embedding => names,
        }
    }

    /// Copies this shard's component ranges out of a verified shard: `copy(start, end)` returns
    /// bytes `start..end` of it. Returns the components now complete (resident), in load order;
    /// the tokenizer is built as soon as its component is.
    pub fn add_shard(&self, shard: &sw::ContentHash, mut copy: impl FnMut(u64, u64) -> Vec<u8>) -> Result<Vec<String>, WorkerError> {
        let mut completed = Vec::new();
        {
            let mut pack = self.pack.borrow_mut();
            let Some(pack) = pack.as_mut() else { return Ok(completed) };
            for (name, ranges) in &self.ranges {
                let Some(range) = ranges.iter().find(|r| &r.shard == shard) else { continue };
                if self.resident.borrow().contains(name) {
                    continue;
                }
                pack.add_piece(name, shard, range.start, SharedBytes::from_vec(copy(range.start, range.end)));
                // Complete when every range of the component has its piece.
                if ranges.iter().all(|r| pack.component_piece_covers(name, r)) {
                    completed.push(name.clone());
                }
            }
        }
        for name in &completed {
            if name == TOKENIZER {
                let before = memory::heap_bytes();
                let tokenizer = self.pack.borrow().as_ref().map(PackedModel::tokenizer).transpose()?;
                self.tokenizer_heap.set(memory::heap_bytes().saturating_sub(before));
                *self.tokenizer.borrow_mut() = tokenizer.map(Arc::new);
            }
            self.resident.borrow_mut().insert(name.clone());
        }
        Ok(completed)
    }

    /// Whether every component is resident.
    pub fn complete(&self) -> bool {
        let resident = self.resident.borrow();
        self.pack.borrow().as_ref().is_none_or(|p| p.manifest.components.iter().all(|c| resident.contains(&c.name)))
    }

    pub fn is_resident(&self, component: &str) -> bool {
        self.resident.borrow().contains(component)
    }

    /// The resident components, in load order.
    pub fn resident_components(&self) -> Vec<String> {
        let resident = self.resident.borrow();
        self.component_names().into_iter().filter(|c| resident.contains(c)).collect()
    }

    /// Builds the model once every component is resident (a no-op before, or when built).
    pub fn assemble(&self) -> Result<(), WorkerError> {
        if self.ready.borrow().is_some() || !self.complete() {
            return Ok(());
        }
        let model = {
            let pack = self.pack.borrow();
            let Some(pack) = pack.as_ref() else { return Ok(()) };
            match self.kind {
                ModelKind::Embedding => LoadedModel::Embedding(Embedder::from_packed(pack)?),
                ModelKind::Text => {
                    let tokenizer = self.tokenizer().ok_or_else(|| self.not_resident(TOKENIZER))?;
                    LoadedModel::Text(TextModel::assemble(pack, tokenizer)?)
                }
            }
        };
        *self.ready.borrow_mut() = Some(Rc::new(model));
        Ok(())
    }

    /// Marks the load finished (every component arrived) and builds the model.
    pub fn finish_load(&self) -> Result<(), WorkerError> {
        let built = self.assemble();
        *self.state.borrow_mut() = match &built {
            Ok(()) => LoadState::Loaded,
            Err(e) => LoadState::Failed(e.clone()),
        };
        self.changed.notify();
        built
    }

    /// The load failed: waiters get `err`.
    pub fn fail(&self, err: WorkerError) {
        *self.state.borrow_mut() = LoadState::Failed(err);
        self.changed.notify();
    }

    /// `unloadModel`: frees everything; waiters get `ModelNotLoadedError`.
    pub fn unload(&self) {
        *self.state.borrow_mut() = LoadState::Unloaded;
        self.ready.borrow_mut().take();
        self.tokenizer.borrow_mut().take();
        self.resident.borrow_mut().clear();
        self.pack.borrow_mut().take();
        #[cfg(feature = "gpu")]
        self.gpu.borrow_mut().take();
        self.gpu_bytes.set(0);
        self.gpu_weight_bytes.set(0);
        self.changed.notify();
    }

    /// Whether generations run on the GPU (the load asked for it).
    pub fn on_gpu(&self) -> bool {
        self.on_gpu.get()
    }

    /// The load asked for the GPU backend: from now on generations wait for the GPU model
    /// ([`ModelSlot::set_gpu`]) instead of running on the CPU.
    pub fn use_gpu(&self) {
        self.on_gpu.set(true);
    }

    /// The built model, once every component is resident.
    pub fn ready(&self) -> Option<Rc<LoadedModel>> {
        self.ready.borrow().clone()
    }

    pub fn tokenizer(&self) -> Option<Arc<Tokenizer>> {
        self.tokenizer.borrow().clone()
    }

    /// The Llama hyper-parameters from the manifest.
    pub fn llama_config(&self) -> Result<LlamaConfig, WorkerError> {
        let pack = self.pack.borrow();
        pack.as_ref().ok_or_else(|| self.not_resident("hyperparameters"))?.hyperparameters()
    }

    /// A matrix of a resident component (a view: no copy).
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix, WorkerError> {
        let pack = self.pack.borrow();
        pack.as_ref().ok_or_else(|| self.not_resident(name))?.matrix(name, rows, cols)
    }

    /// Layer `i`'s weights (views into its component's buffer).
    pub fn llama_layer(&self, config: &LlamaConfig, i: usize) -> Result<LlamaLayer, WorkerError> {
        let pack = self.pack.borrow();
        LlamaLayer::load(pack.as_ref().ok_or_else(|| self.not_resident(&format!("layer.{i}")))?, config, i)
    }

    /// Waits until `components` are all resident; fails when the load fails or the model is
    /// unloaded meanwhile, or when one of them was unloaded by `unloadComponent` after the
    /// load (nothing would bring it back).
    pub async fn wait_for(&self, components: &[&str]) -> Result<(), WorkerError> {
        let known = self.component_names();
        if let Some(unknown) = components.iter().find(|c| !known.iter().any(|k| k == *c)) {
            return Err(WorkerError::InvalidParameter { reason: format!("model {} has no component {unknown:?}; it has {}", self.model_id, known.join(", ")) });
        }
        loop {
            let Some(missing) = components.iter().find(|c| !self.is_resident(c)) else { return Ok(()) };
            match self.state() {
                LoadState::Loading => self.changed.next().await,
                LoadState::Loaded => return Err(self.not_resident(missing)),
                LoadState::Failed(err) => return Err(err),
                LoadState::Unloaded => return Err(WorkerError::ModelNotLoaded { model_id: self.model_id.clone() }),
            }
        }
    }

    /// Waits for the built model (every component resident).
    pub async fn wait_ready(&self) -> Result<Rc<LoadedModel>, WorkerError> {
        loop {
            if let Some(model) = self.ready() {
                return Ok(model);
            }
            match self.state() {
                LoadState::Loading => self.changed.next().await,
                LoadState::Loaded => {
                    let missing = self.component_names().into_iter().find(|c| !self.is_resident(c)).unwrap_or_default();
                    return Err(self.not_resident(&missing));
                }
                LoadState::Failed(err) => return Err(err),
                LoadState::Unloaded => return Err(WorkerError::ModelNotLoaded { model_id: self.model_id.clone() }),
            }
        }
    }

    fn not_resident(&self, component: &str) -> WorkerError {
        WorkerError::ComponentNotLoaded { model_id: self.model_id.clone(), component: component.to_owned() }
    }

    /// `unloadComponent`: frees `component`'s buffers (and the built model, which holds views
    /// of them; a generation running now keeps its own reference until it ends). Returns the
    /// bytes released. The model answers `ComponentNotLoadedError` until loaded again.
    pub fn unload_component(&self, component: &str) -> Result<u64, WorkerError> {
        let known = self.component_names();
        if !known.iter().any(|k| k == component) {
            return Err(WorkerError::InvalidParameter { reason: format!("model {} has no component {component:?}; it has {}", self.model_id, known.join(", ")) });
        }
        if self.state() == LoadState::Loading {
            return Err(WorkerError::InvalidParameter { reason: format!("model {} is still loading; unload components once loadModel has resolved", self.model_id) });
        }
        if self.gpu_bytes.get() > 0 {
            return Err(WorkerError::InvalidParameter { reason: format!("model {} runs on WebGPU, where its weights are one upload; unload the model instead (or load it with backend 'wasm' to unload components)", self.model_id) });
        }
        let before = self.component_memory(component);
        if let Some(pack) = self.pack.borrow_mut().as_mut() {
            pack.release_component(component);
        }
        if component == TOKENIZER {
            self.tokenizer.borrow_mut().take();
            self.tokenizer_heap.set(0);
        }
        self.resident.borrow_mut().remove(component);
        self.ready.borrow_mut().take();
        self.changed.notify();
        Ok(before)
    }

    /// Bytes the engine holds for `component`.
    fn component_memory(&self, component: &str) -> u64 {
        let pieces = self.pack.borrow().as_ref().map_or(0, |p| p.component_bytes(component));
        pieces + if component == TOKENIZER { self.tokenizer_heap.get() } else { 0 }
    }

    /// Counts a KV cache of `bytes` as live until the returned guard drops.
    pub fn hold_kv_cache(self: &Rc<Self>, bytes: usize) -> KvCacheHold {
        self.kv_cache_bytes.set(self.kv_cache_bytes.get() + bytes as u64);
        KvCacheHold { slot: self.clone(), bytes: bytes as u64 }
    }

    /// The ledger: per component what its buffers hold, the live KV caches, and the model's
    /// size before quantization (f16) for the reduction.
    pub fn memory_usage(&self) -> MemoryUsage {
        let pack = self.pack.borrow();
        let components: Vec<ComponentMemory> = pack
            .as_ref()
            .map(|p| {
                p.manifest
                    .components
                    .iter()
                    .map(|c| ComponentMemory { name: c.name.clone(), bytes: self.component_memory(&c.name), packed_bytes: c.bytes, resident: self.is_resident(&c.name) })
                    .collect()
            })
            .unwrap_or_default();
        let weights_bytes: u64 = components.iter().map(|c| c.bytes).sum();
        let original_bytes = pack.as_ref().map_or(0, |p| p.manifest.tensors.iter().map(|t| 2 * t.shape.iter().product::<u64>()).sum());
        let kv_cache_bytes = self.kv_cache_bytes.get();
        MemoryUsage {
            model_id: self.model_id.clone(),
            total_bytes: weights_bytes + kv_cache_bytes,
            weights_bytes,
            kv_cache_bytes,
            packed_bytes: pack.as_ref().map_or(0, |p| p.manifest.total_bytes),
            original_bytes,
            // The weights wherever they are: the engine's and (on WebGPU) the GPU's.
            reduction: if original_bytes > 0 { 1.0 - (weights_bytes + self.gpu_weight_bytes.get()) as f64 / original_bytes as f64 } else { 0.0 },
            components,
            engine_heap_bytes: memory::heap_bytes_if_counted(),
            gpu_bytes: self.gpu_bytes.get(),
        }
    }
}

#[cfg(feature = "gpu")]
impl ModelSlot {
    /// The model is on the GPU: generations can lease it. The engine's own copies of the
    /// weights are freed (every component but the tokenizer): the GPU holds them now, and
    /// keeping both would double the model's memory — in a wasm heap capped at 4 GiB. The
    /// components stay resident (on the GPU); the ledger moves their bytes to `gpuBytes`.
    pub fn move_to_gpu(&self, model: crate::gpu::GpuLlama) {
        self.gpu_bytes.set(model.report.total_bytes);
        self.gpu_weight_bytes.set(model.report.weight_bytes);
        *self.gpu.borrow_mut() = Some(model);
        self.ready.borrow_mut().take();
        if let Some(pack) = self.pack.borrow_mut().as_mut() {
            for (component, _) in &self.ranges {
                if component != TOKENIZER {
                    pack.release_component(component);
                }
            }
        }
        self.changed.notify();
    }

    /// The GPU model for one generation, waiting while another generation has it (or while
    /// the model is still loading). Fails as [`ModelSlot::wait_ready`] does when the load fails
    /// or the model is unloaded.
    pub async fn lease_gpu(self: &Rc<Self>) -> Result<GpuLease, WorkerError> {
        loop {
            // Taken before looking, so a notify in between is not missed.
            let change = self.changed.next();
            if let Some(model) = self.gpu.borrow_mut().take() {
                return Ok(GpuLease { slot: self.clone(), model: Some(model) });
            }
            match self.state() {
                LoadState::Failed(err) => return Err(err),
                LoadState::Unloaded => return Err(WorkerError::ModelNotLoaded { model_id: self.model_id.clone() }),
                LoadState::Loading | LoadState::Loaded => change.await,
            }
        }
    }
}

/// A generation's hold on the GPU model; dropping it (the generation ended, failed or was
/// dropped) hands the model back to the slot — unless the model was unloaded meanwhile, when
/// its buffers are freed here.
#[cfg(feature = "gpu")]
pub struct GpuLease {
    slot: Rc<ModelSlot>,
    model: Option<crate::gpu::GpuLlama>,
}

#[cfg(feature = "gpu")]
impl GpuLease {
    pub fn model(&mut self) -> Result<&mut crate::gpu::GpuLlama, WorkerError> {
        self.model.as_mut().ok_or_else(|| WorkerError::ModelNotLoaded { model_id: self.slot.model_id.clone() })
    }
}

#[cfg(feature = "gpu")]
impl Drop for GpuLease {
    fn drop(&mut self) {
        if let Some(model) = self.model.take() {
            if self.slot.state() != LoadState::Unloaded {
                *self.slot.gpu.borrow_mut() = Some(model);
                self.slot.changed.notify();
            }
        }
    }
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSlot").field("model_id", &self.model_id).field("state", &self.state()).field("resident", &self.resident_components()).finish()
    }
}

/// Keeps a KV cache counted in its slot's ledger (see [`ModelSlot::hold_kv_cache`]).
pub struct KvCacheHold {
    slot: Rc<ModelSlot>,
    bytes: u64,
}

impl Drop for KvCacheHold {
    fn drop(&mut self) {
        self.slot.kv_cache_bytes.set(self.slot.kv_cache_bytes.get().saturating_sub(self.bytes));
    }
}

/// A single-threaded "something changed" signal: [`Changed::next`] resolves at the next
/// [`Changed::notify`]. Works under any executor (the worker's is wasm-bindgen-futures).
#[derive(Default)]
pub struct Changed {
    version: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Changed {
    pub fn notify(&self) {
        self.version.set(self.version.get() + 1);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn next(&self) -> NextChange<'_> {
        NextChange { changed: self, seen: self.version.get() }
    }
}

pub struct NextChange<'a> {
    changed: &'a Changed,
    seen: u64,
}

impl Future for NextChange<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.changed.version.get() != self.seen {
            return Poll::Ready(());
        }
        self.changed.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}
