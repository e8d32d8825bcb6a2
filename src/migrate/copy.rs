//! The copy stage: every table's key-range chunks, `parallelism` at a time.
//!
//! Between two Postgres databases a chunk streams from `COPY (SELECT …) TO
//! STDOUT` on the source into `COPY … FROM STDIN` on the target, in one target
//! transaction: values keep their own text forms, nothing is parsed on the
//! way. Otherwise each worker reads a chunk with the capture connector's
//! snapshot reader (so values take the event forms) and writes it with the
//! target writer as upserts, in pages of one transaction each.
//!
//! A chunk is marked done in the migration document only after all its rows
//! are committed, so a killed copy copies again only the chunks it had not
//! finished. A `COPY` that finds a key there already (a chunk committed just
//! before a kill, before it was marked done; or rows put in the target table
//! beforehand) is rolled back and the chunk is upserted instead.

use super::db::Db;
use super::{save, Document, MigrateError, Migration, TableCopy};
use crate::config::Config;
use crate::target::plan::TableKey;
use crate::target::postgres::PgTarget;
use crate::target::{Target, TargetError};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tidemark_connectors::postgres::catalog::{self, TypeKinds};
use tidemark_connectors::postgres::table::TableName;
use tidemark_connectors::{mysql, postgres, ChangeEvent, SourceError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Rows per page: one read, one target transaction.
const PAGE_ROWS: usize = 5_000;

/// What a worker needs to read a chunk.
#[derive(Clone)]
struct Job {
    table: usize,
    chunk: usize,
    source: (String, String),
    lo: Option<Vec<String>>,
    hi: Option<Vec<String>>,
}

/// What a worker reports of a chunk: `(table, chunk, rows)`, or its failure.
type ChunkResult = Result<(usize, usize, u64), MigrateError>;

pub(super) async fn copy_all(
    config: &Config,
    plan: &Migration,
    document: &mut Document,
    target_db: &mut Db,
    stop: watch::Receiver<bool>,
) -> Result<(), MigrateError> {
    let jobs = pending_jobs(&document.tables);
    let total_chunks: usize = document.tables.iter().map(|t| t.done.len()).sum();
    let pending = jobs.len();
    tracing::info!(
        "copy: {pending} of {total_chunks} chunks to copy, {} at a time",
        plan.parallelism
    );
    let jobs = Arc::new(Mutex::new(jobs));
    let (done_tx, done_rx) = mpsc::channel::<ChunkResult>(16);
    let mut workers = Vec::new();
    for _ in 0..worker_count(plan.parallelism, pending) {
        let jobs = jobs.clone();
        let done_tx = done_tx.clone();
        let stop = stop.clone();
        let source_url = plan.source_url.clone();
        let connector = plan.connector;
        let name = plan.name.clone();
        let target = plan.target(config).await?;
        let task = worker(jobs, done_tx, stop, source_url, connector, name, target);
        workers.push(tokio::spawn(task));
    }
    drop(done_tx);
    let finished = total_chunks - pending;
    record_chunks(
        plan,
        document,
        target_db,
        done_rx,
        &workers,
        finished,
        total_chunks,
    )
    .await?;
    for worker in workers {
        let _ = worker.await;
    }
    Ok(())
}

/// The chunks not done yet, table by table, in key order.
fn pending_jobs(tables: &[TableCopy]) -> VecDeque<Job> {
    let mut jobs = VecDeque::new();
    for (t, table) in tables.iter().enumerate() {
        for (c, done) in table.done.iter().enumerate() {
            if !done {
                let (lo, hi) = table.chunk(c);
                jobs.push_back(Job {
                    table: t,
                    chunk: c,
                    source: table.source.clone(),
                    lo,
                    hi,
                });
            }
        }
    }
    jobs
}

/// How many workers copy at once: `parallelism`, no more than the chunks
/// pending, and one when none is (it finds the queue empty and ends).
fn worker_count(parallelism: usize, pending: usize) -> usize {
    parallelism.min(pending.max(1))
}

/// One worker: copies the chunks it takes off the queue, reporting each,
/// until the queue is empty, `stop` is set, a chunk fails or nobody listens.
async fn worker(
    jobs: Arc<Mutex<VecDeque<Job>>>,
    done_tx: mpsc::Sender<ChunkResult>,
    stop: watch::Receiver<bool>,
    source_url: String,
    connector: &'static str,
    name: String,
    mut target: Target,
) {
    loop {
        let job = match jobs.lock() {
            Ok(mut queue) => queue.pop_front(),
            Err(_) => None,
        };
        let Some(job) = job else { return };
        if *stop.borrow() {
            return;
        }
        let result = copy_chunk(&source_url, connector, &name, &job, &mut target)
            .await
            .map(|rows| (job.table, job.chunk, rows));
        let failed = result.is_err();
        if done_tx.send(result).await.is_err() || failed {
            return;
        }
    }
}

/// Marks each chunk done as its worker reports it, saving the document every
/// time; the first failure stops every worker and is returned.
async fn record_chunks(
    plan: &Migration,
    document: &mut Document,
    target_db: &mut Db,
    mut done_rx: mpsc::Receiver<ChunkResult>,
    workers: &[JoinHandle<()>],
    mut finished: usize,
    total_chunks: usize,
) -> Result<(), MigrateError> {
    let started = Instant::now();
    let mut copied_now = 0u64;
    while let Some(result) = done_rx.recv().await {
        let (t, c, rows) = match result {
            Ok(done) => done,
            Err(e) => {
                for worker in workers {
                    worker.abort();
                }
                return Err(e);
            }
        };
        let table = &mut document.tables[t];
        table.done[c] = true;
        table.rows_copied += rows;
        let (schema, name) = table.source.clone();
        copied_now += rows;
        finished += 1;
        save(target_db, &plan.name, document).await?;
        let rate = copied_now as f64 / started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            "copy: {finished}/{total_chunks} chunks; {schema}.{name} chunk {} done ({rows} rows); {copied_now} rows this run, {rate:.0} rows/s",
            c + 1
        );
    }
    Ok(())
}

/// Reads chunk `job` from the source and writes it to the target.
async fn copy_chunk(
    source_url: &str,
    connector: &'static str,
    pipeline: &str,
    job: &Job,
    target: &mut Target,
) -> Result<u64, MigrateError> {
    let (schema, table) = &job.source;
    let mut rows = 0;
    if connector == "postgres" {
        if let Target::Postgres(pg) = target {
            match stream_chunk(source_url, pipeline, job, pg).await {
                Err(MigrateError::Apply(conflict @ TargetError::KeyConflict { .. })) => {
                    tracing::info!(
                        "copy: chunk {} of {schema}.{table}: {conflict}; upserting that chunk instead",
                        job.chunk + 1
                    );
                }
                done => return done,
            }
        }
        let mut reader = pg_range(source_url, pipeline, job).await?;
        while let Some(events) = reader.next_chunk().await? {
            rows += write_page(target, events).await?;
        }
    } else {
        let mut reader = mysql::snapshot::Snapshot::range(
            source_url,
            (schema, table),
            job.lo.clone(),
            job.hi.clone(),
            PAGE_ROWS,
            pipeline.into(),
        )
        .await?;
        while let Some(events) = reader.next_chunk().await? {
            rows += write_page(target, events).await?;
        }
    }
    Ok(rows)
}

/// A reader of chunk `job` of a Postgres source, in a transaction of its own.
async fn pg_range(
    source_url: &str,
    pipeline: &str,
    job: &Job,
) -> Result<postgres::snapshot::Snapshot, MigrateError> {
    let (schema, table) = &job.source;
    let config = postgres::parse_url(source_url)?;
    let client = catalog::connect(&config).await?;
    let name = TableName::new(schema, table);
    let shape = catalog::table_shape(&client, &name)
        .await?
        .ok_or_else(|| SourceError::Setup(format!("source table {name} does not exist")))?;
    Ok(postgres::snapshot::Snapshot::range(
        client,
        shape,
        &mut TypeKinds::default(),
        job.lo.clone(),
        job.hi.clone(),
        PAGE_ROWS,
        pipeline.into(),
        config.config.get_dbname().unwrap_or("postgres").into(),
    )
    .await?)
}

/// Postgres to Postgres: the chunk's `COPY` text from the source straight into
/// the target's `COPY`, committed at once. Returns the rows copied.
async fn stream_chunk(
    source_url: &str,
    pipeline: &str,
    job: &Job,
    target: &mut PgTarget,
) -> Result<u64, MigrateError> {
    let (schema, table) = &job.source;
    let reader = pg_range(source_url, pipeline, job).await?;
    let (columns, rows) = reader.copy_out().await?;
    let key = TableKey {
        connector: "postgres",
        schema: schema.as_str().into(),
        table: table.as_str().into(),
    };
    let mut copy = target.copy_in(&key, &columns).await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(data) = rows.next().await {
        let data = data.map_err(|source| SourceError::Postgres {
            what: format!("copy {schema}.{table} after key {:?}", job.lo),
            source,
        })?;
        copy.send(data).await?;
    }
    Ok(copy.finish().await?)
}

async fn write_page(target: &mut Target, events: Vec<ChangeEvent>) -> Result<u64, MigrateError> {
    let pairs: Vec<(&ChangeEvent, &str)> = events.iter().map(|e| (e, "")).collect();
    Ok(target.apply(&pairs, None).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, bounds: &[&str], done: &[bool]) -> TableCopy {
        TableCopy {
            source: ("public".into(), name.into()),
            target: ("public".into(), name.into()),
            bounds: bounds.iter().map(|b| vec![b.to_string()]).collect(),
            done: done.to_vec(),
            rows_copied: 0,
        }
    }

    #[test]
    fn pending_jobs_are_the_chunks_not_done_in_order() {
        let tables = [
            table("a", &["10", "20"], &[true, false, false]),
            table("b", &[], &[false]),
            table("c", &["5"], &[true, true]),
        ];
        let jobs: Vec<Job> = pending_jobs(&tables).into_iter().collect();
        let places: Vec<(usize, usize)> = jobs.iter().map(|j| (j.table, j.chunk)).collect();
        assert_eq!(places, [(0_usize, 1_usize), (0, 2), (1, 0)]);
        assert_eq!(jobs[0].source, ("public".to_string(), "a".to_string()));
        assert_eq!(jobs[0].lo, Some(vec!["10".to_string()]));
        assert_eq!(jobs[0].hi, Some(vec!["20".to_string()]));
        assert_eq!(jobs[1].lo, Some(vec!["20".to_string()]));
        assert_eq!(jobs[1].hi, None);
        assert_eq!(jobs[2].lo, None);
        assert_eq!(jobs[2].hi, None);
    }

    #[test]
    fn workers_are_at_most_the_chunks_pending_and_at_least_one() {
        assert_eq!(worker_count(4, 10), 4);
        assert_eq!(worker_count(4, 2), 2);
        assert_eq!(worker_count(4, 0), 1);
    }
}
