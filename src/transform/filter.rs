//! The row filter: a CEL expression (the `cel` crate) over the
//! row's columns (`row.<column>`) and the change's `op` (`"c"`, `"u"`,
//! `"d"`, `"r"`). A row is in when the expression is true.
//!
//! An update can move a row across the filter, and a consumer that keeps
//! only the rows in must hear of it: an update whose old row was in and new
//! row is out becomes a delete (with the old row); one whose old row was out
//! and new row is in becomes an insert (with the new row). Where the old row
//! is not known (Postgres without `REPLICA IDENTITY FULL` sends only its
//! key), an update out of the filter becomes a delete, and one into it stays
//! an update: a consumer may so see a delete of a row it never had, never
//! miss one.

use cel::{Context, Program, Value};
use serde_json::Map;
use tidemark_connectors::{Op, Row};

/// A compiled filter.
pub(crate) struct Filter {
    text: String,
    program: Program,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({:?})", self.text)
    }
}

/// What becomes of a change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Keep,
    Drop,
    /// An update into the filter: emitted as an insert.
    AsInsert,
    /// An update out of the filter: emitted as a delete.
    AsDelete,
}

impl Filter {
    /// Compiles `text`; the error is the parser's, on one line.
    pub(crate) fn compile(text: &str) -> Result<Filter, String> {
        let program = Program::compile(text).map_err(|e| e.to_string().replace('\n', " "))?;
        Ok(Filter {
            text: text.to_string(),
            program,
        })
    }

    /// Where a change goes, given its images (before the masks).
    pub(crate) fn route(
        &self,
        op: Op,
        before: Option<&Row>,
        after: Option<&Row>,
    ) -> Result<Route, String> {
        let within = |row: Option<&Row>| row.map(|row| self.matches(op, row)).transpose();
        Ok(match op {
            Op::Create | Op::Read => keep_if(within(after)?.unwrap_or(true)),
            // A delete's old row may be only its key: what cannot be judged is kept.
            Op::Delete => keep_if(
                self.matches(op, before.unwrap_or(&Row::default()))
                    .unwrap_or(true),
            ),
            Op::Update => {
                let was = before.and_then(|row| self.matches(op, row).ok());
                match (was, within(after)?.unwrap_or(true)) {
                    (Some(false), true) => Route::AsInsert,
                    (Some(false), false) => Route::Drop,
                    (_, true) => Route::Keep,
                    (_, false) => Route::AsDelete,
                }
            }
            Op::Truncate | Op::Schema => Route::Keep,
        })
    }

    fn matches(&self, op: Op, row: &Row) -> Result<bool, String> {
        let mut context = Context::default();
        let columns: Map<String, serde_json::Value> = row
            .0
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        context
            .add_variable("row", columns)
            .map_err(|e| e.to_string())?;
        context
            .add_variable("op", op.code())
            .map_err(|e| e.to_string())?;
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "{:?} gives {other:?}, not true or false",
                self.text
            )),
            Err(e) => Err(format!("{:?}: {e}", self.text)),
        }
    }
}

fn keep_if(within: bool) -> Route {
    if within {
        Route::Keep
    } else {
        Route::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn row(country: &str) -> Row {
        Row(vec![
            (Arc::from("id"), json!(1)),
            (Arc::from("country"), json!(country)),
        ])
    }

    #[test]
    fn updates_across_the_filter_become_inserts_and_deletes() {
        let f = Filter::compile("row.country == 'DE'").expect("compiles");
        let (de, fr) = (row("DE"), row("FR"));
        assert_eq!(f.route(Op::Create, None, Some(&de)), Ok(Route::Keep));
        assert_eq!(f.route(Op::Create, None, Some(&fr)), Ok(Route::Drop));
        assert_eq!(f.route(Op::Update, Some(&de), Some(&de)), Ok(Route::Keep));
        assert_eq!(
            f.route(Op::Update, Some(&fr), Some(&de)),
            Ok(Route::AsInsert)
        );
        assert_eq!(
            f.route(Op::Update, Some(&de), Some(&fr)),
            Ok(Route::AsDelete)
        );
        assert_eq!(f.route(Op::Update, Some(&fr), Some(&fr)), Ok(Route::Drop));
        // Old row unknown (key only): out becomes a delete, in stays an update.
        let key = Row(vec![(Arc::from("id"), json!(1))]);
        assert_eq!(
            f.route(Op::Update, Some(&key), Some(&fr)),
            Ok(Route::AsDelete)
        );
        assert_eq!(f.route(Op::Update, None, Some(&de)), Ok(Route::Keep));
        assert_eq!(f.route(Op::Delete, Some(&key), None), Ok(Route::Keep));
        assert_eq!(f.route(Op::Delete, Some(&fr), None), Ok(Route::Drop));
    }

    #[test]
    fn op_is_visible_and_bad_expressions_are_refused() {
        let f = Filter::compile("op != 'd'").expect("compiles");
        assert_eq!(f.route(Op::Delete, Some(&row("DE")), None), Ok(Route::Drop));
        assert!(Filter::compile("row.country ==").is_err());
        let not_bool = Filter::compile("row.id + 1").expect("compiles");
        assert!(not_bool.route(Op::Create, None, Some(&row("DE"))).is_err());
    }
}
