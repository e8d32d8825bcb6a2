//! Logs to stderr (journald picks them up): human-readable by default, JSON
//! lines with `--log-format json`. The level filter can be replaced while
//! running (SIGHUP re-reads `[log] level`).

use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logging at `RUST_LOG`, else `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(QUIET_LIBRARIES_AT_INFO));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
    let _ = FILTER.set(handle);
}

/// The line a command ends with when it fails: `error: …` as text, or a
/// JSON line like every other under `--log-format json` (whatever the level
/// filter says: the reason for an exit is always shown).
pub fn fatal(format: LogFormat, line: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {line}"),
        LogFormat::Json => {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!(target: "tidemark", "{line}");
            });
        }
    }
}

/// The default filter: info, without the Postgres client's NOTICE lines.
const QUIET_LIBRARIES_AT_INFO: &str = "info,tokio_postgres=warn";

/// Replaces the level filter (`info`, `tidemark=debug,warn`), unless `RUST_LOG`
/// is set, which wins.
pub fn set_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    // The server's NOTICEs (`relation ... already exists, skipping`) are not news.
    let quiet = if level.contains("tokio_postgres") {
        level.to_string()
    } else {
        format!("{level},tokio_postgres=warn")
    };
    let filter = EnvFilter::try_new(&quiet).map_err(|e| format!("log.level {level:?}: {e}"))?;
    match FILTER.get() {
        Some(handle) => handle.reload(filter).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}
