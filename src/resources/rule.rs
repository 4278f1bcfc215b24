//! A topic rule. Two rules are this one kind: the recipe's, routing `sensor/temperature/+` to
//! the processor function, and, with analytics on, the one putting every reading on the
//! Kinesis stream. Each is a [`Slot`]: its key, its spec, and where its one action goes.

use std::sync::Arc;

use aws_sdk_iot::error::SdkError;
use aws_sdk_iot::operation::get_topic_rule::{GetTopicRuleError, GetTopicRuleOutput};
use aws_sdk_iot::types::{Action as RuleAction, KinesisAction, LambdaAction, TopicRulePayload};

use super::analytics;
use super::sdk::{self, op};
use super::{Deployment, Env, RuleSpec, FUNCTION, RULE};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};
use serde_json::Value;

const KIND: &str = "topic rule";
const ENABLED: &str = "enabled";

/// Where a rule's action sends what it selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Invoke the function of this ARN.
    Lambda(String),
    /// Put a record on the stream, as the role, keyed by the partition key template.
    Kinesis {
        stream: String,
        role_arn: String,
        partition_key: String,
    },
}

impl Target {
    /// How the action shows in a plan: the function's ARN (as it always has), or the stream.
    fn describe(&self) -> String {
        match self {
            Target::Lambda(arn) => arn.clone(),
            Target::Kinesis {
                stream,
                role_arn,
                partition_key,
            } => format!("kinesis {stream} as {role_arn}, partition key {partition_key}"),
        }
    }

    fn action(&self) -> Result<RuleAction, StepError> {
        let built = |e: aws_sdk_iot::error::BuildError| StepError::Failed(format!("{KIND}: {e}"));
        Ok(match self {
            Target::Lambda(arn) => RuleAction::builder()
                .lambda(
                    LambdaAction::builder()
                        .function_arn(arn)
                        .build()
                        .map_err(built)?,
                )
                .build(),
            Target::Kinesis {
                stream,
                role_arn,
                partition_key,
            } => RuleAction::builder()
                .kinesis(
                    KinesisAction::builder()
                        .stream_name(stream)
                        .role_arn(role_arn)
                        .partition_key(partition_key)
                        .build()
                        .map_err(built)?,
                )
                .build(),
        })
    }

    fn of(action: &RuleAction) -> Option<Target> {
        if let Some(l) = action.lambda() {
            return Some(Target::Lambda(l.function_arn().to_string()));
        }
        action.kinesis().map(|k| Target::Kinesis {
            stream: k.stream_name().to_string(),
            role_arn: k.role_arn().to_string(),
            partition_key: k.partition_key().unwrap_or_default().to_string(),
        })
    }
}

/// Which rule: everything that tells the two apart.
pub struct Slot {
    key: &'static str,
    check: &'static str,
    /// The rule's spec; None when the deployment has no such rule (a recorded one to delete).
    spec: fn(&Deployment) -> Option<&RuleSpec>,
    /// Its action's target, from the deployment and the records of what it targets (None
    /// while they are not recorded).
    target: fn(&Deployment, &Ctx) -> Option<Target>,
    /// What verify says the action does.
    says: &'static str,
    depends_on: &'static [&'static str],
}

pub const PROCESSOR: Slot = Slot {
    key: RULE,
    check: "rule.configuration",
    spec: |d| Some(&d.rule),
    target: |_, cx| cx.record(FUNCTION).and_then(|r| r.arn).map(Target::Lambda),
    says: "action targets the function",
    depends_on: &[FUNCTION],
};

pub const ANALYTICS: Slot = Slot {
    key: analytics::RULE,
    check: "analytics.rule",
    spec: |d| d.analytics.as_deref().map(|a| &a.rule),
    target: |d, cx| {
        let a = d.analytics.as_deref()?;
        Some(Target::Kinesis {
            stream: a.stream_name.clone(),
            role_arn: cx.record(analytics::RULE_ROLE).and_then(|r| r.arn)?,
            partition_key: analytics::PARTITION_KEY.into(),
        })
    },
    says: "action puts each reading on the stream",
    depends_on: &[analytics::STREAM, analytics::RULE_ROLE],
};

pub struct Rule(pub Arc<Env>, pub &'static Slot);

impl Rule {
    pub fn processor(env: Arc<Env>) -> Rule {
        Rule(env, &PROCESSOR)
    }

    /// The spec; a rule the config no longer wants is named by its record.
    fn spec(&self) -> RuleSpec {
        (self.1.spec)(&self.0.d).cloned().unwrap_or(RuleSpec {
            name: String::new(),
            description: String::new(),
            sql: String::new(),
            sql_version: String::new(),
            enabled: false,
        })
    }

    fn arn(&self, name: &str) -> String {
        self.0.d.arn("iot", &format!("rule/{name}"))
    }
}

impl Meta for Rule {
    fn key(&self) -> &str {
        self.1.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec().name
    }
    fn depends_on(&self) -> &[&'static str] {
        self.1.depends_on
    }
}

#[async_trait::async_trait]
impl Kind for Rule {
    type Live = GetTopicRuleOutput;

    fn desired(&self, cx: &Ctx) -> Fields {
        let rule = self.spec();
        let target = (self.1.target)(&self.0.d, cx)
            .map(|t| t.describe())
            .unwrap_or_default();
        Fields::from([
            ("actions".to_string(), vec![target].into()),
            ("description".to_string(), rule.description.into()),
            (ENABLED.to_string(), rule.enabled.into()),
            ("sql".to_string(), rule.sql.trim().into()),
            ("sql_version".to_string(), rule.sql_version.into()),
        ])
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<GetTopicRuleOutput>, StepError> {
        let name = super::name_to_read(
            (self.1.spec)(&self.0.d).map(|r| r.name.as_str()),
            cx,
            self.1.key,
        );
        self.get(&name).await
    }

    fn fields(&self, live: &GetTopicRuleOutput) -> Fields {
        let wanted = self.spec();
        let Some(rule) = live.rule() else {
            return Fields::new();
        };
        let actions: Vec<String> = rule
            .actions()
            .iter()
            .map(|a| match Target::of(a) {
                Some(t) => t.describe(),
                None => "(an action other than Lambda or Kinesis)".to_string(),
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
                    .unwrap_or(&wanted.sql_version)
                    .into(),
            ),
        ])
    }

    fn identify(&self, live: &GetTopicRuleOutput) -> String {
        live.rule_arn()
            .map(str::to_string)
            .unwrap_or_else(|| self.arn(&self.name()))
    }

    async fn apply(&self, cx: &Ctx, step: Step<GetTopicRuleOutput>) -> Result<Outcome, StepError> {
        let iot = &self.0.aws.iot;
        let key = self.1.key;
        let name = &self.name();
        let target = (self.1.target)(&self.0.d, cx).ok_or_else(|| {
            StepError::Failed("what the rule's action targets is missing from the state".into())
        })?;
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(key, KIND, Phase::Intent, name))?;
            sdk::create(
                op(KIND, name, "CreateTopicRule"),
                iot.create_topic_rule()
                    .rule_name(name)
                    .topic_rule_payload(self.payload(&target)?)
                    .send(),
                |e| e.is_resource_already_exists_exception(),
            )
            .await?;
            rec.phase = Phase::Created;
            rec.arn = Some(self.arn(name));
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
                    .topic_rule_payload(self.payload(&target)?)
                    .send(),
            )
            .await?;
        }
        let outcome = step.outcome((!changes.is_empty()).then(|| step.summary()));
        let mut rec = step.live_record(key, KIND, name);
        rec.arn = Some(self.identify(live));
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        self.1.check
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, GetTopicRuleOutput>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if check.status == CheckStatus::Pass {
            let state = if self.spec().enabled {
                "enabled"
            } else {
                "disabled as configured"
            };
            check.reason = format!("{state}, SQL as configured, {}", self.1.says);
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let key = self.1.key;
        let Some(rec) = cx.record(key) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        if self.get(name).await?.is_none() {
            cx.forget(key)?;
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
        cx.forget(key)?;
        Ok(Outcome::Deleted)
    }
}

impl Rule {
    fn payload(&self, target: &Target) -> Result<TopicRulePayload, StepError> {
        let rule = self.spec();
        TopicRulePayload::builder()
            .sql(&rule.sql)
            .description(&rule.description)
            .actions(target.action()?)
            .rule_disabled(!rule.enabled)
            .aws_iot_sql_version(&rule.sql_version)
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
        crate::resources::testing::plan_then_ensure(&Rule::processor(h.env.clone()), &h.cx).await
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
        let checks = Resource::check(&Rule::processor(h.env.clone()), &h.cx).await;
        assert_eq!(
            checks[0].reason,
            "enabled, SQL as configured, action targets the function"
        );
        let get = get_rule(SQL, true);
        let h = stack(&[&get], |_| {});
        let checks = Resource::check(&Rule::processor(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert_eq!(
            checks[0].reason,
            format!("{KIND} {NAME} differs: enabled: false → true")
        );
    }
}
