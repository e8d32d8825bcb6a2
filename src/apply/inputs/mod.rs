//! Where `tidemark apply` reads events from: the file sink's directory
//! ([`files`]) or a Kinesis stream ([`kinesis`]). (A capture pipeline in the
//! same process uses the target as its sink instead: see `sinks::target`.)

pub mod files;
pub mod kinesis;
