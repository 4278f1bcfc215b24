//! The device certificate. By default the key pair is made here and only a CSR travels, so the
//! certificate can always be found again by its public key: before the create call the private
//! key is on disk and its fingerprint in the state's intent, and after a crash `up` lists the
//! certificates created since the intent and adopts the one with that key. With the device's
//! own CSR (`certificate.csr_file`, a manifest's `csr`) no key is made here at all: the CSR's
//! public key plays the same part, and the record says the key is on the device.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_iot::types::{CertificateDescription, CertificateStatus};

use super::fleet::view::Paged;
use super::sdk::{self, op};
use super::{Env, CERTIFICATE};
use crate::config::CertificateMode;
use crate::engine::{Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::keys::{self, DeviceKey};
use crate::plan::Fields;
use crate::retry::Backoff;
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "certificate";
const FINGERPRINT: &str = "public_key_sha256";
/// Recorded when the certificate was issued for the device's own CSR: there is no private key
/// here to check or to connect with.
pub const KEY_ON_DEVICE: &str = "key_on_device";
/// How far before the intent to look, for clock skew between this machine and AWS.
const SKEW: Duration = Duration::from_secs(300);
const ACTIVE: &str = "certificate.active";
/// A plan field when the device's own CSR is given: the public key the certificate must carry.
const PUBLIC_KEY: &str = "public_key_sha256";
const FILES: &str = "certificate.local_files";

pub struct Certificate(pub Arc<Env>);

impl Meta for Certificate {
    fn key(&self) -> &str {
        CERTIFICATE
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        format!("for {}", self.0.d.thing.name)
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

#[async_trait::async_trait]
impl Kind for Certificate {
    type Live = CertificateDescription;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let mut f = fields(CertificateStatus::Active.as_str());
        if let Some(csr) = &self.0.d.certificate.csr {
            // A new CSR means a new key on the device: the certificate must be reissued.
            f.insert(PUBLIC_KEY.into(), csr.fingerprint.clone().into());
        }
        f
    }

    /// The recorded certificate, by its id. Only a recorded certificate is ours: the result
    /// of an interrupted create is looked for by `apply` before it creates one.
    async fn read(&self, cx: &Ctx) -> Result<Option<CertificateDescription>, StepError> {
        let Some(rec) = cx.record(CERTIFICATE).filter(|r| r.phase == Phase::Created) else {
            return Ok(None);
        };
        let Some(id) = rec.id.as_deref() else {
            return Ok(None);
        };
        // A listing has no PEM, so it serves only when the recorded key is the one wanted:
        // a certificate's key never changes, and `fields` takes it from there.
        let key_as_wanted = self
            .0
            .d
            .certificate
            .csr
            .as_ref()
            .is_none_or(|csr| rec.data_str(FINGERPRINT) == Some(csr.fingerprint.as_str()));
        if let Some(view) = self.0.view.as_ref().filter(|_| key_as_wanted) {
            match view.certificate(id) {
                Paged::Found(live) => return Ok(Some(live)),
                Paged::Absent => return Ok(None),
                Paged::Unread => {}
            }
        }
        self.describe(id).await
    }

    fn fields(&self, live: &CertificateDescription) -> Fields {
        let mut f = fields(status_of(live));
        if let Some(csr) = &self.0.d.certificate.csr {
            let fp = match live.certificate_pem() {
                Some(pem) => keys::certificate_key_fingerprint(pem)
                    .unwrap_or_else(|e| format!("unreadable: {e}")),
                // Listed in a page, not described: `read` serves a listing only for a
                // certificate whose recorded key is the CSR's.
                None => csr.fingerprint.clone(),
            };
            f.insert(PUBLIC_KEY.into(), fp.into());
        }
        f
    }

    fn identify(&self, live: &CertificateDescription) -> String {
        format!(
            "{} ({})",
            live.certificate_arn().unwrap_or_default(),
            status_of(live)
        )
    }

    fn renamed(&self, _rec: &Record) -> bool {
        // Recorded by id; a certificate has no name to change.
        false
    }

    async fn apply(
        &self,
        cx: &Ctx,
        step: Step<CertificateDescription>,
    ) -> Result<Outcome, StepError> {
        let Some(live) = &step.live else {
            return match step.record {
                Some(rec) if rec.phase == Phase::Created => {
                    // Deleted behind our back: the old key is useless now, issue a new one.
                    cx.progress("recorded certificate is gone; issuing a new one");
                    cx.forget(CERTIFICATE)?;
                    self.create(cx, None).await
                }
                Some(rec) => {
                    // A create call may have happened before a crash: look for its result first.
                    if let Some(found) = self.find_by_intent(&rec).await? {
                        return self.adopt(cx, rec, found).await;
                    }
                    self.create(cx, Some(&rec)).await
                }
                None => self.create(cx, None).await,
            };
        };
        if step.changes(PUBLIC_KEY) {
            // The device has a new key (its CSR changed): issue its certificate, then retire the
            // old one (deleting it detaches it; the attachments that follow attach the new one).
            let old = live.clone();
            cx.progress("the device's CSR has a new key; reissuing its certificate");
            let old_id = old.certificate_id().unwrap_or_default().to_string();
            let old_arn = old.certificate_arn().unwrap_or_default().to_string();
            cx.forget(CERTIFICATE)?;
            let _ = std::fs::remove_file(&self.0.d.certificate.key_files.certificate);
            self.create(cx, None).await?;
            self.delete(&old_id, &old_arn, cx).await?;
            return Ok(Outcome::Updated(format!(
                "reissued for the device's new CSR (replaced {old_id})"
            )));
        }
        self.write_certificate_file_if_missing(live.certificate_pem())?;
        if !step.changes("status") {
            return Ok(Outcome::Unchanged);
        }
        let id = live.certificate_id().unwrap_or_default();
        sdk::send(
            op(KIND, id, "UpdateCertificate"),
            self.0
                .aws
                .iot
                .update_certificate()
                .certificate_id(id)
                .new_status(CertificateStatus::Active)
                .send(),
        )
        .await?;
        Ok(Outcome::Updated(format!(
            "re-activated (was {})",
            status_of(live)
        )))
    }

    fn check_name(&self) -> &'static str {
        ACTIVE
    }

    fn check_names(&self) -> Vec<&'static str> {
        vec![ACTIVE, FILES]
    }

    /// Whether it is active (the comparison), and whether the local files are its own (the
    /// key files: something the comparison does not look at).
    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, CertificateDescription>) -> Vec<Check> {
        let Some(id) = seen.record.and_then(|r| r.id.as_deref()) else {
            return super::not_deployed(&[ACTIVE, FILES], KIND);
        };
        let res = format!("{KIND} {id}");
        let Some(desc) = seen.live else {
            let why = format!("{res} does not exist");
            return vec![
                Check::fail(ACTIVE, &res, why.clone()),
                Check::fail(FILES, &res, why),
            ];
        };
        let active = Check::new(
            ACTIVE,
            &res,
            seen.changes.is_empty(),
            format!("{res} is {}", status_of(desc)),
        );
        let on_device = seen
            .record
            .is_some_and(|r| r.data.get(KEY_ON_DEVICE).and_then(|v| v.as_bool()) == Some(true));
        vec![
            active,
            self.check_files(&res, desc.certificate_pem().unwrap_or_default(), on_device),
        ]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(CERTIFICATE) else {
            return Ok(Outcome::Absent);
        };
        let target = match (rec.phase, &rec.id, &rec.arn) {
            (Phase::Created, Some(id), Some(arn)) => Some((id.clone(), arn.clone())),
            _ => self.find_by_intent(&rec).await?.map(|c| (c.id, c.arn)),
        };
        let Some((id, arn)) = target else {
            cx.forget(CERTIFICATE)?;
            return Ok(Outcome::Absent);
        };
        let deleted = self.delete(&id, &arn, cx).await?;
        cx.forget(CERTIFICATE)?;
        Ok(Outcome::deleted_if(deleted))
    }
}

/// The plan's view of a certificate: its status.
fn fields(status: &str) -> Fields {
    Fields::from([("status".to_string(), status.into())])
}

fn status_of(c: &CertificateDescription) -> &str {
    c.status().map(|s| s.as_str()).unwrap_or("unknown")
}

struct Found {
    id: String,
    arn: String,
    pem: String,
    active: bool,
}

impl Certificate {
    /// The certificate with this id, or None when it does not exist.
    async fn describe(&self, id: &str) -> Result<Option<CertificateDescription>, StepError> {
        let out = sdk::find(
            op(KIND, id, "DescribeCertificate"),
            self.0
                .aws
                .iot
                .describe_certificate()
                .certificate_id(id)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(out.and_then(|o| o.certificate_description))
    }

    /// Takes over the certificate an interrupted create made: its certificate file written,
    /// re-activated if it is not active.
    async fn adopt(&self, cx: &Ctx, mut rec: Record, found: Found) -> Result<Outcome, StepError> {
        let files = &self.0.d.certificate.key_files;
        keys::write_private(&files.certificate, &found.pem, 0o644).map_err(key_err)?;
        if !found.active {
            sdk::send(
                op(KIND, &found.id, "UpdateCertificate"),
                self.0
                    .aws
                    .iot
                    .update_certificate()
                    .certificate_id(&found.id)
                    .new_status(CertificateStatus::Active)
                    .send(),
            )
            .await?;
        }
        rec.phase = Phase::Created;
        rec.name = found.id.clone();
        rec.id = Some(found.id);
        rec.arn = Some(found.arn);
        cx.commit(rec)?;
        Ok(Outcome::Adopted)
    }

    async fn create(&self, cx: &Ctx, intent: Option<&Record>) -> Result<Outcome, StepError> {
        let d = &self.0.d;
        let iot = &self.0.aws.iot;
        let files = &d.certificate.key_files;
        crate::state::ensure_private_dir(&d.certificate.key_dir).map_err(|e| {
            StepError::Failed(format!(
                "{}: cannot create key directory: {e}",
                d.certificate.key_dir.display()
            ))
        })?;
        match d.certificate.mode {
            CertificateMode::Local => {
                let (fingerprint, csr) = match &d.certificate.csr {
                    // The device's own CSR: nothing to make, nothing secret on this disk.
                    Some(csr) => (csr.fingerprint.clone(), csr.pem.clone()),
                    None => {
                        // Reuse the key of an earlier intent so a retried create matches it.
                        let wanted = intent.and_then(|r| r.data_str(FINGERPRINT));
                        let key = match (wanted, DeviceKey::load(&files.private_key).ok()) {
                            (Some(fp), Some(k)) if k.fingerprint() == fp => k,
                            _ => {
                                let k = DeviceKey::generate().map_err(key_err)?;
                                keys::write_private(&files.private_key, &k.private_pem(), 0o600)
                                    .map_err(key_err)?;
                                keys::write_private(&files.public_key, &k.public_pem(), 0o644)
                                    .map_err(key_err)?;
                                k
                            }
                        };
                        let csr = key.csr_pem(&d.thing.name).map_err(key_err)?;
                        (key.fingerprint(), csr)
                    }
                };
                let mut rec = Record::new(CERTIFICATE, KIND, Phase::Intent, "pending");
                rec.data
                    .insert(FINGERPRINT.into(), fingerprint.clone().into());
                if d.certificate.csr.is_some() {
                    rec.data.insert(KEY_ON_DEVICE.into(), true.into());
                }
                let mut rec = cx.intent(rec)?;
                // Every call issues a new certificate, so a blind retry after a lost answer
                // would leave a duplicate. The SDK's retry is off for this call; between
                // attempts iotreg looks for the certificate of its key first.
                let mut delays = Backoff::CREATE_RETRY.delays();
                let mut retried = false;
                let out = loop {
                    crate::ratelimit::acquire("CreateCertificateFromCsr").await;
                    let sent = self
                        .0
                        .aws
                        .iot_no_retry
                        .create_certificate_from_csr()
                        .certificate_signing_request(&csr)
                        .set_as_active(true)
                        .send()
                        .await;
                    match sent {
                        Ok(out) => break out,
                        // Refused for its rate: nothing was issued, so no need to look for a
                        // certificate (a scan of every recent one) before sending it again.
                        Err(e) if crate::aws::is_throttling(&e) => {
                            let Some(delay) = delays.next() else {
                                return Err(crate::aws::failed(
                                    KIND,
                                    &d.thing.name,
                                    "CreateCertificateFromCsr",
                                    e,
                                ));
                            };
                            cx.progress("throttled; retrying CreateCertificateFromCsr");
                            tokio::time::sleep(delay).await;
                        }
                        Err(e) if crate::aws::is_transient(&e) => {
                            if let Some(found) = self.find_by_intent(&rec).await? {
                                return self.adopt(cx, rec, found).await;
                            }
                            // A timed-out attempt may still be running on the server: give it
                            // the attempt timeout to land, and look again before issuing
                            // another certificate.
                            tokio::time::sleep(self.0.d.write_settle).await;
                            if let Some(found) = self.find_by_intent(&rec).await? {
                                return self.adopt(cx, rec, found).await;
                            }
                            let Some(delay) = delays.next() else {
                                return Err(crate::aws::failed(
                                    KIND,
                                    &d.thing.name,
                                    "CreateCertificateFromCsr",
                                    e,
                                ));
                            };
                            cx.progress("retrying CreateCertificateFromCsr");
                            retried = true;
                            tokio::time::sleep(delay).await;
                        }
                        Err(e) => {
                            return Err(crate::aws::failed(
                                KIND,
                                &d.thing.name,
                                "CreateCertificateFromCsr",
                                e,
                            ))
                        }
                    }
                };
                let pem = out.certificate_pem().unwrap_or_default();
                let got = keys::certificate_key_fingerprint(pem).map_err(key_err)?;
                if got != fingerprint {
                    // Useless without its private key, which we do not have: delete it rather
                    // than leave an orphan, and drop the intent (nothing of ours exists).
                    let id = out.certificate_id().unwrap_or_default();
                    self.delete(id, out.certificate_arn().unwrap_or_default(), cx)
                        .await?;
                    cx.forget(CERTIFICATE)?;
                    return Err(StepError::Failed(format!(
                        "{KIND} {id:?}: CreateCertificateFromCsr returned a certificate for a different public key than the CSR's (deleted it). \
                         The endpoint does not honour CSRs; use certificate.mode = \"aws-generated\" with it"
                    )));
                }
                keys::write_private(&files.certificate, pem, 0o644).map_err(key_err)?;
                let id = out.certificate_id().unwrap_or_default().to_string();
                rec.phase = Phase::Created;
                rec.name = id.clone();
                rec.id = out.certificate_id;
                rec.arn = out.certificate_arn;
                cx.commit(rec.clone())?;
                // A request repeated below iotreg (a lost answer retried by a lower layer) can
                // issue a second certificate for the key. Only we hold the key, so any other
                // certificate for it since the intent is a duplicate: remove it. (A fleet
                // device looks only after a retried create: see `Deployment::sweep_duplicates`.)
                let sweep = if d.certificate.sweep_duplicates || retried {
                    self.matching(&rec, false).await?
                } else {
                    Vec::new()
                };
                for dup in sweep {
                    if dup.id != id {
                        cx.progress("removing a duplicate certificate for this key");
                        self.delete(&dup.id, &dup.arn, cx).await?;
                    }
                }
            }
            CertificateMode::AwsGenerated => {
                let rec = Record::new(CERTIFICATE, KIND, Phase::Intent, "pending");
                let mut rec = cx.intent(rec)?;
                let out = sdk::send(
                    op(KIND, &d.thing.name, "CreateKeysAndCertificate"),
                    iot.create_keys_and_certificate().set_as_active(true).send(),
                )
                .await?;
                let pair = out.key_pair().ok_or_else(|| {
                    StepError::Failed("CreateKeysAndCertificate returned no key pair".into())
                })?;
                keys::write_private(
                    &files.private_key,
                    pair.private_key().unwrap_or_default(),
                    0o600,
                )
                .map_err(key_err)?;
                keys::write_private(
                    &files.public_key,
                    pair.public_key().unwrap_or_default(),
                    0o644,
                )
                .map_err(key_err)?;
                let pem = out.certificate_pem().unwrap_or_default();
                keys::write_private(&files.certificate, pem, 0o644).map_err(key_err)?;
                rec.data.insert(
                    FINGERPRINT.into(),
                    keys::certificate_key_fingerprint(pem)
                        .map_err(key_err)?
                        .into(),
                );
                rec.phase = Phase::Created;
                rec.name = out.certificate_id().unwrap_or_default().to_string();
                rec.id = out.certificate_id;
                rec.arn = out.certificate_arn;
                cx.commit(rec)?;
            }
        }
        Ok(Outcome::Created)
    }

    /// The certificate an intent may have produced: created since the intent (less clock skew)
    /// and carrying the intent's public key. Without a fingerprint (the aws-generated mode
    /// crashed before the key came back) nothing can be proven ours, so nothing is returned.
    async fn find_by_intent(&self, rec: &Record) -> Result<Option<Found>, StepError> {
        Ok(self.matching(rec, true).await?.into_iter().next())
    }

    /// Every certificate created since the intent that carries its public key (or just the
    /// newest with `first_only`). Only this deployment holds that key.
    async fn matching(&self, rec: &Record, first_only: bool) -> Result<Vec<Found>, StepError> {
        let mut all = Vec::new();
        let Some(fp) = rec.data_str(FINGERPRINT) else {
            return Ok(all);
        };
        let iot = &self.0.aws.iot;
        let since_ms = rec
            .intent_at_ms
            .unwrap_or(0)
            .saturating_sub(SKEW.as_millis() as u64);
        let mut marker: Option<String> = None;
        loop {
            let page = sdk::send(
                op(KIND, "(resume)", "ListCertificates"),
                iot.list_certificates()
                    .page_size(250)
                    .ascending_order(false)
                    .set_marker(marker.clone())
                    .send(),
            )
            .await?;
            let mut older_seen = false;
            for c in page.certificates() {
                let created_ms = c
                    .creation_date()
                    .map(|t| t.to_millis().unwrap_or(0).max(0) as u64)
                    .unwrap_or(u64::MAX);
                if created_ms < since_ms {
                    older_seen = true;
                    continue;
                }
                let Some(id) = c.certificate_id() else {
                    continue;
                };
                let Some(desc) = self.describe(id).await? else {
                    continue;
                };
                let pem = desc.certificate_pem().unwrap_or_default();
                if keys::certificate_key_fingerprint(pem).ok().as_deref() == Some(fp) {
                    all.push(Found {
                        id: id.to_string(),
                        arn: desc.certificate_arn().unwrap_or_default().to_string(),
                        pem: pem.to_string(),
                        active: desc.status() == Some(&CertificateStatus::Active),
                    });
                    if first_only {
                        return Ok(all);
                    }
                }
            }
            marker = page.next_marker().map(str::to_string);
            // Newest first: once a page reaches certificates older than the window, stop.
            if older_seen || marker.is_none() {
                return Ok(all);
            }
        }
    }

    /// Deactivate, detach from every thing and policy, delete. Returns false if already gone.
    async fn delete(&self, id: &str, arn: &str, cx: &Ctx) -> Result<bool, StepError> {
        delete(&self.0.aws.iot, id, arn, cx).await
    }

    /// The local certificate file is the registered certificate, and the local private key
    /// belongs to its public key.
    fn check_files(&self, res: &str, registered_pem: &str, on_device: bool) -> Check {
        let files = &self.0.d.certificate.key_files;
        let local = match std::fs::read_to_string(&files.certificate) {
            Ok(t) => t,
            Err(e) => {
                return Check::fail(FILES, res, format!("{}: {e}", files.certificate.display()))
            }
        };
        if local.trim() != registered_pem.trim() {
            return Check::fail(
                FILES,
                res,
                format!(
                    "{} is not the registered certificate",
                    files.certificate.display()
                ),
            );
        }
        if on_device {
            return self.check_device_key(res, registered_pem);
        }
        let key = match std::fs::read_to_string(&files.private_key)
            .map_err(|e| e.to_string())
            .and_then(|pem| keys::private_key_fingerprint(&pem).map_err(|e| e.to_string()))
        {
            Ok(fp) => fp,
            Err(e) => {
                return Check::fail(FILES, res, format!("{}: {e}", files.private_key.display()))
            }
        };
        match keys::certificate_key_fingerprint(registered_pem) {
            Ok(fp) if fp == key => Check::pass(
                FILES,
                res,
                "local certificate is the registered one; private key matches it",
            ),
            Ok(_) => Check::fail(
                FILES,
                res,
                format!(
                    "{} does not match the certificate's public key",
                    files.private_key.display()
                ),
            ),
            Err(e) => Check::fail(FILES, res, e.to_string()),
        }
    }

    /// For a certificate issued for the device's own CSR: no private key should be here, and
    /// the certificate's public key is the CSR's (when this run was given the CSR).
    fn check_device_key(&self, res: &str, registered_pem: &str) -> Check {
        let files = &self.0.d.certificate.key_files;
        if files.private_key.exists() {
            return Check::fail(
                FILES,
                res,
                format!(
                    "{} exists, but the certificate was issued for the device's own CSR: a private key here is not the device's",
                    files.private_key.display()
                ),
            );
        }
        let Some(csr) = &self.0.d.certificate.csr else {
            return Check::pass(
                FILES,
                res,
                "local certificate is the registered one; the private key stays on the device (its CSR was not given to this run)",
            );
        };
        match keys::certificate_key_fingerprint(registered_pem) {
            Ok(fp) if fp == csr.fingerprint => Check::pass(
                FILES,
                res,
                "local certificate is the registered one; its public key is the device's CSR's (the private key stays on the device)",
            ),
            Ok(_) => Check::fail(
                FILES,
                res,
                "the certificate's public key is not the device's CSR's: the device has a new key; `iotreg up` reissues its certificate",
            ),
            Err(e) => Check::fail(FILES, res, e.to_string()),
        }
    }

    fn write_certificate_file_if_missing(&self, pem: Option<&str>) -> Result<(), StepError> {
        let path = &self.0.d.certificate.key_files.certificate;
        if let (false, Some(pem)) = (path.exists(), pem) {
            crate::state::ensure_private_dir(&self.0.d.certificate.key_dir).map_err(|e| {
                StepError::Failed(format!("{}: {e}", self.0.d.certificate.key_dir.display()))
            })?;
            keys::write_private(path, pem, 0o644).map_err(key_err)?;
        }
        Ok(())
    }
}

/// Deactivates certificate `id` (ARN `arn`), detaches it from every thing and policy, deletes it.
/// Returns false if it was already gone. The device's certificate, a duplicate of it, and each
/// certificate of a device provisioned by claim are retired this one way.
pub async fn delete(
    iot: &aws_sdk_iot::Client,
    id: &str,
    arn: &str,
    cx: &Ctx,
) -> Result<bool, StepError> {
    let deactivated = sdk::find(
        op(KIND, id, "UpdateCertificate"),
        iot.update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Inactive)
            .send(),
        |e| e.is_resource_not_found_exception(),
    )
    .await?;
    if deactivated.is_none() {
        return Ok(false);
    }
    let things = sdk::send(
        op(KIND, id, "ListPrincipalThings"),
        iot.list_principal_things().principal(arn).send(),
    )
    .await?;
    for thing in things.things() {
        sdk::find(
            op(KIND, id, "DetachThingPrincipal"),
            iot.detach_thing_principal()
                .thing_name(thing)
                .principal(arn)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
    }
    let policies = sdk::send(
        op(KIND, id, "ListAttachedPolicies"),
        iot.list_attached_policies().target(arn).send(),
    )
    .await?;
    for p in policies.policies() {
        // DetachPolicy has no typed not-found error; AWS answers with the code.
        sdk::find_by_code(
            op(KIND, id, "DetachPolicy"),
            iot.detach_policy()
                .policy_name(p.policy_name().unwrap_or_default())
                .target(arn)
                .send(),
            "ResourceNotFoundException",
        )
        .await?;
    }
    // Detaching a thing is asynchronous on AWS: DeleteCertificate answers
    // DeleteConflictException until it has propagated. Retry that, bounded.
    let mut delays = Backoff::DETACH_PROPAGATION.delays();
    loop {
        crate::ratelimit::acquire("DeleteCertificate").await;
        match iot.delete_certificate().certificate_id(id).send().await {
            Ok(_) => return Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(false)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_delete_conflict_exception()) =>
            {
                let Some(delay) = delays.next() else {
                    return Err(crate::aws::failed(KIND, id, "DeleteCertificate", e));
                };
                cx.progress("waiting for AWS to propagate the detachment");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(crate::aws::failed(KIND, id, "DeleteCertificate", e)),
        }
    }
}

fn key_err(e: keys::KeyError) -> StepError {
    StepError::Failed(format!("{KIND}: {e}"))
}

#[cfg(test)]
mod tests;
