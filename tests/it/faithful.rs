//! What reaches the sink is what was configured and nothing else: account
//! statements on a server with a captured table named `user` never become
//! events, and a publication holding more than `source.tables` (or `FOR ALL
//! TABLES`) does not leak the other tables' rows.

use crate::common::*;
use crate::mysql::{sql, MyDb};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn mysql_account_statements_never_become_events_even_on_a_table_named_user() {
    let db = MyDb::new(
        "tm_faithful_user",
        "CREATE TABLE user (id int PRIMARY KEY, name varchar(20)); CREATE TABLE other (id int PRIMARY KEY)",
    );
    let mut daemon = db
        .start(&db.config("user", 4711, "snapshot = \"never\""))
        .await;
    let secret = "Sw0rdf1sh-tm-17";
    sql(&format!(
        "DROP USER IF EXISTS 'user'@'localhost';
         CREATE USER 'user'@'localhost' IDENTIFIED BY '{secret}';
         ALTER USER 'user'@'localhost' IDENTIFIED BY '{secret}2';
         GRANT SELECT ON tm_faithful_user.user TO 'user'@'localhost';
         SET PASSWORD FOR 'user'@'localhost' = PASSWORD('{secret}3');
         REVOKE SELECT ON tm_faithful_user.user FROM 'user'@'localhost';
         USE tm_faithful_user;
         ALTER TABLE other ADD COLUMN user int;
         CREATE TABLE user_archive (user int);
         INSERT INTO user VALUES (1, 'after the accounts');
         ALTER TABLE user ADD COLUMN age int;
         DROP USER 'user'@'localhost';"
    ));
    db.wait_for_events(&daemon, 2).await;
    daemon.stop().await;
    let events = db.events();
    let text = serde_json::to_string(&events).expect("json");
    assert!(
        !text.contains(secret),
        "a password reached the sink: {text}"
    );
    let ops: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or_default(),
                e["source"]["table"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    // The insert, and the one DDL that was on the captured table.
    assert_eq!(ops, [("c", "user"), ("s", "user")], "{events:#?}");
    assert_eq!(events[1]["ddl"], "ALTER TABLE user ADD COLUMN age int");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tables_outside_source_tables_are_dropped_counted_and_warned_about() {
    let db = TestDb::new("tm_faithful_pub").await;
    db.client
        .batch_execute(
            "CREATE TABLE listed (id int PRIMARY KEY, v text);
             CREATE TABLE cards (id int PRIMARY KEY, number text);
             CREATE PUBLICATION tm_faithful_pub FOR ALL TABLES;",
        )
        .await
        .expect("tables and a FOR ALL TABLES publication");
    let config = db.config(&["public.listed"], "snapshot = \"never\"");
    let config_arg = config.to_str().expect("path");

    let (code, stderr) = run_to_end(&["check", "--config", config_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("FOR ALL TABLES") && stderr.contains("source.publication"),
        "check does not warn of the publication: {stderr}"
    );

    let mut daemon = Daemon::start(&config);
    db.wait_for_slot(true).await;
    let card = "4111111111111111";
    db.client
        .batch_execute(&format!(
            "INSERT INTO cards VALUES (1, '{card}');
             BEGIN; INSERT INTO listed VALUES (1, 'a'); UPDATE cards SET number = number || '0'; COMMIT;
             TRUNCATE cards, listed;
             INSERT INTO listed VALUES (2, 'b');"
        ))
        .await
        .expect("changes");
    daemon
        .wait_for(
            "the listed table's changes",
            Duration::from_secs(30),
            || async { db.events().iter().any(|e| e["after"]["id"] == 2) },
        )
        .await;
    let port = http_port(&daemon).await;
    let (_, metrics) = http_get(port, "/metrics").await;
    daemon.stop().await;
    let events = db.events();
    let text = serde_json::to_string(&events).expect("json");
    assert!(
        !text.contains(card),
        "an unlisted table's row reached the sink"
    );
    let tables: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or_default(),
                e["source"]["table"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(tables, [("c", "listed"), ("t", "listed"), ("c", "listed")]);
    // Insert, update and truncate of `cards`.
    assert_eq!(
        counter_sum(&metrics, "tidemark_unconfigured_changes_dropped_total", ""),
        3.0,
        "{metrics}"
    );
    assert!(
        !metrics.contains("cards"),
        "the unlisted table has a series: {metrics}"
    );
    assert!(!daemon.stderr().contains(card));
}

/// A schema event whose column type is SQL, as anyone who can write to the
/// sink or the stream could craft it, is refused on both target engines in
/// one line, and the target is left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_crafted_schema_event_runs_no_sql_on_either_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).expect("events dir");
    let source = r#""source":{"connector":"postgres","name":"tm_crafted","db":"d","schema":"public","table":"t","ts_ms":1,"snapshot":false}"#;
    let lines = [
        insert_line("tm_crafted", &serde_json::json!({"id": 1}), 1)
            .trim_end()
            .to_string(),
        format!(
            r#"{{"op":"s",{source},"position":"pg:0000000000000002:0000000000000001:0000000000000001","ts_ms":1,"ddl":null,"columns":[{{"name":"id","type":"integer","key":true}},{{"name":"x","type":"int; DROP TABLE victim; --","key":false}}]}}"#
        ),
    ];
    std::fs::write(
        events.join("events-0000000001.jsonl"),
        lines.join("\n") + "\n",
    )
    .expect("events");

    let pg = TestDb::new("tm_crafted_pg").await;
    pg.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE victim (id int)")
        .await
        .expect("target tables");
    let my = MyDb::new(
        "tm_crafted_my",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE victim (id int)",
    );
    for (engine, url) in [
        ("postgres", pg.url()),
        ("mysql", format!("mysql://root@127.0.0.1:3306/{}", my.name)),
    ] {
        let config = apply_config(
            dir.path(),
            "tm_crafted",
            &events,
            &url,
            "schema_changes = \"apply\"\n",
            "",
        );
        let (code, stderr) = apply_until_idle(&config);
        assert_ne!(code, 0, "{engine}: {stderr}");
        assert!(stderr.contains("is not a type"), "{engine}: {stderr}");
    }
    let victims: i64 = pg
        .client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'victim'",
            &[],
        )
        .await
        .expect("victim")
        .get(0);
    assert_eq!(victims, 1, "the Postgres target lost a table");
    assert_eq!(
        sql("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'tm_crafted_my' AND TABLE_NAME = 'victim'").trim(),
        "1",
        "the MariaDB target lost a table"
    );
}

/// Row values written to hurt: the audit's injection row, backslash
/// sequences, quotes, NUL, 4-byte UTF-8. The target is the MariaDB on 3307,
/// whose default `sql_mode` has `NO_BACKSLASH_ESCAPES` (under which the old
/// `\'` escaping ended the string and ran a `DROP TABLE`). The server's own
/// `HEX()` of what landed must be the bytes sent, and the other table stays.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_row_values_land_as_data_on_a_no_backslash_escapes_target() {
    use crate::mysql::{sql_at, NO_METADATA};
    let values = [
        "x'), (3, CONCAT(0x41)); DROP TABLE victim; -- ",
        "\\'); DROP TABLE victim; -- ",
        "back\\slash \\\\ \\n \\0 \\Z %_",
        "\"double\" 'single' `tick`",
        "nul \u{0} byte",
        "😀 four-byte",
        "",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).expect("events dir");
    let lines: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            insert_line(
                "tm_hostile",
                &serde_json::json!({"id": i, "v": v}),
                i as u64 + 1,
            )
        })
        .collect();
    std::fs::write(events.join("events-0000000001.jsonl"), lines.concat()).expect("events");
    let my = MyDb::new_at(
        NO_METADATA,
        "tm_hostile_my",
        "CREATE TABLE t (id int PRIMARY KEY, v text CHARACTER SET utf8mb4); CREATE TABLE victim (id int)",
    );
    assert_eq!(
        sql_at(
            NO_METADATA,
            "root",
            "SELECT FIND_IN_SET('NO_BACKSLASH_ESCAPES', @@GLOBAL.sql_mode) > 0"
        )
        .trim(),
        "1",
        "the server on 3307 must default to NO_BACKSLASH_ESCAPES (scripts/setup-mariadb.sh)"
    );
    let config = apply_config(
        dir.path(),
        "tm_hostile",
        &events,
        &format!("mysql://root@127.0.0.1:{NO_METADATA}/{}", my.name),
        "",
        "",
    );
    let (code, stderr) = apply_until_idle(&config);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        sql_at(NO_METADATA, "root", "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'tm_hostile_my' AND TABLE_NAME = 'victim'").trim(),
        "1",
        "the target lost a table"
    );
    let landed = sql_at(
        NO_METADATA,
        "root",
        "SELECT id, HEX(v) FROM tm_hostile_my.t ORDER BY id",
    );
    let expected: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let hex: String = v.bytes().map(|b| format!("{b:02X}")).collect();
            format!("{i}\t{hex}\n")
        })
        .collect();
    assert_eq!(landed, expected, "what landed is not what was sent");
}
