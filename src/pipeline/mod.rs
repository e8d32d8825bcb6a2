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

pub mod contract;
#[cfg(test)]
mod doubles;

use crate::cursor::CursorError;
use crate::ops::health::tick_every;
use crate::ops::{health, metrics, Phase};
use crate::sinks::SinkError;
pub use contract::{Cursor, Sink, Source};
use std::cmp::Ordering;
use std::time::{Duration, Instant};
use tidemark_connectors::mysql::MysqlSource;
use tidemark_connectors::poll::PollSource;
use tidemark_connectors::postgres::PostgresSource;
use tidemark_connectors::{Batch, ChangeEvent, Position, PositionKey, SourceError};
use tokio::sync::{mpsc, watch};

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

/// Where the sink's own replay skip applies after a crash: events after the
/// cursor and at or before the sink's last line were written before and are
/// dropped. Only when the cursor and that line are of the same log, and the
/// line lies past the cursor (the sink says which source wrote it: a line of
/// another source is not offered, see `FileSink::open`). Polled positions are
/// never skipped here: the poll source tells repeats itself.
#[derive(Debug)]
struct ReplayWindow {
    cursor: PositionKey,
    last_written: PositionKey,
}

impl ReplayWindow {
    fn new(cursor: Option<&Position>, last_written: Option<&str>) -> Option<Self> {
        let cursor = cursor?.key();
        let last_written = match PositionKey::parse(last_written?) {
            Ok(key) => key?,
            Err(e) => {
                tracing::warn!("the sink's last line has {e}: nothing is skipped as a replay");
                return None;
            }
        };
        (last_written.partial_cmp(&cursor) == Some(Ordering::Greater)).then_some(ReplayWindow {
            cursor,
            last_written,
        })
    }

    fn holds(&self, position: &Position) -> bool {
        let key = position.key();
        key.partial_cmp(&self.cursor) == Some(Ordering::Greater)
            && matches!(
                key.partial_cmp(&self.last_written),
                Some(Ordering::Less | Ordering::Equal)
            )
    }
}

/// Drops the events the sink already holds from before a crash (see
/// [`ReplayWindow`]) and returns how many; once an event past the window
/// comes, the window is closed and nothing more is checked.
fn skip_written(batch: &mut Batch, window: &mut Option<ReplayWindow>) -> u64 {
    let Some(replay) = window.as_ref() else {
        return 0;
    };
    let before = batch.events.len();
    let mut passed = false;
    batch.events.retain(|e| {
        let keep = !replay.holds(&e.position);
        passed |= keep;
        keep
    });
    if passed {
        *window = None;
    }
    (before - batch.events.len()) as u64
}

/// Makes what the sink was given durable, then commits `end` to the cursor
/// store and tells the source (which tells Postgres `flush = X`).
async fn commit(
    end: Position,
    sink: &mut impl Sink,
    cursor: &mut impl Cursor,
    durable: &watch::Sender<Option<Position>>,
) -> Result<Position, PipelineError> {
    sink.sync().await?;
    cursor.commit(&end).await?;
    ::metrics::counter!("tidemark_cursor_commits_total").increment(1);
    health().committed(end.to_string());
    durable.send_replace(Some(end.clone()));
    Ok(end)
}

/// A stream-only start without a cursor: commits where it starts, before the
/// daemon says it runs and before anything is read, so a stop or a kill before
/// the first change loses nothing made meanwhile. Returns that position.
pub async fn commit_fresh_start(
    source: &impl Source,
    sink: &mut impl Sink,
    cursor: &mut impl Cursor,
    durable: &watch::Sender<Option<Position>>,
) -> Result<Option<Position>, PipelineError> {
    match source.fresh_start() {
        Some(start) => Ok(Some(commit(start, sink, cursor, durable).await?)),
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
}

/// Runs until the source stops (on the stop signal it was given, or at its stop
/// LSN) or something fails.
pub async fn run(
    mut source: impl Source,
    durable: &watch::Sender<Option<Position>>,
    sink: &mut impl Sink,
    cursor: &mut impl Cursor,
    resumed: Option<&Position>,
    commit_every: Duration,
) -> Result<Summary, PipelineError> {
    let mut summary = Summary::default();
    let (tx, mut rx) = mpsc::channel::<Batch>(2);
    // Written batches' vectors, emptied on the writer, go back to the reader,
    // which fills them again instead of allocating new ones.
    let (written_tx, mut written_rx) = mpsc::channel::<Vec<ChangeEvent>>(4);
    let reader = tokio::spawn(async move {
        let result = loop {
            while let Ok(events) = written_rx.try_recv() {
                source.recycle(events);
            }
            match source.next_batch().await {
                Ok(Some(batch)) => {
                    metrics::count_events("tidemark_events_read_total", &batch.events);
                    if tx.send(batch).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        (source, result)
    });

    // After a crash the sink may already hold events past the cursor: skip them.
    let mut replay = ReplayWindow::new(resumed, sink.last_position());
    let mut last_log = Instant::now();
    let mut ticker = tokio::time::interval(tick_every());
    // The end of the last transaction written, while not yet committed.
    let mut uncommitted: Option<Position> = None;
    let mut last_commit = tokio::time::Instant::now();
    let written = async {
        loop {
            // The loop ticks between batches and while waiting for one, so the
            // health (and systemd's watchdog) sees it stop only when it is stuck.
            let commit_due = last_commit + commit_every;
            let first = tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => Some(batch),
                    None => break,
                },
                _ = ticker.tick() => {
                    health().tick();
                    continue;
                }
                // No batch for a while, and the last written is not committed yet.
                _ = tokio::time::sleep_until(commit_due), if uncommitted.is_some() => None,
            };
            // Batches that queued up while the last ones were written are
            // written in turn.
            let mut queued: Vec<Batch> = first.into_iter().collect();
            while let Ok(more) = rx.try_recv() {
                queued.push(more);
            }
            for mut batch in queued {
                health().tick();
                // The phase of what is being delivered: snapshot events say so;
                // anything else (the empty batch that ends a snapshot, too) streams.
                let snapshot = batch.events.first().is_some_and(|e| e.source.snapshot);
                health().set_phase(if snapshot {
                    Phase::Snapshot
                } else {
                    Phase::Streaming
                });
                if let Some(first) = batch.events.first() {
                    health().read(batch.events.len(), first.source.ts_ms);
                }
                summary.skipped_duplicates += skip_written(&mut batch, &mut replay);
                // An owner that lost its lease writes nothing more.
                cursor.confirm_owner().await?;
                let started = Instant::now();
                if let Err(e) = sink.write(&batch.events).await {
                    metrics::count_events("tidemark_events_failed_total", &batch.events);
                    return Err(e.into());
                }
                ::metrics::histogram!("tidemark_sink_write_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                ::metrics::histogram!("tidemark_batch_size_events")
                    .record(batch.events.len() as f64);
                ::metrics::counter!("tidemark_batches_total").increment(1);
                metrics::count_events("tidemark_events_written_total", &batch.events);
                health().written(
                    batch.events.len(),
                    batch.events.last().map_or(0, |e| e.source.ts_ms),
                );
                summary.events += batch.events.len() as u64;
                summary.batches += 1;
                if batch.end.is_some() {
                    uncommitted = batch.end.take();
                }
                // The events drop here; the emptied vector goes back to the
                // reader (unless it has stopped or is behind) for a next batch.
                let mut events = batch.events;
                events.clear();
                let _ = written_tx.try_send(events);
            }
            // The cursor moves at most every `commit_every`: a busy stream
            // costs one sink sync and one cursor write per interval, not per
            // batch. The first end of a run is committed at once: until then a
            // crash would start over (a new snapshot, whose rows carry new
            // positions) instead of replaying with the same ones.
            let first_of_run = summary.cursor.is_none();
            if uncommitted.is_some() && (first_of_run || tokio::time::Instant::now() >= commit_due)
            {
                if let Some(end) = uncommitted.take() {
                    summary.cursor = Some(commit(end, sink, cursor, durable).await?);
                }
                last_commit = tokio::time::Instant::now();
            }
            if last_log.elapsed() > Duration::from_secs(10) {
                tracing::info!(
                    "{} events in {} batches; cursor at {}",
                    summary.events,
                    summary.batches,
                    summary
                        .cursor
                        .as_ref()
                        .map_or("-".into(), |p| p.to_string())
                );
                last_log = Instant::now();
            }
        }
        // The source has stopped: what was written is committed now.
        if let Some(end) = uncommitted.take() {
            summary.cursor = Some(commit(end, sink, cursor, durable).await?);
        }
        Ok::<(), PipelineError>(())
    }
    .await;
    if let Err(e) = written {
        // The reader may be waiting on an idle stream: end it. The cursor did not
        // move past the failure, so the next start replays from there.
        reader.abort();
        return Err(e);
    }
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

#[cfg(test)]
mod tests {
    use super::doubles::batch;
    use super::*;

    #[test]
    fn a_replay_of_rows_sharing_an_lsn_skips_only_those_written() {
        // One COPY: rows 1..=5 share the LSN 0x400; rows 1..=3 reached the sink.
        let cursor = Position::postgres(0x300, 0x320);
        let last = Position::postgres_change(0x500, 0x400, 3).to_string();
        let mut window = ReplayWindow::new(Some(&cursor), Some(&last));
        let mut replayed = batch((1..=5).map(|seq| Position::postgres_change(0x500, 0x400, seq)));
        assert_eq!(skip_written(&mut replayed, &mut window), 3);
        let kept: Vec<String> = replayed
            .events
            .iter()
            .map(|e| e.position.to_string())
            .collect();
        assert_eq!(
            kept,
            [4, 5].map(|seq| Position::postgres_change(0x500, 0x400, seq).to_string())
        );
        assert!(window.is_none());
    }

    #[test]
    fn nothing_is_skipped_without_a_cursor_or_behind_it() {
        let last = Position::postgres_change(0x900, 0x800, 1).to_string();
        // No cursor (reset): a new snapshot or stream is written whole.
        assert!(ReplayWindow::new(None, Some(&last)).is_none());
        // A cursor past the sink's last line: nothing there to skip.
        let ahead = Position::postgres(0x1000, 0x1000);
        assert!(ReplayWindow::new(Some(&ahead), Some(&last)).is_none());
        // Another log's line, or a polled one, is never compared.
        let binlog = Position::Mysql {
            file: "bin.000001".into(),
            pos: 4,
            row: None,
            gtid: None,
        };
        assert!(ReplayWindow::new(Some(&binlog), Some(&last)).is_none());
        assert!(ReplayWindow::new(
            Some(&Position::postgres(1, 1)),
            Some("poll:public.t=2026-11-21T00:00:00.000000Z:1")
        )
        .is_none());
    }
}
