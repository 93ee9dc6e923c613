//! Unit tests of the prepared-statement exchange: renaming, injection, owed responses, errors.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

use super::*;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(tag);
    out.put_u32(4 + body.len() as u32);
    out.put_slice(body);
    out.to_vec()
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

fn bind(name: &str) -> Vec<u8> {
    frame(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes())
}

/// The tags of the messages in `bytes`, and the names after each tag's fixed prefix.
fn tags(bytes: &[u8]) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        tags.push(bytes[at]);
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        at += 1 + len as usize;
    }
    tags
}

struct Fixture {
    cache: StatementCache,
    client: ClientStatements,
    server: PreparedSet,
    expected: VecDeque<Expect>,
    metrics: crate::metrics::PoolMetrics,
}

impl Fixture {
    fn new(capacity: usize) -> Fixture {
        Fixture {
            cache: StatementCache::new(100),
            client: ClientStatements::default(),
            server: PreparedSet::new(capacity),
            expected: VecDeque::new(),
            metrics: crate::metrics::PoolMetrics::detached(),
        }
    }

    fn exchange(&mut self) -> Exchange<'_> {
        Exchange {
            cache: &self.cache,
            client: &mut self.client,
            server: &mut self.server,
            expected: &mut self.expected,
            settings_changed: false,
            pinned: None,
            metrics: &self.metrics,
        }
    }
}

#[test]
fn a_named_parse_is_renamed_and_answered_by_the_server() {
    let mut f = Fixture::new(10);
    let mut out = BytesMut::new();
    assert_eq!(
        f.exchange().request(&parse("s1", "SELECT 1"), &mut out),
        Request::Replaced
    );
    assert_eq!(tags(&out), vec![b'P']);
    assert!(out.windows(9).any(|w| w == b"__sluice_"));
    assert!(!out.windows(3).any(|w| w == b"s1\0"));
    let mut x = f.exchange();
    assert_eq!(x.request(&frame(b'S', b""), &mut out), Request::Forward);
    assert_eq!(x.response(b'1'), Response::Forward);
    assert_eq!(x.response(b'Z'), Response::Forward);
    assert!(f.expected.is_empty());
}

#[test]
fn a_statement_the_server_has_is_answered_by_the_proxy() {
    let mut f = Fixture::new(10);
    let mut out = BytesMut::new();
    f.exchange().request(&parse("a", "SELECT 1"), &mut out);
    f.exchange().response(b'1');
    out.clear();
    // Another client name for the same text: nothing goes to the server.
    let mut x = f.exchange();
    assert_eq!(
        x.request(&parse("b", "SELECT 1"), &mut out),
        Request::Replaced
    );
    assert!(out.is_empty());
    assert!(x.owes());
    assert!(x.owed(&mut out));
    assert_eq!(&out[..], &[b'1', 0, 0, 0, 4]);
}

#[test]
fn bind_on_a_server_lacking_the_statement_prepares_it_first() {
    let mut f = Fixture::new(10);
    let mut out = BytesMut::new();
    f.exchange().request(&parse("s1", "SELECT 1"), &mut out);
    // The client's next transaction lands on a fresh server connection.
    f.server = PreparedSet::new(10);
    f.expected.clear();
    out.clear();
    let mut x = f.exchange();
    assert_eq!(x.request(&bind("s1"), &mut out), Request::Replaced);
    assert_eq!(tags(&out), vec![b'P', b'B']);
    assert_eq!(x.response(b'1'), Response::Drop);
    assert_eq!(x.response(b'2'), Response::Forward);
    assert!(f.expected.is_empty());
}

#[test]
fn unknown_and_unnamed_statements_pass_through() {
    let mut f = Fixture::new(10);
    let mut out = BytesMut::new();
    let mut x = f.exchange();
    assert_eq!(x.request(&bind("nope"), &mut out), Request::Forward);
    assert_eq!(
        x.request(&parse("", "SELECT 1"), &mut out),
        Request::Forward
    );
    assert_eq!(x.request(&bind(""), &mut out), Request::Forward);
    assert!(out.is_empty());
    assert_eq!(f.expected.len(), 3);
}

#[test]
fn an_error_skips_to_sync_and_forgets_failed_prepares() {
    let mut f = Fixture::new(10);
    let mut out = BytesMut::new();
    let mut x = f.exchange();
    x.request(&parse("bad", "SELEC 1"), &mut out);
    x.request(&bind("bad"), &mut out);
    x.request(&frame(b'E', b"\0\0\0\0\0"), &mut out);
    x.request(&frame(b'C', b"Sbad\0"), &mut out);
    x.request(&frame(b'S', b""), &mut out);
    assert_eq!(x.response(b'E'), Response::Forward);
    // The owed CloseComplete is dropped like the server drops the Close.
    assert!(!x.owes());
    assert_eq!(x.response(b'Z'), Response::Forward);
    assert!(f.expected.is_empty());
    assert!(f.server.is_empty());
}

#[test]
fn close_is_the_clients_business_and_eviction_closes_on_the_server() {
    let mut f = Fixture::new(1);
    let mut out = BytesMut::new();
    let mut x = f.exchange();
    x.request(&parse("a", "SELECT 1"), &mut out);
    x.request(&parse("b", "SELECT 2"), &mut out);
    assert_eq!(tags(&out), vec![b'P', b'C', b'P']);
    assert_eq!(x.response(b'1'), Response::Forward);
    assert_eq!(x.response(b'3'), Response::Drop);
    assert_eq!(x.response(b'1'), Response::Forward);
    out.clear();
    assert_eq!(
        x.request(&frame(b'C', b"Sa\0"), &mut out),
        Request::Replaced
    );
    assert!(x.owed(&mut out));
    assert_eq!(&out[..], &[b'3', 0, 0, 0, 4]);
    assert!(f.client.get(b"a").is_none() && f.client.get(b"b").is_some());
}

#[test]
fn describe_statement_is_renamed_and_deferred_commit_errors_keep_the_sync() {
    let mut f = Fixture::new(10);
    let mut out = BytesMut::new();
    let mut x = f.exchange();
    x.request(&parse("s", "SELECT 1"), &mut out);
    out.clear();
    assert_eq!(
        x.request(&frame(b'D', b"Ss\0"), &mut out),
        Request::Replaced
    );
    assert_eq!(tags(&out), vec![b'D']);
    x.request(&frame(b'S', b""), &mut out);
    for tag in [b'1', b't', b'T'] {
        assert_eq!(x.response(tag), Response::Forward);
    }
    // An error answering Sync itself (a deferred constraint at commit) is followed by its
    // ReadyForQuery.
    assert_eq!(x.response(b'E'), Response::Forward);
    assert_eq!(f.expected.front(), Some(&Expect::UntilReady));
}
