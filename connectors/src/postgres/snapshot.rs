//! The initial snapshot: every row of the captured tables as of the slot's
//! consistent point, read in key-ordered chunks.
//!
//! The slot is created with `EXPORT_SNAPSHOT` and this reader's transaction imports
//! that snapshot (`SET TRANSACTION SNAPSHOT`), so it sees exactly the transactions
//! committed before the slot's consistent point, and the stream starts with the
//! first one after it: no gap and no overlap. Chunks are keyset pages
//! (`WHERE key > last ORDER BY key LIMIT n`; `ctid` for tables without a primary
//! key) inside that one transaction, so memory holds one chunk at a time.

use super::catalog::{self, TableShape, TypeKinds};
use super::table::{Column, TableSchema};
use crate::batcher::{largest_event, snapshot_chunk_rows};
use crate::event::{now_ms, ChangeEvent, Op, Position, SourceInfo};
use crate::progress::SnapshotProgress;
use crate::sql::postgres::{literal, quote_ident};
use crate::SourceError;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio_postgres::{Client, CopyOutStream, SimpleQueryMessage, SimpleQueryRow};

struct TableReader {
    schema: TableSchema,
    /// `SELECT ... FROM t`, then `WHERE (key) > (...)` when paging on.
    select: String,
    /// The paging key: its ORDER BY list and, per column, the type to cast to.
    order: String,
    key_types: Vec<String>,
    /// Text of the paging key of the last row read (`ctid` or the primary key).
    last_key: Option<Vec<String>>,
    /// Reading a key range: its inclusive upper end.
    upper: Option<Vec<String>>,
    /// Positions in the selected row of the paging key columns.
    paging: Vec<usize>,
    rows_done: u64,
    estimated_rows: i64,
    /// The largest row read so far, in bytes: it sizes the next chunk.
    largest_row: usize,
}

pub struct Snapshot {
    client: Client,
    pending: VecDeque<TableReader>,
    consistent_point: u64,
    row_ordinal: u64,
    chunk_rows: i64,
    pipeline: Arc<str>,
    db: Arc<str>,
    progress: SnapshotProgress,
}

impl Snapshot {
    /// Opens the snapshot transaction on `client` and plans each table's reads.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin(
        client: Client,
        snapshot_name: &str,
        consistent_point: u64,
        shapes: Vec<TableShape>,
        kinds: &mut TypeKinds,
        chunk_rows: usize,
        pipeline: Arc<str>,
        db: Arc<str>,
    ) -> Result<Self, SourceError> {
        let fail = |what: String| move |source| SourceError::Postgres { what, source };
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(fail("begin the snapshot transaction".into()))?;
        // The snapshot name comes from the server; it is hex digits and dashes.
        if !snapshot_name
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(SourceError::Setup(format!(
                "server returned an unexpected snapshot name {snapshot_name:?}"
            )));
        }
        client
            .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot_name}'"))
            .await
            .map_err(fail(format!("import snapshot {snapshot_name}")))?;
        let mut pending = VecDeque::new();
        for shape in shapes {
            pending.push_back(plan(&client, shape, kinds).await?);
        }
        Ok(Snapshot {
            client,
            pending,
            consistent_point,
            row_ordinal: 0,
            chunk_rows: chunk_rows.max(1) as i64,
            pipeline,
            db,
            progress: SnapshotProgress::default(),
        })
    }

    /// Reads one table's key range `(lo, hi]` (open ends when `None`) in an
    /// ordinary transaction of its own: a chunk of `tidemark migrate`'s copy.
    #[allow(clippy::too_many_arguments)]
    pub async fn range(
        client: Client,
        shape: TableShape,
        kinds: &mut TypeKinds,
        lo: Option<Vec<String>>,
        hi: Option<Vec<String>>,
        chunk_rows: usize,
        pipeline: Arc<str>,
        db: Arc<str>,
    ) -> Result<Self, SourceError> {
        if shape.primary_key.is_empty() {
            return Err(SourceError::Setup(format!(
                "{} has no primary key: it cannot be copied in key ranges",
                shape.name
            )));
        }
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|source| SourceError::Postgres {
                what: "begin a copy transaction".into(),
                source,
            })?;
        let mut reader = plan(&client, shape, kinds).await?;
        reader.last_key = lo;
        reader.upper = hi;
        Ok(Snapshot {
            client,
            pending: VecDeque::from([reader]),
            consistent_point: 0,
            row_ordinal: 0,
            chunk_rows: chunk_rows.max(1) as i64,
            pipeline,
            db,
            progress: SnapshotProgress::default(),
        })
    }

    /// The whole range of a [`Snapshot::range`] reader as `COPY … TO STDOUT`
    /// text (rows in key order, each value in its type's text output form),
    /// with the names of the columns in it: `tidemark migrate` streams this
    /// into `COPY … FROM STDIN` when both ends are Postgres. The read stays in
    /// the reader's transaction.
    pub async fn copy_out(&self) -> Result<(Vec<Arc<str>>, CopyOutStream), SourceError> {
        let reader = self
            .pending
            .front()
            .ok_or_else(|| SourceError::Setup("copy_out: the range was read already".into()))?;
        let columns = reader
            .schema
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let stream = self
            .client
            .copy_out(&format!("COPY ({}) TO STDOUT", reader.query()))
            .await
            .map_err(|source| SourceError::Postgres {
                what: format!(
                    "copy {} after key {:?}",
                    reader.schema.name, reader.last_key
                ),
                source,
            })?;
        Ok((columns, stream))
    }

    pub(crate) fn consistent_point(&self) -> u64 {
        self.consistent_point
    }

    /// Reads the next chunk as `op: "r"` events; `None` once every table is read.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<ChangeEvent>>, SourceError> {
        loop {
            let Some(reader) = self.pending.front_mut() else {
                self.client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|source| SourceError::Postgres {
                        what: "end the snapshot transaction".into(),
                        source,
                    })?;
                return Ok(None);
            };
            let limit = snapshot_chunk_rows(reader.largest_row, self.chunk_rows as usize);
            let rows = fetch_chunk(&self.client, reader, limit as i64).await?;
            let finished = rows.len() < limit;
            let events = reader.events(
                &rows,
                &mut self.row_ordinal,
                self.consistent_point,
                &self.pipeline,
                &self.db,
            );
            reader.largest_row = reader.largest_row.max(largest_event(&events));
            reader.page_past(&rows);
            self.progress.chunk(
                &reader.schema.name,
                reader.rows_done,
                reader.estimated_rows.max(0) as u64,
                finished,
            );
            if finished {
                self.pending.pop_front();
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
    }
}

/// The next `limit` rows of `reader`'s table after its last key.
async fn fetch_chunk(
    client: &Client,
    reader: &TableReader,
    limit: i64,
) -> Result<Vec<SimpleQueryRow>, SourceError> {
    // The simple query protocol returns each value in its type's text
    // output form, the same text pgoutput sends (a cast to text would not
    // be: `bool::text` is `true`, pgoutput says `t`).
    let sql = format!("{} LIMIT {}", reader.query(), limit);
    Ok(client
        .simple_query(&sql)
        .await
        .map_err(|source| SourceError::Postgres {
            what: format!(
                "read snapshot chunk of {} after key {:?}",
                reader.schema.name, reader.last_key
            ),
            source,
        })?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect())
}

impl TableReader {
    /// A chunk's rows as `op: "r"` events at the consistent point, numbered
    /// on from `row_ordinal` (the snapshot's count, shared by its tables).
    fn events(
        &self,
        rows: &[SimpleQueryRow],
        row_ordinal: &mut u64,
        consistent_point: u64,
        pipeline: &Arc<str>,
        db: &Arc<str>,
    ) -> Vec<ChangeEvent> {
        let table = &self.schema.name;
        let mut events = Vec::with_capacity(rows.len());
        let ts_ms = now_ms();
        let ncols = self.schema.columns.len();
        for row in rows {
            let after = self.schema.row_from_text((0..ncols).map(|i| row.get(i)));
            *row_ordinal += 1;
            let key = self.schema.key_of(&after);
            let source = Arc::new(SourceInfo {
                snapshot: true,
                lsn: Some(consistent_point),
                commit_lsn: Some(consistent_point),
                ..SourceInfo::new(
                    "postgres",
                    pipeline.clone(),
                    db.clone(),
                    table.schema.clone(),
                    table.table.clone(),
                    ts_ms,
                )
            });
            let position = Position::Postgres {
                commit_lsn: consistent_point,
                lsn: 0,
                snapshot_row: Some(*row_ordinal),
                seq: None,
            };
            events.push(ChangeEvent::row(
                Op::Read,
                None,
                Some(after.into()),
                key,
                source,
                position,
                ts_ms,
            ));
        }
        events
    }

    /// Moves the next page past a chunk: after the paging key of its last row.
    fn page_past(&mut self, rows: &[SimpleQueryRow]) {
        if let Some(last) = rows.last() {
            self.last_key = Some(
                self.paging
                    .iter()
                    .map(|&i| last.get(i).unwrap_or_default().to_string())
                    .collect(),
            );
        }
        self.rows_done += rows.len() as u64;
    }

    /// The rows after `last_key` (up to `upper`), in key order.
    fn query(&self) -> String {
        let values = |key: &[String]| -> String {
            key.iter()
                .zip(&self.key_types)
                .map(|(v, t)| format!("{}::{t}", literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut conditions = Vec::new();
        if let Some(key) = &self.last_key {
            conditions.push(format!("({}) > ({})", self.order, values(key)));
        }
        if let Some(key) = &self.upper {
            conditions.push(format!("({}) <= ({})", self.order, values(key)));
        }
        let bound = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        format!("{}{bound} ORDER BY {}", self.select, self.order)
    }
}

/// Builds the table's schema and its two paging queries.
async fn plan(
    client: &Client,
    shape: TableShape,
    kinds: &mut TypeKinds,
) -> Result<TableReader, SourceError> {
    let mut columns = Vec::with_capacity(shape.columns.len());
    for (name, oid) in &shape.columns {
        columns.push(Column {
            name: name.as_str().into(),
            type_oid: *oid,
            type_modifier: -1,
            kind: kinds.kind(client, *oid).await?,
        });
    }
    let index_of = |name: &str| shape.columns.iter().position(|(n, _)| n == name);
    let (key, paging, order, key_types) = if shape.primary_key.is_empty() {
        // No primary key: page by physical row id; the key is the whole row.
        let ctid = shape.columns.len();
        (
            (0..ctid).collect::<Vec<_>>(),
            vec![ctid],
            "ctid".to_string(),
            vec!["tid".to_string()],
        )
    } else {
        let mut key = Vec::new();
        let mut types = Vec::new();
        for name in &shape.primary_key {
            let idx = index_of(name).ok_or_else(|| {
                SourceError::Setup(format!(
                    "primary key column {name} of {} is not published",
                    shape.name
                ))
            })?;
            types.push(catalog::type_name(client, shape.columns[idx].1, -1).await?);
            key.push(idx);
        }
        let order: Vec<String> = shape.primary_key.iter().map(|n| quote_ident(n)).collect();
        (key.clone(), key, order.join(", "), types)
    };
    let mut select_list: Vec<String> = shape
        .columns
        .iter()
        .map(|(name, _)| quote_ident(name))
        .collect();
    if shape.primary_key.is_empty() {
        select_list.push("ctid".into());
    }
    Ok(TableReader {
        select: format!(
            "SELECT {} FROM {}",
            select_list.join(", "),
            shape.name.quoted()
        ),
        order,
        key_types,
        schema: TableSchema {
            name: shape.name.clone(),
            columns,
            key,
        },
        last_key: None,
        upper: None,
        paging,
        rows_done: 0,
        estimated_rows: shape.estimated_rows,
        largest_row: 0,
    })
}

impl crate::snapshot_then_stream::Snapshot for Snapshot {
    fn next_chunk(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Vec<ChangeEvent>>, SourceError>> + Send
    {
        Snapshot::next_chunk(self)
    }
}
