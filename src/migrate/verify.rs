//! `migrate verify`: row counts and chunked checksums of every table on both
//! sides, computed in SQL over the same key ranges with the same canonical text
//! per type (see `db::Db::canonical`), so they compare across engines. A chunk
//! whose checksums differ is compared row by row, and the keys at fault are
//! reported.

use super::db::Db;
use super::{MigrateError, Migration};
use serde::Serialize;
use std::collections::BTreeMap;

/// At most this many keys are listed per kind of difference.
const LISTED: usize = 20;

#[derive(Debug, Default, Serialize)]
pub struct TableReport {
    pub source: String,
    pub target: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub chunks: usize,
    pub mismatched_chunks: usize,
    /// Keys (as text, `|`-joined) missing on the target, only there, or different.
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub different: Vec<String>,
    pub problems: Vec<String>,
}

impl TableReport {
    pub fn equal(&self) -> bool {
        self.source_rows == self.target_rows
            && self.mismatched_chunks == 0
            && self.problems.is_empty()
    }

    pub fn line(&self) -> String {
        if self.equal() {
            return format!(
                "ok {} -> {}: {} rows, {} chunks equal",
                self.source, self.target, self.source_rows, self.chunks
            );
        }
        let mut line = format!(
            "MISMATCH {} -> {}: source {} rows, target {} rows, {} of {} chunks differ",
            self.source,
            self.target,
            self.source_rows,
            self.target_rows,
            self.mismatched_chunks,
            self.chunks
        );
        for (what, keys) in [
            ("missing on target", &self.missing),
            ("only on target", &self.extra),
            ("different", &self.different),
        ] {
            if !keys.is_empty() {
                line.push_str(&format!("; {what}: key {}", keys.join(", key ")));
            }
        }
        for problem in &self.problems {
            line.push_str(&format!("; {problem}"));
        }
        line
    }
}

/// Compares every table of the migration; one report per table.
pub async fn verify(plan: &Migration) -> Result<Vec<TableReport>, MigrateError> {
    let mut source_db = Db::connect(&plan.source_url).await?;
    let mut target_db = Db::connect(&plan.target_url).await?;
    let default_schema = target_db.current_schema().await?;
    let mut reports = Vec::new();
    for names in &plan.tables {
        let target_names = plan.target_of(names, &default_schema);
        let mut report = TableReport {
            source: format!("{}.{}", names.0, names.1),
            target: format!("{}.{}", target_names.0, target_names.1),
            ..TableReport::default()
        };
        let source = source_db.describe(&names.0, &names.1).await?;
        let target = target_db.describe(&target_names.0, &target_names.1).await?;
        let (Some(source), Some(mut target)) = (source, target) else {
            report.problems.push("table missing on one side".into());
            reports.push(report);
            continue;
        };
        let columns: Vec<String> = source.columns.iter().map(|c| c.name.clone()).collect();
        let missing_columns: Vec<&String> = columns
            .iter()
            .filter(|c| target.column(c).is_none())
            .collect();
        if !missing_columns.is_empty() {
            report.problems.push(format!(
                "columns missing on the target: {missing_columns:?}"
            ));
            reports.push(report);
            continue;
        }
        // Ranges are cut on the source key; the target's key types are used
        // for its side of the comparison.
        target.key = source.key.clone();
        let bounds = source_db.chunk_bounds(&source, plan.chunk_rows).await?;
        report.chunks = bounds.len() + 1;
        for i in 0..=bounds.len() {
            let lo = i.checked_sub(1).map(|p| bounds[p].as_slice());
            let hi = bounds.get(i).map(|b| b.as_slice());
            let (source_rows, source_sum) = source_db.checksum(&source, &columns, lo, hi).await?;
            let (target_rows, target_sum) = target_db.checksum(&target, &columns, lo, hi).await?;
            report.source_rows += source_rows;
            report.target_rows += target_rows;
            if (source_rows, &source_sum) == (target_rows, &target_sum) {
                continue;
            }
            report.mismatched_chunks += 1;
            let ours = source_db.row_hashes(&source, &columns, lo, hi).await?;
            let theirs = target_db.row_hashes(&target, &columns, lo, hi).await?;
            list_differences(&mut report, &ours, &theirs);
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Adds the keys at fault in one chunk to `report`, at most [`LISTED`] of each
/// kind: missing on the target, only on the target, hashed differently.
fn list_differences(
    report: &mut TableReport,
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) {
    for (key, hash) in ours {
        match theirs.get(key) {
            None if report.missing.len() < LISTED => report.missing.push(key.clone()),
            Some(other) if other != hash && report.different.len() < LISTED => {
                report.different.push(key.clone())
            }
            _ => {}
        }
    }
    for key in theirs.keys() {
        if !ours.contains_key(key) && report.extra.len() < LISTED {
            report.extra.push(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, h)| (k.to_string(), h.to_string()))
            .collect()
    }

    #[test]
    fn differences_are_sorted_by_kind() {
        let mut report = TableReport::default();
        list_differences(
            &mut report,
            &hashes(&[("1", "a"), ("2", "b"), ("3", "c")]),
            &hashes(&[("2", "b"), ("3", "x"), ("4", "d")]),
        );
        assert_eq!(report.missing, ["1"]);
        assert_eq!(report.different, ["3"]);
        assert_eq!(report.extra, ["4"]);
    }

    #[test]
    fn at_most_listed_keys_of_a_kind_are_kept() {
        let mut report = TableReport::default();
        let ours: BTreeMap<String, String> = (0..LISTED + 5)
            .map(|i| (format!("{i:03}"), "h".to_string()))
            .collect();
        list_differences(&mut report, &ours, &BTreeMap::new());
        list_differences(&mut report, &ours, &BTreeMap::new());
        assert_eq!(report.missing.len(), LISTED);
        assert_eq!(report.missing[0], "000");
        assert!(report.extra.is_empty() && report.different.is_empty());
    }
}
