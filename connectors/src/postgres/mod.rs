//! PostgreSQL capture: logical decoding with `pgoutput` (protocol version 1).
//!
//! Why `pgwire-replication` carries the stream: `postgres-replication` is not on
//! crates.io; `pg_walstream` 0.10 does not resolve from the registry and 0.9 drops
//! unchanged-TOAST columns from decoded rows, which would turn "not sent" into a
//! missing value we could not tell from an absent column. `pgwire-replication`
//! 0.5 owns only the replication protocol (START_REPLICATION, keepalive replies,
//! standby status updates with the flush LSN we give it, Begin/Commit framing) and
//! hands the row messages over as raw bytes; `pgoutput.rs` decodes those, so the
//! unchanged-TOAST marker and key-only vs full old rows stay exact. It interpolates
//! slot and publication names unquoted, so [`valid_name`] guards them.
//!
//! Flow: [`PostgresSource::open`] checks the server, makes sure the publication
//! and slot exist, and either resumes at the cursor or creates the slot with an
//! exported snapshot and reads the snapshot first. [`PostgresSource::next_batch`]
//! then yields batches that end on transaction boundaries. The slot is told
//! `flush = X` only once the cursor store holds X (via [`SourceControl`]).

pub mod catalog;
pub(crate) mod pgoutput;
pub mod retention;
pub mod snapshot;
mod start;
mod stream;
pub mod table;
pub mod tls;
pub mod values;

pub use table::TableName;

use crate::batcher::Batcher;
use crate::event::{lsn_text, Batch, ChangeEvent, ColumnInfo, Position};
use crate::snapshot_then_stream::{Reading, Step};
use crate::{SourceControl, SourceError};
use catalog::TypeKinds;
use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationConfig};
use snapshot::Snapshot;
use start::Start;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use table::TableSchema;
use tokio::time::Instant;
use tokio_postgres::Client;

/// What the Postgres connector needs to know.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub pipeline: String,
    /// `postgres://user:password@host:port/db`, with the TLS settings of [`tls`].
    pub url: String,
    pub tables: Vec<TableName>,
    pub slot: String,
    pub publication: String,
    /// Read every row first (`snapshot = "initial"`), or stream only.
    pub snapshot: bool,
    pub snapshot_chunk_rows: usize,
    /// A batch is handed on at this many events, even mid-transaction.
    pub max_batch_events: usize,
    /// Stop once a transaction ending at or after this LSN is read (benchmarks,
    /// bounded replays).
    pub stop_at_lsn: Option<u64>,
    /// Write a heartbeat into the WAL this often, so the slot moves on idle or
    /// filtered databases (PostgreSQL 15 sends nothing for transactions that
    /// touch no published table, so without it the slot pins WAL).
    pub heartbeat: Option<Heartbeat>,
}

/// The heartbeat: by default a non-transactional `pg_logical_emit_message` with
/// prefix [`HEARTBEAT_PREFIX`], which reaches the stream at once and becomes a
/// cursor position with no event; or a statement of the user's.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub every: Duration,
    pub statement: Option<String>,
}

pub const HEARTBEAT_PREFIX: &str = "tidemark.heartbeat";

/// Slot and publication names are interpolated into replication commands: keep
/// them to plain lower-case identifiers.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// Parses the connection URL (never echoing it: it may hold a password),
/// with its TLS settings (see [`tls`]).
pub fn parse_url(url: &str) -> Result<tls::PgUrl, SourceError> {
    tls::parse(url).map_err(|e| SourceError::Setup(format!("source.url: {e}")))
}

/// The pre-flight problems `tidemark check` reports; empty when capture can run.
pub async fn check(cfg: &PostgresConfig) -> Result<Vec<String>, SourceError> {
    let client = catalog::connect(&parse_url(&cfg.url)?).await?;
    catalog::problems(&client, &cfg.tables, &cfg.slot, &cfg.publication).await
}

/// Which source this is, for cursors and sinks: the cluster's system
/// identifier (the same on a physical replica, new on a rebuilt cluster), the
/// database and the slot. Holds no credentials.
pub async fn source_identity(cfg: &PostgresConfig) -> Result<String, SourceError> {
    let pg = parse_url(&cfg.url)?;
    let client = catalog::connect(&pg).await?;
    let row = client
        .query_one(
            "SELECT system_identifier::text, current_database()::text FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(|source| SourceError::Postgres {
            what: "read the system identifier".into(),
            source,
        })?;
    let read = |i: usize| -> Result<String, SourceError> {
        row.try_get::<_, String>(i)
            .map_err(|source| SourceError::Postgres {
                what: "read the system identifier".into(),
                source,
            })
    };
    Ok(format!(
        "postgres system {} database {} slot {}",
        read(0)?,
        read(1)?,
        cfg.slot
    ))
}

/// Prepares capture without a snapshot and returns where the stream will
/// start: checks the source, creates the publication, and creates the slot
/// (dropping one left by an earlier attempt). `tidemark migrate` records this
/// position, copies the tables, then streams from it.
pub async fn create_slot(cfg: &PostgresConfig) -> Result<Position, SourceError> {
    let client = catalog::connect(&parse_url(&cfg.url)?).await?;
    let problems = catalog::problems(&client, &cfg.tables, &cfg.slot, &cfg.publication).await?;
    if !problems.is_empty() {
        return Err(SourceError::Setup(problems.join("\n")));
    }
    ensure_publication(&client, cfg).await?;
    let fail = |what: String| move |source| SourceError::Postgres { what, source };
    if catalog::slot_state(&client, &cfg.slot).await?.is_some() {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
            .await
            .map_err(fail(format!("drop replication slot {}", cfg.slot)))?;
    }
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&cfg.slot],
        )
        .await
        .map_err(fail(format!("create replication slot {}", cfg.slot)))?;
    let text: String = catalog::column(&row, 0, &format!("create replication slot {}", cfg.slot))?;
    let lsn = crate::event::parse_lsn(&text).ok_or_else(|| {
        SourceError::Setup(format!(
            "slot {} was created at an unreadable LSN {text}",
            cfg.slot
        ))
    })?;
    tracing::info!("created slot {} at LSN {text}", cfg.slot);
    Ok(Position::postgres(lsn, lsn))
}

pub struct PostgresSource {
    cfg: PostgresConfig,
    pipeline: Arc<str>,
    db: Arc<str>,
    catalog: Client,
    kinds: TypeKinds,
    repl: ReplicationClient,
    control: SourceControl,
    reading: Reading<Snapshot>,
    relations: HashMap<u32, TableSchema>,
    /// Relations the publication sends that are not in `source.tables` (it
    /// holds other tables, or is `FOR ALL TABLES`): their changes are dropped.
    unconfigured: HashSet<u32>,
    tx: Option<stream::Transaction>,
    batch: Batcher,
    /// A stream-only start without a cursor: where it starts (see [`Self::fresh_start`]).
    fresh_start: Option<Position>,
    /// Where the stream is, for error messages.
    last_lsn: u64,
    /// Schema events waiting for their table's next change, by relation id.
    pending_schema: HashMap<u32, Vec<ColumnInfo>>,
    ended: bool,
    next_heartbeat: Instant,
}

/// What opening the stream produced: the replication session, the reading it
/// starts in, and a stream-only start's position (see
/// [`PostgresSource::fresh_start`]).
struct Opened {
    repl: ReplicationClient,
    reading: Reading<Snapshot>,
    start_at: Option<u64>,
}

impl PostgresSource {
    /// Connects, checks the source, sets up publication and slot, and positions the
    /// stream at `resume` (the cursor) or, with no cursor, at a new slot's start
    /// (after its snapshot, when configured).
    pub async fn open(
        cfg: PostgresConfig,
        resume: Option<Position>,
        control: SourceControl,
    ) -> Result<Self, SourceError> {
        check_names(&cfg)?;
        let pg = parse_url(&cfg.url)?;
        let catalog = checked_catalog(&pg, &cfg).await?;
        let db: Arc<str> = pg.config.get_dbname().unwrap_or("postgres").into();
        let pipeline: Arc<str> = cfg.pipeline.as_str().into();
        let mut kinds = TypeKinds::default();
        let slot = catalog::slot_state(&catalog, &cfg.slot).await?;
        pg.refuse_cleartext(true)
            .await
            .map_err(|e| SourceError::Setup(format!("source.url: {e}")))?;
        let repl_cfg = replication_config(&pg, &cfg)?;
        // A stream-only start fixes its position at once: the pipeline
        // commits it before reading (see `fresh_start`).
        let opened = match start::decide(resume, slot.as_ref(), cfg.snapshot) {
            Start::Refuse(refusal) => return Err(refusal.error(&cfg.slot)),
            Start::Resume { lsn } => resume_stream(repl_cfg, &cfg.slot, lsn).await?,
            Start::FromSlot {
                confirmed_flush_lsn,
            } => stream_from_slot(repl_cfg, &cfg.slot, confirmed_flush_lsn).await?,
            Start::NewSlot => stream_from_new_slot(repl_cfg, &cfg.slot).await?,
            Start::Snapshot { drop_stale } => {
                if drop_stale {
                    drop_stale_slot(&catalog, &cfg.slot).await?;
                }
                let reading = SnapshotSource {
                    cfg: &cfg,
                    pg: &pg,
                    catalog: &catalog,
                    pipeline: &pipeline,
                    db: &db,
                };
                reading.snapshot_then_stream(repl_cfg, &mut kinds).await?
            }
        };
        Ok(PostgresSource {
            cfg,
            pipeline,
            db,
            catalog,
            kinds,
            repl: opened.repl,
            control,
            reading: opened.reading,
            relations: HashMap::new(),
            unconfigured: HashSet::new(),
            tx: None,
            batch: Batcher::default(),
            fresh_start: opened.start_at.map(|lsn| Position::postgres(lsn, lsn)),
            last_lsn: 0,
            pending_schema: HashMap::new(),
            ended: false,
            next_heartbeat: Instant::now(),
        })
    }

    /// Where a stream-only start without a cursor begins: the pipeline commits
    /// it before reading, so a stop (or a kill) before the first change loses
    /// nothing made meanwhile.
    pub fn fresh_start(&self) -> Option<Position> {
        self.fresh_start.clone()
    }

    /// The next batch, or `None` once stopped (or past `stop_at_lsn`).
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        match self.reading.step(&self.control.stop).await? {
            Step::Streaming => {}
            Step::Stopped => return Ok(None),
            Step::Rows(batch) => return Ok(Some(batch)),
            Step::Done(snapshot) => {
                let point = snapshot.consistent_point();
                self.repl.start().await.map_err(stream_error(point))?;
                tracing::info!("snapshot complete; streaming from LSN {}", lsn_text(point));
                return Ok(Some(Batch {
                    events: Vec::new(),
                    end: Some(Position::postgres(point, point)),
                }));
            }
        }
        self.next_stream_batch().await
    }

    async fn next_stream_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        loop {
            if self.ended || *self.control.stop.borrow() {
                self.tx = None;
                return Ok(self.batch.take_complete());
            }
            let at_boundary = self.tx.is_none();
            if self.batch.is_full(self.cfg.max_batch_events) {
                return Ok(Some(self.batch.take()));
            }
            let received = if at_boundary && self.batch.has_complete_events() {
                // Something to hand on: take more only if it is already here.
                match tokio::time::timeout(Duration::ZERO, self.repl.recv()).await {
                    Ok(received) => received,
                    Err(_) => return Ok(Some(self.batch.take())),
                }
            } else {
                let flush_empty_at = self.batch.empty_end_due();
                tokio::select! {
                    biased;
                    Ok(()) = self.control.stop.changed() => continue,
                    Ok(()) = self.control.durable.changed() => {
                        self.forward_durable();
                        continue;
                    }
                    _ = tokio::time::sleep_until(flush_empty_at.unwrap_or_else(Instant::now)), if flush_empty_at.is_some() && at_boundary => {
                        return Ok(Some(self.batch.take()));
                    }
                    _ = tokio::time::sleep_until(self.next_heartbeat), if self.cfg.heartbeat.is_some() => {
                        self.heartbeat().await;
                        continue;
                    }
                    received = self.repl.recv() => received,
                }
            };
            match received.map_err(stream_error(self.last_lsn))? {
                Some(event) => self.handle(event).await?,
                None => self.ended = true,
            }
        }
    }

    /// Writes the heartbeat; a failure is logged, never fatal (the stream is fine).
    async fn heartbeat(&mut self) {
        let Some(heartbeat) = &self.cfg.heartbeat else {
            return;
        };
        self.next_heartbeat = Instant::now() + heartbeat.every;
        let statement = heartbeat.statement.clone().unwrap_or_else(|| {
            format!("SELECT pg_logical_emit_message(false, '{HEARTBEAT_PREFIX}', '')")
        });
        if let Err(e) = self.catalog.batch_execute(&statement).await {
            tracing::warn!(
                "heartbeat on slot {} failed (set source.heartbeat_statement, or grant the role EXECUTE on pg_logical_emit_message): {}",
                self.cfg.slot,
                crate::sql::postgres::error_detail(&e)
            );
        }
    }

    /// Tells the server what the cursor store holds, so the slot can let go of it.
    fn forward_durable(&mut self) {
        if let Some(Position::Postgres { lsn, .. }) =
            self.control.durable.borrow_and_update().as_ref()
        {
            self.repl.update_applied_lsn(Lsn::from_u64(*lsn));
        }
    }

    /// Takes back the events of a written batch (see [`Batcher::recycle`]).
    pub fn recycle(&mut self, events: Vec<ChangeEvent>) {
        self.batch.recycle(events);
    }

    /// Passes on the final durable position and ends the replication session.
    pub async fn close(mut self) {
        self.forward_durable();
        // Stopped during the snapshot: the replication session still waits,
        // holding the exported snapshot, for the start of the stream, and
        // does not read the stop signal meanwhile, so `shutdown` would wait
        // for it forever. Dropping the client closes that wait and ends the
        // session without starting it.
        if matches!(self.reading, Reading::Snapshot(_)) {
            return;
        }
        if let Err(e) = self.repl.shutdown().await {
            tracing::debug!("replication session ended with: {e}");
        }
    }
}

fn stream_error(lsn: u64) -> impl FnOnce(PgWireError) -> SourceError {
    move |e| SourceError::Replication {
        at: format!("LSN {}", lsn_text(lsn)),
        message: e.to_string(),
    }
}

fn replication_config(
    url: &tls::PgUrl,
    cfg: &PostgresConfig,
) -> Result<ReplicationConfig, SourceError> {
    let pg = &url.config;
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.to_string_lossy().into_owned(),
        None => "127.0.0.1".to_string(),
    };
    let user = pg
        .get_user()
        .ok_or_else(|| SourceError::Setup("source.url: names no user".into()))?;
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let db = pg.get_dbname().unwrap_or(user);
    let tls = url.tls.replication(&host);
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        db,
        cfg.slot.as_str(),
        cfg.publication.as_str(),
    )
    .with_port(pg.get_ports().first().copied().unwrap_or(5432))
    .with_tls(tls)
    .with_options(catalog::SESSION_OPTIONS)
    .with_application_name(format!("tidemark:{}", cfg.pipeline))
    .with_status_interval(Duration::from_secs(1))
    .with_wakeup_interval(Duration::from_secs(5))
    .with_buffer_size(REPLICATION_BUFFER_MESSAGES))
}

/// Messages the replication client reads ahead of the decoder (its default
/// is 8,192). Each holds one row change, which may be megabytes: the server
/// keeps the backlog, not this buffer, so a few dozen are plenty to keep the
/// decoder busy.
const REPLICATION_BUFFER_MESSAGES: usize = 64;

/// A killed predecessor's walsender may hold the slot for a moment; wait for it.
async fn wait_for_slot_release(client: &Client, slot: &str) -> Result<(), SourceError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match catalog::slot_state(client, slot).await? {
            Some(state) if state.active && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => return Ok(()),
        }
    }
}

/// Creates the publication, or adds the configured tables it lacks.
async fn ensure_publication(client: &Client, cfg: &PostgresConfig) -> Result<(), SourceError> {
    let fail = |what: String| move |source| SourceError::Postgres { what, source };
    let tables: Vec<String> = cfg.tables.iter().map(|t| t.quoted()).collect();
    match catalog::publication_tables(client, &cfg.publication).await? {
        None => {
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                cfg.publication,
                tables.join(", ")
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(fail(format!("create publication {}", cfg.publication)))?;
            tracing::info!("created publication {}", cfg.publication);
        }
        Some(published) if published.all_tables => {}
        Some(published) => {
            for table in &cfg.tables {
                if !published.tables.contains(&table.to_string()) {
                    let sql = format!(
                        "ALTER PUBLICATION {} ADD TABLE {}",
                        cfg.publication,
                        table.quoted()
                    );
                    client.batch_execute(&sql).await.map_err(fail(format!(
                        "add {table} to publication {}",
                        cfg.publication
                    )))?;
                    tracing::info!("added {table} to publication {}", cfg.publication);
                }
            }
        }
    }
    Ok(())
}

/// Slot and publication names go into replication commands unquoted (see
/// [`valid_name`]): any other is refused before connecting.
fn check_names(cfg: &PostgresConfig) -> Result<(), SourceError> {
    for (key, name) in [
        ("source.slot", &cfg.slot),
        ("source.publication", &cfg.publication),
    ] {
        if !valid_name(name) {
            return Err(SourceError::Setup(format!(
                "{key}: {name:?} must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"
            )));
        }
    }
    Ok(())
}

/// Connects the catalog session, waits for a predecessor to let go of the
/// slot, checks the source and makes sure the publication holds the tables.
async fn checked_catalog(pg: &tls::PgUrl, cfg: &PostgresConfig) -> Result<Client, SourceError> {
    let catalog = catalog::connect(pg).await?;
    wait_for_slot_release(&catalog, &cfg.slot).await?;
    let problems = catalog::problems(&catalog, &cfg.tables, &cfg.slot, &cfg.publication).await?;
    if !problems.is_empty() {
        return Err(SourceError::Setup(problems.join("\n")));
    }
    ensure_publication(&catalog, cfg).await?;
    Ok(catalog)
}

/// [`Start::Resume`]: streams from the cursor's LSN.
async fn resume_stream(
    repl_cfg: ReplicationConfig,
    slot: &str,
    lsn: u64,
) -> Result<Opened, SourceError> {
    tracing::info!("resuming slot {} at LSN {}", slot, lsn_text(lsn));
    let repl = ReplicationClient::connect(repl_cfg.with_start_lsn(Lsn::from_u64(lsn)))
        .await
        .map_err(stream_error(lsn))?;
    Ok(Opened {
        repl,
        reading: Reading::Streaming,
        start_at: None,
    })
}

/// [`Start::FromSlot`]: streams from the slot's confirmed position.
async fn stream_from_slot(
    repl_cfg: ReplicationConfig,
    slot: &str,
    confirmed_flush_lsn: Option<u64>,
) -> Result<Opened, SourceError> {
    let mut repl = ReplicationClient::connect_gated(repl_cfg)
        .await
        .map_err(stream_error(0))?;
    tracing::info!("streaming slot {} from its confirmed position", slot);
    repl.start().await.map_err(stream_error(0))?;
    Ok(Opened {
        repl,
        reading: Reading::Streaming,
        start_at: confirmed_flush_lsn,
    })
}

/// [`Start::NewSlot`]: creates the slot and streams from its consistent point.
async fn stream_from_new_slot(
    repl_cfg: ReplicationConfig,
    slot: &str,
) -> Result<Opened, SourceError> {
    let mut repl = ReplicationClient::connect_gated(repl_cfg)
        .await
        .map_err(stream_error(0))?;
    let (consistent_point, _) = create_replication_slot(&mut repl, slot, false).await?;
    repl.start().await.map_err(stream_error(consistent_point))?;
    Ok(Opened {
        repl,
        reading: Reading::Streaming,
        start_at: Some(consistent_point),
    })
}

/// Drops a slot found without a cursor, so that it is created again with a
/// snapshot consistent with it.
async fn drop_stale_slot(catalog: &Client, slot: &str) -> Result<(), SourceError> {
    tracing::warn!(
        "slot {} exists but no cursor does: dropping it to create it again with a consistent snapshot",
        slot
    );
    catalog
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(|source| SourceError::Postgres {
            what: format!("drop replication slot {}", slot),
            source,
        })?;
    Ok(())
}

/// Creates the slot on the replication session (exporting a snapshot when
/// `export`); returns its consistent point and the exported snapshot's name.
async fn create_replication_slot(
    repl: &mut ReplicationClient,
    slot: &str,
    export: bool,
) -> Result<(u64, Option<String>), SourceError> {
    let export = if export {
        "EXPORT_SNAPSHOT"
    } else {
        "NOEXPORT_SNAPSHOT"
    };
    let rows = repl
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {export}",
            slot
        ))
        .await
        .map_err(|e| {
            SourceError::Setup(format!("source.slot: cannot create slot '{}': {e}", slot))
        })?;
    let field = |i: usize| -> Option<String> {
        rows.first()?
            .get(i)?
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let consistent_point = field(1)
        .and_then(|t| crate::event::parse_lsn(&t))
        .ok_or_else(|| {
            SourceError::Setup(format!(
                "slot '{}' was created without a consistent point",
                slot
            ))
        })?;
    tracing::info!(
        "created slot {} at LSN {}",
        slot,
        lsn_text(consistent_point)
    );
    Ok((consistent_point, field(2)))
}

/// What [`Start::Snapshot`] reads with, besides the replication session:
/// borrowed from `open`, which keeps them for the source it builds.
struct SnapshotSource<'a> {
    cfg: &'a PostgresConfig,
    pg: &'a tls::PgUrl,
    catalog: &'a Client,
    pipeline: &'a Arc<str>,
    db: &'a Arc<str>,
}

impl SnapshotSource<'_> {
    /// [`Start::Snapshot`]: creates the slot exporting a snapshot and begins
    /// reading that snapshot on a connection of its own; streaming starts
    /// once it is read (see [`PostgresSource::next_batch`]).
    async fn snapshot_then_stream(
        &self,
        repl_cfg: ReplicationConfig,
        kinds: &mut TypeKinds,
    ) -> Result<Opened, SourceError> {
        let cfg = self.cfg;
        let mut repl = ReplicationClient::connect_gated(repl_cfg)
            .await
            .map_err(stream_error(0))?;
        let (consistent_point, exported) =
            create_replication_slot(&mut repl, &cfg.slot, true).await?;
        let snapshot_name = exported.ok_or_else(|| {
            SourceError::Setup(format!(
                "slot '{}' was created without an exported snapshot",
                cfg.slot
            ))
        })?;
        let mut shapes = Vec::new();
        for table in &cfg.tables {
            shapes.push(
                catalog::table_shape(self.catalog, table)
                    .await?
                    .ok_or_else(|| {
                        SourceError::Setup(format!("source.tables: table {table} does not exist"))
                    })?,
            );
        }
        let reader = catalog::connect(self.pg).await?;
        let snapshot = Snapshot::begin(
            reader,
            &snapshot_name,
            consistent_point,
            shapes,
            kinds,
            cfg.snapshot_chunk_rows,
            self.pipeline.clone(),
            self.db.clone(),
        )
        .await?;
        Ok(Opened {
            repl,
            reading: Reading::Snapshot(Box::new(snapshot)),
            start_at: None,
        })
    }
}
