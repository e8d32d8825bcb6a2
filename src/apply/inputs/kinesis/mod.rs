//! Reads the Kinesis stream the Kinesis sink writes and applies it: one
//! consumer per shard, shard leases and checkpoints in DynamoDB, and any number
//! of `tidemark apply` instances sharing the shards.
//!
//! - **Leases**: one item per shard in the `[cursor]` DynamoDB table, keyed
//!   `<pipeline>/<stream>/<shard id>`, fenced by `lease_counter` exactly like
//!   the cursor store (see `aws::lease`). `checkpoint` is the sequence
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

use crate::aws::errors::{describe, kinesis_retry_reason};
use crate::aws::lease::{self, text, Held, Item, LapseClock, Lease, LeaseTable};
use crate::config::TargetConfig;
use crate::ops::Health;
use crate::target::TargetError;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::Shard;
use aws_sdk_kinesis::Client;
use backoff::backoff::Backoff;
use shard::{consume, End};
use sharing::{decide, open_shards, Listed, SharePlan, Take};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod shard;
mod sharing;

/// A failed lease call: [`TargetError::Unavailable`] when trying again may
/// help (DynamoDB unreachable, slow or throttling), else a setup error.
fn lease_error(what: &str, e: lease::LeaseError) -> TargetError {
    if e.transient {
        TargetError::Unavailable {
            what: what.to_string(),
            detail: e.message,
        }
    } else {
        TargetError::Setup(format!("cannot {what}: {e}"))
    }
}

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
    /// Ticked by the balancing loop and every shard's consumer.
    pub health: Health,
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

struct Consumer {
    lease: Lease,
    halt: watch::Sender<bool>,
    task: JoinHandle<Result<(End, Totals), TargetError>>,
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

    fn error(&self, what: &str, detail: impl std::fmt::Display) -> TargetError {
        TargetError::Setup(format!(
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
                Err(e) => match kinesis_retry_reason(&e) {
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
    async fn shards(&self) -> Result<Vec<Shard>, TargetError> {
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
}

/// Applies the stream until `stop`, sharing its shards with the other
/// instances of the pipeline. Returns what this instance applied.
pub async fn follow(input: Input, mut stop: watch::Receiver<bool>) -> Result<Totals, TargetError> {
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
        input.health.tick();
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
                first_error.get_or_insert(TargetError::Setup(format!(
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
) -> Result<(), TargetError> {
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
                    // The checkpoint says SHARD_END: nobody takes it again,
                    // so a failed release only leaves a stale owner name.
                    if let Err(e) = consumer.lease.release().await {
                        tracing::warn!(
                            "shard {shard}: could not release the finished shard's lease: {e}"
                        );
                    }
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(TargetError::Setup(format!(
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
) -> Result<(), TargetError> {
    let shards = input.shards().await?;
    let prefix = input.lease_prefix();
    let items: HashMap<String, Item> = input
        .leases
        .scan(&prefix)
        .await
        .map_err(|e| lease_error("read the shard leases", e))?
        .into_iter()
        .filter_map(|item| {
            let shard = text(&item, "pipeline").strip_prefix(&prefix)?.to_string();
            Some((shard, item))
        })
        .collect();
    let listed: Vec<Listed<'_>> = shards
        .iter()
        .map(|s| Listed {
            id: s.shard_id.as_str(),
            parents: [s.parent_shard_id(), s.adjacent_parent_shard_id()],
        })
        .collect();
    let open = open_shards(&listed, &items);

    renew(input, held).await;

    let SharePlan {
        fair,
        mut mine,
        wanted,
    } = {
        let live: HashSet<&str> = held
            .iter()
            .filter(|(_, c)| !c.halted())
            .map(|(shard, _)| shard.as_str())
            .collect();
        decide(&open, &items, owner, &live, |shard, item| {
            clock.lapsed(&format!("{prefix}{shard}"), item, input.lease_duration)
        })
    };
    for take in wanted {
        if mine >= fair {
            break;
        }
        // A halted consumer of this shard must end before another starts.
        if held.get(take.shard).is_some() {
            continue;
        }
        let Some(consumer) = start(input, owner, &prefix, take, fair).await? else {
            continue;
        };
        held.insert(take.shard.to_string(), consumer);
        mine += 1;
    }
    crate::ops::events::shards_held(mine);
    Ok(())
}

/// Renews the leases of the consumers still running; halts those whose lease
/// another instance took.
async fn renew(input: &Input, held: &BTreeMap<String, Consumer>) {
    for (shard, consumer) in held.iter() {
        if consumer.halted() {
            continue;
        }
        match consumer.lease.renew(input.lease_duration).await {
            Ok(Held::Yes) => {}
            Ok(Held::Lost | Held::NotHeld | Held::Refused) => {
                tracing::info!("shard {shard}: another instance took the lease; stopping it here");
                consumer.halt.send_replace(true);
            }
            Err(e) => tracing::warn!("shard {shard}: renewing the lease failed (will retry): {e}"),
        }
    }
}

/// Takes the lease of `take.shard` and starts its consumer; `None` when
/// another instance wrote the lease first.
async fn start(
    input: &Arc<Input>,
    owner: &str,
    prefix: &str,
    take: Take<'_>,
    fair: usize,
) -> Result<Option<Consumer>, TargetError> {
    let shard = take.shard;
    let lease = Lease::new(&input.leases, &format!("{prefix}{shard}"), owner);
    let taken = match take.seen {
        None => lease.create(input.lease_duration).await,
        Some(seen) => lease.take(seen, input.lease_duration).await,
    }
    .map_err(|e| lease_error(&format!("take the lease of shard {shard}"), e))?;
    // The checkpoint as the taking write returned it, not as scanned
    // before: the last holder may have moved it since.
    let Some(taken) = taken else {
        return Ok(None);
    };
    let checkpoint = Some(text(&taken, "checkpoint").to_string()).filter(|c| !c.is_empty());
    match take.from {
        Some(victim) => tracing::info!(
            "holding shard {shard}, taken from {victim} to share the stream ({fair} shards each)"
        ),
        None => tracing::info!(
            "holding shard {shard} (checkpoint {})",
            checkpoint
                .as_deref()
                .unwrap_or("none: from the oldest record")
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
    Ok(Some(Consumer { lease, halt, task }))
}
