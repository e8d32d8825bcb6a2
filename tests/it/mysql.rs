//! Binlog capture on the real MariaDB (scripts/setup-mariadb.sh turns on log_bin,
//! ROW format, FULL row image and metadata).

use crate::common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs SQL through the `mariadb` client, failing loudly when the server is absent.
fn sql(statements: &str) {
    let out = Command::new("mariadb")
        .args([
            "--default-character-set=utf8mb4",
            "-uroot",
            "-h127.0.0.1",
            "-P3306",
            "-e",
            statements,
        ])
        .output()
        .expect("run the mariadb client");
    assert!(
        out.status.success(),
        "MariaDB at 127.0.0.1:3306 failed ({}); run scripts/setup-mariadb.sh (scripts/test.sh does)",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct MyDb {
    name: String,
    dir: tempfile::TempDir,
}

impl MyDb {
    fn new(name: &str, ddl: &str) -> MyDb {
        sql(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; USE {name}; {ddl}"
        ));
        MyDb {
            name: name.into(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config(&self, table: &str, server_id: u32) -> PathBuf {
        let text = format!(
            "[pipeline]\nname = \"{name}\"\nmax_batch_events = 500\n[source]\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/{name}\"\ntables = [\"{name}.{table}\"]\nserver_id = {server_id}\n[sink]\ntype = \"file\"\npath = \"{dir}/events\"\nmax_file_bytes = 1048576\n[cursor]\ntype = \"file\"\npath = \"{dir}/cursor.json\"\n",
            name = self.name,
            dir = self.dir.path().display()
        );
        let path = self.dir.path().join("tidemark.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn events(&self) -> Vec<serde_json::Value> {
        read_events(&self.dir.path().join("events"))
    }

    async fn start(&self, config: &Path) -> Daemon {
        let daemon = Daemon::start(config);
        daemon
            .wait_for("the binlog stream", Duration::from_secs(30), || async {
                daemon.stderr().contains("running")
            })
            .await;
        daemon
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_ops_and_value_forms() {
    let db = MyDb::new(
        "tm_my_types",
        "CREATE TABLE t (id int PRIMARY KEY, name varchar(20), big bigint unsigned, small tinyint, e enum('sad','happy'),
           s set('a','b','c'), b1 bit(1), b8 bit(8), d date, dz date, dt datetime(6), ts timestamp(3) NULL, tm time(6),
           dec1 decimal(65,30), f float, dbl double, j json, bin varbinary(10), yr year, l1 varchar(10) CHARACTER SET latin1,
           emo text)",
    );
    let mut daemon = db.start(&db.config("t", 4301)).await;
    sql(
        "SET time_zone = '+02:00'; SET sql_mode = ''; USE tm_my_types;
         INSERT INTO t VALUES (1, 'x', 18446744073709551615, -128, 'happy', 'a,c', 1, b'10100101', '2026-11-21', '0000-00-00',
           '2026-11-21 13:45:00.123456', '2026-11-21 13:45:00.5', '-13:45:00.000001',
           12345678901234567890123456789012345.123456789012345678901234567890, 1.5, 2.25, '{\"a\": 1}', X'00ff', 2026, 'café', '😀 hé');
         UPDATE t SET name = 'y' WHERE id = 1;
         ALTER TABLE t ADD COLUMN extra int;
         INSERT INTO t (id, extra) VALUES (2, 7);
         DELETE FROM t WHERE id = 1;",
    );
    daemon
        .wait_for("all changes", Duration::from_secs(30), || async {
            db.events().len() >= 5
        })
        .await;
    daemon.stop().await;
    let events = db.events();
    let ops: Vec<&str> = events
        .iter()
        .map(|e| e["op"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(ops, ["c", "u", "s", "c", "d"]);
    let after = &events[0]["after"];
    let expected = json!({
        "id": 1, "name": "x", "big": 18446744073709551615u64, "small": -128, "e": "happy", "s": ["a", "c"],
        "b1": true, "b8": "pQ==", "d": "2026-11-21", "dz": "0000-00-00", "dt": "2026-11-21T13:45:00.123456",
        "ts": "2026-11-21T11:45:00.500000Z", "tm": "-13:45:00.000001",
        "dec1": "12345678901234567890123456789012345.123456789012345678901234567890",
        "f": 1.5, "dbl": 2.25, "j": "{\"a\": 1}", "bin": "AP8=", "yr": 2026, "l1": "café", "emo": "😀 hé"
    });
    assert_eq!(after, &expected);
    assert_eq!(events[1]["before"]["name"], "x");
    assert_eq!(events[1]["after"]["name"], "y");
    assert_eq!(events[2]["ddl"], "ALTER TABLE t ADD COLUMN extra int");
    // Names after the DDL come from the new TABLE_MAP.
    assert_eq!(events[3]["after"]["extra"], 7);
    assert_eq!(events[4]["before"]["extra"], serde_json::Value::Null);
    assert_eq!(events[4]["key"], json!({"id": 1}));
    let positions: Vec<&str> = events
        .iter()
        .map(|e| e["position"].as_str().unwrap_or(""))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(
        events[0]["transaction"]["id"]
            .as_str()
            .is_some_and(|g| g.split('-').count() == 3),
        "GTID"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_sigkill_three_times_loses_nothing() {
    let db = MyDb::new(
        "tm_my_crash",
        "CREATE TABLE r (id int PRIMARY KEY, payload varchar(200))",
    );
    let config = db.config("r", 4302);
    let mut daemon = db.start(&config).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let kills = Arc::new(AtomicUsize::new(0));
    let (written, killed) = (progress.clone(), kills.clone());
    let writer = tokio::spawn(async move {
        for tx in 0..1000usize {
            while tx >= 250 * (killed.load(Ordering::SeqCst) + 1) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let values: Vec<String> = (tx * 20 + 1..=tx * 20 + 20)
                .map(|i| format!("({i}, REPEAT('x', 100))"))
                .collect();
            let statement = format!("INSERT INTO tm_my_crash.r VALUES {}", values.join(", "));
            tokio::task::spawn_blocking(move || sql(&statement))
                .await
                .expect("insert");
            written.store(tx + 1, Ordering::SeqCst);
        }
    });
    for quarter in 1..=3 {
        let at_restart = db.events().len();
        daemon
            .wait_for("events to flow", Duration::from_secs(60), || async {
                progress.load(Ordering::SeqCst) >= quarter * 250 - 100
                    && db.events().len() > at_restart
            })
            .await;
        daemon.crash().await;
        kills.fetch_add(1, Ordering::SeqCst);
        daemon = Daemon::start(&config);
    }
    writer.await.expect("writer");
    daemon
        .wait_for("the last row", Duration::from_secs(120), || async {
            db.events().iter().any(|e| e["after"]["id"] == 20_000)
        })
        .await;
    daemon.stop().await;
    let mut ids = vec![0u32; 20_001];
    for event in db.events() {
        ids[event["after"]["id"].as_u64().expect("id") as usize] += 1;
    }
    let missing: Vec<usize> = (1..=20_000).filter(|&i| ids[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} rows missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        ids.iter().filter(|n| **n > 1).count(),
        0,
        "a row was emitted twice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_purged_binlog_and_bad_sources_are_refused() {
    let db = MyDb::new(
        "tm_my_bad",
        "CREATE TABLE k (id int PRIMARY KEY); CREATE TABLE nokey (v int)",
    );
    let config = db.config("k", 4303);
    std::fs::write(
        db.dir.path().join("cursor.json"),
        r#"{"pipeline":"tm_my_bad","position":{"mysql":{"file":"mariadb-bin.000000","pos":4}},"position_text":"x","updated_at_ms":0}"#,
    )
    .expect("cursor");
    let path = config.display().to_string();
    let (code, stderr) = run_to_end(&["run", "--config", &path]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("mariadb-bin.000000") && stderr.contains("purged"),
        "{stderr}"
    );

    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("server_id = 4303", "server_id = 1")).expect("config");
    let (code, stderr) = run_to_end(&["check", "--config", &path]);
    assert_ne!(code, 0);
    assert!(stderr.contains("source.server_id"), "{stderr}");

    std::fs::write(&config, text.replace("tm_my_bad.k", "tm_my_bad.nokey")).expect("config");
    let (code, stderr) = run_to_end(&["check", "--config", &path]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("tm_my_bad.nokey has no primary key"),
        "{stderr}"
    );
}
