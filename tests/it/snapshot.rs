//! The initial snapshot, taken while the table is being written to.

use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_under_concurrent_writes_has_no_gap_and_no_overlap() {
    let db = TestDb::new("tm_snapshot").await;
    db.client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO items SELECT g, 0 FROM generate_series(1, 20000) g;",
        )
        .await
        .expect("seed");
    // Small chunks: the snapshot takes many round trips while the writer runs.
    let config = db.config(&["public.items"], "snapshot_chunk_rows = 300");
    let mut daemon = Daemon::start(&config);
    db.wait_for_slot(false).await;
    let writer_db = connect(&db.name).await;
    let writer = tokio::spawn(async move {
        for i in 0..400 {
            let id = 20001 + i;
            writer_db
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO items VALUES ({id}, 1); UPDATE items SET v = v + 1 WHERE id = {}; DELETE FROM items WHERE id = {}; COMMIT;",
                    1 + (i * 37) % 20000,
                    19000 + i
                ))
                .await
                .expect("concurrent write");
        }
    });
    writer.await.expect("writer");
    let final_rows: BTreeMap<i64, i64> = db
        .client
        .query("SELECT id::int8, v::int8 FROM items", &[])
        .await
        .expect("final state")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // The writer's last transaction inserts id 20400: wait for it.
    db.wait_for_id(&daemon, 20_400).await;
    daemon.stop().await;

    let events = db.events();
    // Replay the events in position order, as a consumer would.
    let mut state: BTreeMap<i64, i64> = BTreeMap::new();
    let mut reads: HashMap<i64, usize> = HashMap::new();
    let mut created: HashMap<i64, usize> = HashMap::new();
    let mut last_position = String::new();
    for event in &events {
        let position = event["position"].as_str().expect("position").to_string();
        assert!(
            position > last_position,
            "positions out of order at {position}"
        );
        last_position = position;
        let id = |row: &Value| row["id"].as_i64().expect("id");
        match event["op"].as_str() {
            Some("r") => {
                *reads.entry(id(&event["after"])).or_default() += 1;
                state.insert(
                    id(&event["after"]),
                    event["after"]["v"].as_i64().expect("v"),
                );
            }
            Some("c") | Some("u") => {
                if event["op"] == "c" {
                    *created.entry(id(&event["after"])).or_default() += 1;
                }
                state.insert(
                    id(&event["after"]),
                    event["after"]["v"].as_i64().expect("v"),
                );
            }
            Some("d") => {
                state.remove(&id(&event["before"]));
            }
            other => panic!("unexpected op {other:?}"),
        }
    }
    assert!(
        reads.values().all(|n| *n == 1),
        "a row was read twice by the snapshot"
    );
    assert!(
        created.values().all(|n| *n == 1),
        "a row was inserted twice"
    );
    // No overlap: a row inserted after the consistent point is not also in the snapshot.
    let overlap: Vec<_> = created.keys().filter(|id| reads.contains_key(id)).collect();
    assert!(
        overlap.is_empty(),
        "rows both snapshotted and streamed as inserts: {overlap:?}"
    );
    // No gap: replaying the events rebuilds the table exactly.
    assert_eq!(state, final_rows);
    assert!(
        reads.len() >= 19_000,
        "snapshot read only {} rows",
        reads.len()
    );
}

/// SIGTERM while the snapshot is being read ends the process at once; the
/// replication session that holds the exported snapshot used to wait for
/// its stream to start, and `tidemark run` never exited.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_snapshot_exits_promptly() {
    let db = TestDb::new("tm_snapshot_stop").await;
    db.client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
             INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g;",
        )
        .await
        .expect("seed");
    let config = db.config(&["public.items"], "snapshot_chunk_rows = 100");
    let mut daemon = Daemon::start(&config);
    daemon
        .wait_for(
            "the first snapshot rows",
            std::time::Duration::from_secs(60),
            || async { db.events().iter().any(|e| e["op"] == "r") },
        )
        .await;
    assert!(
        !db.events()
            .iter()
            .any(|e| e["op"] == "r" && e["after"]["id"] == 200000),
        "the snapshot ended before the stop: make the table larger"
    );
    // Stops with SIGTERM and fails unless the process exits within 10 s.
    daemon.stop().await;
    assert!(
        daemon.stderr().contains("stopping during the snapshot"),
        "{}",
        daemon.stderr()
    );
}
