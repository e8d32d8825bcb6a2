//! `[cursor]`: where the committed position is kept (a file, or a DynamoDB
//! table with a single-owner lease).

use super::values::bounds::HOUR;
use super::values::duration;
use super::{invalid, state_dir, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[cursor]` as written; [`CursorConfig::parse`] checks it.
#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename = "CursorConfig",
    deny_unknown_fields
)]
pub(super) enum RawCursor {
    File {
        path: PathBuf,
    },
    Dynamodb {
        table: String,
        #[serde(default = "default_lease_duration")]
        lease_duration: String,
        region: Option<String>,
        endpoint: Option<String>,
    },
}

fn default_lease_duration() -> String {
    "10s".into()
}

impl Default for RawCursor {
    fn default() -> Self {
        RawCursor::File {
            path: state_dir().join("cursor.json"),
        }
    }
}

#[derive(Debug)]
pub enum CursorConfig {
    File {
        path: PathBuf,
    },
    /// A DynamoDB table (key `pipeline`), with a single-owner lease.
    Dynamodb {
        table: String,
        /// How long an owner's lease lasts without renewal.
        lease_duration: Duration,
        region: Option<String>,
        /// Else `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`, else AWS.
        endpoint: Option<String>,
    },
}

impl CursorConfig {
    /// A table named, a lease between 1s and 1h.
    pub(super) fn parse(raw: RawCursor) -> Result<CursorConfig, ConfigError> {
        Ok(match raw {
            RawCursor::File { path } => CursorConfig::File { path },
            RawCursor::Dynamodb {
                table,
                lease_duration,
                region,
                endpoint,
            } => {
                if table.is_empty() {
                    return Err(invalid("cursor.table", "names no table"));
                }
                let lease_duration = duration(
                    "cursor.lease_duration",
                    &lease_duration,
                    Duration::from_secs(1),
                    HOUR,
                )?;
                CursorConfig::Dynamodb {
                    table,
                    lease_duration,
                    region,
                    endpoint,
                }
            }
        })
    }

    /// Where a poll source keeps its key-scan sets: beside the cursor file,
    /// else in the state directory.
    pub(super) fn poll_state_dir(&self) -> PathBuf {
        match self {
            CursorConfig::File { path } => match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            },
            CursorConfig::Dynamodb { .. } => state_dir(),
        }
    }
}
