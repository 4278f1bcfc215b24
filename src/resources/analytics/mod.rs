//! Telemetry analytics (`[analytics]`): the readings go, through a second topic rule, onto a
//! Kinesis data stream; an anomaly detector function reads the stream through an event
//! source mapping, keeps each device's recent readings in a DynamoDB table, and publishes each
//! anomaly to the alert topic. A batch the detector keeps failing on is split until the record
//! at fault is alone, and then sent to a failure queue, so one bad reading never stops the
//! stream.
//!
//! Why a second rule rather than a second action on the processor's rule: the detector needs
//! every reading, whatever the processor's SQL selects (a user's `rule.sql` may filter), and
//! turning analytics on or off then creates or deletes a rule of its own instead of rewriting
//! the processor's. Why DynamoDB for the per-device state rather than the mapping's tumbling
//! windows: a window's state lasts at most 15 minutes and is at most 1 MB per shard, so every
//! device would start again from nothing every quarter of an hour, and a shard could carry
//! only a few thousand devices' histories; a table keeps each device's history for as long as
//! it reports, at any fleet size, and survives a redeployed function.

use std::sync::Arc;

use super::{Deployment, FunctionSpec, InlinePolicy, RoleSpec, RuleSpec};
use crate::config::analytics::{AnalyticsConfig, StartingPosition};

pub mod mapping;
pub mod queue;
pub mod stream;
pub mod table;
#[cfg(test)]
mod tests;

pub const STREAM: &str = "analytics_stream";
pub const RULE_ROLE: &str = "analytics_rule_role";
pub const RULE: &str = "analytics_rule";
pub const TABLE: &str = "detector_table";
pub const QUEUE: &str = "detector_failures";
pub const DETECTOR_ROLE: &str = "detector_role";
pub const DETECTOR: &str = "detector_function";
pub const MAPPING: &str = "analytics_mapping";

/// The topic and the partition key: every reading of the recipe's topic, keyed by its device
/// so that a device's readings stay in order on one shard. Readings marked `iotreg_verify`
/// (verify's 85.5 °C test reading, on the real device's topic) stay out: in a device's history
/// they would be an outlier raising an alert at every verify.
pub const SQL: &str = "SELECT *, topic(3) AS device, timestamp() AS aws_timestamp \
     FROM 'sensor/temperature/+' WHERE isUndefined(iotreg_verify)";
pub const PARTITION_KEY: &str = "${topic(3)}";
/// The detector's module in its package.
pub const DETECTOR_FILE: &str = "anomaly_detector.py";
/// Failure records stay in the queue for SQS's longest retention, 14 days.
pub const QUEUE_RETENTION_S: u32 = 1_209_600;

/// The analytics stack, resolved: names, ARNs, the detector's package and settings.
#[derive(Debug, Clone)]
pub struct AnalyticsSpec {
    pub stream_name: String,
    pub stream_arn: String,
    /// Provisioned shards; None: on-demand.
    pub shards: Option<u32>,
    pub rule: RuleSpec,
    pub rule_role: RoleSpec,
    pub table_name: String,
    pub table_arn: String,
    pub queue_name: String,
    pub queue_arn: String,
    pub detector_role: RoleSpec,
    pub function: FunctionSpec,
    /// Readings a device sends before its z-score may fire (the detector's MIN_HISTORY):
    /// what verify's probe must send first.
    pub min_history: u32,
    pub mapping: MappingSpec,
}

#[derive(Debug, Clone)]
pub struct MappingSpec {
    pub batch_size: u32,
    pub batching_window_s: u32,
    pub starting_position: StartingPosition,
    pub retries: u32,
    pub bisect_on_error: bool,
}

/// Whether the config wants the analytics stack.
pub fn wanted(d: &Deployment) -> bool {
    d.analytics.is_some()
}

/// Builds the spec from the config; `zip` is the detector's package.
#[allow(clippy::too_many_arguments)]
pub fn spec(
    c: &AnalyticsConfig,
    name: impl Fn(&str) -> String,
    arn: impl Fn(&str, &str) -> String,
    runtime: &str,
    alert_topic_arn: &str,
    basic_execution: String,
    zip: Vec<u8>,
) -> Arc<AnalyticsSpec> {
    let stream_name = name(&c.stream_name);
    let stream_arn = arn("kinesis", &format!("stream/{stream_name}"));
    let table_name = name(&c.table_name);
    let table_arn = arn("dynamodb", &format!("table/{table_name}"));
    let queue_name = name(&c.failure_queue_name);
    let queue_arn = arn("sqs", &queue_name);
    let statement = |actions: &[&str], resource: &str| serde_json::json!({"Effect": "Allow", "Action": actions, "Resource": resource});
    let rule_role = RoleSpec {
        name: name(&c.rule_role_name),
        trust_policy: super::role::trust_policy("iot.amazonaws.com"),
        managed_policies: vec![],
        inline_policy: Some(InlinePolicy {
            name: "put-records".into(),
            document: serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [statement(&["kinesis:PutRecord"], &stream_arn)],
            }),
        }),
    };
    // What the mapping reads the stream with (Lambda checks the function's role for these when
    // the mapping is created), the table, the alert topic and the failure queue.
    let detector_role = RoleSpec {
        name: name(&c.role_name),
        trust_policy: super::role::trust_policy("lambda.amazonaws.com"),
        managed_policies: vec![basic_execution],
        inline_policy: Some(InlinePolicy {
            name: "detector".into(),
            document: serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [
                    statement(
                        &[
                            "kinesis:DescribeStream",
                            "kinesis:DescribeStreamSummary",
                            "kinesis:GetRecords",
                            "kinesis:GetShardIterator",
                            "kinesis:ListShards",
                        ],
                        &stream_arn,
                    ),
                    statement(&["kinesis:ListStreams"], "*"),
                    // The detector reads and writes a batch's devices in one call each.
                    statement(
                        &["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"],
                        &table_arn,
                    ),
                    statement(&["sns:Publish"], alert_topic_arn),
                    // Lambda sends a failed batch's record to the queue as the function's role.
                    statement(&["sqs:SendMessage"], &queue_arn),
                ],
            }),
        }),
    };
    let environment = [
        ("TABLE_NAME", table_name.clone()),
        ("ALERT_TOPIC_ARN", alert_topic_arn.to_string()),
        ("FIELD", c.field.clone()),
        ("WINDOW", c.window.to_string()),
        ("MIN_HISTORY", c.min_history.to_string()),
        ("THRESHOLD", c.threshold.to_string()),
        ("STUCK_COUNT", c.stuck_count.to_string()),
        ("MAX_RATE", c.max_rate.to_string()),
        ("RATE_WINDOW", c.rate_window.to_string()),
        ("STATE_TTL_DAYS", c.state_ttl_days.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let module = DETECTOR_FILE.trim_end_matches(".py");
    Arc::new(AnalyticsSpec {
        rule: RuleSpec {
            name: name(&c.rule_name),
            description: format!("Puts every reading on the Kinesis stream {stream_name}"),
            sql: SQL.into(),
            sql_version: "2016-03-23".into(),
            enabled: true,
        },
        rule_role,
        function: FunctionSpec {
            name: name(&c.function_name),
            description: format!("Finds anomalies in the readings of {stream_name}"),
            runtime: runtime.to_string(),
            memory_mb: 256,
            // A batch of 100 devices' readings is a handful of DynamoDB calls; a minute leaves
            // room for a throttled table or SNS without timing out a batch.
            timeout_s: 60,
            handler: format!("{module}.lambda_handler"),
            environment,
            code_sha256: crate::templates::code_sha256(&zip),
            zip,
        },
        detector_role,
        min_history: c.min_history,
        mapping: MappingSpec {
            batch_size: c.batch_size,
            batching_window_s: c.batching_window_s,
            starting_position: c.starting_position,
            retries: c.retries,
            bisect_on_error: c.bisect_on_error,
        },
        stream_name,
        stream_arn,
        shards: c.shards,
        table_name,
        table_arn,
        queue_name,
        queue_arn,
    })
}

/// What a poll of a resource in transition found.
pub(crate) enum Poll {
    Done,
    /// Still in this state.
    Waiting(String),
}

/// Polls until `poll` says done, backing off, within `backoff`'s budget: Kinesis, DynamoDB and
/// Lambda all create, change and delete these resources asynchronously. `what` names the
/// resource in the progress line and the error.
pub(crate) async fn wait_until<F, Fut>(
    cx: &crate::engine::Ctx,
    backoff: crate::retry::Backoff,
    what: &str,
    mut poll: F,
) -> Result<(), crate::engine::StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Poll, crate::engine::StepError>>,
{
    let mut delays = backoff.delays();
    loop {
        let Poll::Waiting(state) = poll().await? else {
            return Ok(());
        };
        let Some(delay) = delays.next() else {
            return Err(crate::engine::StepError::Failed(format!(
                "{what}: still {state} after {}s",
                backoff.budget.as_secs()
            )));
        };
        cx.progress(&format!("waiting: {what} is {state}"));
        tokio::time::sleep(delay).await;
    }
}

/// The analytics spec, for a change `up` carries out (only ever asked of a wanted resource).
pub(crate) fn configured(d: &Deployment) -> Result<&AnalyticsSpec, crate::engine::StepError> {
    of(d).ok_or_else(|| crate::engine::StepError::Failed("analytics is not configured".into()))
}

/// How long a stream or a table may take to become ACTIVE, or to finish deleting: AWS
/// documents seconds to minutes.
pub(crate) const TRANSITION: crate::retry::Backoff = crate::retry::Backoff {
    initial: std::time::Duration::from_millis(250),
    max_delay: std::time::Duration::from_secs(5),
    budget: std::time::Duration::from_secs(300),
};

/// The analytics spec, for a resource the deployment wants: a stray (analytics turned off)
/// is only ever deleted by its record, and never asks.
pub(crate) fn of(d: &Deployment) -> Option<&AnalyticsSpec> {
    d.analytics.as_deref()
}
