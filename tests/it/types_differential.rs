//! Every type of the README's type tables, with its edge values
//! (`fixtures/types/*.json`), checked three ways against opinions that share
//! no code with tidemark:
//! - the snapshot (`op: r`) against the stream (`op: c` and `u`) of the same
//!   values;
//! - against an independent decoder of the same log, normalised to the
//!   documented forms: Postgres' own `test_decoding` (a second slot, read with
//!   `pg_logical_slot_peek_changes`) and python-mysql-replication
//!   (`tests/differential/*.py`, installed by `scripts/setup-python-tools.sh`);
//! - after `apply` into a PostgreSQL and a MariaDB target, per-column
//!   checksums computed by each server in SQL over a canonical text of the
//!   value, equal to the source's; and values a target cannot hold stop the
//!   apply naming table, column, key and position, with nothing written.
//!
//! Any difference fails with both values printed.

use crate::common::*;
use crate::mysql::{sql, MyDb};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Deserialize)]
struct Corpus {
    #[serde(default)]
    setup: Vec<String>,
    columns: Vec<CorpusColumn>,
    #[serde(default)]
    refused: Vec<Refused>,
}

#[derive(Deserialize)]
struct CorpusColumn {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    values: Vec<String>,
    pg_target: String,
    mysql_target: String,
    canon_pg: String,
    canon_mysql: String,
    #[serde(default = "yes")]
    canon_cross: bool,
}

#[derive(Deserialize)]
struct Refused {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    value: String,
    target: String,
}

fn yes() -> bool {
    true
}

fn corpus(file: &str) -> Corpus {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/types")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Corpus {
    fn rows(&self) -> usize {
        self.columns
            .iter()
            .map(|c| c.values.len())
            .max()
            .unwrap_or(0)
    }

    /// `CREATE TABLE t (id int primary key, touch int, <columns>)`, with the
    /// source types or a target's.
    fn create(&self, table: &str, quote: char, types: impl Fn(&CorpusColumn) -> &str) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{quote}{}{quote} {}", c.name, types(c)))
            .collect();
        format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, touch int, {})",
            columns.join(", ")
        )
    }

    /// One INSERT per row: row i (id i+1) takes each column's i-th value.
    fn inserts(&self, table: &str, quote: char) -> Vec<String> {
        let names: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{quote}{}{quote}", c.name))
            .collect();
        (0..self.rows())
            .map(|i| {
                let values: Vec<&str> = self
                    .columns
                    .iter()
                    .map(|c| c.values.get(i).map_or("NULL", String::as_str))
                    .collect();
                format!(
                    "INSERT INTO {table} (id, {}) VALUES ({}, {})",
                    names.join(", "),
                    i + 1,
                    values.join(", ")
                )
            })
            .collect()
    }
}

/// The python of `scripts/setup-python-tools.sh`'s venv.
fn python() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-python-tools.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs an independent decoder script; its JSON lines.
fn decoder(script: &str, args: &[&str]) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/differential")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("run the decoder");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script} wrote {l}: {e}")))
        .collect()
}

/// Each event of `op` by its row's id.
fn by_id<'a>(events: &'a [Value], op: &str) -> BTreeMap<i64, &'a Value> {
    events
        .iter()
        .filter(|e| e["op"] == op)
        .filter_map(|e| Some((e["after"]["id"].as_i64()?, e)))
        .collect()
}

fn unchanged(event: &Value) -> &[Value] {
    event["unchanged"].as_array().map_or(&[], Vec::as_slice)
}

/// A value for a failure line, cut to a readable length.
fn shown(value: Option<&Value>) -> String {
    cut(&value.map_or("(absent)".into(), Value::to_string))
}

/// Text cut to a readable length for a failure line.
fn cut(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}… ({} chars)", &text[..end], text.chars().count()),
        None => text.to_string(),
    }
}

/// Compares two images column by column (all but `id` and `touch`). A column
/// `theirs` lists in `unchanged` (an unchanged TOAST value an update did not
/// send) is not compared.
fn compare(
    what: &str,
    id: i64,
    ours: &Value,
    theirs: &Value,
    columns: &[CorpusColumn],
    unchanged: &[Value],
    failures: &mut Vec<String>,
) {
    for c in columns {
        let (a, b) = (ours.get(&c.name), theirs.get(&c.name));
        match (a, b) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) => {}
            (Some(_), None) if unchanged.iter().any(|u| u == c.name.as_str()) => {}
            _ => failures.push(format!(
                "{what}: row {id} column {} ({}): tidemark {} / other {}",
                c.name,
                c.type_name,
                shown(a),
                shown(b)
            )),
        }
    }
}

/// Snapshot rows (ids 1..=n) against the stream's copies (ids 1001..): the
/// inserts (`c`) and the updates of `touch` (`u`).
fn snapshot_against_stream(events: &[Value], corpus: &Corpus, failures: &mut Vec<String>) {
    let snapshot = by_id(events, "r");
    let (created, updated) = (by_id(events, "c"), by_id(events, "u"));
    for id in 1..=corpus.rows() as i64 {
        let Some(r) = snapshot.get(&id) else {
            failures.push(format!("row {id}: no snapshot event"));
            continue;
        };
        for (op, stream) in [("c", &created), ("u", &updated)] {
            match stream.get(&(id + 1000)) {
                Some(s) => compare(
                    &format!("snapshot vs stream {op}"),
                    id,
                    &r["after"],
                    &s["after"],
                    &corpus.columns,
                    unchanged(s),
                    failures,
                ),
                None => failures.push(format!("row {}: no {op} event", id + 1000)),
            }
        }
    }
}

/// tidemark's streamed events against an independent decoder's, by op and id.
/// Columns tidemark lists in `unchanged` are not in its image; they must not be
/// in the other either.
fn stream_against_decoder(
    what: &str,
    events: &[Value],
    other: &[Value],
    corpus: &Corpus,
    failures: &mut Vec<String>,
) {
    let mut compared = 0;
    for op in ["c", "u"] {
        let ours = by_id(events, op);
        let theirs = by_id(other, op);
        for (id, after) in &ours {
            match theirs.get(id) {
                Some(o) => {
                    compared += 1;
                    compare(
                        &format!("{what} {op}"),
                        *id,
                        &after["after"],
                        &o["after"],
                        &corpus.columns,
                        unchanged(o),
                        failures,
                    )
                }
                None => failures.push(format!("{what}: {op} of row {id} is not in its output")),
            }
        }
    }
    assert!(
        compared >= 2 * corpus.rows(),
        "{what}: only {compared} events compared"
    );
}

/// `md5` over the canonical texts of one column, in id order, on Postgres.
async fn pg_checksum(
    client: &tokio_postgres::Client,
    table: &str,
    canon: &str,
) -> (String, Vec<String>) {
    let expr = format!("coalesce(({canon})::text, '<NULL>')");
    let sum: String = client
        .query_one(
            &format!("SELECT md5(coalesce(string_agg({expr}, '|' ORDER BY id), '')) FROM {table}"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("checksum {expr} on {table}: {e}"))
        .get(0);
    let texts = client
        .query(
            &format!("SELECT id::text || ' ' || {expr} FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{expr} on {table}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    (sum, texts)
}

/// The same on MariaDB (through the `mariadb` client).
fn my_checksum(db: &str, table: &str, canon: &str) -> (String, Vec<String>) {
    let expr = format!("coalesce(({canon}), '<NULL>')");
    let sum = sql(&format!(
        "SET SESSION group_concat_max_len = 1073741824; USE {db}; SELECT md5(coalesce(group_concat({expr} ORDER BY id SEPARATOR '|'), '')) FROM {table}"
    ));
    let texts = sql(&format!(
        "USE {db}; SELECT concat(id, ' ', {expr}) FROM {table} ORDER BY id"
    ));
    (
        sum.trim().to_string(),
        texts.lines().map(str::to_string).collect(),
    )
}

/// Appends a failure when two checksums differ, with the first rows that differ.
fn check_sums(
    what: &str,
    column: &CorpusColumn,
    source: (String, Vec<String>),
    target: (String, Vec<String>),
    failures: &mut Vec<String>,
) {
    if source.0 == target.0 {
        return;
    }
    let diff: Vec<String> = source
        .1
        .iter()
        .zip(
            target
                .1
                .iter()
                .chain(std::iter::repeat(&String::from("(missing)"))),
        )
        .filter(|(a, b)| a != b)
        .take(3)
        .map(|(a, b)| format!("source {:?} / target {:?}", cut(a), cut(b)))
        .collect();
    failures.push(format!(
        "{what}: column {} ({}): checksum {} / {}: {}",
        column.name,
        column.type_name,
        source.0,
        target.0,
        diff.join("; ")
    ));
}

/// Copies `config` with a `[target]` and `[apply] input = "sink"`, runs
/// `tidemark apply --until-idle`; (exit code, stderr).
fn apply(config: &Path, name: &str, target: &str, tables: &str) -> (i32, String) {
    let copy = config.with_file_name(format!("{name}.toml"));
    std::fs::copy(config, &copy).expect("copy config");
    let engine = if target.starts_with("mysql") {
        "mysql"
    } else {
        "postgres"
    };
    append(
        &copy,
        &format!("[target]\ntype = \"{engine}\"\nurl = \"{target}\"\n[target.tables]\n{tables}\n[apply]\ninput = \"sink\"\n"),
    );
    run_to_end(&[
        "apply",
        "--config",
        copy.to_str().expect("path"),
        "--until-idle",
    ])
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_types_agree_with_test_decoding_and_survive_apply() {
    let corpus = corpus("postgres.json");
    let n = corpus.rows();
    let db = TestDb::new("tm_diff_pg").await;
    for statement in &corpus.setup {
        db.client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    db.client
        .batch_execute(&corpus.create("t", '"', |c| &c.type_name))
        .await
        .expect("create t");
    for insert in corpus.inserts("t", '"') {
        db.client
            .batch_execute(&insert)
            .await
            .unwrap_or_else(|e| panic!("{insert}: {e}"));
    }
    // The second opinion's slot, from before the stream's changes.
    db.client
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('tm_diff_pg_td', 'test_decoding')",
        )
        .await
        .expect("test_decoding slot");

    let config = db.config(&["public.t"], "");
    let mut daemon = Daemon::start(&config);
    daemon
        .wait_for("the snapshot", Duration::from_secs(60), || async {
            db.events().iter().filter(|e| e["op"] == "r").count() >= n
        })
        .await;
    let names: Vec<String> = corpus
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    db.client
        .batch_execute(&format!(
            "INSERT INTO t (id, {0}) SELECT id + 1000, {0} FROM t WHERE id <= {n}; UPDATE t SET touch = 1 WHERE id > 1000",
            names.join(", ")
        ))
        .await
        .expect("stream copies");
    daemon
        .wait_for("the streamed copies", Duration::from_secs(60), || async {
            db.events().iter().filter(|e| e["op"] == "u").count() >= n
        })
        .await;
    daemon.stop().await;
    let events: Vec<Value> = db
        .events()
        .into_iter()
        .filter(|e| e["source"]["table"] == "t")
        .collect();

    let mut failures = Vec::new();
    snapshot_against_stream(&events, &corpus, &mut failures);
    let dsn = format!("host=127.0.0.1 port=5432 user=postgres dbname={}", db.name);
    let decoded: Vec<Value> = decoder(
        "pg_test_decoding.py",
        &["--dsn", &dsn, "--slot", "tm_diff_pg_td"],
    )
    .into_iter()
    .filter(|e| e["table"] == "public.t")
    .collect();
    stream_against_decoder("test_decoding", &events, &decoded, &corpus, &mut failures);
    db.client
        .batch_execute("SELECT pg_drop_replication_slot('tm_diff_pg_td')")
        .await
        .expect("drop slot");

    // Apply into a Postgres and a MariaDB target, tables made with the corpus' target types.
    let pg_target = TestDb::new("tm_diff_pg_to_pg").await;
    for statement in &corpus.setup {
        pg_target
            .client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    pg_target
        .client
        .batch_execute(&corpus.create("t", '"', |c| &c.pg_target))
        .await
        .expect("target t");
    let (code, stderr) = apply(&config, "to_pg", &pg_target.url(), "\"public.t\" = \"t\"");
    assert_eq!(code, 0, "apply into Postgres: {stderr}");
    let my_target = MyDb::new(
        "tm_diff_pg_to_my",
        &corpus.create("t", '`', |c| &c.mysql_target),
    );
    let my_url = format!("mysql://root@127.0.0.1:3306/{}", my_target.name);
    let (code, stderr) = apply(&config, "to_my", &my_url, "\"public.t\" = \"t\"");
    assert_eq!(code, 0, "apply into MariaDB: {stderr}");
    for c in &corpus.columns {
        let canon_src = c.canon_pg.replace("{c}", &format!("\"{}\"", c.name));
        let source = pg_checksum(&db.client, "t", &canon_src).await;
        let target = pg_checksum(&pg_target.client, "t", &canon_src).await;
        check_sums(
            "apply into Postgres",
            c,
            source.clone(),
            target,
            &mut failures,
        );
        if c.canon_cross {
            let canon_my = c.canon_mysql.replace("{c}", &format!("`{}`", c.name));
            check_sums(
                "apply into MariaDB",
                c,
                source,
                my_checksum(&my_target.name, "t", &canon_my),
                &mut failures,
            );
        }
    }
    pg_refusals(&corpus, &my_url, &my_target.name).await;

    // `migrate` into both engines: the copy (COPY between Postgres databases,
    // events across engines), then the catch-up of a change made after it.
    let mg_pg = TestDb::new("tm_diff_pg_mg_pg").await;
    for statement in &corpus.setup {
        mg_pg
            .client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let mg_my = MyDb::new("tm_diff_pg_mg_my", "");
    let mg_my_url = format!("mysql://root@127.0.0.1:3306/{}", mg_my.name);
    for (name, url) in [
        ("tm_diff_pg_mg_pg", mg_pg.url()),
        ("tm_diff_pg_mg_my", mg_my_url.clone()),
    ] {
        let touch = Touch::Postgres(&db.client);
        migrate(&config, name, &url, "\"public.t\" = \"t\"", n, touch).await;
    }
    for c in &corpus.columns {
        let canon_src = c.canon_pg.replace("{c}", &format!("\"{}\"", c.name));
        let source = pg_checksum(&db.client, "t", &canon_src).await;
        check_sums(
            "migrate into Postgres",
            c,
            source.clone(),
            pg_checksum(&mg_pg.client, "t", &canon_src).await,
            &mut failures,
        );
        if c.canon_cross {
            let canon_my = c.canon_mysql.replace("{c}", &format!("`{}`", c.name));
            check_sums(
                "migrate into MariaDB",
                c,
                source,
                my_checksum(&mg_my.name, "t", &canon_my),
                &mut failures,
            );
        }
    }
    report(failures);
}

/// `SHOW MASTER STATUS`: (file, position).
fn binlog_position() -> (String, String) {
    let status = sql("SHOW MASTER STATUS");
    let mut fields = status.split('\t');
    (
        fields.next().unwrap_or_default().trim().to_string(),
        fields.next().unwrap_or_default().trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_types_agree_with_python_mysql_replication_and_survive_apply() {
    let corpus = corpus("mariadb.json");
    let n = corpus.rows();
    let mut ddl: Vec<String> = corpus.setup.clone();
    ddl.push(corpus.create("t", '`', |c| &c.type_name));
    ddl.extend(corpus.inserts("t", '`'));
    let db = MyDb::new("tm_diff_my", &format!("{};", ddl.join(";\n")));
    let config = db.config("t", 4701, "");
    let mut daemon = db.start(&config).await;
    daemon
        .wait_for("the snapshot", Duration::from_secs(60), || async {
            db.events().iter().filter(|e| e["op"] == "r").count() >= n
        })
        .await;
    let (file, pos) = binlog_position();
    let names: Vec<String> = corpus
        .columns
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect();
    let setup = corpus.setup.join(";\n");
    sql(&format!(
        "USE tm_diff_my; {setup}{sep} INSERT INTO t (id, {0}) SELECT id + 1000, {0} FROM t WHERE id <= {n}; UPDATE t SET touch = 1 WHERE id > 1000",
        names.join(", "),
        sep = if setup.is_empty() { "" } else { ";" }
    ));
    db.wait_for_events(&daemon, 3 * n).await;
    daemon.stop().await;
    let events: Vec<Value> = db
        .events()
        .into_iter()
        .filter(|e| e["source"]["table"] == "t")
        .collect();

    let mut failures = Vec::new();
    snapshot_against_stream(&events, &corpus, &mut failures);
    let decoded: Vec<Value> = decoder(
        "mysql_binlog.py",
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "3306",
            "--user",
            "root",
            "--server-id",
            "4702",
            "--log-file",
            &file,
            "--log-pos",
            &pos,
            "--only-schema",
            "tm_diff_my",
        ],
    )
    .into_iter()
    .filter(|e| e["table"] == "tm_diff_my.t")
    .collect();
    // Values python-mysql-replication cannot represent are reported by it as
    // such (the script's header lists them); they are left out, and counted.
    let mut undecodable = 0;
    let decoded: Vec<Value> = decoded
        .into_iter()
        .map(|mut e| {
            if let Some(after) = e.get_mut("after").and_then(Value::as_object_mut) {
                after.retain(|_, v| {
                    let bad = v.get("__undecodable__").is_some();
                    undecodable += usize::from(bad);
                    !bad
                });
            }
            e
        })
        .collect();
    let ours: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let (id, op) = (e["after"]["id"].as_i64(), e["op"].clone());
            let other = decoded
                .iter()
                .find(|d| d["op"] == op && d["after"]["id"].as_i64() == id);
            if let (Some(after), Some(other)) =
                (e.get_mut("after").and_then(Value::as_object_mut), other)
            {
                after.retain(|k, _| other["after"].get(k).is_some());
            }
            e
        })
        .collect();
    stream_against_decoder(
        "python-mysql-replication",
        &ours,
        &decoded,
        &corpus,
        &mut failures,
    );
    eprintln!("python-mysql-replication could not decode {undecodable} values (left out)");

    let pg_target = TestDb::new("tm_diff_my_to_pg").await;
    pg_target
        .client
        .batch_execute(&corpus.create("t", '"', |c| &c.pg_target))
        .await
        .expect("target t");
    let my_target = MyDb::new(
        "tm_diff_my_to_my",
        &format!("{};", {
            let mut ddl = corpus.setup.clone();
            ddl.push(corpus.create("t", '`', |c| &c.mysql_target));
            ddl.join(";\n")
        }),
    );
    let maps = "\"tm_diff_my.t\" = \"t\"";
    let (code, stderr) = apply(
        &config,
        "to_my",
        &format!("mysql://root@127.0.0.1:3306/{}", my_target.name),
        maps,
    );
    assert_eq!(code, 0, "apply into MariaDB: {stderr}");
    let (code, stderr) = apply(&config, "to_pg", &pg_target.url(), maps);
    assert_eq!(code, 0, "apply into Postgres: {stderr}");
    for c in &corpus.columns {
        let canon_my = c.canon_mysql.replace("{c}", &format!("`{}`", c.name));
        let source = my_checksum(&db.name, "t", &canon_my);
        check_sums(
            "apply into MariaDB",
            c,
            source.clone(),
            my_checksum(&my_target.name, "t", &canon_my),
            &mut failures,
        );
        if c.canon_cross {
            let canon_pg = c.canon_pg.replace("{c}", &format!("\"{}\"", c.name));
            check_sums(
                "apply into Postgres",
                c,
                source,
                pg_checksum(&pg_target.client, "t", &canon_pg).await,
                &mut failures,
            );
        }
    }
    my_refusals(&corpus, &pg_target).await;

    // `migrate` into both engines (events in both directions), then the
    // catch-up of a change made after the copy.
    let mg_pg = TestDb::new("tm_diff_my_mg_pg").await;
    let mg_my = MyDb::new("tm_diff_my_mg_my", "");
    let mg_my_url = format!("mysql://root@127.0.0.1:3306/{}", mg_my.name);
    let touch = Touch::Mysql {
        db: "tm_diff_my",
        setup: &setup,
    };
    migrate(&config, "tm_diff_my_mg_pg", &mg_pg.url(), maps, n, touch).await;
    migrate(&config, "tm_diff_my_mg_my", &mg_my_url, maps, n, touch).await;
    for c in &corpus.columns {
        let canon_my = c.canon_mysql.replace("{c}", &format!("`{}`", c.name));
        let source = my_checksum(&db.name, "t", &canon_my);
        check_sums(
            "migrate into MariaDB",
            c,
            source.clone(),
            my_checksum(&mg_my.name, "t", &canon_my),
            &mut failures,
        );
        if c.canon_cross {
            let canon_pg = c.canon_pg.replace("{c}", &format!("\"{}\"", c.name));
            check_sums(
                "migrate into Postgres",
                c,
                source,
                pg_checksum(&mg_pg.client, "t", &canon_pg).await,
                &mut failures,
            );
        }
    }
    report(failures);
}

/// Where `migrate` makes its change after the copy: every streamed row's
/// `touch` column goes up by one.
#[derive(Clone, Copy)]
enum Touch<'a> {
    Postgres(&'a tokio_postgres::Client),
    /// The database, and the session setup its values need.
    Mysql {
        db: &'a str,
        setup: &'a str,
    },
}

impl Touch<'_> {
    async fn run(self) {
        const TOUCH: &str = "UPDATE t SET touch = coalesce(touch, 0) + 1 WHERE id > 1000";
        match self {
            Touch::Postgres(client) => client.batch_execute(TOUCH).await.expect("touch"),
            Touch::Mysql { db, setup } => {
                let setup = if setup.is_empty() {
                    String::new()
                } else {
                    format!("{setup};")
                };
                sql(&format!("USE {db}; {setup} {TOUCH}"));
            }
        }
    }
}

/// Runs `tidemark migrate run` of `t` from the source of `source_config`
/// (its `[source]`, with a slot and publication of the migration's own) into
/// a fresh target: the copy, then the catch-up of a change made after it
/// (`touch`). Returns once the
/// catch-up has applied that change; the run is stopped.
async fn migrate(
    source_config: &Path,
    name: &str,
    target_url: &str,
    tables: &str,
    rows: usize,
    touch: Touch<'_>,
) {
    let text = std::fs::read_to_string(source_config).expect("config");
    let start = text.find("[source]").expect("a [source]");
    let end = text[start..]
        .find("[sink]")
        .map_or(text.len(), |i| start + i);
    let source = text[start..end]
        .lines()
        .map(|l| match l.split_once(" = ") {
            Some(("slot" | "publication", _)) => {
                format!("{} = \"{name}\"", l.split(' ').next().unwrap_or_default())
            }
            Some(("server_id", _)) => "server_id = 4791".to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let engine = if target_url.starts_with("mysql") {
        "mysql"
    } else {
        "postgres"
    };
    let config = source_config.with_file_name(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("[pipeline]\nname = \"{name}\"\n{source}\n[target]\ntype = \"{engine}\"\nurl = \"{target_url}\"\n[target.tables]\n{tables}\n[migrate]\nparallelism = 2\nchunk_rows = 7\n"),
    )
    .expect("migrate config");
    let mut run = Daemon::command(&["migrate", "run"], &config);
    crate::migrate::wait_for_stage(&run, &config, "stage catch-up").await;
    touch.run().await;
    run.wait_for(
        "the catch-up of the change after the copy",
        Duration::from_secs(120),
        || async {
            let status = crate::migrate::status(&config);
            let applied = status.lines().find_map(|l| {
                l.strip_prefix("catch-up: ")?
                    .split(", ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            });
            applied.is_some_and(|a| a >= rows)
        },
    )
    .await;
    run.stop().await;
}

/// Checks the apply of `refusals` (captured from a database of their own,
/// one row each, only its column set) stops at the first, naming table,
/// column, key and position, with nothing written.
fn check_refusal(first: &Refused, code: i32, stderr: &str, position_prefix: &str) {
    assert_ne!(
        code, 0,
        "the target took {} = {}: {stderr}",
        first.name, first.value
    );
    assert!(
        stderr.contains("refused")
            && stderr.contains("refused_values")
            && stderr.contains(&first.name)
            && stderr.contains("{\"id\":1}")
            && stderr.contains(position_prefix),
        "the refusal of {} = {} does not name table, column, key and position: {stderr}",
        first.name,
        first.value
    );
}

/// Postgres values a MariaDB target cannot hold.
async fn pg_refusals(corpus: &Corpus, my_url: &str, my_db: &str) {
    let refused: Vec<&Refused> = corpus
        .refused
        .iter()
        .filter(|r| r.target == "mysql")
        .collect();
    let Some(first) = refused.first() else { return };
    let db = TestDb::new("tm_diff_pg_refused").await;
    for statement in &corpus.setup {
        db.client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let columns: Vec<String> = refused
        .iter()
        .map(|r| format!("\"{}\" {}", r.name, r.type_name))
        .collect();
    db.client
        .batch_execute(&format!(
            "CREATE TABLE refused_values (id int PRIMARY KEY, {})",
            columns.join(", ")
        ))
        .await
        .expect("create refused_values");
    for (i, r) in refused.iter().enumerate() {
        db.client
            .batch_execute(&format!(
                "INSERT INTO refused_values (id, \"{}\") VALUES ({}, {})",
                r.name,
                i + 1,
                r.value
            ))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", r.value));
    }
    let config = db.config(&["public.refused_values"], "");
    let mut daemon = Daemon::start(&config);
    daemon
        .wait_for("the snapshot", Duration::from_secs(60), || async {
            db.events().len() >= refused.len()
        })
        .await;
    daemon.stop().await;
    let target: Vec<String> = refused
        .iter()
        .map(|r| format!("`{}` {}", r.name, my_type_of(r)))
        .collect();
    sql(&format!(
        "USE {my_db}; CREATE TABLE refused_values (id int PRIMARY KEY, {})",
        target.join(", ")
    ));
    let (code, stderr) = apply(
        &config,
        "refused_to_my",
        my_url,
        "\"public.refused_values\" = \"refused_values\"",
    );
    check_refusal(first, code, &stderr, "pg:");
    assert_eq!(
        sql(&format!("SELECT count(*) FROM {my_db}.refused_values")).trim(),
        "0"
    );
}

/// MariaDB values a Postgres target cannot hold.
async fn my_refusals(corpus: &Corpus, pg_target: &TestDb) {
    let refused: Vec<&Refused> = corpus
        .refused
        .iter()
        .filter(|r| r.target == "postgres")
        .collect();
    let Some(first) = refused.first() else { return };
    let columns: Vec<String> = refused
        .iter()
        .map(|r| format!("`{}` {}", r.name, r.type_name))
        .collect();
    let mut ddl = corpus.setup.clone();
    ddl.push(format!(
        "CREATE TABLE refused_values (id int PRIMARY KEY, {})",
        columns.join(", ")
    ));
    for (i, r) in refused.iter().enumerate() {
        ddl.push(format!(
            "INSERT INTO refused_values (id, `{}`) VALUES ({}, {})",
            r.name,
            i + 1,
            r.value
        ));
    }
    let db = MyDb::new("tm_diff_my_refused", &format!("{};", ddl.join(";\n")));
    let config = db.config("refused_values", 4703, "");
    let mut daemon = db.start(&config).await;
    db.wait_for_events(&daemon, refused.len()).await;
    daemon.stop().await;
    let target: Vec<String> = refused
        .iter()
        .map(|r| format!("\"{}\" {}", r.name, pg_type_of(r)))
        .collect();
    pg_target
        .client
        .batch_execute(&format!(
            "CREATE TABLE refused_values (id int PRIMARY KEY, {})",
            target.join(", ")
        ))
        .await
        .expect("target refused_values");
    let (code, stderr) = apply(
        &config,
        "refused_to_pg",
        &pg_target.url(),
        "\"tm_diff_my_refused.refused_values\" = \"refused_values\"",
    );
    check_refusal(first, code, &stderr, "my:");
    let rows: i64 = pg_target
        .client
        .query_one("SELECT count(*) FROM refused_values", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "a refused batch wrote rows");
}

/// The Postgres type a refused MariaDB value is offered to (as `migrate`
/// would make it).
fn pg_type_of(refused: &Refused) -> &'static str {
    match refused.type_name.to_ascii_lowercase() {
        t if t.starts_with("time") => "time(6)",
        t if t.starts_with("datetime") => "timestamp(6)",
        t if t.starts_with("date") => "date",
        _ => "text",
    }
}

/// The MariaDB type a refused Postgres value is offered to (as `migrate`
/// would make it).
fn my_type_of(refused: &Refused) -> &'static str {
    match refused.type_name.to_ascii_lowercase() {
        t if t.starts_with("timestamp") => "datetime(6)",
        t if t.starts_with("date") => "date",
        t if t.starts_with("numeric") => "decimal(65,30)",
        t if t.starts_with("time") => "time(6)",
        _ => "text",
    }
}
