//! Reads the file sink's directory (`events-NNNNNNNNNN.jsonl`, in name order)
//! and applies every whole line, following the directory as the sink writes
//! it. Lines at or before the target's applied position are skipped, so a
//! restart reads from the first file again without writing anything twice.

use crate::ops::Health;
use crate::sinks::events_file_index;
use crate::sinks::target::TargetSink;
use crate::target::TargetError;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tidemark_connectors::event::ParsedEvent;
use tidemark_connectors::{ChangeEvent, MAX_BATCH_BYTES};
use tokio::sync::watch;

/// The sink's events files, in the order it wrote them.
fn files(dir: &Path) -> Result<Vec<PathBuf>, TargetError> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| TargetError::Setup(format!("input directory {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let index = events_file_index(p.file_name()?.to_str()?)?;
            Some((index, p))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Applies the directory's events until `stop` (or, with `until_idle`, until
/// every file is read). Returns the number of lines read.
pub async fn follow(
    dir: &Path,
    sink: &mut TargetSink,
    mut stop: watch::Receiver<bool>,
    until_idle: bool,
    batch_events: usize,
    health: &Health,
) -> Result<u64, TargetError> {
    let mut current: usize = 0;
    let mut offset: u64 = 0;
    let mut lines = 0;
    loop {
        let names = files(dir)?;
        let Some(path) = names.get(current) else {
            if until_idle || *stop.borrow() {
                return Ok(lines);
            }
            wait(&mut stop).await;
            continue;
        };
        health.tick();
        let (batch, next_offset) = read_lines(path, offset, batch_events)?;
        let read_something = !batch.is_empty();
        if read_something {
            let pairs: Vec<(&ChangeEvent, &str)> = batch
                .iter()
                .map(|p| (&p.event, p.position.as_str()))
                .collect();
            sink.write_positioned(&pairs).await?;
            lines += batch.len() as u64;
            offset = next_offset;
        }
        if *stop.borrow() {
            return Ok(lines);
        }
        if !read_something {
            if current + 1 < names.len() {
                // The sink moved on to the next file: this one is complete.
                current += 1;
                offset = 0;
            } else if until_idle {
                return Ok(lines);
            } else {
                wait(&mut stop).await;
            }
        }
    }
}

async fn wait(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        _ = stop.changed() => {}
    }
}

/// Up to `max` whole lines of `path` from `offset` (fewer once they hold
/// `MAX_BATCH_BYTES`, so that rows of megabytes make small batches), and the
/// offset after them.
fn read_lines(
    path: &Path,
    offset: u64,
    max: usize,
) -> Result<(Vec<ParsedEvent>, u64), TargetError> {
    let io = |e: std::io::Error| TargetError::Setup(format!("input file {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut events = Vec::new();
    let mut at = offset;
    let mut line = Vec::new();
    while events.len() < max.max(1) && ((at - offset) as usize) < MAX_BATCH_BYTES {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 || line.last() != Some(&b'\n') {
            // End of file, or a line the sink is still writing.
            break;
        }
        let event = ChangeEvent::from_json(&line).map_err(|e| {
            TargetError::Setup(format!(
                "input file {} at byte {at}: not an event ({e})",
                path.display()
            ))
        })?;
        events.push(event);
        at += n as u64;
    }
    Ok((events, at))
}
