//! In-memory implementations of the pipeline's contracts (tests only), and
//! the unit tests of the pipeline's rules on them: when it commits, what it
//! skips, and that a failed write or sync never moves the cursor. Databases
//! and AWS services are tested for real elsewhere; these stand in for
//! tidemark's own traits only.

use super::contract::{Cursor, Sink, Source};
use super::{run, PipelineError, Summary};
use crate::cursor::CursorError;
use crate::sinks::SinkError;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidemark_connectors::event::SourceInfo;
use tidemark_connectors::{Batch, ChangeEvent, Op, Position, SourceError};
use tokio::sync::watch;

/// An insert at `position` (the other fields do not matter to the pipeline).
pub(super) fn event(position: Position) -> ChangeEvent {
    let source = Arc::new(SourceInfo::new(
        "postgres",
        "p".into(),
        "d".into(),
        "public".into(),
        "t".into(),
        0,
    ));
    ChangeEvent::row(Op::Create, None, None, None, source, position, 0)
}

/// A batch of inserts at `positions`, without an end.
pub(super) fn batch(positions: impl IntoIterator<Item = Position>) -> Batch {
    Batch {
        events: positions.into_iter().map(event).collect(),
        end: None,
    }
}

/// What the doubles did, in order: `write <position>`, `sync`, `commit <position>`.
type Log = Arc<Mutex<Vec<String>>>;

fn record(log: &Log, entry: String) {
    log.lock().expect("log").push(entry);
}

/// Gives its batches, each after its delay, then stops.
struct MemorySource {
    batches: VecDeque<(Duration, Batch)>,
}

impl Source for MemorySource {
    fn next_batch(&mut self) -> impl Future<Output = Result<Option<Batch>, SourceError>> + Send {
        let next = self.batches.pop_front();
        async move {
            let Some((delay, batch)) = next else {
                return Ok(None);
            };
            tokio::time::sleep(delay).await;
            Ok(Some(batch))
        }
    }

    async fn close(self) {}
}

/// Logs what it is given; fails the `fail_write`-th write (1-based) and
/// every sync when told to.
struct MemorySink {
    log: Log,
    writes: usize,
    fail_write: Option<usize>,
    fail_sync: bool,
    last: Option<String>,
}

impl Sink for MemorySink {
    async fn write(&mut self, events: &[ChangeEvent]) -> Result<(), SinkError> {
        self.writes += 1;
        if self.fail_write == Some(self.writes) {
            return Err(SinkError::Kinesis(
                "the test's sink refuses this write".into(),
            ));
        }
        for event in events {
            record(&self.log, format!("write {}", event.position));
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), SinkError> {
        if self.fail_sync {
            return Err(SinkError::Kinesis("the test's sink cannot sync".into()));
        }
        record(&self.log, "sync".into());
        Ok(())
    }

    fn last_position(&self) -> Option<&str> {
        self.last.as_deref()
    }
}

struct MemoryCursor {
    log: Log,
}

impl Cursor for MemoryCursor {
    async fn commit(&mut self, position: &Position) -> Result<(), CursorError> {
        record(&self.log, format!("commit {position}"));
        Ok(())
    }
}

/// A streamed change of transaction `tx` (commit LSN `tx * 0x100`).
fn change(tx: u64, seq: u64) -> Position {
    Position::postgres_change(tx * 0x100, tx * 0x100 - 0x10 + seq, seq)
}

/// The end of transaction `tx`.
fn end(tx: u64) -> Position {
    Position::postgres(tx * 0x100, tx * 0x100 + 8)
}

/// Transaction `tx` (two changes) as one batch ending at its end.
fn transaction(tx: u64) -> Batch {
    Batch {
        end: Some(end(tx)),
        ..batch([change(tx, 1), change(tx, 2)])
    }
}

/// The pipeline over these batches into a sink set up by `sink`; returns
/// the run's result and the log.
async fn pipeline(
    batches: Vec<(Duration, Batch)>,
    sink: impl FnOnce(Log) -> MemorySink,
    resumed: Option<Position>,
    commit_every: Duration,
) -> (Result<Summary, PipelineError>, Vec<String>) {
    let log = Log::default();
    let mut sink = sink(log.clone());
    let mut cursor = MemoryCursor { log: log.clone() };
    let (durable, _) = watch::channel(None);
    let source = MemorySource {
        batches: batches.into(),
    };
    let result = run(
        source,
        &durable,
        &mut sink,
        &mut cursor,
        super::Settings {
            resumed: resumed.as_ref(),
            commit_every,
            health: &crate::ops::Health::new(),
            transforms: Default::default(),
        },
    )
    .await;
    let entries = log.lock().expect("log").clone();
    (result, entries)
}

fn plain(log: Log) -> MemorySink {
    MemorySink {
        log,
        writes: 0,
        fail_write: None,
        fail_sync: false,
        last: None,
    }
}

fn commits(log: &[String]) -> Vec<&str> {
    log.iter()
        .filter_map(|e| e.strip_prefix("commit "))
        .collect()
}

/// Every commit comes after a sync that follows the write of everything
/// before it, and commits never go backward.
fn assert_commits_follow_syncs(log: &[String]) {
    let mut written_since_sync = false;
    let mut synced_any = false;
    let mut last_commit: Option<&str> = None;
    for entry in log {
        if entry.starts_with("write ") {
            written_since_sync = true;
        } else if entry == "sync" {
            written_since_sync = false;
            synced_any = true;
        } else if let Some(position) = entry.strip_prefix("commit ") {
            assert!(
                synced_any && !written_since_sync,
                "commit {position} without a sync of what came before: {log:?}"
            );
            assert!(
                last_commit.is_none_or(|last| last < position),
                "the cursor went back to {position}: {log:?}"
            );
            last_commit = Some(position);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_transaction_end_of_a_run_is_committed_at_once_then_at_the_stop() {
    // Batches that queue up while one is written are written together; these
    // come 10 ms apart, so each is written on its own.
    let batches = (1..=3)
        .map(|tx| (Duration::from_millis(10), transaction(tx)))
        .collect();
    let (result, log) = pipeline(batches, plain, None, Duration::from_secs(3600)).await;
    let summary = result.expect("run");
    assert_eq!(summary.events, 6);
    assert_eq!(
        commits(&log),
        [end(1).to_string(), end(3).to_string()],
        "{log:?}"
    );
    assert_commits_follow_syncs(&log);
}

#[tokio::test(start_paused = true)]
async fn commits_come_at_most_every_commit_interval() {
    // 50 transactions, 100 ms apart: 5 s of changes, committed every second.
    let batches = (1..=50)
        .map(|tx| (Duration::from_millis(100), transaction(tx)))
        .collect();
    let (result, log) = pipeline(batches, plain, None, Duration::from_secs(1)).await;
    result.expect("run");
    let made = commits(&log).len();
    // The first end, one per second of the five, and the stop.
    assert!((3..=7).contains(&made), "{made} commits: {log:?}");
    assert_commits_follow_syncs(&log);
}

#[tokio::test(start_paused = true)]
async fn no_commit_lands_inside_a_transaction() {
    // Transaction 1 spans two batches; transaction 2 is cut off by the stop.
    let batches = vec![
        (Duration::ZERO, batch([change(1, 1)])),
        (
            Duration::ZERO,
            Batch {
                end: Some(end(1)),
                ..batch([change(1, 2)])
            },
        ),
        (Duration::ZERO, batch([change(2, 1)])),
    ];
    let (result, log) = pipeline(batches, plain, None, Duration::ZERO).await;
    result.expect("run");
    assert_eq!(commits(&log), [end(1).to_string()], "{log:?}");
    assert_commits_follow_syncs(&log);
}

#[tokio::test(start_paused = true)]
async fn only_what_the_sink_held_before_a_crash_is_skipped() {
    // The cursor is at transaction 1's end; the sink holds transaction 2's
    // first change: that one is skipped, the rest written.
    let held = Some(change(2, 1).to_string());
    let batches = vec![
        (Duration::ZERO, transaction(2)),
        (Duration::ZERO, transaction(3)),
    ];
    let (result, log) = pipeline(
        batches,
        |log| MemorySink {
            last: held,
            ..plain(log)
        },
        Some(end(1)),
        Duration::ZERO,
    )
    .await;
    let summary = result.expect("run");
    assert_eq!(summary.skipped_duplicates, 1);
    let written: Vec<&str> = log
        .iter()
        .filter_map(|e| e.strip_prefix("write "))
        .collect();
    assert_eq!(
        written,
        [change(2, 2), change(3, 1), change(3, 2)].map(|p| p.to_string()),
        "{log:?}"
    );
    assert_commits_follow_syncs(&log);
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_or_sync_never_moves_the_cursor() {
    let batches = || {
        (1..=3)
            .map(|tx| (Duration::from_millis(10), transaction(tx)))
            .collect()
    };
    // The second write fails: only the first transaction is committed.
    let (result, log) = pipeline(
        batches(),
        |log| MemorySink {
            fail_write: Some(2),
            ..plain(log)
        },
        None,
        Duration::ZERO,
    )
    .await;
    assert!(matches!(result, Err(PipelineError::Sink(_))), "{result:?}");
    assert_eq!(commits(&log), [end(1).to_string()], "{log:?}");
    // No sync succeeds: nothing is committed at all.
    let (result, log) = pipeline(
        batches(),
        |log| MemorySink {
            fail_sync: true,
            ..plain(log)
        },
        None,
        Duration::ZERO,
    )
    .await;
    assert!(matches!(result, Err(PipelineError::Sink(_))), "{result:?}");
    assert!(commits(&log).is_empty(), "{log:?}");
}
