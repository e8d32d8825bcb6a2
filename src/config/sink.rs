//! `[sink]`: where captured events go (a folder of files, stdout, or a
//! Kinesis stream), and its checks.

use super::values::bounds::MAX_FILE_BYTES;
use super::{invalid, state_dir, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    File {
        path: PathBuf,
        #[serde(default = "default_max_file_bytes")]
        max_file_bytes: u64,
    },
    Stdout,
    /// Amazon Kinesis Data Streams.
    Kinesis {
        stream: String,
        /// Else the standard AWS chain (`AWS_REGION`, profile).
        region: Option<String>,
        /// Else `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL`, else AWS.
        endpoint: Option<String>,
        #[serde(default = "default_max_record_bytes")]
        max_record_bytes: usize,
        #[serde(default)]
        oversized: OversizedPolicy,
        /// Pack consecutive events of one partition key into one record (JSON lines).
        #[serde(default)]
        aggregate: bool,
    },
}

/// What the Kinesis sink does with an event larger than a record may be.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OversizedPolicy {
    #[default]
    Fail,
    SkipAndCount,
}

fn default_max_record_bytes() -> usize {
    1024 * 1024
}

fn default_max_file_bytes() -> u64 {
    128 * 1024 * 1024
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig::File {
            path: state_dir().join("events"),
            max_file_bytes: default_max_file_bytes(),
        }
    }
}

impl SinkConfig {
    /// File sizes and record sizes within bounds, a stream named.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            SinkConfig::File { max_file_bytes, .. } => {
                if !(4096..=MAX_FILE_BYTES).contains(max_file_bytes) {
                    return Err(invalid(
                        "sink.max_file_bytes",
                        format!("{max_file_bytes} is not between 4096 and {MAX_FILE_BYTES}"),
                    ));
                }
            }
            SinkConfig::Kinesis {
                stream,
                max_record_bytes,
                ..
            } => {
                if stream.is_empty() {
                    return Err(invalid("sink.stream", "names no stream"));
                }
                if !(1024..=10 * 1024 * 1024).contains(max_record_bytes) {
                    return Err(invalid(
                        "sink.max_record_bytes",
                        "must be between 1024 and 10485760",
                    ));
                }
            }
            SinkConfig::Stdout => {}
        }
        Ok(())
    }
}
