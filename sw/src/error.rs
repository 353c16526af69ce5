//! The one error type of the `sw` crate. Each variant is a named failure with what a user or
//! developer needs to act on it; the service-worker entry turns it into a JS `Error` whose
//! `name` is [`SwError::name`] exactly once, at the wasm boundary.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SwError {
    /// The network could not be reached (offline, connection refused, DNS) and nothing is stored.
    #[error("cannot fetch {url}: {reason}; it is not cached either — reconnect and retry, or prefetch it while online")]
    Network { url: String, reason: String },

    /// The server answered, but not with the file.
    #[error("{url} answered HTTP {status}; check the URL and that the server hosts this file")]
    HttpStatus { url: String, status: u16 },

    /// IndexedDB (or the in-memory store) refused an operation.
    #[error("storage {op} failed for {key}: {reason}")]
    Storage { op: &'static str, key: String, reason: String },

    /// A string that should be a SHA-256 content address is not one.
    #[error("{value:?} is not a SHA-256 content address (expected 64 lowercase hex digits)")]
    InvalidHash { value: String },

    /// A request URL could not be parsed.
    #[error("cannot parse request URL {url:?}")]
    BadUrl { url: String },

    /// A packed model's manifest is malformed or inconsistent.
    #[error("invalid model manifest: {reason}; re-pack the model with `accel pack`")]
    Manifest { reason: String },

    /// A manifest written by a newer version of the packer.
    #[error("the model manifest has format version {found}, but this build reads up to version {supported}; update ipfs-accelerate-web")]
    ManifestVersion { found: u64, supported: u32 },

    /// The browser refused to store more (IndexedDB `QuotaExceededError`), even after eviction.
    #[error("storage quota exceeded while storing {key}: {reason}; the model still runs from memory but will download again next time — free space, lower other sites' usage, or call cache.persist()")]
    Quota { key: String, reason: String },

    /// A download stopped part-way (connection dropped, stream error). What arrived is kept
    /// and the next attempt resumes from it with an HTTP `Range` request.
    #[error("the download of {url} stopped after {received} bytes: {reason}")]
    Interrupted { url: String, received: u64, reason: String },

    /// A cache message (from `acc.cache.*`) that is malformed or names nothing we know.
    #[error("cache request refused: {reason}")]
    CacheRequest { reason: String },

    /// Bytes that are not what their content address says (corrupt download or file).
    #[error("{what} failed verification: expected sha256 {expected}, got {actual}; it was not used — re-download or re-pack it")]
    Integrity { what: String, expected: String, actual: String },
}

impl SwError {
    /// Every [`SwError::name`], for code that receives one as text (the worker reads the
    /// service worker's `x-accel-error` header). The test below keeps it complete.
    pub const NAMES: &'static [&'static str] = &[
        "NetworkError",
        "HttpStatusError",
        "StorageError",
        "InvalidHashError",
        "BadUrlError",
        "ManifestError",
        "ManifestVersionError",
        "QuotaError",
        "DownloadInterruptedError",
        "CacheRequestError",
        "IntegrityError",
    ];

    /// The stable error name JS sees (`error.name`); tests and users match on it.
    pub fn name(&self) -> &'static str {
        match self {
            SwError::Network { .. } => "NetworkError",
            SwError::HttpStatus { .. } => "HttpStatusError",
            SwError::Storage { .. } => "StorageError",
            SwError::InvalidHash { .. } => "InvalidHashError",
            SwError::BadUrl { .. } => "BadUrlError",
            SwError::Manifest { .. } => "ManifestError",
            SwError::ManifestVersion { .. } => "ManifestVersionError",
            SwError::Integrity { .. } => "IntegrityError",
            SwError::Quota { .. } => "QuotaError",
            SwError::Interrupted { .. } => "DownloadInterruptedError",
            SwError::CacheRequest { .. } => "CacheRequestError",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lists_every_variant_once() {
        let s = String::new;
        let every_variant = [
            SwError::Network { url: s(), reason: s() },
            SwError::HttpStatus { url: s(), status: 404 },
            SwError::Storage { op: "put", key: s(), reason: s() },
            SwError::InvalidHash { value: s() },
            SwError::BadUrl { url: s() },
            SwError::Manifest { reason: s() },
            SwError::ManifestVersion { found: 2, supported: 1 },
            SwError::Quota { key: s(), reason: s() },
            SwError::Interrupted { url: s(), received: 0, reason: s() },
            SwError::CacheRequest { reason: s() },
            SwError::Integrity { what: s(), expected: s(), actual: s() },
        ];
        for err in &every_variant {
            // Exhaustive: a new variant fails to compile here until it is listed above too.
            match err {
                SwError::Network { .. }
                | SwError::HttpStatus { .. }
                | SwError::Storage { .. }
                | SwError::InvalidHash { .. }
                | SwError::BadUrl { .. }
                | SwError::Manifest { .. }
                | SwError::ManifestVersion { .. }
                | SwError::Quota { .. }
                | SwError::Interrupted { .. }
                | SwError::CacheRequest { .. }
                | SwError::Integrity { .. } => {}
            }
        }
        let names: Vec<&str> = every_variant.iter().map(SwError::name).collect();
        assert_eq!(names, SwError::NAMES);
    }
}
