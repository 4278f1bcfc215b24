//! The topic rule routing `sensor/temperature/+` to the function.

use std::sync::Arc;

use aws_sdk_iot::error::SdkError;
use aws_sdk_iot::operation::get_topic_rule::{GetTopicRuleError, GetTopicRuleOutput};
use aws_sdk_iot::types::{Action as RuleAction, LambdaAction, TopicRulePayload};

use super::sdk::{self, op};
use super::{Env, FUNCTION, RULE};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};
use serde_json::Value;

const KIND: &str = "topic rule";
const ENABLED: &str = "enabled";

pub struct Rule(pub Arc<Env>);

impl Meta for Rule {
    fn key(&self) -> &str {
        RULE
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.rule.name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[FUNCTION]
    }
}

#[async_trait::async_trait]
impl Kind for Rule {
    type Live = GetTopicRuleOutput;

    fn desired(&self, cx: &Ctx) -> Fields {
        let d = &self.0.d;
        let function_arn = cx.record(FUNCTION).and_then(|r| r.arn).unwrap_or_default();
        Fields::from([
            ("actions".to_string(), vec![function_arn].into()),
            ("description".to_string(), d.rule.description.clone().into()),
            (ENABLED.to_string(), d.rule.enabled.into()),
            ("sql".to_string(), d.rule.sql.trim().into()),
            ("sql_version".to_string(), d.rule.sql_version.clone().into()),
        ])
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<GetTopicRuleOutput>, StepError> {
        self.get(&self.0.d.rule.name).await
    }

    fn fields(&self, live: &GetTopicRuleOutput) -> Fields {
        let d = &self.0.d;
        let Some(rule) = live.rule() else {
            return Fields::new();
        };
        let actions: Vec<String> = rule
            .actions()
            .iter()
            .map(|a| match a.lambda() {
                Some(l) => l.function_arn().to_string(),
                None => "(an action other than Lambda)".to_string(),
            })
            .collect();
        Fields::from([
            ("actions".to_string(), actions.into()),
            (
                "description".to_string(),
                rule.description().unwrap_or_default().into(),
            ),
            (
                ENABLED.to_string(),
                (!rule.rule_disabled().unwrap_or(false)).into(),
            ),
            (
                "sql".to_string(),
                rule.sql().unwrap_or_default().trim().into(),
            ),
            // Not every endpoint reports the version; only one it reports is compared.
            (
                "sql_version".to_string(),
                rule.aws_iot_sql_version()
                    .unwrap_or(&d.rule.sql_version)
                    .into(),
            ),
        ])
    }

    fn identify(&self, live: &GetTopicRuleOutput) -> String {
        live.rule_arn()
            .map(str::to_string)
            .unwrap_or_else(|| self.0.d.rule_arn())
    }

    async fn apply(&self, cx: &Ctx, step: Step<GetTopicRuleOutput>) -> Result<Outcome, StepError> {
        let iot = &self.0.aws.iot;
        let d = &self.0.d;
        let name = &d.rule.name;
        let function_arn = cx
            .record(FUNCTION)
            .and_then(|r| r.arn)
            .ok_or_else(|| StepError::Failed("function ARN missing from state".into()))?;
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(RULE, KIND, Phase::Intent, name))?;
            sdk::create(
                op(KIND, name, "CreateTopicRule"),
                iot.create_topic_rule()
                    .rule_name(name)
                    .topic_rule_payload(self.payload(&function_arn)?)
                    .send(),
                |e| e.is_resource_already_exists_exception(),
            )
            .await?;
            rec.phase = Phase::Created;
            rec.arn = Some(d.rule_arn());
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let changes = &step.plan.changes;
        let only_reenabled = matches!(
            changes.as_slice(),
            [c] if c.field == ENABLED && c.to == Some(Value::Bool(true))
        );
        if only_reenabled {
            sdk::send(
                op(KIND, name, "EnableTopicRule"),
                iot.enable_topic_rule().rule_name(name).send(),
            )
            .await?;
        } else if !changes.is_empty() {
            // Everything else (disabling too) is the whole rule sent again.
            sdk::send(
                op(KIND, name, "ReplaceTopicRule"),
                iot.replace_topic_rule()
                    .rule_name(name)
                    .topic_rule_payload(self.payload(&function_arn)?)
                    .send(),
            )
            .await?;
        }
        let outcome = step.outcome((!changes.is_empty()).then(|| step.summary()));
        let mut rec = step.live_record(RULE, KIND, name);
        rec.arn = Some(self.identify(live));
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "rule.configuration"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, GetTopicRuleOutput>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if check.status == CheckStatus::Pass {
            let state = if self.0.d.rule.enabled {
                "enabled"
            } else {
                "disabled as configured"
            };
            check.reason = format!("{state}, SQL as configured, action targets the function");
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(RULE) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        if self.get(name).await?.is_none() {
            cx.forget(RULE)?;
            return Ok(Outcome::Absent);
        }
        // A retried delete whose first answer was lost meets a missing rule. DeleteTopicRule's
        // model has no not-found error: emulators answer ResourceNotFoundException (matched by
        // code), AWS answers UnauthorizedException (a re-read tells it from a real denial).
        match self
            .0
            .aws
            .iot
            .delete_topic_rule()
            .rule_name(name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if crate::aws::code_of(&e) == Some("ResourceNotFoundException") => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_unauthorized_exception())
                    && self.get(name).await?.is_none() => {}
            Err(e) => return Err(crate::aws::failed(KIND, name, "DeleteTopicRule", e)),
        }
        cx.forget(RULE)?;
        Ok(Outcome::Deleted)
    }
}

impl Rule {
    fn payload(&self, function_arn: &str) -> Result<TopicRulePayload, StepError> {
        let d = &self.0.d;
        let action = RuleAction::builder()
            .lambda(
                LambdaAction::builder()
                    .function_arn(function_arn)
                    .build()
                    .map_err(|e| StepError::Failed(format!("{KIND}: {e}")))?,
            )
            .build();
        TopicRulePayload::builder()
            .sql(&d.rule.sql)
            .description(&d.rule.description)
            .actions(action)
            .rule_disabled(!d.rule.enabled)
            .aws_iot_sql_version(&d.rule.sql_version)
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: {e}")))
    }

    /// The live rule, or None. GetTopicRule's model has no not-found error: AWS answers
    /// UnauthorizedException for a rule that does not exist (indistinguishable from a real
    /// permission problem, so ListTopicRules decides), and emulators answer
    /// ResourceNotFoundException, recognised by its code since no typed variant exists.
    async fn get(&self, name: &str) -> Result<Option<GetTopicRuleOutput>, StepError> {
        let iot = &self.0.aws.iot;
        match iot.get_topic_rule().rule_name(name).send().await {
            Ok(out) => Ok(Some(out)),
            Err(e) if crate::aws::code_of(&e) == Some("ResourceNotFoundException") => Ok(None),
            Err(e) if is_unauthorized(&e) => {
                if self.listed(name).await? {
                    Err(crate::aws::failed(KIND, name, "GetTopicRule", e))
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(crate::aws::failed(KIND, name, "GetTopicRule", e)),
        }
    }

    async fn listed(&self, name: &str) -> Result<bool, StepError> {
        let mut pages = self.0.aws.iot.list_topic_rules().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| crate::aws::failed(KIND, name, "ListTopicRules", e))?;
            if page.rules().iter().any(|r| r.rule_name() == Some(name)) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn is_unauthorized(
    e: &SdkError<GetTopicRuleError, aws_smithy_runtime_api::http::Response>,
) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.is_unauthorized_exception())
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::create_topic_rule::CreateTopicRuleOutput;
    use aws_sdk_iot::operation::enable_topic_rule::EnableTopicRuleOutput;
    use aws_sdk_iot::operation::replace_topic_rule::ReplaceTopicRuleOutput;
    use aws_sdk_iot::types::TopicRule;
    use aws_smithy_mocks::{mock, Rule as MockRule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::plan::Planned;
    use crate::resources::testing::*;

    const NAME: &str = "sensor_data_rule_abc123";
    const ARN: &str = "arn:aws:iot:us-east-1:123456789012:rule/sensor_data_rule_abc123";
    const FUNCTION_ARN: &str =
        "arn:aws:lambda:us-east-1:123456789012:function:iot-data-processor-abc123";

    /// The live rule: as the harness's deployment wants it, but for `sql` and `disabled`.
    fn get_rule(sql: &'static str, disabled: bool) -> MockRule {
        mock!(aws_sdk_iot::Client::get_topic_rule)
            .match_requests(|r| r.rule_name() == Some(NAME))
            .then_output(move || {
                let action = RuleAction::builder()
                    .lambda(
                        LambdaAction::builder()
                            .function_arn(FUNCTION_ARN)
                            .build()
                            .unwrap(),
                    )
                    .build();
                GetTopicRuleOutput::builder()
                    .rule_arn(ARN)
                    .rule(
                        TopicRule::builder()
                            .rule_name(NAME)
                            .sql(sql)
                            .description("d")
                            .actions(action)
                            .rule_disabled(disabled)
                            .aws_iot_sql_version("2016-03-23")
                            .build(),
                    )
                    .build()
            })
    }

    const SQL: &str = "SELECT * FROM 'a'";

    fn replace() -> MockRule {
        mock!(aws_sdk_iot::Client::replace_topic_rule)
            .match_requests(|r| {
                r.rule_name() == Some(NAME)
                    && r.topic_rule_payload().is_some_and(|p| p.sql() == SQL)
            })
            .then_output(|| ReplaceTopicRuleOutput::builder().build())
    }

    fn records() -> Vec<Record> {
        vec![
            recorded(
                FUNCTION,
                "Lambda function",
                "iot-data-processor-abc123",
                Some(FUNCTION_ARN),
            ),
            recorded(RULE, KIND, NAME, Some(ARN)),
        ]
    }

    fn stack(iot: &[&MockRule], tweak: impl FnOnce(&mut crate::resources::Deployment)) -> Harness {
        harness(iot, &[], &[], &[], records(), tweak)
    }

    async fn plan_then_ensure(h: &Harness) -> (Planned, Outcome) {
        crate::resources::testing::plan_then_ensure(&Rule(h.env.clone()), &h.cx).await
    }

    fn fields(p: &Planned) -> Vec<&str> {
        crate::resources::testing::changed_fields(p)
    }

    #[tokio::test]
    async fn in_sync_is_unchanged_and_writes_nothing() {
        let get = get_rule(SQL, false);
        let h = stack(&[&get], |_| {});
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::NoChange, "{plan:?}");
        assert_eq!(outcome, Outcome::Unchanged);
        assert_eq!(h.cx.record(RULE), Some(records().remove(1)));
    }

    #[tokio::test]
    async fn a_disabled_rule_is_enabled_and_not_replaced() {
        let get = get_rule(SQL, true);
        let enable = mock!(aws_sdk_iot::Client::enable_topic_rule)
            .match_requests(|r| r.rule_name() == Some(NAME))
            .then_output(|| EnableTopicRuleOutput::builder().build());
        let h = stack(&[&get, &enable], |_| {});
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Update);
        assert_eq!(fields(&plan), [ENABLED]);
        assert_eq!(outcome, Outcome::Updated("enabled: false → true".into()));
        assert_eq!(enable.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_changed_sql_replaces_the_rule() {
        let get = get_rule("SELECT * FROM 'sensor/#'", false);
        let replace = replace();
        let h = stack(&[&get, &replace], |_| {});
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(fields(&plan), ["sql"]);
        assert!(matches!(outcome, Outcome::Updated(ref s) if s.starts_with("sql: ")));
        assert_eq!(replace.num_calls(), 1);
    }

    #[tokio::test]
    async fn disabling_is_a_replace_of_the_rule() {
        // EnableTopicRule's counterpart would need one more IAM permission than `up` has.
        let get = get_rule(SQL, false);
        let replace = mock!(aws_sdk_iot::Client::replace_topic_rule)
            .match_requests(|r| {
                r.topic_rule_payload()
                    .is_some_and(|p| p.rule_disabled() == Some(true))
            })
            .then_output(|| ReplaceTopicRuleOutput::builder().build());
        let h = stack(&[&get, &replace], |d| d.rule.enabled = false);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(fields(&plan), [ENABLED]);
        assert_eq!(outcome, Outcome::Updated("enabled: true → false".into()));
        assert_eq!(replace.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_missing_rule_is_created() {
        // GetTopicRule has no typed not-found error: the emulator's code is recognised.
        let get = mock!(aws_sdk_iot::Client::get_topic_rule)
            .then_error(|| GetTopicRuleError::generic(meta("ResourceNotFoundException", "gone")));
        let create = mock!(aws_sdk_iot::Client::create_topic_rule)
            .match_requests(|r| r.rule_name() == Some(NAME))
            .then_output(|| CreateTopicRuleOutput::builder().build());
        let mut recs = records();
        recs.pop();
        let h = harness(&[&get, &create], &[], &[], &[], recs, |_| {});
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Create);
        assert_eq!(outcome, Outcome::Created);
        assert_eq!(create.num_calls(), 1);
        assert_eq!(h.cx.record(RULE).unwrap().arn.as_deref(), Some(ARN));
    }

    #[tokio::test]
    async fn verify_judges_by_the_same_comparison() {
        let get = get_rule(SQL, false);
        let h = stack(&[&get], |_| {});
        let checks = Resource::check(&Rule(h.env.clone()), &h.cx).await;
        assert_eq!(
            checks[0].reason,
            "enabled, SQL as configured, action targets the function"
        );
        let get = get_rule(SQL, true);
        let h = stack(&[&get], |_| {});
        let checks = Resource::check(&Rule(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert_eq!(
            checks[0].reason,
            format!("{KIND} {NAME} differs: enabled: false → true")
        );
    }
}
