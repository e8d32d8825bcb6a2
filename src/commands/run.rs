//! `tidemark run` (and `apply` with `input = "source"`): the pipeline, run in
//! sessions that a failure a new session may cure starts over.

use super::assemble::{
    connect_target, cursor_store, open_sink, retention_watch, source_identity, Mode,
};
use super::reconnect::{tick_while_starting, wait_to_reconnect};
use anyhow::{bail, Context};
use std::path::Path;
use tidemark::config::{Config, SourceSettings};
use tidemark::cursor::target::TargetCursor;
use tidemark::cursor::CursorStore;
use tidemark::ops::logging;
use tidemark::ops::{self, health, Phase};
use tidemark::pipeline::{self, AnySource};
use tidemark::sinks::target::TargetSink;
use tidemark::sinks::AnySink;
use tidemark_connectors::event::lsn_text;
use tidemark_connectors::mysql::MysqlSource;
use tidemark_connectors::poll::PollSource;
use tidemark_connectors::postgres::PostgresSource;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the pipeline; an error names the pipeline and its cursor position.
pub(crate) async fn run(
    path: &Path,
    stop_at_lsn: Option<u64>,
    stop_at_binlog: Option<(String, u64)>,
    mode: Mode,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let name = config.pipeline.name.clone();
    run_pipeline(path, config, stop_at_lsn, stop_at_binlog, mode)
        .await
        .map_err(|e| {
            let position = health().position();
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
    stop_at_lsn: Option<u64>,
    stop_at_binlog: Option<(String, u64)>,
    mode: Mode,
) -> anyhow::Result<()> {
    if let Err(e) = logging::set_level(&config.log.level) {
        bail!("{e}");
    }
    ops::metrics::install();
    if let Some(address) = config.http.address()? {
        ops::http::serve(address).await?;
    }
    tick_while_starting();
    let (handle, control) = tidemark_connectors::control();
    // Signals first: a standby may wait for its lease for a long time.
    let stop = handle.stop.clone();
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: finishing the current batch");
        ops::health::notify_stopping();
        stop.send_replace(true);
    });
    let config_path = path.to_path_buf();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // Only the log level is re-read; the pipeline keeps running as it is.
            match Config::load(&config_path)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    logging::set_level(&c.log.level)?;
                    Ok(c.log.level)
                }) {
                Ok(level) => tracing::info!("SIGHUP: log level is now {level}"),
                Err(e) => tracing::warn!("SIGHUP: kept the log level: {e}"),
            }
        }
    });
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
        if !wait_to_reconnect(&mut retry, &error, handle.stop.subscribe()).await {
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
    control: tidemark_connectors::SourceControl,
    /// Capture: the cursor store, once held, and the position it was loaded at.
    held: Option<(CursorStore, Option<tidemark_connectors::Position>)>,
    /// A session got as far as streaming (later failures are reconnected).
    streamed: bool,
    retention_started: bool,
}

impl Session<'_> {
    /// On the way out: lets a standby take over at once.
    async fn release(&mut self) {
        if let Some((cursor, _)) = self.held.as_mut() {
            cursor.release().await;
        }
    }

    async fn run(&mut self, retry: &mut ops::reconnect::Retry) -> anyhow::Result<()> {
        let config = self.config;
        let handle = self.handle;
        let mut stopped = self.control.stop.clone();
        // The capture sink opens once the cursor is held: it needs to know whose
        // lines it may take as already written (`CursorStore::bind_source`).
        let (target_sink, mut target_cursor) = match self.mode {
            Mode::Capture => {
                if self.held.is_none() {
                    let mut cursor = cursor_store(config).await?;
                    cursor.stop_on_lease_loss(handle.stop.clone());
                    let loaded = tokio::select! {
                        loaded = cursor.load() => loaded?,
                        _ = stopped.wait_for(|stop| *stop) => {
                            tracing::info!("stopped before holding the cursor");
                            return Ok(());
                        }
                    };
                    self.held = Some((cursor, loaded));
                }
                (None, None)
            }
            Mode::Apply => {
                let scope = config.pipeline.name.clone();
                let sink = TargetSink::open(connect_target(config).await?, &scope).await?;
                let target = connect_target(config).await?;
                (
                    Some(AnySink::Target(Box::new(sink))),
                    Some(CursorStore::Target(Box::new(TargetCursor {
                        target,
                        scope,
                    }))),
                )
            }
        };
        let (cursor, loaded) = match (&mut target_cursor, &mut self.held) {
            (Some(cursor), _) => {
                let loaded = tokio::select! {
                    loaded = cursor.load() => loaded?,
                    _ = stopped.wait_for(|stop| *stop) => return Ok(()),
                };
                (cursor, loaded)
            }
            (None, Some((cursor, loaded))) => (cursor, loaded.clone()),
            (None, None) => bail!("cursor: no cursor store"),
        };
        // After a reconnect: from what this process committed since.
        let resume = handle.durable.borrow().clone().or(loaded);
        if let Some(position) = &resume {
            health().resumed_at(position.to_string());
        }
        let resume_at = resume.clone();
        let source_id = source_identity(config, self.stop_at_lsn, &self.stop_at_binlog).await?;
        let lineage = cursor.bind_source(&source_id, resume.is_some())?;
        let mut sink = match target_sink {
            Some(sink) => sink,
            None => open_sink(config, &format!("{source_id}, cursor lineage {lineage}")).await?,
        };
        let control = self.control.clone();
        let source = match config.connector_config(self.stop_at_lsn, self.stop_at_binlog.clone()) {
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
                    sink.last_position().filter(|_| resume_at.is_some()),
                    control,
                )
                .await?,
            )),
        };
        if let Some(start) =
            pipeline::commit_fresh_start(&source, &mut sink, cursor, &handle.durable).await?
        {
            tracing::info!("no cursor: the start {start} is the cursor now");
        }
        health().set_phase(Phase::Streaming);
        health().set_problem("source", None);
        self.streamed = true;
        ops::health::notify_ready();
        if retry.attempts > 0 {
            tracing::info!("reconnected after {} attempts", retry.attempts);
        }
        retry.succeeded();
        tracing::info!("pipeline {} running", config.pipeline.name);
        if let (Some(watch), false) = (retention_watch(config), self.retention_started) {
            self.retention_started = true;
            let every = config.retention.check_interval;
            let recovery = format!("tidemark cursor reset --config {}", self.path.display());
            tokio::spawn(ops::retention::run(
                watch,
                every,
                handle.durable.subscribe(),
                handle.stop.clone(),
                recovery,
            ));
        }

        let summary = pipeline::run(
            source,
            &handle.durable,
            &mut sink,
            cursor,
            resume_at.as_ref(),
            config.pipeline.commit_interval,
        )
        .await;
        if let Some(fatal) = health().take_fatal() {
            bail!("{fatal}");
        }
        if let Some(report) = sink.report() {
            tracing::info!("{report}");
        }
        let summary = summary?;
        tracing::info!(
            "stopped: {} events in {} batches; cursor at {}{}",
            summary.events,
            summary.batches,
            summary
                .cursor
                .as_ref()
                .map_or("(unchanged)".into(), |p| p.to_string()),
            match &summary.cursor {
                Some(tidemark_connectors::Position::Postgres { lsn, .. }) =>
                    format!(" (LSN {})", lsn_text(*lsn)),
                _ => String::new(),
            }
        );
        Ok(())
    }
}
