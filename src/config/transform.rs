//! `[keys]` and `[[transform]]`: masking keys by id, and per-table filters,
//! masks and column lists, compiled once into `transform::Transforms` (see
//! that module and `config/README.md`).

use super::{invalid, ConfigError};
use crate::transform::fake::FakeKind;
use crate::transform::keys::KeyRing;
use crate::transform::mask::{Encoding, Technique};
use crate::transform::{TransformError, TransformSpec, Transforms};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The most days `age` may shift a date by (a hundred years).
const MAX_AGE_DAYS: u32 = 36_500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTransform {
    tables: Vec<String>,
    include: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    filter: Option<String>,
    #[serde(default)]
    mask: BTreeMap<String, RawMask>,
}

/// A column's technique as written: `{ technique = "hash", key = "k1" }`.
#[derive(Deserialize)]
#[serde(tag = "technique", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawMask {
    Null,
    Hash {
        key: String,
        #[serde(default)]
        encoding: Encoding,
    },
    Encrypt {
        key: String,
    },
    Tokenize {
        key: String,
    },
    Substitute {
        key: String,
        kind: FakeKind,
    },
    Age {
        key: String,
        days: u32,
    },
    Scramble {
        key: String,
    },
}

/// The keys, then every section, checked with the key at fault named.
pub(super) fn parse(
    keys: &BTreeMap<String, String>,
    raw: Vec<RawTransform>,
) -> Result<(KeyRing, Arc<Transforms>), ConfigError> {
    let ring = KeyRing::parse(keys).map_err(config_error)?;
    let specs = raw
        .into_iter()
        .enumerate()
        .map(|(i, section)| spec(&ring, i, section))
        .collect::<Result<Vec<_>, _>>()?;
    let transforms = Transforms::compile(specs).map_err(config_error)?;
    Ok((ring, Arc::new(transforms)))
}

fn spec(ring: &KeyRing, i: usize, raw: RawTransform) -> Result<TransformSpec, ConfigError> {
    let at = format!("transform[{i}]");
    if raw.tables.is_empty() || raw.tables.iter().any(|t| !t.contains('.')) {
        return Err(invalid(
            &format!("{at}.tables"),
            "list the tables as schema.table (MySQL: database.table), `*` and `?` allowed",
        ));
    }
    if let Some(column) = raw
        .include
        .iter()
        .flatten()
        .find(|c| raw.exclude.contains(c))
    {
        return Err(invalid(
            &format!("{at}.exclude"),
            format!("column {column:?} is both included and excluded"),
        ));
    }
    let masks = raw
        .mask
        .into_iter()
        .map(|(column, mask)| {
            let technique = technique(ring, &format!("{at}.mask.{column}"), mask)?;
            Ok((column, technique))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(TransformSpec {
        tables: raw.tables,
        include: raw.include,
        exclude: raw.exclude,
        filter: raw.filter,
        masks,
    })
}

fn technique(ring: &KeyRing, at: &str, raw: RawMask) -> Result<Technique, ConfigError> {
    let key = |id: &str| {
        ring.get(id).cloned().ok_or_else(|| {
            invalid(
                &format!("{at}.key"),
                format!(
                    "no key {id:?} in [keys] (keys: {})",
                    ring.ids().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    Ok(match raw {
        RawMask::Null => Technique::Null,
        RawMask::Hash { key: id, encoding } => Technique::Hash {
            key: key(&id)?,
            encoding,
        },
        RawMask::Encrypt { key: id } => Technique::Encrypt { key: key(&id)? },
        RawMask::Tokenize { key: id } => Technique::Tokenize { key: key(&id)? },
        RawMask::Substitute { key: id, kind } => Technique::Substitute {
            key: key(&id)?,
            kind,
        },
        RawMask::Age { key: id, days } => {
            if !(1..=MAX_AGE_DAYS).contains(&days) {
                return Err(invalid(
                    &format!("{at}.days"),
                    format!("must be between 1 and {MAX_AGE_DAYS}"),
                ));
            }
            Technique::Age {
                key: key(&id)?,
                days,
            }
        }
        RawMask::Scramble { key: id } => Technique::Scramble { key: key(&id)? },
    })
}

fn config_error(e: TransformError) -> ConfigError {
    match e {
        TransformError::Config { key, message } => invalid(&key, message),
        other => invalid("keys", other.to_string()),
    }
}
