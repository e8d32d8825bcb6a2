//! Reconnecting in process: which failures a new session may cure, the
//! wait between sessions (with health and the log told), and the loop that
//! runs an attempt until it succeeds, fails for good, or is told to stop.

use tidemark::cursor::CursorError;
use tidemark::migrate::MigrateError;
use tidemark::ops::{self, events, Health, Phase};
use tidemark::pipeline::PipelineError;
use tidemark::sinks::SinkError;
use tidemark::target::TargetError;
use tidemark_connectors::SourceError;

/// True when a new session may cure the error whose chain of causes is
/// given: a source, target or cursor store that went away or did not
/// answer. A wrong password, a missing table, a lost lease or a config
/// mistake is not.
pub(crate) fn transient<'a>(
    mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> bool {
    chain.any(|cause| {
        if let Some(e) = cause.downcast_ref::<PipelineError>() {
            return match e {
                PipelineError::Source(e) => e.is_retryable(),
                PipelineError::Sink(e) => sink_transient(e),
                PipelineError::Cursor(e) => e.is_transient(),
                PipelineError::Reader(_)
                | PipelineError::Stopped(_)
                | PipelineError::Transform(_) => false,
            };
        }
        if let Some(e) = cause.downcast_ref::<SourceError>() {
            return e.is_retryable();
        }
        if let Some(e) = cause.downcast_ref::<SinkError>() {
            return sink_transient(e);
        }
        if let Some(e) = cause.downcast_ref::<CursorError>() {
            return e.is_transient();
        }
        if let Some(e) = cause.downcast_ref::<MigrateError>() {
            return e.is_transient();
        }
        cause
            .downcast_ref::<TargetError>()
            .is_some_and(TargetError::is_transient)
    })
}

fn sink_transient(e: &SinkError) -> bool {
    matches!(e, SinkError::Target(e) if e.is_transient())
}

/// Until the pipeline loop runs, keeps health and the watchdog alive: a
/// standby may wait for its lease for a long time, and a reconnect for as
/// long as an outage lasts (the process is not stuck; `/readyz` says what
/// it waits for). One ticker at a time.
pub(crate) fn tick_while_starting(health: &Health) {
    static TICKING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TICKING.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let health = health.clone();
    let starting = |health: &Health| matches!(health.phase(), Phase::Starting | Phase::Standby);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(ops::health::tick_every());
        loop {
            while starting(&health) {
                health.tick();
                ticker.tick().await;
            }
            TICKING.store(false, std::sync::atomic::Ordering::SeqCst);
            // A reconnect may have begun between the check and the store.
            if !starting(&health) || TICKING.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return;
            }
        }
    });
}

/// How long an attempt runs before it counts as connected (the backoff
/// starts over, `/readyz` forgets the reconnect).
const CONNECTED_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `attempt` (given the stop signal) again after each failure a new
/// attempt may cure, waiting as [`wait_to_reconnect`] says, until it
/// succeeds, fails for good, or the process is told to stop (`None`).
/// Callers reach every server once before, so that a wrong host or a server
/// that is down at start ends the process at once, as `run` does.
pub(crate) async fn keep_trying<T, F, Fut>(
    stop: &tokio::sync::watch::Receiver<bool>,
    health: &Health,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut retry = ops::reconnect::Retry::default();
    loop {
        let running = attempt(stop.clone());
        tokio::pin!(running);
        let result = tokio::select! {
            result = &mut running => result,
            _ = tokio::time::sleep(CONNECTED_AFTER) => {
                if retry.attempts > 0 {
                    events::reconnected(health, retry.attempts);
                }
                retry.succeeded();
                running.await
            }
        };
        let error = match result {
            Ok(value) => return Ok(Some(value)),
            Err(error) => error,
        };
        if *stop.borrow() || !transient(error.chain()) {
            return Err(error);
        }
        if !wait_to_reconnect(&mut retry, &error, stop.clone(), health).await {
            return Ok(None);
        }
    }
}

/// Between two sessions: counts the reconnect, says what failed and for how
/// long (log, `/readyz`), and waits; false when the daemon is told to stop
/// meanwhile.
pub(crate) async fn wait_to_reconnect(
    retry: &mut ops::reconnect::Retry,
    error: &anyhow::Error,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    health: &Health,
) -> bool {
    let (wait, failing) = retry.failed();
    events::reconnecting(health, &format!("{error:#}"), wait, retry.attempts, failing);
    tick_while_starting(health);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stopped.wait_for(|stop| *stop) => {
            tracing::info!("stopped while reconnecting");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(e: &(dyn std::error::Error + 'static)) -> bool {
        transient(std::iter::successors(Some(e), |e| e.source()))
    }

    #[test]
    fn only_failures_a_session_may_cure_are_transient() {
        assert!(chain(&SourceError::Unavailable(
            "mysql: cannot read: reset".into()
        )));
        assert!(chain(&PipelineError::Source(SourceError::Replication {
            at: "x".into(),
            message: "closed".into(),
        })));
        assert!(chain(&PipelineError::Cursor(CursorError::Unavailable(
            "timed out".into()
        ))));
        assert!(chain(&PipelineError::Sink(SinkError::Target(
            TargetError::Unavailable {
                what: "connect".into(),
                detail: "refused".into(),
            }
        ))));
        assert!(!chain(&SourceError::Setup(
            "source.tables: no such table".into()
        )));
        assert!(!chain(&CursorError::LeaseLost {
            pipeline: "p".into(),
            table: "t".into(),
        }));
        assert!(!chain(&TargetError::Setup("target.url: bad".into())));
        assert!(!chain(&PipelineError::Reader("panicked".into())));
    }
}
