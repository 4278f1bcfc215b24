//! The policy → certificate attachment.

use std::sync::Arc;

use super::{Env, CERTIFICATE, POLICY, POLICY_ATTACHMENT};
use crate::call;
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "policy attachment";

pub struct PolicyAttachment(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for PolicyAttachment {
    fn key(&self) -> &str {
        POLICY_ATTACHMENT
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        format!("{} → certificate", self.0.d.policy_name)
    }
    fn depends_on(&self) -> &[&'static str] {
        &[POLICY, CERTIFICATE]
    }

    fn link(&self) -> bool {
        true
    }
    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }
    async fn observe(&self, cx: &Ctx) -> Result<Option<Fields>, StepError> {
        Ok(self.probe(cx).await?.map(|_| Fields::new()))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let iot = &self.0.aws.iot;
        let policy = &self.0.d.policy_name;
        let cert = certificate_arn(cx)?;
        let name = self.name();
        let record = cx.record(POLICY_ATTACHMENT);
        let mut rec = Record::new(POLICY_ATTACHMENT, KIND, Phase::Created, &name);
        rec.data
            .insert("certificate_arn".into(), cert.clone().into());
        // Nothing recorded: attach straight away (AttachPolicy is idempotent), sparing a list
        // call AWS allows 15 times a second, which would set a fleet's pace.
        if record.is_some() {
            let attached = call!(
                iot.list_attached_policies().target(&cert).send(),
                KIND,
                &name,
                "ListAttachedPolicies"
            );
            if attached
                .policies()
                .iter()
                .any(|p| p.policy_name() == Some(policy.as_str()))
            {
                return cx.keep(record.as_ref(), rec);
            }
        }
        cx.intent(rec.clone())?;
        call!(
            iot.attach_policy().policy_name(policy).target(&cert).send(),
            KIND,
            &name,
            "AttachPolicy"
        );
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError> {
        let Ok(cert) = certificate_arn(cx) else {
            return Ok(None);
        };
        let name = self.name();
        let attached = crate::found!(
            self.0.aws.iot.list_attached_policies().target(&cert).send(),
            is_resource_not_found_exception,
            KIND,
            &name,
            "ListAttachedPolicies"
        );
        Ok(attached
            .filter(|a| {
                a.policies()
                    .iter()
                    .any(|p| p.policy_name() == Some(self.0.d.policy_name.as_str()))
            })
            .map(|_| name))
    }

    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "policy.attached_to_certificate";
        let res = format!("{KIND} {}", self.name());
        match self.probe(cx).await {
            Ok(Some(_)) => vec![Check::pass(
                NAME,
                &res,
                format!("{} is attached to the certificate", self.0.d.policy_name),
            )],
            Ok(None) => vec![Check::fail(
                NAME,
                &res,
                format!(
                    "{} is not attached to the certificate",
                    self.0.d.policy_name
                ),
            )],
            Err(e) => vec![Check::fail(NAME, &res, e.to_string())],
        }
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(POLICY_ATTACHMENT) else {
            return Ok(Outcome::Absent);
        };
        let Some(cert) = rec.data_str("certificate_arn").map(str::to_string) else {
            cx.forget(POLICY_ATTACHMENT)?;
            return Ok(Outcome::Absent);
        };
        let iot = &self.0.aws.iot;
        let detached = crate::gone_by_code!(
            iot.detach_policy()
                .policy_name(&self.0.d.policy_name)
                .target(&cert)
                .send(),
            "ResourceNotFoundException",
            KIND,
            &rec.name,
            "DetachPolicy"
        );
        cx.forget(POLICY_ATTACHMENT)?;
        Ok(if detached {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

pub fn certificate_arn(cx: &Ctx) -> Result<String, StepError> {
    cx.record(CERTIFICATE)
        .and_then(|r| r.arn)
        .ok_or_else(|| StepError::Failed("certificate ARN missing from state".into()))
}
