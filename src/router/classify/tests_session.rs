//! Tests of hints, transaction effects and session-state effects (pinning).

use super::*;

fn run(sql: &str) -> Classification {
    classify(sql, &ClassifierConfig::default())
}

fn effects(sql: &str) -> Vec<SessionEffect> {
    run(sql).session_state
}

fn set(name: &str) -> Vec<SessionEffect> {
    vec![SessionEffect::Set { name: name.into() }]
}

#[test]
fn hints_come_from_comments_only() {
    assert_eq!(
        run("/* pgsluice:primary */ SELECT 1").hint,
        Some(Hint::Primary)
    );
    assert_eq!(
        run("SELECT 1 /* PGSLUICE:Replica */").hint,
        Some(Hint::Replica)
    );
    assert_eq!(
        run("SELECT 1 -- pgsluice:replica").hint,
        Some(Hint::Replica)
    );
    assert_eq!(
        run("/* app=x, pgsluice:replica */ SELECT 1").hint,
        Some(Hint::Replica)
    );
    assert_eq!(
        run("/* a /* pgsluice:replica */ */ SELECT 1").hint,
        Some(Hint::Replica)
    );
    assert_eq!(run("SELECT '/* pgsluice:primary */'").hint, None);
    assert_eq!(run("SELECT $$ -- pgsluice:primary $$").hint, None);
    assert_eq!(run("/* pgsluice:primaryish */ SELECT 1").hint, None);
    assert_eq!(run("/* pgsluice: */ SELECT 1").hint, None);
    assert_eq!(run("SELECT 1").hint, None);
}

#[test]
fn conflicting_hints_resolve_to_primary() {
    let c = run("/* pgsluice:replica */ SELECT 1 /* pgsluice:primary */");
    assert_eq!(c.hint, Some(Hint::Primary));
    let c = run("/* pgsluice:primary pgsluice:replica */ SELECT 1");
    assert_eq!(c.hint, Some(Hint::Primary));
}

#[test]
fn a_hint_overrides_the_target_only_through_hinted_target() {
    let c = run("/* pgsluice:primary */ SELECT 1");
    assert_eq!(
        (c.target, c.hinted_target()),
        (Target::Replica, Target::Primary)
    );
    let c = run("/* pgsluice:replica */ SELECT nextval('s')");
    assert_eq!(
        (c.target, c.hinted_target()),
        (Target::Primary, Target::Replica)
    );
    let c = run("SELECT 1");
    assert_eq!(c.hinted_target(), Target::Replica);
}

#[test]
fn transaction_effects() {
    let cases = [
        ("BEGIN", TxEffect::Begin { read_only: false }),
        ("begin work", TxEffect::Begin { read_only: false }),
        ("BEGIN READ ONLY", TxEffect::Begin { read_only: true }),
        (
            "BEGIN TRANSACTION READ ONLY",
            TxEffect::Begin { read_only: true },
        ),
        (
            "START TRANSACTION READ WRITE",
            TxEffect::Begin { read_only: false },
        ),
        (
            "BEGIN READ ONLY, READ WRITE",
            TxEffect::Begin { read_only: false },
        ),
        (
            "BEGIN ISOLATION LEVEL READ COMMITTED",
            TxEffect::Begin { read_only: false },
        ),
        ("COMMIT", TxEffect::Commit),
        ("END TRANSACTION", TxEffect::Commit),
        ("ROLLBACK", TxEffect::Rollback),
        ("ABORT", TxEffect::Rollback),
        ("ROLLBACK WORK", TxEffect::Rollback),
        ("COMMIT AND CHAIN", TxEffect::Begin { read_only: false }),
        ("COMMIT AND NO CHAIN", TxEffect::Commit),
        ("SAVEPOINT s", TxEffect::Savepoint),
        ("RELEASE s", TxEffect::ReleaseSavepoint),
        ("ROLLBACK TO s", TxEffect::RollbackToSavepoint),
        (
            "ROLLBACK TRANSACTION TO SAVEPOINT s",
            TxEffect::RollbackToSavepoint,
        ),
        (
            "SET TRANSACTION READ ONLY",
            TxEffect::SetTransaction {
                read_only: Some(true),
            },
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            TxEffect::SetTransaction { read_only: None },
        ),
        ("PREPARE TRANSACTION 'g'", TxEffect::PrepareTransaction),
        ("COMMIT PREPARED 'g'", TxEffect::None),
        ("SELECT 1", TxEffect::None),
    ];
    for (sql, tx) in cases {
        assert_eq!(run(sql).transaction, tx, "{sql}");
    }
}

#[test]
fn transaction_effects_fold_over_a_batch() {
    let ro = TxEffect::Begin { read_only: true };
    assert_eq!(run("BEGIN; SET TRANSACTION READ ONLY").transaction, ro);
    assert_eq!(
        run("BEGIN; SAVEPOINT a; SELECT 1").transaction,
        TxEffect::Begin { read_only: false }
    );
    assert_eq!(run("BEGIN; SELECT 1; COMMIT").transaction, TxEffect::Commit);
    assert_eq!(run("COMMIT; BEGIN READ ONLY").transaction, ro);
    let c = run("BEGIN; SET TRANSACTION READ ONLY; SELECT 1");
    assert_eq!(c.target, Target::Primary, "a plain BEGIN stays fail-closed");
}

#[test]
fn session_level_set_pins_with_its_parameter_name() {
    assert_eq!(effects("SET search_path = a, b"), set("search_path"));
    assert_eq!(
        effects("set SESSION Statement_Timeout TO 5"),
        set("statement_timeout")
    );
    assert_eq!(effects("SET \"MyParam\" = 1"), set("MyParam"));
    assert_eq!(
        effects("SET myapp.tenant_id = '42'"),
        set("myapp.tenant_id")
    );
    assert_eq!(effects("SET TIME ZONE 'UTC'"), set("timezone"));
    assert_eq!(effects("SET NAMES 'UTF8'"), set("client_encoding"));
    assert_eq!(effects("SET SCHEMA 'app'"), set("search_path"));
    assert_eq!(effects("SET ROLE admin"), set("role"));
    assert_eq!(effects("SET SESSION ROLE admin"), set("role"));
    assert_eq!(
        effects("SET SESSION AUTHORIZATION bob"),
        set("session_authorization")
    );
    assert_eq!(effects("SET XML OPTION DOCUMENT"), set("xmloption"));
    assert_eq!(
        effects("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        set("session_characteristics")
    );
}

#[test]
fn transaction_scoped_set_does_not_pin() {
    for sql in [
        "SET LOCAL search_path = a",
        "SET TRANSACTION READ ONLY",
        "SET CONSTRAINTS ALL IMMEDIATE",
        "SELECT 1",
        "SELECT pg_advisory_xact_lock(1)",
    ] {
        assert!(!run(sql).pins_session(), "{sql}");
    }
}

#[test]
fn reset_discard_listen_unlisten() {
    use SessionEffect as S;
    assert_eq!(effects("RESET ALL"), vec![S::Reset { name: None }]);
    assert_eq!(
        effects("RESET search_path"),
        vec![S::Reset {
            name: Some("search_path".into())
        }]
    );
    assert_eq!(
        effects("RESET TIME ZONE"),
        vec![S::Reset {
            name: Some("timezone".into())
        }]
    );
    assert_eq!(
        effects("RESET SESSION AUTHORIZATION"),
        vec![S::Reset {
            name: Some("session_authorization".into())
        }]
    );
    assert_eq!(effects("DISCARD ALL"), vec![S::Discard(DiscardScope::All)]);
    assert_eq!(
        effects("discard plans"),
        vec![S::Discard(DiscardScope::Plans)]
    );
    assert_eq!(
        effects("DISCARD SEQUENCES"),
        vec![S::Discard(DiscardScope::Sequences)]
    );
    assert_eq!(
        effects("DISCARD TEMPORARY"),
        vec![S::Discard(DiscardScope::Temp)]
    );
    assert_eq!(
        effects("LISTEN Jobs"),
        vec![S::Listen {
            channel: "jobs".into()
        }]
    );
    assert_eq!(
        effects("UNLISTEN jobs"),
        vec![S::Unlisten {
            channel: Some("jobs".into())
        }]
    );
    assert_eq!(effects("UNLISTEN *"), vec![S::Unlisten { channel: None }]);
}

#[test]
fn prepare_deallocate_and_cursors_with_hold() {
    use SessionEffect as S;
    assert_eq!(
        effects("PREPARE q1 (int) AS SELECT $1"),
        vec![S::Prepare { name: "q1".into() }]
    );
    assert_eq!(
        effects("DEALLOCATE q1"),
        vec![S::Deallocate {
            name: Some("q1".into())
        }]
    );
    assert_eq!(
        effects("DEALLOCATE PREPARE \"Q\""),
        vec![S::Deallocate {
            name: Some("Q".into())
        }]
    );
    assert_eq!(
        effects("DEALLOCATE ALL"),
        vec![S::Deallocate { name: None }]
    );
    assert_eq!(
        effects("DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT 1"),
        vec![S::DeclareWithHold { cursor: "c".into() }]
    );
    let held = run("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t");
    assert_eq!(held.target, Target::Replica);
    assert!(effects("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1").is_empty());
    assert!(effects("DECLARE c CURSOR FOR SELECT 1").is_empty());
}

#[test]
fn temporary_objects_pin() {
    for sql in [
        "CREATE TEMP TABLE x (a int)",
        "CREATE TEMPORARY TABLE x AS SELECT 1",
        "create local temporary table x (a int)",
        "CREATE GLOBAL TEMP TABLE x (a int)",
        "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP SEQUENCE s",
        "CREATE TABLE pg_temp.x (a int)",
        "CREATE TABLE IF NOT EXISTS pg_temp.x (a int)",
        "SELECT 1 INTO TEMP x",
        "SELECT * INTO TEMPORARY TABLE x FROM t",
    ] {
        assert_eq!(effects(sql), vec![SessionEffect::CreateTemp], "{sql}");
    }
    for sql in [
        "CREATE TABLE x (a int)",
        "CREATE TABLE temp (a int)",
        "CREATE FUNCTION temp() RETURNS int AS 'select 1' LANGUAGE sql",
        "SELECT * INTO x FROM t",
    ] {
        assert!(effects(sql).is_empty(), "{sql}");
    }
}

#[test]
fn session_advisory_locks_set_config_and_load_pin() {
    use SessionEffect as S;
    let lock = |f: &str| S::AdvisoryLock { function: f.into() };
    assert_eq!(
        effects("SELECT pg_advisory_lock(1)"),
        vec![lock("pg_advisory_lock")]
    );
    assert_eq!(
        effects("SELECT PG_TRY_ADVISORY_LOCK_SHARED(1, 2)"),
        vec![lock("pg_try_advisory_lock_shared")]
    );
    assert_eq!(
        effects("SELECT pg_catalog.pg_advisory_lock_shared(1) FROM t WHERE x"),
        vec![lock("pg_advisory_lock_shared")]
    );
    assert!(effects("SELECT pg_try_advisory_xact_lock(1)").is_empty());
    assert!(effects("SELECT 'pg_advisory_lock(1)'").is_empty());
    assert_eq!(
        effects("SELECT set_config('a.b', 'c', false)"),
        vec![S::SetConfig]
    );
    assert_eq!(
        effects("LOAD 'auto_explain'"),
        vec![S::Load {
            library: "auto_explain".into()
        }]
    );
}

#[test]
fn effects_accumulate_over_statements_in_order() {
    use SessionEffect as S;
    let c = run("SET a = 1; SELECT 1; PREPARE p AS SELECT 2; LISTEN c");
    assert_eq!(c.statements, 4);
    assert_eq!(
        c.session_state,
        vec![
            S::Set { name: "a".into() },
            S::Prepare { name: "p".into() },
            S::Listen {
                channel: "c".into()
            },
        ]
    );
    assert!(c.pins_session());
}
