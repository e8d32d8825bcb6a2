//! `tidemark migrate run|status|cutover|verify`.

use super::reconnect::keep_trying;
use super::signals::stop_on_signals;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use tidemark::config::{parse_duration, Config};
use tidemark::migrate;
use tidemark::ops::Health;

/// Starts or resumes the migration.
pub(crate) async fn run(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let health = Health::new();
    let stop = stop_on_signals(&health)?;
    let name = config.pipeline.name.clone();
    // Both ends must answer once; after that a lost source or target
    // is reconnected, and the migration resumes from its recorded
    // stage, as a restart would.
    let plan = migrate::Migration::from_config(&config)?;
    migrate::db::Db::connect(&plan.source_url)
        .await
        .with_context(|| format!("migration {name}: source"))?;
    migrate::db::Db::connect(&plan.target_url)
        .await
        .with_context(|| format!("migration {name}: target"))?;
    keep_trying(&stop, &health, |stop| {
        let (config, name, health) = (&config, &name, &health);
        async move {
            migrate::run(config, stop, health)
                .await
                .with_context(|| format!("migration {name}"))
        }
    })
    .await?;
    Ok(())
}

/// Prints the stage, copy progress, lag and the recorded start position.
pub(crate) async fn status(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    print!("{}", migrate::status(&config).await?);
    Ok(())
}

/// Cuts over the running migration; fails unless verified.
pub(crate) async fn cutover(
    config: &Path,
    max_lag: &str,
    fence: bool,
    postpone_flag: Option<PathBuf>,
    timeout: &str,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let options = migrate::cutover::Options {
        max_lag: parse_duration(max_lag).context("--max-lag: not a duration like 5s")?,
        fence,
        postpone_flag,
        timeout: parse_duration(timeout).context("--timeout: not a duration like 10m")?,
    };
    let (record, verified) = migrate::cutover::cutover(&config, &options).await?;
    println!("{}", serde_json::to_string_pretty(&record)?);
    if !verified {
        bail!("cut over at {}, but verification found differences (see the record above and `tidemark migrate verify`)", record["final_position"]);
    }
    Ok(())
}

/// Compares counts and checksums of every table; fails on a difference.
pub(crate) async fn verify(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let plan = migrate::Migration::from_config(&config)?;
    let reports = migrate::verify::verify(&plan).await?;
    for report in &reports {
        println!("{}", report.line());
    }
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.equal())
        .map(|r| r.source.clone())
        .collect();
    if !bad.is_empty() {
        bail!("verify: {} differ: {}", bad.len(), bad.join(", "));
    }
    Ok(())
}
