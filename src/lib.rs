//! Tidemark: change-data capture from database logs to durable sinks.
//!
//! The flow is one way: a connector (`tidemark_connectors`) reads the source log
//! into batches, the [`pipeline`] hands each batch to a [`sinks`] sink, and once
//! the sink has made it durable the [`cursor`] store commits the batch's end;
//! only then is the source told it may forget what came before. [`ops`] is what
//! operators see: health, metrics, the HTTP endpoint, systemd, retention.
//! [`apply`] writes events into a target database, and [`migrate`] builds a
//! whole database migration from capture, copy, apply and verification.
//! The contracts the pipeline runs on are in [`pipeline::contract`].
//!
//! Glossary:
//! - **position**: where an event is in its source's log (`Position`), one
//!   ordering per log;
//! - **cursor**: the position a pipeline committed after its sink made
//!   everything before it durable; a restart resumes there;
//! - **watermark**: a polled table's last `(cursor column value, key)` read;
//! - **applied position**: what a target's `tidemark_applied` row says was
//!   applied, written in the same transaction as the rows;
//! - **lease**: a DynamoDB item that makes one instance the owner of a
//!   pipeline (or of a Kinesis shard for `apply`), fenced by its counter.

#![warn(unreachable_pub)]

pub mod apply;
pub mod aws;
pub mod config;
pub mod cursor;
pub(crate) mod lockfile;
pub mod migrate;
pub mod ops;
pub mod pipeline;
pub mod sinks;
pub mod target;
pub mod transform;

pub use tidemark_connectors as connectors;
