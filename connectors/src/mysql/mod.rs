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

pub mod checks;
mod ddl;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod snapshot;
pub mod tls;
mod transaction;
pub mod values;
mod wire;

use crate::batcher::Batcher;
use crate::event::{now_ms, Batch, ChangeEvent, Op, Position, Row, SourceInfo, TransactionInfo};
use crate::{SourceControl, SourceError};
use futures_util::StreamExt;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use rows::DecodedImage;
use schema::{read_columns, TableColumns};
use snapshot::Snapshot;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use transaction::Statement;
use values::MyKind;

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

/// A MySQL identifier in backquotes (a backquote in it doubled): the one
/// quoter of MySQL names, for every statement tidemark builds.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
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

/// MariaDB's GTID and GTID_LIST event types.
const MARIADB_GTID_EVENT: u8 = 162;
const MARIADB_GTID_LIST_EVENT: u8 = 163;
/// XA_PREPARE_LOG_EVENT (MySQL and MariaDB): the end of an XA transaction's first phase.
const XA_PREPARE_EVENT: u8 = 38;

/// The GTID-state key of a cursor entry: the MariaDB domain (`0` of `0-1-5`) or
/// the MySQL source UUID (before `:`).
fn gtid_key(entry: &str) -> &str {
    match entry.split_once(':') {
        Some((uuid, _)) => uuid,
        None => entry.split('-').next().unwrap_or(entry),
    }
}

/// A MySQL server UUID in its usual 8-4-4-4-12 form.
fn uuid_text(sid: &[u8; 16]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Decodes a MariaDB GTID_LIST event body into `(domain, "domain-server-seq")`.
fn parse_gtid_list(data: &[u8]) -> Vec<(u32, String)> {
    let le32 = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or_default();
    let Some(count) = data.get(0..4).map(|b| le32(b) & 0x0FFF_FFFF) else {
        return Vec::new();
    };
    (0..count as usize)
        .map_while(|i| {
            let entry = data.get(4 + i * 16..4 + (i + 1) * 16)?;
            let (domain, server) = (le32(&entry[0..4]), le32(&entry[4..8]));
            let seq = u64::from_le_bytes(entry[8..16].try_into().ok()?);
            Some((domain, format!("{domain}-{server}-{seq}")))
        })
        .collect()
}

enum Phase {
    Snapshot(Box<Snapshot>),
    Streaming,
}

/// Where the stream starts: a file and offset, or (MariaDB) a GTID state.
enum Start {
    File(String, u64),
    Gtid(String),
}

pub struct MysqlSource {
    cfg: MysqlConfig,
    pipeline: Arc<str>,
    phase: Phase,
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
    /// cursor after a consistent snapshot (or at the binlog's current end).
    pub async fn open(
        cfg: MysqlConfig,
        resume: Option<Position>,
        control: SourceControl,
    ) -> Result<Self, SourceError> {
        // The stream's own connection is made while the checks run (unless a
        // snapshot comes first: it would sit idle through it).
        let early = resume.is_some() || !cfg.snapshot;
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
        let mut history = HashMap::new();
        for (db, table) in &cfg.tables {
            history.insert(
                (db.clone(), table.clone()),
                read_columns(&mut conn, db, table).await?,
            );
        }
        let pipeline: Arc<str> = cfg.pipeline.as_str().into();
        let mut gtid_state = BTreeMap::new();
        let mut phase = Phase::Streaming;
        let fresh = resume.is_none();
        if fresh {
            warn_prepared_xa(&mut conn).await;
        }
        let start = match resume {
            Some(Position::Mysql {
                file, pos, gtid, ..
            }) => {
                for entry in gtid
                    .iter()
                    .flat_map(|g| g.split(','))
                    .filter(|e| !e.is_empty())
                {
                    gtid_state.insert(gtid_key(entry).to_string(), entry.to_string());
                }
                let binlog_pos = text_value(&mut conn, "SELECT @@GLOBAL.gtid_binlog_pos")
                    .await
                    .map_err(my_error("read @@gtid_binlog_pos"))?;
                if let Some(gtid) = gtid.as_deref() {
                    if let Some(forgotten) =
                        transaction::gtid_forgotten(gtid, binlog_pos.as_deref().unwrap_or(""))
                    {
                        return Err(SourceError::Setup(format!(
                            "source: the cursor (at {file}:{pos}) has read transaction {forgotten}, but the server's binlog now ends at GTID {:?}: its binlog was reset (RESET MASTER) or this is another server, so {file}:{pos} names other changes now; recover with `tidemark cursor reset --config <this config>`, then start again to take a new snapshot",
                            binlog_pos.unwrap_or_default()
                        )));
                    }
                }
                if !file.is_empty() {
                    if !logs.iter().any(|(name, _)| **name == *file) {
                        return Err(SourceError::Setup(format!(
                            "source: binlog {file} (cursor at {file}:{pos}) was purged from the server; the changes after the cursor are gone; recover with `tidemark cursor reset --config <this config>`, then start again to take a new snapshot"
                        )));
                    }
                    Start::File(file.to_string(), pos)
                } else if let Some(gtid) = gtid.filter(|g| !g.is_empty()) {
                    if gtid.contains(':') {
                        return Err(SourceError::Setup(format!(
                            "cursor holds the MySQL GTID set {gtid} without a binlog file; resuming MySQL from a GTID set alone is not supported yet"
                        )));
                    }
                    tracing::info!("resuming from GTID state {gtid}");
                    Start::Gtid(gtid)
                } else {
                    return Err(SourceError::Setup(
                        "cursor names neither a binlog file nor a GTID state".into(),
                    ));
                }
            }
            Some(other) => {
                return Err(SourceError::Setup(format!(
                    "cursor holds {other}, not a MySQL binlog position"
                )));
            }
            None if cfg.snapshot => {
                let snapshot = Snapshot::begin(
                    &cfg.url,
                    &cfg.tables,
                    cfg.snapshot_chunk_rows,
                    pipeline.clone(),
                )
                .await?;
                let (file, pos) = snapshot.position();
                phase = Phase::Snapshot(Box::new(snapshot));
                Start::File(file, pos)
            }
            None => {
                // The last binary log's size is where the server writes next.
                let (file, pos) = logs.last().cloned().ok_or_else(|| {
                    SourceError::Setup("source: the server lists no binary logs".into())
                })?;
                tracing::info!("no cursor: streaming from the current binlog end {file}:{pos}");
                Start::File(file, pos)
            }
        };
        let mut source = MysqlSource {
            cfg,
            pipeline,
            phase,
            stream: None,
            control,
            catalog: conn,
            tables: HashMap::new(),
            history,
            file: "".into(),
            gtid_state,
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
        };
        match start {
            // The stream opens once the snapshot is read.
            Start::File(file, _) if matches!(source.phase, Phase::Snapshot(_)) => {
                source.file = file.into()
            }
            Start::File(file, pos) if fresh => {
                // The start is fixed: the pipeline commits it before reading,
                // so a stop now and a start later resume here, not at a later end.
                source.fresh_start = Some(Position::Mysql {
                    file: file.as_str().into(),
                    pos,
                    row: None,
                    gtid: None,
                });
                source
                    .open_stream(Start::File(file, pos), stream_conn)
                    .await?
            }
            start => source.open_stream(start, stream_conn).await?,
        }
        Ok(source)
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
        if let Phase::Snapshot(snapshot) = &mut self.phase {
            if *self.control.stop.borrow() {
                tracing::info!(
                    "stopping during the snapshot: it restarts from the beginning next time"
                );
                return Ok(None);
            }
            if let Some(events) = snapshot.next_chunk().await? {
                return Ok(Some(Batch { events, end: None }));
            }
            let (file, pos) = snapshot.position();
            self.phase = Phase::Streaming;
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
        loop {
            if self.ended || *self.control.stop.borrow() {
                return Ok(self.batch.take_complete());
            }
            if self.batch.len() >= self.cfg.max_batch_events.max(1) {
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

    async fn handle(&mut self, event: Event) -> Result<(), SourceError> {
        let header = event.header();
        self.event_server_id = header.server_id();
        let next_pos = header.log_pos() as u64;
        let start = next_pos.saturating_sub(header.event_size() as u64);
        if let (Some(sum), Ok(Some(alg))) = (event.checksum(), event.footer().get_checksum_alg()) {
            if event.calc_checksum(alg) != u32::from_le_bytes(sum) {
                return Err(SourceError::Decode {
                    at: self.at(Some(start)),
                    message: "CRC32 checksum mismatch".into(),
                });
            }
        }
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            // seq_no (8 bytes LE), domain_id (4 bytes LE), flags; the server id is
            // the event header's.
            let data = event.data();
            if let (Some(seq), Some(domain)) = (data.get(0..8), data.get(8..12)) {
                let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
                let domain = u32::from_le_bytes(domain.try_into().unwrap_or_default());
                let id = format!("{domain}-{}-{seq}", header.server_id());
                self.gtid = Some((domain.to_string(), id.clone(), id.into()));
                self.tx_id = None;
            }
            let flags = transaction::mariadb_gtid_flags(data);
            self.explicit_tx = !flags.standalone;
            self.xa_group = flags.xa_prepare;
            self.group_start = start;
            self.in_tx = true;
            self.tx_seq = 0;
            return Ok(());
        }
        if header.event_type_raw() == XA_PREPARE_EVENT {
            self.prepare_xa(event.data(), next_pos);
            return Ok(());
        }
        if header.event_type_raw() == MARIADB_GTID_LIST_EVENT {
            // The GTID state at the start of a binlog file: count (low 28 bits of
            // a u32 LE), then (domain u32, server u32, seq u64) entries.
            for (domain, gtid) in parse_gtid_list(event.data()) {
                self.gtid_state.insert(domain.to_string(), gtid);
            }
            return Ok(());
        }
        let data = event.read_data().map_err(|e| SourceError::Decode {
            at: self.at(Some(start)),
            message: e.to_string(),
        })?;
        let ts = header.timestamp();
        match data {
            Some(EventData::RotateEvent(_)) => self.file = rotate_name(&event).into(),
            Some(EventData::QueryEvent(query)) => {
                let sql = query.query();
                match transaction::classify(&sql) {
                    Statement::Begin => {
                        if !self.in_tx {
                            self.group_start = start;
                        }
                        self.in_tx = true;
                        self.explicit_tx = true;
                    }
                    Statement::XaStart(xid) => {
                        if !self.in_tx {
                            self.group_start = start;
                        }
                        self.in_tx = true;
                        self.explicit_tx = true;
                        self.xa_group = Some(xid.to_string());
                    }
                    Statement::Commit | Statement::Rollback => self.commit(next_pos),
                    Statement::Savepoint | Statement::XaEnd => {}
                    Statement::XaCommit(xid) => {
                        let xid = xid.to_string();
                        self.resolve_xa(&xid, true, start);
                        self.commit(next_pos);
                    }
                    Statement::XaRollback(xid) => {
                        let xid = xid.to_string();
                        self.resolve_xa(&xid, false, start);
                        self.commit(next_pos);
                    }
                    // A statement inside a transaction: not its end.
                    Statement::Other if self.explicit_tx => {}
                    Statement::Other => {
                        let statement = sql.trim().to_string();
                        let schema = query.schema().to_string();
                        self.ddl(&schema, &statement, start, ts).await?;
                        self.commit(next_pos);
                    }
                }
            }
            Some(EventData::XidEvent(_)) => self.commit(next_pos),
            // MySQL 5.6+/8 GTIDs (untested here: MariaDB sends its own events).
            Some(EventData::GtidEvent(g)) => {
                let uuid = uuid_text(&g.sid());
                let gno = g.gno();
                self.gtid = Some((
                    uuid.clone(),
                    format!("{uuid}:1-{gno}"),
                    format!("{uuid}:{gno}").into(),
                ));
                self.group_start = start;
                self.in_tx = true;
                self.tx_seq = 0;
            }
            Some(EventData::TableMapEvent(tme)) => self.table_map(&tme, start)?,
            Some(EventData::RowsEvent(rows)) => {
                let op = match &rows {
                    RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                        Op::Create
                    }
                    RowsEventData::UpdateRowsEvent(_)
                    | RowsEventData::UpdateRowsEventV1(_)
                    | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
                    RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                        Op::Delete
                    }
                };
                let table_id = rows.table_id();
                self.emitted_ms = now_ms();
                let Some(info) = self.tables.get(&table_id) else {
                    return Ok(());
                };
                let decoded = if let RowsEventData::PartialUpdateRowsEvent(_) = &rows {
                    // MySQL 8 partial JSON updates: mysql_common's row reader
                    // knows that format (untested here: no MySQL 8).
                    let Some(tme) = self.stream.as_ref().and_then(|s| s.get_tme(table_id)) else {
                        return Err(SourceError::Decode {
                            at: self.at(Some(start)),
                            message: format!(
                                "rows event for table id {table_id} without its TABLE_MAP"
                            ),
                        });
                    };
                    let mut decoded = Vec::new();
                    for pair in rows.rows(tme) {
                        let (before, after) = pair.map_err(|e| SourceError::Decode {
                            at: self.at(Some(start)),
                            message: e.to_string(),
                        })?;
                        decoded.push((
                            before.map(|r| convert(info, &r)),
                            after.map(|r| convert(info, &r)),
                        ));
                    }
                    decoded
                } else {
                    let before_cols: Option<Vec<bool>> = rows
                        .columns_before_image()
                        .map(|b| b.iter().map(|x| *x).collect());
                    let after_cols: Option<Vec<bool>> = rows
                        .columns_after_image()
                        .map(|b| b.iter().map(|x| *x).collect());
                    rows::read_rows(
                        rows.rows_data(),
                        before_cols.as_deref(),
                        after_cols.as_deref(),
                        info,
                    )
                    .map_err(|(row, e)| SourceError::Decode {
                        at: format!("{} row {row}", self.at(Some(start))),
                        message: e.to_string(),
                    })?
                };
                let names = (info.db.clone(), info.table.clone());
                for (i, (before, after)) in decoded.into_iter().enumerate() {
                    self.push_row(op, &names, start, i as u64, before, after, ts);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The GTID state as a cursor records it.
    fn gtid_text(&self) -> Option<String> {
        let gtid: Vec<&str> = self.gtid_state.values().map(String::as_str).collect();
        (!gtid.is_empty()).then(|| gtid.join(","))
    }

    /// The end of a group: the cursor may move to `next_pos`, unless an XA
    /// transaction prepared before is still waiting for its outcome.
    fn commit(&mut self, next_pos: u64) {
        self.in_tx = false;
        self.explicit_tx = false;
        self.xa_group = None;
        self.tx_id = None;
        if let Some((key, entry, _)) = self.gtid.take() {
            self.gtid_state.insert(key, entry);
        }
        let end = match self.prepared.hold() {
            Some(hold) => hold.clone(),
            None => Position::Mysql {
                file: self.file.clone(),
                pos: next_pos,
                row: None,
                gtid: self.gtid_text(),
            },
        };
        self.batch.commit(end);
        if let Some((file, pos)) = &self.cfg.stop_at {
            let at = |file: &str, pos: u64| Position::Mysql {
                file: file.into(),
                pos,
                row: None,
                gtid: None,
            };
            if at(&self.file, next_pos)
                .order(&at(file, *pos))
                .is_some_and(|o| o.is_ge())
            {
                self.ended = true;
            }
        }
    }

    /// `XA PREPARE` ends the first phase of an XA transaction: its rows wait
    /// for its outcome, and the cursor stays at its start meanwhile.
    fn prepare_xa(&mut self, data: &[u8], next_pos: u64) {
        let Some(xid) = self
            .xa_group
            .take()
            .or_else(|| transaction::xa_prepare_xid(data))
        else {
            tracing::error!(
                "XA PREPARE at {} names no readable XID: its rows are dropped",
                self.at(Some(next_pos))
            );
            self.xa_rows.clear();
            self.commit(next_pos);
            return;
        };
        // The GTID state is still the one before this group.
        let hold = Position::Mysql {
            file: self.file.clone(),
            pos: self.group_start,
            row: None,
            gtid: self.gtid_text(),
        };
        self.prepared.push(transaction::PreparedXa {
            xid,
            rows: std::mem::take(&mut self.xa_rows),
            hold,
        });
        self.commit(next_pos);
    }

    /// `XA COMMIT` emits the rows of `xid`, positioned at the query (`start`);
    /// `XA ROLLBACK` drops them.
    fn resolve_xa(&mut self, xid: &str, committed: bool, start: u64) {
        // `XA COMMIT ... ONE PHASE` ends the group that holds the rows.
        let rows = if self
            .xa_group
            .as_deref()
            .is_some_and(|open| open.eq_ignore_ascii_case(xid))
        {
            Some(std::mem::take(&mut self.xa_rows))
        } else {
            self.prepared.resolve(xid)
        };
        let Some(rows) = rows else {
            if committed {
                tracing::error!(
                    "XA COMMIT {xid} at {}: it was prepared before capture started, so its rows were never read and are not emitted",
                    self.at(Some(start))
                );
            }
            return;
        };
        if !committed {
            return;
        }
        for (row, mut event) in rows.into_iter().enumerate() {
            event.position = Position::Mysql {
                file: self.file.clone(),
                pos: start,
                row: Some(row as u64),
                gtid: None,
            };
            self.batch.push(event);
        }
    }

    /// Records the layout a captured table's rows events are written with: names
    /// from the TABLE_MAP metadata, else from the schema history when it fits.
    fn table_map(&mut self, tme: &TableMapEvent<'_>, start: u64) -> Result<(), SourceError> {
        // Most transactions repeat the same TABLE_MAP: keep the layout built for it.
        if let Some(known) = self.tables.get(&tme.table_id()) {
            let same = known.wire.len() == tme.columns_count() as usize
                && known.wire.iter().enumerate().all(|(i, w)| {
                    matches!(tme.get_column_type(i), Ok(Some(t)) if t == w.column_type)
                        && tme.get_column_metadata(i).unwrap_or(&[]) == &w.meta[..]
                });
            if same {
                return Ok(());
            }
        }
        let key = (
            tme.database_name().to_string(),
            tme.table_name().to_string(),
        );
        if !self.cfg.tables.contains(&key) {
            self.tables.remove(&tme.table_id());
            return Ok(());
        }
        let mut columns = from_table_map(tme).map_err(|e| SourceError::Decode {
            at: self.at(Some(start)),
            message: format!("TABLE_MAP of {}.{}: {e}", key.0, key.1),
        })?;
        let history = self.history.get(&key);
        if columns.names.is_empty() {
            // No metadata: the history must describe exactly this many columns.
            let Some(history) = history.filter(|h| h.names.len() == columns.kinds.len()) else {
                return Err(SourceError::Decode {
                    at: self.at(Some(start)),
                    message: format!(
                        "{}.{}: the binlog carries no column names and the schema history has {} columns where the binlog has {}; set binlog_row_metadata = FULL",
                        key.0,
                        key.1,
                        history.map_or(0, |h| h.names.len()),
                        columns.kinds.len()
                    ),
                });
            };
            columns.names = history.names.clone();
            if columns.key.is_empty() {
                columns.key = history.key.clone();
            }
            let mut sent = schema::SentMetadata::default();
            for field in tme.iter_optional_meta().flatten() {
                match field {
                    OptionalMetadataField::Signedness(_) => sent.signedness = true,
                    OptionalMetadataField::DefaultCharset(_)
                    | OptionalMetadataField::ColumnCharset(_) => sent.charsets = true,
                    _ => {}
                }
            }
            history.complete_wire(&mut columns.wire, sent);
            columns.kinds = columns.wire.iter().map(|w| w.kind.clone()).collect();
        } else if let Some(history) = history.filter(|h| h.names != columns.names) {
            // The binlog is authoritative for its own rows; the history catches up.
            tracing::debug!(
                "{}.{}: binlog columns {:?} differ from the schema history {:?} at {}",
                key.0,
                key.1,
                columns.names,
                history.names,
                self.at(Some(start))
            );
        }
        if let Some(history) = self.history.get(&key) {
            history.name_plugin_types(&mut columns);
        }
        columns.render_names();
        self.tables.insert(tme.table_id(), columns);
        Ok(())
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

    /// A DDL statement on a captured table: the schema history is read again and
    /// an `op: "s"` event carries the statement and the columns after it;
    /// `TRUNCATE` becomes an `op: "t"` event.
    async fn ddl(
        &mut self,
        default_db: &str,
        sql: &str,
        start: u64,
        ts: u32,
    ) -> Result<(), SourceError> {
        let statement = ddl::ddl_tables(default_db, sql);
        let truncate = statement.truncate;
        let touched: Vec<(String, String)> = self
            .cfg
            .tables
            .iter()
            .filter(|(db, table)| {
                statement
                    .tables
                    .iter()
                    .any(|(d, t)| d.eq_ignore_ascii_case(db) && t.eq_ignore_ascii_case(table))
            })
            .cloned()
            .collect();
        for (i, (db, table)) in touched.into_iter().enumerate() {
            let columns = if truncate {
                None
            } else {
                let fresh = read_columns(&mut self.catalog, &db, &table).await.ok();
                match fresh {
                    Some(fresh) => {
                        let infos = fresh.infos();
                        self.history.insert((db.clone(), table.clone()), fresh);
                        Some(infos)
                    }
                    // Dropped (or renamed away): no columns left.
                    None => Some(Vec::new()),
                }
            };
            let (db, table): (Arc<str>, Arc<str>) = (db.as_str().into(), table.as_str().into());
            let source = self.source(&db, &table, ts);
            let transaction = self.transaction();
            let position = Position::Mysql {
                file: self.file.clone(),
                pos: start,
                row: Some(i as u64),
                gtid: None,
            };
            let event = if truncate {
                ChangeEvent::truncate(source, position, now_ms())
            } else {
                ChangeEvent::schema(source, position, Some(sql.to_string()), columns, now_ms())
            };
            self.batch.push(event.in_transaction(transaction));
        }
        Ok(())
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

/// Converts a binlog row with the table's layout (MySQL 8 partial updates,
/// which `mysql_common`'s row reader decodes).
fn convert(info: &TableColumns, row: &BinlogRow) -> DecodedImage {
    let mut out = Vec::with_capacity(row.len());
    let mut present = vec![false; info.names.len()];
    for (j, column) in row.columns_ref().iter().enumerate() {
        let name = column.name_str();
        let idx = info.names.iter().position(|n| **n == *name).unwrap_or(j);
        if let Some(p) = present.get_mut(idx) {
            *p = true;
        }
        let per_charset;
        let kind = if column.column_type().is_character_type() {
            // Text or bytes, latin1 or not: the row's column knows its charset.
            per_charset = MyKind::of(column.column_type(), &[], column.character_set(), None);
            &per_charset
        } else {
            info.kinds.get(idx).unwrap_or(&MyKind::Other)
        };
        let value = row
            .as_ref(j)
            .map_or(serde_json::Value::Null, |v| kind.to_json(v.clone()));
        out.push((
            info.names
                .get(idx)
                .cloned()
                .unwrap_or_else(|| name.as_ref().into()),
            value,
        ));
    }
    let missing = info
        .names
        .iter()
        .zip(&present)
        .filter(|(_, p)| !**p)
        .map(|(n, _)| n.clone())
        .collect();
    let row = Row(out);
    DecodedImage {
        key: info.key_of(&row),
        image: row.into(),
        missing,
    }
}

/// The file a ROTATE event names. The artificial first one arrives before the
/// format description, so the reader does not know checksums are on and leaves
/// the 4 CRC32 bytes at the end of the name: they are cut when they are the
/// checksum of the event, which only checksum bytes can be.
fn rotate_name(event: &Event) -> String {
    let header = event.header();
    let body = event.data();
    let name =
        |end: usize| String::from_utf8_lossy(body.get(8..end).unwrap_or_default()).into_owned();
    if body.len() >= 12 {
        let (payload, crc) = body.split_at(body.len() - 4);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header.timestamp().to_le_bytes());
        hasher.update(&[header.event_type_raw()]);
        hasher.update(&header.server_id().to_le_bytes());
        hasher.update(&header.event_size().to_le_bytes());
        hasher.update(&header.log_pos().to_le_bytes());
        hasher.update(&header.flags_raw().to_le_bytes());
        hasher.update(payload);
        if crc.try_into().map(u32::from_le_bytes).ok() == Some(hasher.finalize()) {
            return name(payload.len());
        }
    }
    name(body.len())
}

/// The ENUM or SET labels of each such column, from the optional metadata
/// field's bytes: per column a length-encoded count, then that many
/// length-encoded strings. Read here rather than by `mysql_common`, which
/// reserves room for the count it reads before checking it against the bytes
/// there are (a hostile count aborted the process: found by the binlog_rows
/// fuzzer).
fn label_lists(mut raw: &[u8]) -> std::io::Result<Vec<Vec<String>>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let length = |raw: &mut &[u8]| -> std::io::Result<usize> {
        let (&first, rest) = raw
            .split_first()
            .ok_or_else(|| invalid("truncated ENUM/SET labels"))?;
        let width = match first {
            0..=0xfa => {
                *raw = rest;
                return Ok(first as usize);
            }
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return Err(invalid("a malformed length in the ENUM/SET labels")),
        };
        let (bytes, rest) = rest
            .split_at_checked(width)
            .ok_or_else(|| invalid("truncated ENUM/SET labels"))?;
        *raw = rest;
        let mut value = [0u8; 8];
        value[..width].copy_from_slice(bytes);
        usize::try_from(u64::from_le_bytes(value))
            .map_err(|_| invalid("an ENUM/SET label length past memory"))
    };
    let mut lists = Vec::new();
    while !raw.is_empty() {
        let count = length(&mut raw)?;
        // Each label takes at least its length byte.
        if count > raw.len() {
            return Err(invalid("more ENUM/SET labels than bytes"));
        }
        let mut labels = Vec::with_capacity(count);
        for _ in 0..count {
            let len = length(&mut raw)?;
            let (label, rest) = raw
                .split_at_checked(len)
                .ok_or_else(|| invalid("truncated ENUM/SET label"))?;
            raw = rest;
            labels.push(String::from_utf8_lossy(label).into_owned());
        }
        lists.push(labels);
    }
    Ok(lists)
}

/// Column names, kinds, wire layout and key from a TABLE_MAP event's metadata
/// (names empty when the server sent none).
pub(crate) fn from_table_map(tme: &TableMapEvent<'_>) -> std::io::Result<TableColumns> {
    let mut names = Vec::new();
    let mut enums: Vec<Vec<String>> = Vec::new();
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut key = Vec::new();
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::ColumnName(n) => {
                names = n
                    .iter_names()
                    .flatten()
                    .map(|c| Arc::<str>::from(c.name().as_ref()))
                    .collect();
            }
            OptionalMetadataField::EnumStrValue(v) => {
                let mut raw = Vec::new();
                mysql_common::proto::MySerialize::serialize(&v, &mut raw);
                enums = label_lists(&raw)?;
            }
            OptionalMetadataField::SetStrValue(v) => {
                let mut raw = Vec::new();
                mysql_common::proto::MySerialize::serialize(&v, &mut raw);
                sets = label_lists(&raw)?;
            }
            OptionalMetadataField::SimplePrimaryKey(pk) => {
                key = pk.iter_indexes().flatten().map(|i| i as usize).collect();
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(pk) => {
                key = pk
                    .iter_keys()
                    .flatten()
                    .map(|k| k.column_index() as usize)
                    .collect();
            }
            _ => {}
        }
    }
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    let wire = rows::wire_layout(tme, &mut |ty| {
        if ty.is_enum_type() {
            enums.next()
        } else if ty.is_enum_or_set_type() {
            sets.next()
        } else {
            None
        }
    })?;
    let kinds = wire.iter().map(|w| w.kind.clone()).collect();
    Ok(TableColumns {
        db: tme.database_name().as_ref().into(),
        table: tme.table_name().as_ref().into(),
        names,
        kinds,
        types: Vec::new(),
        charsets: Vec::new(),
        key,
        estimated_rows: 0,
        wire,
        json_names: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_keys_and_uuids() {
        assert_eq!(gtid_key("0-1-42"), "0");
        assert_eq!(
            gtid_key("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23"),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562"
        );
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        assert_eq!(uuid_text(&sid), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
    }

    #[test]
    fn gtid_list_entries_decode() {
        let mut data = 2u32.to_le_bytes().to_vec();
        for (domain, server, seq) in [(0u32, 1u32, 42u64), (3, 7, 9)] {
            data.extend(domain.to_le_bytes());
            data.extend(server.to_le_bytes());
            data.extend(seq.to_le_bytes());
        }
        assert_eq!(
            parse_gtid_list(&data),
            vec![(0, "0-1-42".to_string()), (3, "3-7-9".to_string())]
        );
        assert!(parse_gtid_list(&data[..10]).is_empty());
    }
}
