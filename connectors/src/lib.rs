//! Tidemark's event model and its source connectors.
//!
//! A connector reads a source database's change log and yields [`Batch`]es of
//! [`ChangeEvent`]s. It never decides what is durable: the pipeline tells it,
//! through [`SourceControl`], which position downstream holds, and only then may
//! the connector let the source forget (for Postgres, the slot's flush LSN).

#![warn(unreachable_pub)]

pub(crate) mod batcher;
pub mod columns;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod mysql;
pub mod poll;
pub mod position;
pub mod postgres;
pub(crate) mod progress;
mod snapshot_then_stream;
pub mod sql;
pub mod table;

pub use batcher::MAX_BATCH_BYTES;
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
    #[error("postgres: cannot {what}: {}", sql::postgres::error_detail(source))]
    Postgres {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("replication stream failed at {at}: {message}")]
    Replication { at: String, message: String },
    #[error("cannot decode the change at {at}: {message}")]
    Decode { at: String, message: String },
    /// The server cannot be reached or went away (refused, reset, shutting
    /// down): a reconnect may cure it.
    #[error("{0}")]
    Unavailable(String),
}

impl SourceError {
    /// True for failures a reconnect may cure (connection loss, server restart).
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Setup(_) | SourceError::Decode { .. } => false,
            SourceError::Postgres { source, .. } => postgres_transient(source),
            SourceError::Replication { .. } | SourceError::Unavailable(_) => true,
        }
    }
}

/// True for a Postgres error a reconnect may cure: the connection closed or
/// failed at the socket, or the server says it is shutting down, starting,
/// or out of connections (SQLSTATE classes 08 and 57P, and 53300). A wrong
/// password or a missing table is not.
pub fn postgres_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || code.starts_with("57P") || code == "53300";
    }
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return io_transient(io);
        }
        cause = inner.source();
    }
    false
}

/// True for a socket that failed or closed; false for what a TLS handshake
/// reports as an I/O error (a certificate refused, a protocol mismatch:
/// `InvalidData`), which a reconnect would only repeat.
fn io_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | UnexpectedEof
            | TimedOut
            | Interrupted
            | AddrNotAvailable
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

/// True for a MySQL/MariaDB error a reconnect may cure: the socket failed or
/// closed, or the server is shutting down, killed the connection, or has no
/// connection to spare. A refused login or a missing table is not.
pub fn mysql_transient(e: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, Error};
    match e {
        Error::Io(mysql_async::IoError::Io(io)) => io_transient(io),
        Error::Driver(DriverError::ConnectionClosed | DriverError::PoolDisconnected) => true,
        // ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED,
        // CR_SERVER_GONE_ERROR, CR_SERVER_LOST, ER_QUERY_INTERRUPTED.
        Error::Server(server) => matches!(server.code, 1040 | 1053 | 1927 | 2006 | 2013 | 1317),
        _ => false,
    }
}

/// What the pipeline tells a running source. Clones follow the same
/// pipeline (a source reopened after a reconnect gets one).
#[derive(Clone)]
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
