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
//! holder's write, so it is refused once another instance took the lease,
//! and the pipeline writes to its sink only while the lease is confirmed
//! ([`DynamoCursor::lease_confirmed`]), so an owner that lost it writes
//! nothing more.
//!
//! A second instance waits as a standby, logging the owner, and takes over when
//! the lease lapses. An instance whose renewal finds the lease taken stops
//! the pipeline with `StopReason::LeaseLost` (the stop signal given to
//! [`DynamoCursor::stop_on_loss`]); its sink writes and
//! commits are refused from then on, so nothing it wrote after losing the
//! lease moved the cursor, and it exits non-zero.

use super::{Binding, CursorError};
use crate::aws::lease::{self, number, s, text, Held, LapseClock, Lease, LeaseTable};
use crate::ops::stop::{StopReason, StopSignal};
use crate::ops::{events, Health, Phase};
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
    /// Told to stop when a renewal finds the lease taken.
    on_loss: Option<StopSignal>,
    /// Where waiting for the lease and failing renewals are reported.
    health: Health,
}

impl DynamoCursor {
    pub fn new(
        client: Client,
        table: &str,
        pipeline: &str,
        duration: Duration,
        health: Health,
    ) -> Self {
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
            on_loss: None,
            health,
        }
    }

    pub(super) fn health(&self) -> &Health {
        &self.health
    }

    /// The signal that stops the pipeline when the lease is lost (set it
    /// before [`Self::acquire`]).
    pub(crate) fn stop_on_loss(&mut self, stop: StopSignal) {
        self.on_loss = Some(stop);
    }

    pub(super) fn pipeline(&self) -> &str {
        &self.pipeline
    }

    pub(super) fn table(&self) -> &str {
        &self.table.table
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

    /// [`Self::error`] for a failed call, kept transient when it was.
    fn call_error(&self, what: &str, e: lease::LeaseError) -> CursorError {
        let transient = e.transient;
        match self.error(what, e) {
            CursorError::Store(message) if transient => CursorError::Unavailable(message),
            other => other,
        }
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
            .map_err(CursorError::from)
    }

    /// Takes the lease (waiting as a standby while another instance holds it),
    /// starts renewing it, and returns the stored position: as the taking
    /// write returned it, so a commit that landed after this instance last
    /// looked is not missed.
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
                        self.health.set_phase(Phase::Standby);
                        tracing::info!(
                            "standby: pipeline {} is owned by {} (lease counter {}); taking over when its lease lapses",
                            self.pipeline,
                            text(item, "owner"),
                            number(item, "lease_counter")
                        );
                        announced = true;
                    }
                    Ok(None)
                }
            }
            .map_err(|e| self.call_error("take the lease", e))?;
            if let Some(item) = taken {
                self.health.set_phase(Phase::Starting);
                events::lease_held(true);
                tracing::info!(
                    "holding the lease on pipeline {} as {} (lease counter {})",
                    self.pipeline,
                    self.lease.owner,
                    number(&item, "lease_counter")
                );
                self.renew_in_background();
                let position =
                    match text(&item, "position") {
                        "" => None,
                        stored => Some(serde_json::from_str(stored).map_err(|e| {
                            CursorError::Corrupt {
                                path: self.path(),
                                message: e.to_string(),
                            }
                        })?),
                    };
                self.stored = position.clone();
                let attribute =
                    |name: &str| Some(text(&item, name).to_string()).filter(|s| !s.is_empty());
                self.binding = Binding {
                    source: attribute("source_identity"),
                    lineage: attribute("lineage"),
                };
                return Ok(position);
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    /// True while no other instance can have taken the lease over: the sink
    /// is written only then (see [`Lease::confirmed`]).
    pub fn lease_confirmed(&self) -> bool {
        self.lease.confirmed()
    }

    /// True while this instance holds the lease (it may be unconfirmed).
    pub(crate) fn lease_held(&self) -> bool {
        self.lease.held()
    }

    /// Renews every third of the lease; on losing it, stops the pipeline
    /// (see the module doc). Renewals and commits do not wait for each other
    /// (see [`Lease`]).
    fn renew_in_background(&self) {
        let (lease, duration, pipeline, table, on_loss, health) = (
            self.lease.clone(),
            self.duration,
            self.pipeline.clone(),
            self.table.table.clone(),
            self.on_loss.clone(),
            self.health.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(duration / 3).await;
                match lease.renew(duration).await {
                    Ok(Held::Yes) => health.set_problem("cursor", None),
                    Ok(Held::NotHeld) => return,
                    Ok(Held::Lost | Held::Refused) => {
                        events::lease_held(false);
                        tracing::error!("lost the lease on pipeline {pipeline}: stopping");
                        if let Some(stop) = &on_loss {
                            stop.stop(StopReason::LeaseLost(format!(
                                "lost the lease on pipeline {pipeline} (dynamodb table {table}): another instance owns it now"
                            )));
                        }
                        return;
                    }
                    Err(detail) => {
                        crate::ops::metrics::retry("dynamodb_lease_renew");
                        health.set_problem(
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

    /// Commits a position, only while holding the lease and never backward:
    /// checked here against the position this instance last stored, and by
    /// DynamoDB against the stored one (for log positions, whose text sorts
    /// in their order; see `tidemark_connectors::position`).
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
        let position_text = position.to_string();
        let ordered_text = !matches!(position, Position::Poll { .. });
        let held = self
            .lease
            .write(
                "#position = :p, position_text = :t, source_identity = :src, lineage = :lin, updated_at = :now",
                ordered_text.then_some("attribute_not_exists(position_text) OR position_text <= :t"),
                self.duration,
                |r| {
                    r.expression_attribute_names("#position", "position")
                        .expression_attribute_values(":p", s(&body))
                        .expression_attribute_values(":t", s(&position_text))
                        .expression_attribute_values(":src", s(source))
                        .expression_attribute_values(":lin", s(lineage))
                        .expression_attribute_values(":now", lease::n(now_ms()))
                },
            )
            .await
            .map_err(|e| self.call_error("commit the cursor", e))?;
        match held {
            Held::Yes => {
                self.stored = Some(position.clone());
                Ok(())
            }
            Held::NotHeld => Err(self.error("commit", "the lease is not held")),
            Held::Refused => {
                let stored = self
                    .item()
                    .await?
                    .map(|item| text(&item, "position_text").to_string())
                    .unwrap_or_default();
                Err(CursorError::Backward {
                    stored,
                    attempted: position_text,
                })
            }
            Held::Lost => {
                events::lease_held(false);
                Err(CursorError::LeaseLost {
                    pipeline: self.pipeline.clone(),
                    table: self.table.table.clone(),
                })
            }
        }
    }

    /// On a clean stop: gives the lease up so a standby takes over at once.
    pub async fn release(&mut self) {
        if !self.lease.held() {
            return;
        }
        events::lease_held(false);
        if let Err(e) = self.lease.release().await {
            tracing::warn!(
                "could not release the lease on pipeline {}: {e}",
                self.pipeline
            );
        }
    }

    /// Forgets the position (`tidemark cursor reset`) once no instance holds
    /// the lease: released, or its counter still for a whole lease duration
    /// by this process's clock (no clocks are compared across hosts). The
    /// reset is conditional on the counter it last saw and moves it on, and
    /// it leaves the lease released, so an owner that wakes up after it
    /// cannot write. True when there was an item.
    pub async fn reset(&self) -> Result<bool, CursorError> {
        let mut clock = LapseClock::default();
        let mut announced = false;
        loop {
            let Some(item) = self.item().await? else {
                return Ok(false);
            };
            if !clock.lapsed(&self.pipeline, &item, self.duration) {
                if !announced {
                    eprintln!(
                        "cursor reset: instance {} holds the lease on pipeline {}; waiting up to {:?} for it to lapse (stop that instance)",
                        text(&item, "owner"),
                        self.pipeline,
                        self.duration
                    );
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(200).min(self.duration / 4)).await;
                continue;
            }
            let seen = number(&item, "lease_counter");
            let result = self
                .table
                .client
                .update_item()
                .table_name(&self.table.table)
                .key("pipeline", s(&self.pipeline))
                .update_expression(
                    "REMOVE #position, position_text SET #owner = :released, lease_counter = :next",
                )
                .condition_expression("lease_counter = :seen")
                .expression_attribute_names("#position", "position")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":released", s(lease::RELEASED))
                .expression_attribute_values(":seen", lease::n(seen))
                .expression_attribute_values(":next", lease::n(seen + 1))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(true),
                // The counter moved: an owner is alive after all; look again.
                Err(e) if lease::conditional_failed(&e) => continue,
                Err(e) => {
                    return Err(self.error(
                        "reset the cursor",
                        aws_sdk_dynamodb::error::DisplayErrorContext(&e),
                    ))
                }
            }
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
