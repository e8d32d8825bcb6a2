//! The file sink (the default): JSON lines in a directory, one event per line.
//!
//! Files are `events-0000000001.jsonl`, `events-0000000002.jsonl`, ... so names
//! sort in write order; a new file starts once the current one reaches
//! `max_file_bytes`. `write` appends; `sync` fsyncs, and the pipeline calls it
//! before every cursor commit (a file left behind is synced when the next one
//! starts).
//!
//! On open the sink recovers from a crash: a torn last line (written, never
//! acknowledged) is cut off, and so is everything from a stretch of zeros on
//! (after a power loss, data that never reached the disk); what stays is synced,
//! and the position of its last line is kept so the pipeline does not write
//! those events a second time when the source replays from its cursor. For this
//! sink delivery is therefore exactly once.
//!
//! Each file has a companion `events-N.writer` naming who wrote it: the source
//! identity and the cursor lineage (see `CursorStore::bind_source`). The last
//! line's position is offered for the replay skip only when its file was
//! written by the same source under the same cursor lineage. Otherwise (another
//! server, a rebuilt cluster, a `cursor reset`, a file from before writers were
//! recorded) nothing is skipped, and the new lines start a new file.

use super::{encode_lines, SinkError};
use crate::lockfile::LockFile;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tidemark_connectors::event::SourceCache;
use tidemark_connectors::ChangeEvent;

pub struct FileSink {
    /// Held while the sink is open (see [`crate::lockfile`]).
    _lock: LockFile,
    dir: PathBuf,
    max_file_bytes: u64,
    index: u64,
    file: File,
    size: u64,
    last_position: Option<String>,
    buf: Vec<u8>,
    /// Written since the last `sync`.
    unsynced: bool,
    /// Where the writeback not yet started begins (see `start_writeback`).
    writeback_from: u64,
    /// Recorded beside each file (see the module doc).
    writer: String,
}

/// See [`FileSink::start_writeback`].
const WRITEBACK_BYTES: u64 = 4 << 20;

fn file_name(index: u64) -> String {
    format!("events-{index:010}.jsonl")
}

fn writer_name(index: u64) -> String {
    format!("events-{index:010}.writer")
}

/// Who wrote file `index`, when recorded.
fn writer_of(dir: &Path, index: u64) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(dir.join(writer_name(index))) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records who writes file `index` (durably, before any line of it counts).
fn record_writer(dir: &Path, index: u64, writer: &str) -> std::io::Result<()> {
    let path = dir.join(writer_name(index));
    let mut file = File::create(&path)?;
    file.write_all(writer.as_bytes())?;
    file.sync_all()?;
    File::open(dir)?.sync_all()
}

/// The index of an events file from its name (`events-N.jsonl`); `None`
/// for any other name. The one reading of the naming scheme, for the sink
/// and for `apply`'s reader of its folder.
pub fn index_of(name: &str) -> Option<u64> {
    name.strip_prefix("events-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// What `tidemark check` asks of a sink folder, writing nothing that stays:
/// that it is a folder (or can be made one under its nearest existing
/// parent), and that a file can be created in it.
pub fn probe(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(if existing == dir {
            format!("sink.path: {shown} is a file, not a folder")
        } else {
            format!(
                "sink.path: {shown} cannot be created: {} is a file",
                existing.display()
            )
        });
    }
    let trial = existing.join(format!(".tidemark-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&trial)
        .map_err(|e| format!("sink.path: cannot write in {}: {e}", existing.display()))?;
    let _ = std::fs::remove_file(&trial);
    Ok(())
}

impl FileSink {
    /// Opens the directory for `writer` (source identity and cursor lineage).
    pub fn open(dir: &Path, max_file_bytes: u64, writer: &str) -> Result<Self, SinkError> {
        let io = |source| SinkError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // The directory's own entry, should it be new, is made durable too.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
        }
        // One writer per directory: a second process appending to the same
        // files would interleave its lines with this one's.
        let lock = LockFile::acquire(&dir.join(".tidemark.lock"))?;
        let mut indexes: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| {
                e.ok()
                    .and_then(|e| e.file_name().to_str().and_then(index_of))
            })
            .collect();
        indexes.sort_unstable();
        let mut last_position = None;
        for &index in indexes.iter().rev() {
            if let Some(line) = recover(&dir.join(file_name(index))).map_err(io)? {
                let wrote = writer_of(dir, index).map_err(io)?;
                if wrote.as_deref() == Some(writer) {
                    last_position = position_of(&line);
                } else {
                    tracing::info!(
                        "file sink {}: {} was written by {}, not by this source and cursor ({writer}): no event is skipped as already written",
                        dir.display(),
                        file_name(index),
                        wrote.map_or("an unrecorded writer".into(), |w| format!("[{w}]"))
                    );
                }
                break;
            }
        }
        let mut index = indexes.last().copied().unwrap_or(1);
        let (mut file, mut size) = open_append(dir, index).map_err(io)?;
        if writer_of(dir, index).map_err(io)?.as_deref() != Some(writer) {
            if size > 0 {
                index += 1;
                tracing::info!(
                    "file sink {}: new lines go to {} (another writer's lines end the file before)",
                    dir.display(),
                    file_name(index)
                );
                (file, size) = open_append(dir, index).map_err(io)?;
            }
            record_writer(dir, index, writer).map_err(io)?;
        }
        Ok(FileSink {
            _lock: lock,
            dir: dir.to_path_buf(),
            max_file_bytes,
            index,
            file,
            size,
            last_position,
            buf: Vec::new(),
            unsynced: false,
            writeback_from: size,
            writer: writer.to_string(),
        })
    }

    pub fn last_position(&self) -> Option<&str> {
        self.last_position.as_deref()
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
        move |source| SinkError::Io {
            path: self.dir.join(file_name(self.index)).display().to_string(),
            source,
        }
    }

    /// Appends the events, rotating by size; durable once [`FileSink::sync`] returns.
    pub fn write(&mut self, events: &[ChangeEvent]) -> Result<(), SinkError> {
        let mut start = 0;
        while start < events.len() {
            if self.size >= self.max_file_bytes {
                self.rotate()?;
            }
            // Fill the current file up to its limit (at least one event per file).
            self.buf.clear();
            let mut cache = SourceCache::default();
            let mut end = start;
            while end < events.len()
                && (end == start || self.size + (self.buf.len() as u64) < self.max_file_bytes)
            {
                encode_lines(&events[end..=end], &mut self.buf, &mut cache);
                end += 1;
            }
            self.file.write_all(&self.buf).map_err(self.io())?;
            self.unsynced = true;
            self.size += self.buf.len() as u64;
            self.start_writeback();
            start = end;
        }
        if let Some(last) = events.last() {
            self.last_position = Some(last.position.to_string());
        }
        Ok(())
    }

    /// Every [`WRITEBACK_BYTES`] written, asks the kernel to start writing them
    /// to disk without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so
    /// that the `fdatasync` before a cursor commit finds little left to do.
    /// Only a hint: durability still comes from `sync`.
    fn start_writeback(&mut self) {
        if self.size < self.writeback_from + WRITEBACK_BYTES {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: the descriptor is this sink's open file; the call only
            // starts writeback of a range of it and touches no memory of ours.
            let _ = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.writeback_from as libc::off64_t,
                    (self.size - self.writeback_from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        self.writeback_from = self.size;
    }

    /// Makes everything written so far durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), SinkError> {
        if self.unsynced {
            self.file.sync_data().map_err(self.io())?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        // What the full file holds becomes durable before writing moves on.
        self.sync()?;
        self.index += 1;
        let (file, size) = open_append(&self.dir, self.index).map_err(self.io())?;
        record_writer(&self.dir, self.index, &self.writer).map_err(self.io())?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io())?;
        self.file = file;
        self.size = size;
        self.writeback_from = size;
        Ok(())
    }
}

fn open_append(dir: &Path, index: u64) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(file_name(index)))?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// Cuts `path` after its last whole, unbroken line, makes what stays durable
/// and returns that line, if any. What is cut was never acknowledged: a torn
/// last line, or, after a power loss, a stretch that never reached the disk
/// and reads back as zeros (possibly with lines after it, written back
/// earlier). The cursor is committed only after an `fdatasync`, so the source
/// replays all of it.
fn recover(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let keep = intact_prefix(&mut file)?;
    if keep < len {
        tracing::warn!(
            "{}: cutting {} bytes after offset {keep} (a torn last line, or data a crash never wrote); the source sends them again",
            path.display(),
            len - keep
        );
        file.set_len(keep)?;
    }
    // Lines that were only in the page cache become durable before the
    // pipeline counts them as written.
    file.sync_all()?;
    last_line(&mut file, keep)
}

/// The length of the file's prefix made of whole lines with no NUL byte (JSON
/// text never has one; a hole left by a crash reads as zeros).
fn intact_prefix(file: &mut File) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut offset, mut whole) = (0u64, 0u64);
    file.seek(SeekFrom::Start(0))?;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(whole);
        }
        let zero = buf[..n].iter().position(|b| *b == 0);
        let clean = &buf[..zero.unwrap_or(n)];
        if let Some(newline) = clean.iter().rposition(|b| *b == b'\n') {
            whole = offset + newline as u64 + 1;
        }
        if zero.is_some() {
            return Ok(whole);
        }
        offset += n as u64;
    }
}

/// The line that ends at `end` (the file's last `\n`), read backwards in
/// growing windows.
fn last_line(file: &mut File, end: u64) -> std::io::Result<Option<Vec<u8>>> {
    if end == 0 {
        return Ok(None);
    }
    let mut window = 64 * 1024u64;
    loop {
        let from = end.saturating_sub(window);
        let mut tail = Vec::with_capacity((end - from) as usize);
        file.seek(SeekFrom::Start(from))?;
        (&mut *file).take(end - from).read_to_end(&mut tail)?;
        // `tail` ends with the line's newline.
        let body = &tail[..tail.len().saturating_sub(1)];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => return Ok(Some(body[i + 1..].to_vec())),
            None if from == 0 => return Ok(Some(body.to_vec())),
            None => window *= 4,
        }
    }
}

fn position_of(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        position: String,
    }
    serde_json::from_slice::<Line>(line)
        .ok()
        .map(|l| l.position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn torn_line_is_cut_and_last_position_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(1));
        let mut f = File::create(&path).expect("create");
        f.write_all(b"{\"position\":\"pg:1\"}\n{\"position\":\"pg:2\"}\n{\"posit")
            .expect("write");
        record_writer(dir.path(), 1, "w").expect("writer");
        let sink = FileSink::open(dir.path(), 1 << 20, "w").expect("open");
        assert_eq!(sink.last_position(), Some("pg:2"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("\"pg:2\"}\n"), "{text}");
    }

    #[test]
    fn a_hole_of_zeros_is_cut_with_everything_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(1));
        let mut text = b"{\"position\":\"pg:1\"}\n{\"position\":\"pg:2\"}\n{\"posi".to_vec();
        text.extend([0u8; 3000]);
        text.extend(b"tion\":\"pg:4\"}\n{\"position\":\"pg:5\"}\n");
        std::fs::write(&path, &text).expect("write");
        record_writer(dir.path(), 1, "w").expect("writer");
        let sink = FileSink::open(dir.path(), 1 << 20, "w").expect("open");
        assert_eq!(sink.last_position(), Some("pg:2"));
        let kept = std::fs::read_to_string(&path).expect("read");
        assert_eq!(kept, "{\"position\":\"pg:1\"}\n{\"position\":\"pg:2\"}\n");
    }

    #[test]
    fn a_long_last_line_is_found_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = format!(
            "{{\"position\":\"pg:7\",\"pad\":\"{}\"}}\n",
            "x".repeat(200_000)
        );
        std::fs::write(
            dir.path().join(file_name(1)),
            format!("{{\"position\":\"pg:6\"}}\n{long}"),
        )
        .expect("write");
        record_writer(dir.path(), 1, "w").expect("writer");
        let sink = FileSink::open(dir.path(), 1 << 20, "w").expect("open");
        assert_eq!(sink.last_position(), Some("pg:7"));
    }

    #[test]
    fn empty_newest_file_falls_back_to_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(file_name(1)), b"{\"position\":\"pg:9\"}\n").expect("write");
        std::fs::write(dir.path().join(file_name(2)), b"").expect("write");
        record_writer(dir.path(), 1, "w").expect("writer");
        let sink = FileSink::open(dir.path(), 1 << 20, "w").expect("open");
        assert_eq!(sink.last_position(), Some("pg:9"));
        assert_eq!(sink.index, 2);
    }

    #[test]
    fn another_writers_lines_are_not_skipped_and_new_lines_start_a_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(file_name(1)), b"{\"position\":\"pg:9\"}\n").expect("write");
        record_writer(dir.path(), 1, "server A, lineage 1").expect("writer");
        // The same server after `cursor reset` (a new lineage).
        let sink = FileSink::open(dir.path(), 1 << 20, "server A, lineage 2").expect("open");
        assert_eq!(sink.last_position(), None);
        assert_eq!(sink.index, 2);
        assert_eq!(
            writer_of(dir.path(), 2).expect("read").as_deref(),
            Some("server A, lineage 2")
        );
        drop(sink);
        // Lines from before writers were recorded are not trusted either.
        let old = tempfile::tempdir().expect("tempdir");
        std::fs::write(old.path().join(file_name(1)), b"{\"position\":\"pg:9\"}\n").expect("write");
        let sink = FileSink::open(old.path(), 1 << 20, "w").expect("open");
        assert_eq!(sink.last_position(), None);
        assert_eq!(sink.index, 2);
        drop(sink);
        // Reopened by the same writer: its own last line counts.
        let again = FileSink::open(old.path(), 1 << 20, "w").expect("open");
        assert_eq!(again.index, 2);
    }

    /// A second process on the same directory is refused, naming the holder.
    #[test]
    fn one_writer_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = FileSink::open(dir.path(), 1 << 20, "w").expect("open");
        match FileSink::open(dir.path(), 1 << 20, "w") {
            Err(SinkError::Locked(e)) => {
                assert!(
                    e.to_string().contains(&std::process::id().to_string()),
                    "{e}"
                )
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second writer opened the directory"),
        }
        drop(first);
        FileSink::open(dir.path(), 1 << 20, "w").expect("free again");
    }
}
