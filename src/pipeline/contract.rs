//! The contracts the pipeline runs on: what a source gives, what a sink
//! promises, what a cursor store keeps. The configured sets (`AnySource`,
//! `AnySink`, `CursorStore`) implement them by dispatching to their
//! variants; the pipeline's own rules are unit-tested on in-memory
//! implementations (`doubles`, tests only).

use crate::cursor::{CursorError, CursorStore};
use crate::sinks::{AnySink, SinkError};
use std::future::Future;
use tidemark_connectors::{Batch, ChangeEvent, Position, SourceError};

/// A source of change batches, in position order.
///
/// `next_batch` gives the next batch, or `None` once the source stopped (on
/// the stop signal, or at its stop position). A batch's `end`, when set, is
/// a position every change before which has been given, and no change of an
/// unfinished transaction: a cursor may be committed there, never elsewhere.
pub trait Source: Send + 'static {
    fn next_batch(&mut self) -> impl Future<Output = Result<Option<Batch>, SourceError>> + Send;

    /// Takes back the events of a written batch (to drop them on the
    /// reading thread and reuse their vector).
    fn recycle(&mut self, events: Vec<ChangeEvent>) {
        drop(events);
    }

    /// Where a stream-only start without a cursor begins: committed before
    /// anything is read, so a stop before the first change loses nothing.
    fn fresh_start(&self) -> Option<Position> {
        None
    }

    fn close(self) -> impl Future<Output = ()>;
}

/// Where events go. `write` hands events over in order; `sync` returns once
/// everything handed over is durable, and only then may a cursor move past
/// it. A failed `write` or `sync` leaves the cursor where it was.
pub trait Sink {
    fn write(&mut self, events: &[ChangeEvent]) -> impl Future<Output = Result<(), SinkError>>;

    fn sync(&mut self) -> impl Future<Output = Result<(), SinkError>>;

    /// The position of the last event the sink already holds, when it can
    /// tell: after a crash, events up to it are not written again.
    fn last_position(&self) -> Option<&str> {
        None
    }
}

/// Where the pipeline's position is kept. A committed position is where a
/// restart resumes; it is committed only after the sink made everything
/// before it durable, and it never moves backward.
pub trait Cursor {
    fn commit(&mut self, position: &Position) -> impl Future<Output = Result<(), CursorError>>;

    /// Returns once this instance may write to the sink: an owner that lost
    /// its lease writes nothing more.
    fn confirm_owner(&self) -> impl Future<Output = Result<(), CursorError>> {
        async { Ok(()) }
    }
}

impl Sink for AnySink {
    fn write(&mut self, events: &[ChangeEvent]) -> impl Future<Output = Result<(), SinkError>> {
        AnySink::write(self, events)
    }

    fn sync(&mut self) -> impl Future<Output = Result<(), SinkError>> {
        AnySink::sync(self)
    }

    fn last_position(&self) -> Option<&str> {
        AnySink::last_position(self)
    }
}

impl Cursor for CursorStore {
    fn commit(&mut self, position: &Position) -> impl Future<Output = Result<(), CursorError>> {
        CursorStore::commit(self, position)
    }

    fn confirm_owner(&self) -> impl Future<Output = Result<(), CursorError>> {
        CursorStore::confirm_owner(self)
    }
}
