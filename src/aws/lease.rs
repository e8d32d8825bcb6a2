//! Leases on DynamoDB items, fenced by `lease_counter`: the one mechanism
//! behind the cursor store's single owner of a pipeline and `tidemark apply`'s
//! Kinesis shard leases.
//!
//! An item (key attribute `pipeline`) has an `owner`, a `lease_counter` (N) and
//! `lease_expires_at` (N, ms since the epoch, for people). Every write is
//! conditional:
//! - create: only when there is no item;
//! - take: only if `lease_counter` is still the value seen (so of two takers
//!   one wins); it sets `lease_epoch` to the new counter and returns the item
//!   as written (what it holds is read in the same write);
//! - every write of the holder (renewals, commits, release): only while `owner`
//!   is this instance and `lease_epoch` the one it took; each moves
//!   `lease_counter` on, so a lease is alive while its counter moves.
//!
//! An owner is gone when it released the item (`(released)`), or when its
//! `lease_counter` stayed the same for a whole lease duration as seen by the
//! observer's own clock ([`LapseClock`]), so clock skew between hosts does not
//! matter.

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tidemark_connectors::event::now_ms;
use tokio::time::Instant;

/// The `owner` of a lease given up on a clean stop.
pub(crate) const RELEASED: &str = "(released)";

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

pub fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn number(item: &Item, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn text<'a>(item: &'a Item, name: &str) -> &'a str {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

pub(crate) fn conditional_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    super::errors::code(e) == Some("ConditionalCheckFailedException")
}

/// A failed DynamoDB call: what it said, and whether trying again may help
/// (unreachable, timed out, throttled, a 5xx) or not (a missing table, a
/// refused credential).
#[derive(Debug, Clone)]
pub struct LeaseError {
    pub message: String,
    pub transient: bool,
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl LeaseError {
    fn fatal(message: String) -> LeaseError {
        LeaseError {
            message,
            transient: false,
        }
    }
}

fn detail<E>(
    e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> LeaseError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
{
    LeaseError {
        message: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
        transient: super::errors::retryable(e, super::errors::DYNAMODB_THROTTLED).is_some(),
    }
}

/// This process's name as a lease owner: host, pid and start time.
pub(crate) fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:x}", std::process::id(), now_ms())
}

/// A DynamoDB table of lease items.
#[derive(Clone)]
pub struct LeaseTable {
    pub client: Client,
    pub table: String,
}

impl LeaseTable {
    fn missing(&self) -> String {
        format!(
            "dynamodb table {} does not exist; create it with `tidemark cursor init`",
            self.table
        )
    }

    /// The item under `key`, read consistently. The error is one line; a
    /// missing table says how to create it.
    pub async fn get(&self, key: &str) -> Result<Option<Item>, LeaseError> {
        match self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pipeline", s(key))
            .consistent_read(true)
            .send()
            .await
        {
            Ok(answer) => Ok(answer.item),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Err(LeaseError::fatal(self.missing()))
            }
            Err(e) => {
                let e = detail(&e);
                Err(LeaseError {
                    message: format!("dynamodb table {}: {}", self.table, e.message),
                    ..e
                })
            }
        }
    }

    /// Every item whose key starts with `prefix` (a consistent scan).
    pub async fn scan(&self, prefix: &str) -> Result<Vec<Item>, LeaseError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let answer = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("begins_with(pipeline, :prefix)")
                .expression_attribute_values(":prefix", s(prefix))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| {
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception())
                    {
                        LeaseError::fatal(self.missing())
                    } else {
                        let e = detail(&e);
                        LeaseError {
                            message: format!(
                                "dynamodb table {}: cannot scan: {}",
                                self.table, e.message
                            ),
                            ..e
                        }
                    }
                })?;
            items.extend(answer.items.unwrap_or_default());
            match answer.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

/// One lease as its holder sees it. Clones share the state, so a renewing
/// task, a committing task and the writer that checks [`Lease::confirmed`]
/// agree.
///
/// No lock is held across a call to DynamoDB: holder writes are fenced by
/// `owner` and `lease_epoch` (set by the take, never by the holder) and move
/// `lease_counter` on with an atomic `+ 1`, so a renewal and a commit can be
/// in flight at once and neither waits for the other.
#[derive(Clone)]
pub(crate) struct Lease {
    table: LeaseTable,
    pub key: String,
    pub owner: String,
    state: Arc<std::sync::Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The `lease_epoch` this instance took the lease at; `None` while not held.
    epoch: Option<i64>,
    /// Until when writes may start: no other instance can take the lease
    /// over before the send time of the last holder write that succeeded
    /// plus the duration (a taker waits a whole duration, by its own clock,
    /// after it last saw the counter move, and every holder write moves it).
    /// A third of the duration is kept back for a write under way, so this
    /// is that send time plus two thirds of the duration; renewals every
    /// third keep it ahead of a healthy holder.
    confirmed_until: Option<Instant>,
}

/// See [`State::confirmed_until`].
fn confirmed_until(sent: Instant, duration: Duration) -> Instant {
    sent + duration * 2 / 3
}

/// The answer to a holder's write.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    Yes,
    /// Another instance took the lease; the write was refused.
    Lost,
    /// This instance had given the lease up (or never held it); nothing was tried.
    NotHeld,
    /// The lease is held, but the write's own condition failed (the caller
    /// says which; the cursor's: the stored position is further on).
    Refused,
}

impl Lease {
    pub(crate) fn new(table: &LeaseTable, key: &str, owner: &str) -> Lease {
        Lease {
            table: table.clone(),
            key: key.to_string(),
            owner: owner.to_string(),
            state: Arc::new(std::sync::Mutex::new(State::default())),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain values: one a panicked holder left is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, epoch: i64, sent: Instant, duration: Duration) {
        let mut state = self.state();
        state.epoch = Some(epoch);
        state.confirmed_until = Some(confirmed_until(sent, duration));
    }

    /// Creates the item, held by this lease, when there is none; `None` when
    /// another instance was first.
    pub(crate) async fn create(&self, duration: Duration) -> Result<Option<Item>, LeaseError> {
        let sent = Instant::now();
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.table)
            .item("pipeline", s(&self.key))
            .item("owner", s(&self.owner))
            .item("lease_counter", n(1))
            .item("lease_epoch", n(1))
            .item(
                "lease_expires_at",
                n(now_ms() + duration.as_millis() as i64),
            )
            .item("updated_at", n(now_ms()))
            .condition_expression("attribute_not_exists(pipeline)")
            .send()
            .await;
        match put {
            Ok(_) => {
                self.hold(1, sent, duration);
                Ok(Some(Item::from([
                    ("pipeline".to_string(), s(&self.key)),
                    ("owner".to_string(), s(&self.owner)),
                    ("lease_counter".to_string(), n(1)),
                ])))
            }
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(detail(&e)),
        }
    }

    /// Takes the item from whoever holds it, if its `lease_counter` is still
    /// `seen`; `None` when it moved. Returns the item as this write left it:
    /// what it holds (a position, a checkpoint) is read in the same
    /// conditional write as the lease is taken, never before it.
    pub(crate) async fn take(
        &self,
        seen: i64,
        duration: Duration,
    ) -> Result<Option<Item>, LeaseError> {
        let sent = Instant::now();
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.table)
            .key("pipeline", s(&self.key))
            .update_expression(
                "SET #owner = :me, lease_counter = :next, lease_epoch = :next, lease_expires_at = :exp",
            )
            .condition_expression("lease_counter = :seen")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":next", n(seen + 1))
            .expression_attribute_values(":exp", n(now_ms() + duration.as_millis() as i64))
            .expression_attribute_values(":seen", n(seen))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(answer) => {
                self.hold(seen + 1, sent, duration);
                Ok(Some(answer.attributes.unwrap_or_default()))
            }
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(detail(&e)),
        }
    }

    /// True while this instance holds the lease.
    pub(crate) fn held(&self) -> bool {
        self.state().epoch.is_some()
    }

    /// True while the lease is held and no other instance can have taken it
    /// over yet (see [`State::confirmed_until`]): writes to a sink are made
    /// only then.
    pub(crate) fn confirmed(&self) -> bool {
        let state = self.state();
        state.epoch.is_some() && state.confirmed_until.is_some_and(|t| Instant::now() < t)
    }

    /// Runs `set` (the body of an update's `SET`) while holding the lease,
    /// and moves `lease_counter` on; `condition`, when given, must hold too.
    /// `#owner` names `owner`. On [`Held::Lost`] the lease is dropped, so
    /// later writes are not tried.
    pub(crate) async fn write(
        &self,
        set: &str,
        condition: Option<&str>,
        duration: Duration,
        values: impl FnOnce(UpdateItemFluentBuilder) -> UpdateItemFluentBuilder,
    ) -> Result<Held, LeaseError> {
        self.write_then(set, condition, duration, false, values)
            .await
    }

    /// [`Lease::write`]; with `let_go`, the lease is dropped before the
    /// write is sent, whatever its answer.
    async fn write_then(
        &self,
        set: &str,
        condition: Option<&str>,
        duration: Duration,
        let_go: bool,
        values: impl FnOnce(UpdateItemFluentBuilder) -> UpdateItemFluentBuilder,
    ) -> Result<Held, LeaseError> {
        let epoch = {
            let mut state = self.state();
            let Some(epoch) = state.epoch else {
                return Ok(Held::NotHeld);
            };
            if let_go {
                *state = State::default();
            }
            epoch
        };
        let sent = Instant::now();
        let fence = "#owner = :me AND lease_epoch = :epoch";
        let request = self
            .table
            .client
            .update_item()
            .table_name(&self.table.table)
            .key("pipeline", s(&self.key))
            .update_expression(format!(
                "SET {set}, lease_counter = lease_counter + :one, lease_expires_at = :exp"
            ))
            .condition_expression(match condition {
                Some(condition) => format!("{fence} AND ({condition})"),
                None => fence.to_string(),
            })
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":epoch", n(epoch))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":exp", n(now_ms() + duration.as_millis() as i64));
        match values(request).send().await {
            Ok(_) => {
                let mut state = self.state();
                if state.epoch == Some(epoch) {
                    state.confirmed_until = Some(confirmed_until(sent, duration));
                }
                Ok(Held::Yes)
            }
            Err(e) if conditional_failed(&e) => {
                let still_mine = condition.is_some()
                    && self.table.get(&self.key).await?.is_some_and(|item| {
                        text(&item, "owner") == self.owner && number(&item, "lease_epoch") == epoch
                    });
                if still_mine {
                    return Ok(Held::Refused);
                }
                let mut state = self.state();
                if state.epoch == Some(epoch) {
                    *state = State::default();
                }
                Ok(Held::Lost)
            }
            Err(e) => Err(detail(&e)),
        }
    }

    /// Moves the counter on, so observers see the holder alive.
    pub(crate) async fn renew(&self, duration: Duration) -> Result<Held, LeaseError> {
        self.write("updated_at = :now", None, duration, |r| {
            r.expression_attribute_values(":now", n(now_ms()))
        })
        .await
    }

    /// Gives the lease up (a clean stop), so another instance takes it at once.
    pub(crate) async fn release(&self) -> Result<Held, LeaseError> {
        // Whatever the answer, this instance holds the lease no more.
        self.write_then("#owner = :none", None, Duration::ZERO, true, |r| {
            r.expression_attribute_values(":none", s(RELEASED))
        })
        .await
    }
}

/// Tells, by this process's own clock, when another owner's lease lapsed.
#[derive(Default)]
pub(crate) struct LapseClock {
    /// Per item: the owner and counter last seen, and since when.
    seen: HashMap<String, (String, i64, Instant)>,
}

impl LapseClock {
    /// True when the item's owner released it or its counter has not moved for
    /// `duration`.
    pub(crate) fn lapsed(&mut self, key: &str, item: &Item, duration: Duration) -> bool {
        let owner = text(item, "owner");
        let counter = number(item, "lease_counter");
        if owner == RELEASED {
            return true;
        }
        match self.seen.get(key) {
            Some((o, c, since)) if o == owner && *c == counter => since.elapsed() >= duration,
            _ => {
                self.seen.insert(
                    key.to_string(),
                    (owner.to_string(), counter, Instant::now()),
                );
                false
            }
        }
    }
}
