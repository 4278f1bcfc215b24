//! Claim provisioning's claim certificate and its policy attachment.
//!
//! The claim certificate is the one identity every device of the factory shares until it has
//! its own: AWS IoT lets it connect and reach only the fleet provisioning topics (the claim
//! policy), where a device trades a CSR for its own certificate and registers through the
//! template. It is made exactly as the device certificate is (`certificate.mode = "local"`):
//! the key is generated here and written before the call, the intent carries the public key's
//! fingerprint, CreateCertificateFromCsr is never retried blindly, and after a crash the
//! certificate is found again among those created since the intent. So this module runs the
//! device certificate's code ([`super::certificate`]) on a deployment whose device is the
//! claim (files `claim-certificate.pem.crt`, `claim-private.pem.key`, `claim-public.pem.key`
//! in the key directory), its record kept under its own key in the state.

use std::sync::Arc;

use super::certificate::Certificate;
use super::link::{CertificateLink, Target};
use super::policy_attachment;
use super::{Env, CERTIFICATE, CLAIM_CERTIFICATE, CLAIM_POLICY, CLAIM_POLICY_ATTACHMENT};
use crate::config::CertificateMode;
use crate::engine::{Ctx, Meta, Outcome, Resource, StepError};
use crate::keys::KeyFiles;
use crate::plan::Planned;
use crate::verify::Check;

/// The thing name the claim's files and CSR carry.
pub const CLAIM: &str = "claim";

/// The claim's key files in a key directory.
pub fn files(key_dir: &std::path::Path) -> KeyFiles {
    KeyFiles::for_thing(key_dir, CLAIM)
}

pub struct ClaimCertificate {
    /// The device certificate's code, on a deployment whose device is the claim.
    inner: Certificate,
}

impl ClaimCertificate {
    pub fn new(env: Arc<Env>) -> ClaimCertificate {
        let mut d = env.d.clone();
        d.certificate.key_files = match &env.d.provisioning {
            Some(p) => p.claim_files.clone(),
            None => files(&env.d.certificate.key_dir),
        };
        d.certificate.mode = CertificateMode::Local;
        // The claim's key is iotreg's own: a device's CSR (certificate.csr_file) is not for it.
        d.certificate.csr = None;
        d.certificate.sweep_duplicates = true;
        d.thing.name = CLAIM.to_string();
        ClaimCertificate {
            inner: Certificate(Arc::new(Env::new(env.aws.clone(), d))),
        }
    }

    fn cx(&self, cx: &Ctx) -> Ctx {
        cx.aliased(CERTIFICATE, CLAIM_CERTIFICATE)
    }
}

impl Meta for ClaimCertificate {
    fn key(&self) -> &str {
        CLAIM_CERTIFICATE
    }
    fn kind(&self) -> &str {
        "claim certificate"
    }
    fn name(&self) -> String {
        "for fleet provisioning".into()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

#[async_trait::async_trait]
impl Resource for ClaimCertificate {
    async fn plan(&self, cx: &Ctx, read_live: bool) -> Result<Planned, StepError> {
        let mut p = Resource::plan(&self.inner, &self.cx(cx), read_live).await?;
        p.key = CLAIM_CERTIFICATE.into();
        p.kind = self.kind().into();
        p.name = self.name();
        Ok(p)
    }
    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        Resource::ensure(&self.inner, &self.cx(cx)).await
    }
    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        Resource::destroy(&self.inner, &self.cx(cx)).await
    }
    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError> {
        Resource::probe(&self.inner, &self.cx(cx)).await
    }
    /// The device certificate's checks (active; the local files are its key's), named as
    /// the claim's.
    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        let mut checks = Resource::check(&self.inner, &self.cx(cx)).await;
        for c in &mut checks {
            c.name = c
                .name
                .replacen("certificate.", "provisioning.claim_certificate.", 1);
            c.resource = format!("claim {}", c.resource);
        }
        checks
    }
}

/// The claim policy attached to the claim certificate.
pub struct ToClaimPolicy(pub Arc<Env>);

pub type ClaimPolicyAttachment = CertificateLink<ToClaimPolicy>;

pub fn attachment(env: Arc<Env>) -> ClaimPolicyAttachment {
    CertificateLink(ToClaimPolicy(env))
}

const ATTACHMENT_KIND: &str = "claim policy attachment";
const ARROW: &str = " → claim certificate";

impl ToClaimPolicy {
    /// The claim policy's name; for a recorded attachment the config no longer wants, the
    /// name its record carries.
    fn policy(&self, link_name: &str) -> String {
        match &self.0.d.provisioning {
            Some(p) => p.claim_policy.name.clone(),
            None => link_name.trim_end_matches(ARROW).to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Target for ToClaimPolicy {
    const KEY: &'static str = CLAIM_POLICY_ATTACHMENT;
    const KIND: &'static str = ATTACHMENT_KIND;
    const CHECK: &'static str = "provisioning.claim_policy_attached";
    const CERTIFICATE_KEY: &'static str = CLAIM_CERTIFICATE;

    fn name(&self) -> String {
        let policy = self
            .0
            .d
            .provisioning
            .as_ref()
            .map(|p| p.claim_policy.name.clone())
            .unwrap_or_default();
        format!("{policy}{ARROW}")
    }
    fn depends_on(&self) -> &'static [&'static str] {
        &[CLAIM_POLICY, CLAIM_CERTIFICATE]
    }

    async fn attached(&self, cert: &str, name: &str) -> Result<bool, StepError> {
        let policy = self.policy(name);
        policy_attachment::is_attached(&self.0.aws.iot, ATTACHMENT_KIND, name, &policy, cert).await
    }

    async fn attach(&self, cert: &str, name: &str) -> Result<(), StepError> {
        let policy = self.policy(name);
        policy_attachment::attach(&self.0.aws.iot, ATTACHMENT_KIND, name, &policy, cert).await
    }

    async fn detach(&self, cert: &str, name: &str) -> Result<bool, StepError> {
        let policy = self.policy(name);
        policy_attachment::detach(&self.0.aws.iot, ATTACHMENT_KIND, name, &policy, cert).await
    }

    fn says(&self, attached: bool) -> String {
        let policy = self.policy(&self.name());
        if attached {
            format!("{policy} is attached to the claim certificate")
        } else {
            format!("{policy} is not attached to the claim certificate")
        }
    }
}
