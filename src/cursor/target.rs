//! The target as the pipeline's cursor store: the source cursor is kept in
//! the same `tidemark_applied` row as the applied position the target sink
//! writes (`sinks::target`), for capture and apply in one process.

use crate::target::{Target, TargetError};
use tidemark_connectors::Position;

/// The source cursor, kept in the target's `tidemark_applied` row.
pub struct TargetCursor {
    pub target: Target,
    pub scope: String,
}

impl TargetCursor {
    pub async fn load(&mut self) -> Result<Option<Position>, TargetError> {
        match self.target.applied(&self.scope).await? {
            Some((_, Some(cursor))) if !cursor.is_empty() => serde_json::from_str(&cursor)
                .map(Some)
                .map_err(|e| {
                    TargetError::Setup(format!(
                        "tidemark_applied: the cursor of {} is unreadable ({e}); reset it with `tidemark cursor reset`",
                        self.scope
                    ))
                }),
            _ => Ok(None),
        }
    }

    pub async fn commit(&mut self, position: &Position) -> Result<(), TargetError> {
        let text = serde_json::to_string(position)
            .map_err(|e| TargetError::Setup(format!("cannot encode cursor {position}: {e}")))?;
        self.target.save_cursor(&self.scope, &text).await
    }
}
