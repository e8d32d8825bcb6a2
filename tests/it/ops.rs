//! Running as a service: the HTTP endpoint in each phase, metric names as
//! documented, the lag metric while the sink is paused, systemd notifications
//! and the watchdog (over a real `NOTIFY_SOCKET`), SIGHUP and JSON logs, the
//! retention warning and heartbeats, a dropped slot, and the unit files.

use crate::aws::{config as aws_config, cursor_init, fresh_aws};
use crate::common::*;
use crate::fault_proxy::{self, Faults};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `NOTIFY_SOCKET` the test listens on, as systemd would.
struct Notifications {
    path: std::path::PathBuf,
    received: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notifications {
    fn listen(dir: &Path, name: &str) -> Notifications {
        let path = dir.join(name);
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut all = sink.lock().expect("lock");
                for line in text.lines() {
                    all.push((Instant::now(), line.to_string()));
                }
            }
        });
        Notifications { path, received }
    }

    /// The environment systemd gives a `Type=notify` unit with `WatchdogSec=1`.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_SOCKET", self.path.display().to_string()),
            ("WATCHDOG_USEC", "1000000".to_string()),
        ]
    }

    fn count(&self, line: &str) -> usize {
        let all = self.received.lock().expect("lock");
        all.iter().filter(|(_, l)| l == line).count()
    }

    fn last(&self, line: &str) -> Option<Instant> {
        let all = self.received.lock().expect("lock");
        all.iter().rev().find(|(_, l)| l == line).map(|(at, _)| *at)
    }

    fn statuses(&self) -> Vec<String> {
        let all = self.received.lock().expect("lock");
        all.iter()
            .filter_map(|(_, l)| l.strip_prefix("STATUS=").map(str::to_string))
            .collect()
    }
}

/// The value of an unlabelled metric in a scrape.
fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn wait_for_answer(daemon: &Daemon, port: u16, path: &str, status: u16, needle: &str) {
    daemon
        .wait_for(
            &format!("{path} to answer {status} with {needle:?}"),
            Duration::from_secs(60),
            || async {
                let (code, body) = http_get(port, path).await;
                code == status && body.contains(needle)
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_phases_lag_metrics_and_watchdog_follow_the_pipeline() {
    let db = TestDb::new("tm_ops_endpoint").await;
    fresh_aws(&db.name, 1).await;
    db.client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL);
             INSERT INTO items SELECT g, 0 FROM generate_series(1, 20) g",
        )
        .await
        .expect("ddl");
    let (proxy, injected) = fault_proxy::start(KINESIS, Faults::default()).await;
    let config = aws_config(&db, &db.name, &format!("endpoint = \"{proxy}\""));
    append(&config, "[retention]\ncheck_interval = \"1s\"\n");
    cursor_init(&config);

    // The sink is held from the start: the snapshot's first batch cannot be
    // written, so the phase stays `snapshot` and the pipeline loop is stuck.
    injected.hold.store(true, Ordering::SeqCst);
    let notify = Notifications::listen(db.dir.path(), "notify-1");
    let mut first = Daemon::start_with(&config, &[], &notify.env());
    let port = http_port(&first).await;
    // Ready while the loop still ticked, not ready once it stopped: the phase
    // shows either way.
    first
        .wait_for("the snapshot phase", Duration::from_secs(30), || async {
            http_get(port, "/readyz").await.1.starts_with("snapshot")
        })
        .await;
    assert_eq!(notify.count("READY=1"), 1, "{:?}", notify.statuses());
    // Stuck: /healthz turns 503, and the watchdog pings stopped with the loop.
    wait_for_answer(&first, port, "/healthz", 503, "stuck").await;
    let last_ping = notify
        .last("WATCHDOG=1")
        .expect("watchdog pings before the hold");
    assert!(
        last_ping.elapsed() > Duration::from_secs(4),
        "the watchdog was pinged {:?} ago while the loop was stuck",
        last_ping.elapsed()
    );
    let (code, body) = http_get(port, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    // The lag of the held batch grows.
    let scrape = http_get(port, "/metrics").await.1;
    let lag = metric(&scrape, "tidemark_source_lag_seconds").expect("lag metric");
    assert!(lag >= 4.0, "lag {lag} while the sink is held\n{scrape}");

    // Released: streaming, ready, lag back to zero, pings again.
    let pings = notify.count("WATCHDOG=1");
    injected.hold.store(false, Ordering::SeqCst);
    wait_for_answer(&first, port, "/readyz", 200, "streaming").await;
    assert_eq!(http_get(port, "/healthz").await.0, 200);
    first
        .wait_for(
            "the watchdog pings to resume",
            Duration::from_secs(10),
            || async { notify.count("WATCHDOG=1") > pings + 2 },
        )
        .await;
    db.client
        .batch_execute("UPDATE items SET n = 1 WHERE id <= 5")
        .await
        .expect("update");
    first
        .wait_for(
            "the update and the slot metrics",
            Duration::from_secs(30),
            || async {
                let scrape = http_get(port, "/metrics").await.1;
                scrape.contains("tidemark_events_written_total{table=\"public.items\",op=\"u\"} 5")
                    && scrape.contains("tidemark_pg_slot_retained_bytes")
            },
        )
        .await;
    let scrape = http_get(port, "/metrics").await.1;
    assert_eq!(metric(&scrape, "tidemark_source_lag_seconds"), Some(0.0));
    assert_eq!(metric(&scrape, "tidemark_lease_held"), Some(1.0));
    assert!(scrape.contains("tidemark_events_read_total{table=\"public.items\",op=\"r\"} 20"));
    assert!(scrape.contains("tidemark_snapshot_rows_done{table=\"public.items\"} 20"));

    // Every exported name is in the documented table, and the core ones are there.
    let documented =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .expect("docs/metrics.md");
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("tidemark_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
        })
        .collect();
    for name in &exported {
        assert!(
            documented.contains(&format!("`{name}`")),
            "{name} is exported but not documented"
        );
    }
    for name in [
        "tidemark_events_read_total",
        "tidemark_events_written_total",
        "tidemark_batches_total",
        "tidemark_batch_size_events",
        "tidemark_sink_write_duration_seconds",
        "tidemark_source_lag_seconds",
        "tidemark_source_lag_bytes",
        "tidemark_last_written_event_timestamp_seconds",
        "tidemark_cursor_commits_total",
        "tidemark_cursor_age_seconds",
        "tidemark_snapshot_rows_done",
        "tidemark_snapshot_rows_total",
        "tidemark_lease_held",
        "tidemark_pg_slot_retained_bytes",
        "tidemark_pg_slot_wal_status",
        "tidemark_ready",
        "tidemark_phase",
    ] {
        assert!(exported.contains(name), "{name} missing from\n{scrape}");
    }

    // A second instance is a standby: alive, not ready, and says so.
    let mut second = Daemon::start(&config);
    let second_port = http_port(&second).await;
    wait_for_answer(&second, second_port, "/readyz", 503, "standby").await;
    assert_eq!(http_get(second_port, "/healthz").await.0, 200);

    // SIGTERM: STOPPING=1, exit 0, and the standby takes over.
    first.stop().await;
    assert_eq!(notify.count("STOPPING=1"), 1, "{:?}", notify.statuses());
    assert!(notify
        .statuses()
        .iter()
        .any(|s| s.starts_with("streaming, lag")));
    wait_for_answer(&second, second_port, "/readyz", 200, "streaming").await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rereads_the_log_level_and_json_logs_parse() {
    let db = TestDb::new("tm_ops_sighup").await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await
        .expect("ddl");
    let config = db.config(&["public.items"], "");
    let base = std::fs::read_to_string(&config).expect("config");
    append(&config, "[log]\nlevel = \"warn\"\n");
    let notify = Notifications::listen(db.dir.path(), "notify");
    let mut daemon = Daemon::start_with(&config, &["--log-format", "json"], &notify.env());
    daemon
        .wait_for("READY=1", Duration::from_secs(30), || async {
            notify.count("READY=1") == 1
        })
        .await;
    assert!(
        !daemon.stderr().contains("\"INFO\""),
        "info lines at level warn: {}",
        daemon.stderr()
    );
    std::fs::write(&config, format!("{base}[log]\nlevel = \"info\"\n")).expect("config");
    daemon.signal("HUP");
    daemon
        .wait_for("the new level", Duration::from_secs(30), || async {
            daemon.stderr().contains("SIGHUP: log level is now info")
        })
        .await;
    // Still capturing after the reload (the pipeline was not restarted).
    db.client
        .batch_execute("INSERT INTO items VALUES (1)")
        .await
        .expect("insert");
    db.wait_for_id(&daemon, 1).await;
    daemon.stop().await;
    for line in daemon.stderr().lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed["level"].is_string() && parsed["fields"]["message"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_warning_turns_readiness_off_and_heartbeats_move_the_slot() {
    let db = TestDb::new("tm_ops_retention").await;
    db.client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY); CREATE TABLE other (id int, pad text)",
        )
        .await
        .expect("ddl");
    // Only `items` is captured; WAL written for `other` reaches tidemark as
    // nothing at all (PostgreSQL 15 skips empty transactions), so without
    // heartbeats the slot stays put and retains it.
    let config = db.config(&["public.items"], "heartbeat_interval = \"off\"");
    // The limit is well above what the other tests write meanwhile on the
    // shared server (4 MiB was reached by their WAL alone under load), and
    // the filtered insert below well above the limit.
    let retention = "[retention]\ncheck_interval = \"1s\"\nmax_retained_bytes = 67108864\n";
    append(&config, retention);
    let mut daemon = Daemon::start(&config);
    let port = http_port(&daemon).await;
    wait_for_answer(&daemon, port, "/readyz", 200, "streaming").await;
    db.client
        .batch_execute(
            "INSERT INTO other SELECT g, repeat('x', 1000) FROM generate_series(1, 100000) g",
        )
        .await
        .expect("filtered WAL");
    wait_for_answer(
        &daemon,
        port,
        "/readyz",
        503,
        "over retention.max_retained_bytes",
    )
    .await;
    assert!(
        daemon
            .stderr()
            .contains("not ready: retention: slot tm_ops_retention retains"),
        "{}",
        daemon.stderr()
    );
    daemon.stop().await;

    // With heartbeats the slot follows the WAL: retained WAL drops and the
    // daemon is ready again (a checkpoint lets the slot's restart point move).
    let config = db.config(&["public.items"], "heartbeat_interval = \"1s\"");
    append(&config, retention);
    let mut daemon = Daemon::start(&config);
    let port = http_port(&daemon).await;
    daemon
        .wait_for("ready again", Duration::from_secs(60), || async {
            let _ = db.client.batch_execute("CHECKPOINT").await;
            let (code, body) = http_get(port, "/readyz").await;
            code == 200 && body.contains("streaming")
        })
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_slot_stops_with_the_recovery_command() {
    let db = TestDb::new("tm_ops_slot").await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await
        .expect("ddl");
    let config = db.config(&["public.items"], "");
    let mut daemon = Daemon::start(&config);
    db.wait_for_slot(true).await;
    daemon.stop().await;
    db.wait_for_slot(false).await;
    db.client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{}')", db.name))
        .await
        .expect("drop the slot");
    let mut daemon = Daemon::start(&config);
    let status = daemon.wait(Duration::from_secs(30)).await;
    assert!(!status.success());
    let stderr = daemon.stderr();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        line.contains(&format!("pipeline {}", db.name))
            && line.contains("replication slot 'tm_ops_slot' is missing")
            && line.contains("tidemark cursor reset --config"),
        "{line}"
    );
    // The recovery works: reset, start again, a new snapshot.
    let out = bounded_output(
        tidemark()
            .args(["cursor", "reset", "--config"])
            .arg(&config),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.cursor().is_none());
    db.client
        .batch_execute("INSERT INTO items VALUES (7)")
        .await
        .expect("insert");
    let mut daemon = Daemon::start(&config);
    db.wait_for_id(&daemon, 7).await;
    daemon.stop().await;
}

#[test]
fn systemd_units_verify() {
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing (scripts/test.sh installs systemd)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut paths = Vec::new();
    for (unit, installed) in [
        ("tidemark.service", "tidemark.service"),
        ("tidemark@.service", "tidemark@orders.service"),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit file");
        // Verified against the binary under test (verify checks ExecStart exists).
        let text = text.replace("/usr/local/bin/tidemark", env!("CARGO_BIN_EXE_tidemark"));
        assert!(text.contains("Type=notify") && text.contains("WatchdogSec="));
        let path = dir.path().join(installed);
        std::fs::write(&path, text).expect("write unit");
        paths.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    // systemd's own hardening score, each unit at 2.0 or lower.
    for path in &paths {
        let out = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(path)
            .output()
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split(": ")
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no exposure level in: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        assert!(
            score <= 2.0,
            "{}: exposure {score}:\n{text}",
            path.display()
        );
    }
}
