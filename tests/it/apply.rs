//! `tidemark apply`: events from the file sink written into a target database,
//! idempotently, with the applied position in the target.

use crate::common::*;
use std::time::Duration;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, name text, big text)";

/// `id|name|md5(big)` of every row, in key order.
async fn rows(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT id::text || '|' || coalesce(name, '') || '|' || coalesce(md5(big), '') FROM t ORDER BY id",
            &[],
        )
        .await
        .expect("read rows")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn file_sink_to_postgres_skips_replays_and_keeps_unchanged_toast() {
    let source = TestDb::new("tm_ap_src").await;
    let target = TestDb::new("tm_ap_dst").await;
    source
        .client
        .batch_execute(TABLE)
        .await
        .expect("source table");
    target
        .client
        .batch_execute(TABLE)
        .await
        .expect("target table");
    let config = source.config(&["public.t"], "");
    let mut daemon = Daemon::start(&config);
    source.wait_for_slot(true).await;
    // A big value that is not compressible stays TOASTed: an update that does
    // not touch it sends it as unchanged.
    source
        .client
        .batch_execute(
            "INSERT INTO t SELECT g, 'n' || g, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 400) x) FROM generate_series(1, 50) g;
             UPDATE t SET name = 'renamed' WHERE id <= 10;
             DELETE FROM t WHERE id > 45;
             UPDATE t SET id = 100 WHERE id = 20;",
        )
        .await
        .expect("changes");
    daemon
        .wait_for("the last change", Duration::from_secs(60), || async {
            source.events().iter().any(|e| e["after"]["id"] == 100)
        })
        .await;
    daemon.stop().await;
    let events = source.events();
    assert!(
        events
            .iter()
            .any(|e| e["unchanged"] == serde_json::json!(["big"])),
        "no event left the TOASTed column out; the test needs one. Events (op, after.id, unchanged): {:?}",
        events
            .iter()
            .map(|e| (e["op"].clone(), e["after"]["id"].clone(), e["unchanged"].clone()))
            .collect::<Vec<_>>()
    );

    append(
        &config,
        &format!(
            "[target]\ntype = \"postgres\"\nurl = \"{}\"\n[apply]\ninput = \"sink\"\n",
            target.url()
        ),
    );
    let config_arg = config.to_str().expect("path");
    let (code, stderr) = run_to_end(&["apply", "--config", config_arg, "--until-idle"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rows(&target.client).await, rows(&source.client).await);
    let applied: String = target
        .client
        .query_one(
            "SELECT position FROM tidemark_applied WHERE scope = 'tm_ap_src'",
            &[],
        )
        .await
        .expect("applied position")
        .get(0);
    assert_eq!(
        Some(applied.as_str()),
        events.last().and_then(|e| e["position"].as_str())
    );

    // A row changed on the target behind tidemark's back stays changed when the
    // same events are read again: they are at or before the applied position.
    target
        .client
        .batch_execute("UPDATE t SET name = 'by hand' WHERE id = 1")
        .await
        .expect("change by hand");
    let (code, stderr) = run_to_end(&["apply", "--config", config_arg, "--until-idle"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "0 applied (0 row writes), {} skipped",
            events.len()
        )),
        "{stderr}"
    );
    let name: String = target
        .client
        .query_one("SELECT name FROM t WHERE id = 1", &[])
        .await
        .expect("row 1")
        .get(0);
    assert_eq!(name, "by hand");
}
