//! Tests of balancing over many draws (round robin, least outstanding, weights, the primary's
//! share) and of consistency keys (map and scanner).

use std::borrow::Cow;
use std::sync::Arc;

use super::tests::snapshot;
use super::*;
use crate::config::routing::{Balance, Share};
use crate::config::RoutingSettings;
use crate::topology::Lsn;

fn settings(balance: Balance) -> RoutingSettings {
    RoutingSettings {
        balance,
        ..RoutingSettings::default()
    }
}

/// How many of `draws` reads each node got.
fn tally(specs: &[&str], s: &RoutingSettings, balancer: &Balancer, draws: usize) -> Vec<usize> {
    let snap = snapshot(specs);
    let mut counts = vec![0; specs.len()];
    for _ in 0..draws {
        let d = policy::route("db", &snap, s, balancer, &Request::read()).unwrap();
        counts[d.node.0] += 1;
    }
    counts
}

#[test]
fn round_robin_is_fair_and_skips_unusable_replicas() {
    let b = Balancer::with_weights([1; 5]);
    let s = settings(Balance::RoundRobin);
    assert_eq!(
        tally(&["P", "R", "R", "R", "R:down"], &s, &b, 300),
        [0, 100, 100, 100, 0]
    );
    assert_eq!(tally(&["P", "R:lag", "R", "R"], &s, &b, 10), [0, 0, 5, 5]);
}

#[test]
fn the_primary_takes_exactly_its_share() {
    let b = Balancer::with_weights([1; 3]);
    let mut s = settings(Balance::RoundRobin);
    s.primary_reads = Share(0.25);
    assert_eq!(tally(&["P", "R", "R"], &s, &b, 1000), [250, 375, 375]);
    s.primary_reads = Share(0.0);
    assert_eq!(tally(&["P", "R", "R"], &s, &b, 10)[0], 0);
    s.primary_reads = Share(1.0 / 3.0);
    assert_eq!(tally(&["P", "R"], &s, &b, 3000), [1000, 2000]);
}

#[test]
fn least_outstanding_picks_the_idle_node() {
    let b = Arc::new(Balancer::with_weights([1; 4]));
    let s = settings(Balance::LeastOutstanding);
    let snap = snapshot(&["P", "R", "R", "R"]);
    let busy1 = b.track(NodeId(1));
    let _busy3 = [b.track(NodeId(3)), b.track(NodeId(3))];
    for _ in 0..10 {
        let d = policy::route("db", &snap, &s, &b, &Request::read()).unwrap();
        assert_eq!(d.node, NodeId(2));
    }
    let _busy2 = [b.track(NodeId(2)), b.track(NodeId(2))];
    let d = policy::route("db", &snap, &s, &b, &Request::read()).unwrap();
    assert_eq!(d.node, NodeId(1));
    drop(busy1);
    assert_eq!(b.outstanding(NodeId(1)), 0);
    assert_eq!(b.outstanding(NodeId(3)), 2);
    // Unknown nodes are counted as nothing and never panic.
    drop(b.track(NodeId(99)));
    assert_eq!(b.outstanding(NodeId(99)), 0);
}

#[test]
fn least_outstanding_spreads_ties() {
    let b = Balancer::with_weights([1; 3]);
    let counts = tally(
        &["P", "R", "R"],
        &settings(Balance::LeastOutstanding),
        &b,
        100,
    );
    assert!(counts[1] >= 30 && counts[2] >= 30, "{counts:?}");
}

#[test]
fn weights_are_respected_over_many_draws() {
    let b = Balancer::with_weights([1, 1, 3, 0]);
    let counts = tally(
        &["P", "R", "R", "R"],
        &settings(Balance::Weighted),
        &b,
        4000,
    );
    assert_eq!(counts[0] + counts[3], 0, "{counts:?}");
    // Expected 1000 : 3000; six standard deviations is about 165.
    assert!((800..=1200).contains(&counts[1]), "{counts:?}");
    let down = tally(
        &["P", "R:down", "R", "R"],
        &settings(Balance::Weighted),
        &b,
        50,
    );
    assert_eq!(down, [0, 0, 50, 0]);
}

#[test]
fn consistency_keys_keep_the_highest_lsn() {
    let keys = ConsistencyKeys::new(10);
    assert_eq!(keys.get("user:42"), None);
    keys.record("user:42", Lsn(200));
    keys.record("user:42", Lsn(100));
    assert_eq!(keys.get("user:42"), Some(Lsn(200)));
    keys.record("user:42", Lsn(300));
    assert_eq!(keys.get("user:42"), Some(Lsn(300)));
    assert_eq!(keys.len(), 1);
}

#[test]
fn consistency_keys_evict_the_least_recently_written() {
    // Capacity 8: generations of 4 keys.
    let keys = ConsistencyKeys::new(8);
    for i in 0..5u64 {
        keys.record(&format!("k{i}"), Lsn(100 + i));
    }
    // k4 rotated k0..k3 into the previous generation: still readable.
    assert_eq!(keys.get("k0"), Some(Lsn(100)));
    assert_eq!(keys.len(), 5);
    // Recording a previous-generation key moves it forward and keeps the higher LSN.
    keys.record("k1", Lsn(7));
    assert_eq!(keys.get("k1"), Some(Lsn(101)));
    keys.record("k5", Lsn(105));
    keys.record("k6", Lsn(106)); // current: k4, k1, k5, k6
    keys.record("k7", Lsn(107)); // rotates: k0, k2, k3 are dropped
    assert_eq!(keys.get("k0"), None);
    assert_eq!(keys.get("k3"), None);
    assert_eq!(keys.get("k1"), Some(Lsn(101)));
    assert_eq!(keys.get("k6"), Some(Lsn(106)));
    for i in 0..1000u64 {
        keys.record(&format!("x{i}"), Lsn(i));
        assert!(keys.len() <= 8);
    }
    assert_eq!(keys.get("x999"), Some(Lsn(999)));
    assert_eq!(keys.get("k6"), None);
}

#[test]
fn consistency_keys_hide_a_write_in_flight() {
    let keys = ConsistencyKeys::new(8);
    keys.record("k", Lsn(10));
    keys.begin_write("k");
    keys.begin_write("k");
    assert_eq!(keys.get("k"), Some(consistency::WRITE_IN_FLIGHT));
    keys.end_write("k", Some(Lsn(20)));
    assert_eq!(keys.get("k"), Some(consistency::WRITE_IN_FLIGHT));
    keys.end_write("k", None);
    assert_eq!(keys.get("k"), Some(Lsn(20)));
    // A write begun on a key not seen before, across a generation change.
    let keys = ConsistencyKeys::new(2);
    keys.begin_write("new");
    keys.record("other", Lsn(1));
    keys.end_write("new", Some(Lsn(5)));
    assert_eq!(keys.get("new"), Some(Lsn(5)));
    keys.end_write("never", None);
    assert_eq!(keys.get("never"), Some(Lsn(0)));
}

#[test]
fn consistency_keys_ignore_bad_keys_and_zero_capacity() {
    let off = ConsistencyKeys::new(0);
    off.record("k", Lsn(1));
    assert_eq!((off.get("k"), off.len()), (None, 0));
    let keys = ConsistencyKeys::new(8);
    keys.record("", Lsn(1));
    keys.record(&"x".repeat(consistency::MAX_KEY_LEN + 1), Lsn(1));
    assert!(keys.is_empty());
}

#[test]
fn consistency_keys_are_shared_across_threads() {
    let keys = Arc::new(ConsistencyKeys::new(1000));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let keys = Arc::clone(&keys);
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    keys.record("shared", Lsn(t * 1000 + i));
                    keys.record(&format!("t{t}:{}", i % 50), Lsn(i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(keys.get("shared"), Some(Lsn(3499)));
    assert!(keys.len() <= 1000 + 4);
}

#[test]
fn key_directive_table() {
    use KeyDirective::{Query, ResetSession as Reset, SetSession as Set};
    let set = |k: &'static str| Some(Set(Cow::Borrowed(k)));
    #[rustfmt::skip]
    let cases: &[(&str, Option<KeyDirective>)] = &[
        ("SELECT 1", None),
        ("SET pgsluice.consistency_key = 'user:42'", set("user:42")),
        ("set PGSLUICE.Consistency_Key to 'user:42';", set("user:42")),
        ("SET SESSION pgsluice.consistency_key = 'a b'", set("a b")),
        ("SET pgsluice.consistency_key = 'it''s'", set("it's")),
        ("SET pgsluice.consistency_key = tenant_7", set("tenant_7")),
        ("SET pgsluice.consistency_key TO DEFAULT", Some(Reset)),
        ("RESET pgsluice.consistency_key", Some(Reset)),
        ("SET LOCAL pgsluice.consistency_key = 'k'", None),
        ("SET pgsluice.consistency_key = ''", None),
        ("SET pgsluice.consistency_key = 'k' 'j'", None),
        ("SET pgsluice.other = 'k'", None),
        ("SELECT 'SET pgsluice.consistency_key = ''k'''", None),
        ("SELECT 1; SET pgsluice.consistency_key = 'k'", None),
        ("/* pgsluice:key=user:42 */ SELECT 1", Some(Query("user:42"))),
        ("SELECT 1 -- pgsluice:key=order-9", Some(Query("order-9"))),
        ("/* app=x, pgsluice:key=u:1, pgsluice:replica */ SELECT 1", Some(Query("u:1"))),
        ("/* pgsluice:key=k1*/ SELECT 1", Some(Query("k1"))),
        ("/* pgsluice:key= */ SELECT 1", None),
        ("/* pgsluice:replica */ SELECT 1", None),
        ("SELECT '/* pgsluice:key=k */'", None),
    ];
    for (sql, want) in cases {
        assert_eq!(&key_directive(sql), want, "{sql}");
    }
    let long = format!(
        "/* pgsluice:key={} */",
        "k".repeat(consistency::MAX_KEY_LEN + 1)
    );
    assert_eq!(key_directive(&long), None);
}
