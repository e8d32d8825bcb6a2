//! The Kinesis Data Streams sink: events as records, written with `PutRecords`.
//!
//! **Partition key**: `schema.table` plus the event's key as JSON
//! (`public.orders{"id":5}`), so every change to one row goes to one shard;
//! events without a key (truncates, schema changes) use `schema.table`. A key
//! longer than 256 bytes is replaced by `schema.table#` and its hex SHA-256 (the
//! hash alone when the table name is too long for that).
//!
//! **Order across partial failures.** A call carries at most one record per
//! partition key: the oldest not yet written. Records that fail are retried
//! before any later record of their key is put in a call, so a key's records
//! reach the stream in order whatever fails, and a record that succeeded is never
//! sent again (no duplicate from a retry). A batch with many keys still fills
//! calls of up to 500 records; a batch of one hot key goes one record per call
//! (or, with `aggregate`, one packed record per call).
//!
//! **Retries**: throttling (`ProvisionedThroughputExceededException`,
//! `KMSThrottlingException`), `InternalFailure` and 5xx answers are retried with
//! exponential backoff and jitter, without a time limit: a throttled pipeline
//! slows down and drops nothing. The wait grows while calls write nothing and
//! starts over once a call writes something. Any other error stops the pipeline.
//! The SDK's own retries are off, so every retry shows in the log.
//!
//! **Acknowledgement**: `write` returns only when every record of the batch has a
//! sequence number.
//!
//! **Aggregation** (`aggregate = true`, off by default): consecutive events of a
//! batch with the same partition key are packed into one record as JSON lines
//! (one event per line, `\n`-separated, up to the record size limit). Fewer
//! records and PUT payload units (billed per 25 KB), at the cost of consumers that
//! must split records into lines.

use super::SinkError;
use crate::aws::errors::{describe, kinesis_retry_reason, KINESIS_THROTTLED_REASON};
use crate::ops::{self, Health};
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, PutRecordsResultEntry};
use aws_sdk_kinesis::Client;
use backoff::backoff::Backoff;
use records::{retry_after, Answer, Pending, Record, PUT_RECORDS};
use sha2::{Digest, Sha256};
use tidemark_connectors::event::SourceCache;
use tidemark_connectors::ChangeEvent;

mod records;

/// Service limit of a partition key.
const MAX_PARTITION_KEY_BYTES: usize = 256;

/// What to do with an event larger than a record may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversized {
    /// Stop the pipeline, naming the table, key and size.
    Fail,
    /// Count it, log its position, go on.
    SkipAndCount,
}

pub struct KinesisSink {
    client: Client,
    stream: String,
    max_record_bytes: usize,
    oversized: Oversized,
    aggregate: bool,
    /// Events skipped as oversized (policy `skip-and-count`).
    pub skipped_oversized: u64,
    /// `PutRecords` calls made and records written, for the mean per call.
    pub calls: u64,
    pub records_written: u64,
    /// Where throttling and failing calls are reported.
    health: Health,
}

/// `schema.table` plus the key, hashed when too long.
pub fn partition_key(event: &ChangeEvent) -> String {
    let mut key = event.table_name().into_bytes();
    if let Some(row) = &event.key {
        row.write_json(&mut key);
    }
    // Built from `&str`s and JSON text: valid UTF-8.
    let key = String::from_utf8(key)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    if key.len() <= MAX_PARTITION_KEY_BYTES {
        return key;
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let named = format!("{}#{hex}", event.table_name());
    if named.len() <= MAX_PARTITION_KEY_BYTES {
        named
    } else {
        hex
    }
}

impl KinesisSink {
    pub fn new(
        client: Client,
        stream: &str,
        max_record_bytes: usize,
        oversized: Oversized,
        aggregate: bool,
        health: Health,
    ) -> Self {
        KinesisSink {
            client,
            stream: stream.to_string(),
            max_record_bytes,
            oversized,
            aggregate,
            skipped_oversized: 0,
            calls: 0,
            records_written: 0,
            health,
        }
    }

    /// Checks that the stream exists and can be described.
    pub async fn check(&self) -> Result<(), SinkError> {
        self.client
            .describe_stream()
            .stream_name(&self.stream)
            .limit(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let detail = describe(&e);
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception())
                {
                    SinkError::Kinesis(format!(
                        "stream {} does not exist (create it, or fix sink.stream)",
                        self.stream
                    ))
                } else {
                    SinkError::Kinesis(format!("describe stream {}: {detail}", self.stream))
                }
            })
    }

    /// The batch's events as records: one per event, or packed per key.
    fn records(&mut self, events: &[ChangeEvent]) -> Result<Vec<Record>, SinkError> {
        let mut records: Vec<Record> = Vec::new();
        let mut cache = SourceCache::default();
        for (index, event) in events.iter().enumerate() {
            let mut data = Vec::with_capacity(512);
            event.write_json_cached(&mut data, &mut cache);
            let partition_key = partition_key(event);
            if data.len() + partition_key.len() > self.max_record_bytes {
                let position = event.position.to_string();
                match self.oversized {
                    Oversized::Fail => {
                        return Err(SinkError::Oversized {
                            table: event.table_name(),
                            key: partition_key,
                            size: data.len(),
                            limit: self.max_record_bytes,
                            position,
                        })
                    }
                    Oversized::SkipAndCount => {
                        self.skipped_oversized += 1;
                        ops::events::oversized_skipped(
                            event.table_name(),
                            data.len(),
                            self.max_record_bytes,
                            &position,
                        );
                        continue;
                    }
                }
            }
            if self.aggregate {
                if let Some(last) = records.last_mut() {
                    if last.partition_key == partition_key
                        && last.data.len() + 1 + data.len() + partition_key.len()
                            <= self.max_record_bytes
                    {
                        last.data.push(b'\n');
                        last.data.extend_from_slice(&data);
                        last.last_event = index;
                        continue;
                    }
                }
            }
            records.push(Record {
                partition_key,
                data,
                last_event: index,
            });
        }
        Ok(records)
    }

    /// Writes the events; returns once every record has a sequence number.
    pub async fn write(&mut self, events: &[ChangeEvent]) -> Result<(), SinkError> {
        let mut pending = Pending::new(self.records(events)?);
        let mut retry = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(std::time::Duration::from_millis(100))
            .with_max_interval(std::time::Duration::from_secs(10))
            .with_randomization_factor(0.5)
            .with_max_elapsed_time(None)
            .build();
        while !pending.is_done() {
            let chosen = pending.next_call(PUT_RECORDS);
            let entries = request_entries(&pending, &chosen)?;
            self.calls += 1;
            let Some(output) = self.put(entries, &mut retry).await? else {
                continue;
            };
            self.health.set_problem("sink", None);
            self.health.tick();
            let results = output.records();
            if results.len() != chosen.len() {
                return Err(SinkError::Kinesis(format!(
                    "PutRecords to {} answered {} results for {} records",
                    self.stream,
                    results.len(),
                    chosen.len()
                )));
            }
            let answers: Vec<Answer<'_>> = results
                .iter()
                .map(|result| Answer {
                    sequence_number: result.sequence_number(),
                    error_code: result.error_code(),
                })
                .collect();
            let settled = retry_after(&chosen, &answers);
            for &i in &settled.written {
                pending.written(i);
                self.records_written += 1;
            }
            if let Some(in_call) = settled.refused {
                let record = pending.get(chosen[in_call]);
                return Err(self.refused(events, record, &results[in_call]));
            }
            let failed = settled.failed.len();
            if failed < chosen.len() {
                // Progress: the wait grows only while calls write nothing.
                retry.reset();
            }
            if failed > 0 {
                ops::metrics::retry("kinesis_record_throttled");
                let wait = retry.next_backoff().unwrap_or_default();
                tracing::warn!(
                    "kinesis: {failed} of {} records throttled on {}; retrying in {wait:?}",
                    chosen.len(),
                    self.stream
                );
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    /// One `PutRecords` call. `None` after a failure worth retrying, once the
    /// backoff wait is over; an error for any other failure.
    async fn put(
        &self,
        entries: Vec<PutRecordsRequestEntry>,
        retry: &mut backoff::ExponentialBackoff,
    ) -> Result<Option<PutRecordsOutput>, SinkError> {
        let answer = self
            .client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(entries))
            .send()
            .await;
        let e = match answer {
            Ok(output) => return Ok(Some(output)),
            Err(e) => e,
        };
        let reason = kinesis_retry_reason(&e);
        let detail = describe(&e);
        let Some(reason) = reason else {
            return Err(SinkError::Kinesis(format!(
                "PutRecords to {} failed: {detail}",
                self.stream
            )));
        };
        ops::metrics::retry(reason);
        if reason != KINESIS_THROTTLED_REASON {
            self.health.set_problem(
                "sink",
                Some(format!("PutRecords to {} fails: {detail}", self.stream)),
            );
        }
        // Retrying is progress of a kind: a throttled pipeline is
        // slow, not stuck, and the watchdog must not restart it.
        self.health.tick();
        let wait = retry.next_backoff().unwrap_or_default();
        tracing::warn!(
            "kinesis: PutRecords to {} will be retried in {wait:?}: {detail}",
            self.stream
        );
        tokio::time::sleep(wait).await;
        Ok(None)
    }

    /// The error for a record the stream refused for good.
    fn refused(
        &self,
        events: &[ChangeEvent],
        record: Option<&Record>,
        result: &PutRecordsResultEntry,
    ) -> SinkError {
        let position = record
            .and_then(|r| events.get(r.last_event))
            .map_or(String::new(), |e| e.position.to_string());
        SinkError::Kinesis(format!(
            "PutRecords to {} refused the record at {position}: {} {}",
            self.stream,
            result.error_code().unwrap_or("no sequence number"),
            result.error_message().unwrap_or_default()
        ))
    }
}

/// The request entries of a call's records (`chosen`: their batch indices).
fn request_entries(
    pending: &Pending,
    chosen: &[usize],
) -> Result<Vec<PutRecordsRequestEntry>, SinkError> {
    chosen
        .iter()
        .filter_map(|&i| pending.get(i))
        .map(|r| {
            PutRecordsRequestEntry::builder()
                .partition_key(&r.partition_key)
                .data(Blob::new(r.data.clone()))
                .build()
                .map_err(|e| SinkError::Kinesis(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use tidemark_connectors::event::{Op, Position, Row, SourceInfo};

    fn event(key: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            op: Op::Create,
            before: None,
            after: None,
            unchanged: Vec::new(),
            key,
            source: Arc::new(SourceInfo::new(
                "postgres",
                "p".into(),
                "d".into(),
                "public".into(),
                "orders".into(),
                0,
            )),
            position: Position::postgres(1, 1),
            transaction: None,
            ts_ms: 0,
            ddl: None,
            columns: None,
        }
    }

    #[test]
    fn partition_keys_name_table_and_key_and_stay_within_the_limit() {
        let id: Arc<str> = "id".into();
        let short = event(Some(Row(vec![(id.clone(), json!(5))])));
        assert_eq!(partition_key(&short), "public.orders{\"id\":5}");
        assert_eq!(partition_key(&event(None)), "public.orders");
        let long = event(Some(Row(vec![(id, json!("x".repeat(300)))])));
        let key = partition_key(&long);
        assert!(key.len() <= MAX_PARTITION_KEY_BYTES, "{key}");
        assert!(key.starts_with("public.orders#"), "{key}");
        assert_eq!(key, partition_key(&long));
    }
}
