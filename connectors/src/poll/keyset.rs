//! Delete detection by key scan (`delete_detection = "keyscan"`).
//!
//! A poll cannot see a deleted row. Every `keyscan_interval` the table's keys are
//! read in one statement and compared with the keys known: those present at the
//! last scan plus those emitted since. A known key that is gone is emitted as an
//! `op: "d"` event (its `before` and `key` hold the key columns only).
//!
//! The known set is kept on disk next to the cursor, one key per line as a JSON
//! array (`<pipeline>.<schema.table>.keys`): rewritten sorted at scans, and the
//! keys of each page appended (fsynced) before the page goes to the sink. The
//! file may hold more keys than the table (a superset only costs a repeated
//! delete), never fewer: after a scan that found deletes it is rewritten only
//! once the sink has made those deletes durable (the cursor's per-table `scans` count says so). A crash before
//! that emits the same deletes again on the next scan (at-least-once, same key).
//! The set is held in memory: about the size of the keys' JSON text.

use crate::event::Row;
use crate::SourceError;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

pub(super) struct KeySet {
    path: PathBuf,
    every: Duration,
    next_scan: Instant,
    /// Keys as JSON arrays: present at the last scan or emitted since.
    known: BTreeSet<String>,
    /// The last scan whose deletes are not yet known to be durable.
    pending: Option<u64>,
    /// Keys seen since the last append to the file.
    unsaved: Vec<String>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |e| SourceError::Setup(format!("key set {}: {e}", path.display()))
}

impl KeySet {
    /// Loads the set kept for `table` (empty when there is none yet); the first
    /// scan runs at once.
    pub(super) fn open(
        dir: &Path,
        pipeline: &str,
        table: &str,
        every: Duration,
    ) -> Result<Self, SourceError> {
        let path = dir.join(format!("{pipeline}.{table}.keys"));
        let known = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(io_error(&path)(e)),
        };
        Ok(KeySet {
            path,
            every,
            next_scan: Instant::now(),
            known,
            pending: None,
            unsaved: Vec::new(),
        })
    }

    pub(super) fn due(&self) -> bool {
        Instant::now() >= self.next_scan
    }

    /// Waits one interval before scanning.
    pub(super) fn postpone(&mut self) {
        self.next_scan = Instant::now() + self.every;
    }

    /// A row with this key is about to be emitted.
    pub(super) fn saw(&mut self, key: &Row) {
        // The same compact form as `Value::Array(...).to_string()` in `compare`.
        let values: Vec<&Value> = key.0.iter().map(|(_, v)| v).collect();
        let line = serde_json::to_string(&values).unwrap_or_default();
        if self.known.insert(line.clone()) {
            self.unsaved.push(line);
        }
    }

    /// Appends the keys seen since the last call to the file (fsynced), before
    /// their events go to the sink: a key whose row is deleted while tidemark is
    /// down is then still known at the next start.
    pub(super) fn append_seen(&mut self) -> Result<(), SourceError> {
        if self.unsaved.is_empty() {
            return Ok(());
        }
        let mut body = String::new();
        for key in self.unsaved.drain(..) {
            body.push_str(&key);
            body.push('\n');
        }
        let append = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            file.write_all(body.as_bytes())?;
            file.sync_data()
        };
        append().map_err(io_error(&self.path))
    }

    /// Compares the table's keys now with the known ones; returns the keys gone.
    /// `scan` numbers this scan; its deletes must become durable before the file
    /// forgets them.
    pub(super) fn compare(
        &mut self,
        keys: Vec<Vec<Value>>,
        scan: u64,
    ) -> Result<Vec<Vec<Value>>, SourceError> {
        self.next_scan = Instant::now() + self.every;
        let current: BTreeSet<String> = keys
            .into_iter()
            .map(|k| Value::from(k).to_string())
            .collect();
        let gone: Vec<Vec<Value>> = self
            .known
            .difference(&current)
            .filter_map(|k| serde_json::from_str(k).ok())
            .collect();
        self.known = current;
        if gone.is_empty() {
            if self.pending.is_none() {
                self.save()?;
            }
        } else {
            self.pending = Some(scan);
        }
        Ok(gone)
    }

    /// The cursor says scans up to `scans` are durable.
    pub(super) fn durable(&mut self, scans: u64) -> Result<(), SourceError> {
        if self.pending.is_some_and(|p| p <= scans) {
            self.save()?;
            self.pending = None;
        }
        Ok(())
    }

    /// Writes the file: a temporary file, fsync, rename.
    fn save(&self) -> Result<(), SourceError> {
        let tmp = self.path.with_extension("keys.tmp");
        let mut body = String::new();
        for key in &self.known {
            body.push_str(key);
            body.push('\n');
        }
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(body.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(io_error(&self.path))
    }
}
