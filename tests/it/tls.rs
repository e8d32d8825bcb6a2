//! TLS to PostgreSQL with libpq's `sslmode`/`sslrootcert` URL parameters,
//! against the test CA scripts/setup-postgres.sh gives the server.

use crate::common::*;
use std::path::Path;

const CA: &str = "/var/lib/postgresql/tidemark-tls/ca.pem";
const OTHER_CA: &str = "/var/lib/postgresql/tidemark-tls/other-ca.pem";

/// The test database's config with its URL changed to `url`.
fn config_with_url(db: &TestDb, url: &str) -> std::path::PathBuf {
    let config = db.config(&["public.t"], "");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        &format!("url = \"{}\"", db.url()),
        &format!("url = \"{url}\""),
    );
    std::fs::write(&config, text).expect("config");
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_over_verified_tls_and_refusals_name_the_cause() {
    assert!(
        Path::new(CA).exists(),
        "{CA} is missing; run scripts/setup-postgres.sh (scripts/test.sh does)"
    );
    let db = TestDb::new("tm_tls").await;
    db.client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .expect("table");
    let base = format!("postgres://postgres@localhost:5432/{}", db.name);

    // Refused: a CA that did not sign the server's certificate, a root
    // certificate without a verifying mode, a mode libpq has but tidemark not.
    let config = config_with_url(
        &db,
        &format!("{base}?sslmode=verify-full&sslrootcert={OTHER_CA}"),
    );
    assert_refused(&config, "certificate");
    let config = config_with_url(&db, &format!("{base}?sslmode=require&sslrootcert={CA}"));
    assert_refused(&config, "sslrootcert is set but sslmode does not verify");
    let config = config_with_url(&db, &format!("{base}?sslmode=allow"));
    assert_refused(&config, "sslmode \"allow\"");

    // The certificate names localhost, not 127.0.0.1: verify-full refuses that
    // address, verify-ca (chain only) accepts it.
    let by_address = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
    let config = config_with_url(
        &db,
        &format!("{by_address}?sslmode=verify-full&sslrootcert={CA}"),
    );
    assert_refused(&config, "certificate not valid for name \"127.0.0.1\"");
    let config = config_with_url(
        &db,
        &format!("{by_address}?sslmode=verify-ca&sslrootcert={CA}"),
    );
    let (code, stderr) = run_to_end(&["check", "--config", config.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");

    // verify-full: snapshot and stream, every connection encrypted.
    let config = config_with_url(&db, &format!("{base}?sslmode=verify-full&sslrootcert={CA}"));
    let mut daemon = Daemon::start(&config);
    db.wait_for_slot(true).await;
    db.client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .expect("insert");
    db.wait_for_id(&daemon, 2).await;
    let (plain, encrypted): (i64, i64) = {
        let row = db
            .client
            .query_one(
                "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = 'tm_tls' AND a.application_name LIKE 'tidemark%'",
                &[],
            )
            .await
            .expect("pg_stat_ssl");
        (row.get(0), row.get(1))
    };
    assert_eq!(plain, 0, "a tidemark connection without TLS");
    let walsender_tls: bool = db
        .client
        .query_one(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = 'tm_tls' AND a.backend_type = 'walsender'",
            &[],
        )
        .await
        .expect("the walsender")
        .get(0);
    assert!(walsender_tls, "the replication stream is not encrypted");
    assert!(encrypted >= 1);
    daemon.stop().await;
    let ids: Vec<i64> = db
        .events()
        .iter()
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect();
    assert_eq!(ids, [1, 2]);
}
