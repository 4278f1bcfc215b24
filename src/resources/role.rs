//! An IAM role trusted by one AWS service, with its managed policies. Three roles are this
//! one kind: the Lambda execution role of the data processor, the provisioning role AWS IoT
//! assumes to register devices through the fleet provisioning template (trusted by
//! iot.amazonaws.com, with AWS's managed `AWSIoTThingsRegistration`), and the execution role of
//! the pre-provisioning hook. Each is a [`Slot`]: its key in the state, where its spec lives in
//! the deployment, and the service that must be able to assume it.

use std::sync::Arc;

use aws_sdk_iam::types::Role as IamRole;

use super::sdk::{self, op};
use super::{Deployment, Env, RoleSpec, HOOK_ROLE, PROVISIONING_ROLE, ROLE};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::{Change, Fields};
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "IAM role";
const TRUST: &str = "trust_policy";
const MANAGED: &str = "managed_policies";
const INLINE: &str = "inline_policy";

/// Which role: everything that tells the three apart.
pub struct Slot {
    key: &'static str,
    /// The service the trust policy must let assume the role (what verify insists on).
    service: &'static str,
    description: &'static str,
    check: &'static str,
    /// The role's spec; None when the deployment has no such role (then it is only ever a
    /// recorded one to delete).
    spec: fn(&Deployment) -> Option<&RoleSpec>,
    depends_on: &'static [&'static str],
}

pub const LAMBDA: Slot = Slot {
    key: ROLE,
    service: "lambda.amazonaws.com",
    description: "Execution role for the iotreg IoT data processor",
    check: "role.trust",
    spec: |d| Some(&d.role),
    depends_on: &[],
};

pub const PROVISIONING: Slot = Slot {
    key: PROVISIONING_ROLE,
    service: "iot.amazonaws.com",
    description:
        "Role AWS IoT assumes to register devices through the iotreg provisioning template",
    check: "provisioning.role",
    spec: |d| d.provisioning.as_ref().map(|p| &p.role),
    depends_on: &[],
};

pub const HOOK: Slot = Slot {
    key: HOOK_ROLE,
    service: "lambda.amazonaws.com",
    description: "Execution role for the iotreg pre-provisioning hook",
    check: "provisioning.hook_role",
    spec: |d| {
        d.provisioning
            .as_ref()
            .and_then(|p| p.hook.as_ref())
            .map(|h| &h.role)
    },
    depends_on: &[],
};

/// The role StartThingRegistrationTask hands to AWS IoT to read bulk registration's input
/// (`fleet.mode = "bulk"`).
pub const BULK: Slot = Slot {
    key: super::bulk::BULK_ROLE,
    service: "iot.amazonaws.com",
    description: "Lets AWS IoT read iotreg's bulk registration input",
    check: "bulk.role_trust",
    spec: |d| super::bulk::wanted(d).then_some(&d.bulk.role),
    depends_on: &[],
};

/// The role AWS IoT assumes to pre-sign the download links of the jobs' firmware.
pub const JOBS: Slot = Slot {
    key: super::jobs::PRESIGN_ROLE,
    service: "iot.amazonaws.com",
    description: "Lets AWS IoT sign download links for iotreg's job firmware",
    check: "jobs.presign_role",
    spec: |d| super::jobs::presign_wanted(d).then_some(&d.jobs.presign_role),
    depends_on: &[],
};

/// The role the analytics rule's Kinesis action assumes: PutRecord on its stream, nothing else.
pub const ANALYTICS_RULE: Slot = Slot {
    key: super::analytics::RULE_ROLE,
    service: "iot.amazonaws.com",
    description: "Lets the iotreg analytics rule put readings on its Kinesis stream",
    check: "analytics.rule_role",
    spec: |d| d.analytics.as_deref().map(|a| &a.rule_role),
    depends_on: &[],
};

/// The anomaly detector's execution role: read the stream, its table, publish alerts, and
/// report failed batches.
pub const DETECTOR: Slot = Slot {
    key: super::analytics::DETECTOR_ROLE,
    service: "lambda.amazonaws.com",
    description: "Execution role for the iotreg anomaly detector",
    check: "analytics.detector_role",
    spec: |d| d.analytics.as_deref().map(|a| &a.detector_role),
    depends_on: &[],
};

pub struct Role(pub Arc<Env>, pub &'static Slot);

impl Role {
    /// The data processor's execution role.
    pub fn lambda(env: Arc<Env>) -> Role {
        Role(env, &LAMBDA)
    }

    /// The spec; a role the deployment does not configure is named by its record (a stray).
    fn spec(&self) -> RoleSpec {
        (self.1.spec)(&self.0.d).cloned().unwrap_or(RoleSpec {
            name: String::new(),
            trust_policy: serde_json::Value::Null,
            managed_policies: vec![],
            inline_policy: None,
        })
    }
}

/// The live role: GetRole's answer and the ARNs of the managed policies attached to it.
pub struct LiveRole {
    pub role: IamRole,
    pub attached: Vec<String>,
    /// The inline policy the spec names, as a document (None: the role has no such policy).
    pub inline: Option<serde_json::Value>,
}

/// A trust policy letting `service` assume a role.
pub fn trust_policy(service: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole"
        }]
    })
}

impl Meta for Role {
    fn key(&self) -> &str {
        self.1.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec().name
    }
    fn depends_on(&self) -> &[&'static str] {
        self.1.depends_on
    }
}

#[async_trait::async_trait]
impl Kind for Role {
    type Live = LiveRole;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let spec = self.spec();
        let mut policies = spec.managed_policies.clone();
        policies.sort();
        let mut f = Fields::from([
            (MANAGED.to_string(), policies.into()),
            (TRUST.to_string(), spec.trust_policy.clone()),
        ]);
        // Only roles that have one compare it: the others' plans stay as they were.
        if let Some(p) = &spec.inline_policy {
            f.insert(INLINE.into(), serde_json::json!({ &p.name: p.document }));
        }
        f
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<LiveRole>, StepError> {
        // A role the config no longer wants is read by its recorded name.
        let name = &super::name_to_read(
            (self.1.spec)(&self.0.d).map(|s| s.name.as_str()),
            cx,
            self.1.key,
        );
        let role = sdk::find(
            op(KIND, name, "GetRole"),
            self.0.aws.iam.get_role().role_name(name).send(),
            |e| e.is_no_such_entity_exception(),
        )
        .await?;
        let Some(role) = role.and_then(|o| o.role) else {
            return Ok(None);
        };
        let attached = self.attached(name).await?;
        let inline = match &(self.1.spec)(&self.0.d).and_then(|s| s.inline_policy.clone()) {
            Some(p) => sdk::find(
                op(KIND, name, "GetRolePolicy"),
                self.0
                    .aws
                    .iam
                    .get_role_policy()
                    .role_name(name)
                    .policy_name(&p.name)
                    .send(),
                |e| e.is_no_such_entity_exception(),
            )
            .await?
            .map(|o| {
                let text = percent_decode(o.policy_document());
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            }),
            None => None,
        };
        Ok(Some(LiveRole {
            role,
            attached,
            inline,
        }))
    }

    fn fields(&self, live: &LiveRole) -> Fields {
        let trust = live
            .role
            .assume_role_policy_document()
            .map(percent_decode)
            .map(|t| serde_json::from_str(&t).unwrap_or_else(|_| t.into()))
            .unwrap_or_default();
        let mut policies = live.attached.clone();
        policies.sort();
        let mut f = Fields::from([
            (MANAGED.to_string(), policies.into()),
            (TRUST.to_string(), trust),
        ]);
        if let Some(p) = &self.spec().inline_policy {
            f.insert(
                INLINE.into(),
                serde_json::json!({ &p.name: live.inline.clone().unwrap_or_default() }),
            );
        }
        f
    }

    fn identify(&self, live: &LiveRole) -> String {
        live.role.arn().to_string()
    }

    async fn apply(&self, cx: &Ctx, step: Step<LiveRole>) -> Result<Outcome, StepError> {
        let iam = &self.0.aws.iam;
        let spec = self.spec();
        let key = self.1.key;
        let name = &spec.name;
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(key, KIND, Phase::Intent, name))?;
            let out = sdk::create(
                op(KIND, name, "CreateRole"),
                iam.create_role()
                    .role_name(name)
                    .assume_role_policy_document(spec.trust_policy.to_string())
                    .description(self.1.description)
                    .send(),
                |e| e.is_entity_already_exists_exception(),
            )
            .await?;
            // A new role has no managed policies yet.
            for arn in &spec.managed_policies {
                self.attach(arn).await?;
            }
            self.put_inline().await?;
            rec.phase = Phase::Created;
            rec.arn = out.role.map(|r| r.arn);
            rec.data
                .insert(MANAGED.into(), serde_json::json!(spec.managed_policies));
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let mut done = Vec::new();
        if step.changes(TRUST) {
            sdk::send(
                op(KIND, name, "UpdateAssumeRolePolicy"),
                iam.update_assume_role_policy()
                    .role_name(name)
                    .policy_document(spec.trust_policy.to_string())
                    .send(),
            )
            .await?;
            done.push(format!("{TRUST} changed"));
        }
        if step.changes(INLINE) {
            self.put_inline().await?;
            done.push(format!("{INLINE} changed"));
        }
        if let Some(change) = step.plan.changes.iter().find(|c| c.field == MANAGED) {
            let (missing, extra) = policy_moves(change);
            let mut moved = Vec::new();
            for arn in &missing {
                self.attach(arn).await?;
                moved.push(format!("attached {arn}"));
            }
            // The role is this deployment's own: a policy attached outside the config is drift.
            for arn in &extra {
                sdk::find(
                    op(KIND, name, "DetachRolePolicy"),
                    iam.detach_role_policy()
                        .role_name(name)
                        .policy_arn(arn)
                        .send(),
                    |e| e.is_no_such_entity_exception(),
                )
                .await?;
                moved.push(format!("detached {arn}"));
            }
            done.push(format!("{MANAGED}: {}", moved.join(", ")));
        }
        let outcome = step.outcome((!done.is_empty()).then(|| done.join(", ")));
        let mut rec = step.live_record(key, KIND, name);
        rec.arn = Some(live.role.arn().to_string());
        rec.data
            .insert(MANAGED.into(), serde_json::json!(spec.managed_policies));
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        self.1.check
    }

    /// The comparison, worded as the role's purpose: whoever wrote the trust template, the
    /// role must let its service (Lambda, or IoT for the provisioning role) assume it.
    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, LiveRole>) -> Vec<Check> {
        let name = self.check_name();
        let res = &seen.resource;
        let mut check = planning::comparison_check(name, &seen);
        let Some(live) = seen.live else {
            return vec![check];
        };
        let service = self.1.service;
        if !trusts(&self.fields(live)[TRUST], service) {
            return vec![Check::fail(
                name,
                res,
                format!("{res} is not trusted by {service}"),
            )];
        }
        if check.status == CheckStatus::Pass {
            check.reason = if self.spec().inline_policy.is_some() {
                format!("trusted by {service}, its policies as configured")
            } else {
                format!("trusted by {service}, managed policies attached")
            };
        } else {
            check.reason = format!("{res} differs: {}", describe(seen.changes));
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let key = self.1.key;
        let Some(rec) = cx.record(key) else {
            return Ok(Outcome::Absent);
        };
        let iam = &self.0.aws.iam;
        let name = &rec.name;
        // IAM refuses DeleteRole while policies are attached or inline policies exist.
        let Some(attached) = sdk::find(
            op(KIND, name, "ListAttachedRolePolicies"),
            iam.list_attached_role_policies().role_name(name).send(),
            |e| e.is_no_such_entity_exception(),
        )
        .await?
        else {
            cx.forget(key)?;
            return Ok(Outcome::Absent);
        };
        for p in attached.attached_policies() {
            sdk::find(
                op(KIND, name, "DetachRolePolicy"),
                iam.detach_role_policy()
                    .role_name(name)
                    .policy_arn(p.policy_arn().unwrap_or_default())
                    .send(),
                |e| e.is_no_such_entity_exception(),
            )
            .await?;
        }
        let inline = sdk::find(
            op(KIND, name, "ListRolePolicies"),
            iam.list_role_policies().role_name(name).send(),
            |e| e.is_no_such_entity_exception(),
        )
        .await?;
        for p in inline.iter().flat_map(|i| i.policy_names()) {
            sdk::find(
                op(KIND, name, "DeleteRolePolicy"),
                iam.delete_role_policy()
                    .role_name(name)
                    .policy_name(p)
                    .send(),
                |e| e.is_no_such_entity_exception(),
            )
            .await?;
        }
        let deleted = sdk::find(
            op(KIND, name, "DeleteRole"),
            iam.delete_role().role_name(name).send(),
            |e| e.is_no_such_entity_exception(),
        )
        .await?;
        cx.forget(key)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

impl Role {
    /// ARNs of the managed policies attached to the role.
    async fn attached(&self, name: &str) -> Result<Vec<String>, StepError> {
        let mut out = Vec::new();
        let mut pages = self
            .0
            .aws
            .iam
            .list_attached_role_policies()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| crate::aws::failed(KIND, name, "ListAttachedRolePolicies", e))?;
            out.extend(
                page.attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string)),
            );
        }
        Ok(out)
    }

    /// Writes the spec's inline policy (PutRolePolicy creates or replaces it).
    async fn put_inline(&self) -> Result<(), StepError> {
        let spec = self.spec();
        let Some(p) = &spec.inline_policy else {
            return Ok(());
        };
        sdk::send(
            op(KIND, &spec.name, "PutRolePolicy"),
            self.0
                .aws
                .iam
                .put_role_policy()
                .role_name(&spec.name)
                .policy_name(&p.name)
                .policy_document(p.document.to_string())
                .send(),
        )
        .await?;
        Ok(())
    }

    async fn attach(&self, arn: &str) -> Result<(), StepError> {
        let name = &self.spec().name;
        sdk::send(
            op(KIND, name, "AttachRolePolicy"),
            self.0
                .aws
                .iam
                .attach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send(),
        )
        .await?;
        Ok(())
    }
}

/// The planned change of the managed policies as the ARNs to attach (wanted, not live) and
/// to detach (live, not wanted).
fn policy_moves(change: &Change) -> (Vec<String>, Vec<String>) {
    let arns = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect()
    };
    let (live, want) = (arns(change.from.as_ref()), arns(change.to.as_ref()));
    let missing = want.iter().filter(|a| !live.contains(a)).cloned().collect();
    let extra = live.iter().filter(|a| !want.contains(a)).cloned().collect();
    (missing, extra)
}

/// A role's differences for verify: the managed policies by name (missing, extra).
fn describe(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| {
            if c.field != MANAGED {
                return crate::plan::describe(std::slice::from_ref(c));
            }
            let (missing, extra) = policy_moves(c);
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("lacks {}", missing.join(", ")));
            }
            if !extra.is_empty() {
                parts.push(format!("also has {}", extra.join(", ")));
            }
            format!("{MANAGED}: {}", parts.join("; "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a trust policy lets `service` assume the role.
fn trusts(trust: &serde_json::Value, service: &str) -> bool {
    trust["Statement"].as_array().is_some_and(|stmts| {
        stmts.iter().any(|s| {
            s["Effect"] == "Allow"
                && s.pointer("/Principal/Service") == Some(&serde_json::json!(service))
                && s["Action"] == "sts:AssumeRole"
        })
    })
}

/// Decodes %XX escapes: IAM returns policy documents URL-encoded per RFC 3986.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use aws_sdk_iam::operation::attach_role_policy::AttachRolePolicyOutput;
    use aws_sdk_iam::operation::create_role::CreateRoleOutput;
    use aws_sdk_iam::operation::detach_role_policy::DetachRolePolicyOutput;
    use aws_sdk_iam::operation::get_role::{GetRoleError, GetRoleOutput};
    use aws_sdk_iam::operation::list_attached_role_policies::ListAttachedRolePoliciesOutput;
    use aws_sdk_iam::operation::update_assume_role_policy::UpdateAssumeRolePolicyOutput;
    use aws_sdk_iam::types::AttachedPolicy;
    use aws_smithy_mocks::{mock, Rule};
    use serde_json::{json, Value};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::plan::Planned;
    use crate::resources::testing::*;

    const NAME: &str = "iot-lambda-role-abc123";
    const ARN: &str = "arn:aws:iam::123456789012:role/iot-lambda-role-abc123";
    const BASIC: &str = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";
    const XRAY: &str = "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess";

    fn trust(service: &str) -> Value {
        json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"
        }]})
    }

    fn role(trust: Value) -> IamRole {
        // IAM answers with the document URL-encoded.
        let encoded = trust
            .to_string()
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22");
        IamRole::builder()
            .path("/")
            .role_name(NAME)
            .role_id("AROAEXAMPLE")
            .arn(ARN)
            .create_date(aws_smithy_types::DateTime::from_secs(0))
            .assume_role_policy_document(encoded)
            .build()
            .unwrap()
    }

    fn get_role(trust: Value) -> Rule {
        mock!(aws_sdk_iam::Client::get_role)
            .then_output(move || GetRoleOutput::builder().role(role(trust.clone())).build())
    }

    fn no_role() -> Rule {
        mock!(aws_sdk_iam::Client::get_role).then_error(|| {
            GetRoleError::NoSuchEntityException(
                aws_sdk_iam::types::error::NoSuchEntityException::builder().build(),
            )
        })
    }

    fn attached(arns: &'static [&'static str]) -> Rule {
        mock!(aws_sdk_iam::Client::list_attached_role_policies).then_output(move || {
            ListAttachedRolePoliciesOutput::builder()
                .set_attached_policies(Some(
                    arns.iter()
                        .map(|a| AttachedPolicy::builder().policy_arn(*a).build())
                        .collect(),
                ))
                .build()
        })
    }

    fn attach(arn: &'static str) -> Rule {
        mock!(aws_sdk_iam::Client::attach_role_policy)
            .match_requests(move |r| r.role_name() == Some(NAME) && r.policy_arn() == Some(arn))
            .then_output(|| AttachRolePolicyOutput::builder().build())
    }

    fn detach(arn: &'static str) -> Rule {
        mock!(aws_sdk_iam::Client::detach_role_policy)
            .match_requests(move |r| r.role_name() == Some(NAME) && r.policy_arn() == Some(arn))
            .then_output(|| DetachRolePolicyOutput::builder().build())
    }

    /// The role as `up` records it.
    fn record() -> Record {
        let mut r = recorded(ROLE, KIND, NAME, Some(ARN));
        r.data.insert(MANAGED.into(), json!([BASIC]));
        r
    }

    fn stack(iam: &[&Rule], records: Vec<Record>) -> Harness {
        harness(&[], iam, &[], &[], records, |d| {
            d.role.trust_policy = trust("lambda.amazonaws.com");
            d.role.managed_policies = vec![BASIC.into()];
        })
    }

    /// What `plan` says, then what `ensure` does, on the same live role.
    async fn plan_then_ensure(h: &Harness) -> (Planned, Outcome) {
        crate::resources::testing::plan_then_ensure(&Role::lambda(h.env.clone()), &h.cx).await
    }

    fn fields(p: &Planned) -> Vec<&str> {
        crate::resources::testing::changed_fields(p)
    }

    #[tokio::test]
    async fn in_sync_is_unchanged_and_writes_nothing() {
        let (get, list) = (get_role(trust("lambda.amazonaws.com")), attached(&[BASIC]));
        let h = stack(&[&get, &list], vec![record()]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::NoChange, "{plan:?}");
        assert_eq!(outcome, Outcome::Unchanged);
        assert_eq!(h.cx.record(ROLE), Some(record()));
    }

    #[tokio::test]
    async fn a_changed_trust_policy_is_updated_alone() {
        let (get, list) = (
            get_role(trust("edgelambda.amazonaws.com")),
            attached(&[BASIC]),
        );
        let update = mock!(aws_sdk_iam::Client::update_assume_role_policy)
            .match_requests(|r| {
                r.policy_document() == Some(&trust("lambda.amazonaws.com").to_string())
            })
            .then_output(|| UpdateAssumeRolePolicyOutput::builder().build());
        let h = stack(&[&get, &list, &update], vec![record()]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Update);
        assert_eq!(fields(&plan), [TRUST]);
        assert_eq!(outcome, Outcome::Updated("trust_policy changed".into()));
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test]
    async fn changed_managed_policies_are_attached_and_detached_without_touching_the_trust() {
        let (get, list) = (get_role(trust("lambda.amazonaws.com")), attached(&[XRAY]));
        let (att, det) = (attach(BASIC), detach(XRAY));
        let h = stack(&[&get, &list, &att, &det], vec![record()]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Update);
        assert_eq!(fields(&plan), [MANAGED]);
        assert_eq!(
            outcome,
            Outcome::Updated(format!(
                "managed_policies: attached {BASIC}, detached {XRAY}"
            ))
        );
        assert_eq!((att.num_calls(), det.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_missing_role_is_created_with_its_policies() {
        let get = no_role();
        let create = mock!(aws_sdk_iam::Client::create_role)
            .match_requests(|r| r.role_name() == Some(NAME))
            .then_output(|| CreateRoleOutput::builder().role(role(json!({}))).build());
        let att = attach(BASIC);
        let h = stack(&[&get, &create, &att], vec![]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Create);
        assert_eq!(outcome, Outcome::Created);
        assert_eq!((create.num_calls(), att.num_calls()), (1, 1));
        assert_eq!(h.cx.record(ROLE).unwrap(), {
            let mut r = record();
            r.intent_at_ms = h.cx.record(ROLE).unwrap().intent_at_ms;
            r
        });
    }

    #[tokio::test]
    async fn an_interrupted_create_is_adopted_and_its_policies_attached() {
        let (get, list) = (get_role(trust("lambda.amazonaws.com")), attached(&[]));
        let att = attach(BASIC);
        let mut intent = recorded(ROLE, KIND, NAME, None);
        intent.phase = Phase::Intent;
        let h = stack(&[&get, &list, &att], vec![intent]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Adopt);
        assert_eq!(fields(&plan), [MANAGED]);
        assert!(matches!(outcome, Outcome::Updated(_)), "{outcome:?}");
        assert_eq!(att.num_calls(), 1);
        assert_eq!(h.cx.record(ROLE), Some(record()));
    }

    #[tokio::test]
    async fn verify_judges_by_the_same_comparison() {
        let (get, list) = (get_role(trust("lambda.amazonaws.com")), attached(&[BASIC]));
        let h = stack(&[&get, &list], vec![record()]);
        let checks = Resource::check(&Role::lambda(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Pass, "{checks:?}");
        assert_eq!(
            checks[0].reason,
            "trusted by lambda.amazonaws.com, managed policies attached"
        );

        let (get, list) = (get_role(trust("lambda.amazonaws.com")), attached(&[XRAY]));
        let h = stack(&[&get, &list], vec![record()]);
        let checks = Resource::check(&Role::lambda(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert!(
            checks[0].reason.contains(&format!("lacks {BASIC}"))
                && checks[0].reason.contains(&format!("also has {XRAY}")),
            "{}",
            checks[0].reason
        );

        let (get, list) = (get_role(trust("ec2.amazonaws.com")), attached(&[BASIC]));
        let h = stack(&[&get, &list], vec![record()]);
        let checks = Resource::check(&Role::lambda(h.env.clone()), &h.cx).await;
        assert!(
            checks[0]
                .reason
                .ends_with("is not trusted by lambda.amazonaws.com"),
            "{}",
            checks[0].reason
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            super::percent_decode("%7B%22a%22%3A%20%22b%22%7D"),
            "{\"a\": \"b\"}"
        );
        assert_eq!(super::percent_decode("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(super::percent_decode("100%"), "100%");
    }
}
