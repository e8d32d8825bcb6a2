//! The local-file cursor store (the default): one small JSON file, replaced
//! atomically (write a temporary file, fsync it, rename it over, fsync the folder).

use super::{Binding, CursorError};
use crate::lockfile::LockFile;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tidemark_connectors::event::now_ms;
use tidemark_connectors::Position;

#[derive(Serialize, Deserialize)]
struct Record {
    pipeline: String,
    position: Position,
    /// The position's byte-comparable form, for people reading the file.
    position_text: String,
    /// The source the position belongs to (see `CursorStore::bind_source`);
    /// absent in cursors written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// See `CursorStore::bind_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lineage: Option<String>,
    updated_at_ms: i64,
}

pub struct FileCursor {
    /// Taken by `load` and `reset`, the steps of a process that will write
    /// the cursor: one such process per cursor file.
    lock: Option<LockFile>,
    path: PathBuf,
    pipeline: String,
    stored: Option<Position>,
    /// Whose position it is (see `CursorStore::bind_source`).
    pub(super) binding: Binding,
}

impl FileCursor {
    pub fn new(path: &Path, pipeline: &str) -> Self {
        FileCursor {
            lock: None,
            path: path.to_path_buf(),
            pipeline: pipeline.to_string(),
            stored: None,
            binding: Binding::default(),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> CursorError + '_ {
        move |source| CursorError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<Option<Record>, CursorError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io()(e)),
        };
        let record: Record = serde_json::from_str(&text).map_err(|e| CursorError::Corrupt {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        if record.pipeline != self.pipeline {
            return Err(CursorError::OtherPipeline {
                path: self.path.display().to_string(),
                found: record.pipeline,
                expected: self.pipeline.clone(),
            });
        }
        Ok(Some(record))
    }

    /// `<cursor>.lock`, taken once.
    fn lock(&mut self) -> Result<(), CursorError> {
        if self.lock.is_none() {
            if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(self.io())?;
            }
            let mut name = self.path.file_name().unwrap_or_default().to_os_string();
            name.push(".lock");
            self.lock = Some(LockFile::acquire(&self.path.with_file_name(name))?);
        }
        Ok(())
    }

    pub fn load(&mut self) -> Result<Option<Position>, CursorError> {
        self.lock()?;
        let record = self.read()?;
        self.binding = Binding {
            source: record.as_ref().and_then(|r| r.source.clone()),
            lineage: record.as_ref().and_then(|r| r.lineage.clone()),
        };
        self.stored = record.map(|r| r.position);
        Ok(self.stored.clone())
    }

    /// Forgets the position (`tidemark cursor reset`); true when there was one.
    pub fn reset(&mut self) -> Result<bool, CursorError> {
        self.lock()?;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io()(e)),
        }
    }

    pub(super) fn path(&self) -> String {
        self.path.display().to_string()
    }

    pub fn describe(&self) -> Result<Option<serde_json::Value>, CursorError> {
        Ok(self.read()?.and_then(|r| serde_json::to_value(r).ok()))
    }

    pub fn commit(&mut self, position: &Position) -> Result<(), CursorError> {
        if let Some(stored) = &self.stored {
            match stored.order(position) {
                Some(std::cmp::Ordering::Equal) => return Ok(()),
                Some(std::cmp::Ordering::Less) => {}
                _ => {
                    return Err(CursorError::Backward {
                        stored: stored.to_string(),
                        attempted: position.to_string(),
                    })
                }
            }
        }
        let record = Record {
            pipeline: self.pipeline.clone(),
            position: position.clone(),
            position_text: position.to_string(),
            source: self.binding.source.clone(),
            lineage: self.binding.lineage.clone(),
            updated_at_ms: now_ms(),
        };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(self.io())?;
        // A name of this write's own, created new: an existing file or a
        // symlink planted at the name is never written through.
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp.{}.{}", std::process::id(), now_ms()));
        let tmp = self.path.with_file_name(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(self.io())?;
        let body = serde_json::to_vec_pretty(&record).map_err(|e| self.io()(e.into()))?;
        file.write_all(&body).map_err(self.io())?;
        file.sync_all().map_err(self.io())?;
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io()(e));
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io())?;
        self.stored = Some(position.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_forward_only_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cursor.json");
        let mut store = FileCursor::new(&path, "p");
        assert_eq!(store.load().expect("load"), None);
        store.commit(&Position::postgres(10, 20)).expect("commit");
        store.commit(&Position::postgres(30, 40)).expect("commit");
        let err = store
            .commit(&Position::postgres(10, 20))
            .expect_err("backward");
        assert!(matches!(err, CursorError::Backward { .. }));
        drop(store);
        let mut again = FileCursor::new(&path, "p");
        assert_eq!(
            again.load().expect("load"),
            Some(Position::postgres(30, 40))
        );
        // One writing process per cursor file.
        let mut second = FileCursor::new(&path, "p");
        assert!(matches!(second.load(), Err(CursorError::Locked(_))));
        drop(again);
        let mut other = FileCursor::new(&path, "q");
        assert!(matches!(
            other.load(),
            Err(CursorError::OtherPipeline { .. })
        ));
    }

    /// The temporary file is created new under a name of its own: a symlink
    /// planted at the old fixed name is not followed.
    #[test]
    fn a_planted_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cursor.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        std::os::unix::fs::symlink(&victim, dir.path().join("cursor.json.tmp")).expect("symlink");
        std::os::unix::fs::symlink(&victim, path.with_extension("json.tmp")).ok();
        let mut store = FileCursor::new(&path, "p");
        store.load().expect("load");
        store.commit(&Position::postgres(10, 20)).expect("commit");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
