//! What every AWS caller shares: clients built from the standard chain, one
//! reading of a failed call, and DynamoDB leases. Used by the Kinesis sink,
//! the DynamoDB cursor store and `apply`'s Kinesis input; imports none of them.

pub mod clients;
pub(crate) mod errors;
pub mod lease;

/// Setting up an AWS client failed.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{key}: no AWS region (set {key} or AWS_REGION)")]
    NoRegion { key: String },
}
