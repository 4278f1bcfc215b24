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

use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::sdk::{self, op};
use super::{Env, POLICY, PROVISIONED, PROVISIONING_TEMPLATE, THING_TYPE};
use crate::engine::{Ctx, Meta, Outcome, Resource, StepError};
use crate::plan::{Action, Planned};
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
        let mut out = Vec::new();
        let pages = self.0.aws.iot.list_things();
        sdk::each_page(
            op(KIND, template, "ListThings"),
            pages
                .attribute_name(super::provisioning_template::MARKER)
                .attribute_value(template)
                .max_results(250)
                .into_paginator()
                .send(),
            |_| false,
            |page| {
                out.extend(
                    page.things()
                        .iter()
                        .filter_map(|t| t.thing_name().map(str::to_string)),
                )
            },
        )
        .await?;
        Ok(out)
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
            // Detached from this thing (and any other), deactivated, deleted: as iotreg
            // retires any certificate of its own.
            let id = arn.rsplit('/').next().unwrap_or(arn);
            super::certificate::delete(iot, id, arn, cx).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc as StdArc, Mutex};

    use aws_sdk_iot::operation::delete_certificate::{
        DeleteCertificateError, DeleteCertificateOutput,
    };
    use aws_sdk_iot::operation::delete_thing::DeleteThingOutput;
    use aws_sdk_iot::operation::detach_policy::DetachPolicyOutput;
    use aws_sdk_iot::operation::detach_thing_principal::DetachThingPrincipalOutput;
    use aws_sdk_iot::operation::list_attached_policies::ListAttachedPoliciesOutput;
    use aws_sdk_iot::operation::list_principal_things::ListPrincipalThingsOutput;
    use aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsOutput;
    use aws_sdk_iot::operation::list_things::ListThingsOutput;
    use aws_sdk_iot::operation::update_certificate::UpdateCertificateOutput;
    use aws_sdk_iot::types::{Policy, ThingAttribute};
    use aws_smithy_mocks::mock;
    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::resources::testing::*;

    const TEMPLATE: &str = "fleet-template-abc123";

    /// The data plane at the HTTP level: no shadow anywhere (404), every path logged.
    #[derive(Debug, Clone, Default)]
    struct NoShadows(StdArc<Mutex<Vec<String>>>);

    impl HttpConnector for NoShadows {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", request.method(), request.uri()));
            let mut response = HttpResponse::new(
                StatusCode::try_from(404).unwrap(),
                SdkBody::from(r#"{"message":"No shadow exists"}"#),
            );
            response
                .headers_mut()
                .insert("x-amzn-ErrorType", "ResourceNotFoundException");
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    fn with_data_plane(h: &mut Harness) -> NoShadows {
        let plane = NoShadows::default();
        let connector = plane.clone();
        let env = Arc::get_mut(&mut h.env).expect("harness owns the env");
        env.aws.sdk_config = aws_types::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_types::sdk_config::RetryConfig::disabled())
            .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
                aws_sdk_iotdataplane::config::Credentials::for_tests(),
            ))
            .http_client(http_client_fn(move |_, _| {
                SharedHttpConnector::new(connector.clone())
            }))
            .build();
        plane
    }

    fn thing(name: &str) -> ThingAttribute {
        ThingAttribute::builder().thing_name(name).build()
    }

    /// `down` finds every device through all pages of ListThings (filtered on the marker),
    /// and retires each: policy and thing detached, certificate deactivated and deleted (the
    /// detach's propagation waited out), shadow and thing deleted, key files removed.
    #[tokio::test]
    async fn down_retires_every_provisioned_device_across_pages() {
        let pages = mock!(aws_sdk_iot::Client::list_things)
            .match_requests(|r| {
                r.attribute_name() == Some("provisioned_by")
                    && r.attribute_value() == Some(TEMPLATE)
            })
            .sequence()
            .output(|| {
                ListThingsOutput::builder()
                    .things(thing("sensor-0001"))
                    .next_token("page-2")
                    .build()
            })
            .output(|| {
                ListThingsOutput::builder()
                    .things(thing("sensor-0002"))
                    .build()
            })
            .build();
        let principals = mock!(aws_sdk_iot::Client::list_thing_principals).then_output(|| {
            ListThingPrincipalsOutput::builder()
                .principals("arn:aws:iot:us-east-1:123456789012:cert/c1")
                .build()
        });
        let policies = mock!(aws_sdk_iot::Client::list_attached_policies).then_output(|| {
            ListAttachedPoliciesOutput::builder()
                .policies(
                    Policy::builder()
                        .policy_name("device-policy-abc123")
                        .build(),
                )
                .build()
        });
        let principal_things = mock!(aws_sdk_iot::Client::list_principal_things)
            .match_requests(|r| r.principal() == Some("arn:aws:iot:us-east-1:123456789012:cert/c1"))
            .then_output(|| {
                ListPrincipalThingsOutput::builder()
                    .things("sensor-000x")
                    .build()
            });
        let detach = mock!(aws_sdk_iot::Client::detach_policy)
            .then_output(|| DetachPolicyOutput::builder().build());
        let unthing = mock!(aws_sdk_iot::Client::detach_thing_principal)
            .then_output(|| DetachThingPrincipalOutput::builder().build());
        let deactivate = mock!(aws_sdk_iot::Client::update_certificate)
            .match_requests(|r| r.certificate_id() == Some("c1"))
            .then_output(|| UpdateCertificateOutput::builder().build());
        let delete_cert = mock!(aws_sdk_iot::Client::delete_certificate)
            .sequence()
            .error(|| {
                DeleteCertificateError::DeleteConflictException(
                    aws_sdk_iot::types::error::DeleteConflictException::builder().build(),
                )
            })
            .output(|| DeleteCertificateOutput::builder().build())
            .times(2)
            .build();
        let delete_thing = mock!(aws_sdk_iot::Client::delete_thing)
            .then_output(|| DeleteThingOutput::builder().build());
        let record = recorded(PROVISIONED, KIND, TEMPLATE, None);
        let mut h = harness(
            &[
                &pages,
                &principals,
                &principal_things,
                &policies,
                &detach,
                &unthing,
                &deactivate,
                &delete_cert,
                &delete_thing,
            ],
            &[],
            &[],
            &[],
            vec![record],
            |_| {},
        );
        let plane = with_data_plane(&mut h);
        let files = crate::keys::KeyFiles::for_thing(&h.env.d.certificate.key_dir, "sensor-0001");
        std::fs::write(&files.private_key, "key").unwrap();

        let outcome = Provisioned(h.env.clone()).destroy(&h.cx).await.unwrap();
        assert_eq!(outcome, Outcome::Deleted);
        assert_eq!(pages.num_calls(), 2);
        assert_eq!(
            (
                detach.num_calls(),
                unthing.num_calls(),
                deactivate.num_calls()
            ),
            (2, 2, 2)
        );
        assert_eq!(delete_cert.num_calls(), 3, "one conflict waited out");
        assert_eq!(delete_thing.num_calls(), 2);
        let mut shadows = plane.0.lock().unwrap().clone();
        shadows.sort();
        assert_eq!(shadows.len(), 2, "{shadows:?}");
        assert!(
            shadows[0].starts_with("DELETE") && shadows[0].contains("/things/sensor-0001/shadow")
        );
        assert!(
            !files.private_key.exists(),
            "the device's key files go with it"
        );
        assert!(h.cx.record(PROVISIONED).is_none());
    }

    #[tokio::test]
    async fn nothing_recorded_is_nothing_to_retire() {
        let h = harness(&[], &[], &[], &[], vec![], |_| {});
        assert_eq!(
            Provisioned(h.env.clone()).destroy(&h.cx).await.unwrap(),
            Outcome::Absent
        );
    }
}
