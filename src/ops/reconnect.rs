//! In-process reconnects: the capped exponential backoff, with jitter,
//! between sessions. (Which failures a new session may cure is decided where
//! all the error types are known: the binary's `commands::reconnect`.)
//!
//! A session is what a process start does (hold the cursor, open the sink,
//! open the source from the committed position, stream), so a reconnect
//! loses and repeats what a restart would, no more: nothing, and at most the
//! events after the cursor, which the file sink drops as already written.

use backoff::backoff::Backoff as _;
use std::time::{Duration, Instant};

/// The first wait, and the longest.
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(500);
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// The waits between sessions: from [`FIRST_WAIT`], doubling to
/// [`LONGEST_WAIT`], each drawn within ±50 % so that instances cut off
/// together do not come back together; never giving up.
pub struct Retry {
    waits: backoff::ExponentialBackoff,
    /// When the failures began (cleared by [`Retry::succeeded`]).
    since: Option<Instant>,
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            waits: backoff::ExponentialBackoffBuilder::new()
                .with_initial_interval(FIRST_WAIT)
                .with_max_interval(LONGEST_WAIT)
                .with_randomization_factor(0.5)
                .with_multiplier(2.0)
                .with_max_elapsed_time(None)
                .build(),
            since: None,
            attempts: 0,
        }
    }
}

impl Retry {
    /// The wait before the next session, and how long sessions have failed.
    pub fn failed(&mut self) -> (Duration, Duration) {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.attempts += 1;
        (
            self.waits.next_backoff().unwrap_or(LONGEST_WAIT),
            since.elapsed(),
        )
    }

    /// A session got going: the next failure starts from the first wait.
    pub fn succeeded(&mut self) {
        self.waits.reset();
        self.since = None;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter_and_start_over_after_a_success() {
        let mut retry = Retry::default();
        let waits: Vec<Duration> = (0..12).map(|_| retry.failed().0).collect();
        assert!(
            waits[0] >= FIRST_WAIT / 2 && waits[0] <= FIRST_WAIT * 3 / 2,
            "{waits:?}"
        );
        assert!(
            waits.iter().all(|w| *w <= LONGEST_WAIT * 3 / 2),
            "{waits:?}"
        );
        assert!(
            waits[11] >= LONGEST_WAIT / 2,
            "the waits reach the cap: {waits:?}"
        );
        assert_eq!(retry.attempts, 12);
        retry.succeeded();
        assert_eq!(retry.attempts, 0);
        assert!(retry.failed().0 <= FIRST_WAIT * 3 / 2);
    }
}
