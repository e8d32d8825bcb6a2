//! Which tables a binlog statement (a QUERY event's text) changes the shape of.
//!
//! Only the statement forms that change a table are recognised, by their
//! leading keywords: `ALTER TABLE`, `CREATE TABLE`, `DROP TABLE`, `RENAME
//! TABLE`, `TRUNCATE [TABLE]`, `CREATE … INDEX … ON` and `DROP INDEX … ON`.
//! Everything else (`CREATE USER`, `GRANT`, `SET PASSWORD`, views, routines,
//! roles, …) touches no table here, so its text, which may hold a password in
//! clear, never becomes an event. Written by hand rather than with a SQL parser
//! crate: only the object type and names are needed, and a full parser
//! refuses MariaDB syntax it does not know, where this reads the names and
//! stops.

/// What one statement does to tables.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DdlTables {
    /// `TRUNCATE`: rows go, the shape stays.
    pub truncate: bool,
    /// `(database, table)`; the database is the statement's default one
    /// when the name has none.
    pub tables: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word (keyword or identifier), as written.
    Word(String),
    /// A quoted identifier (backticks, or double quotes under ANSI_QUOTES).
    Quoted(String),
    /// A string literal: never a name.
    Literal,
    Punct(char),
}

impl Token {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn identifier(&self) -> Option<&str> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w),
            _ => None,
        }
    }
}

/// The characters of a statement, with one of lookahead.
type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Splits a statement into tokens. Comments are dropped, except MariaDB's and
/// MySQL's executable comments (`/*! … */`, `/*M! … */`), whose text is code.
fn tokens(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    let mut executable_comments = 0usize;
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                if executable_comment(&mut chars) {
                    executable_comments += 1;
                } else {
                    skip_comment(&mut chars);
                }
            }
            '*' if executable_comments > 0 && chars.peek() == Some(&'/') => {
                chars.next();
                executable_comments -= 1;
            }
            '-' if chars.peek() == Some(&'-') => {
                let mut ahead = chars.clone();
                ahead.next();
                if ahead.peek().is_none_or(|c| c.is_whitespace()) {
                    skip_line(&mut chars);
                } else {
                    out.push(Token::Punct('-'));
                }
            }
            '#' => skip_line(&mut chars),
            '`' | '"' | '\'' => out.push(quoted(&mut chars, c)),
            c if c.is_alphanumeric() || c == '_' || c == '$' => out.push(word(&mut chars, c)),
            other => out.push(Token::Punct(other)),
        }
    }
    out
}

/// After `/*`: takes the `!` or `M!` (and version digits) that make the
/// comment's text code, and says whether they were there.
fn executable_comment(chars: &mut Chars<'_>) -> bool {
    let executable = match chars.peek() {
        Some('!') => {
            chars.next();
            true
        }
        Some('M') => {
            let mut ahead = chars.clone();
            ahead.next();
            if ahead.peek() == Some(&'!') {
                chars.next();
                chars.next();
                true
            } else {
                false
            }
        }
        _ => false,
    };
    if executable {
        while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
            chars.next();
        }
    }
    executable
}

/// Skips a comment's text up to its `*/`.
fn skip_comment(chars: &mut Chars<'_>) {
    let mut last = '\0';
    for c in chars.by_ref() {
        if last == '*' && c == '/' {
            break;
        }
        last = c;
    }
}

/// Skips the rest of the line (a `--` or `#` comment).
fn skip_line(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

/// A quoted identifier, or a string literal (`quote` is `'`), after its
/// opening quote.
fn quoted(chars: &mut Chars<'_>, quote: char) -> Token {
    let mut text = String::new();
    loop {
        match chars.next() {
            None => break,
            Some(q) if q == quote && chars.peek() == Some(&quote) => {
                chars.next();
                text.push(quote);
            }
            Some(q) if q == quote => break,
            Some('\\') if quote != '`' => {
                if let Some(escaped) = chars.next() {
                    text.push(escaped);
                }
            }
            Some(other) => text.push(other),
        }
    }
    if quote == '\'' {
        Token::Literal
    } else {
        Token::Quoted(text)
    }
}

/// A bare word starting with `first`.
fn word(chars: &mut Chars<'_>, first: char) -> Token {
    let mut word = String::from(first);
    while let Some(&next) = chars.peek() {
        if next.is_alphanumeric() || next == '_' || next == '$' {
            word.push(next);
            chars.next();
        } else {
            break;
        }
    }
    Token::Word(word)
}

/// A cursor over the tokens.
struct Reader<'a> {
    tokens: &'a [Token],
    at: usize,
    default_db: &'a str,
}

impl Reader<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    /// Takes the next token when it is `keyword`.
    fn eat(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is(keyword));
        if found {
            self.at += 1;
        }
        found
    }

    /// Takes a run of keywords when all of them come next.
    fn eat_all(&mut self, keywords: &[&str]) -> bool {
        let matches = keywords
            .iter()
            .enumerate()
            .all(|(i, k)| self.tokens.get(self.at + i).is_some_and(|t| t.is(k)));
        if matches {
            self.at += keywords.len();
        }
        matches
    }

    /// `name` or `db.name`.
    fn table_name(&mut self) -> Option<(String, String)> {
        let first = self.peek()?.identifier()?.to_string();
        self.at += 1;
        if self.peek() == Some(&Token::Punct('.')) {
            self.at += 1;
            let second = self.peek()?.identifier()?.to_string();
            self.at += 1;
            return Some((first, second));
        }
        Some((self.default_db.to_string(), first))
    }

    /// Skips to the next top-level `,` (not inside parentheses); true if one
    /// was found.
    fn skip_to_comma(&mut self) -> bool {
        let mut depth = 0usize;
        while let Some(token) = self.peek() {
            match token {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') => depth = depth.saturating_sub(1),
                Token::Punct(',') if depth == 0 => {
                    self.at += 1;
                    return true;
                }
                _ => {}
            }
            self.at += 1;
        }
        false
    }
}

/// The tables `sql` creates, alters, drops, renames or truncates, read from
/// its object type and names; nothing for any other statement.
pub(crate) fn ddl_tables(default_db: &str, sql: &str) -> DdlTables {
    let tokens = tokens(sql);
    let mut r = Reader {
        tokens: &tokens,
        at: 0,
        default_db,
    };
    let mut out = DdlTables::default();
    if r.eat("TRUNCATE") {
        r.eat("TABLE");
        out.truncate = true;
        out.tables.extend(r.table_name());
    } else if r.eat("ALTER") {
        r.eat("ONLINE");
        r.eat("IGNORE");
        if !r.eat("TABLE") {
            return DdlTables::default();
        }
        r.eat_all(&["IF", "EXISTS"]);
        out.tables.extend(r.table_name());
        // `RENAME [TO|AS] new` among the alterations (not RENAME COLUMN/INDEX/KEY).
        while r.at < tokens.len() {
            if r.eat("RENAME")
                && !matches!(r.peek(), Some(t) if t.is("COLUMN") || t.is("INDEX") || t.is("KEY"))
            {
                if !r.eat("TO") {
                    r.eat("AS");
                }
                out.tables.extend(r.table_name());
            } else {
                r.at += 1;
            }
        }
    } else if r.eat("CREATE") {
        r.eat_all(&["OR", "REPLACE"]);
        for modifier in ["UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE"] {
            r.eat(modifier);
        }
        if r.eat("INDEX") {
            index_target(&mut r, &mut out);
        } else {
            r.eat("TEMPORARY");
            if r.eat("TABLE") {
                r.eat_all(&["IF", "NOT", "EXISTS"]);
                out.tables.extend(r.table_name());
            }
        }
    } else if r.eat("DROP") {
        r.eat("ONLINE");
        r.eat("OFFLINE");
        if r.eat("INDEX") {
            index_target(&mut r, &mut out);
        } else {
            r.eat("TEMPORARY");
            if r.eat("TABLE") || r.eat("TABLES") {
                r.eat_all(&["IF", "EXISTS"]);
                while let Some(name) = r.table_name() {
                    out.tables.push(name);
                    if r.peek() != Some(&Token::Punct(',')) {
                        break;
                    }
                    r.at += 1;
                }
            }
        }
    } else if r.eat("RENAME") && (r.eat("TABLE") || r.eat("TABLES")) {
        loop {
            out.tables.extend(r.table_name());
            if r.eat("TO") {
                out.tables.extend(r.table_name());
            }
            if !r.skip_to_comma() {
                break;
            }
        }
    }
    out
}

/// `[IF [NOT] EXISTS] index [USING type] ON table`: the table.
fn index_target(r: &mut Reader<'_>, out: &mut DdlTables) {
    r.eat_all(&["IF", "NOT", "EXISTS"]);
    r.eat_all(&["IF", "EXISTS"]);
    if r.peek().and_then(Token::identifier).is_none() {
        return;
    }
    r.at += 1;
    while let Some(token) = r.peek() {
        if token.is("ON") {
            r.at += 1;
            out.tables.extend(r.table_name());
            return;
        }
        r.at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(sql: &str) -> Vec<(String, String)> {
        ddl_tables("shop", sql).tables
    }

    fn t(db: &str, table: &str) -> (String, String) {
        (db.into(), table.into())
    }

    #[test]
    fn table_statements_name_their_tables() {
        assert_eq!(
            tables("ALTER TABLE user ADD COLUMN x int"),
            [t("shop", "user")]
        );
        assert_eq!(
            tables("alter online ignore table `my``db`.`us er` drop column y"),
            [t("my`db", "us er")]
        );
        assert_eq!(
            tables("CREATE OR REPLACE TEMPORARY TABLE IF NOT EXISTS a.b (id int)"),
            [t("a", "b")]
        );
        assert_eq!(
            tables("DROP TABLE IF EXISTS `a`, b.c /* generated by server */"),
            [t("shop", "a"), t("b", "c")]
        );
        assert_eq!(
            tables("RENAME TABLE a TO b, x.y TO x.z"),
            [t("shop", "a"), t("shop", "b"), t("x", "y"), t("x", "z")]
        );
        assert_eq!(
            tables("ALTER TABLE a RENAME TO b"),
            [t("shop", "a"), t("shop", "b")]
        );
        assert_eq!(
            tables("ALTER TABLE a RENAME COLUMN user TO b"),
            [t("shop", "a")]
        );
        assert_eq!(
            tables("CREATE UNIQUE INDEX i USING BTREE ON a (x)"),
            [t("shop", "a")]
        );
        assert_eq!(tables("DROP INDEX IF EXISTS i ON d.a"), [t("d", "a")]);
        assert_eq!(
            tables("/*!40000 ALTER TABLE `t` DISABLE KEYS */"),
            [t("shop", "t")]
        );
        let truncate = ddl_tables("shop", "truncate t");
        assert!(truncate.truncate);
        assert_eq!(truncate.tables, [t("shop", "t")]);
    }

    /// Account and privilege statements name no table, whatever words they
    /// hold: their text (a password in clear) must never become an event.
    #[test]
    fn account_statements_touch_no_table() {
        for sql in [
            "CREATE USER 'user'@'localhost' IDENTIFIED BY 'secret'",
            "ALTER USER user IDENTIFIED BY 'secret'",
            "DROP USER user",
            "GRANT SELECT ON shop.user TO user",
            "REVOKE ALL ON shop.user FROM user",
            "SET PASSWORD FOR user = PASSWORD('secret')",
            "CREATE ROLE user",
            "CREATE VIEW user AS SELECT 1",
            "ALTER TABLE other ADD COLUMN user int",
            "CREATE TABLE other (user int)",
            "-- ALTER TABLE user\nSELECT 1",
            "INSERT INTO user VALUES (1)",
        ] {
            let touched = tables(sql);
            assert!(!touched.contains(&t("shop", "user")), "{sql}: {touched:?}");
        }
    }

    #[test]
    fn hostile_text_does_not_panic() {
        for sql in [
            "",
            "`",
            "ALTER TABLE",
            "DROP TABLE a,",
            "RENAME TABLE a TO",
            "/*!",
            "'\\",
        ] {
            let _ = ddl_tables("db", sql);
        }
    }
}
