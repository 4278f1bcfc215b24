//! SDK-level tests of bulk registration: the task's calls mocked, the report links served by a
//! local HTTP server that issues each certificate for the key the run wrote to disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_sdk_iot::operation::describe_thing::DescribeThingOutput;
use aws_sdk_iot::operation::describe_thing_registration_task::DescribeThingRegistrationTaskOutput;
use aws_sdk_iot::operation::list_thing_registration_task_reports::ListThingRegistrationTaskReportsOutput;
use aws_sdk_iot::operation::list_thing_registration_tasks::ListThingRegistrationTasksOutput;
use aws_sdk_iot::operation::start_thing_registration_task::StartThingRegistrationTaskOutput;
use aws_sdk_iot::types::{ReportType, Status as TaskStatus};
use aws_sdk_s3::operation::create_bucket::CreateBucketOutput;
use aws_sdk_s3::operation::delete_bucket::DeleteBucketOutput;
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::operation::put_bucket_lifecycle_configuration::PutBucketLifecycleConfigurationOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::resources::bucket::Bucket;
use crate::resources::testing::*;
use crate::resources::{GROUP_MEMBERSHIP, POLICY_ATTACHMENT, THING_PRINCIPAL};

const BUCKET: &str = "iotreg-123456789012-us-east-1-abc123";

fn device(name: &str, serial: &str) -> Device {
    Device {
        thing_name: name.into(),
        attributes: BTreeMap::from([("serial".to_string(), serial.to_string())]),
        csr: None,
    }
}

/// A harness in bulk mode whose S3 client answers with `s3`.
fn bulk_harness(iot: &[&Rule], s3: &[&Rule], records: Vec<Record>) -> Harness {
    let mut h = harness(iot, &[], &[], &[], records, |d| {
        let mut b = (*d.bulk).clone();
        b.enabled = true;
        b.poll = Duration::from_millis(1);
        d.bulk = Arc::new(b);
    });
    let env = Arc::get_mut(&mut h.env).expect("the harness's only handle");
    env.aws.s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3);
    h
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

/// Serves `/results` (a RESULTS line per name in `registered`, each certificate made for the
/// key found on disk then) and `/errors` (`errors` as they are). Returns the base URL.
async fn report_server(key_dir: PathBuf, registered: Vec<&'static str>, errors: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = if req.starts_with("GET /results") {
                registered
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let files = KeyFiles::for_thing(&key_dir, name);
                        let key = std::fs::read_to_string(&files.private_key).unwrap();
                        json!({"response": {
                            "CertificatePem": certificate_for(&key),
                            "ResourceArns": {
                                "certificate": format!("arn:aws:iot:us-east-1:123456789012:cert/c{i}"),
                                "thing": format!("arn:aws:iot:us-east-1:123456789012:thing/{name}")
                            }
                        }, "offset": i})
                        .to_string()
                            + "\n"
                    })
                    .collect::<String>()
            } else {
                errors.clone()
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    base
}

fn no_tasks() -> Rule {
    mock!(aws_sdk_iot::Client::list_thing_registration_tasks)
        .then_output(|| ListThingRegistrationTasksOutput::builder().build())
}

fn task(id: &'static str, status: TaskStatus, key: Arc<Mutex<String>>) -> Rule {
    mock!(aws_sdk_iot::Client::describe_thing_registration_task)
        .match_requests(move |r| r.task_id() == Some(id))
        .then_compute_output(move |_| {
            DescribeThingRegistrationTaskOutput::builder()
                .task_id(id)
                .status(status.clone())
                .success_count(1)
                .failure_count(1)
                .percentage_progress(100)
                .input_file_bucket(BUCKET)
                .input_file_key(key.lock().unwrap().clone())
                .creation_date(aws_smithy_types::DateTime::from_secs(1_700_000_000))
                .build()
        })
}

fn reports(base: &str) -> Rule {
    let base = base.to_string();
    mock!(aws_sdk_iot::Client::list_thing_registration_task_reports).then_compute_output(move |r| {
        let path = if r.report_type() == Some(&ReportType::Results) {
            "results"
        } else {
            "errors"
        };
        ListThingRegistrationTaskReportsOutput::builder()
            .report_type(r.report_type().unwrap().clone())
            .resource_links(format!("{base}/{path}"))
            .build()
    })
}

fn thing_described(name: &'static str) -> Rule {
    mock!(aws_sdk_iot::Client::describe_thing)
        .match_requests(move |r| r.thing_name() == Some(name))
        .then_output(move || {
            DescribeThingOutput::builder()
                .thing_name(name)
                .thing_id(format!("id-{name}"))
                .thing_arn(format!("arn:aws:iot:us-east-1:123456789012:thing/{name}"))
                .thing_type_name("TemperatureSensor")
                .attributes("serial", "SN-1")
                .build()
        })
}

/// GetObject of the input: what PutObject uploaded (captured in `uploaded`).
fn input_object(uploaded: Arc<Mutex<String>>) -> Rule {
    mock!(aws_sdk_s3::Client::get_object).then_compute_output(move |_| {
        GetObjectOutput::builder()
            .body(uploaded.lock().unwrap().clone().into_bytes().into())
            .build()
    })
}

/// One task run for two devices, s-1 registered and s-2 in ERRORS, in a deployment tweaked
/// by `tweak`: the harness, the results, the uploaded input, the template sent, the key dir.
async fn one_task(
    tweak: impl FnOnce(&mut Deployment),
) -> (
    Harness,
    Results,
    String,
    String,
    tempfile::TempDir,
    [Device; 2],
) {
    let key_seen = Arc::new(Mutex::new(String::new()));
    let uploaded = Arc::new(Mutex::new(String::new()));
    let dir = tempfile::tempdir().unwrap();
    let base = report_server(
        dir.path().to_path_buf(),
        vec!["s-1"],
        "{\"offset\":1,\"errorCode\":\"ResourceConflictsException\",\"errorMessage\":\"thing s-2 exists\"}\n".into(),
    )
    .await;
    let list = no_tasks();
    let k = key_seen.clone();
    let template_sent = Arc::new(Mutex::new(String::new()));
    let t = template_sent.clone();
    let start = mock!(aws_sdk_iot::Client::start_thing_registration_task)
        .match_requests(move |r| {
            *k.lock().unwrap() = r.input_file_key().unwrap_or_default().to_string();
            *t.lock().unwrap() = r.template_body().unwrap_or_default().to_string();
            r.input_file_bucket() == Some(BUCKET)
                && r.role_arn() == Some("arn:aws:iam::123456789012:role/r")
        })
        .then_output(|| {
            StartThingRegistrationTaskOutput::builder()
                .task_id("t1")
                .build()
        });
    let describe = task("t1", TaskStatus::Completed, key_seen.clone());
    let links = reports(&base);
    let thing = thing_described("s-1");
    let up = uploaded.clone();
    let put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(move |r| {
            if let Some(b) = r.body().bytes() {
                *up.lock().unwrap() = String::from_utf8_lossy(b).into_owned();
            }
            r.bucket() == Some(BUCKET)
                && r.key()
                    .is_some_and(|k| k.starts_with("iotreg-bulk/abc123/") && k.ends_with(".jsonl"))
        })
        .then_output(|| PutObjectOutput::builder().build());
    let get = input_object(uploaded.clone());
    let mut role = Record::new(BULK_ROLE, "IAM role", Phase::Created, "r");
    role.arn = Some("arn:aws:iam::123456789012:role/r".into());
    let mut h = bulk_harness(
        &[&list, &start, &describe, &links, &thing],
        &[&put, &get],
        vec![role],
    );
    // The key files go where the report server looks for them.
    let env = Arc::get_mut(&mut h.env).unwrap();
    env.d.certificate.key_dir = dir.path().to_path_buf();
    tweak(&mut env.d);
    let devices = [device("s-1", "SN-1"), device("s-2", "SN-2")];
    let results = register(&h.env, &h.cx, &devices, 4).await.unwrap();
    assert_eq!(start.num_calls(), 1);
    assert_eq!(put.num_calls(), 1);
    let uploaded = uploaded.lock().unwrap().clone();
    let template = template_sent.lock().unwrap().clone();
    (h, results, uploaded, template, dir, devices)
}

#[tokio::test]
async fn new_devices_go_in_one_task_and_are_recorded_as_the_per_device_path_records_them() {
    let (h, results, uploaded, template, dir, devices) = one_task(|_| {}).await;
    assert!(
        template.contains("\"PolicyName\":\"device-policy-abc123\""),
        "{template}"
    );
    assert_eq!(results["s-1"], Ok(Outcome::Created));
    assert_eq!(
        results["s-2"],
        Err("ResourceConflictsException: thing s-2 exists".into())
    );
    // The input: one line per device, its CSR and attribute values by parameter name.
    let lines: Vec<Value> = uploaded
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["ThingName"], "s-2");
    assert_eq!(lines[1]["A0"], "SN-2");
    assert!(lines[1]["CSR"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));

    let dcx = h.cx.for_device("s-1", Arc::new(Silent));
    let files = KeyFiles::for_thing(dir.path(), "s-1");
    let key = DeviceKey::load(&files.private_key).unwrap();
    let cert = dcx.record(CERTIFICATE).unwrap();
    assert_eq!(cert.phase, Phase::Created);
    assert_eq!(cert.id.as_deref(), Some("c0"));
    assert_eq!(cert.name, "c0");
    assert_eq!(cert.data_str(FINGERPRINT), Some(key.fingerprint().as_str()));
    assert!(!cert.data.contains_key(INPUT));
    let pem = std::fs::read_to_string(&files.certificate).unwrap();
    assert_eq!(
        keys::certificate_key_fingerprint(&pem).unwrap(),
        key.fingerprint()
    );
    let thing = dcx.record(THING).unwrap();
    assert_eq!(
        (thing.phase, thing.id.as_deref()),
        (Phase::Created, Some("id-s-1"))
    );
    let arn = "arn:aws:iot:us-east-1:123456789012:cert/c0";
    for (key, name) in [
        (POLICY_ATTACHMENT, "device-policy-abc123 → certificate"),
        (THING_PRINCIPAL, "certificate → s-1"),
    ] {
        let r = dcx.record(key).unwrap();
        assert_eq!((r.phase, r.name.as_str()), (Phase::Created, name));
        assert_eq!(r.data_str("certificate_arn"), Some(arn));
    }
    assert_eq!(
        dcx.applied(THING).unwrap()["attributes.serial"],
        json!("SN-1")
    );
    // The failed device keeps its intents and key: the next `up` sends it again.
    let failed = h.cx.for_device("s-2", Arc::new(Silent));
    assert_eq!(failed.record(CERTIFICATE).unwrap().phase, Phase::Intent);
    let run = Run {
        env: h.env.clone(),
        cx: &h.cx,
        concurrency: 1,
    };
    assert!(run.is_candidate(&devices[1]));
    assert!(!run.is_candidate(&devices[0]));
    assert!(h.cx.record(BULK_TASK).is_none(), "no run left in flight");
}

#[tokio::test]
async fn with_the_policy_on_the_group_devices_join_it_and_no_certificate_gets_the_policy() {
    let (h, results, _, template, _dir, _) = one_task(|d| {
        d.group = Some(crate::resources::thing_group::GroupSpec {
            name: "sensors-abc123".into(),
            description: "d".into(),
            policy: true,
        })
    })
    .await;
    assert_eq!(results["s-1"], Ok(Outcome::Created));
    let t: Value = serde_json::from_str(&template).unwrap();
    assert_eq!(
        t["Resources"]["thing"]["Properties"]["ThingGroups"],
        json!(["sensors-abc123"])
    );
    assert!(t["Resources"].get("policy").is_none(), "{template}");
    let dcx = h.cx.for_device("s-1", Arc::new(Silent));
    assert!(dcx.record(POLICY_ATTACHMENT).is_none());
    let member = dcx.record(GROUP_MEMBERSHIP).unwrap();
    assert_eq!(member.phase, Phase::Created);
    assert_eq!(member.name, "s-1 ∈ sensors-abc123");
    assert_eq!(member.id.as_deref(), Some("sensors-abc123"));
    assert!(dcx.record(THING_PRINCIPAL).is_some());
}

#[tokio::test]
async fn a_killed_run_is_resumed_from_its_input_key_and_no_second_task_starts() {
    const KEY: &str = "iotreg-bulk/abc123/1-x/input.jsonl";
    let dir = tempfile::tempdir().unwrap();
    // What the killed run left: the key on disk, the device's intents, the run recorded.
    let key = DeviceKey::generate().unwrap();
    let files = KeyFiles::for_thing(dir.path(), "s-1");
    keys::write_private(&files.private_key, &key.private_pem(), 0o600).unwrap();
    let mut run_rec = Record::new(BULK_TASK, KIND, Phase::Intent, "runs in flight");
    run_rec
        .data
        .insert("runs".into(), json!([{"input_key": KEY, "template": "{}"}]));
    let base = report_server(dir.path().to_path_buf(), vec!["s-1"], String::new()).await;
    let key_seen = Arc::new(Mutex::new(KEY.to_string()));
    // The task is found among the account's tasks by its input (its id was never recorded):
    // in progress at first, then done.
    let list = mock!(aws_sdk_iot::Client::list_thing_registration_tasks).then_output(|| {
        ListThingRegistrationTasksOutput::builder()
            .task_ids("t-other-done")
            .task_ids("t1")
            .build()
    });
    let other = mock!(aws_sdk_iot::Client::describe_thing_registration_task)
        .match_requests(|r| r.task_id() == Some("t-other-done"))
        .then_output(|| {
            DescribeThingRegistrationTaskOutput::builder()
                .task_id("t-other-done")
                .status(TaskStatus::Completed)
                .input_file_bucket(BUCKET)
                .input_file_key("iotreg-bulk/abc123/0-y/input.jsonl")
                .build()
        });
    let k = key_seen.clone();
    let ours = mock!(aws_sdk_iot::Client::describe_thing_registration_task)
        .match_requests(|r| r.task_id() == Some("t1"))
        .sequence()
        .output(move || {
            DescribeThingRegistrationTaskOutput::builder()
                .task_id("t1")
                .status(TaskStatus::InProgress)
                .input_file_bucket(BUCKET)
                .input_file_key(k.lock().unwrap().clone())
                .build()
        })
        .times(3)
        .build();
    let done = task("t1", TaskStatus::Completed, key_seen.clone());
    let links = reports(&base);
    let thing = thing_described("s-1");
    let get = input_object(Arc::new(Mutex::new(
        "{\"ThingName\":\"s-1\",\"CSR\":\"x\",\"A0\":\"SN-1\"}\n".into(),
    )));
    let mut h = bulk_harness(
        &[&list, &other, &ours, &done, &links, &thing],
        &[&get],
        vec![run_rec],
    );
    Arc::get_mut(&mut h.env).unwrap().d.certificate.key_dir = dir.path().to_path_buf();
    let dcx = h.cx.for_device("s-1", Arc::new(Silent));
    dcx.intent(Record::new(THING, "thing", Phase::Intent, "s-1"))
        .unwrap();
    let mut intent = Record::new(CERTIFICATE, "certificate", Phase::Intent, "pending");
    intent
        .data
        .insert(FINGERPRINT.into(), key.fingerprint().into());
    intent.data.insert(INPUT.into(), KEY.into());
    dcx.intent(intent).unwrap();

    let results = register(&h.env, &h.cx, &[device("s-1", "SN-1")], 2)
        .await
        .unwrap();
    // No StartThingRegistrationTask or PutObject rule: either call would have failed the run.
    assert_eq!(results["s-1"], Ok(Outcome::Created));
    assert_eq!(ours.num_calls(), 3, "waited while it ran");
    let cert = dcx.record(CERTIFICATE).unwrap();
    assert_eq!(cert.phase, Phase::Created);
    assert_eq!(
        cert.data_str(FINGERPRINT),
        Some(key.fingerprint().as_str()),
        "the key made before the kill, not a new one"
    );
    assert_eq!(
        DeviceKey::load(&files.private_key).unwrap().fingerprint(),
        key.fingerprint()
    );
    assert!(h.cx.record(BULK_TASK).is_none());
}

#[tokio::test]
async fn a_task_in_progress_that_is_not_ours_is_refused_before_anything_is_made() {
    let list = mock!(aws_sdk_iot::Client::list_thing_registration_tasks)
        .match_requests(|r| r.status() == Some(&TaskStatus::InProgress))
        .then_output(|| {
            ListThingRegistrationTasksOutput::builder()
                .task_ids("t-theirs")
                .build()
        });
    let describe = task(
        "t-theirs",
        TaskStatus::InProgress,
        Arc::new(Mutex::new("their/input.json".into())),
    );
    let h = bulk_harness(&[&list, &describe], &[], vec![]);
    let e = register(&h.env, &h.cx, &[device("s-1", "SN-1")], 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("task t-theirs"), "{e}");
    assert!(e.contains("started 2023-11-14T22:13:20Z"), "{e}");
    assert!(e.contains("Nothing was started"), "{e}");
    assert!(!h.cx.store().has_device("s-1"), "no intent written");
    assert!(!h
        .env
        .d
        .certificate
        .key_dir
        .join("s-1-private.pem.key")
        .exists());
}

#[tokio::test]
async fn devices_already_recorded_are_left_to_the_per_device_path() {
    // Nothing mocked: any call fails the run.
    let h = bulk_harness(&[], &[], vec![]);
    let dcx = h.cx.for_device("s-1", Arc::new(Silent));
    let mut thing = Record::new(THING, "thing", Phase::Created, "s-1");
    thing.arn = Some("arn".into());
    dcx.commit(thing).unwrap();
    let results = register(&h.env, &h.cx, &[device("s-1", "SN-1")], 2)
        .await
        .unwrap();
    assert!(results.is_empty());
}

#[test]
fn the_template_names_the_type_policy_csr_and_each_attribute() {
    let h = harness(&[], &[], &[], &[], vec![], |_| {});
    let t = template(&h.env.d, &["line".into(), "serial".into()]);
    let params: Vec<&String> = t["Parameters"].as_object().unwrap().keys().collect();
    assert_eq!(params, ["ThingName", "CSR", "A0", "A1"]);
    let thing = &t["Resources"]["thing"];
    assert_eq!(thing["Type"], "AWS::IoT::Thing");
    assert_eq!(thing["Properties"]["ThingTypeName"], "TemperatureSensor");
    assert_eq!(
        thing["Properties"]["AttributePayload"],
        json!({"line": {"Ref": "A0"}, "serial": {"Ref": "A1"}})
    );
    assert_eq!(thing["OverrideSettings"]["AttributePayload"], "FAIL");
    assert_eq!(
        t["Resources"]["certificate"]["Properties"],
        json!({"CertificateSigningRequest": {"Ref": "CSR"}, "Status": "ACTIVE"})
    );
    assert_eq!(
        t["Resources"]["policy"]["Properties"]["PolicyName"],
        "device-policy-abc123"
    );
}

#[test]
fn the_bucket_is_named_from_account_region_and_suffix_unless_given() {
    let own = BulkSpec::new(true, None, "abc123", "eu-central-1", "123456789012", "aws");
    assert_eq!(own.store.name, "iotreg-123456789012-eu-central-1-abc123");
    assert!(own.store.own);
    assert!(crate::config::check_bucket_name(&own.store.name).is_ok());
    let given = BulkSpec::new(true, Some("mine"), "abc123", "us-east-1", "1", "aws-cn");
    assert_eq!(
        (given.store.name.as_str(), given.store.own),
        ("mine", false)
    );
    assert_eq!(
        given.role.managed_policies,
        ["arn:aws-cn:iam::aws:policy/service-role/AWSIoTThingsRegistration"]
    );
    assert_eq!(
        given.role.trust_policy["Statement"][0]["Principal"]["Service"],
        "iot.amazonaws.com"
    );
}

fn bucket_missing() -> Rule {
    mock!(aws_sdk_s3::Client::head_bucket).then_error(|| {
        HeadBucketError::NotFound(aws_sdk_s3::types::error::NotFound::builder().build())
    })
}

#[tokio::test]
async fn an_own_bucket_is_created_with_its_expiry_rule() {
    let head = bucket_missing();
    let create = mock!(aws_sdk_s3::Client::create_bucket)
        .match_requests(|r| r.bucket() == Some(BUCKET) && r.create_bucket_configuration().is_none())
        .then_output(|| CreateBucketOutput::builder().build());
    let lifecycle = mock!(aws_sdk_s3::Client::put_bucket_lifecycle_configuration)
        .match_requests(|r| {
            let rule = &r.lifecycle_configuration().unwrap().rules()[0];
            rule.expiration().and_then(|e| e.days()) == Some(EXPIRE_DAYS)
                && rule.filter().and_then(|f| f.prefix()) == Some("iotreg-bulk/abc123/")
        })
        .then_output(|| PutBucketLifecycleConfigurationOutput::builder().build());
    let h = bulk_harness(&[], &[&head, &create, &lifecycle], vec![]);
    let outcome = Bucket(h.env.clone(), &super::BUCKET)
        .ensure(&h.cx)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Created);
    assert_eq!((create.num_calls(), lifecycle.num_calls()), (1, 1));
    let rec = h.cx.record(BULK_BUCKET).unwrap();
    assert_eq!(rec.phase, Phase::Created);
    assert_eq!(rec.data["created_by_iotreg"], json!(true));
}

#[tokio::test]
async fn a_given_bucket_that_does_not_exist_is_an_error_not_a_create() {
    let head = bucket_missing();
    let mut h = bulk_harness(&[], &[&head], vec![]);
    let env = Arc::get_mut(&mut h.env).unwrap();
    let mut b = (*env.d.bulk).clone();
    b.store.name = "their-bucket".into();
    b.store.own = false;
    env.d.bulk = Arc::new(b);
    let e = Bucket(h.env.clone(), &super::BUCKET)
        .ensure(&h.cx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"their-bucket\" (fleet.bulk_bucket) does not exist"),
        "{e}"
    );
    assert!(h.cx.record(BULK_BUCKET).is_none());
}

#[tokio::test]
async fn down_empties_and_deletes_an_own_bucket_and_forgets_the_runs() {
    let list = mock!(aws_sdk_s3::Client::list_objects_v2)
        .sequence()
        .output(|| {
            ListObjectsV2Output::builder()
                .contents(
                    aws_sdk_s3::types::Object::builder()
                        .key("iotreg-bulk/abc123/1/input.jsonl")
                        .build(),
                )
                .contents(
                    aws_sdk_s3::types::Object::builder()
                        .key("reports/t1/results.jsonl")
                        .build(),
                )
                .build()
        })
        .output(|| ListObjectsV2Output::builder().build())
        .build();
    let delete = mock!(aws_sdk_s3::Client::delete_object)
        .then_output(|| DeleteObjectOutput::builder().build());
    let gone = mock!(aws_sdk_s3::Client::delete_bucket)
        .match_requests(|r| r.bucket() == Some(BUCKET))
        .then_output(|| DeleteBucketOutput::builder().build());
    let mut rec = Record::new(BULK_BUCKET, "S3 bucket", Phase::Created, BUCKET);
    rec.data.insert("created_by_iotreg".into(), true.into());
    rec.data
        .insert("prefix".into(), "iotreg-bulk/abc123/".into());
    let run = Record::new(BULK_TASK, KIND, Phase::Intent, "runs in flight");
    let h = bulk_harness(&[], &[&list, &delete, &gone], vec![rec, run]);
    let outcome = Resource::destroy(&Bucket(h.env.clone(), &super::BUCKET), &h.cx)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Deleted);
    assert_eq!((delete.num_calls(), gone.num_calls()), (2, 1));
    assert!(h.cx.record(BULK_BUCKET).is_none());
    assert!(h.cx.record(BULK_TASK).is_none());
}

fn role_not_assumable_yet(
) -> aws_sdk_iot::operation::start_thing_registration_task::StartThingRegistrationTaskError {
    let message = "The role arn:aws:iam::123456789012:role/r cannot be assumed by AWS IoT";
    aws_sdk_iot::operation::start_thing_registration_task::StartThingRegistrationTaskError::InvalidRequestException(
        aws_sdk_iot::types::error::InvalidRequestException::builder()
            .message(message)
            .meta(meta("InvalidRequestException", message))
            .build(),
    )
}

/// A run whose task is started by `start` and described by `describe`, with no report.
async fn run_with(start: &Rule, describe: &Rule) -> (Harness, Results) {
    let uploaded = Arc::new(Mutex::new(String::new()));
    let list = no_tasks();
    let up = uploaded.clone();
    let put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(move |r| {
            if let Some(b) = r.body().bytes() {
                *up.lock().unwrap() = String::from_utf8_lossy(b).into_owned();
            }
            true
        })
        .then_output(|| PutObjectOutput::builder().build());
    let get = input_object(uploaded);
    let none = mock!(aws_sdk_iot::Client::list_thing_registration_task_reports)
        .then_compute_output(|r| {
            ListThingRegistrationTaskReportsOutput::builder()
                .report_type(r.report_type().unwrap().clone())
                .build()
        });
    let mut role = Record::new(BULK_ROLE, "IAM role", Phase::Created, "r");
    role.arn = Some("arn:aws:iam::123456789012:role/r".into());
    let mut h = bulk_harness(&[&list, start, describe, &none], &[&put, &get], vec![role]);
    Arc::get_mut(&mut h.env).unwrap().d.iam_retry = crate::retry::Backoff {
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        budget: Duration::from_secs(5),
    };
    let results = register(&h.env, &h.cx, &[device("s-1", "SN-1")], 2)
        .await
        .unwrap();
    (h, results)
}

#[tokio::test]
async fn a_new_role_not_yet_assumable_is_waited_for() {
    let start = mock!(aws_sdk_iot::Client::start_thing_registration_task)
        .sequence()
        .error(role_not_assumable_yet)
        .times(2)
        .output(|| {
            StartThingRegistrationTaskOutput::builder()
                .task_id("t1")
                .build()
        })
        .build();
    let describe = task(
        "t1",
        TaskStatus::Completed,
        Arc::new(Mutex::new(String::new())),
    );
    let (_h, results) = run_with(&start, &describe).await;
    assert_eq!(start.num_calls(), 3, "two refusals, then the task");
    // The fake task reported nothing for s-1: it is named with the task's outcome.
    let e = results["s-1"].clone().unwrap_err();
    assert!(
        e.starts_with("not in task t1's reports (status Completed"),
        "{e}"
    );
}

#[tokio::test]
async fn a_failed_task_fails_its_devices_with_its_message_and_they_stay_retryable() {
    let start = mock!(aws_sdk_iot::Client::start_thing_registration_task).then_output(|| {
        StartThingRegistrationTaskOutput::builder()
            .task_id("t1")
            .build()
    });
    let describe = mock!(aws_sdk_iot::Client::describe_thing_registration_task).then_output(|| {
        DescribeThingRegistrationTaskOutput::builder()
            .task_id("t1")
            .status(TaskStatus::Failed)
            .message("Access Denied reading the input")
            .build()
    });
    let (h, results) = run_with(&start, &describe).await;
    assert_eq!(
        results["s-1"],
        Err("not in task t1's reports (status Failed: Access Denied reading the input)".into())
    );
    let run = Run {
        env: h.env.clone(),
        cx: &h.cx,
        concurrency: 1,
    };
    assert!(run.is_candidate(&device("s-1", "SN-1")));
    assert!(h.cx.record(BULK_TASK).is_none());
}
