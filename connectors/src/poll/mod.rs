//! Query-based capture: poll tables by a cursor column (an `updated_at`
//! timestamp or an increasing id) with a watermark, for sources where log-based
//! capture is not allowed. PostgreSQL and MySQL/MariaDB; what differs between
//! them (catalog checks, SQL) lives in `postgres.rs` and `mysql.rs`.
//!
//! Each page is one indexed range query, `WHERE (c, k) > (last c, last k) ORDER
//! BY c, k LIMIT n`, and the watermark `(last c, last k)` is the cursor, so a
//! crash resumes exactly where the last committed page ended.
//!
//! What polling cannot see, and what it does about it:
//! - Inserts and updates look the same: every row is `op: "u"` with `before: null`.
//! - Deletes are invisible unless a soft-delete column marks them
//!   (`deleted_column`: a non-null, non-false value emits `op: "d"`), or a key
//!   scan finds them (`delete_detection = "keyscan"`, see `keyset.rs`).
//! - A row stamped before the watermark can commit after it (a long transaction).
//!   With a timestamp cursor, every poll reads `lag_window` behind the watermark
//!   again and drops rows already emitted (a set of `(key, cursor value)` kept for
//!   that window). A transaction held open longer than `lag_window` can still be
//!   missed. After a restart the set is empty, so rows inside the window are
//!   emitted again, with the same `position` (at-least-once).
//! - Only the latest state of a row is seen; intermediate updates between two
//!   polls are not.
//! - With `wait_for_open_transactions` (PostgreSQL), each poll of a timestamp
//!   cursor stops before the start time of the oldest transaction that holds a
//!   transaction id (a writer): rows stamped by a transaction are stamped at or
//!   after its start, so none can commit behind the watermark. This assumes the
//!   cursor column is set from the transaction's clock (`now()`, a trigger), not
//!   by the client.

mod keyset;
mod mysql;
mod postgres;

use crate::batcher::{largest_event, rows_that_fit};
use crate::event::{now_ms, Batch, ChangeEvent, Op, Position, Row, SourceInfo, Watermark};
use crate::table::TableName;
use crate::{SourceControl, SourceError};
use keyset::KeySet;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One polled table.
#[derive(Debug, Clone)]
pub struct PollTable {
    /// `schema.table` (PostgreSQL) or `database.table` (MySQL).
    pub name: TableName,
    pub cursor_column: String,
    /// Tie-break key; the primary key when empty.
    pub key: Vec<String>,
    /// How far behind the watermark each poll reads again (timestamp cursors).
    pub lag_window: Duration,
    pub deleted_column: Option<String>,
    /// `delete_detection = "keyscan"`: how often to compare the table's keys
    /// with the keys seen.
    pub keyscan_every: Option<Duration>,
}

/// Which source this is, for cursors and sinks: the engine, host, port and
/// database of the URL, without its credentials or parameters.
pub fn source_identity(cfg: &PollConfig) -> String {
    let Some((scheme, rest)) = cfg.url.split_once("://") else {
        // A libpq `key=value` string: only its host, port and database.
        let named: Vec<&str> = cfg
            .url
            .split_whitespace()
            .filter(|kv| {
                ["host=", "port=", "dbname="]
                    .iter()
                    .any(|k| kv.starts_with(k))
            })
            .collect();
        return format!("poll postgres {}", named.join(" "));
    };
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    // Credentials end at the last `@` (a password may hold `/`, not a bare `@`).
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let (host, db) = rest.split_once('/').unwrap_or((rest, ""));
    format!("poll {scheme} {host}/{db}")
}

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub pipeline: String,
    /// `postgres://...` or `mysql://...`.
    pub url: String,
    pub tables: Vec<PollTable>,
    /// Pause between polls that found nothing new (doubled while idle, up to 8x).
    pub interval: Duration,
    pub page_size: usize,
    /// Timestamp cursors (PostgreSQL): read only rows stamped before the start of
    /// the oldest transaction still writing, so no late commit can land behind
    /// the watermark (immune to long transactions, at the cost of lag while one
    /// runs).
    pub wait_for_open_transactions: bool,
    /// Where key-scan sets are kept (next to the cursor).
    pub state_dir: PathBuf,
}

/// A polled table's columns, as both databases describe it.
pub(crate) struct Described {
    /// For messages.
    table: String,
    names: Vec<Arc<str>>,
    /// Indexes into `names` of the cursor column, the key columns and the
    /// soft-delete column.
    cursor: usize,
    key: Vec<usize>,
    deleted: Option<usize>,
    /// True for timestamp cursors, where `lag_window` applies.
    timed: bool,
}

impl Described {
    /// Finds the configured columns among `names`; errors name the key at fault.
    fn new(
        table: &PollTable,
        names: Vec<Arc<str>>,
        primary_key: &[String],
    ) -> Result<Self, SourceError> {
        let find = |column: &str, key: &str| {
            names.iter().position(|n| **n == *column).ok_or_else(|| {
                SourceError::Setup(format!(
                    "source.table.{key}: {} has no column {column:?}",
                    table.name
                ))
            })
        };
        let cursor = find(&table.cursor_column, "cursor_column")?;
        let key_names = if table.key.is_empty() {
            primary_key
        } else {
            &table.key[..]
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
        Ok(Described {
            table: table.name.to_string(),
            cursor,
            key,
            deleted,
            timed: false,
            names,
        })
    }

    fn not_orderable(&self, type_name: &str) -> SourceError {
        SourceError::Setup(format!(
            "source.table.cursor_column: {}.{} is of type {type_name}, which cannot be ordered; use a timestamp or an increasing number",
            self.table, self.names[self.cursor]
        ))
    }

    fn warn_unindexed(&self, fix: &str) {
        tracing::warn!(
            "source.table.cursor_column: no index on {} starts with {}: every poll scans the table ({fix})",
            self.table,
            self.names[self.cursor]
        );
    }
}

/// Which rows a page reads, before `ORDER BY cursor, key LIMIT n`.
pub(crate) enum Bound<'a> {
    All,
    /// Strictly after `(cursor value, key)`.
    After(&'a str, &'a [String]),
    /// Cursor at or after the value minus the lag window.
    Since(&'a str, Duration),
}

/// One row read by a page: its values, and the cursor and key as the database
/// prints them (used in the next query).
pub(crate) struct Fetched {
    row: Row,
    cursor: String,
    key: Vec<String>,
}

/// The database being polled.
enum Backend {
    Postgres(postgres::PgPoll),
    Mysql(mysql::MyPoll),
}

/// What one table's queries need, per database.
enum TableQueries {
    Postgres(postgres::PgTable),
    Mysql(mysql::MyTable),
}

impl Backend {
    async fn connect(url: &str) -> Result<(Self, Arc<str>), SourceError> {
        // The config accepts `postgres://` and `mysql://` URLs only.
        if crate::sql::Dialect::of_url(url) == Some(crate::sql::Dialect::Mysql) {
            let (my, db) = mysql::MyPoll::connect(url).await?;
            Ok((Backend::Mysql(my), db))
        } else {
            let (pg, db) = postgres::PgPoll::connect(url).await?;
            Ok((Backend::Postgres(pg), db))
        }
    }

    async fn describe(
        &mut self,
        table: &PollTable,
    ) -> Result<(Described, TableQueries), SourceError> {
        Ok(match self {
            Backend::Postgres(pg) => {
                let (d, t) = pg.describe(table).await?;
                (d, TableQueries::Postgres(t))
            }
            Backend::Mysql(my) => {
                let (d, t) = my.describe(table).await?;
                (d, TableQueries::Mysql(t))
            }
        })
    }

    async fn page(
        &mut self,
        plan: &TableQueries,
        described: &Described,
        bound: Bound<'_>,
        before_oldest_tx: bool,
        limit: usize,
    ) -> Result<Vec<Fetched>, SourceError> {
        match (self, plan) {
            (Backend::Postgres(pg), TableQueries::Postgres(t)) => {
                pg.page(t, described, bound, before_oldest_tx, limit).await
            }
            (Backend::Mysql(my), TableQueries::Mysql(t)) => {
                my.page(t, described, bound, limit).await
            }
            _ => Err(SourceError::Setup("poll plan of another database".into())),
        }
    }

    async fn keys(
        &mut self,
        plan: &TableQueries,
        described: &Described,
    ) -> Result<Vec<Vec<serde_json::Value>>, SourceError> {
        match (self, plan) {
            (Backend::Postgres(pg), TableQueries::Postgres(t)) => pg.keys(t, described).await,
            (Backend::Mysql(my), TableQueries::Mysql(t)) => my.keys(t, described).await,
            _ => Err(SourceError::Setup("poll plan of another database".into())),
        }
    }
}

/// A table being polled: its layout and watermark.
struct Polled {
    cfg: PollTable,
    described: Described,
    plan: TableQueries,
    watermark: Option<Watermark>,
    /// `(key, cursor value)` of rows emitted inside the lag window.
    seen: HashSet<(Vec<String>, String)>,
    seen_order: VecDeque<(String, (Vec<String>, String))>,
    /// The next page continues after this `(cursor, key)` within one poll.
    page_after: Option<(String, Vec<String>)>,
    /// After a crash: the sink's last position for this table, when this table's
    /// positions only grow (no lag window); events up to it are not written again.
    replay_after: Option<String>,
    keyset: Option<KeySet>,
    /// The largest row read so far, in bytes: it sizes the next page.
    largest_row: usize,
}

impl Polled {
    /// Which rows the next page reads: on from the last page within a poll,
    /// else after the watermark (or inside the lag window behind it).
    fn bound(&self) -> Bound<'_> {
        match (&self.page_after, &self.watermark) {
            (Some((value, key)), _) => Bound::After(value, key),
            (None, Some(w)) if self.described.timed && !self.cfg.lag_window.is_zero() => {
                Bound::Since(&w.value, self.cfg.lag_window)
            }
            (None, Some(w)) => Bound::After(&w.value, &w.key),
            (None, None) => Bound::All,
        }
    }

    /// Takes in one row of a page: moves the page and the watermark on,
    /// remembers it for the lag window and the key scan, and returns its
    /// event; `None` when the window already emitted it, or when it is at or
    /// before what the sink held after a crash.
    fn take_row(
        &mut self,
        fetched: Fetched,
        source: &SourceInfo,
        ts_ms: i64,
    ) -> Option<ChangeEvent> {
        let Fetched {
            row: after,
            cursor: value,
            key,
        } = fetched;
        self.page_after = Some((value.clone(), key.clone()));
        let marker = (key.clone(), value.clone());
        if self.seen.contains(&marker) {
            return None;
        }
        let described = &self.described;
        let sort = sortable(
            after
                .0
                .get(described.cursor)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        );
        let scans = self.watermark.as_ref().map_or(0, |w| w.scans);
        let candidate = Watermark {
            value: value.clone(),
            sort: sort.clone(),
            key: key.clone(),
            scans,
        };
        if self
            .watermark
            .as_ref()
            .is_none_or(|w| candidate.order() > w.order())
        {
            self.watermark = Some(candidate);
        }
        if described.timed && !self.cfg.lag_window.is_zero() {
            self.seen.insert(marker.clone());
            self.seen_order.push_back((sort.clone(), marker));
        }
        let deleted = described.deleted.is_some_and(|d| {
            !matches!(
                after.0.get(d).map(|(_, v)| v),
                None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false))
            )
        });
        let key_row = key_of(described, &after);
        if let (Some(keyset), Some(key)) = (self.keyset.as_mut(), &key_row) {
            keyset.saw(key);
        }
        let position = single_table(&self.cfg.name, sort, key.clone());
        if let Some(last) = &self.replay_after {
            if !crate::position::poll_written_after(&position, last) {
                return None;
            }
            self.replay_after = None;
        }
        let (op, before, after) = if deleted {
            (Op::Delete, Some(after.into()), None)
        } else {
            (Op::Update, None, Some(after.into()))
        };
        let source = Arc::new(SourceInfo {
            watermark: Some(value),
            ..source.clone()
        });
        Some(ChangeEvent::row(
            op, before, after, key_row, source, position, ts_ms,
        ))
    }

    /// Forgets what fell out of the window behind the watermark.
    fn forget_outside_window(&mut self) {
        if let Some(w) = &self.watermark {
            let horizon = self.cfg.lag_window.as_micros() as i64;
            while let Some((sort, _)) = self.seen_order.front() {
                if micros_between(sort, &w.sort).is_some_and(|d| d <= horizon) {
                    break;
                }
                if let Some((_, marker)) = self.seen_order.pop_front() {
                    self.seen.remove(&marker);
                }
            }
        }
    }
}

pub struct PollSource {
    cfg: PollConfig,
    pipeline: Arc<str>,
    db: Arc<str>,
    backend: Backend,
    tables: Vec<Polled>,
    control: SourceControl,
    /// Index of the table the next page is read from.
    next: usize,
    /// Pages in the current round that came back full.
    busy: bool,
    idle_rounds: u32,
}

impl PollSource {
    /// Connects, checks every table and column, and resumes from `resume`.
    pub async fn open(
        cfg: PollConfig,
        resume: Option<Position>,
        sink_last: Option<&str>,
        control: SourceControl,
    ) -> Result<Self, SourceError> {
        let (mut backend, db) = Backend::connect(&cfg.url).await?;
        let mut stored = match resume {
            Some(Position::Poll { tables }) => tables,
            Some(other) => {
                return Err(SourceError::Setup(format!(
                    "cursor holds {other}, not a poll watermark"
                )));
            }
            None => BTreeMap::new(),
        };
        let mut tables = Vec::new();
        for table in &cfg.tables {
            let (described, plan) = backend.describe(table).await?;
            let scope = format!("poll:{}=", table.name);
            let grows = !described.timed || table.lag_window.is_zero();
            let keyset = match table.keyscan_every {
                Some(every) => Some(KeySet::open(
                    &cfg.state_dir,
                    &cfg.pipeline,
                    &table.name.to_string(),
                    every,
                )?),
                None => None,
            };
            tables.push(Polled {
                watermark: stored.remove(&table.name.to_string()),
                cfg: table.clone(),
                described,
                plan,
                seen: HashSet::new(),
                seen_order: VecDeque::new(),
                page_after: None,
                replay_after: sink_last
                    .filter(|last| grows && last.starts_with(&scope))
                    .map(str::to_owned),
                keyset,
                largest_row: 0,
            });
        }
        Ok(PollSource {
            pipeline: cfg.pipeline.as_str().into(),
            db,
            cfg,
            backend,
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
            self.save_durable_keysets()?;
            if self.next == 0 {
                if let Some(events) = self.scan_keys().await? {
                    return Ok(Some(Batch {
                        events,
                        end: Some(self.position()),
                    }));
                }
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
                continue;
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

    /// Key scans that are due: keys gone since the last scan become `op: "d"`
    /// events (one table per batch).
    async fn scan_keys(&mut self) -> Result<Option<Vec<ChangeEvent>>, SourceError> {
        for index in 0..self.tables.len() {
            let table = &mut self.tables[index];
            let Some(keyset) = table.keyset.as_mut().filter(|k| k.due()) else {
                continue;
            };
            if table.watermark.is_none() {
                // Nothing polled yet: no key can be known to be gone.
                keyset.postpone();
                continue;
            }
            let table = &self.tables[index];
            let keys = self.backend.keys(&table.plan, &table.described).await?;
            count_query(&table.cfg.name, "keys");
            let source = self.source(index, now_ms());
            let table = &mut self.tables[index];
            let (Some(keyset), Some(watermark)) = (table.keyset.as_mut(), table.watermark.as_mut())
            else {
                continue;
            };
            let scan = watermark.scans + 1;
            let gone = keyset.compare(keys, scan)?;
            if gone.is_empty() {
                continue;
            }
            tracing::info!(
                "key scan of {}: {} rows deleted since the last scan",
                table.cfg.name,
                gone.len()
            );
            watermark.scans = scan;
            let events = gone
                .into_iter()
                .map(|key| {
                    // At the watermark the scan ran at, then the scan number and
                    // the key: after every event written before the scan.
                    let mut at = watermark.key.clone();
                    at.push(format!("~scan{scan}"));
                    at.extend(key.iter().map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }));
                    let key_row = Row(table
                        .described
                        .key
                        .iter()
                        .map(|&k| table.described.names[k].clone())
                        .zip(key)
                        .collect());
                    ChangeEvent::row(
                        Op::Delete,
                        Some(key_row.clone().into()),
                        None,
                        Some(key_row),
                        Arc::new(source.clone()),
                        single_table(&table.cfg.name, watermark.sort.clone(), at),
                        source.ts_ms,
                    )
                })
                .collect();
            return Ok(Some(events));
        }
        Ok(None)
    }

    /// Writes the key sets of scans whose deletes the sink has made durable.
    fn save_durable_keysets(&mut self) -> Result<(), SourceError> {
        let durable = self.control.durable.borrow().clone();
        let Some(Position::Poll { tables }) = durable else {
            return Ok(());
        };
        for table in &mut self.tables {
            let scans = tables
                .get(&table.cfg.name.to_string())
                .map_or(0, |w| w.scans);
            if let Some(keyset) = table.keyset.as_mut() {
                keyset.durable(scans)?;
            }
        }
        Ok(())
    }

    /// The `source` block of a table's events.
    fn source(&self, index: usize, ts_ms: i64) -> SourceInfo {
        let name = &self.tables[index].cfg.name;
        SourceInfo::new(
            "poll",
            self.pipeline.clone(),
            self.db.clone(),
            name.schema.clone(),
            name.table.clone(),
            ts_ms,
        )
    }

    /// One page of table `index`'s changes after its watermark (or inside its
    /// lag window); `true` when the page is full and more may follow.
    async fn read_page(&mut self, index: usize) -> Result<(Vec<ChangeEvent>, bool), SourceError> {
        let table = &self.tables[index];
        let page_size = rows_that_fit(table.largest_row, self.cfg.page_size);
        let bound = table.bound();
        let before_oldest_tx = table.described.timed && self.cfg.wait_for_open_transactions;
        let rows = self
            .backend
            .page(
                &table.plan,
                &table.described,
                bound,
                before_oldest_tx,
                page_size,
            )
            .await?;
        count_query(&table.cfg.name, "page");
        let full = rows.len() >= page_size;
        let ts_ms = now_ms();
        let mut events = Vec::new();
        let source = self.source(index, ts_ms);
        let polled = &mut self.tables[index];
        for fetched in rows {
            if let Some(event) = polled.take_row(fetched, &source, ts_ms) {
                events.push(event);
            }
        }
        if let Some(keyset) = polled.keyset.as_mut() {
            keyset.append_seen()?;
        }
        polled.forget_outside_window();
        polled.largest_row = polled.largest_row.max(largest_event(&events));
        Ok((events, full))
    }

    pub async fn close(self) {}
}

/// `tidemark_poll_queries_total`: polling is visible even when nothing changes.
fn count_query(table: &TableName, query: &'static str) {
    metrics::counter!("tidemark_poll_queries_total", "table" => table.to_string(), "query" => query)
        .increment(1);
}

/// The key columns of a row.
fn key_of(described: &Described, row: &Row) -> Option<Row> {
    described
        .key
        .iter()
        .map(|&k| row.0.get(k).cloned())
        .collect::<Option<Vec<_>>>()
        .map(Row)
}

/// An event's position: the one table's `(sortable cursor value, key)`.
fn single_table(table: &TableName, sort: String, key: Vec<String>) -> Position {
    Position::Poll {
        tables: BTreeMap::from([(
            table.to_string(),
            Watermark {
                value: String::new(),
                sort,
                key,
                scans: 0,
            },
        )]),
    }
}

/// The cursor value in a form that sorts byte-wise: timestamps in their fixed
/// ISO form, numbers zero-padded, text as is.
fn sortable(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => match n.as_i64() {
            // Offset so negative numbers sort first, then pad.
            Some(i) => format!("{:020}", (i as i128 + i64::MAX as i128 + 1) as u128),
            None => n.to_string(),
        },
        serde_json::Value::String(s) => s,
        other => other.to_string(),
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
        let a = sortable(json!(-5));
        let b = sortable(json!(3));
        let c = sortable(json!(12));
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
