//! Prometheus metrics through the `metrics` facade. Every name follows
//! `tidemark_<name>_<unit>`, counters end in `_total`; the table in
//! `docs/metrics.md` lists them all. Table labels are only ever captured
//! tables (events carry nothing else), so their number is bounded by the config.

use super::health::Health;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use tidemark_connectors::ChangeEvent;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder (once); later calls are no-ops.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(
                Matcher::Full("tidemark_sink_write_duration_seconds".into()),
                &[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("tidemark_batch_size_events".into()),
                    &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed, which nothing else does.
        let _ = metrics::set_global_recorder(recorder);
        handle
    });
}

/// The scrape: gauges derived from the health first, then everything.
pub(crate) fn render(health: &Health) -> String {
    let Some(handle) = HANDLE.get() else {
        return String::new();
    };
    metrics::gauge!("tidemark_source_lag_seconds").set(health.lag().as_secs_f64());
    let last_written = health.last_written_ms();
    if last_written > 0 {
        metrics::gauge!("tidemark_last_written_event_timestamp_seconds")
            .set(last_written as f64 / 1000.0);
    }
    if let Some(age) = health.cursor_age() {
        metrics::gauge!("tidemark_cursor_age_seconds").set(age.as_secs_f64());
    }
    metrics::gauge!("tidemark_ready").set(if health.readiness().is_ok() { 1.0 } else { 0.0 });
    for phase in [
        "starting",
        "standby",
        "snapshot",
        "streaming",
        "catching-up",
        "stopping",
    ] {
        let value = if health.phase_name() == phase {
            1.0
        } else {
            0.0
        };
        metrics::gauge!("tidemark_phase", "phase" => phase).set(value);
    }
    handle.run_upkeep();
    handle.render()
}

/// Adds the events to `name{table, op}`, one counter update per run of events
/// of the same table and op (batches are mostly long runs).
pub(crate) fn count_events(name: &'static str, events: &[ChangeEvent]) {
    let mut run: Option<(&ChangeEvent, u64)> = None;
    for event in events {
        match &mut run {
            Some((first, n))
                if first.op == event.op
                    && (Arc::ptr_eq(&first.source, &event.source)
                        || (first.source.table == event.source.table
                            && first.source.schema == event.source.schema)) =>
            {
                *n += 1
            }
            _ => {
                if let Some((first, n)) = run {
                    add(name, first, n);
                }
                run = Some((event, 1));
            }
        }
    }
    if let Some((first, n)) = run {
        add(name, first, n);
    }
}

fn add(name: &'static str, event: &ChangeEvent, n: u64) {
    metrics::counter!(name, "table" => event.table_name(), "op" => event.op.code()).increment(n);
}

/// A retry, by reason (`kinesis_throttled`, `kinesis_server_error`, ...).
pub fn retry(reason: &'static str) {
    metrics::counter!("tidemark_retries_total", "reason" => reason).increment(1);
}
