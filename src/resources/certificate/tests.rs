//! The certificate's SDK-level tests.

use std::path::PathBuf;
use std::sync::Mutex;

use aws_sdk_iot::operation::create_certificate_from_csr::CreateCertificateFromCsrOutput;
use aws_sdk_iot::operation::create_keys_and_certificate::CreateKeysAndCertificateOutput;
use aws_sdk_iot::operation::describe_certificate::{
    DescribeCertificateError, DescribeCertificateOutput,
};
use aws_sdk_iot::operation::list_certificates::ListCertificatesOutput;
use aws_sdk_iot::operation::update_certificate::UpdateCertificateOutput;
use aws_smithy_mocks::{mock, Rule};

use super::*;
use crate::engine::Resource;
use crate::plan::Action;
use crate::resources::testing::*;
use crate::verify::CheckStatus;

fn arn(id: &str) -> String {
    format!("arn:aws:iot:us-east-1:123456789012:cert/{id}")
}

fn recorded_cert() -> Record {
    let mut r = recorded(CERTIFICATE, KIND, "c1", Some(&arn("c1")));
    r.id = Some("c1".into());
    r
}

/// The intent of a create interrupted after its key was written: the key on disk, its
/// fingerprint in the state.
fn interrupted(key: &DeviceKey) -> Record {
    let mut r = Record::new(CERTIFICATE, KIND, Phase::Intent, "pending");
    r.data.insert(FINGERPRINT.into(), key.fingerprint().into());
    r.intent_at_ms = Some(crate::state::now_ms());
    r
}

/// A certificate for the private key in `pem` (self-signed: only its public key matters).
fn certificate_for(private_pem: &str) -> String {
    let key = rcgen::KeyPair::from_pem(private_pem).unwrap();
    rcgen::CertificateParams::new(vec!["device".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}

fn described(id: &'static str, status: CertificateStatus, pem: String) -> Rule {
    mock!(aws_sdk_iot::Client::describe_certificate)
        .match_requests(move |r| r.certificate_id() == Some(id))
        .then_output(move || {
            DescribeCertificateOutput::builder()
                .certificate_description(
                    CertificateDescription::builder()
                        .certificate_id(id)
                        .certificate_arn(arn(id))
                        .status(status.clone())
                        .certificate_pem(pem.clone())
                        .build(),
                )
                .build()
        })
}

fn gone() -> Rule {
    mock!(aws_sdk_iot::Client::describe_certificate).then_error(|| {
        DescribeCertificateError::ResourceNotFoundException(
            aws_sdk_iot::types::error::ResourceNotFoundException::builder().build(),
        )
    })
}

fn activate(id: &'static str) -> Rule {
    mock!(aws_sdk_iot::Client::update_certificate)
        .match_requests(move |r| {
            r.certificate_id() == Some(id) && r.new_status() == Some(&CertificateStatus::Active)
        })
        .then_output(|| UpdateCertificateOutput::builder().build())
}

/// ListCertificates: these certificates, all created just now.
fn listed(ids: &'static [&'static str]) -> Rule {
    mock!(aws_sdk_iot::Client::list_certificates).then_output(move || {
        let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
        ids.iter()
            .fold(ListCertificatesOutput::builder(), |b, id| {
                b.certificates(
                    aws_sdk_iot::types::Certificate::builder()
                        .certificate_id(*id)
                        .creation_date(now)
                        .build(),
                )
            })
            .build()
    })
}

/// CreateCertificateFromCsr issuing certificate `id` for the key the step wrote to
/// `key_path` (known once the harness made its directory).
fn issued(id: &'static str, key_path: Arc<Mutex<PathBuf>>) -> Rule {
    mock!(aws_sdk_iot::Client::create_certificate_from_csr).then_compute_output(move |_| {
        let key = std::fs::read_to_string(&*key_path.lock().unwrap()).unwrap();
        CreateCertificateFromCsrOutput::builder()
            .certificate_id(id)
            .certificate_arn(arn(id))
            .certificate_pem(certificate_for(&key))
            .build()
    })
}

/// A harness whose private key path is also handed to `key_path`.
fn harness_with_key(
    iot: &[&Rule],
    records: Vec<Record>,
    key_path: &Arc<Mutex<PathBuf>>,
) -> Harness {
    let h = harness(iot, &[], &[], &[], records, |_| {});
    *key_path.lock().unwrap() = h.env.d.certificate.key_files.private_key.clone();
    h
}

async fn plan_then_ensure(h: &Harness) -> (crate::plan::Planned, Outcome) {
    let r = Certificate(h.env.clone());
    let plan = Resource::plan(&r, &h.cx, true).await.unwrap();
    (plan, r.ensure(&h.cx).await.unwrap())
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn no_change_writes_nothing_but_a_missing_certificate_file() {
    let describe = described("c1", CertificateStatus::Active, "PEM".into());
    let h = harness(&[&describe], &[], &[], &[], vec![recorded_cert()], |_| {});
    let (plan, outcome) = plan_then_ensure(&h).await;
    assert_eq!(
        (plan.action, outcome),
        (Action::NoChange, Outcome::Unchanged)
    );
    assert_eq!(describe.num_calls(), 2, "one read each");
    assert_eq!(h.cx.record(CERTIFICATE), Some(recorded_cert()));
    // As before: the certificate file is written again when it is missing.
    assert_eq!(read(&h.env.d.certificate.key_files.certificate), "PEM");
}

#[tokio::test]
async fn an_inactive_certificate_is_reactivated_in_place() {
    let describe = described("c1", CertificateStatus::Inactive, "PEM".into());
    let update = activate("c1");
    let h = harness(
        &[&describe, &update],
        &[],
        &[],
        &[],
        vec![recorded_cert()],
        |_| {},
    );
    let (plan, outcome) = plan_then_ensure(&h).await;
    assert_eq!(plan.action, Action::Update);
    assert_eq!(
        crate::plan::describe(&plan.changes),
        r#"status: "INACTIVE" → "ACTIVE""#
    );
    assert_eq!(
        outcome,
        Outcome::Updated("re-activated (was INACTIVE)".into())
    );
    assert_eq!(update.num_calls(), 1);
    assert_eq!(h.cx.record(CERTIFICATE), Some(recorded_cert()));
}

#[tokio::test]
async fn a_new_certificate_is_issued_for_a_local_key() {
    let key_path = Arc::new(Mutex::new(PathBuf::new()));
    let (create, list) = (issued("c2", key_path.clone()), listed(&[]));
    let h = harness_with_key(&[&create, &list], vec![], &key_path);
    let (plan, outcome) = plan_then_ensure(&h).await;
    assert_eq!((plan.action, outcome), (Action::Create, Outcome::Created));
    assert_eq!(create.num_calls(), 1);
    assert_eq!(list.num_calls(), 1, "the duplicate sweep");
    let rec = h.cx.record(CERTIFICATE).unwrap();
    assert_eq!((rec.phase, rec.id.as_deref()), (Phase::Created, Some("c2")));
    let files = &h.env.d.certificate.key_files;
    let key = DeviceKey::load(&files.private_key).unwrap();
    assert_eq!(rec.data_str(FINGERPRINT), Some(key.fingerprint().as_str()));
    assert_eq!(
        keys::certificate_key_fingerprint(&read(&files.certificate)).unwrap(),
        key.fingerprint()
    );
    assert!(files.public_key.exists());
}

#[tokio::test]
async fn a_certificate_deleted_outside_is_issued_again() {
    let key_path = Arc::new(Mutex::new(PathBuf::new()));
    let (describe, create, list) = (gone(), issued("c2", key_path.clone()), listed(&[]));
    let h = harness_with_key(
        &[&describe, &create, &list],
        vec![recorded_cert()],
        &key_path,
    );
    let (plan, outcome) = plan_then_ensure(&h).await;
    assert_eq!((plan.action, outcome), (Action::Create, Outcome::Created));
    assert!(plan.note.unwrap().contains("deleted outside iotreg"));
    assert_eq!(create.num_calls(), 1);
    assert_eq!(h.cx.record(CERTIFICATE).unwrap().id.as_deref(), Some("c2"));
}

#[tokio::test]
async fn an_interrupted_create_that_issued_is_adopted() {
    for (status, activations) in [
        (CertificateStatus::Active, 0),
        (CertificateStatus::Inactive, 1),
    ] {
        let key = DeviceKey::generate().unwrap();
        let pem = certificate_for(&key.private_pem());
        let (list, describe) = (listed(&["c9"]), described("c9", status, pem.clone()));
        let update = activate("c9");
        let h = harness(
            &[&list, &describe, &update],
            &[],
            &[],
            &[],
            vec![interrupted(&key)],
            |_| {},
        );
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!((plan.action, outcome), (Action::Create, Outcome::Adopted));
        assert!(plan.note.unwrap().contains("interrupted"));
        assert_eq!(list.num_calls(), 1, "up looks; plan does not");
        assert_eq!(update.num_calls(), activations);
        let rec = h.cx.record(CERTIFICATE).unwrap();
        assert_eq!((rec.phase, rec.id.as_deref()), (Phase::Created, Some("c9")));
        assert_eq!(read(&h.env.d.certificate.key_files.certificate), pem);
    }
}

#[tokio::test]
async fn an_interrupted_create_that_issued_nothing_is_sent_again_with_its_key() {
    let key = DeviceKey::generate().unwrap();
    let key_path = Arc::new(Mutex::new(PathBuf::new()));
    let (create, list) = (issued("c2", key_path.clone()), listed(&[]));
    let h = harness_with_key(&[&create, &list], vec![interrupted(&key)], &key_path);
    keys::write_private(
        &h.env.d.certificate.key_files.private_key,
        &key.private_pem(),
        0o600,
    )
    .unwrap();
    let (plan, outcome) = plan_then_ensure(&h).await;
    assert_eq!((plan.action, outcome), (Action::Create, Outcome::Created));
    assert_eq!(create.num_calls(), 1);
    assert_eq!(
        list.num_calls(),
        2,
        "the look for the result, then the sweep"
    );
    let rec = h.cx.record(CERTIFICATE).unwrap();
    assert_eq!(rec.id.as_deref(), Some("c2"));
    assert_eq!(rec.data_str(FINGERPRINT), Some(key.fingerprint().as_str()));
}

#[tokio::test]
async fn aws_generated_keys_are_written_locally() {
    let key = DeviceKey::generate().unwrap();
    let (private, public) = (key.private_pem(), key.public_pem());
    let pem = certificate_for(&private);
    let cert = pem.clone();
    let create = mock!(aws_sdk_iot::Client::create_keys_and_certificate).then_output(move || {
        CreateKeysAndCertificateOutput::builder()
            .certificate_id("c3")
            .certificate_arn(arn("c3"))
            .certificate_pem(cert.clone())
            .key_pair(
                aws_sdk_iot::types::KeyPair::builder()
                    .private_key(private.clone())
                    .public_key(public.clone())
                    .build(),
            )
            .build()
    });
    let h = harness(&[&create], &[], &[], &[], vec![], |d| {
        d.certificate.mode = CertificateMode::AwsGenerated;
    });
    let (plan, outcome) = plan_then_ensure(&h).await;
    assert_eq!((plan.action, outcome), (Action::Create, Outcome::Created));
    assert_eq!(create.num_calls(), 1);
    let rec = h.cx.record(CERTIFICATE).unwrap();
    assert_eq!(rec.id.as_deref(), Some("c3"));
    assert_eq!(rec.data_str(FINGERPRINT), Some(key.fingerprint().as_str()));
    let files = &h.env.d.certificate.key_files;
    assert_eq!(read(&files.certificate), pem);
    assert_eq!(read(&files.private_key), key.private_pem());
}

#[tokio::test]
async fn verify_checks_the_status_and_the_local_files() {
    let key = DeviceKey::generate().unwrap();
    let pem = certificate_for(&key.private_pem());
    let status = |checks: &[Check]| -> Vec<(String, CheckStatus, String)> {
        checks
            .iter()
            .map(|c| (c.name.clone(), c.status, c.reason.clone()))
            .collect()
    };

    // Active, with its own key and certificate on disk.
    let describe = described("c1", CertificateStatus::Active, pem.clone());
    let h = harness(&[&describe], &[], &[], &[], vec![recorded_cert()], |_| {});
    let files = &h.env.d.certificate.key_files;
    keys::write_private(&files.private_key, &key.private_pem(), 0o600).unwrap();
    keys::write_private(&files.certificate, &pem, 0o644).unwrap();
    let checks = Certificate(h.env.clone()).check(&h.cx).await;
    assert_eq!(
        status(&checks),
        vec![
            (
                ACTIVE.into(),
                CheckStatus::Pass,
                "certificate c1 is ACTIVE".into()
            ),
            (
                FILES.into(),
                CheckStatus::Pass,
                "local certificate is the registered one; private key matches it".into()
            ),
        ]
    );

    // Deactivated, and the local files missing.
    let describe = described("c1", CertificateStatus::Inactive, pem.clone());
    let h = harness(&[&describe], &[], &[], &[], vec![recorded_cert()], |_| {});
    let checks = Certificate(h.env.clone()).check(&h.cx).await;
    assert_eq!(checks[0].status, CheckStatus::Fail);
    assert_eq!(checks[0].reason, "certificate c1 is INACTIVE");
    assert_eq!(checks[1].status, CheckStatus::Fail);

    // The read refused: both checks fail, naming the call.
    let describe = mock!(aws_sdk_iot::Client::describe_certificate).then_error(|| {
        DescribeCertificateError::generic(meta("AccessDeniedException", "not allowed"))
    });
    let h = harness(&[&describe], &[], &[], &[], vec![recorded_cert()], |_| {});
    let checks = Certificate(h.env.clone()).check(&h.cx).await;
    assert_eq!(checks.len(), 2);
    for c in &checks {
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.reason.contains("DescribeCertificate"), "{}", c.reason);
    }

    // Nothing recorded.
    let h = harness(&[], &[], &[], &[], vec![], |_| {});
    let checks = Certificate(h.env.clone()).check(&h.cx).await;
    assert_eq!(checks.len(), 2);
    assert!(checks
        .iter()
        .all(|c| c.status == CheckStatus::Fail && c.reason.contains("run `iotreg up`")));
}
