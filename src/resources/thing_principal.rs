//! The certificate → thing attachment.

use std::sync::Arc;

use super::policy_attachment::certificate_arn;
use super::{Env, CERTIFICATE, THING, THING_PRINCIPAL};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, done};

const KIND: &str = "thing attachment";

pub struct ThingPrincipal(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for ThingPrincipal {
    fn key(&self) -> &str {
        THING_PRINCIPAL
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        format!("certificate → {}", self.0.d.thing_name)
    }
    fn depends_on(&self) -> &[&'static str] {
        &[THING, CERTIFICATE]
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
        let thing = &self.0.d.thing_name;
        let cert = certificate_arn(cx)?;
        let name = self.name();
        let record = cx.record(THING_PRINCIPAL);
        let mut rec = Record::new(THING_PRINCIPAL, KIND, Phase::Created, &name);
        rec.data
            .insert("certificate_arn".into(), cert.clone().into());
        // Nothing recorded: attach straight away (AttachThingPrincipal is idempotent), sparing
        // a list call AWS allows 10 times a second, which would set a fleet's pace.
        if record.is_some() {
            let principals = call!(
                iot.list_thing_principals().thing_name(thing).send(),
                KIND,
                &name,
                "ListThingPrincipals"
            );
            if principals.principals().contains(&cert) {
                return cx.keep(record.as_ref(), rec);
            }
        }
        cx.intent(rec.clone())?;
        call!(
            iot.attach_thing_principal()
                .thing_name(thing)
                .principal(&cert)
                .send(),
            KIND,
            &name,
            "AttachThingPrincipal"
        );
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError> {
        let Ok(cert) = certificate_arn(cx) else {
            return Ok(None);
        };
        let name = self.name();
        let principals = crate::found!(
            self.0
                .aws
                .iot
                .list_thing_principals()
                .thing_name(&self.0.d.thing_name)
                .send(),
            is_resource_not_found_exception,
            KIND,
            &name,
            "ListThingPrincipals"
        );
        Ok(principals
            .filter(|p| p.principals().contains(&cert))
            .map(|_| name))
    }

    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "certificate.attached_to_thing";
        let res = format!("{KIND} {}", self.name());
        match self.probe(cx).await {
            Ok(Some(_)) => vec![Check::pass(
                NAME,
                &res,
                format!("the certificate is attached to {}", self.0.d.thing_name),
            )],
            Ok(None) => vec![Check::fail(
                NAME,
                &res,
                format!("the certificate is not attached to {}", self.0.d.thing_name),
            )],
            Err(e) => vec![Check::fail(NAME, &res, e.to_string())],
        }
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(THING_PRINCIPAL) else {
            return Ok(Outcome::Absent);
        };
        let Some(cert) = rec.data_str("certificate_arn").map(str::to_string) else {
            cx.forget(THING_PRINCIPAL)?;
            return Ok(Outcome::Absent);
        };
        let detached = done!(
            self.0
                .aws
                .iot
                .detach_thing_principal()
                .thing_name(&self.0.d.thing_name)
                .principal(&cert)
                .send(),
            is_resource_not_found_exception,
            KIND,
            &rec.name,
            "DetachThingPrincipal"
        );
        cx.forget(THING_PRINCIPAL)?;
        Ok(if detached {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}
