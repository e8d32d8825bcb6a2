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
pub mod pgoutput;
pub mod retention;
pub mod snapshot;
pub mod table;
pub mod tls;
pub mod values;

pub use table::TableName;

use crate::batcher::Batcher;
use crate::event::{
    lsn_text, now_ms, Batch, ChangeEvent, ColumnInfo, Image, Op, Position, Row, SourceInfo,
    TransactionInfo,
};
use crate::{SourceControl, SourceError};
use catalog::TypeKinds;
use pgoutput::{Message, OldRow, Relation};
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use snapshot::Snapshot;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use table::{Column, TableSchema};
use tokio::time::Instant;
use tokio_postgres::Client;

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MS: i64 = 946_684_800_000;

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

/// The open transaction being read from the stream.
struct Transaction {
    xid: u32,
    /// `xid` as text, shared by the transaction's events.
    id: Arc<str>,
    commit_lsn: u64,
    ts_ms: i64,
    /// Events emitted so far (`transaction.seq`).
    seq: u64,
    /// Row changes and truncates read so far: the ordinal in their positions.
    /// Schema events are not counted: they are emitted only when the layout
    /// changed while this process ran, so a replay of the same transaction
    /// after a restart may not emit them, and the changes must keep their
    /// positions (the file sink's replay skip and consumers' dedup rely on it).
    changes: u64,
}

enum Phase {
    Snapshot(Box<Snapshot>),
    Streaming,
}

pub struct PostgresSource {
    cfg: PostgresConfig,
    pipeline: Arc<str>,
    db: Arc<str>,
    catalog: Client,
    kinds: TypeKinds,
    repl: ReplicationClient,
    control: SourceControl,
    phase: Phase,
    relations: HashMap<u32, TableSchema>,
    /// Relations the publication sends that are not in `source.tables` (it
    /// holds other tables, or is `FOR ALL TABLES`): their changes are dropped.
    unconfigured: HashSet<u32>,
    tx: Option<Transaction>,
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

impl PostgresSource {
    /// Connects, checks the source, sets up publication and slot, and positions the
    /// stream at `resume` (the cursor) or, with no cursor, at a new slot's start
    /// (after its snapshot, when configured).
    pub async fn open(
        cfg: PostgresConfig,
        resume: Option<Position>,
        control: SourceControl,
    ) -> Result<Self, SourceError> {
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
        let pg = parse_url(&cfg.url)?;
        let catalog = catalog::connect(&pg).await?;
        wait_for_slot_release(&catalog, &cfg.slot).await?;
        let problems =
            catalog::problems(&catalog, &cfg.tables, &cfg.slot, &cfg.publication).await?;
        if !problems.is_empty() {
            return Err(SourceError::Setup(problems.join("\n")));
        }
        ensure_publication(&catalog, &cfg).await?;

        let db: Arc<str> = pg.config.get_dbname().unwrap_or("postgres").into();
        let pipeline: Arc<str> = cfg.pipeline.as_str().into();
        let mut kinds = TypeKinds::default();
        let slot = catalog::slot_state(&catalog, &cfg.slot).await?;
        pg.refuse_cleartext(true)
            .await
            .map_err(|e| SourceError::Setup(format!("source.url: {e}")))?;
        let repl_cfg = replication_config(&pg, &cfg)?;
        let at = |lsn: u64| lsn_text(lsn);

        // A stream-only start fixes its position at once: the pipeline
        // commits it before reading (see `fresh_start`).
        let mut start_at = None;
        let (repl, phase) = match resume {
            Some(Position::Postgres { lsn, .. }) => {
                let Some(slot) = slot else {
                    return Err(SourceError::Setup(format!(
                        "source.slot: replication slot '{}' is missing but the cursor is at LSN {}: the changes after it are gone; recover with `tidemark cursor reset --config <this config>`, then start again to take a new snapshot",
                        cfg.slot,
                        at(lsn)
                    )));
                };
                if let Some(flushed) = slot.confirmed_flush_lsn.filter(|f| *f > lsn) {
                    return Err(SourceError::Setup(format!(
                        "source.slot: slot '{}' was confirmed up to LSN {} by another consumer, past the cursor at {}: changes in between are gone; recover with `tidemark cursor reset --config <this config>`, then start again to take a new snapshot",
                        cfg.slot,
                        at(flushed),
                        at(lsn)
                    )));
                }
                tracing::info!("resuming slot {} at LSN {}", cfg.slot, at(lsn));
                let repl = ReplicationClient::connect(repl_cfg.with_start_lsn(Lsn::from_u64(lsn)))
                    .await
                    .map_err(stream_error(lsn))?;
                (repl, Phase::Streaming)
            }
            Some(other) => {
                return Err(SourceError::Setup(format!(
                    "the cursor holds {other}, not a Postgres position: it belongs to another source"
                )));
            }
            None => {
                if slot.is_some() && cfg.snapshot {
                    tracing::warn!(
                        "slot {} exists but no cursor does: dropping it to create it again with a consistent snapshot",
                        cfg.slot
                    );
                    catalog
                        .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
                        .await
                        .map_err(|source| SourceError::Postgres {
                            what: format!("drop replication slot {}", cfg.slot),
                            source,
                        })?;
                }
                let mut repl = ReplicationClient::connect_gated(repl_cfg)
                    .await
                    .map_err(stream_error(0))?;
                if let (Some(slot), false) = (&slot, cfg.snapshot) {
                    tracing::info!("streaming slot {} from its confirmed position", cfg.slot);
                    start_at = slot.confirmed_flush_lsn;
                    repl.start().await.map_err(stream_error(0))?;
                    (repl, Phase::Streaming)
                } else {
                    let export = if cfg.snapshot {
                        "EXPORT_SNAPSHOT"
                    } else {
                        "NOEXPORT_SNAPSHOT"
                    };
                    let rows = repl
                        .simple_query(&format!(
                            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {export}",
                            cfg.slot
                        ))
                        .await
                        .map_err(|e| {
                            SourceError::Setup(format!(
                                "source.slot: cannot create slot '{}': {e}",
                                cfg.slot
                            ))
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
                                cfg.slot
                            ))
                        })?;
                    tracing::info!("created slot {} at LSN {}", cfg.slot, at(consistent_point));
                    if cfg.snapshot {
                        let snapshot_name = field(2).ok_or_else(|| {
                            SourceError::Setup(format!(
                                "slot '{}' was created without an exported snapshot",
                                cfg.slot
                            ))
                        })?;
                        let mut shapes = Vec::new();
                        for table in &cfg.tables {
                            shapes.push(catalog::table_shape(&catalog, table).await?.ok_or_else(
                                || {
                                    SourceError::Setup(format!(
                                        "source.tables: table {table} does not exist"
                                    ))
                                },
                            )?);
                        }
                        let reader = catalog::connect(&pg).await?;
                        let snapshot = Snapshot::begin(
                            reader,
                            &snapshot_name,
                            consistent_point,
                            shapes,
                            &mut kinds,
                            cfg.snapshot_chunk_rows,
                            pipeline.clone(),
                            db.clone(),
                        )
                        .await?;
                        (repl, Phase::Snapshot(Box::new(snapshot)))
                    } else {
                        repl.start().await.map_err(stream_error(consistent_point))?;
                        start_at = Some(consistent_point);
                        (repl, Phase::Streaming)
                    }
                }
            }
        };
        Ok(PostgresSource {
            cfg,
            pipeline,
            db,
            catalog,
            kinds,
            repl,
            control,
            phase,
            relations: HashMap::new(),
            unconfigured: HashSet::new(),
            tx: None,
            batch: Batcher::default(),
            fresh_start: start_at.map(|lsn| Position::postgres(lsn, lsn)),
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
        if let Phase::Snapshot(snapshot) = &mut self.phase {
            if *self.control.stop.borrow() {
                tracing::info!(
                    "stopping during the snapshot: it restarts from the beginning next time"
                );
                return Ok(None);
            }
            if let Some(events) = snapshot.next_chunk().await? {
                return Ok(Some(Batch { events, end: None }));
            }
            let point = snapshot.consistent_point();
            self.phase = Phase::Streaming;
            self.repl.start().await.map_err(stream_error(point))?;
            tracing::info!("snapshot complete; streaming from LSN {}", lsn_text(point));
            return Ok(Some(Batch {
                events: Vec::new(),
                end: Some(Position::postgres(point, point)),
            }));
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
            if self.batch.len() >= self.cfg.max_batch_events.max(1) {
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
                crate::postgres_detail(&e)
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

    async fn handle(&mut self, event: ReplicationEvent) -> Result<(), SourceError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                self.tx = Some(Transaction {
                    xid,
                    id: xid.to_string().into(),
                    commit_lsn: final_lsn.as_u64(),
                    ts_ms: commit_time_micros / 1000 + PG_EPOCH_OFFSET_MS,
                    seq: 0,
                    changes: 0,
                });
            }
            ReplicationEvent::Commit { lsn, end_lsn, .. } => {
                self.tx = None;
                self.batch
                    .commit(Position::postgres(lsn.as_u64(), end_lsn.as_u64()));
                self.last_lsn = end_lsn.as_u64();
                if self
                    .cfg
                    .stop_at_lsn
                    .is_some_and(|stop| end_lsn.as_u64() >= stop)
                {
                    self.ended = true;
                }
            }
            ReplicationEvent::XLogData {
                wal_start, data, ..
            } => {
                let lsn = wal_start.as_u64();
                self.last_lsn = lsn;
                let message = pgoutput::decode(data).map_err(|e| SourceError::Decode {
                    at: lsn_text(lsn),
                    message: e.0,
                })?;
                self.apply(lsn, message).await?;
            }
            ReplicationEvent::KeepAlive {
                wal_end,
                reply_requested,
                ..
            } => {
                // The server asks for a reply when it waits on this client: at
                // half its `wal_sender_timeout`, and in a fast shutdown, which
                // waits until the client confirms all it was sent. Between
                // transactions everything before `wal_end` was read, so the
                // cursor may move there (as for a heartbeat) and the confirmed
                // position can reach what was sent.
                if reply_requested && self.tx.is_none() && wal_end.as_u64() > self.last_lsn {
                    self.batch
                        .commit(Position::postgres(wal_end.as_u64(), wal_end.as_u64()));
                    self.last_lsn = wal_end.as_u64();
                }
                // The server has sent everything before `wal_end`: past the stop
                // LSN and between transactions, there is nothing more to read.
                if self.tx.is_none()
                    && self
                        .cfg
                        .stop_at_lsn
                        .is_some_and(|stop| wal_end.as_u64() >= stop)
                {
                    self.ended = true;
                }
            }
            ReplicationEvent::Message {
                transactional: false,
                lsn,
                prefix,
                ..
            } if prefix == HEARTBEAT_PREFIX && self.tx.is_none() => {
                // Everything before the heartbeat was read: the cursor may move
                // to it (as after a transaction with no captured change).
                let lsn = lsn.as_u64();
                if lsn > self.last_lsn {
                    self.batch.commit(Position::postgres(lsn, lsn));
                    self.last_lsn = lsn;
                }
            }
            ReplicationEvent::Message { .. } => {}
            ReplicationEvent::StoppedAt { .. } => self.ended = true,
        }
        Ok(())
    }

    async fn apply(&mut self, lsn: u64, message: Message) -> Result<(), SourceError> {
        let message = match message {
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. }
                if self.unconfigured.contains(&relation) =>
            {
                count_unconfigured(1);
                return Ok(());
            }
            Message::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                let (configured, others): (Vec<u32>, Vec<u32>) = relations
                    .into_iter()
                    .partition(|r| !self.unconfigured.contains(r));
                count_unconfigured(others.len() as u64);
                Message::Truncate {
                    relations: configured,
                    cascade,
                    restart_identity,
                }
            }
            message => message,
        };
        match message {
            Message::Relation(relation) => self.relation(lsn, relation).await?,
            Message::Type | Message::Origin => {}
            Message::Insert { relation, new } => {
                let schema = self.schema(relation, lsn)?;
                let (after, unchanged) = schema.row(&new);
                let key = schema.key_of(&after);
                self.push(Op::Create, relation, lsn, None, Some(after), unchanged, key);
            }
            Message::Update { relation, old, new } => {
                let schema = self.schema(relation, lsn)?;
                let (after, unchanged) = schema.row(&new);
                let before = match &old {
                    Some(OldRow::Full(values)) => schema.row(values).0,
                    Some(OldRow::Key(values)) => schema.key_row(values),
                    // The key did not change, so the key columns of the new row
                    // are those of the old one.
                    None => schema.key_of(&after).unwrap_or_default(),
                };
                let key = schema.key_of(&after).or_else(|| schema.key_of(&before));
                self.push(
                    Op::Update,
                    relation,
                    lsn,
                    Some(before),
                    Some(after),
                    unchanged,
                    key,
                );
            }
            Message::Delete { relation, old } => {
                let schema = self.schema(relation, lsn)?;
                let before = match &old {
                    OldRow::Full(values) => schema.row(values).0,
                    OldRow::Key(values) => schema.key_row(values),
                };
                let key = schema.key_of(&before);
                self.push(
                    Op::Delete,
                    relation,
                    lsn,
                    Some(before),
                    None,
                    Vec::new(),
                    key,
                );
            }
            Message::Truncate { relations, .. } => {
                // One event per table; they share the truncate's WAL record and
                // LSN, and their ordinals tell them apart.
                for relation in relations {
                    self.schema(relation, lsn)?;
                    self.push(Op::Truncate, relation, lsn, None, None, Vec::new(), None);
                }
            }
        }
        Ok(())
    }

    fn schema(&self, relation: u32, lsn: u64) -> Result<&TableSchema, SourceError> {
        self.relations
            .get(&relation)
            .ok_or_else(|| SourceError::Decode {
                at: lsn_text(lsn),
                message: format!(
                    "change for relation {relation} arrived before its Relation message"
                ),
            })
    }

    /// Records a relation's layout; when it differs from the one known, emits a
    /// schema event placed just before the change that carried it. A relation
    /// outside `source.tables` is only remembered, to drop its changes.
    async fn relation(&mut self, lsn: u64, relation: Relation) -> Result<(), SourceError> {
        let name = TableName::new(&relation.schema, &relation.table);
        if !self.cfg.tables.contains(&name) {
            self.relations.remove(&relation.id);
            if self.unconfigured.insert(relation.id) {
                tracing::warn!(
                    "publication {} sends changes of {name}, which is not in source.tables: they are dropped (see `tidemark check`)",
                    self.cfg.publication
                );
            }
            return Ok(());
        }
        self.unconfigured.remove(&relation.id);
        let mut columns = Vec::with_capacity(relation.columns.len());
        for c in &relation.columns {
            columns.push(Column {
                name: c.name.as_str().into(),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                kind: self.kinds.kind(&self.catalog, c.type_oid).await?,
            });
        }
        let primary_key = catalog::primary_key(&self.catalog, relation.id).await?;
        let mut key: Vec<usize> = primary_key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &*c.name == k))
            .collect();
        if key.len() != primary_key.len() || key.is_empty() {
            key = relation
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.key)
                .map(|(i, _)| i)
                .collect();
        }
        let schema = TableSchema {
            name: TableName::new(&relation.schema, &relation.table),
            columns,
            key,
        };
        let changed = self
            .relations
            .get(&relation.id)
            .is_some_and(|old| !old.same_columns(&schema));
        if changed {
            let mut infos = Vec::with_capacity(schema.columns.len());
            for (i, c) in schema.columns.iter().enumerate() {
                infos.push(ColumnInfo {
                    name: c.name.clone(),
                    type_name: catalog::type_name(&self.catalog, c.type_oid, c.type_modifier)
                        .await?,
                    key: schema.key.contains(&i),
                });
            }
            tracing::info!(
                "schema of {} changed (seen at LSN {})",
                schema.name,
                lsn_text(lsn)
            );
            // Emitted just before the table's next change (see `push`).
            self.pending_schema.insert(relation.id, infos);
        }
        self.relations.insert(relation.id, schema);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        op: Op,
        relation: u32,
        lsn: u64,
        before: Option<Row>,
        after: Option<Row>,
        unchanged: Vec<Arc<str>>,
        key: Option<Row>,
    ) {
        let Some(tx) = self.tx.as_mut() else {
            tracing::warn!(
                "change at LSN {} outside a transaction ignored",
                lsn_text(lsn)
            );
            return;
        };
        let Some(schema) = self.relations.get(&relation) else {
            return;
        };
        let source = SourceInfo {
            lsn: Some(lsn),
            commit_lsn: Some(tx.commit_lsn),
            tx_id: Some(tx.xid),
            ..SourceInfo::new(
                "postgres",
                self.pipeline.clone(),
                self.db.clone(),
                schema.name.schema.clone(),
                schema.name.table.clone(),
                tx.ts_ms,
            )
        };
        if let Some(columns) = self.pending_schema.remove(&relation) {
            // A table's schema event comes just before its first change under the
            // new layout, at lsn-1: WAL records are 8-byte aligned and the LSNs
            // handed to changes are record starts, so no change has that LSN.
            let at = lsn.saturating_sub(1);
            tx.seq += 1;
            // Before the change it precedes: at the LSN just before it, with
            // that change's ordinal (see `Transaction::changes`).
            let source = Arc::new(SourceInfo {
                lsn: Some(at),
                ..source.clone()
            });
            let position = Position::postgres_change(tx.commit_lsn, at, tx.changes + 1);
            self.batch.push(
                ChangeEvent::schema(source, position, None, Some(columns), now_ms())
                    .in_transaction(Some(TransactionInfo {
                        id: tx.id.clone(),
                        seq: tx.seq,
                    })),
            );
        }
        tx.seq += 1;
        tx.changes += 1;
        let position = Position::postgres_change(tx.commit_lsn, lsn, tx.changes);
        self.batch.push(
            ChangeEvent::row(
                op,
                before.map(Image::from),
                after.map(Image::from),
                key,
                Arc::new(source),
                position,
                now_ms(),
            )
            .with_unchanged(unchanged)
            .in_transaction(Some(TransactionInfo {
                id: tx.id.clone(),
                seq: tx.seq,
            })),
        );
    }

    /// Passes on the final durable position and ends the replication session.
    /// Takes back the events of a written batch (see [`Batcher::recycle`]).
    pub fn recycle(&mut self, events: Vec<ChangeEvent>) {
        self.batch.recycle(events);
    }

    pub async fn close(mut self) {
        self.forward_durable();
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
    .with_wakeup_interval(Duration::from_secs(5)))
}

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

/// Counts changes of tables outside `source.tables`, dropped before the sink.
fn count_unconfigured(changes: u64) {
    metrics::counter!("tidemark_unconfigured_changes_dropped_total").increment(changes);
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
