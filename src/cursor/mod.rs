//! Cursor stores: where a pipeline remembers the last position its sink made
//! durable. A commit never moves backward and happens only after the sink
//! acknowledged everything up to the position.

mod dynamodb;
mod file;
pub mod lease;

pub use dynamodb::DynamoCursor;
pub use file::FileCursor;

use tidemark_connectors::Position;

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cursor {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cursor {path}: unreadable ({message}); fix or delete it (deleting takes a new snapshot)"
    )]
    Corrupt { path: String, message: String },
    #[error("cursor {path} belongs to pipeline {found:?}, not {expected:?}")]
    OtherPipeline {
        path: String,
        found: String,
        expected: String,
    },
    #[error("cursor refuses to move backward from {stored} to {attempted}")]
    Backward { stored: String, attempted: String },
    #[error("{0}")]
    Store(String),
    #[error("lost the lease on pipeline {pipeline} (dynamodb table {table}): another instance owns it now; this commit was refused")]
    LeaseLost { pipeline: String, table: String },
}

/// The configured store. The set is fixed, so an enum reads plainer than a trait object.
pub enum CursorStore {
    File(FileCursor),
    Dynamo(Box<DynamoCursor>),
    /// Kept in the target's `tidemark_applied` table (`apply`, `migrate`).
    Target(Box<crate::apply::sink::TargetCursor>),
}

fn target_error(e: crate::apply::ApplyError) -> CursorError {
    CursorError::Store(e.to_string())
}

impl CursorStore {
    /// The stored position. For DynamoDB this first takes the pipeline's lease,
    /// waiting as a standby while another instance holds it.
    pub async fn load(&mut self) -> Result<Option<Position>, CursorError> {
        match self {
            CursorStore::File(store) => store.load(),
            CursorStore::Dynamo(store) => store.acquire().await,
            CursorStore::Target(store) => store.load().await.map_err(target_error),
        }
    }

    pub async fn commit(&mut self, position: &Position) -> Result<(), CursorError> {
        match self {
            CursorStore::File(store) => tokio::task::block_in_place(|| store.commit(position)),
            CursorStore::Dynamo(store) => store.commit(position).await,
            CursorStore::Target(store) => store.commit(position).await.map_err(target_error),
        }
    }

    /// On a clean stop: lets a standby take over at once.
    pub async fn release(&mut self) {
        if let CursorStore::Dynamo(store) = self {
            store.release().await;
        }
    }

    /// Forgets the stored position, so the next start takes a new snapshot.
    pub async fn reset(&mut self) -> Result<bool, CursorError> {
        match self {
            CursorStore::File(store) => store.reset(),
            CursorStore::Dynamo(store) => store.reset().await,
            CursorStore::Target(store) => {
                let scope = store.scope.clone();
                store.target.forget(&scope).await.map_err(target_error)?;
                Ok(true)
            }
        }
    }

    /// The stored record as JSON, for `tidemark cursor show`.
    pub async fn describe(&mut self) -> Result<Option<serde_json::Value>, CursorError> {
        match self {
            CursorStore::File(store) => store.describe(),
            CursorStore::Dynamo(store) => store.describe().await,
            CursorStore::Target(store) => {
                let scope = store.scope.clone();
                Ok(store
                    .target
                    .applied(&scope)
                    .await
                    .map_err(target_error)?
                    .map(|(position, cursor)| {
                        serde_json::json!({"scope": scope, "position": position, "cursor": cursor})
                    }))
            }
        }
    }
}

/// Orders two positions of the same log; `None` when they are of different logs.
pub fn compare(a: &Position, b: &Position) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (
            Position::Postgres {
                commit_lsn: ca,
                lsn: la,
                ..
            },
            Position::Postgres {
                commit_lsn: cb,
                lsn: lb,
                ..
            },
        ) => Some((ca, la).cmp(&(cb, lb))),
        (
            Position::Mysql {
                file: fa, pos: pa, ..
            },
            Position::Mysql {
                file: fb, pos: pb, ..
            },
        ) => {
            use tidemark_connectors::event::binlog_index;
            Some((binlog_index(fa), pa).cmp(&(binlog_index(fb), pb)))
        }
        // Every table's watermark must stay or move forward.
        (Position::Poll { tables: ta }, Position::Poll { tables: tb }) => {
            let mut order = std::cmp::Ordering::Equal;
            for (table, wa) in ta {
                let Some(wb) = tb.get(table) else { continue };
                match wa.order().cmp(&wb.order()) {
                    std::cmp::Ordering::Greater => return Some(std::cmp::Ordering::Greater),
                    std::cmp::Ordering::Less => order = std::cmp::Ordering::Less,
                    std::cmp::Ordering::Equal => {}
                }
            }
            if order == std::cmp::Ordering::Equal && tb.len() > ta.len() {
                order = std::cmp::Ordering::Less;
            }
            Some(order)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering;
    use tidemark_connectors::event::Watermark;
    use tidemark_connectors::Position;

    fn poll(sort: &str, key: &str) -> Position {
        Position::Poll {
            tables: [(
                "public.t".to_string(),
                Watermark {
                    value: String::new(),
                    sort: sort.into(),
                    key: vec![key.into()],
                    scans: 0,
                },
            )]
            .into(),
        }
    }

    #[test]
    fn poll_watermarks_order_numeric_keys_as_numbers() {
        let ts = "2026-11-21T10:00:00.000000Z";
        assert_eq!(
            compare(&poll(ts, "9"), &poll(ts, "10")),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare(&poll(ts, "10"), &poll(ts, "9")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare(&poll(ts, "10"), &poll("2026-11-21T10:00:01.000000Z", "1")),
            Some(Ordering::Less)
        );
        assert!(poll(ts, "9").to_string() < poll(ts, "10").to_string());
    }
}
