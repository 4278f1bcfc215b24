//! The execution role's inline policy letting the function publish alerts: `sns:Publish` on
//! the alert topic and nothing else.

use std::sync::Arc;

use serde_json::Value;

use super::role::percent_decode;
use super::sdk::{self, op};
use super::{Env, ALERT_POLICY, ALERT_TOPIC, ROLE};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "IAM inline policy";

pub struct AlertPolicy(pub Arc<Env>);

impl Meta for AlertPolicy {
    fn key(&self) -> &str {
        ALERT_POLICY
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.monitoring.policy_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[ROLE, ALERT_TOPIC]
    }
}

#[async_trait::async_trait]
impl Kind for AlertPolicy {
    /// The live policy document.
    type Live = Value;

    /// A policy inside this deployment's own role is this deployment's.
    fn adopts_unowned(&self) -> bool {
        true
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([("document".to_string(), self.document())])
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<Value>, StepError> {
        let d = &self.0.d;
        let out = sdk::find(
            op(KIND, &self.name(), "GetRolePolicy"),
            self.0
                .aws
                .iam
                .get_role_policy()
                .role_name(&d.role.name)
                .policy_name(self.name())
                .send(),
            |e| e.is_no_such_entity_exception(),
        )
        .await?;
        // IAM returns the document URL-encoded; unparseable text is kept as text (and differs).
        Ok(out.map(|o| {
            let text = percent_decode(o.policy_document());
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }))
    }

    fn fields(&self, live: &Value) -> Fields {
        Fields::from([("document".to_string(), live.clone())])
    }

    fn identify(&self, _live: &Value) -> String {
        format!("{}/{}", self.0.d.role.name, self.name())
    }

    async fn apply(&self, cx: &Ctx, step: Step<Value>) -> Result<Outcome, StepError> {
        let d = &self.0.d;
        let name = self.name();
        let mut rec = Record::new(ALERT_POLICY, KIND, Phase::Created, &name);
        rec.data.insert("role".into(), d.role.name.clone().into());
        if step.live.is_some() && !step.changes("document") {
            return cx.keep(step.record.as_ref(), rec);
        }
        if step.live.is_none() {
            cx.intent(rec.clone())?;
        }
        // PutRolePolicy creates or replaces: the same call either way.
        sdk::send(
            op(KIND, &name, "PutRolePolicy"),
            self.0
                .aws
                .iam
                .put_role_policy()
                .role_name(&d.role.name)
                .policy_name(&name)
                .policy_document(self.document().to_string())
                .send(),
        )
        .await?;
        cx.commit(rec)?;
        Ok(if step.live.is_none() {
            Outcome::Created
        } else {
            Outcome::Updated("policy document".into())
        })
    }

    fn check_name(&self) -> &'static str {
        "alerts.publish_policy"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Value>) -> Vec<Check> {
        let m = &self.0.d.monitoring;
        let mut check = planning::comparison_check(self.check_name(), &seen);
        check.resource = format!("{KIND} {} of {}", self.name(), self.0.d.role.name);
        if seen.live.is_some() {
            check.reason = if check.status == CheckStatus::Pass {
                format!("allows sns:Publish on {} only", m.topic_name)
            } else {
                format!(
                    "{} differs from sns:Publish on {} only",
                    check.resource, m.topic_arn
                )
            };
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(ALERT_POLICY) else {
            return Ok(Outcome::Absent);
        };
        let role = rec
            .data_str("role")
            .map(str::to_string)
            .unwrap_or_else(|| self.0.d.role.name.clone());
        // NoSuchEntity: the policy, or its role, is already gone.
        let deleted = sdk::find(
            op(KIND, &rec.name, "DeleteRolePolicy"),
            self.0
                .aws
                .iam
                .delete_role_policy()
                .role_name(&role)
                .policy_name(&rec.name)
                .send(),
            |e| e.is_no_such_entity_exception(),
        )
        .await?;
        cx.forget(ALERT_POLICY)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

impl AlertPolicy {
    fn document(&self) -> serde_json::Value {
        super::monitoring::publish_policy(&self.0.d.monitoring.topic_arn)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iam::operation::get_role_policy::GetRolePolicyOutput;
    use aws_sdk_iam::operation::put_role_policy::PutRolePolicyOutput;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::harness;

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123";

    fn live(topic: &'static str) -> Rule {
        mock!(aws_sdk_iam::Client::get_role_policy).then_output(move || {
            // IAM answers URL-encoded.
            let doc = super::super::monitoring::publish_policy(topic)
                .to_string()
                .replace('{', "%7B")
                .replace('}', "%7D");
            GetRolePolicyOutput::builder()
                .role_name("iot-lambda-role-abc123")
                .policy_name("publish-temperature-alerts")
                .policy_document(doc)
                .build()
                .unwrap()
        })
    }

    fn recorded() -> Record {
        let mut r = Record::new(
            ALERT_POLICY,
            KIND,
            Phase::Created,
            "publish-temperature-alerts",
        );
        r.data
            .insert("role".into(), "iot-lambda-role-abc123".into());
        r
    }

    #[tokio::test]
    async fn no_change_makes_no_write() {
        let read = live(TOPIC);
        let h = harness(&[], &[&read], &[], &[], vec![recorded()], |d| {
            d.monitoring.enabled = true
        });
        let policy = AlertPolicy(h.env.clone());
        assert_eq!(
            policy.plan(&h.cx, true).await.unwrap().action,
            Action::NoChange
        );
        assert_eq!(policy.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_widened_document_is_put_back_as_planned() {
        let read = live("*");
        let put = mock!(aws_sdk_iam::Client::put_role_policy)
            .match_requests(|r| r.policy_document().is_some_and(|d| d.contains(TOPIC)))
            .then_output(|| PutRolePolicyOutput::builder().build());
        let h = harness(&[], &[&read, &put], &[], &[], vec![recorded()], |d| {
            d.monitoring.enabled = true
        });
        let policy = AlertPolicy(h.env.clone());
        assert_eq!(
            policy.plan(&h.cx, true).await.unwrap().action,
            Action::Update
        );
        assert_eq!(
            policy.ensure(&h.cx).await.unwrap(),
            Outcome::Updated("policy document".into())
        );
        assert_eq!(put.num_calls(), 1);
    }
}
