//! Turns a run of change events into the few statements that have the same
//! effect: per table and key only the last state counts (an upsert of the row,
//! or a delete), so a batch of 1,000 updates to 10 rows writes 10 rows.
//!
//! Columns an event lists in `unchanged` are absent from its row; when an
//! earlier event of the batch carried them, their value is kept from it, and
//! otherwise the upsert leaves them out, so the target keeps its own value.
//! Truncates and schema changes are barriers: what came before is written first.

pub(crate) mod versions;

use super::history::HistoryMode;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tidemark_connectors::{ChangeEvent, Op, Row};

/// A table as events name it: `schema.table`, and the connector that read it
/// (which decides the target's default names and the source's type names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableKey {
    pub connector: &'static str,
    pub schema: Arc<str>,
    pub table: Arc<str>,
}

impl std::fmt::Display for TableKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// One write to a target table.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Insert or update these rows (all with the same columns, key columns
    /// included); `positions[i]` is the position of the event that gave row `i`
    /// its state, for errors.
    Upsert {
        table: TableKey,
        columns: Vec<Arc<str>>,
        rows: Vec<Vec<Value>>,
        positions: Vec<Arc<str>>,
    },
    /// Delete the rows with these keys (columns in `columns` order).
    Delete {
        table: TableKey,
        columns: Vec<Arc<str>>,
        keys: Vec<Vec<Value>>,
    },
    Truncate {
        table: TableKey,
    },
    /// An update that changed the key and left columns out (`carry`): the new
    /// row takes those columns from the old row, which is then deleted.
    Move {
        table: TableKey,
        key_columns: Vec<Arc<str>>,
        old_key: Vec<Value>,
        columns: Vec<Arc<str>>,
        row: Vec<Value>,
        carry: Vec<Arc<str>>,
        position: Arc<str>,
    },
    /// A schema change: the event, for the target to act on.
    Schema {
        table: TableKey,
        event: Box<ChangeEvent>,
    },
    /// History mode: current versions closed, then versions added.
    Versions(Box<Versions>),
    /// History mode's truncate: every current version ends at `at`.
    CloseAll {
        table: TableKey,
        mode: Arc<HistoryMode>,
        at: Value,
    },
}

impl Step {
    /// The source table the step writes for.
    pub(crate) fn table(&self) -> &TableKey {
        match self {
            Step::Upsert { table, .. }
            | Step::Delete { table, .. }
            | Step::Truncate { table }
            | Step::Move { table, .. }
            | Step::Schema { table, .. }
            | Step::CloseAll { table, .. } => table,
            Step::Versions(v) => &v.table,
        }
    }
}

/// Rows that share a column list, with that list.
pub(crate) type ColumnsAndRows = (Vec<Arc<str>>, Vec<Vec<Value>>);

/// One table's writes of a batch in history mode.
#[derive(Debug, PartialEq)]
pub struct Versions {
    pub table: TableKey,
    pub mode: Arc<HistoryMode>,
    /// The source key's columns, in the order of each close's values.
    pub key_columns: Vec<Arc<str>>,
    /// The target's current versions that end, one row each as the writers
    /// send it: the key values (in `key_columns` order), the end time (event
    /// form), and the position of the change that ends them.
    pub closes: Vec<Vec<Value>>,
    /// The versions added, grouped by column list (source columns, then the
    /// history columns in [`HistoryColumns::all`] order).
    pub inserts: Vec<ColumnsAndRows>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{table} at {position}: the event has no key (the table needs a primary key or replica identity to be applied idempotently)")]
    NoKey { table: String, position: String },
    #[error("{table} at {position}: history mode needs every column, and the event left out {column:?} with no earlier version of the row in the batch to take it from (Postgres: ALTER TABLE … REPLICA IDENTITY FULL; MySQL/MariaDB: binlog_row_image = FULL)")]
    Incomplete {
        table: String,
        position: String,
        column: String,
    },
}

/// Per table, in first-seen order: key text → (first-seen order, state).
type Pending = Vec<(TableKey, HashMap<String, (usize, State)>)>;

/// Rows grouped by their column list, with their positions.
type Groups = Vec<(Vec<Arc<str>>, Vec<Vec<Value>>, Vec<Arc<str>>)>;

/// The last known state of one row in the batch (an upsert with the
/// position of the event that gave it).
enum State {
    Upsert(Row, Arc<str>),
    Delete(Row),
}

/// Collapses events (with their `position` strings) into steps, in an order
/// that gives the same final state.
pub(crate) fn plan<'a>(
    events: impl IntoIterator<Item = (&'a ChangeEvent, &'a str)>,
) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    // Per table: key text -> (first-seen order, state).
    let mut pending: Pending = Vec::new();
    for (event, position) in events {
        let table = TableKey {
            connector: event.source.connector,
            schema: event.source.schema.clone(),
            table: event.source.table.clone(),
        };
        match event.op {
            Op::Truncate | Op::Schema => {
                flush(&mut pending, &mut steps);
                steps.push(if event.op == Op::Truncate {
                    Step::Truncate { table }
                } else {
                    Step::Schema {
                        table,
                        event: Box::new(event.clone()),
                    }
                });
                continue;
            }
            Op::Create | Op::Update | Op::Delete | Op::Read => {}
        }
        let Some(key) = event.key.as_ref().filter(|k| !k.0.is_empty()) else {
            return Err(PlanError::NoKey {
                table: table.to_string(),
                position: position.to_string(),
            });
        };
        add_row_event(&mut pending, &mut steps, table, event, key, position);
    }
    flush(&mut pending, &mut steps);
    Ok(steps)
}

/// Takes a row event (with its `key`) into the pending row states: a delete
/// or upsert of its key, and for an update that changed the key, the old
/// key's delete, or, when the old row has values only the target knows, a
/// [`Step::Move`] after the pending states are flushed.
fn add_row_event(
    pending: &mut Pending,
    steps: &mut Vec<Step>,
    table: TableKey,
    event: &ChangeEvent,
    key: &Row,
    position: &str,
) {
    let rows = table_rows(pending, &table);
    let next = rows.len();
    if event.op == Op::Delete {
        let key_text = key_text(key);
        rows.insert(key_text, (next, State::Delete(key.clone())));
        return;
    }
    let Some(mut row) = event.after.as_ref().map(|a| a.to_row().into_owned()) else {
        return;
    };
    // An update that changed the key: the old key's row goes away.
    if let Some(before) = &event.before {
        let old = project(&before.to_row(), key);
        if old.0.len() == key.0.len() && old != *key {
            let old_text = key_text(&old);
            let earlier = match rows.get(&old_text) {
                Some((_, State::Upsert(earlier, _))) => Some(earlier.clone()),
                _ => None,
            };
            let carry = carried(event, earlier.as_ref(), &mut row);
            if !carry.is_empty() {
                // The old row's values are only on the target: move it there.
                flush(pending, steps);
                steps.push(move_step(table, old, row, carry, position));
                return;
            }
            rows.insert(old_text, (next, State::Delete(old)));
        }
    }
    keep_upsert(rows, key, event, row, next, position);
}

/// The pending row states of `table`, added (empty) when it has none yet.
fn table_rows<'p>(
    pending: &'p mut Pending,
    table: &TableKey,
) -> &'p mut HashMap<String, (usize, State)> {
    match pending.iter().position(|(t, _)| t == table) {
        Some(i) => &mut pending[i].1,
        None => {
            pending.push((table.clone(), HashMap::new()));
            let last = pending.len() - 1;
            &mut pending[last].1
        }
    }
}

/// For an update that changed the key: the columns it left out whose values
/// only the old row on the target has. Those an earlier event of the batch
/// gave the old row (`earlier`) are added to `row` instead.
fn carried(event: &ChangeEvent, earlier: Option<&Row>, row: &mut Row) -> Vec<Arc<str>> {
    let carry: Vec<Arc<str>> = event
        .unchanged
        .iter()
        .filter(|name| earlier.and_then(|e| e.get(name)).is_none())
        .cloned()
        .collect();
    if let Some(earlier) = earlier {
        for name in &event.unchanged {
            if let Some(value) = earlier.get(name) {
                row.0.push((name.clone(), value.clone()));
            }
        }
    }
    carry
}

/// The move of the row with key `old` to `row`, taking the `carry` columns
/// from the old row.
fn move_step(table: TableKey, old: Row, row: Row, carry: Vec<Arc<str>>, position: &str) -> Step {
    let (key_columns, old_key) = old.0.into_iter().unzip();
    let (columns, values) = row.0.into_iter().unzip();
    Step::Move {
        table,
        key_columns,
        old_key,
        columns,
        row: values,
        carry,
        position: position.into(),
    }
}

/// Makes `row` the last state of `key` (keeping the key's first-seen order,
/// else `next`), with the columns the event left out taken from an earlier
/// upsert of the key in the batch.
fn keep_upsert(
    rows: &mut HashMap<String, (usize, State)>,
    key: &Row,
    event: &ChangeEvent,
    mut row: Row,
    next: usize,
    position: &str,
) {
    let key_text = key_text(key);
    if !event.unchanged.is_empty() {
        if let Some((_, State::Upsert(earlier, _))) = rows.get(&key_text) {
            for name in &event.unchanged {
                if row.get(name).is_some() {
                    continue;
                }
                if let Some(value) = earlier.get(name) {
                    row.0.push((name.clone(), value.clone()));
                }
            }
        }
    }
    let order = rows.get(&key_text).map_or(next, |(o, _)| *o);
    rows.insert(key_text, (order, State::Upsert(row, position.into())));
}

/// The values of `row` for the columns of `key`, as a row.
fn project(row: &Row, key: &Row) -> Row {
    Row(key
        .0
        .iter()
        .filter_map(|(name, _)| row.get(name).map(|v| (name.clone(), v.clone())))
        .collect())
}

fn key_text(key: &Row) -> String {
    let mut out = Vec::new();
    key.write_json(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes the pending row states as steps: deletes, then upserts grouped by
/// their column lists.
fn flush(pending: &mut Pending, steps: &mut Vec<Step>) {
    for (table, rows) in pending.drain(..) {
        let mut states: Vec<(usize, State)> = rows.into_values().collect();
        states.sort_by_key(|(order, _)| *order);
        let mut deletes: Groups = Vec::new();
        let mut upserts: Groups = Vec::new();
        for (_, state) in states {
            let (groups, row, position) = match state {
                State::Delete(key) => (&mut deletes, key, None),
                State::Upsert(row, position) => (&mut upserts, row, Some(position)),
            };
            let (names, values): (Vec<Arc<str>>, Vec<Value>) = row.0.into_iter().unzip();
            let group = match groups.iter().position(|(n, _, _)| *n == names) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push((names, Vec::new(), Vec::new()));
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            group.1.push(values);
            group.2.extend(position);
        }
        for (columns, keys, _) in deletes {
            steps.push(Step::Delete {
                table: table.clone(),
                columns,
                keys,
            });
        }
        for (columns, rows, positions) in upserts {
            steps.push(Step::Upsert {
                table: table.clone(),
                columns,
                rows,
                positions,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidemark_connectors::event::ParsedEvent;

    fn event(op: &str, id: i64, after: Value, unchanged: &[&str]) -> ParsedEvent {
        let line = json!({
            "op": op, "before": null,
            "after": if op == "d" { Value::Null } else { after },
            "unchanged": unchanged,
            "key": {"id": id},
            "source": {"connector": "postgres", "name": "p", "schema": "public", "table": "t"},
            "position": format!("pg:{id}"),
        });
        match ChangeEvent::from_json(line.to_string().as_bytes()) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{e}"),
        }
    }

    /// Rows as JSON objects (column order does not matter to a target).
    fn named(columns: &[Arc<str>], rows: &[Vec<Value>]) -> Value {
        rows.iter()
            .map(|row| {
                columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.to_string(), v.clone()))
                    .collect::<serde_json::Map<_, _>>()
            })
            .collect()
    }

    fn run(events: &[ParsedEvent]) -> Vec<Step> {
        match plan(events.iter().map(|e| (&e.event, e.position.as_str()))) {
            Ok(steps) => steps,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn last_state_per_key_wins_and_unchanged_values_carry_over() {
        let events = [
            event("c", 1, json!({"id": 1, "a": "x", "big": "toast"}), &[]),
            event("u", 1, json!({"id": 1, "a": "y"}), &["big"]),
            event("c", 2, json!({"id": 2, "a": "z", "big": "b"}), &[]),
            event("d", 2, Value::Null, &[]),
            event("u", 3, json!({"id": 3, "a": "w"}), &["big"]),
        ];
        let steps = run(&events);
        assert_eq!(steps.len(), 3, "{steps:?}");
        match &steps[0] {
            Step::Delete { keys, .. } => assert_eq!(keys, &vec![vec![json!(2)]]),
            other => panic!("{other:?}"),
        }
        match &steps[1] {
            Step::Upsert { columns, rows, .. } => {
                assert_eq!(
                    named(columns, rows),
                    json!([{"id": 1, "a": "y", "big": "toast"}])
                );
            }
            other => panic!("{other:?}"),
        }
        match &steps[2] {
            // Row 3's big column was never seen: it is left out, not nulled.
            Step::Upsert { columns, rows, .. } => {
                assert_eq!(named(columns, rows), json!([{"id": 3, "a": "w"}]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncate_is_a_barrier() {
        let events = [
            event("c", 1, json!({"id": 1}), &[]),
            event("t", 0, Value::Null, &[]),
            event("c", 2, json!({"id": 2}), &[]),
        ];
        let steps = run(&events);
        assert!(matches!(steps[1], Step::Truncate { .. }), "{steps:?}");
        assert_eq!(steps.len(), 3);
    }
}
