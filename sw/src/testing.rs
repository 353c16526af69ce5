//! Test support shared by the unit tests and the in-browser tests: a scripted [`Network`] with
//! faults on demand (offline, dropped connections, servers that ignore `Range`), a timer that
//! does not wait, and a sink that records partial chunks. Not part of the API.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::download::{PartialSink, Sleep};
use crate::serve::{Fetched, Network, Opened, ResponseBody};
use crate::SwError;

/// Answers from a map while `online`, 404 for unknown URLs, and logs every request.
#[derive(Default)]
pub struct ScriptedNetwork {
    pub files: RefCell<HashMap<String, Fetched>>,
    pub online: Cell<bool>,
    pub requests: Cell<usize>,
    /// Per URL: byte counts after which successive responses break off (one per request).
    pub drop_after: RefCell<HashMap<String, Vec<usize>>>,
    /// Answer `Range` requests with the whole file (200), like a server without range support.
    pub ignore_range: Cell<bool>,
    /// (url, requested start) of every `open`.
    pub log: RefCell<Vec<(String, Option<u64>)>>,
}

impl ScriptedNetwork {
    /// Online, serving `body` with `status` at `url`.
    pub fn with(url: &str, status: u16, body: &[u8]) -> Self {
        let net = ScriptedNetwork { online: Cell::new(true), ..Default::default() };
        net.put(url, status, body);
        net
    }

    pub fn put(&self, url: &str, status: u16, body: &[u8]) {
        self.files.borrow_mut().insert(url.into(), Fetched { status, content_type: "application/octet-stream".into(), bytes: body.to_vec() });
    }

    /// The `Range` start of every streamed request, in order (`None`: no Range header).
    pub fn ranges(&self) -> Vec<Option<u64>> {
        self.log.borrow().iter().map(|(_, r)| *r).collect()
    }

    /// Streamed requests made for `url`.
    pub fn opens_of(&self, url: &str) -> usize {
        self.log.borrow().iter().filter(|(u, _)| u == url).count()
    }
}

/// A scripted body: 64 KiB chunks, optionally breaking off after `cut` bytes.
pub struct ScriptedBody {
    bytes: Vec<u8>,
    at: usize,
    cut: Option<usize>,
}

/// Returns `Pending` once: lets other futures run, like a real network read does.
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl ResponseBody for ScriptedBody {
    async fn chunk(&mut self) -> Result<Option<Vec<u8>>, SwError> {
        YieldNow(false).await;
        let end = self.cut.unwrap_or(self.bytes.len());
        if self.at >= end {
            return match self.cut {
                Some(_) => Err(SwError::Interrupted { url: "scripted".into(), received: self.at as u64, reason: "connection reset".into() }),
                None => Ok(None),
            };
        }
        let next = (self.at + (64 << 10)).min(end);
        let chunk = self.bytes[self.at..next].to_vec();
        self.at = next;
        Ok(Some(chunk))
    }
}

impl Network for ScriptedNetwork {
    type Body = ScriptedBody;

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

    async fn open(&self, url: &str, from: u64) -> Result<Opened<ScriptedBody>, SwError> {
        self.log.borrow_mut().push((url.to_owned(), (from > 0).then_some(from)));
        let fetched = self.get(url).await?;
        let cut = self.drop_after.borrow_mut().get_mut(url).and_then(|cuts| (!cuts.is_empty()).then(|| cuts.remove(0)));
        let ranged = from > 0 && fetched.status == 200 && !self.ignore_range.get();
        let (status, start) = if ranged { (206, from as usize) } else { (fetched.status, 0) };
        let bytes = fetched.bytes.get(start.min(fetched.bytes.len())..).unwrap_or_default().to_vec();
        let cut = cut.map(|c| c.saturating_sub(start).min(bytes.len()));
        Ok(Opened { status, range_start: ranged.then_some(from), body: ScriptedBody { bytes, at: 0, cut } })
    }
}

/// A timer that returns at once (backoff is policy, not something a unit test should wait on).
pub struct NoSleep;

impl Sleep for NoSleep {
    async fn sleep(&self, _ms: u32) {}
}

/// Records the chunks handed to it.
#[derive(Default)]
pub struct RecordingSink {
    pub chunks: RefCell<Vec<Vec<u8>>>,
    pub discards: Cell<usize>,
}

impl PartialSink for RecordingSink {
    async fn flush(&self, index: u32, chunk: &[u8], _received: u64) {
        let mut chunks = self.chunks.borrow_mut();
        assert_eq!(index as usize, chunks.len(), "chunks are flushed in order");
        chunks.push(chunk.to_vec());
    }

    async fn discard(&self) {
        self.chunks.borrow_mut().clear();
        self.discards.set(self.discards.get() + 1);
    }
}
