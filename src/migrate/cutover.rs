//! `migrate cutover`: waits for the running migration to be close enough,
//! optionally fences writes on the source, records the final source position
//! F, waits until the target has applied everything up to F, syncs counters,
//! verifies, and writes the cutover record to the target.

use super::db::Db;
use super::{
    load, load_progress, save, verify, CatchUpProgress, Document, MigrateError, Migration, Stage,
};
use crate::config::{Config, SourceConfig};
use crate::cursor::target::TargetCursor;
use crate::target::postgres::connect as pg_connect;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tidemark_connectors::event::{now_ms, parse_lsn};
use tidemark_connectors::postgres::HEARTBEAT_PREFIX;
use tidemark_connectors::sql::postgres::error_detail;
use tidemark_connectors::Position;

pub struct Options {
    pub max_lag: Duration,
    pub fence: bool,
    pub postpone_flag: Option<PathBuf>,
    /// How long to wait for each step before giving up.
    pub timeout: Duration,
}

/// A wait for a condition: logs what it waits for every 10 s and gives up
/// after its timeout.
struct Wait {
    what: String,
    timeout: Duration,
    started: Instant,
    logged: Instant,
}

impl Wait {
    fn new(what: String, timeout: Duration) -> Wait {
        Wait {
            what,
            timeout,
            started: Instant::now(),
            logged: Instant::now(),
        }
    }

    /// Not yet (`state` says why): waits a moment, or fails past the timeout.
    async fn not_yet(&mut self, state: String) -> Result<(), MigrateError> {
        if self.started.elapsed() > self.timeout {
            return Err(MigrateError::State(format!(
                "cutover: gave up waiting for {} after {:?} ({state})",
                self.what, self.timeout
            )));
        }
        if self.logged.elapsed() >= Duration::from_secs(10) {
            tracing::info!("cutover: waiting for {} ({state})", self.what);
            self.logged = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }
}

/// Runs the cutover; returns the record and whether verification passed.
pub async fn cutover(
    config: &Config,
    options: &Options,
) -> Result<(serde_json::Value, bool), MigrateError> {
    let plan = Migration::from_config(config)?;
    let name = plan.name.clone();
    let mut target_db = Db::connect(&plan.target_url).await?;
    let mut document = cuttable(&name, load(&mut target_db, &name).await?)?;
    // 1. The running migration has copied and is within --max-lag.
    wait_until_close(&mut target_db, &name, options).await?;
    // 2. Held while the postpone flag exists.
    wait_while_postponed(options).await?;
    // 3. Fence, and 4. the final position.
    let mut source_db = Db::connect(&plan.source_url).await?;
    if options.fence {
        fence(&mut source_db).await?;
    }
    let final_position = final_position(config, &mut source_db).await?;
    tracing::info!("cutover: final source position {final_position}");
    // 5. Drained: the target's cursor is at or past F.
    wait_until_drained(config, &plan, &final_position, options.timeout).await?;
    document.stage = Stage::CutOver;
    save(&mut target_db, &name, &document).await?;
    // 6. Counters.
    let counters = sync_counters(&plan, &mut source_db, &mut target_db).await?;
    // 7. Verify, and 8. the record.
    let reports = verify::verify(&plan).await?;
    let verified = reports.iter().all(|r| r.equal());
    for report in &reports {
        tracing::info!("verify: {}", report.line());
    }
    let record = json!({
        "migration": name,
        "start_position": document.start.to_string(),
        "final_position": final_position.to_string(),
        "cut_over_at_ms": now_ms(),
        "fenced": options.fence,
        "verified": verified,
        "tables": reports,
        "counters": counters,
    });
    target_db
        .save_cutover(
            &name,
            &final_position.to_string(),
            verified,
            &record.to_string(),
        )
        .await?;
    Ok((record, verified))
}

/// The migration's document, unless the migration has not started or is
/// already cut over.
fn cuttable(name: &str, document: Option<Document>) -> Result<Document, MigrateError> {
    let Some(document) = document else {
        return Err(MigrateError::State(format!(
            "migration {name} has not started: run `tidemark migrate run` first"
        )));
    };
    if document.stage == Stage::CutOver {
        return Err(MigrateError::State(format!(
            "migration {name} is already cut over"
        )));
    }
    Ok(document)
}

/// Step 1: waits until the running migration has copied and reports a lag
/// within `--max-lag`.
async fn wait_until_close(
    target_db: &mut Db,
    name: &str,
    options: &Options,
) -> Result<(), MigrateError> {
    let max_lag = options.max_lag.as_secs_f64();
    let mut wait = Wait::new(
        "the copy to finish and the lag to drop".into(),
        options.timeout,
    );
    loop {
        let stage = load(target_db, name).await?.map(|d| d.stage);
        let progress = load_progress(target_db, name).await?;
        if close_enough(stage, progress.as_ref(), now_ms(), max_lag) {
            return Ok(());
        }
        wait.not_yet(lag_state(stage, progress.as_ref(), now_ms()))
            .await?;
    }
}

/// Whether the migration is close enough to cut over (at `now`, in ms): it is
/// catching up, reported within the last 5 s, and lags `max_lag` seconds at
/// most.
fn close_enough(
    stage: Option<Stage>,
    progress: Option<&CatchUpProgress>,
    now: i64,
    max_lag: f64,
) -> bool {
    match (stage, progress) {
        (Some(Stage::CatchUp), Some(p)) => {
            now - p.updated_at_ms < 5_000 && p.lag_seconds <= max_lag
        }
        _ => false,
    }
}

/// What the wait for [`close_enough`] reports (at `now`, in ms).
fn lag_state(stage: Option<Stage>, progress: Option<&CatchUpProgress>, now: i64) -> String {
    match (stage, progress) {
        (Some(Stage::CatchUp), Some(p)) => format!(
            "lag {:.1}s, last report {} ms ago",
            p.lag_seconds,
            now - p.updated_at_ms
        ),
        (stage, _) => format!("stage {stage:?}; is `tidemark migrate run` running?"),
    }
}

/// Step 2: held while the postpone flag exists.
async fn wait_while_postponed(options: &Options) -> Result<(), MigrateError> {
    if let Some(flag) = &options.postpone_flag {
        let mut wait = Wait::new(format!("{} to be removed", flag.display()), Duration::MAX);
        while flag.exists() {
            wait.not_yet("postponed".into()).await?;
        }
    }
    Ok(())
}

/// Step 5: waits until the target's cursor is at or past `final_position`.
async fn wait_until_drained(
    config: &Config,
    plan: &Migration,
    final_position: &Position,
    timeout: Duration,
) -> Result<(), MigrateError> {
    let mut cursor = TargetCursor {
        target: plan.target(config).await?,
        scope: plan.name.clone(),
    };
    let mut wait = Wait::new(
        format!("the target to apply up to {final_position}"),
        timeout,
    );
    loop {
        let applied = cursor.load().await?;
        if drained(applied.as_ref(), final_position) {
            return Ok(());
        }
        let state = format!(
            "applied up to {}",
            applied.map_or("nothing".into(), |p| p.to_string())
        );
        wait.not_yet(state).await?;
    }
}

/// Whether the target, having applied up to `applied`, has applied everything
/// up to `final_position`.
fn drained(applied: Option<&Position>, final_position: &Position) -> bool {
    applied.is_some_and(|at| at.order(final_position).is_some_and(|o| o.is_ge()))
}

/// Step 6: moves each target counter past its source counter and the rows'
/// maximum; one entry per counter moved.
async fn sync_counters(
    plan: &Migration,
    source_db: &mut Db,
    target_db: &mut Db,
) -> Result<Vec<serde_json::Value>, MigrateError> {
    let default_schema = target_db.current_schema().await?;
    let mut counters = Vec::new();
    for names in &plan.tables {
        let (Some(source), Some(target)) = (source_db.describe(&names.0, &names.1).await?, {
            let t = plan.target_of(names, &default_schema);
            target_db.describe(&t.0, &t.1).await?
        }) else {
            continue;
        };
        for column in source.columns.iter().filter(|c| c.counter) {
            let last = source_db.counter(&source, &column.name).await?.unwrap_or(0);
            if let Some(value) = target_db.sync_counter(&target, &column.name, last).await? {
                counters.push(json!({"table": format!("{}.{}", target.schema, target.name), "column": column.name, "value": value}));
            }
        }
    }
    Ok(counters)
}

/// Stops writes on the source: MySQL `read_only`; Postgres read-only by
/// default for new sessions, and the other open sessions ended.
async fn fence(source: &mut Db) -> Result<(), MigrateError> {
    match source {
        Db::Mysql(_) => {
            source.execute("SET GLOBAL read_only = ON").await?;
            tracing::info!("cutover: source fenced (SET GLOBAL read_only = ON)");
        }
        Db::Postgres(_) => {
            let db = source.rows("SELECT current_database()").await?;
            let db = db
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .unwrap_or_default();
            source
                .execute(&format!(
                    "ALTER DATABASE {} SET default_transaction_read_only = on",
                    tidemark_connectors::sql::postgres::quote_ident(&db)
                ))
                .await?;
            let ended = source
                .rows(
                    "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND backend_type = 'client backend' AND coalesce(application_name, '') NOT LIKE 'tidemark%'",
                )
                .await?;
            let ended = ended
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .unwrap_or_default();
            tracing::info!("cutover: source database {db} fenced (default_transaction_read_only = on; {ended} sessions ended)");
        }
    }
    Ok(())
}

/// The source's position now. For Postgres it also writes a heartbeat message
/// after it, which moves the cursor to (at least) it once everything before is
/// read, even when no captured table changes any more.
async fn final_position(config: &Config, source: &mut Db) -> Result<Position, MigrateError> {
    match (&config.source, source) {
        (SourceConfig::Postgres(pg), _) => {
            let client = pg_connect(pg.url.expose()).await?;
            let lsn: String = client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .map_err(|e| {
                    MigrateError::Db(format!(
                        "cannot read the WAL position: {}",
                        error_detail(&e)
                    ))
                })?
                .get(0);
            client
                .batch_execute(&format!(
                    "SET default_transaction_read_only = off; SELECT pg_logical_emit_message(false, '{HEARTBEAT_PREFIX}', 'cutover')"
                ))
                .await
                .map_err(|e| MigrateError::Db(format!("cannot write the cutover marker: {}", error_detail(&e))))?;
            let lsn =
                parse_lsn(&lsn).ok_or_else(|| MigrateError::Db(format!("unreadable LSN {lsn}")))?;
            Ok(Position::postgres(lsn, lsn))
        }
        (_, source) => {
            let rows = source.rows("SHOW MASTER STATUS").await?;
            let row = rows
                .first()
                .ok_or_else(|| MigrateError::Db("SHOW MASTER STATUS returned nothing".into()))?;
            let file = row.first().cloned().flatten().unwrap_or_default();
            let pos = row
                .get(1)
                .cloned()
                .flatten()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            Ok(Position::Mysql {
                file: file.into(),
                pos,
                row: None,
                gtid: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(stage: Stage) -> Document {
        Document {
            stage,
            start: Position::postgres(1, 1),
            started_at_ms: 0,
            tables: Vec::new(),
            copy_finished_at_ms: None,
        }
    }

    fn progress(lag_seconds: f64, updated_at_ms: i64) -> CatchUpProgress {
        CatchUpProgress {
            lag_seconds,
            updated_at_ms,
            ..CatchUpProgress::default()
        }
    }

    #[test]
    fn only_a_started_migration_not_yet_cut_over_is_cut_over() {
        assert_eq!(
            cuttable("m", None).unwrap_err().to_string(),
            "migration m has not started: run `tidemark migrate run` first"
        );
        assert_eq!(
            cuttable("m", Some(document(Stage::CutOver)))
                .unwrap_err()
                .to_string(),
            "migration m is already cut over"
        );
        assert!(cuttable("m", Some(document(Stage::Copy))).is_ok());
        assert!(cuttable("m", Some(document(Stage::CatchUp))).is_ok());
    }

    #[test]
    fn close_enough_needs_catch_up_a_fresh_report_and_a_small_lag() {
        let up = Some(Stage::CatchUp);
        let fresh = progress(0.5, 10_000);
        let p = Some(&fresh);
        assert!(close_enough(up, p, 14_999, 1.0));
        assert!(close_enough(up, p, 10_000, 0.5));
        // The lag is over --max-lag.
        assert!(!close_enough(up, p, 10_000, 0.4));
        // The last report is 5 s old: is the catch-up still running?
        assert!(!close_enough(up, p, 15_000, 1.0));
        // Still copying, or never reported.
        assert!(!close_enough(Some(Stage::Copy), p, 10_000, 1.0));
        assert!(!close_enough(up, None, 10_000, 1.0));
        assert!(!close_enough(None, None, 10_000, 1.0));
    }

    #[test]
    fn lag_state_says_what_is_awaited() {
        assert_eq!(
            lag_state(Some(Stage::CatchUp), Some(&progress(2.5, 1_000)), 4_000),
            "lag 2.5s, last report 3000 ms ago"
        );
        assert_eq!(
            lag_state(Some(Stage::Copy), Some(&progress(0.0, 0)), 4_000),
            "stage Some(Copy); is `tidemark migrate run` running?"
        );
        assert_eq!(
            lag_state(None, None, 0),
            "stage None; is `tidemark migrate run` running?"
        );
    }

    #[test]
    fn drained_once_the_cursor_reaches_the_final_position() {
        let last = Position::postgres(100, 100);
        assert!(drained(Some(&Position::postgres(100, 100)), &last));
        assert!(drained(Some(&Position::postgres(200, 200)), &last));
        assert!(!drained(Some(&Position::postgres(50, 50)), &last));
        assert!(!drained(None, &last));
        // Positions of another log never compare.
        let binlog = Position::Mysql {
            file: "binlog.000001".into(),
            pos: 4,
            row: None,
            gtid: None,
        };
        assert!(!drained(Some(&binlog), &last));
    }
}
