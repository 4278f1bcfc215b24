//! A CloudWatch alarm notifying the alert topic (one resource per alarm of
//! [`super::monitoring::alarms`]). PutMetricAlarm creates or replaces, so an update is the
//! same call as a create.
//!
//! [`put_alarm`] and [`delete_alarm`] are the two calls, usable outside the engine too: a job's
//! failure alarm ([`super::monitoring::job_failure_alarm`]) is made and removed by the job
//! commands, not by `up`.

use std::sync::Arc;

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricAlarm, Statistic};

use super::monitoring::AlarmSpec;
use super::sdk::{self, op};
use super::{Env, ALERT_TOPIC};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "CloudWatch alarm";

pub struct Alarm {
    pub env: Arc<Env>,
    pub spec: AlarmSpec,
}

impl Alarm {
    /// Every alarm of the deployment.
    pub fn all(env: &Arc<Env>) -> Vec<Alarm> {
        env.d
            .monitoring
            .alarms
            .iter()
            .map(|spec| Alarm {
                env: env.clone(),
                spec: spec.clone(),
            })
            .collect()
    }
}

impl Meta for Alarm {
    fn key(&self) -> &str {
        self.spec.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec.name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[ALERT_TOPIC]
    }
}

#[async_trait::async_trait]
impl Kind for Alarm {
    type Live = MetricAlarm;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let s = &self.spec;
        fields(
            s.description.clone(),
            format!("{} {}", s.namespace, s.metric),
            dimensions_text(s.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            condition(
                &s.statistic,
                s.period_s,
                s.evaluation_periods,
                &s.comparison,
                s.threshold,
            ),
            s.treat_missing_data.clone(),
            sorted(s.actions.clone()),
        )
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<MetricAlarm>, StepError> {
        let out = sdk::send(
            op(KIND, &self.spec.name, "DescribeAlarms"),
            self.env
                .aws
                .cloudwatch
                .describe_alarms()
                .alarm_names(&self.spec.name)
                .send(),
        )
        .await?;
        Ok(out
            .metric_alarms
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.alarm_name() == Some(self.spec.name.as_str())))
    }

    fn fields(&self, a: &MetricAlarm) -> Fields {
        let actions = sorted(a.alarm_actions().to_vec());
        fields(
            a.alarm_description().unwrap_or_default().to_string(),
            format!(
                "{} {}",
                a.namespace().unwrap_or_default(),
                a.metric_name().unwrap_or_default()
            ),
            dimensions_text(
                a.dimensions()
                    .iter()
                    .map(|d| (d.name().unwrap_or_default(), d.value().unwrap_or_default())),
            ),
            condition(
                a.statistic().map(|s| s.as_str()).unwrap_or("?"),
                a.period().unwrap_or(0),
                a.evaluation_periods().unwrap_or(0),
                a.comparison_operator().map(|c| c.as_str()).unwrap_or("?"),
                a.threshold().unwrap_or(f64::NAN),
            ),
            // AWS reports "missing" when it was never set; iotreg always sets it.
            a.treat_missing_data().unwrap_or("missing").to_string(),
            actions,
        )
    }

    fn identify(&self, live: &MetricAlarm) -> String {
        live.alarm_arn().unwrap_or_default().to_string()
    }

    /// PutMetricAlarm creates or replaces the whole alarm: any change is the same call.
    async fn apply(&self, cx: &Ctx, step: Step<MetricAlarm>) -> Result<Outcome, StepError> {
        let mut rec = Record::new(self.spec.key, KIND, Phase::Created, &self.spec.name);
        if let Some(live) = &step.live {
            rec.arn = live
                .alarm_arn()
                .map(str::to_string)
                .or(step.record.as_ref().and_then(|r| r.arn.clone()));
            if step.plan.changes.is_empty() {
                return cx.keep(step.record.as_ref(), rec);
            }
            put_alarm(&self.env.aws.cloudwatch, &self.spec).await?;
            cx.commit(rec)?;
            let fields: Vec<&str> = step.plan.changes.iter().map(|c| c.field.as_str()).collect();
            return Ok(Outcome::Updated(fields.join(", ")));
        }
        cx.intent(rec.clone())?;
        put_alarm(&self.env.aws.cloudwatch, &self.spec).await?;
        rec.arn = Some(
            self.env
                .d
                .arn("cloudwatch", &format!("alarm:{}", self.spec.name)),
        );
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    fn check_name(&self) -> &'static str {
        self.spec.check
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, MetricAlarm>) -> Vec<Check> {
        let name = self.check_name();
        let res = &seen.resource;
        vec![match seen.live {
            Some(live) if seen.changes.is_empty() => {
                let state = live
                    .state_value()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "unknown".into());
                Check::pass(
                    name,
                    res,
                    format!(
                        "watches {} {} and notifies {}; state {state}",
                        self.spec.namespace, self.spec.metric, self.env.d.monitoring.topic_name
                    ),
                )
            }
            Some(_) => {
                let fields: Vec<&str> = seen.changes.iter().map(|c| c.field.as_str()).collect();
                Check::fail(name, res, format!("{res} differs: {}", fields.join(", ")))
            }
            None => planning::comparison_check(name, &seen),
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let key = self.spec.key;
        let Some(rec) = cx.record(key) else {
            return Ok(Outcome::Absent);
        };
        let deleted = delete_alarm(&self.env.aws.cloudwatch, &rec.name).await?;
        cx.forget(key)?;
        Ok(Outcome::deleted_if(deleted))
    }
}

/// Creates the alarm `spec` describes, or replaces the one of that name with it: one
/// PutMetricAlarm (rate-limited; an error names the alarm and the call).
pub async fn put_alarm(cw: &aws_sdk_cloudwatch::Client, spec: &AlarmSpec) -> Result<(), StepError> {
    let s = spec;
    let dims = s
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    sdk::send(
        op(KIND, &s.name, "PutMetricAlarm"),
        cw.put_metric_alarm()
            .alarm_name(&s.name)
            .alarm_description(&s.description)
            .namespace(&s.namespace)
            .metric_name(&s.metric)
            .set_dimensions(Some(dims))
            .statistic(Statistic::from(s.statistic.as_str()))
            .period(s.period_s)
            .evaluation_periods(s.evaluation_periods)
            .threshold(s.threshold)
            .comparison_operator(ComparisonOperator::from(s.comparison.as_str()))
            .treat_missing_data(&s.treat_missing_data)
            .actions_enabled(true)
            .set_alarm_actions(Some(s.actions.clone()))
            .send(),
    )
    .await?;
    Ok(())
}

/// Deletes the alarm `name`: true when it was deleted, false when it was already gone.
pub async fn delete_alarm(cw: &aws_sdk_cloudwatch::Client, name: &str) -> Result<bool, StepError> {
    // DeleteAlarms of a missing alarm is ResourceNotFound on AWS and success in moto.
    let deleted = sdk::find(
        op(KIND, name, "DeleteAlarms"),
        cw.delete_alarms().alarm_names(name).send(),
        |e| e.is_resource_not_found(),
    )
    .await?;
    Ok(deleted.is_some())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    // CloudWatch does not promise to return the actions in the order they were put.
    v.sort();
    v
}

/// When the alarm fires, as one comparable text.
fn condition(
    statistic: &str,
    period_s: i32,
    evaluation_periods: i32,
    comparison: &str,
    threshold: f64,
) -> String {
    format!(
        "{statistic} over {period_s} s, {evaluation_periods} period(s), {comparison} {threshold}"
    )
}

fn dimensions_text<'a>(dims: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut d: Vec<String> = dims.map(|(k, v)| format!("{k}={v}")).collect();
    // CloudWatch does not promise to return dimensions in the order they were put.
    d.sort();
    d.join(", ")
}

fn fields(
    description: String,
    metric: String,
    dimensions: String,
    condition: String,
    missing_data: String,
    actions: Vec<String>,
) -> Fields {
    Fields::from([
        ("actions".to_string(), actions.into()),
        ("condition".to_string(), condition.into()),
        ("description".to_string(), description.into()),
        ("dimensions".to_string(), dimensions.into()),
        ("metric".to_string(), metric.into()),
        ("missing_data".to_string(), missing_data.into()),
    ])
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
    use aws_sdk_cloudwatch::operation::put_metric_alarm::PutMetricAlarmOutput;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::{monitoring_harness, recorded};

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123";

    /// The function-errors alarm as AWS describes it, with the given threshold.
    fn live(threshold: f64) -> Rule {
        mock!(aws_sdk_cloudwatch::Client::describe_alarms).then_output(move || {
            let alarm = MetricAlarm::builder()
                .alarm_name("iot-data-processor-abc123-errors")
                .alarm_arn("arn:aws:cloudwatch:us-east-1:123456789012:alarm:x")
                .alarm_description(
                    "Lambda function iot-data-processor-abc123 failed at least once in 5 minutes",
                )
                .namespace("AWS/Lambda")
                .metric_name("Errors")
                .dimensions(
                    Dimension::builder()
                        .name("FunctionName")
                        .value("iot-data-processor-abc123")
                        .build(),
                )
                .statistic(Statistic::Sum)
                .period(300)
                .evaluation_periods(1)
                .threshold(threshold)
                .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
                .treat_missing_data("notBreaching")
                .alarm_actions(TOPIC)
                .build();
            DescribeAlarmsOutput::builder().metric_alarms(alarm).build()
        })
    }

    fn errors_alarm(h: &crate::resources::testing::Harness) -> Alarm {
        Alarm::all(&h.env).remove(0)
    }

    fn rec() -> Record {
        recorded(
            "alarm_function_errors",
            KIND,
            "iot-data-processor-abc123-errors",
            Some("arn:aws:cloudwatch:us-east-1:123456789012:alarm:x"),
        )
    }

    #[tokio::test]
    async fn no_change_makes_no_write() {
        let read = live(1.0);
        let h = monitoring_harness(&[], &[&read], vec![rec()]);
        let alarm = errors_alarm(&h);
        assert_eq!(
            alarm.plan(&h.cx, true).await.unwrap().action,
            Action::NoChange
        );
        assert_eq!(alarm.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
    }

    #[tokio::test]
    async fn the_connect_failure_alarm_is_one_more_alarm_of_the_deployment() {
        let h = monitoring_harness(&[], &[], vec![]);
        let alarms = Alarm::all(&h.env);
        let connect = alarms
            .iter()
            .find(|a| a.key() == "alarm_connect_auth_errors")
            .expect("the connect-failure alarm is deployed with the others");
        assert_eq!(connect.check_name(), "alarm.connect_auth_errors");
        let desired = connect.desired(&h.cx);
        assert_eq!(
            desired["metric"],
            serde_json::json!("AWS/IoT Connect.AuthError")
        );
        assert_eq!(desired["dimensions"], serde_json::json!("Protocol=MQTT"));
        assert_eq!(
            desired["condition"],
            serde_json::json!("Sum over 300 s, 1 period(s), GreaterThanOrEqualToThreshold 5")
        );
        assert_eq!(desired["actions"], serde_json::json!([TOPIC]));
    }

    #[tokio::test]
    async fn put_alarm_sends_the_whole_spec_in_one_call() {
        let h = monitoring_harness(&[], &[], vec![]);
        let spec = crate::resources::monitoring::job_failure_alarm(&h.env.d, "fw-1").unwrap();
        let put = mock!(aws_sdk_cloudwatch::Client::put_metric_alarm)
            .match_requests(|r| {
                r.alarm_name() == Some("iot-job-failures-abc123-fw-1")
                    && r.namespace() == Some("AWS/IoT")
                    && r.metric_name() == Some("FailedJobExecutionTotalCount")
                    && r.dimensions().len() == 1
                    && r.dimensions()[0].name() == Some("JobId")
                    && r.dimensions()[0].value() == Some("fw-1")
                    && r.statistic() == Some(&Statistic::Maximum)
                    && r.period() == Some(300)
                    && r.evaluation_periods() == Some(1)
                    && r.threshold() == Some(1.0)
                    && r.comparison_operator()
                        == Some(&ComparisonOperator::GreaterThanOrEqualToThreshold)
                    && r.treat_missing_data() == Some("notBreaching")
                    && r.actions_enabled() == Some(true)
                    && r.alarm_actions() == [TOPIC]
            })
            .then_output(|| PutMetricAlarmOutput::builder().build());
        let cw = aws_smithy_mocks::mock_client!(aws_sdk_cloudwatch, [&put]);
        put_alarm(&cw, &spec).await.unwrap();
        assert_eq!(put.num_calls(), 1);
    }

    #[tokio::test]
    async fn delete_alarm_says_whether_there_was_one() {
        use aws_sdk_cloudwatch::operation::delete_alarms::{DeleteAlarmsError, DeleteAlarmsOutput};
        let gone = mock!(aws_sdk_cloudwatch::Client::delete_alarms)
            .match_requests(|r| r.alarm_names() == ["gone"])
            .then_error(|| {
                DeleteAlarmsError::ResourceNotFound(
                    aws_sdk_cloudwatch::types::error::ResourceNotFound::builder().build(),
                )
            });
        let there = mock!(aws_sdk_cloudwatch::Client::delete_alarms)
            .match_requests(|r| r.alarm_names() == ["there"])
            .then_output(|| DeleteAlarmsOutput::builder().build());
        let refused = mock!(aws_sdk_cloudwatch::Client::delete_alarms)
            .match_requests(|r| r.alarm_names() == ["refused"])
            .then_error(|| {
                DeleteAlarmsError::generic(crate::resources::testing::meta(
                    "AccessDenied",
                    "not allowed",
                ))
            });
        let cw = aws_smithy_mocks::mock_client!(
            aws_sdk_cloudwatch,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&gone, &there, &refused]
        );
        assert!(!delete_alarm(&cw, "gone").await.unwrap());
        assert!(delete_alarm(&cw, "there").await.unwrap());
        let e = delete_alarm(&cw, "refused").await.unwrap_err().to_string();
        assert!(e.contains("DeleteAlarms") && e.contains("refused"), "{e}");
    }

    #[tokio::test]
    async fn a_changed_threshold_is_one_put_metric_alarm_as_planned() {
        let read = live(5.0);
        let put = mock!(aws_sdk_cloudwatch::Client::put_metric_alarm)
            .match_requests(|r| r.threshold() == Some(1.0))
            .then_output(|| PutMetricAlarmOutput::builder().build());
        let h = monitoring_harness(&[], &[&read, &put], vec![rec()]);
        let alarm = errors_alarm(&h);
        let plan = alarm.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Update);
        assert_eq!(plan.changes[0].field, "condition");
        assert_eq!(
            alarm.ensure(&h.cx).await.unwrap(),
            Outcome::Updated("condition".into())
        );
        assert_eq!(put.num_calls(), 1);
    }
}
