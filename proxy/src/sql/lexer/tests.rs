//! Tests of the lexer.

#![allow(clippy::unwrap_used)]

use super::*;

fn kinds(src: &str) -> Vec<(TokenKind, &str)> {
    Lexer::new(src).map(|t| (t.kind, t.text)).collect()
}

fn single(src: &str) -> Token<'_> {
    let tokens: Vec<_> = Lexer::new(src).collect();
    assert_eq!(tokens.len(), 1, "{src:?} -> {tokens:?}");
    tokens[0]
}

#[test]
fn basic_tokens() {
    use TokenKind::*;
    assert_eq!(
        kinds("SELECT a.b, \"x\"\"y\" FROM t WHERE c = $1;"),
        vec![
            (Word, "SELECT"),
            (Word, "a"),
            (Dot, "."),
            (Word, "b"),
            (Comma, ","),
            (QuotedIdent { unicode: false }, "\"x\"\"y\""),
            (Word, "FROM"),
            (Word, "t"),
            (Word, "WHERE"),
            (Word, "c"),
            (Eq, "="),
            (Param, "$1"),
            (Semicolon, ";"),
        ]
    );
    assert_eq!(
        kinds("f(1.5e3, .5, 1., 0x1F, 1_000, 2e-3)::int"),
        vec![
            (Word, "f"),
            (LParen, "("),
            (Number, "1.5e3"),
            (Comma, ","),
            (Number, ".5"),
            (Comma, ","),
            (Number, "1."),
            (Comma, ","),
            (Number, "0x1F"),
            (Comma, ","),
            (Number, "1_000"),
            (Comma, ","),
            (Number, "2e-3"),
            (RParen, ")"),
            (Operator, "::"),
            (Word, "int"),
        ]
    );
    assert_eq!(
        kinds("1..2"),
        vec![(Number, "1"), (Operator, ".."), (Number, "2")]
    );
    assert_eq!(
        kinds("a[1:2]"),
        vec![
            (Word, "a"),
            (Operator, "["),
            (Number, "1"),
            (Operator, ":"),
            (Number, "2"),
            (Operator, "]")
        ]
    );
}

#[test]
fn operators_follow_postgres_rules() {
    use TokenKind::*;
    assert_eq!(
        kinds("x=-1"),
        vec![(Word, "x"), (Eq, "="), (Operator, "-"), (Number, "1")]
    );
    assert_eq!(
        kinds("x=+1"),
        vec![(Word, "x"), (Eq, "="), (Operator, "+"), (Number, "1")]
    );
    assert_eq!(
        kinds("a@-b"),
        vec![(Word, "a"), (Operator, "@-"), (Word, "b")]
    );
    assert_eq!(
        kinds("a<>b"),
        vec![(Word, "a"), (Operator, "<>"), (Word, "b")]
    );
    assert_eq!(
        kinds("a+/*c*/b"),
        vec![(Word, "a"), (Operator, "+"), (Word, "b")]
    );
    assert_eq!(
        kinds("a*--c\nb"),
        vec![(Word, "a"), (Operator, "*"), (Word, "b")]
    );
    assert_eq!(
        kinds("a := b => c"),
        vec![
            (Word, "a"),
            (Operator, ":="),
            (Word, "b"),
            (Operator, "=>"),
            (Word, "c")
        ]
    );
    assert_eq!(
        kinds("a == b"),
        vec![(Word, "a"), (Operator, "=="), (Word, "b")]
    );
}

#[test]
fn comments_nest_and_are_skipped() {
    use TokenKind::*;
    assert_eq!(
        kinds("/* a /* b */ c */ x -- y\n z"),
        vec![(Word, "x"), (Word, "z")]
    );
    assert_eq!(kinds("/* a /* b */ c x"), vec![]);
    assert_eq!(kinds("/**/x/*/ y */z"), vec![(Word, "x"), (Word, "z")]);
    assert_eq!(kinds("x -- trailing"), vec![(Word, "x")]);
    assert_eq!(kinds("x\r--c\ry"), vec![(Word, "x"), (Word, "y")]);
}

#[test]
fn strings_and_values() {
    let t = single("'it''s'");
    assert_eq!(t.kind, TokenKind::String(StringKind::Standard));
    assert_eq!(t.string_value().unwrap(), "it's");
    assert!(matches!(
        single("'plain'").string_value().unwrap(),
        Cow::Borrowed("plain")
    ));

    let t = single(r"E'\''");
    assert_eq!(t.kind, TokenKind::String(StringKind::Escape));
    assert_eq!(t.string_value().unwrap(), "'");
    let t = single(r"e'a\nb\x41\101\u00e9\U0001F600\uD83D\uDE00\\\q'''");
    assert_eq!(t.string_value().unwrap(), "a\nbAAé😀😀\\q'");
    assert_eq!(single(r"E'\0'").string_value(), None);
    assert_eq!(single(r"E'\uD83D'").string_value(), None);
    assert_eq!(single(r"E'\xff'").string_value(), None);

    // SQL string continuation: literals separated by a newline are one constant.
    let t = single("'foo' -- c\n  'bar'");
    assert_eq!(t.string_value().unwrap(), "foobar");
    assert_eq!(Lexer::new("'foo' 'bar'").count(), 2);

    assert_eq!(single("B'0101'").kind, TokenKind::String(StringKind::Bit));
    assert_eq!(single("x'1F'").string_value().unwrap(), "1F");
    assert_eq!(
        kinds("N'x'"),
        vec![
            (TokenKind::Word, "N"),
            (TokenKind::String(StringKind::Standard), "'x'")
        ]
    );
}

#[test]
fn unicode_escapes() {
    let t = single(r"U&'d\0061t\+000061'");
    assert_eq!(t.kind, TokenKind::String(StringKind::Unicode));
    assert_eq!(t.string_value().unwrap(), "data");
    let t = single("u&'d!0061t!+000061!!' UESCAPE '!'");
    assert_eq!(t.string_value().unwrap(), "data!");
    let t = single(r#"U&"d\0061t\+000061""#);
    assert_eq!(t.kind, TokenKind::QuotedIdent { unicode: true });
    assert_eq!(t.ident().unwrap(), "data");
    assert_eq!(single(r"U&'\D83D\DE00'").string_value().unwrap(), "😀");
    assert_eq!(single(r"U&'\12'").string_value(), None);
    assert_eq!(single("U&'x' UESCAPE 'a'").string_value(), None);
    assert_eq!(
        kinds("U&x"),
        vec![
            (TokenKind::Word, "U"),
            (TokenKind::Operator, "&"),
            (TokenKind::Word, "x")
        ]
    );
}

#[test]
fn dollar_quotes_and_params() {
    use TokenKind::*;
    assert_eq!(kinds("$$a;b$$"), vec![(DollarString, "$$a;b$$")]);
    assert_eq!(
        kinds("$a$ ; $b$ ; $a$ x"),
        vec![(DollarString, "$a$ ; $b$ ; $a$"), (Word, "x")]
    );
    assert_eq!(
        kinds("$fn_1$x$fn_1$"),
        vec![(DollarString, "$fn_1$x$fn_1$")]
    );
    assert_eq!(kinds("$1 $12"), vec![(Param, "$1"), (Param, "$12")]);
    assert_eq!(kinds("foo$$bar$$"), vec![(Word, "foo$$bar$$")]);
    assert_eq!(kinds("$x y"), vec![(Other, "$"), (Word, "x"), (Word, "y")]);
    assert_eq!(single("$q$it's$q$").string_value().unwrap(), "it's");
    assert_eq!(single("$q$open").string_value().unwrap(), "open");
    assert_eq!(single("$a$a$").string_value().unwrap(), "a$");
    assert_eq!(single("$$$$").string_value().unwrap(), "");
}

#[test]
fn identifiers() {
    assert_eq!(single("FooBar").ident().unwrap(), "foobar");
    assert!(matches!(
        single("foo").ident().unwrap(),
        Cow::Borrowed("foo")
    ));
    assert_eq!(single("\"Foo\"\"Bar\"").ident().unwrap(), "Foo\"Bar");
    assert_eq!(single("ÉtÉ").ident().unwrap(), "ÉtÉ");
    assert_eq!(single("café_Ü").kind, TokenKind::Word);
    let long = "a".repeat(70);
    assert_eq!(single(&long).ident().unwrap().len(), 63);
    let wide = format!("\"{}\"", "é".repeat(40));
    assert_eq!(single(&wide).ident().unwrap().len(), 62);
    assert!(single("SeLeCt").is_keyword("select"));
    assert!(!single("\"select\"").is_keyword("select"));
    assert!(single("\"select\"").eq_ignore_ascii_case("\"SELECT\""));
}

#[test]
fn unterminated_items_run_to_the_end() {
    use TokenKind::*;
    assert_eq!(
        kinds("x 'abc"),
        vec![(Word, "x"), (String(StringKind::Standard), "'abc")]
    );
    assert_eq!(single("'abc''").string_value().unwrap(), "abc'");
    assert_eq!(
        kinds("\"abc"),
        vec![(QuotedIdent { unicode: false }, "\"abc")]
    );
    assert_eq!(
        kinds(r"E'abc\"),
        vec![(String(StringKind::Escape), r"E'abc\")]
    );
    assert_eq!(single(r"E'abc\").string_value(), None);
    assert_eq!(kinds("$t$abc $t"), vec![(DollarString, "$t$abc $t")]);
    assert_eq!(kinds("U&'x"), vec![(String(StringKind::Unicode), "U&'x")]);
    assert_eq!(kinds("x /* a"), vec![(Word, "x")]);
}

#[test]
fn terminated_tokens_are_told_from_unclosed_ones() {
    let all = |src: &str| -> Vec<bool> {
        Lexer::new(src)
            .with_comments(true)
            .map(|t| t.is_terminated())
            .collect()
    };
    for closed in [
        "'abc'",
        "'a''b'",
        "'a'\n'b'",
        "E'a\\'b'",
        "B'01'",
        "X'1F'",
        "\"a\"\"b\"",
        "$$x$$",
        "$t$ $ $$ $t$",
        "U&'d!0061t' UESCAPE '!'",
        "U&\"d\"",
        "/* a /* b */ c */",
        "-- line",
        "42",
    ] {
        assert_eq!(all(closed), vec![true], "{closed}");
    }
    for open in [
        "'abc",
        "'abc''",
        "'a'\n'b",
        "E'a\\'",
        "B'01",
        "X'",
        "\"a",
        "$$x$",
        "$t$ $t",
        "$a$a$",
        "U&'x",
        "U&'x' UESCAPE '!",
        "/* a /* b */ c",
    ] {
        assert_eq!(all(open), vec![false], "{open}");
    }
}

#[test]
fn standard_conforming_strings_off() {
    let src = r"'a\'z' c";
    let on: Vec<_> = Lexer::new(src).map(|t| t.text).collect();
    assert_eq!(on, vec![r"'a\'", "z", "' c"]);
    let mut off = Lexer::with_standard_conforming_strings(src, false);
    let t = off.next().unwrap();
    assert_eq!(t.kind, TokenKind::String(StringKind::Escape));
    assert_eq!(t.string_value().unwrap(), "a'z");
    assert_eq!(off.next().unwrap().text, "c");
}

const TRICKY: &[&str] = &[
    "SELECT 'it''s', E'\\'', U&'\\0041' UESCAPE '!', $a$ ; $a$, $$x$$, \"q\"\"i\" /* a /* b */ */ -- c\n;",
    "e'\\\\\\'' b'01' x'1f' u&\"x\" $1 $x $x$ 1.5e-3 .5 0x1f 1_0 a::b <-> @- =- /**/ --",
    "DO $$BEGIN EXECUTE 'LISTEN ' || x; SET a = 1; END$$; CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END",
    "SELECT set_config('a', 'b', (true)), pg_catalog . pg_advisory_lock(1) INTO TEMP t; DECLARE c CURSOR WITH HOLD FOR",
    "'a'\n  'b' 'c' -- x\n 'd' U&'\\D83D\\DE00' E'\\uD83D\\uDE00' E'\\U0001F600' \"é\" é $é$é$é$ U&'é' UESCAPE 'é'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; RESET TIME ZONE; EXPLAIN (a) EXECUTE p(1); COPY t FROM STDIN",
];

/// Checks that tokens are ordered, in bounds, and that their text is their span.
fn check_tokens(src: &str) {
    let mut last_end = 0;
    for t in Lexer::new(src).chain(Lexer::with_standard_conforming_strings(src, false)) {
        if t.start < last_end {
            last_end = 0; // second lexer restarted
        }
        assert!(
            t.start >= last_end && t.end() <= src.len() && !t.text.is_empty(),
            "{src:?}: {t:?}"
        );
        assert_eq!(&src[t.span()], t.text);
        last_end = t.end();
        let _ = (t.ident(), t.string_value());
    }
}

#[test]
fn every_prefix_is_safe() {
    for src in TRICKY {
        for (i, _) in src.char_indices() {
            check_tokens(&src[..i]);
            check_tokens(&src[i..]);
        }
    }
}

#[test]
fn comments_as_tokens() {
    use TokenKind::*;
    let with = |src| -> Vec<(TokenKind, &str)> {
        Lexer::new(src)
            .with_comments(true)
            .map(|t| (t.kind, t.text))
            .collect()
    };
    let block = Comment { block: true };
    let line = Comment { block: false };
    assert_eq!(
        with("/* a /* b */ c */ x -- y\r\n z"),
        vec![
            (block, "/* a /* b */ c */"),
            (Word, "x"),
            (line, "-- y"),
            (Word, "z")
        ]
    );
    assert_eq!(
        with("a+/*c*/b*--d\ne"),
        vec![
            (Word, "a"),
            (Operator, "+"),
            (block, "/*c*/"),
            (Word, "b"),
            (Operator, "*"),
            (line, "--d"),
            (Word, "e")
        ]
    );
    assert_eq!(with("x /* open"), vec![(Word, "x"), (block, "/* open")]);
    assert_eq!(with("--"), vec![(line, "--")]);
    assert_eq!(
        with("'/* no */' $$-- no$$ \"/*no*/\""),
        vec![
            (String(StringKind::Standard), "'/* no */'"),
            (DollarString, "$$-- no$$"),
            (QuotedIdent { unicode: false }, "\"/*no*/\"")
        ]
    );
    assert!(Lexer::new("x").with_comments(true).comments());
    assert!(!Lexer::new("x").comments());
}

#[test]
fn comment_tokens_do_not_change_other_tokens() {
    for src in TRICKY {
        for (i, _) in src.char_indices() {
            for part in [&src[..i], &src[i..]] {
                let plain: Vec<_> = Lexer::new(part).collect();
                let mut last_end = 0;
                let mut others = Vec::new();
                for t in Lexer::new(part).with_comments(true) {
                    assert!(t.start >= last_end && !t.text.is_empty(), "{part:?}: {t:?}");
                    assert_eq!(&part[t.span()], t.text);
                    last_end = t.end();
                    if !matches!(t.kind, TokenKind::Comment { .. }) {
                        others.push(t);
                    }
                }
                assert_eq!(plain, others, "{part:?}");
            }
        }
    }
}

#[test]
fn random_soup_is_safe() {
    const ALPHABET: &[u8] = b"'\"$;/*-\\eEuUbBxXnN&()., =+<>!@:_01239aZ\n\t\r\x0b\x0c`?%^#|~[]";
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 48) as usize;
        let s: String = (0..len)
            .map(|i| {
                let r = seed.rotate_left(i as u32 * 5) as usize;
                if r % 31 == 0 {
                    'é'
                } else {
                    char::from(ALPHABET[r % ALPHABET.len()])
                }
            })
            .collect();
        check_tokens(&s);
    }
}

/// Tokens as the lexer made them before its inline fast paths: trivia skipped by
/// `skip_trivia`, every token scanned by `scan_comment` or `scan_token`.
fn reference_tokens(src: &str, standard_strings: bool, comments: bool) -> Vec<Token<'_>> {
    let lex =
        Lexer::with_standard_conforming_strings(src, standard_strings).with_comments(comments);
    let b = src.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        pos = if comments {
            skip_space(b, pos)
        } else {
            skip_trivia(b, pos)
        };
        let Some(&c) = b.get(pos) else {
            return out;
        };
        let (kind, end) = lex
            .scan_comment(pos)
            .unwrap_or_else(|| lex.scan_token(pos, c));
        let end = end.clamp(pos + 1, src.len().max(pos + 1));
        out.push(Token {
            kind,
            text: &src[pos..end],
            start: pos,
        });
        pos = end;
    }
}

/// End of the identifier bytes from `i`, one byte at a time.
fn reference_ident_end(b: &[u8], i: usize) -> usize {
    (i..b.len())
        .find(|&j| !is_ident_cont(b[j]))
        .unwrap_or(b.len())
}

/// Inputs for comparing implementations: the tricky inputs and all their prefixes and
/// suffixes, numbers and words of every length around the eight-byte steps, random soup.
fn corpus() -> Vec<String> {
    let mut all = Vec::new();
    for src in TRICKY {
        for (i, _) in src.char_indices() {
            all.push(src[..i].to_owned());
            all.push(src[i..].to_owned());
        }
    }
    let tails = [
        "", " ", ",", ";", ".", "..", ".5", "e5", "E+1", "e-", "_1", "_", "x1", "0x", "o7", "b1",
        "$", "$$", "'", "&", "é", "a", "\"", "--", "/*",
    ];
    for len in 1..20 {
        for tail in tails {
            for head in [
                "", "0", "1", "a", "e", "E", "u", "U", "b", "x", "é", "_", "$1",
            ] {
                all.push(format!("{head}{}{tail} x", "9".repeat(len)));
                all.push(format!(
                    "{head}{}{tail} 1",
                    "ab_$9é".repeat(len).get(..len).unwrap_or("")
                ));
            }
        }
    }
    const ALPHABET: &[u8] =
        b"'\"$;/*-\\eEuUbBxXoOnN&()., =+<>!@:_0123456789aZ\n\t\r\x0b\x0c`?%^#|~[]";
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        all.push(
            (0..len)
                .map(|i| {
                    let r = seed.rotate_left(i as u32 * 5) as usize;
                    if r % 29 == 0 {
                        'é'
                    } else {
                        char::from(ALPHABET[r % ALPHABET.len()])
                    }
                })
                .collect(),
        );
    }
    all
}

#[test]
fn fast_paths_agree_with_scan_token() {
    for src in corpus() {
        for standard_strings in [true, false] {
            for comments in [false, true] {
                let fast: Vec<_> = Lexer::with_standard_conforming_strings(&src, standard_strings)
                    .with_comments(comments)
                    .collect();
                assert_eq!(
                    fast,
                    reference_tokens(&src, standard_strings, comments),
                    "{src:?} standard_strings={standard_strings} comments={comments}"
                );
            }
        }
    }
}

#[test]
fn runs_of_eight_bytes_match_the_byte_classes() {
    for v in 0..=255u8 {
        for k in 0..8 {
            for filler in [
                b'a', b'Z', b'0', b'_', b'$', 0x80, 0xff, b' ', b'@', b'`', 0,
            ] {
                let mut chunk = [filler; 8];
                chunk[k] = v;
                let w = u64::from_le_bytes(chunk);
                let (idents, digits) = (ident_bytes(w), digit_bytes(w));
                for (j, &c) in chunk.iter().enumerate() {
                    let bit = 0x80u64 << (8 * j);
                    assert_eq!(idents & bit != 0, is_ident_cont(c), "{chunk:?} byte {j}");
                    assert_eq!(digits & bit != 0, c.is_ascii_digit(), "{chunk:?} byte {j}");
                }
                assert_eq!(idents & !HIGH, 0);
                assert_eq!(digits & !HIGH, 0);
            }
        }
    }
}

#[test]
fn run_ends_match_bytewise_scans() {
    for src in corpus() {
        let b = src.as_bytes();
        for i in 0..=b.len() {
            assert_eq!(ident_end(b, i), reference_ident_end(b, i), "{src:?} at {i}");
            if b[i..].first().is_some_and(u8::is_ascii_digit) {
                assert_eq!(number_end_fast(b, i), number_end(b, i), "{src:?} at {i}");
            }
        }
    }
}
