//! Shared test plumbing: a fresh database per test on the real PostgreSQL, the
//! `tidemark` binary as a child process, and the file sink's events read back.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// Connects to `db` on the local server, failing loudly when it is not there.
pub async fn connect(db: &str) -> Client {
    let url = format!("{PG}/{db}");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is not reachable ({e}); run scripts/setup-postgres.sh (scripts/test.sh does)")
    });
    tokio::spawn(connection);
    client
}

/// A database of the test's own, created fresh (with its slots cleared).
pub struct TestDb {
    pub name: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(name: &str) -> TestDb {
        let admin = connect("postgres").await;
        let rows = admin
            .query(
                "SELECT slot_name::text, active_pid FROM pg_replication_slots WHERE database = $1",
                &[&name],
            )
            .await
            .expect("list slots");
        for row in rows {
            let slot: String = row.get(0);
            if let Some(pid) = row.get::<_, Option<i32>>(1) {
                let _ = admin
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await;
            }
            wait_until(
                "old slot to be released",
                Duration::from_secs(10),
                || async {
                    admin
                        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                        .await
                        .is_ok()
                },
            )
            .await;
        }
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .expect("create the test database");
        }
        TestDb {
            name: name.to_string(),
            client: connect(name).await,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn url(&self) -> String {
        format!("{PG}/{}", self.name)
    }

    pub fn events_dir(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    pub fn cursor_path(&self) -> PathBuf {
        self.dir.path().join("cursor.json")
    }

    /// Writes a config for this database; `extra_source` lines go under `[source]`.
    pub fn config(&self, tables: &[&str], extra_source: &str) -> PathBuf {
        let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
        let text = format!(
            "[pipeline]\nname = \"{name}\"\nmax_batch_events = 500\n\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntables = [{tables}]\nslot = \"{name}\"\npublication = \"{name}\"\n{extra_source}\n\n[sink]\ntype = \"file\"\npath = \"{events}\"\nmax_file_bytes = 1048576\n\n[cursor]\ntype = \"file\"\npath = \"{cursor}\"\n",
            name = self.name,
            url = self.url(),
            tables = tables.join(", "),
            events = self.events_dir().display(),
            cursor = self.cursor_path().display(),
        );
        let path = self.dir.path().join("tidemark.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Every event in the sink, in file order.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.events_dir())
    }

    /// Waits until the test's slot exists (and, with `active`, is streaming).
    ///
    /// A slot is `active` while it is being created too, before its consistent
    /// point: a transaction begun then may land in the snapshot instead of the
    /// stream. `confirmed_flush_lsn` is set only once that point is found.
    pub async fn wait_for_slot(&self, active: bool) {
        let sql = format!(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = '{}'{}",
            self.name,
            if active {
                " AND active AND confirmed_flush_lsn IS NOT NULL"
            } else {
                ""
            }
        );
        wait_until("the replication slot", Duration::from_secs(30), || async {
            matches!(self.client.query_opt(&sql, &[]).await, Ok(Some(_)))
        })
        .await;
    }

    /// Waits until the sink holds the row with this `id` in an `after` image.
    pub async fn wait_for_id(&self, daemon: &Daemon, id: i64) {
        daemon
            .wait_for(&format!("row {id}"), Duration::from_secs(120), || async {
                self.events().iter().any(|e| e["after"]["id"] == id)
            })
            .await;
    }

    pub fn cursor(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.cursor_path()).ok()?;
        serde_json::from_str(&text).ok()
    }
}

pub fn read_events(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut events = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read events file");
        // A line still being written by a running daemon is not complete yet.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            events.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad event line {line:?}: {e}")),
            );
        }
    }
    events
}

/// Polls `check` until it holds, failing the test with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        poll_until(limit, check).await,
        "timed out waiting for {what}"
    );
}

/// Polls `check` until it holds or `limit` passes; true when it held.
pub async fn poll_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Writes 20,000 rows as 1,000 transactions of 20 (`insert(first)` writes ids
/// `first..first+20`) while SIGKILLing the daemon at a quarter, half and three
/// quarters of the writes, each time once the restarted daemon has written
/// something: the writer may not run more than a quarter ahead of the kills, so
/// every kill lands while rows still flow. Returns the daemon of the last restart.
/// `written` counts the events the sink holds.
pub async fn insert_while_killing<F, Fut, C, CFut>(
    mut daemon: Daemon,
    config: &Path,
    written: C,
    insert: F,
) -> Daemon
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
    C: Fn() -> CFut,
    CFut: std::future::Future<Output = usize>,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let progress = Arc::new(AtomicUsize::new(0));
    let kills = Arc::new(AtomicUsize::new(0));
    let (done, killed) = (progress.clone(), kills.clone());
    let writer = tokio::spawn(async move {
        for tx in 0..1000usize {
            while tx >= 250 * (killed.load(Ordering::SeqCst) + 1) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            insert(tx * 20 + 1).await;
            done.store(tx + 1, Ordering::SeqCst);
        }
    });
    for quarter in 1..=3 {
        let at_restart = written().await;
        daemon
            .wait_for("events to flow", Duration::from_secs(60), || async {
                progress.load(Ordering::SeqCst) >= quarter * 250 - 100
                    && written().await > at_restart
            })
            .await;
        daemon.crash().await;
        kills.fetch_add(1, Ordering::SeqCst);
        daemon = Daemon::start(config);
    }
    writer.await.expect("writer");
    daemon
}

/// One call of an [`insert_while_killing`] writer on PostgreSQL: rows
/// `first..first+20` of `table (id int, payload text)` in one transaction.
pub async fn pg_insert_rows(client: std::sync::Arc<Client>, table: &'static str, first: usize) {
    client
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT g, repeat('x', 100) || g FROM generate_series({first}, {}) g",
            first + 19
        ))
        .await
        .expect("insert");
}

/// `check` and `run` both refuse the config: non-zero exit, no panic, and an
/// `error: ` line containing `needle`.
pub fn assert_refused(config: &Path, needle: &str) {
    for command in ["check", "run"] {
        assert_command_refused(command, config, needle);
    }
}

/// `tidemark <command> --config <config>` exits non-zero without a panic, with
/// an `error: ` line containing `needle`.
pub fn assert_command_refused(command: &str, config: &Path, needle: &str) {
    let path = config.display().to_string();
    let (code, stderr) = run_to_end(&[command, "--config", &path]);
    assert_ne!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains(needle)),
        "no {needle:?} in {stderr}"
    );
}

/// Waits until row 20,000 was written, stops the daemon, and checks that every
/// row of a crash test came exactly once.
pub async fn finish_crash_test(mut daemon: Daemon, events: impl Fn() -> Vec<Value>) {
    daemon
        .wait_for("the last row", Duration::from_secs(120), || async {
            events().iter().any(|e| e["after"]["id"] == 20_000)
        })
        .await;
    daemon.stop().await;
    assert_each_id_once(&events(), 20_000);
}

/// Counts `after.id` over the events: every id in 1..=n exactly once.
pub fn assert_each_id_once(events: &[Value], n: usize) {
    let mut ids = vec![0u32; n + 1];
    for event in events {
        if let Some(id) = event["after"]["id"].as_u64() {
            ids[id as usize] += 1;
        }
    }
    let missing: Vec<usize> = (1..=n).filter(|&i| ids[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} rows missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        ids.iter().filter(|c| **c > 1).count(),
        0,
        "a row was emitted twice"
    );
}

/// The daemon under test.
pub struct Daemon {
    pub child: Child,
    pub stderr_path: PathBuf,
}

/// The local AWS emulators (scripts/setup-aws-emulators.sh starts them).
pub const KINESIS: &str = "http://127.0.0.1:4567";
pub const DYNAMODB: &str = "http://127.0.0.1:4568";

/// The binary, with AWS settings pointing at the emulators through the standard
/// variables (the daemon reads them like any AWS tool).
pub fn tidemark() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    command
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_KINESIS", KINESIS)
        .env("AWS_ENDPOINT_URL_DYNAMODB", DYNAMODB)
        // Tests run side by side: each daemon serves HTTP on a port of its own.
        .env("TIDEMARK_HTTP_LISTEN", "127.0.0.1:0");
    command
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with(config, &[], &[])
    }

    /// `tidemark <args> run --config <config>` with extra environment.
    pub fn start_with(config: &Path, args: &[&str], env: &[(&str, String)]) -> Daemon {
        let stderr_path = config.with_extension(format!("stderr.{}", unique()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = tidemark()
            .args(args)
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tidemark");
        Daemon { child, stderr_path }
    }

    /// `tidemark <args> --config <config>`: any long-running command.
    pub fn command(args: &[&str], config: &Path) -> Daemon {
        let stderr_path = config.with_extension(format!("stderr.{}", unique()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = tidemark()
            .args(args)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tidemark");
        Daemon { child, stderr_path }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tidemark did not exit within {limit:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like [`wait_until`], with the daemon's log in the failure message.
    pub async fn wait_for<F, Fut>(&self, what: &str, limit: Duration, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        assert!(
            poll_until(limit, check).await,
            "timed out waiting for {what}; tidemark said:\n{}",
            self.stderr()
        );
    }

    /// Waits until a query-based source has run `n` more queries of a kind
    /// (`"page"` or `"keys"`) than when called: for checks that nothing more
    /// arrives, it proves the source did look again.
    pub async fn wait_for_more_polls(&self, query: &str, n: u32) {
        let port = http_port(self).await;
        let label = format!("query=\"{query}\"");
        let polls = || async {
            let scrape = http_get(port, "/metrics").await.1;
            counter_sum(&scrape, "tidemark_poll_queries_total", &label)
        };
        let start = polls().await;
        self.wait_for(
            &format!("{n} more {query} queries"),
            Duration::from_secs(30),
            || async { polls().await >= start + f64::from(n) },
        )
        .await;
    }

    /// SIGTERM, and the exit must be clean and within 10 s.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(10)).await;
        assert!(status.success(), "exit {status:?}: {}", self.stderr());
    }

    /// SIGKILL, as a crash.
    pub async fn crash(&mut self) {
        self.signal("KILL");
        self.wait(Duration::from_secs(5)).await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Runs `tidemark` to completion with the given arguments: (exit code, stderr).
pub fn run_to_end(args: &[&str]) -> (i32, String) {
    // In a scratch folder: configs without [sink]/[cursor] use ./tidemark-state.
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut command = tidemark();
    command.args(args).current_dir(scratch.path());
    let out = bounded_output(&mut command);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How long a command that is expected to end may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// `command.output()`, but a command still running after [`COMMAND_LIMIT`]
/// is killed and the test fails naming it: a command that should have
/// stopped and did not (a retry loop, a hang) fails its test instead of
/// holding the whole suite up.
pub fn bounded_output(command: &mut Command) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run tidemark");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tidemark") {
            break status;
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still ran after {COMMAND_LIMIT:?}; its stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}

/// Runs `tidemark` to completion: (exit code, stdout, stderr).
pub fn run_output(args: &[&str]) -> (i32, String, String) {
    let out = bounded_output(tidemark().args(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The port the daemon's HTTP endpoint bound (it logs it at start).
pub async fn http_port(daemon: &Daemon) -> u16 {
    let mut port = None;
    daemon
        .wait_for("the HTTP endpoint", Duration::from_secs(30), || {
            port = daemon
                .stderr()
                .split("/metrics on 127.0.0.1:")
                .nth(1)
                .and_then(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                });
            std::future::ready(port.is_some())
        })
        .await;
    port.expect("port")
}

/// The sum of a counter over its label sets in a scrape, counting only the
/// lines that contain `labels` (`""` for all).
pub fn counter_sum(scrape: &str, name: &str, labels: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']) && rest.contains(labels))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET path` on 127.0.0.1:`port`: (status, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the HTTP endpoint");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("read the answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Adds sections to a test config.
pub fn append(config: &Path, sections: &str) {
    let text = std::fs::read_to_string(config).expect("config");
    std::fs::write(config, format!("{text}{sections}")).expect("config");
}

/// A config for `tidemark apply` of the file sink in `events` into
/// `target_url` (`[target] type` from its scheme, then `target_extra`
/// lines), with `extra` sections after; written into `dir`. The source
/// section is a placeholder: applying from the sink never connects to it.
pub fn apply_config(
    dir: &Path,
    pipeline: &str,
    events: &Path,
    target_url: &str,
    target_extra: &str,
    extra: &str,
) -> PathBuf {
    let engine = if target_url.starts_with("mysql") {
        "mysql"
    } else {
        "postgres"
    };
    let path = dir.join(format!("{pipeline}-{engine}.toml"));
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"{pipeline}\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1/x\"\ntables = [\"public.t\"]\nslot = \"{pipeline}\"\npublication = \"{pipeline}\"\n[sink]\ntype = \"file\"\npath = \"{}\"\n[target]\ntype = \"{engine}\"\nurl = \"{target_url}\"\n{target_extra}[apply]\ninput = \"sink\"\n{extra}",
            events.display()
        ),
    )
    .expect("write the apply config");
    path
}

/// `tidemark apply --until-idle` with `config`: (exit code, stderr).
pub fn apply_until_idle(config: &Path) -> (i32, String) {
    run_to_end(&[
        "apply",
        "--config",
        config.to_str().expect("config path"),
        "--until-idle",
    ])
}

/// An insert of `row` (whose `id` is its key) into `public.t`, as the file
/// sink writes it, at the `n`-th position of pipeline `pipeline`.
pub fn insert_line(pipeline: &str, row: &Value, n: u64) -> String {
    let event = serde_json::json!({
        "op": "c",
        "before": null,
        "after": row,
        "key": {"id": row["id"]},
        "source": {"connector": "postgres", "name": pipeline, "db": "d", "schema": "public",
                   "table": "t", "ts_ms": 1, "snapshot": false},
        "position": format!("pg:{n:016X}:0000000000000001:0000000000000001"),
        "ts_ms": 1,
    });
    format!("{event}\n")
}
