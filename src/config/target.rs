//! Where `tidemark apply` and `tidemark migrate` write: `[target]`, and the
//! `[apply]` and `[migrate]` options.

use super::values::bounds::{MAX_COUNT, MAX_PARALLELISM};
use super::values::{count, SecretUrl};
use super::{invalid, ConfigError};
use crate::target::types::Engine;
use crate::target::SchemaChanges;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A target database for `apply` and `migrate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[serde(rename = "type")]
    pub engine: TargetEngine,
    pub url: SecretUrl,
    /// `"stop"` (default) or `"apply"`: add and drop columns on `op: "s"` events.
    #[serde(default)]
    pub schema_changes: SchemaChanges,
    /// Source `schema.table` → target `[schema.]table`.
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
}

impl TargetConfig {
    /// The URL's scheme must name the engine `type` says.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.url.engine() != Some(self.engine.engine()) {
            return Err(invalid(
                "target.url",
                format!(
                    "is not a {:?} URL (postgres://... or mysql://...)",
                    self.engine
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetEngine {
    Postgres,
    Mysql,
}

impl TargetEngine {
    pub fn engine(self) -> Engine {
        match self {
            TargetEngine::Postgres => Engine::Postgres,
            TargetEngine::Mysql => Engine::Mysql,
        }
    }
}

/// `tidemark apply` options.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// `"source"`: capture `[source]` in the same process; `"sink"`: read what
    /// `[sink]` holds (the file sink's directory, or the Kinesis stream).
    #[serde(default)]
    pub input: ApplyInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApplyInput {
    #[default]
    Source,
    Sink,
}

/// `tidemark migrate` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateConfig {
    /// Chunks copied at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Rows per copy chunk (and per verify chunk).
    #[serde(default = "default_migrate_chunk_rows")]
    pub chunk_rows: usize,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        MigrateConfig {
            parallelism: default_parallelism(),
            chunk_rows: default_migrate_chunk_rows(),
        }
    }
}

fn default_parallelism() -> usize {
    4
}

fn default_migrate_chunk_rows() -> usize {
    50_000
}

impl MigrateConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        count("migrate.parallelism", self.parallelism, 1, MAX_PARALLELISM)?;
        count("migrate.chunk_rows", self.chunk_rows, 1, MAX_COUNT)
    }
}
