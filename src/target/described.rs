//! Target tables as both writers describe them: read from the target's
//! catalog once per source table and kept, and the errors naming a table the
//! target lacks or one without a primary key.

use super::plan::TableKey;
use super::{TableMap, TargetError, TargetTable};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// The target table for a source table: the one kept in `tables`, else the
/// one `describe` reads (given the target's schema and table name; `None`
/// when the table does not exist), then kept.
pub(crate) async fn cached<F, Fut>(
    tables: &mut HashMap<TableKey, Arc<TargetTable>>,
    map: &TableMap,
    source: &TableKey,
    describe: F,
) -> Result<Arc<TargetTable>, TargetError>
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = Result<Option<TargetTable>, TargetError>>,
{
    if let Some(table) = tables.get(source) {
        return Ok(table.clone());
    }
    let (schema, name) = map.resolve(source);
    let described = describe(schema.clone(), name.clone()).await?;
    let table = Arc::new(described.ok_or_else(|| missing(&schema, &name, source))?);
    tables.insert(source.clone(), table.clone());
    Ok(table)
}

/// The target has no table `schema.name` for `source`.
fn missing(schema: &str, name: &str, source: &TableKey) -> TargetError {
    TargetError::Table {
        table: format!("{schema}.{name}"),
        message: format!(
            "does not exist on the target (source table {source}; create it, or map it in [target.tables])"
        ),
    }
}

/// The target table `quoted` has no primary key.
pub(crate) fn no_primary_key(quoted: String) -> TargetError {
    TargetError::Table {
        table: quoted,
        message: "has no primary key on the target: changes cannot be applied idempotently".into(),
    }
}
