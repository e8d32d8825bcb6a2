//! Building the library's parts from the config: the sink, the cursor store,
//! the source's identity, the target and the retention watch. One place, for `run`, `apply`, `check` and `cursor`.

use anyhow::bail;
use tidemark::aws::clients::{dynamodb_client, kinesis_client};
use tidemark::config::{
    Config, CursorConfig, OversizedPolicy, SinkConfig, SourceConfig, SourceSettings,
};
use tidemark::cursor::{CursorStore, DynamoCursor, FileCursor};
use tidemark::ops::retention::Watch;
use tidemark::ops::Health;
use tidemark::sinks::{AnySink, FileSink, KinesisSink, Oversized, StdoutSink};
use tidemark::target::Target;

/// Where a pipeline writes: the configured sink and cursor store (`run`), or
/// the target database for both (`apply` with `input = "source"`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Capture,
    Apply,
}

/// The configured target, connected.
pub(crate) async fn connect_target(config: &Config) -> anyhow::Result<Target> {
    let Some(target) = &config.target else {
        bail!("target: the config has no [target] section");
    };
    Ok(tidemark::apply::open_target(target).await?)
}

/// What the retention watch looks at, for log-based sources.
pub(crate) fn retention_watch(config: &Config) -> Option<Watch> {
    match &config.source {
        SourceConfig::Postgres(pg) => Some(Watch::Postgres {
            url: pg.url.expose().to_string(),
            slot: pg.slot.clone(),
            max_retained_bytes: config.retention.max_retained_bytes,
        }),
        SourceConfig::Mysql(my) => Some(Watch::Mysql {
            url: my.url.expose().to_string(),
            warn_before_purge: config.retention.warn_before_purge,
        }),
        SourceConfig::Poll(_) => None,
    }
}

pub(crate) async fn cursor_store(config: &Config, health: &Health) -> anyhow::Result<CursorStore> {
    Ok(match &config.cursor {
        CursorConfig::File { path } => {
            CursorStore::File(FileCursor::new(path, &config.pipeline.name))
        }
        CursorConfig::Dynamodb {
            table,
            lease_duration,
            region,
            endpoint,
        } => CursorStore::Dynamo(Box::new(DynamoCursor::new(
            dynamodb_client(region, endpoint).await?,
            table,
            &config.pipeline.name,
            *lease_duration,
            health.clone(),
        ))),
    })
}

/// Which source the config names (see `CursorStore::bind_source`).
pub(crate) async fn source_identity(
    config: &Config,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: &Option<(String, u64)>,
) -> anyhow::Result<String> {
    let identity = match config.connector_config(stop_at_lsn, stop_at_binlog.clone()) {
        SourceSettings::Postgres(pg) => tidemark_connectors::postgres::source_identity(&pg).await?,
        SourceSettings::Mysql(my) => tidemark_connectors::mysql::source_identity(&my).await?,
        SourceSettings::Poll(poll) => tidemark_connectors::poll::source_identity(&poll),
    };
    Ok(identity)
}

/// Opens the configured sink; `writer` names the source and cursor lineage
/// the file sink records beside its files.
pub(crate) async fn open_sink(
    config: &Config,
    writer: &str,
    health: &Health,
) -> anyhow::Result<AnySink> {
    Ok(match &config.sink {
        SinkConfig::File {
            path,
            max_file_bytes,
        } => AnySink::File(FileSink::open(path, *max_file_bytes, writer)?),
        SinkConfig::Stdout => AnySink::Stdout(StdoutSink::new()),
        SinkConfig::Kinesis {
            stream,
            region,
            endpoint,
            max_record_bytes,
            oversized,
            aggregate,
        } => {
            let sink = KinesisSink::new(
                kinesis_client(region, endpoint).await?,
                stream,
                *max_record_bytes,
                match oversized {
                    OversizedPolicy::Fail => Oversized::Fail,
                    OversizedPolicy::SkipAndCount => Oversized::SkipAndCount,
                },
                *aggregate,
                health.clone(),
            );
            sink.check().await?;
            AnySink::Kinesis(Box::new(sink))
        }
    })
}

/// What does not fit between `[[transform]]` and the source's tables (a
/// named column missing, a technique the column's type cannot take), one
/// line each; nothing is read when there are no transforms.
pub(crate) async fn transform_problems(config: &Config) -> anyhow::Result<Vec<String>> {
    if config.transforms.is_empty() {
        return Ok(Vec::new());
    }
    let tables = config.source_tables();
    let columns =
        tidemark_connectors::columns::table_columns(config.source_url().expose(), &tables).await?;
    Ok(tables
        .iter()
        .zip(&columns)
        .flat_map(|((schema, table), columns)| config.transforms.problems(schema, table, columns))
        .collect())
}
