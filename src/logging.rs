//! Rate-limited log repeats: the same warning (a node that refuses connections, a peer that keeps
//! failing authentication) is logged at most once per interval, with the count of the repeats that
//! were suppressed in between.
//!
//! ```text
//! if let Some(suppressed) = logging::repeats().allow(&format!("connect:{pool}")) {
//!     tracing::warn!(%pool, suppressed, "cannot open server connection");
//! }
//! ```

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How often the process-wide limiter lets the same key through.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Keys the process-wide limiter tracks at most (bounds memory when many peers fail).
const MAX_KEYS: usize = 4096;

/// The key that stands for every new key once [`MAX_KEYS`] are tracked.
const OVERFLOW_KEY: &str = "(other)";

/// The process-wide limiter for warnings logged on error paths.
pub fn repeats() -> &'static RepeatLimiter {
    static REPEATS: LazyLock<RepeatLimiter> =
        LazyLock::new(|| RepeatLimiter::new(REPEAT_INTERVAL, MAX_KEYS));
    &REPEATS
}

/// Lets each key through at most once per `interval` and counts what it held back. Meant for
/// error paths: it takes a lock, so keep it off the per-query path.
#[derive(Debug)]
pub struct RepeatLimiter {
    interval: Duration,
    max_keys: usize,
    keys: Mutex<HashMap<String, Repeat>>,
}

#[derive(Debug)]
struct Repeat {
    logged_at: Instant,
    suppressed: u64,
}

impl RepeatLimiter {
    /// A limiter that tracks at most `max_keys` keys (at least one); beyond that, new keys share
    /// one more.
    pub fn new(interval: Duration, max_keys: usize) -> RepeatLimiter {
        RepeatLimiter {
            interval,
            max_keys: max_keys.max(1),
            keys: Mutex::default(),
        }
    }

    /// `Some(n)` when the message for `key` should be logged now, `n` being how many repeats were
    /// suppressed since it was last logged; `None` when it should be suppressed (and is counted).
    pub fn allow(&self, key: &str) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    /// [`RepeatLimiter::allow`] at a given time (for tests).
    pub fn allow_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = if keys.contains_key(key) || keys.len() < self.max_keys {
            key
        } else {
            // Forget keys whose interval has passed with nothing suppressed, then share one slot.
            let interval = self.interval;
            keys.retain(|_, r| r.suppressed > 0 || now.duration_since(r.logged_at) < interval);
            if keys.len() < self.max_keys {
                key
            } else {
                OVERFLOW_KEY
            }
        };
        match keys.get_mut(key) {
            Some(repeat) if now.duration_since(repeat.logged_at) < self.interval => {
                repeat.suppressed += 1;
                None
            }
            Some(repeat) => {
                let suppressed = std::mem::take(&mut repeat.suppressed);
                repeat.logged_at = now;
                Some(suppressed)
            }
            None => {
                keys.insert(
                    key.to_string(),
                    Repeat {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn first_is_logged_repeats_are_counted_then_reported() {
        let limiter = RepeatLimiter::new(10 * SECOND, 16);
        let t0 = Instant::now();
        assert_eq!(limiter.allow_at("node a", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(limiter.allow_at("node a", t0 + i * SECOND), None);
        }
        assert_eq!(limiter.allow_at("node a", t0 + 10 * SECOND), Some(5));
        assert_eq!(limiter.allow_at("node a", t0 + 11 * SECOND), None);
        assert_eq!(limiter.allow_at("node a", t0 + 30 * SECOND), Some(1));
        assert_eq!(limiter.allow_at("node a", t0 + 50 * SECOND), Some(0));
    }

    #[test]
    fn keys_are_independent() {
        let limiter = RepeatLimiter::new(10 * SECOND, 16);
        let t0 = Instant::now();
        assert_eq!(limiter.allow_at("auth:10.0.0.1", t0), Some(0));
        assert_eq!(limiter.allow_at("auth:10.0.0.2", t0), Some(0));
        assert_eq!(limiter.allow_at("auth:10.0.0.1", t0 + SECOND), None);
        assert_eq!(limiter.allow_at("auth:10.0.0.2", t0 + SECOND), None);
    }

    #[test]
    fn key_count_is_bounded() {
        let limiter = RepeatLimiter::new(10 * SECOND, 2);
        let t0 = Instant::now();
        assert_eq!(limiter.allow_at("a", t0), Some(0));
        assert_eq!(limiter.allow_at("b", t0), Some(0));
        // Full: new keys share the overflow slot.
        assert_eq!(limiter.allow_at("c", t0), Some(0));
        assert_eq!(limiter.allow_at("d", t0), None);
        assert_eq!(limiter.allow_at("c", t0), None);
        assert_eq!(limiter.keys.lock().unwrap().len(), 3);
        // Once "a" and "b" have expired with nothing held back, new keys get their own slot again.
        assert_eq!(limiter.allow_at("e", t0 + 20 * SECOND), Some(0));
    }
}
