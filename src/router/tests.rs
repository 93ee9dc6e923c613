//! Table tests of the routing policy: writes, reads over replicas, read-your-writes, fallbacks,
//! and how a first query string becomes an intent.

use std::time::{Duration, Instant};

use super::classify::{classify, ClassifierConfig};
use super::*;
use crate::config::routing::{
    Balance, DefaultTarget, ReadRouting, ReadWriteTransactions, ReadYourWrites, Share,
    WhenNoReplica,
};
use crate::config::RoutingSettings;
use crate::topology::{Freshness, Health, Lsn, NodeState, Role};

/// A node from a compact spec: `P` primary, `R` replica, `A` undiscovered auto node; then
/// optional `:lsn`, `:down`, `:unknown` (health never checked), `:lag`.
pub(super) fn node(i: usize, spec: &str) -> NodeState {
    let mut parts = spec.split(':');
    let role = match parts.next() {
        Some("P") => Role::Primary,
        Some("R") => Role::Replica,
        _ => Role::Unknown,
    };
    let mut state = NodeState {
        id: NodeId(i),
        name: format!("n{i}"),
        host: "127.0.0.1".into(),
        port: 5432 + i as u16,
        role,
        health: if role == Role::Unknown {
            Health::Unknown
        } else {
            Health::Up
        },
        lsn: None,
        lag: None,
        freshness: Freshness::Fresh,
    };
    for part in parts {
        match part {
            "down" => state.health = Health::Down,
            "unknown" => state.health = Health::Unknown,
            "lag" => state.freshness = Freshness::Lagging,
            lsn => state.lsn = Some(Lsn(lsn.parse().unwrap())),
        }
    }
    state
}

pub(super) fn snapshot(specs: &[&str]) -> ClusterSnapshot {
    ClusterSnapshot {
        nodes: specs.iter().enumerate().map(|(i, s)| node(i, s)).collect(),
    }
}

type Tweak = fn(&mut RoutingSettings);

fn none(_: &mut RoutingSettings) {}
fn fail_without_replica(s: &mut RoutingSettings) {
    s.when_no_replica = WhenNoReplica::Fail;
}
fn ryw_off(s: &mut RoutingSettings) {
    s.read_your_writes = ReadYourWrites::Off;
}
fn ryw_window(s: &mut RoutingSettings) {
    s.read_your_writes = ReadYourWrites::Window;
}
fn reads_primary(s: &mut RoutingSettings) {
    s.reads = ReadRouting::Primary;
}
fn all_reads_primary(s: &mut RoutingSettings) {
    s.primary_reads = Share(1.0);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Node(usize, Reason),
    NoPrimary,
    SeveralPrimaries,
    NoReplica,
}

fn future() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(3600))
}

fn past() -> Option<Instant> {
    Instant::now().checked_sub(Duration::from_millis(1))
}

fn req(intent: Intent, reason: Reason, min_lsn: Option<u64>, until: Option<Instant>) -> Request {
    Request {
        intent,
        reason,
        min_lsn: min_lsn.map(Lsn),
        primary_until: until,
    }
}

fn w() -> Request {
    Request::write()
}

fn r() -> Request {
    Request::read()
}

fn r_lsn(min: u64) -> Request {
    req(Intent::Read, Reason::Read, Some(min), None)
}

#[test]
fn route_table() {
    use Reason as Rs;
    use Want::*;
    #[rustfmt::skip]
    let cases: Vec<(&str, &[&str], Tweak, Request, Want)> = vec![
        ("write to the primary", &["R", "P"], none, w(), Node(1, Rs::Write)),
        ("write keeps a hint reason", &["P", "R"], none, req(Intent::Write, Rs::Hint, None, None), Node(0, Rs::Hint)),
        ("two primaries refuse writes", &["P", "P:unknown"], none, w(), SeveralPrimaries),
        ("a down primary is no primary", &["P:down", "R"], none, w(), NoPrimary),
        ("a down second primary is ignored", &["P", "P:down"], none, w(), Node(0, Rs::Write)),
        ("an undiscovered auto node serves as primary", &["A"], none, w(), Node(0, Rs::Write)),
        ("auto node before a replica", &["R", "A"], none, w(), Node(1, Rs::Write)),
        ("a known primary beats an auto node", &["A", "P"], none, w(), Node(1, Rs::Write)),
        ("a down auto node is no primary", &["A:down"], none, w(), NoPrimary),
        ("writes ignore reads: primary", &["P", "R"], reads_primary, w(), Node(0, Rs::Write)),
        ("read to the replica", &["P", "R"], none, r(), Node(1, Rs::Read)),
        ("read to a never-checked replica", &["P", "R:unknown"], none, r(), Node(1, Rs::Read)),
        ("read skips a down replica", &["P", "R:down", "R"], none, r(), Node(2, Rs::Read)),
        ("read skips a lagging replica", &["P", "R:lag", "R"], none, r(), Node(2, Rs::Read)),
        ("read falls back when the replica is down", &["P", "R:down"], none, r(), Node(0, Rs::ReadNoReplica)),
        ("read falls back when the replica lags", &["R:lag", "P"], none, r(), Node(1, Rs::ReadNoReplica)),
        ("read with no replica at all", &["P"], none, r(), Node(0, Rs::ReadNoReplica)),
        ("an auto node is not a replica", &["A"], none, r(), Node(0, Rs::ReadNoReplica)),
        ("no replica and fail", &["P", "R:down"], fail_without_replica, r(), NoReplica),
        ("lagging only and fail", &["P", "R:lag"], fail_without_replica, r(), NoReplica),
        ("fail does not apply when a replica exists", &["P", "R"], fail_without_replica, r(), Node(1, Rs::Read)),
        ("no replica and no primary", &["P:down", "R:down"], none, r(), NoPrimary),
        ("no replica and two primaries", &["P", "P"], none, r(), SeveralPrimaries),
        ("reads survive two primaries", &["P", "P", "R"], none, r(), Node(2, Rs::Read)),
        ("reads survive a down primary", &["P:down", "R"], none, r(), Node(1, Rs::Read)),
        ("min_lsn skips a behind replica", &["P", "R:100", "R:200"], none, r_lsn(150), Node(2, Rs::Read)),
        ("min_lsn equal is caught up", &["P", "R:150"], none, r_lsn(150), Node(1, Rs::Read)),
        ("min_lsn none caught up", &["P", "R:100"], none, r_lsn(150), Node(0, Rs::ReadYourWrites)),
        ("min_lsn and unknown replica lsn", &["P", "R"], none, r_lsn(1), Node(0, Rs::ReadYourWrites)),
        ("min_lsn behind even with fail", &["P", "R:100"], fail_without_replica, r_lsn(150), Node(0, Rs::ReadYourWrites)),
        ("min_lsn behind and primary down", &["P:down", "R:100"], none, r_lsn(150), NoPrimary),
        ("min_lsn ignored when off", &["P", "R:100"], ryw_off, r_lsn(150), Node(1, Rs::Read)),
        ("min_lsn ignored in window mode", &["P", "R:100"], ryw_window, r_lsn(150), Node(1, Rs::Read)),
        ("window open keeps reads on the primary", &["P", "R"], ryw_window, req(Intent::Read, Rs::Read, None, future()), Node(0, Rs::ReadYourWrites)),
        ("window closed", &["P", "R"], ryw_window, req(Intent::Read, Rs::Read, None, past()), Node(1, Rs::Read)),
        ("window ignored in lsn mode", &["P", "R"], none, req(Intent::Read, Rs::Read, None, future()), Node(1, Rs::Read)),
        ("reads: primary", &["P", "R"], reads_primary, r(), Node(0, Rs::ReadsOff)),
        ("primary share 1.0", &["P", "R"], all_reads_primary, r(), Node(0, Rs::PrimaryShare)),
        ("primary share with the primary down", &["P:down", "R"], all_reads_primary, r(), Node(1, Rs::Read)),
        ("hinted read keeps its reason", &["P", "R"], none, req(Intent::Read, Rs::Hint, None, None), Node(1, Rs::Hint)),
        ("default-target read keeps its reason", &["R", "P"], none, req(Intent::Read, Rs::Default, None, None), Node(0, Rs::Default)),
    ];
    for (name, specs, tweak, request, want) in cases {
        let mut settings = RoutingSettings::default();
        tweak(&mut settings);
        let snap = snapshot(specs);
        let balancer = Balancer::with_weights(specs.iter().map(|_| 1));
        let got = match policy::route("db", &snap, &settings, &balancer, &request) {
            Ok(d) => {
                let role = snap.nodes[d.node.0].role;
                assert_eq!(d.replica, role == Role::Replica, "{name}: replica flag");
                Node(d.node.0, d.reason)
            }
            Err(RouteError::NoPrimary { .. }) => NoPrimary,
            Err(RouteError::SeveralPrimaries { .. }) => SeveralPrimaries,
            Err(RouteError::NoReplica { .. }) => NoReplica,
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_weight_zero_replica_takes_no_reads() {
    let snap = snapshot(&["P", "R", "R"]);
    let balancer = Balancer::with_weights([1, 0, 1]);
    for balance in [
        Balance::RoundRobin,
        Balance::LeastOutstanding,
        Balance::Weighted,
    ] {
        let settings = RoutingSettings {
            balance,
            ..RoutingSettings::default()
        };
        for _ in 0..50 {
            let d = policy::route("db", &snap, &settings, &balancer, &r()).unwrap();
            assert_eq!(d.node, NodeId(2), "{balance}");
        }
    }
    let only_zero = Balancer::with_weights([1, 0]);
    let snap = snapshot(&["P", "R"]);
    let d = policy::route("db", &snap, &RoutingSettings::default(), &only_zero, &r()).unwrap();
    assert_eq!((d.node, d.reason), (NodeId(0), Reason::ReadNoReplica));
}

#[test]
fn only_primary_trouble_is_worth_waiting_for() {
    let db = || "db".to_string();
    assert!(RouteError::NoPrimary { database: db() }.worth_waiting());
    assert!(RouteError::SeveralPrimaries { database: db() }.worth_waiting());
    assert!(!RouteError::NoReplica { database: db() }.worth_waiting());
}

#[test]
fn the_legacy_entry_point_still_picks_the_primary() {
    let snap = snapshot(&["R", "P"]);
    assert_eq!(route("db", &snap, Intent::ReadWrite), Ok(NodeId(1)));
    assert_eq!(route("db", &snap, Intent::Read), Ok(NodeId(1)));
    assert!(matches!(
        route("db", &snapshot(&["P", "P"]), Intent::Write),
        Err(RouteError::SeveralPrimaries { .. })
    ));
}

fn settings_with(tweak: Tweak) -> RoutingSettings {
    let mut s = RoutingSettings::default();
    tweak(&mut s);
    s
}

fn classify_begin(s: &mut RoutingSettings) {
    s.read_write_transactions = ReadWriteTransactions::Classify;
}
fn target_replica(s: &mut RoutingSettings) {
    s.default_target = DefaultTarget::Replica;
}
fn target_primary(s: &mut RoutingSettings) {
    s.default_target = DefaultTarget::Primary;
}

#[test]
fn intent_table() {
    use Intent::{Read as R, Write as W};
    use Reason as Rs;
    use TxStart::{AfterHeldBegin as Held, Idle};
    #[rustfmt::skip]
    let cases: &[(&str, Tweak, TxStart, (Intent, Reason))] = &[
        ("SELECT 1", none, Idle, (R, Rs::Read)),
        ("INSERT INTO t VALUES (1)", none, Idle, (W, Rs::Write)),
        ("SELECT nextval('s')", none, Idle, (W, Rs::Write)),
        ("SELECT * FROM t FOR UPDATE", none, Idle, (W, Rs::Write)),
        ("SELECT 'unterminated", none, Idle, (W, Rs::Write)),
        ("/* pgsluice:replica */ SELECT 'unterminated", none, Idle, (W, Rs::Write)),
        ("/* pgsluice:primary */ SELECT 1", none, Idle, (W, Rs::Hint)),
        ("/* pgsluice:replica */ UPDATE t SET a = 1", none, Idle, (R, Rs::Hint)),
        ("/* pgsluice:replica */ SELECT 1", target_primary, Idle, (R, Rs::Hint)),
        ("SELECT 1", target_primary, Idle, (W, Rs::Default)),
        ("DELETE FROM t", target_replica, Idle, (R, Rs::Default)),
        ("/* pgsluice:primary */ SELECT 1", target_replica, Idle, (W, Rs::Hint)),
        ("BEGIN", none, Idle, (W, Rs::TransactionBegin)),
        ("BEGIN; SELECT 1", none, Idle, (W, Rs::TransactionBegin)),
        ("BEGIN READ ONLY", none, Idle, (R, Rs::ReadOnlyTransaction)),
        ("START TRANSACTION READ ONLY", classify_begin, Idle, (R, Rs::ReadOnlyTransaction)),
        // The classifier counts the read-write BEGIN itself as a write: stays on the primary.
        ("BEGIN; SET TRANSACTION READ ONLY", none, Idle, (W, Rs::Write)),
        ("BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE", none, Idle, (W, Rs::Write)),
        ("BEGIN READ ONLY; DELETE FROM t", none, Idle, (W, Rs::Write)),
        ("BEGIN; SELECT 1", classify_begin, Idle, (W, Rs::Write)),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", classify_begin, Held, (W, Rs::Write)),
        ("BEGIN; UPDATE t SET a = 1", classify_begin, Idle, (W, Rs::Write)),
        ("SELECT 1", classify_begin, Held, (R, Rs::Read)),
        ("INSERT INTO t DEFAULT VALUES", classify_begin, Held, (W, Rs::Write)),
        ("SELECT 1", none, Held, (W, Rs::TransactionBegin)),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", classify_begin, Held, (W, Rs::Write)),
    ];
    let config = ClassifierConfig::default();
    for (sql, tweak, start, want) in cases {
        let c = classify(sql, &config);
        let got = intent_for(&c, &settings_with(*tweak), *start);
        assert_eq!(got, *want, "{sql}");
    }
}

#[test]
fn only_a_lone_read_write_begin_is_held_and_only_when_classifying() {
    let config = ClassifierConfig::default();
    let held =
        |sql: &str, tweak: Tweak| hold_begin(sql, &classify(sql, &config), &settings_with(tweak));
    assert!(held("BEGIN", classify_begin));
    assert!(held(
        "start transaction isolation level repeatable read",
        classify_begin
    ));
    assert!(!held("BEGIN ISOLATION LEVEL SERIALIZABLE", classify_begin));
    assert!(!held("BEGIN", none));
    assert!(!held("BEGIN READ ONLY", classify_begin));
    assert!(!held("BEGIN; SELECT 1", classify_begin));
    assert!(!held("/* pgsluice:primary */ BEGIN", classify_begin));
    assert!(!held("SELECT 1", classify_begin));
    let alias = |s: &mut RoutingSettings| {
        classify_begin(s);
        target_replica(s);
    };
    assert!(!held("BEGIN", alias));
}

#[test]
fn the_classifier_follows_the_configured_writing_functions() {
    let settings = RoutingSettings {
        writing_functions: vec!["audit_touch".into()],
        ..RoutingSettings::default()
    };
    let config = classifier_config(&settings);
    let c = classify("SELECT audit_touch(1)", &config);
    assert_eq!(intent_for(&c, &settings, TxStart::Idle).0, Intent::Write);
    let c = classify("SELECT nextval('s')", &config);
    assert_eq!(intent_for(&c, &settings, TxStart::Idle).0, Intent::Read);
}
