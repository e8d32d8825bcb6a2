//! MySQL/MariaDB capture from the binlog (row events), with `mysql_async`'s
//! binlog stream and `mysql_common`'s event parsing.
//!
//! The connector registers as a replica, announces `@mariadb_slave_capability=4`
//! so MariaDB sends its own GTID events (decoded here: they are small), verifies
//! each event's CRC32, and turns WRITE/UPDATE/DELETE_ROWS of the captured tables
//! into events, using the TABLE_MAP metadata (`binlog_row_metadata=FULL`) for
//! column names, signedness, ENUM/SET labels and the primary key. Batches end at
//! XID (or COMMIT) events; the cursor is the binlog file and the offset after
//! the commit, and resuming first checks that the file still exists.
//!
//! Not yet here (issue 3 continues): the initial snapshot, resume from a GTID,
//! the schema history cross-check, MySQL 8 GTID/PARTIAL_UPDATE_ROWS paths.

pub mod values;

use crate::event::{now_ms, Batch, ChangeEvent, Op, Position, Row, SourceInfo, TransactionInfo};
use crate::{SourceControl, SourceError};
use futures_util::StreamExt;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use values::MyKind;

/// What the MySQL connector needs to know.
#[derive(Debug, Clone)]
pub struct MysqlConfig {
    pub pipeline: String,
    /// `mysql://user:password@host:port/db`.
    pub url: String,
    /// `(database, table)` pairs.
    pub tables: Vec<(String, String)>,
    /// The replica id tidemark announces; must differ from every server's.
    pub server_id: u32,
    pub max_batch_events: usize,
}

fn my_error(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> SourceError {
    let what = what.into();
    move |e| SourceError::Setup(format!("mysql: cannot {what}: {e}"))
}

async fn connect(url: &str) -> Result<Conn, SourceError> {
    let opts = Opts::from_url(url)
        .map_err(|e| SourceError::Setup(format!("source.url: not a valid MySQL URL ({e})")))?;
    Conn::new(opts)
        .await
        .map_err(my_error("connect to the source"))
}

/// The pre-flight problems `tidemark check` reports; empty when capture can run.
pub async fn check(cfg: &MysqlConfig) -> Result<Vec<String>, SourceError> {
    let mut conn = connect(&cfg.url).await?;
    problems(&mut conn, cfg).await
}

async fn variable(conn: &mut Conn, name: &str) -> Result<String, SourceError> {
    let row: Option<mysql_async::Row> = conn
        .query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await
        .map_err(my_error(format!("read {name}")))?;
    Ok(row
        .and_then(|r| r.get_opt::<String, _>(1))
        .and_then(Result::ok)
        .unwrap_or_default())
}

async fn problems(conn: &mut Conn, cfg: &MysqlConfig) -> Result<Vec<String>, SourceError> {
    let mut problems = Vec::new();
    if variable(conn, "log_bin").await? != "ON" {
        problems.push("source: log_bin is OFF; binlog capture needs log_bin = ON (set it in the server config and restart)".to_string());
    }
    let format = variable(conn, "binlog_format").await?;
    if format != "ROW" {
        problems.push(format!(
            "source: binlog_format is {format}, capture needs binlog_format = ROW"
        ));
    }
    let image = variable(conn, "binlog_row_image").await?;
    if image != "FULL" {
        tracing::warn!(
            "binlog_row_image is {image}: columns the server leaves out are listed in `unchanged`"
        );
    }
    let metadata = variable(conn, "binlog_row_metadata").await?;
    if metadata != "FULL" {
        problems.push(format!(
            "source: binlog_row_metadata is {metadata}; set binlog_row_metadata = FULL so the binlog carries column names"
        ));
    }
    let server_id = variable(conn, "server_id").await?;
    if server_id == cfg.server_id.to_string() {
        problems.push(format!(
            "source.server_id: {} is the server's own server_id; pick another",
            cfg.server_id
        ));
    }
    let grants: Vec<mysql_async::Row> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(my_error("read grants"))?;
    let grants = grants
        .iter()
        .filter_map(|r| r.get_opt::<String, _>(0).and_then(Result::ok))
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    let can_replicate = ["ALL PRIVILEGES", "REPLICATION SLAVE", "REPLICATION REPLICA"]
        .iter()
        .any(|g| grants.contains(g));
    if !can_replicate {
        problems.push("source: the user lacks REPLICATION SLAVE (GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO ...)".to_string());
    }
    for (db, table) in &cfg.tables {
        let row: Option<mysql_async::Row> = conn
            .exec_first(
                "SELECT COUNT(*), CAST(COALESCE(SUM(CONSTRAINT_TYPE = 'PRIMARY KEY'), 0) AS SIGNED) FROM information_schema.TABLES t \
                 LEFT JOIN information_schema.TABLE_CONSTRAINTS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME \
                 WHERE t.TABLE_SCHEMA = ? AND t.TABLE_NAME = ?",
                (db, table),
            )
            .await
            .map_err(my_error(format!("look up table {db}.{table}")))?;
        let count = |r: &mysql_async::Row, i: usize| {
            r.get_opt::<i64, _>(i).and_then(Result::ok).unwrap_or(0)
        };
        let keys = row.map(|r| (count(&r, 0), count(&r, 1)));
        match keys {
            Some((0, _)) | None => {
                problems.push(format!("source.tables: table {db}.{table} does not exist"))
            }
            Some((_, 0)) => {
                problems.push(format!("source.tables: {db}.{table} has no primary key"))
            }
            _ => {}
        }
    }
    Ok(problems)
}

/// A captured table as its latest TABLE_MAP describes it.
struct TableInfo {
    db: Arc<str>,
    table: Arc<str>,
    names: Vec<Arc<str>>,
    kinds: Vec<MyKind>,
    key: Vec<usize>,
}

pub struct MysqlSource {
    cfg: MysqlConfig,
    pipeline: Arc<str>,
    stream: BinlogStream,
    control: SourceControl,
    captured: Vec<(String, String)>,
    tables: HashMap<u64, TableInfo>,
    file: String,
    gtid: Option<String>,
    tx_seq: u64,
    in_tx: bool,
    events: Vec<ChangeEvent>,
    complete: usize,
    end: Option<Position>,
}

/// MariaDB's GTID event type.
const MARIADB_GTID_EVENT: u8 = 162;

impl MysqlSource {
    /// Checks the server, then streams from `resume` (the cursor) or, with no
    /// cursor, from the server's current binlog position.
    pub async fn open(
        cfg: MysqlConfig,
        resume: Option<Position>,
        control: SourceControl,
    ) -> Result<Self, SourceError> {
        let mut conn = connect(&cfg.url).await?;
        let found = problems(&mut conn, &cfg).await?;
        if !found.is_empty() {
            return Err(SourceError::Setup(found.join("\n")));
        }
        // MySQL 8 adds columns to SHOW BINARY LOGS: read the first two by index.
        let logs: Vec<(String, u64)> = conn
            .query::<mysql_async::Row, _>("SHOW BINARY LOGS")
            .await
            .map_err(my_error("list binary logs (needs REPLICATION CLIENT)"))?
            .into_iter()
            .filter_map(|row| {
                Some((
                    row.get_opt::<String, _>(0)?.ok()?,
                    row.get_opt::<u64, _>(1)?.ok()?,
                ))
            })
            .collect();
        let (file, pos) = match resume {
            Some(Position::Mysql { file, pos, .. }) => {
                if !logs.iter().any(|(name, _)| *name == file) {
                    return Err(SourceError::Setup(format!(
                        "source: binlog {file} (cursor at {file}:{pos}) was purged from the server; the changes after the cursor are gone. Delete the cursor to take a new snapshot"
                    )));
                }
                (file, pos)
            }
            Some(other) => {
                return Err(SourceError::Setup(format!(
                    "cursor holds {other}, not a MySQL binlog position"
                )));
            }
            None => {
                // The last binary log's size is where the server writes next.
                let (file, pos) = logs.last().cloned().ok_or_else(|| {
                    SourceError::Setup("source: the server lists no binary logs".into())
                })?;
                tracing::info!("no cursor: streaming from the current binlog end {file}:{pos}");
                (file, pos)
            }
        };
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(my_error("announce MariaDB replica capabilities"))?;
        conn.query_drop("SET @master_heartbeat_period = 1000000000")
            .await
            .map_err(my_error("set the heartbeat period"))?;
        let request = BinlogStreamRequest::new(cfg.server_id)
            .with_filename(file.as_bytes())
            .with_pos(pos);
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(my_error(format!("start the binlog stream at {file}:{pos}")))?;
        Ok(MysqlSource {
            pipeline: cfg.pipeline.as_str().into(),
            captured: cfg.tables.clone(),
            cfg,
            stream,
            control,
            tables: HashMap::new(),
            file,
            gtid: None,
            tx_seq: 0,
            in_tx: false,
            events: Vec::new(),
            complete: 0,
            end: None,
        })
    }

    fn take_all(&mut self) -> Batch {
        self.complete = 0;
        Batch {
            events: std::mem::take(&mut self.events),
            end: self.end.take(),
        }
    }

    /// The next batch, or `None` once stopped.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        loop {
            if *self.control.stop.borrow() {
                self.events.truncate(self.complete);
                let batch = self.take_all();
                return Ok((!batch.events.is_empty() || batch.end.is_some()).then_some(batch));
            }
            if self.events.len() >= self.cfg.max_batch_events.max(1) {
                return Ok(Some(self.take_all()));
            }
            let ready = !self.in_tx && self.end.is_some();
            let next = if ready {
                match tokio::time::timeout(Duration::ZERO, self.stream.next()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(Some(self.take_all())),
                }
            } else {
                tokio::select! {
                    biased;
                    Ok(()) = self.control.stop.changed() => continue,
                    next = self.stream.next() => next,
                }
            };
            match next {
                Some(Ok(event)) => self.handle(event).await?,
                Some(Err(e)) => {
                    return Err(SourceError::Replication {
                        at: format!("{}:{}", self.file, self.end_pos()),
                        message: e.to_string(),
                    })
                }
                None => {
                    return Err(SourceError::Replication {
                        at: self.file.clone(),
                        message: "the server ended the binlog stream".into(),
                    })
                }
            }
        }
    }

    fn end_pos(&self) -> u64 {
        match &self.end {
            Some(Position::Mysql { pos, .. }) => *pos,
            _ => 0,
        }
    }

    async fn handle(&mut self, event: Event) -> Result<(), SourceError> {
        let header = event.header();
        let next_pos = header.log_pos() as u64;
        let start = next_pos.saturating_sub(header.event_size() as u64);
        let at = |file: &str| format!("{file}:{start}");
        if let (Some(sum), Ok(Some(alg))) = (event.checksum(), event.footer().get_checksum_alg()) {
            if event.calc_checksum(alg) != u32::from_le_bytes(sum) {
                return Err(SourceError::Decode {
                    at: at(&self.file),
                    message: "CRC32 checksum mismatch".into(),
                });
            }
        }
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            // seq_no (8 bytes LE), domain_id (4 bytes LE), flags; server id from the header.
            let data = event.data();
            if data.len() >= 12 {
                let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
                let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
                self.gtid = Some(format!("{domain}-{}-{seq}", header.server_id()));
            }
            self.in_tx = true;
            self.tx_seq = 0;
            return Ok(());
        }
        let data = event.read_data().map_err(|e| SourceError::Decode {
            at: at(&self.file),
            message: e.to_string(),
        })?;
        match data {
            Some(EventData::RotateEvent(rotate)) => {
                self.file = binlog_name(&rotate.name());
            }
            Some(EventData::QueryEvent(query)) => {
                let sql = query.query();
                match sql.trim() {
                    "BEGIN" => {
                        self.in_tx = true;
                    }
                    "COMMIT" => self.commit(next_pos),
                    ddl => {
                        let schema = query.schema().to_string();
                        self.ddl(&schema, ddl, start, header.timestamp()).await;
                        self.commit(next_pos);
                    }
                }
            }
            Some(EventData::XidEvent(_)) => self.commit(next_pos),
            Some(EventData::TableMapEvent(tme)) => {
                let key = (
                    tme.database_name().to_string(),
                    tme.table_name().to_string(),
                );
                if self.captured.contains(&key) {
                    let info = table_info(&tme);
                    self.tables.insert(tme.table_id(), info);
                } else {
                    self.tables.remove(&tme.table_id());
                }
            }
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
                if !self.tables.contains_key(&table_id) {
                    return Ok(());
                }
                let Some(tme) = self.stream.get_tme(table_id) else {
                    return Err(SourceError::Decode {
                        at: at(&self.file),
                        message: format!(
                            "rows event for table id {table_id} without its TABLE_MAP"
                        ),
                    });
                };
                let mut decoded = Vec::new();
                for (i, pair) in rows.rows(tme).enumerate() {
                    let (before, after) = pair.map_err(|e| SourceError::Decode {
                        at: format!("{} row {i}", at(&self.file)),
                        message: e.to_string(),
                    })?;
                    decoded.push((i as u64, before, after));
                }
                for (i, before, after) in decoded {
                    self.push_row(op, table_id, start, i, before, after, header.timestamp());
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn commit(&mut self, next_pos: u64) {
        self.in_tx = false;
        self.complete = self.events.len();
        self.end = Some(Position::Mysql {
            file: self.file.clone(),
            pos: next_pos,
            row: None,
        });
    }

    fn source(&self, db: &Arc<str>, table: &Arc<str>, ts: u32) -> SourceInfo {
        SourceInfo {
            connector: "mysql",
            name: self.pipeline.clone(),
            db: db.clone(),
            schema: db.clone(),
            table: table.clone(),
            ts_ms: ts as i64 * 1000,
            snapshot: false,
            lsn: None,
            commit_lsn: None,
            tx_id: None,
        }
    }

    fn transaction(&mut self) -> Option<TransactionInfo> {
        self.tx_seq += 1;
        Some(TransactionInfo {
            id: self
                .gtid
                .clone()
                .unwrap_or_else(|| format!("{}:{}", self.file, self.end_pos())),
            seq: self.tx_seq,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn push_row(
        &mut self,
        op: Op,
        table_id: u64,
        start: u64,
        index: u64,
        before: Option<BinlogRow>,
        after: Option<BinlogRow>,
        ts: u32,
    ) {
        let Some(info) = self.tables.get(&table_id) else {
            return;
        };
        let convert = |row: &BinlogRow| -> (Row, Vec<Arc<str>>) {
            let mut out = Vec::with_capacity(row.len());
            let present: Vec<String> = row
                .columns_ref()
                .iter()
                .map(|c| c.name_str().into_owned())
                .collect();
            for (j, column) in row.columns_ref().iter().enumerate() {
                let name = column.name_str();
                let idx = info.names.iter().position(|n| **n == *name).unwrap_or(j);
                let per_charset;
                let kind = if column.column_type().is_character_type() {
                    per_charset =
                        MyKind::of(column.column_type(), &[], column.character_set(), None);
                    &per_charset
                } else {
                    info.kinds.get(idx).unwrap_or(&MyKind::Other)
                };
                let value = row
                    .as_ref(j)
                    .map_or(serde_json::Value::Null, |v| kind.to_json(v));
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
                .filter(|n| !present.iter().any(|p| p.as_str() == &***n))
                .cloned()
                .collect();
            (Row(out), missing)
        };
        let before = before.as_ref().map(|r| convert(r).0);
        let (after, unchanged) = match after.as_ref().map(convert) {
            Some((row, missing)) => (Some(row), missing),
            None => (None, Vec::new()),
        };
        let key_of = |row: &Row| -> Option<Row> {
            info.key
                .iter()
                .map(|&i| {
                    let name = info.names.get(i)?;
                    Some((name.clone(), row.get(name)?.clone()))
                })
                .collect::<Option<Vec<_>>>()
                .map(Row)
        };
        let key = after
            .as_ref()
            .and_then(key_of)
            .or_else(|| before.as_ref().and_then(key_of));
        let source = self.source(&info.db, &info.table, ts);
        let position = Position::Mysql {
            file: self.file.clone(),
            pos: start,
            row: Some(index),
        };
        let transaction = self.transaction();
        self.events.push(ChangeEvent {
            op,
            before,
            after,
            unchanged,
            key,
            source,
            position,
            transaction,
            ts_ms: now_ms(),
            ddl: None,
            columns: None,
        });
    }

    /// A DDL statement touching a captured table becomes an `op: "s"` event.
    async fn ddl(&mut self, default_db: &str, sql: &str, start: u64, ts: u32) {
        let lower = sql.to_lowercase();
        let touched: Vec<(String, String)> = self
            .captured
            .iter()
            .filter(|(db, table)| {
                let t = table.to_lowercase();
                let qualified = format!("{}.{}", db.to_lowercase(), t);
                lower.contains(&qualified)
                    || lower.contains(&format!("`{}`.`{}`", db.to_lowercase(), t))
                    || (db == default_db
                        && (lower.contains(&format!(" {t} "))
                            || lower.contains(&format!("`{t}`"))
                            || lower.ends_with(&format!(" {t}"))))
            })
            .cloned()
            .collect();
        for (i, (db, table)) in touched.into_iter().enumerate() {
            let (db, table): (Arc<str>, Arc<str>) = (db.as_str().into(), table.as_str().into());
            let source = self.source(&db, &table, ts);
            let transaction = self.transaction();
            self.events.push(ChangeEvent {
                op: Op::Schema,
                before: None,
                after: None,
                unchanged: Vec::new(),
                key: None,
                source,
                position: Position::Mysql {
                    file: self.file.clone(),
                    pos: start,
                    row: Some(i as u64),
                },
                transaction,
                ts_ms: now_ms(),
                ddl: Some(sql.to_string()),
                // The column list after the change needs the schema history (not yet).
                columns: None,
            });
        }
    }

    pub async fn close(self) {
        if let Err(e) = self.stream.close().await {
            tracing::debug!("binlog stream closed with: {e}");
        }
    }
}

/// The artificial first ROTATE event's name can carry trailing checksum bytes:
/// keep `<base>.<digits>` only.
fn binlog_name(raw: &str) -> String {
    if let Some(dot) = raw.rfind('.') {
        let digits: String = raw[dot + 1..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        return format!("{}.{digits}", &raw[..dot]);
    }
    raw.to_string()
}

/// Column names, kinds and key from a TABLE_MAP event's metadata.
fn table_info(tme: &TableMapEvent<'_>) -> TableInfo {
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
                enums = v
                    .iter_values()
                    .flatten()
                    .map(|e| e.values().iter().map(|x| x.value().into_owned()).collect())
                    .collect();
            }
            OptionalMetadataField::SetStrValue(v) => {
                sets = v
                    .iter_values()
                    .flatten()
                    .map(|e| e.values().iter().map(|x| x.value().into_owned()).collect())
                    .collect();
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
    let count = tme.columns_count() as usize;
    let mut kinds = Vec::with_capacity(count);
    let (mut e, mut s) = (0usize, 0usize);
    for i in 0..count {
        let Ok(Some(ty)) = tme.get_column_type(i) else {
            kinds.push(MyKind::Other);
            continue;
        };
        let meta = tme.get_column_metadata(i).unwrap_or(&[]);
        let labels = if ty.is_enum_type() {
            e += 1;
            enums.get(e - 1).cloned()
        } else if ty.is_enum_or_set_type() {
            s += 1;
            sets.get(s - 1).cloned()
        } else {
            None
        };
        // Character columns get their kind per value, from the charset that
        // mysql_common resolves for the row's columns.
        kinds.push(MyKind::of(ty, meta, 0, labels));
    }
    while names.len() < count {
        names.push(format!("@{}", names.len()).into());
    }
    TableInfo {
        db: tme.database_name().as_ref().into(),
        table: tme.table_name().as_ref().into(),
        names,
        kinds,
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_names_lose_trailing_checksum_bytes() {
        assert_eq!(
            binlog_name("mariadb-bin.000003\u{1}\u{2}x"),
            "mariadb-bin.000003"
        );
        assert_eq!(binlog_name("mariadb-bin.000003"), "mariadb-bin.000003");
    }
}
