//! A small bounded cache of classifications keyed by statement text, evicting by the clock
//! (second-chance) algorithm, so a prepared statement is classified once.

use std::collections::HashMap;

use super::{classify, Classification, ClassifierConfig};

/// Statements longer than this are classified every time rather than kept (memory is bounded by
/// `capacity * max_statement_len`).
pub const DEFAULT_MAX_STATEMENT_LEN: usize = 16 * 1024;

/// Bounded map from statement text to its [`Classification`]. Not thread-safe by design: the
/// caller owns one per session, per worker, or behind its own lock. Clear it when the
/// [`ClassifierConfig`] changes.
#[derive(Debug)]
pub struct ClassificationCache {
    capacity: usize,
    max_statement_len: usize,
    index: HashMap<Box<str>, usize>,
    slots: Vec<Slot>,
    hand: usize,
}

#[derive(Debug)]
struct Slot {
    key: Box<str>,
    value: Classification,
    referenced: bool,
}

impl ClassificationCache {
    /// A cache holding at most `capacity` statements (0 keeps nothing).
    pub fn new(capacity: usize) -> Self {
        ClassificationCache {
            capacity,
            max_statement_len: DEFAULT_MAX_STATEMENT_LEN,
            index: HashMap::with_capacity(capacity.min(1024)),
            slots: Vec::with_capacity(capacity.min(1024)),
            hand: 0,
        }
    }

    /// Changes the longest statement text that is kept.
    pub fn with_max_statement_len(mut self, len: usize) -> Self {
        self.max_statement_len = len;
        self
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Forgets everything (e.g. after a configuration change).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.hand = 0;
    }

    /// The cached classification of `sql`, marking it recently used.
    pub fn get(&mut self, sql: &str) -> Option<&Classification> {
        let i = *self.index.get(sql)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some(&slot.value)
    }

    /// Stores `value` for `sql`, evicting a statement not used since the clock hand last passed
    /// it when full. Too-long statements and a zero capacity store nothing.
    pub fn insert(&mut self, sql: &str, value: Classification) {
        if self.capacity == 0 || sql.len() > self.max_statement_len {
            return;
        }
        if let Some(slot) = self.index.get(sql).and_then(|&i| self.slots.get_mut(i)) {
            slot.value = value;
            slot.referenced = true;
            return;
        }
        let slot = Slot {
            key: sql.into(),
            value,
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.index.insert(sql.into(), self.slots.len());
            self.slots.push(slot);
            return;
        }
        let victim = self.advance_hand();
        if let Some(old) = self.slots.get_mut(victim) {
            self.index.remove(&old.key);
            *old = slot;
            self.index.insert(sql.into(), victim);
        }
    }

    /// Moves the hand to the next slot without a second chance, clearing chances on the way; at
    /// most two sweeps.
    fn advance_hand(&mut self) -> usize {
        let n = self.slots.len();
        for _ in 0..=2 * n {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            match self.slots.get_mut(i) {
                Some(slot) if slot.referenced => slot.referenced = false,
                _ => return i,
            }
        }
        self.hand
    }

    /// The classification of `sql`, computed with `config` and stored on a miss.
    pub fn get_or_classify(&mut self, sql: &str, config: &ClassifierConfig) -> Classification {
        if let Some(hit) = self.get(sql) {
            return hit.clone();
        }
        let value = classify(sql, config);
        self.insert(sql, value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::classify::Target;

    fn config() -> ClassifierConfig {
        ClassifierConfig::default()
    }

    #[test]
    fn a_hit_returns_the_stored_classification() {
        let mut cache = ClassificationCache::new(4);
        let c = cache.get_or_classify("select 1", &config());
        assert_eq!(c.target, Target::Replica);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("select 1"), Some(&c));
        assert_eq!(cache.get("select 2"), None);
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity_and_keeps_recent_entries() {
        let mut cache = ClassificationCache::new(3);
        for sql in ["select 1", "select 2", "select 3"] {
            cache.get_or_classify(sql, &config());
        }
        cache.get("select 1");
        cache.get_or_classify("select 4", &config());
        assert_eq!(cache.len(), 3);
        assert!(cache.get("select 1").is_some(), "recently used survives");
        assert!(cache.get("select 4").is_some());
        for i in 5..50 {
            cache.get_or_classify(&format!("select {i}"), &config());
            assert!(cache.len() <= 3);
        }
        assert!(cache.get("select 49").is_some());
    }

    #[test]
    fn zero_capacity_and_long_statements_are_not_kept() {
        let mut none = ClassificationCache::new(0);
        none.get_or_classify("select 1", &config());
        assert!(none.is_empty());
        let mut short = ClassificationCache::new(4).with_max_statement_len(8);
        short.get_or_classify("select 1234", &config());
        assert!(short.is_empty());
        short.get_or_classify("select 1", &config());
        assert_eq!(short.len(), 1);
    }

    #[test]
    fn insert_replaces_and_clear_forgets() {
        let mut cache = ClassificationCache::new(2);
        let read = classify("select 1", &config());
        let write = classify("delete from t", &config());
        cache.insert("q", read);
        cache.insert("q", write.clone());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("q"), Some(&write));
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.get("q"), None);
        assert_eq!(cache.capacity(), 2);
    }
}
