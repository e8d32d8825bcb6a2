//! The DynamoDB cursor store, with a lease so that one instance owns a pipeline.
//!
//! One table, key `pipeline` (S); per pipeline one item:
//! `position` (the cursor, JSON), `position_text` (its byte-comparable form),
//! `owner` (the instance id), `lease_counter` (N), `lease_expires_at` (N, ms since
//! the epoch, for people), `updated_at` (N, ms). `tidemark cursor init` creates
//! the table (on-demand billing).
//!
//! The lease (in [`super::lease`], shared with `tidemark apply`'s Kinesis
//! shard leases) is renewed every third of `lease_duration`; a commit is a
//! holder's write, so it is refused once another instance took the lease.
//!
//! A second instance waits as a standby, logging the owner, and takes over when
//! the lease lapses. An instance that finds its lease taken stops at once and
//! exits non-zero; its last commits were refused, so nothing it wrote after
//! losing the lease moved the cursor.

use super::lease::{self, number, s, text, Held, LapseClock, Lease, LeaseTable};
use super::{Binding, CursorError};
use crate::ops::{health, Phase};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;
use std::time::Duration;
use tidemark_connectors::event::now_ms;
use tidemark_connectors::Position;

pub struct DynamoCursor {
    table: LeaseTable,
    pipeline: String,
    lease: Lease,
    duration: Duration,
    stored: Option<Position>,
    /// Whose position it is (see `CursorStore::bind_source`).
    pub(super) binding: Binding,
}

impl DynamoCursor {
    pub fn new(client: Client, table: &str, pipeline: &str, duration: Duration) -> Self {
        let table = LeaseTable {
            client,
            table: table.to_string(),
        };
        let lease = Lease::new(&table, pipeline, &lease::instance_name());
        DynamoCursor {
            table,
            pipeline: pipeline.to_string(),
            lease,
            duration,
            stored: None,
            binding: Binding::default(),
        }
    }

    pub(super) fn path(&self) -> String {
        format!("dynamodb {}/{}", self.table.table, self.pipeline)
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> CursorError {
        CursorError::Store(format!(
            "dynamodb table {} (pipeline {}): cannot {what}: {e}",
            self.table.table, self.pipeline
        ))
    }

    /// Creates the table (an existing one is left as it is) and waits until it
    /// is active; true when it was created.
    pub async fn init(&self) -> Result<bool, CursorError> {
        let created = self.create_table().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let status = self
                .table
                .client
                .describe_table()
                .table_name(&self.table.table)
                .send()
                .await
                .ok()
                .and_then(|d| d.table?.table_status);
            match status {
                Some(TableStatus::Active) => return Ok(created),
                _ if tokio::time::Instant::now() > deadline => {
                    return Err(self.error(
                        "create the table",
                        format!("still not active after 120 s (status {status:?})"),
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn create_table(&self) -> Result<bool, CursorError> {
        let result = self
            .table
            .client
            .create_table()
            .table_name(&self.table.table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pipeline")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| self.error("describe the table", e))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pipeline")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| self.error("describe the table", e))?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error(
                "create the table",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e),
            )),
        }
    }

    async fn item(&self) -> Result<Option<lease::Item>, CursorError> {
        self.table
            .get(&self.pipeline)
            .await
            .map_err(CursorError::Store)
    }

    /// Takes the lease (waiting as a standby while another instance holds it),
    /// starts renewing it, and returns the stored position.
    pub async fn acquire(&mut self) -> Result<Option<Position>, CursorError> {
        let mut clock = LapseClock::default();
        let mut announced = false;
        loop {
            let item = self.item().await?;
            let taken = match &item {
                None => self.lease.create(self.duration).await,
                Some(item) if clock.lapsed(&self.pipeline, item, self.duration) => {
                    let seen = number(item, "lease_counter");
                    self.lease.take(seen, self.duration).await
                }
                Some(item) => {
                    if !announced {
                        health().set_phase(Phase::Standby);
                        tracing::info!(
                            "standby: pipeline {} is owned by {} (lease counter {}); taking over when its lease lapses",
                            self.pipeline,
                            text(item, "owner"),
                            number(item, "lease_counter")
                        );
                        announced = true;
                    }
                    Ok(false)
                }
            }
            .map_err(|e| self.error("take the lease", e))?;
            if taken {
                health().set_phase(Phase::Starting);
                metrics::gauge!("tidemark_lease_held").set(1.0);
                tracing::info!(
                    "holding the lease on pipeline {} as {} (lease counter {})",
                    self.pipeline,
                    self.lease.owner,
                    self.lease.counter().await.unwrap_or_default()
                );
                self.renew_in_background();
                let position = match &item {
                    Some(item) if !text(item, "position").is_empty() => {
                        Some(serde_json::from_str(text(item, "position")).map_err(|e| {
                            CursorError::Corrupt {
                                path: format!("dynamodb {}/{}", self.table.table, self.pipeline),
                                message: e.to_string(),
                            }
                        })?)
                    }
                    _ => None,
                };
                self.stored = position.clone();
                let attribute = |name: &str| {
                    item.as_ref()
                        .map(|item| text(item, name))
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                self.binding = Binding {
                    source: attribute("source_identity"),
                    lineage: attribute("lineage"),
                };
                return Ok(position);
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    /// Renews every third of the lease; on losing it, exits non-zero at once.
    fn renew_in_background(&self) {
        let (lease, duration, pipeline, table) = (
            self.lease.clone(),
            self.duration,
            self.pipeline.clone(),
            self.table.table.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(duration / 3).await;
                match lease.renew(duration).await {
                    Ok(Held::Yes) => health().set_problem("cursor", None),
                    Ok(Held::NotHeld) => return,
                    Ok(Held::Lost) => {
                        metrics::gauge!("tidemark_lease_held").set(0.0);
                        eprintln!(
                            "error: lost the lease on pipeline {pipeline} (dynamodb table {table}): another instance owns it now; stopping"
                        );
                        std::process::exit(3);
                    }
                    Err(detail) => {
                        crate::ops::metrics::retry("dynamodb_lease_renew");
                        health().set_problem(
                            "cursor",
                            Some(format!(
                                "renewing the lease in dynamodb table {table} fails: {detail}"
                            )),
                        );
                        tracing::warn!(
                            "renewing the lease on pipeline {pipeline} failed (will retry): {detail}"
                        )
                    }
                }
            }
        });
    }

    /// Commits a position, only while holding the lease and never backward.
    pub async fn commit(&mut self, position: &Position) -> Result<(), CursorError> {
        if let Some(stored) = &self.stored {
            if position.order(stored) == Some(std::cmp::Ordering::Less) {
                return Err(CursorError::Backward {
                    stored: stored.to_string(),
                    attempted: position.to_string(),
                });
            }
        }
        let body = serde_json::to_string(position).map_err(|e| self.error("encode", e))?;
        let source = self.binding.source.as_deref().unwrap_or_default();
        let lineage = self.binding.lineage.as_deref().unwrap_or_default();
        let held = self
            .lease
            .write(
                "#position = :p, position_text = :t, source_identity = :src, lineage = :lin, updated_at = :now",
                false,
                |r| {
                    r.expression_attribute_names("#position", "position")
                        .expression_attribute_values(":p", s(&body))
                        .expression_attribute_values(":t", s(&position.to_string()))
                        .expression_attribute_values(":src", s(source))
                        .expression_attribute_values(":lin", s(lineage))
                        .expression_attribute_values(":now", lease::n(now_ms()))
                },
            )
            .await
            .map_err(|e| self.error("commit the cursor", e))?;
        match held {
            Held::Yes => {
                self.stored = Some(position.clone());
                Ok(())
            }
            Held::NotHeld => Err(self.error("commit", "the lease is not held")),
            Held::Lost => {
                metrics::gauge!("tidemark_lease_held").set(0.0);
                Err(CursorError::LeaseLost {
                    pipeline: self.pipeline.clone(),
                    table: self.table.table.clone(),
                })
            }
        }
    }

    /// On a clean stop: gives the lease up so a standby takes over at once.
    pub async fn release(&mut self) {
        if self.lease.counter().await.is_none() {
            return;
        }
        metrics::gauge!("tidemark_lease_held").set(0.0);
        if let Err(e) = self.lease.release().await {
            tracing::warn!(
                "could not release the lease on pipeline {}: {e}",
                self.pipeline
            );
        }
    }

    /// Forgets the position (`tidemark cursor reset`), only while no instance
    /// holds the lease; true when there was an item.
    pub async fn reset(&self) -> Result<bool, CursorError> {
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.table)
            .key("pipeline", s(&self.pipeline))
            .update_expression("REMOVE #position, position_text")
            .condition_expression(
                "attribute_exists(pipeline) AND (#owner = :released OR lease_expires_at < :now)",
            )
            .expression_attribute_names("#position", "position")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":released", s(lease::RELEASED))
            .expression_attribute_values(":now", lease::n(now_ms()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if lease::conditional_failed(&e) => match self.item().await? {
                None => Ok(false),
                Some(item) => Err(self.error(
                    "reset",
                    format!(
                        "instance {} holds the lease; stop it first",
                        text(&item, "owner")
                    ),
                )),
            },
            Err(e) => Err(self.error(
                "reset the cursor",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e),
            )),
        }
    }

    /// The stored item as JSON, for `tidemark cursor show`.
    pub async fn describe(&self) -> Result<Option<serde_json::Value>, CursorError> {
        let Some(item) = self.item().await? else {
            return Ok(None);
        };
        let position: serde_json::Value =
            serde_json::from_str(text(&item, "position")).unwrap_or(serde_json::Value::Null);
        Ok(Some(serde_json::json!({
            "pipeline": text(&item, "pipeline"),
            "position": position,
            "position_text": text(&item, "position_text"),
            "owner": text(&item, "owner"),
            "lease_counter": number(&item, "lease_counter"),
            "lease_expires_at": number(&item, "lease_expires_at"),
            "updated_at_ms": number(&item, "updated_at"),
        })))
    }
}
