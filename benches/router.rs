//! Benchmarks of SQL classification for routing: typical statements, and a cache hit.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgsluice::router::classify::{classify, ClassificationCache, ClassifierConfig};

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

criterion_group!(benches, classify_statements, cache_hit);
criterion_main!(benches);
