//! SQL lexer for Postgres' lexical structure: tokens are slices of the input, nothing is allocated.
//!
//! It knows exactly as much as routing needs: where strings, quoted identifiers, dollar quotes and
//! comments begin and end (so keywords inside them never count), identifiers, numbers, parameters,
//! operators and punctuation. Whitespace is skipped; comments are tokens so hints can be read.

#[cfg(test)]
mod tests;

/// What a token is. Keywords are [`TokenKind::Ident`]s; compare them with [`Token::is_keyword`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Unquoted identifier or keyword (case-insensitive).
    Ident,
    /// `"..."` or `U&"..."`, with `""` escapes; case-sensitive.
    QuotedIdent,
    /// `'...'`, `E'...'`, `U&'...'`, `B'...'`, `X'...'`, `N'...'`.
    String,
    /// `$$...$$` or `$tag$...$tag$`.
    DollarString,
    /// Integer or decimal literal, including `0x..`, `0o..`, `0b..` and `_` separators.
    Number,
    /// `$1`, `$2`...
    Param,
    /// A run of operator characters (`+ - * / < > = ~ ! @ # % ^ & | \` ?`).
    Operator,
    Semicolon,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Colon,
    /// `::`
    Cast,
    /// `-- ...` up to (not including) the end of the line.
    LineComment,
    /// `/* ... */`, nested.
    BlockComment,
    /// Any other single character (`\`, `{`, a lone `$`...); Postgres would reject it.
    Other,
}

/// One token: its kind, its exact text in the input and its byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    pub offset: usize,
}

impl<'a> Token<'a> {
    /// True for an unquoted identifier equal to `keyword` ignoring ASCII case. Quoted identifiers
    /// are never keywords.
    #[inline]
    pub fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Ident && self.text.eq_ignore_ascii_case(keyword)
    }

    /// True for either kind of comment.
    #[inline]
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokenKind::LineComment | TokenKind::BlockComment)
    }

    /// The text of a comment without its delimiters (`--`, `/*`, `*/`); other tokens unchanged.
    pub fn comment_body(&self) -> &'a str {
        match self.kind {
            TokenKind::LineComment => self.text.get(2..).unwrap_or(""),
            TokenKind::BlockComment => self
                .text
                .get(2..self.text.len().saturating_sub(2))
                .unwrap_or(""),
            _ => self.text,
        }
    }

    /// True when this token names `name` as an identifier: unquoted ignoring ASCII case, quoted
    /// exactly (a quoted name containing `""` never matches).
    pub fn names(&self, name: &str) -> bool {
        match self.kind {
            TokenKind::Ident => self.text.eq_ignore_ascii_case(name),
            TokenKind::QuotedIdent => {
                let inner = self.text.get(..2).filter(|p| p.eq_ignore_ascii_case("u&"));
                let inner = inner.map_or(self.text, |_| self.text.get(2..).unwrap_or(""));
                inner.len() >= 2 && inner.get(1..inner.len() - 1) == Some(name)
            }
            _ => false,
        }
    }
}

/// Input Postgres would reject before running anything. The offset is where the construct began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unterminated quoted string at byte {offset}")]
    UnterminatedString { offset: usize },
    #[error("unterminated quoted identifier at byte {offset}")]
    UnterminatedQuotedIdentifier { offset: usize },
    #[error("unterminated dollar-quoted string at byte {offset}")]
    UnterminatedDollarQuote { offset: usize },
    #[error("unterminated /* comment at byte {offset}")]
    UnterminatedComment { offset: usize },
}

/// Iterator of tokens over one SQL text. After an error it yields nothing more.
#[derive(Clone, Debug)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    backslash_in_plain_strings: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer assuming `standard_conforming_strings = on` (the default since Postgres 9.1).
    pub fn new(src: &'a str) -> Self {
        Self::with_standard_conforming_strings(src, true)
    }

    /// With `standard_conforming_strings = off`, a backslash escapes the next character in
    /// plain `'...'` strings too; the server reports the setting in a ParameterStatus.
    pub fn with_standard_conforming_strings(src: &'a str, on: bool) -> Self {
        Lexer {
            src,
            pos: 0,
            backslash_in_plain_strings: !on,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.src.as_bytes().get(i).copied().unwrap_or(0)
    }

    fn len(&self) -> usize {
        self.src.len()
    }

    /// The next token, an error (after which the lexer is exhausted), or `None` at the end.
    #[inline]
    pub fn next_token(&mut self) -> Option<Result<Token<'a>, LexError>> {
        self.pos = self.skip_class(self.pos, SPACE);
        if self.pos >= self.len() {
            return None;
        }
        let start = self.pos;
        match self.token_at(start) {
            Ok((kind, end)) => {
                self.pos = end;
                let text = self.src.get(start..end).unwrap_or("");
                Some(Ok(Token {
                    kind,
                    text,
                    offset: start,
                }))
            }
            Err(e) => {
                self.pos = self.len();
                Some(Err(e))
            }
        }
    }

    /// Scans the token starting at `s`: its kind and the offset just past it.
    #[inline]
    fn token_at(&self, s: usize) -> Result<(TokenKind, usize), LexError> {
        use TokenKind as K;
        let (c, c1, c2) = (self.at(s), self.at(s + 1), self.at(s + 2));
        let plain_bs = self.backslash_in_plain_strings;
        let class = CLASS[c as usize];
        if class & IDENT_START != 0 && c1 != b'\'' && c1 != b'&' {
            return Ok((K::Ident, self.skip_class(s + 1, IDENT_CONT)));
        }
        Ok(match c {
            b'-' if c1 == b'-' => (K::LineComment, self.line_end(s + 2)),
            b'/' if c1 == b'*' => (K::BlockComment, self.block_comment(s)?),
            b'\'' => (K::String, self.quoted_string(s, s + 1, plain_bs)?),
            b'"' => (K::QuotedIdent, self.quoted_ident(s, s + 1)?),
            b'e' | b'E' if c1 == b'\'' => (K::String, self.quoted_string(s, s + 2, true)?),
            b'n' | b'N' if c1 == b'\'' => (K::String, self.quoted_string(s, s + 2, plain_bs)?),
            b'b' | b'B' | b'x' | b'X' if c1 == b'\'' => {
                (K::String, self.quoted_string(s, s + 2, false)?)
            }
            b'u' | b'U' if c1 == b'&' && c2 == b'\'' => {
                (K::String, self.quoted_string(s, s + 3, false)?)
            }
            b'u' | b'U' if c1 == b'&' && c2 == b'"' => {
                (K::QuotedIdent, self.quoted_ident(s, s + 3)?)
            }
            b'$' if c1.is_ascii_digit() => {
                (K::Param, self.skip_while(s + 1, |b| b.is_ascii_digit()))
            }
            b'$' => match self.dollar_tag_end(s) {
                Some(tag_end) => (K::DollarString, self.dollar_body(s, tag_end)?),
                None => (K::Other, s + 1),
            },
            b'0'..=b'9' => (K::Number, self.number(s)),
            b'.' if c1.is_ascii_digit() => (K::Number, self.number(s)),
            _ if class & IDENT_START != 0 => (K::Ident, self.skip_class(s + 1, IDENT_CONT)),
            b';' => (K::Semicolon, s + 1),
            b'(' => (K::LParen, s + 1),
            b')' => (K::RParen, s + 1),
            b'[' => (K::LBracket, s + 1),
            b']' => (K::RBracket, s + 1),
            b',' => (K::Comma, s + 1),
            b'.' => (K::Dot, s + 1),
            b':' if c1 == b':' => (K::Cast, s + 2),
            b':' => (K::Colon, s + 1),
            _ if class & OP != 0 => (K::Operator, self.operator(s)),
            _ => (K::Other, s + 1),
        })
    }

    #[inline]
    fn skip_while(&self, i: usize, f: impl Fn(u8) -> bool) -> usize {
        match self.src.as_bytes().get(i..) {
            Some(rest) => i + rest.iter().position(|&b| !f(b)).unwrap_or(rest.len()),
            None => i,
        }
    }

    /// The offset of the first byte at or after `i` not in any class of `mask`.
    fn skip_class(&self, i: usize, mask: u8) -> usize {
        self.skip_while(i, |b| CLASS[b as usize] & mask != 0)
    }

    fn line_end(&self, i: usize) -> usize {
        self.skip_while(i, |b| b != b'\n' && b != b'\r')
    }

    fn block_comment(&self, s: usize) -> Result<usize, LexError> {
        let mut depth = 1usize;
        let mut i = s + 2;
        while i < self.len() {
            match (self.at(i), self.at(i + 1)) {
                (b'/', b'*') => {
                    depth += 1;
                    i += 2;
                }
                (b'*', b'/') => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => i += 1,
            }
        }
        Err(LexError::UnterminatedComment { offset: s })
    }

    /// A `'`-quoted body starting at `i` (just past the opening quote); `''` is a quote, and with
    /// `backslash` a backslash escapes the next byte.
    fn quoted_string(&self, s: usize, mut i: usize, backslash: bool) -> Result<usize, LexError> {
        while i < self.len() {
            match self.at(i) {
                b'\\' if backslash => i += 2,
                b'\'' if self.at(i + 1) == b'\'' && i + 1 < self.len() => i += 2,
                b'\'' => return Ok(i + 1),
                _ => i += 1,
            }
        }
        Err(LexError::UnterminatedString { offset: s })
    }

    fn quoted_ident(&self, s: usize, mut i: usize) -> Result<usize, LexError> {
        while i < self.len() {
            match self.at(i) {
                b'"' if self.at(i + 1) == b'"' && i + 1 < self.len() => i += 2,
                b'"' => return Ok(i + 1),
                _ => i += 1,
            }
        }
        Err(LexError::UnterminatedQuotedIdentifier { offset: s })
    }

    /// If a dollar-quote tag (`$$` or `$tag$`, tag an identifier without `$`) starts at `s`, the
    /// offset just past its closing `$`.
    fn dollar_tag_end(&self, s: usize) -> Option<usize> {
        let c1 = self.at(s + 1);
        if c1 == b'$' {
            return Some(s + 2);
        }
        if !is_ident_start(c1) {
            return None;
        }
        let end = self.skip_while(s + 2, |b| b != b'$' && is_ident_cont(b));
        (self.at(end) == b'$' && end < self.len()).then_some(end + 1)
    }

    fn dollar_body(&self, s: usize, tag_end: usize) -> Result<usize, LexError> {
        let tag = self.src.get(s..tag_end).unwrap_or("$$");
        let rest = self.src.get(tag_end..).unwrap_or("");
        match rest.find(tag) {
            Some(at) => Ok(tag_end + at + tag.len()),
            None => Err(LexError::UnterminatedDollarQuote { offset: s }),
        }
    }

    fn number(&self, s: usize) -> usize {
        let radix = matches!(self.at(s + 1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B');
        if self.at(s) == b'0' && radix {
            return self.skip_while(s + 2, |b| b.is_ascii_alphanumeric() || b == b'_');
        }
        let digits = |b: u8| b.is_ascii_digit() || b == b'_';
        let mut i = self.skip_while(s, digits);
        if self.at(i) == b'.' && self.at(i + 1) != b'.' && i < self.len() {
            i = self.skip_while(i + 1, digits);
        }
        if matches!(self.at(i), b'e' | b'E') {
            let sign = matches!(self.at(i + 1), b'+' | b'-');
            let first = if sign { i + 2 } else { i + 1 };
            if self.at(first).is_ascii_digit() {
                i = self.skip_while(first, digits);
            }
        }
        i
    }

    /// A run of operator characters, stopping before a comment start.
    fn operator(&self, s: usize) -> usize {
        let mut i = s + 1;
        while i < self.len() && is_op(self.at(i)) {
            let pair = (self.at(i), self.at(i + 1));
            if pair == (b'-', b'-') || pair == (b'/', b'*') {
                break;
            }
            i += 1;
        }
        i
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Result<Token<'a>, LexError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_token()
    }
}

const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const OP: u8 = 8;

/// Byte classes: Postgres' whitespace, identifier start (letters, `_`, any non-ASCII byte),
/// identifier continuation (also digits and `$`) and operator characters.
static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            t[b] = SPACE;
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            t[b] = IDENT_START | IDENT_CONT;
        } else if c.is_ascii_digit() || c == b'$' {
            t[b] = IDENT_CONT;
        } else if matches!(
            c,
            b'+' | b'-'
                | b'*'
                | b'/'
                | b'<'
                | b'>'
                | b'='
                | b'~'
                | b'!'
                | b'@'
                | b'#'
                | b'%'
                | b'^'
                | b'&'
                | b'|'
                | b'`'
                | b'?'
        ) {
            t[b] = OP;
        }
        b += 1;
    }
    t
}

fn is_ident_start(b: u8) -> bool {
    CLASS[b as usize] & IDENT_START != 0
}

fn is_ident_cont(b: u8) -> bool {
    CLASS[b as usize] & IDENT_CONT != 0
}

fn is_op(b: u8) -> bool {
    CLASS[b as usize] & OP != 0
}
