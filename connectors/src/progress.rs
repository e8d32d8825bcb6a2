//! Snapshot progress, the same for every connector: a log line per table every
//! few seconds (rows, percent, rate, time left) and one when the table is done,
//! and the `tidemark_snapshot_rows_done` / `tidemark_snapshot_rows_total` gauges.

use std::fmt::Display;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct SnapshotProgress {
    last_log: Instant,
    /// The table being read, and when its first chunk started.
    table: String,
    started: Instant,
}

impl Default for SnapshotProgress {
    fn default() -> Self {
        SnapshotProgress {
            last_log: Instant::now(),
            table: String::new(),
            started: Instant::now(),
        }
    }
}

impl SnapshotProgress {
    /// After each chunk: `done` rows of `table` read, of about `estimate`.
    pub(crate) fn chunk(&mut self, table: &dyn Display, done: u64, estimate: u64, finished: bool) {
        let name = table.to_string();
        if name != self.table {
            self.table = name.clone();
            self.started = Instant::now();
        }
        let total = if finished { done } else { estimate.max(done) };
        metrics::gauge!("tidemark_snapshot_rows_done", "table" => name.clone()).set(done as f64);
        metrics::gauge!("tidemark_snapshot_rows_total", "table" => name.clone()).set(total as f64);
        if !finished && self.last_log.elapsed() < LOG_EVERY {
            return;
        }
        self.last_log = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / seconds;
        if finished {
            tracing::info!(
                "snapshot {name}: {done} rows, done in {seconds:.1}s ({rate:.0} rows/s)"
            );
            return;
        }
        let percent = 100.0 * done as f64 / total.max(1) as f64;
        let left = if rate > 0.0 {
            format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
        } else {
            "unknown".into()
        };
        tracing::info!(
            "snapshot {name}: {done} of ~{total} rows ({percent:.0}%), {rate:.0} rows/s, about {left} left"
        );
    }
}
