//! `tidemark apply`: from a capture in this process, or from what the sink
//! holds (the file sink's folder, a Kinesis stream).

use super::assemble::{connect_target, Mode};
use super::reconnect::keep_trying;
use super::signals::stop_on_signals;
use anyhow::{bail, Context};
use std::path::Path;
use tidemark::apply::inputs::{files, kinesis};
use tidemark::aws::clients::{dynamodb_client, kinesis_client};
use tidemark::aws::lease::LeaseTable;
use tidemark::config::{ApplyInput, Config, CursorConfig, SinkConfig};
use tidemark::ops::{self, Health, Phase};
use tidemark::sinks::target::TargetSink;

/// `tidemark apply`: from a capture in this process, or from what the sink holds.
pub(crate) async fn apply(path: &Path, until_idle: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let mut target = connect_target(&config).await?;
    super::history::prepare_history_tables(&config, &mut target).await?;
    drop(target);
    if config.apply.input == ApplyInput::Source {
        return super::run::run(path, None, None, Mode::Apply).await;
    }
    let health = Health::new();
    let stop = stop_on_signals(&health)?;
    // Health and metrics as for `run`: the input loops tick, Prometheus
    // shows the shards held and how far behind each is.
    ops::metrics::install();
    if let Some(address) = config.http.address()? {
        ops::http::serve(address, health.clone()).await?;
    }
    health.set_phase(Phase::Streaming);
    match &config.sink {
        // A lost target is reconnected (the target was reached above): the
        // files are read again from the position the target holds.
        SinkConfig::File { path: dir, .. } => {
            from_files(&config, dir, until_idle, (&stop, &health)).await
        }
        SinkConfig::Kinesis {
            stream,
            region,
            endpoint,
            ..
        } => {
            from_kinesis(
                &config,
                stream,
                (region, endpoint),
                until_idle,
                (&stop, &health),
            )
            .await
        }
        SinkConfig::Stdout => {
            bail!("apply.input = \"sink\" reads a file or kinesis [sink], not stdout")
        }
    }
}

/// Applies what the file sink wrote, following its folder.
async fn from_files(
    config: &Config,
    dir: &Path,
    until_idle: bool,
    (stop, health): (&tokio::sync::watch::Receiver<bool>, &Health),
) -> anyhow::Result<()> {
    let attempt = |stop| async move {
        let target = connect_target(config).await?;
        let mut sink = TargetSink::open(target, &config.pipeline.name).await?;
        let lines = files::follow(
            dir,
            &mut sink,
            stop,
            until_idle,
            config.pipeline.max_batch_events,
            health,
        )
        .await
        .with_context(|| format!("apply from {}", dir.display()))?;
        Ok::<_, anyhow::Error>((lines, sink))
    };
    if let Some((lines, sink)) = keep_trying(stop, health, attempt).await? {
        tracing::info!(
            "stopped: {lines} events read, {} applied ({} row writes), {} skipped as already applied; applied position {}",
            sink.events,
            sink.rows,
            sink.skipped,
            sink.applied().unwrap_or("(none)")
        );
    }
    Ok(())
}

/// Applies what a Kinesis stream holds, sharing its shards with other
/// instances through leases in DynamoDB.
async fn from_kinesis(
    config: &Config,
    stream: &String,
    (region, endpoint): (&Option<String>, &Option<String>),
    until_idle: bool,
    (stop, health): (&tokio::sync::watch::Receiver<bool>, &Health),
) -> anyhow::Result<()> {
    if until_idle {
        bail!("--until-idle reads the file sink only: a Kinesis stream has no end (stop with SIGTERM)");
    }
    let CursorConfig::Dynamodb {
        table,
        lease_duration,
        region: dynamo_region,
        endpoint: dynamo_endpoint,
    } = &config.cursor
    else {
        bail!("apply from Kinesis keeps its shard leases in DynamoDB: set [cursor] type = \"dynamodb\"");
    };
    let Some(target) = config.target.clone() else {
        bail!("target: the config has no [target] section");
    };
    let kinesis = kinesis_client(region, endpoint).await?;
    let leases = LeaseTable {
        client: dynamodb_client(dynamo_region, dynamo_endpoint).await?,
        table: table.clone(),
    };
    let lease_duration = *lease_duration;
    // The lease table must answer once (the target did above).
    leases
        .get(&config.pipeline.name)
        .await
        .map_err(|e| anyhow::anyhow!("cursor: {e}"))?;
    // A lost target or lease table is reconnected: the shards are
    // taken again and read from their checkpoints (the target drops
    // what it applied already).
    let attempt = |stop| {
        let input = kinesis::Input {
            kinesis: kinesis.clone(),
            stream: stream.clone(),
            leases: leases.clone(),
            pipeline: config.pipeline.name.clone(),
            lease_duration,
            batch_events: config.pipeline.max_batch_events,
            target: target.clone(),
            health: health.clone(),
        };
        async move {
            kinesis::follow(input, stop)
                .await
                .with_context(|| format!("apply from kinesis stream {stream}"))
        }
    };
    let Some(totals) = keep_trying(stop, health, attempt).await? else {
        return Ok(());
    };
    tracing::info!(
        "stopped: {} events read, {} applied ({} row writes), {} skipped as already applied, {} shards finished",
        totals.events,
        totals.applied,
        totals.rows,
        totals.skipped,
        totals.shards_finished
    );
    Ok(())
}
