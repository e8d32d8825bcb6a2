//! The retention watch: every `retention.check_interval`, how much log the
//! source keeps for tidemark and how close it is to removing what the cursor
//! still needs. It exports the figures as metrics, makes readiness fail (with a
//! warning in the log) before a loss, and stops the daemon with the recovery
//! command once the loss has happened (slot gone or invalidated, binlog purged).

use super::health::Health;
use super::stop::{StopReason, StopSignal};
use std::time::Duration;
use tidemark_connectors::event::now_ms;
use tidemark_connectors::mysql::retention::BinlogWatch;
use tidemark_connectors::postgres::retention::SlotWatch;
use tidemark_connectors::{Position, SourceError};
use tokio::sync::watch;

/// What to watch.
pub enum Watch {
    Postgres {
        url: String,
        slot: String,
        max_retained_bytes: u64,
    },
    Mysql {
        url: String,
        warn_before_purge: Duration,
    },
}

/// Runs the watch until the stop signal; on a loss, stops the pipeline with
/// [`StopReason::RetentionLost`].
/// `recovery` is the command that starts over (named in the stop message).
pub async fn run(
    watch: Watch,
    every: Duration,
    durable: watch::Receiver<Option<Position>>,
    stop: StopSignal,
    recovery: String,
    health: Health,
) {
    let mut checks = Checks {
        ticker: tokio::time::interval(every),
        stopped: stop.subscribe(),
        health,
    };
    loop {
        let result = match &watch {
            Watch::Postgres {
                url,
                slot,
                max_retained_bytes,
            } => {
                postgres(
                    url,
                    slot,
                    *max_retained_bytes,
                    &mut checks,
                    &stop,
                    &recovery,
                )
                .await
            }
            Watch::Mysql {
                url,
                warn_before_purge,
            } => {
                let durable = durable.clone();
                mysql(
                    url,
                    *warn_before_purge,
                    &mut checks,
                    durable,
                    &stop,
                    &recovery,
                )
                .await
            }
        };
        let Err(e) = result else {
            return;
        };
        // A lost connection is tried again (the first successful check
        // clears the problem); anything else ends the watch.
        let again = e.is_retryable();
        checks
            .health
            .set_problem("retention", Some(format!("cannot watch retention: {e}")));
        if !again {
            tracing::warn!("retention watch stopped: {e}");
            return;
        }
        tracing::warn!("retention watch: {e}; trying again in 5 s");
        let mut stopped = stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5).min(every)) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        // The first check after a reconnect is made at once.
        checks.ticker.reset_immediately();
    }
}

/// The check schedule: every `check_interval` until the daemon stops.
struct Checks {
    ticker: tokio::time::Interval,
    stopped: watch::Receiver<bool>,
    /// Where a retention problem is reported.
    health: Health,
}

impl Checks {
    /// Waits for the next check; false once the daemon stops.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => true,
            _ = self.stopped.wait_for(|s| *s) => false,
        }
    }
}

fn lost(stop: &StopSignal, message: String) {
    stop.stop(StopReason::RetentionLost(message));
}

const MB: f64 = 1024.0 * 1024.0;

async fn postgres(
    url: &str,
    slot: &str,
    max_retained_bytes: u64,
    checks: &mut Checks,
    stop: &StopSignal,
    recovery: &str,
) -> Result<(), SourceError> {
    let watch = SlotWatch::connect(url, slot).await?;
    while checks.next().await {
        let Some(state) = watch.check().await? else {
            lost(stop, format!(
                "replication slot {slot} is gone (dropped, or not carried over by a failover): the changes after the cursor cannot be read; recover with `{recovery}`, then start again to take a new snapshot"
            ));
            return Ok(());
        };
        metrics::gauge!("tidemark_source_lag_bytes").set(state.behind_bytes as f64);
        metrics::gauge!("tidemark_pg_slot_retained_bytes").set(state.retained_bytes as f64);
        if let Some(safe) = state.safe_wal_bytes {
            metrics::gauge!("tidemark_pg_slot_safe_wal_bytes").set(safe as f64);
        }
        for status in ["reserved", "extended", "unreserved", "lost"] {
            let value = if state.wal_status == status { 1.0 } else { 0.0 };
            metrics::gauge!("tidemark_pg_slot_wal_status", "status" => status).set(value);
        }
        let problem = match (state.wal_status.as_str(), state.safe_wal_bytes, state.max_keep_bytes) {
            ("lost", _, _) => {
                lost(stop, format!(
                    "replication slot {slot} was invalidated (wal_status = lost, past max_slot_wal_keep_size): the changes after the cursor are gone; recover with `{recovery}`, then start again to take a new snapshot"
                ));
                return Ok(());
            }
            ("unreserved", _, _) => Some(format!(
                "slot {slot} retains {:.0} MB of WAL, past max_slot_wal_keep_size: the next checkpoint may remove WAL it needs; speed up the sink or raise max_slot_wal_keep_size now",
                state.retained_bytes as f64 / MB
            )),
            (_, Some(safe), Some(max)) if safe < max / 5 => Some(format!(
                "slot {slot} retains {:.0} MB of WAL; only {:.0} MB more before max_slot_wal_keep_size ({:.0} MB) invalidates it",
                state.retained_bytes as f64 / MB,
                safe as f64 / MB,
                max as f64 / MB
            )),
            _ if max_retained_bytes > 0 && state.retained_bytes as u64 > max_retained_bytes => {
                Some(format!(
                    "slot {slot} retains {:.1} MB of WAL, over retention.max_retained_bytes ({:.1} MB): capture is behind or the slot is not moving",
                    state.retained_bytes as f64 / MB,
                    max_retained_bytes as f64 / MB
                ))
            }
            _ => None,
        };
        checks.health.set_problem("retention", problem);
    }
    Ok(())
}

async fn mysql(
    url: &str,
    warn_before_purge: Duration,
    checks: &mut Checks,
    mut durable: watch::Receiver<Option<Position>>,
    stop: &StopSignal,
    recovery: &str,
) -> Result<(), SourceError> {
    let mut watch = BinlogWatch::connect(url).await?;
    while checks.next().await {
        let Some(Position::Mysql { file, pos, .. }) = durable.borrow_and_update().clone() else {
            continue;
        };
        if file.is_empty() {
            continue;
        }
        let state = watch.check(&file, pos).await?;
        if !state.present {
            lost(stop, format!(
                "binlog {file} (cursor at {file}:{pos}) was purged from the server while tidemark was behind it: the changes after the cursor are gone; recover with `{recovery}`, then start again to take a new snapshot"
            ));
            return Ok(());
        }
        metrics::gauge!("tidemark_source_lag_bytes").set(state.behind_bytes as f64);
        // The newest binlog is never purged; the others go `expire_seconds` after
        // their last write, which is no earlier than the last event we wrote.
        let eta = if state.in_newest || state.expire_seconds == 0 {
            f64::INFINITY
        } else {
            let written_ago = (now_ms() - checks.health.last_written_ms()).max(0) as f64 / 1000.0;
            (state.expire_seconds as f64 - written_ago).max(0.0)
        };
        metrics::gauge!("tidemark_binlog_purge_eta_seconds").set(eta);
        let problem = (eta < warn_before_purge.as_secs_f64()).then(|| {
            format!(
                "binlog {file} (cursor at {file}:{pos}) may be purged in about {eta:.0}s (binlog_expire_logs_seconds = {}); capture is {} bytes behind",
                state.expire_seconds, state.behind_bytes
            )
        });
        checks.health.set_problem("retention", problem);
    }
    Ok(())
}
