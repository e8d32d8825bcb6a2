//! The reader task: pulls batches from the source into the writer's channel
//! (bounded: a slow sink slows reading instead of growing the heap), and
//! takes back the emptied vectors of written batches to fill them again.

use super::contract::Source;
use crate::ops::events;
use tidemark_connectors::{Batch, ChangeEvent, SourceError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Reads until the source stops, fails, or the writer is gone; gives the
/// source back for closing, with how reading ended.
pub(crate) fn spawn<S: Source>(
    mut source: S,
    batches: mpsc::Sender<Batch>,
    mut written: mpsc::Receiver<Vec<ChangeEvent>>,
) -> JoinHandle<(S, Result<(), SourceError>)> {
    tokio::spawn(async move {
        let result = loop {
            while let Ok(events) = written.try_recv() {
                source.recycle(events);
            }
            match source.next_batch().await {
                Ok(Some(batch)) => {
                    events::batch_read(&batch.events);
                    if batches.send(batch).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        (source, result)
    })
}
