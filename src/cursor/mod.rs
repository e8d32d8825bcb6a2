//! Cursor stores: where a pipeline remembers the last position its sink made
//! durable. A commit never moves backward and happens only after the sink
//! acknowledged everything up to the position.

mod dynamodb;
mod file;
pub mod target;

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
    #[error("cursor {path} belongs to source [{found}], but the configured source is [{expected}]: its position means nothing there; point the config at the cursor's source, or start over with `tidemark cursor reset --config <this config>`")]
    OtherSource {
        path: String,
        found: String,
        expected: String,
    },
    #[error("cursor: {0}")]
    Locked(#[from] crate::lockfile::LockError),
    #[error("cursor refuses to move backward from {stored} to {attempted}")]
    Backward { stored: String, attempted: String },
    #[error("{0}")]
    Store(String),
    /// The store did not answer in time or at all: a reconnect may cure it.
    #[error("{0}")]
    Unavailable(String),
    #[error("lost the lease on pipeline {pipeline} (dynamodb table {table}): another instance owns it now; this commit was refused")]
    LeaseLost { pipeline: String, table: String },
}

impl From<crate::aws::lease::LeaseError> for CursorError {
    fn from(e: crate::aws::lease::LeaseError) -> CursorError {
        if e.transient {
            CursorError::Unavailable(e.message)
        } else {
            CursorError::Store(e.message)
        }
    }
}

impl CursorError {
    /// True for failures a new session may cure (the store unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, CursorError::Unavailable(_))
    }
}

/// Which source a cursor's position belongs to, and its lineage (see
/// [`CursorStore::bind_source`]): as read with the position, then as the
/// next commits record them.
#[derive(Debug, Default)]
pub(crate) struct Binding {
    pub source: Option<String>,
    pub lineage: Option<String>,
}

/// The configured store. The set is fixed, so an enum reads plainer than a trait object.
pub enum CursorStore {
    File(FileCursor),
    Dynamo(Box<DynamoCursor>),
    /// Kept in the target's `tidemark_applied` table (`apply`, `migrate`).
    Target(Box<crate::cursor::target::TargetCursor>),
}

fn target_error(e: crate::target::TargetError) -> CursorError {
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

    /// Ties the loaded position to the source it will be used with: a cursor
    /// recorded for another source (another server, cluster, database or
    /// slot) is refused; one recorded before sources were named adopts this
    /// one. Commits from now on record `source`. Call after [`Self::load`].
    ///
    /// Returns the cursor's lineage: an id made when a cursor starts from
    /// nothing (first start, or after `tidemark cursor reset`) and kept by
    /// every commit after. A sink holding lines of another lineage was written
    /// under a cursor that no longer exists, so none of its lines may be taken
    /// for events already written (see `FileSink::open`).
    pub fn bind_source(&mut self, source: &str, stored: bool) -> Result<String, CursorError> {
        let (path, binding) = match self {
            CursorStore::File(store) => (store.path(), &mut store.binding),
            CursorStore::Dynamo(store) => (store.path(), &mut store.binding),
            // The target keeps the source's cursor in its own transaction; it
            // is tied to the migration's plan, not to a source identity.
            CursorStore::Target(_) => return Ok(String::new()),
        };
        if let Some(found) = binding.source.as_deref().filter(|f| stored && *f != source) {
            return Err(CursorError::OtherSource {
                path,
                found: found.to_string(),
                expected: source.to_string(),
            });
        }
        binding.source = Some(source.to_string());
        if !stored || binding.lineage.is_none() {
            binding.lineage = Some(new_lineage());
        }
        Ok(binding.lineage.clone().unwrap_or_default())
    }

    /// Returns once this instance may write to the sink: at once for the
    /// file and target stores; for DynamoDB, while the lease is confirmed
    /// (see `Lease::confirmed`). An unconfirmed lease (renewals failing)
    /// holds writes until a renewal gets through; a lost one is an error.
    pub async fn confirm_owner(&self) -> Result<(), CursorError> {
        let CursorStore::Dynamo(store) = self else {
            return Ok(());
        };
        let mut since: Option<std::time::Instant> = None;
        while !store.lease_confirmed() {
            if !store.lease_held() {
                return Err(CursorError::LeaseLost {
                    pipeline: store.pipeline().to_string(),
                    table: store.table().to_string(),
                });
            }
            let waiting = since.get_or_insert_with(|| {
                tracing::warn!(
                    "{}: the lease is not confirmed (renewals fail); holding sink writes until it is",
                    store.path()
                );
                std::time::Instant::now()
            });
            store.health().set_problem(
                "cursor",
                Some(format!(
                    "{}: lease unconfirmed for {:.0?}; sink writes held",
                    store.path(),
                    waiting.elapsed()
                )),
            );
            store.health().tick();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if since.is_some() {
            tracing::info!("{}: the lease is confirmed again; writing", store.path());
        }
        Ok(())
    }

    /// The signal that stops the pipeline if the store's lease is lost
    /// (DynamoDB; the other stores have no lease).
    pub fn stop_on_lease_loss(&mut self, stop: crate::ops::stop::StopSignal) {
        if let CursorStore::Dynamo(store) = self {
            store.stop_on_loss(stop);
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

/// A fresh lineage id: the time in nanoseconds and the process id, in hex
/// (unique enough to tell two cursor starts apart; not a secret).
fn new_lineage() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}
