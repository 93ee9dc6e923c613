//! Tests of the SQL lexer: every token kind, quoting rules, nesting, and malformed input.

use super::{LexError, Lexer, Token, TokenKind as K};

fn kinds(sql: &str) -> Vec<(K, &str)> {
    Lexer::new(sql)
        .map(|t| t.map(|t| (t.kind, t.text)))
        .collect::<Result<_, _>>()
        .unwrap()
}

fn error(sql: &str) -> LexError {
    Lexer::new(sql).find_map(|t| t.err()).unwrap()
}

#[test]
fn identifiers_keywords_and_punctuation() {
    assert_eq!(
        kinds("SELECT a, b.c FROM t;"),
        vec![
            (K::Ident, "SELECT"),
            (K::Ident, "a"),
            (K::Comma, ","),
            (K::Ident, "b"),
            (K::Dot, "."),
            (K::Ident, "c"),
            (K::Ident, "FROM"),
            (K::Ident, "t"),
            (K::Semicolon, ";"),
        ]
    );
    assert_eq!(
        kinds("f(x)[1]::int:y"),
        vec![
            (K::Ident, "f"),
            (K::LParen, "("),
            (K::Ident, "x"),
            (K::RParen, ")"),
            (K::LBracket, "["),
            (K::Number, "1"),
            (K::RBracket, "]"),
            (K::Cast, "::"),
            (K::Ident, "int"),
            (K::Colon, ":"),
            (K::Ident, "y"),
        ]
    );
}

#[test]
fn identifiers_may_hold_dollars_digits_and_non_ascii() {
    assert_eq!(kinds("a$b$c1"), vec![(K::Ident, "a$b$c1")]);
    assert_eq!(
        kinds("café_1 ünï"),
        vec![(K::Ident, "café_1"), (K::Ident, "ünï")]
    );
    assert_eq!(kinds("_x"), vec![(K::Ident, "_x")]);
}

#[test]
fn keyword_compare_ignores_case_and_quotes_never_match() {
    let t = Lexer::new("sElEcT").next().unwrap().unwrap();
    assert!(t.is_keyword("SELECT"));
    let q = Lexer::new("\"select\"").next().unwrap().unwrap();
    assert!(!q.is_keyword("select"));
    assert!(q.names("select"));
    assert!(!q.names("SELECT"));
    let u = Lexer::new("u&\"nextval\"").next().unwrap().unwrap();
    assert_eq!(u.kind, K::QuotedIdent);
    assert!(u.names("nextval"));
}

#[test]
fn plain_strings_double_quotes_to_escape() {
    assert_eq!(
        kinds("'it''s' x"),
        vec![(K::String, "'it''s'"), (K::Ident, "x")]
    );
    assert_eq!(
        kinds("'a\\' x"),
        vec![(K::String, "'a\\'"), (K::Ident, "x")]
    );
    assert_eq!(kinds("''"), vec![(K::String, "''")]);
}

#[test]
fn backslashes_escape_in_plain_strings_without_standard_conforming_strings() {
    let toks: Vec<_> = Lexer::with_standard_conforming_strings("'a\\'b' x", false)
        .map(|t| t.unwrap().text)
        .collect();
    assert_eq!(toks, vec!["'a\\'b'", "x"]);
}

#[test]
fn escape_unicode_bit_and_national_strings() {
    assert_eq!(
        kinds("E'a\\'b' x"),
        vec![(K::String, "E'a\\'b'"), (K::Ident, "x")]
    );
    assert_eq!(kinds("e'a''b\\\\'"), vec![(K::String, "e'a''b\\\\'")]);
    assert_eq!(kinds("U&'d\\0061t'"), vec![(K::String, "U&'d\\0061t'")]);
    assert_eq!(
        kinds("B'101' X'ff' N'n'"),
        vec![
            (K::String, "B'101'"),
            (K::String, "X'ff'"),
            (K::String, "N'n'"),
        ]
    );
    // A prefix letter followed by something else is an identifier.
    assert_eq!(kinds("e x"), vec![(K::Ident, "e"), (K::Ident, "x")]);
    assert_eq!(
        kinds("u&x"),
        vec![(K::Ident, "u"), (K::Operator, "&"), (K::Ident, "x")]
    );
}

#[test]
fn quoted_identifiers_double_quotes_to_escape() {
    assert_eq!(
        kinds("\"a\"\"b\" c"),
        vec![(K::QuotedIdent, "\"a\"\"b\""), (K::Ident, "c")]
    );
}

#[test]
fn dollar_quotes_with_and_without_tags() {
    assert_eq!(
        kinds("$$ it's ; $$ x"),
        vec![(K::DollarString, "$$ it's ; $$"), (K::Ident, "x")]
    );
    assert_eq!(
        kinds("$fn$ select $$ inner $$ $fn$;"),
        vec![
            (K::DollarString, "$fn$ select $$ inner $$ $fn$"),
            (K::Semicolon, ";")
        ]
    );
    // The closing tag must match exactly, case included.
    assert_eq!(kinds("$a$ $A$ $a$"), vec![(K::DollarString, "$a$ $A$ $a$")]);
}

#[test]
fn dollar_followed_by_digits_is_a_parameter_and_a_bad_tag_is_other() {
    assert_eq!(
        kinds("$1 + $23"),
        vec![(K::Param, "$1"), (K::Operator, "+"), (K::Param, "$23")]
    );
    assert_eq!(kinds("$ x"), vec![(K::Other, "$"), (K::Ident, "x")]);
    // A tag may not start with a digit: `$1a$` is a parameter then an identifier.
    assert_eq!(kinds("$1a$"), vec![(K::Param, "$1"), (K::Ident, "a$")]);
}

#[test]
fn numbers() {
    for n in [
        "42", "3.5", ".5", "1e10", "1.5E-3", "0x1F", "0o17", "0b101", "1_000", "5.",
    ] {
        assert_eq!(kinds(n), vec![(K::Number, n)], "{n}");
    }
    assert_eq!(
        kinds("1..2"),
        vec![(K::Number, "1"), (K::Dot, "."), (K::Number, ".2")]
    );
}

#[test]
fn operators_stop_before_comments() {
    assert_eq!(
        kinds("a<>b >= c"),
        vec![
            (K::Ident, "a"),
            (K::Operator, "<>"),
            (K::Ident, "b"),
            (K::Operator, ">="),
            (K::Ident, "c"),
        ]
    );
    assert_eq!(
        kinds("a+--c\nb"),
        vec![
            (K::Ident, "a"),
            (K::Operator, "+"),
            (K::LineComment, "--c"),
            (K::Ident, "b"),
        ]
    );
    assert_eq!(
        kinds("*/*x*/"),
        vec![(K::Operator, "*"), (K::BlockComment, "/*x*/")]
    );
}

#[test]
fn comments_nest_and_keep_their_text() {
    let toks: Vec<Token> = Lexer::new("/* a /* b */ c */ x -- tail\r y")
        .map(Result::unwrap)
        .collect();
    assert_eq!(toks[0].kind, K::BlockComment);
    assert_eq!(toks[0].comment_body(), " a /* b */ c ");
    assert_eq!(toks[1].text, "x");
    assert_eq!(toks[2].kind, K::LineComment);
    assert_eq!(toks[2].comment_body(), " tail");
    assert_eq!(toks[3].text, "y");
    assert_eq!(toks[3].offset, 29);
}

#[test]
fn whitespace_of_every_kind_is_skipped() {
    assert_eq!(kinds(" \t\n\r\x0b\x0cx "), vec![(K::Ident, "x")]);
    assert!(kinds("   ").is_empty());
    assert!(kinds("").is_empty());
}

#[test]
fn unterminated_constructs_are_errors() {
    assert_eq!(
        error("select 'abc"),
        LexError::UnterminatedString { offset: 7 }
    );
    assert_eq!(error("'it''"), LexError::UnterminatedString { offset: 0 });
    assert_eq!(
        error("E'abc\\'"),
        LexError::UnterminatedString { offset: 0 }
    );
    assert_eq!(
        error("x \"abc"),
        LexError::UnterminatedQuotedIdentifier { offset: 2 }
    );
    assert_eq!(
        error("$q$ abc $$"),
        LexError::UnterminatedDollarQuote { offset: 0 }
    );
    assert_eq!(
        error("/* a /* b */"),
        LexError::UnterminatedComment { offset: 0 }
    );
    assert_eq!(error("E'\\"), LexError::UnterminatedString { offset: 0 });
}

#[test]
fn the_lexer_stops_after_an_error() {
    let mut lx = Lexer::new("a 'b");
    assert!(lx.next().unwrap().is_ok());
    assert!(lx.next().unwrap().is_err());
    assert!(lx.next().is_none());
}

#[test]
fn odd_bytes_never_panic() {
    let samples = [
        "\\",
        "{}",
        "$",
        "$$",
        "$a",
        "e'",
        "u&",
        "u&'",
        "U&\"",
        "/*",
        "*/",
        "--",
        "'",
        "\"",
        "0x",
        "1e",
        "1e+",
        ".",
        "::",
        "\0",
        "é'",
        "$é$ x $é$",
    ];
    for s in samples {
        for t in Lexer::new(s).flatten() {
            assert!(s.contains(t.text));
        }
    }
    assert_eq!(kinds("$é$ x $é$"), vec![(K::DollarString, "$é$ x $é$")]);
}
