//! A target database: connecting to it, writing batches of change events
//! into it, and the `tidemark_applied` bookkeeping. Used by `apply`, by the
//! target-as-sink and target-as-cursor adapters (`sinks::target`,
//! `cursor::target`) and by `migrate`. It knows neither config nor sinks.
//!
//! [`plan`] collapses each batch into upserts and deletes; a writer
//! ([`postgres`], [`mysql`]) writes them in one transaction together with the
//! input's applied position in the `tidemark_applied` table. So a restart
//! resumes exactly where the target is, and an event at or before that
//! position is skipped.
//!
//! What the two writers share is written once: the bookkeeping table's
//! statements per dialect (`bookkeeping`), the batch in its transaction
//! (`batch`), the pieces of their statements (`sql`) and the cache of the
//! target tables they describe (`described`).

mod batch;
mod bookkeeping;
mod described;
pub mod history;
pub(crate) mod mysql;
pub(crate) mod plan;
pub(crate) mod postgres;
mod refusal;
mod sql;
pub mod types;
pub(crate) mod values;

pub use bookkeeping::check_progress;
pub use plan::TableKey;

use plan::{PlanError, Step};
use std::collections::BTreeMap;
use tidemark_connectors::sql::postgres::error_detail;
use tidemark_connectors::{ChangeEvent, PositionKey};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target: cannot {what}: {detail}")]
    Database { what: String, detail: String },
    #[error("target table {table}: {message}")]
    Table { table: String, message: String },
    #[error("target table {table}: column {column} of the row with key {key} (event at {position}) was refused: {message}")]
    Refused {
        table: String,
        column: String,
        key: String,
        position: String,
        message: String,
    },
    #[error("target table {table}: a copied row's key is there already: {detail}")]
    KeyConflict { table: String, detail: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Setup(String),
    /// The target went away (closed, refused, shutting down): a reconnect
    /// may cure it.
    #[error("target: cannot {what}: {detail}")]
    Unavailable { what: String, detail: String },
    #[error("tidemark_applied for {scope} is at {stored}, past this batch's first event at {first}: another apply instance wrote it (this one lost its lease); the batch was rolled back")]
    Superseded {
        scope: String,
        stored: String,
        first: String,
    },
}

impl TargetError {
    /// A failed Postgres call: [`TargetError::Unavailable`] when the target
    /// went away, else [`TargetError::Database`].
    pub fn pg(what: impl Into<String>, e: tokio_postgres::Error) -> TargetError {
        if tidemark_connectors::postgres_transient(&e) {
            TargetError::Unavailable {
                what: what.into(),
                detail: error_detail(&e),
            }
        } else {
            TargetError::Database {
                what: what.into(),
                detail: error_detail(&e),
            }
        }
    }

    /// True for failures a new session may cure.
    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Unavailable { .. })
    }

    pub fn db(what: impl Into<String>) -> impl FnOnce(String) -> TargetError {
        let what = what.into();
        move |detail| TargetError::Database { what, detail }
    }
}

/// What to do with `op: "s"` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchemaChanges {
    /// Stop with a message naming the table and the change.
    #[default]
    Stop,
    /// Add and drop columns on the target.
    Apply,
}

/// Source table → target table names. By default the same table name: in the
/// same schema for Postgres → Postgres, in `public` for MySQL → Postgres, in the
/// target URL's database for a MySQL target.
#[derive(Debug, Clone, Default)]
pub struct TableMap {
    /// `schema.table` (as the events name it) → `[schema.]table` on the target.
    pub names: BTreeMap<String, String>,
    /// The target's default schema (Postgres `public`, MySQL the URL's database).
    pub default_schema: String,
    /// Postgres targets keep a Postgres source's schema.
    pub keep_schema_from: Option<&'static str>,
    /// The source tables kept in history mode (SCD Type 2); the rest are upserted.
    pub history: history::Histories,
}

impl TableMap {
    /// Fills in the target's defaults: its default schema (Postgres `public`,
    /// MySQL the URL's database) unless set, and whether a Postgres source's
    /// schema is kept (Postgres targets only).
    pub(crate) fn for_target(mut self, engine: types::Engine, default_schema: &str) -> TableMap {
        if self.default_schema.is_empty() {
            self.default_schema = default_schema.to_string();
        }
        self.keep_schema_from = (engine == types::Engine::Postgres).then_some("postgres");
        self
    }

    /// The target's `(schema, table)` for a source table.
    pub(crate) fn resolve(&self, table: &TableKey) -> (String, String) {
        let source = table.to_string();
        if let Some(target) = self.names.get(&source) {
            return match target.split_once('.') {
                Some((schema, name)) => (schema.to_string(), name.to_string()),
                None => (self.default_schema.clone(), target.clone()),
            };
        }
        if self.keep_schema_from == Some(table.connector) {
            (table.schema.to_string(), table.table.to_string())
        } else {
            (self.default_schema.clone(), table.table.to_string())
        }
    }
}

/// A target table as the writers need it.
pub(crate) struct TargetTable {
    /// The quoted name: `"schema"."table"` (Postgres), `` `db`.`table` `` (MySQL).
    pub quoted: String,
    /// Column name → (type text, kind).
    pub columns: std::collections::HashMap<String, (String, values::Kind)>,
    pub key: Vec<String>,
}

/// Where an input is, stored with the rows it describes.
#[derive(Debug, Clone)]
pub struct AppliedSpan<'a> {
    /// What the positions order: a source pipeline's name, or a Kinesis shard.
    pub scope: &'a str,
    /// The first and the last position of the batch: the stored position must
    /// be before `first` (else another writer got there first) and becomes `last`.
    pub first: &'a str,
    pub last: &'a str,
}

/// The configured target. The set is fixed, so an enum reads plainer than a trait object.
pub enum Target {
    Postgres(Box<postgres::PgTarget>),
    Mysql(Box<mysql::MyTarget>),
}

impl Target {
    pub async fn connect(
        engine: types::Engine,
        url: &str,
        map: TableMap,
        schema_changes: SchemaChanges,
    ) -> Result<Target, TargetError> {
        Ok(match engine {
            types::Engine::Postgres => Target::Postgres(Box::new(
                postgres::PgTarget::connect(url, map, schema_changes).await?,
            )),
            types::Engine::Mysql => Target::Mysql(Box::new(
                mysql::MyTarget::connect(url, map, schema_changes).await?,
            )),
        })
    }

    /// The applied position and cursor stored for `scope`.
    pub async fn applied(
        &mut self,
        scope: &str,
    ) -> Result<Option<(String, Option<String>)>, TargetError> {
        match self {
            Target::Postgres(t) => t.applied(scope).await,
            Target::Mysql(t) => t.applied(scope).await,
        }
    }

    /// Writes the events (each with its position string) in one transaction,
    /// with `progress` when given. Returns the number of rows written.
    pub async fn apply(
        &mut self,
        events: &[(&ChangeEvent, &str)],
        progress: Option<AppliedSpan<'_>>,
    ) -> Result<u64, TargetError> {
        let steps = self.plan(events)?;
        match self {
            Target::Postgres(t) => t.apply(steps, progress).await,
            Target::Mysql(t) => t.apply(steps, progress).await,
        }
    }

    /// The steps for `events`: tables in history mode get versions, the
    /// others upserts and deletes.
    fn plan(&self, events: &[(&ChangeEvent, &str)]) -> Result<Vec<Step>, PlanError> {
        let histories = &self.map().history;
        if histories.is_empty() {
            return plan::plan(events.iter().copied());
        }
        let mut upserted = Vec::with_capacity(events.len());
        let mut versioned = Vec::new();
        for &(event, position) in events {
            match histories.mode(&event.source.schema, &event.source.table) {
                Some(mode) => versioned.push((event, position, mode)),
                None => upserted.push((event, position)),
            }
        }
        let mut steps = plan::plan(upserted)?;
        steps.extend(plan::versions::plan(versioned)?);
        Ok(steps)
    }

    fn map(&self) -> &TableMap {
        match self {
            Target::Postgres(t) => t.map(),
            Target::Mysql(t) => t.map(),
        }
    }

    /// Whether the target has the history table of `source`; one without
    /// the history columns is an error.
    pub async fn has_history_table(
        &mut self,
        source: &TableKey,
        mode: &history::HistoryMode,
    ) -> Result<bool, TargetError> {
        let (schema, name) = self.map().resolve(source);
        let existing = match self {
            Target::Postgres(t) => postgres::describe(&t.client, &schema, &name).await?,
            Target::Mysql(t) => mysql::describe(&mut t.conn, &schema, &name).await?,
        };
        let Some(existing) = existing else {
            return Ok(false);
        };
        let missing: Vec<&str> = mode
            .columns
            .all()
            .into_iter()
            .filter(|c| !existing.columns.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(TargetError::Table {
                table: existing.quoted,
                message: format!("is configured for history mode (source table {source}) but lacks the history columns {missing:?}: drop it, rename it, or map the source table to another name in [target.tables]"),
            });
        }
        Ok(true)
    }

    /// Creates the history table of `source` (see [`history::create_statements`]).
    pub async fn create_history_table(
        &mut self,
        source: &TableKey,
        spec: &history::HistoryTableSpec<'_>,
    ) -> Result<(), TargetError> {
        let (schema, name) = self.map().resolve(source);
        match self {
            Target::Postgres(t) => t.create_history(&schema, &name, spec).await,
            Target::Mysql(t) => t.create_history(&schema, &name, spec).await,
        }
    }

    /// Stores a source cursor (JSON) beside the applied position.
    pub(crate) async fn save_cursor(
        &mut self,
        scope: &str,
        cursor: &str,
    ) -> Result<(), TargetError> {
        match self {
            Target::Postgres(t) => t.save_cursor(scope, cursor).await,
            Target::Mysql(t) => t.save_cursor(scope, cursor).await,
        }
    }

    /// Makes sure `scope` has a row in `tidemark_applied`, so that the
    /// `SELECT … FOR UPDATE` of every batch finds one to lock: two writers of a
    /// new scope then queue behind each other instead of both passing the check.
    pub(crate) async fn claim(&mut self, scope: &str) -> Result<(), TargetError> {
        match self {
            Target::Postgres(t) => t.claim(scope).await,
            Target::Mysql(t) => t.claim(scope).await,
        }
    }

    /// Forgets the stored position of `scope`.
    pub(crate) async fn forget(&mut self, scope: &str) -> Result<(), TargetError> {
        match self {
            Target::Postgres(t) => t.forget(scope).await,
            Target::Mysql(t) => t.forget(scope).await,
        }
    }
}

/// The DDL that makes a target table (`existing`: its columns) match a
/// schema-change event: columns added and dropped, in the target's types.
/// With `schema_changes = "stop"` any difference is an error naming the table
/// and the change. A history table (`history`) only ever gains columns.
pub(crate) fn schema_ddl(
    existing: &std::collections::HashMap<String, (String, values::Kind)>,
    quoted: &str,
    source: &TableKey,
    event: &ChangeEvent,
    (mode, history): (SchemaChanges, Option<&history::HistoryMode>),
    to: types::Engine,
) -> Result<Vec<String>, TargetError> {
    let columns = event.columns.as_deref().unwrap_or_default();
    let added: Vec<_> = columns
        .iter()
        .filter(|c| !existing.contains_key(&*c.name))
        .collect();
    // A history table keeps a dropped column: older versions hold values in it.
    let dropped: Vec<&String> = existing
        .keys()
        .filter(|name| !columns.iter().any(|c| &*c.name == name.as_str()))
        .filter(|_| history.is_none())
        .collect();
    if mode == SchemaChanges::Stop && !(added.is_empty() && dropped.is_empty()) {
        return Err(TargetError::Table {
            table: quoted.to_string(),
            message: format!(
                "schema change on {source} ({}): add {:?}, drop {:?}; make it on the target and restart, or set target.schema_changes = \"apply\"",
                event.ddl.as_deref().unwrap_or("no statement"),
                added.iter().map(|c| &*c.name).collect::<Vec<_>>(),
                dropped
            ),
        });
    }
    let quote = |name: &str| match to {
        types::Engine::Postgres => tidemark_connectors::sql::postgres::quote_ident(name),
        types::Engine::Mysql => tidemark_connectors::sql::mysql::quote_ident(name),
    };
    let from = if source.connector == "mysql" {
        types::Engine::Mysql
    } else {
        types::Engine::Postgres
    };
    if let Some(c) = added.iter().find(|c| !types::is_type_text(&c.type_name)) {
        return Err(TargetError::Table {
            table: quoted.to_string(),
            message: format!(
                "schema change on {source}: column {:?} has type text {:?}, which is not a type; refused, nothing was changed",
                &*c.name,
                c.type_name
            ),
        });
    }
    let mut ddl: Vec<String> = added
        .iter()
        .map(|c| {
            format!(
                "ALTER TABLE {quoted} ADD COLUMN {} {}",
                quote(&c.name),
                types::target_type(from, to, &c.type_name, c.key)
            )
        })
        .collect();
    ddl.extend(
        dropped
            .iter()
            .map(|name| format!("ALTER TABLE {quoted} DROP COLUMN {}", quote(name))),
    );
    Ok(ddl)
}

/// Keeps the events after `applied`, in position order (see
/// `tidemark_connectors::position`), and names the latest of those kept.
/// Poll positions are not ordered across tables, and a position of another
/// log or an unreadable one is not ordered either: nothing is skipped for
/// them (a repeat, never a loss), and the last one given counts as latest.
/// Each position is parsed once.
pub(crate) fn after_applied<'a>(
    events: &'a [(&'a ChangeEvent, &'a str)],
    applied: Option<&str>,
) -> (Vec<(&'a ChangeEvent, &'a str)>, Option<&'a str>) {
    use std::cmp::Ordering::{Equal, Less};
    let applied = applied.and_then(|a| PositionKey::parse(a).ok().flatten());
    let mut fresh = Vec::with_capacity(events.len());
    let mut latest: Option<(&str, Option<PositionKey>)> = None;
    for &(event, position) in events {
        let key = PositionKey::parse(position).ok().flatten();
        if let (Some(applied), Some(key)) = (&applied, &key) {
            if matches!(key.partial_cmp(applied), Some(Less | Equal)) {
                continue;
            }
        }
        fresh.push((event, position));
        let later = match (&latest, &key) {
            (Some((_, Some(best))), Some(key)) => key.partial_cmp(best) != Some(Less),
            _ => true,
        };
        if later {
            latest = Some((position, key));
        }
    }
    (fresh, latest.map(|(position, _)| position))
}
