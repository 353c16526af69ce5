//! Which requests the service worker answers, and how. Pure string logic, so the decision is
//! unit-tested natively and the entry stays a thin shell.
//!
//! - `models/…/shards/<sha256>.bin` → [`Route::Shard`]: the shard cache
//!   ([`crate::shard_cache`]), keyed by the hash, not the URL.
//! - `models/…/manifest.json` → [`Route::Manifest`]: network-first with the stored copy offline;
//!   the cache learns the model from it.
//! - other `models/…` files → [`Route::ModelFile`]: cache-first (model source files).
//! - any other same-origin GET under the scope → [`Route::AppShell`]: network-first, so a new
//!   build is picked up at once, with the stored copy as the offline fallback.
//! - cross-origin, non-GET, or `Range` requests → [`Route::Passthrough`]: the browser's own
//!   network path. (Range answers from storage arrive with resumable downloads.)

use crate::{ContentHash, SwError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `models/…/shards/<sha256>.bin`: the shard cache (verified, budgeted, resumable).
    Shard { hash: ContentHash },
    /// `models/…/manifest.json`: network-first (a re-pack changes it), stored for offline use,
    /// and registered with the shard cache (the model's shards, priorities and mirrors).
    Manifest { key: String },
    ModelFile { key: String },
    AppShell { key: String },
    Passthrough,
}

/// Decides the route for a request. `scope` is the service worker's registration scope (an
/// absolute URL ending in `/`); the storage key is the request's absolute path without query or
/// fragment, so `/models/a.bin?v=2` and `/models/a.bin` share one record.
pub fn route_request(method: &str, url: &str, scope: &str, has_range: bool) -> Result<Route, SwError> {
    let (req_origin, req_path) = split_origin(url)?;
    let (scope_origin, scope_path) = split_origin(scope)?;
    if !method.eq_ignore_ascii_case("GET") || has_range || req_origin != scope_origin {
        return Ok(Route::Passthrough);
    }
    let Some(inside) = req_path.strip_prefix(scope_path) else {
        return Ok(Route::Passthrough);
    };
    let key = req_path.to_owned();
    if let Some(model_path) = inside.strip_prefix("models/") {
        if let Some(hash) = shard_hash(model_path) {
            return Ok(Route::Shard { hash });
        }
        if model_path.ends_with("/manifest.json") {
            return Ok(Route::Manifest { key });
        }
        Ok(Route::ModelFile { key })
    } else {
        Ok(Route::AppShell { key })
    }
}

/// `…/shards/<sha256>.bin` → the hash.
fn shard_hash(path: &str) -> Option<ContentHash> {
    let (dir, file) = path.rsplit_once('/')?;
    if !(dir == "shards" || dir.ends_with("/shards")) {
        return None;
    }
    ContentHash::parse(file.strip_suffix(".bin")?).ok()
}

/// The storage key of a URL: its absolute path, without query or fragment.
pub fn storage_key(url: &str) -> Result<String, SwError> {
    Ok(split_origin(url)?.1.to_owned())
}

/// `scheme://authority/path?query#frag` → (`scheme://authority`, `/path`).
fn split_origin(url: &str) -> Result<(&str, &str), SwError> {
    let bad = || SwError::BadUrl { url: url.to_owned() };
    let after_scheme = url.find("://").ok_or_else(bad)? + 3;
    let path_start = url[after_scheme..].find('/').map_or(url.len(), |i| after_scheme + i);
    let origin = &url[..path_start];
    let rest = &url[path_start..];
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = if rest.is_empty() { "/" } else { &rest[..path_end] };
    if after_scheme == 3 || origin.len() == after_scheme {
        return Err(bad());
    }
    Ok((origin, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: &str = "http://127.0.0.1:8080/";

    fn route(method: &str, url: &str) -> Route {
        route_request(method, url, SCOPE, false).unwrap()
    }

    #[test]
    fn model_files_are_cache_first_and_keyed_without_query() {
        assert_eq!(
            route("GET", "http://127.0.0.1:8080/models/minilm-l6/tokenizer.json?v=3#x"),
            Route::ModelFile { key: "/models/minilm-l6/tokenizer.json".into() }
        );
    }

    #[test]
    fn shards_and_manifests_have_their_own_routes() {
        let hash = "ab".repeat(32);
        assert_eq!(route("GET", &format!("http://127.0.0.1:8080/models/m/shards/{hash}.bin?x=1")), Route::Shard { hash: ContentHash::parse(&hash).unwrap() });
        assert_eq!(route("GET", "http://127.0.0.1:8080/models/m/manifest.json"), Route::Manifest { key: "/models/m/manifest.json".into() });
        // Not a content address: an ordinary model file.
        assert_eq!(route("GET", "http://127.0.0.1:8080/models/m/shards/ABC.bin"), Route::ModelFile { key: "/models/m/shards/ABC.bin".into() });
        assert_eq!(route("GET", &format!("http://127.0.0.1:8080/models/m/{hash}.bin")), Route::ModelFile { key: format!("/models/m/{hash}.bin") });
    }

    #[test]
    fn other_same_origin_gets_are_app_shell() {
        assert_eq!(route("GET", "http://127.0.0.1:8080/"), Route::AppShell { key: "/".into() });
        assert_eq!(route("get", "http://127.0.0.1:8080/pkg/worker_bg.wasm"), Route::AppShell { key: "/pkg/worker_bg.wasm".into() });
        assert_eq!(route("GET", "http://127.0.0.1:8080"), Route::AppShell { key: "/".into() });
    }

    #[test]
    fn passthrough_for_foreign_origin_non_get_and_range() {
        assert_eq!(route("GET", "http://127.0.0.1:9999/models/x"), Route::Passthrough);
        assert_eq!(route("GET", "https://cdn.example/models/x"), Route::Passthrough);
        assert_eq!(route("POST", "http://127.0.0.1:8080/models/x"), Route::Passthrough);
        assert_eq!(route_request("GET", "http://127.0.0.1:8080/models/x", SCOPE, true).unwrap(), Route::Passthrough);
    }

    #[test]
    fn scope_below_root_only_claims_its_subtree() {
        let scope = "https://example.org/app/";
        let r = |u| route_request("GET", u, scope, false).unwrap();
        assert_eq!(r("https://example.org/app/models/m/manifest.json"), Route::Manifest { key: "/app/models/m/manifest.json".into() });
        assert_eq!(r("https://example.org/models/m/manifest.json"), Route::Passthrough);
        assert_eq!(r("https://example.org/app/index.html"), Route::AppShell { key: "/app/index.html".into() });
    }

    #[test]
    fn malformed_urls_are_named_errors() {
        for bad in ["", "no-scheme", "http://", "://x/"] {
            let err = route_request("GET", bad, SCOPE, false).unwrap_err();
            assert_eq!(err.name(), "BadUrlError", "{bad:?}");
        }
    }
}
