//! Positions: where a source is, as one typed value with one ordering.
//!
//! A [`Position`] says where an event (or a cursor) is in its source's log. What
//! orders positions is its [`PositionKey`]: the only place in tidemark that
//! decides what comes after what. Positions of one log are totally ordered;
//! positions of different logs (a Postgres position and a binlog one) are not
//! ordered at all (`None`). The text form (`position` in every event) is derived
//! from the key, sorts byte-wise in the same order, and parses back into the key
//! ([`PositionKey::parse`]), so a position read from a sink file, a Kinesis record
//! or a target's `tidemark_applied` row is compared the same way as a live one.
//!
//! Text forms (fixed-width upper-case hex):
//! - Postgres change: `pg:<commit lsn>:<lsn>:<ordinal>`, the ordinal being the
//!   event's 1-based place in its transaction. The rows of one `COPY` or
//!   multi-row insert share a WAL record and so an LSN; the ordinal tells them
//!   apart, so no two events share a position.
//! - Postgres snapshot row read at consistent point `P`: `pg:<P>:0000000000000000:<row>`
//!   (row ordinal within the whole snapshot), before every change streamed from `P`.
//! - Postgres transaction end (cursors): `pg:<commit lsn>:<end lsn>`, after every
//!   change of that transaction. Event lines written before the ordinal existed
//!   (`pg:<commit lsn>:<lsn>`) read as a transaction end at `<lsn>`: they sort
//!   before every change at that LSN, so a resume over them repeats, never skips.
//! - MySQL/MariaDB: `my:<binlog file index>:<event offset>[:<row index>]`.
//! - Polling: `poll:<table>=<sortable watermark>:<key>...`; ordered per table
//!   through the watermark, not parsed back from text (values may hold `:`).
//! - Apply from Kinesis keeps its progress in a shard's own terms:
//!   `<sequence number, 64 digits>:<line in the record, 6 digits>`
//!   ([`PositionKey::shard_text`]).

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where a source is. Ordered within one log only (see [`Position::key`]).
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
        /// Set on streamed changes only: the event's 1-based ordinal within its
        /// transaction (several changes may share an LSN).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// Query-based capture: the watermark of every polled table.
    Poll { tables: BTreeMap<String, Watermark> },
    /// A MySQL/MariaDB binlog position: `pos` is an event's start offset in
    /// `file` (for a cursor: where reading resumes), `row` the row's index within
    /// a rows event (events only).
    Mysql {
        file: Arc<str>,
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
    /// Key scans (`delete_detection = "keyscan"`) whose deletes were emitted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scans: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    // By hand: this runs for every event written.
    let bytes = file.as_bytes();
    let digits = bytes
        .iter()
        .rposition(|b| *b == b'.')
        .map_or(bytes, |dot| &bytes[dot + 1..]);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'))
}

/// What orders positions: the parts of a [`Position`] that say what comes after
/// what, and nothing else (a cursor's GTID state, a watermark's query text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionKey {
    /// `ordinal` is the event's place in its transaction (streamed changes) or
    /// in the snapshot (snapshot rows, at `lsn` 0); `None` for a transaction end.
    Postgres {
        commit_lsn: u64,
        lsn: u64,
        ordinal: Option<u64>,
    },
    /// `row` is the row's index in its rows event; `None` for a cursor (where
    /// reading resumes), which comes before every row at that offset.
    Mysql {
        file_index: u64,
        pos: u64,
        row: Option<u64>,
    },
    /// Per table: the sortable watermark and the key values, sortable.
    Poll(BTreeMap<String, (String, Vec<String>)>),
    /// A Kinesis shard: the record's sequence number, zero-padded to 64
    /// digits, and the event's line in the record.
    Shard { sequence: String, line: u64 },
}

impl PartialOrd for PositionKey {
    /// Total within one log; `None` across logs. Polled positions are ordered
    /// table by table: greater when any table moved forward, less when one
    /// moved back and none forward, or when the other covers more tables.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        use PositionKey::*;
        match (self, other) {
            (
                Postgres {
                    commit_lsn: ca,
                    lsn: la,
                    ordinal: oa,
                },
                Postgres {
                    commit_lsn: cb,
                    lsn: lb,
                    ordinal: ob,
                },
            ) => Some((ca, la, oa).cmp(&(cb, lb, ob))),
            (
                Mysql {
                    file_index: fa,
                    pos: pa,
                    row: ra,
                },
                Mysql {
                    file_index: fb,
                    pos: pb,
                    row: rb,
                },
            ) => Some((fa, pa, ra).cmp(&(fb, pb, rb))),
            (
                Shard {
                    sequence: sa,
                    line: la,
                },
                Shard {
                    sequence: sb,
                    line: lb,
                },
            ) => Some((sa, la).cmp(&(sb, lb))),
            (Poll(ta), Poll(tb)) => {
                let mut order = Ordering::Equal;
                for (table, wa) in ta {
                    let Some(wb) = tb.get(table) else { continue };
                    match wa.cmp(wb) {
                        Ordering::Greater => return Some(Ordering::Greater),
                        Ordering::Less => order = Ordering::Less,
                        Ordering::Equal => {}
                    }
                }
                if order == Ordering::Equal && tb.len() > ta.len() {
                    order = Ordering::Less;
                }
                Some(order)
            }
            _ => None,
        }
    }
}

/// A position text that is not one tidemark writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable position {text:?}: {reason}")]
pub struct PositionError {
    pub text: String,
    pub reason: &'static str,
}

const SHARD_DIGITS: usize = 64;
const SHARD_LINE_DIGITS: usize = 6;

impl PositionKey {
    /// The text of an event's place in a Kinesis shard: line `line` of the
    /// record with sequence number `sequence` (decimal digits).
    pub fn shard_text(sequence: &str, line: usize) -> String {
        format!("{sequence:0>SHARD_DIGITS$}:{line:0SHARD_LINE_DIGITS$}")
    }

    /// Reads the key back from a position's text form. Polled positions are
    /// not read back (`Ok(None)`): their values may hold any character, and
    /// only the poll source, which holds them typed, orders them.
    pub fn parse(text: &str) -> Result<Option<PositionKey>, PositionError> {
        let fail = |reason| PositionError {
            text: text.chars().take(80).collect(),
            reason,
        };
        let Some((log, rest)) = text.split_once(':') else {
            return Err(fail("no log prefix (pg:, my:, poll:)"));
        };
        if log.len() == SHARD_DIGITS && log.bytes().all(|b| b.is_ascii_digit()) {
            return match rest.parse::<u64>() {
                Ok(line) if rest.len() == SHARD_LINE_DIGITS => Ok(Some(PositionKey::Shard {
                    sequence: log.to_string(),
                    line,
                })),
                _ => Err(fail("a shard position's line is not 6 digits")),
            };
        }
        let number = |part: Option<&str>, width: &[usize]| -> Result<Option<u64>, PositionError> {
            match part {
                None => Ok(None),
                Some(p) if width.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u64::from_str_radix(p, 16)
                        .map(Some)
                        .map_err(|_| fail("a part is not hex"))
                }
                Some(_) => Err(fail("a part is not fixed-width hex")),
            }
        };
        let mut parts = rest.split(':');
        let key = match log {
            "pg" => {
                let commit_lsn = number(parts.next(), &[16])?.ok_or_else(|| fail("no LSN"))?;
                let lsn = number(parts.next(), &[16])?.ok_or_else(|| fail("no LSN"))?;
                let ordinal = number(parts.next(), &[16])?;
                PositionKey::Postgres {
                    commit_lsn,
                    lsn,
                    ordinal,
                }
            }
            "my" => {
                let file_index =
                    number(parts.next(), &[8])?.ok_or_else(|| fail("no binlog file index"))?;
                let pos = number(parts.next(), &[16])?.ok_or_else(|| fail("no offset"))?;
                let row = number(parts.next(), &[8, 16])?;
                PositionKey::Mysql {
                    file_index,
                    pos,
                    row,
                }
            }
            "poll" => return Ok(None),
            _ => return Err(fail("unknown log prefix")),
        };
        if parts.next().is_some() {
            return Err(fail("too many parts"));
        }
        Ok(Some(key))
    }
}

impl Position {
    /// A streaming position in Postgres' WAL: a transaction's end (cursors).
    pub fn postgres(commit_lsn: u64, lsn: u64) -> Self {
        Position::Postgres {
            commit_lsn,
            lsn,
            snapshot_row: None,
            seq: None,
        }
    }

    /// A streamed Postgres change: the `seq`-th event of its transaction.
    pub fn postgres_change(commit_lsn: u64, lsn: u64, seq: u64) -> Self {
        Position::Postgres {
            commit_lsn,
            lsn,
            snapshot_row: None,
            seq: Some(seq),
        }
    }

    /// What orders this position (see the module doc).
    pub fn key(&self) -> PositionKey {
        match self {
            Position::Postgres {
                commit_lsn,
                lsn,
                snapshot_row,
                seq,
            } => PositionKey::Postgres {
                commit_lsn: *commit_lsn,
                lsn: *lsn,
                ordinal: snapshot_row.or(*seq),
            },
            Position::Mysql { file, pos, row, .. } => PositionKey::Mysql {
                file_index: binlog_index(file),
                pos: *pos,
                row: *row,
            },
            Position::Poll { tables } => PositionKey::Poll(
                tables
                    .iter()
                    .map(|(table, w)| {
                        let (sort, key) = w.order();
                        (table.clone(), (sort.to_string(), key))
                    })
                    .collect(),
            ),
        }
    }

    /// Orders two positions of the same log; `None` when they are of different logs.
    pub fn order(&self, other: &Position) -> Option<Ordering> {
        self.key().partial_cmp(&other.key())
    }

    /// Appends the position's text (what `Display` gives): its key's.
    pub(crate) fn write_text(&self, out: &mut Vec<u8>) {
        self.key().write_text(out);
    }
}

impl PositionKey {
    /// Appends the text form (see the module doc). Written by hand: this runs
    /// for every event written.
    pub(crate) fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            PositionKey::Postgres {
                commit_lsn,
                lsn,
                ordinal,
            } => {
                out.extend_from_slice(b"pg:");
                out.extend_from_slice(&hex::<16>(*commit_lsn));
                out.push(b':');
                out.extend_from_slice(&hex::<16>(*lsn));
                if let Some(ordinal) = ordinal {
                    out.push(b':');
                    out.extend_from_slice(&hex::<16>(*ordinal));
                }
            }
            PositionKey::Poll(tables) => {
                // Per table: `table=<sortable cursor value>:<key>...`; numeric key
                // values are zero-padded so ties on the cursor sort by key.
                out.extend_from_slice(b"poll:");
                for (i, (table, (sort, key))) in tables.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(table.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(sort.as_bytes());
                    for value in key {
                        out.push(b':');
                        out.extend_from_slice(value.as_bytes());
                    }
                }
            }
            PositionKey::Mysql {
                file_index,
                pos,
                row,
            } => {
                out.extend_from_slice(b"my:");
                out.extend_from_slice(&hex::<8>(*file_index));
                out.push(b':');
                out.extend_from_slice(&hex::<16>(*pos));
                match row {
                    Some(row) if *row > u32::MAX as u64 => {
                        out.push(b':');
                        out.extend_from_slice(&hex::<16>(*row));
                    }
                    Some(row) => {
                        out.push(b':');
                        out.extend_from_slice(&hex::<8>(*row));
                    }
                    None => {}
                }
            }
            PositionKey::Shard { sequence, line } => {
                out.extend_from_slice(sequence.as_bytes());
                out.extend_from_slice(format!(":{line:0SHARD_LINE_DIGITS$}").as_bytes());
            }
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(64);
        self.write_text(&mut text);
        // Hex digits and separators, and the poll source's table names and
        // values, which are UTF-8.
        f.write_str(&String::from_utf8_lossy(&text))
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

/// True when `position` (one polled table's) comes after `written`, the text
/// of a position of the same table read back from a sink. Poll texts are not
/// parsed back (see the module doc), but for one table they sort byte-wise in
/// the watermark's order: the sortable value is fixed-width and key values
/// are padded ([`sortable_key`]), so the text decides here.
pub(crate) fn poll_written_after(position: &Position, written: &str) -> bool {
    let mut text = Vec::with_capacity(64);
    position.write_text(&mut text);
    text.as_slice() > written.as_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &Position) -> PositionKey {
        PositionKey::parse(&p.to_string())
            .expect("readable")
            .expect("not a poll position")
    }

    #[test]
    fn positions_sort_bytewise_in_log_order() {
        let snap = Position::Postgres {
            commit_lsn: 0x100,
            lsn: 0,
            snapshot_row: Some(5),
            seq: None,
        };
        let first = Position::postgres_change(0x100, 0x90, 1);
        let later = Position::postgres_change(0x1_0000_0000, 0x20, 1);
        assert!(snap.to_string() < first.to_string());
        assert!(first.to_string() < later.to_string());
        assert_eq!(
            first.to_string(),
            "pg:0000000000000100:0000000000000090:0000000000000001"
        );
    }

    #[test]
    fn rows_sharing_an_lsn_have_distinct_ordered_positions() {
        // The rows of one COPY: one WAL record, one LSN, consecutive ordinals.
        let rows: Vec<Position> = (1..=3)
            .map(|seq| Position::postgres_change(0x500, 0x400, seq))
            .collect();
        let end = Position::postgres(0x500, 0x520);
        for pair in rows.windows(2) {
            assert_ne!(pair[0].to_string(), pair[1].to_string());
            assert!(pair[0].to_string() < pair[1].to_string());
            assert_eq!(pair[0].order(&pair[1]), Some(Ordering::Less));
        }
        assert_eq!(rows[2].order(&end), Some(Ordering::Less));
        // A line written before ordinals existed sorts before every row at its LSN.
        let old = PositionKey::parse("pg:0000000000000500:0000000000000400")
            .unwrap()
            .unwrap();
        assert!(rows
            .iter()
            .all(|r| r.key().partial_cmp(&old) == Some(Ordering::Greater)));
    }

    #[test]
    fn text_parses_back_into_the_key_and_orders_the_same() {
        let positions = [
            Position::Postgres {
                commit_lsn: 0x100,
                lsn: 0,
                snapshot_row: Some(7),
                seq: None,
            },
            Position::postgres(0x100, 0x100),
            Position::postgres_change(0x200, 0x180, 1),
            Position::postgres_change(0x200, 0x180, 2),
            Position::postgres(0x200, 0x228),
        ];
        let binlog = |file: &str, pos, row| Position::Mysql {
            file: file.into(),
            pos,
            row,
            gtid: Some("0-1-5".into()),
        };
        let binlogs = [
            binlog("bin.000009", 4, None),
            binlog("bin.000009", 900, Some(0)),
            binlog("bin.000009", 900, Some(1)),
            binlog("bin.000009", 1200, None),
            binlog("bin.000010", 4, None),
        ];
        for log in [&positions[..], &binlogs[..]] {
            for a in log {
                assert_eq!(key(a), a.key(), "{a}");
                for b in log {
                    let typed = a.order(b);
                    assert_eq!(typed, Some(a.to_string().cmp(&b.to_string())), "{a} {b}");
                    assert_eq!(key(a).partial_cmp(&key(b)), typed);
                }
            }
        }
        // Different logs are never ordered.
        assert_eq!(positions[0].order(&binlogs[0]), None);
    }

    #[test]
    fn unreadable_texts_are_errors() {
        for text in [
            "",
            "pg",
            "pg:12",
            "pg:zz00000000000000:0000000000000000",
            "xx:1:2",
            "my:00000001:0000000000000004:00000000:1",
        ] {
            assert!(PositionKey::parse(text).is_err(), "{text}");
        }
        assert_eq!(PositionKey::parse("poll:public.t=1:2"), Ok(None));
        assert!(PositionKey::parse(&format!("{}:12", "0".repeat(64))).is_err());
    }

    #[test]
    fn shard_positions_order_by_sequence_number_then_line() {
        let texts = [
            PositionKey::shard_text("9", 1),
            PositionKey::shard_text("9", 2),
            PositionKey::shard_text("10", 0),
            PositionKey::shard_text(
                "49590338271490256608559692538361571095921575989136588898",
                0,
            ),
        ];
        for pair in texts.windows(2) {
            let (a, b) = (
                PositionKey::parse(&pair[0]).unwrap().unwrap(),
                PositionKey::parse(&pair[1]).unwrap().unwrap(),
            );
            assert_eq!(a.partial_cmp(&b), Some(Ordering::Less), "{pair:?}");
            assert!(pair[0] < pair[1]);
        }
    }

    #[test]
    fn lsn_text_round_trips() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
    }

    fn poll(sort: &str, key: &str) -> Position {
        Position::Poll {
            tables: [(
                "public.t".to_string(),
                Watermark {
                    value: String::new(),
                    sort: sort.into(),
                    key: vec![key.into()],
                    scans: 0,
                },
            )]
            .into(),
        }
    }

    #[test]
    fn poll_watermarks_order_numeric_keys_as_numbers() {
        let ts = "2026-11-21T10:00:00.000000Z";
        assert_eq!(poll(ts, "9").order(&poll(ts, "10")), Some(Ordering::Less));
        assert_eq!(
            poll(ts, "10").order(&poll(ts, "9")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            poll(ts, "10").order(&poll("2026-11-21T10:00:01.000000Z", "1")),
            Some(Ordering::Less)
        );
        assert!(poll(ts, "9").to_string() < poll(ts, "10").to_string());
    }
}
