//! Database migrations with offset-tracked cutover (`tidemark migrate`).
//!
//! `run` records the source position (creates the slot / reads the binlog
//! end), creates the target tables, copies every table in key-range chunks in
//! parallel ([`copy`]), then applies the changes from the recorded position on
//! ([`crate::apply`]) until cut over. The chunks are read after the recorded
//! position, each in a transaction of its own, and the catch-up replays every
//! change since that position over them: applied as upserts and deletes, the
//! replay brings each row to its latest state, whatever moment its chunk saw.
//! That is what lets a killed `run` resume with the chunks it has not finished
//! and no long-lived snapshot. The state lives on the target, in
//! `tidemark_migration` (one JSON document per migration, written as chunks
//! finish) and `tidemark_applied` (position and cursor, with the rows).
//! [`cutover`] and [`verify`] are the operator's side.

mod copy;
pub mod cutover;
pub mod db;
pub mod verify;

use crate::config::{Config, SourceSettings};
use crate::cursor::target::TargetCursor;
use crate::cursor::CursorStore;
use crate::ops::stop::StopSignal;
use crate::ops::Health;
use crate::pipeline::assembly::Assembly;
use crate::pipeline::{self, AnySource};
use crate::sinks::target::TargetSink;
use crate::sinks::AnySink;
use crate::target::plan::TableKey;
use crate::target::types::Engine;
use crate::target::{TableMap, Target, TargetError};
use db::Db;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tidemark_connectors::event::now_ms;
use tidemark_connectors::mysql::MysqlSource;
use tidemark_connectors::postgres::{self, PostgresSource};
use tidemark_connectors::{Position, SourceError};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Db(String),
    #[error(transparent)]
    Apply(#[from] TargetError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    #[error("{0}")]
    State(String),
    /// A database went away (closed, refused, shutting down): a reconnect
    /// may cure it.
    #[error("{0}")]
    Unavailable(String),
}

impl MigrateError {
    /// True for failures a new attempt may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            MigrateError::Unavailable(_) => true,
            MigrateError::Apply(e) => e.is_transient(),
            MigrateError::Source(e) => e.is_retryable(),
            MigrateError::Pipeline(pipeline::PipelineError::Source(e)) => e.is_retryable(),
            MigrateError::Pipeline(pipeline::PipelineError::Sink(
                crate::sinks::SinkError::Target(e),
            )) => e.is_transient(),
            MigrateError::Pipeline(pipeline::PipelineError::Cursor(e)) => e.is_transient(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Copy,
    CatchUp,
    CutOver,
}

/// One table's copy: its names and its chunks (key ranges ending at `bounds`,
/// then one open-ended chunk).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableCopy {
    /// `schema.table` on the source, and on the target.
    pub source: (String, String),
    pub target: (String, String),
    pub bounds: Vec<Vec<String>>,
    pub done: Vec<bool>,
    pub rows_copied: u64,
}

impl TableCopy {
    /// The key range of chunk `i`: `(lo, hi]`.
    pub fn chunk(&self, i: usize) -> (Option<Vec<String>>, Option<Vec<String>>) {
        (
            i.checked_sub(1).and_then(|p| self.bounds.get(p).cloned()),
            self.bounds.get(i).cloned(),
        )
    }
}

/// The migration's state document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub stage: Stage,
    /// Where the changes to apply begin (the slot's start, the binlog end).
    pub start: Position,
    pub started_at_ms: i64,
    pub tables: Vec<TableCopy>,
    #[serde(default)]
    pub copy_finished_at_ms: Option<i64>,
}

/// What the running catch-up reports every second (a document of its own, so
/// it never overwrites what `cutover` writes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CatchUpProgress {
    pub applied_position: String,
    pub lag_seconds: f64,
    pub events_read: u64,
    pub events_written: u64,
    pub updated_at_ms: i64,
}

fn status_name(name: &str) -> String {
    format!("{name}:progress")
}

/// What a migration needs from the config.
pub struct Migration {
    pub name: String,
    pub source_url: String,
    pub target_url: String,
    pub map: TableMap,
    pub connector: &'static str,
    /// Source `(schema, table)` pairs.
    pub tables: Vec<(String, String)>,
    pub parallelism: usize,
    pub chunk_rows: usize,
}

impl Migration {
    pub fn from_config(config: &Config) -> Result<Migration, MigrateError> {
        // The copy moves rows as they are; masking half a migration would
        // leave raw values in the copied part.
        if !config.transforms.is_empty() {
            return Err(MigrateError::Config(
                "transform: migrate copies tables as they are and does not apply [[transform]]; remove it, or use `run` with a target".into(),
            ));
        }
        let target = config.target.as_ref().ok_or_else(|| {
            MigrateError::Config("target: the config has no [target] section".into())
        })?;
        if !target.histories.is_empty() {
            return Err(MigrateError::Config(
                "target.history: migrate copies tables as they are and keeps no history; remove [[target.history]], or use `apply`".into(),
            ));
        }
        let (connector, source_url, tables) = match config.connector_config(None, None) {
            SourceSettings::Postgres(pg) => {
                let tables = pg
                    .tables
                    .iter()
                    .map(|t| (t.schema.to_string(), t.table.to_string()))
                    .collect();
                ("postgres", pg.url, tables)
            }
            SourceSettings::Mysql(my) => ("mysql", my.url, my.tables),
            SourceSettings::Poll(_) => {
                return Err(MigrateError::Config(
                    "source.type = \"poll\" cannot drive a migration (it sees no deletes in order); use postgres or mysql".into(),
                ))
            }
        };
        Ok(Migration {
            name: config.pipeline.name.clone(),
            source_url,
            target_url: target.url.expose().to_string(),
            map: TableMap {
                names: target.tables.clone(),
                ..TableMap::default()
            },
            connector,
            tables,
            parallelism: config.migrate.parallelism,
            chunk_rows: config.migrate.chunk_rows,
        })
    }

    /// The target `(schema, table)` of a source table.
    pub(crate) fn target_of(
        &self,
        (schema, table): &(String, String),
        default_schema: &str,
    ) -> (String, String) {
        let engine = Engine::of_url(&self.target_url).unwrap_or(Engine::Postgres);
        let map = self.map.clone().for_target(engine, default_schema);
        map.resolve(&TableKey {
            connector: self.connector,
            schema: schema.as_str().into(),
            table: table.as_str().into(),
        })
    }

    async fn target(&self, config: &Config) -> Result<Target, MigrateError> {
        let target = config
            .target
            .as_ref()
            .ok_or_else(|| MigrateError::Config("no [target]".into()))?;
        Ok(Target::connect(
            target.engine.engine(),
            target.url.expose(),
            self.map.clone(),
            target.schema_changes,
        )
        .await?)
    }
}

pub async fn load(db: &mut Db, name: &str) -> Result<Option<Document>, MigrateError> {
    // Two processes creating the tables at once: one of them fails; once is enough.
    if db.ensure_documents().await.is_err() {
        db.ensure_documents().await?;
    }
    match db.load_document(name).await? {
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            MigrateError::State(format!("tidemark_migration {name}: unreadable ({e})"))
        }),
        None => Ok(None),
    }
}

pub(crate) async fn save(db: &mut Db, name: &str, document: &Document) -> Result<(), MigrateError> {
    let text = serde_json::to_string(document).map_err(|e| MigrateError::State(e.to_string()))?;
    db.save_document(name, &text).await
}

pub(crate) async fn load_progress(
    db: &mut Db,
    name: &str,
) -> Result<Option<CatchUpProgress>, MigrateError> {
    Ok(db
        .load_document(&status_name(name))
        .await?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

/// `migrate run`: sets up or resumes the migration, copies, then applies
/// changes until `stop` or until `cutover` marks it cut over.
pub async fn run(
    config: &Config,
    stop: watch::Receiver<bool>,
    health: &Health,
) -> Result<(), MigrateError> {
    let plan = Migration::from_config(config)?;
    let mut target_db = Db::connect(&plan.target_url).await?;
    let mut document = match load(&mut target_db, &plan.name).await? {
        Some(document) => {
            tracing::info!(
                "resuming migration {} at stage {:?} (changes from {})",
                plan.name,
                document.stage,
                document.start
            );
            document
        }
        None => start(config, &plan, &mut target_db).await?,
    };
    if document.stage == Stage::Copy {
        copy::copy_all(config, &plan, &mut document, &mut target_db, stop.clone()).await?;
        if *stop.borrow() {
            return Ok(());
        }
        let mut source_db = Db::connect(&plan.source_url).await?;
        for table in &document.tables {
            if let Some(source) = source_db.describe(&table.source.0, &table.source.1).await? {
                target_db
                    .create_indexes(&source, &table.target.0, &table.target.1)
                    .await?;
            }
        }
        document.stage = Stage::CatchUp;
        document.copy_finished_at_ms = Some(now_ms());
        save(&mut target_db, &plan.name, &document).await?;
        tracing::info!("copy complete; applying changes from {}", document.start);
    }
    if document.stage == Stage::CutOver {
        tracing::info!("migration {} is cut over: nothing to do", plan.name);
        return Ok(());
    }
    catch_up(config, &plan, &document, target_db, stop, health).await
}

/// A new migration: records the start position, creates the target tables,
/// plans the chunks.
async fn start(
    config: &Config,
    plan: &Migration,
    target_db: &mut Db,
) -> Result<Document, MigrateError> {
    let mut source_db = Db::connect(&plan.source_url).await?;
    let default_schema = target_db.current_schema().await?;
    // Tables first: a missing source table fails before a slot exists.
    let mut described = Vec::new();
    for table in &plan.tables {
        let source = source_db
            .describe(&table.0, &table.1)
            .await?
            .ok_or_else(|| {
                MigrateError::Config(format!(
                    "source.tables: {}.{} does not exist",
                    table.0, table.1
                ))
            })?;
        if source.key.is_empty() {
            return Err(MigrateError::Config(format!(
                "source.tables: {}.{} has no primary key: it cannot be copied in chunks or applied idempotently",
                table.0, table.1
            )));
        }
        described.push(source);
    }
    let start = match config.connector_config(None, None) {
        SourceSettings::Postgres(mut pg) => {
            pg.snapshot = false;
            postgres::create_slot(&pg).await?
        }
        SourceSettings::Mysql(my) => tidemark_connectors::mysql::current_position(&my).await?,
        // Refused by `Migration::from_config` already.
        SourceSettings::Poll(_) => return Err(MigrateError::Config("source".into())),
    };
    tracing::info!("migration {}: changes are applied from {start}", plan.name);
    let mut tables = Vec::new();
    for source in described {
        let names = (source.schema.clone(), source.name.clone());
        let target = plan.target_of(&names, &default_schema);
        if target_db.describe(&target.0, &target.1).await?.is_none() {
            target_db
                .create_table(source_db.engine(), &source, &target.0, &target.1)
                .await?;
        }
        let bounds = source_db.chunk_bounds(&source, plan.chunk_rows).await?;
        tables.push(TableCopy {
            source: names,
            target,
            done: vec![false; bounds.len() + 1],
            bounds,
            rows_copied: 0,
        });
    }
    let document = Document {
        stage: Stage::Copy,
        start: start.clone(),
        started_at_ms: now_ms(),
        tables,
        copy_finished_at_ms: None,
    };
    // The stream resumes at the recorded start.
    let mut cursor = TargetCursor {
        target: plan.target(config).await?,
        scope: plan.name.clone(),
    };
    cursor.target.forget(&plan.name).await?;
    cursor.commit(&start).await?;
    save(target_db, &plan.name, &document).await?;
    Ok(document)
}

/// Applies changes from the cursor on, reporting progress every second, until
/// stopped or cut over.
async fn catch_up(
    config: &Config,
    plan: &Migration,
    document: &Document,
    target_db: Db,
    stop: watch::Receiver<bool>,
    health: &Health,
) -> Result<(), MigrateError> {
    let (handle, control) = tidemark_connectors::control();
    let mut cursor = CursorStore::Target(Box::new(TargetCursor {
        target: plan.target(config).await?,
        scope: plan.name.clone(),
    }));
    let resume = cursor
        .load()
        .await
        .map_err(|e| MigrateError::State(e.to_string()))?;
    let resume =
        pipeline::assembly::resume_point(&handle, resume, Some(document.start.clone()), health)
            .unwrap_or_else(|| document.start.clone());
    let source = match config.connector_config(None, None) {
        SourceSettings::Postgres(mut pg) => {
            pg.snapshot = false;
            AnySource::Postgres(Box::new(
                PostgresSource::open(pg, Some(resume), control).await?,
            ))
        }
        SourceSettings::Mysql(mut my) => {
            my.snapshot = false;
            AnySource::Mysql(Box::new(
                MysqlSource::open(my, Some(resume), control).await?,
            ))
        }
        // Refused by `Migration::from_config` already.
        SourceSettings::Poll(_) => return Err(MigrateError::Config("source".into())),
    };
    health.set_phase(crate::ops::Phase::Streaming);
    let mut sink = AnySink::Target(Box::new(
        TargetSink::open(plan.target(config).await?, &plan.name).await?,
    ));
    // Progress every second; a cutover (or SIGTERM) stops the stream.
    let reporter = tokio::spawn(report_progress(
        target_db,
        plan.name.clone(),
        stop,
        handle.stop.clone(),
        health.clone(),
    ));
    let stop = StopSignal::new(handle.stop.clone());
    let assembly = Assembly {
        sink: &mut sink,
        cursor: &mut cursor,
        handle: &handle,
        stop: &stop,
        commit_every: config.pipeline.commit_interval,
        health,
        transforms: Default::default(),
    };
    let summary = assembly.run(source, None, AnySink::report).await;
    reporter.abort();
    summary?;
    Ok(())
}

/// Saves the catch-up's progress every second (and when told to stop), and
/// stops the stream once the migration was cut over (or on SIGTERM).
async fn report_progress(
    mut target_db: Db,
    name: String,
    mut stop: watch::Receiver<bool>,
    stopper: watch::Sender<bool>,
    health: Health,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        let h = &health;
        let progress = CatchUpProgress {
            applied_position: h.position(),
            lag_seconds: h.lag().as_secs_f64(),
            events_read: h.events_read(),
            events_written: h.events_written(),
            updated_at_ms: now_ms(),
        };
        if let Ok(text) = serde_json::to_string(&progress) {
            if let Err(e) = target_db.save_document(&status_name(&name), &text).await {
                tracing::warn!("migration progress not saved: {e}");
            }
        }
        let cut_over =
            matches!(load(&mut target_db, &name).await, Ok(Some(d)) if d.stage == Stage::CutOver);
        if cut_over {
            tracing::info!("migration {name} was cut over: stopping");
        }
        if cut_over || *stop.borrow() {
            stopper.send_replace(true);
            return;
        }
    }
}

/// `migrate status`: the stage, per-table copy progress, lag and positions.
pub async fn status(config: &Config) -> Result<String, MigrateError> {
    let plan = Migration::from_config(config)?;
    let mut db = Db::connect(&plan.target_url).await?;
    let Some(document) = load(&mut db, &plan.name).await? else {
        return Ok(format!("migration {}: not started\n", plan.name));
    };
    let mut out = format!(
        "migration {}: stage {}\nchanges applied from: {}\n",
        plan.name,
        match document.stage {
            Stage::Copy => "copy",
            Stage::CatchUp => "catch-up",
            Stage::CutOver => "cut over",
        },
        document.start
    );
    for table in &document.tables {
        out.push_str(&format!(
            "table {}.{} -> {}.{}: {}/{} chunks copied, {} rows\n",
            table.source.0,
            table.source.1,
            table.target.0,
            table.target.1,
            table.done.iter().filter(|d| **d).count(),
            table.done.len(),
            table.rows_copied
        ));
    }
    if let Some(p) = load_progress(&mut db, &plan.name).await? {
        out.push_str(&format!(
            "catch-up: applied up to {}; lag {:.1}s; {} events read, {} applied, {} in flight; reported {:.1}s ago\n",
            p.applied_position,
            p.lag_seconds,
            p.events_read,
            p.events_written,
            p.events_read.saturating_sub(p.events_written),
            (now_ms() - p.updated_at_ms) as f64 / 1000.0
        ));
    }
    Ok(out)
}
