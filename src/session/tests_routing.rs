//! Unit tests of one client's routing state: consistency keys (the proxy's own SET, comment
//! hints, writes in flight), the 25006 retry eligibility and statement intents cached per client.

use bytes::{BufMut, BytesMut};

use super::*;
use crate::router::consistency::WRITE_IN_FLIGHT;
use crate::session::statements::StatementCache;
use crate::topology::NodeId;

fn build(extra: &str) -> Generation {
    let yaml = format!(
        "users:\n  - {{ name: app, password: pw }}\ndatabases:\n  - name: db\n    nodes:\n\
         \x20     - {{ host: 127.0.0.1, port: 5432, role: primary }}\n\
         \x20     - {{ host: 127.0.0.1, port: 5433, role: replica }}\n{extra}"
    );
    let config = crate::config::load_str(&yaml, &|_| None).expect("valid config");
    Generation::build(config).expect("generation builds")
}

fn query(sql: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(b'Q');
    buf.put_u32(4 + sql.len() as u32 + 1);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
    buf
}

fn parse_body(sql: &str) -> Vec<u8> {
    let mut rest = sql.as_bytes().to_vec();
    rest.extend_from_slice(&[0, 0, 0]);
    rest
}

fn bind(name: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(b'B');
    buf.put_u32(4 + 1 + name.len() as u32 + 1 + 6);
    buf.put_u8(0);
    buf.put_slice(name.as_bytes());
    buf.put_slice(&[0, 0, 0, 0, 0, 0, 0]);
    buf
}

const PRIMARY: Decision = Decision {
    node: NodeId(0),
    reason: Reason::Write,
    replica: false,
};
const REPLICA: Decision = Decision {
    node: NodeId(1),
    reason: Reason::Read,
    replica: true,
};

#[test]
fn the_proxy_answers_a_lone_key_set_and_shares_the_key() {
    let generation = build("");
    let mut writer = ClientRouting::new(&generation, "db", "app").unwrap();
    let mut reader = ClientRouting::new(&generation, "db", "app").unwrap();
    let statements = ClientStatements::default();
    let set = query("SET pgsluice.consistency_key = 'user:42'");
    for client in [&mut writer, &mut reader] {
        let command = client.key_command(&set).unwrap();
        assert_eq!(command.consumed, set.len());
        assert_eq!(command.tag, "SET");
    }
    assert_eq!(writer.key_command(&query("SELECT 1")), None);
    assert_eq!(
        writer.key_command(&query("SET pgsluice.consistency_key = 'k'; SELECT 1")),
        None,
        "a longer string goes to Postgres"
    );
    // The write is announced: until its LSN is known, keyed reads need the primary.
    let write = writer.request(&query("UPDATE t SET n = 1"), &statements);
    assert!(writer.start_write(&PRIMARY, &write));
    let read = reader.request(&query("SELECT n FROM t"), &statements);
    assert_eq!(read.min_lsn, Some(WRITE_IN_FLIGHT));
    writer.wrote(Some(Lsn(100)));
    let read = reader.request(&query("SELECT n FROM t"), &statements);
    assert_eq!((read.intent, read.min_lsn), (Intent::Read, Some(Lsn(100))));
    // RESET forgets the session key; a comment keys one query string.
    let reset = reader
        .key_command(&query("RESET pgsluice.consistency_key"))
        .unwrap();
    assert_eq!(reset.tag, "RESET");
    let read = reader.request(&query("SELECT n FROM t"), &statements);
    assert_eq!(read.min_lsn, None);
    let hinted = query("/* pgsluice:key=user:42 */ SELECT n FROM t");
    assert_eq!(reader.key_command(&hinted), None);
    assert_eq!(reader.request(&hinted, &statements).min_lsn, Some(Lsn(100)));
    // An abandoned write ends without a position; an unknown one is not shared.
    let write = writer.request(&query("UPDATE t SET n = 2"), &statements);
    assert!(writer.start_write(&PRIMARY, &write));
    writer.abandoned();
    writer.request(&query("UPDATE t SET n = 3"), &statements);
    assert!(writer.start_write(&PRIMARY, &write));
    writer.wrote(Some(Lsn(u64::MAX)));
    assert_eq!(reader.request(&hinted, &statements).min_lsn, Some(Lsn(100)));
}

#[test]
fn keys_are_off_with_zero_capacity() {
    let generation = build("routing: { consistency_keys_capacity: 0 }\n");
    let mut client = ClientRouting::new(&generation, "db", "app").unwrap();
    let statements = ClientStatements::default();
    let hinted = query("/* pgsluice:key=k */ SELECT 1");
    assert_eq!(client.request(&hinted, &statements).min_lsn, None);
}

#[test]
fn only_autocommit_simple_queries_on_replicas_are_retried() {
    let generation = build("");
    let client = ClientRouting::new(&generation, "db", "app").unwrap();
    let select = query("SELECT my_writer()");
    let retry = client.retry(&select, &REPLICA).unwrap();
    assert_eq!(&retry.query[..], &select[..]);
    assert!(client.retry(&select, &PRIMARY).is_none());
    let begin = query("BEGIN READ ONLY; SELECT my_writer(); COMMIT");
    assert!(client.retry(&begin, &REPLICA).is_none());
    assert!(client.retry(&bind("s1"), &REPLICA).is_none());
    let off = build("routing: { retry_read_only_errors: false }\n");
    let client = ClientRouting::new(&off, "db", "app").unwrap();
    assert!(client.retry(&select, &REPLICA).is_none());
}

#[test]
fn a_prepared_statement_is_classified_once_with_the_clients_settings() {
    let generation = build("routing: { writing_functions: [my_writer] }\n");
    let mut client = ClientRouting::new(&generation, "db", "app").unwrap();
    let cache = StatementCache::new(10);
    let mut statements = ClientStatements::default();
    let read = cache.get_or_insert(&parse_body("SELECT n FROM t WHERE id = $1"));
    let write = cache.get_or_insert(&parse_body("SELECT my_writer()"));
    statements.insert(b"r", read.clone());
    statements.insert(b"w", write.clone());
    assert!(
        write.read_only,
        "the shared cache only knows the default writing functions"
    );
    for _ in 0..2 {
        assert_eq!(client.request(&bind("r"), &statements).intent, Intent::Read);
        assert_eq!(
            client.request(&bind("w"), &statements).intent,
            Intent::Write
        );
    }
    assert_eq!(client.prepared.len(), 2);
    assert_eq!(
        client.request(&bind("unknown"), &statements).intent,
        Intent::Write
    );
}

#[test]
fn routing_reasons_map_to_metric_labels() {
    use crate::metrics::{RouteReason, RouteTarget};
    assert_eq!(
        metric_labels(&REPLICA),
        (RouteTarget::Replica, RouteReason::Read)
    );
    let fallback = Decision {
        reason: Reason::ReadNoReplica,
        ..PRIMARY
    };
    assert_eq!(
        metric_labels(&fallback),
        (RouteTarget::Primary, RouteReason::Fallback)
    );
}

#[test]
fn a_reload_keeps_the_keys_when_the_capacity_stays() {
    let old = build("");
    old.consistency_keys["db"].record("k", Lsn(7));
    let mut same = build("");
    same.keep_consistency_keys(&old);
    assert_eq!(same.consistency_keys["db"].get("k"), Some(Lsn(7)));
    let mut resized = build("routing: { consistency_keys_capacity: 10 }\n");
    resized.keep_consistency_keys(&old);
    assert_eq!(resized.consistency_keys["db"].get("k"), None);
}
