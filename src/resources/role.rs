//! The Lambda execution role, trusted by lambda.amazonaws.com, with its managed policies.

use std::sync::Arc;

use super::{Env, ROLE};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, done, found};

const KIND: &str = "IAM role";

pub struct Role(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Role {
    fn key(&self) -> &str {
        ROLE
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.role_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        let d = &self.0.d;
        let mut policies = d.managed_policies.clone();
        policies.sort();
        Fields::from([
            ("managed_policies".to_string(), policies.into()),
            ("trust_policy".to_string(), d.trust_policy.clone()),
        ])
    }

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        let name = &self.0.d.role_name;
        let Some(role) = self.live(name).await?.and_then(|l| l.role) else {
            return Ok(None);
        };
        let trust = role
            .assume_role_policy_document()
            .map(percent_decode)
            .map(|t| serde_json::from_str(&t).unwrap_or_else(|_| t.into()))
            .unwrap_or_default();
        let mut policies = self.attached(name).await?;
        policies.sort();
        Ok(Some(Fields::from([
            ("managed_policies".to_string(), policies.into()),
            ("trust_policy".to_string(), trust),
        ])))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let iam = &self.0.aws.iam;
        let d = &self.0.d;
        let name = &d.role_name;
        let record = cx.record(ROLE);
        let live = self.live(name).await?;
        let mut changes = Vec::new();
        let (mut rec, created) = match live.and_then(|l| l.role) {
            Some(role) => {
                let Some(mut rec) = record.clone() else {
                    return Err(StepError::NotOurs {
                        kind: KIND.into(),
                        name: name.clone(),
                    });
                };
                if rec.phase == Phase::Intent {
                    changes.push("adopted".to_string());
                }
                rec.phase = Phase::Created;
                rec.arn = Some(role.arn().to_string());
                // IAM returns the trust policy URL-encoded.
                let live_trust = role
                    .assume_role_policy_document()
                    .map(percent_decode)
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
                if live_trust.as_ref() != Some(&d.trust_policy) {
                    call!(
                        iam.update_assume_role_policy()
                            .role_name(name)
                            .policy_document(d.trust_policy.to_string())
                            .send(),
                        KIND,
                        name,
                        "UpdateAssumeRolePolicy"
                    );
                    changes.push("trust policy".into());
                }
                (rec, false)
            }
            None => {
                let mut rec = cx.intent(Record::new(ROLE, KIND, Phase::Intent, name))?;
                let out = crate::create!(
                    iam.create_role()
                        .role_name(name)
                        .assume_role_policy_document(d.trust_policy.to_string())
                        .description("Execution role for the iotreg IoT data processor")
                        .send(),
                    is_entity_already_exists_exception,
                    cx,
                    ROLE,
                    KIND,
                    name,
                    "CreateRole"
                );
                rec.phase = Phase::Created;
                rec.arn = out.role.map(|r| r.arn);
                (rec, true)
            }
        };
        let attached = self.attached(name).await?;
        for arn in &d.managed_policies {
            if attached.contains(arn) {
                continue;
            }
            call!(
                iam.attach_role_policy()
                    .role_name(name)
                    .policy_arn(arn)
                    .send(),
                KIND,
                name,
                "AttachRolePolicy"
            );
            if !created {
                changes.push(format!("attached {arn}"));
            }
        }
        // The role is this deployment's own: a policy attached outside the config is drift.
        for arn in attached.iter().filter(|a| !d.managed_policies.contains(a)) {
            done!(
                iam.detach_role_policy()
                    .role_name(name)
                    .policy_arn(arn)
                    .send(),
                is_no_such_entity_exception,
                KIND,
                name,
                "DetachRolePolicy"
            );
            changes.push(format!("detached {arn}"));
        }
        rec.data.insert(
            "managed_policies".into(),
            serde_json::json!(d.managed_policies),
        );
        if record.as_ref() != Some(&rec) {
            cx.commit(rec)?;
        }
        Ok(if created {
            Outcome::Created
        } else if changes == ["adopted"] {
            Outcome::Adopted
        } else if changes.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Updated(changes.join(", "))
        })
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let name = &self.0.d.role_name;
        Ok(self.live(name).await?.and_then(|o| o.role).map(|r| r.arn))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "role.trust";
        let d = &self.0.d;
        let name = &d.role_name;
        let res = format!("{KIND} {name}");
        let iam = &self.0.aws.iam;
        let live: Result<_, StepError> = async {
            let role = self.live(name).await?;
            let Some(role) = role.and_then(|r| r.role) else {
                return Ok(None);
            };
            let attached = call!(
                iam.list_attached_role_policies().role_name(name).send(),
                KIND,
                name,
                "ListAttachedRolePolicies"
            );
            Ok(Some((role, attached)))
        }
        .await;
        let Some((role, attached)) = crate::check_try!(live, [NAME], res) else {
            return vec![Check::fail(NAME, &res, format!("{res} does not exist"))];
        };
        let trust = role
            .assume_role_policy_document()
            .map(percent_decode)
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .unwrap_or_default();
        let trusted = trust["Statement"].as_array().is_some_and(|stmts| {
            stmts.iter().any(|s| {
                s["Effect"] == "Allow"
                    && s.pointer("/Principal/Service")
                        == Some(&serde_json::json!("lambda.amazonaws.com"))
                    && s["Action"] == "sts:AssumeRole"
            })
        });
        let missing: Vec<&str> = d
            .managed_policies
            .iter()
            .filter(|arn| {
                !attached
                    .attached_policies()
                    .iter()
                    .any(|p| p.policy_arn() == Some(arn.as_str()))
            })
            .map(String::as_str)
            .collect();
        let reason = match (trusted, missing.is_empty()) {
            (true, true) => {
                "trusted by lambda.amazonaws.com, managed policies attached".to_string()
            }
            (false, _) => format!("{res} is not trusted by lambda.amazonaws.com"),
            (true, false) => format!("{res} lacks {}", missing.join(", ")),
        };
        vec![Check::new(
            NAME,
            &res,
            trusted && missing.is_empty(),
            reason,
        )]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(ROLE) else {
            return Ok(Outcome::Absent);
        };
        let iam = &self.0.aws.iam;
        let name = &rec.name;
        // IAM refuses DeleteRole while policies are attached or inline policies exist.
        let Some(attached) = found!(
            iam.list_attached_role_policies().role_name(name).send(),
            is_no_such_entity_exception,
            KIND,
            name,
            "ListAttachedRolePolicies"
        ) else {
            cx.forget(ROLE)?;
            return Ok(Outcome::Absent);
        };
        for p in attached.attached_policies() {
            done!(
                iam.detach_role_policy()
                    .role_name(name)
                    .policy_arn(p.policy_arn().unwrap_or_default())
                    .send(),
                is_no_such_entity_exception,
                KIND,
                name,
                "DetachRolePolicy"
            );
        }
        if let Some(inline) = found!(
            iam.list_role_policies().role_name(name).send(),
            is_no_such_entity_exception,
            KIND,
            name,
            "ListRolePolicies"
        ) {
            for p in inline.policy_names() {
                done!(
                    iam.delete_role_policy()
                        .role_name(name)
                        .policy_name(p)
                        .send(),
                    is_no_such_entity_exception,
                    KIND,
                    name,
                    "DeleteRolePolicy"
                );
            }
        }
        let deleted = done!(
            iam.delete_role().role_name(name).send(),
            is_no_such_entity_exception,
            KIND,
            name,
            "DeleteRole"
        );
        cx.forget(ROLE)?;
        Ok(if deleted {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
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

    /// The live resource, or None when it does not exist: the one read that ensure, probe,
    /// check and destroy share.
    async fn live(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_iam::operation::get_role::GetRoleOutput>, StepError> {
        Ok(found!(
            self.0.aws.iam.get_role().role_name(name).send(),
            is_no_such_entity_exception,
            KIND,
            name,
            "GetRole"
        ))
    }
}

#[cfg(test)]
mod tests {
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
