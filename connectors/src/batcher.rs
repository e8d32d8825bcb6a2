//! Collects a source's events into batches that end on transaction boundaries,
//! the same way for every connector.
//!
//! Events of a transaction still being read may ride along in a batch (a large
//! transaction is split), but a batch's `end` always names the end of the last
//! transaction completed in it, so the cursor never lands mid-transaction.

use crate::event::{Batch, ChangeEvent, Position};
use std::time::Duration;
use tokio::time::Instant;

/// See [`Batcher::empty_end_due`].
pub(crate) const EMPTY_BATCH_DELAY: Duration = Duration::from_secs(1);

/// A batch is handed on once its events hold about this many bytes of
/// values, whatever `max_batch_events` says: with rows of megabytes (TOAST,
/// BLOB, JSON) a batch of 1,024 events would otherwise hold gigabytes.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Rows a table's first snapshot chunk reads, before its row size is known.
const FIRST_CHUNK_ROWS: usize = 16;

/// Rows for a table's next snapshot chunk: as many as fit in
/// [`MAX_BATCH_BYTES`] at the size of the largest row read so far
/// (`largest_row`, 0 before any), at least one and at most `max_rows` (the
/// configured `snapshot_chunk_rows`). A table starts with a few rows, so
/// that the first chunk of a table of huge rows is small too.
pub(crate) fn snapshot_chunk_rows(largest_row: usize, max_rows: usize) -> usize {
    if largest_row == 0 {
        return max_rows.clamp(1, FIRST_CHUNK_ROWS);
    }
    rows_that_fit(largest_row, max_rows)
}

/// As many rows of `largest_row` bytes as fit in [`MAX_BATCH_BYTES`], at
/// least one and at most `max_rows` (all of them while the size is unknown).
pub(crate) fn rows_that_fit(largest_row: usize, max_rows: usize) -> usize {
    let max_rows = max_rows.max(1);
    match largest_row {
        0 => max_rows,
        n => (MAX_BATCH_BYTES / n).clamp(1, max_rows),
    }
}

/// The largest of `events`' sizes (see [`ChangeEvent::value_bytes`]).
pub(crate) fn largest_event(events: &[ChangeEvent]) -> usize {
    events
        .iter()
        .map(ChangeEvent::value_bytes)
        .max()
        .unwrap_or(0)
}

#[derive(Default)]
pub(crate) struct Batcher {
    events: Vec<ChangeEvent>,
    /// How many of `events` belong to transactions whose commit was read.
    complete: usize,
    /// End of the last complete transaction not yet handed on, and since when.
    end: Option<(Position, Instant)>,
    /// An emptied vector of a batch already written, reused for the next one.
    spare: Option<Vec<ChangeEvent>>,
    /// About how many bytes of values `events` hold.
    bytes: usize,
}

impl Batcher {
    pub(crate) fn push(&mut self, event: ChangeEvent) {
        self.bytes += event.value_bytes();
        self.events.push(event);
    }

    /// True when the batch is due by size: `max_events` events, or
    /// [`MAX_BATCH_BYTES`] of values.
    pub(crate) fn is_full(&self, max_events: usize) -> bool {
        self.events.len() >= max_events.max(1) || self.bytes >= MAX_BATCH_BYTES
    }

    /// A transaction's commit was read; `end` is where reading resumes after it.
    pub(crate) fn commit(&mut self, end: Position) {
        self.complete = self.events.len();
        self.end = Some((end, Instant::now()));
    }

    /// True when complete transactions with events wait to be handed on.
    pub(crate) fn has_complete_events(&self) -> bool {
        self.complete > 0
    }

    /// The end of the last complete transaction not yet handed on.
    pub(crate) fn end(&self) -> Option<&Position> {
        self.end.as_ref().map(|(p, _)| p)
    }

    /// When a batch holding only the end of transactions without captured
    /// changes is due: a moment after that end was read, so that a busy server's
    /// foreign transactions do not cost one cursor write each.
    pub(crate) fn empty_end_due(&self) -> Option<Instant> {
        self.end
            .as_ref()
            .map(|(_, since)| *since + EMPTY_BATCH_DELAY)
    }

    /// Everything read so far; `end` covers the complete transactions in it.
    pub(crate) fn take(&mut self) -> Batch {
        self.complete = 0;
        self.bytes = 0;
        // A vector of a written batch, or one the size of this batch.
        let next = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(self.events.len()));
        Batch {
            events: std::mem::replace(&mut self.events, next),
            end: self.end.take().map(|(p, _)| p),
        }
    }

    /// Takes back the events of a batch the sink has written: they are dropped
    /// here, on the reading thread that allocated them (frees stay local to the
    /// allocator's thread, so memory is reused while warm instead of being faulted
    /// in afresh), and the vector serves the next batch.
    pub(crate) fn recycle(&mut self, mut events: Vec<ChangeEvent>) {
        events.clear();
        if self.spare.is_none() {
            self.spare = Some(events);
        }
    }

    /// On stop: only complete transactions, so the cursor lands on the last
    /// event written; the rest is read again on the next start.
    pub(crate) fn take_complete(&mut self) -> Option<Batch> {
        self.events.truncate(self.complete);
        let batch = self.take();
        (!batch.events.is_empty() || batch.end.is_some()).then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Image, Op, Row, SourceInfo};
    use serde_json::Value;
    use std::sync::Arc;

    fn event(bytes: usize) -> ChangeEvent {
        let source = Arc::new(SourceInfo::new(
            "postgres",
            "p".into(),
            "d".into(),
            "s".into(),
            "t".into(),
            0,
        ));
        let row = Row(vec![("v".into(), Value::String("x".repeat(bytes)))]);
        ChangeEvent::row(
            Op::Create,
            None,
            Some(Image::Values(row)),
            None,
            source,
            Position::postgres(1, 1),
            0,
        )
    }

    #[test]
    fn a_batch_is_full_at_its_event_count_or_its_bytes() {
        let mut small = Batcher::default();
        for _ in 0..9 {
            small.push(event(10));
        }
        assert!(!small.is_full(10));
        small.push(event(10));
        assert!(small.is_full(10));

        let mut large = Batcher::default();
        for _ in 0..3 {
            large.push(event(1 << 20));
        }
        assert!(!large.is_full(1024));
        large.push(event(1 << 20));
        assert!(large.is_full(1024), "4 MiB of values in 4 events");
        let _ = large.take();
        assert!(!large.is_full(1024), "a taken batch starts empty");
    }

    #[test]
    fn chunks_and_pages_hold_what_fits_in_the_byte_bound() {
        assert_eq!(snapshot_chunk_rows(0, 10_000), 16);
        assert_eq!(snapshot_chunk_rows(0, 4), 4);
        assert_eq!(snapshot_chunk_rows(100, 10_000), 10_000);
        assert_eq!(snapshot_chunk_rows(2 << 20, 10_000), 2);
        assert_eq!(snapshot_chunk_rows(64 << 20, 10_000), 1);
        assert_eq!(rows_that_fit(0, 1000), 1000);
        assert_eq!(rows_that_fit(1 << 20, 1000), 4);
    }
}
