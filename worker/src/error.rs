//! The one error type of the `worker` crate. Every variant has a stable [`WorkerError::name`]
//! that becomes the JS `Error.name` at the wasm boundary (and the host's error subclass), and a
//! message that says what to do about it.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WorkerError {
    /// A message from the host that is not a request this worker understands.
    #[error("malformed request: {reason}; the host library and worker script must come from the same build")]
    Protocol { reason: String },

    /// A file could not be fetched (network down and nothing cached, or an HTTP error).
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
}

impl WorkerError {
    pub fn name(&self) -> &'static str {
        match self {
            WorkerError::Protocol { .. } => "ProtocolError",
            WorkerError::Fetch { .. } => "FetchError",
        }
    }
}
