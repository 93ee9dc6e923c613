//! The balancer: measures each worker thread's CPU use every `limits.balance_interval` and
//! places clients from it (see [`plan`]): new clients go to the first worker that is not busy,
//! a light load is packed onto few threads (each sleeping and waking thread costs CPU per
//! transaction) and a heavy one is spread over all of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::net::WorkerId;
use crate::session::Shared;

/// A worker above this share of a core hands clients to a cool one.
const HOT: f64 = 0.75;
/// A worker below this share of a core takes clients from a hot one.
const COOL: f64 = 0.40;
/// Workers pack onto one fewer while their total fits there at this share of a core each.
const PACK: f64 = 0.50;

/// What the balancer decided for one interval.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Where new clients go.
    pub preferred: usize,
    /// `(from, to, count)`: clients to move at their next idle point.
    pub moves: Vec<(usize, usize, usize)>,
}

/// Places clients from each worker's CPU use over the last interval (`loads`, in cores) and
/// client counts. Pure: one decision per interval, so a move's effect is measured before the
/// next.
pub fn plan(loads: &[f64], clients: &[usize]) -> Plan {
    let n = loads.len().min(clients.len());
    let active: Vec<usize> = (0..n).filter(|&w| w == 0 || clients[w] > 0).collect();
    let total: f64 = loads.iter().take(n).sum();
    let coolest = |among: &mut dyn Iterator<Item = usize>| {
        among.min_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(a.cmp(&b)))
    };
    let mut moves = Vec::new();
    // Pack: the last active worker's clients join the others while all fits on one fewer.
    if let Some(&last) = active.last().filter(|&&w| w > 0) {
        if total <= PACK * (active.len() - 1) as f64 {
            let others = &mut active.iter().copied().filter(|&w| w != last);
            if let Some(to) = coolest(others) {
                moves.push((last, to, clients[last]));
            }
        }
    }
    // Spread: the hottest worker hands a share of its clients to the coolest.
    if moves.is_empty() {
        let hottest = (0..n).max_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(b.cmp(&a)));
        let coolest_all = coolest(&mut (0..n));
        if let (Some(from), Some(to)) = (hottest, coolest_all) {
            if from != to && loads[from] > HOT && loads[to] < COOL {
                let share = (loads[from] - loads[to]) / (2.0 * loads[from]);
                let count = (clients[from] as f64 * share).round().max(1.0) as usize;
                if clients[from] > 0 {
                    moves.push((from, to, count));
                }
            }
        }
    }
    let preferred = (0..n)
        .find(|&w| loads[w] < HOT)
        .or_else(|| coolest(&mut (0..n)))
        .unwrap_or(0);
    Plan { preferred, moves }
}

/// This thread's id (Linux), to find its CPU time in `/proc`.
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Nanoseconds thread `tid` of this process has run on a CPU.
fn cpu_ns(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Runs the balancer until `stop` fires: publishes each worker's clients and CPU use every
/// interval (also with one worker, or balancing off) and, with two workers or more, places
/// clients. Workers whose thread id or CPU time cannot be read (not Linux) leave it idle: new
/// clients then go to the worker with the fewest clients.
pub async fn run(
    shared: Arc<Shared>,
    tids: Arc<Vec<std::sync::OnceLock<u32>>>,
    stop: CancellationToken,
) {
    let workers = shared.placement.len();
    let mut last: Option<(Instant, Vec<u64>)> = None;
    let mut published = Published::default();
    loop {
        let interval = shared.generation.load().config.limits.balance_interval;
        let pause = if interval.is_zero() {
            Duration::from_secs(1)
        } else {
            interval
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let clients: Vec<usize> = (0..workers)
            .map(|w| shared.placement.clients(WorkerId(w)))
            .collect();
        let now = Instant::now();
        let times: Option<Vec<u64>> = tids
            .iter()
            .map(|tid| tid.get().and_then(|&tid| cpu_ns(tid)))
            .collect();
        let loads = match (&times, last.take()) {
            (Some(times), Some((then, before))) => {
                let elapsed = now.duration_since(then).as_nanos().max(1) as f64;
                let loads: Vec<f64> = times
                    .iter()
                    .zip(&before)
                    .map(|(t, b)| t.saturating_sub(*b) as f64 / elapsed)
                    .collect();
                Some(loads)
            }
            _ => None,
        };
        last = times.clone().map(|times| (now, times));
        published.publish(&shared, &clients, loads.as_deref());
        if interval.is_zero() || workers < 2 {
            // Off (new clients go round robin, see `Workers::dispatch`), or nowhere to move.
            continue;
        }
        match (times, loads) {
            (None, _) => {
                let fewest = (0..workers).min_by_key(|&w| clients[w]).unwrap_or(0);
                shared.placement.set_preferred(WorkerId(fewest));
            }
            (Some(_), Some(loads)) => {
                apply(&shared, &plan(&loads, &clients), workers);
                tracing::debug!(?loads, ?clients, "balanced workers");
            }
            (Some(_), None) => {}
        }
    }
}

/// What the balancer last published to the metrics.
#[derive(Default)]
struct Published {
    /// `Placement::moves` at the last publication.
    moves: u64,
}

impl Published {
    /// Publishes each worker's clients and CPU use (also while balancing is off) to the
    /// placement (SHOW WORKERS) and the metrics, and the moves taken since the last time.
    fn publish(&mut self, shared: &Shared, clients: &[usize], loads: Option<&[f64]>) {
        let metrics = &shared.generation.load().metrics;
        for (index, &count) in clients.iter().enumerate() {
            let worker = metrics.worker(index);
            worker.clients.set(i64::try_from(count).unwrap_or(i64::MAX));
            if let Some(&load) = loads.and_then(|l| l.get(index)) {
                shared.placement.set_load(WorkerId(index), load);
                worker.cpu.set(load);
            }
        }
        let moves = shared.placement.moves();
        metrics
            .global()
            .client_moves
            .add(moves.saturating_sub(self.moves));
        self.moves = moves;
    }
}

/// Publishes a plan: the preferred worker, and each worker's moves (none withdraws an earlier
/// request).
fn apply(shared: &Shared, plan: &Plan, workers: usize) {
    let placement = &shared.placement;
    placement.set_preferred(WorkerId(plan.preferred));
    for from in 0..workers {
        match plan.moves.iter().find(|(f, _, _)| *f == from) {
            Some(&(_, to, count)) => {
                tracing::info!(from, to, count, "moving clients between worker threads");
                placement.request_moves(WorkerId(from), WorkerId(to), count);
            }
            None => placement.request_moves(WorkerId(from), WorkerId(from), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_light_load_packs_onto_the_first_worker() {
        let p = plan(&[0.2, 0.15], &[50, 50]);
        assert_eq!(p.moves, vec![(1, 0, 50)]);
        assert_eq!(p.preferred, 0);
        // Three workers, the last one packs into the coolest of the others.
        let p = plan(&[0.3, 0.2, 0.3], &[10, 10, 10]);
        assert_eq!(p.moves, vec![(2, 1, 10)]);
    }

    #[test]
    fn a_hot_worker_hands_clients_to_a_cool_one() {
        let p = plan(&[0.9, 0.0], &[100, 0]);
        assert_eq!(p.moves, vec![(0, 1, 50)]);
        assert_eq!(p.preferred, 1, "new clients skip the hot worker");
        let p = plan(&[0.9, 0.3], &[60, 20]);
        assert_eq!(p.moves, vec![(0, 1, 20)]);
    }

    #[test]
    fn a_balanced_or_middling_load_stays() {
        // Spread and busy enough that packing would overload one worker: no move.
        let p = plan(&[0.45, 0.4], &[50, 50]);
        assert!(p.moves.is_empty(), "{p:?}");
        assert_eq!(p.preferred, 0);
        // Hot but nowhere cool to go.
        let p = plan(&[0.9, 0.8], &[50, 50]);
        assert!(p.moves.is_empty(), "{p:?}");
        assert_eq!(p.preferred, 1, "the cooler of two hot workers");
        // One worker: nothing to balance.
        let p = plan(&[0.9], &[10]);
        assert_eq!(
            p,
            Plan {
                preferred: 0,
                moves: Vec::new()
            }
        );
    }

    #[test]
    fn idle_workers_without_clients_are_not_packed() {
        let p = plan(&[0.1, 0.0, 0.0], &[5, 0, 0]);
        assert!(p.moves.is_empty(), "{p:?}");
        assert_eq!(p.preferred, 0);
    }

    #[test]
    fn this_threads_cpu_time_is_readable() {
        let tid = current_tid().expect("Linux /proc/thread-self");
        assert!(cpu_ns(tid).is_some());
    }
}
