//! A pool's slots and its FIFO queue of waiting checkouts: who gets a connection or a slot that
//! comes back (handed straight to a waiter, preferring one on the connection's own worker), and
//! the one timer per busy pool that ends waits at `checkout_timeout`, opens reserve slots after
//! `reserve_timeout` and marks notices due after `checkout_notice_after`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{Member, Pool};
use crate::net::WorkerId;

/// How far past the oldest waiter a returning connection looks for a waiter on its own worker.
const SAME_WORKER_LOOKAHEAD: usize = 4;
/// How many times the oldest waiter may be passed over for one on the connection's worker.
const MAX_SKIPS: u8 = 2;
/// How much later than the oldest waiter a waiter passing it may have queued: clients that
/// queued this close together have no order worth keeping (network jitter is larger), while
/// clients queued further apart are served strictly in order.
const FIFO_TOLERANCE: Duration = Duration::from_micros(500);

/// Which kind of slot a checkout holds: one of `size`, or one of `reserve_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotKind {
    Regular,
    Reserve,
}

/// What a waiting checkout is handed.
#[derive(Debug)]
pub(super) enum Grant {
    /// An idle connection, with the slot it was checked out under.
    Server(Box<Member>, SlotKind),
    /// A slot and no connection: take an idle one or open one.
    Slot(SlotKind),
    TimedOut,
    Closed,
}

/// What the waiter sees when polled.
pub(super) enum Event {
    Granted(Grant),
    /// `checkout_notice_after` has passed; reported once.
    NoticeDue,
}

/// The waiter's side of a queue entry: filled in by whoever grants it.
#[derive(Debug, Default)]
pub(super) struct Waiter {
    state: Mutex<WaitState>,
}

#[derive(Debug, Default)]
struct WaitState {
    grant: Option<Grant>,
    notice_due: bool,
    waker: Option<Waker>,
}

impl Waiter {
    fn lock(&self) -> MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn grant(&self, grant: Grant) {
        let waker = {
            let mut state = self.lock();
            state.grant = Some(grant);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn notice(&self) {
        let waker = {
            let mut state = self.lock();
            state.notice_due = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(super) fn poll(&self, cx: &mut Context<'_>) -> Poll<Event> {
        let mut state = self.lock();
        if let Some(grant) = state.grant.take() {
            return Poll::Ready(Event::Granted(grant));
        }
        if std::mem::take(&mut state.notice_due) {
            return Poll::Ready(Event::NoticeDue);
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A grant that arrived but was never taken (the wait was abandoned).
    fn take_grant(&self) -> Option<Grant> {
        self.lock().grant.take()
    }
}

/// A waiter as the pool keeps it, in arrival order.
#[derive(Debug)]
struct Queued {
    waiter: Arc<Waiter>,
    worker: WorkerId,
    since: Instant,
    /// Times passed over, while oldest, for a waiter on the returning connection's worker.
    skips: u8,
    noticed: bool,
}

/// Everything under the pool's one lock. A slot is the right to hold one connection: taken by a
/// checkout (or by maintenance opening one), given back when the connection goes idle or closes.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// Idle connections, most recently used last; they hold no slot. Boxed: a connection stays
    /// at one address while it moves between the idle list, waiters and checkouts.
    #[allow(clippy::vec_box)]
    pub(super) idle: Vec<Box<Member>>,
    queue: VecDeque<Queued>,
    /// Regular slots taken (at most `size`).
    pub(super) used: usize,
    /// Reserve slots taken (at most `reserve_size`).
    pub(super) reserve_used: usize,
    pub(super) closed: bool,
    /// A watchdog task is looking after the queue.
    watchdog: bool,
}

impl Slots {
    pub(super) fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Takes a regular slot if one is free and nobody waits for it (no jumping the queue).
    pub(super) fn try_take(&mut self, size: usize) -> bool {
        if self.closed || self.used >= size || !self.queue.is_empty() {
            return false;
        }
        self.used += 1;
        true
    }

    fn free(&mut self, kind: SlotKind) {
        match kind {
            SlotKind::Regular => self.used = self.used.saturating_sub(1),
            SlotKind::Reserve => self.reserve_used = self.reserve_used.saturating_sub(1),
        }
    }

    /// The waiter to hand a connection from `home` to: the oldest, unless one of the next few
    /// runs on `home`, queued within [`FIFO_TOLERANCE`] of the oldest, and the oldest has not
    /// been passed over too often. Keeps the connection on its worker (no re-registration, no
    /// cross-thread wake) without changing the order of clients that queued apart.
    fn next_waiter(&mut self, home: Option<WorkerId>) -> Option<Queued> {
        let oldest = self.queue.front_mut()?;
        let Some(home) = home else {
            return self.queue.pop_front();
        };
        if oldest.worker == home || oldest.skips >= MAX_SKIPS {
            return self.queue.pop_front();
        }
        let latest = oldest.since + FIFO_TOLERANCE;
        let near = self
            .queue
            .iter()
            .take(SAME_WORKER_LOOKAHEAD)
            .take_while(|q| q.since <= latest)
            .position(|q| q.worker == home);
        match near {
            Some(index) => {
                if let Some(oldest) = self.queue.front_mut() {
                    oldest.skips += 1;
                }
                self.queue.remove(index)
            }
            None => self.queue.pop_front(),
        }
    }
}

/// A waiter's place in the queue. Dropping it before its grant is taken leaves the queue and
/// gives back whatever was granted meanwhile.
pub(super) struct Ticket<'p> {
    pool: &'p Pool,
    waiter: Arc<Waiter>,
    since: Instant,
    done: bool,
}

impl Ticket<'_> {
    /// When the wait began.
    pub(super) fn since(&self) -> Instant {
        self.since
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let event = std::task::ready!(self.waiter.poll(cx));
        if matches!(event, Event::Granted(_)) {
            self.done = true;
        }
        Poll::Ready(event)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.pool.metrics.clients_waiting.dec();
        if self.done {
            return;
        }
        {
            let mut slots = self.pool.lock_slots();
            if let Some(index) = slots
                .queue
                .iter()
                .position(|q| Arc::ptr_eq(&q.waiter, &self.waiter))
            {
                slots.queue.remove(index);
            }
        }
        match self.waiter.take_grant() {
            Some(Grant::Server(member, kind)) => self.pool.give_back(member, kind),
            Some(Grant::Slot(kind)) => self.pool.free_slot(kind),
            Some(Grant::TimedOut | Grant::Closed) | None => {}
        }
    }
}

impl Pool {
    pub(super) fn lock_slots(&self) -> MutexGuard<'_, Slots> {
        // Every update below leaves `Slots` consistent before anything can panic; keep going.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the queue, unless a slot freed meanwhile (then `Err` with it taken). Starts the
    /// watchdog if none runs.
    pub(super) fn enqueue(self: &Arc<Self>, worker: WorkerId) -> Result<Ticket<'_>, Grant> {
        let mut slots = self.lock_slots();
        if slots.closed {
            return Err(Grant::Closed);
        }
        if slots.try_take(self.settings.size) {
            return Err(Grant::Slot(SlotKind::Regular));
        }
        let waiter = Arc::new(Waiter::default());
        let since = Instant::now();
        slots.queue.push_back(Queued {
            waiter: waiter.clone(),
            worker,
            since,
            skips: 0,
            noticed: false,
        });
        if !slots.watchdog {
            // On the housekeeping runtime when there is one (see `Pool::housekeeping`).
            let runtime = match self.housekeeping.get() {
                Some(runtime) => Ok(runtime.clone()),
                None => tokio::runtime::Handle::try_current(),
            };
            if let Ok(runtime) = runtime {
                slots.watchdog = true;
                runtime.spawn(self.clone().watch());
            }
        }
        drop(slots);
        self.metrics.clients_waiting.inc();
        Ok(Ticket {
            pool: self,
            waiter,
            since,
            done: false,
        })
    }

    /// Hands a clean connection back: to a waiter if any (the slot goes with it), else to the
    /// idle list (the slot is freed).
    pub(super) fn give_back(&self, member: Box<Member>, kind: SlotKind) {
        let home = member.conn.home();
        let mut slots = self.lock_slots();
        if let Some(next) = slots.next_waiter(Some(home)) {
            drop(slots);
            next.waiter.grant(Grant::Server(member, kind));
            return;
        }
        slots.idle.push(member);
        slots.free(kind);
        drop(slots);
        self.metrics.server_idle.inc();
    }

    /// Frees a slot whose connection was closed (or never opened): a waiter gets it to open a
    /// new one. A reserve slot goes only to a waiter that has waited `reserve_timeout`.
    pub(super) fn free_slot(&self, kind: SlotKind) {
        let mut slots = self.lock_slots();
        let eligible = match (kind, slots.queue.front()) {
            (_, None) => false,
            (SlotKind::Regular, Some(_)) => true,
            (SlotKind::Reserve, Some(oldest)) => {
                oldest.since.elapsed() >= self.settings.reserve_timeout
            }
        };
        if eligible && !slots.closed {
            if let Some(next) = slots.next_waiter(None) {
                drop(slots);
                next.waiter.grant(Grant::Slot(kind));
                return;
            }
        }
        slots.free(kind);
    }

    /// Refuses further checkouts and ends every wait with [`Grant::Closed`].
    pub(super) fn close_queue(&self) {
        let waiters: Vec<Queued> = {
            let mut slots = self.lock_slots();
            slots.closed = true;
            slots.queue.drain(..).collect()
        };
        for queued in waiters {
            queued.waiter.grant(Grant::Closed);
        }
    }

    /// The watchdog: while anyone waits, sleeps until the next deadline of the oldest waiters
    /// and acts on it. One timer per busy pool instead of one per waiting checkout. A waiter
    /// queued later has later deadlines (the same settings from a later start), so the sleep
    /// never overshoots one; the task ends as soon as the queue is empty.
    async fn watch(self: Arc<Self>) {
        let mut guard = WatchdogGuard {
            pool: &self,
            exited: false,
        };
        loop {
            let expired = {
                let mut slots = self.lock_slots();
                let expired = self.expire(&mut slots, Instant::now());
                // Nobody left: stop now, not at the old deadline, which a waiter queued later
                // than this would otherwise wait for.
                if slots.queue.is_empty() {
                    slots.watchdog = false;
                    guard.exited = true;
                }
                expired
            };
            let next = expired.wake();
            if guard.exited {
                return;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        }
    }

    /// Ends the waits past `checkout_timeout`, hands free reserve slots to waiters past
    /// `reserve_timeout`, marks notices due; says whom to wake and when to look again.
    fn expire(&self, slots: &mut Slots, now: Instant) -> Expired {
        let settings = &self.settings;
        let mut next = now + settings.checkout_timeout;
        let mut granted = Vec::new();
        let mut noticed = Vec::new();
        let mut kept = VecDeque::with_capacity(slots.queue.len());
        for mut queued in slots.queue.drain(..) {
            let waited = now.saturating_duration_since(queued.since);
            if waited >= settings.checkout_timeout {
                granted.push((queued.waiter, Grant::TimedOut));
                continue;
            }
            let reserve_open = settings.reserve_size > 0 && !slots.closed;
            if reserve_open && waited >= settings.reserve_timeout {
                if slots.reserve_used < settings.reserve_size {
                    slots.reserve_used += 1;
                    tracing::info!(pool = %self.name, "client waited reserve_timeout: a reserve connection may open");
                    granted.push((queued.waiter, Grant::Slot(SlotKind::Reserve)));
                    continue;
                }
            } else if reserve_open {
                next = next.min(queued.since + settings.reserve_timeout);
            }
            let notice_after = settings.checkout_notice_after;
            if !notice_after.is_zero() && !queued.noticed {
                if waited >= notice_after {
                    queued.noticed = true;
                    noticed.push(queued.waiter.clone());
                } else {
                    next = next.min(queued.since + notice_after);
                }
            }
            next = next.min(queued.since + settings.checkout_timeout);
            kept.push_back(queued);
        }
        slots.queue = kept;
        let timed_out = granted
            .iter()
            .filter(|(_, g)| matches!(g, Grant::TimedOut))
            .count();
        self.metrics.checkout_timeouts.add(timed_out as u64);
        Expired {
            // Never spin: deadlines that fall together are handled in one pass a moment later.
            next: next.max(now + Duration::from_millis(1)),
            granted,
            noticed,
        }
    }
}

/// What one watchdog pass decided, acted on once the pool's lock is released.
struct Expired {
    next: Instant,
    granted: Vec<(Arc<Waiter>, Grant)>,
    noticed: Vec<Arc<Waiter>>,
}

impl Expired {
    /// Wakes the waiters and returns when to look again.
    fn wake(self) -> Instant {
        for (waiter, grant) in self.granted {
            waiter.grant(grant);
        }
        for waiter in self.noticed {
            waiter.notice();
        }
        self.next
    }
}

/// Clears the pool's watchdog flag if the task is dropped without finishing (its runtime shut
/// down), so a later waiter starts a new one.
struct WatchdogGuard<'p> {
    pool: &'p Pool,
    exited: bool,
}

impl Drop for WatchdogGuard<'_> {
    fn drop(&mut self) {
        if !self.exited {
            self.pool.lock_slots().watchdog = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiters on `workers`, queued at the same instant.
    fn queue_of(workers: &[usize]) -> Slots {
        let since = Instant::now();
        let mut slots = Slots::default();
        for &worker in workers {
            slots.queue.push_back(Queued {
                waiter: Arc::new(Waiter::default()),
                worker: WorkerId(worker),
                since,
                skips: 0,
                noticed: false,
            });
        }
        slots
    }

    fn order(slots: &mut Slots, home: usize) -> usize {
        slots.next_waiter(Some(WorkerId(home))).unwrap().worker.0
    }

    #[test]
    fn a_returning_connection_prefers_a_near_waiter_on_its_worker() {
        let mut slots = queue_of(&[1, 1, 0, 1]);
        assert_eq!(order(&mut slots, 0), 0, "third in line, same worker");
        assert_eq!(slots.queue.front().map(|q| q.skips), Some(1));
        assert_eq!(order(&mut slots, 1), 1, "the oldest, same worker");
    }

    #[test]
    fn the_oldest_waiter_is_passed_over_at_most_twice() {
        let mut slots = queue_of(&[1, 0, 0, 0]);
        assert_eq!(order(&mut slots, 0), 0);
        assert_eq!(order(&mut slots, 0), 0);
        assert_eq!(order(&mut slots, 0), 1, "skipped twice: its turn");
        assert_eq!(order(&mut slots, 0), 0);
    }

    #[test]
    fn beyond_the_lookahead_fifo_wins() {
        let mut slots = queue_of(&[1, 1, 1, 1, 0]);
        assert_eq!(order(&mut slots, 0), 1);
        assert_eq!(slots.queue.front().map(|q| q.skips), Some(0));
        let mut slots = queue_of(&[1, 0]);
        assert_eq!(
            slots.next_waiter(None).unwrap().worker.0,
            1,
            "a slot goes in order"
        );
    }

    #[test]
    fn a_waiter_that_queued_later_than_the_tolerance_waits_its_turn() {
        let mut slots = queue_of(&[1, 0]);
        slots.queue[1].since += FIFO_TOLERANCE + Duration::from_micros(1);
        assert_eq!(order(&mut slots, 0), 1);
    }
}
