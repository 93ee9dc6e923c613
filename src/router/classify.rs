//! SQL classification, pure: where a query string may run (primary or replica), routing hints,
//! its effect on the transaction, and the session state that would pin a client to its server.
//!
//! Built on the [`lexer`](super::lexer): one pass splits statements and scans their bodies for
//! writes (locking clauses, `INTO`, data-modifying keywords, writing functions), then a few tokens
//! of each statement's head decide its kind. Nothing is allocated for a plain read. Whatever is
//! not recognised is a write: undecided means primary.

mod body;
mod cache;
mod statement;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_session;

pub use cache::ClassificationCache;

use super::lexer::{LexError, Lexer, Token, TokenKind};
use body::{keyword, Body, Kw};
use statement::Verdict;

/// Where a statement (or a whole query string) may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Writes, or could not be shown to be read-only.
    Primary,
    /// Read-only: any up-to-date node will do.
    Replica,
}

/// A routing request written by the client in a comment: `/* pgsluice:primary */` or
/// `/* pgsluice:replica */` (also in `--` comments, case-insensitive). When comments disagree,
/// primary wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

/// The net effect of a query string on the transaction: the last statement that opens, changes or
/// closes it, with a `SET TRANSACTION` or savepoint after a `BEGIN` folded into the `BEGIN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxEffect {
    None,
    /// `BEGIN` / `START TRANSACTION`; `read_only` when `READ ONLY` was given.
    Begin {
        read_only: bool,
    },
    /// `SET TRANSACTION ...`: `Some(true)` for `READ ONLY`, `Some(false)` for `READ WRITE`.
    SetTransaction {
        read_only: Option<bool>,
    },
    /// `COMMIT` / `END` (not `COMMIT PREPARED`).
    Commit,
    /// `ROLLBACK` / `ABORT` (not `ROLLBACK TO` or `ROLLBACK PREPARED`).
    Rollback,
    Savepoint,
    ReleaseSavepoint,
    RollbackToSavepoint,
    /// `PREPARE TRANSACTION 'gid'`: ends the transaction as far as the session is concerned.
    PrepareTransaction,
}

/// Which scope `DISCARD` drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscardScope {
    All,
    Plans,
    Sequences,
    Temp,
}

/// Something that outlives the transaction on the server it ran on, so in transaction pooling the
/// client must stay on (be pinned to) that server. Names are as Postgres sees them: unquoted names
/// lower-cased, quoted names verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEffect {
    /// Session-level `SET` (not `SET LOCAL`, not `SET TRANSACTION`). Special forms are named by
    /// their parameter: `TIME ZONE` -> `timezone`, `NAMES` -> `client_encoding`, `SCHEMA` ->
    /// `search_path`, `ROLE` -> `role`, `SESSION AUTHORIZATION` -> `session_authorization`,
    /// `XML OPTION` -> `xmloption`; `SET SESSION CHARACTERISTICS` -> `session_characteristics`.
    Set {
        name: String,
    },
    /// A call to `set_config(...)`, which may set a session-level parameter.
    SetConfig,
    /// `RESET name`; `None` for `RESET ALL`.
    Reset {
        name: Option<String>,
    },
    Discard(DiscardScope),
    Listen {
        channel: String,
    },
    /// `UNLISTEN channel`; `None` for `UNLISTEN *`.
    Unlisten {
        channel: Option<String>,
    },
    /// `PREPARE name AS ...` (SQL-level; protocol-level Parse is the pooler's own business).
    Prepare {
        name: String,
    },
    /// `DEALLOCATE [PREPARE] name`; `None` for `DEALLOCATE ALL`.
    Deallocate {
        name: Option<String>,
    },
    DeclareWithHold {
        cursor: String,
    },
    /// `CREATE TEMP|TEMPORARY ...`, `CREATE TABLE pg_temp.x`, `SELECT ... INTO TEMP ...`.
    CreateTemp,
    /// A session-level advisory lock function (`pg_advisory_lock*`, `pg_try_advisory_lock*`).
    AdvisoryLock {
        function: String,
    },
    /// `LOAD 'library'`.
    Load {
        library: String,
    },
}

/// What [`classify`] found in one query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    /// `Replica` only when the string lexed cleanly, holds at least one statement, and every
    /// statement is read-only (transaction control and cursor fetches count as read-only: they
    /// run wherever the transaction is).
    pub target: Target,
    pub hint: Option<Hint>,
    /// Non-empty statements.
    pub statements: usize,
    pub transaction: TxEffect,
    /// In statement order; empty for the common case (no allocation).
    pub session_state: Vec<SessionEffect>,
    /// Set when the string cannot be lexed; Postgres would reject it before running anything, so
    /// there are no effects and the target is `Primary`.
    pub malformed: Option<LexError>,
}

impl Classification {
    /// True when running this string would pin the client to its server in transaction pooling.
    pub fn pins_session(&self) -> bool {
        !self.session_state.is_empty()
    }

    /// The target after applying the client's hint: a hint overrides the classification (a write
    /// hinted to a replica fails there with Postgres' read-only error, which is the client's
    /// choice).
    pub fn hinted_target(&self) -> Target {
        match self.hint {
            Some(Hint::Primary) => Target::Primary,
            Some(Hint::Replica) => Target::Replica,
            None => self.target,
        }
    }
}

/// Classifier settings. Changing them invalidates any [`ClassificationCache`] built with the old
/// ones: clear it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// Functions that write or must run where the session's other work runs. A call (name
    /// followed by `(`, any schema) anywhere in a statement makes it a write. Unquoted calls
    /// match ignoring ASCII case, quoted ones exactly.
    pub writing_functions: Vec<String>,
    /// The server's `standard_conforming_strings`; when off, backslashes escape in `'...'`.
    pub standard_conforming_strings: bool,
}

/// The default [`ClassifierConfig::writing_functions`] (also `routing.writing_functions`).
pub use crate::config::routing::DEFAULT_WRITING_FUNCTIONS;

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            writing_functions: DEFAULT_WRITING_FUNCTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            standard_conforming_strings: true,
        }
    }
}

/// Session-level advisory lock functions (pin the session); `_xact_` ones end with the transaction.
const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Classifies a whole simple-query string (or one prepared statement's text). Pure and total:
/// malformed input gives `Primary` with [`Classification::malformed`] set, never a panic.
pub fn classify(sql: &str, config: &ClassifierConfig) -> Classification {
    let mut out = Classification {
        target: Target::Primary,
        hint: None,
        statements: 0,
        transaction: TxEffect::None,
        session_state: Vec::new(),
        malformed: None,
    };
    let mut lexer =
        Lexer::with_standard_conforming_strings(sql, config.standard_conforming_strings);
    let mut split = Splitter::new(0);
    let mut body = Body::default();
    let mut all_read = true;
    loop {
        let token = match lexer.next_token() {
            None => break,
            Some(Err(e)) => {
                out.malformed = Some(e);
                out.session_state.clear();
                out.transaction = TxEffect::None;
                return out;
            }
            Some(Ok(t)) => t,
        };
        if token.is_comment() {
            out.hint = merge_hint(out.hint, hint_in(token.comment_body()));
            continue;
        }
        if token.kind == TokenKind::Semicolon && split.at_top_level() {
            let text = sql.get(split.start..token.offset).unwrap_or("");
            all_read &= finish(text, &split, &body, config, &mut out);
            split = Splitter::new(token.offset + 1);
            body = Body::default();
            continue;
        }
        let kw = keyword(&token);
        body.feed(
            (&split.prev, split.prev_kw),
            (&token, kw),
            config,
            &mut out.session_state,
        );
        split.feed(token, kw);
    }
    let text = sql.get(split.start..).unwrap_or("");
    all_read &= finish(text, &split, &body, config, &mut out);
    if all_read && out.statements > 0 {
        out.target = Target::Replica;
    }
    out
}

/// Classifies one statement's text (without its `;`); returns whether it is read-only.
fn finish(
    text: &str,
    split: &Splitter,
    body: &Body,
    config: &ClassifierConfig,
    out: &mut Classification,
) -> bool {
    if split.prev.is_none() {
        return true;
    }
    out.statements += 1;
    let Verdict { target, tx } = statement::verdict(text, body, config, &mut out.session_state);
    out.transaction = fold_tx(out.transaction, tx);
    target == Target::Replica
}

fn fold_tx(current: TxEffect, next: TxEffect) -> TxEffect {
    use TxEffect as T;
    match (current, next) {
        (_, T::None) => current,
        (
            T::Begin { .. },
            T::SetTransaction {
                read_only: Some(ro),
            },
        ) => T::Begin { read_only: ro },
        (
            T::Begin { .. },
            T::SetTransaction { read_only: None }
            | T::Savepoint
            | T::ReleaseSavepoint
            | T::RollbackToSavepoint,
        ) => current,
        _ => next,
    }
}

/// Statement boundaries: a `;` ends a statement only outside parentheses (rule actions) and
/// outside a `BEGIN ATOMIC ... END` body of `CREATE FUNCTION`/`PROCEDURE`.
struct Splitter<'a> {
    start: usize,
    prev: Option<Token<'a>>,
    prev_kw: Kw,
    parens: usize,
    is_create: bool,
    atomic_depth: usize,
}

impl<'a> Splitter<'a> {
    fn new(start: usize) -> Self {
        Splitter {
            start,
            prev: None,
            prev_kw: Kw::None,
            parens: 0,
            is_create: false,
            atomic_depth: 0,
        }
    }

    fn at_top_level(&self) -> bool {
        self.parens == 0 && self.atomic_depth == 0
    }

    #[inline]
    fn feed(&mut self, t: Token<'a>, kw: Kw) {
        match t.kind {
            TokenKind::LParen => self.parens += 1,
            TokenKind::RParen => self.parens = self.parens.saturating_sub(1),
            _ if self.prev.is_none() => self.is_create = kw == Kw::Create,
            _ if self.is_create => match kw {
                Kw::Atomic if self.prev_kw == Kw::Begin => self.atomic_depth += 1,
                Kw::Case if self.atomic_depth > 0 => self.atomic_depth += 1,
                Kw::End => self.atomic_depth = self.atomic_depth.saturating_sub(1),
                _ => {}
            },
            _ => {}
        }
        self.prev = Some(t);
        self.prev_kw = kw;
    }
}

/// The hint in one comment's text, if any.
fn hint_in(comment: &str) -> Option<Hint> {
    const KEY: &[u8] = b"pgsluice:";
    let bytes = comment.as_bytes();
    let mut found = None;
    for (i, window) in bytes.windows(KEY.len()).enumerate() {
        if !window.eq_ignore_ascii_case(KEY) {
            continue;
        }
        let rest = bytes.get(i + KEY.len()..).unwrap_or(&[]);
        let word_len = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        let word = rest.get(..word_len).unwrap_or(&[]);
        let hint = if word.eq_ignore_ascii_case(b"primary") {
            Some(Hint::Primary)
        } else if word.eq_ignore_ascii_case(b"replica") {
            Some(Hint::Replica)
        } else {
            None
        };
        found = merge_hint(found, hint);
    }
    found
}

fn merge_hint(a: Option<Hint>, b: Option<Hint>) -> Option<Hint> {
    match (a, b) {
        (Some(Hint::Primary), _) | (_, Some(Hint::Primary)) => Some(Hint::Primary),
        (Some(h), _) | (None, Some(h)) => Some(h),
        (None, None) => None,
    }
}

fn is_session_advisory_lock(t: &Token) -> bool {
    SESSION_ADVISORY_LOCKS.iter().any(|f| t.names(f))
}
