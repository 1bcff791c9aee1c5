//! Decompressed evaluation keys in memory, bounded by an estimate of their
//! size: the least recently used go first. Decompressing a client's keys
//! (tens of MiB seeded, hundreds in the Fourier domain) takes about a
//! second, so a server keeps the keys of its active clients, within the
//! budget set by `--cache-mib`.

use std::sync::Arc;

use cml_runtime::backend::tfhe::EvaluationKeys;

use crate::store::KeyId;

/// Estimated memory of decompressed keys: their bootstrap and keyswitch
/// keys ([`cml_runtime::FheParams::bootstrap_key_bytes`] and
/// [`keyswitch_key_bytes`](cml_runtime::FheParams::keyswitch_key_bytes)).
pub fn key_bytes(keys: &EvaluationKeys) -> u64 {
    let p = keys.params();
    (p.bootstrap_key_bytes() + p.keyswitch_key_bytes()) as u64
}

/// An LRU of decompressed keys within a byte budget.
#[derive(Debug)]
pub struct KeyCache {
    budget: u64,
    used: u64,
    /// Most recently used last.
    entries: Vec<(KeyId, Arc<EvaluationKeys>, u64)>,
}

impl KeyCache {
    /// An empty cache of `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            used: 0,
            entries: Vec::new(),
        }
    }

    /// The keys of `id`, if cached (marking them used).
    pub fn get(&mut self, id: &KeyId) -> Option<Arc<EvaluationKeys>> {
        let i = self.entries.iter().position(|(k, _, _)| k == id)?;
        let entry = self.entries.remove(i);
        let keys = Arc::clone(&entry.1);
        self.entries.push(entry);
        Some(keys)
    }

    /// Caches keys, evicting the least recently used until they fit; keys
    /// larger than the whole budget are not cached (they still serve the
    /// request that loaded them).
    pub fn insert(&mut self, id: KeyId, keys: Arc<EvaluationKeys>) {
        let size = key_bytes(&keys);
        if let Some(i) = self.entries.iter().position(|(k, _, _)| *k == id) {
            let (_, _, old) = self.entries.remove(i);
            self.used -= old;
        }
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let (_, _, evicted) = self.entries.remove(0);
            self.used -= evicted;
        }
        self.used += size;
        self.entries.push((id, keys, size));
    }

    /// Drops the keys of `id`.
    pub fn remove(&mut self, id: &KeyId) {
        if let Some(i) = self.entries.iter().position(|(k, _, _)| k == id) {
            let (_, _, size) = self.entries.remove(i);
            self.used -= size;
        }
    }

    /// Estimated bytes in use.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Keys cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
