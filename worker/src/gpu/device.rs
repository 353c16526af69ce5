//! Device acquisition in one place: the adapter, the device with the limits the engine needs
//! (the adapter's real `maxStorageBufferBindingSize` / `maxBufferSize`, not the spec's 128 MiB
//! defaults), the optional features it can use (`shader-f16`, subgroups) and the capture of
//! validation errors and device loss as named [`WorkerError`]s.
//!
//! Why an uncaptured-error handler and a device-lost flag instead of trusting results: a
//! pipeline or bind group that fails validation does not fail the submit — the dispatch is
//! skipped and the readback is zeros. Every forward pass and every kernel test checks
//! [`GpuContext::check`] after its readback, so a validation error is an error, never zeros.

use std::sync::{Arc, Mutex};

use crate::WorkerError;

/// What the engine asks of an adapter, beyond the WebGPU defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuFeatures {
    /// `shader-f16` was present and is enabled (the kernels do not need it: f16 weights are read
    /// with `unpack2x16float`; it is reported for capability checks).
    pub shader_f16: bool,
    /// Subgroup operations were present and are enabled.
    pub subgroups: bool,
}

/// An acquired device and what it can do.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub features: GpuFeatures,
    pub adapter: wgpu::AdapterInfo,
    /// The first uncaptured validation / out-of-memory / internal error, if any.
    errors: Arc<Mutex<Vec<String>>>,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({} on {:?})", self.adapter.name, self.adapter.backend)
    }
}

impl GpuContext {
    /// The first adapter wgpu offers (high performance preferred), or `BackendUnavailableError`
    /// (natively; see [`GpuContext::acquire`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Arc<Self>, WorkerError> {
        crate::futures::block_on(Self::acquire())
    }

    /// The adapter and device, awaited: Vulkan natively, `navigator.gpu` in the browser.
    pub async fn acquire() -> Result<Arc<Self>, WorkerError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let options = wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() };
        let hint = if cfg!(target_arch = "wasm32") { "this browser offers no WebGPU adapter; load with backend 'wasm'" } else { "install a Vulkan driver (e.g. mesa-vulkan-drivers) or use --backend cpu" };
        let adapter = instance.request_adapter(&options).await.map_err(|e| WorkerError::BackendUnavailable { backend: "gpu".into(), reason: format!("no GPU adapter ({e}); {hint}") })?;
        Self::from_adapter(&adapter).await
    }

    /// A device on `adapter` with its real buffer limits and whatever optional features it has.
    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Arc<Self>, WorkerError> {
        let info = adapter.get_info();
        let have = adapter.features();
        let real = adapter.limits();
        // Start from the WebGPU defaults (what a browser guarantees) and raise only what the
        // engine needs and the adapter really has: large bindings for weight matrices, and
        // invocations / workgroup memory for the reductions.
        let mut limits = wgpu::Limits::default().using_resolution(real.clone());
        limits.max_storage_buffer_binding_size = real.max_storage_buffer_binding_size;
        limits.max_buffer_size = real.max_buffer_size;
        limits.max_storage_buffers_per_shader_stage = real.max_storage_buffers_per_shader_stage.max(limits.max_storage_buffers_per_shader_stage);
        limits.max_compute_invocations_per_workgroup = real.max_compute_invocations_per_workgroup;
        limits.max_compute_workgroup_size_x = real.max_compute_workgroup_size_x;
        limits.max_compute_workgroup_storage_size = real.max_compute_workgroup_storage_size;
        let mut wanted = wgpu::Features::empty();
        for feature in [wgpu::Features::SHADER_F16, wgpu::Features::SUBGROUP] {
            if have.contains(feature) {
                wanted |= feature;
            }
        }
        let descriptor = |features: wgpu::Features, limits: wgpu::Limits| wgpu::DeviceDescriptor {
            label: Some("accel"),
            required_features: features,
            required_limits: limits,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        // Fallback: if the device with optional features and raised limits is refused, the
        // plain WebGPU-default device still runs every kernel (models then must fit 128 MiB
        // bindings, which the loader checks and names).
        let (device, queue, features, limits) = match adapter.request_device(&descriptor(wanted, limits.clone())).await {
            Ok((d, q)) => (d, q, wanted, limits),
            Err(_) => {
                let plain = wgpu::Limits::default();
                let (d, q) = adapter.request_device(&descriptor(wgpu::Features::empty(), plain.clone())).await
                    .map_err(|e| WorkerError::BackendUnavailable { backend: "gpu".into(), reason: format!("the adapter {} refused a device: {e}", info.name) })?;
                (d, q, wgpu::Features::empty(), plain)
            }
        };
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut list) = sink.lock() {
                list.push(e.to_string());
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = flag.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        Ok(Arc::new(GpuContext {
            device,
            queue,
            limits,
            features: GpuFeatures { shader_f16: features.contains(wgpu::Features::SHADER_F16), subgroups: features.contains(wgpu::Features::SUBGROUP) },
            adapter: info,
            errors,
            lost,
        }))
    }

    /// One line for logs and `--json` output: adapter, backend, binding limit, features.
    pub fn describe(&self) -> String {
        // Browsers may leave the description empty (privacy); a fallback adapter is software.
        let name = if self.adapter.name.is_empty() { "adapter" } else { self.adapter.name.as_str() };
        let software = if self.adapter.device_type == wgpu::DeviceType::Cpu { " (software)" } else { "" };
        format!(
            "{name}{software} ({:?}), max binding {} MiB, shader-f16 {}, subgroups {}",
            self.adapter.backend,
            self.limits.max_storage_buffer_binding_size >> 20,
            self.features.shader_f16,
            self.features.subgroups
        )
    }

    /// Whether the device is gone (destroyed, driver reset, tab backgrounded too long): the
    /// caller drops this context and acquires a new one.
    pub fn is_lost(&self) -> bool {
        self.lost.lock().map_or(true, |slot| slot.is_some())
    }

    /// `GpuDeviceLostError` if the device is gone, else the first captured validation error as
    /// `GpuValidationError` (taken: the next check starts clean).
    pub fn check(&self) -> Result<(), WorkerError> {
        if let Some(reason) = self.lost.lock().ok().and_then(|slot| slot.clone()) {
            return Err(WorkerError::GpuDeviceLost { reason });
        }
        let first = self.errors.lock().ok().and_then(|mut list| (!list.is_empty()).then(|| list.remove(0)));
        match first {
            Some(message) => Err(WorkerError::GpuValidation { message }),
            None => Ok(()),
        }
    }

    /// Waits until the GPU has finished every submitted command buffer, then [`GpuContext::check`].
    /// Natively this polls the device (which also runs the map callbacks); in the browser it
    /// awaits the queue's `onSubmittedWorkDone`.
    pub async fn idle(&self) -> Result<(), WorkerError> {
        let (done, finished) = crate::futures::oneshot();
        self.queue.on_submitted_work_done(move || done.send(()));
        self.poll()?;
        if finished.await.is_none() {
            self.check()?;
            return Err(WorkerError::GpuDeviceLost { reason: "the queue never reported its work done".into() });
        }
        self.check()
    }

    /// Natively: blocks until submitted work is done, firing wgpu's callbacks (a poll failure
    /// means the device is gone). In the browser the event loop fires them: nothing to do.
    pub(crate) fn poll(&self) -> Result<(), WorkerError> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| WorkerError::GpuDeviceLost { reason: e.to_string() })?;
        Ok(())
    }

    /// Runs `f` inside a validation error scope and turns a captured error into
    /// `GpuValidationError` naming `what` (pipeline creation at load, bind groups).
    ///
    /// In the browser the scope's verdict is a promise: it is not awaited here (creation stays
    /// synchronous); a captured error is queued and reported, still naming `what`, by the next
    /// [`GpuContext::check`] — which every readback runs, so it is never read back as zeros.
    pub fn scoped<R>(&self, what: &str, f: impl FnOnce() -> R) -> Result<R, WorkerError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = crate::futures::block_on(scope.pop()) {
            return Err(WorkerError::GpuValidation { message: format!("{what}: {e}") });
        }
        #[cfg(target_arch = "wasm32")]
        {
            let (errors, what) = (self.errors.clone(), what.to_owned());
            let verdict = scope.pop();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(e) = verdict.await {
                    if let Ok(mut list) = errors.lock() {
                        list.push(format!("{what}: {e}"));
                    }
                }
            });
        }
        Ok(value)
    }

    /// Simulates a lost device (tests): destroys it, so the next wait reports the loss.
    pub fn destroy(&self) {
        self.device.destroy();
    }
}
