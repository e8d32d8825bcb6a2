//! Transforms, applied in the pipeline's reader to every batch before any
//! sink sees it (file, stdout, Kinesis, a target): per table (names may be
//! globs), a row filter, column masks, and the columns kept. They apply
//! alike to snapshot rows, streamed and polled changes, to the `before` and
//! `after` images and to the `key` block; a column absent from an image
//! (unchanged TOAST, MINIMAL row images) stays absent. Schema events list
//! only the columns kept.
//!
//! Order per change: the filter judges the raw row; the masks replace
//! values (a key column is masked alike in the key block, so partitions and
//! per-key order hold); then the columns not kept are dropped.

pub mod fake;
mod filter;
pub mod keys;
pub mod mask;
mod rendered;
pub mod tokenize;

use filter::{Filter, Route};
use mask::Technique;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tidemark_connectors::event::SourceInfo;
use tidemark_connectors::{Batch, ChangeEvent, Image, Op, Row};

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("keys.{id}: {message}")]
    Key { id: String, message: String },
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("table {table}, column {column}: {technique}: {message} (event at {position})")]
    Value {
        table: String,
        column: String,
        technique: &'static str,
        message: String,
        position: String,
    },
    #[error("table {table}: filter {message} (event at {position})")]
    Filter {
        table: String,
        message: String,
        position: String,
    },
}

/// One `[[transform]]` section, with its keys resolved.
#[derive(Debug)]
pub struct TransformSpec {
    /// `schema.table` patterns (`*` and `?` wildcards); MySQL's schema is its database.
    pub tables: Vec<String>,
    /// When set, only these columns are kept.
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
    pub filter: Option<String>,
    pub masks: Vec<(String, Technique)>,
}

/// A compiled section.
#[derive(Debug)]
struct TableRule {
    tables: Vec<String>,
    include: Option<HashSet<String>>,
    exclude: HashSet<String>,
    filter: Option<Filter>,
    masks: HashMap<String, Technique>,
}

impl TableRule {
    fn keeps(&self, column: &str) -> bool {
        !self.exclude.contains(column) && self.include.as_ref().is_none_or(|i| i.contains(column))
    }
}

/// Every configured transform, compiled once.
#[derive(Debug, Default)]
pub struct Transforms {
    rules: Vec<Arc<TableRule>>,
}

impl Transforms {
    /// Compiles the sections; an error names the config key
    /// (`transform[2].filter: …`).
    pub fn compile(specs: Vec<TransformSpec>) -> Result<Transforms, TransformError> {
        let mut rules = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let filter = match &spec.filter {
                Some(text) => {
                    Some(
                        Filter::compile(text).map_err(|message| TransformError::Config {
                            key: format!("transform[{i}].filter"),
                            message: format!("does not parse: {message}"),
                        })?,
                    )
                }
                None => None,
            };
            rules.push(Arc::new(TableRule {
                tables: spec.tables,
                include: spec.include.map(|i| i.into_iter().collect()),
                exclude: spec.exclude.into_iter().collect(),
                filter,
                masks: spec.masks.into_iter().collect(),
            }));
        }
        Ok(Transforms { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The section whose patterns match `schema.table` first.
    fn rule_of(&self, schema: &str, table: &str) -> Option<&TableRule> {
        let name = format!("{schema}.{table}");
        self.rules
            .iter()
            .find(|r| r.tables.iter().any(|p| glob(p, &name)))
            .map(|r| &**r)
    }

    /// What becomes of a source column in the events: dropped (by the
    /// include/exclude lists), kept as it is, or made text by its mask
    /// (every technique but `null` and `age` writes text).
    pub fn column_output(&self, schema: &str, table: &str, column: &str) -> ColumnOutput {
        let Some(rule) = self.rule_of(schema, table) else {
            return ColumnOutput::Same;
        };
        if !rule.keeps(column) {
            return ColumnOutput::Dropped;
        }
        match rule.masks.get(column) {
            None | Some(Technique::Null | Technique::Age { .. }) => ColumnOutput::Same,
            Some(_) => ColumnOutput::Text,
        }
    }

    /// What does not fit between the transform of `schema.table` and the
    /// table's `(column, data type)` list: a named column the table lacks, a
    /// technique its column's type cannot take. One line each, for `check`
    /// and the start.
    pub fn problems(&self, schema: &str, table: &str, columns: &[(String, String)]) -> Vec<String> {
        let name = format!("{schema}.{table}");
        let Some(rule) = self.rule_of(schema, table) else {
            return Vec::new();
        };
        let type_of = |column: &str| {
            columns
                .iter()
                .find(|(c, _)| c == column)
                .map(|(_, t)| t.as_str())
        };
        let mut problems = Vec::new();
        let mut named: Vec<(&str, &str)> = rule
            .masks
            .iter()
            .map(|(c, t)| (c.as_str(), t.name()))
            .collect();
        named.extend(
            rule.include
                .iter()
                .flatten()
                .map(|c| (c.as_str(), "include")),
        );
        named.extend(rule.exclude.iter().map(|c| (c.as_str(), "exclude")));
        named.sort_unstable();
        for (column, what) in named {
            match (type_of(column), rule.masks.get(column)) {
                (None, _) => problems.push(format!(
                    "transform: table {name} has no column {column:?} ({what})"
                )),
                (Some(data_type), Some(technique)) => {
                    if let Err(why) = fits(technique, data_type) {
                        problems.push(format!("transform: table {name}, column {column}: {why}"));
                    }
                }
                (Some(_), None) => {}
            }
        }
        problems
    }
}

/// See [`Transforms::column_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnOutput {
    Dropped,
    Same,
    Text,
}

/// Whether a column of `data_type` (as `information_schema` names it) can
/// take the technique: `age` needs a date or timestamp, the others that
/// read text need a scalar (not JSON, not an array).
fn fits(technique: &Technique, data_type: &str) -> Result<(), String> {
    let lower = data_type.to_ascii_lowercase();
    match technique {
        Technique::Null => Ok(()),
        Technique::Age { .. } if lower.contains("date") || lower.contains("timestamp") => Ok(()),
        Technique::Age { .. } => Err(format!(
            "age needs a date or timestamp column, and this one is {data_type}"
        )),
        other if matches!(lower.as_str(), "json" | "jsonb" | "array") => Err(format!(
            "{} needs a scalar column, and this one is {data_type}",
            other.name()
        )),
        _ => Ok(()),
    }
}

/// `(schema, table)`, shared with the events' source blocks.
type TableKey = (Arc<str>, Arc<str>);

/// The reader's side of the transforms: the rule of each table, looked up
/// once.
pub(crate) struct Transformer {
    transforms: Arc<Transforms>,
    by_table: HashMap<TableKey, Option<Arc<TableRule>>>,
}

impl Transformer {
    pub(crate) fn new(transforms: Arc<Transforms>) -> Self {
        Transformer {
            transforms,
            by_table: HashMap::new(),
        }
    }

    /// Transforms a batch in place. Its `end` stays: a dropped change moves
    /// no cursor boundary.
    pub(crate) fn apply(&mut self, batch: &mut Batch) -> Result<(), TransformError> {
        if self.transforms.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut batch.events);
        let mut kept = Vec::with_capacity(events.len());
        for event in events {
            match self.rule(&event.source) {
                None => kept.push(event),
                Some(rule) => kept.extend(transform(&rule, event)?),
            }
        }
        batch.events = kept;
        Ok(())
    }

    fn rule(&mut self, source: &SourceInfo) -> Option<Arc<TableRule>> {
        let rules = &self.transforms.rules;
        self.by_table
            .entry((source.schema.clone(), source.table.clone()))
            .or_insert_with(|| {
                let name = format!("{}.{}", source.schema, source.table);
                rules
                    .iter()
                    .find(|r| r.tables.iter().any(|p| glob(p, &name)))
                    .cloned()
            })
            .clone()
    }
}

/// One change through one rule; `None` when the filter drops it.
fn transform(
    rule: &TableRule,
    mut event: ChangeEvent,
) -> Result<Option<ChangeEvent>, TransformError> {
    match event.op {
        Op::Schema => {
            if let Some(columns) = &mut event.columns {
                columns.retain(|c| rule.keeps(&c.name));
            }
            return Ok(Some(event));
        }
        Op::Truncate => return Ok(Some(event)),
        _ => {}
    }
    let Some(filter) = &rule.filter else {
        mask_images(rule, &mut event)?;
        return Ok(Some(event));
    };
    // The filter reads the row's values, so the images become values.
    let mut before = event.before.take().map(|i| i.to_row().into_owned());
    let mut after = event.after.take().map(|i| i.to_row().into_owned());
    let route = filter
        .route(event.op, before.as_ref(), after.as_ref())
        .map_err(|message| TransformError::Filter {
            table: event.table_name(),
            message,
            position: event.position.to_string(),
        })?;
    match route {
        Route::Keep => {}
        Route::Drop => return Ok(None),
        Route::AsInsert => {
            event.op = Op::Create;
            before = None;
        }
        Route::AsDelete => {
            event.op = Op::Delete;
            after = None;
        }
    }
    event.before = before.map(Image::Values);
    event.after = after.map(Image::Values);
    mask_images(rule, &mut event)?;
    Ok(Some(event))
}

/// The masks and column list on the images and the key block; a rendered
/// image is rewritten as JSON text (see `rendered`).
fn mask_images(rule: &TableRule, event: &mut ChangeEvent) -> Result<(), TransformError> {
    // The row's identity for `age`: its key before masking (read only when
    // a column is aged).
    let aged = rule
        .masks
        .values()
        .any(|t| matches!(t, Technique::Age { .. }));
    let seed = match (&event.key, aged) {
        (Some(key), true) => serde_json::to_vec(&key.0).unwrap_or_default(),
        _ => Vec::new(),
    };
    // Captures `source` and `position` only (disjoint from the images).
    let fail = |column: &str, technique: &'static str, message: String| TransformError::Value {
        table: format!("{}.{}", event.source.schema, event.source.table),
        column: column.to_string(),
        technique,
        message,
        position: event.position.to_string(),
    };
    for image in [event.before.as_mut(), event.after.as_mut()]
        .into_iter()
        .flatten()
    {
        match image {
            Image::Values(row) => mask_row(rule, row, &seed, &fail)?,
            Image::Json(bytes) => {
                *bytes = rendered::rewrite(rule, bytes, &seed)
                    .map_err(|(column, technique, message)| fail(&column, technique, message))?;
            }
        }
    }
    if let Some(key) = event.key.as_mut() {
        mask_row(rule, key, &seed, &fail)?;
    }
    event.unchanged.retain(|name| rule.keeps(name));
    if event.key.as_ref().is_some_and(|k| k.0.is_empty()) {
        event.key = None;
    }
    Ok(())
}

/// The masks, then the column list, on one row of values.
fn mask_row(
    rule: &TableRule,
    row: &mut Row,
    seed: &[u8],
    fail: &impl Fn(&str, &'static str, String) -> TransformError,
) -> Result<(), TransformError> {
    for (name, value) in row.0.iter_mut() {
        if let Some(technique) = rule.masks.get(&**name) {
            *value = technique
                .apply(value, seed)
                .map_err(|message| fail(name, technique.name(), message))?;
        }
    }
    row.0.retain(|(name, _)| rule.keeps(name));
    Ok(())
}

/// `*` (any run of characters) and `?` (one character) over a table name.
/// Written here: the patterns are table names, and a glob crate would bring
/// path semantics (`/`, `**`) they do not have.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests;
