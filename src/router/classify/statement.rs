//! One statement's verdict from its first few tokens: its kind, where it may run, and its
//! transaction and session effects.

use super::body::Body;
use super::{ClassifierConfig, DiscardScope, SessionEffect, Target, TxEffect};
use crate::router::lexer::{Lexer, Token, TokenKind};

/// Where one statement may run and what it does to the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Verdict {
    pub target: Target,
    pub tx: TxEffect,
}

fn read(tx: TxEffect) -> Verdict {
    Verdict {
        target: Target::Replica,
        tx,
    }
}

fn write(tx: TxEffect) -> Verdict {
    Verdict {
        target: Target::Primary,
        tx,
    }
}

/// Significant tokens of one statement (comments skipped; the splitter already lexed it cleanly).
#[derive(Clone)]
struct Cursor<'a> {
    lexer: Lexer<'a>,
}

impl<'a> Iterator for Cursor<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            match self.lexer.next_token()? {
                Ok(t) if t.is_comment() => continue,
                Ok(t) => return Some(t),
                Err(_) => return None,
            }
        }
    }
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str, config: &ClassifierConfig) -> Self {
        Cursor {
            lexer: Lexer::with_standard_conforming_strings(
                text,
                config.standard_conforming_strings,
            ),
        }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.clone().next()
    }

    /// Consumes the next token if it is `keyword`.
    fn eat(&mut self, keyword: &str) -> bool {
        let mut ahead = self.clone();
        let hit = ahead.next().is_some_and(|t| t.is_keyword(keyword));
        if hit {
            *self = ahead;
        }
        hit
    }

    fn peek_is(&self, keyword: &str) -> bool {
        self.peek().is_some_and(|t| t.is_keyword(keyword))
    }
}

/// A token lower-cased into `buf`; empty if it is not a short identifier.
fn lower<'b>(t: Option<Token>, buf: &'b mut [u8; 16]) -> &'b [u8] {
    let Some(t) = t.filter(|t| t.kind == TokenKind::Ident) else {
        return b"";
    };
    let bytes = t.text.as_bytes();
    let Some(dst) = buf.get_mut(..bytes.len()) else {
        return b"";
    };
    for (d, s) in dst.iter_mut().zip(bytes) {
        *d = s.to_ascii_lowercase();
    }
    dst
}

/// Decides one statement (`text` without its `;`) given its body scan.
pub(super) fn verdict(
    text: &str,
    body: &Body,
    config: &ClassifierConfig,
    effects: &mut Vec<SessionEffect>,
) -> Verdict {
    let mut c = Cursor::new(text, config);
    let mut first = c.next();
    let mut parenthesised = false;
    while first.is_some_and(|t| t.kind == TokenKind::LParen) {
        parenthesised = true;
        first = c.next();
    }
    let mut buf = [0u8; 16];
    let keyword = lower(first, &mut buf);
    if parenthesised && !is_query(keyword) {
        return write(TxEffect::None);
    }
    match keyword {
        k if is_query(k) => query(body),
        b"show" | b"fetch" | b"move" | b"close" => read(TxEffect::None),
        b"explain" => explain(c, text, body, config),
        b"begin" => {
            let _ = c.eat("work") || c.eat("transaction");
            begin(modes(c))
        }
        b"start" if c.eat("transaction") => begin(modes(c)),
        b"commit" | b"end" if c.peek_is("prepared") => write(TxEffect::None),
        b"commit" | b"end" => end_transaction(c, TxEffect::Commit),
        b"abort" => end_transaction(c, TxEffect::Rollback),
        b"rollback" => rollback(c),
        b"savepoint" => read(TxEffect::Savepoint),
        b"release" => read(TxEffect::ReleaseSavepoint),
        b"set" => set(c, effects),
        b"prepare" => prepare(c, effects),
        b"declare" => declare(c, text, body, config, effects),
        _ => {
            session_statement(keyword, c, effects);
            write(TxEffect::None)
        }
    }
}

fn is_query(keyword: &[u8]) -> bool {
    matches!(keyword, b"select" | b"values" | b"table" | b"with")
}

fn query(body: &Body) -> Verdict {
    if body.writes() {
        write(TxEffect::None)
    } else {
        read(TxEffect::None)
    }
}

/// The target of a query nested in `EXPLAIN ANALYZE` or `DECLARE`: only a query can be a read.
fn query_target(text: &str, body: &Body, config: &ClassifierConfig) -> Target {
    let mut c = Cursor::new(text, config);
    let mut first = c.next();
    while first.is_some_and(|t| t.kind == TokenKind::LParen) {
        first = c.next();
    }
    let mut buf = [0u8; 16];
    if is_query(lower(first, &mut buf)) {
        query(body).target
    } else {
        Target::Primary
    }
}

/// `EXPLAIN` only plans unless `ANALYZE` runs the statement; then the statement decides.
fn explain(mut c: Cursor, text: &str, body: &Body, config: &ClassifierConfig) -> Verdict {
    let mut analyze = false;
    let mut t = c.next();
    let inner_start = if t.is_some_and(|t| t.kind == TokenKind::LParen) {
        let mut depth = 1usize;
        loop {
            let Some(tok) = c.next() else {
                return write(TxEffect::None);
            };
            match tok.kind {
                TokenKind::LParen => depth += 1,
                TokenKind::RParen if depth == 1 => break tok.offset + 1,
                TokenKind::RParen => depth -= 1,
                _ if tok.is_keyword("analyze") || tok.is_keyword("analyse") => {
                    analyze = !c.peek().is_some_and(is_false);
                }
                _ => {}
            }
        }
    } else {
        while let Some(tok) = t.filter(|t| {
            ["analyze", "analyse", "verbose"]
                .iter()
                .any(|k| t.is_keyword(k))
        }) {
            analyze |= !tok.is_keyword("verbose");
            t = c.next();
        }
        t.map_or(text.len(), |t| t.offset)
    };
    if !analyze {
        return read(TxEffect::None);
    }
    let inner = text.get(inner_start..).unwrap_or("");
    Verdict {
        target: query_target(inner, body, config),
        tx: TxEffect::None,
    }
}

fn is_false(t: Token) -> bool {
    t.is_keyword("false")
        || t.is_keyword("off")
        || t.text == "0"
        || ["'false'", "'off'", "'0'"]
            .iter()
            .any(|f| t.text.eq_ignore_ascii_case(f))
}

/// Transaction modes of `BEGIN`, `START TRANSACTION`, `SET TRANSACTION`.
struct Modes {
    read_only: Option<bool>,
    serializable: bool,
}

fn modes(c: Cursor) -> Modes {
    let mut m = Modes {
        read_only: None,
        serializable: false,
    };
    let mut after_read = false;
    for t in c {
        if after_read && t.is_keyword("only") {
            m.read_only = Some(true);
        } else if after_read && t.is_keyword("write") {
            m.read_only = Some(false);
        }
        m.serializable |= t.is_keyword("serializable");
        after_read = t.is_keyword("read");
    }
    m
}

/// A read-only transaction may run on a replica, except serializable ones: hot standbys refuse
/// serializable isolation.
fn modes_target(m: &Modes) -> Target {
    if m.read_only == Some(true) && !m.serializable {
        Target::Replica
    } else {
        Target::Primary
    }
}

fn begin(m: Modes) -> Verdict {
    Verdict {
        target: modes_target(&m),
        tx: TxEffect::Begin {
            read_only: m.read_only == Some(true),
        },
    }
}

/// `COMMIT`/`ROLLBACK` `[WORK|TRANSACTION] [AND [NO] CHAIN]`; `AND CHAIN` opens a new
/// transaction at once, reported as a (read-write, fail closed) `Begin`.
fn end_transaction(mut c: Cursor, tx: TxEffect) -> Verdict {
    let _ = c.eat("work") || c.eat("transaction");
    if c.eat("and") && c.eat("chain") {
        return read(TxEffect::Begin { read_only: false });
    }
    read(tx)
}

fn rollback(mut c: Cursor) -> Verdict {
    let _ = c.eat("work") || c.eat("transaction");
    if c.peek_is("prepared") {
        return write(TxEffect::None);
    }
    if c.peek_is("to") {
        return read(TxEffect::RollbackToSavepoint);
    }
    end_transaction(c, TxEffect::Rollback)
}

fn set(mut c: Cursor, effects: &mut Vec<SessionEffect>) -> Verdict {
    let Some(mut t) = c.next() else {
        return write(TxEffect::None);
    };
    if t.is_keyword("local") || t.is_keyword("constraints") {
        return read(TxEffect::None);
    }
    if t.is_keyword("transaction") {
        let m = modes(c);
        let target = modes_target(&m);
        let tx = TxEffect::SetTransaction {
            read_only: m.read_only,
        };
        return Verdict { target, tx };
    }
    let session = t.is_keyword("session");
    if session {
        let Some(next) = c.next() else {
            return write(TxEffect::None);
        };
        t = next;
    }
    let mut buf = [0u8; 16];
    let special = match lower(Some(t), &mut buf) {
        b"characteristics" if session => Some("session_characteristics"),
        b"authorization" if session => Some("session_authorization"),
        b"time" if c.peek_is("zone") => Some("timezone"),
        b"role" => Some("role"),
        b"schema" => Some("search_path"),
        b"names" => Some("client_encoding"),
        b"xml" if c.peek_is("option") => Some("xmloption"),
        _ => None,
    };
    let name = special
        .map(str::to_string)
        .or_else(|| dotted_name(t, &mut c));
    if let Some(name) = name {
        effects.push(SessionEffect::Set { name });
    }
    write(TxEffect::None)
}

fn prepare(mut c: Cursor, effects: &mut Vec<SessionEffect>) -> Verdict {
    let Some(t) = c.next() else {
        return write(TxEffect::None);
    };
    if t.is_keyword("transaction") && c.peek().is_some_and(|n| n.kind == TokenKind::String) {
        return write(TxEffect::PrepareTransaction);
    }
    if let Some(name) = name_of(t) {
        effects.push(SessionEffect::Prepare { name });
    }
    write(TxEffect::None)
}

/// `DECLARE name ... CURSOR [WITH HOLD] FOR query`: as read-only as its query.
fn declare(
    mut c: Cursor,
    text: &str,
    body: &Body,
    config: &ClassifierConfig,
    effects: &mut Vec<SessionEffect>,
) -> Verdict {
    let Some(cursor) = c.next().and_then(name_of) else {
        return write(TxEffect::None);
    };
    let mut hold = false;
    let mut after_with = false;
    let query_start = loop {
        let Some(t) = c.next() else {
            return write(TxEffect::None);
        };
        if t.is_keyword("for") {
            break t.offset + t.text.len();
        }
        hold |= after_with && t.is_keyword("hold");
        after_with = t.is_keyword("with");
    };
    if hold {
        effects.push(SessionEffect::DeclareWithHold { cursor });
    }
    let inner = text.get(query_start..).unwrap_or("");
    Verdict {
        target: query_target(inner, body, config),
        tx: TxEffect::None,
    }
}

/// The session effects of statements that are writes anyway: RESET, DISCARD, LISTEN, UNLISTEN,
/// DEALLOCATE, CREATE TEMP, LOAD.
fn session_statement(keyword: &[u8], mut c: Cursor, effects: &mut Vec<SessionEffect>) {
    let effect = match keyword {
        b"reset" => reset(c),
        b"discard" => {
            let mut buf = [0u8; 16];
            let scope = match lower(c.next(), &mut buf) {
                b"all" => Some(DiscardScope::All),
                b"plans" => Some(DiscardScope::Plans),
                b"sequences" => Some(DiscardScope::Sequences),
                b"temp" | b"temporary" => Some(DiscardScope::Temp),
                _ => None,
            };
            scope.map(SessionEffect::Discard)
        }
        b"listen" => c
            .next()
            .and_then(name_of)
            .map(|channel| SessionEffect::Listen { channel }),
        b"unlisten" => c.next().map(|t| SessionEffect::Unlisten {
            channel: name_of(t),
        }),
        b"deallocate" => {
            c.eat("prepare");
            c.next().map(|t| SessionEffect::Deallocate {
                name: name_of(t).filter(|_| !t.is_keyword("all")),
            })
        }
        b"create" => create_is_temp(c).then_some(SessionEffect::CreateTemp),
        b"load" => c.next().and_then(|t| {
            let library = string_value(t).or_else(|| name_of(t))?;
            Some(SessionEffect::Load { library })
        }),
        _ => None,
    };
    effects.extend(effect);
}

fn reset(mut c: Cursor) -> Option<SessionEffect> {
    let t = c.next()?;
    let mut buf = [0u8; 16];
    let name = match lower(Some(t), &mut buf) {
        b"all" => None,
        b"session" if c.peek_is("authorization") => Some("session_authorization".to_string()),
        b"time" if c.peek_is("zone") => Some("timezone".to_string()),
        _ => Some(dotted_name(t, &mut c)?),
    };
    Some(SessionEffect::Reset { name })
}

/// `CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY ...`, or a relation created in `pg_temp`.
fn create_is_temp(mut c: Cursor) -> bool {
    if c.eat("or") {
        c.eat("replace");
    }
    let _ = c.eat("global") || c.eat("local");
    if c.eat("temp") || c.eat("temporary") {
        return true;
    }
    c.eat("unlogged");
    if !(c.eat("table") || c.eat("sequence") || c.eat("view")) {
        return false;
    }
    if c.eat("if") {
        c.eat("not");
        c.eat("exists");
    }
    let schema = c.next();
    schema.is_some_and(|s| s.names("pg_temp")) && c.next().is_some_and(|t| t.kind == TokenKind::Dot)
}

/// An identifier as Postgres names it: unquoted lower-cased, quoted verbatim with `""` undone.
pub(super) fn name_of(t: Token) -> Option<String> {
    match t.kind {
        TokenKind::Ident => Some(t.text.to_ascii_lowercase()),
        TokenKind::QuotedIdent => {
            let inner = t.text.get(t.text.find('"')? + 1..t.text.len() - 1)?;
            Some(inner.replace("\"\"", "\""))
        }
        _ => None,
    }
}

/// `name(.name)*` starting at `first`, e.g. a custom parameter `myapp.tenant`.
fn dotted_name(first: Token, c: &mut Cursor) -> Option<String> {
    let mut name = name_of(first)?;
    while c.peek().is_some_and(|t| t.kind == TokenKind::Dot) {
        c.next();
        match c.next().and_then(name_of) {
            Some(part) => {
                name.push('.');
                name.push_str(&part);
            }
            None => break,
        }
    }
    Some(name)
}

/// The value of a plain or dollar-quoted string literal (escapes other than `''` left as is).
fn string_value(t: Token) -> Option<String> {
    match t.kind {
        TokenKind::String => {
            let inner = t.text.get(t.text.find('\'')? + 1..t.text.len() - 1)?;
            Some(inner.replace("''", "'"))
        }
        TokenKind::DollarString => {
            let tag_len = t.text.get(1..)?.find('$')? + 2;
            Some(t.text.get(tag_len..t.text.len() - tag_len)?.to_string())
        }
        _ => None,
    }
}
