//! The TOML configuration: parsing (with `${VAR}` from the environment), defaults,
//! and validation that names the key at fault. Every key is documented in
//! `config/README.md`.
//!
//! A file is read into private "raw" sections as written (durations and
//! modes as text), and each section turns its raw form into the public typed
//! one next to its struct (`service`, `source`, `sink`, `cursor`, `target`),
//! so everything past [`Config::load`] reads `Duration`s and enums that were
//! checked once, with the key named on a fault.

mod cursor;
mod service;
mod sink;
mod source;
mod target;
#[cfg(test)]
mod tests;
mod transform;
mod values;

pub use cursor::CursorConfig;
pub use service::{HttpConfig, LogConfig, PipelineConfig, RetentionConfig};
pub use sink::{OversizedPolicy, SinkConfig};
pub use source::{
    DeleteDetection, Heartbeat, MysqlSection, PollSection, PollTableSection, PostgresSection,
    SnapshotMode, SourceConfig, SourceSettings,
};
pub use target::{ApplyConfig, ApplyInput, MigrateConfig, TargetConfig, TargetEngine};
pub use values::{bounds, parse_duration, SecretUrl};

use crate::transform::keys::KeyRing;
use crate::transform::Transforms;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: environment variable {var} is not set")]
    MissingEnv {
        path: String,
        line: usize,
        var: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug)]
pub struct Config {
    pub pipeline: PipelineConfig,
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub cursor: CursorConfig,
    pub http: HttpConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
    /// Where `tidemark apply` and `tidemark migrate` write.
    pub target: Option<TargetConfig>,
    pub apply: ApplyConfig,
    pub migrate: MigrateConfig,
    /// `[keys]`: masking keys by id (for `decrypt` and `detokenize` too).
    pub keys: KeyRing,
    /// `[[transform]]`, compiled.
    pub transforms: Arc<Transforms>,
}

/// The file as written. Its serde name stays `Config`, so that a serde error
/// reads as it did before the typed sections.
#[derive(Deserialize)]
#[serde(rename = "Config", deny_unknown_fields)]
struct RawConfig {
    pipeline: service::RawPipeline,
    source: source::RawSource,
    #[serde(default)]
    sink: SinkConfig,
    #[serde(default)]
    cursor: cursor::RawCursor,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    retention: service::RawRetention,
    #[serde(default)]
    log: LogConfig,
    target: Option<TargetConfig>,
    #[serde(default)]
    apply: ApplyConfig,
    #[serde(default)]
    migrate: MigrateConfig,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    #[serde(default, rename = "transform")]
    transforms: Vec<transform::RawTransform>,
}

impl Config {
    /// Reads, expands `${VAR}`, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let (expanded, substituted) = expand_env(&text, &shown)?;
        let raw: RawConfig = toml::from_str(&expanded).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            line: unknown_key_line(&expanded, e.message())
                .or_else(|| e.span().map(|s| line_of(&expanded, s.start)))
                .unwrap_or(0),
            message: redact(&e.message().replace('\n', " "), &substituted),
        })?;
        Config::from_raw(raw).map_err(|e| match e {
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key,
                message: redact(&message, &substituted),
            },
            other => other,
        })
    }

    /// Checks what the types cannot (names, ranges, table names) and parses
    /// durations and modes, section by section, in the order the first fault
    /// has always been reported in.
    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let pipeline = PipelineConfig::parse(raw.pipeline)?;
        if let Some(target) = &raw.target {
            target.validate()?;
        }
        raw.migrate.validate()?;
        let source = SourceConfig::parse(raw.source)?;
        raw.http.validate()?;
        let retention = RetentionConfig::parse(raw.retention)?;
        raw.log.validate()?;
        raw.sink.validate()?;
        let cursor = CursorConfig::parse(raw.cursor)?;
        let (keys, transforms) = transform::parse(&raw.keys, raw.transforms)?;
        let mut target = raw.target;
        if let Some(target) = &mut target {
            target.resolve_histories(&source.tables())?;
        }
        Ok(Config {
            pipeline,
            source,
            sink: raw.sink,
            cursor,
            http: raw.http,
            retention,
            log: raw.log,
            target,
            apply: raw.apply,
            migrate: raw.migrate,
            keys,
            transforms,
        })
    }

    /// The source's connection URL.
    pub fn source_url(&self) -> &SecretUrl {
        match &self.source {
            SourceConfig::Postgres(pg) => &pg.url,
            SourceConfig::Mysql(my) => &my.url,
            SourceConfig::Poll(poll) => &poll.url,
        }
    }

    /// The source's tables as `(schema, table)`; MySQL's schema is its database.
    pub fn source_tables(&self) -> Vec<(String, String)> {
        self.source.tables()
    }

    /// The source's kind as positions name it: `postgres`, `mysql` or `poll`.
    pub fn source_kind(&self) -> &'static str {
        match &self.source {
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
            SourceConfig::Poll(_) => "poll",
        }
    }

    /// The connector's view of `[source]`, whichever kind it is. `stop_at_lsn`
    /// (Postgres) and `stop_at_binlog` (MySQL) end a bounded run; the other
    /// kinds leave them.
    pub fn connector_config(
        &self,
        stop_at_lsn: Option<u64>,
        stop_at_binlog: Option<(String, u64)>,
    ) -> SourceSettings {
        let name = &self.pipeline.name;
        let max_batch_events = self.pipeline.max_batch_events;
        match &self.source {
            SourceConfig::Postgres(pg) => {
                SourceSettings::Postgres(pg.connector(name, max_batch_events, stop_at_lsn))
            }
            SourceConfig::Mysql(my) => {
                SourceSettings::Mysql(my.connector(name, max_batch_events, stop_at_binlog))
            }
            SourceConfig::Poll(poll) => {
                SourceSettings::Poll(poll.connector(name, self.cursor.poll_state_dir()))
            }
        }
    }
}

/// systemd's `StateDirectory` when run as a unit, else `./tidemark-state`.
fn state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tidemark-state"))
}

/// Inside tagged sections toml reports the section's span for an unknown key;
/// point at the key's own line instead.
fn unknown_key_line(text: &str, message: &str) -> Option<usize> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Shows `${NAME}` where an error would quote a value that came from the
/// environment (secrets come that way). Values under 3 bytes are left: they
/// would blank out digits and words of the message, and are no secrets.
fn redact(message: &str, substituted: &[(String, String)]) -> String {
    let mut out = message.to_string();
    for (name, value) in substituted {
        if value.len() >= 3 {
            out = out.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    out
}

/// Replaces each `${NAME}` with the environment variable's value; returns
/// the text and the (name, value) pairs substituted.
fn expand_env(text: &str, path: &str) -> Result<(String, Vec<(String, String)>), ConfigError> {
    let mut substituted = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let line = line_of(text, text.len() - rest.len() + start);
        let end = after.find('}').ok_or_else(|| ConfigError::Parse {
            path: path.to_string(),
            line,
            message: "unterminated ${...}".into(),
        })?;
        let var = &after[..end];
        let value = std::env::var(var).map_err(|_| ConfigError::MissingEnv {
            path: path.to_string(),
            line,
            var: var.to_string(),
        })?;
        out.push_str(&value);
        substituted.push((var.to_string(), value));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, substituted))
}
