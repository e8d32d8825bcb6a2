//! The config's unit tests: defaults, bounds and error lines naming their
//! key, and the typed values (durations, modes, URLs) a load yields.

use super::*;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().map_err(|source| ConfigError::Read {
        path: "tmp".into(),
        source,
    })?;
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).map_err(|source| ConfigError::Read {
        path: "tmp".into(),
        source,
    })?;
    Config::load(&path)
}

const GOOD: &str = r#"
[pipeline]
name = "demo"
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/shop"
tables = ["public.customers", "orders"]
slot = "tidemark_demo"
publication = "tidemark_demo"
"#;

#[test]
fn defaults_are_the_embedded_ones() {
    let config = parse(GOOD).expect("valid config");
    assert!(matches!(config.sink, SinkConfig::File { .. }));
    assert!(matches!(config.cursor, CursorConfig::File { .. }));
    let SourceSettings::Postgres(pg) = config.connector_config(None, None) else {
        panic!("postgres source");
    };
    assert!(pg.snapshot);
    assert_eq!(pg.tables[1].to_string(), "public.orders");
}

#[test]
fn unknown_key_names_its_line() {
    let err = parse(&GOOD.replace("slot =", "slott =")).expect_err("unknown key");
    let text = err.to_string();
    assert!(text.contains(":8:") && text.contains("slott"), "{text}");
}

/// Every size and duration has an upper bound, and `log.level` takes
/// only levels and `target=level` directives: each of these is refused in
/// one line naming its key.
#[test]
fn unbounded_sizes_durations_and_level_typos_are_refused() {
    let huge = "9223372036854775807";
    let cases: Vec<(String, &str)> = vec![
        (GOOD.replace("[pipeline]\n", &format!("[pipeline]\nmax_batch_events = {huge}\n")), "pipeline.max_batch_events"),
        (GOOD.replace("[pipeline]\n", "[pipeline]\nmax_batch_events = 0\n"), "pipeline.max_batch_events"),
        (GOOD.replace("[pipeline]\n", "[pipeline]\ncommit_interval = \"2h\"\n"), "pipeline.commit_interval"),
        (format!("{GOOD}snapshot_chunk_rows = {huge}\n"), "source.snapshot_chunk_rows"),
        (format!("{GOOD}heartbeat_interval = \"5124095576030431h\"\n"), "source.heartbeat_interval"),
        (format!("{GOOD}heartbeat_interval = \"0s\"\n"), "source.heartbeat_interval"),
        (format!("{GOOD}[migrate]\nparallelism = 100000\n"), "migrate.parallelism"),
        (format!("{GOOD}[migrate]\nchunk_rows = {huge}\n"), "migrate.chunk_rows"),
        (format!("{GOOD}[sink]\ntype = \"file\"\npath = \"x\"\nmax_file_bytes = {huge}\n"), "sink.max_file_bytes"),
        (format!("{GOOD}[cursor]\ntype = \"dynamodb\"\ntable = \"t\"\nlease_duration = \"5124095576030431h\"\n"), "cursor.lease_duration"),
        (format!("{GOOD}[retention]\ncheck_interval = \"1000h\"\n"), "retention.check_interval"),
        (format!("{GOOD}[log]\nlevel = \"wran\"\n"), "log.level"),
        (format!("{GOOD}[log]\nlevel = \"tidemark=loud\"\n"), "log.level"),
        (format!("{GOOD}[log]\nlevel = \"\"\n"), "log.level"),
    ];
    for (text, key) in &cases {
        let err = parse(text).expect_err(key);
        let line = err.to_string();
        assert!(
            line.starts_with(&format!("{key}:")) && !line.contains('\n'),
            "{key}: {line}"
        );
    }
    for good in [
        "info",
        "warn,tidemark=debug",
        "tidemark::apply=trace, error",
        "OFF",
    ] {
        parse(&format!("{GOOD}[log]\nlevel = {good:?}\n"))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn bad_values_name_their_key() {
    let err =
        parse(&GOOD.replace("\"tidemark_demo\"\npub", "\"Bad-Slot\"\npub")).expect_err("bad slot");
    assert!(err.to_string().starts_with("source.slot:"), "{err}");
    let err = parse(&GOOD.replace(
        "url = \"postgres://postgres@127.0.0.1:5432/shop\"",
        "url = \"${TIDEMARK_TEST_UNSET_VAR}\"",
    ))
    .expect_err("missing env");
    assert!(err.to_string().contains("TIDEMARK_TEST_UNSET_VAR"), "{err}");
    let err = parse(&GOOD.replace("[pipeline]\n", "[pipeline]\ncommit_interval = \"soon\"\n"))
        .expect_err("bad interval");
    assert!(
        err.to_string().starts_with("pipeline.commit_interval:"),
        "{err}"
    );
}

#[test]
fn commit_interval_defaults_to_a_second_and_zero_means_every_batch() {
    let config = parse(GOOD).expect("valid config");
    assert_eq!(config.pipeline.commit_interval, Duration::from_secs(1));
    let config = parse(&GOOD.replace("[pipeline]\n", "[pipeline]\ncommit_interval = \"0s\"\n"))
        .expect("valid config");
    assert_eq!(config.pipeline.commit_interval, Duration::ZERO);
}

/// Every duration key is a `Duration` once loaded, defaults included.
#[test]
fn durations_are_parsed_at_load() {
    let config = parse(&format!(
        "{GOOD}heartbeat_interval = \"250ms\"\n[cursor]\ntype = \"dynamodb\"\ntable = \"t\"\n[retention]\ncheck_interval = \"2m\"\n"
    ))
    .expect("valid config");
    assert_eq!(config.retention.check_interval, Duration::from_secs(120));
    assert_eq!(
        config.retention.warn_before_purge,
        Duration::from_secs(6 * 3_600)
    );
    match &config.cursor {
        CursorConfig::Dynamodb { lease_duration, .. } => {
            assert_eq!(*lease_duration, Duration::from_secs(10))
        }
        other => panic!("not a dynamodb cursor: {other:?}"),
    }
    let SourceConfig::Postgres(pg) = &config.source else {
        panic!("postgres source");
    };
    assert_eq!(pg.heartbeat, Heartbeat::Every(Duration::from_millis(250)));
}

/// `heartbeat_interval = "off"` and `delete_detection` are enums, and reach
/// the connectors' configs as they did.
#[test]
fn modes_are_enums() {
    let config = parse(&format!("{GOOD}heartbeat_interval = \"off\"\n")).expect("valid config");
    let SourceConfig::Postgres(pg) = &config.source else {
        panic!("postgres source");
    };
    assert_eq!(pg.heartbeat, Heartbeat::Off);
    let SourceSettings::Postgres(connector) = config.connector_config(Some(7), None) else {
        panic!("postgres source");
    };
    assert!(connector.heartbeat.is_none());
    assert_eq!(connector.stop_at_lsn, Some(7));

    let config = parse(
        r#"
[pipeline]
name = "demo"
[source]
type = "poll"
url = "mysql://root@127.0.0.1:3306/shop"
[[source.table]]
name = "shop.items"
cursor_column = "id"
delete_detection = "keyscan"
keyscan_interval = "200ms"
[[source.table]]
name = "shop.orders"
cursor_column = "updated_at"
"#,
    )
    .expect("valid poll config");
    let SourceConfig::Poll(poll) = &config.source else {
        panic!("poll source");
    };
    assert_eq!(poll.interval, Duration::from_secs(2));
    assert_eq!(
        poll.table[0].delete_detection,
        DeleteDetection::Keyscan {
            every: Duration::from_millis(200)
        }
    );
    assert_eq!(poll.table[1].delete_detection, DeleteDetection::Off);
    assert_eq!(poll.table[1].lag_window, Duration::from_secs(5));
    let SourceSettings::Poll(connector) = config.connector_config(None, None) else {
        panic!("poll source");
    };
    assert_eq!(
        connector.tables[0].keyscan_every,
        Some(Duration::from_millis(200))
    );
    assert_eq!(connector.tables[1].keyscan_every, None);
}

/// A URL's `Debug` shows neither user, password nor parameters, and so
/// neither does the config's.
#[test]
fn urls_never_print_their_credentials() {
    let password = "Tm-S3cret-pw-9";
    for (url, shown) in [
        (
            format!("postgres://tm_user:{password}@db.example:5432/shop?sslmode=require"),
            "postgres://<redacted>@db.example:5432/shop",
        ),
        (
            format!("mysql://root:p@ss{password}@127.0.0.1:3306/test?x={password}"),
            "mysql://<redacted>@127.0.0.1:3306/test",
        ),
        (
            format!("postgres://{password}/shop"),
            "postgres://<redacted>",
        ),
        (format!("host=127.0.0.1 password={password}"), "<redacted>"),
        (format!("host=x password={password}://y"), "<redacted>"),
    ] {
        let debug = format!("{:?}", SecretUrl::new(url));
        assert!(!debug.contains(password), "{debug}");
        assert_eq!(debug, format!("SecretUrl({shown:?})"));
    }
    let config = parse(&GOOD.replace("postgres@127", &format!("postgres:{password}@127")))
        .expect("valid config");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains(password) && debug.contains("127.0.0.1:5432/shop"),
        "{debug}"
    );
}

/// The scheme is read by `SecretUrl`: capture sources take `mysql://` (not
/// the `mariadb://` alias), targets what `Engine::of_url` takes.
#[test]
fn url_schemes_decide_the_engine() {
    let poll = |url: &str| {
        format!("[pipeline]\nname = \"demo\"\n[source]\ntype = \"poll\"\nurl = \"{url}\"\n[[source.table]]\nname = \"shop.items\"\ncursor_column = \"id\"\n")
    };
    for url in ["mariadb://root@h/shop", "host=h dbname=shop"] {
        let err = parse(&poll(url)).expect_err(url);
        assert_eq!(
            err.to_string(),
            "source.url: poll sources read postgres:// or mysql:// URLs"
        );
    }
    parse(&poll("postgresql://u@h/shop")).expect("postgresql:// is polled");
    let mysql = |url: &str| {
        format!("[pipeline]\nname = \"demo\"\n[source]\ntype = \"mysql\"\nurl = \"{url}\"\ntables = [\"shop.items\"]\nserver_id = 7\n")
    };
    parse(&mysql("mysql://root@h/shop")).expect("mysql:// is captured");
    let err = parse(&mysql("mariadb://root@h/shop")).expect_err("mariadb://");
    assert_eq!(err.to_string(), "source.url: must be a mysql:// URL");
    let target =
        |kind: &str, url: &str| format!("{GOOD}[target]\ntype = \"{kind}\"\nurl = \"{url}\"\n");
    parse(&target("mysql", "mariadb://root@h/shop")).expect("a mariadb:// target");
    let err = parse(&target("postgres", "mysql://root@h/shop")).expect_err("engine mismatch");
    assert_eq!(
        err.to_string(),
        "target.url: is not a Postgres URL (postgres://... or mysql://...)"
    );
}

#[test]
fn history_sections_resolve_against_the_source_tables() {
    let with = |history: &str| {
        format!("{GOOD}[target]\ntype = \"postgres\"\nurl = \"postgres://u@h/dw\"\n{history}")
    };
    let config = parse(&with(
        "[[target.history]]\ntables = [\"public.cust*\"]\ntombstones = true\n[target.history.columns]\nvalid_from = \"start\"\n",
    ))
    .expect("a history section");
    let histories = &config.target.as_ref().expect("target").histories;
    let mode = histories
        .mode("public", "customers")
        .expect("customers in history mode");
    assert!(mode.tombstones);
    assert_eq!(mode.columns.valid_from, "start");
    assert_eq!(mode.columns.valid_to, "valid_to");
    assert!(histories.mode("public", "orders").is_none());
    for (history, message) in [
        (
            "[[target.history]]\ntables = [\"public.nothing*\"]\n",
            "target.history[0].tables: \"public.nothing*\" matches none of the source's tables",
        ),
        (
            "[[target.history]]\ntables = [\"public.orders\"]\n[target.history.columns]\nop = \"valid_to\"\n",
            "target.history[0].columns: names \"valid_to\" for two history columns",
        ),
        (
            "[[target.history]]\ntables = [\"public.orders\"]\n[target.history.columns]\nposition = \"\"\n",
            "target.history[0].columns.position: is empty",
        ),
        (
            "[[target.history]]\ntables = [\"public.*\"]\n[[target.history]]\ntables = [\"public.orders\"]\ntombstones = true\n",
            "target.history[1].tables: public.orders is in an earlier [[target.history]] section already",
        ),
        ("[[target.history]]\ntables = []\n", "target.history[0].tables: names no table"),
    ] {
        let err = parse(&with(history)).expect_err(history);
        assert_eq!(err.to_string(), message, "{history}");
    }
}
