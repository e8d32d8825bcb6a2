//! Reconnects in process: the daemon outlives a PostgreSQL restart, a
//! MariaDB restart (servers of the test's own, started here), a source
//! connection cut for 30 s by a TCP proxy, and a Kinesis emulator stopped
//! for 30 s. Each time every committed row arrives once (the file sink
//! drops what it already holds), `/readyz` says not ready while the daemon
//! reconnects, and `tidemark_reconnects_total` counts the sessions begun
//! again. The oracle is the source's own table after the test.
//!
//! Kinesis is at least once: a record the emulator stored but whose answer
//! was lost would come again with the same `position`, which the test allows.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A free local port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run a server command");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private temporary folder the database users can enter.
fn server_dir(owner: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    run(Command::new("chmod").arg("755").arg(dir.path()));
    run(Command::new("chown").arg(owner).arg(dir.path()));
    dir
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL 15 cluster of this test's own (wal_level=logical).
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let dir = server_dir("postgres");
        let port = free_port();
        let data = dir.path().join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]));
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = logical\nmax_replication_slots = 8\nmax_wal_senders = 8\nshared_buffers = 32MB\n",
            dir.path().display()
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        text.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), text).expect("conf");
        let server = OwnPostgres { dir, port };
        server.ctl(&["start"]);
        server
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60"])
            .args(args));
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={db}",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test's own PostgreSQL");
        tokio::spawn(connection);
        client
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Creates the database `shop` on `pg`, runs `ddl` in it, and returns a
/// client of it.
async fn shop(pg: &OwnPostgres, ddl: &str) -> tokio_postgres::Client {
    pg.client("postgres")
        .await
        .batch_execute("CREATE DATABASE shop")
        .await
        .expect("create the database shop");
    let client = pg.client("shop").await;
    client.batch_execute(ddl).await.expect("ddl");
    client
}

/// Fails unless `/readyz` answers 200 within 30 s.
async fn assert_ready_again(daemon: &Daemon) {
    let port = http_port(daemon).await;
    let ready = poll_until(Duration::from_secs(30), || async {
        http_get(port, "/readyz").await.0 == 200
    })
    .await;
    assert!(
        ready,
        "not ready after the outage: {:?}\n{}",
        http_get(port, "/readyz").await,
        daemon.stderr()
    );
}

/// A MariaDB of this test's own, with the binlog on in ROW format.
struct OwnMariadb {
    dir: tempfile::TempDir,
    port: u16,
    server: std::process::Child,
}

impl OwnMariadb {
    fn start() -> OwnMariadb {
        let dir = server_dir("mysql");
        run(Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", dir.path().join("data").display())));
        let port = free_port();
        let server = OwnMariadb::spawn(dir.path(), port);
        let mariadb = OwnMariadb { dir, port, server };
        mariadb.wait_up();
        mariadb.sql("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION");
        mariadb
    }

    fn spawn(dir: &Path, port: u16) -> std::process::Child {
        Command::new("/usr/sbin/mariadbd")
            .args([
                "--no-defaults",
                "--user=mysql",
                "--bind-address=127.0.0.1",
                "--server-id=7",
            ])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .args([
                "--log-bin=mariadb-bin",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--innodb-buffer-pool-size=32M",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mariadbd")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    fn wait_up(&self) {
        for _ in 0..300 {
            let up = Command::new("mariadb-admin")
                .args(["-uroot", "--connect-timeout=2", "-S"])
                .arg(self.socket())
                .arg("ping")
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the test's own MariaDB did not start");
    }

    fn sql(&self, statements: &str) -> String {
        run(Command::new("mariadb")
            .args(["-uroot", "-N", "-B", "-S"])
            .arg(self.socket())
            .arg("-e")
            .arg(statements))
    }

    /// Stops the server (SIGTERM, waiting for it) and starts it again.
    fn restart(&mut self) {
        let _ = Command::new("kill")
            .arg(self.server.id().to_string())
            .status();
        let _ = self.server.wait();
        self.server = OwnMariadb::spawn(self.dir.path(), self.port);
        self.wait_up();
    }
}

impl Drop for OwnMariadb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A TCP proxy to `upstream` that can cut every connection and refuse new
/// ones for a while, as a network outage.
struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut, so that live connections end.
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl CutProxy {
    async fn start(upstream: u16) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (cut2, generation2) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut ended = generation2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = ended.changed() => {}
                    }
                });
            }
        });
        CutProxy {
            port,
            cut,
            generation,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The daemon's `/readyz` status code.
async fn ready(daemon: &Daemon) -> u16 {
    http_get(http_port(daemon).await, "/readyz").await.0
}

async fn reconnects(daemon: &Daemon) -> f64 {
    let (_, scrape) = http_get(http_port(daemon).await, "/metrics").await;
    counter_sum(&scrape, "tidemark_reconnects_total", "")
}

fn config(dir: &Path, source: &str, sink: &str) -> PathBuf {
    let path = dir.join("tidemark.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"tm_reconnect\"\nmax_batch_events = 200\n{source}\n{sink}\n[cursor]\ntype = \"file\"\npath = \"{}/cursor.json\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.display()
        ),
    )
    .expect("config");
    path
}

fn file_sink(dir: &Path) -> String {
    format!(
        "[sink]\ntype = \"file\"\npath = \"{}/events\"\n",
        dir.display()
    )
}

/// Every id of `events` (inserts), counted.
fn ids(events: &[Value]) -> std::collections::BTreeMap<i64, usize> {
    let mut ids = std::collections::BTreeMap::new();
    for event in events {
        if let Some(id) = event["after"]["id"].as_i64() {
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

/// Each id the source holds arrived exactly once, and nothing else did.
fn assert_exactly(events: &[Value], committed: &[i64]) {
    let ids = ids(events);
    let missing: Vec<&i64> = committed
        .iter()
        .filter(|id| !ids.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} committed rows missing: {missing:?}",
        missing.len()
    );
    let twice: Vec<(&i64, &usize)> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "rows written twice: {twice:?}");
    let invented: Vec<&i64> = ids.keys().filter(|id| !committed.contains(id)).collect();
    assert!(
        invented.is_empty(),
        "rows the source never committed: {invented:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_mid_stream_is_reconnected() {
    let pg = OwnPostgres::start();
    let shop_client = shop(&pg, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        &format!("[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"public.t\"]\nslot = \"tm_reconnect\"\npublication = \"tm_reconnect\"\n", pg.url("shop")),
        &file_sink(dir.path()),
    );
    let events = dir.path().join("events");
    let mut daemon = Daemon::start(&config);
    shop_client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .expect("insert");
    wait_until("the first rows", Duration::from_secs(60), || async {
        ids(&read_events(&events)).len() >= 100
    })
    .await;
    // A restart (fast shutdown), then more rows: some land while the daemon
    // is between sessions.
    pg.ctl(&["restart", "-m", "fast"]);
    let shop = pg.client("shop").await;
    shop.batch_execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .expect("insert");
    wait_until(
        "the rows after the restart",
        Duration::from_secs(120),
        || async { ids(&read_events(&events)).len() >= 200 },
    )
    .await;
    assert!(reconnects(&daemon).await >= 1.0, "{}", daemon.stderr());
    assert!(
        daemon.stderr().contains("reconnecting in"),
        "{}",
        daemon.stderr()
    );
    daemon.stop().await;
    let committed: Vec<i64> = shop
        .query("SELECT id::bigint FROM t ORDER BY id", &[])
        .await
        .expect("oracle")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_exactly(&read_events(&events), &committed);
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_restart_mid_stream_is_reconnected() {
    let mut my = OwnMariadb::start();
    my.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        &format!("[source]\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:{}/shop\"\ntables = [\"shop.t\"]\nserver_id = 4777\n", my.port),
        &file_sink(dir.path()),
    );
    let events = dir.path().join("events");
    let mut daemon = Daemon::start(&config);
    let insert = |my: &OwnMariadb, from: i64, to: i64| {
        let values: Vec<String> = (from..=to).map(|i| format!("({i})")).collect();
        my.sql(&format!("INSERT INTO shop.t VALUES {}", values.join(",")));
    };
    insert(&my, 1, 100);
    wait_until("the first rows", Duration::from_secs(60), || async {
        ids(&read_events(&events)).len() >= 100
    })
    .await;
    my.restart();
    insert(&my, 101, 200);
    wait_until(
        "the rows after the restart",
        Duration::from_secs(120),
        || async { ids(&read_events(&events)).len() >= 200 },
    )
    .await;
    assert!(reconnects(&daemon).await >= 1.0, "{}", daemon.stderr());
    daemon.stop().await;
    let committed: Vec<i64> = my
        .sql("SELECT id FROM shop.t ORDER BY id")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(committed.len(), 200);
    assert_exactly(&read_events(&events), &committed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_link_cut_for_30_s_is_reconnected() {
    let db = TestDb::new("tm_reconnect_cut").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .expect("table");
    let proxy = CutProxy::start(5432).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        &format!("[source]\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{}/{}?sslmode=disable\"\ntables = [\"public.t\"]\nslot = \"tm_reconnect_cut\"\npublication = \"tm_reconnect_cut\"\n", proxy.port, db.name),
        &file_sink(dir.path()),
    );
    let events = dir.path().join("events");
    let mut daemon = Daemon::start(&config);
    across_an_outage(
        &daemon,
        &db,
        || async { ids(&read_events(&events)).len() },
        |down| if down { proxy.cut() } else { proxy.heal() },
    )
    .await;
    assert!(
        daemon.stderr().contains("reconnecting in"),
        "{}",
        daemon.stderr()
    );
    assert!(reconnects(&daemon).await >= 1.0);
    daemon.stop().await;
    let committed: Vec<i64> = (1..=100).collect();
    assert_exactly(&read_events(&events), &committed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_still_stops_at_once() {
    // Not transient: one line, no reconnect loop.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        "[source]\ntype = \"mysql\"\nurl = \"mysql://root:wrong@127.0.0.1:3306/test\"\ntables = [\"test.t\"]\nserver_id = 4778\n",
        &file_sink(dir.path()),
    );
    let (code, stderr) = run_to_end(&["run", "--config", config.to_str().expect("path")]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("Access denied"), "{stderr}");
    assert!(!stderr.contains("reconnecting"), "{stderr}");
}

/// Rows 1 to 50 of `db`'s table `t` before the fault, 51 to 100 during it:
/// `/readyz` must drop, and stay down for the 30 s the fault lasts
/// (`set_down(true)`); then `set_down(false)`, and every row must arrive
/// (`seen` counts the ids delivered) and `/readyz` come back.
async fn across_an_outage<S, SF>(
    daemon: &Daemon,
    db: &TestDb,
    seen: S,
    mut set_down: impl FnMut(bool),
) where
    S: Fn() -> SF,
    SF: std::future::Future<Output = usize>,
{
    let insert = |from: i32, to: i32| async move {
        db.client
            .execute(
                "INSERT INTO t SELECT generate_series($1::int, $2::int)",
                &[&from, &to],
            )
            .await
            .expect("insert");
    };
    insert(1, 50).await;
    wait_until("the first rows", Duration::from_secs(60), || async {
        seen().await >= 50
    })
    .await;
    set_down(true);
    insert(51, 100).await;
    wait_until("readiness to drop", Duration::from_secs(60), || async {
        ready(daemon).await == 503
    })
    .await;
    // The outage lasts 30 s by the clock: it is the fault, not a wait.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(ready(daemon).await, 503, "ready during the outage");
    set_down(false);
    wait_until(
        "the rows after the outage",
        Duration::from_secs(120),
        || async { seen().await >= 100 },
    )
    .await;
    assert_ready_again(daemon).await;
    assert!(reconnects(daemon).await + retries(daemon).await >= 1.0);
}

async fn retries(daemon: &Daemon) -> f64 {
    let (_, scrape) = http_get(http_port(daemon).await, "/metrics").await;
    counter_sum(&scrape, "tidemark_retries_total", "")
}

/// A kinesalite of this test's own, keeping its streams on disk so that a
/// restart finds them.
struct OwnKinesis {
    dir: tempfile::TempDir,
    port: u16,
    server: std::process::Child,
}

impl OwnKinesis {
    fn start() -> OwnKinesis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let server = OwnKinesis::spawn(dir.path(), port);
        OwnKinesis { dir, port, server }
    }

    fn spawn(dir: &Path, port: u16) -> std::process::Child {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".tools/aws-emulators/node_modules/.bin/kinesalite");
        assert!(
            bin.exists(),
            "{} is missing; run scripts/setup-aws-emulators.sh",
            bin.display()
        );
        Command::new(bin)
            .arg("--port")
            .arg(port.to_string())
            .arg("--path")
            .arg(dir)
            .args(["--createStreamMs", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start kinesalite")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }

    fn restart(&mut self) {
        self.server = OwnKinesis::spawn(self.dir.path(), self.port);
    }
}

impl Drop for OwnKinesis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kinesis_outage_of_30_s_loses_nothing() {
    use crate::aws::{kinesis_at, read_stream_from};
    let mut kinesis = OwnKinesis::start();
    let client = kinesis_at(&kinesis.url());
    wait_until("kinesalite to answer", Duration::from_secs(30), || async {
        client.list_streams().send().await.is_ok()
    })
    .await;
    client
        .create_stream()
        .stream_name("outage")
        .shard_count(1)
        .send()
        .await
        .expect("create the stream");
    wait_until("the stream", Duration::from_secs(30), || async {
        client
            .describe_stream()
            .stream_name("outage")
            .send()
            .await
            .ok()
            .and_then(|d| d.stream_description)
            .is_some_and(|d| d.stream_status.as_str() == "ACTIVE")
    })
    .await;
    let db = TestDb::new("tm_reconnect_kin").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .expect("table");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(
        dir.path(),
        &format!("[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"public.t\"]\nslot = \"tm_reconnect_kin\"\npublication = \"tm_reconnect_kin\"\n", db.url()),
        &format!("[sink]\ntype = \"kinesis\"\nstream = \"outage\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n", kinesis.url()),
    );
    let streamed = || async {
        let shards = read_stream_from(&client, "outage").await;
        let events: Vec<Value> = shards.into_values().flatten().collect();
        events
    };
    let daemon = Daemon::start(&config);
    across_an_outage(
        &daemon,
        &db,
        || async { ids(&streamed().await).len() },
        |down| {
            if down {
                kinesis.stop()
            } else {
                kinesis.restart()
            }
        },
    )
    .await;
    let mut daemon = daemon;
    let port = http_port(&daemon).await;
    let (_, scrape) = http_get(port, "/metrics").await;
    assert!(
        counter_sum(
            &scrape,
            "tidemark_retries_total",
            "reason=\"kinesis_unreachable\""
        ) >= 1.0,
        "{scrape}"
    );
    daemon.stop().await;
    let events = streamed().await;
    let counted = ids(&events);
    let missing: Vec<i64> = (1..=100).filter(|id| !counted.contains_key(id)).collect();
    assert!(missing.is_empty(), "rows lost: {missing:?}");
    // At least once: a row seen twice carries the same position both times.
    let mut positions: std::collections::BTreeMap<i64, std::collections::BTreeSet<String>> =
        Default::default();
    for event in &events {
        if let Some(id) = event["after"]["id"].as_i64() {
            positions
                .entry(id)
                .or_default()
                .insert(event["position"].to_string());
        }
    }
    assert!(
        positions.values().all(|p| p.len() == 1),
        "a row came again at another position"
    );
}

/// `count` inserts into `public.t` from id `first`, as file sink lines.
fn insert_lines(first: i64, count: i64) -> String {
    (first..first + count)
        .map(|id| {
            insert_line(
                "tm_reconnect_apply",
                &serde_json::json!({"id": id}),
                id as u64,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_reconnects_a_target_restarted_mid_stream() {
    let pg = OwnPostgres::start();
    shop(&pg, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).expect("events");
    let file = events.join("events-0000000001.jsonl");
    std::fs::write(&file, insert_lines(1, 100)).expect("events");
    let config = apply_config(
        dir.path(),
        "tm_reconnect_apply",
        &events,
        &pg.url("shop"),
        "",
        "[http]\nlisten = \"127.0.0.1:0\"\n",
    );
    let count = |pg: &OwnPostgres| {
        let url = pg.url("shop");
        async move {
            let Ok((client, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                return -1;
            };
            tokio::spawn(connection);
            client
                .query_one("SELECT count(*) FROM t", &[])
                .await
                .map_or(-1, |r| r.get::<_, i64>(0))
        }
    };
    let mut daemon = Daemon::command(&["apply"], &config);
    wait_until(
        "the first rows on the target",
        Duration::from_secs(60),
        || async { count(&pg).await == 100 },
    )
    .await;
    pg.ctl(&["restart", "-m", "fast"]);
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("events");
    std::io::Write::write_all(&mut more, insert_lines(101, 100).as_bytes()).expect("append");
    drop(more);
    wait_until(
        "the rows after the restart",
        Duration::from_secs(120),
        || async { count(&pg).await == 200 },
    )
    .await;
    assert!(reconnects(&daemon).await >= 1.0, "{}", daemon.stderr());
    assert_ready_again(&daemon).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_reconnects_a_source_restarted_during_catch_up() {
    use crate::migrate::wait_for_stage;
    let pg = OwnPostgres::start();
    shop(
        &pg,
        "CREATE TABLE items (id int PRIMARY KEY, n int); INSERT INTO items SELECT g, g FROM generate_series(1, 100) g",
    )
    .await;
    let target = TestDb::new("tm_reconnect_mig").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("migrate.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"tm_reconnect_mig\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"public.items\"]\nslot = \"tm_reconnect_mig\"\npublication = \"tm_reconnect_mig\"\n[sink]\ntype = \"file\"\npath = \"{dir}/events\"\n[cursor]\ntype = \"file\"\npath = \"{dir}/cursor.json\"\n[target]\ntype = \"postgres\"\nurl = \"{}\"\n[migrate]\nchunk_rows = 50\n",
            pg.url("shop"),
            target.url(),
            dir = dir.path().display()
        ),
    )
    .expect("config");
    let mut run = Daemon::command(&["migrate", "run"], &config);
    wait_for_stage(&run, &config, "stage catch-up").await;
    pg.ctl(&["restart", "-m", "fast"]);
    let shop = pg.client("shop").await;
    shop.batch_execute("INSERT INTO items SELECT g, g FROM generate_series(101, 200) g; UPDATE items SET n = -n WHERE id <= 10")
        .await
        .expect("changes");
    let rows = || async {
        target
            .client
            .query_one("SELECT count(*), COALESCE(sum(n), 0) FROM items", &[])
            .await
            .map_or((0, 0), |r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
    };
    // 1..200 with 1..10 negated: 20100 - 2 * 55.
    wait_until(
        "the changes after the restart",
        Duration::from_secs(120),
        || async { rows().await == (200, 20100 - 110) },
    )
    .await;
    assert!(run.stderr().contains("reconnecting in"), "{}", run.stderr());
    run.stop().await;
}
