//! Sinks: where change events go. `write` hands a batch over; `sync` returns
//! once everything written is durable (for a file: fsynced; Kinesis and target
//! databases are durable when `write` returns), which is what allows the cursor
//! to move.

mod file;
pub(crate) mod kinesis;
mod stdout;
pub mod target;

pub use file::{index_of as events_file_index, probe as probe_folder, FileSink};
pub use kinesis::{partition_key, KinesisSink, Oversized};
pub use stdout::StdoutSink;

use tidemark_connectors::event::SourceCache;
use tidemark_connectors::ChangeEvent;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
    #[error("file sink {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("file sink: {0}")]
    Locked(#[from] crate::lockfile::LockError),
    #[error("stdout sink: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("kinesis sink: {0}")]
    Kinesis(String),
    #[error("kinesis sink: the event at {position} on {table} (partition key {key}) is {size} bytes, over the record limit of {limit} (sink.oversized = \"fail\"; \"skip-and-count\" skips such events)")]
    Oversized {
        table: String,
        key: String,
        size: usize,
        limit: usize,
        position: String,
    },
}

/// The configured sink. The set is fixed, so an enum reads plainer than a trait object.
pub enum AnySink {
    File(FileSink),
    Stdout(StdoutSink),
    Kinesis(Box<KinesisSink>),
    /// A target database (`tidemark apply` and `migrate` in one process).
    Target(Box<crate::sinks::target::TargetSink>),
}

impl AnySink {
    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        match self {
            AnySink::File(sink) => tokio::task::block_in_place(|| sink.write(events)),
            AnySink::Stdout(sink) => sink.write(events).await,
            AnySink::Kinesis(sink) => sink.write(events).await,
            AnySink::Target(sink) => Ok(sink.write(events).await?),
        }
    }

    /// Makes everything written so far durable: called before each cursor commit.
    pub async fn sync(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::File(sink) => tokio::task::block_in_place(|| sink.sync()),
            AnySink::Stdout(_) | AnySink::Kinesis(_) | AnySink::Target(_) => Ok(()),
        }
    }

    /// What the sink did, for the stop log line (Kinesis: records per call).
    pub fn report(&self) -> Option<String> {
        match self {
            AnySink::Kinesis(sink) => Some(format!(
                "kinesis: {} records in {} PutRecords calls ({:.1} per call), {} oversized events skipped",
                sink.records_written,
                sink.calls,
                sink.records_written as f64 / sink.calls.max(1) as f64,
                sink.skipped_oversized
            )),
            AnySink::Target(sink) => Some(format!(
                "target: {} events applied ({} row writes), {} replayed events skipped",
                sink.events, sink.rows, sink.skipped
            )),
            AnySink::File(_) | AnySink::Stdout(_) => None,
        }
    }

    /// The position of the last event the sink already holds, when it can tell:
    /// after a crash, events up to it are not written again.
    pub fn last_position(&self) -> Option<&str> {
        match self {
            AnySink::File(sink) => sink.last_position(),
            AnySink::Stdout(_) | AnySink::Kinesis(_) | AnySink::Target(_) => None,
        }
    }
}

/// Appends each event as one JSON line; `cache` carries a shared `source`
/// block over from one call to the next.
pub(crate) fn encode_lines(events: &[ChangeEvent], out: &mut Vec<u8>, cache: &mut SourceCache) {
    for event in events {
        event.write_json_cached(out, cache);
        out.push(b'\n');
    }
}
