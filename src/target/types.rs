//! Cross-engine column types: the DDL type a target column gets for a source
//! column (README "Migrating a database" has the table). Same engine: the
//! source's own type text. The value forms in between are the events' (see
//! `values`).

use tidemark_connectors::sql::Dialect;

/// A database engine, as a source or a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    /// The engine of a connection URL (see `Dialect::of_url`).
    pub(crate) fn of_url(url: &str) -> Option<Engine> {
        Dialect::of_url(url).map(|dialect| match dialect {
            Dialect::Postgres => Engine::Postgres,
            Dialect::Mysql => Engine::Mysql,
        })
    }
}

/// The base name and the parenthesised arguments of a type text
/// (`decimal(10,2) unsigned` → `decimal`, `["10", "2"]`, unsigned).
fn parse(native: &str) -> (String, Vec<String>, bool) {
    let lower = native.to_ascii_lowercase();
    let unsigned = lower.contains("unsigned");
    let (base, args) = match lower.split_once('(') {
        Some((base, rest)) => {
            let inner = rest.split(')').next().unwrap_or_default();
            (
                base.trim().to_string(),
                inner.split(',').map(|a| a.trim().to_string()).collect(),
            )
        }
        None => (
            lower
                .trim_end_matches(" unsigned")
                .trim_end_matches(" zerofill")
                .trim()
                .to_string(),
            Vec::new(),
        ),
    };
    (base, args, unsigned)
}

/// Whether a column's type text from an event (`columns[].type` of a schema
/// event, which `apply` turns into `ALTER TABLE … ADD COLUMN`) is a type and
/// nothing more: a name (schema-qualified, or a quoted identifier), then only
/// the words of multi-word type names (`double precision`, `timestamp(3)
/// with time zone`, `int(10) unsigned`, `interval day to second`), with
/// number arguments or quoted ENUM/SET labels, and array brackets. Events
/// come from the sink or the stream, which anyone who can write to them
/// controls: a type that is not one never reaches SQL.
pub(crate) fn is_type_text(text: &str) -> bool {
    const WORDS: [&str; 16] = [
        "precision",
        "varying",
        "with",
        "without",
        "time",
        "zone",
        "unsigned",
        "signed",
        "zerofill",
        "to",
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
    ];
    let mut chars = text.trim().chars().peekable();
    let mut first = true;
    if text.len() > 65_535 {
        return false;
    }
    loop {
        let Some(word) = identifier(&mut chars) else {
            return false;
        };
        if first {
            while chars.peek() == Some(&'.') {
                chars.next();
                if identifier(&mut chars).is_none() {
                    return false;
                }
            }
        } else if !WORDS.iter().any(|w| w.eq_ignore_ascii_case(&word)) {
            return false;
        }
        first = false;
        if chars.peek() == Some(&'(') && !arguments(&mut chars) {
            return false;
        }
        while chars.peek() == Some(&'[') {
            chars.next();
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            if chars.next() != Some(']') {
                return false;
            }
        }
        match chars.next() {
            None => return true,
            Some(' ') => continue,
            Some(_) => return false,
        }
    }
}

/// `name` or `"quoted name"` (doubled quotes inside); its text.
fn identifier(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let mut word = String::new();
    if chars.peek() == Some(&'"') {
        chars.next();
        loop {
            match chars.next()? {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    word.push('"');
                }
                '"' => return (!word.is_empty()).then_some(word),
                c if c.is_control() => return None,
                c => word.push(c),
            }
        }
    }
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '$' {
            word.push(c);
            chars.next();
        } else {
            break;
        }
    }
    (!word.is_empty() && !word.starts_with(|c: char| c.is_ascii_digit())).then_some(word)
}

/// `(10)`, `(10,2)` or `('a','it''s')`: numbers, or labels quoted with no
/// backslash (which a MySQL session may read as an escape) and no control
/// character.
fn arguments(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    chars.next();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.peek() {
            Some('\'') => {
                chars.next();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                        }
                        Some('\'') => break,
                        Some(c) if c == '\\' || c.is_control() => return false,
                        Some(_) => {}
                        None => return false,
                    }
                }
            }
            Some(c) if c.is_ascii_digit() => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
            _ => return false,
        }
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.next() {
            Some(',') => continue,
            Some(')') => return true,
            _ => return false,
        }
    }
}

/// The target type for a source column's type text. `key` columns get types a
/// MySQL primary key can hold (bounded lengths).
pub fn target_type(from: Engine, to: Engine, native: &str, key: bool) -> String {
    match (from, to) {
        (Engine::Postgres, Engine::Postgres) | (Engine::Mysql, Engine::Mysql) => native.to_string(),
        (Engine::Mysql, Engine::Postgres) => mysql_to_pg(native),
        (Engine::Postgres, Engine::Mysql) => pg_to_mysql(native, key),
    }
}

fn mysql_to_pg(native: &str) -> String {
    let (base, args, unsigned) = parse(native);
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match base.as_str() {
        "tinyint" | "smallint" if !unsigned => "smallint".into(),
        "tinyint" | "year" => "smallint".into(),
        "smallint" | "mediumint" => "integer".into(),
        "int" | "integer" if !unsigned => "integer".into(),
        "int" | "integer" => "bigint".into(),
        "bigint" if !unsigned => "bigint".into(),
        "bigint" => "numeric(20,0)".into(),
        "decimal" | "numeric" => format!("numeric({},{})", arg(0), args.get(1).map_or("0", |s| s)),
        "float" => "real".into(),
        "double" | "real" => "double precision".into(),
        "bit" if arg(0) == "1" || args.is_empty() => "boolean".into(),
        "bit" => "bytea".into(),
        "char" => format!("character({})", arg(0)),
        "varchar" => format!("character varying({})", arg(0)),
        "tinytext" | "text" | "mediumtext" | "longtext" | "enum" => "text".into(),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => "bytea".into(),
        "set" => "text[]".into(),
        "inet6" | "inet4" => "inet".into(),
        "uuid" => "uuid".into(),
        // The server's bytes: a 4-byte little-endian SRID, then WKB.
        t if tidemark_connectors::mysql::values::is_spatial(t) => "bytea".into(),
        "json" => "json".into(),
        "date" => "date".into(),
        "time" => format!("time({})", args.first().map_or("0", |s| s)),
        "datetime" => format!("timestamp({})", args.first().map_or("0", |s| s)),
        "timestamp" => format!(
            "timestamp({}) with time zone",
            args.first().map_or("0", |s| s)
        ),
        _ => "text".into(),
    }
}

fn pg_to_mysql(native: &str, key: bool) -> String {
    if native.ends_with("[]") {
        return "json".into();
    }
    let (base, args, _) = parse(native);
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let precision = || args.first().map_or("6".to_string(), |p| p.clone());
    // `time with time zone` keeps its offset, which MySQL's TIME cannot: its
    // text form goes in a text column.
    let lower = native.to_ascii_lowercase();
    if lower.starts_with("time")
        && !lower.starts_with("timestamp")
        && lower.ends_with("with time zone")
    {
        return if key { "varchar(255)" } else { "longtext" }.into();
    }
    match base.as_str() {
        "smallint" => "smallint".into(),
        "integer" => "int".into(),
        "bigint" => "bigint".into(),
        "numeric" if !args.is_empty() => {
            format!("decimal({},{})", arg(0), args.get(1).map_or("0", |s| s))
        }
        "numeric" => "decimal(65,30)".into(),
        "real" => "float".into(),
        "double precision" => "double".into(),
        "boolean" => "tinyint(1)".into(),
        "character varying" if !args.is_empty() => format!("varchar({})", arg(0)),
        "character" => format!("char({})", args.first().map_or("1", |s| s)),
        "bytea" if key => "varbinary(255)".into(),
        "bytea" => "longblob".into(),
        "date" => "date".into(),
        b if b.starts_with("timestamp") => format!("datetime({})", precision()),
        b if b.starts_with("time") => format!("time({})", precision()),
        "json" | "jsonb" => "json".into(),
        "uuid" => "char(36)".into(),
        _ if key => "varchar(255)".into(),
        _ => "longtext".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_types_map_to_postgres() {
        let pg = |t| target_type(Engine::Mysql, Engine::Postgres, t, false);
        assert_eq!(pg("int(11)"), "integer");
        assert_eq!(pg("int(10) unsigned"), "bigint");
        assert_eq!(pg("bigint(20) unsigned"), "numeric(20,0)");
        assert_eq!(pg("decimal(65,30)"), "numeric(65,30)");
        assert_eq!(pg("bit(1)"), "boolean");
        assert_eq!(pg("set('a','b')"), "text[]");
        assert_eq!(pg("datetime(6)"), "timestamp(6)");
        assert_eq!(pg("timestamp"), "timestamp(0) with time zone");
        assert_eq!(pg("varchar(20)"), "character varying(20)");
        assert_eq!(pg("inet6"), "inet");
        assert_eq!(pg("uuid"), "uuid");
        assert_eq!(pg("point"), "bytea");
    }

    /// Type texts from events are types and nothing more.
    #[test]
    fn only_type_texts_pass() {
        for good in [
            "integer",
            "double precision",
            "character varying(255)",
            "numeric(10,2)",
            "timestamp(3) with time zone",
            "time without time zone",
            "int(10) unsigned zerofill",
            "decimal(65, 30)",
            "enum('a','it''s','x,y')",
            "set('')",
            "integer[]",
            "text[][]",
            "public.mood",
            "\"My Type\"[]",
            "interval day to second",
            "geometry",
        ] {
            assert!(is_type_text(good), "{good}");
        }
        for bad in [
            "",
            "int; DROP TABLE victim",
            "int, DROP COLUMN id",
            "int REFERENCES victim ON DELETE CASCADE",
            "int DEFAULT 1",
            "text COLLATE \"C\"",
            "int GENERATED ALWAYS AS (1) STORED",
            "enum('a\\'); DROP TABLE victim; --')",
            "enum('a')); DROP TABLE victim; --",
            "varchar(10) -- comment",
            "int /* x */",
            "\"unterminated",
            "numeric(1e9)",
            "int\n; DROP TABLE victim",
        ] {
            assert!(!is_type_text(bad), "{bad}");
        }
    }

    #[test]
    fn time_with_time_zone_keeps_its_offset_as_text() {
        let to_my = |t| target_type(Engine::Postgres, Engine::Mysql, t, false);
        assert_eq!(to_my("time with time zone"), "longtext");
        assert_eq!(to_my("time(3) with time zone"), "longtext");
        assert_eq!(to_my("time(3) without time zone"), "time(3)");
        assert_eq!(to_my("timestamp(3) with time zone"), "datetime(3)");
    }

    #[test]
    fn postgres_types_map_to_mysql() {
        let my = |t, key| target_type(Engine::Postgres, Engine::Mysql, t, key);
        assert_eq!(my("numeric", false), "decimal(65,30)");
        assert_eq!(my("timestamp(3) with time zone", false), "datetime(3)");
        assert_eq!(my("text", true), "varchar(255)");
        assert_eq!(my("integer[]", false), "json");
    }
}
