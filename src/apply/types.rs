//! Cross-engine column types: the DDL type a target column gets for a source
//! column (README "Migrating a database" has the table). Same engine: the
//! source's own type text. The value forms in between are the events' (see
//! `values`).

/// A database engine, as a source or a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    /// The engine of a connection URL.
    pub fn of_url(url: &str) -> Option<Engine> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Engine::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Some(Engine::Mysql)
        } else {
            None
        }
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
