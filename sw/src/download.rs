//! Verified, resumable shard downloads.
//!
//! A shard is downloaded as a stream: every chunk is appended to the bytes so far, and every
//! [`FLUSH_BYTES`] the new bytes are handed to a [`PartialSink`] (the cache writes them to
//! IndexedDB as chunk records), so a download that dies part-way keeps what arrived — across
//! retries in this call, and across service-worker restarts through the stored chunks.
//!
//! ```text
//! for url in [request url, mirror₁/shards/<hash>.bin, mirror₂/…]:
//!     for attempt in 0..ATTEMPTS_PER_URL:          backoff 250 ms, 500 ms between attempts
//!         GET url   (Range: bytes=<have>- when we have a prefix)
//!         206 from <have>  → append          200 → the server ignored Range: start over
//!         stream error     → keep the prefix, retry (resumes)
//!         HTTP 4xx         → next url        5xx → retry
//!         complete         → SHA-256 + size check → done, or IntegrityError: drop it all, next url
//! ```
//!
//! Bytes are verified against the content address before anyone sees them: a body whose digest
//! or length is wrong is never returned, never stored. If every URL fails, the error is an
//! `IntegrityError` when any URL served wrong bytes (the most useful thing to report), else the
//! last failure.

use sha2::{Digest, Sha256};

use crate::serve::{Network, Opened, ResponseBody};
use crate::{ContentHash, SwError};

/// New bytes are written out (as one partial chunk) whenever this many have accumulated.
pub const FLUSH_BYTES: usize = 4 << 20;
/// Attempts per URL before moving to the next mirror.
pub const ATTEMPTS_PER_URL: u32 = 3;
/// First retry delay; doubles per attempt.
pub const BACKOFF_MS: u32 = 250;

/// Timers (and the clock) as the platform provides them: `setTimeout` in the browser.
#[allow(async_fn_in_trait)]
pub trait Sleep {
    async fn sleep(&self, ms: u32);
}

/// Where the bytes of an unfinished download go, so they survive a failure.
#[allow(async_fn_in_trait)]
pub trait PartialSink {
    /// Keep `chunk` as chunk number `index`; `received` bytes are now held in total.
    async fn flush(&self, index: u32, chunk: &[u8], received: u64);
    /// Forget every chunk (the prefix turned out useless: bad bytes, or a server without Range).
    async fn discard(&self);
}

/// A sink that keeps nothing (downloads that will not be stored: over budget).
pub struct NoSink;

impl PartialSink for NoSink {
    async fn flush(&self, _: u32, _: &[u8], _: u64) {}
    async fn discard(&self) {}
}

/// A finished, verified download.
#[derive(Debug)]
pub struct Downloaded {
    pub bytes: Vec<u8>,
    /// The URL that completed it.
    pub url: String,
    /// Body bytes received over the network in this call (what a resume saves shows here).
    pub transferred: u64,
}

/// The state of one shard's download across attempts.
struct Progress<'a, K: PartialSink> {
    hash: &'a ContentHash,
    expected: Option<u64>,
    bytes: Vec<u8>,
    /// `bytes[..flushed]` are held by the sink as `chunks` chunks.
    flushed: usize,
    chunks: u32,
    transferred: u64,
    sink: &'a K,
}

impl<K: PartialSink> Progress<'_, K> {
    async fn restart(&mut self) {
        self.bytes.clear();
        self.flushed = 0;
        self.chunks = 0;
        self.sink.discard().await;
    }

    async fn flush(&mut self) {
        if self.bytes.len() > self.flushed {
            self.sink.flush(self.chunks, &self.bytes[self.flushed..], self.bytes.len() as u64).await;
            self.chunks += 1;
            self.flushed = self.bytes.len();
        }
    }

    fn integrity(&self, url: &str, actual: String) -> SwError {
        SwError::Integrity { what: url.to_owned(), expected: self.hash.to_string(), actual }
    }

    /// One request to `url`, appending to what we have. `Ok` means the body ended normally.
    async fn attempt<N: Network>(&mut self, net: &N, url: &str) -> Result<(), SwError> {
        let from = self.bytes.len() as u64;
        let Opened { status, range_start, mut body } = net.open(url, from).await?;
        match status {
            200 if from > 0 => self.restart().await, // Range ignored: the full body follows
            200 => {}
            206 if range_start == Some(from) => {}
            206 => {
                // A range we did not ask for: treat like an interruption, from scratch.
                self.restart().await;
                return Err(SwError::Interrupted { url: url.to_owned(), received: 0, reason: format!("the server answered a different range ({range_start:?}) than bytes={from}-") });
            }
            416 => {
                // Our prefix is as long as (or longer than) the file: it cannot be right.
                self.restart().await;
                return Err(SwError::Interrupted { url: url.to_owned(), received: 0, reason: "HTTP 416 for the stored prefix; starting over".into() });
            }
            status => return Err(SwError::HttpStatus { url: url.to_owned(), status }),
        }
        loop {
            match body.chunk().await {
                Ok(Some(chunk)) => {
                    self.transferred += chunk.len() as u64;
                    self.bytes.extend_from_slice(&chunk);
                    if self.expected.is_some_and(|e| self.bytes.len() as u64 > e) {
                        return Err(self.integrity(url, format!("more than the {} bytes the manifest lists", self.expected.unwrap_or(0))));
                    }
                    if self.bytes.len() - self.flushed >= FLUSH_BYTES {
                        self.flush().await;
                    }
                }
                Ok(None) => return Ok(()),
                Err(err) => {
                    self.flush().await;
                    return Err(err);
                }
            }
        }
    }

    fn verify(&self, url: &str) -> Result<(), SwError> {
        let len = self.bytes.len() as u64;
        if self.expected.is_some_and(|e| e != len) {
            return Err(self.integrity(url, format!("{len} bytes instead of {}", self.expected.unwrap_or(0))));
        }
        let actual = hex::encode(Sha256::digest(&self.bytes));
        if actual != self.hash.as_str() {
            return Err(self.integrity(url, actual));
        }
        Ok(())
    }
}

/// Downloads shard `hash` (of `expected` bytes when a manifest says so) from `urls` in order,
/// resuming from `prefix` (`prefix_chunks` chunks the sink already holds).
pub async fn download<N: Network, T: Sleep, K: PartialSink>(
    net: &N,
    timer: &T,
    hash: &ContentHash,
    expected: Option<u64>,
    urls: &[String],
    prefix: (Vec<u8>, u32),
    sink: &K,
) -> Result<Downloaded, SwError> {
    let (bytes, chunks) = prefix;
    let mut progress = Progress { hash, expected, flushed: bytes.len(), bytes, chunks, transferred: 0, sink };
    let (mut integrity_error, mut last_error) = (None, None);
    for url in urls {
        for attempt in 0..ATTEMPTS_PER_URL {
            if attempt > 0 {
                timer.sleep(BACKOFF_MS << (attempt - 1)).await;
            }
            match progress.attempt(net, url).await {
                Ok(()) => match progress.verify(url) {
                    Ok(()) => return Ok(Downloaded { bytes: progress.bytes, url: url.clone(), transferred: progress.transferred }),
                    Err(err) => {
                        progress.restart().await;
                        integrity_error = Some(err);
                        break;
                    }
                },
                Err(err @ SwError::Integrity { .. }) => {
                    progress.restart().await;
                    integrity_error = Some(err);
                    break;
                }
                Err(err @ SwError::HttpStatus { status, .. }) => {
                    last_error = Some(err);
                    if status < 500 {
                        break;
                    }
                }
                Err(err) => last_error = Some(err),
            }
        }
    }
    Err(integrity_error.or(last_error).unwrap_or_else(|| SwError::Network { url: hash.to_string(), reason: "no URL to download it from".into() }))
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::testing::{ScriptedNetwork, NoSleep, RecordingSink};

    const MIB: usize = 1 << 20;

    fn shard(len: usize) -> (Vec<u8>, ContentHash) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let hash = ContentHash::of(&bytes);
        (bytes, hash)
    }

    fn run(net: &ScriptedNetwork, hash: &ContentHash, expected: usize, urls: &[&str], sink: &RecordingSink) -> Result<Downloaded, SwError> {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        block_on(download(net, &NoSleep, hash, Some(expected as u64), &urls, (vec![], 0), sink))
    }

    #[test]
    fn a_dropped_connection_resumes_with_range_and_transfers_each_byte_once() {
        let (bytes, hash) = shard(10 * MIB + 123);
        let net = ScriptedNetwork::with("http://a/s.bin", 200, &bytes);
        net.drop_after.borrow_mut().insert("http://a/s.bin".into(), vec![5 * MIB + 7]);
        let sink = RecordingSink::default();
        let done = run(&net, &hash, bytes.len(), &["http://a/s.bin"], &sink).unwrap();
        assert_eq!(done.bytes, bytes);
        assert_eq!(done.transferred, bytes.len() as u64, "nothing is downloaded twice");
        assert_eq!(net.ranges(), vec![None, Some(5 * MIB as u64 + 7)], "the retry asks for the rest");
        let chunks: Vec<usize> = sink.chunks.borrow().iter().map(|c| c.len()).collect();
        assert_eq!(chunks[..2], [FLUSH_BYTES, MIB + 7], "what arrived before the drop was kept, as it streamed and at the drop");
        assert_eq!(chunks[2..], [FLUSH_BYTES], "then each further 4 MiB of the rest");
    }

    #[test]
    fn a_server_ignoring_range_restarts_the_shard_cleanly() {
        let (bytes, hash) = shard(3 * MIB);
        let net = ScriptedNetwork::with("http://a/s.bin", 200, &bytes);
        net.drop_after.borrow_mut().insert("http://a/s.bin".into(), vec![MIB]);
        net.ignore_range.set(true);
        let sink = RecordingSink::default();
        let done = run(&net, &hash, bytes.len(), &["http://a/s.bin"], &sink).unwrap();
        assert_eq!(done.bytes, bytes);
        assert!(sink.discards.get() >= 1, "the useless prefix was dropped");
    }

    #[test]
    fn corrupt_bytes_are_never_returned_and_the_next_mirror_is_tried() {
        let (bytes, hash) = shard(100_000);
        let mut flipped = bytes.clone();
        flipped[500] ^= 0xff;
        let net = ScriptedNetwork::with("http://a/s.bin", 200, &flipped);
        net.put("http://mirror/shards/s.bin", 200, &bytes);
        let sink = RecordingSink::default();
        let err = run(&net, &hash, bytes.len(), &["http://a/s.bin"], &sink).unwrap_err();
        assert_eq!(err.name(), "IntegrityError");
        assert_eq!(net.requests.get(), 1, "a wrong body is not retried from the same URL");
        let done = run(&net, &hash, bytes.len(), &["http://a/s.bin", "http://mirror/shards/s.bin"], &sink).unwrap();
        assert_eq!((done.bytes, done.url.as_str()), (bytes, "http://mirror/shards/s.bin"));
    }

    #[test]
    fn a_body_longer_than_the_manifest_says_is_cut_off_as_corrupt() {
        let (bytes, hash) = shard(1000);
        let net = ScriptedNetwork::with("http://a/s.bin", 200, &[bytes.clone(), vec![0; 10]].concat());
        let err = run(&net, &hash, bytes.len(), &["http://a/s.bin"], &RecordingSink::default()).unwrap_err();
        assert_eq!(err.name(), "IntegrityError");
    }

    #[test]
    fn not_found_moves_on_and_server_errors_are_retried_with_bounded_attempts() {
        let (bytes, hash) = shard(1000);
        let net = ScriptedNetwork::with("http://a/s.bin", 404, b"");
        net.put("http://b/s.bin", 503, b"");
        let err = run(&net, &hash, bytes.len(), &["http://a/s.bin", "http://b/s.bin"], &RecordingSink::default()).unwrap_err();
        assert_eq!(err, SwError::HttpStatus { url: "http://b/s.bin".into(), status: 503 });
        assert_eq!(net.requests.get(), 1 + ATTEMPTS_PER_URL as usize, "404 once, 503 retried to the limit");
    }

    #[test]
    fn offline_is_a_network_error_after_the_retries() {
        let (bytes, hash) = shard(1000);
        let net = ScriptedNetwork::with("http://a/s.bin", 200, &bytes);
        net.online.set(false);
        let err = run(&net, &hash, bytes.len(), &["http://a/s.bin"], &RecordingSink::default()).unwrap_err();
        assert_eq!(err.name(), "NetworkError");
        assert_eq!(net.requests.get(), ATTEMPTS_PER_URL as usize);
    }
}
