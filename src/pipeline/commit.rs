//! When the writer commits: the pure commit policy. The cursor moves only to
//! the end of a transaction the sink was given (a batch's `end`), at the
//! first such end of a run, then at most every `commit_interval` while a
//! stream is busy, after `commit_interval` of quiet, and when the source stops.

use std::time::Duration;
use tidemark_connectors::Position;
use tokio::time::Instant;

/// The commit decisions of one run; the writer asks, then does the I/O.
#[derive(Debug)]
pub(crate) struct CommitPolicy {
    every: Duration,
    last_commit: Instant,
    /// The end of the last transaction written, while not yet committed.
    uncommitted: Option<Position>,
    /// A commit was made in this run.
    committed_once: bool,
}

impl CommitPolicy {
    pub(crate) fn new(every: Duration, now: Instant) -> CommitPolicy {
        CommitPolicy {
            every,
            last_commit: now,
            uncommitted: None,
            committed_once: false,
        }
    }

    /// A batch was written; its end, when it has one, is where the cursor
    /// may go next. A batch without an end (inside a transaction) changes
    /// nothing: never commit mid-transaction.
    pub(crate) fn written(&mut self, end: Option<Position>) {
        if end.is_some() {
            self.uncommitted = end;
        }
    }

    /// When a quiet stream's last end falls due (nothing due while nothing
    /// is uncommitted).
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.uncommitted
            .as_ref()
            .map(|_| self.last_commit + self.every)
    }

    /// The position to commit now, if one is due: the first end of a run at
    /// once (until then a crash would start over, with new positions for a
    /// new snapshot's rows, instead of replaying with the same ones), later
    /// ones once `every` has passed since the last commit. A busy stream so
    /// costs one sink sync and one cursor write per interval, not per batch.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Position> {
        let due = !self.committed_once || now >= self.last_commit + self.every;
        if due {
            self.uncommitted.take()
        } else {
            None
        }
    }

    /// Whatever is uncommitted, when the source has stopped.
    pub(crate) fn take_rest(&mut self) -> Option<Position> {
        self.uncommitted.take()
    }

    /// A commit taken from this policy succeeded at `now`.
    pub(crate) fn committed(&mut self, now: Instant) {
        self.committed_once = true;
        self.last_commit = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lsn: u64) -> Position {
        Position::postgres(lsn, lsn)
    }

    #[test]
    fn the_first_end_of_a_run_is_due_at_once_later_ones_after_the_interval() {
        let start = Instant::now();
        let every = Duration::from_secs(10);
        let mut policy = CommitPolicy::new(every, start);
        assert_eq!(policy.due_at(), None, "nothing written, nothing due");
        policy.written(Some(at(1)));
        assert_eq!(policy.take_due(start), Some(at(1)));
        policy.committed(start);
        policy.written(Some(at(2)));
        assert_eq!(policy.take_due(start + every / 2), None);
        assert_eq!(policy.due_at(), Some(start + every));
        assert_eq!(policy.take_due(start + every), Some(at(2)));
    }

    #[test]
    fn a_batch_without_an_end_never_makes_a_commit_due() {
        let start = Instant::now();
        let mut policy = CommitPolicy::new(Duration::ZERO, start);
        policy.written(None);
        assert_eq!(policy.take_due(start), None);
        assert_eq!(policy.take_rest(), None);
        policy.written(Some(at(5)));
        policy.written(None);
        assert_eq!(policy.take_rest(), Some(at(5)), "the last end is kept");
    }
}
