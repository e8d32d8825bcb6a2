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

use crate::cursor::{CursorError, CursorStore};
use crate::ops::health::tick_every;
use crate::ops::{health, metrics, Phase};
use crate::sinks::{AnySink, SinkError};
use std::time::{Duration, Instant};
use tidemark_connectors::mysql::MysqlSource;
use tidemark_connectors::poll::PollSource;
use tidemark_connectors::postgres::PostgresSource;
use tidemark_connectors::{Batch, ChangeEvent, Position, SourceError};
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

impl AnySource {
    async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        match self {
            AnySource::Postgres(source) => source.next_batch().await,
            AnySource::Mysql(source) => source.next_batch().await,
            AnySource::Poll(source) => source.next_batch().await,
        }
    }

    /// Takes back the events of a written batch, to drop them on the reading
    /// thread and reuse their vector.
    fn recycle(&mut self, events: Vec<ChangeEvent>) {
        match self {
            AnySource::Postgres(source) => source.recycle(events),
            AnySource::Mysql(source) => source.recycle(events),
            AnySource::Poll(_) => drop(events),
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

/// The log a position string belongs to (`pg`, `my`), within which positions
/// only grow, so an event at or before the sink's last line was written before.
/// `None` for polling: a late commit re-read inside the lag window sorts before
/// rows already written, so only the poll source can tell a repeat (it does, for
/// tables where positions only grow).
fn dedup_scope(position: &str) -> Option<&str> {
    if position.starts_with("poll:") {
        return None;
    }
    position.find(':').map(|end| &position[..end])
}

/// Drops the events the sink already holds from before a crash (at or before
/// its last line, within the same log), and returns how many; once an event
/// past that line comes, `resume_after` is cleared and nothing more is checked.
fn skip_written(batch: &mut Batch, resume_after: &mut Option<String>) -> u64 {
    let Some(last) = resume_after.as_deref() else {
        return 0;
    };
    let before = batch.events.len();
    let mut passed = false;
    batch.events.retain(|e| {
        let position = e.position.to_string();
        let scope = dedup_scope(&position);
        if scope.is_none() || scope != dedup_scope(last) {
            return true;
        }
        let keep = position.as_str() > last;
        passed |= keep;
        keep
    });
    if passed {
        *resume_after = None;
    }
    (before - batch.events.len()) as u64
}

/// Makes what the sink was given durable, then commits `end` to the cursor
/// store and tells the source (which tells Postgres `flush = X`).
async fn commit(
    end: Position,
    sink: &mut AnySink,
    cursor: &mut CursorStore,
    durable: &watch::Sender<Option<Position>>,
) -> Result<Position, PipelineError> {
    sink.sync().await?;
    cursor.commit(&end).await?;
    ::metrics::counter!("tidemark_cursor_commits_total").increment(1);
    health().committed(end.to_string());
    durable.send_replace(Some(end.clone()));
    Ok(end)
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
    mut source: AnySource,
    durable: watch::Sender<Option<Position>>,
    sink: &mut AnySink,
    cursor: &mut CursorStore,
    commit_every: Duration,
) -> Result<Summary, PipelineError> {
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

    let mut summary = Summary::default();
    // After a crash the sink may already hold events past the cursor: skip them.
    let mut resume_after = sink.last_position().map(str::to_owned);
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
                summary.skipped_duplicates += skip_written(&mut batch, &mut resume_after);
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
                    summary.cursor = Some(commit(end, sink, cursor, &durable).await?);
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
            summary.cursor = Some(commit(end, sink, cursor, &durable).await?);
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
    use super::dedup_scope;

    #[test]
    fn positions_compare_only_within_a_log_and_never_for_polling() {
        assert_eq!(
            dedup_scope("pg:0000000000000100:0000000000000090"),
            Some("pg")
        );
        assert_eq!(
            dedup_scope("my:00000001:0000000000000004:00000000"),
            Some("my")
        );
        // Polled positions are left to the poll source, which knows when they only grow.
        assert_eq!(
            dedup_scope("poll:public.a=2026-11-21T00:00:00.000000Z:1"),
            None
        );
    }
}
