//! History tables (`[[target.history]]`) made ready before anything is
//! applied: the ones the target lacks are created with the source table's
//! columns, in the target's types (a masked column as text, a dropped one
//! left out), then the history columns. Only then is the source read, so
//! `apply` from a sink needs no source connection when the tables exist.
//! `check` runs the same checks without creating anything.

use anyhow::{anyhow, bail};
use std::sync::Arc;
use tidemark::config::Config;
use tidemark::migrate::db::Db;
use tidemark::target::history::{HistoryMode, HistoryTableSpec};
use tidemark::target::types::{target_type, Engine};
use tidemark::target::{TableKey, Target};
use tidemark::transform::ColumnOutput;

/// Creates the configured history tables the target lacks; checks the
/// others have the history columns.
pub(crate) async fn prepare_history_tables(
    config: &Config,
    target: &mut Target,
) -> anyhow::Result<()> {
    for missing in missing_tables(config, target).await? {
        let spec = HistoryTableSpec {
            columns: &missing.columns,
            key: &missing.key,
            mode: &missing.mode,
        };
        target.create_history_table(&missing.source, &spec).await?;
        tracing::info!(
            "created the history table of {} on the target",
            missing.source
        );
    }
    Ok(())
}

/// What `check` finds wrong with the history tables, without creating any:
/// a target table without the history columns, a source table that cannot
/// have one (no primary key, a column named like a history column).
pub(crate) async fn history_problems(config: &Config) -> anyhow::Result<Vec<String>> {
    let Some(section) = config.target.as_ref().filter(|t| !t.histories.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut target = tidemark::apply::open_target(section).await?;
    Ok(match missing_tables(config, &mut target).await {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    })
}

/// A history table the target lacks, as the source describes it.
struct MissingTable {
    source: TableKey,
    mode: Arc<HistoryMode>,
    columns: Vec<(String, String)>,
    key: Vec<String>,
}

/// The configured history tables the target lacks, described from the
/// source (which is contacted only when one is missing); an error for a
/// target table without the history columns.
async fn missing_tables(config: &Config, target: &mut Target) -> anyhow::Result<Vec<MissingTable>> {
    let Some(section) = &config.target else {
        return Ok(Vec::new());
    };
    let mut source: Option<Db> = None;
    let mut missing = Vec::new();
    for (schema, table, mode) in section.histories.iter() {
        let source_table = TableKey {
            connector: config.source_kind(),
            schema: schema.into(),
            table: table.into(),
        };
        if target.has_history_table(&source_table, mode).await? {
            continue;
        }
        let db = match &mut source {
            Some(db) => db,
            None => source.insert(Db::connect(config.source_url().expose()).await?),
        };
        let (columns, key) =
            history_columns(config, db, (schema, table), mode, section.engine.engine()).await?;
        missing.push(MissingTable {
            source: source_table,
            mode: mode.clone(),
            columns,
            key,
        });
    }
    Ok(missing)
}

/// The source table's columns as the history table holds them (`name`,
/// target type), and its key.
async fn history_columns(
    config: &Config,
    source: &mut Db,
    (schema, table): (&str, &str),
    mode: &HistoryMode,
    to: Engine,
) -> anyhow::Result<(Vec<(String, String)>, Vec<String>)> {
    let described = source
        .describe(schema, table)
        .await?
        .ok_or_else(|| anyhow!("target.history: source table {schema}.{table} does not exist"))?;
    if described.key.is_empty() {
        bail!("target.history: source table {schema}.{table} has no primary key: its versions cannot be told apart");
    }
    let from = source.engine();
    let mut columns = Vec::new();
    for column in &described.columns {
        if mode.columns.all().contains(&column.name.as_str()) {
            bail!("target.history: source table {schema}.{table} has a column {:?}, which history mode adds too; name the history column otherwise in [target.history.columns]", column.name);
        }
        let key = described.key.contains(&column.name);
        let type_text = match config.transforms.column_output(schema, table, &column.name) {
            ColumnOutput::Dropped => continue,
            ColumnOutput::Same => target_type(from, to, &column.native, key),
            ColumnOutput::Text => match (to, key) {
                (Engine::Postgres, _) => "text".into(),
                (Engine::Mysql, true) => "varchar(255)".into(),
                (Engine::Mysql, false) => "longtext".into(),
            },
        };
        columns.push((column.name.clone(), type_text));
    }
    Ok((columns, described.key))
}
