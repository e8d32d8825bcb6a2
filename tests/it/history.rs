//! History mode (SCD Type 2) on Postgres and MariaDB targets: a scripted
//! sequence gives exactly the expected versions; SIGKILLs during apply give
//! no duplicate or missing version (judged against an apply that was not
//! killed); and "as of T" queries on the history equal what the source's own
//! `SELECT` returned at T, at moments sampled during a seeded workload.

use crate::common::*;
use crate::mysql::{sql, MyDb};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, name text, born date)";

/// Captures what `workload` does to `source` into its file sink; the
/// workload returns how many row events it made, and the events are
/// returned once that many are there.
async fn capture<F, Fut>(source: &TestDb, workload: F) -> Vec<Value>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let config = source.config(&["public.t"], "");
    let mut daemon = Daemon::start(&config);
    source.wait_for_slot(true).await;
    let rows = workload().await;
    daemon
        .wait_for(
            &format!("{rows} events"),
            Duration::from_secs(90),
            || async { source.events().len() >= rows },
        )
        .await;
    daemon.stop().await;
    let events = source.events();
    assert_eq!(events.len(), rows);
    events
}

/// A copy of the source's config that applies its file sink into
/// `target_url` in history mode (`history` lines under `[[target.history]]`).
fn history_config(source: &TestDb, target_url: &str, history: &str, batch: usize) -> PathBuf {
    let engine = if target_url.starts_with("mysql") {
        "mysql"
    } else {
        "postgres"
    };
    let text = std::fs::read_to_string(source.config(&["public.t"], "")).expect("config");
    let text = text.replace(
        "max_batch_events = 500",
        &format!("max_batch_events = {batch}"),
    );
    let path = source
        .dir
        .path()
        .join(format!("{engine}-{}.toml", unique_suffix(target_url)));
    std::fs::write(
        &path,
        format!("{text}[target]\ntype = \"{engine}\"\nurl = \"{target_url}\"\n[[target.history]]\ntables = [\"public.t\"]\n{history}[apply]\ninput = \"sink\"\n"),
    )
    .expect("write the apply config");
    path
}

fn unique_suffix(url: &str) -> String {
    url.rsplit('/').next().unwrap_or("db").to_string()
}

fn apply(config: &Path) {
    let (code, stderr) = apply_until_idle(config);
    assert_eq!(code, 0, "apply failed: {stderr}");
}

/// `id|name|op|is_current|closed` per version, by key then time then position.
async fn pg_versions(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT concat_ws('|', id, coalesce(name, '-'), op, is_current, valid_to IS NOT NULL) FROM t ORDER BY id, valid_from, position",
            &[],
        )
        .await
        .expect("read the history")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The same as [`pg_versions`], read from MariaDB (booleans as `t`/`f`, as Postgres writes them).
fn my_versions(db: &str) -> Vec<String> {
    sql(&format!(
        "SELECT concat_ws('|', id, coalesce(name, '-'), op, IF(is_current, 't', 'f'), IF(valid_to IS NOT NULL, 't', 'f')) FROM {db}.t ORDER BY id, valid_from, position"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

/// Inserts, updates, a key change, a delete, a re-insert, a NULL.
const SCRIPT: [&str; 6] = [
    "INSERT INTO t VALUES (1, 'a', '2000-01-01'), (2, 'b', NULL), (3, 'c', '1999-12-31')",
    "UPDATE t SET name = 'a2' WHERE id = 1",
    "BEGIN; UPDATE t SET name = 'a3' WHERE id = 1; UPDATE t SET id = 20 WHERE id = 2; COMMIT",
    "DELETE FROM t WHERE id = 3",
    "INSERT INTO t VALUES (3, 'c2', NULL)",
    "UPDATE t SET name = NULL WHERE id = 20",
];

/// The history [`SCRIPT`] leaves, with tombstones, as [`pg_versions`] reads it.
/// The tombstone holds the delete's old image: the key alone under
/// Postgres' default replica identity.
fn expected() -> Vec<String> {
    [
        "1|a|c|f|t",
        "1|a2|u|f|t",
        "1|a3|u|t|f",
        "2|b|c|f|t",
        "3|c|c|f|t",
        "3|-|d|f|t",
        "3|c2|c|t|f",
        "20|b|u|f|t",
        "20|-|u|t|f",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_sequence_gives_exactly_the_expected_history() {
    let source = TestDb::new("tm_hist_script").await;
    source.client.batch_execute(TABLE).await.expect("table");
    let events = capture(&source, || async {
        for statement in SCRIPT {
            source
                .client
                .batch_execute(statement)
                .await
                .expect(statement);
        }
        9
    })
    .await;
    let expected = expected();

    let pg = TestDb::new("tm_hist_script_pg").await;
    let config = history_config(&source, &pg.url(), "tombstones = true\n", 500);
    apply(&config);
    assert_eq!(pg_versions(&pg.client).await, expected);
    // Each closed version ends when the next one of its key (or the delete)
    // begins; a tombstone is zero-length.
    let gaps: i64 = pg
        .client
        .query_one(
            "SELECT count(*) FROM t a WHERE a.valid_to IS NOT NULL AND a.op <> 'd' AND a.id <> 2 AND NOT EXISTS (SELECT 1 FROM t b WHERE b.id = a.id AND b.valid_from = a.valid_to AND b.position > a.position)",
            &[],
        )
        .await
        .expect("gaps")
        .get(0);
    assert_eq!(gaps, 0, "a closed version does not meet its successor");
    // valid_from is the source commit time the events carry.
    let commit_times: Vec<i64> = pg
        .client
        .query(
            "SELECT (extract(epoch FROM valid_from) * 1000)::bigint FROM t ORDER BY position",
            &[],
        )
        .await
        .expect("times")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut event_times: Vec<i64> = events
        .iter()
        .filter(|e| e["op"] != "d")
        .filter_map(|e| e["source"]["ts_ms"].as_i64())
        .collect();
    event_times.extend(
        events
            .iter()
            .filter(|e| e["op"] == "d")
            .filter_map(|e| e["source"]["ts_ms"].as_i64()),
    );
    event_times.sort_unstable();
    let mut sorted = commit_times.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, event_times);
    // Applying the same events again adds no version.
    apply(&config);
    assert_eq!(pg_versions(&pg.client).await, expected);

    let my = MyDb::new("tm_hist_script_my", "");
    let config = history_config(
        &source,
        &format!("mysql://root@127.0.0.1:3306/{}", my.name),
        "tombstones = true\n",
        500,
    );
    apply(&config);
    assert_eq!(my_versions(&my.name), expected);
    apply(&config);
    assert_eq!(my_versions(&my.name), expected);
}

/// A seeded random generator (xorshift), so a failure replays.
struct Seeded(u64);

impl Seeded {
    fn from_env(name: &str) -> Seeded {
        let seed = std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("{name}={seed}");
        Seeded(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One random transaction of 1 to 4 statements over ids `1..=keys`:
/// inserts, updates, deletes and key changes, each chosen against `model`
/// (the table as the test made it) so that it changes exactly one row.
/// Returns the row events it makes.
async fn random_transaction(
    client: &tokio_postgres::Client,
    rng: &mut Seeded,
    model: &mut std::collections::BTreeMap<u64, String>,
    keys: u64,
) -> usize {
    let mut sql = String::from("BEGIN;");
    let mut made = 0;
    for _ in 0..1 + rng.below(4) {
        let id = 1 + rng.below(keys);
        let name = format!("n{}", rng.below(1000));
        let present = model.contains_key(&id);
        match (present, rng.below(3)) {
            (false, _) => {
                sql.push_str(&format!(
                    "INSERT INTO t VALUES ({id}, '{name}', '2001-02-03');"
                ));
                model.insert(id, name);
            }
            (true, 0) => {
                sql.push_str(&format!("UPDATE t SET name = '{name}' WHERE id = {id};"));
                model.insert(id, name);
            }
            (true, 1) => {
                sql.push_str(&format!("DELETE FROM t WHERE id = {id};"));
                model.remove(&id);
            }
            (true, _) => {
                let to = 1 + rng.below(keys);
                if model.contains_key(&to) {
                    continue;
                }
                sql.push_str(&format!("UPDATE t SET id = {to} WHERE id = {id};"));
                let old = model.remove(&id).unwrap_or_default();
                model.insert(to, old);
            }
        }
        made += 1;
    }
    sql.push_str("COMMIT;");
    client
        .batch_execute(&sql)
        .await
        .expect("random transaction");
    made
}

/// Captures a seeded random workload of `transactions` transactions over
/// `keys` ids; calls `sample` after every `every`-th transaction.
async fn random_workload<S, SFut>(
    source: &TestDb,
    seed_name: &str,
    (transactions, keys, every): (usize, u64, usize),
    mut sample: S,
) -> Vec<Value>
where
    S: FnMut() -> SFut,
    SFut: std::future::Future<Output = ()>,
{
    let mut rng = Seeded::from_env(seed_name);
    let mut model = std::collections::BTreeMap::new();
    capture(source, || async {
        let mut rows = 0;
        for i in 1..=transactions {
            rows += random_transaction(&source.client, &mut rng, &mut model, keys).await;
            if i % every == 0 {
                sample().await;
            }
        }
        rows
    })
    .await
}

/// Every column of every version, one line each, in key and position order.
async fn pg_dump(client: &tokio_postgres::Client) -> String {
    client
        .query_one(
            "SELECT coalesce(string_agg(concat_ws('|', id, name, born, op, is_current, valid_from, valid_to, position), E'\\n' ORDER BY id, position), '') FROM t",
            &[],
        )
        .await
        .expect("dump the history")
        .get(0)
}

fn my_dump(db: &str) -> String {
    sql(&format!(
        "SELECT concat_ws('|', id, name, born, op, is_current, valid_from, valid_to, position) FROM {db}.t ORDER BY id, position"
    ))
}

/// Versions in the target (0 before its history table exists).
async fn version_count(target_url: &str) -> i64 {
    if let Some(db) = target_url.strip_prefix("mysql://root@127.0.0.1:3306/") {
        let db = db.to_string();
        return tokio::task::spawn_blocking(move || {
            std::process::Command::new("mariadb")
                .args(["-N", "-uroot", "-h127.0.0.1", "-e"])
                .arg(format!("SELECT count(*) FROM {db}.t"))
                .output()
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0);
    }
    let db = target_url.rsplit('/').next().unwrap_or_default();
    let client = connect(db).await;
    match client.query_one("SELECT count(*) FROM t", &[]).await {
        Ok(row) => row.get(0),
        Err(_) => 0,
    }
}

/// SIGKILLs `apply` into `killed_url` at seeded moments, then lets it
/// finish; the history must equal the one an apply that was not killed
/// wrote into `reference_url`.
async fn killed_apply_matches_reference(source: &TestDb, killed_url: &str, reference_url: &str) {
    let reference = history_config(source, reference_url, "tombstones = true\n", 500);
    apply(&reference);
    let total = version_count(reference_url).await;
    assert!(total > 100, "the workload made only {total} versions");
    let killed = history_config(source, killed_url, "tombstones = true\n", 25);
    let mut rng = Seeded::from_env("TM_HISTORY_KILL_SEED");
    for round in 1..=4 {
        let threshold = total * round / 5 + rng.below(total as u64 / 10) as i64;
        let mut daemon = Daemon::command(&["apply"], &killed);
        daemon
            .wait_for(
                &format!("{threshold} versions before kill {round}"),
                Duration::from_secs(60),
                || async { version_count(killed_url).await >= threshold },
            )
            .await;
        daemon.crash().await;
        eprintln!(
            "kill {round}: {} of {total} versions written",
            version_count(killed_url).await
        );
    }
    apply(&killed);
    assert_eq!(version_count(killed_url).await, total);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_apply_gives_no_duplicate_or_missing_version() {
    let source = TestDb::new("tm_hist_kill").await;
    source.client.batch_execute(TABLE).await.expect("table");
    random_workload(&source, "TM_HISTORY_SEED", (500, 60, 1000), || async {}).await;

    let pg_ref = TestDb::new("tm_hist_kill_pg_ref").await;
    let pg = TestDb::new("tm_hist_kill_pg").await;
    killed_apply_matches_reference(&source, &pg.url(), &pg_ref.url()).await;
    let expected = pg_dump(&pg_ref.client).await;
    assert_eq!(pg_dump(&pg.client).await, expected);
    let current_twice: i64 = pg
        .client
        .query_one(
            "SELECT count(*) FROM (SELECT id FROM t WHERE is_current GROUP BY id HAVING count(*) > 1) s",
            &[],
        )
        .await
        .expect("current versions")
        .get(0);
    assert_eq!(current_twice, 0);

    let my_ref = MyDb::new("tm_hist_kill_my_ref", "");
    let my = MyDb::new("tm_hist_kill_my", "");
    let url = |db: &MyDb| format!("mysql://root@127.0.0.1:3306/{}", db.name);
    killed_apply_matches_reference(&source, &url(&my), &url(&my_ref)).await;
    assert_eq!(my_dump(&my.name), my_dump(&my_ref.name));
    // The two engines hold the same versions.
    assert_eq!(my_versions(&my.name), pg_versions(&pg.client).await);
}

/// The source's rows as `id|name`, in key order, and the UTC time (ms) the
/// read is valid at; then waits until the clock is past that millisecond,
/// so the next commit is later.
async fn source_state(client: &tokio_postgres::Client) -> (Vec<String>, String) {
    let rows = client
        .query("SELECT concat(id, '|', name) FROM t ORDER BY id", &[])
        .await
        .expect("source rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let at: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')",
            &[],
        )
        .await
        .expect("clock")
        .get(0);
    wait_until("the next millisecond", Duration::from_secs(5), || async {
        client
            .query_one(
                "SELECT (clock_timestamp() AT TIME ZONE 'UTC') >= $1::text::timestamp + interval '1 millisecond'",
                &[&at],
            )
            .await
            .is_ok_and(|r| r.get::<_, bool>(0))
    })
    .await;
    (rows, at)
}

#[tokio::test(flavor = "multi_thread")]
async fn as_of_queries_equal_the_source_at_sampled_moments() {
    let source = TestDb::new("tm_hist_asof").await;
    source.client.batch_execute(TABLE).await.expect("table");
    let samples = std::sync::Mutex::new(Vec::new());
    random_workload(&source, "TM_HISTORY_ASOF_SEED", (240, 30, 40), || async {
        let sample = source_state(&source.client).await;
        samples.lock().expect("samples").push(sample);
    })
    .await;
    let samples = samples.into_inner().expect("samples");
    assert_eq!(samples.len(), 6);

    let pg = TestDb::new("tm_hist_asof_pg").await;
    apply(&history_config(&source, &pg.url(), "", 50));
    let my = MyDb::new("tm_hist_asof_my", "");
    apply(&history_config(
        &source,
        &format!("mysql://root@127.0.0.1:3306/{}", my.name),
        "",
        50,
    ));
    for (rows, at) in &samples {
        let pg_rows: Vec<String> = pg
            .client
            .query(
                "SELECT concat(id, '|', name) FROM t WHERE valid_from <= $1::text::timestamp AT TIME ZONE 'UTC' AND (valid_to IS NULL OR valid_to > $1::text::timestamp AT TIME ZONE 'UTC') ORDER BY id",
                &[at],
            )
            .await
            .expect("as of")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(&pg_rows, rows, "Postgres history as of {at}");
        let my_rows: Vec<String> = sql(&format!(
            "SELECT concat(id, '|', name) FROM {}.t WHERE valid_from <= '{at}' AND (valid_to IS NULL OR valid_to > '{at}') ORDER BY id",
            my.name
        ))
        .lines()
        .map(str::to_string)
        .collect();
        assert_eq!(&my_rows, rows, "MariaDB history as of {at}");
    }
    let (now, _) = source_state(&source.client).await;
    let current: Vec<String> = pg
        .client
        .query(
            "SELECT concat(id, '|', name) FROM t WHERE is_current ORDER BY id",
            &[],
        )
        .await
        .expect("current rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(current, now);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_in_process_target_keeps_history_and_refuses_a_table_without_its_columns() {
    let source = TestDb::new("tm_hist_inproc").await;
    source.client.batch_execute(TABLE).await.expect("table");
    let target = TestDb::new("tm_hist_inproc_pg").await;
    target
        .client
        .batch_execute(TABLE)
        .await
        .expect("a plain table");
    let config = source.config(&["public.t"], "");
    append(
        &config,
        &format!(
            "[target]\ntype = \"postgres\"\nurl = \"{}\"\n[[target.history]]\ntables = [\"public.t\"]\ntombstones = true\n",
            target.url()
        ),
    );
    for command in ["check", "apply"] {
        assert_command_refused(
            command,
            &config,
            "target table \"public\".\"t\": is configured for history mode (source table public.t) but lacks the history columns [\"valid_from\", \"valid_to\", \"is_current\", \"op\", \"position\"]",
        );
    }
    let path = config.display().to_string();
    let (code, stderr) = run_to_end(&["migrate", "run", "--config", &path]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "error: target.history: migrate copies tables as they are and keeps no history"
        ),
        "{stderr}"
    );

    target
        .client
        .batch_execute("DROP TABLE t")
        .await
        .expect("drop");
    let mut daemon = Daemon::command(&["apply"], &config);
    source.wait_for_slot(true).await;
    for statement in SCRIPT {
        source
            .client
            .batch_execute(statement)
            .await
            .expect(statement);
    }
    daemon
        .wait_for("9 versions", Duration::from_secs(60), || async {
            pg_versions(&target.client).await.len() >= 9
        })
        .await;
    daemon.stop().await;
    assert_eq!(pg_versions(&target.client).await, expected());
}
