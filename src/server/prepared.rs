//! The statements the proxy prepared on one server connection under proxy-wide names, as a bounded
//! LRU set: transaction pooling re-prepares a client's statement on whichever connection it gets,
//! and closes the least recently used one when the set is full.

use std::collections::HashMap;

/// How many statements a server connection keeps unless the pool says otherwise.
pub const DEFAULT_CAPACITY: usize = 250;

/// Ids of proxy-wide statements prepared on one server connection (`__sluice_<id>`), with their
/// last use, bounded by `capacity`.
#[derive(Debug)]
pub struct PreparedSet {
    /// Statement id → the tick of its last use.
    used: HashMap<u64, u64>,
    tick: u64,
    capacity: usize,
}

impl PreparedSet {
    /// An empty set holding at most `capacity` statements (at least 1).
    pub fn new(capacity: usize) -> PreparedSet {
        PreparedSet {
            used: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    /// Changes the bound; statements over it are evicted by later inserts.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Whether statement `id` is prepared here; counts as a use.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.used.get_mut(&id) {
            Some(last) => {
                *last = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records statement `id` as prepared. When the set is full, returns the least recently used
    /// statement, which the caller must close on the server (it is already forgotten here).
    pub fn insert(&mut self, id: u64) -> Option<u64> {
        self.tick += 1;
        let evicted = if self.used.len() >= self.capacity && !self.used.contains_key(&id) {
            let oldest = self
                .used
                .iter()
                .min_by_key(|(_, last)| **last)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.used.remove(&oldest);
            }
            oldest
        } else {
            None
        };
        self.used.insert(id, self.tick);
        evicted
    }

    /// Forgets statement `id` (its Parse failed or was never executed).
    pub fn remove(&mut self, id: u64) {
        self.used.remove(&id);
    }

    /// Forgets everything (after `DISCARD ALL` / `DEALLOCATE ALL` ran on the server).
    pub fn clear(&mut self) {
        self.used = HashMap::new();
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

impl Default for PreparedSet {
    fn default() -> Self {
        PreparedSet::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::PreparedSet;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut set = PreparedSet::new(2);
        assert_eq!(set.insert(1), None);
        assert_eq!(set.insert(2), None);
        assert!(set.touch(1));
        assert_eq!(set.insert(3), Some(2));
        assert!(set.touch(1) && set.touch(3) && !set.touch(2));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn reinserting_does_not_evict_and_remove_forgets() {
        let mut set = PreparedSet::new(1);
        assert_eq!(set.insert(7), None);
        assert_eq!(set.insert(7), None);
        set.remove(7);
        assert!(set.is_empty());
        set.insert(8);
        set.clear();
        assert!(!set.touch(8));
    }
}
