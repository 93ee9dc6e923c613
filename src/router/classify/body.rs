//! The body scan of one statement, fed token by token during the single splitting pass: writes
//! anywhere in the statement (locking clauses, `INTO`, data-modifying keywords, writing functions)
//! and the session effects of function calls.

use super::statement::name_of;
use super::{is_session_advisory_lock, ClassifierConfig, SessionEffect};
use crate::router::lexer::{Token, TokenKind};

/// What the whole statement body shows, independent of its kind.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Body {
    /// `INTO` anywhere: `SELECT ... INTO` creates a table.
    into: bool,
    /// `FOR UPDATE | NO KEY UPDATE | SHARE | KEY SHARE`.
    locking: bool,
    /// `INSERT | UPDATE | DELETE | MERGE` anywhere (data-modifying CTEs).
    dml: bool,
    /// A call of a configured writing function.
    writing_call: bool,
}

impl Body {
    pub(super) fn writes(&self) -> bool {
        self.into || self.locking || self.dml || self.writing_call
    }

    /// Takes the next significant token `t` (keyword `k`) of the statement, `prev` (keyword
    /// `prev_kw`) being the one before it. Session effects found in the body (advisory locks,
    /// `set_config`, `INTO TEMP`) are pushed.
    #[inline]
    pub(super) fn feed(
        &mut self,
        (prev, prev_kw): (&Option<Token>, Kw),
        (t, k): (&Token, Kw),
        config: &ClassifierConfig,
        effects: &mut Vec<SessionEffect>,
    ) {
        let Some(p) = prev else { return };
        match k {
            Kw::None if t.kind == TokenKind::LParen => {
                if matches!(p.kind, TokenKind::Ident | TokenKind::QuotedIdent) {
                    self.call(*p, config, effects)
                }
            }
            Kw::None => {}
            Kw::Update | Kw::Share | Kw::No | Kw::Key if prev_kw == Kw::For => {
                self.locking = true;
                self.dml |= k == Kw::Update;
            }
            Kw::Insert | Kw::Update | Kw::Delete | Kw::Merge => self.dml = true,
            Kw::Into => self.into = true,
            Kw::Temp if prev_kw == Kw::Into => effects.push(SessionEffect::CreateTemp),
            _ => {}
        }
    }

    fn call(&mut self, f: Token, config: &ClassifierConfig, effects: &mut Vec<SessionEffect>) {
        if f.text.len() > 66 {
            return;
        }
        let writes = match f.kind {
            TokenKind::Ident => config
                .writing_functions
                .iter()
                .any(|w| w.len() == f.text.len() && w.eq_ignore_ascii_case(f.text)),
            _ => config.writing_functions.iter().any(|w| f.names(w)),
        };
        if writes {
            self.writing_call = true;
        }
        if f.text.len() >= 16 && is_session_advisory_lock(&f) {
            let function = name_of(f).unwrap_or_default();
            effects.push(SessionEffect::AdvisoryLock { function });
        } else if f.names("set_config") {
            effects.push(SessionEffect::SetConfig);
        }
    }
}

/// The keywords the single pass over a query string looks at; `None` for everything else
/// (including every non-identifier token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kw {
    None,
    For,
    Update,
    Share,
    No,
    Key,
    Insert,
    Delete,
    Merge,
    Into,
    Temp,
    Create,
    Begin,
    Atomic,
    Case,
    End,
}

/// Packs an ASCII keyword of at most 8 bytes, lower-case, little-endian, for [`keyword`].
const fn pack(kw: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < kw.len() {
        w |= (kw[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// Recognises `t` as one of the [`Kw`] keywords. Identifier bytes are letters, digits, `_`, `$`
/// or non-ASCII, so setting bit 5 of every byte lower-cases letters and turns no other byte into
/// a letter: one packed compare per candidate.
#[inline]
pub(super) fn keyword(t: &Token) -> Kw {
    let bytes = t.text.as_bytes();
    if t.kind != TokenKind::Ident || bytes.len() < 2 || bytes.len() > 9 {
        return Kw::None;
    }
    if bytes.len() == 9 {
        return if t.text.eq_ignore_ascii_case("temporary") {
            Kw::Temp
        } else {
            Kw::None
        };
    }
    let mut w = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        w |= ((*b | 0x20) as u64) << (8 * i);
    }
    const FOR: u64 = pack(b"for");
    const UPDATE: u64 = pack(b"update");
    const SHARE: u64 = pack(b"share");
    const NO: u64 = pack(b"no");
    const KEY: u64 = pack(b"key");
    const INSERT: u64 = pack(b"insert");
    const DELETE: u64 = pack(b"delete");
    const MERGE: u64 = pack(b"merge");
    const INTO: u64 = pack(b"into");
    const TEMP: u64 = pack(b"temp");
    const CREATE: u64 = pack(b"create");
    const BEGIN: u64 = pack(b"begin");
    const ATOMIC: u64 = pack(b"atomic");
    const CASE: u64 = pack(b"case");
    const END: u64 = pack(b"end");
    match w {
        FOR => Kw::For,
        UPDATE => Kw::Update,
        SHARE => Kw::Share,
        NO => Kw::No,
        KEY => Kw::Key,
        INSERT => Kw::Insert,
        DELETE => Kw::Delete,
        MERGE => Kw::Merge,
        INTO => Kw::Into,
        TEMP => Kw::Temp,
        CREATE => Kw::Create,
        BEGIN => Kw::Begin,
        ATOMIC => Kw::Atomic,
        CASE => Kw::Case,
        END => Kw::End,
        _ => Kw::None,
    }
}
