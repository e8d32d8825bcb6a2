//! MySQL and MariaDB: `` `identifier` ``, `'literal'` with backslash escapes
//! (target sessions make sure `NO_BACKSLASH_ESCAPES` is off, see the target
//! writer's `connect`).

/// A MySQL identifier in backquotes (a backquote in it doubled): the one
/// quoter of MySQL names, for every statement tidemark builds.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal.
pub fn literal(text: &str) -> String {
    let mut out = String::new();
    push_literal(&mut out, text);
    out
}

/// A quoted MySQL string literal (backslash escapes on, the server default).
pub fn push_literal(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x1a' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(literal("it's"), r"'it\'s'");
        assert_eq!(literal("a\\b"), r"'a\\b'");
        assert_eq!(literal("\0\n\r\x1a"), r"'\0\n\r\Z'");
    }
}
