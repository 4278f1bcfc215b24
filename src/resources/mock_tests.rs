//! SDK-level tests with `aws-smithy-mocks`, for AWS behaviour the local emulator does not have:
//! IAM propagation delays, the thing type's five-minute deprecation rule, not-found answers on
//! delete, and already-exists answers on create.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::operation::delete_log_group::DeleteLogGroupError;
use aws_sdk_iam::operation::list_attached_role_policies::ListAttachedRolePoliciesError;
use aws_sdk_iot::operation::create_policy::CreatePolicyError;
use aws_sdk_iot::operation::delete_thing_type::{DeleteThingTypeError, DeleteThingTypeOutput};
use aws_sdk_iot::operation::deprecate_thing_type::DeprecateThingTypeOutput;
use aws_sdk_iot::operation::describe_thing_type::{
    DescribeThingTypeError, DescribeThingTypeOutput,
};
use aws_sdk_iot::operation::get_policy::GetPolicyError;
use aws_sdk_iot::operation::list_things::ListThingsOutput;
use aws_sdk_iot::operation::update_certificate::UpdateCertificateError;
use aws_sdk_iot::types::{ThingAttribute, ThingTypeMetadata};
use aws_sdk_lambda::operation::create_function::{CreateFunctionError, CreateFunctionOutput};
use aws_sdk_lambda::operation::delete_function::DeleteFunctionError;
use aws_sdk_lambda::operation::get_function::GetFunctionError;
use aws_smithy_mocks::{mock, Rule};

use super::testing::*;
use super::*;
use crate::engine::{Meta, Outcome, Resource, StepError};
use crate::state::{Phase, Record};

fn role_record() -> Record {
    let mut r = Record::new(ROLE, "IAM role", Phase::Created, "iot-lambda-role-abc123");
    r.arn = Some("arn:aws:iam::123456789012:role/iot-lambda-role-abc123".into());
    r
}

fn function_missing() -> Rule {
    mock!(aws_sdk_lambda::Client::get_function).then_error(|| {
        GetFunctionError::ResourceNotFoundException(
            aws_sdk_lambda::types::error::ResourceNotFoundException::builder().build(),
        )
    })
}

fn role_not_ready() -> CreateFunctionError {
    let message = "The role defined for the function cannot be assumed by Lambda.";
    CreateFunctionError::InvalidParameterValueException(
        aws_sdk_lambda::types::error::InvalidParameterValueException::builder()
            .message(message)
            .meta(meta("InvalidParameterValueException", message))
            .build(),
    )
}

#[tokio::test]
async fn create_function_waits_out_iam_propagation() {
    let get = function_missing();
    let create = mock!(aws_sdk_lambda::Client::create_function)
        .sequence()
        .error(role_not_ready)
        .times(3)
        .output(|| {
            CreateFunctionOutput::builder()
                .function_arn("arn:aws:lambda:us-east-1:123456789012:function:f")
                .build()
        })
        .build();
    let h = harness(&[], &[], &[&get, &create], &[], vec![role_record()], |_| {});
    let outcome = function::Function::processor(h.env.clone())
        .ensure(&h.cx)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Created);
    assert_eq!(create.num_calls(), 4, "three refusals, then success");
    let rec = h.cx.record(FUNCTION).unwrap();
    assert_eq!(rec.phase, Phase::Created);
    assert_eq!(
        rec.arn.as_deref(),
        Some("arn:aws:lambda:us-east-1:123456789012:function:f")
    );
}

#[tokio::test]
async fn iam_propagation_retry_is_bounded() {
    let get = function_missing();
    let create = mock!(aws_sdk_lambda::Client::create_function)
        .sequence()
        .error(role_not_ready)
        .repeatedly()
        .build();
    let h = harness(&[], &[], &[&get, &create], &[], vec![role_record()], |_| {});
    let err = function::Function::processor(h.env.clone())
        .ensure(&h.cx)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("CreateFunction failed (InvalidParameterValueException)"),
        "{msg}"
    );
    assert!(msg.contains("cannot be assumed by Lambda"), "{msg}");
    let budget = h.env.d.iam_retry.delays().count();
    assert_eq!(
        create.num_calls(),
        budget + 1,
        "one try per backoff delay, then give up"
    );
    // The intent stays: the create may or may not have happened, so resume must look.
    assert_eq!(h.cx.record(FUNCTION).unwrap().phase, Phase::Intent);
}

#[tokio::test]
async fn other_invalid_parameters_are_not_retried() {
    let get = function_missing();
    let create = mock!(aws_sdk_lambda::Client::create_function).then_error(|| {
        CreateFunctionError::InvalidParameterValueException(
            aws_sdk_lambda::types::error::InvalidParameterValueException::builder()
                .message("Value 'python9' at 'runtime' failed to satisfy constraint")
                .build(),
        )
    });
    let h = harness(&[], &[], &[&get, &create], &[], vec![role_record()], |_| {});
    assert!(function::Function::processor(h.env.clone())
        .ensure(&h.cx)
        .await
        .is_err());
    assert_eq!(create.num_calls(), 1);
}

fn thing_type_record() -> Record {
    Record::new(
        THING_TYPE,
        "thing type",
        Phase::Created,
        "TemperatureSensor",
    )
}

fn no_things() -> Rule {
    mock!(aws_sdk_iot::Client::list_things).then_output(|| ListThingsOutput::builder().build())
}

fn live_type(deprecated_secs_ago: Option<u64>) -> Rule {
    mock!(aws_sdk_iot::Client::describe_thing_type).then_output(move || {
        let mut meta = ThingTypeMetadata::builder().deprecated(deprecated_secs_ago.is_some());
        if let Some(ago) = deprecated_secs_ago {
            let t = std::time::SystemTime::now() - Duration::from_secs(ago);
            meta = meta.deprecation_date(aws_smithy_types::DateTime::from(t));
        }
        DescribeThingTypeOutput::builder()
            .thing_type_name("TemperatureSensor")
            .thing_type_metadata(meta.build())
            .build()
    })
}

fn too_soon() -> DeleteThingTypeError {
    DeleteThingTypeError::InvalidRequestException(
        aws_sdk_iot::types::error::InvalidRequestException::builder()
            .message("Please wait for 5 minutes after deprecation and then retry")
            .build(),
    )
}

#[tokio::test]
async fn down_deprecates_the_thing_type_and_leaves_it_pending_without_blocking() {
    let deprecate = mock!(aws_sdk_iot::Client::deprecate_thing_type)
        .then_output(|| DeprecateThingTypeOutput::builder().build());
    let delete = mock!(aws_sdk_iot::Client::delete_thing_type).then_error(too_soon);
    let (list, describe) = (no_things(), live_type(None));
    let h = harness(
        &[&list, &describe, &deprecate, &delete],
        &[],
        &[],
        &[],
        vec![thing_type_record()],
        |_| {},
    );
    let started = std::time::Instant::now();
    let outcome = thing_type::ThingType::current(h.env.clone())
        .destroy(&h.cx)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "did not block");
    let Outcome::Pending(msg) = outcome else {
        panic!("expected pending, got {outcome:?}")
    };
    assert!(msg.contains("iotreg down --wait"), "{msg}");
    assert_eq!(deprecate.num_calls(), 1);
    assert_eq!(delete.num_calls(), 1);
    let rec =
        h.cx.record(THING_TYPE)
            .expect("still recorded for the next down");
    assert!(rec.data_str("deletable_after").is_some());
}

#[tokio::test(start_paused = true)]
async fn down_wait_retries_until_aws_allows_the_delete() {
    let delete = mock!(aws_sdk_iot::Client::delete_thing_type)
        .sequence()
        .error(too_soon)
        .times(2)
        .output(|| DeleteThingTypeOutput::builder().build())
        .build();
    // Deprecated by an earlier `down` two minutes ago: no new DeprecateThingType call.
    let deprecate = mock!(aws_sdk_iot::Client::deprecate_thing_type)
        .then_output(|| DeprecateThingTypeOutput::builder().build());
    let (list, describe) = (no_things(), live_type(Some(120)));
    let h = harness(
        &[&list, &describe, &deprecate, &delete],
        &[],
        &[],
        &[],
        vec![thing_type_record()],
        |d| d.wait_for_thing_type = true,
    );
    let t0 = tokio::time::Instant::now();
    let outcome = thing_type::ThingType::current(h.env.clone())
        .destroy(&h.cx)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Deleted);
    assert_eq!(deprecate.num_calls(), 0, "already deprecated");
    assert_eq!(delete.num_calls(), 3);
    // It waited for the rest of the five minutes (about three), not a blind fixed sleep.
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(170) && waited < Duration::from_secs(300),
        "{waited:?}"
    );
    assert!(h.cx.record(THING_TYPE).is_none());
}

#[tokio::test]
async fn a_thing_type_other_things_use_is_left_alone() {
    let list = mock!(aws_sdk_iot::Client::list_things).then_output(|| {
        ListThingsOutput::builder()
            .things(
                ThingAttribute::builder()
                    .thing_name("someone-elses")
                    .build(),
            )
            .build()
    });
    let deprecate = mock!(aws_sdk_iot::Client::deprecate_thing_type)
        .then_output(|| DeprecateThingTypeOutput::builder().build());
    let delete = mock!(aws_sdk_iot::Client::delete_thing_type)
        .then_output(|| DeleteThingTypeOutput::builder().build());
    let h = harness(
        &[&list, &deprecate, &delete],
        &[],
        &[],
        &[],
        vec![thing_type_record()],
        |_| {},
    );
    let outcome = thing_type::ThingType::current(h.env.clone())
        .destroy(&h.cx)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Retained(_)), "{outcome:?}");
    assert_eq!(deprecate.num_calls() + delete.num_calls(), 0);
    assert!(
        h.cx.record(THING_TYPE).is_none(),
        "released from this deployment"
    );
}

#[tokio::test]
async fn a_borrowed_thing_type_not_made_by_iotreg_is_never_deleted() {
    let list = no_things();
    let tags = mock!(aws_sdk_iot::Client::list_tags_for_resource).then_output(|| {
        aws_sdk_iot::operation::list_tags_for_resource::ListTagsForResourceOutput::builder()
            .tags(
                aws_sdk_iot::types::Tag::builder()
                    .key("team")
                    .value("x")
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let deprecate = mock!(aws_sdk_iot::Client::deprecate_thing_type)
        .then_output(|| DeprecateThingTypeOutput::builder().build());
    let delete = mock!(aws_sdk_iot::Client::delete_thing_type)
        .then_output(|| DeleteThingTypeOutput::builder().build());
    let mut rec = thing_type_record();
    rec.phase = Phase::Borrowed;
    rec.arn = Some("arn:aws:iot:us-east-1:123456789012:thingtype/TemperatureSensor".into());
    let h = harness(
        &[&list, &tags, &deprecate, &delete],
        &[],
        &[],
        &[],
        vec![rec],
        |_| {},
    );
    let outcome = thing_type::ThingType::current(h.env.clone())
        .destroy(&h.cx)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Retained(ref why) if why.contains("not created by iotreg")));
    assert_eq!(tags.num_calls(), 1);
    assert_eq!(deprecate.num_calls() + delete.num_calls(), 0);
}

#[tokio::test]
async fn not_found_on_delete_means_already_done() {
    // Role: gone before we got to it.
    let role_gone = mock!(aws_sdk_iam::Client::list_attached_role_policies).then_error(|| {
        ListAttachedRolePoliciesError::NoSuchEntityException(
            aws_sdk_iam::types::error::NoSuchEntityException::builder()
                .message("not found")
                .build(),
        )
    });
    // Function and its log group: gone.
    let fn_gone = mock!(aws_sdk_lambda::Client::delete_function).then_error(|| {
        DeleteFunctionError::ResourceNotFoundException(
            aws_sdk_lambda::types::error::ResourceNotFoundException::builder().build(),
        )
    });
    let logs_gone = mock!(aws_sdk_cloudwatchlogs::Client::delete_log_group).then_error(|| {
        DeleteLogGroupError::ResourceNotFoundException(
            aws_sdk_cloudwatchlogs::types::error::ResourceNotFoundException::builder().build(),
        )
    });
    // Certificate: gone.
    let cert_gone = mock!(aws_sdk_iot::Client::update_certificate).then_error(|| {
        UpdateCertificateError::ResourceNotFoundException(
            aws_sdk_iot::types::error::ResourceNotFoundException::builder().build(),
        )
    });
    let mut cert = Record::new(CERTIFICATE, "certificate", Phase::Created, "c1");
    cert.id = Some("c1".into());
    cert.arn = Some("arn:aws:iot:us-east-1:123456789012:cert/c1".into());
    let func = Record::new(
        FUNCTION,
        "Lambda function",
        Phase::Created,
        "iot-data-processor-abc123",
    );
    let h = harness(
        &[&cert_gone],
        &[&role_gone],
        &[&fn_gone],
        &[&logs_gone],
        vec![role_record(), func, cert],
        |_| {},
    );
    assert_eq!(
        role::Role::lambda(h.env.clone())
            .destroy(&h.cx)
            .await
            .unwrap(),
        Outcome::Absent
    );
    assert_eq!(
        function::Function::processor(h.env.clone())
            .destroy(&h.cx)
            .await
            .unwrap(),
        Outcome::Absent
    );
    assert_eq!(
        logs_gone.num_calls(),
        1,
        "the log group is still looked after"
    );
    assert_eq!(
        certificate::Certificate(h.env.clone())
            .destroy(&h.cx)
            .await
            .unwrap(),
        Outcome::Absent
    );
    assert!(h.cx.record(ROLE).is_none() && h.cx.record(FUNCTION).is_none());
    assert!(h.cx.record(CERTIFICATE).is_none());
}

#[tokio::test]
async fn already_exists_on_create_keeps_the_intent_so_the_next_read_adopts() {
    // The create's first answer was lost and the retry meets the policy it made.
    let get = mock!(aws_sdk_iot::Client::get_policy).then_error(|| {
        GetPolicyError::ResourceNotFoundException(
            aws_sdk_iot::types::error::ResourceNotFoundException::builder().build(),
        )
    });
    let create = mock!(aws_sdk_iot::Client::create_policy).then_error(|| {
        CreatePolicyError::ResourceAlreadyExistsException(
            aws_sdk_iot::types::error::ResourceAlreadyExistsException::builder()
                .message("exists")
                .build(),
        )
    });
    let h = harness(&[&get, &create], &[], &[], &[], vec![], |_| {});
    let err = policy::Policy::device(h.env.clone())
        .ensure(&h.cx)
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::ExistsAfterCreate { .. }), "{err}");
    assert!(err.to_string().contains("device-policy-abc123"));
    assert_eq!(h.cx.record(POLICY).unwrap().phase, Phase::Intent);
}

#[tokio::test]
async fn a_thing_type_created_concurrently_by_another_deployment_is_shared() {
    let describe = mock!(aws_sdk_iot::Client::describe_thing_type).then_error(|| {
        DescribeThingTypeError::ResourceNotFoundException(
            aws_sdk_iot::types::error::ResourceNotFoundException::builder().build(),
        )
    });
    let create = mock!(aws_sdk_iot::Client::create_thing_type).then_error(|| {
        aws_sdk_iot::operation::create_thing_type::CreateThingTypeError::ResourceAlreadyExistsException(
            aws_sdk_iot::types::error::ResourceAlreadyExistsException::builder().build(),
        )
    });
    let h = harness(&[&describe, &create], &[], &[], &[], vec![], |_| {});
    let outcome = thing_type::ThingType::current(h.env.clone())
        .ensure(&h.cx)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Adopted);
    assert_eq!(h.cx.record(THING_TYPE).unwrap().phase, Phase::Borrowed);
}

/// A live, undeprecated TemperatureSensor with another description than the configured one.
fn type_described_otherwise() -> Rule {
    mock!(aws_sdk_iot::Client::describe_thing_type).then_output(|| {
        DescribeThingTypeOutput::builder()
            .thing_type_name("TemperatureSensor")
            .thing_type_properties(
                aws_sdk_iot::types::ThingTypeProperties::builder()
                    .thing_type_description("made by someone else")
                    .build(),
            )
            .thing_type_metadata(ThingTypeMetadata::builder().deprecated(false).build())
            .build()
    })
}

#[tokio::test]
async fn plan_replaces_an_own_thing_type_whose_description_changed_but_not_a_borrowed_one() {
    let describe = type_described_otherwise();
    let h = harness(
        &[&describe],
        &[],
        &[],
        &[],
        vec![thing_type_record()],
        |_| {},
    );
    let p = thing_type::ThingType::current(h.env.clone())
        .plan(&h.cx, true)
        .await
        .unwrap();
    assert_eq!(p.action, crate::plan::Action::Replace);
    assert!(!p.applicable, "up does not recreate a shared type");
    assert_eq!(p.changes[0].field, "description");
    assert_eq!(p.changes[0].origin, crate::plan::Origin::Unknown);
    assert!(p.note.unwrap().contains("rename thing_type.name"));

    // Borrowed: its properties are its owner's business.
    let describe = type_described_otherwise();
    let mut borrowed = thing_type_record();
    borrowed.phase = Phase::Borrowed;
    let h = harness(&[&describe], &[], &[], &[], vec![borrowed], |_| {});
    let p = thing_type::ThingType::current(h.env.clone())
        .plan(&h.cx, true)
        .await
        .unwrap();
    assert_eq!(p.action, crate::plan::Action::NoChange, "{p:?}");
}

#[tokio::test]
async fn plan_fails_naming_the_call_when_a_read_is_refused() {
    let describe = mock!(aws_sdk_iot::Client::describe_thing_type).then_error(|| {
        DescribeThingTypeError::generic(meta("AccessDeniedException", "not allowed"))
    });
    let h = harness(
        &[&describe],
        &[],
        &[],
        &[],
        vec![thing_type_record()],
        |_| {},
    );
    let e = thing_type::ThingType::current(h.env.clone())
        .plan(&h.cx, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DescribeThingType") && e.contains("AccessDeniedException"),
        "{e}"
    );
}

#[tokio::test]
async fn a_dashboard_already_deleted_is_absent_on_down() {
    use aws_sdk_cloudwatch::operation::delete_dashboards::DeleteDashboardsError;
    // DeleteDashboards has no typed not-found error: AWS answers the ResourceNotFound code.
    let delete = mock!(aws_sdk_cloudwatch::Client::delete_dashboards).then_error(|| {
        DeleteDashboardsError::generic(meta("ResourceNotFound", "Dashboard does not exist"))
    });
    let rec = recorded(
        DASHBOARD,
        "CloudWatch dashboard",
        "iot-device-registry-abc123",
        None,
    );
    let h = monitoring_harness(&[], &[&delete], vec![rec]);
    let outcome = dashboard::Dashboard(h.env.clone())
        .destroy(&h.cx)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Absent);
    assert!(h.cx.record(DASHBOARD).is_none());
    assert_eq!(delete.num_calls(), 1);
}

#[tokio::test]
async fn a_refused_dashboard_delete_keeps_the_record_and_names_the_call() {
    use aws_sdk_cloudwatch::operation::delete_dashboards::DeleteDashboardsError;
    let delete = mock!(aws_sdk_cloudwatch::Client::delete_dashboards)
        .then_error(|| DeleteDashboardsError::generic(meta("AccessDenied", "not allowed")));
    let rec = recorded(
        DASHBOARD,
        "CloudWatch dashboard",
        "iot-device-registry-abc123",
        None,
    );
    let h = monitoring_harness(&[], &[&delete], vec![rec]);
    let err = dashboard::Dashboard(h.env.clone())
        .destroy(&h.cx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("DeleteDashboards failed (AccessDenied)"),
        "{err}"
    );
    assert!(h.cx.record(DASHBOARD).is_some(), "still to delete");
}

#[tokio::test]
async fn an_alarm_already_deleted_is_absent_on_down() {
    use aws_sdk_cloudwatch::operation::delete_alarms::DeleteAlarmsError;
    let delete = mock!(aws_sdk_cloudwatch::Client::delete_alarms).then_error(|| {
        DeleteAlarmsError::ResourceNotFound(
            aws_sdk_cloudwatch::types::error::ResourceNotFound::builder().build(),
        )
    });
    let key = monitoring::ALARM_FUNCTION_ERRORS;
    let rec = recorded(
        key,
        "CloudWatch alarm",
        "iot-data-processor-abc123-errors",
        None,
    );
    let h = monitoring_harness(&[], &[&delete], vec![rec]);
    let alarm = alarm::Alarm::all(&h.env)
        .into_iter()
        .find(|a| a.key() == key)
        .unwrap();
    assert_eq!(alarm.destroy(&h.cx).await.unwrap(), Outcome::Absent);
    assert!(h.cx.record(key).is_none());
}

#[tokio::test]
async fn a_pending_subscription_aws_will_not_unsubscribe_goes_with_the_topic() {
    use aws_sdk_sns::operation::list_subscriptions_by_topic::ListSubscriptionsByTopicOutput;
    use aws_sdk_sns::operation::unsubscribe::UnsubscribeError;
    use aws_sdk_sns::types::Subscription;
    let unsubscribe = mock!(aws_sdk_sns::Client::unsubscribe).then_error(|| {
        UnsubscribeError::InvalidParameterException(
            aws_sdk_sns::types::error::InvalidParameterException::builder()
                .message("Invalid parameter: SubscriptionArn")
                .build(),
        )
    });
    let list = mock!(aws_sdk_sns::Client::list_subscriptions_by_topic).then_output(|| {
        ListSubscriptionsByTopicOutput::builder()
            .subscriptions(
                Subscription::builder()
                    .protocol("email")
                    .endpoint("ops@example.com")
                    .subscription_arn("PendingConfirmation")
                    .build(),
            )
            .build()
    });
    let arn = "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123:0f1e";
    let rec = recorded(
        ALERT_SUBSCRIPTION,
        "SNS email subscription",
        "ops@example.com",
        Some(arn),
    );
    let h = monitoring_harness(&[&unsubscribe, &list], &[], vec![rec]);
    let outcome = alert_subscription::AlertSubscription(h.env.clone())
        .destroy(&h.cx)
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Outcome::Retained(why) if why.contains("pending confirmation")),
        "{outcome:?}"
    );
    assert!(h.cx.record(ALERT_SUBSCRIPTION).is_none());
}

#[tokio::test]
async fn a_live_topic_this_state_does_not_own_is_refused() {
    use aws_sdk_sns::operation::get_topic_attributes::GetTopicAttributesOutput;
    let get = mock!(aws_sdk_sns::Client::get_topic_attributes)
        .then_output(|| GetTopicAttributesOutput::builder().build());
    let create = mock!(aws_sdk_sns::Client::create_topic)
        .then_output(|| aws_sdk_sns::operation::create_topic::CreateTopicOutput::builder().build());
    let h = monitoring_harness(&[&get, &create], &[], vec![]);
    let err = alert_topic::AlertTopic(h.env.clone())
        .ensure(&h.cx)
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::NotOurs { .. }), "{err}");
    // CreateTopic would have answered with the existing topic's ARN: it is never sent.
    assert_eq!(create.num_calls(), 0);
}

#[tokio::test]
async fn an_alarm_check_that_cannot_read_fails_naming_the_call() {
    use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsError;
    let describe = mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_error(|| {
        DescribeAlarmsError::generic(meta("AccessDenied", "no cloudwatch:DescribeAlarms"))
    });
    let h = monitoring_harness(&[], &[&describe], vec![]);
    let checks = alarm::Alarm::all(&h.env)[0].check(&h.cx).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, crate::verify::CheckStatus::Fail);
    assert!(
        checks[0]
            .reason
            .contains("DescribeAlarms failed (AccessDenied)"),
        "{}",
        checks[0].reason
    );
}
