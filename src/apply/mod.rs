//! `tidemark apply`: reading change events from an input (the file sink's
//! directory or a Kinesis stream) and writing them into a target database
//! (see `target`), and what `check` asks of a target.

pub mod check;
pub mod inputs;

use crate::config::TargetConfig;
use crate::target::{TableMap, Target, TargetError};

/// Connects the configured `[target]`.
pub async fn open_target(config: &TargetConfig) -> Result<Target, TargetError> {
    let map = TableMap {
        names: config.tables.clone(),
        history: config.histories.clone(),
        ..TableMap::default()
    };
    Target::connect(
        config.engine.engine(),
        config.url.expose(),
        map,
        config.schema_changes,
    )
    .await
}
