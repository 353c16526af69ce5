//! The host ↔ worker protocol: every message type that crosses `postMessage`, as JSON.
//!
//! Mirrors `host-js/protocol.js` field for field; both sides' tests parse the shared examples in
//! `tests/fixtures/protocol.json`, so a rename on one side fails the other's tests.
//!
//! ```text
//! host → worker   {"id": 7, "type": "fetchFile", "url": "/models/x"}
//! worker → host   {"id": 7, "type": "result", "value": {...}}
//!                 {"id": 7, "type": "error", "error": {"name": "FetchError", "message": "..."}}
//! ```

use serde::{Deserialize, Serialize};

use crate::WorkerError;

/// A request from the host, with the id its reply will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub id: u64,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// What this worker can run on: WebGPU adapter, WASM SIMD, threads.
    Capabilities,
    /// Fetch a file (through the service worker when one controls the page) and report its
    /// size, SHA-256 and where the bytes came from. The plumbing check under every model load.
    FetchFile { url: String },
}

/// A reply to request `id`: its result, or a named error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Reply {
    Result { id: u64, value: serde_json::Value },
    Error { id: u64, error: ErrorPayload },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    pub name: String,
    pub message: String,
}

impl From<&WorkerError> for ErrorPayload {
    fn from(err: &WorkerError) -> Self {
        ErrorPayload { name: err.name().to_owned(), message: err.to_string() }
    }
}

/// Result of [`Request::Capabilities`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub webgpu: WebGpuReport,
    /// The CPU backend was compiled with 128-bit WASM SIMD.
    pub wasm_simd: bool,
    pub cross_origin_isolated: bool,
    pub hardware_concurrency: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebGpuReport {
    pub available: bool,
    /// Why not, when `available` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterSummary {
    pub vendor: String,
    pub architecture: String,
    pub description: String,
    pub is_fallback_adapter: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub max_storage_buffer_binding_size: f64,
    pub max_buffer_size: f64,
}

/// Result of [`Request::FetchFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchedFile {
    pub url: String,
    pub bytes: u64,
    pub sha256: String,
    /// `"store"` (IndexedDB, via the service worker), or `"network"`.
    pub source: String,
}

/// Parses one host message. The id is recovered even from a request we cannot parse, so the
/// host's pending promise still gets its (error) reply.
pub fn parse_request(message: &str) -> Result<RequestEnvelope, (Option<u64>, WorkerError)> {
    serde_json::from_str(message).map_err(|e| {
        let id = serde_json::from_str::<serde_json::Value>(message).ok().and_then(|v| v.get("id")?.as_u64());
        (id, WorkerError::Protocol { reason: e.to_string() })
    })
}

/// The reply for request `id` given the handler's outcome.
pub fn reply<T: Serialize>(id: u64, outcome: Result<T, WorkerError>) -> Reply {
    match outcome.and_then(|v| serde_json::to_value(v).map_err(|e| WorkerError::Protocol { reason: e.to_string() })) {
        Ok(value) => Reply::Result { id, value },
        Err(err) => Reply::Error { id, error: ErrorPayload::from(&err) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> serde_json::Value {
        let text = include_str!("../../tests/fixtures/protocol.json");
        serde_json::from_str(text).expect("tests/fixtures/protocol.json is valid JSON")
    }

    #[test]
    fn every_fixture_request_round_trips() {
        let f = fixtures();
        let requests = f["requests"].as_array().unwrap();
        assert!(!requests.is_empty());
        for example in requests {
            let parsed: RequestEnvelope = serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_eq!(serde_json::to_value(&parsed).unwrap(), *example);
        }
    }

    #[test]
    fn every_fixture_reply_round_trips() {
        let f = fixtures();
        for example in f["replies"].as_array().unwrap() {
            let parsed: Reply = serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{example}: {e}"));
            assert_eq!(serde_json::to_value(&parsed).unwrap(), *example);
        }
        let caps: Capabilities = serde_json::from_value(f["capabilities"].clone()).unwrap();
        assert!(caps.webgpu.available);
        let fetched: FetchedFile = serde_json::from_value(f["fetchedFile"].clone()).unwrap();
        assert_eq!(fetched.sha256.len(), 64);
    }

    #[test]
    fn malformed_requests_keep_their_id_and_get_a_named_error() {
        let (id, err) = parse_request(r#"{"id": 9, "type": "launchMissiles"}"#).unwrap_err();
        assert_eq!((id, err.name()), (Some(9), "ProtocolError"));
        let (id, err) = parse_request("not json").unwrap_err();
        assert_eq!((id, err.name()), (None, "ProtocolError"));
        let (_, err) = parse_request(r#"{"id": 1, "type": "fetchFile"}"#).unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
    }

    #[test]
    fn reply_carries_result_or_named_error() {
        let ok = reply(3, Ok(FetchedFile { url: "/a".into(), bytes: 1, sha256: "0".repeat(64), source: "network".into() }));
        assert!(matches!(ok, Reply::Result { id: 3, .. }));
        let err = reply::<()>(4, Err(WorkerError::Fetch { url: "/a".into(), reason: "HTTP 404".into() }));
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["name"], "FetchError");
    }
}
