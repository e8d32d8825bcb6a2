//! AWS clients from the standard credential chain, with the timeouts and
//! retry settings each caller's guarantees need.

use super::AwsError;

/// The AWS settings of the standard chain, with a region set in the config
/// taking precedence; a missing region is an error naming the key.
async fn aws(region: &Option<String>, key: &str) -> Result<aws_config::SdkConfig, AwsError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(AwsError::NoRegion {
            key: key.to_string(),
        });
    }
    Ok(sdk)
}

/// A DynamoDB client (`cursor.region`, `cursor.endpoint`).
pub async fn dynamodb_client(
    region: &Option<String>,
    endpoint: &Option<String>,
) -> Result<aws_sdk_dynamodb::Client, AwsError> {
    let sdk = aws(region, "cursor.region").await?;
    // A hung call must not outlive a lease: each attempt is cut at 5 s, the
    // call (with the SDK's retries) at 15 s.
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&sdk).timeout_config(
        aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(std::time::Duration::from_secs(5))
            .operation_timeout(std::time::Duration::from_secs(15))
            .build(),
    );
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(aws_sdk_dynamodb::Client::from_conf(builder.build()))
}

/// A Kinesis client (`sink.region`, `sink.endpoint`). Its users retry on their
/// own, with backoff and without a time limit, so SDK retries are off (they
/// would hide throttling from the log and metrics); a call that hangs is
/// given up after 30 s and retried like a 5xx.
pub async fn kinesis_client(
    region: &Option<String>,
    endpoint: &Option<String>,
) -> Result<aws_sdk_kinesis::Client, AwsError> {
    let sdk = aws(region, "sink.region").await?;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&sdk)
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .build(),
        );
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Ok(aws_sdk_kinesis::Client::from_conf(builder.build()))
}
