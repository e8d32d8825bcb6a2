//! `tidemark check`: the config, the source, the sink, the cursor store and
//! the target, checked without changing anything.

use super::assemble::{cursor_store, open_sink, transform_problems};
use anyhow::bail;
use std::path::Path;
use tidemark::config::{Config, SecretUrl, SinkConfig, SourceSettings};
use tidemark::ops::Health;
use tidemark::target::types::Engine;
use tidemark_connectors::mysql;
use tidemark_connectors::poll::PollSource;
use tidemark_connectors::postgres;

pub(crate) async fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // Links that cross the network without the server's identity checked.
    let mut urls: Vec<(&str, &SecretUrl)> = vec![("source.url", config.source_url())];
    if let Some(target) = &config.target {
        urls.push(("target.url", &target.url));
    }
    for (key, url) in urls {
        let warning = if url.engine() == Some(Engine::Mysql) {
            mysql::tls::parse(url.expose())
                .ok()
                .and_then(|u| u.identity_unchecked())
        } else {
            postgres::tls::parse(url.expose())
                .ok()
                .and_then(|u| u.identity_unchecked())
        };
        if let Some(warning) = warning {
            tracing::warn!("{key}: {warning}");
        }
    }
    let problems = match config.connector_config(None, None) {
        SourceSettings::Postgres(pg) => postgres::check(&pg).await?,
        SourceSettings::Mysql(my) => mysql::check(&my).await?,
        // Opening a poll source checks every table and column without writing.
        SourceSettings::Poll(poll) => {
            let (_handle, control) = tidemark_connectors::control();
            PollSource::open(poll, None, None, control).await?;
            Vec::new()
        }
    };
    let mut problems = problems;
    problems.extend(transform_problems(&config).await?);
    problems.extend(super::history::history_problems(&config).await?);
    // The sink and the cursor store must be usable (a Kinesis stream must
    // exist, a sink folder be writable), the cursor be of this source's kind,
    // and a [target] answer and let the user write.
    match &config.sink {
        SinkConfig::Kinesis { .. } => {
            open_sink(&config, "check", &Health::new()).await?;
        }
        SinkConfig::File { path, .. } => {
            if let Err(problem) = tidemark::sinks::probe_folder(path) {
                problems.push(problem);
            }
        }
        _ => {}
    }
    if let Some(stored) = cursor_store(&config, &Health::new())
        .await?
        .describe()
        .await?
    {
        let kind = stored["position"]
            .as_object()
            .and_then(|p| p.keys().next().cloned());
        let expected = config.source_kind();
        if let Some(kind) = kind.filter(|k| k != expected) {
            problems.push(format!(
                "cursor: it holds a {kind} position, but the source is {expected}: point the config at the cursor's source, or start over with `tidemark cursor reset`"
            ));
        }
    }
    if let Some(target) = &config.target {
        problems.extend(tidemark::apply::check::problems(target).await?);
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    println!("ok: {} is ready for capture", config.pipeline.name);
    Ok(())
}
