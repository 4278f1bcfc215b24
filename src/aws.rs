//! AWS clients and error helpers shared by the resource modules.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::engine::StepError;

mod failure;
pub use failure::{AwsFailure, Cause, CredentialsProblem};

/// Where and as whom to call AWS; resolved from flags and the standard chain.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub limits: crate::config::AwsConfig,
}

#[derive(Clone)]
pub struct Clients {
    pub iot: aws_sdk_iot::Client,
    /// IoT with the SDK's retry off, for creates that must not be repeated blindly: every
    /// CreateCertificateFromCsr issues a new certificate, so a retry after a lost answer
    /// would leave a duplicate. Its caller retries itself, looking for the result first.
    pub iot_no_retry: aws_sdk_iot::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sts: aws_sdk_sts::Client,
    pub sns: aws_sdk_sns::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// S3 for a bulk registration's input (src/resources/bulk): path-style addressing against
    /// an endpoint override, where bucket host names do not resolve.
    pub s3: aws_sdk_s3::Client,
    /// Telemetry analytics: its stream, the detector's table and its failure queue.
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sdk_config: aws_types::SdkConfig,
    /// The iot-data client needs the account's data endpoint, looked up lazily.
    pub endpoint_override: Option<String>,
    data: std::sync::Arc<tokio::sync::OnceCell<aws_sdk_iotdataplane::Client>>,
}

/// Loads the shared SDK config. Retries: the SDK's standard mode (throttling, 5xx and network
/// errors, with exponential backoff and jitter). Timeouts bound every call so a hung endpoint
/// is an error naming the call, never a hang.
pub async fn sdk_config(remote: &Remote) -> aws_types::SdkConfig {
    let l = &remote.limits;
    let secs = Duration::from_secs_f64;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(l.max_attempts)
                .with_max_backoff(Duration::from_secs(10)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(secs(l.connect_timeout_s))
                .read_timeout(secs(l.attempt_timeout_s))
                .operation_attempt_timeout(secs(l.attempt_timeout_s))
                .operation_timeout(secs(l.call_timeout_s))
                .build(),
        );
    if let Some(region) = &remote.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(profile) = &remote.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &remote.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

impl Clients {
    pub fn new(config: &aws_types::SdkConfig) -> Clients {
        Clients {
            iot: aws_sdk_iot::Client::from_conf(
                aws_sdk_iot::config::Builder::from(config)
                    .interceptor(crate::ratelimit::Feedback)
                    .build(),
            ),
            iot_no_retry: aws_sdk_iot::Client::from_conf(
                aws_sdk_iot::config::Builder::from(config)
                    .retry_config(RetryConfig::disabled())
                    .interceptor(crate::ratelimit::Feedback)
                    .build(),
            ),
            iam: aws_sdk_iam::Client::new(config),
            lambda: aws_sdk_lambda::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(config)
                    .force_path_style(config.endpoint_url().is_some())
                    .build(),
            ),
            kinesis: aws_sdk_kinesis::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            endpoint_override: config.endpoint_url().map(str::to_string),
            sdk_config: config.clone(),
            data: Default::default(),
        }
    }

    /// Clients built elsewhere (SDK-level tests with mocked clients).
    #[cfg(test)]
    pub fn from_parts(
        iot: aws_sdk_iot::Client,
        iam: aws_sdk_iam::Client,
        lambda: aws_sdk_lambda::Client,
        logs: aws_sdk_cloudwatchlogs::Client,
    ) -> Clients {
        let sdk_config = aws_types::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        Clients {
            iot_no_retry: iot.clone(),
            iot,
            iam,
            lambda,
            logs,
            sts: aws_sdk_sts::Client::new(&sdk_config),
            sns: aws_sdk_sns::Client::new(&sdk_config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk_config),
            s3: aws_sdk_s3::Client::new(&sdk_config),
            kinesis: aws_sdk_kinesis::Client::new(&sdk_config),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk_config),
            sqs: aws_sdk_sqs::Client::new(&sdk_config),
            endpoint_override: Some("http://127.0.0.1:9".into()),
            sdk_config,
            data: Default::default(),
        }
    }

    /// The IoT data-plane client. On AWS its endpoint is per account (DescribeEndpoint
    /// `iot:Data-ATS`); with an endpoint override (an emulator) the override serves it.
    pub async fn data(&self) -> Result<&aws_sdk_iotdataplane::Client, StepError> {
        self.data
            .get_or_try_init(|| async {
                let mut builder = aws_sdk_iotdataplane::config::Builder::from(&self.sdk_config)
                    .interceptor(crate::ratelimit::Feedback);
                if self.endpoint_override.is_none() {
                    let host = self.data_endpoint().await?;
                    builder = builder.endpoint_url(format!("https://{host}"));
                }
                Ok(aws_sdk_iotdataplane::Client::from_conf(builder.build()))
            })
            .await
    }

    /// The device data endpoint (host name) for this account and region.
    pub async fn data_endpoint(&self) -> Result<String, StepError> {
        let out = self
            .iot
            .describe_endpoint()
            .endpoint_type("iot:Data-ATS")
            .send()
            .await
            .map_err(|e| failed("data endpoint", "iot:Data-ATS", "DescribeEndpoint", e))?;
        out.endpoint_address
            .ok_or_else(|| StepError::Failed("DescribeEndpoint returned no address".into()))
    }

    pub async fn account(&self) -> Result<String, StepError> {
        let out =
            self.sts.get_caller_identity().send().await.map_err(|e| {
                failed("credentials", "caller identity", "sts:GetCallerIdentity", e)
            })?;
        out.account
            .ok_or_else(|| StepError::Failed("GetCallerIdentity returned no account".into()))
    }
}

/// The partition for ARNs built from a region (aws, aws-cn, aws-us-gov).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Turns an SDK error into a step error naming the resource and the call: a typed
/// [`AwsFailure`] whose text is one short line (the whole cause chain is kept for `-v`).
pub fn failed<E>(kind: &str, name: &str, call: &str, err: SdkError<E, HttpResponse>) -> StepError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let failure = AwsFailure::new(kind, name, call, &err);
    if let Some(show) = DETAILS.get() {
        show(&format!("{failure}\n    detail: {}", failure.detail));
    }
    StepError::Aws(failure)
}

/// Where `-v` sends the full detail of each failure. The engine keeps a step's error only as
/// text, so the detail is handed over here, when the failure is built, or it would be lost.
static DETAILS: std::sync::OnceLock<DetailSink> = std::sync::OnceLock::new();

type DetailSink = Box<dyn Fn(&str) + Send + Sync>;

/// Shows every AWS failure's full detail through `show` from now on (`-v`).
pub fn show_failure_details(show: impl Fn(&str) + Send + Sync + 'static) {
    let _ = DETAILS.set(Box::new(show));
}

/// The error's AWS code, for the few cases where a service reports a condition without a typed
/// variant in its model (documented at each use).
pub fn code_of<E: ProvideErrorMetadata>(err: &E) -> Option<&str> {
    err.code()
}

/// Whether the service refused the call for its rate (429, or a throttling code): the request
/// was not carried out, so it can be sent again without looking for its result first.
pub fn is_throttling<E: ProvideErrorMetadata>(
    err: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::http::Response,
    >,
) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::ServiceError(se) => {
            se.raw().status().as_u16() == 429
                || se.err().code().is_some_and(|c| {
                    matches!(
                        c,
                        "ThrottlingException"
                            | "TooManyRequestsException"
                            | "Throttling"
                            | "RequestLimitExceeded"
                    )
                })
        }
        _ => false,
    }
}

/// Whether an error may go away on its own: a timeout, a network failure, a malformed response,
/// throttling or a 5xx. Used where iotreg retries a call itself instead of letting the SDK do it.
pub fn is_transient<E: ProvideErrorMetadata>(
    err: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::http::Response,
    >,
) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            status >= 500
                || status == 429
                || se
                    .err()
                    .code()
                    .is_some_and(|c| c.contains("Throttl") || c == "TooManyRequestsException")
        }
        _ => false,
    }
}
