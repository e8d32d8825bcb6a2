//! The writer: hands each batch to the sink, commits when the policy says so
//! (sink sync, cursor commit, source told), and commits the rest when the
//! source stops. It ticks the health between batches and while waiting.

use super::commit::CommitPolicy;
use super::contract::{Cursor, Sink};
use super::replay::{skip_written, ReplayWindow};
use super::{commit, PipelineError, Summary};
use crate::ops::health::tick_every;
use crate::ops::{events, Health};
use std::time::{Duration, Instant};
use tidemark_connectors::{Batch, ChangeEvent, Position};
use tokio::sync::{mpsc, watch};

/// How often the writer logs its progress while it writes.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct Writer<'a, S, C> {
    sink: &'a mut S,
    cursor: &'a mut C,
    durable: &'a watch::Sender<Option<Position>>,
    policy: CommitPolicy,
    replay: Option<ReplayWindow>,
    /// Emptied vectors of written batches, back to the reader.
    recycle: mpsc::Sender<Vec<ChangeEvent>>,
    last_log: Instant,
    health: &'a Health,
    pub(crate) summary: Summary,
}

impl<'a, S: Sink, C: Cursor> Writer<'a, S, C> {
    pub(crate) fn new(
        sink: &'a mut S,
        cursor: &'a mut C,
        durable: &'a watch::Sender<Option<Position>>,
        commit_every: Duration,
        replay: Option<ReplayWindow>,
        recycle: mpsc::Sender<Vec<ChangeEvent>>,
        health: &'a Health,
    ) -> Self {
        Writer {
            sink,
            cursor,
            durable,
            policy: CommitPolicy::new(commit_every, tokio::time::Instant::now()),
            replay,
            recycle,
            last_log: Instant::now(),
            health,
            summary: Summary::default(),
        }
    }

    /// Writes what comes from the reader until it stops, committing as the
    /// policy says, then commits what was written last.
    pub(crate) async fn drain(
        &mut self,
        batches: &mut mpsc::Receiver<Batch>,
    ) -> Result<(), PipelineError> {
        let mut ticker = tokio::time::interval(tick_every());
        loop {
            // The loop ticks between batches and while waiting for one, so the
            // health (and systemd's watchdog) sees it stop only when it is stuck.
            let due = self.policy.due_at();
            let first = tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => Some(batch),
                    None => break,
                },
                _ = ticker.tick() => {
                    events::writer_alive(self.health);
                    continue;
                }
                // No batch for a while, and the last written is not committed yet.
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => None,
            };
            // Batches that queued up while the last ones were written are
            // written in turn.
            let mut queued: Vec<Batch> = first.into_iter().collect();
            while let Ok(more) = batches.try_recv() {
                queued.push(more);
            }
            for batch in queued {
                self.write(batch).await?;
            }
            if let Some(end) = self.policy.take_due(tokio::time::Instant::now()) {
                self.commit(end).await?;
            }
            if self.last_log.elapsed() > PROGRESS_EVERY {
                let s = &self.summary;
                events::progress(s.events, s.batches, s.cursor.as_ref());
                self.last_log = Instant::now();
            }
        }
        // The source has stopped: what was written is committed now.
        if let Some(end) = self.policy.take_rest() {
            self.commit(end).await?;
        }
        Ok(())
    }

    /// One batch to the sink, less what it held from before a crash.
    async fn write(&mut self, mut batch: Batch) -> Result<(), PipelineError> {
        events::delivering(self.health, &batch.events);
        self.summary.skipped_duplicates += skip_written(&mut batch, &mut self.replay);
        // An owner that lost its lease writes nothing more.
        self.cursor.confirm_owner().await?;
        let started = Instant::now();
        if let Err(e) = self.sink.write(&batch.events).await {
            events::write_failed(&batch.events);
            return Err(e.into());
        }
        events::batch_written(self.health, &batch.events, started.elapsed());
        self.summary.events += batch.events.len() as u64;
        self.summary.batches += 1;
        self.policy.written(batch.end.take());
        // The events drop here; the emptied vector goes back to the
        // reader (unless it has stopped or is behind) for a next batch.
        let mut events = batch.events;
        events.clear();
        let _ = self.recycle.try_send(events);
        Ok(())
    }

    async fn commit(&mut self, end: Position) -> Result<(), PipelineError> {
        let committed = commit(end, self.sink, self.cursor, self.durable, self.health).await?;
        self.policy.committed(tokio::time::Instant::now());
        self.summary.cursor = Some(committed);
        Ok(())
    }
}
