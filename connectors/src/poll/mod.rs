//! Query-based capture: poll tables by a cursor column (an `updated_at`
//! timestamp or an increasing id) with a watermark, for sources where log-based
//! capture is not allowed. PostgreSQL for now.
//!
//! Each page is one indexed range query, `WHERE (c, k) > (last c, last k) ORDER
//! BY c, k LIMIT n`, and the watermark `(last c, last k)` is the cursor, so a
//! crash resumes exactly where the last committed page ended.
//!
//! What polling cannot see, and what it does about it:
//! - Inserts and updates look the same: every row is `op: "u"` with `before: null`.
//! - Deletes are invisible unless a soft-delete column marks them
//!   (`deleted_column`: a non-null, non-false value emits `op: "d"`).
//! - A row stamped before the watermark can commit after it (a long transaction).
//!   With a timestamp cursor, every poll reads `lag_window` behind the watermark
//!   again and drops rows already emitted (a set of `(key, cursor value)` kept for
//!   that window). A transaction held open longer than `lag_window` can still be
//!   missed. After a restart the set is empty, so rows inside the window are
//!   emitted again, with the same `position` (at-least-once).
//! - Only the latest state of a row is seen; intermediate updates between two
//!   polls are not.
//! - With `wait_for_open_transactions`, each poll of a timestamp cursor stops
//!   before the start time of the oldest transaction that holds a transaction id
//!   (a writer): rows stamped by a transaction are stamped at or after its start,
//!   so none can commit behind the watermark. This assumes the cursor column is
//!   set from the transaction's clock (`now()`, a trigger), not by the client.

use crate::event::{now_ms, Batch, ChangeEvent, Op, Position, SourceInfo, Watermark};
use crate::postgres::catalog::{self, quote_ident, TypeKinds};
use crate::postgres::table::{Column, TableName, TableSchema};
use crate::postgres::values::ValueKind;
use crate::{SourceControl, SourceError};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// One polled table.
#[derive(Debug, Clone)]
pub struct PollTable {
    pub name: TableName,
    pub cursor_column: String,
    /// Tie-break key; the primary key when empty.
    pub key: Vec<String>,
    /// How far behind the watermark each poll reads again (timestamp cursors).
    pub lag_window: Duration,
    pub deleted_column: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub pipeline: String,
    pub url: String,
    pub tables: Vec<PollTable>,
    /// Pause between polls that found nothing new (doubled while idle, up to 8x).
    pub interval: Duration,
    pub page_size: usize,
    /// Timestamp cursors: read only rows stamped before the start of the oldest
    /// transaction still writing, so no late commit can land behind the
    /// watermark (immune to long transactions, at the cost of lag while one runs).
    pub wait_for_open_transactions: bool,
}

/// A table being polled: its layout, queries and watermark.
struct Polled {
    cfg: PollTable,
    schema: TableSchema,
    /// Index in `schema.columns` of the cursor column, the key columns and the
    /// soft-delete column.
    cursor: usize,
    key: Vec<usize>,
    deleted: Option<usize>,
    cursor_type: String,
    key_types: Vec<String>,
    /// True for timestamp cursors, where `lag_window` applies.
    timed: bool,
    watermark: Option<Watermark>,
    /// `(key, cursor value)` of rows emitted inside the lag window.
    seen: HashSet<(Vec<String>, String)>,
    seen_order: VecDeque<(String, (Vec<String>, String))>,
    /// The next page continues after this `(cursor, key)` within one poll.
    page_after: Option<(String, Vec<String>)>,
    /// After a crash: the sink's last position for this table, when this table's
    /// positions only grow (no lag window); events up to it are not written again.
    replay_after: Option<String>,
}

pub struct PollSource {
    cfg: PollConfig,
    pipeline: Arc<str>,
    db: Arc<str>,
    client: Client,
    tables: Vec<Polled>,
    control: SourceControl,
    /// Index of the table the next page is read from.
    next: usize,
    /// Pages in the current round that came back full.
    busy: bool,
    idle_rounds: u32,
}

fn err(what: String) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
    move |source| SourceError::Postgres { what, source }
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl PollSource {
    /// Connects, checks every table and column, and resumes from `resume`.
    pub async fn open(
        cfg: PollConfig,
        resume: Option<Position>,
        sink_last: Option<&str>,
        control: SourceControl,
    ) -> Result<Self, SourceError> {
        let pg = crate::postgres::parse_url(&cfg.url)?;
        let client = catalog::connect(&pg).await?;
        let mut stored = match resume {
            Some(Position::Poll { tables }) => tables,
            Some(other) => {
                return Err(SourceError::Setup(format!(
                    "cursor holds {other}, not a poll watermark"
                )));
            }
            None => BTreeMap::new(),
        };
        let mut kinds = TypeKinds::default();
        let mut tables = Vec::new();
        for table in &cfg.tables {
            let shape = catalog::table_shape(&client, &table.name)
                .await?
                .ok_or_else(|| {
                    SourceError::Setup(format!("source.table: table {} does not exist", table.name))
                })?;
            let find = |column: &str, key: &str| {
                shape
                    .columns
                    .iter()
                    .position(|(n, _)| n == column)
                    .ok_or_else(|| {
                        SourceError::Setup(format!(
                            "source.table.{key}: {} has no column {column:?}",
                            table.name
                        ))
                    })
            };
            let cursor = find(&table.cursor_column, "cursor_column")?;
            let key_names = if table.key.is_empty() {
                shape.primary_key.clone()
            } else {
                table.key.clone()
            };
            if key_names.is_empty() {
                return Err(SourceError::Setup(format!(
                    "source.table.key: {} has no primary key; name the tie-break key columns",
                    table.name
                )));
            }
            let key = key_names
                .iter()
                .map(|k| find(k, "key"))
                .collect::<Result<Vec<_>, _>>()?;
            let deleted = table
                .deleted_column
                .as_deref()
                .map(|d| find(d, "deleted_column"))
                .transpose()?;
            let cursor_oid = shape.columns[cursor].1;
            let orderable: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod \
                     WHERE a.amname = 'btree' AND c.opcdefault AND c.opcintype = $1)",
                    &[&cursor_oid],
                )
                .await
                .map_err(err(format!("check the type of {}.{}", table.name, table.cursor_column)))?
                .get(0);
            let cursor_type = catalog::type_name(&client, cursor_oid, -1).await?;
            let indexed: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                     AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND a.attname = $2)",
                    &[&table.name.quoted(), &table.cursor_column],
                )
                .await
                .map_err(err(format!("look up the indexes of {}", table.name)))?
                .get(0);
            if !indexed {
                tracing::warn!(
                    "source.table.cursor_column: no index on {} starts with {}: every poll scans the table (CREATE INDEX ON {} ({}, ...))",
                    table.name,
                    table.cursor_column,
                    table.name,
                    quote_ident(&table.cursor_column)
                );
            }
            if !orderable {
                return Err(SourceError::Setup(format!(
                    "source.table.cursor_column: {}.{} is of type {cursor_type}, which cannot be ordered; use a timestamp or an increasing number",
                    table.name, table.cursor_column
                )));
            }
            let mut columns = Vec::new();
            let mut key_types = Vec::new();
            for (name, oid) in &shape.columns {
                columns.push(Column {
                    name: name.as_str().into(),
                    type_oid: *oid,
                    type_modifier: -1,
                    kind: kinds.kind(&client, *oid).await?,
                });
            }
            for &k in &key {
                key_types.push(catalog::type_name(&client, shape.columns[k].1, -1).await?);
            }
            let timed = matches!(
                columns[cursor].kind,
                ValueKind::Timestamp | ValueKind::TimestampTz | ValueKind::Date
            );
            tables.push(Polled {
                watermark: stored.remove(&table.name.to_string()),
                cfg: table.clone(),
                schema: TableSchema {
                    name: table.name.clone(),
                    columns,
                    key: key.clone(),
                },
                cursor,
                key,
                deleted,
                cursor_type,
                key_types,
                timed,
                seen: HashSet::new(),
                seen_order: VecDeque::new(),
                page_after: None,
                replay_after: None,
            });
        }
        for table in &mut tables {
            let scope = format!("poll:{}=", table.cfg.name);
            let grows = !table.timed || table.cfg.lag_window.is_zero();
            table.replay_after = sink_last
                .filter(|last| grows && last.starts_with(&scope))
                .map(str::to_owned);
        }
        Ok(PollSource {
            pipeline: cfg.pipeline.as_str().into(),
            db: pg.get_dbname().unwrap_or("postgres").into(),
            cfg,
            client,
            tables,
            control,
            next: 0,
            busy: false,
            idle_rounds: 0,
        })
    }

    fn position(&self) -> Position {
        Position::Poll {
            tables: self
                .tables
                .iter()
                .filter_map(|t| Some((t.cfg.name.to_string(), t.watermark.clone()?)))
                .collect(),
        }
    }

    /// The next page of changes (one table), or `None` once stopped.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        loop {
            if *self.control.stop.borrow() {
                return Ok(None);
            }
            if self.next == self.tables.len() {
                // A round over every table is done: pause if nothing was waiting.
                self.next = 0;
                if self.busy {
                    self.idle_rounds = 0;
                } else {
                    self.idle_rounds = (self.idle_rounds + 1).min(4);
                    let pause = self.cfg.interval * (1 << (self.idle_rounds - 1).min(3));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        Ok(()) = self.control.stop.changed() => continue,
                    }
                }
                self.busy = false;
            }
            let index = self.next;
            let (events, full) = self.read_page(index).await?;
            if full {
                self.busy = true;
            } else {
                self.next += 1;
                self.tables[index].page_after = None;
            }
            if !events.is_empty() {
                return Ok(Some(Batch {
                    events,
                    end: Some(self.position()),
                }));
            }
        }
    }

    async fn read_page(&mut self, index: usize) -> Result<(Vec<ChangeEvent>, bool), SourceError> {
        let page_size = self.cfg.page_size.max(1);
        let table = &mut self.tables[index];
        let cursor_col = quote_ident(&table.cfg.cursor_column);
        let key_cols: Vec<String> = table
            .key
            .iter()
            .map(|&k| quote_ident(&table.schema.columns[k].name))
            .collect();
        let order = format!("{cursor_col}, {}", key_cols.join(", "));
        let bound = match (&table.page_after, &table.watermark) {
            (Some((value, key)), _) => Some(tuple_bound(
                &order,
                value,
                key,
                &table.cursor_type,
                &table.key_types,
            )),
            (None, Some(w)) if table.timed && !table.cfg.lag_window.is_zero() => Some(format!(
                "{cursor_col} >= {}::{} - interval '{} milliseconds'",
                literal(&w.value),
                table.cursor_type,
                table.cfg.lag_window.as_millis()
            )),
            (None, Some(w)) => Some(tuple_bound(
                &order,
                &w.value,
                &w.key,
                &table.cursor_type,
                &table.key_types,
            )),
            (None, None) => None,
        };
        let bound = if table.timed && self.cfg.wait_for_open_transactions {
            let oldest = format!(
                "{cursor_col} < (SELECT coalesce(min(xact_start), clock_timestamp()) FROM pg_stat_activity \
                 WHERE backend_xid IS NOT NULL AND datname = current_database() AND pid <> pg_backend_pid())"
            );
            Some(match bound {
                Some(b) => format!("{b} AND {oldest}"),
                None => oldest,
            })
        } else {
            bound
        };
        let select: Vec<String> = table
            .schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {order} LIMIT {page_size}",
            select.join(", "),
            table.cfg.name.quoted(),
            bound.map(|b| format!(" WHERE {b}")).unwrap_or_default()
        );
        let rows: Vec<_> = self
            .client
            .simple_query(&sql)
            .await
            .map_err(err(format!("poll {}", table.cfg.name)))?
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .collect();
        let full = rows.len() >= page_size;
        let ncols = table.schema.columns.len();
        let mut events = Vec::new();
        let ts_ms = now_ms();
        for row in &rows {
            let text = |i: usize| row.get(i).unwrap_or_default().to_string();
            let value = text(table.cursor);
            let key: Vec<String> = table.key.iter().map(|&k| text(k)).collect();
            table.page_after = Some((value.clone(), key.clone()));
            let marker = (key.clone(), value.clone());
            if table.seen.contains(&marker) {
                continue;
            }
            let after = table.schema.row_from_text((0..ncols).map(|i| row.get(i)));
            let sort = sortable(
                &table.schema.columns[table.cursor].kind,
                after
                    .0
                    .get(table.cursor)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
            );
            let candidate = Watermark {
                value: value.clone(),
                sort: sort.clone(),
                key: key.clone(),
            };
            if table
                .watermark
                .as_ref()
                .is_none_or(|w| candidate.order() > w.order())
            {
                table.watermark = Some(candidate);
            }
            if table.timed && !table.cfg.lag_window.is_zero() {
                table.seen.insert(marker.clone());
                table.seen_order.push_back((sort.clone(), marker));
            }
            let deleted = table.deleted.is_some_and(|d| {
                !matches!(
                    after.0.get(d).map(|(_, v)| v),
                    None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false))
                )
            });
            let key_row = table.schema.key_of(&after);
            let (op, before, after) = if deleted {
                (Op::Delete, Some(after), None)
            } else {
                (Op::Update, None, Some(after))
            };
            let position = Position::Poll {
                tables: BTreeMap::from([(
                    table.cfg.name.to_string(),
                    Watermark {
                        value: String::new(),
                        sort,
                        key,
                    },
                )]),
            };
            if let Some(last) = &table.replay_after {
                if position.to_string().as_str() <= last.as_str() {
                    continue;
                }
                table.replay_after = None;
            }
            events.push(ChangeEvent {
                op,
                before,
                after,
                unchanged: Vec::new(),
                key: key_row,
                source: SourceInfo {
                    connector: "poll",
                    name: self.pipeline.clone(),
                    db: self.db.clone(),
                    schema: table.schema.name.schema.clone(),
                    table: table.schema.name.table.clone(),
                    ts_ms,
                    snapshot: false,
                    lsn: None,
                    commit_lsn: None,
                    tx_id: None,
                    watermark: Some(value),
                },
                position,
                transaction: None,
                ts_ms,
                ddl: None,
                columns: None,
            });
        }
        // Forget what fell out of the window behind the watermark.
        if let Some(w) = &table.watermark {
            let horizon = table.cfg.lag_window.as_micros() as i64;
            while let Some((sort, _)) = table.seen_order.front() {
                if micros_between(sort, &w.sort).is_some_and(|d| d <= horizon) {
                    break;
                }
                if let Some((_, marker)) = table.seen_order.pop_front() {
                    table.seen.remove(&marker);
                }
            }
        }
        Ok((events, full))
    }

    pub async fn close(self) {}
}

fn tuple_bound(
    order: &str,
    value: &str,
    key: &[String],
    cursor_type: &str,
    key_types: &[String],
) -> String {
    let mut values = vec![format!("{}::{cursor_type}", literal(value))];
    values.extend(
        key.iter()
            .zip(key_types)
            .map(|(k, t)| format!("{}::{t}", literal(k))),
    );
    format!("({order}) > ({})", values.join(", "))
}

/// The cursor value in a form that sorts byte-wise: timestamps in their fixed
/// ISO form, numbers zero-padded, text as is.
fn sortable(kind: &ValueKind, value: serde_json::Value) -> String {
    match (kind, value) {
        (ValueKind::Integer, serde_json::Value::Number(n)) => match n.as_i64() {
            // Offset so negative numbers sort first, then pad.
            Some(i) => format!("{:020}", (i as i128 + i64::MAX as i128 + 1) as u128),
            None => n.to_string(),
        },
        (_, serde_json::Value::String(s)) => s,
        (_, other) => other.to_string(),
    }
}

/// Microseconds from timestamp `a` to `b` (both in the sortable ISO form).
fn micros_between(a: &str, b: &str) -> Option<i64> {
    Some(iso_micros(b)? - iso_micros(a)?)
}

fn iso_micros(s: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM:SS.ffffff
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, us) = (
        num(11..13).unwrap_or(0),
        num(14..16).unwrap_or(0),
        num(17..19).unwrap_or(0),
        num(20..26).unwrap_or(0),
    );
    // Days from civil (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + mi) * 60 + sec) * 1_000_000 + us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sortable_forms_order_like_their_values() {
        let a = sortable(&ValueKind::Integer, json!(-5));
        let b = sortable(&ValueKind::Integer, json!(3));
        let c = sortable(&ValueKind::Integer, json!(12));
        assert!(a < b && b < c);
        assert_eq!(
            micros_between("2026-11-21T13:45:00.000000Z", "2026-11-21T13:45:05.500000Z"),
            Some(5_500_000)
        );
        assert_eq!(
            micros_between("2026-02-28T23:59:59.000000", "2026-03-01T00:00:00.000000"),
            Some(1_000_000)
        );
    }
}
