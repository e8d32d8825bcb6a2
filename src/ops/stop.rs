//! The stop signal, with its reason. The connectors see only the flag (stop
//! reading); whoever stops the pipeline says why, and the first reason given
//! is the one the run reports: a signal, a lost retention (the source's log
//! no longer holds the cursor) or a lost lease (another instance owns the
//! pipeline). Nothing below `main` ends the process; it stops the pipeline
//! with a reason, and `main` exits non-zero naming it.

use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// Why a pipeline was stopped before its source ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGINT, or a migration cut over: a clean stop.
    Requested,
    /// The source's log lost what the cursor needs (the message says what
    /// and how to recover).
    RetentionLost(String),
    /// Another instance took the pipeline's lease.
    LeaseLost(String),
}

impl StopReason {
    /// The failure this stop is, when it is one.
    pub fn failure(&self) -> Option<&str> {
        match self {
            StopReason::Requested => None,
            StopReason::RetentionLost(message) | StopReason::LeaseLost(message) => Some(message),
        }
    }
}

/// The stop flag the connectors watch, and the reason it was raised.
#[derive(Clone, Debug)]
pub struct StopSignal {
    flag: watch::Sender<bool>,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl StopSignal {
    /// Raises `flag` (the connectors' stop) when stopped.
    pub fn new(flag: watch::Sender<bool>) -> StopSignal {
        StopSignal {
            flag,
            reason: Arc::new(Mutex::new(None)),
        }
    }

    /// Stops the pipeline; the first reason given is kept.
    pub fn stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
        self.flag.send_replace(true);
    }

    /// Why the pipeline was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A receiver of the flag, to wait for the stop.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.flag.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_is_kept_and_the_flag_raised() {
        let (flag, seen) = watch::channel(false);
        let stop = StopSignal::new(flag);
        assert_eq!(stop.reason(), None);
        stop.stop(StopReason::RetentionLost("slot gone".into()));
        stop.stop(StopReason::Requested);
        assert!(*seen.borrow());
        assert_eq!(
            stop.reason().as_ref().and_then(StopReason::failure),
            Some("slot gone")
        );
    }
}
