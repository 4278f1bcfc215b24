//! The FLEET_PROVISIONING template of claim provisioning.
//!
//! What AWS does (AWS IoT developer guide, "Provisioning templates" and "Pre-provisioning
//! hooks"; API reference for Create/Update/Describe/DeleteProvisioningTemplate and the
//! …TemplateVersion calls):
//! - The body declares `Parameters` and `Resources`; a device's RegisterThing supplies the
//!   parameters (here `ThingName` and `SerialNumber`, as in AWS's examples), and
//!   `AWS::IoT::Certificate::Id` is the certificate the device just obtained with
//!   CreateCertificateFromCsr (or CreateKeysAndCertificate) on the same connection.
//! - The body is versioned: UpdateProvisioningTemplate cannot change it; a new body is
//!   CreateProvisioningTemplateVersion with `setAsDefault`. AWS keeps at most five versions
//!   (VersionsLimitExceededException), so the oldest non-default one is deleted first when
//!   five exist. Enabled, description, the provisioning role and the hook are
//!   UpdateProvisioningTemplate's (`removePreProvisioningHook` drops the hook).
//! - The hook is a Lambda function with payload version 2020-04-01; AWS gives it 5 seconds and
//!   provisions only on `"allowProvisioning": true`.
//! - A template name is 1 to 36 of `[0-9A-Za-z_-]`.
//! - Whether DeleteProvisioningTemplate removes the template's versions with it is not spelled
//!   out; `down` deletes the non-default versions first (the default one cannot be deleted
//!   on its own), which is right either way.
//!
//! Every thing made through the template carries the attribute `provisioned_by = <template>`
//! so that `down` finds them all ([`super::provisioned`]).

use std::sync::Arc;

use aws_sdk_iot::operation::describe_provisioning_template::DescribeProvisioningTemplateOutput;
use aws_sdk_iot::types::{ProvisioningHook, TemplateType};
use serde_json::{json, Value};

use super::sdk::{self, op};
use super::thing_group::GroupSpec;
use super::{
    Env, GROUP_POLICY, HOOK_FUNCTION, HOOK_PERMISSION, POLICY, PROVISIONING_ROLE,
    PROVISIONING_TEMPLATE, THING_GROUP, THING_TYPE,
};
use crate::engine::{Ctx, Kind, Meta, Outcome, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};

const KIND: &str = "provisioning template";
/// The only payload version AWS defines for pre-provisioning hooks.
pub const HOOK_PAYLOAD_VERSION: &str = "2020-04-01";
/// AWS's limit on a template's versions.
const MAX_VERSIONS: usize = 5;
/// The attribute marking a thing provisioned through the template.
pub const MARKER: &str = "provisioned_by";

const BODY: &str = "template_body";
const ENABLED: &str = "enabled";
const ROLE: &str = "provisioning_role";
const HOOK: &str = "pre_provisioning_hook";
const DESCRIPTION: &str = "description";

/// The template body: a thing named by the device, of the deployment's thing type, with its
/// serial and the marker, in the fleet's thing group when there is one; the certificate the
/// device just got, activated; the device policy on it, unless the policy is the group's
/// (`policy.attach_to = "group"`: the group's policy reaches the device through its
/// membership).
pub fn body(template: &str, thing_type: &str, policy: &str, group: Option<&GroupSpec>) -> Value {
    let mut thing = json!({
        "ThingName": {"Ref": "ThingName"},
        "ThingTypeName": thing_type,
        "AttributePayload": {
            "SerialNumber": {"Ref": "SerialNumber"},
            MARKER: template
        }
    });
    if let Some(g) = group {
        thing["ThingGroups"] = json!([g.name]);
    }
    let mut resources = json!({
        "thing": {"Type": "AWS::IoT::Thing", "Properties": thing},
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {
                "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                "Status": "Active"
            }
        }
    });
    if !group.is_some_and(|g| g.policy) {
        resources["policy"] = json!({
            "Type": "AWS::IoT::Policy",
            "Properties": {"PolicyName": policy}
        });
    }
    json!({
        "Parameters": {
            "ThingName": {"Type": "String"},
            "SerialNumber": {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"}
        },
        "Resources": resources
    })
}

pub struct Template(pub Arc<Env>);

impl Template {
    /// The configured name, or the recorded one when the config no longer wants a template.
    fn name_in(&self, cx: &Ctx) -> String {
        match &self.0.d.provisioning {
            Some(p) => p.template_name.clone(),
            None => cx
                .record(PROVISIONING_TEMPLATE)
                .map(|r| r.name)
                .unwrap_or_default(),
        }
    }

    fn hook_arn(cx: &Ctx) -> Option<String> {
        cx.record(HOOK_FUNCTION).and_then(|r| r.arn)
    }

    fn role_arn(cx: &Ctx) -> Result<String, StepError> {
        cx.record(PROVISIONING_ROLE)
            .and_then(|r| r.arn)
            .ok_or_else(|| StepError::Failed("provisioning role ARN missing from state".into()))
    }

    fn hook(&self, cx: &Ctx) -> Option<ProvisioningHook> {
        let wants = self
            .0
            .d
            .provisioning
            .as_ref()
            .is_some_and(|p| p.hook.is_some());
        let arn = Self::hook_arn(cx).filter(|_| wants)?;
        ProvisioningHook::builder()
            .target_arn(arn)
            .payload_version(HOOK_PAYLOAD_VERSION)
            .build()
            .ok()
    }

    /// The versions of the template, oldest first: (id, is default).
    async fn versions(&self, name: &str) -> Result<Vec<(i32, bool)>, StepError> {
        let mut out = Vec::new();
        let mut pages = self
            .0
            .aws
            .iot
            .list_provisioning_template_versions()
            .template_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    return Ok(vec![])
                }
                Err(e) => {
                    return Err(crate::aws::failed(
                        KIND,
                        name,
                        "ListProvisioningTemplateVersions",
                        e,
                    ))
                }
            };
            out.extend(
                page.versions()
                    .iter()
                    .filter_map(|v| v.version_id().map(|id| (id, v.is_default_version()))),
            );
        }
        out.sort();
        Ok(out)
    }

    async fn delete_version(&self, name: &str, id: i32) -> Result<(), StepError> {
        sdk::find(
            op(KIND, name, "DeleteProvisioningTemplateVersion"),
            self.0
                .aws
                .iot
                .delete_provisioning_template_version()
                .template_name(name)
                .version_id(id)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(())
    }

    /// A new default version with the wanted body, room made first under AWS's limit.
    async fn new_version(&self, name: &str, body: &Value) -> Result<(), StepError> {
        let versions = self.versions(name).await?;
        if versions.len() >= MAX_VERSIONS {
            if let Some((oldest, _)) = versions.iter().find(|(_, default)| !default) {
                self.delete_version(name, *oldest).await?;
            }
        }
        sdk::send(
            op(KIND, name, "CreateProvisioningTemplateVersion"),
            self.0
                .aws
                .iot
                .create_provisioning_template_version()
                .template_name(name)
                .template_body(body.to_string())
                .set_as_default(true)
                .send(),
        )
        .await?;
        // Only the default and the one it replaced are kept: neither iotreg nor anyone editing
        // the template by hand meets the limit of five.
        let versions = self.versions(name).await?;
        let old: Vec<i32> = versions
            .iter()
            .filter(|(_, default)| !default)
            .map(|(id, _)| *id)
            .collect();
        for id in old.iter().take(old.len().saturating_sub(1)) {
            self.delete_version(name, *id).await?;
        }
        Ok(())
    }
}

impl Meta for Template {
    fn key(&self) -> &str {
        PROVISIONING_TEMPLATE
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0
            .d
            .provisioning
            .as_ref()
            .map(|p| p.template_name.clone())
            .unwrap_or_default()
    }
    /// The role, the hook and its invoke permission exist before the template names them,
    /// and the thing type and device policy before devices can be provisioned through it; in
    /// `down`, the template goes before all of them.
    fn depends_on(&self) -> &[&'static str] {
        &[
            PROVISIONING_ROLE,
            HOOK_FUNCTION,
            HOOK_PERMISSION,
            THING_TYPE,
            POLICY,
            // A device provisioned through it joins the group and may rely on its policy.
            THING_GROUP,
            GROUP_POLICY,
        ]
    }
}

#[async_trait::async_trait]
impl Kind for Template {
    type Live = DescribeProvisioningTemplateOutput;

    fn desired(&self, cx: &Ctx) -> Fields {
        let Some(p) = &self.0.d.provisioning else {
            return Fields::new();
        };
        let hook = match (&p.hook, Self::hook_arn(cx)) {
            (Some(_), Some(arn)) => Value::from(arn),
            _ => Value::Null,
        };
        Fields::from([
            (BODY.to_string(), p.body.clone()),
            (DESCRIPTION.to_string(), p.description.clone().into()),
            (ENABLED.to_string(), true.into()),
            (HOOK.to_string(), hook),
            (
                ROLE.to_string(),
                cx.record(PROVISIONING_ROLE)
                    .and_then(|r| r.arn)
                    .unwrap_or_default()
                    .into(),
            ),
        ])
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<Self::Live>, StepError> {
        let name = self.name_in(cx);
        sdk::find(
            op(KIND, &name, "DescribeProvisioningTemplate"),
            self.0
                .aws
                .iot
                .describe_provisioning_template()
                .template_name(&name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await
    }

    fn fields(&self, live: &Self::Live) -> Fields {
        let text = live.template_body().unwrap_or_default();
        // Unparseable text is shown as it is, and differs from any body.
        let body = serde_json::from_str(text).unwrap_or_else(|_| Value::from(text));
        let hook = live
            .pre_provisioning_hook()
            .map(|h| Value::from(h.target_arn()))
            .unwrap_or(Value::Null);
        Fields::from([
            (BODY.to_string(), body),
            (
                DESCRIPTION.to_string(),
                live.description().unwrap_or_default().into(),
            ),
            (ENABLED.to_string(), live.enabled().unwrap_or(false).into()),
            (HOOK.to_string(), hook),
            (
                ROLE.to_string(),
                live.provisioning_role_arn().unwrap_or_default().into(),
            ),
        ])
    }

    fn identify(&self, live: &Self::Live) -> String {
        live.template_arn().unwrap_or_default().to_string()
    }

    async fn apply(&self, cx: &Ctx, step: Step<Self::Live>) -> Result<Outcome, StepError> {
        let p = self
            .0
            .d
            .provisioning
            .as_ref()
            .ok_or_else(|| StepError::Failed("claim provisioning is not configured".into()))?;
        let name = &p.template_name;
        let iot = &self.0.aws.iot;
        let role = Self::role_arn(cx)?;
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(
                PROVISIONING_TEMPLATE,
                KIND,
                Phase::Intent,
                name,
            ))?;
            let out = sdk::create(
                op(KIND, name, "CreateProvisioningTemplate"),
                iot.create_provisioning_template()
                    .template_name(name)
                    .description(&p.description)
                    .template_body(p.body.to_string())
                    .enabled(true)
                    .provisioning_role_arn(&role)
                    .set_pre_provisioning_hook(self.hook(cx))
                    .r#type(TemplateType::FleetProvisioning)
                    .send(),
                |e| e.is_resource_already_exists_exception(),
            )
            .await?;
            rec.phase = Phase::Created;
            rec.arn = out.template_arn;
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let mut done = Vec::new();
        if step.changes(BODY) {
            self.new_version(name, &p.body).await?;
            done.push("template body (a new default version)".to_string());
        }
        let others: Vec<&str> = [ENABLED, ROLE, HOOK, DESCRIPTION]
            .into_iter()
            .filter(|f| step.changes(f))
            .collect();
        if !others.is_empty() {
            let hook = self.hook(cx);
            sdk::send(
                op(KIND, name, "UpdateProvisioningTemplate"),
                iot.update_provisioning_template()
                    .template_name(name)
                    .description(&p.description)
                    .enabled(true)
                    .provisioning_role_arn(&role)
                    .set_remove_pre_provisioning_hook(hook.is_none().then_some(true))
                    .set_pre_provisioning_hook(hook)
                    .send(),
            )
            .await?;
            done.push(crate::plan::describe(
                &step
                    .plan
                    .changes
                    .iter()
                    .filter(|c| c.field != BODY)
                    .cloned()
                    .collect::<Vec<_>>(),
            ));
        }
        let outcome = step.outcome((!done.is_empty()).then(|| done.join(", ")));
        let mut rec = step.live_record(PROVISIONING_TEMPLATE, KIND, name);
        rec.arn = live.template_arn().map(str::to_string);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "provisioning.template"
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(PROVISIONING_TEMPLATE) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        for (id, default) in self.versions(name).await? {
            if !default {
                self.delete_version(name, id).await?;
            }
        }
        let deleted = sdk::find(
            op(KIND, name, "DeleteProvisioningTemplate"),
            self.0
                .aws
                .iot
                .delete_provisioning_template()
                .template_name(name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(PROVISIONING_TEMPLATE)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::create_provisioning_template::{
        CreateProvisioningTemplateError, CreateProvisioningTemplateOutput,
    };
    use aws_sdk_iot::operation::create_provisioning_template_version::CreateProvisioningTemplateVersionOutput;
    use aws_sdk_iot::operation::delete_provisioning_template_version::DeleteProvisioningTemplateVersionOutput;
    use aws_sdk_iot::operation::describe_provisioning_template::DescribeProvisioningTemplateError;
    use aws_sdk_iot::operation::list_provisioning_template_versions::ListProvisioningTemplateVersionsOutput;
    use aws_sdk_iot::operation::update_provisioning_template::UpdateProvisioningTemplateOutput;
    use aws_sdk_iot::types::ProvisioningTemplateVersionSummary;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::*;
    use crate::resources::{HookSpec, ProvisioningSpec, RoleSpec};

    const NAME: &str = "fleet-template-abc123";
    const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/iot-provisioning-role-abc123";
    const HOOK_ARN: &str =
        "arn:aws:lambda:us-east-1:123456789012:function:provisioning-hook-abc123";
    const TEMPLATE_ARN: &str =
        "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/fleet-template-abc123";

    fn wanted_body() -> Value {
        body(NAME, "TemperatureSensor", "device-policy-abc123", None)
    }

    fn claim(d: &mut crate::resources::Deployment) {
        let role = RoleSpec {
            name: "r".into(),
            trust_policy: Value::Null,
            managed_policies: vec![],
            inline_policy: None,
        };
        d.provisioning = Some(ProvisioningSpec {
            template_name: NAME.into(),
            description: "iotreg fleet provisioning by claim".into(),
            body: wanted_body(),
            role: role.clone(),
            claim_policy: d.policy.clone(),
            claim_files: crate::keys::KeyFiles::for_thing(std::path::Path::new("/x"), "claim"),
            hook: Some(HookSpec {
                role,
                function: d.function.clone(),
            }),
        });
    }

    fn records() -> Vec<Record> {
        vec![
            recorded(PROVISIONING_ROLE, "IAM role", "r", Some(ROLE_ARN)),
            recorded(HOOK_FUNCTION, "Lambda function", "h", Some(HOOK_ARN)),
            recorded(PROVISIONING_TEMPLATE, KIND, NAME, Some(TEMPLATE_ARN)),
        ]
    }

    fn live(body: Value, enabled: bool, hook: Option<&'static str>) -> Rule {
        mock!(aws_sdk_iot::Client::describe_provisioning_template).then_output(move || {
            DescribeProvisioningTemplateOutput::builder()
                .template_name(NAME)
                .template_arn(TEMPLATE_ARN)
                .description("iotreg fleet provisioning by claim")
                .template_body(body.to_string())
                .enabled(enabled)
                .provisioning_role_arn(ROLE_ARN)
                .set_pre_provisioning_hook(hook.map(|arn| {
                    ProvisioningHook::builder()
                        .target_arn(arn)
                        .payload_version(HOOK_PAYLOAD_VERSION)
                        .build()
                        .unwrap()
                }))
                .r#type(TemplateType::FleetProvisioning)
                .build()
        })
    }

    fn absent() -> Rule {
        mock!(aws_sdk_iot::Client::describe_provisioning_template).then_error(|| {
            DescribeProvisioningTemplateError::ResourceNotFoundException(
                aws_sdk_iot::types::error::ResourceNotFoundException::builder().build(),
            )
        })
    }

    fn versions(ids: &'static [(i32, bool)]) -> Rule {
        mock!(aws_sdk_iot::Client::list_provisioning_template_versions).then_output(move || {
            ListProvisioningTemplateVersionsOutput::builder()
                .set_versions(Some(
                    ids.iter()
                        .map(|(id, default)| {
                            ProvisioningTemplateVersionSummary::builder()
                                .version_id(*id)
                                .is_default_version(*default)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        })
    }

    #[tokio::test]
    async fn in_sync_writes_nothing() {
        let get = live(wanted_body(), true, Some(HOOK_ARN));
        let h = harness(&[&get], &[], &[], &[], records(), claim);
        let (plan, outcome) = plan_then_ensure(&Template(h.env.clone()), &h.cx).await;
        assert_eq!(plan.action, Action::NoChange, "{plan:?}");
        assert_eq!(outcome, Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_missing_template_is_created_enabled_with_its_role_and_hook() {
        let get = absent();
        let create = mock!(aws_sdk_iot::Client::create_provisioning_template)
            .match_requests(|r| {
                r.template_name() == Some(NAME)
                    && r.enabled() == Some(true)
                    && r.provisioning_role_arn() == Some(ROLE_ARN)
                    && r.r#type() == Some(&TemplateType::FleetProvisioning)
                    && r.pre_provisioning_hook().map(|h| h.target_arn()) == Some(HOOK_ARN)
                    && r.pre_provisioning_hook().and_then(|h| h.payload_version())
                        == Some(HOOK_PAYLOAD_VERSION)
                    && r.template_body()
                        .and_then(|b| serde_json::from_str::<Value>(b).ok())
                        == Some(wanted_body())
            })
            .then_output(|| {
                CreateProvisioningTemplateOutput::builder()
                    .template_arn(TEMPLATE_ARN)
                    .build()
            });
        let mut recs = records();
        recs.pop();
        let h = harness(&[&get, &create], &[], &[], &[], recs, claim);
        let (plan, outcome) = plan_then_ensure(&Template(h.env.clone()), &h.cx).await;
        assert_eq!(plan.action, Action::Create);
        assert_eq!(outcome, Outcome::Created);
        assert_eq!(create.num_calls(), 1);
        let rec = h.cx.record(PROVISIONING_TEMPLATE).unwrap();
        assert_eq!(
            (rec.phase, rec.arn.as_deref()),
            (Phase::Created, Some(TEMPLATE_ARN))
        );
    }

    #[tokio::test]
    async fn a_changed_body_is_a_new_default_version_room_made_under_the_limit() {
        let mut old = wanted_body();
        old["Resources"]["policy"]["Properties"]["PolicyName"] = "other".into();
        let get = live(old, true, Some(HOOK_ARN));
        // Five versions (5 the default): the oldest non-default goes first.
        let list = versions(&[(1, false), (2, false), (3, false), (4, false), (5, true)]);
        let delete = mock!(aws_sdk_iot::Client::delete_provisioning_template_version)
            .match_requests(|r| r.version_id() == Some(1))
            .then_output(|| DeleteProvisioningTemplateVersionOutput::builder().build());
        let create = mock!(aws_sdk_iot::Client::create_provisioning_template_version)
            .match_requests(|r| {
                r.set_as_default() == Some(true)
                    && r.template_body()
                        .and_then(|b| serde_json::from_str::<Value>(b).ok())
                        == Some(wanted_body())
            })
            .then_output(|| CreateProvisioningTemplateVersionOutput::builder().build());
        // Afterwards every non-default version but the newest is removed. The mocked list
        // answers as before, so that is 1, 2 and 3 here (1 matching the rule above).
        let delete_rest = mock!(aws_sdk_iot::Client::delete_provisioning_template_version)
            .match_requests(|r| matches!(r.version_id(), Some(2..=3)))
            .then_output(|| DeleteProvisioningTemplateVersionOutput::builder().build());
        let h = harness(
            &[&get, &list, &delete, &create, &delete_rest],
            &[],
            &[],
            &[],
            records(),
            claim,
        );
        let (plan, outcome) = plan_then_ensure(&Template(h.env.clone()), &h.cx).await;
        assert_eq!(changed_fields(&plan), [BODY]);
        assert!(matches!(outcome, Outcome::Updated(ref s) if s.contains("new default version")));
        assert_eq!(create.num_calls(), 1);
        assert_eq!(delete.num_calls(), 2, "the oldest before, and again after");
        assert_eq!(delete_rest.num_calls(), 2);
    }

    #[tokio::test]
    async fn disabled_or_hookless_is_updated_in_place_not_versioned() {
        let get = live(wanted_body(), false, None);
        let update = mock!(aws_sdk_iot::Client::update_provisioning_template)
            .match_requests(|r| {
                r.enabled() == Some(true)
                    && r.remove_pre_provisioning_hook().is_none()
                    && r.pre_provisioning_hook().map(|h| h.target_arn()) == Some(HOOK_ARN)
            })
            .then_output(|| UpdateProvisioningTemplateOutput::builder().build());
        let h = harness(&[&get, &update], &[], &[], &[], records(), claim);
        let (plan, outcome) = plan_then_ensure(&Template(h.env.clone()), &h.cx).await;
        assert_eq!(changed_fields(&plan), [ENABLED, HOOK]);
        assert!(matches!(outcome, Outcome::Updated(_)), "{outcome:?}");
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_hook_turned_off_is_removed() {
        let get = live(wanted_body(), true, Some(HOOK_ARN));
        let update = mock!(aws_sdk_iot::Client::update_provisioning_template)
            .match_requests(|r| {
                r.remove_pre_provisioning_hook() == Some(true)
                    && r.pre_provisioning_hook().is_none()
            })
            .then_output(|| UpdateProvisioningTemplateOutput::builder().build());
        let h = harness(&[&get, &update], &[], &[], &[], records(), |d| {
            claim(d);
            d.provisioning.as_mut().unwrap().hook = None;
        });
        let (plan, _) = plan_then_ensure(&Template(h.env.clone()), &h.cx).await;
        assert_eq!(changed_fields(&plan), [HOOK]);
        assert_eq!(update.num_calls(), 1);
    }

    /// A create answered "already exists" (our own attempt whose answer was lost) keeps the
    /// intent for the next read to adopt; it is not a success.
    #[tokio::test]
    async fn already_exists_after_create_keeps_the_intent() {
        let get = absent();
        let create = mock!(aws_sdk_iot::Client::create_provisioning_template).then_error(|| {
            CreateProvisioningTemplateError::ResourceAlreadyExistsException(
                aws_sdk_iot::types::error::ResourceAlreadyExistsException::builder().build(),
            )
        });
        let mut recs = records();
        recs.pop();
        let h = harness(&[&get, &create], &[], &[], &[], recs, claim);
        let err = Template(h.env.clone()).ensure(&h.cx).await.unwrap_err();
        assert!(matches!(err, StepError::ExistsAfterCreate { .. }), "{err}");
        assert_eq!(
            h.cx.record(PROVISIONING_TEMPLATE).map(|r| r.phase),
            Some(Phase::Intent)
        );
    }

    #[test]
    fn the_body_makes_the_thing_certificate_and_policy() {
        let b = wanted_body();
        let thing = &b["Resources"]["thing"]["Properties"];
        assert_eq!(thing["ThingName"], json!({"Ref": "ThingName"}));
        assert_eq!(thing["ThingTypeName"], "TemperatureSensor");
        assert_eq!(thing["AttributePayload"][MARKER], NAME);
        assert_eq!(
            b["Resources"]["certificate"]["Properties"]["Status"],
            "Active"
        );
        assert_eq!(
            b["Resources"]["policy"]["Properties"]["PolicyName"],
            "device-policy-abc123"
        );
        assert!(b["Parameters"]["SerialNumber"].is_object());
    }
}
