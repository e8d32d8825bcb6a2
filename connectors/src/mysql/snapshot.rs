//! The initial snapshot of MySQL/MariaDB tables, consistent with the binlog.
//!
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` gives a read view; MariaDB reports
//! the binlog position matching it (`binlog_snapshot_file`/`_position`) without a
//! global lock. Where the server does not (MySQL), a brief `FLUSH TABLES WITH READ
//! LOCK` pins the position while the transaction starts. Rows are read in
//! primary-key chunks inside that transaction and the stream then starts at the
//! recorded position: what committed before it is in the snapshot, what committed
//! after it is in the stream.

use super::schema::{read_columns, TableColumns};
use super::{connect, my_error};
use crate::batcher::{largest_event, snapshot_chunk_rows};
use crate::event::{now_ms, ChangeEvent, Op, Position, Row, SourceInfo};
use crate::progress::SnapshotProgress;
use crate::sql::mysql::quote_ident;
use crate::SourceError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as MyValue};
use std::collections::VecDeque;
use std::sync::Arc;

struct TableReader {
    columns: TableColumns,
    /// `SELECT ... FROM t`, the key list, and `?, ?` for one key value.
    select: String,
    order: String,
    marks: String,
    last_key: Option<Vec<MyValue>>,
    /// Reading a key range: its inclusive upper end.
    upper: Option<Vec<MyValue>>,
    rows_done: u64,
    /// The largest row read so far, in bytes: it sizes the next chunk.
    largest_row: usize,
}

impl TableReader {
    async fn plan(conn: &mut Conn, db: &str, table: &str) -> Result<Self, SourceError> {
        let columns = read_columns(conn, db, table).await?;
        let names: Vec<String> = columns.names.iter().map(|n| quote_ident(n)).collect();
        let key: Vec<String> = columns
            .key
            .iter()
            .map(|&i| quote_ident(&columns.names[i]))
            .collect();
        if key.is_empty() {
            return Err(SourceError::Setup(format!(
                "source.tables: {db}.{table} has no primary key"
            )));
        }
        Ok(TableReader {
            select: format!(
                "SELECT {} FROM {}.{}",
                names.join(", "),
                quote_ident(db),
                quote_ident(table)
            ),
            order: key.join(", "),
            marks: vec!["?"; key.len()].join(", "),
            columns,
            last_key: None,
            upper: None,
            rows_done: 0,
            largest_row: 0,
        })
    }

    /// The next page's query and its parameters.
    fn query(&self, chunk_rows: usize) -> (String, Vec<MyValue>) {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        if let Some(key) = &self.last_key {
            conditions.push(format!("({}) > ({})", self.order, self.marks));
            params.extend(key.iter().cloned());
        }
        if let Some(key) = &self.upper {
            conditions.push(format!("({}) <= ({})", self.order, self.marks));
            params.extend(key.iter().cloned());
        }
        let bound = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        (
            format!(
                "{}{bound} ORDER BY {} LIMIT {chunk_rows}",
                self.select, self.order
            ),
            params,
        )
    }
}

pub struct Snapshot {
    conn: Conn,
    pending: VecDeque<TableReader>,
    file: Arc<str>,
    pos: u64,
    ordinal: u64,
    chunk_rows: usize,
    pipeline: Arc<str>,
    progress: SnapshotProgress,
}

/// `SHOW STATUS`-style rows (name, value) as pairs of strings.
async fn name_values(conn: &mut Conn, sql: &str) -> Result<Vec<(String, String)>, SourceError> {
    let rows: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .map_err(my_error(format!("run {sql}")))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.get_opt::<String, _>(0)?.ok()?,
                r.get_opt::<String, _>(1)?.ok()?,
            ))
        })
        .collect())
}

impl Snapshot {
    /// Starts the snapshot transaction and records the matching binlog position.
    pub async fn begin(
        url: &str,
        tables: &[(String, String)],
        chunk_rows: usize,
        pipeline: Arc<str>,
    ) -> Result<Self, SourceError> {
        let mut conn = connect(url).await?;
        for sql in [
            "SET SESSION time_zone = '+00:00'",
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        ] {
            conn.query_drop(sql)
                .await
                .map_err(my_error(format!("run {sql}")))?;
        }
        let status = name_values(&mut conn, "SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
        let get = |name: &str| {
            status
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let (file, pos) = match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
            (Some(file), Some(pos)) if !file.is_empty() => (file, pos.parse().unwrap_or(4)),
            _ => {
                // No snapshot position from the server: hold a global read lock just
                // long enough to start the transaction and read the position.
                for sql in [
                    "COMMIT",
                    "FLUSH TABLES WITH READ LOCK",
                    "START TRANSACTION WITH CONSISTENT SNAPSHOT",
                ] {
                    conn.query_drop(sql)
                        .await
                        .map_err(my_error(format!("run {sql}")))?;
                }
                let row: Option<mysql_async::Row> = conn
                    .query_first("SHOW MASTER STATUS")
                    .await
                    .map_err(my_error("read SHOW MASTER STATUS"))?;
                conn.query_drop("UNLOCK TABLES")
                    .await
                    .map_err(my_error("run UNLOCK TABLES"))?;
                row.and_then(|r| {
                    Some((
                        r.get_opt::<String, _>(0)?.ok()?,
                        r.get_opt::<u64, _>(1)?.ok()?,
                    ))
                })
                .ok_or_else(|| {
                    SourceError::Setup("source: the server reports no binlog position".into())
                })?
            }
        };
        let mut pending = VecDeque::new();
        for (db, table) in tables {
            pending.push_back(TableReader::plan(&mut conn, db, table).await?);
        }
        tracing::info!("snapshot at binlog {file}:{pos}");
        Ok(Snapshot {
            conn,
            pending,
            file: file.into(),
            pos,
            ordinal: 0,
            chunk_rows: chunk_rows.max(1),
            pipeline,
            progress: SnapshotProgress::default(),
        })
    }

    /// Reads one table's key range `(lo, hi]` (key values as text; open ends
    /// when `None`) in a transaction of its own: a chunk of `tidemark migrate`'s copy.
    pub async fn range(
        url: &str,
        (db, table): (&str, &str),
        lo: Option<Vec<String>>,
        hi: Option<Vec<String>>,
        chunk_rows: usize,
        pipeline: Arc<str>,
    ) -> Result<Self, SourceError> {
        let mut conn = connect(url).await?;
        for sql in [
            "SET SESSION time_zone = '+00:00'",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        ] {
            conn.query_drop(sql)
                .await
                .map_err(my_error(format!("run {sql}")))?;
        }
        let mut reader = TableReader::plan(&mut conn, db, table).await?;
        let values = |key: Vec<String>| {
            key.into_iter()
                .map(|v| MyValue::Bytes(v.into_bytes()))
                .collect()
        };
        reader.last_key = lo.map(values);
        reader.upper = hi.map(values);
        Ok(Snapshot {
            conn,
            pending: VecDeque::from([reader]),
            file: "".into(),
            pos: 0,
            ordinal: 0,
            chunk_rows: chunk_rows.max(1),
            pipeline,
            progress: SnapshotProgress::default(),
        })
    }

    /// The binlog position the snapshot matches: streaming starts there.
    pub fn position(&self) -> (String, u64) {
        (self.file.to_string(), self.pos)
    }

    /// Reads the next chunk as `op: "r"` events; `None` once every table is read.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<ChangeEvent>>, SourceError> {
        loop {
            let Some(reader) = self.pending.front_mut() else {
                self.conn
                    .query_drop("COMMIT")
                    .await
                    .map_err(my_error("end the snapshot"))?;
                return Ok(None);
            };
            let cols = &reader.columns;
            let what = format!("read a snapshot chunk of {}.{}", cols.db, cols.table);
            let limit = snapshot_chunk_rows(reader.largest_row, self.chunk_rows);
            let (sql, params) = reader.query(limit);
            let rows: Vec<mysql_async::Row> =
                self.conn.exec(&sql, params).await.map_err(my_error(what))?;
            let finished = rows.len() < limit;
            let ts_ms = now_ms();
            let mut events = Vec::with_capacity(rows.len());
            let read = rows.len() as u64;
            if let Some(last) = rows.last() {
                reader.last_key = Some(
                    cols.key
                        .iter()
                        .map(|&i| last.as_ref(i).cloned().unwrap_or(MyValue::NULL))
                        .collect(),
                );
            }
            for row in rows {
                let after = row_values(cols, row);
                self.ordinal += 1;
                let key = cols.key_of(&after);
                let source = read_source(cols, &self.pipeline, ts_ms);
                // Just before the snapshot position: no binlog event starts
                // there, and it sorts before everything streamed after it.
                let position = Position::Mysql {
                    file: self.file.clone(),
                    pos: self.pos.saturating_sub(1),
                    row: Some(self.ordinal),
                    gtid: None,
                };
                events.push(ChangeEvent::row(
                    Op::Read,
                    None,
                    Some(after.into()),
                    key,
                    source,
                    position,
                    ts_ms,
                ));
            }
            reader.rows_done += read;
            reader.largest_row = reader.largest_row.max(largest_event(&events));
            self.progress.chunk(
                &format_args!("{}.{}", cols.db, cols.table),
                reader.rows_done,
                cols.estimated_rows,
                finished,
            );
            if finished {
                self.pending.pop_front();
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
    }
}

/// A snapshot row's values by column, each converted by its column's kind.
fn row_values(cols: &TableColumns, mut row: mysql_async::Row) -> Row {
    Row(cols
        .names
        .iter()
        .zip(&cols.kinds)
        .enumerate()
        .map(|(i, (name, kind))| {
            let value = row
                .take::<MyValue, _>(i)
                .map_or(serde_json::Value::Null, |v| kind.value(v));
            (name.clone(), value)
        })
        .collect())
}

/// The `source` block of a snapshot row of `cols`' table.
fn read_source(cols: &TableColumns, pipeline: &Arc<str>, ts_ms: i64) -> Arc<SourceInfo> {
    Arc::new(SourceInfo {
        snapshot: true,
        ..SourceInfo::new(
            "mysql",
            pipeline.clone(),
            cols.db.clone(),
            cols.db.clone(),
            cols.table.clone(),
            ts_ms,
        )
    })
}

impl crate::snapshot_then_stream::Snapshot for Snapshot {
    fn next_chunk(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Vec<ChangeEvent>>, SourceError>> + Send
    {
        Snapshot::next_chunk(self)
    }
}
