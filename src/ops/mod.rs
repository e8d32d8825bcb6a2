//! What operators see and systemd relies on: the daemon's [`health`] (a
//! handle: phase, loop ticks, readiness, lag), what is reported per event
//! ([`events`]: the metric, the health update and the log line in one call),
//! the Prometheus [`metrics`], the HTTP endpoint ([`http`]), log set-up with a
//! reloadable level ([`logging`]), the [`stop`] signal with its reason, the
//! backoff between sessions ([`reconnect`]) and the watch on the source's log
//! retention ([`retention`]). A leaf: it imports no other module of the
//! crate. Nothing here feeds back into the flow of events, except a retention
//! loss, which stops it with a reason.

pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod reconnect;
pub mod retention;
pub mod stop;

pub use health::{Health, Phase};
