//! The policy → certificate attachment: the device certificate's link to the IoT policy.

use std::sync::Arc;

use super::fleet::view::Paged;
use super::link::{CertificateLink, Target};
use super::sdk::{self, op};
use super::{Env, CERTIFICATE, POLICY, POLICY_ATTACHMENT};
use crate::engine::StepError;

const KIND: &str = "policy attachment";

/// The IoT policy the certificate is attached to.
pub struct ToPolicy(pub Arc<Env>);

pub type PolicyAttachment = CertificateLink<ToPolicy>;

pub fn new(env: Arc<Env>) -> PolicyAttachment {
    CertificateLink(ToPolicy(env))
}

#[async_trait::async_trait]
impl Target for ToPolicy {
    const KEY: &'static str = POLICY_ATTACHMENT;
    const KIND: &'static str = KIND;
    const CHECK: &'static str = "policy.attached_to_certificate";

    fn name(&self) -> String {
        format!("{} → certificate", self.0.d.policy.name)
    }
    fn depends_on(&self) -> &'static [&'static str] {
        &[POLICY, CERTIFICATE]
    }

    async fn attached(&self, cert: &str, name: &str) -> Result<bool, StepError> {
        is_attached(&self.0.aws.iot, KIND, name, &self.0.d.policy.name, cert).await
    }

    async fn attach(&self, cert: &str, name: &str) -> Result<(), StepError> {
        attach(&self.0.aws.iot, KIND, name, &self.0.d.policy.name, cert).await
    }

    fn paged(&self, cert: &str) -> Paged<()> {
        self.0
            .view
            .as_ref()
            .map_or(Paged::Unread, |v| v.policy_attached(cert))
    }

    async fn detach(&self, cert: &str, name: &str) -> Result<bool, StepError> {
        detach(&self.0.aws.iot, KIND, name, &self.0.d.policy.name, cert).await
    }

    fn says(&self, attached: bool) -> String {
        let policy = &self.0.d.policy.name;
        if attached {
            format!("{policy} is attached to the certificate")
        } else {
            format!("{policy} is not attached to the certificate")
        }
    }
}

/// Whether `policy` is attached to `target` (a certificate's or a thing group's ARN); false
/// when the target is gone. The device policy on a certificate or on the fleet's group, and
/// the claim policy on the claim certificate, are all this one call.
pub async fn is_attached(
    iot: &aws_sdk_iot::Client,
    kind: &str,
    name: &str,
    policy: &str,
    target: &str,
) -> Result<bool, StepError> {
    let attached = sdk::find(
        op(kind, name, "ListAttachedPolicies"),
        iot.list_attached_policies().target(target).send(),
        |e| e.is_resource_not_found_exception(),
    )
    .await?;
    Ok(attached.is_some_and(|a| a.policies().iter().any(|p| p.policy_name() == Some(policy))))
}

/// Attaches `policy` to `target` (idempotent on AWS).
pub async fn attach(
    iot: &aws_sdk_iot::Client,
    kind: &str,
    name: &str,
    policy: &str,
    target: &str,
) -> Result<(), StepError> {
    sdk::send(
        op(kind, name, "AttachPolicy"),
        iot.attach_policy()
            .policy_name(policy)
            .target(target)
            .send(),
    )
    .await?;
    Ok(())
}

/// Detaches `policy` from `target`; false when it was not attached any more.
pub async fn detach(
    iot: &aws_sdk_iot::Client,
    kind: &str,
    name: &str,
    policy: &str,
    target: &str,
) -> Result<bool, StepError> {
    // DetachPolicy has no typed not-found error; AWS answers with the code.
    let detached = sdk::find_by_code(
        op(kind, name, "DetachPolicy"),
        iot.detach_policy()
            .policy_name(policy)
            .target(target)
            .send(),
        "ResourceNotFoundException",
    )
    .await?;
    Ok(detached.is_some())
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::attach_policy::AttachPolicyOutput;
    use aws_sdk_iot::operation::list_attached_policies::ListAttachedPoliciesOutput;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::resources::link::tests::{Fixture, CERT};

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

    const FIXTURE: Fixture<ToPolicy> = Fixture {
        make: new,
        listed,
        attach,
        name: "device-policy-abc123 → certificate",
        says: [
            "device-policy-abc123 is attached to the certificate",
            "device-policy-abc123 is not attached to the certificate",
        ],
    };

    crate::resources::link::tests::link_tests!(FIXTURE);
}
