//! The snapshot-then-stream driver both log connectors share. While a
//! snapshot is read, its chunks are the source's batches (no `end`: a cursor
//! never lands inside a snapshot); a stop during it gives up the snapshot,
//! which starts over next time; once it is read, the caller starts the
//! stream at the snapshot's consistent point and hands on an empty batch
//! that ends there, the first position a cursor may hold.

use crate::{Batch, ChangeEvent, SourceError};
use std::future::Future;
use tokio::sync::watch;

/// A snapshot being read in chunks.
pub(crate) trait Snapshot {
    /// The next chunk of rows, or `None` once every table is read.
    fn next_chunk(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<ChangeEvent>>, SourceError>> + Send;
}

/// Where a log source is: reading its snapshot, or streaming its log.
pub(crate) enum Reading<S> {
    Snapshot(Box<S>),
    Streaming,
}

/// What the snapshot gave this time.
pub(crate) enum Step<S> {
    /// The source streams already: read the log.
    Streaming,
    /// Stopped during the snapshot.
    Stopped,
    /// Rows of the snapshot.
    Rows(Batch),
    /// The snapshot is read: start the stream at its consistent point.
    Done(Box<S>),
}

impl<S: Snapshot> Reading<S> {
    /// The next step of the snapshot, if one is being read; once it is done
    /// the source streams.
    pub(crate) async fn step(
        &mut self,
        stop: &watch::Receiver<bool>,
    ) -> Result<Step<S>, SourceError> {
        let Reading::Snapshot(snapshot) = self else {
            return Ok(Step::Streaming);
        };
        if *stop.borrow() {
            tracing::info!(
                "stopping during the snapshot: it restarts from the beginning next time"
            );
            return Ok(Step::Stopped);
        }
        if let Some(events) = snapshot.next_chunk().await? {
            return Ok(Step::Rows(Batch { events, end: None }));
        }
        match std::mem::replace(self, Reading::Streaming) {
            Reading::Snapshot(done) => Ok(Step::Done(done)),
            Reading::Streaming => Ok(Step::Streaming),
        }
    }
}
