//! The devices provisioned through the claim template. `up` does not make them (each device
//! registers itself, see `iotreg device provision --claim`), so the state has no record of
//! each; this step stands for all of them. `down` finds them from AWS: ListThings filtered on
//! the marker attribute the template gives every thing (`provisioned_by = <template>`, see
//! [`super::provisioning_template`]), paged, and retires each one: its certificates detached
//! from its policies and the thing, deactivated and deleted, its shadow and the thing deleted,
//! and its key files in the key directory (a device provisioned from this machine by
//! `device provision --claim`) removed.
//!
//! AWS: ListThings accepts one attribute name/value filter and pages with `nextToken` (at
//! most 250 a page); DetachThingPrincipal is asynchronous, so DeleteCertificate answers
//! DeleteConflictException until it has propagated, which is retried with bounded backoff.

use std::sync::Arc;

use aws_sdk_iot::types::CertificateStatus;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::sdk::{self, op};
use super::{Env, POLICY, PROVISIONED, PROVISIONING_TEMPLATE, THING_TYPE};
use crate::engine::{Ctx, Meta, Outcome, Resource, StepError};
use crate::plan::{Action, Planned};
use crate::retry::Backoff;
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "provisioned devices";
/// Devices retired at once by `down`.
const CONCURRENCY: usize = 8;

pub struct Provisioned(pub Arc<Env>);

impl Provisioned {
    fn template(&self, cx: &Ctx) -> String {
        match &self.0.d.provisioning {
            Some(p) => p.template_name.clone(),
            None => cx.record(PROVISIONED).map(|r| r.name).unwrap_or_default(),
        }
    }

    /// Every thing carrying the template's marker, from AWS, all pages.
    pub async fn things(&self, template: &str) -> Result<Vec<String>, StepError> {
        let iot = &self.0.aws.iot;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = sdk::send(
                op(KIND, template, "ListThings"),
                iot.list_things()
                    .attribute_name(super::provisioning_template::MARKER)
                    .attribute_value(template)
                    .max_results(250)
                    .set_next_token(token.clone())
                    .send(),
            )
            .await?;
            out.extend(
                page.things()
                    .iter()
                    .filter_map(|t| t.thing_name().map(str::to_string)),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// One device: its certificates detached, deactivated and deleted, its shadow and thing.
    async fn retire(&self, cx: &Ctx, thing: &str) -> Result<(), StepError> {
        let iot = &self.0.aws.iot;
        let principals = sdk::find(
            op("thing", thing, "ListThingPrincipals"),
            iot.list_thing_principals().thing_name(thing).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        for arn in principals.iter().flat_map(|p| p.principals()) {
            let id = arn.rsplit('/').next().unwrap_or(arn);
            let policies = sdk::send(
                op("certificate", id, "ListAttachedPolicies"),
                iot.list_attached_policies().target(arn).send(),
            )
            .await?;
            for p in policies.policies() {
                // DetachPolicy has no typed not-found error; AWS answers with the code.
                sdk::find_by_code(
                    op("certificate", id, "DetachPolicy"),
                    iot.detach_policy()
                        .policy_name(p.policy_name().unwrap_or_default())
                        .target(arn)
                        .send(),
                    "ResourceNotFoundException",
                )
                .await?;
            }
            sdk::find(
                op("certificate", id, "DetachThingPrincipal"),
                iot.detach_thing_principal()
                    .thing_name(thing)
                    .principal(arn)
                    .send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
            sdk::find(
                op("certificate", id, "UpdateCertificate"),
                iot.update_certificate()
                    .certificate_id(id)
                    .new_status(CertificateStatus::Inactive)
                    .send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
            let mut delays = Backoff::DETACH_PROPAGATION.delays();
            loop {
                crate::ratelimit::acquire("DeleteCertificate").await;
                match iot.delete_certificate().certificate_id(id).send().await {
                    Ok(_) => break,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_not_found_exception()) =>
                    {
                        break
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_delete_conflict_exception()) =>
                    {
                        let Some(delay) = delays.next() else {
                            return Err(crate::aws::failed(
                                "certificate",
                                id,
                                "DeleteCertificate",
                                e,
                            ));
                        };
                        cx.progress("waiting for AWS to propagate the detachment");
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => {
                        return Err(crate::aws::failed(
                            "certificate",
                            id,
                            "DeleteCertificate",
                            e,
                        ))
                    }
                }
            }
        }
        let data = self.0.aws.data().await?;
        sdk::find(
            op("shadow", thing, "DeleteThingShadow"),
            data.delete_thing_shadow().thing_name(thing).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        sdk::find(
            op("thing", thing, "DeleteThing"),
            iot.delete_thing().thing_name(thing).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        crate::keys::KeyFiles::for_thing(&self.0.d.certificate.key_dir, thing)
            .remove_all()
            .map_err(|e| StepError::Failed(format!("{thing}: cannot remove its key files: {e}")))?;
        Ok(())
    }
}

impl Meta for Provisioned {
    fn key(&self) -> &str {
        PROVISIONED
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0
            .d
            .provisioning
            .as_ref()
            .map(|p| format!("through {}", p.template_name))
            .unwrap_or_default()
    }
    /// Retired before the template, the device policy and the thing type they use.
    fn depends_on(&self) -> &[&'static str] {
        &[PROVISIONING_TEMPLATE, POLICY, THING_TYPE]
    }
}

#[async_trait::async_trait]
impl Resource for Provisioned {
    /// Nothing for `up` to do: the devices make themselves.
    async fn plan(&self, _cx: &Ctx, _read_live: bool) -> Result<Planned, StepError> {
        Ok(
            Planned::new(PROVISIONED, KIND, &self.name(), Action::NoChange)
                .with_note("devices register themselves through the template"),
        )
    }

    /// Records the step, so that `down` (and a later config without claim provisioning)
    /// knows which template's devices to retire.
    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let template = self.template(cx);
        let rec = Record::new(PROVISIONED, KIND, Phase::Created, template);
        cx.keep(cx.record(PROVISIONED).as_ref(), rec)
            .map(|o| match o {
                Outcome::Adopted => Outcome::Created,
                o => o,
            })
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        if cx.record(PROVISIONED).is_none() {
            return Ok(Outcome::Absent);
        }
        let template = self.template(cx);
        let things = self.things(&template).await?;
        let total = things.len();
        stream::iter(things)
            .map(|thing| async move { self.retire(cx, &thing).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        cx.forget(PROVISIONED)?;
        cx.progress(&format!("{total} devices retired"));
        Ok(Outcome::deleted_if(total > 0))
    }

    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError> {
        let n = self.things(&self.template(cx)).await?.len();
        Ok(Some(format!("{n} things provisioned")))
    }

    /// verify judges the template, the claim and the hook; the devices are the devices'.
    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        Vec::new()
    }
}
