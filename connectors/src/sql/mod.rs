//! The SQL text tidemark writes itself, one module per dialect: identifier
//! quoting, string literals and a server error in one line. Both crates use
//! these (the sources and poll queries here; the target writers, `check` and
//! `migrate` in the daemon), so each dialect is quoted in exactly one place.
//! Values travel as bound parameters wherever the protocol allows; these are
//! for names, and for the few statements that cannot take parameters.

pub mod mysql;
pub mod postgres;

/// An SQL dialect: the engine a connection URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

impl Dialect {
    /// The one reading of URL schemes: `postgres://` and `postgresql://`
    /// are PostgreSQL, `mysql://` and `mariadb://` MySQL; anything else
    /// (a libpq `key=value` string, a typo) is `None`.
    pub fn of_url(url: &str) -> Option<Dialect> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Some(Dialect::Mysql)
        } else {
            None
        }
    }
}
