//! Naming the value a target refused.
//!
//! A batch is written as multi-row statements, so the target's error (MariaDB's
//! `Cannot get geometry object …`, Postgres' `invalid input syntax …`) does not
//! say which row or column it was about. After the batch is rolled back, the
//! failed step's rows are tried one at a time, then the failing row's columns
//! one at a time (each with the key), each try in a transaction that is rolled
//! back; what fails first is named with its key and event position.

use super::plan::{Step, TableKey};
use super::{TargetError, TargetTable};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, as trait methods return them here.
pub(crate) type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A target that can write a step in a transaction it then rolls back.
pub(crate) trait Attempt {
    fn attempt<'a>(
        &'a mut self,
        step: &'a Step,
        table: &'a TargetTable,
    ) -> Boxed<'a, Result<(), TargetError>>;

    /// The target table a source table's rows go to.
    fn target_table<'a>(
        &'a mut self,
        source: &'a TableKey,
    ) -> Boxed<'a, Result<Arc<TargetTable>, TargetError>>;
}

/// What a failed batch reports: when a row write failed (`failed` is its
/// step, the batch rolled back), the refusal naming its row and column;
/// otherwise the error as it is.
pub(crate) async fn explain(
    target: &mut (impl Attempt + Send),
    error: TargetError,
    failed: Option<&Step>,
) -> TargetError {
    let (TargetError::Table { .. }, Some(step)) = (&error, failed) else {
        return error;
    };
    let (Step::Upsert { table, .. } | Step::Move { table, .. }) = step else {
        return error;
    };
    let Ok(table) = target.target_table(table).await else {
        return error;
    };
    locate(target, &table, step).await.unwrap_or(error)
}

/// The refusal of `step` (an upsert or move into `table` that failed): its
/// first row the target refuses alone, with the first of its columns refused
/// alone; `None` when every row goes in by itself.
async fn locate(
    target: &mut (impl Attempt + Send),
    table: &TargetTable,
    step: &Step,
) -> Option<TargetError> {
    for row in single_rows(step) {
        let row_error = match target.attempt(&row, table).await {
            Ok(()) => continue,
            Err(e @ TargetError::Table { .. }) => e,
            // Not the row: the connection or a transaction failed; the
            // original error says more.
            Err(_) => return None,
        };
        let mut column = None;
        for (name, single) in single_columns(&row, &table.key) {
            if target.attempt(&single, table).await.is_err() {
                column = Some(name);
                break;
            }
        }
        return Some(refused(
            &table.quoted,
            &table.key,
            &row,
            column.as_deref(),
            row_error,
        ));
    }
    None
}

/// The rows of a failed step, each as a step of its own, to try one at a time
/// (empty for steps that are not row writes).
fn single_rows(step: &Step) -> Vec<Step> {
    let one = |table: &super::plan::TableKey,
               columns: &[Arc<str>],
               row: &Vec<Value>,
               position: &Arc<str>| {
        Step::Upsert {
            table: table.clone(),
            columns: columns.to_vec(),
            rows: vec![row.clone()],
            positions: vec![position.clone()],
        }
    };
    match step {
        Step::Upsert {
            table,
            columns,
            rows,
            positions,
        } => rows
            .iter()
            .zip(positions)
            .map(|(row, position)| one(table, columns, row, position))
            .collect(),
        Step::Move {
            table,
            columns,
            row,
            position,
            ..
        } => vec![one(table, columns, row, position)],
        _ => Vec::new(),
    }
}

/// The key and each other column of a one-row step from [`single_rows`], as
/// steps to try one at a time: the first refused names the column.
fn single_columns(row: &Step, key_columns: &[String]) -> Vec<(Arc<str>, Step)> {
    let Step::Upsert {
        table,
        columns,
        rows,
        positions,
    } = row
    else {
        return Vec::new();
    };
    let Some(values) = rows.first() else {
        return Vec::new();
    };
    let is_key = |name: &str| key_columns.iter().any(|k| k == name);
    let key: Vec<(Arc<str>, Value)> = key_pairs(columns, values, key_columns);
    columns
        .iter()
        .zip(values)
        .filter(|(name, _)| !is_key(name))
        .map(|(name, value)| {
            let (mut names, mut row): (Vec<Arc<str>>, Vec<Value>) = key.iter().cloned().unzip();
            names.push(name.clone());
            row.push(value.clone());
            (
                name.clone(),
                Step::Upsert {
                    table: table.clone(),
                    columns: names,
                    rows: vec![row],
                    positions: positions.clone(),
                },
            )
        })
        .collect()
}

fn key_pairs(
    columns: &[Arc<str>],
    values: &[Value],
    key_columns: &[String],
) -> Vec<(Arc<str>, Value)> {
    columns
        .iter()
        .zip(values)
        .filter(|(name, _)| key_columns.iter().any(|k| k == &***name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The error for a refused one-row step: table, column (when one alone was
/// refused), key and position, with the target's message.
fn refused(
    table: &str,
    key_columns: &[String],
    row: &Step,
    column: Option<&str>,
    error: TargetError,
) -> TargetError {
    let (key, position) = match row {
        Step::Upsert {
            columns,
            rows,
            positions,
            ..
        } => (
            rows.first()
                .map(|values| key_pairs(columns, values, key_columns))
                .unwrap_or_default(),
            positions
                .first()
                .filter(|p| !p.is_empty())
                .map_or_else(|| "none: a row of the copy".into(), |p| p.to_string()),
        ),
        _ => (Vec::new(), String::new()),
    };
    let mut key_text = Vec::new();
    tidemark_connectors::Row(key).write_json(&mut key_text);
    TargetError::Refused {
        table: table.to_string(),
        column: column.unwrap_or("(the row as a whole)").to_string(),
        key: String::from_utf8_lossy(&key_text).into_owned(),
        position,
        message: match error {
            TargetError::Table { message, .. } => message,
            other => other.to_string(),
        },
    }
}
