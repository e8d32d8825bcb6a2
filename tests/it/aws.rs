//! The Kinesis sink and the DynamoDB cursor store, against the local emulators
//! (kinesalite and dynalite, started by scripts/setup-aws-emulators.sh), with a
//! real PostgreSQL source.

use crate::common::*;
use crate::fault_proxy::{self, Faults};
use crate::mysql::{sql, MyDb};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn kinesis() -> aws_sdk_kinesis::Client {
    kinesis_at(KINESIS)
}

/// A Kinesis client for the emulator at `endpoint`.
pub fn kinesis_at(endpoint: &str) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    dynamodb_at(DYNAMODB)
}

/// A DynamoDB client for the emulator at `endpoint` (or a proxy in front of it).
pub fn dynamodb_at(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// A fresh stream of `shards` shards and no DynamoDB table named `name`; fails
/// loudly when the emulators are not running.
pub async fn fresh_aws(name: &str, shards: i32) {
    let client = kinesis();
    let _ = client.delete_stream().stream_name(name).send().await;
    wait_until("the old stream to go", Duration::from_secs(10), || async {
        client
            .describe_stream()
            .stream_name(name)
            .send()
            .await
            .is_err()
    })
    .await;
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create stream {name} on the Kinesis emulator at {KINESIS} (run scripts/setup-aws-emulators.sh): {}",
                aws_sdk_kinesis::error::DisplayErrorContext(&e)
            )
        });
    wait_until(
        "the stream to be active",
        Duration::from_secs(10),
        || async {
            client
                .describe_stream()
                .stream_name(name)
                .send()
                .await
                .ok()
                .and_then(|d| {
                    d.stream_description
                        .map(|s| s.stream_status.as_str() == "ACTIVE")
                })
                .unwrap_or(false)
        },
    )
    .await;
    let dynamo = dynamodb();
    let _ = dynamo.delete_table().table_name(name).send().await;
    wait_until("the old table to go", Duration::from_secs(10), || async {
        dynamo
            .describe_table()
            .table_name(name)
            .send()
            .await
            .is_err()
    })
    .await;
}

/// Every event in the stream, per shard in sequence order.
pub async fn read_stream(name: &str) -> BTreeMap<String, Vec<Value>> {
    read_stream_from(&kinesis(), name).await
}

/// [`read_stream`] through `client`.
pub async fn read_stream_from(
    client: &aws_sdk_kinesis::Client,
    name: &str,
) -> BTreeMap<String, Vec<Value>> {
    let description = client
        .describe_stream()
        .stream_name(name)
        .send()
        .await
        .expect("describe stream")
        .stream_description
        .expect("stream description");
    let mut shards = BTreeMap::new();
    for shard in description.shards {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(&shard.shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("shard iterator")
            .shard_iterator;
        let mut events = Vec::new();
        while let Some(it) = iterator {
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(1000)
                .send()
                .await
                .expect("get records");
            if page.records.is_empty() {
                break;
            }
            for record in &page.records {
                for line in record.data.as_ref().split(|b| *b == b'\n') {
                    events.push(serde_json::from_slice(line).expect("event JSON"));
                }
            }
            iterator = page.next_shard_iterator;
        }
        shards.insert(shard.shard_id, events);
    }
    shards
}

/// A Kinesis + DynamoDB config for `source` (a `[source]` body), with the
/// stream and the cursor table both named `stream`.
pub fn aws_config(
    dir: &Path,
    pipeline: &str,
    source: &str,
    stream: &str,
    extra_sink: &str,
) -> PathBuf {
    let text = format!(
        "[pipeline]\nname = \"{pipeline}\"\n[source]\n{source}\n[sink]\ntype = \"kinesis\"\nstream = \"{stream}\"\n{extra_sink}\n[cursor]\ntype = \"dynamodb\"\ntable = \"{stream}\"\nlease_duration = \"2s\"\n",
    );
    let path = dir.join("aws.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// [`aws_config`] for `public.items` of a PostgreSQL test database.
pub fn config(db: &TestDb, stream: &str, extra_sink: &str) -> PathBuf {
    let source = format!(
        "type = \"postgres\"\nurl = \"{url}\"\ntables = [\"public.items\"]\nslot = \"{name}\"\npublication = \"{name}\"",
        name = db.name,
        url = db.url(),
    );
    aws_config(db.dir.path(), &db.name, &source, stream, extra_sink)
}

pub fn cursor_init(config: &std::path::Path) -> String {
    let out = bounded_output(tidemark().args(["cursor", "init", "--config"]).arg(config));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn all_events(shards: &BTreeMap<String, Vec<Value>>) -> Vec<&Value> {
    shards.values().flatten().collect()
}

/// Rows `1..=rows` were inserted with `n = 0` and then updated to `n = 1..=updates`:
/// the stream holds each row's versions exactly once and in that order.
fn assert_versions_in_order(shards: &BTreeMap<String, Vec<Value>>, rows: i64, updates: i64) {
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for event in all_events(shards) {
        let id = event["key"]["id"].as_i64().expect("key id");
        per_key
            .entry(id)
            .or_default()
            .push(event["after"]["n"].as_i64().expect("n"));
    }
    assert_eq!(per_key.len() as i64, rows, "rows missing");
    let expected: Vec<i64> = (0..=updates).collect();
    for (id, ns) in per_key {
        assert_eq!(
            ns, expected,
            "row {id} out of order, incomplete or repeated"
        );
    }
}

/// Inserts rows `1..=rows` of `items` with `n = 0`, then updates every row
/// to `n = 1..=updates` in turn, one statement each.
pub async fn insert_then_update(db: &TestDb, rows: i64, updates: i64) {
    db.client
        .batch_execute(&format!(
            "INSERT INTO items SELECT g, 0 FROM generate_series(1, {rows}) g"
        ))
        .await
        .expect("insert");
    for n in 1..=updates {
        db.client
            .batch_execute(&format!("UPDATE items SET n = {n}"))
            .await
            .expect("update");
    }
}

/// Starts the daemon and waits until it holds the lease and streams.
pub async fn start_streaming(config: &Path) -> Daemon {
    let daemon = Daemon::start(config);
    daemon
        .wait_for(
            "the lease and the stream",
            Duration::from_secs(30),
            || async { daemon.stderr().contains("running") },
        )
        .await;
    daemon
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_kinesis_keeps_each_key_in_order_with_a_dynamodb_cursor() {
    let db = TestDb::new("tm_aws_order").await;
    fresh_aws(&db.name, 4).await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .expect("ddl");
    let config = config(&db, &db.name, "");
    assert!(cursor_init(&config).contains("created"));
    assert!(cursor_init(&config).contains("already exists"));
    let mut daemon = start_streaming(&config).await;
    insert_then_update(&db, 50, 5).await;
    daemon
        .wait_for("300 records", Duration::from_secs(60), || async {
            all_events(&read_stream(&db.name).await).len() >= 300
        })
        .await;
    daemon.stop().await;
    let shards = read_stream(&db.name).await;
    assert!(
        shards.values().filter(|s| !s.is_empty()).count() > 1,
        "keys spread over shards"
    );
    assert_versions_in_order(&shards, 50, 5);
    // The cursor is in DynamoDB, at the last event, and the lease was given up.
    let out = bounded_output(tidemark().args(["cursor", "show", "--config"]).arg(&config));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("cursor JSON");
    assert_eq!(shown["owner"], "(released)");
    assert!(shown["position"]["postgres"].is_object(), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_after_sigkill_and_a_stale_owner_stops() {
    let db = TestDb::new("tm_aws_lease").await;
    fresh_aws(&db.name, 2).await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .expect("ddl");
    let config = config(&db, &db.name, "");
    cursor_init(&config);
    let mut first = Daemon::start(&config);
    first
        .wait_for("the first owner", Duration::from_secs(30), || async {
            first.stderr().contains("running")
        })
        .await;
    let mut second = Daemon::start(&config);
    second
        .wait_for("the standby", Duration::from_secs(30), || async {
            second.stderr().contains("standby")
        })
        .await;
    for tx in 0..10 {
        db.client
            .batch_execute(&format!(
                "INSERT INTO items SELECT g, 0 FROM generate_series({}, {}) g",
                tx * 10 + 1,
                tx * 10 + 10
            ))
            .await
            .expect("insert");
    }
    first
        .wait_for("the first rows", Duration::from_secs(30), || async {
            !all_events(&read_stream(&db.name).await).is_empty()
        })
        .await;
    first.crash().await;
    db.client
        .batch_execute("INSERT INTO items SELECT g, 1 FROM generate_series(101, 200) g")
        .await
        .expect("insert");
    second
        .wait_for(
            "every row after the takeover",
            Duration::from_secs(60),
            || async {
                let shards = read_stream(&db.name).await;
                let ids: std::collections::BTreeSet<i64> = all_events(&shards)
                    .iter()
                    .filter_map(|e| e["key"]["id"].as_i64())
                    .collect();
                ids.len() == 200
            },
        )
        .await;
    assert!(
        second.stderr().contains("holding the lease"),
        "{}",
        second.stderr()
    );
    // The owner freezes past its lease; a third instance takes over, and the
    // frozen one, once thawed, finds its lease gone and stops non-zero.
    second.signal("STOP");
    let mut third = Daemon::start(&config);
    third
        .wait_for("the third owner", Duration::from_secs(30), || async {
            third.stderr().contains("holding the lease")
        })
        .await;
    second.signal("CONT");
    let status = second.wait(Duration::from_secs(30)).await;
    assert!(!status.success(), "{}", second.stderr());
    assert!(
        second.stderr().contains("lost the lease"),
        "{}",
        second.stderr()
    );
    // The frozen owner held the replication slot; now the new owner streams.
    third
        .wait_for(
            "the third owner to stream",
            Duration::from_secs(30),
            || async { third.stderr().contains("running") },
        )
        .await;
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_events_fail_or_are_skipped_and_counted() {
    let db = TestDb::new("tm_aws_big").await;
    fresh_aws(&db.name, 1).await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, pad text)")
        .await
        .expect("ddl");
    db.client
        .batch_execute("INSERT INTO items VALUES (1, 0, repeat('x', 5000)), (2, 0, 'small')")
        .await
        .expect("insert");
    // fail (the default): the pipeline stops and names the table, key and size.
    let config_fail = config(&db, &db.name, "max_record_bytes = 2048");
    cursor_init(&config_fail);
    let mut daemon = Daemon::start(&config_fail);
    let status = daemon.wait(Duration::from_secs(60)).await;
    assert!(!status.success());
    let stderr = daemon.stderr();
    assert!(
        stderr.lines().any(|l| l.starts_with("error: ")
            && l.contains("public.items")
            && l.contains("{\"id\":1}")
            && l.contains("over the record limit of 2048")),
        "{stderr}"
    );
    assert!(all_events(&read_stream(&db.name).await).is_empty());
    // skip-and-count: the big event is logged with its position and skipped.
    let config_skip = config(
        &db,
        &db.name,
        "max_record_bytes = 2048\noversized = \"skip-and-count\"",
    );
    let mut daemon = Daemon::start(&config_skip);
    daemon
        .wait_for("the small row", Duration::from_secs(60), || async {
            all_events(&read_stream(&db.name).await)
                .iter()
                .any(|e| e["key"]["id"] == 2)
        })
        .await;
    let port = http_port(&daemon).await;
    let scrape = http_get(port, "/metrics").await.1;
    assert!(
        scrape.contains(
            "tidemark_events_skipped_total{table=\"public.items\",reason=\"oversized\"} 1"
        ),
        "{scrape}"
    );
    daemon.stop().await;
    assert!(
        daemon.stderr().contains("skipped an event"),
        "{}",
        daemon.stderr()
    );
    let events = read_stream(&db.name).await;
    assert!(all_events(&events).iter().all(|e| e["key"]["id"] != 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_partial_failures_keep_each_key_in_order_and_lose_nothing() {
    let db = TestDb::new("tm_aws_faults").await;
    fresh_aws(&db.name, 4).await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .expect("ddl");
    let faults = Faults {
        throttle_every_call: 4,
        error_every_call: 7,
        fail_every_record: 5,
    };
    let (proxy, injected) = fault_proxy::start(KINESIS, faults).await;
    let config = config(&db, &db.name, &format!("endpoint = \"{proxy}\""));
    cursor_init(&config);
    let mut daemon = start_streaming(&config).await;
    db.client
        .batch_execute("INSERT INTO items SELECT g, 0 FROM generate_series(1, 60) g")
        .await
        .expect("insert");
    for n in 1..=5 {
        // Updates of single rows and of all rows, so batches hold one key many
        // times as well as many keys once.
        db.client
            .batch_execute(&format!(
                "UPDATE items SET n = {n} WHERE id <= 30; UPDATE items SET n = {n} WHERE id > 30"
            ))
            .await
            .expect("update");
    }
    daemon
        .wait_for("360 events", Duration::from_secs(120), || async {
            all_events(&read_stream(&db.name).await).len() >= 360
        })
        .await;
    daemon.stop().await;
    assert_versions_in_order(&read_stream(&db.name).await, 60, 5);
    let injected_faults = [
        injected.throttled_calls.load(Ordering::SeqCst),
        injected.failed_calls.load(Ordering::SeqCst),
        injected.failed_records.load(Ordering::SeqCst),
    ];
    assert!(
        injected_faults.iter().all(|n| *n > 0),
        "the proxy injected no faults of some kind: {injected_faults:?}"
    );
    let stderr = daemon.stderr();
    assert!(stderr.contains("throttled"), "{stderr}");
    assert!(stderr.contains("will be retried"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_to_kinesis_keeps_each_key_in_order() {
    let db = MyDb::new(
        "tm_aws_mariadb",
        "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)",
    );
    fresh_aws(&db.name, 4).await;
    let source = format!(
        "type = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/{name}\"\ntables = [\"{name}.items\"]\nserver_id = 4501",
        name = db.name
    );
    let config = aws_config(db.dir.path(), &db.name, &source, &db.name, "");
    cursor_init(&config);
    let mut daemon = start_streaming(&config).await;
    let mut statements = format!(
        "USE {}; INSERT INTO items SELECT seq, 0 FROM seq_1_to_40;",
        db.name
    );
    for n in 1..=5 {
        statements.push_str(&format!("UPDATE items SET n = {n};"));
    }
    sql(&statements);
    daemon
        .wait_for("240 events", Duration::from_secs(60), || async {
            all_events(&read_stream(&db.name).await).len() >= 240
        })
        .await;
    daemon.stop().await;
    let shards = read_stream(&db.name).await;
    assert!(
        all_events(&shards)
            .iter()
            .all(|e| e["source"]["connector"] == "mysql"),
        "not binlog events"
    );
    assert_versions_in_order(&shards, 40, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_three_times_with_kinesis_and_dynamodb_leaves_no_gap() {
    let db = TestDb::new("tm_aws_crash").await;
    fresh_aws(&db.name, 2).await;
    db.client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, payload text)")
        .await
        .expect("ddl");
    let config = config(&db, &db.name, "");
    cursor_init(&config);
    let daemon = start_streaming(&config).await;
    let writer = std::sync::Arc::new(connect(&db.name).await);
    let stream = db.name.clone();
    let mut daemon = insert_while_killing(
        daemon,
        &config,
        || async { all_events(&read_stream(&stream).await).len() },
        move |first| pg_insert_rows(writer.clone(), "items", first),
    )
    .await;
    daemon
        .wait_for("the last row", Duration::from_secs(180), || async {
            all_events(&read_stream(&db.name).await)
                .iter()
                .any(|e| e["after"]["id"] == 20_000)
        })
        .await;
    daemon.stop().await;
    // At least once: every row is there; a row written twice (sent before a
    // crash, its cursor not yet committed) carries the same position both times,
    // which is what a consumer drops repeats by.
    let shards = read_stream(&db.name).await;
    let mut positions: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for event in all_events(&shards) {
        let id = event["after"]["id"].as_i64().expect("id");
        positions
            .entry(id)
            .or_default()
            .push(event["position"].as_str().expect("position"));
    }
    let missing: Vec<i64> = (1..=20_000)
        .filter(|id| !positions.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} rows missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (id, seen) in &positions {
        assert!(
            seen.iter().all(|p| p == &seen[0]),
            "row {id} came with different positions: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_owner_cannot_commit() {
    use tidemark::connectors::Position;
    use tidemark::cursor::DynamoCursor;
    let table = "tm_aws_stale";
    fresh_aws(table, 1).await;
    let cursor = |lease| {
        DynamoCursor::new(
            dynamodb(),
            table,
            "stale",
            lease,
            tidemark::ops::Health::new(),
        )
    };
    let mut first = cursor(Duration::from_secs(60));
    first.init().await.expect("create the cursor table");
    first.acquire().await.expect("first owner");
    first
        .commit(&Position::postgres(100, 100))
        .await
        .expect("the owner commits");
    // Another instance takes the lease over (as after the first froze past its
    // lease): the first one's next commit is refused and changes nothing.
    dynamodb()
        .update_item()
        .table_name(table)
        .key("pipeline", AttributeValue::S("stale".into()))
        .update_expression("SET #owner = :other, lease_counter = lease_counter + :one")
        .expression_attribute_names("#owner", "owner")
        .expression_attribute_values(":other", AttributeValue::S("another-instance".into()))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("take the lease over");
    let refused = first.commit(&Position::postgres(200, 200)).await;
    assert!(
        matches!(
            refused,
            Err(tidemark::cursor::CursorError::LeaseLost { .. })
        ),
        "{refused:?}"
    );
    let stored = first.describe().await.expect("describe").expect("item");
    assert_eq!(stored["owner"], "another-instance");
    assert_eq!(
        stored["position_text"],
        Position::postgres(100, 100).to_string()
    );
}

/// The items of a database, `(id, n)` in key order.
async fn items(client: &tokio_postgres::Client) -> Vec<(i32, i32)> {
    client
        .query("SELECT id, n FROM items ORDER BY id", &[])
        .await
        .expect("read items")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until the target holds what the source holds.
async fn wait_for_equal(source: &TestDb, target: &TestDb, apply: &Daemon, what: &str) {
    apply
        .wait_for(what, Duration::from_secs(90), || async {
            items(&source.client).await == items(&target.client).await
        })
        .await;
}

async fn update_all(db: &TestDb, from: i32, to: i32) {
    for n in from..=to {
        db.client
            .batch_execute(&format!("UPDATE items SET n = {n}"))
            .await
            .expect("update");
    }
}

/// Splits the first open shard in two, and waits until the stream is active.
async fn split_a_shard(stream: &str) -> String {
    let client = kinesis();
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards")
        .shards
        .unwrap_or_default();
    let open = shards
        .iter()
        .find(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .expect("an open shard");
    let range = open.hash_key_range().expect("hash key range");
    let start: u128 = range.starting_hash_key().parse().expect("hash key");
    let end: u128 = range.ending_hash_key().parse().expect("hash key");
    client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(open.shard_id())
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("split shard");
    wait_until("the split to finish", Duration::from_secs(10), || async {
        client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .ok()
            .and_then(|d| d.stream_description_summary)
            .is_some_and(|s| s.stream_status.as_str() == "ACTIVE")
    })
    .await;
    open.shard_id().to_string()
}

/// The shard lease items of an apply pipeline, by shard id.
async fn shard_leases(table: &str, pipeline: &str) -> BTreeMap<String, (String, String)> {
    let prefix = format!("{pipeline}/{table}/");
    let items = dynamodb()
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .expect("scan leases")
        .items
        .unwrap_or_default();
    let text = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    items
        .iter()
        .filter_map(|item| {
            let key = text(item, "pipeline");
            let shard = key.strip_prefix(&prefix)?.to_string();
            Some((shard, (text(item, "owner"), text(item, "checkpoint"))))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apply_instances_share_kinesis_shards_through_a_split_and_a_crash() {
    let source = TestDb::new("tm_aws_apply").await;
    let target = TestDb::new("tm_aws_apply_target").await;
    let stream = source.name.clone();
    fresh_aws(&stream, 3).await;
    source
        .client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .expect("source ddl");
    // Every row write on the target is logged (the trigger fires in the
    // applier's replica session too), so a change applied twice or out of
    // order shows.
    target
        .client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL);
             CREATE TABLE writes (seq bigserial PRIMARY KEY, id int, n int);
             CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN INSERT INTO writes (id, n) VALUES (NEW.id, NEW.n); RETURN NULL; END$$;
             CREATE TRIGGER log_write AFTER INSERT OR UPDATE ON items
               FOR EACH ROW EXECUTE FUNCTION log_write();
             ALTER TABLE items ENABLE ALWAYS TRIGGER log_write;",
        )
        .await
        .expect("target ddl");
    let capture = config(&source, &stream, "");
    cursor_init(&capture);
    let apply_config = target.dir.path().join("apply.toml");
    // Small batches: a backlog takes many, so order mistakes have room to show.
    let text = std::fs::read_to_string(&capture).expect("config");
    std::fs::write(
        &apply_config,
        text.replace("[pipeline]\n", "[pipeline]\nmax_batch_events = 50\n"),
    )
    .expect("apply config");
    append(
        &apply_config,
        &format!(
            "[target]\ntype = \"postgres\"\nurl = \"{}\"\n[apply]\ninput = \"sink\"\n",
            target.url()
        ),
    );
    let mut capture = start_streaming(&capture).await;

    // One instance takes every shard.
    let mut first = Daemon::command(&["apply"], &apply_config);
    first
        .wait_for("three shards", Duration::from_secs(30), || async {
            first.stderr().matches("holding shard").count() == 3
        })
        .await;
    source
        .client
        .batch_execute("INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g")
        .await
        .expect("insert");
    update_all(&source, 1, 3).await;
    wait_for_equal(&source, &target, &first, "the first changes").await;

    // A second instance takes its share from the first.
    let mut second = Daemon::command(&["apply"], &apply_config);
    second
        .wait_for("a shard of its own", Duration::from_secs(30), || async {
            second.stderr().contains("taken from")
        })
        .await;
    first
        .wait_for(
            "the first to let it go",
            Duration::from_secs(30),
            || async { first.stderr().contains("another instance took the lease") },
        )
        .await;
    update_all(&source, 4, 6).await;
    wait_for_equal(&source, &target, &second, "the changes while sharing").await;
    let owners: std::collections::BTreeSet<String> = shard_leases(&stream, &source.name)
        .await
        .into_values()
        .map(|(owner, _)| owner)
        .collect();
    assert_eq!(owners.len(), 2, "two instances hold shards: {owners:?}");

    // A split while nobody applies, with changes on both sides of it: the
    // parent must be applied to its end before its children.
    first.stop().await;
    second.stop().await;
    update_all(&source, 7, 20).await;
    let parent = split_a_shard(&stream).await;
    source
        .client
        .batch_execute("INSERT INTO items SELECT g, 0 FROM generate_series(101, 150) g")
        .await
        .expect("insert");
    update_all(&source, 21, 23).await;
    let mut first = Daemon::command(&["apply"], &apply_config);
    let mut second = Daemon::command(&["apply"], &apply_config);
    wait_for_equal(&source, &target, &second, "the changes around the split").await;
    let leases = shard_leases(&stream, &source.name).await;
    assert_eq!(leases[&parent].1, "SHARD_END", "{leases:?}");
    assert_eq!(leases.len(), 5, "three shards and two children: {leases:?}");

    // The first instance crashes while it applies; the second takes its shards
    // when the leases lapse, and skips what the first applied past its checkpoint.
    let name = source.name.clone();
    let writer = tokio::spawn(async move {
        let client = connect(&name).await;
        for n in 24..=40 {
            client
                .batch_execute(&format!("UPDATE items SET n = {n}"))
                .await
                .expect("update");
        }
    });
    first
        .wait_for(
            "the first to apply some of them",
            Duration::from_secs(30),
            || async {
                let applied: i64 = target
                    .client
                    .query_one("SELECT count(*) FROM writes WHERE n >= 28", &[])
                    .await
                    .expect("count")
                    .get(0);
                applied > 0
            },
        )
        .await;
    first.crash().await;
    writer.await.expect("writer");
    wait_for_equal(&source, &target, &second, "the changes after the crash").await;
    second.stop().await;
    capture.stop().await;
    let leases = shard_leases(&stream, &source.name).await;
    assert!(
        leases.values().all(|(owner, _)| owner == "(released)"),
        "a clean stop releases every lease: {leases:?}"
    );

    // Every row version was written once, and each row's versions in order.
    let rows = target
        .client
        .query("SELECT id, n FROM writes ORDER BY seq", &[])
        .await
        .expect("writes");
    let mut seen: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for row in &rows {
        seen.entry(row.get(0)).or_default().push(row.get(1));
    }
    assert_eq!(seen.len(), 150);
    for (id, versions) in &seen {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "row {id} written twice or out of order: {versions:?}"
        );
        assert_eq!(versions.last(), Some(&40), "row {id}");
    }
    // Each shard's applied position is on the target, in its own scope.
    let scopes: i64 = target
        .client
        .query_one(
            "SELECT count(*) FROM tidemark_applied WHERE scope LIKE 'kinesis:' || $1 || ':%'",
            &[&stream],
        )
        .await
        .expect("tidemark_applied")
        .get(0);
    assert!(scopes >= 3, "{scopes} shard scopes");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_from_kinesis_refuses_a_file_cursor_and_a_missing_lease_table() {
    let target = TestDb::new("tm_aws_apply_refused").await;
    fresh_aws(&target.name, 1).await;
    let base = format!(
        "[pipeline]\nname = \"refused\"\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntables = [\"public.items\"]\nslot = \"refused\"\npublication = \"refused\"\n[sink]\ntype = \"kinesis\"\nstream = \"{name}\"\n[target]\ntype = \"postgres\"\nurl = \"{url}\"\n[apply]\ninput = \"sink\"\n",
        url = target.url(),
        name = target.name,
    );
    let file_cursor = target.dir.path().join("file-cursor.toml");
    std::fs::write(&file_cursor, &base).expect("config");
    assert_command_refused("apply", &file_cursor, "keeps its shard leases in DynamoDB");
    let no_table = target.dir.path().join("no-table.toml");
    std::fs::write(
        &no_table,
        format!(
            "{base}[cursor]\ntype = \"dynamodb\"\ntable = \"{}\"\n",
            target.name
        ),
    )
    .expect("config");
    assert_command_refused("apply", &no_table, "create it with `tidemark cursor init`");
}
