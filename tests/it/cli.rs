//! Bad configs and unfit sources: one clear line each, non-zero exit, no panic.

use crate::common::*;

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

const BASE: &str = r#"[pipeline]
name = "cli"
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/tm_cli"
tables = ["public.good"]
slot = "tm_cli"
publication = "tm_cli"
"#;

fn assert_clear_error(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert!(!errors.is_empty(), "no error line: {stderr}");
    assert!(
        errors.iter().any(|l| l.contains(needle)),
        "no error line names {needle:?}: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_configs_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (BASE.replace("slot = ", "slott = "), "slott"),
        (
            BASE.replace("\"tm_cli\"\npub", "\"Tm-Cli\"\npub"),
            "source.slot",
        ),
        (BASE.replace("[\"public.good\"]", "[]"), "source.tables"),
        (
            BASE.replace("type = \"postgres\"", "type = \"oracle\""),
            "oracle",
        ),
        (
            BASE.replace(
                "postgres://postgres@127.0.0.1:5432/tm_cli",
                "${TIDEMARK_NO_SUCH_VAR}",
            ),
            "TIDEMARK_NO_SUCH_VAR",
        ),
        (format!("{BASE}snapshot = \"sometimes\"\n"), "sometimes"),
        // Unbounded values and a level typo that would silence every line.
        (
            format!("{BASE}snapshot_chunk_rows = 9223372036854775807\n"),
            "source.snapshot_chunk_rows",
        ),
        (
            format!("{BASE}heartbeat_interval = \"5124095576030431h\"\n"),
            "source.heartbeat_interval",
        ),
        (format!("{BASE}[log]\nlevel = \"wran\"\n"), "log.level"),
        ("[pipeline\nname=1".to_string(), "bad.toml"),
    ];
    for (text, needle) in cases {
        let path = write(&dir, &text);
        for command in ["run", "check"] {
            let (code, stderr) = run_to_end(&[command, "--config", &path]);
            assert_clear_error(code, &stderr, needle);
        }
    }
    let (code, stderr) = run_to_end(&["run", "--config", "/nonexistent/tidemark.toml"]);
    assert_clear_error(code, &stderr, "/nonexistent/tidemark.toml");
    // Under --log-format json the fatal line is JSON too, at any level filter.
    let path = write(
        &dir,
        &format!(
            "{}[log]\nlevel = \"off\"\n",
            BASE.replace("[\"public.good\"]", "[]")
        ),
    );
    let (code, stderr) = run_to_end(&["--log-format", "json", "run", "--config", &path]);
    assert_ne!(code, 0, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the fatal line is not JSON ({e}): {stderr}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        line["fields"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unfit_sources_are_refused_with_the_reason() {
    let db = TestDb::new("tm_cli").await;
    db.client
        .batch_execute(
            "CREATE TABLE good (id int PRIMARY KEY); CREATE TABLE nokey (v int);
             DO $$ BEGIN CREATE ROLE tm_plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT SELECT ON good TO tm_plain;",
        )
        .await
        .expect("setup");
    let dir = tempfile::tempdir().expect("tempdir");

    // A healthy source passes `check`.
    let (code, stderr) = run_to_end(&["check", "--config", &write(&dir, BASE)]);
    assert_eq!(code, 0, "{stderr}");

    let (code, stderr) = run_to_end(&[
        "check",
        "--config",
        &write(&dir, &BASE.replace("public.good", "public.missing")),
    ]);
    assert_clear_error(code, &stderr, "public.missing does not exist");

    let (code, stderr) = run_to_end(&[
        "run",
        "--config",
        &write(&dir, &BASE.replace("public.good", "public.nokey")),
    ]);
    assert_clear_error(code, &stderr, "public.nokey has no primary key");

    let (code, stderr) = run_to_end(&[
        "check",
        "--config",
        &write(
            &dir,
            &BASE.replace("postgres://postgres@", "postgres://tm_plain@"),
        ),
    ]);
    assert_clear_error(code, &stderr, "REPLICATION");

    // A server with wal_level=replica (scripts/setup-postgres.sh keeps one on 5433).
    let replica = BASE
        .replace("127.0.0.1:5432/tm_cli", "127.0.0.1:5433/postgres")
        .replace("public.good", "pg_catalog.pg_class");
    for command in ["check", "run"] {
        let (code, stderr) = run_to_end(&[command, "--config", &write(&dir, &replica)]);
        assert_clear_error(code, &stderr, "wal_level is 'replica'");
    }

    // Nothing reachable: one line naming what failed.
    let (code, stderr) = run_to_end(&[
        "run",
        "--config",
        &write(&dir, &BASE.replace("5432", "5999")),
    ]);
    assert_clear_error(code, &stderr, "connect to the source");
}

/// `check` says what `run` (or `apply`) would fail on: a sink path that is
/// a file, a cursor of another source kind, a role that can neither create
/// the publication nor add tables it does not own, and a target that
/// refuses the user.
#[tokio::test(flavor = "multi_thread")]
async fn check_finds_what_run_would_fail_on() {
    use crate::mysql::sql;
    let db = TestDb::new("tm_cli_check").await;
    db.client
        .batch_execute(
            "CREATE TABLE good (id int PRIMARY KEY);
             DO $$ BEGIN CREATE ROLE tm_check_weak LOGIN REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT SELECT ON good TO tm_check_weak;",
        )
        .await
        .expect("setup");
    sql(
        "DROP DATABASE IF EXISTS tm_cli_check_target; CREATE DATABASE tm_cli_check_target;
         CREATE USER IF NOT EXISTS 'tm_check_ro'@'127.0.0.1';
         GRANT SELECT ON tm_cli_check_target.* TO 'tm_check_ro'@'127.0.0.1';",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let base = BASE
        .replace("/tm_cli\"", "/tm_cli_check\"")
        .replace("\"tm_cli\"", "\"tm_cli_check\"");
    let events = dir.path().join("events");
    let cursor = dir.path().join("cursor.json");
    let healthy = format!(
        "{base}[sink]\ntype = \"file\"\npath = \"{}\"\n[cursor]\ntype = \"file\"\npath = \"{}\"\n[target]\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/tm_cli_check_target\"\n",
        events.display(),
        cursor.display()
    );
    let (code, stderr) = run_to_end(&["check", "--config", &write(&dir, &healthy)]);
    assert_eq!(code, 0, "{stderr}");

    let mut tried = 0;
    let mut refused = |config: String, needle: &str| {
        tried += 1;
        let (code, stderr) = run_to_end(&["check", "--config", &write(&dir, &config)]);
        assert!(
            code != 0 && !stderr.contains("panicked"),
            "{needle}: {stderr}"
        );
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    };
    // The sink path is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("file");
    refused(
        healthy.replace(&events.display().to_string(), &file.display().to_string()),
        "is a file, not a folder",
    );
    // The cursor holds a binlog position; the source is Postgres.
    std::fs::write(
        &cursor,
        r#"{"pipeline":"cli","position":{"mysql":{"file":"mariadb-bin.000001","pos":4}},"position_text":"my:1:4","updated_at_ms":0}"#,
    )
    .expect("cursor");
    refused(healthy.clone(), "holds a mysql position");
    std::fs::remove_file(&cursor).expect("remove cursor");
    // A role that may replicate but neither create the publication nor add
    // a table it does not own.
    let weak = healthy.replace("postgres://postgres@", "postgres://tm_check_weak@");
    refused(weak.clone(), "lacks CREATE on database tm_cli_check");
    refused(weak, "does not own public.good");
    // Targets: a user with SELECT only, an unreachable server.
    refused(
        healthy.replace("mysql://root@", "mysql://tm_check_ro@"),
        "lacks INSERT, UPDATE, DELETE, CREATE on database tm_cli_check_target",
    );
    refused(healthy.replace(":3306/", ":1/"), "connect to the target");
    assert_eq!(tried, 6);
}

/// Two processes on one sink directory and cursor file would interleave their
/// lines and commits: the second is refused in one line naming the first.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_the_same_paths_is_refused_naming_the_first() {
    let db = TestDb::new("tm_cli_twice").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .expect("table");
    let config = db.config(&["public.t"], "snapshot = \"never\"");
    let mut first = Daemon::start(&config);
    db.wait_for_slot(true).await;
    let (code, stderr) = run_to_end(&["run", "--config", config.to_str().expect("path")]);
    assert_clear_error(code, &stderr, &format!("pid {}", first.child.id()));
    first.stop().await;
}
