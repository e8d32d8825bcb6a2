//! What operators see and systemd relies on: the daemon's [`health`] (phase,
//! loop ticks, readiness, lag), the Prometheus [`metrics`], the HTTP endpoint
//! ([`http`]), log set-up with a reloadable level ([`logging`]), and the watch on
//! the source's log retention ([`retention`]). The pipeline only ticks the health
//! and counts; nothing here feeds back into the flow of events, except a
//! retention loss, which stops it.

pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod reconnect;
pub mod retention;
pub mod stop;

pub use health::{Health, Phase};
