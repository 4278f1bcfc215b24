//! The certificate → thing attachment.

use std::sync::Arc;

use super::policy_attachment::{certificate_arn, Attached};
use super::sdk::{self, op};
use super::{Env, CERTIFICATE, THING, THING_PRINCIPAL};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "thing attachment";

pub struct ThingPrincipal(pub Arc<Env>);

impl Meta for ThingPrincipal {
    fn key(&self) -> &str {
        THING_PRINCIPAL
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        format!("certificate → {}", self.0.d.thing.name)
    }
    fn depends_on(&self) -> &[&'static str] {
        &[THING, CERTIFICATE]
    }
}

#[async_trait::async_trait]
impl Kind for ThingPrincipal {
    type Live = Attached;

    /// Attached or not is all there is to compare.
    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    /// Whether the recorded certificate is attached to the thing (None without one).
    async fn read(&self, cx: &Ctx) -> Result<Option<Attached>, StepError> {
        let Ok(cert) = certificate_arn(cx) else {
            return Ok(None);
        };
        let name = self.name();
        let principals = sdk::find(
            op(KIND, &name, "ListThingPrincipals"),
            self.0
                .aws
                .iot
                .list_thing_principals()
                .thing_name(&self.0.d.thing.name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(principals
            .filter(|p| p.principals().contains(&cert))
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

    /// Nothing recorded: attach straight away (AttachThingPrincipal is idempotent), sparing a
    /// list call AWS allows 10 times a second, which would set a fleet's pace.
    fn create_unread(&self) -> bool {
        true
    }

    async fn apply(&self, cx: &Ctx, step: Step<Attached>) -> Result<Outcome, StepError> {
        let name = self.name();
        let record = |cert: &str| {
            let mut rec = Record::new(THING_PRINCIPAL, KIND, Phase::Created, &name);
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
            op(KIND, &name, "AttachThingPrincipal"),
            self.0
                .aws
                .iot
                .attach_thing_principal()
                .thing_name(&self.0.d.thing.name)
                .principal(&cert)
                .send(),
        )
        .await?;
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    fn check_name(&self) -> &'static str {
        "certificate.attached_to_thing"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Attached>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        let thing = &self.0.d.thing.name;
        check.reason = if check.status == CheckStatus::Pass {
            format!("the certificate is attached to {thing}")
        } else {
            format!("the certificate is not attached to {thing}")
        };
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(THING_PRINCIPAL) else {
            return Ok(Outcome::Absent);
        };
        let Some(cert) = rec.data_str("certificate_arn").map(str::to_string) else {
            cx.forget(THING_PRINCIPAL)?;
            return Ok(Outcome::Absent);
        };
        let detached = sdk::find(
            op(KIND, &rec.name, "DetachThingPrincipal"),
            self.0
                .aws
                .iot
                .detach_thing_principal()
                .thing_name(&self.0.d.thing.name)
                .principal(&cert)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(THING_PRINCIPAL)?;
        Ok(if detached.is_some() {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::attach_thing_principal::AttachThingPrincipalOutput;
    use aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsOutput;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::*;

    const CERT: &str = "arn:aws:iot:us-east-1:123456789012:cert/c1";
    const THING_NAME: &str = "temperature-sensor-abc123";
    const NAME: &str = "certificate → temperature-sensor-abc123";

    fn certificate() -> Record {
        let mut r = recorded(CERTIFICATE, "certificate", "c1", Some(CERT));
        r.id = Some("c1".into());
        r
    }

    fn attachment(phase: Phase) -> Record {
        let mut r = Record::new(THING_PRINCIPAL, KIND, phase, NAME);
        r.data.insert("certificate_arn".into(), CERT.into());
        r
    }

    /// ListThingPrincipals on the thing: our certificate among them, or another one only.
    fn listed(attached: bool) -> Rule {
        mock!(aws_sdk_iot::Client::list_thing_principals)
            .match_requests(|r| r.thing_name() == Some(THING_NAME))
            .then_output(move || {
                let principal = if attached {
                    CERT
                } else {
                    "arn:aws:iot:us-east-1:123456789012:cert/other"
                };
                ListThingPrincipalsOutput::builder()
                    .principals(principal)
                    .build()
            })
    }

    fn attach() -> Rule {
        mock!(aws_sdk_iot::Client::attach_thing_principal)
            .match_requests(|r| r.thing_name() == Some(THING_NAME) && r.principal() == Some(CERT))
            .then_output(|| AttachThingPrincipalOutput::builder().build())
    }

    async fn plan_then_ensure(h: &Harness) -> (Action, Outcome) {
        let r = ThingPrincipal(h.env.clone());
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
            h.cx.record(THING_PRINCIPAL),
            Some(attachment(Phase::Created))
        );
    }

    #[tokio::test]
    async fn unrecorded_it_is_attached_without_a_list_call() {
        // AttachThingPrincipal is idempotent: up spares the rate-limited list.
        let attach = attach();
        let h = harness(&[&attach], &[], &[], &[], vec![certificate()], |_| {});
        let r = ThingPrincipal(h.env.clone());
        assert_eq!(r.ensure(&h.cx).await.unwrap(), Outcome::Created);
        assert_eq!(attach.num_calls(), 1);
        assert_eq!(
            h.cx.record(THING_PRINCIPAL),
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
            h.cx.record(THING_PRINCIPAL),
            Some(attachment(Phase::Created))
        );
    }

    #[tokio::test]
    async fn verify_says_whether_the_certificate_is_attached() {
        let list = listed(false);
        let records = vec![certificate(), attachment(Phase::Created)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let checks = ThingPrincipal(h.env.clone()).check(&h.cx).await;
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].name, "certificate.attached_to_thing");
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert_eq!(
            checks[0].reason,
            "the certificate is not attached to temperature-sensor-abc123"
        );
        let list = listed(true);
        let records = vec![certificate(), attachment(Phase::Created)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let checks = ThingPrincipal(h.env.clone()).check(&h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Pass);
        assert_eq!(
            checks[0].reason,
            "the certificate is attached to temperature-sensor-abc123"
        );
    }
}
