//! Crash safety: SIGKILL mid-stream, restart, nothing lost; SIGTERM drains cleanly.

use crate::common::*;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_three_times_loses_nothing() {
    let db = TestDb::new("tm_crash").await;
    db.client
        .batch_execute("CREATE TABLE rows (id int PRIMARY KEY, payload text)")
        .await
        .expect("ddl");
    let config = db.config(&["public.rows"], "");
    let daemon = Daemon::start(&config);
    wait_until(
        "the snapshot to complete",
        Duration::from_secs(30),
        || async { db.cursor().is_some() },
    )
    .await;

    let writer = std::sync::Arc::new(connect(&db.name).await);
    let daemon = insert_while_killing(
        daemon,
        &config,
        || async { db.events().len() },
        move |first| pg_insert_rows(writer.clone(), "rows", first),
    )
    .await;
    let mut daemon = daemon;
    db.wait_for_id(&daemon, 20_000).await;
    daemon.stop().await;

    let events = db.events();
    let cursor = db.cursor().expect("cursor");
    let cursor_text = cursor["position_text"]
        .as_str()
        .expect("position_text")
        .to_string();
    let mut by_position: HashMap<&str, usize> = HashMap::new();
    for event in &events {
        let position = event["position"].as_str().expect("position");
        *by_position.entry(position).or_default() += 1;
    }
    assert_each_id_once(&events, 20_000);
    // Duplicates are allowed only as re-deliveries of the same position at or
    // before the committed cursor; this sink resumes after its own last line, so
    // there should be none at all.
    for (position, n) in &by_position {
        if *n > 1 {
            assert!(
                *position <= cursor_text.as_str(),
                "duplicate {position} after the cursor {cursor_text}"
            );
        }
    }
    let duplicates: usize = by_position.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "events written twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_zero_with_cursor_at_last_event() {
    let db = TestDb::new("tm_sigterm").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .expect("ddl");
    let mut daemon = Daemon::start(&db.config(&["public.t"], ""));
    wait_until(
        "the snapshot to complete",
        Duration::from_secs(30),
        || async { db.cursor().is_some() },
    )
    .await;
    for i in 0..50 {
        db.client
            .batch_execute(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .expect("insert");
    }
    wait_until("some events", Duration::from_secs(30), || async {
        db.events().len() >= 10
    })
    .await;
    daemon.stop().await;
    let events = db.events();
    let last = events.last().expect("events");
    let cursor = db.cursor().expect("cursor");
    assert_eq!(
        cursor["position"]["postgres"]["commit_lsn"], last["source"]["commit_lsn"],
        "cursor {cursor} is not at the last written event {last}"
    );
    // The slot was never told more than the cursor holds.
    let confirmed: String = db
        .client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'tm_sigterm'",
            &[],
        )
        .await
        .expect("slot")
        .get(0);
    let confirmed = tidemark::connectors::event::parse_lsn(&confirmed).expect("lsn");
    let cursor_lsn = cursor["position"]["postgres"]["lsn"]
        .as_u64()
        .expect("cursor lsn");
    assert!(
        confirmed <= cursor_lsn,
        "slot confirmed {confirmed:X}, past the cursor {cursor_lsn:X}"
    );
}
