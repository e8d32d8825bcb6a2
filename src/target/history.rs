//! History mode (SCD Type 2): the target table keeps every version of a row
//! instead of only its last state. Each version holds the source columns,
//! then `valid_from` (the source commit time), `valid_to` (`NULL` while
//! current), `is_current`, the `op` that made it and the source `position`.
//!
//! An insert or snapshot row opens a version; an update closes the current
//! version at its commit time and opens the next; a delete closes it (and
//! writes a zero-length tombstone version when configured); a key change
//! closes the old key's version and opens the new key's. A batch becomes one
//! `Step::Versions` per table: the target's current versions it closes,
//! then the versions it adds (those of one key in the batch are chained in
//! memory), so a batch of thousands of changes is two statements a table.
//!
//! Exactly once: the batch is written with the applied position in one
//! transaction (as upserts are), and the version key `(key…, position)`
//! makes a replayed event's version a no-op. Two versions of one
//! millisecond stay apart by their positions.

use std::collections::HashMap;
use std::sync::Arc;

/// The names of the columns history mode adds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryColumns {
    pub valid_from: String,
    pub valid_to: String,
    pub is_current: String,
    pub op: String,
    pub position: String,
}

impl Default for HistoryColumns {
    fn default() -> Self {
        HistoryColumns {
            valid_from: "valid_from".into(),
            valid_to: "valid_to".into(),
            is_current: "is_current".into(),
            op: "op".into(),
            position: "position".into(),
        }
    }
}

impl HistoryColumns {
    /// The five names, in table order.
    pub fn all(&self) -> [&str; 5] {
        [
            &self.valid_from,
            &self.valid_to,
            &self.is_current,
            &self.op,
            &self.position,
        ]
    }
}

/// How one table's history is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryMode {
    pub columns: HistoryColumns,
    /// A delete also writes a version with `op = 'd'`, `valid_from =
    /// valid_to =` the delete's commit time, and the delete's old image (the
    /// whole row where the source logs it, else the key).
    pub tombstones: bool,
}

/// The source tables written in history mode (every other table is upserted).
#[derive(Debug, Clone, Default)]
pub struct Histories {
    /// schema → table → mode.
    tables: HashMap<String, HashMap<String, Arc<HistoryMode>>>,
}

impl Histories {
    pub fn insert(&mut self, schema: &str, table: &str, mode: Arc<HistoryMode>) {
        self.tables
            .entry(schema.to_string())
            .or_default()
            .insert(table.to_string(), mode);
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The mode of `schema.table`, when it is kept in history mode.
    pub fn mode(&self, schema: &str, table: &str) -> Option<&Arc<HistoryMode>> {
        self.tables.get(schema)?.get(table)
    }

    /// Every `(schema, table, mode)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Arc<HistoryMode>)> {
        self.tables.iter().flat_map(|(schema, tables)| {
            tables
                .iter()
                .map(move |(table, mode)| (schema.as_str(), table.as_str(), mode))
        })
    }
}

/// Milliseconds since the epoch as the event form of a UTC timestamp
/// (`2026-12-03T07:33:05.123Z`), which both targets' writers take.
pub(crate) fn utc_text(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return "1970-01-01T00:00:00.000Z".into();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The target's column definition of a history table: the source columns
/// (`name`, target type; only key columns are `NOT NULL`, so a tombstone
/// of key values alone fits), then the history columns.
pub struct HistoryTableSpec<'a> {
    pub columns: &'a [(String, String)],
    pub key: &'a [String],
    pub mode: &'a HistoryMode,
}

/// The statements that create a history table `quoted` (`name` unquoted,
/// for index names) on a target of `engine`: version key `(key…,
/// position)`, an index for the current rows and one for "as of T".
pub(crate) fn create_statements(
    engine: super::types::Engine,
    quoted: &str,
    name: &str,
    spec: &HistoryTableSpec<'_>,
) -> Vec<String> {
    use super::types::Engine;
    let quote = |n: &str| match engine {
        Engine::Postgres => tidemark_connectors::sql::postgres::quote_ident(n),
        Engine::Mysql => tidemark_connectors::sql::mysql::quote_ident(n),
    };
    let c = &spec.mode.columns;
    let mut parts: Vec<String> = spec
        .columns
        .iter()
        .map(|(column, type_text)| {
            let not_null = if spec.key.contains(column) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {type_text}{not_null}", quote(column))
        })
        .collect();
    let (time, flag, op, position) = match engine {
        Engine::Postgres => ("timestamptz(3)", "boolean", "text", "text"),
        Engine::Mysql => ("datetime(3)", "boolean", "varchar(1)", "varchar(255)"),
    };
    parts.extend([
        format!("{} {time} NOT NULL", quote(&c.valid_from)),
        format!("{} {time} NULL", quote(&c.valid_to)),
        format!("{} {flag} NOT NULL", quote(&c.is_current)),
        format!("{} {op} NOT NULL", quote(&c.op)),
        format!("{} {position} NOT NULL", quote(&c.position)),
    ]);
    let key: Vec<String> = spec.key.iter().map(|k| quote(k)).collect();
    let key = key.join(", ");
    parts.push(format!("PRIMARY KEY ({key}, {})", quote(&c.position)));
    let as_of = format!("{}, {}", quote(&c.valid_from), quote(&c.valid_to));
    let index = |suffix: &str| {
        // Postgres names are at most 63 bytes; cut on a character boundary.
        let mut text = format!("{name}_{suffix}");
        while text.len() > 63 {
            text.pop();
        }
        quote(&text)
    };
    match engine {
        Engine::Postgres => vec![
            format!("CREATE TABLE {quoted} ({})", parts.join(", ")),
            // At most one current version per key: a bug that would open a
            // second one fails the batch instead of corrupting the history.
            format!(
                "CREATE UNIQUE INDEX {} ON {quoted} ({key}) WHERE {}",
                index("current"),
                quote(&c.is_current)
            ),
            format!("CREATE INDEX {} ON {quoted} ({as_of})", index("as_of")),
        ],
        Engine::Mysql => {
            parts.push(format!(
                "KEY {} ({}, {key})",
                index("current"),
                quote(&c.is_current)
            ));
            parts.push(format!("KEY {} ({as_of})", index("as_of")));
            vec![format!("CREATE TABLE {quoted} ({})", parts.join(", "))]
        }
    }
}
