//! How much WAL the slot holds back, for the daemon's retention watch: read
//! from `pg_replication_slots` on a connection of its own.

use super::{catalog, parse_url};
use crate::SourceError;
use tokio_postgres::Client;

/// One reading of the slot.
#[derive(Debug, Clone)]
pub struct SlotRetention {
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: String,
    /// WAL written since the slot's confirmed flush position: what capture is behind.
    pub behind_bytes: i64,
    /// WAL the slot keeps from being removed.
    pub retained_bytes: i64,
    /// WAL that may still be written before the slot is at risk; `None` when
    /// `max_slot_wal_keep_size` is unlimited.
    pub safe_wal_bytes: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes; `None` when unlimited (-1).
    pub max_keep_bytes: Option<i64>,
}

pub struct SlotWatch {
    client: Client,
    slot: String,
}

impl SlotWatch {
    pub async fn connect(url: &str, slot: &str) -> Result<SlotWatch, SourceError> {
        let client = catalog::connect(&parse_url(url)?).await?;
        Ok(SlotWatch {
            client,
            slot: slot.to_string(),
        })
    }

    /// The slot's state, or `None` when the slot no longer exists.
    pub async fn check(&self) -> Result<Option<SlotRetention>, SourceError> {
        let row = self
            .client
            .query_opt(
                "SELECT coalesce(wal_status, ''), \
                        coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::int8, 0), \
                        coalesce((pg_current_wal_lsn() - restart_lsn)::int8, 0), \
                        safe_wal_size, \
                        (SELECT setting::int8 FROM pg_settings WHERE name = 'max_slot_wal_keep_size') \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|source| SourceError::Postgres {
                what: format!("read the state of slot {}", self.slot),
                source,
            })?;
        let what = format!("read the state of slot {}", self.slot);
        let what = what.as_str();
        use super::catalog::column;
        row.map(|row| {
            let max_keep_mb: i64 = column(&row, 4, what)?;
            Ok(SlotRetention {
                wal_status: column(&row, 0, what)?,
                behind_bytes: column(&row, 1, what)?,
                retained_bytes: column(&row, 2, what)?,
                safe_wal_bytes: column(&row, 3, what)?,
                max_keep_bytes: (max_keep_mb >= 0)
                    .then_some(max_keep_mb.saturating_mul(1024 * 1024)),
            })
        })
        .transpose()
    }
}
