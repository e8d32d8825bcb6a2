//! Streaming capture: every op, every value form, replica identities, unchanged
//! TOAST, schema changes.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TYPES_DDL: &str = include_str!("../../fixtures/postgres/all_types.sql");
const TYPES_VALUES: &str = include_str!("../../fixtures/postgres/all_types.values.sql");

/// The documented JSON form of every column (fixtures/postgres/all_types.expected.json).
fn expected_types(id: i64) -> Value {
    let mut row: serde_json::Map<String, Value> = serde_json::from_str(include_str!(
        "../../fixtures/postgres/all_types.expected.json"
    ))
    .expect("fixture");
    let mut out = serde_json::Map::new();
    out.insert("id".into(), json!(id));
    out.append(&mut row);
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_has_its_documented_form_in_snapshot_and_stream() {
    let db = TestDb::new("tm_types").await;
    db.client.batch_execute(TYPES_DDL).await.expect("ddl");
    db.client
        .batch_execute(&format!("INSERT INTO alltypes VALUES (1, {TYPES_VALUES})"))
        .await
        .expect("insert 1");
    let _daemon = Daemon::start(&db.config(&["public.alltypes"], ""));
    wait_until("the snapshot row", Duration::from_secs(30), || async {
        !db.events().is_empty()
    })
    .await;
    db.client
        .batch_execute(&format!("INSERT INTO alltypes VALUES (2, {TYPES_VALUES})"))
        .await
        .expect("insert 2");
    wait_until("the streamed row", Duration::from_secs(30), || async {
        db.events().len() >= 2
    })
    .await;
    let events = db.events();
    assert_eq!(events[0]["op"], "r");
    assert_eq!(events[0]["after"], expected_types(1));
    assert_eq!(events[0]["source"]["snapshot"], true);
    assert_eq!(events[1]["op"], "c");
    assert_eq!(events[1]["after"], expected_types(2));
    assert_eq!(events[1]["key"], json!({"id": 2}));
    assert_eq!(events[1]["before"], Value::Null);
    assert!(events[0]["position"].as_str() < events[1]["position"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_identities_toast_and_schema_changes() {
    let db = TestDb::new("tm_ops").await;
    db.client
        .batch_execute(
            "CREATE TABLE dflt (id int PRIMARY KEY, name text, big text);
             CREATE TABLE full_id (id int PRIMARY KEY, name text, n int);
             ALTER TABLE full_id REPLICA IDENTITY FULL;",
        )
        .await
        .expect("ddl");
    let daemon =
        Daemon::start(&db.config(&["public.dflt", "public.full_id"], "snapshot = \"never\""));
    db.wait_for_slot(true).await;
    // A value large and random enough to be stored out of line (TOAST).
    let big: String = (0..200).map(|i| format!("{:x}", md5ish(i))).collect();
    db.client
        .execute("INSERT INTO dflt VALUES (1, 'one', $1)", &[&big])
        .await
        .expect("insert");
    db.client
        .batch_execute(
            "BEGIN;
             UPDATE dflt SET name = 'uno' WHERE id = 1;
             UPDATE dflt SET id = 10 WHERE id = 1;
             COMMIT;
             INSERT INTO full_id VALUES (1, 'a', 1);
             UPDATE full_id SET n = 2 WHERE id = 1;
             DELETE FROM full_id WHERE id = 1;
             DELETE FROM dflt WHERE id = 10;
             ALTER TABLE dflt ADD COLUMN extra int;
             INSERT INTO dflt VALUES (2, 'two', 'small', 7);
             TRUNCATE dflt, full_id;",
        )
        .await
        .expect("changes");
    wait_until("all changes", Duration::from_secs(30), || async {
        db.events().len() >= 11
    })
    .await;
    let events = db.events();
    let ops: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or("?"),
                e["source"]["table"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let expected: Vec<(&str, &str)> = vec![
        ("c", "dflt"),
        ("u", "dflt"),
        ("u", "dflt"),
        ("c", "full_id"),
        ("u", "full_id"),
        ("d", "full_id"),
        ("d", "dflt"),
        ("s", "dflt"),
        ("c", "dflt"),
        ("t", "dflt"),
        ("t", "full_id"),
    ];
    assert_eq!(ops, expected, "{events:#?}");
    // Unchanged TOAST: named, absent from `after`, never a fake null.
    assert_eq!(events[1]["unchanged"], json!(["big"]));
    assert_eq!(events[1]["after"], json!({"id": 1, "name": "uno"}));
    // REPLICA IDENTITY DEFAULT: `before` holds the key only, the old key on a key change.
    assert_eq!(events[1]["before"], json!({"id": 1}));
    assert_eq!(events[2]["before"], json!({"id": 1}));
    assert_eq!(events[2]["key"], json!({"id": 10}));
    assert_eq!(events[6]["before"], json!({"id": 10}));
    assert_eq!(events[6]["after"], Value::Null);
    // REPLICA IDENTITY FULL: the whole old row.
    assert_eq!(events[4]["before"], json!({"id": 1, "name": "a", "n": 1}));
    assert_eq!(events[5]["before"], json!({"id": 1, "name": "a", "n": 2}));
    assert_eq!(events[5]["key"], json!({"id": 1}));
    // The schema event precedes the first row under the new layout.
    let columns: Vec<&str> = events[7]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(columns, ["id", "name", "big", "extra"]);
    assert_eq!(events[7]["columns"][3]["type"], "integer");
    assert_eq!(events[8]["after"]["extra"], 7);
    // Transaction metadata and positions.
    assert_eq!(
        events[1]["transaction"]["id"],
        events[2]["transaction"]["id"]
    );
    assert_eq!(events[1]["transaction"]["seq"], 1);
    assert_eq!(events[2]["transaction"]["seq"], 2);
    let positions: Vec<&str> = events
        .iter()
        .map(|e| e["position"].as_str().unwrap_or(""))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions not increasing: {positions:?}"
    );
    drop(daemon);
}

/// A cheap deterministic scrambler (keeps the TOAST value incompressible).
fn md5ish(i: u64) -> u128 {
    let mut x = (i as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    x ^= x >> 61;
    x.wrapping_mul(0xD6E8_FEB8_6659_FD93_A5A5_5A5A_1234_5679)
}
