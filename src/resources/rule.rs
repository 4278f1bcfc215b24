//! The topic rule routing `sensor/temperature/+` to the function.

use std::sync::Arc;

use aws_sdk_iot::error::SdkError;
use aws_sdk_iot::operation::get_topic_rule::{GetTopicRuleError, GetTopicRuleOutput};
use aws_sdk_iot::types::{Action, LambdaAction, TopicRulePayload};

use super::{Env, FUNCTION, RULE};
use crate::call;
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "topic rule";

pub struct Rule(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Rule {
    fn key(&self) -> &str {
        RULE
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.rule_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[FUNCTION]
    }

    fn desired(&self, cx: &Ctx) -> Fields {
        let d = &self.0.d;
        let function_arn = cx.record(FUNCTION).and_then(|r| r.arn).unwrap_or_default();
        Fields::from([
            ("actions".to_string(), vec![function_arn].into()),
            ("description".to_string(), d.rule_description.clone().into()),
            ("enabled".to_string(), d.rule_enabled.into()),
            ("sql".to_string(), d.rule_sql.trim().into()),
            ("sql_version".to_string(), d.rule_sql_version.clone().into()),
        ])
    }

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        let d = &self.0.d;
        let Some(live) = self.get(&d.rule_name).await? else {
            return Ok(None);
        };
        let Some(rule) = live.rule() else {
            return Ok(Some(Fields::new()));
        };
        let actions: Vec<String> = rule
            .actions()
            .iter()
            .map(|a| match a.lambda() {
                Some(l) => l.function_arn().to_string(),
                None => "(an action other than Lambda)".to_string(),
            })
            .collect();
        Ok(Some(Fields::from([
            ("actions".to_string(), actions.into()),
            (
                "description".to_string(),
                rule.description().unwrap_or_default().into(),
            ),
            (
                "enabled".to_string(),
                (!rule.rule_disabled().unwrap_or(false)).into(),
            ),
            (
                "sql".to_string(),
                rule.sql().unwrap_or_default().trim().into(),
            ),
            // Not every endpoint reports the version; ensure only compares one it reports.
            (
                "sql_version".to_string(),
                rule.aws_iot_sql_version()
                    .unwrap_or(&d.rule_sql_version)
                    .into(),
            ),
        ])))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let iot = &self.0.aws.iot;
        let d = &self.0.d;
        let name = &d.rule_name;
        let function_arn = cx
            .record(FUNCTION)
            .and_then(|r| r.arn)
            .ok_or_else(|| StepError::Failed("function ARN missing from state".into()))?;
        let record = cx.record(RULE);
        if let Some(live) = self.get(name).await? {
            let Some(mut rec) = record.clone() else {
                return Err(StepError::NotOurs {
                    kind: KIND.into(),
                    name: name.clone(),
                });
            };
            let was_intent = rec.phase == Phase::Intent;
            rec.phase = Phase::Created;
            rec.arn = Some(
                live.rule_arn()
                    .map(str::to_string)
                    .unwrap_or_else(|| d.rule_arn()),
            );
            let diff = differences(&live, d, &function_arn);
            let outcome = if diff.is_empty() {
                if was_intent {
                    Outcome::Adopted
                } else {
                    Outcome::Unchanged
                }
            } else if diff == ["enabled: false → true"] {
                call!(
                    iot.enable_topic_rule().rule_name(name).send(),
                    KIND,
                    name,
                    "EnableTopicRule"
                );
                Outcome::Updated("re-enabled".into())
            } else {
                call!(
                    iot.replace_topic_rule()
                        .rule_name(name)
                        .topic_rule_payload(self.payload(&function_arn)?)
                        .send(),
                    KIND,
                    name,
                    "ReplaceTopicRule"
                );
                Outcome::Updated(diff.join(", "))
            };
            if record.as_ref() != Some(&rec) {
                cx.commit(rec)?;
            }
            return Ok(outcome);
        }
        let mut rec = cx.intent(Record::new(RULE, KIND, Phase::Intent, name))?;
        crate::create!(
            iot.create_topic_rule()
                .rule_name(name)
                .topic_rule_payload(self.payload(&function_arn)?)
                .send(),
            is_resource_already_exists_exception,
            cx,
            RULE,
            KIND,
            name,
            "CreateTopicRule"
        );
        rec.phase = Phase::Created;
        rec.arn = Some(d.rule_arn());
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        Ok(self
            .get(&self.0.d.rule_name)
            .await?
            .map(|o| o.rule_arn.unwrap_or_else(|| self.0.d.rule_arn())))
    }

    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "rule.configuration";
        let d = &self.0.d;
        let res = format!("{KIND} {}", d.rule_name);
        let live = crate::check_try!(self.get(&d.rule_name).await, [NAME], res);
        let Some(live) = live else {
            return vec![Check::fail(NAME, &res, format!("{res} does not exist"))];
        };
        let function_arn = cx.record(FUNCTION).and_then(|r| r.arn).unwrap_or_default();
        let diff = differences(&live, d, &function_arn);
        vec![if diff.is_empty() {
            Check::pass(
                NAME,
                &res,
                "enabled, SQL as configured, action targets the function",
            )
        } else {
            Check::fail(NAME, &res, format!("{res} differs: {}", diff.join(", ")))
        }]
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
        let action = Action::builder()
            .lambda(
                LambdaAction::builder()
                    .function_arn(function_arn)
                    .build()
                    .map_err(|e| StepError::Failed(format!("{KIND}: {e}")))?,
            )
            .build();
        TopicRulePayload::builder()
            .sql(&d.rule_sql)
            .description(&d.rule_description)
            .actions(action)
            .rule_disabled(!d.rule_enabled)
            .aws_iot_sql_version(&d.rule_sql_version)
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

fn differences(
    live: &GetTopicRuleOutput,
    d: &super::Deployment,
    function_arn: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(rule) = live.rule() else {
        return vec!["rule body missing".into()];
    };
    if rule.sql().map(str::trim) != Some(d.rule_sql.trim()) {
        out.push(format!(
            "sql: {:?} → {:?}",
            rule.sql().unwrap_or(""),
            d.rule_sql
        ));
    }
    let enabled = !rule.rule_disabled().unwrap_or(false);
    if enabled != d.rule_enabled {
        out.push(format!("enabled: {enabled} → {}", d.rule_enabled));
    }
    let targets: Vec<&str> = rule
        .actions()
        .iter()
        .filter_map(|a| a.lambda().map(|l| l.function_arn()))
        .collect();
    if targets != [function_arn] || rule.actions().len() != 1 {
        out.push(format!("actions: {targets:?} → [{function_arn:?}]"));
    }
    if rule.description().unwrap_or("") != d.rule_description {
        out.push("description".into());
    }
    if let Some(v) = rule.aws_iot_sql_version() {
        if v != d.rule_sql_version {
            out.push(format!("sql version: {v:?} → {:?}", d.rule_sql_version));
        }
    }
    out
}
