//! One batch written the same way by both writers, inside a transaction the
//! writer began: the stored position read (its row locked) and checked
//! first, then the steps in order (a move whose old row is not on the target
//! writes what the event has instead), then the batch's position recorded.
//! The writer commits; its own client runs every statement.

use super::bookkeeping::check_progress;
use super::plan::{Step, TableKey};
use super::refusal::Boxed;
use super::{AppliedSpan, TargetError, TargetTable};
use std::sync::Arc;
use tidemark_connectors::ChangeEvent;

/// A writer with a transaction open, as [`write_batch`] uses it.
pub(crate) trait BatchWriter {
    /// One statement as the writer runs it.
    type Sql;

    /// The stored position of `scope`, its row locked until the transaction
    /// ends.
    fn locked_position<'a>(
        &'a mut self,
        scope: &'a str,
    ) -> Boxed<'a, Result<Option<String>, TargetError>>;

    /// Stores `last` as the applied position of `scope`.
    fn record_position<'a>(
        &'a mut self,
        scope: &'a str,
        last: &'a str,
    ) -> Boxed<'a, Result<(), TargetError>>;

    /// The target table a source table's rows go to.
    fn find_table<'a>(
        &'a mut self,
        source: &'a TableKey,
    ) -> Boxed<'a, Result<Arc<TargetTable>, TargetError>>;

    /// Makes the target table of `source` match a schema-change event.
    fn change_schema<'a>(
        &'a mut self,
        source: &'a TableKey,
        event: &'a ChangeEvent,
    ) -> Boxed<'a, Result<(), TargetError>>;

    /// The statements for one step, and the number of rows it writes.
    fn statements_for(
        step: &Step,
        table: &TargetTable,
    ) -> Result<(Vec<Self::Sql>, u64), TargetError>;

    /// Runs one statement into `table`; returns the rows it wrote.
    fn write_sql<'a>(
        &'a mut self,
        table: &'a TargetTable,
        sql: &'a Self::Sql,
    ) -> Boxed<'a, Result<u64, TargetError>>;
}

/// Writes `steps` in the writer's open transaction, with `progress` when
/// given (checked by [`check_progress`] before the rows, recorded after
/// them). Returns the rows written; while a step is written, `failed` is its
/// index.
pub(crate) async fn write_batch<W: BatchWriter>(
    writer: &mut W,
    steps: &[Step],
    progress: Option<AppliedSpan<'_>>,
    failed: &mut Option<usize>,
) -> Result<u64, TargetError> {
    if let Some(p) = &progress {
        let stored = writer.locked_position(p.scope).await?;
        check_progress(stored, p)?;
    }
    let mut rows = 0;
    for (index, step) in steps.iter().enumerate() {
        *failed = Some(index);
        rows += write_step(writer, step).await?;
    }
    *failed = None;
    if let Some(p) = progress {
        writer.record_position(p.scope, p.last).await?;
    }
    Ok(rows)
}

/// Writes one step; returns the rows it counts.
async fn write_step<W: BatchWriter>(writer: &mut W, step: &Step) -> Result<u64, TargetError> {
    if let Step::Schema { table, event } = step {
        writer.change_schema(table, event).await?;
        return Ok(0);
    }
    let source = step.table();
    let table = writer.find_table(source).await?;
    let (statements, count) = W::statements_for(step, &table)?;
    for (i, sql) in statements.iter().enumerate() {
        let written = writer.write_sql(&table, sql).await?;
        if let (
            0,
            0,
            Step::Move {
                columns,
                row,
                position,
                ..
            },
        ) = (i, written, step)
        {
            // The old row is not on the target: write what the event has.
            let upsert = Step::Upsert {
                table: source.clone(),
                columns: columns.clone(),
                rows: vec![row.clone()],
                positions: vec![position.clone()],
            };
            for sql in W::statements_for(&upsert, &table)?.0 {
                writer.write_sql(&table, &sql).await?;
            }
        }
    }
    Ok(count)
}
