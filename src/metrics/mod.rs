//! Metrics (layer 0): lock-free metric primitives, the per-pool / per-database / per-node / global
//! handle types that record into them, the registry that owns every handle, its Prometheus text
//! rendering (`render.rs`), the HTTP endpoints `/metrics`, `/live`, `/ready`, `/status`
//! (`http.rs`), and the per-wake-up clock that times queries (`clock.rs`).
//!
//! Recording never locks or allocates: a handle (`Arc<PoolMetrics>`, `Arc<DatabaseMetrics>`, ...)
//! is resolved once, when the thing it describes is built, and the hot path does relaxed atomic
//! adds on its public fields. The registry's locks are taken only to create a handle and to render.

pub mod clock;
mod families;
pub mod http;
mod render;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use families::{
    DatabaseMetrics, ErrorClass, GlobalMetrics, NodeMetrics, NodeRoleLabel, PoolMetrics,
    RouteReason, RouteTarget, WorkerMetrics,
};

/// A monotonically increasing count (`_total` families).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` (e.g. bytes forwarded).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections open, clients waiting).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge holding a float (seconds of lag), stored as its bit pattern.
#[derive(Debug, Default)]
pub struct FloatGauge(AtomicU64);

impl FloatGauge {
    #[inline]
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Upper bounds of the histogram buckets, in nanoseconds and as the `le` label: 50µs to 30s.
pub const BUCKETS: [(u64, &str); 18] = [
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
    (30_000_000_000, "30"),
];

/// A latency histogram over [`BUCKETS`] (plus +Inf). Each observation adds one to exactly one
/// bucket and its nanoseconds to the sum; buckets are made cumulative only when rendered.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is the +Inf overflow.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a histogram for rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bucket of [`BUCKETS`], then +Inf (= `count`).
    pub cumulative: [u64; BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let index = bucket_index(nanos);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    #[inline]
    pub fn observe_since(&self, start: Instant) {
        self.observe(start.elapsed());
    }

    /// Records a zero duration without reading the clock (e.g. a checkout that did not wait).
    #[inline]
    pub fn observe_zero(&self) {
        self.buckets[0].fetch_add(1, Ordering::Relaxed);
    }

    /// How many durations were recorded (the sum over buckets; for rendering, not the hot path).
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |n, b| n.wrapping_add(b.load(Ordering::Relaxed)))
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0u64; BUCKETS.len() + 1];
        let mut running = 0u64;
        for (slot, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running = running.wrapping_add(bucket.load(Ordering::Relaxed));
            *slot = running;
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: running,
        }
    }
}

/// The upper bounds of [`BUCKETS`] alone, in 144 bytes: what each observation scans.
const BOUNDS: [u64; BUCKETS.len()] = {
    let mut bounds = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        bounds[i] = BUCKETS[i].0;
        i += 1;
    }
    bounds
};

/// Index of the first bucket whose upper bound is >= `nanos` (bounds are inclusive, `le`);
/// `BUCKETS.len()` for +Inf. A scan from the smallest bound: most queries end in the first
/// buckets, found in the first cache line, where a binary search would touch several lines of
/// the labelled table at each query.
#[inline]
pub fn bucket_index(nanos: u64) -> usize {
    BOUNDS
        .iter()
        .position(|&bound| nanos <= bound)
        .unwrap_or(BOUNDS.len())
}

/// Identifies a pool's series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PoolKey {
    database: String,
    user: String,
    node: String,
}

/// Every metric of one proxy process. Created once by the app and kept across config reloads, so
/// counters survive a SIGHUP; handles for the same labels are shared between generations.
#[derive(Debug)]
pub struct Metrics {
    global: GlobalMetrics,
    version: &'static str,
    started: Instant,
    pools: Mutex<BTreeMap<PoolKey, Arc<PoolMetrics>>>,
    databases: Mutex<BTreeMap<String, Arc<DatabaseMetrics>>>,
    nodes: Mutex<BTreeMap<(String, String), Arc<NodeMetrics>>>,
    workers: Mutex<BTreeMap<usize, Arc<WorkerMetrics>>>,
    /// Errors of clients whose database is not configured (label `database=""`), so a client
    /// cannot create series by inventing names.
    unknown_database: Arc<DatabaseMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            global: GlobalMetrics::default(),
            version: env!("CARGO_PKG_VERSION"),
            started: Instant::now(),
            pools: Mutex::default(),
            databases: Mutex::default(),
            nodes: Mutex::default(),
            workers: Mutex::default(),
            unknown_database: Arc::new(DatabaseMetrics::new("")),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Maps of Arcs stay consistent even if a holder panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Process-wide counters (client connections, auth failures, ...).
    pub fn global(&self) -> &GlobalMetrics {
        &self.global
    }

    /// The version reported by `pgsluice_build_info` and `/status`.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Time since the registry (the process) started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The handle for pool (database, user, node), created on first use. Call when building a pool,
    /// not per record. Series of a pool that a reload removed stay (frozen) until restart.
    pub fn pool(&self, database: &str, user: &str, node: &str) -> Arc<PoolMetrics> {
        let key = PoolKey {
            database: database.to_string(),
            user: user.to_string(),
            node: node.to_string(),
        };
        lock(&self.pools)
            .entry(key)
            .or_insert_with(|| Arc::new(PoolMetrics::new(database, user, node)))
            .clone()
    }

    /// The handle for a configured database, created on first use.
    pub fn database(&self, database: &str) -> Arc<DatabaseMetrics> {
        lock(&self.databases)
            .entry(database.to_string())
            .or_insert_with(|| Arc::new(DatabaseMetrics::new(database)))
            .clone()
    }

    /// Where errors of clients that named no configured database are counted.
    pub fn unknown_database(&self) -> &Arc<DatabaseMetrics> {
        &self.unknown_database
    }

    /// The handle for node `node` (its display name) of `database`, created on first use.
    pub fn node(&self, database: &str, node: &str) -> Arc<NodeMetrics> {
        lock(&self.nodes)
            .entry((database.to_string(), node.to_string()))
            .or_insert_with(|| Arc::new(NodeMetrics::new(database, node)))
            .clone()
    }

    /// The handle of worker thread `index`.
    pub fn worker(&self, index: usize) -> Arc<WorkerMetrics> {
        lock(&self.workers)
            .entry(index)
            .or_insert_with(|| Arc::new(WorkerMetrics::new(index)))
            .clone()
    }

    /// Every metric in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let pools: Vec<Arc<PoolMetrics>> = lock(&self.pools).values().cloned().collect();
        let mut databases: Vec<Arc<DatabaseMetrics>> =
            lock(&self.databases).values().cloned().collect();
        databases.push(self.unknown_database.clone());
        let nodes: Vec<Arc<NodeMetrics>> = lock(&self.nodes).values().cloned().collect();
        let workers: Vec<Arc<WorkerMetrics>> = lock(&self.workers).values().cloned().collect();
        render::render(self, &pools, &databases, &nodes, &workers)
    }
}
