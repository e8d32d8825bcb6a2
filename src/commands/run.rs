//! `tidemark run` (and `apply` with `input = "source"`): the pipeline, run in
//! sessions that a failure a new session may cure starts over.

use super::assemble::{
    connect_target, cursor_store, open_sink, retention_watch, source_identity, transform_problems,
    Mode,
};
use super::reconnect::{tick_while_starting, wait_to_reconnect};
use super::signals;
use anyhow::bail;
use std::path::Path;
use tidemark::config::{Config, SourceSettings};
use tidemark::cursor::target::TargetCursor;
use tidemark::cursor::CursorStore;
use tidemark::ops::logging;
use tidemark::ops::stop::StopSignal;
use tidemark::ops::{self, events, Health, Phase};
use tidemark::pipeline::assembly::Assembly;
use tidemark::pipeline::{self, AnySource};
use tidemark::sinks::target::TargetSink;
use tidemark::sinks::AnySink;
use tidemark_connectors::event::lsn_text;
use tidemark_connectors::mysql::MysqlSource;
use tidemark_connectors::poll::PollSource;
use tidemark_connectors::postgres::PostgresSource;
use tidemark_connectors::Position;

/// Runs the pipeline; an error names the pipeline and its cursor position.
pub(crate) async fn run(
    path: &Path,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: Option<(String, u64)>,
    mode: Mode,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let name = config.pipeline.name.clone();
    let health = Health::new();
    run_pipeline(path, config, (stop_at_lsn, stop_at_binlog), mode, &health)
        .await
        .map_err(|e| {
            let position = health.position();
            let at = if position.is_empty() {
                "no cursor yet".to_string()
            } else {
                format!("cursor at {position}")
            };
            e.context(format!("pipeline {name} ({at})"))
        })
}

async fn run_pipeline(
    path: &Path,
    config: Config,
    (stop_at_lsn, stop_at_binlog): (Option<u64>, Option<(String, u64)>),
    mode: Mode,
    health: &Health,
) -> anyhow::Result<()> {
    if let Err(e) = logging::set_level(&config.log.level) {
        bail!("{e}");
    }
    ops::metrics::install();
    if let Some(address) = config.http.address()? {
        ops::http::serve(address, health.clone()).await?;
    }
    let problems = transform_problems(&config).await?;
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    tick_while_starting(health);
    let (handle, control) = tidemark_connectors::control();
    // Signals first: a standby may wait for its lease for a long time.
    let stop = StopSignal::new(handle.stop.clone());
    signals::install(stop.clone(), Some(path.to_path_buf()), health.clone())?;
    // A lost source, target or cursor store is reconnected in process: the
    // session (cursor, sink, source, stream) starts over from the committed
    // position, after a wait that grows to 30 s; only what a new session
    // cannot cure ends the process. Before the first session streams, any
    // failure ends it at once: a wrong host reads like a server that is
    // down, and a start is retried by the service manager (the unit's
    // Restart=), not by a loop a person at a terminal has to interrupt.
    let mut retry = ops::reconnect::Retry::default();
    let mut session = Session {
        path,
        config: &config,
        stop_at_lsn,
        stop_at_binlog,
        mode,
        handle: &handle,
        stop,
        health: health.clone(),
        control,
        held: None,
        streamed: false,
        retention_started: false,
    };
    loop {
        let error = match session.run(&mut retry).await {
            Ok(()) => {
                session.release().await;
                return Ok(());
            }
            Err(error) => error,
        };
        let stopping = *handle.stop.borrow();
        if stopping || !session.streamed || !super::reconnect::transient(error.chain()) {
            session.release().await;
            return Err(error);
        }
        if !wait_to_reconnect(&mut retry, &error, handle.stop.subscribe(), health).await {
            session.release().await;
            return Ok(());
        }
    }
}

/// One session of `run` (or `apply` with `input = "source"`): what a process
/// start does, from holding the cursor to the end of the stream. A capture
/// session keeps the cursor store it held across reconnects (its lease, its
/// lock), and resumes from what it committed.
struct Session<'a> {
    path: &'a Path,
    config: &'a Config,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: Option<(String, u64)>,
    mode: Mode,
    handle: &'a tidemark_connectors::SourceHandle,
    stop: StopSignal,
    health: Health,
    control: tidemark_connectors::SourceControl,
    /// Capture: the cursor store, once held, and the position it was loaded at.
    held: Option<(CursorStore, Option<Position>)>,
    /// A session got as far as streaming (later failures are reconnected).
    streamed: bool,
    retention_started: bool,
}

/// The target as sink and cursor store (`apply` with `input = "source"`).
type TargetParts = (AnySink, CursorStore);

impl Session<'_> {
    /// On the way out: lets a standby take over at once.
    async fn release(&mut self) {
        if let Some((cursor, _)) = self.held.as_mut() {
            cursor.release().await;
        }
    }

    async fn run(&mut self, retry: &mut ops::reconnect::Retry) -> anyhow::Result<()> {
        let config = self.config;
        // The capture sink opens once the cursor is held: it needs to know whose
        // lines it may take as already written (`CursorStore::bind_source`).
        let mut target = match self.mode {
            Mode::Capture => {
                if !self.hold_cursor().await? {
                    return Ok(());
                }
                None
            }
            Mode::Apply => Some(target_parts(config).await?),
        };
        let (target_sink, cursor, loaded) = match (&mut target, &mut self.held) {
            (Some((sink, cursor)), _) => {
                let mut stopped = self.control.stop.clone();
                let loaded = tokio::select! {
                    loaded = cursor.load() => loaded?,
                    _ = stopped.wait_for(|stop| *stop) => return Ok(()),
                };
                (Some(sink), cursor, loaded)
            }
            (None, Some((cursor, loaded))) => (None, cursor, loaded.clone()),
            (None, None) => bail!("cursor: no cursor store"),
        };
        let resume = pipeline::assembly::resume_point(self.handle, loaded, None, &self.health);
        let source_id = source_identity(config, self.stop_at_lsn, &self.stop_at_binlog).await?;
        let lineage = cursor.bind_source(&source_id, resume.is_some())?;
        let mut opened;
        let sink = match target_sink {
            Some(sink) => sink,
            None => {
                opened = open_sink(
                    config,
                    &format!("{source_id}, cursor lineage {lineage}"),
                    &self.health,
                )
                .await?;
                &mut opened
            }
        };
        let source = open_source(
            config,
            (self.stop_at_lsn, &self.stop_at_binlog),
            self.control.clone(),
            resume.clone(),
            sink,
        )
        .await?;
        let mut assembly = Assembly {
            sink,
            cursor,
            handle: self.handle,
            stop: &self.stop,
            commit_every: config.pipeline.commit_interval,
            health: &self.health,
            transforms: config.transforms.clone(),
        };
        assembly.start(&source).await?;
        streaming(retry, &config.pipeline.name, &self.health);
        self.streamed = true;
        if !self.retention_started {
            self.retention_started =
                watch_retention(config, self.path, self.handle, (&self.stop, &self.health));
        }
        let summary = assembly
            .run(source, resume.as_ref(), AnySink::report)
            .await?;
        log_summary(&summary);
        Ok(())
    }

    /// Capture: holds the cursor store (a standby waits here for the lease)
    /// and loads its position, once per process; false when stopped meanwhile.
    async fn hold_cursor(&mut self) -> anyhow::Result<bool> {
        if self.held.is_some() {
            return Ok(true);
        }
        let mut cursor = cursor_store(self.config, &self.health).await?;
        cursor.stop_on_lease_loss(self.stop.clone());
        let mut stopped = self.control.stop.clone();
        let loaded = tokio::select! {
            loaded = cursor.load() => loaded?,
            _ = stopped.wait_for(|stop| *stop) => {
                tracing::info!("stopped before holding the cursor");
                return Ok(false);
            }
        };
        self.held = Some((cursor, loaded));
        Ok(true)
    }
}

/// Opens the configured source at `resume`. A poll source is given the
/// sink's last position (when resuming) to tell repeats itself.
async fn open_source(
    config: &Config,
    (stop_at_lsn, stop_at_binlog): (Option<u64>, &Option<(String, u64)>),
    control: tidemark_connectors::SourceControl,
    resume: Option<Position>,
    sink: &AnySink,
) -> anyhow::Result<AnySource> {
    let resuming = resume.is_some();
    Ok(
        match config.connector_config(stop_at_lsn, stop_at_binlog.clone()) {
            SourceSettings::Postgres(pg) => {
                AnySource::Postgres(Box::new(PostgresSource::open(pg, resume, control).await?))
            }
            SourceSettings::Mysql(my) => {
                AnySource::Mysql(Box::new(MysqlSource::open(my, resume, control).await?))
            }
            SourceSettings::Poll(poll) => AnySource::Poll(Box::new(
                PollSource::open(
                    poll,
                    resume,
                    sink.last_position().filter(|_| resuming),
                    control,
                )
                .await?,
            )),
        },
    )
}

/// The session streams: health, systemd and the backoff are told.
fn streaming(retry: &mut ops::reconnect::Retry, pipeline: &str, health: &Health) {
    if retry.attempts > 0 {
        events::reconnected(health, retry.attempts);
    } else {
        health.set_phase(Phase::Streaming);
        health.set_problem("source", None);
    }
    health.notify_ready();
    retry.succeeded();
    tracing::info!("pipeline {pipeline} running");
}

/// Starts the retention watch of a log-based source; false when there is
/// none to watch.
fn watch_retention(
    config: &Config,
    path: &Path,
    handle: &tidemark_connectors::SourceHandle,
    (stop, health): (&StopSignal, &Health),
) -> bool {
    let Some(watch) = retention_watch(config) else {
        return false;
    };
    let every = config.retention.check_interval;
    let recovery = format!("tidemark cursor reset --config {}", path.display());
    tokio::spawn(ops::retention::run(
        watch,
        every,
        handle.durable.subscribe(),
        stop.clone(),
        recovery,
        health.clone(),
    ));
    true
}

/// The target as sink and cursor store, for `apply` with `input = "source"`.
async fn target_parts(config: &Config) -> anyhow::Result<TargetParts> {
    let scope = config.pipeline.name.clone();
    let sink = TargetSink::open(connect_target(config).await?, &scope).await?;
    let target = connect_target(config).await?;
    Ok((
        AnySink::Target(Box::new(sink)),
        CursorStore::Target(Box::new(TargetCursor { target, scope })),
    ))
}

/// The run's last line: what it wrote and where the cursor is.
fn log_summary(summary: &pipeline::Summary) {
    tracing::info!(
        "stopped: {} events in {} batches; cursor at {}{}",
        summary.events,
        summary.batches,
        summary
            .cursor
            .as_ref()
            .map_or("(unchanged)".into(), |p| p.to_string()),
        match &summary.cursor {
            Some(Position::Postgres { lsn, .. }) => format!(" (LSN {})", lsn_text(*lsn)),
            _ => String::new(),
        }
    );
}
