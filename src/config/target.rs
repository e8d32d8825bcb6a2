//! Where `tidemark apply` and `tidemark migrate` write: `[target]`, and the
//! `[apply]` and `[migrate]` options.

use super::values::bounds::{MAX_COUNT, MAX_PARALLELISM};
use super::values::{count, SecretUrl};
use super::{invalid, ConfigError};
use crate::target::history::{Histories, HistoryColumns, HistoryMode};
use crate::target::types::Engine;
use crate::target::SchemaChanges;
use crate::transform::glob;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// `[[target.history]]`: source tables kept in history mode (SCD Type 2).
    #[serde(default, rename = "history")]
    pub history_sections: Vec<HistorySection>,
    /// The sections resolved against the source's tables (by `Config::load`).
    #[serde(skip)]
    pub histories: Histories,
}

/// One `[[target.history]]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    /// `schema.table` patterns (`*` and `?` wildcards) among the source's tables.
    pub tables: Vec<String>,
    /// A delete also writes a zero-length version with `op = 'd'`.
    #[serde(default)]
    pub tombstones: bool,
    /// The names of the history columns.
    #[serde(default)]
    pub columns: HistoryColumns,
}

impl TargetConfig {
    /// Resolves `[[target.history]]` against the source's `(schema, table)`
    /// list: every pattern matches a source table, no table is in two
    /// sections, and the five column names are distinct and not empty.
    pub(super) fn resolve_histories(
        &mut self,
        source_tables: &[(String, String)],
    ) -> Result<(), ConfigError> {
        let mut histories = Histories::default();
        for (i, section) in self.history_sections.iter().enumerate() {
            let key = |field: &str| format!("target.history[{i}].{field}");
            let names = section.columns.all();
            if let Some(empty) = names.iter().position(|n| n.is_empty()) {
                let field = ["valid_from", "valid_to", "is_current", "op", "position"][empty];
                return Err(invalid(&key(&format!("columns.{field}")), "is empty"));
            }
            if let Some(twice) = names
                .iter()
                .find(|n| names.iter().filter(|m| m == n).count() > 1)
            {
                return Err(invalid(
                    &key("columns"),
                    format!("names {twice:?} for two history columns"),
                ));
            }
            if section.tables.is_empty() {
                return Err(invalid(&key("tables"), "names no table"));
            }
            let mode = Arc::new(HistoryMode {
                columns: section.columns.clone(),
                tombstones: section.tombstones,
            });
            for pattern in &section.tables {
                let matched: Vec<&(String, String)> = source_tables
                    .iter()
                    .filter(|(schema, table)| glob(pattern, &format!("{schema}.{table}")))
                    .collect();
                if matched.is_empty() {
                    return Err(invalid(
                        &key("tables"),
                        format!("{pattern:?} matches none of the source's tables"),
                    ));
                }
                for (schema, table) in matched {
                    if histories.mode(schema, table).is_some_and(|m| **m != *mode) {
                        return Err(invalid(
                            &key("tables"),
                            format!("{schema}.{table} is in an earlier [[target.history]] section already"),
                        ));
                    }
                    histories.insert(schema, table, mode.clone());
                }
            }
        }
        self.histories = histories;
        Ok(())
    }
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
