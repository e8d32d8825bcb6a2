//! The Kinesis sink and the DynamoDB cursor store, against the local emulators
//! (kinesalite and dynalite, started by scripts/setup-aws-emulators.sh), with a
//! real PostgreSQL source.

use crate::common::*;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn kinesis() -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(KINESIS)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

fn dynamodb() -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(DYNAMODB)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// A fresh stream of `shards` shards and no DynamoDB table named `name`; fails
/// loudly when the emulators are not running.
async fn fresh_aws(name: &str, shards: i32) {
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
    let _ = dynamodb().delete_table().table_name(name).send().await;
}

/// Every event in the stream, per shard in sequence order.
async fn read_stream(name: &str) -> BTreeMap<String, Vec<Value>> {
    let client = kinesis();
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

fn config(db: &TestDb, stream: &str, extra_sink: &str) -> PathBuf {
    let text = format!(
        "[pipeline]\nname = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntables = [\"public.items\"]\nslot = \"{name}\"\npublication = \"{name}\"\n[sink]\ntype = \"kinesis\"\nstream = \"{stream}\"\n{extra_sink}\n[cursor]\ntype = \"dynamodb\"\ntable = \"{stream}\"\nlease_duration = \"2s\"\n",
        name = db.name,
        url = db.url(),
    );
    let path = db.dir.path().join("aws.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn cursor_init(config: &std::path::Path) -> String {
    let out = tidemark()
        .args(["cursor", "init", "--config"])
        .arg(config)
        .output()
        .expect("run cursor init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all_events(shards: &BTreeMap<String, Vec<Value>>) -> Vec<&Value> {
    shards.values().flatten().collect()
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
    let mut daemon = Daemon::start(&config);
    daemon
        .wait_for("the lease", Duration::from_secs(30), || async {
            daemon.stderr().contains("running")
        })
        .await;
    db.client
        .batch_execute("INSERT INTO items SELECT g, 0 FROM generate_series(1, 50) g")
        .await
        .expect("insert");
    for n in 1..=5 {
        db.client
            .batch_execute(&format!("UPDATE items SET n = {n}"))
            .await
            .expect("update");
    }
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
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for event in all_events(&shards) {
        let id = event["key"]["id"].as_i64().expect("key id");
        per_key
            .entry(id)
            .or_default()
            .push(event["after"]["n"].as_i64().expect("n"));
    }
    assert_eq!(per_key.len(), 50);
    for (id, ns) in per_key {
        assert_eq!(
            ns,
            vec![0, 1, 2, 3, 4, 5],
            "row {id} out of order or incomplete"
        );
    }
    // The cursor is in DynamoDB, at the last event, and the lease was given up.
    let out = tidemark()
        .args(["cursor", "show", "--config"])
        .arg(&config)
        .output()
        .expect("cursor show");
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
    daemon.stop().await;
    assert!(
        daemon.stderr().contains("skipped an event"),
        "{}",
        daemon.stderr()
    );
    let events = read_stream(&db.name).await;
    assert!(all_events(&events).iter().all(|e| e["key"]["id"] != 1));
}
