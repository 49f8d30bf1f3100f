//! A map that is cheap to snapshot and to change: entries are spread over
//! fixed shards, each behind an `Arc`, so cloning the map clones 256
//! pointers and changing one entry copies one small shard. Every model
//! version is such a snapshot; streams keep reading old versions while
//! the builder makes the next one. Also keeps an order-independent hash
//! of its entries for versions.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    sync::Arc,
};

const SHARDS: usize = 256;

#[derive(Debug, Clone)]
pub struct ShardedMap<V> {
    shards: Vec<Arc<BTreeMap<String, V>>>,
    len: usize,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| Arc::new(BTreeMap::new())).collect(),
            len: 0,
        }
    }
}

fn shard_of(key: &str) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl<V: Clone> ShardedMap<V> {
    pub fn get(&self, key: &str) -> Option<&V> {
        self.shards[shard_of(key)].get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        let old = shard.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = shard_of(key);
        if !self.shards[i].contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(&mut self.shards[i]).remove(key);
        self.len -= 1;
        old
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Keys, sorted (for tests and debug output).
    pub fn sorted_keys(&self) -> Vec<&String> {
        let mut keys: Vec<&String> = self.keys().collect();
        keys.sort();
        keys
    }
}

impl<V: Clone> std::ops::Index<&str> for ShardedMap<V> {
    type Output = V;

    fn index(&self, key: &str) -> &V {
        self.get(key).unwrap_or_else(|| panic!("no entry `{key}`"))
    }
}

impl<V: Clone> std::ops::Index<&String> for ShardedMap<V> {
    type Output = V;

    fn index(&self, key: &String) -> &V {
        &self[key.as_str()]
    }
}

/// An order-independent 64-bit digest of a set of (name, version) pairs,
/// updated in O(1) per change: the XOR of each pair's hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetHash(pub u64);

impl SetHash {
    pub fn toggle(&mut self, name: &str, version: &str) {
        let mut h = std::hash::DefaultHasher::new();
        name.hash(&mut h);
        version.hash(&mut h);
        self.0 ^= h.finish();
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_independent() {
        let mut a: ShardedMap<u32> = ShardedMap::default();
        for i in 0..1000 {
            a.insert(format!("k{i}"), i);
        }
        let b = a.clone();
        a.insert("k1".into(), 7);
        a.remove("k2");
        assert_eq!((a["k1"], b["k1"]), (7, 1));
        assert!(!a.contains_key("k2") && b.contains_key("k2"));
        assert_eq!((a.len(), b.len()), (999, 1000));
        let mut h = SetHash::default();
        h.toggle("a", "1");
        h.toggle("b", "2");
        let mut g = SetHash::default();
        g.toggle("b", "2");
        g.toggle("a", "1");
        assert_eq!(h, g);
        g.toggle("a", "1");
        assert_ne!(h, g);
    }
}
