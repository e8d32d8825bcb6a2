//! The process's signal handlers, installed in one place for every command:
//! SIGTERM and SIGINT stop the pipeline (finishing the current batch), and,
//! where a config file is given, SIGHUP re-reads its log level.

use anyhow::Context;
use std::path::PathBuf;
use tidemark::config::Config;
use tidemark::ops::stop::{StopReason, StopSignal};
use tidemark::ops::{logging, Health};
use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers; `reload_from` is the config whose log level a
/// SIGHUP applies.
pub(crate) fn install(
    stop: StopSignal,
    reload_from: Option<PathBuf>,
    health: Health,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: finishing the current batch");
        health.notify_stopping();
        stop.stop(StopReason::Requested);
    });
    let Some(path) = reload_from else {
        return Ok(());
    };
    let mut hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // Only the log level is re-read; the pipeline keeps running as it is.
            match Config::load(&path)
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
    Ok(())
}

/// A stop flag of its own, raised by SIGTERM or SIGINT, for the commands
/// that run no pipeline of their own (`apply` from the sink, `migrate run`).
pub(crate) fn stop_on_signals(
    health: &Health,
) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let (flag, stopped) = tokio::sync::watch::channel(false);
    install(StopSignal::new(flag), None, health.clone())?;
    Ok(stopped)
}
