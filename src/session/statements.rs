//! Named prepared statements under transaction pooling. A client's statement names are its own;
//! on the servers every distinct statement (query text + parameter types) has one proxy-wide name,
//! `__sluice_<id>`. Each client keeps a map from its names to those statements, each server
//! connection the set it has prepared ([`PreparedSet`]), and the proxy-wide [`StatementCache`]
//! holds the Parse message that prepares a statement on a server that lacks it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;

/// One statement as the servers know it.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    /// The Parse message (header included) that prepares it under its proxy-wide name.
    parse: Bytes,
    /// The proxy-wide name, NUL-terminated, as it goes into Bind, Describe and Close.
    name: Bytes,
    /// Running it may change session settings (SET, RESET, set_config): read them back after.
    pub changes_settings: bool,
    /// Running it creates session state that pins the client (and why).
    pub pin: Option<&'static str>,
    /// A read a replica may serve (classified with the default writing functions; hints count).
    pub read_only: bool,
    /// A server accepted its Parse once: the SQL is valid, so a client's Parse of it can be
    /// answered without a server.
    valid: AtomicBool,
}

impl Statement {
    fn new(id: u64, rest: &[u8]) -> Statement {
        let query = &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())];
        let read_only = std::str::from_utf8(query).is_ok_and(|sql| {
            use crate::router::classify::{classify, ClassifierConfig, Target};
            let config = ClassifierConfig {
                writing_functions: crate::router::classify::DEFAULT_WRITING_FUNCTIONS
                    .iter()
                    .map(|f| f.to_string())
                    .collect(),
                standard_conforming_strings: true,
            };
            let classification = classify(sql, &config);
            classification.malformed.is_none() && classification.hinted_target() == Target::Replica
        });
        let effects = super::pins::query_effects(query);
        let name = format!("__sluice_{id}\0");
        let mut parse = BytesMut::with_capacity(5 + name.len() + rest.len());
        parse.put_u8(b'P');
        parse.put_u32(4 + name.len() as u32 + rest.len() as u32);
        parse.put_slice(name.as_bytes());
        parse.put_slice(rest);
        Statement {
            id,
            parse: parse.freeze(),
            name: Bytes::from(name.into_bytes()),
            changes_settings: effects.settings,
            pin: effects.pin,
            read_only,
            valid: AtomicBool::new(false),
        }
    }

    /// Whether a server has accepted this statement's Parse.
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Relaxed)
    }

    pub fn mark_valid(&self) {
        self.valid.store(true, Ordering::Relaxed);
    }

    /// The whole Parse message that prepares this statement on a server.
    pub fn parse_message(&self) -> &[u8] {
        &self.parse
    }

    /// The proxy-wide name with its terminating NUL.
    pub fn name_cstr(&self) -> &[u8] {
        &self.name
    }

    /// The proxy-wide name.
    pub fn name(&self) -> &str {
        let name = &self.name[..self.name.len().saturating_sub(1)];
        std::str::from_utf8(name).unwrap_or_default()
    }
}

/// Every distinct statement clients prepared, shared by all sessions, bounded: when over
/// `capacity`, statements no client refers to any more are forgotten.
#[derive(Debug)]
pub struct StatementCache {
    /// Key: the Parse body after the statement name (query text, parameter count and types).
    by_text: DashMap<Box<[u8]>, Arc<Statement>>,
    next_id: AtomicU64,
    capacity: usize,
}

impl StatementCache {
    pub fn new(capacity: usize) -> StatementCache {
        StatementCache {
            by_text: DashMap::new(),
            next_id: AtomicU64::new(1),
            capacity: capacity.max(1),
        }
    }

    /// The statement for `rest` (a Parse body after the name), created on first use.
    pub fn get_or_insert(&self, rest: &[u8]) -> Arc<Statement> {
        if let Some(found) = self.by_text.get(rest) {
            return found.clone();
        }
        if self.by_text.len() >= self.capacity {
            self.by_text
                .retain(|_, statement| Arc::strong_count(statement) > 1);
        }
        self.by_text
            .entry(rest.into())
            .or_insert_with(|| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                Arc::new(Statement::new(id, rest))
            })
            .clone()
    }

    /// The statement for `rest` if a server has accepted it.
    pub fn get_valid(&self, rest: &[u8]) -> Option<Arc<Statement>> {
        self.by_text
            .get(rest)
            .filter(|s| s.is_valid())
            .map(|s| s.clone())
    }

    pub fn len(&self) -> usize {
        self.by_text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_text.is_empty()
    }
}

/// One client's named statements: its names mapped to proxy-wide statements. One pointer, and no
/// allocation, for clients that never prepare a named statement (an idle client stays small).
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: Option<Box<ByName>>,
}

/// A client's statement names to proxy-wide statements.
type ByName = HashMap<Box<[u8]>, Arc<Statement>>;

impl ClientStatements {
    /// Binds the client's `name` to `statement` (a re-Parse of a name replaces it).
    pub fn insert(&mut self, name: &[u8], statement: Arc<Statement>) {
        self.by_name
            .get_or_insert_with(Box::default)
            .insert(name.into(), statement);
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.as_ref()?.get(name)
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.as_mut()?.remove(name)
    }

    /// Records that a server accepted the Parse of statement `id` (one of this client's).
    pub fn mark_valid(&self, id: u64) {
        let mut statements = self.by_name.iter().flat_map(|map| map.values());
        if let Some(statement) = statements.find(|s| s.id == id) {
            statement.mark_valid();
        }
    }

    /// `DEALLOCATE ALL` / `DISCARD ALL`: the client's view becomes empty.
    pub fn clear(&mut self) {
        self.by_name = None;
    }

    pub fn len(&self) -> usize {
        self.by_name.as_ref().map_or(0, |map| map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answers a client's `Parse`s of named statements followed by `Sync`, between transactions,
/// without a server: when every statement is one a server already accepted, there is nothing a
/// server could add (statements are prepared where they run). Returns the bytes consumed from
/// the front of `buf` and the number of Parses, or `None` when `buf` holds anything else.
pub fn parse_without_server(
    cache: &StatementCache,
    client: &mut ClientStatements,
    buf: &[u8],
) -> Option<(usize, usize)> {
    let mut at = 0;
    let mut found = Vec::new();
    loop {
        let header = buf.get(at..at + 5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let end = at.checked_add(1 + len)?;
        let body = buf.get(at + 5..end)?;
        match header[0] {
            b'S' if !found.is_empty() => break,
            b'P' => {
                let name_len = body.iter().position(|b| *b == 0)?;
                if name_len == 0 {
                    return None;
                }
                let rest = &body[name_len + 1..];
                let statement = cache.get_valid(rest)?;
                found.push((&body[..name_len], statement));
            }
            _ => return None,
        }
        at = end;
    }
    let parses = found.len();
    for (name, statement) in found {
        client.insert(name, statement);
    }
    Some((at + 5, parses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(sql: &str) -> Vec<u8> {
        let mut rest = sql.as_bytes().to_vec();
        rest.extend_from_slice(&[0, 0, 0]);
        rest
    }

    #[test]
    fn same_text_same_statement_and_names_do_not_collide() {
        let cache = StatementCache::new(10);
        let a = cache.get_or_insert(&rest("SELECT 1"));
        let b = cache.get_or_insert(&rest("SELECT 1"));
        let c = cache.get_or_insert(&rest("SELECT 2"));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        let mut one = ClientStatements::default();
        let mut two = ClientStatements::default();
        one.insert(b"s1", a.clone());
        two.insert(b"s1", c.clone());
        assert_eq!(one.get(b"s1").map(|s| s.id), Some(a.id));
        assert_eq!(two.get(b"s1").map(|s| s.id), Some(c.id));
    }

    #[test]
    fn parse_message_carries_the_proxy_name() {
        let cache = StatementCache::new(10);
        let s = cache.get_or_insert(&rest("SELECT $1"));
        let parse = s.parse_message();
        assert_eq!(parse[0], b'P');
        let len = u32::from_be_bytes([parse[1], parse[2], parse[3], parse[4]]) as usize;
        assert_eq!(len + 1, parse.len());
        let name = format!("__sluice_{}\0", s.id);
        assert!(parse[5..].starts_with(name.as_bytes()));
        assert_eq!(s.name(), &name[..name.len() - 1]);
        assert!(parse.ends_with(&rest("SELECT $1")));
    }

    #[test]
    fn a_full_cache_forgets_unused_statements() {
        let cache = StatementCache::new(2);
        let kept = cache.get_or_insert(&rest("a"));
        drop(cache.get_or_insert(&rest("b")));
        let _c = cache.get_or_insert(&rest("c"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get_or_insert(&rest("a")).id, kept.id);
    }
}
