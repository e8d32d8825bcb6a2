//! Tidemark's event model and its source connectors.
//!
//! A connector reads a source database's change log and yields [`Batch`]es of
//! [`ChangeEvent`]s. It never decides what is durable: the pipeline tells it,
//! through [`SourceControl`], which position downstream holds, and only then may
//! the connector let the source forget (for Postgres, the slot's flush LSN).

pub mod batcher;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod mysql;
pub mod poll;
pub mod position;
pub mod postgres;
pub mod progress;

pub use event::{Batch, ChangeEvent, Image, Op, Row};
pub use position::{Position, PositionKey};

use tokio::sync::watch;

/// Errors of the source layer. Each names what was being done, and stream errors
/// name the position they happened at.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source is not set up for capture, or the configuration does not fit it.
    #[error("{0}")]
    Setup(String),
    #[error("postgres: cannot {what}: {}", postgres_detail(source))]
    Postgres {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("replication stream failed at {at}: {message}")]
    Replication { at: String, message: String },
    #[error("cannot decode the change at {at}: {message}")]
    Decode { at: String, message: String },
}

impl SourceError {
    /// True for failures a reconnect may cure (connection loss, server restart).
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Setup(_) | SourceError::Decode { .. } => false,
            SourceError::Postgres { source, .. } => {
                source.is_closed() || source.as_db_error().is_none()
            }
            SourceError::Replication { .. } => true,
        }
    }
}

/// The server's own message (with its detail) when there is one, else the client's.
fn postgres_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// What the pipeline tells a running source.
pub struct SourceControl {
    /// Becomes `true` when the source should stop at the next transaction boundary.
    pub stop: watch::Receiver<bool>,
    /// The newest position the cursor store holds.
    pub durable: watch::Receiver<Option<Position>>,
}

/// The pipeline's side of [`SourceControl`].
pub struct SourceHandle {
    pub stop: watch::Sender<bool>,
    pub durable: watch::Sender<Option<Position>>,
}

/// A connected pair: the pipeline keeps the handle, the source the control.
pub fn control() -> (SourceHandle, SourceControl) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (durable_tx, durable_rx) = watch::channel(None);
    (
        SourceHandle {
            stop: stop_tx,
            durable: durable_tx,
        },
        SourceControl {
            stop: stop_rx,
            durable: durable_rx,
        },
    )
}
