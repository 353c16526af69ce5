//! The one error type of the `worker` crate. Every variant has a stable [`WorkerError::name`]
//! that becomes the JS `Error.name` at the wasm boundary (and the host's error subclass), and a
//! message that says what to do about it.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WorkerError {
    /// A message from the host that is not a request this worker understands.
    #[error("malformed request: {reason}; the host library and worker script must come from the same build")]
    Protocol { reason: String },

    /// A request parameter outside its valid range (sampling settings, sizes).
    #[error("invalid parameter: {reason}")]
    InvalidParameter { reason: String },

    /// A file could not be fetched (network down and nothing cached, or an HTTP error).
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },

    /// A model file that is not what it claims to be: wrong magic, truncated, offsets outside
    /// the file, malformed metadata. Re-download or re-convert it.
    #[error("{source_name} is not a valid {format} file: {reason}")]
    ModelFormat { source_name: String, format: &'static str, reason: String },

    /// A tensor stored in a type this engine does not read.
    #[error("tensor {tensor} has storage type {type_name}, which this engine cannot read; convert the model to F32, F16, Q8_0, Q4_0 or Q4_1")]
    UnsupportedTensorType { tensor: String, type_name: String },

    /// A model architecture this engine does not implement.
    #[error("architecture {architecture:?} is not supported; supported: llama (Llama 2/3, SmolLM2, TinyLlama) and bert")]
    UnsupportedArchitecture { architecture: String },

    /// A tensor the architecture needs is absent.
    #[error("the model has no tensor {tensor}; the file is incomplete or not a {architecture} model")]
    MissingTensor { tensor: String, architecture: String },

    /// A tensor (or hyper-parameter) with a shape other than the architecture implies.
    #[error("tensor {tensor} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { tensor: String, expected: Vec<usize>, found: Vec<usize> },

    /// A required hyper-parameter is missing or has the wrong type.
    #[error("model metadata {key} is missing or invalid: {reason}")]
    Metadata { key: String, reason: String },

    /// The tokenizer could not be built or run.
    #[error("tokenizer: {reason}")]
    Tokenizer { reason: String },

    /// The prompt (plus what is to be generated) does not fit the context window.
    #[error("the prompt has {tokens} tokens but the context window holds {context}; shorten the prompt or load the model with a larger context")]
    ContextOverflow { tokens: usize, context: usize },

    /// Reading or writing a local file failed (native CLI).
    #[error("cannot access {path}: {reason}")]
    Io { path: String, reason: String },

    /// A download the service worker refused and named (`x-accel-error` header): the error
    /// keeps the service worker's name (one of `sw::SwError::NAMES`) and message, so
    /// JS sees e.g. `IntegrityError` whether the worker or the service worker caught it.
    #[error("{message}")]
    ServiceWorker { name: &'static str, url: String, message: String },

    /// A request named a model id that is not loaded (never was, or was unloaded).
    #[error("no model {model_id:?} is loaded in this worker; load it with loadModel (it may have been unloaded)")]
    ModelNotLoaded { model_id: String },

    /// A request needs a component of the model that is not resident: it was unloaded with
    /// `unloadComponent`.
    #[error("model {model_id} has no resident {component:?} (it was unloaded with unloadComponent); load the model again to use it")]
    ComponentNotLoaded { model_id: String, component: String },

    /// The backend a load asked for cannot run here: the browser has no usable WebGPU adapter,
    /// the build lacks the backend (`--features gpu` natively), or the adapter refused a device.
    #[error("the {backend} backend is unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },

    /// Loading a model would take the engine past the memory limit the host set.
    #[error("loading {model} ({needed} bytes) would take the engine to {total} bytes of weights, over its limit of {limit} bytes (maxMemoryUsageMB); unload a model or component first, or raise the limit")]
    MemoryLimit { model: String, needed: u64, total: u64, limit: u64 },

    /// A load or request was abandoned on purpose (the model was unloaded while loading).
    #[error("{reason}")]
    Aborted { reason: String },

    /// A `pause` / `resume` / `cancel` named a generation that is not running (it finished,
    /// failed or was cancelled, or the id is not a generation's).
    #[error("no generation with request id {target} is running in this worker (it may have finished already)")]
    StreamNotFound { target: u64 },

    /// The GPU device was lost (driver reset, device destroyed, browser reclaimed it). Reload
    /// the model to get a new device, or fall back to the CPU backend.
    #[error("the GPU device was lost ({reason}); load the model again, or use the cpu backend")]
    GpuDeviceLost { reason: String },

    /// A GPU resource the engine created failed validation (an engine bug or a driver limit the
    /// engine did not check): reported instead of reading back zeros.
    #[error("GPU validation error: {message}")]
    GpuValidation { message: String },

    /// A tensor larger than one storage-buffer binding of this adapter (`limit` names the
    /// WebGPU limit): the model cannot run on this GPU as packed; use the cpu backend, or a
    /// smaller precision for that tensor.
    #[error("tensor {tensor} needs {bytes} bytes in one GPU binding but this adapter's {limit} is {max}; use --backend cpu or pack that tensor smaller")]
    GpuLimit { tensor: String, bytes: u64, limit: &'static str, max: u64 },

    /// A packed model's manifest or shard failed validation (the `sw` crate owns the format;
    /// its error keeps its own name: ManifestError, ManifestVersionError, IntegrityError).
    #[error(transparent)]
    Package(#[from] sw::SwError),
}

impl WorkerError {
    pub fn name(&self) -> &'static str {
        match self {
            WorkerError::Protocol { .. } => "ProtocolError",
            WorkerError::InvalidParameter { .. } => "InvalidParameterError",
            WorkerError::Fetch { .. } => "FetchError",
            WorkerError::ModelFormat { .. } => "ModelFormatError",
            WorkerError::UnsupportedTensorType { .. } => "UnsupportedTensorTypeError",
            WorkerError::UnsupportedArchitecture { .. } => "UnsupportedArchitectureError",
            WorkerError::MissingTensor { .. } => "MissingTensorError",
            WorkerError::ShapeMismatch { .. } => "ShapeMismatchError",
            WorkerError::Metadata { .. } => "MetadataError",
            WorkerError::Tokenizer { .. } => "TokenizerError",
            WorkerError::ContextOverflow { .. } => "ContextOverflowError",
            WorkerError::Io { .. } => "IoError",
            WorkerError::ServiceWorker { name, .. } => name,
            WorkerError::ModelNotLoaded { .. } => "ModelNotLoadedError",
            WorkerError::StreamNotFound { .. } => "StreamNotFoundError",
            WorkerError::ComponentNotLoaded { .. } => "ComponentNotLoadedError",
            WorkerError::BackendUnavailable { .. } => "BackendUnavailableError",
            WorkerError::Aborted { .. } => "AbortError",
            WorkerError::MemoryLimit { .. } => "MemoryLimitError",
            WorkerError::GpuDeviceLost { .. } => "GpuDeviceLostError",
            WorkerError::GpuValidation { .. } => "GpuValidationError",
            WorkerError::GpuLimit { .. } => "GpuLimitError",
            WorkerError::Package(inner) => inner.name(),
        }
    }
}

/// `sw::SwError::NAMES`'s entry for an `x-accel-error` header value, if it is one (a failed
/// fetch carries only the name as text, and the worker's error name must be `&'static str`).
pub fn service_worker_error_name(header: &str) -> Option<&'static str> {
    sw::SwError::NAMES.iter().copied().find(|&name| name == header.trim())
}

impl WorkerError {
    /// The error for a fetch of `url` that answered `status` instead of the file. When the
    /// service worker answered (header `x-accel-error: <Name>`, body `{name, message}`), the
    /// error takes its name and message; any other failure is a `FetchError` with the status.
    pub fn from_failed_fetch(url: &str, status: u16, accel_error: Option<&str>, body: &[u8]) -> WorkerError {
        let fetch_error = |detail: String| WorkerError::Fetch { url: url.to_owned(), reason: format!("HTTP {status}{detail}") };
        let Some(header) = accel_error else {
            return fetch_error(String::new());
        };
        let Some(name) = service_worker_error_name(header) else {
            // A name this build does not know (a newer service worker): keep it in the text.
            return fetch_error(format!(" ({header} from the service worker)"));
        };
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("the service worker answered {url} with HTTP {status} ({name})"));
        WorkerError::ServiceWorker { name, url: url.to_owned(), message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_service_worker_failure_keeps_its_name_and_message() {
        let body = br#"{"name":"IntegrityError","message":"shards/ab.bin failed verification: expected sha256 ab, got cd"}"#;
        let err = WorkerError::from_failed_fetch("http://x/shards/ab.bin", 502, Some("IntegrityError"), body);
        assert_eq!(err.name(), "IntegrityError");
        assert_eq!(err.to_string(), "shards/ab.bin failed verification: expected sha256 ab, got cd");
        // A body that is not the service worker's JSON still gives the name and a message.
        let err = WorkerError::from_failed_fetch("http://x/m.json", 404, Some("HttpStatusError"), b"<html>");
        assert_eq!(err.name(), "HttpStatusError");
        assert!(err.to_string().contains("404"), "{err}");
    }

    #[test]
    fn other_failed_fetches_are_fetch_errors_with_the_status() {
        let err = WorkerError::from_failed_fetch("http://x/m.json", 404, None, b"not found");
        assert_eq!(err.name(), "FetchError");
        assert_eq!(err.to_string(), "cannot fetch http://x/m.json: HTTP 404");
        let err = WorkerError::from_failed_fetch("http://x/m.json", 500, Some("QuotaFromTheFutureError"), b"{}");
        assert_eq!(err.name(), "FetchError");
        assert!(err.to_string().contains("QuotaFromTheFutureError from the service worker"), "{err}");
    }
}
