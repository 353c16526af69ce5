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
            WorkerError::Package(inner) => inner.name(),
        }
    }
}
