//! An IoT policy: the devices' policy, and in claim provisioning the claim certificate's
//! policy (the provisioning topics only). AWS keeps at most five versions; a changed document becomes a new default
//! version (the oldest non-default one is deleted first when five exist), and `down` deletes
//! the non-default versions before the policy, as AWS requires.

use std::sync::Arc;

use aws_sdk_iot::operation::get_policy::GetPolicyOutput;

use super::sdk::{self, op};
use super::{Deployment, Env, PolicySpec, CLAIM_POLICY, POLICY};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "IoT policy";
const MAX_VERSIONS: usize = 5;

/// Which policy: its key and where its spec lives.
pub struct Slot {
    key: &'static str,
    check: &'static str,
    spec: fn(&Deployment) -> Option<&PolicySpec>,
}

pub const DEVICE: Slot = Slot {
    key: POLICY,
    check: "policy.document",
    spec: |d| Some(&d.policy),
};

pub const CLAIM: Slot = Slot {
    key: CLAIM_POLICY,
    check: "provisioning.claim_policy",
    spec: |d| d.provisioning.as_ref().map(|p| &p.claim_policy),
};

pub struct Policy(pub Arc<Env>, pub &'static Slot);

impl Policy {
    pub fn device(env: Arc<Env>) -> Policy {
        Policy(env, &DEVICE)
    }
    /// The spec; one the config no longer wants is only deleted, by its recorded name.
    fn spec(&self) -> PolicySpec {
        (self.1.spec)(&self.0.d).cloned().unwrap_or(PolicySpec {
            name: String::new(),
            document: serde_json::Value::Null,
            origin: String::new(),
            preset: None,
        })
    }
}

impl Meta for Policy {
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
        &[]
    }
}

#[async_trait::async_trait]
impl Kind for Policy {
    type Live = GetPolicyOutput;

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([("document".to_string(), self.spec().document)])
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<GetPolicyOutput>, StepError> {
        let name = &match (self.1.spec)(&self.0.d) {
            Some(p) => p.name.clone(),
            None => cx.record(self.1.key).map(|r| r.name).unwrap_or_default(),
        };
        sdk::find(
            op(KIND, name, "GetPolicy"),
            self.0.aws.iot.get_policy().policy_name(name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await
    }

    fn fields(&self, live: &GetPolicyOutput) -> Fields {
        let text = live.policy_document().unwrap_or_default();
        // Unparseable text is shown as it is, and differs from any document.
        let doc = serde_json::from_str(text).unwrap_or_else(|_| text.into());
        Fields::from([("document".to_string(), doc)])
    }

    fn identify(&self, live: &GetPolicyOutput) -> String {
        live.policy_arn().unwrap_or_default().to_string()
    }

    async fn apply(&self, cx: &Ctx, step: Step<GetPolicyOutput>) -> Result<Outcome, StepError> {
        let spec = self.spec();
        let name = &spec.name;
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(self.1.key, KIND, Phase::Intent, name))?;
            let out = sdk::create(
                op(KIND, name, "CreatePolicy"),
                self.0
                    .aws
                    .iot
                    .create_policy()
                    .policy_name(name)
                    .policy_document(spec.document.to_string())
                    .send(),
                |e| e.is_resource_already_exists_exception(),
            )
            .await?;
            rec.phase = Phase::Created;
            rec.arn = out.policy_arn;
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let updated = if step.changes("document") {
            self.new_default_version(name).await?;
            Some("policy document".to_string())
        } else {
            None
        };
        let outcome = step.outcome(updated);
        let mut rec = step.live_record(self.1.key, KIND, name);
        rec.arn = live.policy_arn().map(str::to_string);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        self.1.check
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, GetPolicyOutput>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if let Some(live) = seen.live {
            let version = live.default_version_id().unwrap_or("?");
            let res = &seen.resource;
            let origin = &self.spec().origin;
            check.reason = if check.status == CheckStatus::Pass {
                format!("default version {version} equals {origin}")
            } else {
                format!("{res}: default version {version} differs from {origin}")
            };
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let key = self.1.key;
        let Some(rec) = cx.record(key) else {
            return Ok(Outcome::Absent);
        };
        let iot = &self.0.aws.iot;
        let name = &rec.name;
        // Every page of targets first (AWS answers up to 250 a page), detached after: detaching
        // while paging would move the pages under the marker.
        let mut targets: Vec<String> = Vec::new();
        let exists = sdk::each_page(
            op(KIND, name, "ListTargetsForPolicy"),
            iot.list_targets_for_policy()
                .policy_name(name)
                .page_size(250)
                .into_paginator()
                .send(),
            |e| e.is_resource_not_found_exception(),
            |page| targets.extend(page.targets().iter().cloned()),
        )
        .await?;
        if !exists {
            cx.forget(key)?;
            return Ok(Outcome::Absent);
        }
        // Our certificate was detached already; anything still attached would block deletion.
        for target in &targets {
            // DetachPolicy's error model has no typed not-found variant, though AWS answers
            // ResourceNotFoundException for a target already gone.
            sdk::find_by_code(
                op(KIND, name, "DetachPolicy"),
                iot.detach_policy().policy_name(name).target(target).send(),
                "ResourceNotFoundException",
            )
            .await?;
        }
        self.delete_non_default_versions(name, 1).await?;
        let deleted = sdk::find(
            op(KIND, name, "DeletePolicy"),
            iot.delete_policy().policy_name(name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(key)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

impl Policy {
    async fn new_default_version(&self, name: &str) -> Result<(), StepError> {
        let iot = &self.0.aws.iot;
        // Make room: with five versions CreatePolicyVersion fails with VersionsLimitExceeded.
        self.delete_non_default_versions(name, MAX_VERSIONS - 1)
            .await?;
        sdk::send(
            op(KIND, name, "CreatePolicyVersion"),
            iot.create_policy_version()
                .policy_name(name)
                .policy_document(self.spec().document.to_string())
                .set_as_default(true)
                .send(),
        )
        .await?;
        // Keep the new default and the one it replaced (for rollback), nothing older: leaving
        // five versions would make the next edit, ours or anyone's, fail at AWS's limit.
        self.delete_non_default_versions(name, 2).await
    }

    /// Deletes the oldest non-default versions until at most `keep` versions (the default
    /// included) remain; `keep = 1` leaves only the default.
    async fn delete_non_default_versions(&self, name: &str, keep: usize) -> Result<(), StepError> {
        let iot = &self.0.aws.iot;
        let versions = sdk::send(
            op(KIND, name, "ListPolicyVersions"),
            iot.list_policy_versions().policy_name(name).send(),
        )
        .await?;
        let mut old: Vec<_> = versions
            .policy_versions()
            .iter()
            .filter(|v| !v.is_default_version())
            .filter_map(|v| v.version_id().map(str::to_string))
            .collect();
        // Version ids are increasing integers; delete the oldest first.
        old.sort_by_key(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        let total = versions.policy_versions().len();
        let excess = total.saturating_sub(keep);
        for version in old.iter().take(excess) {
            sdk::find(
                op(KIND, name, "DeletePolicyVersion"),
                iot.delete_policy_version()
                    .policy_name(name)
                    .policy_version_id(version)
                    .send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::create_policy_version::CreatePolicyVersionOutput;
    use aws_sdk_iot::operation::list_policy_versions::ListPolicyVersionsOutput;
    use aws_sdk_iot::types::PolicyVersion;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::harness;

    fn recorded() -> Record {
        Record::new(POLICY, KIND, Phase::Created, "device-policy-abc123")
    }

    fn live(document: &'static str) -> Rule {
        mock!(aws_sdk_iot::Client::get_policy).then_output(move || {
            GetPolicyOutput::builder()
                .policy_name("device-policy-abc123")
                .policy_arn("arn:aws:iot:us-east-1:123456789012:policy/device-policy-abc123")
                .policy_document(document)
                .default_version_id("1")
                .build()
        })
    }

    #[tokio::test]
    async fn no_change_makes_no_write() {
        // The harness's rendered document, as AWS returns it (other spacing: compared as JSON).
        let read = live(r#"{ "Version": "2012-10-17", "Statement": [] }"#);
        let h = harness(&[&read], &[], &[], &[], vec![recorded()], |_| {});
        let policy = Policy::device(h.env.clone());
        assert_eq!(
            policy.plan(&h.cx, true).await.unwrap().action,
            Action::NoChange
        );
        assert_eq!(policy.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_changed_document_is_a_new_default_version_as_planned() {
        let read = live(r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]}"#);
        let versions = mock!(aws_sdk_iot::Client::list_policy_versions).then_output(|| {
            ListPolicyVersionsOutput::builder()
                .policy_versions(
                    PolicyVersion::builder()
                        .version_id("1")
                        .is_default_version(true)
                        .build(),
                )
                .build()
        });
        let create = mock!(aws_sdk_iot::Client::create_policy_version)
            .match_requests(|r| r.set_as_default() == Some(true))
            .then_output(|| CreatePolicyVersionOutput::builder().build());
        let h = harness(
            &[&read, &versions, &create],
            &[],
            &[],
            &[],
            vec![recorded()],
            |_| {},
        );
        let policy = Policy::device(h.env.clone());
        let plan = policy.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Update);
        assert_eq!(plan.changes[0].field, "document");
        assert_eq!(
            policy.ensure(&h.cx).await.unwrap(),
            Outcome::Updated("policy document".into())
        );
        assert_eq!(create.num_calls(), 1);
    }
}
