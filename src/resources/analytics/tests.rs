//! The analytics resources against mocked AWS clients: what each create waits for, the errors
//! each one outlasts (a stream still CREATING, a queue name SQS still holds after a delete, a
//! detector role not yet propagated), what an in-sync plan costs, and what `down` sends.

use aws_sdk_dynamodb::operation::create_table::CreateTableOutput;
use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
use aws_sdk_dynamodb::operation::describe_time_to_live::DescribeTimeToLiveOutput;
use aws_sdk_dynamodb::operation::update_time_to_live::UpdateTimeToLiveOutput;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, BillingModeSummary, KeySchemaElement, KeyType,
    ScalarAttributeType, TableDescription, TableStatus, TimeToLiveDescription, TimeToLiveStatus,
};
use aws_sdk_kinesis::operation::create_stream::CreateStreamOutput;
use aws_sdk_kinesis::operation::describe_stream_summary::{
    DescribeStreamSummaryError, DescribeStreamSummaryOutput,
};
use aws_sdk_kinesis::types::{
    StreamDescriptionSummary, StreamMode, StreamModeDetails, StreamStatus,
};
use aws_sdk_lambda::operation::create_event_source_mapping::{
    CreateEventSourceMappingError, CreateEventSourceMappingOutput,
};
use aws_sdk_lambda::operation::get_event_source_mapping::GetEventSourceMappingOutput;
use aws_sdk_lambda::operation::list_event_source_mappings::ListEventSourceMappingsOutput;
use aws_sdk_sqs::operation::create_queue::{CreateQueueError, CreateQueueOutput};
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_smithy_mocks::mock;

use super::mapping::Mapping;
use super::queue::Queue;
use super::stream::Stream;
use super::table::Table;
use super::*;
use crate::engine::{Outcome, Resource};
use crate::plan::Action;
use crate::resources::testing::{analytics_harness, meta, recorded};

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/iot-telemetry-abc123";
const FUNCTION_ARN: &str =
    "arn:aws:lambda:us-east-1:123456789012:function:iot-anomaly-detector-abc123";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:iot-detector-failures-abc123";

fn summary(status: StreamStatus) -> DescribeStreamSummaryOutput {
    DescribeStreamSummaryOutput::builder()
        .stream_description_summary(
            StreamDescriptionSummary::builder()
                .stream_name("iot-telemetry-abc123")
                .stream_arn(STREAM_ARN)
                .stream_status(status)
                .stream_mode_details(
                    StreamModeDetails::builder()
                        .stream_mode(StreamMode::OnDemand)
                        .build()
                        .unwrap(),
                )
                .retention_period_hours(24)
                .stream_creation_timestamp(aws_smithy_types::DateTime::from_secs(0))
                .set_enhanced_monitoring(Some(vec![]))
                .open_shard_count(4)
                .build()
                .unwrap(),
        )
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_new_stream_is_on_demand_and_waited_for_until_active() {
    let not_found = || {
        DescribeStreamSummaryError::ResourceNotFoundException(
            aws_sdk_kinesis::types::error::ResourceNotFoundException::builder().build(),
        )
    };
    let describe = mock!(aws_sdk_kinesis::Client::describe_stream_summary)
        .sequence()
        .error(not_found)
        .output(|| summary(StreamStatus::Creating))
        .times(2)
        .output(|| summary(StreamStatus::Active))
        .build();
    let create = mock!(aws_sdk_kinesis::Client::create_stream)
        .match_requests(|r| {
            r.stream_name() == Some("iot-telemetry-abc123")
                && r.shard_count().is_none()
                && r.stream_mode_details()
                    .is_some_and(|m| m.stream_mode() == &StreamMode::OnDemand)
        })
        .then_output(|| CreateStreamOutput::builder().build());
    let h = analytics_harness(&[&describe, &create], &[], &[], &[], vec![]);
    let stream = Stream(h.env.clone());
    assert_eq!(stream.ensure(&h.cx).await.unwrap(), Outcome::Created);
    assert_eq!(create.num_calls(), 1);
    // The first read found nothing; then CREATING twice, then ACTIVE.
    assert_eq!(describe.num_calls(), 4);
    assert_eq!(
        h.cx.record(STREAM).unwrap().arn.as_deref(),
        Some(STREAM_ARN)
    );
}

#[tokio::test]
async fn an_active_stream_as_configured_is_unchanged_and_verified() {
    let describe = mock!(aws_sdk_kinesis::Client::describe_stream_summary)
        .then_output(|| summary(StreamStatus::Active));
    let rec = recorded(
        STREAM,
        "Kinesis stream",
        "iot-telemetry-abc123",
        Some(STREAM_ARN),
    );
    let h = analytics_harness(&[&describe], &[], &[], &[], vec![rec]);
    let stream = Stream(h.env.clone());
    assert_eq!(
        stream.plan(&h.cx, true).await.unwrap().action,
        Action::NoChange
    );
    let checks = stream.check(&h.cx).await;
    assert_eq!(
        checks[0].reason,
        "ACTIVE, on-demand, 4 open shard(s), records kept 24 h"
    );
}

fn table(status: TableStatus) -> TableDescription {
    TableDescription::builder()
        .table_name("iot-detector-state-abc123")
        .table_arn("arn:aws:dynamodb:us-east-1:123456789012:table/iot-detector-state-abc123")
        .table_status(status)
        .billing_mode_summary(
            BillingModeSummary::builder()
                .billing_mode(BillingMode::PayPerRequest)
                .build(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("device")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("device")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_new_table_gets_its_ttl_once_active() {
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table)
        .sequence()
        .error(|| {
            DescribeTableError::ResourceNotFoundException(
                aws_sdk_dynamodb::types::error::ResourceNotFoundException::builder().build(),
            )
        })
        .output(|| {
            DescribeTableOutput::builder()
                .table(table(TableStatus::Creating))
                .build()
        })
        .output(|| {
            DescribeTableOutput::builder()
                .table(table(TableStatus::Active))
                .build()
        })
        .build();
    let create = mock!(aws_sdk_dynamodb::Client::create_table)
        .match_requests(|r| r.billing_mode() == Some(&BillingMode::PayPerRequest))
        .then_output(|| {
            CreateTableOutput::builder()
                .table_description(table(TableStatus::Creating))
                .build()
        });
    let ttl = mock!(aws_sdk_dynamodb::Client::update_time_to_live)
        .match_requests(|r| {
            r.time_to_live_specification()
                .is_some_and(|t| t.enabled() && t.attribute_name() == "expires_at")
        })
        .then_output(|| UpdateTimeToLiveOutput::builder().build());
    let h = analytics_harness(&[], &[&describe, &create, &ttl], &[], &[], vec![]);
    assert_eq!(
        Table(h.env.clone()).ensure(&h.cx).await.unwrap(),
        Outcome::Created
    );
    assert_eq!((create.num_calls(), ttl.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_table_whose_ttl_was_turned_off_gets_it_back() {
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table).then_output(|| {
        DescribeTableOutput::builder()
            .table(table(TableStatus::Active))
            .build()
    });
    let ttl_off = mock!(aws_sdk_dynamodb::Client::describe_time_to_live).then_output(|| {
        DescribeTimeToLiveOutput::builder()
            .time_to_live_description(
                TimeToLiveDescription::builder()
                    .time_to_live_status(TimeToLiveStatus::Disabled)
                    .build(),
            )
            .build()
    });
    let ttl = mock!(aws_sdk_dynamodb::Client::update_time_to_live)
        .then_output(|| UpdateTimeToLiveOutput::builder().build());
    let rec = recorded(TABLE, "DynamoDB table", "iot-detector-state-abc123", None);
    let h = analytics_harness(&[], &[&describe, &ttl_off, &ttl], &[], &[], vec![rec]);
    let t = Table(h.env.clone());
    let plan = t.plan(&h.cx, true).await.unwrap();
    assert_eq!(plan.action, Action::Update);
    assert_eq!(
        t.ensure(&h.cx).await.unwrap(),
        Outcome::Updated("ttl_attribute: \"\" → \"expires_at\"".into())
    );
    assert_eq!(ttl.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_queue_name_sqs_still_holds_after_a_delete_is_waited_for() {
    let missing = mock!(aws_sdk_sqs::Client::get_queue_url).then_error(|| {
        GetQueueUrlError::QueueDoesNotExist(
            aws_sdk_sqs::types::error::QueueDoesNotExist::builder().build(),
        )
    });
    let create = mock!(aws_sdk_sqs::Client::create_queue)
        .sequence()
        .error(|| {
            CreateQueueError::QueueDeletedRecently(
                aws_sdk_sqs::types::error::QueueDeletedRecently::builder().build(),
            )
        })
        .times(2)
        .output(|| CreateQueueOutput::builder().queue_url("http://q").build())
        .build();
    let h = analytics_harness(&[], &[], &[&missing, &create], &[], vec![]);
    assert_eq!(
        Queue(h.env.clone()).ensure(&h.cx).await.unwrap(),
        Outcome::Created
    );
    assert_eq!(create.num_calls(), 3);
    assert_eq!(h.cx.record(QUEUE).unwrap().arn.as_deref(), Some(QUEUE_ARN));
}

fn mapping_records() -> Vec<crate::state::Record> {
    vec![
        recorded(
            DETECTOR,
            "Lambda function",
            "iot-anomaly-detector-abc123",
            Some(FUNCTION_ARN),
        ),
        recorded(
            STREAM,
            "Kinesis stream",
            "iot-telemetry-abc123",
            Some(STREAM_ARN),
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_mapping_waits_for_the_detectors_role_then_for_enabled() {
    let none = mock!(aws_sdk_lambda::Client::list_event_source_mappings)
        .then_output(|| ListEventSourceMappingsOutput::builder().build());
    // Lambda checks the function's role for the stream's read permissions: a new role's
    // policy takes a while to reach it.
    let create = mock!(aws_sdk_lambda::Client::create_event_source_mapping)
        .match_requests(|r| {
            r.bisect_batch_on_function_error() == Some(true)
                && r.maximum_retry_attempts() == Some(2)
                && r.destination_config()
                    .and_then(|d| d.on_failure())
                    .and_then(|f| f.destination())
                    == Some(QUEUE_ARN)
        })
        .sequence()
        .error(|| {
            CreateEventSourceMappingError::InvalidParameterValueException(
                aws_sdk_lambda::types::error::InvalidParameterValueException::builder()
                    .message("The function execution role does not have permissions to call GetRecords on Kinesis")
                    .build(),
            )
        })
        .output(|| {
            CreateEventSourceMappingOutput::builder()
                .uuid("u-1")
                .state("Creating")
                .build()
        })
        .build();
    let get = mock!(aws_sdk_lambda::Client::get_event_source_mapping)
        .sequence()
        .output(|| {
            GetEventSourceMappingOutput::builder()
                .uuid("u-1")
                .state("Creating")
                .build()
        })
        .output(|| {
            GetEventSourceMappingOutput::builder()
                .uuid("u-1")
                .state("Enabled")
                .build()
        })
        .build();
    let h = analytics_harness(&[], &[], &[], &[&none, &create, &get], mapping_records());
    let m = Mapping(h.env.clone());
    assert_eq!(m.ensure(&h.cx).await.unwrap(), Outcome::Created);
    assert_eq!((create.num_calls(), get.num_calls()), (2, 2));
    let rec = h.cx.record(MAPPING).unwrap();
    assert_eq!(rec.id.as_deref(), Some("u-1"));
    assert_eq!(rec.phase, crate::state::Phase::Created);
}

#[tokio::test]
async fn any_other_refusal_of_a_mapping_fails_at_once() {
    let none = mock!(aws_sdk_lambda::Client::list_event_source_mappings)
        .then_output(|| ListEventSourceMappingsOutput::builder().build());
    let create = mock!(aws_sdk_lambda::Client::create_event_source_mapping).then_error(|| {
        CreateEventSourceMappingError::generic(meta(
            "InvalidParameterValueException",
            "BatchSize is out of range",
        ))
    });
    let h = analytics_harness(&[], &[], &[], &[&none, &create], mapping_records());
    let err = Mapping(h.env.clone()).ensure(&h.cx).await.unwrap_err();
    assert!(
        err.to_string().contains("CreateEventSourceMapping"),
        "{err}"
    );
    assert_eq!(create.num_calls(), 1);
}

#[tokio::test]
async fn a_disabled_mapping_fails_verify_with_lambdas_reason() {
    let get = mock!(aws_sdk_lambda::Client::get_event_source_mapping).then_output(|| {
        GetEventSourceMappingOutput::builder()
            .uuid("u-1")
            .state("Enabled")
            .state_transition_reason("User action")
            .function_arn(FUNCTION_ARN)
            .event_source_arn(STREAM_ARN)
            .batch_size(100)
            .maximum_batching_window_in_seconds(1)
            .starting_position(aws_sdk_lambda::types::EventSourcePosition::Latest)
            .maximum_retry_attempts(2)
            .bisect_batch_on_function_error(true)
            .destination_config(
                aws_sdk_lambda::types::DestinationConfig::builder()
                    .on_failure(
                        aws_sdk_lambda::types::OnFailure::builder()
                            .destination(QUEUE_ARN)
                            .build(),
                    )
                    .build(),
            )
            .last_processing_result("OK")
            .build()
    });
    let mut recs = mapping_records();
    let mut rec = recorded(MAPPING, "event source mapping", "x", None);
    rec.id = Some("u-1".into());
    recs.push(rec);
    let h = analytics_harness(&[], &[], &[], &[&get], recs.clone());
    let checks = Mapping(h.env.clone()).check(&h.cx).await;
    assert_eq!(
        checks[0].status,
        crate::verify::CheckStatus::Pass,
        "{checks:?}"
    );
    assert!(
        checks[0].reason.ends_with("last result OK"),
        "{}",
        checks[0].reason
    );

    let disabled = mock!(aws_sdk_lambda::Client::get_event_source_mapping).then_output(|| {
        GetEventSourceMappingOutput::builder()
            .uuid("u-1")
            .state("Disabled")
            .function_arn(FUNCTION_ARN)
            .event_source_arn(STREAM_ARN)
            .build()
    });
    let h = analytics_harness(&[], &[], &[], &[&disabled], recs);
    let checks = Mapping(h.env.clone()).check(&h.cx).await;
    assert_eq!(checks[0].status, crate::verify::CheckStatus::Fail);
    assert!(
        checks[0].reason.contains("enabled: false → true"),
        "{}",
        checks[0].reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_the_same_name_still_deleting_is_waited_out_then_created() {
    // `down` then `up` with a pinned suffix: the old stream is DELETING for a while, and
    // Kinesis refuses a create of its name meanwhile.
    let describe = mock!(aws_sdk_kinesis::Client::describe_stream_summary)
        .sequence()
        .output(|| summary(StreamStatus::Deleting))
        .times(3)
        .error(|| {
            DescribeStreamSummaryError::ResourceNotFoundException(
                aws_sdk_kinesis::types::error::ResourceNotFoundException::builder().build(),
            )
        })
        .output(|| summary(StreamStatus::Active))
        .build();
    let create = mock!(aws_sdk_kinesis::Client::create_stream)
        .then_output(|| CreateStreamOutput::builder().build());
    let h = analytics_harness(&[&describe, &create], &[], &[], &[], vec![]);
    let stream = Stream(h.env.clone());
    assert_eq!(stream.ensure(&h.cx).await.unwrap(), Outcome::Created);
    assert_eq!(create.num_calls(), 1);
    // Planned from a DELETING stream (absent), twice more DELETING, gone, then ACTIVE.
    assert_eq!(describe.num_calls(), 5);
}

/// The live mapping `u-1` as configured, but starting from `position`.
fn live_mapping(
    position: aws_sdk_lambda::types::EventSourcePosition,
) -> GetEventSourceMappingOutput {
    GetEventSourceMappingOutput::builder()
        .uuid("u-1")
        .state("Enabled")
        .function_arn(FUNCTION_ARN)
        .event_source_arn(STREAM_ARN)
        .batch_size(100)
        .maximum_batching_window_in_seconds(1)
        .starting_position(position)
        .maximum_retry_attempts(2)
        .bisect_batch_on_function_error(true)
        .destination_config(
            aws_sdk_lambda::types::DestinationConfig::builder()
                .on_failure(
                    aws_sdk_lambda::types::OnFailure::builder()
                        .destination(QUEUE_ARN)
                        .build(),
                )
                .build(),
        )
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_new_starting_position_replaces_the_mapping() {
    use aws_sdk_lambda::operation::delete_event_source_mapping::DeleteEventSourceMappingOutput;
    use aws_sdk_lambda::types::EventSourcePosition;
    let old = mock!(aws_sdk_lambda::Client::get_event_source_mapping)
        .match_requests(|r| r.uuid() == Some("u-1"))
        .then_output(|| live_mapping(EventSourcePosition::TrimHorizon));
    let new = mock!(aws_sdk_lambda::Client::get_event_source_mapping)
        .match_requests(|r| r.uuid() == Some("u-2"))
        .then_output(|| {
            GetEventSourceMappingOutput::builder()
                .uuid("u-2")
                .state("Enabled")
                .build()
        });
    let delete = mock!(aws_sdk_lambda::Client::delete_event_source_mapping)
        .match_requests(|r| r.uuid() == Some("u-1"))
        .then_output(|| {
            DeleteEventSourceMappingOutput::builder()
                .uuid("u-1")
                .build()
        });
    let create = mock!(aws_sdk_lambda::Client::create_event_source_mapping)
        .match_requests(|r| r.starting_position() == Some(&EventSourcePosition::Latest))
        .then_output(|| {
            CreateEventSourceMappingOutput::builder()
                .uuid("u-2")
                .build()
        });
    let mut recs = mapping_records();
    let mut rec = recorded(
        MAPPING,
        "event source mapping",
        "iot-telemetry-abc123 → iot-anomaly-detector-abc123",
        None,
    );
    rec.id = Some("u-1".into());
    recs.push(rec);
    let h = analytics_harness(&[], &[], &[], &[&old, &new, &delete, &create], recs);
    let m = Mapping(h.env.clone());
    let plan = m.plan(&h.cx, true).await.unwrap();
    assert_eq!(plan.action, Action::Replace, "{plan:?}");
    assert!(plan.applicable);
    assert_eq!(m.ensure(&h.cx).await.unwrap(), Outcome::Created);
    assert_eq!((delete.num_calls(), create.num_calls()), (1, 1));
    assert_eq!(h.cx.record(MAPPING).unwrap().id.as_deref(), Some("u-2"));
}
