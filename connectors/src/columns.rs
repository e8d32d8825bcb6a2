//! The columns of source tables with their types, read from
//! `information_schema.columns` (both engines have it), so that what a
//! config names (transforms) can be checked against the tables before
//! anything is read.

use crate::sql::Dialect;
use crate::SourceError;
use mysql_async::prelude::Queryable;

/// `(column, data type)` per table, in table order; a table that does not
/// exist has no columns.
pub async fn table_columns(
    url: &str,
    tables: &[(String, String)],
) -> Result<Vec<Vec<(String, String)>>, SourceError> {
    if Dialect::of_url(url) == Some(Dialect::Mysql) {
        let mut conn = crate::mysql::connect(url).await?;
        let mut out = Vec::new();
        for (schema, table) in tables {
            let columns: Vec<(String, String)> = conn
                .exec(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                    (schema, table),
                )
                .await
                .map_err(crate::mysql::my_error(format!("read the columns of {schema}.{table}")))?;
            out.push(columns);
        }
        let _ = conn.disconnect().await;
        return Ok(out);
    }
    let client = crate::postgres::catalog::connect(&crate::postgres::parse_url(url)?).await?;
    let mut out = Vec::new();
    for (schema, table) in tables {
        let what = format!("read the columns of {schema}.{table}");
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[schema, table],
            )
            .await
            .map_err(|source| SourceError::Postgres {
                what: what.clone(),
                source,
            })?;
        let mut columns = Vec::new();
        for row in &rows {
            columns.push((
                crate::postgres::catalog::column(row, 0, &what)?,
                crate::postgres::catalog::column(row, 1, &what)?,
            ));
        }
        out.push(columns);
    }
    Ok(out)
}
