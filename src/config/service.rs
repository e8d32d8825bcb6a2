//! How the daemon itself runs: `[pipeline]` (name, batches, commits),
//! `[http]`, `[retention]` and `[log]`.

use super::values::bounds::{DAY, HOUR, MAX_COUNT};
use super::values::{count, duration};
use super::{invalid, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// `[pipeline]` as written; [`PipelineConfig::parse`] checks it.
#[derive(Deserialize)]
#[serde(rename = "PipelineConfig", deny_unknown_fields)]
pub(super) struct RawPipeline {
    name: String,
    #[serde(default = "default_max_batch_events")]
    max_batch_events: usize,
    #[serde(default = "default_commit_interval")]
    commit_interval: String,
}

fn default_max_batch_events() -> usize {
    1024
}

fn default_commit_interval() -> String {
    "1s".into()
}

#[derive(Debug)]
pub struct PipelineConfig {
    pub name: String,
    /// A batch is handed to the sink at this many events at most.
    pub max_batch_events: usize,
    /// The cursor is committed (after the sink syncs) at most this often while
    /// batches keep coming, once this long has passed since the last commit
    /// when they stop, at the first transaction end of a run, and on stop;
    /// zero (`"0s"`) commits after every batch. A crash replays at most this
    /// much (the file sink drops what it already holds).
    pub commit_interval: Duration,
}

impl PipelineConfig {
    /// The name (it is interpolated into positions, file names and the
    /// replication session), the batch size and the commit interval.
    pub(super) fn parse(raw: RawPipeline) -> Result<PipelineConfig, ConfigError> {
        let name = &raw.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(invalid(
                "pipeline.name",
                format!("{name:?} must be letters, digits, '_', '-' or '.'"),
            ));
        }
        count(
            "pipeline.max_batch_events",
            raw.max_batch_events,
            1,
            MAX_COUNT,
        )?;
        let commit_interval = duration(
            "pipeline.commit_interval",
            &raw.commit_interval,
            Duration::ZERO,
            HOUR,
        )?;
        Ok(PipelineConfig {
            name: raw.name,
            max_batch_events: raw.max_batch_events,
            commit_interval,
        })
    }
}

/// The health, readiness and metrics endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`, or `"off"`. The environment variable `TIDEMARK_HTTP_LISTEN`
    /// overrides it (one port per instance of a templated unit).
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9187".into()
}

impl HttpConfig {
    /// The address to listen on; `None` when turned off. Read when the
    /// endpoint starts, since the environment may override the key.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let listen = std::env::var("TIDEMARK_HTTP_LISTEN").unwrap_or_else(|_| self.listen.clone());
        if listen == "off" {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            invalid(
                "http.listen",
                format!("{listen:?} is not host:port (like 127.0.0.1:9187) or \"off\""),
            )
        })
    }

    /// At load, so a bad address stops the start rather than the endpoint.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.address().map(|_| ())
    }
}

/// `[retention]` as written; [`RetentionConfig::parse`] checks it.
#[derive(Deserialize)]
#[serde(rename = "RetentionConfig", deny_unknown_fields)]
pub(super) struct RawRetention {
    #[serde(default = "default_check_interval")]
    check_interval: String,
    #[serde(default)]
    max_retained_bytes: u64,
    #[serde(default = "default_warn_before_purge")]
    warn_before_purge: String,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            check_interval: default_check_interval(),
            max_retained_bytes: 0,
            warn_before_purge: default_warn_before_purge(),
        }
    }
}

fn default_check_interval() -> String {
    "30s".into()
}

fn default_warn_before_purge() -> String {
    "6h".into()
}

/// Watching the source's log retention, so a lagging cursor is seen before its
/// changes are removed.
#[derive(Debug)]
pub struct RetentionConfig {
    /// How often the slot or the binlogs are checked.
    pub check_interval: Duration,
    /// Postgres: not ready once the slot retains more WAL than this (bytes);
    /// 0 leaves only `max_slot_wal_keep_size` to judge.
    pub max_retained_bytes: u64,
    /// MySQL/MariaDB: not ready once the cursor's binlog may be purged within this.
    pub warn_before_purge: Duration,
}

impl RetentionConfig {
    pub(super) fn parse(raw: RawRetention) -> Result<RetentionConfig, ConfigError> {
        let check_interval = duration(
            "retention.check_interval",
            &raw.check_interval,
            Duration::from_secs(1),
            DAY,
        )?;
        let warn_before_purge = duration(
            "retention.warn_before_purge",
            &raw.warn_before_purge,
            Duration::from_secs(1),
            30 * DAY,
        )?;
        Ok(RetentionConfig {
            check_interval,
            max_retained_bytes: raw.max_retained_bytes,
            warn_before_purge,
        })
    }
}

/// Logging; `level` is read again on SIGHUP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `tidemark=debug,info`. `RUST_LOG`,
    /// when set, wins at start.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

impl LogConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        log_level(&self.level)
    }
}

/// `log.level`: levels or `target=level` directives, comma-separated. A word
/// that is neither (a typo like `wran`) is refused: the filter library takes
/// it for a target name and would silence every line.
fn log_level(text: &str) -> Result<(), ConfigError> {
    let level = |l: &str| {
        ["trace", "debug", "info", "warn", "error", "off"]
            .iter()
            .any(|known| known.eq_ignore_ascii_case(l.trim()))
    };
    let target = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:-.".contains(c))
    };
    let ok = !text.trim().is_empty()
        && text
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((t, l)) => target(t.trim()) && level(l),
                None => level(directive),
            });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "log.level",
            format!(
                "{text:?} is not a level (trace, debug, info, warn, error, off) or target=level directives like info,tidemark=debug"
            ),
        ))
    }
}
