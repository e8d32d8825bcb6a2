//! The `tidemark_applied` bookkeeping table, written once for both target
//! dialects: its DDL, the statements that read and write it (the applied
//! position and cursor, the batch's locked read, storing a cursor, claiming a
//! row, forgetting one, recording a position), the texts naming their
//! failures, and the check every batch that records progress makes first.
//!
//! A [`Dialect`] describes what differs between Postgres and MySQL/MariaDB:
//! the table's name, the quoting of `cursor` (reserved in MySQL), the
//! placeholders (`$1` or `?`), the upsert (`ON CONFLICT … DO UPDATE` or
//! `ON DUPLICATE KEY UPDATE`) and the insert that keeps a row already there
//! (`ON CONFLICT DO NOTHING` or `INSERT IGNORE`). The writers run the
//! statements with their own clients.

use super::{AppliedSpan, TargetError};
use tidemark_connectors::PositionKey;

/// What failed, as a writer's errors name it.
pub(crate) const CREATE: &str = "create tidemark_applied";
pub(crate) const READ: &str = "read tidemark_applied";
pub(crate) const STORE_CURSOR: &str = "store the cursor in tidemark_applied";
pub(crate) const CLAIM: &str = "add a row to tidemark_applied";
pub(crate) const FORGET: &str = "reset tidemark_applied";
pub(crate) const RECORD: &str = "store the applied position";

/// The bookkeeping table in Postgres, created on connect.
const POSTGRES_TABLE: &str = "
CREATE TABLE IF NOT EXISTS public.tidemark_applied (
    scope text PRIMARY KEY,
    position text NOT NULL,
    cursor text,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

/// The bookkeeping table in MySQL/MariaDB, created on connect.
const MYSQL_TABLE: &str = "CREATE TABLE IF NOT EXISTS tidemark_applied (
    scope varchar(255) NOT NULL PRIMARY KEY,
    position varchar(2048) NOT NULL,
    `cursor` text,
    updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
)";

/// How a target dialect spells the bookkeeping statements.
pub(crate) struct Dialect {
    /// The table's DDL (`CREATE TABLE IF NOT EXISTS`).
    create: &'static str,
    /// The table, as statements name it.
    table: &'static str,
    /// The `cursor` column, as statements name it.
    cursor: &'static str,
    /// Numbered placeholders (`$1`, `$2`) rather than `?`.
    numbered: bool,
    /// What comes between an upsert's values and its assignments.
    on_conflict_update: &'static str,
    /// The new value of column `c` in an assignment: `{0}c{1}`.
    new_value: (&'static str, &'static str),
    /// The current time, for `updated_at`.
    now: &'static str,
    /// The insert that keeps a row already there: before the table, and after
    /// the values.
    insert_or_keep: (&'static str, &'static str),
}

pub(crate) const POSTGRES: Dialect = Dialect {
    create: POSTGRES_TABLE,
    table: "public.tidemark_applied",
    cursor: "cursor",
    numbered: true,
    on_conflict_update: "ON CONFLICT (scope) DO UPDATE SET",
    new_value: ("EXCLUDED.", ""),
    now: "now()",
    insert_or_keep: ("INSERT INTO", " ON CONFLICT (scope) DO NOTHING"),
};

pub(crate) const MYSQL: Dialect = Dialect {
    create: MYSQL_TABLE,
    table: "tidemark_applied",
    cursor: "`cursor`",
    numbered: false,
    on_conflict_update: "ON DUPLICATE KEY UPDATE",
    new_value: ("VALUES(", ")"),
    now: "CURRENT_TIMESTAMP(6)",
    insert_or_keep: ("INSERT IGNORE INTO", ""),
};

impl Dialect {
    /// The table's DDL, run on connect.
    pub(crate) fn create_table(&self) -> &'static str {
        self.create
    }

    /// The position and cursor of scope `$1`.
    pub(crate) fn read_applied(&self) -> String {
        format!(
            "SELECT position, {} FROM {} WHERE scope = {}",
            self.cursor,
            self.table,
            self.param(1)
        )
    }

    /// The position of scope `$1`, its row locked until the transaction ends.
    pub(crate) fn read_position_for_update(&self) -> String {
        format!(
            "SELECT position FROM {} WHERE scope = {} FOR UPDATE",
            self.table,
            self.param(1)
        )
    }

    /// Stores cursor `$2` of scope `$1` (a new row gets an empty position).
    pub(crate) fn store_cursor(&self) -> String {
        let columns = format!("scope, position, {}", self.cursor);
        let values = format!("{}, '', {}", self.param(1), self.param(2));
        self.upsert(&columns, &values, self.cursor)
    }

    /// Adds a row (empty position) for scope `$1` unless it has one.
    pub(crate) fn claim(&self) -> String {
        let (insert, keep) = self.insert_or_keep;
        format!(
            "{insert} {} (scope, position) VALUES ({}, ''){keep}",
            self.table,
            self.param(1)
        )
    }

    /// Deletes the row of scope `$1`.
    pub(crate) fn forget(&self) -> String {
        format!("DELETE FROM {} WHERE scope = {}", self.table, self.param(1))
    }

    /// Stores position `$2` of scope `$1`.
    pub(crate) fn record_position(&self) -> String {
        let values = format!("{}, {}", self.param(1), self.param(2));
        self.upsert("scope, position", &values, "position")
    }

    /// Inserts `values` into `columns`, or sets `column` (and `updated_at`)
    /// of the row already there.
    fn upsert(&self, columns: &str, values: &str, column: &str) -> String {
        let (before, after) = self.new_value;
        format!(
            "INSERT INTO {} ({columns}) VALUES ({values}) {} {column} = {before}{column}{after}, updated_at = {}",
            self.table, self.on_conflict_update, self.now
        )
    }

    /// Placeholder `n` (from 1).
    fn param(&self, n: usize) -> String {
        if self.numbered {
            format!("${n}")
        } else {
            "?".to_string()
        }
    }
}

/// The check every transaction that records progress makes first: the
/// stored position must be before the batch's first (polled positions are
/// not ordered across tables and are not checked).
pub fn check_progress(stored: Option<String>, p: &AppliedSpan<'_>) -> Result<(), TargetError> {
    let ordered = |text: &str| PositionKey::parse(text).ok().flatten();
    let passed = |stored: &str| match (ordered(stored), ordered(p.first)) {
        (Some(stored), Some(first)) => matches!(
            stored.partial_cmp(&first),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ),
        _ => false,
    };
    match stored {
        Some(stored) if passed(&stored) => Err(TargetError::Superseded {
            scope: p.scope.to_string(),
            stored,
            first: p.first.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `built` is `before` (the text a writer ran before the statements were
    /// shared) up to the line breaks and indentation inside it.
    fn same(built: String, before: &str) {
        let words: Vec<&str> = before.split_whitespace().collect();
        assert_eq!(built, words.join(" "));
    }

    #[test]
    fn postgres_statements_are_those_the_writer_ran() {
        same(
            POSTGRES.read_applied(),
            "SELECT position, cursor FROM public.tidemark_applied WHERE scope = $1",
        );
        same(
            POSTGRES.read_position_for_update(),
            "SELECT position FROM public.tidemark_applied WHERE scope = $1 FOR UPDATE",
        );
        same(
            POSTGRES.store_cursor(),
            "INSERT INTO public.tidemark_applied (scope, position, cursor) VALUES ($1, '', $2)
                 ON CONFLICT (scope) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()",
        );
        same(
            POSTGRES.claim(),
            "INSERT INTO public.tidemark_applied (scope, position) VALUES ($1, '')
                 ON CONFLICT (scope) DO NOTHING",
        );
        same(
            POSTGRES.forget(),
            "DELETE FROM public.tidemark_applied WHERE scope = $1",
        );
        same(
            POSTGRES.record_position(),
            "INSERT INTO public.tidemark_applied (scope, position) VALUES ($1, $2)
                 ON CONFLICT (scope) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
        );
    }

    #[test]
    fn mysql_statements_are_those_the_writer_ran() {
        same(
            MYSQL.read_applied(),
            "SELECT position, `cursor` FROM tidemark_applied WHERE scope = ?",
        );
        same(
            MYSQL.read_position_for_update(),
            "SELECT position FROM tidemark_applied WHERE scope = ? FOR UPDATE",
        );
        same(
            MYSQL.store_cursor(),
            "INSERT INTO tidemark_applied (scope, position, `cursor`) VALUES (?, '', ?)
                 ON DUPLICATE KEY UPDATE `cursor` = VALUES(`cursor`), updated_at = CURRENT_TIMESTAMP(6)",
        );
        same(
            MYSQL.claim(),
            "INSERT IGNORE INTO tidemark_applied (scope, position) VALUES (?, '')",
        );
        same(
            MYSQL.forget(),
            "DELETE FROM tidemark_applied WHERE scope = ?",
        );
        same(
            MYSQL.record_position(),
            "INSERT INTO tidemark_applied (scope, position) VALUES (?, ?)
                     ON DUPLICATE KEY UPDATE position = VALUES(position), updated_at = CURRENT_TIMESTAMP(6)",
        );
    }
}
