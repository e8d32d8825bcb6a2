//! One reading of a failed AWS call, for Kinesis and DynamoDB alike: the
//! service's error code, a one-line description, and whether trying again
//! may help. (Every SDK crate re-exports the same `SdkError` and response
//! types from `aws-smithy-runtime-api`, so one function serves both.)

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// The codes with which Kinesis says "slow down".
pub(crate) const KINESIS_THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "KMSThrottlingException",
    "LimitExceededException",
];

/// The codes with which DynamoDB says "slow down".
pub(crate) const DYNAMODB_THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// Why a failed call may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retryable {
    /// The service said to slow down (one of the `throttled` codes).
    Throttled,
    /// The service answered with a 5xx.
    ServerError,
    /// No answer: the connection failed, timed out or broke off.
    Unreachable,
}

/// The service's error code, when it answered with one.
pub(crate) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// Whether trying again may help, and why; `None` when the error is final
/// (a missing stream or table, a refused credential, a bad request).
pub(crate) fn retryable<E: ProvideErrorMetadata>(
    e: &SdkError<E, HttpResponse>,
    throttled: &[&str],
) -> Option<Retryable> {
    if code(e).is_some_and(|c| throttled.contains(&c)) {
        return Some(Retryable::Throttled);
    }
    if e.raw_response().is_some_and(|r| r.status().as_u16() >= 500) {
        return Some(Retryable::ServerError);
    }
    matches!(
        e,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    )
    .then_some(Retryable::Unreachable)
}

/// An SDK error in one line: the service's code and message when it answered,
/// else the whole chain of causes.
pub(crate) fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("unknown error"),
            service.message().unwrap_or("no message")
        ),
        None => aws_sdk_kinesis::error::DisplayErrorContext(e).to_string(),
    }
}

/// The retry reason of a throttled call.
pub(crate) const KINESIS_THROTTLED_REASON: &str = "kinesis_throttled";

/// Why a failed call may be retried (the retry metric's reason: throttled, a
/// server error, unreachable), or `None` when the error is final.
pub(crate) fn kinesis_retry_reason<E>(e: &SdkError<E, HttpResponse>) -> Option<&'static str>
where
    E: ProvideErrorMetadata,
{
    retryable(e, KINESIS_THROTTLED).map(|why| match why {
        Retryable::Throttled => KINESIS_THROTTLED_REASON,
        Retryable::ServerError => "kinesis_server_error",
        Retryable::Unreachable => "kinesis_unreachable",
    })
}
