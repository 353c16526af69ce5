//! The decoder's key/value cache: a fixed number of positions per layer, allocated once, with an
//! optional sliding window that keeps the first few "attention sink" tokens (Xiao et al. 2023,
//! StreamingLLM) and drops the oldest of the rest when new tokens need room.
//!
//! Invariant: the entry at cache index j was rotated (RoPE) for position j. When the window drops
//! n entries after the sinks, the later entries move down n slots and their keys are rotated back
//! by n positions, so the invariant holds and positions never exceed the context (llama.cpp's
//! "context shift" does the same). Values carry no position and just move.

use crate::ops::rope::RopeTable;
use crate::WorkerError;

/// Sliding-window policy: keep `sinks` first entries forever, slide the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    pub sinks: usize,
}

#[derive(Debug, Clone)]
pub struct KvCache {
    /// [layer][context, kv_dim]
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    /// Entries in use (the next token goes to index `len`, rotated for position `len`).
    pub len: usize,
    /// Capacity in positions.
    pub context: usize,
    pub window: Option<SlidingWindow>,
    /// Entries dropped by the window so far (reported, e.g. to show that a chat was truncated).
    pub dropped: usize,
}

impl KvCache {
    pub fn new(layers: usize, kv_dim: usize, context: usize) -> Self {
        KvCache {
            keys: vec![vec![0.0; context * kv_dim]; layers],
            values: vec![vec![0.0; context * kv_dim]; layers],
            kv_dim,
            len: 0,
            context,
            window: None,
            dropped: 0,
        }
    }

    /// Whether `tokens` more can be added, sliding the window if there is one.
    pub fn fits(&self, tokens: usize) -> bool {
        match self.window {
            Some(w) => w.sinks.min(self.len) + tokens <= self.context,
            None => self.len + tokens <= self.context,
        }
    }

    /// Makes room for `tokens` new entries: nothing when they fit, else (with a window) drops
    /// the oldest non-sink entries — a quarter of the window at least, so the move is rare —
    /// or (without one) refuses with `ContextOverflow`.
    pub fn make_room(&mut self, tokens: usize, rope: &RopeTable) -> Result<(), WorkerError> {
        if self.len + tokens <= self.context {
            return Ok(());
        }
        let overflow = WorkerError::ContextOverflow { tokens: self.len + tokens, context: self.context };
        let Some(window) = self.window else { return Err(overflow) };
        let sinks = window.sinks.min(self.len);
        if !self.fits(tokens) {
            return Err(overflow);
        }
        let needed = self.len + tokens - self.context;
        let drop = needed.max((self.context - sinks) / 4).min(self.len - sinks);
        let kv = self.kv_dim;
        for (keys, values) in self.keys.iter_mut().zip(&mut self.values) {
            keys.copy_within((sinks + drop) * kv..self.len * kv, sinks * kv);
            values.copy_within((sinks + drop) * kv..self.len * kv, sinks * kv);
            for key in keys[sinks * kv..(self.len - drop) * kv].chunks_exact_mut(kv) {
                rope.rotate_back(key, drop);
            }
        }
        self.len -= drop;
        self.dropped += drop;
        Ok(())
    }

    /// Stores one layer's new entries at [len, len + t). keys, values: [t, kv_dim].
    pub fn store(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        let at = self.len * self.kv_dim;
        self.keys[layer][at..][..keys.len()].copy_from_slice(keys);
        self.values[layer][at..][..values.len()].copy_from_slice(values);
    }

    /// The first `entries` cached keys and values of a layer: [entries, kv_dim] each.
    pub fn visible(&self, layer: usize, entries: usize) -> (&[f32], &[f32]) {
        let n = entries * self.kv_dim;
        (&self.keys[layer][..n], &self.values[layer][..n])
    }

    pub fn byte_len(&self) -> usize {
        4 * (self.keys.iter().map(Vec::len).sum::<usize>() + self.values.iter().map(Vec::len).sum::<usize>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::rope::RopeStyle;

    #[test]
    fn the_window_keeps_sinks_and_renumbers_what_it_keeps() {
        let (kv, context) = (8, 10);
        let rope = RopeTable::new(RopeStyle::AdjacentPairs, 4, 10000.0, context);
        let raw = |p: usize| -> Vec<f32> { (0..kv).map(|i| ((p * kv + i) as f32 * 0.37).cos()).collect() };
        let mut cache = KvCache::new(1, kv, context);
        cache.window = Some(SlidingWindow { sinks: 2 });
        for p in 0..context {
            let mut k = raw(p);
            rope.apply(&mut k, p);
            cache.store(0, &k, &raw(p));
            cache.len += 1;
        }
        assert!(cache.fits(1) && !cache.fits(9));
        cache.make_room(1, &rope).unwrap();
        // (10 − 2) / 4 = 2 dropped: entries 2 and 3. Entry 4 is now at index 2, rotated for 2.
        assert_eq!((cache.len, cache.dropped), (8, 2));
        let (keys, values) = cache.visible(0, cache.len);
        for (j, original) in [0, 1, 4, 5, 6, 7, 8, 9].into_iter().enumerate() {
            let mut want = raw(original);
            rope.apply(&mut want, j);
            for (a, b) in keys[j * kv..][..kv].iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "key at {j} (was {original}): {a} vs {b}");
            }
            assert_eq!(&values[j * kv..][..kv], &raw(original)[..]);
        }
    }

    #[test]
    fn without_a_window_a_full_cache_is_a_named_error() {
        let rope = RopeTable::new(RopeStyle::AdjacentPairs, 4, 10000.0, 4);
        let mut cache = KvCache::new(1, 4, 4);
        cache.len = 3;
        assert!(cache.make_room(1, &rope).is_ok());
        assert_eq!(cache.make_room(2, &rope).unwrap_err().name(), "ContextOverflowError");
        cache.window = Some(SlidingWindow { sinks: 3 });
        assert_eq!(cache.make_room(2, &rope).unwrap_err().name(), "ContextOverflowError", "sinks leave no room");
    }
}
