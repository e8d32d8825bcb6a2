//! Binlog capture on the real MariaDB (scripts/setup-mariadb.sh turns on log_bin,
//! ROW format, FULL row image and metadata, and starts a second server without
//! row metadata on port 3307). Each test has its own database and its own
//! replica server_id.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs SQL through the `mariadb` client and returns its tab-separated output,
/// failing loudly when the server is absent.
pub fn sql_as(user: &str, statements: &str) -> String {
    sql_at(MAIN, user, statements)
}

/// The main test server: FULL row metadata.
pub const MAIN: u16 = 3306;
/// A second server (scripts/setup-mariadb.sh) left at MariaDB's default
/// `binlog_row_metadata = NO_LOG`: TABLE_MAPs carry no names, no signedness,
/// no ENUM/SET labels.
pub const NO_METADATA: u16 = 3307;

/// [`sql_as`] on the server at `port`.
pub fn sql_at(port: u16, user: &str, statements: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "--default-character-set=utf8mb4",
            "-N",
            "-u",
            user,
            "-h127.0.0.1",
            &format!("-P{port}"),
            "-e",
            statements,
        ])
        .output()
        .expect("run the mariadb client");
    assert!(
        out.status.success(),
        "MariaDB at 127.0.0.1:{port} failed ({}); run scripts/setup-mariadb.sh (scripts/test.sh does)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sql(statements: &str) -> String {
    sql_as("root", statements)
}

/// One call of an [`insert_while_killing`] writer on MariaDB: rows
/// `first..first+20` of `db.r (id int, payload varchar)` in one statement.
pub async fn my_insert_rows(db: &'static str, first: usize) {
    let statement = format!(
        "USE {db}; INSERT INTO r SELECT seq, REPEAT('x', 100) FROM seq_{first}_to_{}",
        first + 19
    );
    tokio::task::spawn_blocking(move || sql(&statement))
        .await
        .expect("insert");
}

pub struct MyDb {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl MyDb {
    pub fn new(name: &str, ddl: &str) -> MyDb {
        MyDb::new_at(MAIN, name, ddl)
    }

    /// A fresh database `name` on the server at `port`, made with `ddl`.
    pub fn new_at(port: u16, name: &str, ddl: &str) -> MyDb {
        sql_at(
            port,
            "root",
            &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; USE {name}; {ddl}"),
        );
        MyDb {
            name: name.into(),
            dir: tempfile::tempdir().expect("tempdir"),
            port,
        }
    }

    pub fn config(&self, table: &str, server_id: u32, extra: &str) -> PathBuf {
        let text = format!(
            "[pipeline]\nname = \"{name}\"\nmax_batch_events = 500\n[source]\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:{port}/{name}\"\ntables = [\"{name}.{table}\"]\nserver_id = {server_id}\n{extra}\n[sink]\ntype = \"file\"\npath = \"{dir}/events\"\nmax_file_bytes = 1048576\n[cursor]\ntype = \"file\"\npath = \"{dir}/cursor.json\"\n",
            name = self.name,
            port = self.port,
            dir = self.dir.path().display()
        );
        let path = self.dir.path().join("tidemark.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn events_dir(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    pub fn events(&self) -> Vec<Value> {
        read_events(&self.events_dir())
    }

    pub fn cursor_path(&self) -> PathBuf {
        self.dir.path().join("cursor.json")
    }

    pub fn cursor(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.cursor_path()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Starts the daemon and waits until it streams the binlog.
    pub async fn start(&self, config: &Path) -> Daemon {
        let daemon = Daemon::start(config);
        daemon
            .wait_for("the binlog stream", Duration::from_secs(30), || async {
                daemon.stderr().contains("running")
            })
            .await;
        daemon
    }

    pub async fn wait_for_events(&self, daemon: &Daemon, n: usize) {
        daemon
            .wait_for(&format!("{n} events"), Duration::from_secs(60), || async {
                self.events().len() >= n
            })
            .await;
    }
}

fn ops(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["op"].as_str().unwrap_or("?"))
        .collect()
}

fn column_names(event: &Value) -> Vec<&str> {
    event["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["name"].as_str().unwrap_or("?"))
                .collect()
        })
        .unwrap_or_default()
}

const TYPES_VALUES: &str = "'x', 18446744073709551615, -128, 'happy', 'a,c', 1, b'10100101', '2026-11-21', '0000-00-00',
    '2026-11-21 13:45:00.123456', '2026-11-21 13:45:00.5', '-13:45:00.000001',
    12345678901234567890123456789012345.123456789012345678901234567890, 1.5, 2.25, '{\"a\": 1}', X'00ff', 2026, 'café', '😀 hé',
    -8388608, 16777215, -32768, -12.5";

fn expected_types(id: i64) -> Value {
    json!({
        "id": id, "name": "x", "big": 18446744073709551615u64, "small": -128, "e": "happy", "s": ["a", "c"],
        "b1": true, "b8": "pQ==", "d": "2026-11-21", "dz": "0000-00-00", "dt": "2026-11-21T13:45:00.123456",
        "ts": "2026-11-21T11:45:00.500000Z", "tm": "-13:45:00.000001",
        "dec1": "12345678901234567890123456789012345.123456789012345678901234567890",
        "f": 1.5, "dbl": 2.25, "j": "{\"a\": 1}", "bin": "AP8=", "yr": 2026, "l1": "café", "emo": "😀 hé",
        "mi": -8388608, "mu": 16777215, "sm": -32768, "nd": "-12.50"
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_ops_and_value_forms_in_snapshot_and_stream() {
    let db = MyDb::new(
        "tm_my_types",
        "CREATE TABLE t (id int PRIMARY KEY, name varchar(20), big bigint unsigned, small tinyint, e enum('sad','happy'),
           s set('a','b','c'), b1 bit(1), b8 bit(8), d date, dz date, dt datetime(6), ts timestamp(3) NULL, tm time(6),
           dec1 decimal(65,30), f float, dbl double, j json, bin varbinary(10), yr year, l1 varchar(10) CHARACTER SET latin1,
           emo text, mi mediumint, mu mediumint unsigned, sm smallint, nd decimal(10,2))",
    );
    let insert = |id: i64| {
        format!("SET time_zone = '+02:00'; SET sql_mode = ''; INSERT INTO tm_my_types.t VALUES ({id}, {TYPES_VALUES});")
    };
    sql(&insert(1));
    let mut daemon = db.start(&db.config("t", 4301, "")).await;
    sql(&format!(
        "{} USE tm_my_types;
         UPDATE t SET name = 'y' WHERE id = 3;
         ALTER TABLE t ADD COLUMN extra int;
         INSERT INTO t (id, extra) VALUES (2, 7);
         DELETE FROM t WHERE id = 3;
         TRUNCATE TABLE t;",
        insert(3)
    ));
    db.wait_for_events(&daemon, 7).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(
        ops(&events),
        ["r", "c", "u", "s", "c", "d", "t"],
        "{events:#?}"
    );
    // The same values read by the snapshot and decoded from the binlog.
    assert_eq!(events[0]["after"], expected_types(1));
    assert_eq!(events[0]["source"]["snapshot"], true);
    assert_eq!(events[1]["after"], expected_types(3));
    assert_eq!(events[2]["before"]["name"], "x");
    assert_eq!(events[2]["after"]["name"], "y");
    assert_eq!(events[3]["ddl"], "ALTER TABLE t ADD COLUMN extra int");
    assert_eq!(column_names(&events[3]).last(), Some(&"extra"));
    assert_eq!(
        events[3]["columns"][0],
        json!({"name": "id", "type": "int(11)", "key": true})
    );
    assert_eq!(events[4]["after"]["extra"], 7);
    assert_eq!(events[5]["before"]["extra"], Value::Null);
    assert_eq!(events[5]["key"], json!({"id": 3}));
    assert_eq!(events[6]["source"]["table"], "t");
    let positions: Vec<&str> = events
        .iter()
        .map(|e| e["position"].as_str().unwrap_or(""))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let gtid = events[1]["transaction"]["id"].as_str().unwrap_or("");
    assert_eq!(
        gtid.split('-').count(),
        3,
        "MariaDB GTID as transaction id, got {gtid:?}"
    );
    // EVENTS.md's MySQL source fields, checked against the server's own
    // binlog listing and the position.
    let source = &events[1]["source"];
    assert_eq!(source["gtid"], gtid, "{source}");
    let server_id = sql("SELECT @@server_id");
    assert_eq!(
        source["server_id"].to_string(),
        server_id.trim(),
        "{source}"
    );
    let file = source["file"].as_str().unwrap_or_default();
    assert!(
        sql("SHOW BINARY LOGS").lines().any(|l| l.starts_with(file)) && !file.is_empty(),
        "{source}"
    );
    let position = events[1]["position"].as_str().unwrap_or_default();
    let pos_hex = position.split(':').nth(2).unwrap_or_default();
    assert_eq!(
        u64::from_str_radix(pos_hex, 16).ok(),
        source["pos"].as_u64(),
        "{source} at {position}"
    );
    assert_eq!(source["row"], 0);
    let events_in_binlog = sql(&format!(
        "SHOW BINLOG EVENTS IN '{file}' FROM {}",
        source["pos"]
    ));
    assert!(
        events_in_binlog
            .lines()
            .next()
            .is_some_and(|l| l.contains("Write_rows")),
        "pos names the rows event: {events_in_binlog}"
    );
    assert_eq!(events[0]["source"]["row"], 1, "the snapshot row's ordinal");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_without_table_map_metadata_takes_names_and_types_from_the_schema_history() {
    let db = MyDb::new_at(
        NO_METADATA,
        "tm_my_nometa",
        "CREATE TABLE t (id int unsigned PRIMARY KEY, mu mediumint unsigned, big bigint unsigned, mi mediumint,
           e enum('sad','happy'), s set('a','b','c'), l1 varchar(10) CHARACTER SET latin1, bin varbinary(10),
           emo varchar(20) CHARACTER SET utf8mb4)",
    );
    let mut daemon = db
        .start(&db.config("t", 4307, "snapshot = \"never\""))
        .await;
    let check = daemon
        .stderr()
        .lines()
        .any(|l| l.contains("binlog_row_metadata"));
    assert!(
        check,
        "no warning about the missing metadata:\n{}",
        daemon.stderr()
    );
    sql_at(
        NO_METADATA,
        "root",
        "USE tm_my_nometa;
         INSERT INTO t VALUES (4294967295, 16777215, 18446744073709551615, -8388608, 'happy', 'a,c', 'café', X'00ff', '😀 hé');
         ALTER TABLE t ADD COLUMN extra smallint unsigned AFTER id;
         UPDATE t SET extra = 65535, e = 'sad' WHERE id = 4294967295;",
    );
    db.wait_for_events(&daemon, 3).await;
    daemon.stop().await;
    let events = db.events();
    assert_eq!(ops(&events), ["c", "s", "u"], "{events:#?}");
    assert_eq!(
        events[0]["after"],
        json!({"id": 4294967295u64, "mu": 16777215, "big": 18446744073709551615u64, "mi": -8388608,
               "e": "happy", "s": ["a", "c"], "l1": "café", "bin": "AP8=", "emo": "😀 hé"})
    );
    assert_eq!(events[0]["key"], json!({"id": 4294967295u64}));
    // After the DDL the names and types follow the new layout.
    assert_eq!(column_names(&events[1])[1], "extra");
    assert_eq!(events[2]["before"]["extra"], Value::Null);
    assert_eq!(events[2]["after"]["extra"], 65535);
    assert_eq!(events[2]["after"]["e"], "sad");
    assert_eq!(events[2]["after"]["big"], json!(18446744073709551615u64));
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_ddl_mid_stream_keeps_names_right_on_both_sides() {
    let db = MyDb::new(
        "tm_my_ddl",
        "CREATE TABLE t (id int PRIMARY KEY, a int, b varchar(10))",
    );
    let mut daemon = db.start(&db.config("t", 4304, "")).await;
    // One DDL at a time: the schema event's columns come from the schema history
    // as the connector reads it.
    let steps = [
        "INSERT INTO t VALUES (1, 10, 'x')",
        "ALTER TABLE t ADD COLUMN c int",
        "INSERT INTO t VALUES (2, 20, 'y', 5)",
        "ALTER TABLE t DROP COLUMN a",
        "UPDATE t SET b = 'z' WHERE id = 1",
        "ALTER TABLE t RENAME COLUMN b TO bb",
        "INSERT INTO t VALUES (3, 'w', 6)",
        "ALTER TABLE t MODIFY c bigint",
        "INSERT INTO t VALUES (4, 'v', 9223372036854775807)",
    ];
    for (i, step) in steps.iter().enumerate() {
        sql(&format!("USE tm_my_ddl; {step}"));
        db.wait_for_events(&daemon, i + 1).await;
    }
    daemon.stop().await;
    let events = db.events();
    assert_eq!(ops(&events), ["c", "s", "c", "s", "u", "s", "c", "s", "c"]);
    assert_eq!(events[0]["after"], json!({"id": 1, "a": 10, "b": "x"}));
    assert_eq!(column_names(&events[1]), ["id", "a", "b", "c"]);
    assert_eq!(
        events[2]["after"],
        json!({"id": 2, "a": 20, "b": "y", "c": 5})
    );
    assert_eq!(column_names(&events[3]), ["id", "b", "c"]);
    assert_eq!(events[4]["before"], json!({"id": 1, "b": "x", "c": null}));
    assert_eq!(events[4]["after"], json!({"id": 1, "b": "z", "c": null}));
    assert_eq!(column_names(&events[5]), ["id", "bb", "c"]);
    assert_eq!(events[6]["after"], json!({"id": 3, "bb": "w", "c": 6}));
    assert_eq!(events[7]["columns"][2]["type"], "bigint(20)");
    assert_eq!(events[8]["after"]["c"], json!(9223372036854775807i64));
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_snapshot_under_concurrent_writes_has_no_gap_and_no_overlap() {
    let db = MyDb::new(
        "tm_my_snap",
        "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO items SELECT seq, 0 FROM seq_1_to_20000;",
    );
    let daemon = Daemon::start(&db.config("items", 4305, "snapshot_chunk_rows = 300"));
    daemon
        .wait_for("the snapshot to start", Duration::from_secs(30), || async {
            daemon.stderr().contains("snapshot at binlog")
        })
        .await;
    let writer = tokio::task::spawn_blocking(|| {
        for i in 0..400 {
            sql(&format!(
                "USE tm_my_snap; BEGIN; INSERT INTO items VALUES ({}, 1); UPDATE items SET v = v + 1 WHERE id = {}; DELETE FROM items WHERE id = {}; COMMIT;",
                20001 + i,
                1 + (i * 37) % 20000,
                19000 + i
            ));
        }
    });
    writer.await.expect("writer");
    let final_rows: BTreeMap<i64, i64> = sql("SELECT id, v FROM tm_my_snap.items")
        .lines()
        .filter_map(|l| {
            let (id, v) = l.split_once('\t')?;
            Some((id.parse().ok()?, v.parse().ok()?))
        })
        .collect();
    let mut daemon = daemon;
    daemon
        .wait_for("the last write", Duration::from_secs(120), || async {
            db.events().iter().any(|e| e["after"]["id"] == 20_400)
        })
        .await;
    daemon.stop().await;

    let mut state: BTreeMap<i64, i64> = BTreeMap::new();
    let mut reads: HashMap<i64, usize> = HashMap::new();
    let mut created: HashMap<i64, usize> = HashMap::new();
    let mut last = String::new();
    for event in db.events() {
        let position = event["position"].as_str().expect("position").to_string();
        assert!(position > last, "positions out of order at {position}");
        last = position;
        let id = |row: &Value| row["id"].as_i64().expect("id");
        match event["op"].as_str() {
            Some("r") => *reads.entry(id(&event["after"])).or_default() += 1,
            Some("c") => *created.entry(id(&event["after"])).or_default() += 1,
            _ => {}
        }
        match event["op"].as_str() {
            Some("d") => {
                state.remove(&id(&event["before"]));
            }
            _ => {
                state.insert(
                    id(&event["after"]),
                    event["after"]["v"].as_i64().expect("v"),
                );
            }
        }
    }
    assert!(
        reads.values().chain(created.values()).all(|n| *n == 1),
        "a row was read or inserted twice"
    );
    let overlap: Vec<_> = created.keys().filter(|id| reads.contains_key(id)).collect();
    assert!(
        overlap.is_empty(),
        "rows both snapshotted and streamed as inserts: {overlap:?}"
    );
    assert_eq!(state, final_rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_sigkill_three_times_loses_nothing() {
    let db = MyDb::new(
        "tm_my_crash",
        "CREATE TABLE r (id int PRIMARY KEY, payload varchar(200))",
    );
    let config = db.config("r", 4302, "");
    let daemon = db.start(&config).await;
    let daemon = insert_while_killing(
        daemon,
        &config,
        || async { db.events().len() },
        |first| my_insert_rows("tm_my_crash", first),
    )
    .await;
    finish_crash_test(daemon, || db.events()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_resumes_from_file_offset_and_from_gtid() {
    let db = MyDb::new("tm_my_resume", "CREATE TABLE r (id int PRIMARY KEY)");
    let config = db.config("r", 4306, "");
    let insert = |from: usize| {
        let rows: Vec<String> = (from..from + 10).map(|i| format!("({i})")).collect();
        sql(&format!(
            "INSERT INTO tm_my_resume.r VALUES {}",
            rows.join(", ")
        ));
    };
    let mut daemon = db.start(&config).await;
    insert(1);
    db.wait_for_events(&daemon, 10).await;
    daemon.stop().await;

    // Written while stopped: resumed from the cursor's file and offset.
    insert(11);
    let cursor: Value =
        serde_json::from_str(&std::fs::read_to_string(db.cursor_path()).expect("cursor"))
            .expect("json");
    // The file name comes from the stream's first (artificial) ROTATE event, whose
    // trailing checksum bytes must not leak into it.
    let file = cursor["position"]["mysql"]["file"].as_str().unwrap_or("");
    let listed = sql("SHOW BINARY LOGS");
    assert!(
        listed.lines().any(|l| l.split('\t').next() == Some(file)),
        "{file:?} not in {listed}"
    );
    let mut daemon = db.start(&config).await;
    db.wait_for_events(&daemon, 20).await;
    daemon.stop().await;

    // A cursor with only the GTID state (say, copied from another server).
    let mut cursor: Value =
        serde_json::from_str(&std::fs::read_to_string(db.cursor_path()).expect("cursor"))
            .expect("json");
    let gtid = cursor["position"]["mysql"]["gtid"]
        .as_str()
        .expect("cursor has a GTID state")
        .to_string();
    cursor["position"]["mysql"]["file"] = json!("");
    cursor["position"]["mysql"]["pos"] = json!(0);
    std::fs::write(db.cursor_path(), cursor.to_string()).expect("cursor");
    insert(21);
    let mut daemon = db.start(&config).await;
    db.wait_for_events(&daemon, 30).await;
    daemon.stop().await;
    assert!(
        daemon
            .stderr()
            .contains(&format!("resuming from GTID state {gtid}")),
        "{}",
        daemon.stderr()
    );
    assert_each_id_once(&db.events(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_purged_binlog_missing_grants_and_bad_sources_are_refused() {
    let db = MyDb::new(
        "tm_my_bad",
        "CREATE TABLE k (id int PRIMARY KEY); CREATE TABLE nokey (v int)",
    );
    let config = db.config("k", 4303, "");
    let path = config.display().to_string();
    std::fs::write(
        db.cursor_path(),
        r#"{"pipeline":"tm_my_bad","position":{"mysql":{"file":"mariadb-bin.000000","pos":4}},"position_text":"x","updated_at_ms":0}"#,
    )
    .expect("cursor");
    let (code, stderr) = run_to_end(&["run", "--config", &path]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("mariadb-bin.000000") && stderr.contains("purged"),
        "{stderr}"
    );

    let text = std::fs::read_to_string(&config).expect("config");
    let check_with = |config_text: String, needle: &str| {
        std::fs::write(&config, config_text).expect("config");
        assert_command_refused("check", &config, needle);
    };
    check_with(
        text.replace("server_id = 4303", "server_id = 1"),
        "source.server_id",
    );
    check_with(
        text.replace("tm_my_bad.k", "tm_my_bad.nokey"),
        "tm_my_bad.nokey has no primary key",
    );
    check_with(
        text.replace("tm_my_bad.k", "tm_my_bad.missing"),
        "tm_my_bad.missing does not exist",
    );

    sql("CREATE USER IF NOT EXISTS 'tm_limited'@'%'; GRANT SELECT ON tm_my_bad.* TO 'tm_limited'@'%';");
    let limited = text.replace("mysql://root@", "mysql://tm_limited@");
    check_with(limited.clone(), "lacks REPLICATION SLAVE");
    check_with(limited, "lacks REPLICATION CLIENT");
    // The restricted user itself can read: the refusal is about the grants only.
    assert_eq!(
        sql_as("tm_limited", "SELECT COUNT(*) FROM tm_my_bad.k").trim(),
        "0"
    );
}
