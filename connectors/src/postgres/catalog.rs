//! Catalog queries over an ordinary (non-replication) connection: the pre-flight
//! checks shared by `tidemark check` and `tidemark run`, table and key lookups,
//! and the value kind of user-defined types.

use super::tls::{self, PgUrl};
use super::values::ValueKind;
use super::TableName;
use crate::SourceError;
use std::collections::HashMap;
use tokio_postgres::{Client, Row};

/// Session settings that make value text forms predictable (see `values`).
pub(crate) const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO -c bytea_output=hex -c extra_float_digits=1 -c IntervalStyle=postgres -c standard_conforming_strings=on";

fn query_error(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
    let what = what.into();
    move |source| SourceError::Postgres { what, source }
}

/// Column `i` of a catalog row: a NULL or a type the query did not promise (a
/// hostile or odd server) is an error naming what was read, never a panic.
pub(crate) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
    what: &str,
) -> Result<T, SourceError> {
    row.try_get(i).map_err(query_error(what))
}

/// Opens an ordinary connection with the pinned session settings (and the
/// URL's TLS settings).
pub async fn connect(url: &PgUrl) -> Result<Client, SourceError> {
    let mut config = url.config.clone();
    config.options(SESSION_OPTIONS);
    // `migrate cutover --fence` spares sessions named so.
    if config.get_application_name().is_none() {
        config.application_name("tidemark");
    }
    let tls = url
        .tls_config()
        .map_err(|e| SourceError::Setup(format!("source.url: {e}")))?;
    url.refuse_cleartext(false)
        .await
        .map_err(|e| SourceError::Setup(format!("source.url: {e}")))?;
    tls::connect(&config, tls, "catalog")
        .await
        .map_err(query_error("connect to the source"))
}

/// A captured table's shape, as the snapshot needs it.
#[derive(Debug, Clone)]
pub struct TableShape {
    pub name: TableName,
    /// Published columns in table order: name and type OID.
    pub columns: Vec<(String, u32)>,
    /// Primary-key columns, in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    /// Planner's row estimate.
    pub estimated_rows: i64,
}

/// Reads a table's columns and primary key; `None` when it does not exist.
pub async fn table_shape(
    client: &Client,
    table: &TableName,
) -> Result<Option<TableShape>, SourceError> {
    let qualified = table.quoted();
    let Some(row) = client
        .query_opt(
            "SELECT c.oid, c.reltuples::int8 FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&qualified],
        )
        .await
        .map_err(query_error(format!("look up table {table}")))?
    else {
        return Ok(None);
    };
    let what = format!("read the catalog entry of {table}");
    let oid: u32 = column(&row, 0, &what)?;
    let estimated_rows: i64 = column(&row, 1, &what)?;
    let columns = client
        .query(
            "SELECT attname::text, atttypid FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
             ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(query_error(format!("read the columns of {table}")))?
        .iter()
        .map(|r| Ok((column(r, 0, &what)?, column(r, 1, &what)?)))
        .collect::<Result<_, SourceError>>()?;
    Ok(Some(TableShape {
        name: table.clone(),
        columns,
        primary_key: primary_key(client, oid).await?,
        estimated_rows: estimated_rows.max(0),
    }))
}

/// The primary-key column names of a relation, in key order.
pub(crate) async fn primary_key(client: &Client, relid: u32) -> Result<Vec<String>, SourceError> {
    client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1 AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&relid],
        )
        .await
        .map_err(query_error(format!(
            "read the primary key of relation {relid}"
        )))?
        .iter()
        .map(|r| column(r, 0, "read a primary-key column"))
        .collect()
}

/// Resolves value kinds by type OID, asking the catalog for non-built-in types
/// (enums, domains, arrays of those) once each.
#[derive(Default)]
pub struct TypeKinds {
    cache: HashMap<u32, ValueKind>,
}

impl TypeKinds {
    pub async fn kind(&mut self, client: &Client, oid: u32) -> Result<ValueKind, SourceError> {
        if let Some(kind) = ValueKind::builtin(oid).or_else(|| self.cache.get(&oid).cloned()) {
            return Ok(kind);
        }
        let mut current = oid;
        let mut wrappers = 0usize;
        // Domains resolve to their base type, arrays to their element's kind.
        let kind = loop {
            if let Some(kind) = ValueKind::builtin(current) {
                break kind;
            }
            let row = client
                .query_opt(
                    "SELECT typtype::text, typelem, typbasetype, typcategory::text FROM pg_type WHERE oid = $1",
                    &[&current],
                )
                .await
                .map_err(query_error(format!("look up type {current}")))?;
            let Some(row) = row else {
                break ValueKind::Text;
            };
            let what = format!("read type {current}");
            let (typtype, elem, base, category): (String, u32, u32, String) = (
                column(&row, 0, &what)?,
                column(&row, 1, &what)?,
                column(&row, 2, &what)?,
                column(&row, 3, &what)?,
            );
            if typtype == "d" {
                current = base;
            } else if category == "A" && elem != 0 {
                wrappers += 1;
                current = elem;
            } else {
                break ValueKind::Text;
            }
        };
        let kind = (0..wrappers).fold(kind, |k, _| ValueKind::Array(Box::new(k)));
        self.cache.insert(oid, kind.clone());
        Ok(kind)
    }
}

/// `format_type` of a column, for schema-change events.
pub async fn type_name(client: &Client, oid: u32, modifier: i32) -> Result<String, SourceError> {
    let row = client
        .query_one("SELECT format_type($1, $2)", &[&oid, &modifier])
        .await
        .map_err(query_error(format!("name type {oid}")))?;
    column(&row, 0, &format!("name type {oid}"))
}

/// A replication slot as the server lists it.
#[derive(Debug, Clone)]
pub(crate) struct SlotState {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active: bool,
    pub confirmed_flush_lsn: Option<u64>,
}

pub(crate) async fn slot_state(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotState>, SourceError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, active, confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(query_error(format!("look up replication slot {slot}")))?;
    let what = format!("read replication slot {slot}");
    row.map(|r| {
        Ok(SlotState {
            plugin: column(&r, 0, &what)?,
            database: column(&r, 1, &what)?,
            active: column(&r, 2, &what)?,
            confirmed_flush_lsn: column::<Option<String>>(&r, 3, &what)?
                .and_then(|t| crate::event::parse_lsn(&t)),
        })
    })
    .transpose()
}

/// What a publication holds.
pub(crate) struct Publication {
    /// `schema.table` of each table.
    pub tables: Vec<String>,
    /// `FOR ALL TABLES`: tables created later join it.
    pub all_tables: bool,
}

/// The tables a publication holds; `None` when it does not exist.
pub(crate) async fn publication_tables(
    client: &Client,
    publication: &str,
) -> Result<Option<Publication>, SourceError> {
    let exists = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(query_error(format!("look up publication {publication}")))?;
    let what = format!("read publication {publication}");
    let Some(all_tables) = exists.map(|r| column::<bool>(&r, 0, &what)).transpose()? else {
        return Ok(None);
    };
    let rows = client
        .query(
            "SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(query_error(format!("list the tables of publication {publication}")))?;
    Ok(Some(Publication {
        tables: rows
            .iter()
            .map(|r| column(r, 0, &what))
            .collect::<Result<_, _>>()?,
        all_tables,
    }))
}

/// Warnings about a publication that holds more than the configured tables:
/// their changes reach tidemark, which drops them before the sink (and counts
/// them in `tidemark_unconfigured_changes_dropped_total`), but the server
/// still decodes and sends them.
pub(crate) fn publication_warnings(
    publication: &str,
    published: &Publication,
    tables: &[TableName],
) -> Vec<String> {
    let configured: Vec<String> = tables.iter().map(ToString::to_string).collect();
    let mut warnings = Vec::new();
    if published.all_tables {
        warnings.push(format!(
            "source.publication: publication {publication} is FOR ALL TABLES: changes of tables outside source.tables are sent to tidemark and dropped there (use a publication of the configured tables only)"
        ));
    } else {
        let others: Vec<&str> = published
            .tables
            .iter()
            .filter(|p| !configured.contains(p))
            .map(String::as_str)
            .collect();
        if !others.is_empty() {
            warnings.push(format!(
                "source.publication: publication {publication} also holds {}, outside source.tables: their changes are sent to tidemark and dropped there",
                others.join(", ")
            ));
        }
    }
    warnings
}

/// What the source needs for capture, checked without changing anything.
/// Each problem is one line naming the setting, table or object at fault.
pub async fn problems(
    client: &Client,
    tables: &[TableName],
    slot: &str,
    publication: &str,
) -> Result<Vec<String>, SourceError> {
    let mut problems = Vec::new();
    let settings = client
        .query_one(
            "SELECT current_setting('wal_level'), r.rolsuper OR r.rolreplication, r.rolname::text, \
                    current_database()::text, current_setting('max_replication_slots')::int, \
                    has_database_privilege(current_database(), 'CREATE') \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(query_error(SETTINGS))?;
    let wal_level: String = column(&settings, 0, SETTINGS)?;
    if wal_level != "logical" {
        problems.push(format!(
            "source: wal_level is '{wal_level}', logical decoding needs wal_level = logical (set it in postgresql.conf and restart PostgreSQL)"
        ));
    }
    let (can_replicate, role, database): (bool, String, String) = (
        column(&settings, 1, SETTINGS)?,
        column(&settings, 2, SETTINGS)?,
        column(&settings, 3, SETTINGS)?,
    );
    if !can_replicate {
        problems.push(format!(
            "source: role '{role}' has neither REPLICATION nor SUPERUSER (ALTER ROLE {role} REPLICATION)"
        ));
    }
    let mut checks = Checks {
        client,
        settings,
        role,
        database,
        problems,
    };
    let not_owned = checks.tables(tables).await?;
    checks.slot(slot).await?;
    checks.publication(publication, tables, &not_owned).await?;
    Ok(checks.problems)
}

/// What the server-settings query is read for, in its errors.
const SETTINGS: &str = "read server settings";

/// The state [`problems`] threads through its checks: the server settings
/// row (each column is read only where a check needs it, so a malformed
/// column fails where it is used), the role and database the messages name,
/// and the problems found so far, in the order they are found.
struct Checks<'a> {
    client: &'a Client,
    settings: Row,
    role: String,
    database: String,
    problems: Vec<String>,
}

impl Checks<'_> {
    /// Checks each configured table; returns those the role does not own.
    async fn tables<'t>(
        &mut self,
        tables: &'t [TableName],
    ) -> Result<Vec<&'t TableName>, SourceError> {
        // Tables this role may add to a publication: its own (or its roles').
        let mut not_owned = Vec::new();
        for table in tables {
            if !self.table(table).await? {
                not_owned.push(table);
            }
        }
        Ok(not_owned)
    }

    /// Checks one table; `false` when the role does not own it. A missing
    /// table is reported as missing only, so it returns `true`.
    async fn table(&mut self, table: &TableName) -> Result<bool, SourceError> {
        let row = self
            .client
            .query_opt(
                "SELECT c.relreplident::text, \
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                        has_table_privilege(c.oid, 'SELECT'), c.relkind::text, \
                        pg_has_role(c.relowner, 'USAGE') \
                 FROM pg_class c WHERE c.oid = to_regclass($1)",
                &[&table.quoted()],
            )
            .await
            .map_err(query_error(format!("look up table {table}")))?;
        let (role, database) = (&self.role, &self.database);
        let Some(row) = row else {
            self.problems.push(format!(
                "source.tables: table {table} does not exist in database {database}"
            ));
            return Ok(true);
        };
        let what = format!("look up table {table}");
        let (identity, has_pk, can_select, kind): (String, bool, bool, String) = (
            column(&row, 0, &what)?,
            column(&row, 1, &what)?,
            column(&row, 2, &what)?,
            column(&row, 3, &what)?,
        );
        let owned = column::<bool>(&row, 4, &what)?;
        if kind != "r" && kind != "p" {
            self.problems.push(format!("source.tables: {table} is not a table (relkind '{kind}'); only tables can be published"));
        }
        if !can_select {
            self.problems.push(format!("source.tables: role '{role}' cannot SELECT from {table} (GRANT SELECT ON {table} TO {role})"));
        }
        let keyed = match identity.as_str() {
            "f" | "i" => true,
            "d" => has_pk,
            _ => false,
        };
        if !keyed {
            self.problems.push(format!(
                "source.tables: {table} has no primary key and REPLICA IDENTITY is not FULL, so its updates and deletes cannot be captured (ALTER TABLE {table} REPLICA IDENTITY FULL)"
            ));
        }
        Ok(owned)
    }

    /// Checks the slot: when it exists, that it fits and is free; when it
    /// does not, that one can be created.
    async fn slot(&mut self, slot: &str) -> Result<(), SourceError> {
        let database = &self.database;
        match slot_state(self.client, slot).await? {
            Some(state) => {
                if state.plugin.as_deref() != Some("pgoutput") {
                    self.problems.push(format!(
                        "source.slot: slot '{slot}' exists but uses plugin {:?}, not pgoutput (drop it or pick another name)",
                        state.plugin.unwrap_or_default()
                    ));
                }
                if state.database.as_deref() != Some(database.as_str()) {
                    self.problems.push(format!(
                        "source.slot: slot '{slot}' belongs to database {:?}, not {database}",
                        state.database.unwrap_or_default()
                    ));
                }
                if state.active {
                    self.problems.push(format!(
                        "source.slot: slot '{slot}' is in use by another connection"
                    ));
                }
            }
            None => {
                let used: i64 = column(
                    &self
                        .client
                        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
                        .await
                        .map_err(query_error("count replication slots"))?,
                    0,
                    "count replication slots",
                )?;
                let max: i32 = column(&self.settings, 4, SETTINGS)?;
                if used >= max as i64 {
                    self.problems.push(format!(
                        "source.slot: slot '{slot}' is missing and all {max} slots are taken (raise max_replication_slots)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that `run` can create the publication, or add the tables it
    /// lacks, and warns when it holds more than the configured tables.
    async fn publication(
        &mut self,
        publication: &str,
        tables: &[TableName],
        not_owned: &[&TableName],
    ) -> Result<(), SourceError> {
        // `run` creates the publication, or adds the tables it lacks: CREATE on
        // the database for the first, ownership of each table for both.
        let published = publication_tables(self.client, publication).await?;
        let to_add: Vec<&TableName> = match &published {
            Some(p) if p.all_tables => Vec::new(),
            Some(p) => tables
                .iter()
                .filter(|t| !p.tables.iter().any(|name| *name == t.to_string()))
                .collect(),
            None => tables.iter().collect(),
        };
        let can_create: bool = column(&self.settings, 5, SETTINGS)?;
        let (role, database) = (&self.role, &self.database);
        if published.is_none() && !can_create {
            self.problems.push(format!(
                "source.publication: publication '{publication}' does not exist and role '{role}' lacks CREATE on database {database} to create it (GRANT CREATE ON DATABASE {database} TO {role}, or create the publication as the tables' owner)"
            ));
        }
        for table in to_add {
            if not_owned.contains(&table) {
                self.problems.push(format!(
                    "source.publication: role '{role}' does not own {table}, so it cannot add it to publication '{publication}' (as the owner: {} TABLE {table})",
                    if published.is_some() { format!("ALTER PUBLICATION {publication} ADD") } else { format!("CREATE PUBLICATION {publication} FOR") }
                ));
            } else if published.is_some() {
                tracing::info!("publication {publication} lacks {table}; `run` adds it");
            }
        }
        if let Some(published) = &published {
            for warning in publication_warnings(publication, published, tables) {
                tracing::warn!("{warning}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_with_more_than_the_configured_tables_is_warned_about() {
        let tables = [TableName::new("public", "listed")];
        let only = Publication {
            tables: vec!["public.listed".into()],
            all_tables: false,
        };
        assert!(publication_warnings("p", &only, &tables).is_empty());
        let more = Publication {
            tables: vec!["public.listed".into(), "public.cards".into()],
            all_tables: false,
        };
        let warnings = publication_warnings("p", &more, &tables);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("public.cards") && !warnings[0].contains("public.listed,"),
            "{warnings:?}"
        );
        let all = Publication {
            tables: vec!["public.listed".into()],
            all_tables: true,
        };
        assert!(publication_warnings("p", &all, &tables)[0].contains("FOR ALL TABLES"));
    }
}
