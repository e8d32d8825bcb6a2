//! Pieces both writers' statements share, each writer passing its own
//! identifier quoting and assignment form: column lists, the assignments of
//! an upsert, a move's columns, the rows a step writes, and the errors naming
//! a missing column or a refused value.

use super::plan::Step;
use super::values::Kind;
use super::{TargetError, TargetTable};
use std::sync::Arc;

/// An identifier quoter: `"name"` (Postgres) or `` `name` `` (MySQL).
pub(crate) type Quote = fn(&str) -> String;

/// `a, b, c`, each name quoted.
pub(crate) fn list(names: &[Arc<str>], quote: Quote) -> String {
    names
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `o.a, o.b`: columns of the old row (`o`) of a move.
pub(crate) fn of_old_row(names: &[Arc<str>], quote: Quote) -> String {
    names
        .iter()
        .map(|n| format!("o.{}", quote(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A move's columns: the event's, then those carried from the old row.
pub(crate) fn with_carried(columns: &[Arc<str>], carry: &[Arc<str>]) -> Vec<Arc<str>> {
    columns.iter().chain(carry).cloned().collect()
}

/// An upsert's assignments, as `set` spells one: every column of `columns`
/// outside the table's key.
pub(crate) fn updates(
    table: &TargetTable,
    columns: &[Arc<str>],
    set: fn(&str) -> String,
) -> Vec<String> {
    columns
        .iter()
        .filter(|c| !table.key.iter().any(|k| k == &***c))
        .map(|c| set(c))
        .collect()
}

/// The rows a step writes, as a batch counts them.
pub(crate) fn rows_written(step: &Step) -> u64 {
    match step {
        Step::Upsert { rows, .. } => rows.len() as u64,
        Step::Delete { keys, .. } => keys.len() as u64,
        Step::Move { .. } => 1,
        Step::Versions(v) => v.inserts.iter().map(|(_, rows)| rows.len() as u64).sum(),
        Step::Truncate { .. } | Step::Schema { .. } | Step::CloseAll { .. } => 0,
    }
}

/// The type text and kind of column `name` of `table`; a column the target
/// lacks is an error saying how to add it.
pub(crate) fn column<'t>(
    table: &'t TargetTable,
    name: &str,
) -> Result<&'t (String, Kind), TargetError> {
    table.columns.get(name).ok_or_else(|| TargetError::Table {
        table: table.quoted.clone(),
        message: format!("has no column {name:?} (the events have it; apply the schema change on the target, or set target.schema_changes = \"apply\")"),
    })
}

/// A value of `column` its kind cannot take (`error` says why).
pub(crate) fn refused_value(
    table: &TargetTable,
    column: &str,
    value: &serde_json::Value,
    error: String,
) -> TargetError {
    TargetError::Table {
        table: table.quoted.clone(),
        message: format!("column {column}: value {value}: {error}"),
    }
}
