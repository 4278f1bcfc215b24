//! The IoT policy. AWS keeps at most five versions; a changed document becomes a new default
//! version (the oldest non-default one is deleted first when five exist), and `down` deletes
//! the non-default versions before the policy, as AWS requires.

use std::sync::Arc;

use super::{Env, POLICY};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, done, found};

const KIND: &str = "IoT policy";
const MAX_VERSIONS: usize = 5;

pub struct Policy(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Policy {
    fn key(&self) -> &str {
        POLICY
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.policy_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([("document".to_string(), self.0.d.policy_document.clone())])
    }

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        Ok(self.live(&self.0.d.policy_name).await?.map(|live| {
            let text = live.policy_document().unwrap_or_default();
            // Unparseable text is shown as it is (and differs, as ensure judges it).
            let doc = serde_json::from_str(text).unwrap_or_else(|_| text.into());
            Fields::from([("document".to_string(), doc)])
        }))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let iot = &self.0.aws.iot;
        let name = &self.0.d.policy_name;
        let want = &self.0.d.policy_document;
        let record = cx.record(POLICY);
        let live = self.live(name).await?;
        if let Some(live) = live {
            let Some(mut rec) = record.clone() else {
                return Err(StepError::NotOurs {
                    kind: KIND.into(),
                    name: name.clone(),
                });
            };
            let was_intent = rec.phase == Phase::Intent;
            rec.phase = Phase::Created;
            rec.arn = live.policy_arn().map(str::to_string);
            let same = live
                .policy_document()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                .is_some_and(|live_doc| &live_doc == want);
            let outcome = if same {
                if was_intent {
                    Outcome::Adopted
                } else {
                    Outcome::Unchanged
                }
            } else {
                self.new_default_version(name).await?;
                Outcome::Updated("policy document".into())
            };
            if record.as_ref() != Some(&rec) {
                cx.commit(rec)?;
            }
            return Ok(outcome);
        }
        let mut rec = cx.intent(Record::new(POLICY, KIND, Phase::Intent, name))?;
        let out = crate::create!(
            iot.create_policy()
                .policy_name(name)
                .policy_document(want.to_string())
                .send(),
            is_resource_already_exists_exception,
            cx,
            POLICY,
            KIND,
            name,
            "CreatePolicy"
        );
        rec.phase = Phase::Created;
        rec.arn = out.policy_arn;
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let name = &self.0.d.policy_name;
        Ok(self
            .live(name)
            .await?
            .map(|o| o.policy_arn.unwrap_or_default()))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "policy.document";
        let name = &self.0.d.policy_name;
        let res = format!("{KIND} {name}");
        let live = self.live(name).await;
        let Some(live) = crate::check_try!(live, [NAME], res) else {
            return vec![Check::fail(NAME, &res, format!("{res} does not exist"))];
        };
        let same = live
            .policy_document()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .is_some_and(|doc| doc == self.0.d.policy_document);
        let version = live.default_version_id().unwrap_or("?");
        vec![Check::new(
            NAME,
            &res,
            same,
            if same {
                format!("default version {version} equals the rendered template")
            } else {
                format!("{res}: default version {version} differs from the rendered template")
            },
        )]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(POLICY) else {
            return Ok(Outcome::Absent);
        };
        let iot = &self.0.aws.iot;
        let name = &rec.name;
        let Some(targets) = found!(
            iot.list_targets_for_policy().policy_name(name).send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "ListTargetsForPolicy"
        ) else {
            cx.forget(POLICY)?;
            return Ok(Outcome::Absent);
        };
        // Our certificate was detached already; anything still attached would block deletion.
        for target in targets.targets() {
            crate::gone_by_code!(
                iot.detach_policy().policy_name(name).target(target).send(),
                "ResourceNotFoundException",
                KIND,
                name,
                "DetachPolicy"
            );
        }
        self.delete_non_default_versions(name, 1).await?;
        let deleted = done!(
            iot.delete_policy().policy_name(name).send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "DeletePolicy"
        );
        cx.forget(POLICY)?;
        Ok(if deleted {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

impl Policy {
    /// The live resource, or None when it does not exist: the one read that ensure, probe,
    /// check and destroy share.
    async fn live(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_iot::operation::get_policy::GetPolicyOutput>, StepError> {
        Ok(found!(
            self.0.aws.iot.get_policy().policy_name(name).send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "GetPolicy"
        ))
    }

    async fn new_default_version(&self, name: &str) -> Result<(), StepError> {
        let iot = &self.0.aws.iot;
        // Make room: with five versions CreatePolicyVersion fails with VersionsLimitExceeded.
        self.delete_non_default_versions(name, MAX_VERSIONS - 1)
            .await?;
        call!(
            iot.create_policy_version()
                .policy_name(name)
                .policy_document(self.0.d.policy_document.to_string())
                .set_as_default(true)
                .send(),
            KIND,
            name,
            "CreatePolicyVersion"
        );
        // Keep the new default and the one it replaced (for rollback), nothing older: leaving
        // five versions would make the next edit, ours or anyone's, fail at AWS's limit.
        self.delete_non_default_versions(name, 2).await
    }

    /// Deletes the oldest non-default versions until at most `keep` versions (the default
    /// included) remain; `keep = 1` leaves only the default.
    async fn delete_non_default_versions(&self, name: &str, keep: usize) -> Result<(), StepError> {
        let iot = &self.0.aws.iot;
        let versions = call!(
            iot.list_policy_versions().policy_name(name).send(),
            KIND,
            name,
            "ListPolicyVersions"
        );
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
            done!(
                iot.delete_policy_version()
                    .policy_name(name)
                    .policy_version_id(version)
                    .send(),
                is_resource_not_found_exception,
                KIND,
                name,
                "DeletePolicyVersion"
            );
        }
        Ok(())
    }
}
