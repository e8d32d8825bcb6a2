//! The reader task: pulls batches from the source, transforms them (filters
//! and masks, before any sink sees a value), and hands them to the writer's
//! channel (bounded: a slow sink slows reading instead of growing the heap);
//! takes back the emptied vectors of written batches to fill them again.

use super::contract::Source;
use super::PipelineError;
use crate::ops::events;
use crate::transform::{Transformer, Transforms};
use std::sync::Arc;
use tidemark_connectors::{Batch, ChangeEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Reads until the source stops, fails, or the writer is gone; gives the
/// source back for closing, with how reading ended.
pub(crate) fn spawn<S: Source>(
    mut source: S,
    batches: mpsc::Sender<Batch>,
    mut written: mpsc::Receiver<Vec<ChangeEvent>>,
    transforms: Arc<Transforms>,
) -> JoinHandle<(S, Result<(), PipelineError>)> {
    let mut transformer = Transformer::new(transforms);
    tokio::spawn(async move {
        let result = loop {
            while let Ok(events) = written.try_recv() {
                source.recycle(events);
            }
            match source.next_batch().await {
                Ok(Some(mut batch)) => {
                    events::batch_read(&batch.events);
                    if let Err(e) = transformer.apply(&mut batch) {
                        break Err(e.into());
                    }
                    if batches.send(batch).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        (source, result)
    })
}
