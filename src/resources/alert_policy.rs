//! The execution role's inline policy letting the function publish alerts: `sns:Publish` on
//! the alert topic and nothing else.

use std::sync::Arc;

use super::role::percent_decode;
use super::{Env, ALERT_POLICY, ALERT_TOPIC, ROLE};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, done, found};

const KIND: &str = "IAM inline policy";

pub struct AlertPolicy(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for AlertPolicy {
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
    /// A policy inside this deployment's own role is this deployment's.
    fn adopts_unowned(&self) -> bool {
        true
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([("document".to_string(), self.document())])
    }

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        Ok(self
            .live()
            .await?
            .map(|doc| Fields::from([("document".to_string(), doc)])))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let d = &self.0.d;
        let name = self.name();
        let want = self.document();
        let record = cx.record(ALERT_POLICY);
        let mut rec = Record::new(ALERT_POLICY, KIND, Phase::Created, &name);
        rec.data.insert("role".into(), d.role_name.clone().into());
        let live = self.live().await?;
        if live.as_ref() == Some(&want) {
            return cx.keep(record.as_ref(), rec);
        }
        if live.is_none() {
            cx.intent(rec.clone())?;
        }
        // PutRolePolicy creates or replaces: the same call either way.
        call!(
            self.0
                .aws
                .iam
                .put_role_policy()
                .role_name(&d.role_name)
                .policy_name(&name)
                .policy_document(want.to_string())
                .send(),
            KIND,
            &name,
            "PutRolePolicy"
        );
        cx.commit(rec)?;
        Ok(if live.is_none() {
            Outcome::Created
        } else {
            Outcome::Updated("policy document".into())
        })
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        Ok(self
            .live()
            .await?
            .map(|_| format!("{}/{}", self.0.d.role_name, self.name())))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "alerts.publish_policy";
        let d = &self.0.d;
        let res = format!("{KIND} {} of {}", self.name(), d.role_name);
        let live = crate::check_try!(self.live().await, [NAME], res);
        vec![match live {
            None => Check::fail(NAME, &res, format!("{res} does not exist")),
            Some(doc) if doc == self.document() => Check::pass(
                NAME,
                &res,
                format!("allows sns:Publish on {} only", d.monitoring.topic_name),
            ),
            Some(_) => Check::fail(
                NAME,
                &res,
                format!(
                    "{res} differs from sns:Publish on {} only",
                    d.monitoring.topic_arn
                ),
            ),
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(ALERT_POLICY) else {
            return Ok(Outcome::Absent);
        };
        let role = rec
            .data_str("role")
            .map(str::to_string)
            .unwrap_or_else(|| self.0.d.role_name.clone());
        // NoSuchEntity: the policy, or its role, is already gone.
        let deleted = done!(
            self.0
                .aws
                .iam
                .delete_role_policy()
                .role_name(&role)
                .policy_name(&rec.name)
                .send(),
            is_no_such_entity_exception,
            KIND,
            &rec.name,
            "DeleteRolePolicy"
        );
        cx.forget(ALERT_POLICY)?;
        Ok(if deleted {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

impl AlertPolicy {
    fn document(&self) -> serde_json::Value {
        super::monitoring::publish_policy(&self.0.d.monitoring.topic_arn)
    }

    /// The live policy document, or None when the policy (or the role) does not exist.
    async fn live(&self) -> Result<Option<serde_json::Value>, StepError> {
        let d = &self.0.d;
        let out = found!(
            self.0
                .aws
                .iam
                .get_role_policy()
                .role_name(&d.role_name)
                .policy_name(self.name())
                .send(),
            is_no_such_entity_exception,
            KIND,
            &self.name(),
            "GetRolePolicy"
        );
        // IAM returns the document URL-encoded; unparseable text is kept as text (and differs).
        Ok(out.map(|o| {
            let text = percent_decode(o.policy_document());
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        }))
    }
}
