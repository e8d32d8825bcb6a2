//! Query-based capture on the real PostgreSQL: watermarks, ties across pages,
//! soft deletes, late commits inside the lag window, SIGKILL, bad configs.

use crate::common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn poll_config(db: &TestDb, table: &str) -> PathBuf {
    let text = format!(
        "[pipeline]\nname = \"{name}\"\n[source]\ntype = \"poll\"\nurl = \"{url}\"\ninterval = \"100ms\"\npage_size = 10\n{table}\n[sink]\ntype = \"file\"\npath = \"{events}\"\n[cursor]\ntype = \"file\"\npath = \"{cursor}\"\n",
        name = db.name,
        url = db.url(),
        events = db.events_dir().display(),
        cursor = db.cursor_path().display(),
    );
    let path = db.dir.path().join("poll.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn count_id(events: &[Value], id: i64) -> usize {
    events.iter().filter(|e| e["key"]["id"] == id).count()
}

/// Starts a transaction that stamps row 100 at its start and stays open, then
/// commits row 101 (stamped later) beside it; returns the open transaction's
/// connection, to commit later.
async fn begin_late_commit(db: &TestDb) -> tokio_postgres::Client {
    let late = connect(&db.name).await;
    late.batch_execute("BEGIN; INSERT INTO orders (id) VALUES (100)")
        .await
        .expect("begin");
    tokio::time::sleep(Duration::from_millis(50)).await;
    db.client
        .batch_execute("INSERT INTO orders (id) VALUES (101)")
        .await
        .expect("insert");
    late
}

const ORDERS: &str = "[[source.table]]\nname = \"public.orders\"\ncursor_column = \"updated_at\"\ndeleted_column = \"deleted_at\"\nlag_window = \"5s\"";

#[tokio::test(flavor = "multi_thread")]
async fn poll_sees_changes_soft_deletes_and_ties_across_pages() {
    let db = TestDb::new("tm_poll_basic").await;
    db.client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric(10,2), updated_at timestamptz NOT NULL, deleted_at timestamptz);
             -- 35 rows sharing one timestamp: pages of 10 split the tie.
             INSERT INTO orders SELECT g, g, '2026-11-21 10:00:00+00', NULL FROM generate_series(1, 35) g;",
        )
        .await
        .expect("seed");
    let mut daemon = Daemon::start(&poll_config(&db, ORDERS));
    daemon
        .wait_for("the first rows", Duration::from_secs(30), || async {
            db.events().len() >= 35
        })
        .await;
    db.client
        .batch_execute(
            "UPDATE orders SET total = 99, updated_at = '2026-11-21 10:00:01+00' WHERE id = 3;
             UPDATE orders SET deleted_at = '2026-11-21 10:00:02+00', updated_at = '2026-11-21 10:00:02+00' WHERE id = 4;",
        )
        .await
        .expect("changes");
    daemon
        .wait_for(
            "the update and the soft delete",
            Duration::from_secs(30),
            || async { db.events().len() >= 37 },
        )
        .await;
    // More polls re-read the lag window: nothing may come twice.
    daemon.wait_for_more_polls("page", 3).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(events.len(), 37, "{events:#?}");
    for id in 1..=35 {
        let expected = if id == 3 || id == 4 { 2 } else { 1 };
        assert_eq!(count_id(&events, id), expected, "row {id}");
    }
    assert!(events[..35]
        .iter()
        .all(|e| e["op"] == "u" && e["before"] == Value::Null));
    assert_eq!(events[35]["after"]["total"], "99.00");
    assert_eq!(events[35]["source"]["watermark"], "2026-11-21 10:00:01+00");
    assert_eq!(events[36]["op"], "d");
    assert_eq!(events[36]["before"]["id"], 4);
    assert_eq!(events[36]["after"], Value::Null);
    let cursor = db.cursor().expect("cursor");
    assert_eq!(
        cursor["position"]["poll"]["tables"]["public.orders"]["key"],
        json!(["4"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_without_a_window_continues_ties_by_key_exactly() {
    let db = TestDb::new("tm_poll_ties").await;
    db.client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL, deleted_at timestamptz);
             INSERT INTO orders SELECT g, '2026-11-21 10:00:00+00', NULL FROM generate_series(1, 35) g;",
        )
        .await
        .expect("seed");
    let mut daemon = Daemon::start(&poll_config(
        &db,
        &ORDERS.replace("lag_window = \"5s\"", "lag_window = \"0s\""),
    ));
    daemon
        .wait_for("the tied rows", Duration::from_secs(30), || async {
            db.events().len() >= 35
        })
        .await;
    db.client
        .batch_execute("INSERT INTO orders VALUES (36, '2026-11-21 10:00:00+00', NULL)")
        .await
        .expect("insert");
    daemon
        .wait_for("the next tied row", Duration::from_secs(30), || async {
            db.events().len() >= 36
        })
        .await;
    daemon.wait_for_more_polls("page", 3).await;
    daemon.stop().await;
    let events = db.events();
    // The watermark continues after key 35 (not after "9", as text order would say).
    assert_eq!(events.len(), 36, "{events:#?}");
    assert_each_id_once(&events, 36);
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_late_commit_found_after_a_restart_is_not_taken_for_a_repeat() {
    let db = TestDb::new("tm_poll_restart").await;
    db.client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL, deleted_at timestamptz);
             INSERT INTO orders SELECT g, '2026-11-21 10:00:00+00', NULL FROM generate_series(1, 3) g;",
        )
        .await
        .expect("seed");
    let config = poll_config(&db, ORDERS);
    let mut daemon = Daemon::start(&config);
    db.wait_for_id(&daemon, 3).await;
    daemon.stop().await;
    // Committed while tidemark was down, stamped inside the lag window but before
    // everything already written: its position sorts before the sink's last line.
    db.client
        .batch_execute("INSERT INTO orders VALUES (0, '2026-11-21 09:59:59+00', NULL)")
        .await
        .expect("late row");
    let mut daemon = Daemon::start(&config);
    db.wait_for_id(&daemon, 0).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(count_id(&events, 0), 1, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_late_commit_inside_the_window_appears_once() {
    let db = TestDb::new("tm_poll_late").await;
    db.client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz)")
        .await
        .expect("ddl");
    let mut daemon = Daemon::start(&poll_config(&db, ORDERS));
    let late = begin_late_commit(&db).await;
    daemon
        .wait_for("the later-stamped row", Duration::from_secs(30), || async {
            count_id(&db.events(), 101) == 1
        })
        .await;
    late.batch_execute("COMMIT").await.expect("commit");
    daemon
        .wait_for("the late row", Duration::from_secs(30), || async {
            count_id(&db.events(), 100) == 1
        })
        .await;
    daemon.wait_for_more_polls("page", 3).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(count_id(&events, 100), 1);
    assert_eq!(count_id(&events, 101), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_waiting_for_open_transactions_misses_no_late_commit_without_a_window() {
    let db = TestDb::new("tm_poll_wait").await;
    db.client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz)")
        .await
        .expect("ddl");
    // No lag window at all: only the bound on open transactions keeps row 100.
    let config = poll_config(
        &db,
        &ORDERS.replace("lag_window = \"5s\"", "lag_window = \"0s\""),
    );
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "page_size = 10",
        "page_size = 10\nwait_for_open_transactions = true",
    );
    std::fs::write(&config, text).expect("config");
    let mut daemon = Daemon::start(&config);
    let late = begin_late_commit(&db).await;
    // Row 101 waits while the older transaction is open...
    daemon.wait_for_more_polls("page", 3).await;
    assert_eq!(
        count_id(&db.events(), 101),
        0,
        "read past an open transaction"
    );
    late.batch_execute("COMMIT").await.expect("commit");
    // ...and both arrive, in stamp order, once it commits.
    daemon
        .wait_for("both rows", Duration::from_secs(30), || async {
            db.events().len() >= 2
        })
        .await;
    daemon.wait_for_more_polls("page", 3).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(
        (count_id(&events, 100), count_id(&events, 101)),
        (1, 1),
        "{events:#?}"
    );
    assert_eq!(events[0]["key"]["id"], 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_keyscan_emits_deletes_once() {
    let db = TestDb::new("tm_poll_keys").await;
    db.client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item-' || g FROM generate_series(1, 5) g;",
        )
        .await
        .expect("seed");
    let config = poll_config(
        &db,
        "[[source.table]]\nname = \"public.items\"\ncursor_column = \"id\"\ndelete_detection = \"keyscan\"\nkeyscan_interval = \"200ms\"",
    );
    let name = db.name.clone();
    crate::poll_mysql::keyscan_scenario(
        &config,
        || db.events(),
        &move |statement: &str| {
            let out = std::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    &name,
                    "-c",
                    statement,
                ])
                .output()
                .expect("run psql");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
        &db.dir.path().join(format!("{}.public.items.keys", db.name)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_sigkill_three_times_loses_nothing() {
    let db = TestDb::new("tm_poll_crash").await;
    db.client
        .batch_execute("CREATE TABLE r (id int PRIMARY KEY, payload text)")
        .await
        .expect("ddl");
    let config = poll_config(
        &db,
        "[[source.table]]\nname = \"public.r\"\ncursor_column = \"id\"",
    );
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("page_size = 10", "page_size = 500");
    std::fs::write(&config, text).expect("config");
    let daemon = Daemon::start(&config);
    let writer = Arc::new(connect(&db.name).await);
    let daemon = insert_while_killing(
        daemon,
        &config,
        || async { db.events().len() },
        move |first| pg_insert_rows(writer.clone(), "r", first),
    )
    .await;
    let mut daemon = daemon;
    db.wait_for_id(&daemon, 20_000).await;
    daemon.stop().await;
    assert_each_id_once(&db.events(), 20_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_bad_configs_name_table_and_column() {
    let db = TestDb::new("tm_poll_bad").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, doc json, updated_at timestamptz)")
        .await
        .expect("ddl");
    let cases = [
        (
            "cursor_column = \"nope\"",
            "source.table.cursor_column: public.t has no column \"nope\"",
        ),
        ("cursor_column = \"doc\"", "cannot be ordered"),
        (
            "cursor_column = \"updated_at\"\nkey = [\"missing\"]",
            "source.table.key: public.t has no column \"missing\"",
        ),
        (
            "cursor_column = \"updated_at\"\nlag_window = \"soon\"",
            "source.table.lag_window",
        ),
    ];
    for (lines, needle) in cases {
        let config = poll_config(
            &db,
            &format!("[[source.table]]\nname = \"public.t\"\n{lines}"),
        );
        assert_refused(&config, needle);
    }
    let config = poll_config(
        &db,
        "[[source.table]]\nname = \"public.missing\"\ncursor_column = \"id\"",
    );
    let (code, stderr) = run_to_end(&["check", "--config", &config.display().to_string()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("public.missing does not exist"), "{stderr}");
}
