//! How capture starts: resume at the cursor, stream from an existing slot,
//! create the slot (with its snapshot, or without), or refuse. Decided by a
//! pure function of what `open` read (cursor, slot, settings), so every branch
//! is testable without a server; `open` carries the decision out.

use super::catalog::SlotState;
use crate::event::lsn_text;
use crate::{Position, SourceError};

/// How `PostgresSource::open` starts the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// The cursor is at `lsn` and the slot has not been confirmed past it:
    /// stream from `lsn`.
    Resume { lsn: u64 },
    /// No cursor, stream only, and the slot exists: stream from the position
    /// it confirmed (`None` when the server lists none), which becomes the
    /// fresh start.
    FromSlot { confirmed_flush_lsn: Option<u64> },
    /// No cursor and a snapshot is configured: create the slot exporting a
    /// snapshot, read the snapshot, then stream. A slot that exists without a
    /// cursor is dropped first (`drop_stale`): only a snapshot exported by the
    /// slot's own creation is consistent with its stream.
    Snapshot { drop_stale: bool },
    /// No cursor, no slot, stream only: create the slot and stream from its
    /// consistent point, which becomes the fresh start.
    NewSlot,
    /// Do not start (see [`Refusal::error`]).
    Refuse(Refusal),
}

/// Why capture must not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The cursor is at `cursor` but the slot is gone, and with it the
    /// changes after the cursor.
    SlotMissing { cursor: u64 },
    /// Another consumer confirmed the slot up to `flushed`, past the cursor:
    /// the changes in between are gone.
    SlotPastCursor { flushed: u64, cursor: u64 },
    /// The cursor holds another kind of source's position.
    ForeignCursor(Position),
}

impl Refusal {
    /// The error `open` returns, naming `slot` and how to recover.
    pub(super) fn error(&self, slot: &str) -> SourceError {
        SourceError::Setup(match self {
            Refusal::SlotMissing { cursor } => format!(
                "source.slot: replication slot '{}' is missing but the cursor is at LSN {}: the changes after it are gone; recover with `tidemark cursor reset --config <this config>`, then start again to take a new snapshot",
                slot,
                lsn_text(*cursor)
            ),
            Refusal::SlotPastCursor { flushed, cursor } => format!(
                "source.slot: slot '{}' was confirmed up to LSN {} by another consumer, past the cursor at {}: changes in between are gone; recover with `tidemark cursor reset --config <this config>`, then start again to take a new snapshot",
                slot,
                lsn_text(*flushed),
                lsn_text(*cursor)
            ),
            Refusal::ForeignCursor(other) => format!(
                "the cursor holds {other}, not a Postgres position: it belongs to another source"
            ),
        })
    }
}

/// Decides how to start from the stored cursor (`resume`), the slot as the
/// server lists it (`None`: it does not exist) and whether a snapshot is
/// configured (`source.snapshot = "initial"`).
pub(super) fn decide(resume: Option<Position>, slot: Option<&SlotState>, snapshot: bool) -> Start {
    match resume {
        Some(Position::Postgres { lsn, .. }) => resume_at(lsn, slot),
        Some(other) => Start::Refuse(Refusal::ForeignCursor(other)),
        None if snapshot => Start::Snapshot {
            drop_stale: slot.is_some(),
        },
        None => match slot {
            Some(slot) => Start::FromSlot {
                confirmed_flush_lsn: slot.confirmed_flush_lsn,
            },
            None => Start::NewSlot,
        },
    }
}

/// With a cursor at `lsn`: resume there, unless the slot no longer holds
/// what follows it.
fn resume_at(lsn: u64, slot: Option<&SlotState>) -> Start {
    let Some(slot) = slot else {
        return Start::Refuse(Refusal::SlotMissing { cursor: lsn });
    };
    match slot.confirmed_flush_lsn.filter(|f| *f > lsn) {
        Some(flushed) => Start::Refuse(Refusal::SlotPastCursor {
            flushed,
            cursor: lsn,
        }),
        None => Start::Resume { lsn },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn slot(confirmed_flush_lsn: Option<u64>) -> SlotState {
        SlotState {
            plugin: Some("pgoutput".into()),
            database: Some("shop".into()),
            active: false,
            confirmed_flush_lsn,
        }
    }

    fn cursor(lsn: u64) -> Option<Position> {
        Some(Position::postgres(lsn, lsn))
    }

    #[test]
    fn a_cursor_resumes_where_the_slot_has_not_gone_past_it() {
        let behind = slot(Some(0x100));
        assert_eq!(
            decide(cursor(0x200), Some(&behind), true),
            Start::Resume { lsn: 0x200 }
        );
        let at = slot(Some(0x200));
        assert_eq!(
            decide(cursor(0x200), Some(&at), false),
            Start::Resume { lsn: 0x200 }
        );
        let unknown = slot(None);
        assert_eq!(
            decide(cursor(0x200), Some(&unknown), true),
            Start::Resume { lsn: 0x200 }
        );
    }

    #[test]
    fn a_cursor_without_its_slot_is_refused() {
        let start = decide(cursor(0x1_0000_0200), None, true);
        assert_eq!(
            start,
            Start::Refuse(Refusal::SlotMissing {
                cursor: 0x1_0000_0200
            })
        );
        let Start::Refuse(refusal) = start else {
            unreachable!()
        };
        let text = refusal.error("s").to_string();
        assert!(
            text.starts_with(
                "source.slot: replication slot 's' is missing but the cursor is at LSN 1/200:"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_slot_confirmed_past_the_cursor_is_refused() {
        let ahead = slot(Some(0x300));
        let start = decide(cursor(0x200), Some(&ahead), false);
        assert_eq!(
            start,
            Start::Refuse(Refusal::SlotPastCursor {
                flushed: 0x300,
                cursor: 0x200
            })
        );
        let Start::Refuse(refusal) = start else {
            unreachable!()
        };
        let text = refusal.error("s").to_string();
        assert!(
            text.starts_with("source.slot: slot 's' was confirmed up to LSN 0/300 by another consumer, past the cursor at 0/200:"),
            "{text}"
        );
    }

    #[test]
    fn a_cursor_of_another_source_is_refused() {
        let poll = Position::Poll {
            tables: BTreeMap::new(),
        };
        let start = decide(Some(poll.clone()), Some(&slot(None)), true);
        assert_eq!(start, Start::Refuse(Refusal::ForeignCursor(poll.clone())));
        let Start::Refuse(refusal) = start else {
            unreachable!()
        };
        assert_eq!(
            refusal.error("s").to_string(),
            format!(
                "the cursor holds {poll}, not a Postgres position: it belongs to another source"
            )
        );
    }

    #[test]
    fn no_cursor_with_a_snapshot_creates_the_slot_dropping_a_stale_one() {
        assert_eq!(
            decide(None, Some(&slot(Some(0x100))), true),
            Start::Snapshot { drop_stale: true }
        );
        assert_eq!(
            decide(None, None, true),
            Start::Snapshot { drop_stale: false }
        );
    }

    #[test]
    fn no_cursor_stream_only_uses_the_slot_or_creates_one() {
        assert_eq!(
            decide(None, Some(&slot(Some(0x100))), false),
            Start::FromSlot {
                confirmed_flush_lsn: Some(0x100)
            }
        );
        assert_eq!(decide(None, None, false), Start::NewSlot);
    }
}
