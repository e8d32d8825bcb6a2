//! Memory that does not grow with the backlog: with the sink held (stdout
//! into a pipe nobody reads) and a backlog of large rows growing tenfold,
//! the process's resident memory stays under a fixed ceiling, because every
//! stage between the socket and the sink holds a bounded amount and the
//! server keeps the rest. No timing is asserted: the test waits until the
//! server has stopped sending (or sent everything), then reads the RSS.

use crate::common::*;
use std::process::Stdio;
use std::time::Duration;

/// Far above what the bounded stages hold (a few dozen replication messages,
/// four batches of at most 4 MiB), far below the backlog (128 MB).
const CEILING_KB: u64 = 100 * 1024;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How far the server has sent this test's changes (its walsender only:
/// other tests stream in parallel).
async fn sent(source: &TestDb) -> String {
    let walsender = format!("tidemark:{}", source.name);
    source
        .client
        .query_one(
            "SELECT coalesce(max(sent_lsn)::text, '') FROM pg_stat_replication WHERE application_name = $1",
            &[&walsender],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or_default()
}

/// Waits until the server's sent position and the process's RSS have both
/// stopped moving for a second (ten reads in a row: the held pipeline took
/// all it will take) and returns the RSS then.
async fn settled_rss(source: &TestDb, pid: u32) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut last, mut rss, mut same) = (String::new(), 0u64, 0);
    while same < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server kept sending, or the RSS kept moving, for 120 s (at {last}, {rss} kB)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (now, now_rss) = (sent(source).await, rss_kb(pid));
        let steady = now == last && now_rss.abs_diff(rss) < 2048;
        same = if steady { same + 1 } else { 0 };
        if !steady {
            rss = now_rss;
        }
        last = now;
    }
    rss_kb(pid)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_sink_keeps_memory_flat_while_the_backlog_grows_tenfold() {
    let source = TestDb::new("tm_mem_held").await;
    source
        .client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, payload text NOT NULL);
             ALTER TABLE t ALTER payload SET STORAGE EXTERNAL",
        )
        .await
        .expect("table");
    let config = source.config(&["public.t"], "snapshot = \"never\"");
    let text = std::fs::read_to_string(&config).expect("config");
    let sink = text
        .find("[sink]")
        .and_then(|start| text[start..].find("[cursor]").map(|end| start..start + end))
        .expect("a [sink] section");
    let mut text = text;
    text.replace_range(sink, "[sink]\ntype = \"stdout\"\n\n");
    std::fs::write(&config, text).expect("config");
    // stdout is a pipe that is never read: once its 64 KiB fill, the sink's
    // write blocks, and so does everything before it.
    let mut child = tidemark()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tidemark");
    let pid = child.id();
    source.wait_for_slot(true).await;
    // Rows of 128 KiB of hex that Postgres does not compress.
    let insert = |first: i32, last: i32| {
        format!(
            "INSERT INTO t SELECT g, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 4096) x) FROM generate_series({first}, {last}) g"
        )
    };
    source
        .client
        .batch_execute(&insert(1, 100))
        .await
        .expect("backlog");
    let small = settled_rss(&source, pid).await;
    source
        .client
        .batch_execute(&insert(101, 1000))
        .await
        .expect("backlog x10");
    let large = settled_rss(&source, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "peak-free RSS with a held sink: {} MB at 12.8 MB of backlog, {} MB at 128 MB",
        small / 1024,
        large / 1024
    );
    assert!(small > 0 && large > 0, "no RSS read for pid {pid}");
    assert!(
        large < CEILING_KB,
        "RSS {large} kB with a 128 MB backlog behind a held sink (ceiling {CEILING_KB} kB; {small} kB at a tenth of it)"
    );
}
