//! The daemon's health, a handle each command creates and passes to what
//! reports on it (the pipeline loop, which ticks it, the sinks, the cursor
//! store, the retention watch) and to what reads it (the HTTP endpoint, the
//! metrics, systemd): the phase, when the loop last ticked, what keeps the
//! daemon from being ready, and how old the oldest undelivered change is.
//!
//! Every tick also sends systemd `WATCHDOG=1` and a `STATUS=` line (a no-op
//! without `NOTIFY_SOCKET`), so a stuck pipeline loop stops the pings and systemd
//! restarts it.

use sd_notify::NotifyState;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidemark_connectors::event::now_ms;

/// Streaming with a lag above this is reported as `catching-up`.
const CATCHING_UP_LAG: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Loading the cursor, connecting the source.
    Starting = 0,
    /// Waiting for another instance's lease to lapse.
    Standby = 1,
    Snapshot = 2,
    Streaming = 3,
    /// Draining after SIGTERM.
    Stopping = 4,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            1 => Phase::Standby,
            2 => Phase::Snapshot,
            3 => Phase::Streaming,
            4 => Phase::Stopping,
            _ => Phase::Starting,
        }
    }
}

/// A handle on the health of this process's one pipeline; clones share it.
#[derive(Clone)]
pub struct Health(Arc<HealthState>);

impl std::ops::Deref for Health {
    type Target = HealthState;

    fn deref(&self) -> &HealthState {
        &self.0
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// A new health: starting, nothing read yet.
    pub fn new() -> Health {
        Health(Arc::new(HealthState {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            last_tick: AtomicI64::new(0),
            last_notify: AtomicI64::new(-1),
            in_flight_since: AtomicI64::new(0),
            last_written: AtomicI64::new(0),
            last_commit: AtomicI64::new(0),
            problems: Mutex::new(BTreeMap::new()),
            position: Mutex::new(String::new()),
            events_read: AtomicU64::new(0),
            events_written: AtomicU64::new(0),
        }))
    }

    /// Tells systemd the daemon is ready (source connected, cursor loaded).
    pub fn notify_ready(&self) {
        let status = format!("{}, lag 0.0s", self.phase_name());
        let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// Tells systemd the daemon is stopping.
    pub fn notify_stopping(&self) {
        self.set_phase(Phase::Stopping);
        let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// What the health holds (read through a [`Health`]).
pub struct HealthState {
    started: Instant,
    phase: AtomicU8,
    /// Milliseconds since `started` of the last pipeline loop tick.
    last_tick: AtomicI64,
    /// Milliseconds since `started` of the last systemd notification.
    last_notify: AtomicI64,
    /// Source commit time (ms since the epoch) of the oldest event read and not
    /// yet written; 0 when everything read is written.
    in_flight_since: AtomicI64,
    /// Source commit time of the last written event; 0 before the first.
    last_written: AtomicI64,
    /// Wall time of the last cursor commit; 0 before the first.
    last_commit: AtomicI64,
    /// Why the daemon is not ready, by area (`retention`, `sink`, ...).
    problems: Mutex<BTreeMap<&'static str, String>>,
    /// The last cursor position, for error lines.
    position: Mutex<String>,
    /// Events read from the source and written to the sink, since start.
    events_read: AtomicU64,
    events_written: AtomicU64,
}

/// How often the pipeline loop ticks: every second, faster when systemd's
/// watchdog asks for it.
pub fn tick_every() -> Duration {
    let second = Duration::from_secs(1);
    sd_notify::watchdog_enabled().map_or(second, |w| (w / 3).min(second))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HealthState {
    /// Moves to `phase`; once stopping, the daemon stays stopping.
    pub fn set_phase(&self, phase: Phase) {
        let _ = self
            .phase
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                (current != Phase::Stopping as u8).then_some(phase as u8)
            });
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    /// The phase as shown to operators: `streaming` becomes `catching-up` while
    /// the lag is high.
    pub(crate) fn phase_name(&self) -> &'static str {
        match self.phase() {
            Phase::Starting => "starting",
            Phase::Standby => "standby",
            Phase::Snapshot => "snapshot",
            Phase::Streaming if self.lag() > CATCHING_UP_LAG => "catching-up",
            Phase::Streaming => "streaming",
            Phase::Stopping => "stopping",
        }
    }

    /// The pipeline loop is alive: records the tick and pings systemd.
    pub fn tick(&self) {
        let elapsed = self.started.elapsed().as_millis() as i64;
        self.last_tick.store(elapsed, Ordering::SeqCst);
        // The loop ticks once per batch; systemd needs a ping per tick interval
        // at most, so busy pipelines do not pay a datagram per batch.
        let every = tick_every().as_millis() as i64;
        let last = self.last_notify.load(Ordering::SeqCst);
        if last >= 0 && elapsed - last < every / 2 {
            return;
        }
        self.last_notify.store(elapsed, Ordering::SeqCst);
        let status = format!(
            "{}, lag {:.1}s",
            self.phase_name(),
            self.lag().as_secs_f64()
        );
        let _ = sd_notify::notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
    }

    /// The loop ticked recently (or has not started yet: a standby is alive).
    pub fn alive(&self) -> Option<Duration> {
        let since = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_tick.load(Ordering::SeqCst).max(0) as u64,
        ));
        let limit = (tick_every() * 5).max(Duration::from_secs(5));
        (since > limit).then_some(since)
    }

    /// The source is connected and streaming or snapshotting, and nothing is
    /// wrong: `Ok(phase)`, else `Err(why)`.
    pub fn readiness(&self) -> Result<&'static str, String> {
        let phase = self.phase_name();
        if !matches!(self.phase(), Phase::Snapshot | Phase::Streaming) {
            return Err(format!("{phase}: the pipeline is not running"));
        }
        if let Some(stuck) = self.alive() {
            return Err(format!(
                "{phase}: the pipeline loop has not ticked for {:.0}s",
                stuck.as_secs_f64()
            ));
        }
        let problems = lock(&self.problems);
        if problems.is_empty() {
            Ok(phase)
        } else {
            let list: Vec<String> = problems.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            Err(format!("{phase}: {}", list.join("; ")))
        }
    }

    /// Sets (`Some`) or clears (`None`) what keeps the daemon from being ready.
    /// A new problem is logged once as a warning; its end once as info.
    pub fn set_problem(&self, area: &'static str, problem: Option<String>) {
        let mut problems = lock(&self.problems);
        match problem {
            Some(text) => {
                if problems.get(area) != Some(&text) {
                    tracing::warn!("not ready: {area}: {text}");
                    problems.insert(area, text);
                }
            }
            None => {
                if problems.remove(area).is_some() {
                    tracing::info!("{area}: back to normal");
                }
            }
        }
    }

    /// A batch was read: its oldest event's source commit time, unless older
    /// events are still in flight.
    pub(crate) fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::SeqCst)
    }

    pub(crate) fn events_written(&self) -> u64 {
        self.events_written.load(Ordering::SeqCst)
    }

    /// A batch of `events` was read; its oldest event committed at `oldest_ts_ms`.
    pub fn read(&self, events: usize, oldest_ts_ms: i64) {
        self.events_read.fetch_add(events as u64, Ordering::SeqCst);
        let _ = self.in_flight_since.compare_exchange(
            0,
            oldest_ts_ms.max(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// A batch was written: nothing is in flight until the next is read.
    /// A batch of `events` was written; its last event committed at `last_ts_ms`.
    pub fn written(&self, events: usize, last_ts_ms: i64) {
        self.events_written
            .fetch_add(events as u64, Ordering::SeqCst);
        if last_ts_ms > 0 {
            self.last_written.store(last_ts_ms, Ordering::SeqCst);
        }
        self.in_flight_since.store(0, Ordering::SeqCst);
    }

    pub fn committed(&self, position: String) {
        self.last_commit.store(now_ms(), Ordering::SeqCst);
        self.resumed_at(position);
    }

    /// The cursor loaded at start.
    pub(crate) fn resumed_at(&self, position: String) {
        *lock(&self.position) = position;
    }

    /// The last committed cursor position, for error lines.
    pub fn position(&self) -> String {
        lock(&self.position).clone()
    }

    /// How long the oldest change read but not yet written has waited since its
    /// source commit; zero when everything read is written.
    pub fn lag(&self) -> Duration {
        let since = self.in_flight_since.load(Ordering::SeqCst);
        if since == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis((now_ms() - since).max(0) as u64)
    }

    /// Source commit time of the last written event (ms since the epoch).
    pub(crate) fn last_written_ms(&self) -> i64 {
        self.last_written.load(Ordering::SeqCst)
    }

    /// Time since the last cursor commit.
    pub(crate) fn cursor_age(&self) -> Option<Duration> {
        let at = self.last_commit.load(Ordering::SeqCst);
        (at > 0).then(|| Duration::from_millis((now_ms() - at).max(0) as u64))
    }
}
