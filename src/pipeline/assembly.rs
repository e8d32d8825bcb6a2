//! One assembly of a run, shared by `run`, `apply` with `input = "source"`
//! and `migrate`'s catch-up: where the source resumes, the commit of a fresh
//! start, the run itself, the sink's report, and why it stopped. The callers
//! build the parts (sink, cursor store, source) from their own settings.

use super::contract::{Cursor, Sink, Source};
use super::{commit_fresh_start, run, PipelineError, Settings, Summary};
use crate::ops::stop::StopSignal;
use crate::ops::Health;
use crate::transform::Transforms;
use std::sync::Arc;
use std::time::Duration;
use tidemark_connectors::{Position, SourceHandle};

/// Where a source resumes: what this process committed since it started
/// (after a reconnect), else what the cursor store holds, else `fallback`
/// (a migration's recorded start). The health is told.
pub fn resume_point(
    handle: &SourceHandle,
    stored: Option<Position>,
    fallback: Option<Position>,
    health: &Health,
) -> Option<Position> {
    let resume = handle.durable.borrow().clone().or(stored).or(fallback);
    if let Some(position) = &resume {
        health.resumed_at(position.to_string());
    }
    resume
}

/// The parts of a run, built by its caller.
pub struct Assembly<'a, S, C> {
    pub sink: &'a mut S,
    pub cursor: &'a mut C,
    pub handle: &'a SourceHandle,
    pub stop: &'a StopSignal,
    pub commit_every: Duration,
    pub health: &'a Health,
    /// Applied to every batch before the sink sees it.
    pub transforms: Arc<Transforms>,
}

impl<S: Sink, C: Cursor> Assembly<'_, S, C> {
    /// A stream-only start without a cursor commits where it starts, before
    /// anything is read (see [`commit_fresh_start`]).
    pub async fn start(&mut self, source: &impl Source) -> Result<(), PipelineError> {
        if let Some(start) = commit_fresh_start(
            source,
            self.sink,
            self.cursor,
            &self.handle.durable,
            self.health,
        )
        .await?
        {
            tracing::info!("no cursor: the start {start} is the cursor now");
        }
        Ok(())
    }

    /// Runs the pipeline from `resumed` until the source stops. A stop for a
    /// failure (a lost retention or lease) is an error naming it; any other
    /// stop comes back in the summary.
    pub async fn run(
        self,
        source: impl Source,
        resumed: Option<&Position>,
        report: impl FnOnce(&S) -> Option<String>,
    ) -> Result<Summary, PipelineError> {
        let summary = run(
            source,
            &self.handle.durable,
            self.sink,
            self.cursor,
            Settings {
                resumed,
                commit_every: self.commit_every,
                health: self.health,
                transforms: self.transforms.clone(),
            },
        )
        .await;
        let stopped_by = self.stop.reason();
        if let Some(failure) = stopped_by.as_ref().and_then(|r| r.failure()) {
            return Err(PipelineError::Stopped(failure.to_string()));
        }
        if let Some(report) = report(self.sink) {
            tracing::info!("{report}");
        }
        let mut summary = summary?;
        summary.stopped_by = stopped_by;
        Ok(summary)
    }
}
