//! The binlog event handler: `MysqlSource::handle` checks an event and hands
//! it to the function for its kind (GTIDs, rotation, statements, commits, XA,
//! table maps, rows).
//!
//! Each function keeps the group state of `MysqlSource` (open transaction,
//! GTID, XA phase) as the binlog moves it, so that batches end only at
//! commits and the cursor never passes a change it has not emitted.

use super::rows::{self, DecodedImage};
use super::schema::{self, from_table_map, read_columns, TableColumns};
use super::transaction::{self, Statement};
use super::values::MyKind;
use super::{ddl, MysqlSource};
use crate::event::{now_ms, ChangeEvent, Op, Position, Row};
use crate::SourceError;
use mysql_async::binlog::events::{
    Event, EventData, GtidEvent, OptionalMetadataField, QueryEvent, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use std::sync::Arc;

/// MariaDB's GTID and GTID_LIST event types.
const MARIADB_GTID_EVENT: u8 = 162;
const MARIADB_GTID_LIST_EVENT: u8 = 163;
/// XA_PREPARE_LOG_EVENT (MySQL and MariaDB): the end of an XA transaction's first phase.
const XA_PREPARE_EVENT: u8 = 38;

/// A row's before and after images, as the rows event has them.
type ImagePair = (Option<DecodedImage>, Option<DecodedImage>);

impl MysqlSource {
    /// Handles one binlog event: its checksum first, then by its kind.
    pub(super) async fn handle(&mut self, event: Event) -> Result<(), SourceError> {
        let header = event.header();
        self.event_server_id = header.server_id();
        let next_pos = header.log_pos() as u64;
        let start = next_pos.saturating_sub(header.event_size() as u64);
        self.verify_checksum(&event, start)?;
        // MariaDB's own events and XA_PREPARE, which the parser below does not read.
        match header.event_type_raw() {
            MARIADB_GTID_EVENT => {
                self.mariadb_gtid(event.data(), header.server_id(), start);
                return Ok(());
            }
            XA_PREPARE_EVENT => {
                self.prepare_xa(event.data(), next_pos);
                return Ok(());
            }
            MARIADB_GTID_LIST_EVENT => {
                self.gtid_list(event.data());
                return Ok(());
            }
            _ => {}
        }
        let data = event.read_data().map_err(|e| SourceError::Decode {
            at: self.at(Some(start)),
            message: e.to_string(),
        })?;
        let ts = header.timestamp();
        match data {
            Some(EventData::RotateEvent(_)) => self.file = rotate_name(&event).into(),
            Some(EventData::QueryEvent(query)) => self.query(query, start, next_pos, ts).await?,
            Some(EventData::XidEvent(_)) => self.commit(next_pos),
            // MySQL 5.6+/8 GTIDs (untested here: MariaDB sends its own events).
            Some(EventData::GtidEvent(g)) => self.mysql_gtid(&g, start),
            Some(EventData::TableMapEvent(tme)) => self.table_map(&tme, start)?,
            Some(EventData::RowsEvent(rows)) => self.rows_event(&rows, start, ts)?,
            _ => {}
        }
        Ok(())
    }

    /// Refuses an event whose bytes do not match its CRC32.
    fn verify_checksum(&self, event: &Event, start: u64) -> Result<(), SourceError> {
        if let (Some(sum), Ok(Some(alg))) = (event.checksum(), event.footer().get_checksum_alg()) {
            if event.calc_checksum(alg) != u32::from_le_bytes(sum) {
                return Err(SourceError::Decode {
                    at: self.at(Some(start)),
                    message: "CRC32 checksum mismatch".into(),
                });
            }
        }
        Ok(())
    }

    /// A MariaDB GTID event: a group begins, with this GTID.
    fn mariadb_gtid(&mut self, data: &[u8], server_id: u32, start: u64) {
        // seq_no (8 bytes LE), domain_id (4 bytes LE), flags; the server id is
        // the event header's.
        if let (Some(seq), Some(domain)) = (data.get(0..8), data.get(8..12)) {
            let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
            let domain = u32::from_le_bytes(domain.try_into().unwrap_or_default());
            let id = format!("{domain}-{server_id}-{seq}");
            self.gtid = Some((domain.to_string(), id.clone(), id.into()));
            self.tx_id = None;
        }
        let flags = transaction::mariadb_gtid_flags(data);
        self.explicit_tx = !flags.standalone;
        self.xa_group = flags.xa_prepare;
        self.group_start = start;
        self.in_tx = true;
        self.tx_seq = 0;
    }

    /// A MariaDB GTID_LIST event: the GTID state at the start of a binlog file.
    fn gtid_list(&mut self, data: &[u8]) {
        // Count (low 28 bits of a u32 LE), then (domain u32, server u32, seq
        // u64) entries.
        for (domain, gtid) in parse_gtid_list(data) {
            self.gtid_state.insert(domain.to_string(), gtid);
        }
    }

    /// A MySQL GTID event: a group begins, with this GTID.
    fn mysql_gtid(&mut self, g: &GtidEvent, start: u64) {
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

    /// A QUERY event: a transaction boundary (`BEGIN`, `COMMIT`, XA), a
    /// statement inside a transaction, or a statement of its own (DDL), which
    /// ends its group.
    async fn query(
        &mut self,
        query: QueryEvent<'_>,
        start: u64,
        next_pos: u64,
        ts: u32,
    ) -> Result<(), SourceError> {
        let sql = query.query();
        match transaction::classify(&sql) {
            Statement::Begin => self.begin_explicit(start),
            Statement::XaStart(xid) => {
                self.begin_explicit(start);
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
        Ok(())
    }

    /// `BEGIN` or `XA START`: a group that only a `COMMIT` (or XID) ends.
    fn begin_explicit(&mut self, start: u64) {
        if !self.in_tx {
            self.group_start = start;
        }
        self.in_tx = true;
        self.explicit_tx = true;
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

    /// The GTID state as a cursor records it.
    fn gtid_text(&self) -> Option<String> {
        let gtid: Vec<&str> = self.gtid_state.values().map(String::as_str).collect();
        (!gtid.is_empty()).then(|| gtid.join(","))
    }

    /// The end of a group (an XID event, or a `COMMIT`): the cursor may move
    /// to `next_pos`, unless an XA transaction prepared before is still
    /// waiting for its outcome.
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
            history.complete_wire(&mut columns.wire, sent_metadata(tme));
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

    /// A WRITE, UPDATE or DELETE_ROWS event: an event per row of a captured
    /// table (others are skipped).
    fn rows_event(
        &mut self,
        rows: &RowsEventData<'_>,
        start: u64,
        ts: u32,
    ) -> Result<(), SourceError> {
        let op = row_op(rows);
        let table_id = rows.table_id();
        self.emitted_ms = now_ms();
        let Some(info) = self.tables.get(&table_id) else {
            return Ok(());
        };
        let decoded = self.decode_rows(rows, info, start)?;
        let names = (info.db.clone(), info.table.clone());
        for (i, (before, after)) in decoded.into_iter().enumerate() {
            self.push_row(op, &names, start, i as u64, before, after, ts);
        }
        Ok(())
    }

    /// The images of every row of a rows event, read with the table's layout.
    fn decode_rows(
        &self,
        rows: &RowsEventData<'_>,
        info: &TableColumns,
        start: u64,
    ) -> Result<Vec<ImagePair>, SourceError> {
        if let RowsEventData::PartialUpdateRowsEvent(_) = rows {
            return self.decode_partial_update(rows, info, start);
        }
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
        })
    }

    /// MySQL 8 partial JSON updates: mysql_common's row reader knows that
    /// format (untested here: no MySQL 8).
    fn decode_partial_update(
        &self,
        rows: &RowsEventData<'_>,
        info: &TableColumns,
        start: u64,
    ) -> Result<Vec<ImagePair>, SourceError> {
        let table_id = rows.table_id();
        let Some(tme) = self.stream.as_ref().and_then(|s| s.get_tme(table_id)) else {
            return Err(SourceError::Decode {
                at: self.at(Some(start)),
                message: format!("rows event for table id {table_id} without its TABLE_MAP"),
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
        Ok(decoded)
    }
}

/// Which optional TABLE_MAP metadata the server sent (what the schema history
/// must not override).
fn sent_metadata(tme: &TableMapEvent<'_>) -> schema::SentMetadata {
    let mut sent = schema::SentMetadata::default();
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::Signedness(_) => sent.signedness = true,
            OptionalMetadataField::DefaultCharset(_) | OptionalMetadataField::ColumnCharset(_) => {
                sent.charsets = true
            }
            _ => {}
        }
    }
    sent
}

/// The change a rows event's rows make.
fn row_op(rows: &RowsEventData<'_>) -> Op {
    match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Create,
        RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
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
