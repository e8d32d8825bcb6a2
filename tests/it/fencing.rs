//! The DynamoDB lease fences every writer, checked against the emulator
//! (dynalite) with the fault proxy holding chosen calls:
//! - a takeover reads the position in its taking write, not before it;
//! - a commit never moves the stored position backward;
//! - `cursor reset` waits for the owner's counter to stand still, whatever
//!   the wall clocks say;
//! - a hung renewal does not hold a commit up;
//! - while renewals hang past the lease, sink writes wait.

use crate::aws::{dynamodb, dynamodb_at};
use crate::common::*;
use crate::fault_proxy::{self, Faults};
use aws_sdk_dynamodb::types::AttributeValue;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tidemark::connectors::Position;
use tidemark::cursor::{CursorError, CursorStore, DynamoCursor};

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A new, empty cursor table `table`.
async fn fresh_table(table: &str) {
    let client = dynamodb();
    let _ = client.delete_table().table_name(table).send().await;
    // A table left by an earlier run is deleted in the background.
    wait_until("the old table to go", Duration::from_secs(30), || async {
        client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .is_err()
    })
    .await;
    DynamoCursor::new(
        client,
        table,
        "init",
        Duration::from_secs(1),
        tidemark::ops::Health::new(),
    )
    .init()
    .await
    .unwrap_or_else(|e| {
        panic!("create {table} on dynalite at {DYNAMODB} (run scripts/setup-aws-emulators.sh): {e}")
    });
}

/// Writes the item as another instance would have left it.
async fn put_item(table: &str, pipeline: &str, owner: &str, counter: i64, position: &Position) {
    dynamodb()
        .put_item()
        .table_name(table)
        .item("pipeline", s(pipeline))
        .item("owner", s(owner))
        .item("lease_counter", n(counter))
        .item("lease_epoch", n(counter))
        // Long past by every clock: only the counter may say it is alive.
        .item("lease_expires_at", n(0))
        .item(
            "position",
            s(&serde_json::to_string(position).expect("json")),
        )
        .item("position_text", s(&position.to_string()))
        .send()
        .await
        .expect("put the item");
}

async fn set_position(table: &str, pipeline: &str, position: &Position) {
    dynamodb()
        .update_item()
        .table_name(table)
        .key("pipeline", s(pipeline))
        .update_expression("SET #p = :p, position_text = :t")
        .expression_attribute_names("#p", "position")
        .expression_attribute_values(":p", s(&serde_json::to_string(position).expect("json")))
        .expression_attribute_values(":t", s(&position.to_string()))
        .send()
        .await
        .expect("set the position");
}

async fn stored_text(table: &str, pipeline: &str) -> String {
    let item = dynamodb()
        .get_item()
        .table_name(table)
        .key("pipeline", s(pipeline))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .unwrap_or_default();
    item.get("position_text")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_reads_the_position_in_its_taking_write() {
    let table = "tm_fence_takeover";
    fresh_table(table).await;
    put_item(table, "p", "ghost", 5, &Position::postgres(100, 100)).await;
    let (proxy, injected) = fault_proxy::start(DYNAMODB, Faults::default()).await;
    // The standby's take waits at the proxy, after its last read.
    injected.hold_calls("UpdateItem", "lease_counter = :seen");
    let mut standby = DynamoCursor::new(
        dynamodb_at(&proxy),
        table,
        "p",
        Duration::from_secs(1),
        tidemark::ops::Health::new(),
    );
    let acquired = tokio::spawn(async move { standby.acquire().await });
    wait_until("the take to be held", Duration::from_secs(20), || async {
        injected.waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    // Meanwhile the old owner's last commit lands, without moving the counter.
    set_position(table, "p", &Position::postgres(200, 200)).await;
    injected.release_calls();
    let position = acquired.await.expect("join").expect("acquire");
    assert_eq!(
        position,
        Some(Position::postgres(200, 200)),
        "the standby resumed from a position older than the last committed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_never_moves_the_stored_position_backward() {
    let table = "tm_fence_backward";
    fresh_table(table).await;
    let mut owner = DynamoCursor::new(
        dynamodb(),
        table,
        "p",
        Duration::from_secs(30),
        tidemark::ops::Health::new(),
    );
    owner.acquire().await.expect("acquire");
    owner
        .commit(&Position::postgres(100, 100))
        .await
        .expect("commit");
    // The store is further on than this owner knows (another writer's commit).
    set_position(table, "p", &Position::postgres(300, 300)).await;
    let refused = owner.commit(&Position::postgres(200, 200)).await;
    assert!(
        matches!(refused, Err(CursorError::Backward { .. })),
        "{refused:?}"
    );
    assert_eq!(
        stored_text(table, "p").await,
        Position::postgres(300, 300).to_string()
    );
    // Forward still works.
    owner
        .commit(&Position::postgres(400, 400))
        .await
        .expect("commit forward");
    assert_eq!(
        stored_text(table, "p").await,
        Position::postgres(400, 400).to_string()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_reset_waits_for_the_lease_counter_not_the_clock() {
    let table = "tm_fence_reset";
    fresh_table(table).await;
    put_item(table, "p", "ghost", 1, &Position::postgres(100, 100)).await;
    // The owner is alive (its counter moves) though its expiry is long past.
    let heartbeat = tokio::spawn(async move {
        for _ in 0..15 {
            dynamodb()
                .update_item()
                .table_name(table)
                .key("pipeline", s("p"))
                .update_expression("SET lease_counter = lease_counter + :one")
                .expression_attribute_values(":one", n(1))
                .send()
                .await
                .expect("heartbeat");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::time::Instant::now()
    });
    let reset = DynamoCursor::new(
        dynamodb(),
        table,
        "p",
        Duration::from_secs(1),
        tidemark::ops::Health::new(),
    );
    assert!(reset.reset().await.expect("reset"), "there was an item");
    let reset_at = std::time::Instant::now();
    let last_beat = heartbeat.await.expect("heartbeat");
    assert!(
        reset_at > last_beat,
        "the cursor was reset while its owner was alive"
    );
    assert_eq!(stored_text(table, "p").await, "", "the position is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_renewal_does_not_hold_a_commit_up_and_sink_writes_wait_for_the_lease() {
    let table = "tm_fence_hung";
    fresh_table(table).await;
    let (proxy, injected) = fault_proxy::start(DYNAMODB, Faults::default()).await;
    let mut owner = DynamoCursor::new(
        dynamodb_at(&proxy),
        table,
        "p",
        Duration::from_secs(1),
        tidemark::ops::Health::new(),
    );
    owner.acquire().await.expect("acquire");
    assert!(owner.lease_confirmed());
    // Renewals (the writes that carry no position) hang.
    injected.hold_calls("UpdateItem", "SET updated_at = :now, lease_counter");
    wait_until("a renewal to be held", Duration::from_secs(20), || async {
        injected.waiting.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::timeout(
        Duration::from_secs(10),
        owner.commit(&Position::postgres(100, 100)),
    )
    .await
    .expect("a commit waited for a hung renewal")
    .expect("commit");
    // With renewals hung past the lease (commits confirm it too, so none are
    // made now), the lease is unconfirmed and sink writes wait.
    let store = CursorStore::Dynamo(Box::new(owner));
    wait_until(
        "the lease to be unconfirmed",
        Duration::from_secs(20),
        || {
            let confirmed = matches!(&store, CursorStore::Dynamo(c) if c.lease_confirmed());
            async move { !confirmed }
        },
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), store.confirm_owner())
            .await
            .is_err(),
        "a sink write was let through on an unconfirmed lease"
    );
    // The renewal gets through (nobody took over): writes go on.
    injected.release_calls();
    tokio::time::timeout(Duration::from_secs(10), store.confirm_owner())
        .await
        .expect("writes resume once a renewal gets through")
        .expect("still the owner");
}
