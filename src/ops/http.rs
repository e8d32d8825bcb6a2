//! The HTTP endpoint (`[http] listen`, localhost by default):
//! - `/healthz`: 200 while the pipeline loop ticks, 503 once it is stuck;
//! - `/readyz`: 200 with the phase when the source is connected and nothing is
//!   wrong (sink, cursor store, log retention), else 503 with the reason;
//! - `/metrics`: Prometheus text.

use super::{metrics, Health};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::net::SocketAddr;

/// Binds (failing with the address in the message) and serves in the background.
pub async fn serve(address: SocketAddr, health: Health) -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("http.listen {address}: {e}")))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("http endpoint stopped: {e}");
        }
    });
    tracing::info!("http: serving /healthz, /readyz and /metrics on {bound}");
    Ok(bound)
}

async fn healthz(State(health): State<Health>) -> (StatusCode, String) {
    match health.alive() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(stuck) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stuck: the pipeline loop last ticked {:.0}s ago\n",
                stuck.as_secs_f64()
            ),
        ),
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    match health.readiness() {
        Ok(phase) => (StatusCode::OK, format!("{phase}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn prometheus(State(health): State<Health>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics::render(&health),
    )
}
