//! The values every section parses the same way: counts and durations within
//! bounds (each refusal names its key), and connection URLs, which may hold a
//! password and so are kept in a type that never prints it.

use super::{invalid, ConfigError};
use crate::target::types::Engine;
use serde::Deserialize;
use std::time::Duration;

/// Upper bounds of sizes and durations (config/README.md lists them): past
/// them a value is a typo or a unit mistake, and some would hold memory
/// without limit (a batch is never cut inside a transaction below
/// `max_batch_events`).
pub mod bounds {
    use std::time::Duration;

    /// Events, rows, pages.
    pub(crate) const MAX_COUNT: usize = 1_000_000;
    pub(crate) const MAX_PARALLELISM: usize = 64;
    pub(crate) const MAX_FILE_BYTES: u64 = 1 << 40;
    pub(crate) const DAY: Duration = Duration::from_secs(86_400);
    pub(crate) const HOUR: Duration = Duration::from_secs(3_600);
}

/// A count between `min` and `max`, or an error naming the key.
pub(super) fn count(key: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{value} is not between {min} and {max}"),
        ))
    }
}

/// A duration between `min` and `max`, or an error naming the key. The one
/// place a duration key is read: users get the [`Duration`] it returns.
pub(super) fn duration(
    key: &str,
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    match parse_duration(text) {
        Some(d) if d >= min && d <= max => Ok(d),
        _ => Err(invalid(
            key,
            format!(
                "{text:?} is not a duration between {} and {} (like 30s, 500ms, 5m)",
                humantime_text(min),
                humantime_text(max)
            ),
        )),
    }
}

fn humantime_text(d: Duration) -> String {
    match d.as_secs() {
        0 if d.is_zero() => "0s".into(),
        0 => format!("{}ms", d.as_millis()),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s => format!("{s}s"),
    }
}

/// `250ms`, `2s`, `5m`, `1h`. Public for the command line's own durations
/// (`migrate cutover --max-lag`, `--timeout`); config keys go through
/// [`duration`], which bounds them and names the key.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// `database.table`, as the MySQL connector takes it.
pub(super) fn split_mysql_table(text: &str) -> Option<(String, String)> {
    let (db, table) = text.split_once('.')?;
    (!db.is_empty() && !table.is_empty() && !table.contains('.'))
        .then(|| (db.to_string(), table.to_string()))
}

/// A connection URL (source or target). It may carry a password, so its one
/// `Debug` shows neither the user information nor the parameters, and the
/// text is reached only through [`SecretUrl::expose`], where it is handed to
/// a driver.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL itself, for a driver: never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The engine its scheme names (`postgres://`, `postgresql://`,
    /// `mysql://`, `mariadb://`); `None` for anything else, such as a libpq
    /// `key=value` string. [`Engine::of_url`] is the one reading of schemes.
    pub fn engine(&self) -> Option<Engine> {
        Engine::of_url(&self.0)
    }

    /// The engine as the capture connectors read the URL: as [`Self::engine`],
    /// less the `mariadb://` alias, which they do not take (a MariaDB source
    /// is a `mysql://` URL).
    pub(crate) fn capture_engine(&self) -> Option<Engine> {
        match self.engine() {
            Some(Engine::Mysql) if !self.0.starts_with("mysql://") => None,
            other => other,
        }
    }

    /// `scheme://<redacted>@host:port/path`: no user, password or parameters
    /// (a parameter may hold a password too). Without an `@` nothing after the
    /// scheme is shown (a malformed URL may hold a password where the host
    /// goes), and nothing at all when it is not a `scheme://` URL (a libpq
    /// `key=value` string names its password).
    fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "<redacted>".into();
        };
        let plain_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !plain_scheme {
            return "<redacted>".into();
        }
        // Everything up to the last `@` may be credentials (a password may
        // hold an `@`, `/` or `?`); after it, the host and the path.
        let Some(at) = rest.rfind('@') else {
            return format!("{scheme}://<redacted>");
        };
        let after = &rest[at + 1..];
        let end = after.find(['?', '#']).unwrap_or(after.len());
        format!("{scheme}://<redacted>@{}", &after[..end])
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretUrl").field(&self.redacted()).finish()
    }
}
