//! Exactly once, case by case: the four ways "never loses a change" broke
//! before positions were typed and transaction ends were read as they are
//! (issue 16). Each test failed on the code before that change.

use crate::common::*;
use crate::mysql::{sql, MyDb};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often each `after.id` (or `before.id` for deletes) of `op` occurs.
fn id_counts(events: &[Value], op: &str) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for event in events.iter().filter(|e| e["op"] == op) {
        let image = if op == "d" { "before" } else { "after" };
        if let Some(id) = event[image]["id"].as_i64() {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

/// The rows of one `COPY` share WAL records, and so LSNs: a kill while they
/// are written, then the resume, must still write each row exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn copy_rows_sharing_an_lsn_survive_kills_while_written() {
    let db = TestDb::new("tm_eo_copy").await;
    db.client
        .batch_execute("CREATE TABLE c (id int PRIMARY KEY, pad text)")
        .await
        .expect("ddl");
    let config = db.config(&["public.c"], "");
    let mut daemon = Daemon::start(&config);
    wait_until("the first cursor", Duration::from_secs(30), || async {
        db.cursor().is_some()
    })
    .await;
    const ROWS: i64 = 150_000;
    // One statement, one transaction, multi-insert WAL records of many rows.
    db.client
        .batch_execute(&format!(
            "COPY c (id) FROM PROGRAM 'seq 1 {ROWS}'; UPDATE c SET pad = 'done' WHERE id = 1"
        ))
        .await
        .expect("copy");
    let copied: i64 = db
        .client
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(copied, ROWS);
    // Kill each run once it has written some of the copy's events (after the
    // skip of what the sink held): every kill lands inside the transaction,
    // at a batch boundary that is not a WAL record's.
    for _ in 0..3 {
        let port = http_port(&daemon).await;
        daemon
            .wait_for("copy rows to flow", Duration::from_secs(120), || async {
                let scrape = http_get(port, "/metrics").await.1;
                counter_sum(&scrape, "tidemark_events_written_total", "") >= 12_000.0
            })
            .await;
        daemon.crash().await;
        daemon = Daemon::start(&config);
    }
    daemon
        .wait_for(
            "the update after the copy",
            Duration::from_secs(180),
            || async {
                std::fs::read_dir(db.events_dir())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|f| {
                        std::fs::read_to_string(f.path())
                            .is_ok_and(|t| t.contains("\"pad\":\"done\""))
                    })
            },
        )
        .await;
    daemon.stop().await;
    let events = db.events();
    let counts = id_counts(&events, "c");
    let missing: Vec<i64> = (1..=ROWS).filter(|id| !counts.contains_key(id)).collect();
    let twice: Vec<(&i64, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} copied rows never reached the sink (first: {:?}); tidemark said:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        daemon.stderr()
    );
    assert!(
        twice.is_empty(),
        "rows written twice: {:?}",
        &twice[..twice.len().min(10)]
    );
    // And no two events share a position.
    let mut positions: Vec<&str> = events
        .iter()
        .filter_map(|e| e["position"].as_str())
        .collect();
    let all = positions.len();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), all, "events share positions");
}

/// A schema event inside a transaction is emitted only when the layout
/// changed while the daemon ran: a replay of that transaction after a kill
/// does not emit it again, and the rows after it must keep their positions
/// (they shifted by one, and the replay skip then dropped the row after the
/// last one written when both came from one `COPY` record).
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_change_inside_a_transaction_keeps_positions_across_a_replay() {
    let db = TestDb::new("tm_eo_ddl_tx").await;
    db.client
        .batch_execute("CREATE TABLE s (id int PRIMARY KEY)")
        .await
        .expect("ddl");
    let config = db.config(&["public.s"], "");
    let mut daemon = Daemon::start(&config);
    wait_until("the first cursor", Duration::from_secs(30), || async {
        db.cursor().is_some()
    })
    .await;
    const ROWS: i64 = 120_000;
    // The daemon learns the old layout, then the table changes, and the next
    // transaction's first change carries the new one: a schema event first.
    db.client
        .batch_execute("INSERT INTO s VALUES (0)")
        .await
        .expect("insert");
    db.wait_for_id(&daemon, 0).await;
    db.client
        .batch_execute(&format!(
            "ALTER TABLE s ADD COLUMN note text;
             COPY s (id) FROM PROGRAM 'seq 1 {ROWS}';
             INSERT INTO s VALUES (-1)"
        ))
        .await
        .expect("transaction");
    let port = http_port(&daemon).await;
    daemon
        .wait_for(
            "the transaction's rows to flow",
            Duration::from_secs(120),
            || async {
                let scrape = http_get(port, "/metrics").await.1;
                counter_sum(&scrape, "tidemark_events_written_total", "") >= 15_000.0
            },
        )
        .await;
    daemon.crash().await;
    let mut daemon = Daemon::start(&config);
    db.wait_for_id(&daemon, -1).await;
    daemon.stop().await;
    let events = db.events();
    let counts = id_counts(&events, "c");
    let missing: Vec<i64> = (0..=ROWS).filter(|id| !counts.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} rows never reached the sink (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(counts.values().all(|n| *n == 1), "a row was written twice");
    assert_eq!(
        events.iter().filter(|e| e["op"] == "s").count(),
        1,
        "the schema event, once (before the kill)"
    );
}

/// After `cursor reset`, the sink may hold lines whose positions are higher
/// than anything the source will send (another server, RESET MASTER, a
/// rebuilt cluster): none of the new events may be taken for those.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_cursor_reset_the_sinks_old_lines_skip_nothing() {
    let db = TestDb::new("tm_eo_reset").await;
    db.client
        .batch_execute("CREATE TABLE r (id int PRIMARY KEY); INSERT INTO r VALUES (1), (2)")
        .await
        .expect("ddl");
    let config = db.config(&["public.r"], "");
    let mut daemon = Daemon::start(&config);
    db.wait_for_id(&daemon, 2).await;
    daemon.stop().await;
    // A line as a source with far higher positions would have left it.
    let file = db.events_dir().join("events-0000000001.jsonl");
    let mut text = std::fs::read_to_string(&file).expect("sink file");
    text.push_str("{\"op\":\"c\",\"before\":null,\"after\":{\"id\":999},\"source\":{\"connector\":\"postgres\",\"name\":\"x\",\"db\":\"x\",\"schema\":\"public\",\"table\":\"r\",\"ts_ms\":0,\"snapshot\":false},\"position\":\"pg:FFFFFFFF00000000:FFFFFFFF00000000:0000000000000001\",\"ts_ms\":0}\n");
    std::fs::write(&file, text).expect("forge a line");
    let (code, stderr) = run_to_end(&[
        "cursor",
        "reset",
        "--config",
        config.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 0, "cursor reset: {stderr}");
    db.client
        .batch_execute("INSERT INTO r VALUES (3)")
        .await
        .expect("insert");
    let mut daemon = Daemon::start(&config);
    db.wait_for_slot(true).await;
    db.client
        .batch_execute("INSERT INTO r VALUES (4)")
        .await
        .expect("insert");
    daemon
        .wait_for("row 4 after the reset", Duration::from_secs(60), || async {
            db.events().iter().any(|e| e["after"]["id"] == 4)
        })
        .await;
    daemon.stop().await;
    let events = db.events();
    let forged = events
        .iter()
        .position(|e| e["after"]["id"] == 999)
        .expect("the forged line");
    let after_reset: Vec<i64> = events[forged + 1..]
        .iter()
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect();
    assert_eq!(after_reset, [1, 2, 3, 4], "{}", daemon.stderr());
    assert!(
        daemon
            .stderr()
            .contains("no event is skipped as already written"),
        "the reason is not logged:\n{}",
        daemon.stderr()
    );
}

/// A cursor names the source it belongs to: pointing a config with that
/// cursor at another database is refused, naming both.
#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_of_another_source_is_refused() {
    let db = TestDb::new("tm_eo_ident").await;
    let other = TestDb::new("tm_eo_ident_b").await;
    for d in [&db, &other] {
        d.client
            .batch_execute("CREATE TABLE r (id int PRIMARY KEY)")
            .await
            .expect("ddl");
    }
    let config = db.config(&["public.r"], "");
    let mut daemon = Daemon::start(&config);
    wait_until("the first cursor", Duration::from_secs(30), || async {
        db.cursor().is_some()
    })
    .await;
    daemon.stop().await;
    let cursor = db.cursor().expect("cursor");
    let source = cursor["source"]
        .as_str()
        .expect("the cursor names its source");
    assert!(
        source.contains("database tm_eo_ident slot tm_eo_ident"),
        "{source}"
    );
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("/tm_eo_ident\"", "/tm_eo_ident_b\"");
    std::fs::write(&config, text).expect("config");
    assert_command_refused("run", &config, "belongs to source [postgres system");
    assert_command_refused("run", &config, "database tm_eo_ident_b slot tm_eo_ident]");
}

/// MariaDB, `snapshot = "never"`: the start position is the cursor before the
/// daemon says it runs, so changes made while it is down after a first run
/// (killed at once) are captured.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_stream_only_remembers_where_it_started() {
    let db = MyDb::new("tm_eo_never", "CREATE TABLE t (id INT PRIMARY KEY)");
    let config = db.config("t", 4601, "snapshot = \"never\"");
    // Killed as soon as it says it runs: the start is the cursor already.
    let mut daemon = db.start(&config).await;
    daemon.crash().await;
    assert!(db.cursor().is_some(), "no cursor after a first run");
    sql("USE tm_eo_never; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)");
    let mut daemon = db.start(&config).await;
    sql("USE tm_eo_never; INSERT INTO t VALUES (3)");
    db.wait_for_events(&daemon, 3).await;
    daemon.stop().await;
    let counts = id_counts(&db.events(), "c");
    assert_eq!(counts, BTreeMap::from([(1, 1), (2, 1), (3, 1)]));
}

/// MariaDB: XA transactions come out when they commit and never when they
/// roll back; a savepoint does not split its transaction; a crash between
/// `XA PREPARE` and `XA COMMIT` loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_xa_and_savepoints_come_out_as_they_committed() {
    // A prepared XA transaction left by a failed run would hold its locks
    // (and block dropping the database) for ever: end it first.
    let _ = std::process::Command::new("mariadb")
        .args([
            "-uroot",
            "-h127.0.0.1",
            "-e",
            "XA ROLLBACK 'tm_eo_xa_crash'",
        ])
        .output();
    let db = MyDb::new("tm_eo_xa", "CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let config = db.config("t", 4602, "");
    let mut daemon = db.start(&config).await;
    sql("USE tm_eo_xa;
         XA START 'tm_eo_xa_rb'; INSERT INTO t VALUES (1, 1); XA END 'tm_eo_xa_rb'; XA PREPARE 'tm_eo_xa_rb'; XA ROLLBACK 'tm_eo_xa_rb';
         XA START 'tm_eo_xa_ok'; INSERT INTO t VALUES (2, 2); XA END 'tm_eo_xa_ok'; XA PREPARE 'tm_eo_xa_ok'; XA COMMIT 'tm_eo_xa_ok';
         XA START 'tm_eo_xa_one'; INSERT INTO t VALUES (3, 3); XA END 'tm_eo_xa_one'; XA COMMIT 'tm_eo_xa_one' ONE PHASE;
         BEGIN; INSERT INTO t VALUES (4, 4); SAVEPOINT a; INSERT INTO t VALUES (5, 5);
           ROLLBACK TO SAVEPOINT a; INSERT INTO t VALUES (6, 6); RELEASE SAVEPOINT a; COMMIT;
         XA START 'tm_eo_xa_crash'; INSERT INTO t VALUES (7, 7); XA END 'tm_eo_xa_crash'; XA PREPARE 'tm_eo_xa_crash';");
    // The prepared transaction outlives its session; another one commits.
    sql("USE tm_eo_xa; INSERT INTO t VALUES (8, 8)");
    daemon
        .wait_for("row 8", Duration::from_secs(60), || async {
            db.events().iter().any(|e| e["after"]["id"] == 8)
        })
        .await;
    // The cursor may be committed now; it must not have passed the start of
    // the prepared transaction 'tm_eo_xa_crash'.
    daemon.stop().await;
    let mut daemon = db.start(&config).await;
    sql("XA COMMIT 'tm_eo_xa_crash'; USE tm_eo_xa; INSERT INTO t VALUES (9, 9)");
    daemon
        .wait_for("row 9", Duration::from_secs(60), || async {
            db.events().iter().any(|e| e["after"]["id"] == 9)
        })
        .await;
    daemon.crash().await;
    let events = db.events();
    let counts = id_counts(&events, "c");
    assert_eq!(
        counts,
        BTreeMap::from([(2, 1), (3, 1), (4, 1), (6, 1), (7, 1), (8, 1), (9, 1)]),
        "{}",
        daemon.stderr()
    );
    let tx_of = |id: i64| {
        events
            .iter()
            .find(|e| e["after"]["id"] == id)
            .map(|e| e["transaction"]["id"].clone())
    };
    assert_eq!(tx_of(4), tx_of(6), "a savepoint split its transaction");
    // The table agrees.
    let rows = sql("SELECT GROUP_CONCAT(id ORDER BY id) FROM tm_eo_xa.t");
    assert_eq!(rows.trim(), "2,3,4,6,7,8,9");
    // Positions only grow in the sink.
    let positions: Vec<&str> = events
        .iter()
        .filter_map(|e| e["position"].as_str())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions out of order: {positions:?}"
    );
}
