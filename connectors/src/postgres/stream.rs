//! The WAL stream's messages turned into events: transactions, relation
//! layouts (with the schema events their changes bring), and row changes.
//! Reading the stream into batches stays in `mod.rs`; this is what each
//! message it receives does.

use super::pgoutput::{self, Datum, Message, OldRow, Relation};
use super::table::{Column, TableSchema};
use super::{catalog, PostgresSource, TableName, HEARTBEAT_PREFIX};
use crate::event::{
    lsn_text, now_ms, ChangeEvent, ColumnInfo, Image, Op, Position, Row, SourceInfo,
    TransactionInfo,
};
use crate::SourceError;
use pgwire_replication::ReplicationEvent;
use std::sync::Arc;

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MS: i64 = 946_684_800_000;

/// The open transaction being read from the stream.
pub(super) struct Transaction {
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

impl Transaction {
    /// The transaction a Begin message opens.
    fn begin(xid: u32, commit_lsn: u64, commit_time_micros: i64) -> Self {
        Transaction {
            xid,
            id: xid.to_string().into(),
            commit_lsn,
            ts_ms: commit_time_micros / 1000 + PG_EPOCH_OFFSET_MS,
            seq: 0,
            changes: 0,
        }
    }
}

impl PostgresSource {
    /// Takes in one event of the replication stream.
    pub(super) async fn handle(&mut self, event: ReplicationEvent) -> Result<(), SourceError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                self.tx = Some(Transaction::begin(
                    xid,
                    final_lsn.as_u64(),
                    commit_time_micros,
                ));
            }
            ReplicationEvent::Commit { lsn, end_lsn, .. } => {
                self.commit(lsn.as_u64(), end_lsn.as_u64());
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
                self.absorb_message(lsn, message).await?;
            }
            ReplicationEvent::KeepAlive {
                wal_end,
                reply_requested,
                ..
            } => self.keepalive(wal_end.as_u64(), reply_requested),
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

    /// A transaction's end: its events become complete, and the stream ends
    /// here once it reaches `stop_at_lsn`.
    fn commit(&mut self, lsn: u64, end_lsn: u64) {
        self.tx = None;
        self.batch.commit(Position::postgres(lsn, end_lsn));
        self.last_lsn = end_lsn;
        if self.cfg.stop_at_lsn.is_some_and(|stop| end_lsn >= stop) {
            self.ended = true;
        }
    }

    /// A keepalive: the server has sent everything before `wal_end`.
    fn keepalive(&mut self, wal_end: u64, reply_requested: bool) {
        // The server asks for a reply when it waits on this client: at
        // half its `wal_sender_timeout`, and in a fast shutdown, which
        // waits until the client confirms all it was sent. Between
        // transactions everything before `wal_end` was read, so the
        // cursor may move there (as for a heartbeat) and the confirmed
        // position can reach what was sent.
        if reply_requested && self.tx.is_none() && wal_end > self.last_lsn {
            self.batch.commit(Position::postgres(wal_end, wal_end));
            self.last_lsn = wal_end;
        }
        // The server has sent everything before `wal_end`: past the stop
        // LSN and between transactions, there is nothing more to read.
        if self.tx.is_none() && self.cfg.stop_at_lsn.is_some_and(|stop| wal_end >= stop) {
            self.ended = true;
        }
    }

    /// Takes in one decoded pgoutput message: a relation's layout is
    /// recorded, a row change or truncate of a configured table becomes
    /// events.
    async fn absorb_message(&mut self, lsn: u64, message: Message) -> Result<(), SourceError> {
        let Some(message) = self.without_unconfigured(message) else {
            return Ok(());
        };
        match message {
            Message::Relation(relation) => self.relation(lsn, relation).await?,
            Message::Type | Message::Origin => {}
            Message::Insert { relation, new } => self.absorb_insert(relation, lsn, &new)?,
            Message::Update { relation, old, new } => {
                self.absorb_update(relation, lsn, old.as_ref(), &new)?
            }
            Message::Delete { relation, old } => self.absorb_delete(relation, lsn, &old)?,
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

    /// The message without the changes of relations outside `source.tables`
    /// (counted as dropped): `None` for a row change of one, a truncate
    /// without them.
    fn without_unconfigured(&self, message: Message) -> Option<Message> {
        match message {
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. }
                if self.unconfigured.contains(&relation) =>
            {
                count_unconfigured(1);
                None
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
                Some(Message::Truncate {
                    relations: configured,
                    cascade,
                    restart_identity,
                })
            }
            message => Some(message),
        }
    }

    /// An insert: the new row, as a create event.
    fn absorb_insert(&mut self, relation: u32, lsn: u64, new: &[Datum]) -> Result<(), SourceError> {
        let schema = self.schema(relation, lsn)?;
        let (after, unchanged) = schema.row(new);
        let key = schema.key_of(&after);
        self.push(Op::Create, relation, lsn, None, Some(after), unchanged, key);
        Ok(())
    }

    /// An update: the new row, and the old one as far as the server sent it.
    fn absorb_update(
        &mut self,
        relation: u32,
        lsn: u64,
        old: Option<&OldRow>,
        new: &[Datum],
    ) -> Result<(), SourceError> {
        let schema = self.schema(relation, lsn)?;
        let (after, unchanged) = schema.row(new);
        let before = match old {
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
        Ok(())
    }

    /// A delete: the old row (whole, or its key only).
    fn absorb_delete(&mut self, relation: u32, lsn: u64, old: &OldRow) -> Result<(), SourceError> {
        let schema = self.schema(relation, lsn)?;
        let before = match old {
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
}

/// Counts changes of tables outside `source.tables`, dropped before the sink.
fn count_unconfigured(changes: u64) {
    metrics::counter!("tidemark_unconfigured_changes_dropped_total").increment(changes);
}
