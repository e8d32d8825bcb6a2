//! TLS to PostgreSQL with libpq's `sslmode`/`sslrootcert` URL parameters,
//! against the test CA scripts/setup-postgres.sh gives the server; TLS to
//! MariaDB with `ssl-mode`/`ssl-ca`, against the server on 3307 and the test
//! CA scripts/setup-mariadb.sh gives it.

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

const MY_CA: &str = "/var/lib/mysql-no-metadata/tls/ca.pem";

/// `apply` of an empty events folder into the MariaDB on 3307 as `url`
/// says: it connects, sets the session up, creates its table, and ends.
fn apply_into(url: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).expect("events");
    let config = apply_config(dir.path(), "tm_mytls", &events, url, "", "");
    apply_until_idle(&config)
}

/// The user `tidemark_tls` is created `REQUIRE SSL`, so the server itself
/// says whether a link was encrypted.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_ssl_modes_against_a_server_with_a_test_ca() {
    use crate::mysql::{sql_at, NO_METADATA};
    assert!(
        Path::new(MY_CA).exists(),
        "{MY_CA} is missing; run scripts/setup-mariadb.sh (scripts/test.sh does)"
    );
    sql_at(
        NO_METADATA,
        "root",
        "DROP DATABASE IF EXISTS tm_mytls; CREATE DATABASE tm_mytls",
    );
    let at = |host: &str, params: &str| {
        format!("mysql://tidemark_tls@{host}:{NO_METADATA}/tm_mytls?prefer_socket=false&{params}")
    };
    // Encrypted: the default (preferred), required, verify_ca, and
    // verify_identity by the name the certificate carries.
    for url in [
        at("127.0.0.1", ""),
        at("127.0.0.1", "ssl-mode=required"),
        at("127.0.0.1", &format!("ssl-mode=verify_ca&ssl-ca={MY_CA}")),
        at(
            "localhost",
            &format!("ssl-mode=verify_identity&ssl-ca={MY_CA}"),
        ),
    ] {
        let (code, stderr) = apply_into(&url);
        assert_eq!(code, 0, "{url}: {stderr}");
    }
    // Refused, in one line, never a panic: plain text to a REQUIRE SSL user,
    // a name the certificate does not carry, a CA that did not sign it,
    // mysql_async's own TLS switches, and TLS required of a server without.
    for (url, needle) in [
        (at("127.0.0.1", "ssl-mode=disabled"), "Access denied"),
        (
            at(
                "127.0.0.1",
                &format!("ssl-mode=verify_identity&ssl-ca={MY_CA}"),
            ),
            "certificate",
        ),
        (
            at(
                "127.0.0.1",
                &format!("ssl-mode=verify_ca&ssl-ca={OTHER_CA}"),
            ),
            "certificate",
        ),
        (at("127.0.0.1", "require_ssl=true"), "set TLS with ssl-mode"),
        (at("127.0.0.1", "verify_ca=true"), "set TLS with ssl-mode"),
        (
            "mysql://root@127.0.0.1:3306/test?ssl-mode=required".to_string(),
            "asked for SSL",
        ),
    ] {
        let (code, stderr) = apply_into(&url);
        assert!(code != 0 && code != 101, "{url}: exit {code}: {stderr}");
        assert!(stderr.contains(needle), "{url}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{url}: {stderr}");
    }
    // The main server offers no TLS: preferred falls back to plain text.
    let (code, stderr) = apply_into("mysql://root@127.0.0.1:3306/test");
    assert_eq!(code, 0, "{stderr}");
}

/// The role `tidemark_cleartext` logs in with a password the server asks
/// for in clear text (scripts/setup-postgres.sh): tidemark sends it only
/// over TLS, or when the URL says `allow_cleartext_password=true`.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_asked_for_in_clear_text_is_sent_only_over_tls() {
    let db = TestDb::new("tm_cleartext").await;
    db.client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO tidemark_cleartext",
        )
        .await
        .expect("table");
    let base = format!(
        "postgres://tidemark_cleartext:cleartext-pw@127.0.0.1:5432/{}",
        db.name
    );
    let check = |url: String| {
        let config = config_with_url(&db, &url);
        run_to_end(&["check", "--config", config.to_str().expect("path")])
    };
    let (code, stderr) = check(format!("{base}?sslmode=disable"));
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("asks for the password in clear text")
            && stderr.contains("allow_cleartext_password=true"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("cleartext-pw"), "{stderr}");
    // Allowed in the URL, or over TLS (the default, prefer): the login works
    // (check may still find the role unfit; it gets past the password).
    for url in [
        format!("{base}?sslmode=disable&allow_cleartext_password=true"),
        base.clone(),
        format!("{base}?sslmode=require"),
    ] {
        let (_, stderr) = check(url.clone());
        assert!(!stderr.contains("clear text"), "{url}: {stderr}");
        assert!(
            !stderr.contains("password authentication failed"),
            "{url}: {stderr}"
        );
    }
}
