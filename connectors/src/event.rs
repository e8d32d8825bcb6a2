//! The change-event model every connector produces and every sink writes.
//!
//! One [`ChangeEvent`] is one row change (or one schema change), serialized as the
//! Debezium-compatible JSON envelope of `shared/design/EVENTS.md`. A [`Position`]
//! says where in the source log an event (or a cursor) is; its [`Display`] form is
//! the byte-comparable `position` string consumers use to drop duplicates.

use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A row read by a snapshot.
    Read,
    Truncate,
    /// A schema change (columns added, dropped or retyped).
    Schema,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Schema => "s",
        }
    }
}

/// Where a source is. Ordered within one log only.
///
/// For Postgres, `commit_lsn` is the LSN of the commit record of the event's
/// transaction and `lsn` the LSN of the change itself; only commit LSNs are
/// monotonic across transactions, so ordering compares `commit_lsn` first. A cursor
/// stores the position of a transaction's end: `lsn` is then the commit's end LSN,
/// the point streaming restarts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Postgres {
        commit_lsn: u64,
        lsn: u64,
        /// Set on snapshot rows only: the row's ordinal within the snapshot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot_row: Option<u64>,
    },
    /// A MySQL/MariaDB binlog position: `pos` is an event's start offset in
    /// `file` (for a cursor: where reading resumes), `row` the row's index within
    /// a rows event (events only).
    /// Query-based capture: the watermark of every polled table.
    Poll {
        tables: std::collections::BTreeMap<String, Watermark>,
    },
    Mysql {
        file: String,
        pos: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        row: Option<u64>,
        /// Cursors only: the GTID state at this point (MariaDB `domain-server-seq`
        /// list), for resuming when the file is gone or unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gtid: Option<String>,
    },
}

/// Where polling a table has got to: the last `(cursor value, key)` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The cursor column's value as the database prints it (used in queries).
    pub value: String,
    /// The same value in a form that sorts byte-wise (fixed-width).
    pub sort: String,
    /// The key columns' values, as the database prints them.
    pub key: Vec<String>,
}

impl Watermark {
    /// What orders two watermarks of one table: the sortable cursor value, then
    /// the key values with integers zero-padded (so `9` sorts before `10`).
    pub fn order(&self) -> (&str, Vec<String>) {
        (
            &self.sort,
            self.key.iter().map(|k| sortable_key(k)).collect(),
        )
    }
}

/// A key value in a byte-comparable form: integers offset and zero-padded to 20
/// digits, anything else as is.
pub fn sortable_key(key: &str) -> String {
    match key.parse::<i64>() {
        Ok(n) => format!("{:020}", (n as i128 + i64::MAX as i128 + 1) as u128),
        Err(_) => key.to_string(),
    }
}

/// The numeric suffix of a binlog file name (`mariadb-bin.000042` → 42).
pub fn binlog_index(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Position {
    /// A streaming position in Postgres' WAL.
    pub fn postgres(commit_lsn: u64, lsn: u64) -> Self {
        Position::Postgres {
            commit_lsn,
            lsn,
            snapshot_row: None,
        }
    }
}

/// The byte-comparable form: `pg:<commit lsn>:<lsn>`, fixed-width upper-case hex.
/// Snapshot rows read at consistent point `P` are `pg:<P>:0000000000000000:<row>`,
/// which sorts before every change streamed from `P` on (those have a non-zero lsn).
/// MySQL: `my:<binlog file index>:<event offset>:<row index>`.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Formatted by hand: this runs for every event written.
        let mut buf = [0u8; 64];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        match self {
            Position::Postgres {
                commit_lsn,
                lsn,
                snapshot_row,
            } => {
                put(b"pg:");
                put(&hex::<16>(*commit_lsn));
                put(b":");
                put(&hex::<16>(*lsn));
                if let Some(row) = snapshot_row {
                    put(b":");
                    put(&hex::<16>(*row));
                }
            }
            Position::Poll { tables } => {
                // Per table: `table=<sortable cursor value>:<key>...`; numeric key
                // values are zero-padded so ties on the cursor sort by key.
                let parts: Vec<String> = tables
                    .iter()
                    .map(|(t, w)| {
                        let mut part = format!("{t}={}", w.sort);
                        for k in &w.key {
                            match k.parse::<i64>() {
                                Ok(n) => part.push_str(&format!(
                                    ":{:020}",
                                    (n as i128 + i64::MAX as i128 + 1) as u128
                                )),
                                Err(_) => {
                                    part.push(':');
                                    part.push_str(k);
                                }
                            }
                        }
                        part
                    })
                    .collect();
                return write!(f, "poll:{}", parts.join(","));
            }
            Position::Mysql { file, pos, row, .. } => {
                put(b"my:");
                put(&hex::<8>(binlog_index(file)));
                put(b":");
                put(&hex::<16>(*pos));
                match row {
                    Some(row) if *row > u32::MAX as u64 => {
                        put(b":");
                        put(&hex::<16>(*row));
                    }
                    Some(row) => {
                        put(b":");
                        put(&hex::<8>(*row));
                    }
                    None => {}
                }
            }
        }
        // Only ASCII hex digits and separators were written.
        f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

/// Upper-case hex of the low `N * 4` bits, zero-padded to `N` digits.
fn hex<const N: usize>(mut value: u64) -> [u8; N] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xF) as usize];
        value >>= 4;
    }
    out
}

/// A Postgres LSN in its usual `XXX/XXXXXXXX` text form.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses `XXX/XXXXXXXX` into a 64-bit LSN.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// Column values of one row, in table order. Names are shared with the table's
/// schema, so a row costs one allocation per value at most.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub Vec<(Arc<str>, Value)>);

impl Row {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| &**n == column).map(|(_, v)| v)
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(&**name, value)?;
        }
        map.end()
    }
}

/// A column as described by a schema-change event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnInfo {
    pub name: Arc<str>,
    #[serde(rename = "type")]
    pub type_name: String,
    pub key: bool,
}

/// Where a change came from: the `source` block of the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// `postgres`, `mysql`, ...
    pub connector: &'static str,
    /// The pipeline name.
    pub name: Arc<str>,
    pub db: Arc<str>,
    pub schema: Arc<str>,
    pub table: Arc<str>,
    /// Source commit time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub snapshot: bool,
    /// Postgres only: the change's LSN, its transaction's commit LSN and xid.
    pub lsn: Option<u64>,
    pub commit_lsn: Option<u64>,
    pub tx_id: Option<u32>,
    /// Query-based capture: the cursor column's value.
    pub watermark: Option<String>,
}

impl Serialize for SourceInfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("source", 11)?;
        st.serialize_field("connector", self.connector)?;
        st.serialize_field("name", &*self.name)?;
        st.serialize_field("db", &*self.db)?;
        st.serialize_field("schema", &*self.schema)?;
        st.serialize_field("table", &*self.table)?;
        st.serialize_field("ts_ms", &self.ts_ms)?;
        st.serialize_field("snapshot", &self.snapshot)?;
        if let Some(lsn) = self.lsn {
            st.serialize_field("lsn", &lsn)?;
        }
        if let Some(commit_lsn) = self.commit_lsn {
            st.serialize_field("commit_lsn", &commit_lsn)?;
        }
        if let Some(tx_id) = self.tx_id {
            st.serialize_field("txId", &tx_id)?;
        }
        if let Some(watermark) = &self.watermark {
            st.serialize_field("watermark", watermark)?;
        }
        st.end()
    }
}

/// The source transaction and the event's 1-based ordinal within it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransactionInfo {
    pub id: String,
    pub seq: u64,
}

/// One change, as emitted downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    pub before: Option<Row>,
    pub after: Option<Row>,
    /// Columns whose value the source did not send (absent from `after`).
    pub unchanged: Vec<Arc<str>>,
    pub key: Option<Row>,
    pub source: SourceInfo,
    pub position: Position,
    pub transaction: Option<TransactionInfo>,
    /// When the daemon emitted the event, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Schema events only: the statement, where the source logs it.
    pub ddl: Option<String>,
    /// Schema events only: the table's columns after the change.
    pub columns: Option<Vec<ColumnInfo>>,
}

impl ChangeEvent {
    /// `schema.table`, as used in logs and partition keys.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.source.schema, self.source.table)
    }
}

impl Serialize for ChangeEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("event", 11)?;
        st.serialize_field("op", self.op.code())?;
        if self.op != Op::Schema {
            st.serialize_field("before", &self.before)?;
            st.serialize_field("after", &self.after)?;
        }
        if !self.unchanged.is_empty() {
            let names: Vec<&str> = self.unchanged.iter().map(|n| &**n).collect();
            st.serialize_field("unchanged", &names)?;
        }
        if let Some(key) = &self.key {
            st.serialize_field("key", key)?;
        }
        st.serialize_field("source", &self.source)?;
        st.serialize_field("position", &self.position.to_string())?;
        if let Some(tx) = &self.transaction {
            st.serialize_field("transaction", tx)?;
        }
        st.serialize_field("ts_ms", &self.ts_ms)?;
        if self.op == Op::Schema {
            st.serialize_field("ddl", &self.ddl)?;
            st.serialize_field("columns", &self.columns)?;
        }
        st.end()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A run of events handed to a sink together.
///
/// `end` is set when the batch ends on a transaction boundary: it is the position
/// a cursor may be committed at once the sink has made the batch durable. Batches
/// that split a large transaction (or a snapshot) carry `end: None`, so the cursor
/// never names the middle of a transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<ChangeEvent>,
    pub end: Option<Position>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sort_bytewise_in_log_order() {
        let snap = Position::Postgres {
            commit_lsn: 0x100,
            lsn: 0,
            snapshot_row: Some(5),
        };
        let first = Position::postgres(0x100, 0x90);
        let later = Position::postgres(0x1_0000_0000, 0x20);
        assert!(snap.to_string() < first.to_string());
        assert!(first.to_string() < later.to_string());
        assert_eq!(first.to_string(), "pg:0000000000000100:0000000000000090");
    }

    #[test]
    fn lsn_text_round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
