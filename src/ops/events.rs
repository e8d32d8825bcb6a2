//! What the daemon reports as it works, one function per event: each records
//! the metric, updates the health and writes the log line that go with it, so
//! that the three never disagree and no caller names a metric itself.

use super::health::{Health, Phase};
use super::metrics::count_events;
use std::time::Duration;
use tidemark_connectors::{ChangeEvent, Position};

/// The reader took a batch from the source.
pub(crate) fn batch_read(events: &[ChangeEvent]) {
    count_events("tidemark_events_read_total", events);
}

/// The writer loop is alive (between batches and while waiting for one).
pub(crate) fn writer_alive(health: &Health) {
    health.tick();
}

/// A batch is about to be written: the phase of what is delivered (snapshot
/// events say so; anything else, the empty batch that ends a snapshot too,
/// streams) and how far behind its first event is.
pub(crate) fn delivering(health: &Health, events: &[ChangeEvent]) {
    health.tick();
    let snapshot = events.first().is_some_and(|e| e.source.snapshot);
    health.set_phase(if snapshot {
        Phase::Snapshot
    } else {
        Phase::Streaming
    });
    if let Some(first) = events.first() {
        health.read(events.len(), first.source.ts_ms);
    }
}

/// The sink refused a batch.
pub(crate) fn write_failed(events: &[ChangeEvent]) {
    count_events("tidemark_events_failed_total", events);
}

/// The sink took a batch, in `took`.
pub(crate) fn batch_written(health: &Health, events: &[ChangeEvent], took: Duration) {
    metrics::histogram!("tidemark_sink_write_duration_seconds").record(took.as_secs_f64());
    metrics::histogram!("tidemark_batch_size_events").record(events.len() as f64);
    metrics::counter!("tidemark_batches_total").increment(1);
    count_events("tidemark_events_written_total", events);
    health.written(events.len(), events.last().map_or(0, |e| e.source.ts_ms));
}

/// The cursor store holds `position` now.
pub(crate) fn cursor_committed(health: &Health, position: &Position) {
    metrics::counter!("tidemark_cursor_commits_total").increment(1);
    health.committed(position.to_string());
}

/// The writer's progress line (every few seconds while it writes).
pub fn progress(events: u64, batches: u64, cursor: Option<&Position>) {
    tracing::info!(
        "{events} events in {batches} batches; cursor at {}",
        cursor.map_or("-".into(), |p| p.to_string())
    );
}

/// A session failed with something a new one may cure; the next starts in
/// `wait` (attempt `attempt`, failing for `failing`).
pub fn reconnecting(health: &Health, error: &str, wait: Duration, attempt: u32, failing: Duration) {
    metrics::counter!("tidemark_reconnects_total").increment(1);
    health.set_phase(Phase::Starting);
    health.set_problem(
        "source",
        Some(format!(
            "reconnecting (attempt {attempt}, failing for {failing:.0?}): {error}"
        )),
    );
    tracing::warn!(
        "{error}; reconnecting in {wait:.1?} (attempt {attempt}, failing for {failing:.0?})"
    );
}

/// A session got going again after `attempts` failed ones.
pub fn reconnected(health: &Health, attempts: u32) {
    health.set_phase(Phase::Streaming);
    health.set_problem("source", None);
    tracing::info!("reconnected after {attempts} attempts");
}

/// The Kinesis sink skipped an event over the record limit (policy
/// `skip-and-count`).
pub(crate) fn oversized_skipped(table: String, bytes: usize, limit: usize, position: &str) {
    tracing::warn!(
        "kinesis: skipped an event of {bytes} bytes (limit {limit}) on {table} at {position}"
    );
    metrics::counter!("tidemark_events_skipped_total", "table" => table, "reason" => "oversized")
        .increment(1);
}

/// This instance holds the pipeline's lease (DynamoDB), or no longer does.
pub(crate) fn lease_held(held: bool) {
    metrics::gauge!("tidemark_lease_held").set(if held { 1.0 } else { 0.0 });
}

/// `tidemark apply` from Kinesis holds this many shards.
pub(crate) fn shards_held(count: usize) {
    metrics::gauge!("tidemark_apply_shards_held").set(count as f64);
}

/// How far behind the stream's tip a shard's consumer reads.
pub(crate) fn shard_behind(shard: &str, millis: i64) {
    metrics::gauge!("tidemark_apply_millis_behind", "shard" => shard.to_string())
        .set(millis as f64);
}
