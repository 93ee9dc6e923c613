//! Tests of read/write classification: which statements may go to a replica, and lexing traps.

use super::*;

fn target(sql: &str) -> Target {
    classify(sql, &ClassifierConfig::default()).target
}

fn reads(sqls: &[&str]) {
    for sql in sqls {
        assert_eq!(target(sql), Target::Replica, "expected a read: {sql}");
    }
}

fn writes(sqls: &[&str]) {
    for sql in sqls {
        assert_eq!(target(sql), Target::Primary, "expected a write: {sql}");
    }
}

#[test]
fn plain_queries_are_reads() {
    reads(&[
        "SELECT 1",
        "select * from t where id = $1",
        "  SeLeCt a, b FROM s.t JOIN u USING (id) ORDER BY 1 LIMIT 10;",
        "VALUES (1, 'a'), (2, 'b')",
        "TABLE accounts",
        "SHOW search_path",
        "show all",
        "(SELECT 1) UNION (SELECT 2)",
        "((select 1))",
        "SELECT count(*) FROM t GROUP BY x HAVING count(*) > 1",
        "select substring('abc' from 1 for 2)",
        "SELECT now()::date, '{1,2}'::int[]",
    ]);
}

#[test]
fn dml_ddl_and_unknown_statements_are_writes() {
    writes(&[
        "INSERT INTO t VALUES (1)",
        "update t set a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "CREATE TABLE t (a int)",
        "DROP TABLE t",
        "ALTER TABLE t ADD b int",
        "TRUNCATE t",
        "GRANT SELECT ON t TO u",
        "VACUUM t",
        "ANALYZE t",
        "REFRESH MATERIALIZED VIEW v",
        "NOTIFY chan",
        "EXECUTE stmt(1)",
        "frobnicate the database",
        "1",
        "(DELETE FROM t)",
    ]);
}

#[test]
fn copy_call_do_and_lock_are_writes() {
    writes(&[
        "COPY t TO STDOUT",
        "copy (select 1) to stdout",
        "COPY t FROM STDIN",
        "CALL proc(1)",
        "DO $$ BEGIN PERFORM 1; END $$",
        "LOCK TABLE t IN ACCESS SHARE MODE",
    ]);
}

#[test]
fn locking_clauses_are_writes() {
    writes(&[
        "SELECT * FROM t FOR UPDATE",
        "select * from t for no key update",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR KEY SHARE",
        "SELECT * FROM t FOR UPDATE OF t SKIP LOCKED",
        "select * from t for update nowait",
        "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
        "select * from t for /* c */ update",
    ]);
}

#[test]
fn select_into_creates_a_table() {
    writes(&[
        "SELECT * INTO new_t FROM t",
        "select a into temp x from t",
        "SELECT a INTO UNLOGGED y FROM t",
    ]);
}

#[test]
fn data_modifying_ctes_are_writes_and_read_ctes_are_reads() {
    writes(&[
        "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
        "with x as (insert into t values (1) returning id) select id from x",
        "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT 1",
        "WITH x AS MATERIALIZED (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE \
         RETURNING *) SELECT 1",
        "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
        "WITH x AS (SELECT 1) DELETE FROM t",
    ]);
    reads(&[
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) \
         SELECT * FROM r",
        "with a as (select 1), b as not materialized (select 2) select * from a, b",
    ]);
}

#[test]
fn writing_functions_anywhere_make_a_write() {
    writes(&[
        "SELECT nextval('s')",
        "select NEXTVAL('s')",
        "SELECT pg_catalog.nextval('s')",
        "SELECT \"nextval\"('s')",
        "SELECT setval('s', 1)",
        "SELECT currval('s')",
        "SELECT * FROM t WHERE id = nextval ('s')",
        "SELECT nextval /* why */ ('s')",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock(1)",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT lo_create(0)",
        "SELECT lo_import('/tmp/x')",
        "SELECT lo_unlink(1)",
        "SELECT pg_notify('c', 'p')",
        "SELECT set_config('a.b', '1', false)",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "VALUES (nextval('s'))",
        "WITH x AS (SELECT nextval('s')) SELECT * FROM x",
    ]);
    reads(&[
        "SELECT 'nextval(1)'",
        "SELECT \"NEXTVAL\"('s')",
        "SELECT nextval FROM t",
        "SELECT my_nextval('s')",
        "SELECT $$nextval('s')$$",
    ]);
}

#[test]
fn the_writing_function_list_is_configurable() {
    let config = ClassifierConfig {
        writing_functions: vec!["audit_log".into()],
        ..ClassifierConfig::default()
    };
    assert_eq!(
        classify("SELECT audit_log('x')", &config).target,
        Target::Primary
    );
    assert_eq!(
        classify("SELECT app.AUDIT_LOG('x')", &config).target,
        Target::Primary
    );
    assert_eq!(
        classify("SELECT nextval('s')", &config).target,
        Target::Replica
    );
    let default = ClassifierConfig::default();
    assert_eq!(
        classify("SELECT audit_log('x')", &default).target,
        Target::Replica
    );
}

#[test]
fn keywords_inside_literals_comments_and_quoted_identifiers_do_not_count() {
    reads(&[
        "SELECT 'FOR UPDATE'",
        "SELECT 'x' FROM t WHERE note = 'delete; drop table t'",
        "SELECT E'it\\'s FOR UPDATE' FROM t",
        "SELECT U&'for update'",
        "SELECT $$ DELETE FROM t $$",
        "SELECT $tag$ ; INSERT INTO t VALUES (1); $tag$",
        "SELECT \"update\", \"into\" FROM \"delete\"",
        "SELECT 1 -- FOR UPDATE\n",
        "SELECT 1 /* ; DELETE FROM t; */",
        "SELECT 1 /* outer /* nested; DELETE FROM t */ still comment; UPDATE t */",
        "/* INSERT */ SELECT 1",
        "-- DELETE\nSELECT 1",
    ]);
}

#[test]
fn multiple_statements_are_a_write_if_any_is() {
    writes(&[
        "SELECT 1; DELETE FROM t",
        "select 1; select 2; update t set a = 1;",
        "SELECT 1; SELECT * FROM t FOR UPDATE",
    ]);
    reads(&[
        "SELECT 1; SELECT 2;",
        "SELECT 1;;; SELECT 2",
        "SHOW x; VALUES (1)",
    ]);
    let c = classify("SELECT 1;; SELECT 2;", &ClassifierConfig::default());
    assert_eq!(c.statements, 2);
}

#[test]
fn semicolons_inside_parentheses_or_atomic_bodies_do_not_split() {
    let config = ClassifierConfig::default();
    let rule = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); \
                DELETE FROM b)";
    let c = classify(rule, &config);
    assert_eq!((c.statements, c.target), (1, Target::Primary));
    let atomic = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                  SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3";
    let c = classify(atomic, &config);
    assert_eq!(c.statements, 2);
    assert_eq!(c.transaction, TxEffect::None, "the body's END is no COMMIT");
}

#[test]
fn explain_plans_only_unless_it_analyzes_a_write() {
    reads(&[
        "EXPLAIN SELECT * FROM t",
        "EXPLAIN DELETE FROM t",
        "EXPLAIN (COSTS OFF) UPDATE t SET a = 1",
        "EXPLAIN ANALYZE SELECT * FROM t",
        "explain (analyze, buffers) select 1",
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        "EXPLAIN (ANALYZE off, FORMAT JSON) INSERT INTO t VALUES (1)",
        "EXPLAIN VERBOSE SELECT 1",
    ]);
    writes(&[
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN ANALYSE VERBOSE UPDATE t SET a = 1",
        "EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)",
        "EXPLAIN (ANALYZE true, BUFFERS) MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        "EXPLAIN (FORMAT JSON, ANALYZE) DELETE FROM t",
        "EXPLAIN ANALYZE SELECT nextval('s')",
        "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE",
        "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1",
        "EXPLAIN (ANALYZE",
    ]);
}

#[test]
fn transaction_control_runs_wherever_the_transaction_is() {
    reads(&[
        "BEGIN READ ONLY",
        "START TRANSACTION READ ONLY",
        "begin transaction isolation level repeatable read, read only",
        "SET TRANSACTION READ ONLY",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT a",
        "RELEASE SAVEPOINT a",
        "ROLLBACK TO SAVEPOINT a",
        "BEGIN READ ONLY; SELECT 1; COMMIT",
        "SET LOCAL statement_timeout = 1000",
        "SET CONSTRAINTS ALL DEFERRED",
        "FETCH 10 FROM c",
        "CLOSE c",
    ]);
    writes(&[
        "BEGIN",
        "BEGIN READ WRITE",
        "START TRANSACTION",
        "BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION READ WRITE",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "BEGIN; SELECT 1; COMMIT",
        "COMMIT PREPARED 'x'",
        "ROLLBACK PREPARED 'x'",
        "PREPARE TRANSACTION 'x'",
    ]);
}

#[test]
fn cursors_are_as_read_only_as_their_query() {
    reads(&[
        "DECLARE c CURSOR FOR SELECT * FROM t",
        "DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR VALUES (1)",
    ]);
    writes(&[
        "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
        "DECLARE c CURSOR FOR SELECT nextval('s')",
        "DECLARE c CURSOR",
    ]);
}

#[test]
fn session_statements_are_writes_by_default() {
    writes(&[
        "SET search_path = x",
        "RESET ALL",
        "DISCARD ALL",
        "LISTEN c",
        "UNLISTEN *",
        "PREPARE p AS SELECT 1",
        "DEALLOCATE p",
        "LOAD 'auto_explain'",
    ]);
}

#[test]
fn malformed_or_empty_input_goes_to_the_primary() {
    let config = ClassifierConfig::default();
    for sql in [
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "SELECT $$ unterminated",
        "SELECT 1 /* unterminated /* nested */",
        "SELECT E'\\'",
    ] {
        let c = classify(sql, &config);
        assert_eq!(c.target, Target::Primary, "{sql}");
        assert!(c.malformed.is_some(), "{sql}");
    }
    let c = classify("SET x = 1; SELECT 'oops", &config);
    assert!(c.session_state.is_empty(), "Postgres runs nothing of it");
    for sql in ["", "   ", ";", "/* only a comment */", "-- x"] {
        let c = classify(sql, &config);
        assert_eq!((c.target, c.statements), (Target::Primary, 0), "{sql:?}");
    }
}

#[test]
fn backslash_strings_follow_standard_conforming_strings() {
    let off = ClassifierConfig {
        standard_conforming_strings: false,
        ..ClassifierConfig::default()
    };
    let sql = "SELECT 'a\\'; DELETE FROM t; --'";
    assert_eq!(classify(sql, &off).target, Target::Replica);
    assert_eq!(target(sql), Target::Primary);
}

#[test]
fn hostile_inputs_never_panic() {
    let config = ClassifierConfig::default();
    let long = "(".repeat(10_000) + &"explain analyze ".repeat(1000);
    for sql in [
        long.as_str(),
        ")))))",
        "explain (",
        "declare",
        "set",
        "set session",
        "reset",
        "prepare",
        "deallocate",
        "create or",
        "load",
        "unlisten",
        "begin atomic end end end",
        "\u{0}\u{1}\\{}",
        "é; ü; $é$ x $é$",
    ] {
        let _ = classify(sql, &config);
    }
}

#[test]
fn keywords_only_count_as_whole_unquoted_words() {
    reads(&[
        "SELECT updated_at, inserted, deleted_flag, into_x, merged FROM t",
        "SELECT \"for\" FROM t WHERE \"into\" = 1",
        "SELECT * FROM t ORDER BY x FOR_UPDATE",
        "SELECT a FROM t WHERE b = 'x' -- FOR UPDATE\nAND c = 1",
    ]);
    writes(&["SELECT a FROM t WHERE b = 'x' /* c */ FOR\nUPDATE"]);
}

#[test]
fn routing_relevant_mixtures() {
    writes(&[
        "WITH x AS (SELECT id FROM t) SELECT * FROM x FOR NO KEY UPDATE",
        "WITH x AS (SELECT pg_advisory_lock(1)) SELECT 1",
        "SELECT 1; SELECT * INTO t2 FROM t",
        "/* pgsluice:key=user:42 */ UPDATE t SET a = 1",
        "/* pgsluice:replica */ INSERT INTO t VALUES (1)",
        "SELECT 1; SELECT setval('s', 10)",
        "SET pgsluice.consistency_key = 'user:42'",
        "WITH x AS (SELECT 1) SELECT * FROM x; DELETE FROM t",
    ]);
    reads(&[
        "/* pgsluice:key=user:42 */ SELECT * FROM t WHERE id = 42",
        "/* pgsluice:primary */ SELECT 1",
        "SELECT 1; SELECT 2; VALUES (3)",
        "WITH x AS (SELECT 'for update') SELECT * FROM x",
        "SELECT pg_advisory_lock_count FROM stats",
    ]);
}
