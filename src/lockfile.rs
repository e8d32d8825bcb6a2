//! Exclusive locks on the sink directory and the cursor file, so that a second
//! process on the same paths is refused in one line naming the holder.
//!
//! An `flock` on a `*.lock` file beside the thing guarded, holding the
//! holder's pid for the message. The kernel drops the lock when the process
//! ends, SIGKILL included, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is in use by another tidemark process (pid {pid}); stop it, or give this one other paths")]
    Held { path: String, pid: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct LockFile {
    _file: File,
}

impl LockFile {
    /// Takes the lock at `path` without waiting.
    pub(crate) fn acquire(path: &Path) -> Result<LockFile, LockError> {
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock takes the descriptor of a file this function owns and
        // plain flags; it changes only that file's advisory lock.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(error));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Held {
                path: path.display().to_string(),
                pid: match pid.trim() {
                    "" => "unknown".into(),
                    pid => pid.to_string(),
                },
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(LockFile { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lock");
        let first = LockFile::acquire(&path).expect("first");
        match LockFile::acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("{other:?}"),
        }
        drop(first);
        LockFile::acquire(&path).expect("free again");
    }
}
