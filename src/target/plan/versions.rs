//! History mode's plan: a batch's changes to one table as the target's
//! current versions it closes and the versions it adds, those of one key
//! chained in memory (see `target::history` for what a version is).

use super::{key_text, ColumnsAndRows, PlanError, Step, TableKey, Versions};
use crate::target::history::{utc_text, HistoryMode};
use serde_json::Value;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use tidemark_connectors::{ChangeEvent, Op, Row};

/// A version being built: the row's values and its history fields.
struct Version {
    row: Row,
    valid_from: i64,
    valid_to: Option<i64>,
    op: &'static str,
    position: Arc<str>,
}

/// One table's state while a batch is planned.
struct TableVersions {
    table: TableKey,
    mode: Arc<HistoryMode>,
    key_columns: Vec<Arc<str>>,
    closes: Vec<Vec<Value>>,
    versions: Vec<Version>,
    /// Key text → the index of the key's open version, or `None` once the
    /// key was closed in this batch (its target version is dealt with).
    keys: HashMap<String, Option<usize>>,
}

/// Turns the events of history-mode tables (each with its position and
/// mode) into steps: per table, the closes and the versions; truncates and
/// schema changes are barriers for their table.
pub(crate) fn plan<'a>(
    events: impl IntoIterator<Item = (&'a ChangeEvent, &'a str, &'a Arc<HistoryMode>)>,
) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    let mut pending: Vec<TableVersions> = Vec::new();
    for (event, position, mode) in events {
        let table = TableKey {
            connector: event.source.connector,
            schema: event.source.schema.clone(),
            table: event.source.table.clone(),
        };
        let at = event.source.ts_ms;
        if matches!(event.op, Op::Truncate | Op::Schema) {
            if let Some(i) = pending.iter().position(|p| p.table == table) {
                steps.push(pending.swap_remove(i).into_step());
            }
            steps.push(if event.op == Op::Truncate {
                Step::CloseAll {
                    table,
                    mode: mode.clone(),
                    at: Value::String(utc_text(at)),
                }
            } else {
                Step::Schema {
                    table,
                    event: Box::new(event.clone()),
                }
            });
            continue;
        }
        let Some(key) = event.key.as_ref().filter(|k| !k.0.is_empty()) else {
            return Err(PlanError::NoKey {
                table: table.to_string(),
                position: position.to_string(),
            });
        };
        let versions = match pending.iter().position(|p| p.table == table) {
            Some(i) => &mut pending[i],
            None => {
                pending.push(TableVersions {
                    key_columns: key.0.iter().map(|(name, _)| name.clone()).collect(),
                    table,
                    mode: mode.clone(),
                    closes: Vec::new(),
                    versions: Vec::new(),
                    keys: HashMap::new(),
                });
                let last = pending.len() - 1;
                &mut pending[last]
            }
        };
        versions.add(event, key, position, at)?;
    }
    steps.extend(pending.into_iter().map(TableVersions::into_step));
    Ok(steps)
}

impl TableVersions {
    /// Takes one row change of the table.
    fn add(
        &mut self,
        event: &ChangeEvent,
        key: &Row,
        position: &str,
        at: i64,
    ) -> Result<(), PlanError> {
        let position: Arc<str> = position.into();
        let before = event.before.as_ref().map(|b| b.to_row().into_owned());
        if event.op == Op::Delete {
            self.close(key, key_text(key), at, &position, true);
            if self.mode.tombstones {
                // The delete's old image: the whole row where the source
                // logs it (REPLICA IDENTITY FULL, binlog_row_image FULL),
                // else the key; never a value from another event, so the
                // history does not depend on how events were batched.
                self.versions.push(Version {
                    row: before.unwrap_or_else(|| key.clone()),
                    valid_from: at,
                    valid_to: Some(at),
                    op: "d",
                    position,
                });
            }
            return Ok(());
        }
        let Some(mut row) = event.after.as_ref().map(|a| a.to_row().into_owned()) else {
            return Ok(());
        };
        // A key change closes the old key's version; its values carry over.
        let mut previous = None;
        let mut key_changed = false;
        if let Some(before) = &before {
            let old = Row(key
                .0
                .iter()
                .filter_map(|(name, _)| before.get(name).map(|v| (name.clone(), v.clone())))
                .collect());
            if old.0.len() == key.0.len() && old != *key {
                previous = self.close(&old, key_text(&old), at, &position, true);
                key_changed = true;
            }
        }
        // A key the source did not have just before (an insert, the new key
        // of a key change) has no current version on the target: its last
        // one ended at its delete. Only updates and snapshot rows (a snapshot
        // taken again) end one there.
        let on_target = !(event.op == Op::Create || key_changed);
        let text = key_text(key);
        previous = self
            .close(key, text.clone(), at, &position, on_target)
            .or(previous);
        for name in &event.unchanged {
            if row.get(name).is_some() {
                continue;
            }
            match previous.and_then(|i| self.versions[i].row.get(name)) {
                Some(value) => row.0.push((name.clone(), value.clone())),
                None => {
                    return Err(PlanError::Incomplete {
                        table: self.table.to_string(),
                        position: position.to_string(),
                        column: name.to_string(),
                    })
                }
            }
        }
        self.keys.insert(text, Some(self.versions.len()));
        self.versions.push(Version {
            row,
            valid_from: at,
            valid_to: None,
            op: event.op.code(),
            position,
        });
        Ok(())
    }

    /// Ends the current version of `key` (rendered as `text`) at `at`: the
    /// one opened earlier in the batch (returned), else, the first time the
    /// batch meets the key and when it may have one (`on_target`), the
    /// target's.
    fn close(
        &mut self,
        key: &Row,
        text: String,
        at: i64,
        position: &Arc<str>,
        on_target: bool,
    ) -> Option<usize> {
        match self.keys.entry(text) {
            Entry::Occupied(mut slot) => {
                let open = slot.get_mut().take()?;
                self.versions[open].valid_to = Some(at);
                Some(open)
            }
            Entry::Vacant(slot) => {
                slot.insert(None);
                if on_target {
                    let mut row: Vec<Value> = self
                        .key_columns
                        .iter()
                        .map(|name| key.get(name).cloned().unwrap_or(Value::Null))
                        .collect();
                    row.push(Value::String(utc_text(at)));
                    row.push(Value::String(position.to_string()));
                    self.closes.push(row);
                }
                None
            }
        }
    }

    fn into_step(self) -> Step {
        let history: Vec<Arc<str>> = self.mode.columns.all().map(Arc::from).to_vec();
        let mut inserts: Vec<ColumnsAndRows> = Vec::new();
        for version in self.versions {
            let (mut names, mut values): (Vec<Arc<str>>, Vec<Value>) =
                version.row.0.into_iter().unzip();
            names.extend(history.iter().cloned());
            values.extend([
                Value::String(utc_text(version.valid_from)),
                version
                    .valid_to
                    .map_or(Value::Null, |t| Value::String(utc_text(t))),
                Value::Bool(version.valid_to.is_none()),
                Value::String(version.op.into()),
                Value::String(version.position.to_string()),
            ]);
            match inserts.iter_mut().find(|(n, _)| *n == names) {
                Some((_, rows)) => rows.push(values),
                None => inserts.push((names, vec![values])),
            }
        }
        Step::Versions(Box::new(Versions {
            table: self.table,
            mode: self.mode,
            key_columns: self.key_columns,
            closes: self.closes,
            inserts,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidemark_connectors::event::ParsedEvent;

    /// A change to `public.t` at commit time `at` (ms), position `pg:{n}`.
    fn change(
        op: &str,
        n: u32,
        at: i64,
        (before, after): (Value, Value),
        unchanged: &[&str],
    ) -> ParsedEvent {
        let key = if op == "d" { &before } else { &after };
        let line = json!({
            "op": op, "before": before, "after": after, "unchanged": unchanged,
            "key": {"id": key["id"]},
            "source": {"connector": "postgres", "name": "p", "schema": "public", "table": "t", "ts_ms": at},
            "position": format!("pg:{n}"),
        });
        match ChangeEvent::from_json(line.to_string().as_bytes()) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{e}"),
        }
    }

    fn run(events: &[ParsedEvent], tombstones: bool) -> Result<Vec<Step>, PlanError> {
        let mode = Arc::new(HistoryMode {
            tombstones,
            ..HistoryMode::default()
        });
        plan(
            events
                .iter()
                .map(|e| (&e.event, e.position.as_str(), &mode)),
        )
    }

    /// Each version as `id name op valid_from valid_to is_current`, and the closes as `id at`.
    fn summary(step: &Step) -> (Vec<String>, Vec<String>) {
        let Step::Versions(v) = step else {
            panic!("{step:?}")
        };
        let mut versions = Vec::new();
        for (columns, rows) in &v.inserts {
            for row in rows {
                let get = |name: &str| {
                    columns
                        .iter()
                        .position(|c| &**c == name)
                        .map_or("absent".to_string(), |i| match &row[i] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                };
                versions.push(format!(
                    "{} {} {} {} {} {}",
                    get("id"),
                    get("name"),
                    get("op"),
                    get("valid_from"),
                    get("valid_to"),
                    get("is_current")
                ));
            }
        }
        let closes = v
            .closes
            .iter()
            .map(|row| format!("{} {}", row[0], row[row.len() - 2].as_str().unwrap_or("?")))
            .collect();
        (versions, closes)
    }

    const T1: &str = "1970-01-01T00:00:01.000Z";
    const T2: &str = "1970-01-01T00:00:02.000Z";
    const T3: &str = "1970-01-01T00:00:03.000Z";

    #[test]
    fn versions_of_one_key_chain_and_only_the_first_closes_the_targets() {
        let update = |n: u32, at: i64, name: &str| {
            change(
                "u",
                n,
                at,
                (Value::Null, json!({"id": 1, "name": name})),
                &[],
            )
        };
        let events = [
            update(1, 1000, "a"),
            update(2, 2000, "b"),
            update(3, 3000, "c"),
            change(
                "c",
                4,
                3000,
                (Value::Null, json!({"id": 7, "name": "new"})),
                &[],
            ),
        ];
        let steps = run(&events, false).unwrap_or_else(|e| panic!("{e}"));
        let (versions, closes) = summary(&steps[0]);
        assert_eq!(
            versions,
            [
                format!("1 a u {T1} {T2} false"),
                format!("1 b u {T2} {T3} false"),
                format!("1 c u {T3} null true"),
                format!("7 new c {T3} null true"),
            ]
        );
        // An update may end a version the target holds; an insert cannot.
        assert_eq!(closes, [format!("1 {T1}")]);
    }

    #[test]
    fn a_key_change_closes_the_old_key_and_carries_its_values() {
        let events = [
            change(
                "c",
                1,
                1000,
                (Value::Null, json!({"id": 1, "name": "a", "big": "x"})),
                &[],
            ),
            change(
                "u",
                2,
                2000,
                (json!({"id": 1}), json!({"id": 2, "name": "b"})),
                &["big"],
            ),
            change("d", 3, 3000, (json!({"id": 2}), Value::Null), &[]),
        ];
        let steps = run(&events, true).unwrap_or_else(|e| panic!("{e}"));
        let (versions, closes) = summary(&steps[0]);
        assert_eq!(
            versions,
            [
                format!("1 a c {T1} {T2} false"),
                format!("2 b u {T2} {T3} false"),
                format!("2 absent d {T3} {T3} false"),
            ]
        );
        // Key 1 was inserted in the batch, key 2 is new: neither is on the target.
        assert!(closes.is_empty(), "{closes:?}");
        let Step::Versions(v) = &steps[0] else {
            panic!()
        };
        assert!(v
            .inserts
            .iter()
            .any(|(columns, rows)| columns.iter().any(|c| &**c == "big")
                && rows
                    .iter()
                    .any(|r| r.contains(&json!("x")) && r.contains(&json!(2)))));
    }

    #[test]
    fn a_column_left_out_with_no_earlier_version_is_an_error_naming_it() {
        let events = [change(
            "u",
            1,
            1000,
            (Value::Null, json!({"id": 1, "name": "a"})),
            &["big"],
        )];
        match run(&events, false) {
            Err(PlanError::Incomplete {
                column, position, ..
            }) => {
                assert_eq!((column.as_str(), position.as_str()), ("big", "pg:1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_truncate_writes_what_came_before_then_closes_every_version() {
        let mut truncate = change("c", 2, 2000, (Value::Null, Value::Null), &[]);
        truncate.event.op = Op::Truncate;
        let events = [
            change(
                "c",
                1,
                1000,
                (Value::Null, json!({"id": 1, "name": "a"})),
                &[],
            ),
            truncate,
            change(
                "c",
                3,
                3000,
                (Value::Null, json!({"id": 1, "name": "b"})),
                &[],
            ),
        ];
        let steps = run(&events, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert_eq!(summary(&steps[0]).0, [format!("1 a c {T1} null true")]);
        assert!(matches!(&steps[1], Step::CloseAll { at, .. } if at == T2));
        assert_eq!(summary(&steps[2]).0, [format!("1 b c {T3} null true")]);
    }

    #[test]
    fn commit_times_are_written_as_utc_with_milliseconds() {
        assert_eq!(utc_text(1_763_737_200_123), "2025-11-21T15:00:00.123Z");
        assert_eq!(utc_text(-1), "1969-12-31T23:59:59.999Z");
    }
}
