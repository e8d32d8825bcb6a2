//! A captured table's name, `schema.table` (`database.table` for MySQL), one
//! type for every engine: the log connectors, their snapshots and the poll
//! source all name tables with it.

use std::fmt;
use std::sync::Arc;

/// `schema.table`, as configured and as logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Arc<str>,
    pub table: Arc<str>,
}

impl TableName {
    pub fn new(schema: &str, table: &str) -> Self {
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Parses `schema.table`, or `table` in schema `public`.
    pub fn parse(text: &str) -> Option<Self> {
        let (schema, table) = text.split_once('.').unwrap_or(("public", text));
        let valid = |s: &str| !s.is_empty() && !s.contains('.');
        (valid(schema) && valid(table)).then(|| TableName::new(schema, table))
    }

    /// The double-quoted SQL form.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            crate::sql::postgres::quote_ident(&self.schema),
            crate::sql::postgres::quote_ident(&self.table)
        )
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_with_default_schema() {
        assert_eq!(
            TableName::parse("orders"),
            Some(TableName::new("public", "orders"))
        );
        assert_eq!(
            TableName::parse("shop.orders").map(|t| t.to_string()),
            Some("shop.orders".into())
        );
        assert_eq!(TableName::parse("a.b.c"), None);
        assert_eq!(
            TableName::new("s", "we\"ird").quoted(),
            "\"s\".\"we\"\"ird\""
        );
    }
}
