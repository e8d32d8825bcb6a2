//! Where MySQL/MariaDB transactions end in the binlog, and XA transactions
//! held between their `XA PREPARE` and their outcome.
//!
//! Only what ends a transaction ends one: an XID event, a `COMMIT` (or
//! `ROLLBACK`) query, the `XA PREPARE` event that closes an XA transaction's
//! first phase, an `XA COMMIT`/`XA ROLLBACK` query, or the single statement of
//! a standalone group (DDL). `SAVEPOINT`, `ROLLBACK TO SAVEPOINT` and other
//! statements inside a transaction neither end it nor change a row.
//!
//! **XA.** The rows of an XA transaction are in the binlog before its outcome
//! is known (MariaDB logs its first phase, ended by `XA PREPARE`, as a group of
//! its own; the `XA COMMIT` or `XA ROLLBACK` comes later, in another group).
//! They are kept in memory, by XID, and emitted only at `XA COMMIT`, positioned
//! at that query (so the sink's positions still only grow); `XA ROLLBACK`
//! drops them. Meanwhile the cursor does not pass the start of the oldest
//! prepared transaction whose outcome has not been read: after a crash the
//! stream starts there again and reads the rows anew. What was emitted in
//! between is read again too (the file sink skips what it holds; Kinesis
//! consumers see at-least-once repeats with the same positions).
//!
//! Limit: an XA transaction prepared before capture started (no cursor, or a
//! snapshot taken while it was prepared) has no rows to emit at its commit;
//! that is logged as an error naming the XID.

use crate::event::ChangeEvent;
use crate::position::Position;

/// What a binlog query event means for transaction boundaries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Statement<'a> {
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT`, `ROLLBACK TO [SAVEPOINT]`, `RELEASE SAVEPOINT`.
    Savepoint,
    /// MySQL logs `XA START` as a query (MariaDB flags its GTID event).
    XaStart(&'a str),
    XaEnd,
    XaCommit(&'a str),
    XaRollback(&'a str),
    /// Anything else: DDL (standalone), or a statement inside a transaction.
    Other,
}

/// `prefix` case-insensitively at the start of `sql`, followed by a word end.
fn after_keyword<'a>(sql: &'a str, prefix: &str) -> Option<&'a str> {
    let head = sql.get(..prefix.len())?;
    let rest = &sql[prefix.len()..];
    (head.eq_ignore_ascii_case(prefix)
        && rest
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_'))
    .then(|| rest.trim())
}

/// Classifies a query event's statement.
pub(crate) fn classify<'a>(sql: &'a str) -> Statement<'a> {
    let sql = sql.trim();
    if after_keyword(sql, "BEGIN").is_some_and(str::is_empty) {
        return Statement::Begin;
    }
    if after_keyword(sql, "COMMIT").is_some_and(str::is_empty) {
        return Statement::Commit;
    }
    if let Some(rest) = after_keyword(sql, "ROLLBACK") {
        let rest = after_keyword(rest, "WORK").unwrap_or(rest);
        return if rest.is_empty() {
            Statement::Rollback
        } else if after_keyword(rest, "TO").is_some() {
            Statement::Savepoint
        } else {
            Statement::Other
        };
    }
    if after_keyword(sql, "SAVEPOINT").is_some() {
        return Statement::Savepoint;
    }
    if after_keyword(sql, "RELEASE").is_some_and(|r| after_keyword(r, "SAVEPOINT").is_some()) {
        return Statement::Savepoint;
    }
    if let Some(rest) = after_keyword(sql, "XA") {
        let xid = |rest: &'a str| -> &'a str {
            // `XA COMMIT xid ONE PHASE`: the XID is what comes before.
            let upper = rest.len().saturating_sub(" ONE PHASE".len());
            match rest.get(upper..) {
                Some(tail) if tail.eq_ignore_ascii_case(" ONE PHASE") => rest[..upper].trim(),
                _ => rest,
            }
        };
        for (word, make) in [
            ("START", Statement::XaStart as fn(&'a str) -> Statement<'a>),
            ("BEGIN", Statement::XaStart),
            ("COMMIT", Statement::XaCommit),
            ("ROLLBACK", Statement::XaRollback),
        ] {
            if let Some(rest) = after_keyword(rest, word) {
                return make(xid(rest));
            }
        }
        if after_keyword(rest, "END").is_some() {
            return Statement::XaEnd;
        }
    }
    Statement::Other
}

/// An XID as the binlog's XA queries print it: `X'<gtrid>',X'<bqual>',<format id>`
/// (hex in lower case; XIDs are compared without regard to case).
pub(crate) fn xid_text(format_id: u32, gtrid: &[u8], bqual: &[u8]) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("X'{}',X'{}',{format_id}", hex(gtrid), hex(bqual))
}

/// Reads `format id (u32), gtrid length, bqual length, data` with the lengths
/// `len_bytes` wide (1 in a MariaDB GTID event, 4 in an XA_PREPARE event).
fn read_xid(data: &[u8], len_bytes: usize) -> Option<String> {
    let format_id = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let len = |at: usize| -> Option<usize> {
        let bytes = data.get(at..at + len_bytes)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0usize, |n, b| (n << 8) | usize::from(*b)),
        )
    };
    let gtrid_len = len(4)?;
    let bqual_len = len(4 + len_bytes)?;
    let start = 4 + 2 * len_bytes;
    let gtrid = data.get(start..start + gtrid_len)?;
    let bqual = data.get(start + gtrid_len..start + gtrid_len + bqual_len)?;
    Some(xid_text(format_id, gtrid, bqual))
}

/// The flags of a MariaDB GTID event that matter for boundaries.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GtidFlags {
    /// No `COMMIT`/XID ends the group: it is one statement (DDL, XA outcome).
    pub standalone: bool,
    /// The group is the first phase of this XA transaction (ends with XA_PREPARE).
    pub xa_prepare: Option<String>,
}

const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;

/// Reads the flags of a MariaDB GTID event body: `seq_no` (8), `domain_id`
/// (4), `flags2` (1), a commit id (8) when flagged, then the XID when flagged.
pub(crate) fn mariadb_gtid_flags(data: &[u8]) -> GtidFlags {
    let Some(&flags) = data.get(12) else {
        return GtidFlags::default();
    };
    let xid_at = if flags & FL_GROUP_COMMIT_ID != 0 {
        21
    } else {
        13
    };
    GtidFlags {
        standalone: flags & FL_STANDALONE != 0,
        xa_prepare: (flags & FL_PREPARED_XA != 0)
            .then(|| data.get(xid_at..).and_then(|xid| read_xid(xid, 1)))
            .flatten(),
    }
}

/// The XID of an XA_PREPARE event body: `one_phase` (1), then the XID with
/// 4-byte lengths.
pub(crate) fn xa_prepare_xid(data: &[u8]) -> Option<String> {
    read_xid(data.get(1..)?, 4)
}

/// The first MariaDB GTID (`domain-server-seq`) of `cursor` that the server's
/// `@@gtid_binlog_pos` does not reach: a transaction the cursor has read but
/// the server's binlog no longer knows (after `RESET MASTER`, or on another
/// server). `None` when every domain of the cursor is at or behind the
/// server's. MySQL UUID sets (`uuid:1-5`) are not compared.
pub(crate) fn gtid_forgotten<'a>(cursor: &'a str, server: &str) -> Option<&'a str> {
    let parse = |entry: &str| -> Option<(u32, u64)> {
        let mut parts = entry.trim().split('-');
        let domain = parts.next()?.parse().ok()?;
        let _server_id = parts.next()?;
        Some((domain, parts.next()?.parse().ok()?))
    };
    let known: Vec<(u32, u64)> = server.split(',').filter_map(parse).collect();
    cursor.split(',').find(|entry| {
        parse(entry).is_some_and(|(domain, seq)| {
            !known
                .iter()
                .any(|(d, server_seq)| *d == domain && *server_seq >= seq)
        })
    })
}

/// An XA transaction read up to its `XA PREPARE`, waiting for its outcome.
pub(crate) struct PreparedXa {
    pub xid: String,
    pub rows: Vec<ChangeEvent>,
    /// Where its group started: the cursor stays at or before it meanwhile.
    pub hold: Position,
}

/// XA transactions prepared and not yet resolved, oldest first.
#[derive(Default)]
pub(crate) struct Prepared(Vec<PreparedXa>);

impl Prepared {
    pub(super) fn push(&mut self, xa: PreparedXa) {
        self.0.push(xa);
    }

    /// Takes the rows of `xid` out (its outcome was read).
    pub(super) fn resolve(&mut self, xid: &str) -> Option<Vec<ChangeEvent>> {
        let at = self
            .0
            .iter()
            .position(|xa| xa.xid.eq_ignore_ascii_case(xid))?;
        Some(self.0.remove(at).rows)
    }

    /// Where the cursor must stay: the start of the oldest one.
    pub(super) fn hold(&self) -> Option<&Position> {
        self.0.first().map(|xa| &xa.hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transaction_ends_end_transactions() {
        assert_eq!(classify("BEGIN"), Statement::Begin);
        assert_eq!(classify(" commit "), Statement::Commit);
        assert_eq!(classify("ROLLBACK"), Statement::Rollback);
        assert_eq!(classify("SAVEPOINT `a`"), Statement::Savepoint);
        assert_eq!(classify("ROLLBACK TO `a`"), Statement::Savepoint);
        assert_eq!(
            classify("ROLLBACK WORK TO SAVEPOINT a"),
            Statement::Savepoint
        );
        assert_eq!(classify("RELEASE SAVEPOINT a"), Statement::Savepoint);
        assert_eq!(classify("XA END X'7831',X'',1"), Statement::XaEnd);
        assert_eq!(
            classify("XA COMMIT X'7832',X'',1"),
            Statement::XaCommit("X'7832',X'',1")
        );
        assert_eq!(
            classify("xa commit X'7832',X'',1 one phase"),
            Statement::XaCommit("X'7832',X'',1")
        );
        assert_eq!(
            classify("XA ROLLBACK X'7831',X'',1"),
            Statement::XaRollback("X'7831',X'',1")
        );
        assert_eq!(
            classify("XA START X'41',X'',1"),
            Statement::XaStart("X'41',X'',1")
        );
        // Words that only start like a boundary are not one.
        assert_eq!(classify("COMMITTED_TABLE_DDL"), Statement::Other);
        assert_eq!(classify("SAVEPOINTS"), Statement::Other);
        assert_eq!(classify("ALTER TABLE t ADD c INT"), Statement::Other);
        assert_eq!(classify("BEGIN NOT ATOMIC SELECT 1; END"), Statement::Other);
    }

    #[test]
    fn a_cursor_past_the_servers_binlog_is_told() {
        assert_eq!(gtid_forgotten("0-1-50", "0-1-80"), None);
        assert_eq!(gtid_forgotten("0-1-50", "0-1-50"), None);
        // RESET MASTER: the numbering started over, or nothing is left.
        assert_eq!(gtid_forgotten("0-1-50", "0-1-3"), Some("0-1-50"));
        assert_eq!(gtid_forgotten("0-1-50", ""), Some("0-1-50"));
        // A domain the server never saw.
        assert_eq!(gtid_forgotten("0-1-5,2-7-9", "0-1-6"), Some("2-7-9"));
        // MySQL sets are not compared.
        assert_eq!(
            gtid_forgotten("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", ""),
            None
        );
    }

    #[test]
    fn xids_read_from_gtid_and_prepare_events_match_the_queries() {
        // MariaDB GTID event: seq 4, domain 0, flags2 = FL_PREPARED_XA |
        // FL_TRANSACTIONAL, XID format 1, gtrid "x1", no bqual.
        let mut gtid = vec![4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64 | 4];
        gtid.extend([1, 0, 0, 0, 2, 0]);
        gtid.extend(b"x1");
        let flags = mariadb_gtid_flags(&gtid);
        assert_eq!(flags.xa_prepare.as_deref(), Some("X'7831',X'',1"));
        assert!(!flags.standalone);
        assert_eq!(
            mariadb_gtid_flags(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            GtidFlags {
                standalone: true,
                xa_prepare: None
            }
        );
        let mut prepare = vec![0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        prepare.extend(b"x1");
        assert_eq!(xa_prepare_xid(&prepare).as_deref(), Some("X'7831',X'',1"));
        // Truncated bodies read as nothing, never past the end.
        assert_eq!(xa_prepare_xid(&prepare[..8]), None);
        assert_eq!(mariadb_gtid_flags(&gtid[..15]).xa_prepare, None);
    }
}
