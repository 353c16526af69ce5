//! Test support shared by the unit tests and the in-browser tests: a scripted [`Network`], so
//! the caching strategies can be driven offline and online at will. Not part of the API.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::serve::{Fetched, Network};
use crate::SwError;

/// Answers from a map while `online`, 404 for unknown URLs, and counts every request.
#[derive(Default)]
pub struct ScriptedNetwork {
    pub files: RefCell<HashMap<String, Fetched>>,
    pub online: Cell<bool>,
    pub requests: Cell<usize>,
}

impl ScriptedNetwork {
    /// Online, serving `body` with `status` at `url`.
    pub fn with(url: &str, status: u16, body: &[u8]) -> Self {
        let net = ScriptedNetwork { online: Cell::new(true), ..Default::default() };
        net.files.borrow_mut().insert(
            url.into(),
            Fetched { status, content_type: "application/octet-stream".into(), bytes: body.to_vec() },
        );
        net
    }
}

impl Network for ScriptedNetwork {
    async fn get(&self, url: &str) -> Result<Fetched, SwError> {
        self.requests.set(self.requests.get() + 1);
        if !self.online.get() {
            return Err(SwError::Network { url: url.into(), reason: "offline".into() });
        }
        Ok(self.files.borrow().get(url).cloned().unwrap_or(Fetched {
            status: 404,
            content_type: "text/plain".into(),
            bytes: vec![],
        }))
    }
}
