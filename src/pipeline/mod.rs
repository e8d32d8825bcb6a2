//! The pipeline: source → sink → cursor → source acknowledgement, one way.
//!
//! A reader task pulls batches from the source into a channel of two batches, so
//! reading overlaps writing but a slow sink slows reading instead of growing the
//! heap. The writer hands each batch to the sink. At most every
//! `commit_interval` (and at the first transaction end of a run, and when the
//! source stops) it makes what the sink holds durable, commits the end of the
//! last transaction written to the cursor store, and tells the source (which
//! tells Postgres `flush = X`). A failure
//! anywhere stops the pipeline before the cursor moves past it. The writer loop
//! also ticks the health (and through it systemd's watchdog) and counts what it
//! reads and writes.
//!
//! **Memory is bounded at every stage, so the server keeps a backlog, not
//! tidemark** (issue 21; `tests/it/memory.rs` holds the sink and grows the
//! backlog tenfold; `benches/memory.sh` prints peak RSS against backlog):
//!
//! - the Postgres replication client reads at most 64 messages ahead of the
//!   decoder (`REPLICATION_BUFFER_MESSAGES`; its default was 8,192), one row
//!   change each; the binlog stream is read one event at a time;
//! - a batch ends at `max_batch_events` events or at
//!   `tidemark_connectors::MAX_BATCH_BYTES` (4 MiB) of values, whichever
//!   comes first, so rows of megabytes make small batches; a transaction of
//!   millions of rows is several batches, and the cursor moves at its end;
//! - snapshot chunks and poll pages hold as many rows as fit in 4 MiB at the
//!   size of the largest row read so far (a table's first snapshot chunk is 16
//!   rows), at most `snapshot_chunk_rows` / `page_size`;
//! - between reader and writer: [`BATCHES_IN_FLIGHT`] batches in the channel,
//!   one being read, one being written;
//! - the sinks write one batch at a time: the file sink appends it, Kinesis
//!   sends it in `PutRecords` calls of at most 500 records / 5 MiB and retries
//!   a throttled call with the same records, and a held sink holds the writer,
//!   hence the reader, hence the socket;
//! - `apply` reads the file sink in batches of `max_batch_events` lines or 4
//!   MiB, and Kinesis in `GetRecords` calls of at most 10,000 records (10 MiB,
//!   the service's own cap); `migrate` streams `COPY` chunk by chunk, and its
//!   catch-up is this pipeline.

pub mod assembly;
mod commit;
pub(crate) mod contract;
#[cfg(test)]
mod doubles;
mod reader;
mod replay;
mod writer;

use crate::cursor::CursorError;
use crate::ops::{events, Health};
use crate::sinks::SinkError;
use crate::transform::Transforms;
pub use contract::{Cursor, Sink, Source};
use replay::ReplayWindow;
use std::sync::Arc;
use std::time::Duration;
use tidemark_connectors::mysql::MysqlSource;
use tidemark_connectors::poll::PollSource;
use tidemark_connectors::postgres::PostgresSource;
use tidemark_connectors::{Batch, ChangeEvent, Position, SourceError};
use tokio::sync::{mpsc, watch};
use writer::Writer;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error("source reader task failed: {0}")]
    Reader(String),
    #[error(transparent)]
    Transform(#[from] crate::transform::TransformError),
    /// Stopped from outside for a failure a new session cannot cure (a lost
    /// retention, a lost lease); the message names it and the way back.
    #[error("{0}")]
    Stopped(String),
}

/// A configured source. The set is fixed, so an enum reads plainer than a trait object.
pub enum AnySource {
    Postgres(Box<PostgresSource>),
    Mysql(Box<MysqlSource>),
    Poll(Box<PollSource>),
}

impl contract::Source for AnySource {
    async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        match self {
            AnySource::Postgres(source) => source.next_batch().await,
            AnySource::Mysql(source) => source.next_batch().await,
            AnySource::Poll(source) => source.next_batch().await,
        }
    }

    fn recycle(&mut self, events: Vec<ChangeEvent>) {
        match self {
            AnySource::Postgres(source) => source.recycle(events),
            AnySource::Mysql(source) => source.recycle(events),
            AnySource::Poll(_) => drop(events),
        }
    }

    /// See `PostgresSource::fresh_start`; polling starts from nothing, so a
    /// stop before its first row repeats nothing and loses nothing.
    fn fresh_start(&self) -> Option<Position> {
        match self {
            AnySource::Postgres(source) => source.fresh_start(),
            AnySource::Mysql(source) => source.fresh_start(),
            AnySource::Poll(_) => None,
        }
    }

    async fn close(self) {
        match self {
            AnySource::Postgres(source) => source.close().await,
            AnySource::Mysql(source) => source.close().await,
            AnySource::Poll(source) => source.close().await,
        }
    }
}

/// Makes what the sink was given durable, then commits `end` to the cursor
/// store and tells the source (which tells Postgres `flush = X`).
async fn commit(
    end: Position,
    sink: &mut impl Sink,
    cursor: &mut impl Cursor,
    durable: &watch::Sender<Option<Position>>,
    health: &Health,
) -> Result<Position, PipelineError> {
    sink.sync().await?;
    cursor.commit(&end).await?;
    events::cursor_committed(health, &end);
    durable.send_replace(Some(end.clone()));
    Ok(end)
}

/// A stream-only start without a cursor: commits where it starts, before the
/// daemon says it runs and before anything is read, so a stop or a kill before
/// the first change loses nothing made meanwhile. Returns that position.
pub(crate) async fn commit_fresh_start(
    source: &impl Source,
    sink: &mut impl Sink,
    cursor: &mut impl Cursor,
    durable: &watch::Sender<Option<Position>>,
    health: &Health,
) -> Result<Option<Position>, PipelineError> {
    match source.fresh_start() {
        Some(start) => Ok(Some(commit(start, sink, cursor, durable, health).await?)),
        None => Ok(None),
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub batches: u64,
    pub skipped_duplicates: u64,
    pub cursor: Option<Position>,
    /// Why the pipeline was stopped, when it was (not at a stop position).
    pub stopped_by: Option<crate::ops::stop::StopReason>,
}

/// How many batches wait between the reader and the writer: reading
/// overlaps writing, and a slow sink slows reading.
const BATCHES_IN_FLIGHT: usize = 2;

/// How a run goes, besides its parts.
pub struct Settings<'a> {
    /// Where the source resumed (the sink's replay window starts there).
    pub resumed: Option<&'a Position>,
    pub commit_every: Duration,
    pub health: &'a Health,
    /// Applied by the reader to every batch, before the sink sees it.
    pub transforms: Arc<Transforms>,
}

/// Runs until the source stops (on the stop signal it was given, or at its stop
/// LSN) or something fails.
pub async fn run(
    source: impl Source,
    durable: &watch::Sender<Option<Position>>,
    sink: &mut impl Sink,
    cursor: &mut impl Cursor,
    settings: Settings<'_>,
) -> Result<Summary, PipelineError> {
    let Settings {
        resumed,
        commit_every,
        health,
        transforms,
    } = settings;
    let (batches_tx, mut batches) = mpsc::channel::<Batch>(BATCHES_IN_FLIGHT);
    // Written batches' vectors, emptied on the writer, go back to the reader,
    // which fills them again instead of allocating new ones.
    let (recycle, written) = mpsc::channel::<Vec<ChangeEvent>>(4);
    let reader = reader::spawn(source, batches_tx, written, transforms);
    // After a crash the sink may already hold events past the cursor: skip them.
    let replay = ReplayWindow::new(resumed, sink.last_position());
    let mut writer = Writer::new(sink, cursor, durable, commit_every, replay, recycle, health);
    if let Err(e) = writer.drain(&mut batches).await {
        // The reader may be waiting on an idle stream: end it. The cursor did not
        // move past the failure, so the next start replays from there.
        reader.abort();
        return Err(e);
    }
    let summary = std::mem::take(&mut writer.summary);
    let (source, read) = reader
        .await
        .map_err(|e| PipelineError::Reader(e.to_string()))?;
    source.close().await;
    read?;
    if summary.skipped_duplicates > 0 {
        tracing::info!(
            "skipped {} events the sink already held from before a crash",
            summary.skipped_duplicates
        );
    }
    Ok(summary)
}
