//! The policy → certificate attachment.

use std::sync::Arc;

use super::sdk::{self, op};
use super::{Env, CERTIFICATE, POLICY, POLICY_ATTACHMENT};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "policy attachment";

pub struct PolicyAttachment(pub Arc<Env>);

/// A link found live: it attaches to the certificate with this ARN (the recorded one).
pub struct Attached {
    pub certificate_arn: String,
}

impl Meta for PolicyAttachment {
    fn key(&self) -> &str {
        POLICY_ATTACHMENT
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        format!("{} → certificate", self.0.d.policy.name)
    }
    fn depends_on(&self) -> &[&'static str] {
        &[POLICY, CERTIFICATE]
    }
}

#[async_trait::async_trait]
impl Kind for PolicyAttachment {
    type Live = Attached;

    /// Attached or not is all there is to compare.
    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    /// Whether the policy is attached to the recorded certificate (None without one).
    async fn read(&self, cx: &Ctx) -> Result<Option<Attached>, StepError> {
        let Ok(cert) = certificate_arn(cx) else {
            return Ok(None);
        };
        let name = self.name();
        let attached = sdk::find(
            op(KIND, &name, "ListAttachedPolicies"),
            self.0.aws.iot.list_attached_policies().target(&cert).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        let policy = self.0.d.policy.name.as_str();
        Ok(attached
            .filter(|a| a.policies().iter().any(|p| p.policy_name() == Some(policy)))
            .map(|_| Attached {
                certificate_arn: cert,
            }))
    }

    fn fields(&self, _live: &Attached) -> Fields {
        Fields::new()
    }

    fn identify(&self, _live: &Attached) -> String {
        self.name()
    }

    fn link(&self) -> bool {
        true
    }

    /// Nothing recorded: attach straight away (AttachPolicy is idempotent), sparing a list
    /// call AWS allows 15 times a second, which would set a fleet's pace.
    fn create_unread(&self) -> bool {
        true
    }

    async fn apply(&self, cx: &Ctx, step: Step<Attached>) -> Result<Outcome, StepError> {
        let name = self.name();
        let record = |cert: &str| {
            let mut rec = Record::new(POLICY_ATTACHMENT, KIND, Phase::Created, &name);
            rec.data.insert("certificate_arn".into(), cert.into());
            rec
        };
        if let Some(live) = &step.live {
            // Adopt or no change: attached as wanted; only the record may need writing.
            return cx.keep(step.record.as_ref(), record(&live.certificate_arn));
        }
        // Create, or the replace of a rename (a link follows it): attach.
        let cert = certificate_arn(cx)?;
        let rec = record(&cert);
        cx.intent(rec.clone())?;
        sdk::send(
            op(KIND, &name, "AttachPolicy"),
            self.0
                .aws
                .iot
                .attach_policy()
                .policy_name(&self.0.d.policy.name)
                .target(&cert)
                .send(),
        )
        .await?;
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    fn check_name(&self) -> &'static str {
        "policy.attached_to_certificate"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Attached>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        let policy = &self.0.d.policy.name;
        check.reason = if check.status == CheckStatus::Pass {
            format!("{policy} is attached to the certificate")
        } else {
            format!("{policy} is not attached to the certificate")
        };
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(POLICY_ATTACHMENT) else {
            return Ok(Outcome::Absent);
        };
        let Some(cert) = rec.data_str("certificate_arn").map(str::to_string) else {
            cx.forget(POLICY_ATTACHMENT)?;
            return Ok(Outcome::Absent);
        };
        // DetachPolicy has no typed not-found error; AWS answers with the code.
        let detached = sdk::find_by_code(
            op(KIND, &rec.name, "DetachPolicy"),
            self.0
                .aws
                .iot
                .detach_policy()
                .policy_name(&self.0.d.policy.name)
                .target(&cert)
                .send(),
            "ResourceNotFoundException",
        )
        .await?;
        cx.forget(POLICY_ATTACHMENT)?;
        Ok(if detached.is_some() {
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

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::attach_policy::AttachPolicyOutput;
    use aws_sdk_iot::operation::list_attached_policies::ListAttachedPoliciesOutput;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::*;

    const CERT: &str = "arn:aws:iot:us-east-1:123456789012:cert/c1";
    const NAME: &str = "device-policy-abc123 → certificate";

    fn certificate() -> Record {
        let mut r = recorded(CERTIFICATE, "certificate", "c1", Some(CERT));
        r.id = Some("c1".into());
        r
    }

    fn attachment(phase: Phase) -> Record {
        let mut r = Record::new(POLICY_ATTACHMENT, KIND, phase, NAME);
        r.data.insert("certificate_arn".into(), CERT.into());
        r
    }

    /// ListAttachedPolicies on the certificate: the policy attached, or another one only.
    fn listed(attached: bool) -> Rule {
        mock!(aws_sdk_iot::Client::list_attached_policies)
            .match_requests(|r| r.target() == Some(CERT))
            .then_output(move || {
                let name = if attached {
                    "device-policy-abc123"
                } else {
                    "someone-elses"
                };
                ListAttachedPoliciesOutput::builder()
                    .policies(
                        aws_sdk_iot::types::Policy::builder()
                            .policy_name(name)
                            .build(),
                    )
                    .build()
            })
    }

    fn attach() -> Rule {
        mock!(aws_sdk_iot::Client::attach_policy)
            .match_requests(|r| {
                r.policy_name() == Some("device-policy-abc123") && r.target() == Some(CERT)
            })
            .then_output(|| AttachPolicyOutput::builder().build())
    }

    async fn plan_then_ensure(h: &Harness) -> (Action, Outcome) {
        let r = PolicyAttachment(h.env.clone());
        let plan = Resource::plan(&r, &h.cx, true).await.unwrap();
        (plan.action, r.ensure(&h.cx).await.unwrap())
    }

    #[tokio::test]
    async fn no_change_writes_nothing() {
        let list = listed(true);
        let records = vec![certificate(), attachment(Phase::Created)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!((action, outcome), (Action::NoChange, Outcome::Unchanged));
        assert_eq!(list.num_calls(), 2, "one read each");
        assert_eq!(
            h.cx.record(POLICY_ATTACHMENT),
            Some(attachment(Phase::Created))
        );
    }

    #[tokio::test]
    async fn unrecorded_it_is_attached_without_a_list_call() {
        // AttachPolicy is idempotent: up spares the rate-limited list (a fleet's pace).
        let attach = attach();
        let h = harness(&[&attach], &[], &[], &[], vec![certificate()], |_| {});
        let r = PolicyAttachment(h.env.clone());
        assert_eq!(r.ensure(&h.cx).await.unwrap(), Outcome::Created);
        assert_eq!(attach.num_calls(), 1);
        assert_eq!(
            h.cx.record(POLICY_ATTACHMENT),
            Some(attachment(Phase::Created))
        );
    }

    #[tokio::test]
    async fn plan_reads_an_unrecorded_one_and_agrees() {
        let (list, attach) = (listed(false), attach());
        let h = harness(
            &[&list, &attach],
            &[],
            &[],
            &[],
            vec![certificate()],
            |_| {},
        );
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!((action, outcome), (Action::Create, Outcome::Created));
        assert_eq!(list.num_calls(), 1, "plan reads; up does not");
        assert_eq!(attach.num_calls(), 1);
    }

    #[tokio::test]
    async fn detached_outside_it_is_attached_again() {
        let (list, attach) = (listed(false), attach());
        let records = vec![certificate(), attachment(Phase::Created)];
        let h = harness(&[&list, &attach], &[], &[], &[], records, |_| {});
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!((action, outcome), (Action::Create, Outcome::Created));
        assert_eq!(attach.num_calls(), 1);
    }

    #[tokio::test]
    async fn an_interrupted_attach_that_happened_is_adopted() {
        let list = listed(true);
        let records = vec![certificate(), attachment(Phase::Intent)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!((action, outcome), (Action::Adopt, Outcome::Adopted));
        assert_eq!(
            h.cx.record(POLICY_ATTACHMENT),
            Some(attachment(Phase::Created))
        );
    }

    #[tokio::test]
    async fn verify_says_whether_the_policy_is_attached() {
        let list = listed(false);
        let records = vec![certificate(), attachment(Phase::Created)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let checks = PolicyAttachment(h.env.clone()).check(&h.cx).await;
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].name, "policy.attached_to_certificate");
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert_eq!(
            checks[0].reason,
            "device-policy-abc123 is not attached to the certificate"
        );
        let list = listed(true);
        let records = vec![certificate(), attachment(Phase::Created)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let checks = PolicyAttachment(h.env.clone()).check(&h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Pass);
        assert_eq!(
            checks[0].reason,
            "device-policy-abc123 is attached to the certificate"
        );
    }
}
