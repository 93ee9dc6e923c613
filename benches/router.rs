//! Benchmarks of routing: SQL classification of typical statements, a cache hit, and the
//! routing decision over a primary and three replicas.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgsluice::config::routing::Balance;
use pgsluice::config::RoutingSettings;
use pgsluice::router::classify::{classify, ClassificationCache, ClassifierConfig};
use pgsluice::router::{policy, Balancer, Request};
use pgsluice::topology::{ClusterSnapshot, Freshness, Health, Lsn, NodeId, NodeState, Role};

const STATEMENTS: &[(&str, &str)] = &[
    (
        "point_select",
        "SELECT id, name, email FROM users WHERE id = $1",
    ),
    (
        "join_select",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.created_at > now() - interval '1 day' ORDER BY o.total DESC LIMIT 50",
    ),
    (
        "insert",
        "INSERT INTO events (kind, payload, created_at) VALUES ($1, $2, now()) RETURNING id",
    ),
    (
        "cte_for_update",
        "/* app=billing */ WITH due AS (SELECT id FROM invoices WHERE state = 'open' \
         AND due_at < now()) SELECT * FROM invoices WHERE id IN (SELECT id FROM due) \
         FOR UPDATE SKIP LOCKED",
    ),
    ("begin_read_only", "BEGIN READ ONLY"),
];

fn classify_statements(c: &mut Criterion) {
    let config = ClassifierConfig::default();
    let mut g = c.benchmark_group("classify");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| b.iter(|| classify(black_box(sql), &config)));
    }
    g.finish();
}

fn cache_hit(c: &mut Criterion) {
    let config = ClassifierConfig::default();
    let mut cache = ClassificationCache::new(1024);
    let sql = STATEMENTS[1].1;
    cache.get_or_classify(sql, &config);
    c.bench_function("classify_cache_hit/join_select", |b| {
        b.iter(|| cache.get(black_box(sql)).map(|c| c.target))
    });
}

fn cluster() -> ClusterSnapshot {
    let node = |i: usize, role| NodeState {
        id: NodeId(i),
        name: format!("n{i}"),
        host: "127.0.0.1".into(),
        port: 5432 + i as u16,
        role,
        health: Health::Up,
        lsn: Some(Lsn(1000 + i as u64)),
        lag: None,
        freshness: Freshness::Fresh,
    };
    ClusterSnapshot {
        nodes: vec![
            node(0, Role::Primary),
            node(1, Role::Replica),
            node(2, Role::Replica),
            node(3, Role::Replica),
        ],
    }
}

fn route_decision(c: &mut Criterion) {
    let snapshot = cluster();
    let balancer = Balancer::with_weights([1, 1, 2, 1]);
    let mut g = c.benchmark_group("route");
    let write = Request::write();
    let read = Request::read();
    let read_lsn = Request {
        min_lsn: Some(Lsn(1002)),
        ..Request::read()
    };
    for (name, balance, request) in [
        ("write", Balance::RoundRobin, write),
        ("read_round_robin", Balance::RoundRobin, read),
        ("read_least_outstanding", Balance::LeastOutstanding, read),
        ("read_weighted", Balance::Weighted, read),
        ("read_min_lsn", Balance::RoundRobin, read_lsn),
    ] {
        let settings = RoutingSettings {
            balance,
            ..RoutingSettings::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                policy::route(
                    "db",
                    black_box(&snapshot),
                    &settings,
                    &balancer,
                    black_box(&request),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, classify_statements, cache_hit, route_decision);
criterion_main!(benches);
