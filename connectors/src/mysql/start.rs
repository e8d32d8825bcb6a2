//! Where capture starts: decided from the cursor, the `snapshot` setting and
//! what the server said, without any I/O of its own.
//!
//! `MysqlSource::open` reads the server (binary logs, and `@@gtid_binlog_pos`
//! when `reads_server_gtid`), asks `decide`, and then does what the `StartPlan`
//! says. Keeping the decision apart lets each refusal (a purged binlog, a
//! reset server, a cursor of another source) be tested without a server.

use super::transaction;
use crate::position::Position;
use crate::SourceError;
use std::collections::BTreeMap;

/// Where the stream starts: a file and offset, or (MariaDB) a GTID state.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Start {
    File(String, u64),
    Gtid(String),
}

/// How capture starts.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StartPlan {
    /// No cursor, `snapshot` on: a consistent snapshot first; the stream
    /// opens at its position once it is read.
    Snapshot,
    /// No cursor, `snapshot` off: stream from the binlog's current end. The
    /// pipeline commits this start before reading (see `fresh_start`).
    CurrentEnd { file: String, pos: u64 },
    /// A cursor: resume where it says, with the GTID state it recorded.
    Resume {
        start: Start,
        gtid_state: BTreeMap<String, String>,
    },
}

/// What the server said, read before the decision.
pub(super) struct ServerFacts<'a> {
    /// `SHOW BINARY LOGS`: each binlog's name and size, oldest first.
    pub logs: &'a [(String, u64)],
    /// `@@GLOBAL.gtid_binlog_pos`, read only when [`reads_server_gtid`].
    pub gtid_binlog_pos: Option<&'a str>,
}

/// Whether the stream's own connection is made while the checks run: not
/// when a snapshot comes first, as it would sit idle through it.
pub(super) fn connects_early(resume: Option<&Position>, snapshot: bool) -> bool {
    resume.is_some() || !snapshot
}

/// Whether [`decide`] needs the server's `@@gtid_binlog_pos`: only to check a
/// binlog cursor against it.
pub(super) fn reads_server_gtid(resume: Option<&Position>) -> bool {
    matches!(resume, Some(Position::Mysql { .. }))
}

/// Where and how capture starts: at the cursor (refused when the server no
/// longer holds what it names, since resuming must never skip ahead), else
/// after a snapshot, else at the binlog's current end.
pub(super) fn decide(
    resume: Option<Position>,
    snapshot: bool,
    server: &ServerFacts<'_>,
) -> Result<StartPlan, SourceError> {
    match resume {
        Some(Position::Mysql {
            file, pos, gtid, ..
        }) => resume_at(&file, pos, gtid, server),
        Some(other) => Err(SourceError::Setup(format!(
            "cursor holds {other}, not a MySQL binlog position"
        ))),
        None if snapshot => Ok(StartPlan::Snapshot),
        None => {
            // The last binary log's size is where the server writes next.
            let (file, pos) = server.logs.last().cloned().ok_or_else(|| {
                SourceError::Setup("source: the server lists no binary logs".into())
            })?;
            Ok(StartPlan::CurrentEnd { file, pos })
        }
    }
}

/// Resuming from a binlog cursor: at its file when it has one (which must
/// still exist), else (MariaDB) at its GTID state.
fn resume_at(
    file: &str,
    pos: u64,
    gtid: Option<String>,
    server: &ServerFacts<'_>,
) -> Result<StartPlan, SourceError> {
    let gtid_state = gtid_state(gtid.as_deref());
    if let Some(gtid) = gtid.as_deref() {
        if let Some(forgotten) =
            transaction::gtid_forgotten(gtid, server.gtid_binlog_pos.unwrap_or(""))
        {
            return Err(SourceError::Setup(format!(
                "source: the cursor (at {file}:{pos}) has read transaction {forgotten}, but the server's binlog now ends at GTID {:?}: its binlog was reset (RESET MASTER) or this is another server, so {file}:{pos} names other changes now; recover with `tidemark cursor reset --config <this config>`, then start again to take a new snapshot",
                server.gtid_binlog_pos.unwrap_or_default()
            )));
        }
    }
    let start = if !file.is_empty() {
        if !server.logs.iter().any(|(name, _)| name.as_str() == file) {
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
        Start::Gtid(gtid)
    } else {
        return Err(SourceError::Setup(
            "cursor names neither a binlog file nor a GTID state".into(),
        ));
    };
    Ok(StartPlan::Resume { start, gtid_state })
}

/// The GTID state a cursor recorded (`,`-separated entries), by state key.
fn gtid_state(gtid: Option<&str>) -> BTreeMap<String, String> {
    gtid.into_iter()
        .flat_map(|g| g.split(','))
        .filter(|e| !e.is_empty())
        .map(|entry| (gtid_key(entry).to_string(), entry.to_string()))
        .collect()
}

/// The GTID-state key of a cursor entry: the MariaDB domain (`0` of `0-1-5`) or
/// the MySQL source UUID (before `:`).
fn gtid_key(entry: &str) -> &str {
    match entry.split_once(':') {
        Some((uuid, _)) => uuid,
        None => entry.split('-').next().unwrap_or(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn cursor(file: &str, pos: u64, gtid: Option<&str>) -> Option<Position> {
        Some(Position::Mysql {
            file: file.into(),
            pos,
            row: None,
            gtid: gtid.map(str::to_string),
        })
    }

    fn logs() -> Vec<(String, u64)> {
        vec![
            ("mysql-bin.000001".to_string(), 1200),
            ("mysql-bin.000002".to_string(), 345),
        ]
    }

    fn facts<'a>(logs: &'a [(String, u64)], gtid_binlog_pos: Option<&'a str>) -> ServerFacts<'a> {
        ServerFacts {
            logs,
            gtid_binlog_pos,
        }
    }

    /// The message of a refusal.
    fn refused(decided: Result<StartPlan, SourceError>) -> String {
        match decided {
            Err(SourceError::Setup(message)) => message,
            Err(other) => panic!("not a setup error: {other}"),
            Ok(plan) => panic!("not refused: {plan:?}"),
        }
    }

    fn state(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn without_a_cursor_a_snapshot_or_the_current_end() {
        let logs = logs();
        let plan = decide(None, true, &facts(&logs, None)).expect("plan");
        assert_eq!(plan, StartPlan::Snapshot);
        // A snapshot finds its own position: no binary log need be listed.
        let plan = decide(None, true, &facts(&[], None)).expect("plan");
        assert_eq!(plan, StartPlan::Snapshot);
        let plan = decide(None, false, &facts(&logs, None)).expect("plan");
        assert_eq!(
            plan,
            StartPlan::CurrentEnd {
                file: "mysql-bin.000002".into(),
                pos: 345
            }
        );
        assert_eq!(
            refused(decide(None, false, &facts(&[], None))),
            "source: the server lists no binary logs"
        );
    }

    #[test]
    fn a_cursor_resumes_at_its_file_with_its_gtid_state() {
        let logs = logs();
        // The cursor wins over `snapshot`.
        let decided = decide(
            cursor("mysql-bin.000001", 800, Some("0-1-42,3-7-9")),
            true,
            &facts(&logs, Some("0-1-50,3-7-9")),
        );
        assert_eq!(
            decided.expect("plan"),
            StartPlan::Resume {
                start: Start::File("mysql-bin.000001".into(), 800),
                gtid_state: state(&[("0", "0-1-42"), ("3", "3-7-9")]),
            }
        );
        let decided = decide(
            cursor("mysql-bin.000002", 4, None),
            false,
            &facts(&logs, None),
        );
        assert_eq!(
            decided.expect("plan"),
            StartPlan::Resume {
                start: Start::File("mysql-bin.000002".into(), 4),
                gtid_state: BTreeMap::new(),
            }
        );
        // MySQL GTID sets are kept by source UUID.
        let set = format!("{UUID}:1-23");
        let decided = decide(
            cursor("mysql-bin.000002", 4, Some(set.as_str())),
            false,
            &facts(&logs, Some("")),
        );
        assert_eq!(
            decided.expect("plan"),
            StartPlan::Resume {
                start: Start::File("mysql-bin.000002".into(), 4),
                gtid_state: state(&[(UUID, set.as_str())]),
            }
        );
    }

    #[test]
    fn a_cursor_in_a_purged_binlog_is_refused() {
        let logs = logs();
        let message = refused(decide(
            cursor("mysql-bin.000000", 900, None),
            false,
            &facts(&logs, None),
        ));
        assert!(
            message.starts_with(
                "source: binlog mysql-bin.000000 (cursor at mysql-bin.000000:900) was purged from the server;"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_cursor_past_the_servers_binlog_is_refused() {
        let logs = logs();
        let message = refused(decide(
            cursor("mysql-bin.000001", 800, Some("0-1-50")),
            false,
            &facts(&logs, Some("0-1-3")),
        ));
        assert!(
            message.starts_with("source: the cursor (at mysql-bin.000001:800) has read transaction 0-1-50, but the server's binlog now ends at GTID \"0-1-3\":"),
            "{message}"
        );
        // No GTID from the server at all: nothing is reached.
        let message = refused(decide(
            cursor("mysql-bin.000001", 800, Some("0-1-50")),
            false,
            &facts(&logs, None),
        ));
        assert!(message.contains("ends at GTID \"\":"), "{message}");
    }

    #[test]
    fn without_a_file_a_mariadb_gtid_state_resumes() {
        let logs = logs();
        let decided = decide(
            cursor("", 4, Some("0-1-42")),
            false,
            &facts(&logs, Some("0-1-42")),
        );
        assert_eq!(
            decided.expect("plan"),
            StartPlan::Resume {
                start: Start::Gtid("0-1-42".into()),
                gtid_state: state(&[("0", "0-1-42")]),
            }
        );
    }

    #[test]
    fn without_a_file_other_cursors_are_refused() {
        let logs = logs();
        let set = format!("{UUID}:1-5");
        let message = refused(decide(
            cursor("", 4, Some(set.as_str())),
            false,
            &facts(&logs, Some("")),
        ));
        assert_eq!(
            message,
            format!("cursor holds the MySQL GTID set {set} without a binlog file; resuming MySQL from a GTID set alone is not supported yet")
        );
        for gtid in [None, Some("")] {
            let message = refused(decide(cursor("", 4, gtid), false, &facts(&logs, Some(""))));
            assert_eq!(
                message,
                "cursor names neither a binlog file nor a GTID state"
            );
        }
    }

    #[test]
    fn a_cursor_of_another_source_is_refused() {
        let postgres = Position::Postgres {
            commit_lsn: 1,
            lsn: 2,
            snapshot_row: None,
            seq: None,
        };
        let message = refused(decide(Some(postgres.clone()), false, &facts(&logs(), None)));
        assert_eq!(
            message,
            format!("cursor holds {postgres}, not a MySQL binlog position")
        );
    }

    #[test]
    fn what_is_read_before_deciding() {
        let binlog = cursor("mysql-bin.000001", 4, None);
        let postgres = Position::Postgres {
            commit_lsn: 1,
            lsn: 2,
            snapshot_row: None,
            seq: None,
        };
        assert!(!connects_early(None, true));
        assert!(connects_early(None, false));
        assert!(connects_early(binlog.as_ref(), true));
        assert!(reads_server_gtid(binlog.as_ref()));
        assert!(!reads_server_gtid(Some(&postgres)));
        assert!(!reads_server_gtid(None));
    }

    #[test]
    fn gtid_keys() {
        assert_eq!(gtid_key("0-1-42"), "0");
        assert_eq!(gtid_key(&format!("{UUID}:1-23")), UUID);
    }
}
