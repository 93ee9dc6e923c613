//! Read-your-writes across connections: a bounded, thread-safe map from a client-chosen
//! consistency key to the last commit LSN written under it, and the scanner that finds a key in
//! a query string (`SET pgsluice.consistency_key = '...'`, `/* pgsluice:key=... */`).

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

use dashmap::DashMap;

use crate::topology::Lsn;

use super::lexer::{Lexer, TokenKind};

/// Longest accepted key in bytes; longer keys are ignored (not remembered, not scanned).
pub const MAX_KEY_LEN: usize = 256;

/// Consistency key → highest commit LSN recorded under it, holding about `capacity` keys.
/// Keys live in two generations: when the current one holds half the capacity it becomes the
/// previous one and the old previous one is dropped, so the keys written least recently go
/// first. Lookups and updates of existing keys take a shared lock only (plus a map shard).
///
/// A write under a key is announced with [`ConsistencyKeys::begin_write`] before it runs and
/// closed with [`ConsistencyKeys::end_write`] once its commit LSN is known: in between, reads
/// under the key see [`WRITE_IN_FLIGHT`] (no replica qualifies: they go to the primary), because the writer's
/// client may hear of its commit before the proxy has learned the commit's LSN.
#[derive(Debug)]
pub struct ConsistencyKeys {
    capacity: usize,
    generation: usize,
    maps: RwLock<Generations>,
}

/// What is known about one key.
#[derive(Clone, Copy, Debug)]
struct KeyState {
    lsn: Lsn,
    /// Writes under the key begun and not ended.
    writing: u32,
}

impl Default for KeyState {
    fn default() -> KeyState {
        KeyState {
            lsn: Lsn(0),
            writing: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Generations {
    current: DashMap<Box<str>, KeyState>,
    previous: DashMap<Box<str>, KeyState>,
}

/// The position reads under a key with a write in flight must wait for: none qualifies.
pub const WRITE_IN_FLIGHT: Lsn = Lsn(u64::MAX);

impl ConsistencyKeys {
    /// A map for about `capacity` keys; 0 remembers nothing.
    pub fn new(capacity: usize) -> ConsistencyKeys {
        ConsistencyKeys {
            capacity,
            generation: (capacity / 2).max(1),
            maps: RwLock::new(Generations::default()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys currently remembered (at most about `capacity`).
    pub fn len(&self) -> usize {
        let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
        maps.current.len() + maps.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers that `lsn` was committed under `key`, keeping the highest LSN seen. Allocates
    /// only for a key not in the current generation.
    pub fn record(&self, key: &str, lsn: Lsn) {
        self.update(key, |state| state.lsn = state.lsn.max(lsn));
    }

    /// Announces a write under `key` whose commit LSN is not known yet; every call must be
    /// matched by one [`ConsistencyKeys::end_write`].
    pub fn begin_write(&self, key: &str) {
        self.update(key, |state| state.writing = state.writing.saturating_add(1));
    }

    /// Ends a write begun under `key`, recording its commit LSN when known (`None`: it did not
    /// commit, or its position could not be read).
    pub fn end_write(&self, key: &str, lsn: Option<Lsn>) {
        self.update(key, |state| {
            state.writing = state.writing.saturating_sub(1);
            if let Some(lsn) = lsn {
                state.lsn = state.lsn.max(lsn);
            }
        });
    }

    /// The highest LSN recorded under `key` ([`WRITE_IN_FLIGHT`] while a write under it runs),
    /// unless it was evicted.
    pub fn get(&self, key: &str) -> Option<Lsn> {
        let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
        let state = maps.current.get(key).map(|v| *v);
        let state = state.or_else(|| maps.previous.get(key).map(|v| *v))?;
        Some(if state.writing > 0 {
            WRITE_IN_FLIGHT
        } else {
            state.lsn
        })
    }

    /// Applies `change` to `key`'s state, creating it (from the previous generation's) if needed.
    fn update(&self, key: &str, change: impl Fn(&mut KeyState)) {
        if self.capacity == 0 || key.is_empty() || key.len() > MAX_KEY_LEN {
            return;
        }
        {
            let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(mut known) = maps.current.get_mut(key) {
                change(&mut known);
                return;
            }
            if maps.current.len() < self.generation {
                insert(&maps, key, change);
                return;
            }
        }
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        if maps.current.len() >= self.generation {
            maps.previous = std::mem::take(&mut maps.current);
        }
        insert(&maps, key, change);
    }
}

/// Puts `key` in the current generation, starting from what the previous one had.
fn insert(maps: &Generations, key: &str, change: impl Fn(&mut KeyState)) {
    let mut state = maps
        .previous
        .get(key)
        .map_or(KeyState::default(), |old| *old);
    maps.current
        .entry(key.into())
        .and_modify(|v| change(v))
        .or_insert_with(|| {
            change(&mut state);
            state
        });
}

/// A consistency-key instruction found in a query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyDirective<'a> {
    /// `SET [SESSION] pgsluice.consistency_key {=|TO} 'key'`: the session's key from now on.
    /// (Postgres would accept it as a custom setting too; the session should answer it itself
    /// so it neither reaches a server nor pins the client.)
    SetSession(Cow<'a, str>),
    /// `RESET pgsluice.consistency_key` or `SET pgsluice.consistency_key TO DEFAULT`.
    ResetSession,
    /// `/* pgsluice:key=user:42 */` (or in a `--` comment): the key for this query string only.
    Query(&'a str),
}

const SETTING: &str = "consistency_key";

/// The consistency-key instruction in `sql`, if any: a key comment anywhere (the first one), or
/// a `SET`/`RESET` of `pgsluice.consistency_key` as the first statement. Keys must be 1 to
/// [`MAX_KEY_LEN`] bytes; a `SET` value must be a plain `'...'` string or an identifier. Cheap
/// when `sql` does not mention `pgsluice` (one byte scan, no lexing).
pub fn key_directive(sql: &str) -> Option<KeyDirective<'_>> {
    if !contains_ignore_case(sql.as_bytes(), b"pgsluice") {
        return None;
    }
    let mut lexer = Lexer::new(sql);
    let mut head: [Option<(TokenKind, &str)>; 8] = [None; 8];
    let mut len = 0;
    let mut in_first = true;
    let mut too_long = false;
    while let Some(Ok(token)) = lexer.next_token() {
        if token.is_comment() {
            if let Some(key) = key_in_comment(token.comment_body()) {
                return Some(KeyDirective::Query(key));
            }
            continue;
        }
        if token.kind == TokenKind::Semicolon {
            in_first = false;
        }
        if in_first {
            match head.get_mut(len) {
                Some(slot) => {
                    *slot = Some((token.kind, token.text));
                    len += 1;
                }
                None => too_long = true,
            }
        }
    }
    if too_long {
        return None;
    }
    statement_directive(head.get(..len).unwrap_or(&[]))
}

/// `SET [SESSION] pgsluice . consistency_key {= | TO} value` or `RESET pgsluice . consistency_key`.
fn statement_directive<'a>(tokens: &[Option<(TokenKind, &'a str)>]) -> Option<KeyDirective<'a>> {
    let word = |t: &Option<(TokenKind, &str)>, w: &str| matches!(t, Some((TokenKind::Ident, text)) if text.eq_ignore_ascii_case(w));
    let (first, rest) = tokens.split_first()?;
    let rest = match rest.split_first() {
        Some((session, tail)) if word(first, "set") && word(session, "session") => tail,
        _ => rest,
    };
    let names_setting = |t: &[Option<(TokenKind, &str)>]| matches!(t, [p, Some((TokenKind::Dot, _)), s, ..] if word(p, "pgsluice") && word(s, SETTING));
    if word(first, "reset") {
        return (names_setting(rest) && rest.len() == 3).then_some(KeyDirective::ResetSession);
    }
    if !word(first, "set") || !names_setting(rest) {
        return None;
    }
    let (op, value) = match rest.get(3..) {
        Some([op, value]) => (op, value),
        _ => return None,
    };
    if !(word(op, "to") || matches!(op, Some((TokenKind::Operator, "=")))) {
        return None;
    }
    match value {
        Some((TokenKind::Ident, text)) if text.eq_ignore_ascii_case("default") => {
            Some(KeyDirective::ResetSession)
        }
        Some((TokenKind::Ident, text)) => valid(Cow::Owned(text.to_ascii_lowercase())),
        Some((TokenKind::String, text)) if text.starts_with('\'') && text.len() >= 2 => {
            let inner = text.get(1..text.len() - 1)?;
            let key = if inner.contains("''") {
                Cow::Owned(inner.replace("''", "'"))
            } else {
                Cow::Borrowed(inner)
            };
            valid(key)
        }
        _ => None,
    }
}

fn valid(key: Cow<'_, str>) -> Option<KeyDirective<'_>> {
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then_some(KeyDirective::SetSession(key))
}

/// The value of `pgsluice:key=VALUE` in a comment: up to whitespace, `,` or `*/`.
fn key_in_comment(comment: &str) -> Option<&str> {
    const MARK: &[u8] = b"pgsluice:key=";
    let bytes = comment.as_bytes();
    let at = bytes
        .windows(MARK.len())
        .position(|w| w.eq_ignore_ascii_case(MARK))?;
    let rest = comment.get(at + MARK.len()..)?;
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',' || c == '*')
        .unwrap_or(rest.len());
    let key = rest.get(..end)?;
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then_some(key)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
