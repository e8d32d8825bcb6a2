//! The stdout sink: JSON lines on standard output, flushed before acknowledging.
//! A pipe is only as durable as its reader, so this sink is for watching and for
//! piping into tools, not for keeping data.

use super::{encode_lines, SinkError};
use tidemark_connectors::event::SourceCache;
use tidemark_connectors::ChangeEvent;
use tokio::io::AsyncWriteExt;

pub struct StdoutSink {
    out: tokio::io::Stdout,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            out: tokio::io::stdout(),
            buf: Vec::new(),
        }
    }

    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<(), SinkError> {
        self.buf.clear();
        encode_lines(events, &mut self.buf, &mut SourceCache::default());
        self.out
            .write_all(&self.buf)
            .await
            .map_err(SinkError::Stdout)?;
        self.out.flush().await.map_err(SinkError::Stdout)
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}
