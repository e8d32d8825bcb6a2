//! After a crash the sink may already hold events past the cursor (written,
//! not yet committed): the window of those events, and the skip that drops
//! them from the replayed batches.

use std::cmp::Ordering;
use tidemark_connectors::{Batch, Position, PositionKey};

/// Where the sink's own replay skip applies after a crash: events after the
/// cursor and at or before the sink's last line were written before and are
/// dropped. Only when the cursor and that line are of the same log, and the
/// line lies past the cursor (the sink says which source wrote it: a line of
/// another source is not offered, see `FileSink::open`). Polled positions are
/// never skipped here: the poll source tells repeats itself.
#[derive(Debug)]
pub(crate) struct ReplayWindow {
    cursor: PositionKey,
    last_written: PositionKey,
}

impl ReplayWindow {
    pub(crate) fn new(cursor: Option<&Position>, last_written: Option<&str>) -> Option<Self> {
        let cursor = cursor?.key();
        let last_written = match PositionKey::parse(last_written?) {
            Ok(key) => key?,
            Err(e) => {
                tracing::warn!("the sink's last line has {e}: nothing is skipped as a replay");
                return None;
            }
        };
        (last_written.partial_cmp(&cursor) == Some(Ordering::Greater)).then_some(ReplayWindow {
            cursor,
            last_written,
        })
    }

    fn holds(&self, position: &Position) -> bool {
        let key = position.key();
        key.partial_cmp(&self.cursor) == Some(Ordering::Greater)
            && matches!(
                key.partial_cmp(&self.last_written),
                Some(Ordering::Less | Ordering::Equal)
            )
    }
}

/// Drops the events the sink already holds from before a crash (see
/// [`ReplayWindow`]) and returns how many; once an event past the window
/// comes, the window is closed and nothing more is checked.
pub(crate) fn skip_written(batch: &mut Batch, window: &mut Option<ReplayWindow>) -> u64 {
    let Some(replay) = window.as_ref() else {
        return 0;
    };
    let before = batch.events.len();
    let mut passed = false;
    batch.events.retain(|e| {
        let keep = !replay.holds(&e.position);
        passed |= keep;
        keep
    });
    if passed {
        *window = None;
    }
    (before - batch.events.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::doubles::batch;

    #[test]
    fn a_replay_of_rows_sharing_an_lsn_skips_only_those_written() {
        // One COPY: rows 1..=5 share the LSN 0x400; rows 1..=3 reached the sink.
        let cursor = Position::postgres(0x300, 0x320);
        let last = Position::postgres_change(0x500, 0x400, 3).to_string();
        let mut window = ReplayWindow::new(Some(&cursor), Some(&last));
        let mut replayed = batch((1..=5).map(|seq| Position::postgres_change(0x500, 0x400, seq)));
        assert_eq!(skip_written(&mut replayed, &mut window), 3);
        let kept: Vec<String> = replayed
            .events
            .iter()
            .map(|e| e.position.to_string())
            .collect();
        assert_eq!(
            kept,
            [4, 5].map(|seq| Position::postgres_change(0x500, 0x400, seq).to_string())
        );
        assert!(window.is_none());
    }

    #[test]
    fn nothing_is_skipped_without_a_cursor_or_behind_it() {
        let last = Position::postgres_change(0x900, 0x800, 1).to_string();
        // No cursor (reset): a new snapshot or stream is written whole.
        assert!(ReplayWindow::new(None, Some(&last)).is_none());
        // A cursor past the sink's last line: nothing there to skip.
        let ahead = Position::postgres(0x1000, 0x1000);
        assert!(ReplayWindow::new(Some(&ahead), Some(&last)).is_none());
        // Another log's line, or a polled one, is never compared.
        let binlog = Position::Mysql {
            file: "bin.000001".into(),
            pos: 4,
            row: None,
            gtid: None,
        };
        assert!(ReplayWindow::new(Some(&binlog), Some(&last)).is_none());
        assert!(ReplayWindow::new(
            Some(&Position::postgres(1, 1)),
            Some("poll:public.t=2026-11-21T00:00:00.000000Z:1")
        )
        .is_none());
    }
}
