//! MySQL/MariaDB capture from the binlog (row events), with `mysql_async`'s
//! binlog stream and `mysql_common`'s event parsing.
//!
//! The connector registers as a replica and announces
//! `@mariadb_slave_capability=4`, so MariaDB sends its own GTID events (decoded
//! here: they are small) instead of dummies. Every event's CRC32 is verified.
//! WRITE/UPDATE/DELETE_ROWS of the captured tables become events; column names,
//! signedness, ENUM/SET labels and the primary key come from the TABLE_MAP
//! metadata (`binlog_row_metadata=FULL`), else from the schema history read from
//! `information_schema` (see `schema`). Batches end at XID (or COMMIT) events; the
//! cursor is the binlog file and the offset after the commit, plus the GTID state.
//! Resuming checks first that the file still exists, and never skips ahead.

pub(crate) mod checks;
mod ddl;
mod events;
mod layout;
pub mod retention;
pub(crate) mod rows;
pub(crate) mod schema;
pub mod snapshot;
mod start;
pub mod tls;
mod transaction;
pub mod values;
mod wire;

use crate::batcher::Batcher;
use crate::event::{Batch, ChangeEvent, Op, Position, SourceInfo, TransactionInfo};
use crate::snapshot_then_stream::{Reading, Step};
use crate::{SourceControl, SourceError};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use rows::DecodedImage;
use schema::{read_columns, TableColumns};
use snapshot::Snapshot;
use start::{ServerFacts, Start, StartPlan};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

// The `binlog_rows` fuzz target reads TABLE_MAP layouts as the daemon does.
pub(crate) use schema::from_table_map;

/// What the MySQL connector needs to know.
#[derive(Debug, Clone)]
pub struct MysqlConfig {
    pub pipeline: String,
    /// `mysql://user:password@host:port/db`, with the TLS settings of [`tls`].
    pub url: String,
    /// `(database, table)` pairs.
    pub tables: Vec<(String, String)>,
    /// The replica id tidemark announces; must differ from every server's.
    pub server_id: u32,
    pub snapshot: bool,
    pub snapshot_chunk_rows: usize,
    pub max_batch_events: usize,
    /// Stop after the transaction that ends at or past this binlog file and
    /// offset (benchmarks, bounded replays).
    pub stop_at: Option<(String, u64)>,
}

pub(crate) fn my_error(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> SourceError {
    let what = what.into();
    move |e| {
        let message = format!("mysql: cannot {what}: {e}");
        if crate::mysql_transient(&e) {
            SourceError::Unavailable(message)
        } else {
            SourceError::Setup(message)
        }
    }
}

pub(crate) async fn connect(url: &str) -> Result<Conn, SourceError> {
    let url = tls::parse(url).map_err(|e| SourceError::Setup(format!("source.url: {e}")))?;
    tls::connect(&url)
        .await
        .map_err(my_error("connect to the source"))
}

/// The rows of a query with every column as text (`None` for NULL), read
/// without mysql_async's typed conversions, which panic on a value of another
/// type: a server that answers oddly is an error or a missing value, never a
/// panic.
pub async fn text_rows(
    conn: &mut Conn,
    sql: &str,
    params: impl Into<mysql_async::Params> + Send,
) -> Result<Vec<Vec<Option<String>>>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = match params.into() {
        mysql_async::Params::Empty => conn.query(sql).await?,
        params => conn.exec(sql, params).await?,
    };
    Ok(rows
        .into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .map(|value| match value {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(bytes) => {
                        Some(String::from_utf8_lossy(&bytes).into_owned())
                    }
                    other => Some(other.as_sql(true).trim_matches('\'').to_string()),
                })
                .collect()
        })
        .collect())
}

/// The first column of the first row of `sql` as text (see [`text_rows`]).
pub async fn text_value(conn: &mut Conn, sql: &str) -> Result<Option<String>, mysql_async::Error> {
    Ok(text_rows(conn, sql, ())
        .await?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten()))
}

/// `SHOW BINARY LOGS`: each binlog's name and size, oldest first.
pub(crate) async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, SourceError> {
    // MySQL 8 adds columns: read the first two by index.
    Ok(conn
        .query::<mysql_async::Row, _>("SHOW BINARY LOGS")
        .await
        .map_err(my_error("list binary logs"))?
        .into_iter()
        .filter_map(|row| {
            Some((
                row.get_opt::<String, _>(0)?.ok()?,
                row.get_opt::<u64, _>(1)?.ok()?,
            ))
        })
        .collect())
}

/// Checks the source and returns the binlog's current end (file, offset and
/// GTID state): where a stream started now would begin. `tidemark migrate`
/// records it before copying the tables.
pub async fn current_position(cfg: &MysqlConfig) -> Result<Position, SourceError> {
    let mut conn = connect(&cfg.url).await?;
    let problems = checks::problems(&mut conn, cfg).await?;
    if !problems.is_empty() {
        return Err(SourceError::Setup(problems.join("\n")));
    }
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(my_error("read SHOW MASTER STATUS"))?;
    let (file, pos) = row
        .and_then(|r| {
            Some((
                r.get_opt::<String, _>(0)?.ok()?,
                r.get_opt::<u64, _>(1)?.ok()?,
            ))
        })
        .ok_or_else(|| {
            SourceError::Setup(
                "source: the server reports no binlog position (is log_bin on?)".into(),
            )
        })?;
    let gtid = text_value(&mut conn, "SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .ok()
        .flatten();
    Ok(Position::Mysql {
        file: file.into(),
        pos,
        row: None,
        gtid: gtid.filter(|g| !g.is_empty()),
    })
}

/// Which source this is, for cursors and sinks: the server's `server_uuid`
/// (MySQL) or `server_id` (MariaDB has no UUID), and the binlog's base name.
/// Holds no credentials.
pub async fn source_identity(cfg: &MysqlConfig) -> Result<String, SourceError> {
    let mut conn = connect(&cfg.url).await?;
    let rows = text_rows(
        &mut conn,
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('server_uuid', 'server_id', 'log_bin_basename')",
        (),
    )
    .await
    .map_err(my_error("read server_uuid, server_id and log_bin_basename"))?;
    let var = |name: &str| {
        rows.iter().find_map(|row| match row.as_slice() {
            [Some(n), Some(v), ..] if n.eq_ignore_ascii_case(name) && !v.is_empty() => {
                Some(v.as_str())
            }
            _ => None,
        })
    };
    let server = match (var("server_uuid"), var("server_id")) {
        (Some(uuid), _) => format!("server_uuid {uuid}"),
        (None, Some(id)) => format!("server_id {id}"),
        (None, None) => "server unnamed".to_string(),
    };
    let binlog = var("log_bin_basename")
        .map(|path| path.rsplit('/').next().unwrap_or(path))
        .unwrap_or("-");
    Ok(format!("mysql {server} binlog {binlog}"))
}

/// A capture that starts now (no cursor) cannot see the rows of XA
/// transactions already prepared: if they commit later, their rows are not
/// emitted (see `transaction`). Says so, naming them, when there are any.
async fn warn_prepared_xa(conn: &mut Conn) {
    match conn
        .query::<(i64, i64, i64, Vec<u8>), _>("XA RECOVER")
        .await
    {
        Ok(prepared) if !prepared.is_empty() => {
            let xids: Vec<String> = prepared
                .iter()
                .map(|(_, _, _, data)| String::from_utf8_lossy(data).into_owned())
                .collect();
            tracing::warn!(
                "{} XA transactions are prepared and not yet committed or rolled back ({}): capture starts after their rows, so if they commit, their rows are not captured; end them before starting capture",
                xids.len(),
                xids.join(", ")
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("XA RECOVER failed: {e}"),
    }
}

/// The pre-flight problems `tidemark check` reports; empty when capture can run.
pub async fn check(cfg: &MysqlConfig) -> Result<Vec<String>, SourceError> {
    let mut conn = connect(&cfg.url).await?;
    checks::problems(&mut conn, cfg).await
}

pub struct MysqlSource {
    cfg: MysqlConfig,
    pipeline: Arc<str>,
    reading: Reading<Snapshot>,
    stream: Option<BinlogStream>,
    control: SourceControl,
    /// For schema-history lookups while streaming.
    catalog: Conn,
    /// Layouts by TABLE_MAP table id (captured tables only).
    tables: HashMap<u64, TableColumns>,
    /// The schema history by `(db, table)`.
    history: HashMap<(String, String), TableColumns>,
    file: Arc<str>,
    /// GTID state by domain (`domain-server-seq`), as of the last commit.
    /// By MariaDB domain (`"0"`) or MySQL source UUID: `domain-server-seq`, or
    /// `uuid:1-gno` (MySQL, assuming a gap-free history per source).
    gtid_state: BTreeMap<String, String>,
    /// The open transaction's GTID: its state key, state entry and id.
    gtid: Option<(String, String, Arc<str>)>,
    /// The open transaction's id, once an event of it asked.
    tx_id: Option<Arc<str>>,
    tx_seq: u64,
    /// The `source` block last made (see [`MysqlSource::source`]).
    last_source: Option<Arc<SourceInfo>>,
    /// The server id in the header of the binlog event being read.
    event_server_id: u32,
    /// When the rows event being read was decoded (the events' `ts_ms`).
    emitted_ms: i64,
    in_tx: bool,
    /// The open group ends with a `COMMIT` or XID event (it began with `BEGIN`,
    /// or a MariaDB GTID event not flagged standalone): statements inside it
    /// (`SAVEPOINT`, ...) do not end it.
    explicit_tx: bool,
    /// Where the open group started (its GTID event, else its first event).
    group_start: u64,
    /// The open group is the first phase of this XA transaction: its rows go
    /// to `xa_rows` until its outcome (see `transaction`).
    xa_group: Option<String>,
    xa_rows: Vec<ChangeEvent>,
    prepared: transaction::Prepared,
    /// A stream-only start without a cursor: where it starts (see [`Self::fresh_start`]).
    fresh_start: Option<Position>,
    batch: Batcher,
    ended: bool,
}

impl MysqlSource {
    /// Checks the server, then positions the stream: at the cursor, or with no
    /// cursor after a consistent snapshot (or at the binlog's current end), as
    /// `start::decide` says from what is read here.
    pub async fn open(
        cfg: MysqlConfig,
        resume: Option<Position>,
        control: SourceControl,
    ) -> Result<Self, SourceError> {
        // The stream's own connection is made while the checks run (unless a
        // snapshot comes first: it would sit idle through it).
        let early = start::connects_early(resume.as_ref(), cfg.snapshot);
        let stream_conn = async {
            if early {
                connect(&cfg.url).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (mut conn, stream_conn) = tokio::try_join!(connect(&cfg.url), stream_conn)?;
        let found = checks::problems(&mut conn, &cfg).await?;
        if !found.is_empty() {
            return Err(SourceError::Setup(found.join("\n")));
        }
        let logs = binary_logs(&mut conn).await?;
        let history = read_history(&mut conn, &cfg.tables).await?;
        if resume.is_none() {
            warn_prepared_xa(&mut conn).await;
        }
        let gtid_binlog_pos = if start::reads_server_gtid(resume.as_ref()) {
            text_value(&mut conn, "SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(my_error("read @@gtid_binlog_pos"))?
        } else {
            None
        };
        let server = ServerFacts {
            logs: &logs,
            gtid_binlog_pos: gtid_binlog_pos.as_deref(),
        };
        let plan = start::decide(resume, cfg.snapshot, &server)?;
        let mut source = MysqlSource::new(cfg, control, conn, history);
        source.begin(plan, stream_conn).await?;
        Ok(source)
    }

    /// A source that has read nothing yet; `catalog` serves the schema
    /// history lookups.
    fn new(
        cfg: MysqlConfig,
        control: SourceControl,
        catalog: Conn,
        history: HashMap<(String, String), TableColumns>,
    ) -> Self {
        let pipeline: Arc<str> = cfg.pipeline.as_str().into();
        MysqlSource {
            cfg,
            pipeline,
            reading: Reading::Streaming,
            stream: None,
            control,
            catalog,
            tables: HashMap::new(),
            history,
            file: "".into(),
            gtid_state: BTreeMap::new(),
            gtid: None,
            tx_id: None,
            last_source: None,
            event_server_id: 0,
            emitted_ms: 0,
            tx_seq: 0,
            in_tx: false,
            explicit_tx: false,
            group_start: 0,
            xa_group: None,
            xa_rows: Vec::new(),
            prepared: transaction::Prepared::default(),
            fresh_start: None,
            batch: Batcher::default(),
            ended: false,
        }
    }

    /// Starts as `plan` says: a snapshot, or the stream (on `stream_conn` if
    /// one was made ahead).
    async fn begin(
        &mut self,
        plan: StartPlan,
        stream_conn: Option<Conn>,
    ) -> Result<(), SourceError> {
        match plan {
            StartPlan::Snapshot => {
                let snapshot = Snapshot::begin(
                    &self.cfg.url,
                    &self.cfg.tables,
                    self.cfg.snapshot_chunk_rows,
                    self.pipeline.clone(),
                )
                .await?;
                // The stream opens once the snapshot is read.
                let (file, _) = snapshot.position();
                self.file = file.into();
                self.reading = Reading::Snapshot(Box::new(snapshot));
            }
            StartPlan::CurrentEnd { file, pos } => {
                tracing::info!("no cursor: streaming from the current binlog end {file}:{pos}");
                // The start is fixed: the pipeline commits it before reading,
                // so a stop now and a start later resume here, not at a later end.
                self.fresh_start = Some(Position::Mysql {
                    file: file.as_str().into(),
                    pos,
                    row: None,
                    gtid: None,
                });
                self.open_stream(Start::File(file, pos), stream_conn)
                    .await?;
            }
            StartPlan::Resume { start, gtid_state } => {
                if let Start::Gtid(gtid) = &start {
                    tracing::info!("resuming from GTID state {gtid}");
                }
                self.gtid_state = gtid_state;
                self.open_stream(start, stream_conn).await?;
            }
        }
        Ok(())
    }

    /// Starts the binlog stream, on `conn` if one was made ahead.
    async fn open_stream(&mut self, start: Start, conn: Option<Conn>) -> Result<(), SourceError> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => connect(&self.cfg.url).await?,
        };
        for sql in [
            "SET @mariadb_slave_capability = 4",
            "SET @master_heartbeat_period = 1000000000",
        ] {
            conn.query_drop(sql)
                .await
                .map_err(my_error(format!("run {sql}")))?;
        }
        let (file, pos, at) = match &start {
            Start::File(file, pos) => (file.clone(), *pos, format!("{file}:{pos}")),
            Start::Gtid(gtid) => {
                conn.exec_drop("SET @slave_connect_state = ?", (gtid,))
                    .await
                    .map_err(my_error("set the GTID to resume from"))?;
                (String::new(), 4, format!("GTID {gtid}"))
            }
        };
        let request = BinlogStreamRequest::new(self.cfg.server_id)
            .with_filename(file.as_bytes())
            .with_pos(pos);
        self.stream = Some(
            conn.get_binlog_stream(request)
                .await
                .map_err(my_error(format!("start the binlog stream at {at}")))?,
        );
        self.file = file.into();
        Ok(())
    }

    /// Where a stream-only start without a cursor begins: the pipeline commits
    /// it before reading, so a stop (or a kill) before the first change loses
    /// nothing made meanwhile.
    pub fn fresh_start(&self) -> Option<Position> {
        self.fresh_start.clone()
    }

    /// The next batch, or `None` once stopped.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        match self.reading.step(&self.control.stop).await? {
            Step::Streaming => {}
            Step::Stopped => return Ok(None),
            Step::Rows(batch) => return Ok(Some(batch)),
            Step::Done(snapshot) => {
                let (file, pos) = snapshot.position();
                self.open_stream(Start::File(file.clone(), pos), None)
                    .await?;
                tracing::info!("snapshot complete; streaming from {file}:{pos}");
                return Ok(Some(Batch {
                    events: Vec::new(),
                    end: Some(Position::Mysql {
                        file: file.into(),
                        pos,
                        row: None,
                        gtid: None,
                    }),
                }));
            }
        }
        loop {
            if self.ended || *self.control.stop.borrow() {
                return Ok(self.batch.take_complete());
            }
            if self.batch.is_full(self.cfg.max_batch_events) {
                return Ok(Some(self.batch.take()));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(SourceError::Setup("binlog stream not open".into()));
            };
            let next = if !self.in_tx && self.batch.has_complete_events() {
                // Something to hand on: take more only if it is already here.
                match tokio::time::timeout(Duration::ZERO, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(Some(self.batch.take())),
                }
            } else {
                let due = self.batch.empty_end_due().filter(|_| !self.in_tx);
                tokio::select! {
                    biased;
                    Ok(()) = self.control.stop.changed() => continue,
                    _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                        return Ok(Some(self.batch.take()));
                    }
                    next = stream.next() => next,
                }
            };
            match next {
                Some(Ok(event)) => self.handle(event).await?,
                Some(Err(e)) => {
                    return Err(SourceError::Replication {
                        at: self.at(None),
                        message: e.to_string(),
                    })
                }
                None => {
                    return Err(SourceError::Replication {
                        at: self.at(None),
                        message: "the server ended the binlog stream".into(),
                    })
                }
            }
        }
    }

    /// `file:offset` for messages: of an event, or of the last commit.
    fn at(&self, pos: Option<u64>) -> String {
        let pos = pos.or(match self.batch.end() {
            Some(Position::Mysql { pos, .. }) => Some(*pos),
            _ => None,
        });
        match pos {
            Some(pos) => format!("binlog {}:{pos}", self.file),
            None => format!("binlog {}", self.file),
        }
    }

    /// The `source` block of an event: the rows of one rows event share it
    /// (`last` is the block made before).
    fn source(&mut self, db: &Arc<str>, table: &Arc<str>, ts: u32) -> Arc<SourceInfo> {
        let ts_ms = ts as i64 * 1000;
        let gtid = self.gtid.as_ref().map(|(_, _, id)| id);
        let server_id = Some(self.event_server_id);
        if let Some(same) = self.last_source.as_ref().filter(|last| {
            Arc::ptr_eq(&last.table, table)
                && Arc::ptr_eq(&last.db, db)
                && last.ts_ms == ts_ms
                && last.server_id == server_id
                && last.gtid.as_ref() == gtid
        }) {
            return same.clone();
        }
        let source = Arc::new(SourceInfo {
            server_id,
            gtid: gtid.cloned(),
            ..SourceInfo::new(
                "mysql",
                self.pipeline.clone(),
                db.clone(),
                db.clone(),
                table.clone(),
                ts_ms,
            )
        });
        self.last_source = Some(source.clone());
        source
    }

    fn transaction(&mut self) -> Option<TransactionInfo> {
        self.tx_seq += 1;
        let id = match (&self.gtid, &self.tx_id) {
            (Some((_, _, id)), _) | (None, Some(id)) => id.clone(),
            (None, None) => {
                let id: Arc<str> = self.at(None).into();
                self.tx_id = Some(id.clone());
                id
            }
        };
        Some(TransactionInfo {
            id,
            seq: self.tx_seq,
        })
    }

    /// One row of a rows event on `(db, table)`, as an event.
    #[allow(clippy::too_many_arguments)]
    fn push_row(
        &mut self,
        op: Op,
        (db, table): &(Arc<str>, Arc<str>),
        start: u64,
        index: u64,
        before: Option<DecodedImage>,
        after: Option<DecodedImage>,
        ts: u32,
    ) {
        let source = self.source(db, table, ts);
        let (before, before_key) = before.map_or((None, None), |b| (Some(b.image), b.key));
        let (after, after_key, unchanged) = match after {
            Some(a) => (Some(a.image), a.key, a.missing),
            None => (None, None, Vec::new()),
        };
        let key = after_key.or(before_key);
        let position = Position::Mysql {
            file: self.file.clone(),
            pos: start,
            row: Some(index),
            gtid: None,
        };
        let transaction = self.transaction();
        let event = ChangeEvent::row(op, before, after, key, source, position, self.emitted_ms)
            .with_unchanged(unchanged)
            .in_transaction(transaction);
        if self.xa_group.is_some() {
            self.xa_rows.push(event);
        } else {
            self.batch.push(event);
        }
    }

    /// Takes back the events of a written batch (see [`Batcher::recycle`]).
    pub fn recycle(&mut self, events: Vec<ChangeEvent>) {
        self.batch.recycle(events);
    }

    pub async fn close(self) {
        if let Some(stream) = self.stream {
            if let Err(e) = stream.close().await {
                tracing::debug!("binlog stream closed with: {e}");
            }
        }
    }
}

/// The schema history of the captured tables, from `information_schema`.
async fn read_history(
    conn: &mut Conn,
    tables: &[(String, String)],
) -> Result<HashMap<(String, String), TableColumns>, SourceError> {
    let mut history = HashMap::new();
    for (db, table) in tables {
        history.insert(
            (db.clone(), table.clone()),
            read_columns(conn, db, table).await?,
        );
    }
    Ok(history)
}
