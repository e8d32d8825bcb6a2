//! Snapshot progress in the log, the same for every connector: a line per table
//! at most every ten seconds, and one when the table is done.

use std::fmt::Display;
use std::time::{Duration, Instant};

pub struct SnapshotProgress {
    last_log: Instant,
}

impl Default for SnapshotProgress {
    fn default() -> Self {
        SnapshotProgress {
            last_log: Instant::now(),
        }
    }
}

impl SnapshotProgress {
    /// After each chunk: `done` rows of `table` read, of about `estimate`.
    pub fn chunk(&mut self, table: &dyn Display, done: u64, estimate: u64, finished: bool) {
        if finished || self.last_log.elapsed() > Duration::from_secs(10) {
            tracing::info!(
                "snapshot {table}: {done} of ~{} rows{}",
                estimate.max(done),
                if finished { ", done" } else { "" }
            );
            self.last_log = Instant::now();
        }
    }
}
