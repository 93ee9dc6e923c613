//! The clock that times queries and transactions for the latency histograms: on a session worker
//! thread, read once per wake-up of its runtime (as PgBouncer caches its loop time) instead of at
//! every request and answer; on any other thread, the system clock.
//!
//! A worker's runtime calls [`woke`] when it returns from waiting for events and [`sleeps`] before
//! it waits again (tokio's `on_thread_unpark` / `on_thread_park`). Between the two, [`now`] answers
//! the wake-up time: when the events the worker is handling became ready to read. A thread that
//! stays busy without waiting reads the clock again every [`USES_PER_READ`] answers, so a stored
//! time is never older than that many timings. The stored time belongs to its thread alone: proxies
//! started side by side in one process (tests) never see each other's.

use std::cell::Cell;
use std::time::Instant;

/// Answers of [`now`] per clock read on a worker that has not waited since its last read.
pub const USES_PER_READ: u8 = 16;

thread_local! {
    /// The wake-up time and how often [`now`] answered it; `None` while the thread waits, and
    /// always on threads without the hooks.
    static WAKE_UP: Cell<Option<(Instant, u8)>> = const { Cell::new(None) };
}

/// The worker's runtime stopped waiting: the events it will handle are ready now.
pub fn woke() {
    WAKE_UP.set(Some((Instant::now(), 0)));
}

/// The worker's runtime is about to wait for events: the stored time must not outlive the wait.
pub fn sleeps() {
    WAKE_UP.set(None);
}

/// The time to record a request or an answer at: the worker's last wake-up, or the system clock.
#[inline]
pub fn now() -> Instant {
    WAKE_UP.with(|wake_up| match wake_up.get() {
        Some((at, uses)) if uses < USES_PER_READ => {
            wake_up.set(Some((at, uses + 1)));
            at
        }
        Some(_) => {
            // Busy since the wake-up: a fresh reading, answered for the next timings.
            let at = Instant::now();
            wake_up.set(Some((at, 1)));
            at
        }
        None => Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later_than(t: Instant) -> Instant {
        std::thread::sleep(Duration::from_millis(2));
        assert!(Instant::now() > t);
        now()
    }

    #[test]
    fn a_thread_without_the_hooks_reads_the_clock() {
        let first = now();
        assert!(later_than(first) > first);
    }

    #[test]
    fn a_woken_worker_answers_its_wake_up_then_reads_again() {
        woke();
        let at = now();
        for _ in 1..USES_PER_READ {
            assert_eq!(
                later_than(at),
                at,
                "the wake-up time until its uses are spent"
            );
        }
        let fresh = later_than(at);
        assert!(fresh > at, "a busy worker reads the clock again");
        assert_eq!(now(), fresh, "and answers that reading next");
        sleeps();
        assert!(later_than(fresh) > fresh, "nothing stored survives a wait");
    }
}
