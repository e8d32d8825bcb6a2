//! One shard's consumer: reads its records in order, applies each page as a
//! batch under the shard's scope in `tidemark_applied`, and checkpoints the
//! last sequence number in the shard's lease item, until it is halted, its
//! lease is taken, or the shard is closed and read to its end.

use super::{Input, Totals};
use crate::aws::errors::describe;
use crate::aws::lease::{self, Held, Lease};
use crate::sinks::target::TargetSink;
use crate::target::TargetError;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use std::sync::Arc;
use std::time::Duration;
use tidemark_connectors::{ChangeEvent, PositionKey};
use tokio::sync::watch;

/// The checkpoint of a shard read to its end.
pub(super) const SHARD_END: &str = "SHARD_END";
/// How long a consumer waits after an empty read (Kinesis allows five reads
/// per second per shard, shared by every reader).
const EMPTY_READ_WAIT: Duration = Duration::from_secs(1);

/// How a consumer ended.
pub(super) enum End {
    /// Stopped (SIGTERM, or its lease was taken while it waited).
    Stopped,
    /// Read to the end of a closed shard.
    Finished,
    /// A write to its lease was refused: another instance holds the shard.
    Lost,
}

impl Input {
    /// An iterator after `sequence`, or at the oldest record.
    pub async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, TargetError> {
        let answer = self
            .retrying("GetShardIterator", || {
                let request = self
                    .kinesis
                    .get_shard_iterator()
                    .stream_name(&self.stream)
                    .shard_id(shard);
                match after {
                    Some(sequence) => request
                        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                        .starting_sequence_number(sequence),
                    None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                }
                .send()
            })
            .await
            .map_err(|e| {
                self.error(
                    &format!("read shard {shard} after {}", after.unwrap_or("its start")),
                    describe(&e),
                )
            })?;
        answer
            .shard_iterator
            .ok_or_else(|| self.error(&format!("read shard {shard}"), "no iterator returned"))
    }
}

/// Zero-pads a sequence number so positions compare byte-wise.
fn padded(sequence: &str) -> String {
    format!("{sequence:0>64}")
}

/// The sequence number of a stored position (`<padded sequence>:<line>`).
fn sequence_of(position: &str) -> String {
    let digits = position.split(':').next().unwrap_or_default();
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }.to_string()
}

/// The events of a page of records, each with its position in the shard. A
/// record holds one event, or several as JSON lines (the sink's `aggregate`).
fn decode(
    stream: &str,
    shard: &str,
    records: &[Record],
) -> Result<Vec<(ChangeEvent, String)>, TargetError> {
    let mut events = Vec::new();
    for record in records {
        let sequence = &record.sequence_number;
        if sequence.is_empty() || !sequence.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TargetError::Setup(format!(
                "kinesis stream {stream} shard {shard}: sequence number {sequence:?} is not a number"
            )));
        }
        let lines = record
            .data
            .as_ref()
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty());
        for (index, line) in lines.enumerate() {
            let parsed = ChangeEvent::from_json(line).map_err(|e| {
                TargetError::Setup(format!(
                    "kinesis stream {stream} shard {shard} record {sequence} line {}: not an event ({e})",
                    index + 1
                ))
            })?;
            events.push((parsed.event, PositionKey::shard_text(sequence, index)));
        }
    }
    Ok(events)
}

/// Reads one shard and applies it, batch by batch, until halted, finished, or
/// its lease is lost.
pub(super) async fn consume(
    input: Arc<Input>,
    shard: String,
    lease: Lease,
    checkpoint: Option<String>,
    mut halt: watch::Receiver<bool>,
) -> Result<(End, Totals), TargetError> {
    let scope = input.scope(&shard);
    let mut sink =
        TargetSink::open(crate::apply::open_target(&input.target).await?, &scope).await?;
    let mut last = start_after(checkpoint, sink.applied());
    let mut iterator = input.iterator(&shard, last.as_deref()).await?;
    let limit = input.batch_events.clamp(1, 10_000) as i32;
    loop {
        if *halt.borrow() {
            return Ok((End::Stopped, counts(&sink)));
        }
        let page = input
            .retrying("GetRecords", || {
                input
                    .kinesis
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(limit)
                    .send()
            })
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("ExpiredIteratorException") =>
            {
                iterator = input.iterator(&shard, last.as_deref()).await?;
                continue;
            }
            Err(e) => {
                return Err(input.error(&format!("read shard {shard}"), describe(&e)));
            }
        };
        input.health.tick();
        if let Some(behind) = page.millis_behind_latest {
            crate::ops::events::shard_behind(&shard, behind);
        }
        if let Some(record) = page.records.last() {
            let events = decode(&input.stream, &shard, &page.records)?;
            write(&mut sink, &events).await?;
            last = Some(record.sequence_number.clone());
            let sequence = &record.sequence_number;
            if !checkpoint_batch(&lease, &shard, sequence, input.lease_duration).await {
                return Ok((End::Lost, counts(&sink)));
            }
        }
        let Some(next) = page.next_shard_iterator else {
            let end = finish(&lease, &shard, input.lease_duration, last.as_deref()).await?;
            let mut totals = counts(&sink);
            if matches!(end, End::Finished) {
                totals.shards_finished = 1;
            }
            return Ok((end, totals));
        };
        iterator = next;
        if page.records.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(EMPTY_READ_WAIT) => {}
                _ = halt.changed() => {}
            }
        }
    }
}

/// What a consumer's sink applied, as counts.
fn counts(sink: &TargetSink) -> Totals {
    Totals {
        events: sink.events + sink.skipped,
        applied: sink.events,
        rows: sink.rows,
        skipped: sink.skipped,
        shards_finished: 0,
    }
}

/// Where a consumer starts reading: after whichever is further, the
/// checkpoint or the target's applied position (`None`: at the oldest record).
fn start_after(checkpoint: Option<String>, applied: Option<&str>) -> Option<String> {
    [checkpoint, applied.map(sequence_of)]
        .into_iter()
        .flatten()
        .filter(|c| c != SHARD_END)
        .max_by_key(|sequence| padded(sequence))
}

/// Saves a batch's last sequence number as the checkpoint; `false` when
/// another instance took the lease.
async fn checkpoint_batch(lease: &Lease, shard: &str, sequence: &str, duration: Duration) -> bool {
    match save_checkpoint(lease, sequence, duration).await {
        Ok(Held::Yes) => true,
        Ok(Held::Lost | Held::NotHeld | Held::Refused) => {
            tracing::info!("shard {shard}: another instance took the lease; stopped at {sequence}");
            false
        }
        // The target holds the applied position; the checkpoint only
        // saves re-reading, so a failed write is not fatal.
        Err(e) => {
            tracing::warn!(
                "shard {shard}: cannot write the checkpoint (will retry with the next batch): {e}"
            );
            true
        }
    }
}

/// Marks a shard read to its end finished (checkpoint `SHARD_END`):
/// [`End::Finished`], or [`End::Lost`] when another instance holds the lease.
async fn finish(
    lease: &Lease,
    shard: &str,
    duration: Duration,
    last: Option<&str>,
) -> Result<End, TargetError> {
    let held = save_checkpoint(lease, SHARD_END, duration)
        .await
        .map_err(|e| TargetError::Setup(format!("shard {shard}: cannot mark it finished: {e}")))?;
    if held != Held::Yes {
        return Ok(End::Lost);
    }
    tracing::info!(
        "shard {shard} finished (closed by a reshard and applied to its end, last record {})",
        last.unwrap_or("none")
    );
    Ok(End::Finished)
}

/// Stores `value` (a sequence number, or `SHARD_END`) as the shard's
/// checkpoint, while this instance holds the lease.
async fn save_checkpoint(
    lease: &Lease,
    value: &str,
    duration: std::time::Duration,
) -> Result<Held, lease::LeaseError> {
    lease
        .write("checkpoint = :c, updated_at = :now", None, duration, |r| {
            r.expression_attribute_values(":c", lease::s(value))
                .expression_attribute_values(":now", lease::n(tidemark_connectors::event::now_ms()))
        })
        .await
}

/// Writes a batch; when another instance moved the shard's applied position
/// meanwhile, re-reads it and writes what is left.
async fn write(sink: &mut TargetSink, events: &[(ChangeEvent, String)]) -> Result<(), TargetError> {
    let pairs: Vec<(&ChangeEvent, &str)> = events.iter().map(|(e, p)| (e, p.as_str())).collect();
    for _ in 0..3 {
        match sink.write_positioned(&pairs).await {
            Err(TargetError::Superseded { stored, .. }) => {
                tracing::info!(
                    "another instance applied this shard up to {stored}; skipping what it applied"
                );
                sink.reload().await?;
            }
            done => return done,
        }
    }
    sink.write_positioned(&pairs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_like_sequence_numbers() {
        let a = format!(
            "{}:{:06}",
            padded("49590338271490256608559692538361571095921575989136588898"),
            0
        );
        let b = format!(
            "{}:{:06}",
            padded("49590338271490256608559692540925702759324208523137515618"),
            0
        );
        let c = format!("{}:{:06}", padded("9"), 3);
        assert!(a < b);
        assert!(c < a);
        assert_eq!(
            sequence_of(&b),
            "49590338271490256608559692540925702759324208523137515618"
        );
        assert_eq!(sequence_of(&c), "9");
    }

    #[test]
    fn reading_starts_after_the_further_of_checkpoint_and_target() {
        let target = format!("{}:{:06}", padded("120"), 2);
        assert_eq!(
            start_after(Some("99".into()), Some(target.as_str())).as_deref(),
            Some("120")
        );
        assert_eq!(
            start_after(Some("1000".into()), Some(target.as_str())).as_deref(),
            Some("1000")
        );
        assert_eq!(
            start_after(None, Some(target.as_str())).as_deref(),
            Some("120")
        );
        assert_eq!(start_after(Some("7".into()), None).as_deref(), Some("7"));
        assert_eq!(start_after(Some(SHARD_END.into()), None), None);
        assert_eq!(start_after(None, None), None);
    }
}
