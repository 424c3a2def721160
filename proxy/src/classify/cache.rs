//! A classification cache bounded by bytes (key text plus results), not by count.
//!
//! Entries are keyed by a [`Key`]: a statement's text with its literals normalised, or its
//! exact text (see [`super::key`]). Sixteen shards, each a hash map keyed by the key's
//! 64-bit hash (computed once, with a per-process random key, so clients cannot aim
//! collisions) under a `RwLock`; a hit takes the read lock, compares the key and clones an
//! `Arc`. Eviction is CLOCK (second chance): a hit sets the entry's referenced bit, and the
//! eviction hand skips referenced entries once. An entry larger than a shard's budget (1/16
//! of the total) is not cached. Each shard counts its hits and misses.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::analyze::Recheck;
use super::types::Classification;

const SHARDS: usize = 16;

/// Estimated bytes of bookkeeping per entry beyond the entry itself: the map slot's key and
/// control byte at the maximum load factor, the CLOCK queue slot, the `Arc` counters and
/// the text's allocation rounding.
const OVERHEAD: usize = 64;

/// What a classification is cached under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key<'a> {
    /// The normalised text, or the exact text.
    pub(super) text: &'a str,
    /// `text` is normalised: never equal to an exact text, whatever its bytes.
    pub(super) normalised: bool,
}

/// A cached classification.
#[derive(Debug)]
struct Entry {
    text: Box<str>,
    normalised: bool,
    result: Arc<Classification>,
    /// Set when the function policy can change `result`.
    recheck: Option<Arc<Recheck>>,
    /// The policy generation `result` was computed under.
    generation: u64,
    size: usize,
    referenced: AtomicBool,
}

/// What a lookup found.
#[derive(Debug)]
pub(super) enum Lookup {
    /// A current result.
    Hit(Arc<Classification>),
    /// A result computed under another function policy: recompute with this.
    Stale(Arc<Classification>, Arc<Recheck>),
    Miss,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<Identity>>,
    /// CLOCK order: every key of `map` exactly once.
    order: VecDeque<u64>,
    used: usize,
    /// Lookups answered from this shard (current or stale results).
    hits: AtomicU64,
    /// Lookups that found nothing.
    misses: AtomicU64,
}

/// The cache.
#[derive(Debug)]
pub(super) struct Cache {
    shards: Box<[RwLock<Shard>]>,
    shard_budget: usize,
    /// XXH3's seed, random per process.
    seed: u64,
}

impl Cache {
    pub(super) fn new(budget: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            shard_budget: budget / SHARDS,
            seed: RandomState::new().hash_one(0u8),
        }
    }

    /// The key's hash: XXH3 of its text, seeded per process (so clients cannot aim
    /// collisions at one bucket; a collision only costs a miss anyway), with the normalised
    /// flag mixed in (a normalised text never equals an exact one).
    pub(super) fn hash(&self, key: Key<'_>) -> u64 {
        let text = xxhash_rust::xxh3::xxh3_64_with_seed(key.text.as_bytes(), self.seed);
        text ^ u64::from(key.normalised).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // Bits 32..36: the map itself uses the low bits (bucket) and the top seven (tag).
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// Looks `key` (whose hash is `hash`) up; `generation` is the current policy's.
    pub(super) fn get(&self, hash: u64, key: Key<'_>, generation: u64) -> Lookup {
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let found = shard
            .map
            .get(&hash)
            .filter(|e| e.normalised == key.normalised && &*e.text == key.text);
        let Some(entry) = found else {
            shard.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        };
        shard.hits.fetch_add(1, Ordering::Relaxed);
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        match &entry.recheck {
            Some(recheck) if entry.generation != generation => {
                Lookup::Stale(Arc::clone(&entry.result), Arc::clone(recheck))
            }
            _ => Lookup::Hit(Arc::clone(&entry.result)),
        }
    }

    /// Caches `result` for `key` (replacing any entry with the same hash), evicting as
    /// needed; does nothing if the entry alone exceeds a shard's budget.
    pub(super) fn insert(
        &self,
        hash: u64,
        key: Key<'_>,
        result: Arc<Classification>,
        recheck: Option<Arc<Recheck>>,
        generation: u64,
    ) {
        let size = entry_size(key.text, &result, recheck.as_deref());
        if size > self.shard_budget {
            return;
        }
        let entry = Entry {
            text: key.text.into(),
            normalised: key.normalised,
            result,
            recheck,
            generation,
            size,
            referenced: AtomicBool::new(false),
        };
        let mut shard = self
            .shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        shard.put(hash, entry, self.shard_budget);
    }

    /// Bytes accounted to cached entries.
    pub(super) fn used(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).used)
            .sum()
    }

    /// Number of cached entries.
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    /// Lookups so far that found an entry (hits) and that did not (misses).
    pub(super) fn lookups(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(hits, misses), s| {
            let shard = s.read().unwrap_or_else(PoisonError::into_inner);
            (
                hits + shard.hits.load(Ordering::Relaxed),
                misses + shard.misses.load(Ordering::Relaxed),
            )
        })
    }

    /// The budget: at most this many bytes are accounted at any time.
    pub(super) fn budget(&self) -> usize {
        self.shard_budget * SHARDS
    }
}

impl Shard {
    fn put(&mut self, hash: u64, entry: Entry, budget: usize) {
        let size = entry.size;
        if let Some(old) = self.map.get_mut(&hash) {
            self.used = self.used - old.size + size;
            *old = entry;
            self.evict_to(budget, Some(hash));
            return;
        }
        self.evict_to(budget.saturating_sub(size), None);
        self.map.insert(hash, entry);
        self.order.push_back(hash);
        self.used += size;
    }

    /// Evicts until at most `target` bytes are used, sparing `keep`.
    fn evict_to(&mut self, target: usize, keep: Option<u64>) {
        // Each pass clears referenced bits, so two passes over the queue always suffice.
        let mut budget_steps = 2 * self.order.len() + 1;
        while self.used > target && budget_steps > 0 {
            budget_steps -= 1;
            let Some(key) = self.order.pop_front() else {
                return;
            };
            let Some(entry) = self.map.get(&key) else {
                continue;
            };
            if Some(key) == keep || entry.referenced.swap(false, Ordering::Relaxed) {
                self.order.push_back(key);
                continue;
            }
            self.used -= entry.size;
            self.map.remove(&key);
        }
    }
}

/// Bytes accounted to an entry.
fn entry_size(text: &str, result: &Classification, recheck: Option<&Recheck>) -> usize {
    OVERHEAD
        + std::mem::size_of::<Entry>()
        + text.len()
        + std::mem::size_of::<Classification>()
        + result.heap_bytes()
        + recheck.map_or(0, Recheck::bytes)
}

/// The keys are already hashes.
#[derive(Debug, Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
