//! The DynamoDB cursor store, with a lease so that one instance owns a pipeline.
//!
//! One table, key `pipeline` (S); per pipeline one item:
//! `position` (the cursor, JSON), `position_text` (its byte-comparable form),
//! `owner` (the instance id), `lease_counter` (N), `lease_expires_at` (N, ms since
//! the epoch, for people), `updated_at` (N, ms). `tidemark cursor init` creates
//! the table (on-demand billing).
//!
//! Every write is conditional:
//! - take the lease: only when there is no item, or the owner is gone
//!   (`(released)` after a clean stop, or `lease_counter` unchanged for a whole
//!   `lease_duration` as seen by this instance's own clock, so clock skew between
//!   hosts does not matter), and only if `lease_counter` is still the value seen;
//! - renew (every third of `lease_duration`) and commit: only while `owner` is
//!   this instance and `lease_counter` is the value it last wrote.
//!
//! A second instance waits as a standby, logging the owner, and takes over when
//! the lease lapses. An instance that finds its lease taken stops at once and
//! exits non-zero; its last commits were refused, so nothing it wrote after
//! losing the lease moved the cursor.

use super::{compare, CursorError};
use crate::ops::{health, Phase};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tidemark_connectors::event::now_ms;
use tidemark_connectors::Position;
use tokio::sync::Mutex;

/// The `owner` of a lease given up on a clean stop.
const RELEASED: &str = "(released)";

pub struct DynamoCursor {
    client: Client,
    table: String,
    pipeline: String,
    owner: String,
    lease: Duration,
    /// `lease_counter` as last written by this instance; `None` before the lease
    /// is held. Locked around every write so renewals and commits do not race.
    counter: Arc<Mutex<Option<i64>>>,
    stored: Option<Position>,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

fn conditional_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

impl DynamoCursor {
    pub fn new(client: Client, table: &str, pipeline: &str, lease: Duration) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        DynamoCursor {
            client,
            table: table.to_string(),
            pipeline: pipeline.to_string(),
            owner: format!("{host}:{}:{:x}", std::process::id(), now_ms()),
            lease,
            counter: Arc::new(Mutex::new(None)),
            stored: None,
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> CursorError {
        CursorError::Store(format!(
            "dynamodb table {} (pipeline {}): cannot {what}: {e}",
            self.table, self.pipeline
        ))
    }

    /// Creates the table (an existing one is left as it is) and waits until it
    /// is active; true when it was created.
    pub async fn init(&self) -> Result<bool, CursorError> {
        let created = self.create_table().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let status = self
                .client
                .describe_table()
                .table_name(&self.table)
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
            .client
            .create_table()
            .table_name(&self.table)
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

    async fn item(&self) -> Result<Option<HashMap<String, AttributeValue>>, CursorError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pipeline", s(&self.pipeline))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                let missing = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception());
                if missing {
                    CursorError::Store(format!(
                        "dynamodb table {} does not exist; create it with `tidemark cursor init`",
                        self.table
                    ))
                } else {
                    self.error(
                        "read the cursor",
                        aws_sdk_dynamodb::error::DisplayErrorContext(&e),
                    )
                }
            })?;
        Ok(answer.item)
    }

    /// Takes the lease (waiting as a standby while another instance holds it),
    /// starts renewing it, and returns the stored position.
    pub async fn acquire(&mut self) -> Result<Option<Position>, CursorError> {
        let mut seen: Option<(String, i64, tokio::time::Instant)> = None;
        let mut announced = false;
        loop {
            let item = self.item().await?;
            let expires = now_ms() + self.lease.as_millis() as i64;
            let taken = match &item {
                None => {
                    let put = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .item("pipeline", s(&self.pipeline))
                        .item("owner", s(&self.owner))
                        .item("lease_counter", n(1))
                        .item("lease_expires_at", n(expires))
                        .item("updated_at", n(now_ms()))
                        .condition_expression("attribute_not_exists(pipeline)")
                        .send()
                        .await;
                    match put {
                        Ok(_) => Some(1),
                        Err(e) if conditional_failed(&e) => None,
                        Err(e) => {
                            return Err(self.error(
                                "take the lease",
                                aws_sdk_dynamodb::error::DisplayErrorContext(&e),
                            ))
                        }
                    }
                }
                Some(item) => {
                    let owner = text(item, "owner").to_string();
                    let counter = number(item, "lease_counter");
                    let lapsed = owner == RELEASED
                        || seen.as_ref().is_some_and(|(o, c, since)| {
                            *o == owner && *c == counter && since.elapsed() >= self.lease
                        });
                    if lapsed {
                        self.take(counter, expires).await?
                    } else {
                        if seen
                            .as_ref()
                            .is_none_or(|(o, c, _)| *o != owner || *c != counter)
                        {
                            seen = Some((owner.clone(), counter, tokio::time::Instant::now()));
                        }
                        if !announced {
                            health().set_phase(Phase::Standby);
                            tracing::info!(
                                "standby: pipeline {} is owned by {owner} (lease counter {counter}); taking over when its lease lapses",
                                self.pipeline
                            );
                            announced = true;
                        }
                        None
                    }
                }
            };
            if let Some(counter) = taken {
                *self.counter.lock().await = Some(counter);
                health().set_phase(Phase::Starting);
                metrics::gauge!("tidemark_lease_held").set(1.0);
                tracing::info!(
                    "holding the lease on pipeline {} as {} (lease counter {counter})",
                    self.pipeline,
                    self.owner
                );
                self.renew_in_background();
                let position = match &item {
                    Some(item) if !text(item, "position").is_empty() => {
                        Some(serde_json::from_str(text(item, "position")).map_err(|e| {
                            CursorError::Corrupt {
                                path: format!("dynamodb {}/{}", self.table, self.pipeline),
                                message: e.to_string(),
                            }
                        })?)
                    }
                    _ => None,
                };
                self.stored = position.clone();
                return Ok(position);
            }
            tokio::time::sleep(self.lease / 4).await;
        }
    }

    /// Takes a lapsed lease seen at `counter`.
    async fn take(&self, counter: i64, expires: i64) -> Result<Option<i64>, CursorError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pipeline", s(&self.pipeline))
            .update_expression("SET #owner = :me, lease_counter = :next, lease_expires_at = :exp")
            .condition_expression("lease_counter = :seen")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":next", n(counter + 1))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":seen", n(counter))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(counter + 1)),
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(self.error(
                "take the lease",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e),
            )),
        }
    }

    /// Renews every third of the lease; on losing it, exits non-zero at once.
    fn renew_in_background(&self) {
        let (client, table, pipeline, owner, lease, counter) = (
            self.client.clone(),
            self.table.clone(),
            self.pipeline.clone(),
            self.owner.clone(),
            self.lease,
            self.counter.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let mut guard = counter.lock().await;
                let Some(mine) = *guard else { return };
                let result = client
                    .update_item()
                    .table_name(&table)
                    .key("pipeline", s(&pipeline))
                    .update_expression("SET lease_counter = :next, lease_expires_at = :exp")
                    .condition_expression("#owner = :me AND lease_counter = :mine")
                    .expression_attribute_names("#owner", "owner")
                    .expression_attribute_values(":me", s(&owner))
                    .expression_attribute_values(":mine", n(mine))
                    .expression_attribute_values(":next", n(mine + 1))
                    .expression_attribute_values(":exp", n(now_ms() + lease.as_millis() as i64))
                    .send()
                    .await;
                match result {
                    Ok(_) => {
                        *guard = Some(mine + 1);
                        health().set_problem("cursor", None);
                    }
                    Err(e) if conditional_failed(&e) => {
                        metrics::gauge!("tidemark_lease_held").set(0.0);
                        eprintln!(
                            "error: lost the lease on pipeline {pipeline} (dynamodb table {table}): another instance owns it now; stopping"
                        );
                        std::process::exit(3);
                    }
                    Err(e) => {
                        crate::ops::metrics::retry("dynamodb_lease_renew");
                        let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&e);
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
            if compare(position, stored) == Some(std::cmp::Ordering::Less) {
                return Err(CursorError::Backward {
                    stored: stored.to_string(),
                    attempted: position.to_string(),
                });
            }
        }
        let body = serde_json::to_string(position).map_err(|e| self.error("encode", e))?;
        let mut guard = self.counter.lock().await;
        let Some(mine) = *guard else {
            return Err(self.error("commit", "the lease is not held"));
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pipeline", s(&self.pipeline))
            .update_expression("SET #position = :p, position_text = :t, updated_at = :now")
            .condition_expression("#owner = :me AND lease_counter = :mine")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#position", "position")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":mine", n(mine))
            .expression_attribute_values(":p", s(&body))
            .expression_attribute_values(":t", s(&position.to_string()))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await;
        match result {
            Ok(_) => {
                self.stored = Some(position.clone());
                Ok(())
            }
            Err(e) if conditional_failed(&e) => {
                // Not ours any more: stop renewing too.
                *guard = None;
                metrics::gauge!("tidemark_lease_held").set(0.0);
                Err(CursorError::LeaseLost {
                    pipeline: self.pipeline.clone(),
                    table: self.table.clone(),
                })
            }
            Err(e) => Err(self.error(
                "commit the cursor",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e),
            )),
        }
    }

    /// On a clean stop: gives the lease up so a standby takes over at once.
    pub async fn release(&mut self) {
        let mut guard = self.counter.lock().await;
        let Some(mine) = guard.take() else { return };
        metrics::gauge!("tidemark_lease_held").set(0.0);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pipeline", s(&self.pipeline))
            .update_expression(
                "SET #owner = :none, lease_counter = :next, lease_expires_at = :zero",
            )
            .condition_expression("#owner = :me AND lease_counter = :mine")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":mine", n(mine))
            .expression_attribute_values(":next", n(mine + 1))
            .expression_attribute_values(":none", s(RELEASED))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(
                "could not release the lease on pipeline {}: {}",
                self.pipeline,
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            );
        }
    }

    /// Forgets the position (`tidemark cursor reset`), only while no instance
    /// holds the lease; true when there was an item.
    pub async fn reset(&self) -> Result<bool, CursorError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pipeline", s(&self.pipeline))
            .update_expression("REMOVE #position, position_text")
            .condition_expression(
                "attribute_exists(pipeline) AND (#owner = :released OR lease_expires_at < :now)",
            )
            .expression_attribute_names("#position", "position")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":released", s(RELEASED))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => match self.item().await? {
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
