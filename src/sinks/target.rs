//! The target as the pipeline's sink, for capture and apply in one process
//! (`tidemark apply` with `input = "source"`, and `migrate run`).
//!
//! The sink writes each batch and its last event's position in one target
//! transaction (see `cursor::target` for the cursor kept beside it). After a
//! crash the source resumes at the cursor, which may be behind the rows: the
//! events in between are at or before the applied position and are skipped.

use crate::target::{after_applied, AppliedSpan, Target, TargetError};
use tidemark_connectors::ChangeEvent;

pub struct TargetSink {
    pub target: Target,
    scope: String,
    applied: Option<String>,
    pub events: u64,
    pub rows: u64,
    pub skipped: u64,
    /// Source commit time of the last event applied (ms), for lag.
    pub last_source_ts_ms: i64,
}

impl TargetSink {
    /// `scope` names what orders the positions (the source pipeline, a shard).
    pub async fn open(mut target: Target, scope: &str) -> Result<TargetSink, TargetError> {
        target.claim(scope).await?;
        let mut sink = TargetSink {
            target,
            scope: scope.to_string(),
            applied: None,
            events: 0,
            rows: 0,
            skipped: 0,
            last_source_ts_ms: 0,
        };
        sink.reload().await?;
        if let Some(applied) = &sink.applied {
            tracing::info!("target: {scope} applied up to {applied}");
        }
        Ok(sink)
    }

    /// Reads the applied position again (another writer may have moved it).
    pub async fn reload(&mut self) -> Result<(), TargetError> {
        self.applied = self
            .target
            .applied(&self.scope)
            .await?
            .map(|(position, _)| position)
            .filter(|p| !p.is_empty());
        Ok(())
    }

    pub fn applied(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<(), TargetError> {
        let positions: Vec<String> = events.iter().map(|e| e.position.to_string()).collect();
        let pairs: Vec<(&ChangeEvent, &str)> = events
            .iter()
            .zip(&positions)
            .map(|(e, p)| (e, p.as_str()))
            .collect();
        self.write_positioned(&pairs).await
    }

    /// Writes events whose positions are given as text (read back from JSON).
    pub(crate) async fn write_positioned(
        &mut self,
        events: &[(&ChangeEvent, &str)],
    ) -> Result<(), TargetError> {
        let (fresh, latest) = after_applied(events, self.applied.as_deref());
        self.skipped += (events.len() - fresh.len()) as u64;
        let (Some(first), Some(last)) = (fresh.first().map(|(_, p)| *p), latest) else {
            return Ok(());
        };
        let progress = AppliedSpan {
            scope: &self.scope,
            first,
            last,
        };
        self.rows += self.target.apply(&fresh, Some(progress)).await?;
        self.events += fresh.len() as u64;
        if let Some((event, _)) = fresh.last() {
            self.last_source_ts_ms = event.source.ts_ms;
        }
        self.applied = Some(last.to_string());
        Ok(())
    }
}
