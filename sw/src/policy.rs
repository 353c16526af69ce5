//! Which shards leave the cache when a new one needs room: GreedyDual-Size-Frequency
//! (Cherkasova 1998), weighted by component priority. Pure and deterministic, so the service
//! worker's decisions can be unit-tested natively and replayed.
//!
//! Every stored shard carries a score, recomputed whenever it is used:
//!
//! ```text
//! score = L + uses × weight(priority) / size_MiB
//! weight(priority) = 1 + EARLY_BONUS / (1 + priority)    (priority 0 = tokenizer, then
//!                                                          embeddings, layer.0, …)
//! ```
//!
//! The victim is the lowest score; evicting it raises the cache's inflation `L` to that score,
//! so shards not used since then age relative to new ones (recency), shards used often keep a
//! higher score (frequency), big shards cost more room per use and go first (size), and the
//! first components — what progressive loading needs before the first token — are worth more
//! (priority). Ties go to the least recently used, then the lowest hash, so the order is total.
//!
//! Never evicted: shards of a pinned model, and shards of any model a client is loading right
//! now (`protected`). If the new shard cannot fit even after evicting everything else that may
//! go, the plan says so ([`Plan::DoesNotFit`]) and the caller serves from memory without storing.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ContentHash;

/// How much more the first component is worth than a late one (priority 0 gets ×(1 + 2)).
const EARLY_BONUS: f64 = 2.0;

/// What the cache records about one stored shard (persisted inside the shard's metadata
/// record, so field names are the IndexedDB record's, camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRecord {
    #[serde(rename = "sha256")]
    pub hash: ContentHash,
    pub bytes: u64,
    /// Milliseconds since the epoch of the last use (tie-break: least recent goes first).
    pub last_use: f64,
    pub uses: u32,
    /// The lowest component priority among the models that reference it.
    pub priority: u32,
    /// Models whose manifests reference this shard.
    pub models: BTreeSet<String>,
    /// GDSF score as of the last use.
    pub score: f64,
}

/// Models that may not lose shards right now.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    pub pinned: BTreeSet<String>,
    pub loading: BTreeSet<String>,
}

impl Protected {
    fn covers(&self, shard: &ShardRecord) -> bool {
        shard.models.iter().any(|m| self.pinned.contains(m) || self.loading.contains(m))
    }
}

/// The GDSF value of a shard used `uses` times.
pub fn value(bytes: u64, uses: u32, priority: u32) -> f64 {
    let mib = (bytes as f64 / (1u64 << 20) as f64).max(1.0 / 1024.0);
    uses as f64 * (1.0 + EARLY_BONUS / (1.0 + priority as f64)) / mib
}

/// Records a use (a hit, or the store of a new shard) at time `now` with inflation `l`.
pub fn touch(shard: &mut ShardRecord, now: f64, inflation: f64) {
    shard.uses = shard.uses.saturating_add(1);
    shard.last_use = now;
    shard.score = inflation + value(shard.bytes, shard.uses, shard.priority);
}

/// The cache's byte budget: the configured size, capped by what the browser's quota leaves
/// (quota − usage by others − a reserve so the origin never runs itself out of storage).
/// `our_usage` is what our shards already take: it is inside both `usage` and the budget.
pub fn budget(configured_bytes: Option<u64>, quota: u64, usage: u64, our_usage: u64, reserve: u64) -> u64 {
    let others = usage.saturating_sub(our_usage);
    let from_quota = quota.saturating_sub(others).saturating_sub(reserve);
    configured_bytes.map_or(from_quota, |c| c.min(from_quota))
}

/// What to do before storing a shard of `incoming` bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Evict these (in order; possibly none), then store. `inflation` is the new `L`.
    Evict { victims: Vec<ContentHash>, inflation: f64 },
    /// Even evicting every unprotected shard leaves no room: serve from memory, do not store.
    DoesNotFit { needed: u64, available: u64 },
}

/// Plans room for `incoming` bytes under `budget`, given the stored shards.
pub fn plan(stored: &[ShardRecord], incoming: u64, budget: u64, inflation: f64, protected: &Protected) -> Plan {
    let used: u64 = stored.iter().map(|s| s.bytes).sum();
    if used + incoming <= budget {
        return Plan::Evict { victims: vec![], inflation };
    }
    let mut candidates: Vec<&ShardRecord> = stored.iter().filter(|s| !protected.covers(s)).collect();
    candidates.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.last_use.total_cmp(&b.last_use)).then(a.hash.cmp(&b.hash)));
    let evictable: u64 = candidates.iter().map(|s| s.bytes).sum();
    if used - evictable + incoming > budget {
        return Plan::DoesNotFit { needed: incoming, available: budget.saturating_sub(used - evictable) };
    }
    let (mut victims, mut freed, mut inflation) = (Vec::new(), 0, inflation);
    for shard in candidates {
        if used - freed + incoming <= budget {
            break;
        }
        victims.push(shard.hash.clone());
        freed += shard.bytes;
        inflation = inflation.max(shard.score);
    }
    Plan::Evict { victims, inflation }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn shard(tag: &str, mib: u64, priority: u32, model: &str) -> ShardRecord {
        ShardRecord { hash: ContentHash::of(tag.as_bytes()), bytes: mib * MIB, last_use: 0.0, uses: 0, priority, models: [model.to_owned()].into(), score: 0.0 }
    }

    fn evicted(p: Plan) -> Vec<ContentHash> {
        match p {
            Plan::Evict { victims, .. } => victims,
            other => panic!("expected an eviction plan, got {other:?}"),
        }
    }

    #[test]
    fn nothing_is_evicted_while_it_fits() {
        let mut a = shard("a", 10, 3, "m");
        touch(&mut a, 1.0, 0.0);
        assert_eq!(plan(&[a], 5 * MIB, 20 * MIB, 0.0, &Protected::default()), Plan::Evict { victims: vec![], inflation: 0.0 });
    }

    #[test]
    fn frequency_wins_over_a_single_use() {
        let (mut hot, mut cold) = (shard("hot", 8, 3, "m"), shard("cold", 8, 3, "m"));
        for t in 0..5 {
            touch(&mut hot, t as f64, 0.0);
        }
        touch(&mut cold, 10.0, 0.0); // used last, but once
        assert_eq!(evicted(plan(&[hot, cold.clone()], 8 * MIB, 16 * MIB, 0.0, &Protected::default())), vec![cold.hash]);
    }

    #[test]
    fn early_components_are_kept_over_late_ones_of_the_same_size_and_use() {
        let (mut embeddings, mut late) = (shard("embeddings", 8, 1, "m"), shard("layer.29", 8, 31, "m"));
        touch(&mut embeddings, 1.0, 0.0);
        touch(&mut late, 1.0, 0.0);
        assert_eq!(evicted(plan(&[embeddings, late.clone()], 8 * MIB, 16 * MIB, 0.0, &Protected::default())), vec![late.hash]);
    }

    #[test]
    fn bigger_shards_go_first_at_equal_use() {
        let (mut big, mut small) = (shard("big", 32, 5, "m"), shard("small", 4, 5, "m"));
        touch(&mut big, 1.0, 0.0);
        touch(&mut small, 1.0, 0.0);
        assert_eq!(evicted(plan(&[small, big.clone()], 4 * MIB, 36 * MIB, 0.0, &Protected::default())), vec![big.hash]);
    }

    #[test]
    fn ties_break_by_recency_then_hash() {
        let (mut a, mut b) = (shard("a", 8, 2, "m"), shard("b", 8, 2, "m"));
        touch(&mut a, 5.0, 0.0);
        touch(&mut b, 3.0, 0.0);
        assert_eq!(evicted(plan(&[a.clone(), b.clone()], 8 * MIB, 16 * MIB, 0.0, &Protected::default())), vec![b.hash.clone()], "least recent first");
        touch(&mut b, 5.0, 0.0);
        b.uses = 1;
        b.score = a.score;
        let first = if a.hash < b.hash { a.hash.clone() } else { b.hash.clone() };
        assert_eq!(evicted(plan(&[a, b], 8 * MIB, 16 * MIB, 0.0, &Protected::default())), vec![first], "then the lowest hash");
    }

    #[test]
    fn pinned_and_loading_models_are_never_evicted() {
        let (mut pinned, mut loading, mut other) = (shard("p", 8, 9, "pinned"), shard("l", 8, 9, "loading"), shard("o", 8, 1, "other"));
        for s in [&mut pinned, &mut loading] {
            touch(s, 1.0, 0.0);
        }
        for t in 0..10 {
            touch(&mut other, 2.0 + t as f64, 0.0); // much more valuable, still the only choice
        }
        let protected = Protected { pinned: ["pinned".into()].into(), loading: ["loading".into()].into() };
        let stored = [pinned, loading, other.clone()];
        assert_eq!(evicted(plan(&stored, 8 * MIB, 24 * MIB, 0.0, &protected)), vec![other.hash]);
        assert_eq!(plan(&stored, 16 * MIB, 24 * MIB, 0.0, &protected), Plan::DoesNotFit { needed: 16 * MIB, available: 8 * MIB });
    }

    #[test]
    fn eviction_raises_the_inflation_so_old_favourites_age() {
        let (mut old, mut filler) = (shard("old", 8, 3, "m"), shard("filler", 8, 3, "m"));
        touch(&mut old, 1.0, 0.0);
        touch(&mut old, 2.0, 0.0);
        touch(&mut filler, 3.0, 0.0);
        let Plan::Evict { victims, inflation } = plan(&[old.clone(), filler.clone()], 8 * MIB, 16 * MIB, 0.0, &Protected::default()) else { panic!() };
        assert_eq!(victims, vec![filler.hash]);
        assert_eq!(inflation, filler.score);
        // A newcomer used once after that inflation ties with `old`, used twice before it,
        // and the tie goes against the older use: `old` leaves next.
        let mut newcomer = shard("new", 8, 3, "m");
        touch(&mut newcomer, 4.0, inflation);
        assert_eq!(evicted(plan(&[old.clone(), newcomer], 8 * MIB, 16 * MIB, inflation, &Protected::default())), vec![old.hash]);
    }

    #[test]
    fn the_budget_is_the_smaller_of_configured_and_quota_left() {
        // 1 GiB quota, 300 MiB used of which 200 MiB are ours, 100 MiB reserve.
        let gib = 1024 * MIB;
        assert_eq!(budget(None, gib, 300 * MIB, 200 * MIB, 100 * MIB), gib - 100 * MIB - 100 * MIB);
        assert_eq!(budget(Some(500 * MIB), gib, 300 * MIB, 200 * MIB, 100 * MIB), 500 * MIB);
        assert_eq!(budget(Some(500 * MIB), 50 * MIB, 300 * MIB, 0, 100 * MIB), 0, "never negative");
    }
}
