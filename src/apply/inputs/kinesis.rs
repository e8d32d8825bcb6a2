//! Reads the Kinesis stream the Kinesis sink writes and applies it: one
//! consumer per shard, shard leases and checkpoints in DynamoDB, and any number
//! of `tidemark apply` instances sharing the shards.
//!
//! - **Leases**: one item per shard in the `[cursor]` DynamoDB table, keyed
//!   `<pipeline>/<stream>/<shard id>`, fenced by `lease_counter` exactly like
//!   the cursor store (see `cursor::lease`). `checkpoint` is the sequence
//!   number of the last record applied, and `SHARD_END` once the shard is
//!   closed and read to its end.
//! - **Sharing**: every third of the lease duration each instance lists the
//!   shards and the leases, renews its own, and takes shards up to its fair
//!   share, ceil(open shards / live instances), where the live instances are
//!   the owners of live leases plus itself. Free and lapsed leases go first;
//!   then it takes one lease from the instance that holds the most, when that
//!   one holds more than the fair share. The instance that lost a lease stops
//!   that shard after its current batch.
//! - **Resharding**: a shard is taken only once its parents (`ParentShardId`,
//!   `AdjacentParentShardId`) are finished, or gone from the stream; so all of
//!   a key's changes from before a split or merge are applied before any from
//!   after it.
//! - **Exactly once into the target**: each shard is its own scope in
//!   `tidemark_applied` (`kinesis:<stream>:<shard id>`), and a position is the
//!   record's sequence number (zero-padded to 64 digits) plus the event's line
//!   in the record. A batch commits together with its last position; events at
//!   or before it are skipped; a batch from an instance that lost the lease is
//!   refused by the target (`Superseded`) when the new holder got there first,
//!   and re-filtered by the holder when the old one did. The checkpoint in
//!   DynamoDB trails the target and only says where to start reading.
//!
//! Positions in a shard follow the stream, not the source: the Kinesis sink
//! keeps each key in order, not the keys among themselves, so a source
//! position cannot order a shard.

use crate::apply::sink::TargetSink;
use crate::apply::{ApplyError, Target};
use crate::config::TargetConfig;
use crate::cursor::lease::{self, text, Held, Item, LapseClock, Lease, LeaseTable};
use crate::sinks::kinesis::{describe, transient};
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{Record, Shard, ShardIteratorType};
use aws_sdk_kinesis::Client;
use backoff::backoff::Backoff;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tidemark_connectors::ChangeEvent;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The checkpoint of a shard read to its end.
const SHARD_END: &str = "SHARD_END";
/// How long a consumer waits after an empty read (Kinesis allows five reads
/// per second per shard, shared by every reader).
const EMPTY_READ_WAIT: Duration = Duration::from_secs(1);

/// What the consumers share.
pub struct Input {
    pub kinesis: Client,
    pub stream: String,
    pub leases: LeaseTable,
    /// `[pipeline] name`: instances with the same name share the shards.
    pub pipeline: String,
    pub lease_duration: Duration,
    pub batch_events: usize,
    pub target: TargetConfig,
}

/// Counts over every shard this instance consumed.
#[derive(Debug, Default)]
pub struct Totals {
    pub events: u64,
    pub applied: u64,
    pub rows: u64,
    pub skipped: u64,
    pub shards_finished: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.events += other.events;
        self.applied += other.applied;
        self.rows += other.rows;
        self.skipped += other.skipped;
        self.shards_finished += other.shards_finished;
    }
}

/// How a consumer ended.
enum End {
    /// Stopped (SIGTERM, or its lease was taken while it waited).
    Stopped,
    /// Read to the end of a closed shard.
    Finished,
    /// A write to its lease was refused: another instance holds the shard.
    Lost,
}

struct Consumer {
    lease: Lease,
    halt: watch::Sender<bool>,
    task: JoinHandle<Result<(End, Totals), ApplyError>>,
}

impl Consumer {
    fn halted(&self) -> bool {
        *self.halt.borrow()
    }
}

impl Input {
    fn scope(&self, shard: &str) -> String {
        format!("kinesis:{}:{shard}", self.stream)
    }

    fn lease_prefix(&self) -> String {
        format!("{}/{}/", self.pipeline, self.stream)
    }

    fn error(&self, what: &str, detail: impl std::fmt::Display) -> ApplyError {
        ApplyError::Setup(format!(
            "kinesis stream {}: cannot {what}: {detail}",
            self.stream
        ))
    }

    /// Runs `call` until it succeeds or fails for good, waiting out
    /// throttling and unreachable or failing servers with backoff.
    async fn retrying<T, E, F, Fut>(
        &self,
        what: &str,
        mut call: F,
    ) -> Result<T, SdkError<E, HttpResponse>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut wait = backoff::ExponentialBackoff {
            max_elapsed_time: None,
            max_interval: Duration::from_secs(10),
            ..Default::default()
        };
        loop {
            match call().await {
                Err(e) => match transient(&e) {
                    Some(reason) => {
                        crate::ops::metrics::retry(reason);
                        let pause = wait.next_backoff().unwrap_or(Duration::from_secs(10));
                        tracing::warn!(
                            "kinesis stream {}: {what} will be retried in {pause:?}: {}",
                            self.stream,
                            describe(&e)
                        );
                        tokio::time::sleep(pause).await;
                    }
                    None => return Err(e),
                },
                done => return done,
            }
        }
    }

    /// Every shard of the stream, open or closed (closed ones are listed
    /// until they age out of the retention period).
    async fn shards(&self) -> Result<Vec<Shard>, ApplyError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retrying("ListShards", || {
                    let request = self.kinesis.list_shards();
                    match &token {
                        Some(token) => request.next_token(token),
                        None => request.stream_name(&self.stream),
                    }
                    .send()
                })
                .await
                .map_err(|e| self.error("list the shards", describe(&e)))?;
            shards.extend(page.shards.unwrap_or_default());
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(shards),
            }
        }
    }

    /// An iterator after `sequence`, or at the oldest record.
    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, ApplyError> {
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
) -> Result<Vec<(ChangeEvent, String)>, ApplyError> {
    let mut events = Vec::new();
    for record in records {
        let sequence = &record.sequence_number;
        if sequence.is_empty() || !sequence.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApplyError::Setup(format!(
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
                ApplyError::Setup(format!(
                    "kinesis stream {stream} shard {shard} record {sequence} line {}: not an event ({e})",
                    index + 1
                ))
            })?;
            events.push((parsed.event, format!("{}:{index:06}", padded(sequence))));
        }
    }
    Ok(events)
}

/// Applies the stream until `stop`, sharing its shards with the other
/// instances of the pipeline. Returns what this instance applied.
pub async fn follow(input: Input, mut stop: watch::Receiver<bool>) -> Result<Totals, ApplyError> {
    let input = Arc::new(input);
    let owner = lease::instance_name();
    tracing::info!(
        "applying kinesis stream {} as {owner}; shard leases in dynamodb table {}",
        input.stream,
        input.leases.table
    );
    let mut clock = LapseClock::default();
    let mut held: BTreeMap<String, Consumer> = BTreeMap::new();
    let mut totals = Totals::default();
    let outcome = loop {
        if let Err(e) = reap(&mut held, &mut totals).await {
            break Err(e);
        }
        if let Err(e) = balance(&input, &owner, &mut clock, &mut held).await {
            break Err(e);
        }
        crate::ops::health().tick();
        tokio::select! {
            _ = tokio::time::sleep(input.lease_duration / 3) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break Ok(());
        }
    };
    // Stop every consumer after its current batch, then give the leases up so
    // another instance takes the shards at once.
    for consumer in held.values() {
        consumer.halt.send_replace(true);
    }
    let mut first_error = outcome.err();
    for (shard, consumer) in std::mem::take(&mut held) {
        match consumer.task.await {
            Ok(Ok((_, counts))) => totals.add(&counts),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(ApplyError::Setup(format!(
                    "shard {shard}: the consumer failed: {e}"
                )));
            }
        }
        if let Err(e) = consumer.lease.release().await {
            tracing::warn!("could not release the lease on shard {shard}: {e}");
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(totals),
    }
}

/// Collects the consumers that ended; an error of one ends the apply.
async fn reap(
    held: &mut BTreeMap<String, Consumer>,
    totals: &mut Totals,
) -> Result<(), ApplyError> {
    let ended: Vec<String> = held
        .iter()
        .filter(|(_, c)| c.task.is_finished())
        .map(|(shard, _)| shard.clone())
        .collect();
    for shard in ended {
        let Some(consumer) = held.remove(&shard) else {
            continue;
        };
        match consumer.task.await {
            Ok(Ok((end, counts))) => {
                totals.add(&counts);
                if matches!(end, End::Finished) {
                    // The checkpoint says SHARD_END: nobody takes it again.
                    let _ = consumer.lease.release().await;
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(ApplyError::Setup(format!(
                    "shard {shard}: the consumer failed: {e}"
                )))
            }
        }
    }
    Ok(())
}

/// One round of lease keeping: renew ours, then take free, lapsed or (one)
/// surplus shards up to the fair share, starting a consumer for each.
async fn balance(
    input: &Arc<Input>,
    owner: &str,
    clock: &mut LapseClock,
    held: &mut BTreeMap<String, Consumer>,
) -> Result<(), ApplyError> {
    let shards = input.shards().await?;
    let prefix = input.lease_prefix();
    let items: HashMap<String, Item> = input
        .leases
        .scan(&prefix)
        .await
        .map_err(ApplyError::Setup)?
        .into_iter()
        .map(|item| (text(&item, "pipeline")[prefix.len()..].to_string(), item))
        .collect();
    let finished = |shard: &str| {
        items
            .get(shard)
            .is_some_and(|item| text(item, "checkpoint") == SHARD_END)
    };
    let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let open: Vec<&str> = shards
        .iter()
        .filter(|s| !finished(&s.shard_id))
        .filter(|s| {
            [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .all(|parent| !listed.contains(parent) || finished(parent))
        })
        .map(|s| s.shard_id.as_str())
        .collect();

    for (shard, consumer) in held.iter() {
        if consumer.halted() {
            continue;
        }
        match consumer.lease.renew(input.lease_duration).await {
            Ok(Held::Yes) => {}
            Ok(Held::Lost | Held::NotHeld) => {
                tracing::info!("shard {shard}: another instance took the lease; stopping it here");
                consumer.halt.send_replace(true);
            }
            Err(e) => tracing::warn!("shard {shard}: renewing the lease failed (will retry): {e}"),
        }
    }

    // Who else is alive, and what is free.
    let mut others: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    let mut free: Vec<(&str, Option<i64>)> = Vec::new();
    for &shard in &open {
        if held.get(shard).is_some_and(|c| !c.halted()) {
            continue;
        }
        match items.get(shard) {
            None => free.push((shard, None)),
            Some(item) => {
                let counter = lease::number(item, "lease_counter");
                let key = format!("{prefix}{shard}");
                if text(item, "owner") == owner || clock.lapsed(&key, item, input.lease_duration) {
                    free.push((shard, Some(counter)));
                } else {
                    others
                        .entry(text(item, "owner"))
                        .or_default()
                        .push((shard, counter));
                }
            }
        }
    }
    let fair = open.len().div_ceil(others.len() + 1);
    let mut mine = held.values().filter(|c| !c.halted()).count();
    let mut wanted: Vec<(&str, Option<i64>, Option<&str>)> = free
        .iter()
        .map(|&(shard, seen)| (shard, seen, None))
        .collect();
    if mine + free.len() < fair {
        if let Some((victim, theirs)) = others.iter().max_by_key(|(_, shards)| shards.len()) {
            if theirs.len() > fair {
                if let Some(&(shard, counter)) = theirs.last() {
                    wanted.push((shard, Some(counter), Some(victim)));
                }
            }
        }
    }
    for (shard, seen, from) in wanted {
        if mine >= fair {
            break;
        }
        // A halted consumer of this shard must end before another starts.
        if held.get(shard).is_some() {
            continue;
        }
        let lease = Lease::new(&input.leases, &format!("{prefix}{shard}"), owner);
        let taken = match seen {
            None => input.leases.create(&lease, input.lease_duration).await,
            Some(seen) => input.leases.take(&lease, seen, input.lease_duration).await,
        }
        .map_err(|e| ApplyError::Setup(format!("shard {shard}: cannot take the lease: {e}")))?;
        if !taken {
            continue;
        }
        let checkpoint = items
            .get(shard)
            .map(|item| text(item, "checkpoint").to_string())
            .filter(|c| !c.is_empty());
        match from {
            Some(victim) => tracing::info!(
                "holding shard {shard}, taken from {victim} to share the stream ({fair} shards each)"
            ),
            None => tracing::info!(
                "holding shard {shard} (checkpoint {})",
                checkpoint.as_deref().unwrap_or("none: from the oldest record")
            ),
        }
        let (halt, halted) = watch::channel(false);
        let task = tokio::spawn(consume(
            input.clone(),
            shard.to_string(),
            lease.clone(),
            checkpoint,
            halted,
        ));
        held.insert(shard.to_string(), Consumer { lease, halt, task });
        mine += 1;
    }
    metrics::gauge!("tidemark_apply_shards_held").set(mine as f64);
    Ok(())
}

/// Reads one shard and applies it, batch by batch, until halted, finished, or
/// its lease is lost.
async fn consume(
    input: Arc<Input>,
    shard: String,
    lease: Lease,
    checkpoint: Option<String>,
    mut halt: watch::Receiver<bool>,
) -> Result<(End, Totals), ApplyError> {
    let scope = input.scope(&shard);
    let mut sink = TargetSink::open(Target::open(&input.target).await?, &scope).await?;
    // Start after whichever is further: the checkpoint, or the target.
    let mut last = [checkpoint, sink.applied().map(sequence_of)]
        .into_iter()
        .flatten()
        .filter(|c| c != SHARD_END)
        .max_by_key(|sequence| padded(sequence));
    let mut iterator = input.iterator(&shard, last.as_deref()).await?;
    let limit = input.batch_events.clamp(1, 10_000) as i32;
    let counts = |sink: &TargetSink| Totals {
        events: sink.events + sink.skipped,
        applied: sink.events,
        rows: sink.rows,
        skipped: sink.skipped,
        shards_finished: 0,
    };
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
        crate::ops::health().tick();
        if let Some(behind) = page.millis_behind_latest {
            metrics::gauge!("tidemark_apply_millis_behind", "shard" => shard.clone())
                .set(behind as f64);
        }
        if let Some(record) = page.records.last() {
            let events = decode(&input.stream, &shard, &page.records)?;
            write(&mut sink, &events).await?;
            last = Some(record.sequence_number.clone());
            let held = lease
                .write("checkpoint = :c, updated_at = :now", false, |r| {
                    r.expression_attribute_values(":c", lease::s(&record.sequence_number))
                        .expression_attribute_values(
                            ":now",
                            lease::n(tidemark_connectors::event::now_ms()),
                        )
                })
                .await;
            match held {
                Ok(Held::Yes) => {}
                Ok(Held::Lost | Held::NotHeld) => {
                    tracing::info!("shard {shard}: another instance took the lease; stopped at {}", record.sequence_number);
                    return Ok((End::Lost, counts(&sink)));
                }
                // The target holds the applied position; the checkpoint only
                // saves re-reading, so a failed write is not fatal.
                Err(e) => tracing::warn!("shard {shard}: cannot write the checkpoint (will retry with the next batch): {e}"),
            }
        }
        let Some(next) = page.next_shard_iterator else {
            let held = lease
                .write("checkpoint = :c, updated_at = :now", false, |r| {
                    r.expression_attribute_values(":c", lease::s(SHARD_END))
                        .expression_attribute_values(
                            ":now",
                            lease::n(tidemark_connectors::event::now_ms()),
                        )
                })
                .await
                .map_err(|e| {
                    ApplyError::Setup(format!("shard {shard}: cannot mark it finished: {e}"))
                })?;
            if held != Held::Yes {
                return Ok((End::Lost, counts(&sink)));
            }
            tracing::info!(
                "shard {shard} finished (closed by a reshard and applied to its end, last record {})",
                last.as_deref().unwrap_or("none")
            );
            let mut totals = counts(&sink);
            totals.shards_finished = 1;
            return Ok((End::Finished, totals));
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

/// Writes a batch; when another instance moved the shard's applied position
/// meanwhile, re-reads it and writes what is left.
async fn write(sink: &mut TargetSink, events: &[(ChangeEvent, String)]) -> Result<(), ApplyError> {
    let pairs: Vec<(&ChangeEvent, &str)> = events.iter().map(|(e, p)| (e, p.as_str())).collect();
    for _ in 0..3 {
        match sink.write_positioned(&pairs).await {
            Err(ApplyError::Superseded { stored, .. }) => {
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
}
