//! Query-based capture on the real MariaDB: inserts, updates and soft deletes,
//! ties across pages, a late commit inside the lag window, key-scan delete
//! detection, SIGKILL, bad configs. Each test has its own database.

use crate::common::*;
use crate::mysql::{my_insert_rows, sql, MyDb};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

fn poll_config(db: &MyDb, page_size: usize, table: &str) -> PathBuf {
    let text = format!(
        "[pipeline]\nname = \"{name}\"\n[source]\ntype = \"poll\"\nurl = \"mysql://root@127.0.0.1:3306/{name}\"\ninterval = \"100ms\"\npage_size = {page_size}\n{table}\n[sink]\ntype = \"file\"\npath = \"{events}\"\n[cursor]\ntype = \"file\"\npath = \"{cursor}\"\n",
        name = db.name,
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

async fn wait_events(daemon: &Daemon, db: &MyDb, what: &str, n: usize) {
    daemon
        .wait_for(what, Duration::from_secs(30), || async {
            db.events().len() >= n
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_poll_sees_changes_soft_deletes_and_ties_across_pages() {
    let db = MyDb::new(
        "tm_mypoll_basic",
        "CREATE TABLE orders (id int PRIMARY KEY, total decimal(10,2), updated_at datetime(6) NOT NULL, \
           deleted_at datetime(6) NULL, KEY (updated_at, id));
         INSERT INTO orders SELECT seq, seq, '2026-11-21 10:00:00', NULL FROM seq_1_to_35;",
    );
    let config = poll_config(
        &db,
        10,
        "[[source.table]]\nname = \"tm_mypoll_basic.orders\"\ncursor_column = \"updated_at\"\ndeleted_column = \"deleted_at\"\nlag_window = \"5s\"",
    );
    let mut daemon = Daemon::start(&config);
    wait_events(&daemon, &db, "the 35 tied rows", 35).await;
    sql("UPDATE tm_mypoll_basic.orders SET total = 99, updated_at = '2026-11-21 10:00:01' WHERE id = 3;
         UPDATE tm_mypoll_basic.orders SET deleted_at = '2026-11-21 10:00:02', updated_at = '2026-11-21 10:00:02' WHERE id = 4;
         INSERT INTO tm_mypoll_basic.orders VALUES (36, 36, '2026-11-21 10:00:03', NULL);");
    wait_events(&daemon, &db, "the update, soft delete and insert", 38).await;
    // More polls re-read the lag window: nothing may come twice.
    daemon.wait_for_more_polls("page", 3).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(events.len(), 38, "{events:#?}");
    for id in 1..=36 {
        let expected = if id == 3 || id == 4 { 2 } else { 1 };
        assert_eq!(count_id(&events, id), expected, "row {id}");
    }
    assert!(events[..35]
        .iter()
        .all(|e| e["op"] == "u" && e["before"] == Value::Null));
    assert_eq!(events[35]["after"]["total"], "99.00");
    assert_eq!(
        events[35]["after"]["updated_at"],
        "2026-11-21T10:00:01.000000"
    );
    assert_eq!(
        events[35]["source"]["watermark"],
        "2026-11-21 10:00:01.000000"
    );
    assert_eq!(events[36]["op"], "d");
    assert_eq!(events[36]["before"]["id"], 4);
    assert_eq!(events[36]["after"], Value::Null);
    assert_eq!(events[37]["after"]["id"], 36);
    let cursor = db.cursor().expect("cursor");
    assert_eq!(
        cursor["position"]["poll"]["tables"]["tm_mypoll_basic.orders"]["key"],
        json!(["36"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_poll_late_commit_inside_the_window_appears_once() {
    let db = MyDb::new(
        "tm_mypoll_late",
        "CREATE TABLE orders (id int PRIMARY KEY, updated_at datetime(6) NOT NULL DEFAULT now(6), KEY (updated_at))",
    );
    let config = poll_config(
        &db,
        100,
        "[[source.table]]\nname = \"tm_mypoll_late.orders\"\ncursor_column = \"updated_at\"\nlag_window = \"10s\"",
    );
    let mut daemon = Daemon::start(&config);
    // Row 100 is stamped at its transaction's start, which then waits for a
    // lock this test holds; row 101, stamped after it, commits at once and
    // moves the watermark past 100. The lock goes once 101 was captured.
    use mysql_async::prelude::Queryable;
    let mut holder = mysql_async::Conn::from_url("mysql://root@127.0.0.1:3306/tm_mypoll_late")
        .await
        .expect("connect the lock holder");
    holder
        .query_drop("DO GET_LOCK('tm_mypoll_late', 0)")
        .await
        .expect("take the lock");
    let late = std::thread::spawn(|| {
        sql("BEGIN; INSERT INTO tm_mypoll_late.orders (id) VALUES (100); DO GET_LOCK('tm_mypoll_late', 120); COMMIT;")
    });
    wait_until("row 100's transaction to wait", Duration::from_secs(30), || async {
        sql("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'DO GET_LOCK(%tm_mypoll_late%, 120)'")
            .trim()
            == "1"
    })
    .await;
    sql("INSERT INTO tm_mypoll_late.orders (id) VALUES (101)");
    wait_events(&daemon, &db, "row 101", 1).await;
    holder
        .query_drop("DO RELEASE_LOCK('tm_mypoll_late')")
        .await
        .expect("release the lock");
    late.join().expect("late transaction");
    let _ = holder.disconnect().await;
    wait_events(&daemon, &db, "the late row 100", 2).await;
    daemon.wait_for_more_polls("page", 3).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    // 101 came first: 100 committed behind the watermark and was still found, once.
    assert_eq!(events[0]["key"]["id"], 101);
    assert_eq!(events[1]["key"]["id"], 100);
    assert!(
        events[1]["source"]["watermark"].as_str() < events[0]["source"]["watermark"].as_str(),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_poll_keyscan_emits_deletes_once() {
    let db = MyDb::new(
        "tm_mypoll_keys",
        "CREATE TABLE items (id bigint PRIMARY KEY, name varchar(20));
         INSERT INTO items SELECT seq, CONCAT('item-', seq) FROM seq_1_to_5;",
    );
    let config = poll_config(
        &db,
        100,
        "[[source.table]]\nname = \"tm_mypoll_keys.items\"\ncursor_column = \"id\"\ndelete_detection = \"keyscan\"\nkeyscan_interval = \"200ms\"",
    );
    keyscan_scenario(
        &config,
        || db.events(),
        &|statement: &str| {
            sql(&format!("USE tm_mypoll_keys; {statement}"));
        },
        &db.dir
            .path()
            .join("tm_mypoll_keys.tm_mypoll_keys.items.keys"),
    )
    .await;
}

/// Shared by both databases: rows 1..=5 exist in table `items (id, name)`.
/// Deletes of polled rows (and of a row inserted after the first scan) come out
/// once each as `op: "d"` with the key, and not again after a restart.
pub async fn keyscan_scenario(
    config: &std::path::Path,
    events: impl Fn() -> Vec<Value>,
    run: &dyn Fn(&str),
    keys_file: &std::path::Path,
) {
    let mut daemon = Daemon::start(config);
    daemon
        .wait_for("the first rows", Duration::from_secs(30), || async {
            events().len() >= 5
        })
        .await;
    run("DELETE FROM items WHERE id IN (2, 4)");
    daemon
        .wait_for("two deletes", Duration::from_secs(30), || async {
            events().iter().filter(|e| e["op"] == "d").count() >= 2
        })
        .await;
    run("INSERT INTO items VALUES (6, 'item-6')");
    daemon
        .wait_for("row 6", Duration::from_secs(30), || async {
            events().iter().any(|e| e["after"]["id"] == 6)
        })
        .await;
    run("DELETE FROM items WHERE id = 6");
    daemon
        .wait_for("the delete of row 6", Duration::from_secs(30), || async {
            events().iter().filter(|e| e["op"] == "d").count() >= 3
        })
        .await;
    // The key set forgets the deleted keys once their deletes are durable.
    daemon
        .wait_for("the key set file", Duration::from_secs(30), || async {
            std::fs::read_to_string(keys_file)
                .is_ok_and(|t| t.lines().collect::<Vec<_>>() == ["[1]", "[3]", "[5]"])
        })
        .await;
    daemon.stop().await;
    // A restart scans again: nothing more is deleted.
    let mut daemon = Daemon::start(config);
    daemon.wait_for_more_polls("keys", 2).await;
    daemon.stop().await;
    let all = events();
    let deletes: Vec<&Value> = all.iter().filter(|e| e["op"] == "d").collect();
    assert_eq!(deletes.len(), 3, "{all:#?}");
    let keys: Vec<&Value> = deletes.iter().map(|e| &e["key"]).collect();
    assert_eq!(
        keys,
        [&json!({"id": 2}), &json!({"id": 4}), &json!({"id": 6})]
    );
    assert!(deletes
        .iter()
        .all(|e| e["after"] == Value::Null && e["before"] == e["key"]));
    // Deletes sort after the updates written before them.
    let positions: Vec<&str> = all.iter().filter_map(|e| e["position"].as_str()).collect();
    assert!(positions[5] > positions[4], "{positions:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_poll_sigkill_three_times_loses_nothing() {
    let db = MyDb::new(
        "tm_mypoll_crash",
        "CREATE TABLE r (id int PRIMARY KEY, payload varchar(200))",
    );
    let config = poll_config(
        &db,
        500,
        "[[source.table]]\nname = \"tm_mypoll_crash.r\"\ncursor_column = \"id\"",
    );
    let daemon = Daemon::start(&config);
    let daemon = insert_while_killing(
        daemon,
        &config,
        || async { db.events().len() },
        |first| my_insert_rows("tm_mypoll_crash", first),
    )
    .await;
    finish_crash_test(daemon, || db.events()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_poll_bad_configs_name_table_and_column() {
    let db = MyDb::new(
        "tm_mypoll_bad",
        "CREATE TABLE t (id int PRIMARY KEY, doc blob, updated_at datetime(6))",
    );
    let cases = [
        (
            "cursor_column = \"nope\"",
            "source.table.cursor_column: tm_mypoll_bad.t has no column \"nope\"",
        ),
        ("cursor_column = \"doc\"", "cannot be ordered"),
        (
            "cursor_column = \"updated_at\"\nkey = [\"missing\"]",
            "source.table.key: tm_mypoll_bad.t has no column \"missing\"",
        ),
        (
            "cursor_column = \"updated_at\"\ndelete_detection = \"magic\"",
            "source.table.delete_detection",
        ),
    ];
    for (lines, needle) in cases {
        let config = poll_config(
            &db,
            10,
            &format!("[[source.table]]\nname = \"tm_mypoll_bad.t\"\n{lines}"),
        );
        assert_refused(&config, needle);
    }
    let config = poll_config(
        &db,
        10,
        "[[source.table]]\nname = \"tm_mypoll_bad.missing\"\ncursor_column = \"id\"",
    );
    let (code, stderr) = run_to_end(&["check", "--config", &config.display().to_string()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("tm_mypoll_bad.missing does not exist"),
        "{stderr}"
    );
}
