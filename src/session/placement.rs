//! Which worker thread serves which client: how many clients each worker holds, which worker
//! new clients go to, and the moves the app's balancer asks for, claimed by clients at their
//! idle points (between transactions). Lock-free: a client's idle point costs one load.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::MovedClient;
use crate::net::WorkerId;

/// Takes a client that left its worker to the worker it goes to (set by the app, which owns the
/// workers).
pub type HandOff = Box<dyn Fn(MovedClient) -> Result<(), MovedClient> + Send + Sync>;

/// Per-worker counts and requested moves.
#[derive(Debug)]
struct WorkerPlace {
    clients: AtomicUsize,
    /// Clients the balancer wants moved off this worker...
    moves_left: AtomicUsize,
    /// ...to this worker.
    move_to: AtomicUsize,
    /// `moves_left > 0`, readable without touching the counter's cache line on every poll.
    moving: AtomicBool,
    /// CPU use over the balancer's last interval, in thousandths of a core; `UNMEASURED` until
    /// measured.
    load_permille: AtomicU32,
}

const UNMEASURED: u32 = u32::MAX;

impl Default for WorkerPlace {
    fn default() -> WorkerPlace {
        WorkerPlace {
            clients: AtomicUsize::new(0),
            moves_left: AtomicUsize::new(0),
            move_to: AtomicUsize::new(0),
            moving: AtomicBool::new(false),
            load_permille: AtomicU32::new(UNMEASURED),
        }
    }
}

/// The placement of clients on worker threads.
pub struct Placement {
    workers: Box<[WorkerPlace]>,
    preferred: AtomicUsize,
    hand_off: OnceLock<HandOff>,
    /// Moves taken so far.
    moves: AtomicU64,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("workers", &self.workers)
            .field("preferred", &self.preferred)
            .finish_non_exhaustive()
    }
}

impl Placement {
    /// Placement over `workers` worker threads (at least one); new clients go to the first.
    pub fn new(workers: usize) -> Placement {
        Placement {
            workers: (0..workers.max(1))
                .map(|_| WorkerPlace::default())
                .collect(),
            preferred: AtomicUsize::new(0),
            hand_off: OnceLock::new(),
            moves: AtomicU64::new(0),
        }
    }

    /// Installs the hand-off of moved clients (once; later calls are ignored). Until then no
    /// move is ever claimed.
    pub fn set_hand_off(&self, hand_off: HandOff) {
        let _ = self.hand_off.set(hand_off);
    }

    /// Passes a moved client to its target worker; gives it back if that cannot be done.
    pub fn hand_over(&self, moved: MovedClient) -> Result<(), MovedClient> {
        match self.hand_off.get() {
            Some(hand_off) => hand_off(moved),
            None => Err(moved),
        }
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn place(&self, worker: WorkerId) -> Option<&WorkerPlace> {
        self.workers.get(worker.0)
    }

    /// The worker new clients go to.
    pub fn preferred(&self) -> WorkerId {
        WorkerId(self.preferred.load(Ordering::Relaxed) % self.workers.len())
    }

    /// Sends new clients to `worker` from now on.
    pub fn set_preferred(&self, worker: WorkerId) {
        if worker.0 < self.workers.len() {
            self.preferred.store(worker.0, Ordering::Relaxed);
        }
    }

    /// A client now runs on `worker`.
    pub fn joined(&self, worker: WorkerId) {
        if let Some(place) = self.place(worker) {
            place.clients.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A client no longer runs on `worker` (it ended or moved).
    pub fn left(&self, worker: WorkerId) {
        if let Some(place) = self.place(worker) {
            place.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Moves clients have taken since start.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Clients running on `worker`.
    pub fn clients(&self, worker: WorkerId) -> usize {
        self.place(worker)
            .map_or(0, |p| p.clients.load(Ordering::Relaxed))
    }

    /// Records `worker`'s CPU use over the last interval (in cores), for SHOW WORKERS.
    pub fn set_load(&self, worker: WorkerId, cores: f64) {
        if let Some(place) = self.place(worker) {
            let permille = (cores * 1000.0)
                .round()
                .clamp(0.0, f64::from(UNMEASURED - 1));
            place
                .load_permille
                .store(permille as u32, Ordering::Relaxed);
        }
    }

    /// `worker`'s CPU use over the balancer's last interval (in cores), once measured.
    pub fn load(&self, worker: WorkerId) -> Option<f64> {
        let permille = self.place(worker)?.load_permille.load(Ordering::Relaxed);
        (permille != UNMEASURED).then(|| f64::from(permille) / 1000.0)
    }

    /// Clients the balancer asked to move off `worker` that have not moved yet.
    pub fn moves_asked(&self, worker: WorkerId) -> usize {
        self.place(worker)
            .map_or(0, |p| p.moves_left.load(Ordering::Relaxed))
    }

    /// Asks `count` clients of `from` to move to `to` at their next idle point, replacing any
    /// earlier request for `from` (zero withdraws it).
    pub fn request_moves(&self, from: WorkerId, to: WorkerId, count: usize) {
        let Some(place) = self.place(from) else {
            return;
        };
        let count = if to == from || to.0 >= self.workers.len() {
            0
        } else {
            count
        };
        place.move_to.store(to.0, Ordering::Relaxed);
        place.moves_left.store(count, Ordering::Release);
        place.moving.store(count > 0, Ordering::Release);
    }

    /// Whether clients of `worker` are asked to move (a session-pooled client then ends its
    /// relay at its next idle point to try to claim a move).
    pub fn moving_flag(&self, worker: WorkerId) -> Option<&AtomicBool> {
        self.place(worker).map(|p| &p.moving)
    }

    /// Takes one of the moves asked of `worker`, if any: where to go.
    pub fn claim_move(&self, worker: WorkerId) -> Option<WorkerId> {
        let place = self.place(worker)?;
        if !place.moving.load(Ordering::Acquire) || self.hand_off.get().is_none() {
            return None;
        }
        let claimed = place
            .moves_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        match claimed {
            Ok(1) | Err(_) => place.moving.store(false, Ordering::Release),
            Ok(_) => {}
        }
        if claimed.is_ok() {
            self.moves.fetch_add(1, Ordering::Relaxed);
        }
        claimed
            .ok()
            .map(|_| WorkerId(place.move_to.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_are_claimed_up_to_the_count_asked() {
        let placement = Placement::new(2);
        placement.request_moves(WorkerId(0), WorkerId(1), 2);
        assert_eq!(
            placement.claim_move(WorkerId(0)),
            None,
            "nobody takes moved clients yet"
        );
        placement.set_hand_off(Box::new(Err));
        placement.request_moves(WorkerId(0), WorkerId(1), 2);
        assert!(placement
            .moving_flag(WorkerId(0))
            .unwrap()
            .load(Ordering::Relaxed));
        assert_eq!(
            placement.claim_move(WorkerId(1)),
            None,
            "asked of worker 0 only"
        );
        assert_eq!(placement.claim_move(WorkerId(0)), Some(WorkerId(1)));
        assert_eq!(placement.claim_move(WorkerId(0)), Some(WorkerId(1)));
        assert_eq!(placement.claim_move(WorkerId(0)), None);
        assert!(!placement
            .moving_flag(WorkerId(0))
            .unwrap()
            .load(Ordering::Relaxed));
        assert_eq!(placement.moves(), 2);
    }

    #[test]
    fn a_move_to_itself_or_nowhere_is_no_move() {
        let placement = Placement::new(2);
        placement.set_hand_off(Box::new(Err));
        placement.request_moves(WorkerId(0), WorkerId(0), 5);
        assert_eq!(placement.claim_move(WorkerId(0)), None);
        placement.request_moves(WorkerId(0), WorkerId(7), 5);
        assert_eq!(placement.claim_move(WorkerId(0)), None);
        placement.request_moves(WorkerId(9), WorkerId(0), 5);
        assert_eq!(placement.claim_move(WorkerId(9)), None);
    }

    #[test]
    fn counts_and_preference() {
        let placement = Placement::new(2);
        placement.joined(WorkerId(1));
        placement.joined(WorkerId(1));
        placement.left(WorkerId(1));
        assert_eq!(placement.clients(WorkerId(1)), 1);
        assert_eq!(placement.preferred(), WorkerId(0));
        placement.set_preferred(WorkerId(1));
        assert_eq!(placement.preferred(), WorkerId(1));
        placement.set_preferred(WorkerId(5));
        assert_eq!(placement.preferred(), WorkerId(1));
    }

    #[test]
    fn loads_are_unknown_until_measured_and_moves_asked_are_counted() {
        let placement = Placement::new(2);
        assert_eq!(placement.load(WorkerId(0)), None);
        placement.set_load(WorkerId(0), 0.2504);
        assert_eq!(placement.load(WorkerId(0)), Some(0.25));
        placement.set_load(WorkerId(1), -1.0);
        assert_eq!(placement.load(WorkerId(1)), Some(0.0));
        placement.set_load(WorkerId(7), 1.0);
        placement.request_moves(WorkerId(1), WorkerId(0), 3);
        assert_eq!(placement.moves_asked(WorkerId(1)), 3);
        assert_eq!(placement.moves_asked(WorkerId(0)), 0);
    }
}
