//! Bulk registration (`fleet.mode = "bulk"`) end to end on the local AWS: a fleet registered by
//! one StartThingRegistrationTask and looked at from outside (things, certificates matching
//! their local keys, attachments, shadows, a device connecting as itself); a second `up` that
//! writes nothing; `up` killed while the task's start is answered, then resumed with one task
//! and no duplicates; someone else's task in progress refused; `down` leaving nothing of ours
//! in IoT, IAM or S3; bad values refused before any request.

use std::collections::BTreeMap;

use crate::support::*;

/// No client-side rate limits (the local AWS has no quotas), bulk mode.
const CONFIG: &str = "[aws.rate_limits]\n\"*\" = 0\n[fleet]\nmode = \"bulk\"\n";

fn manifest(w: &Workdir, n: usize) {
    let mut text = String::from("thing_name,serial,line\n");
    for i in 0..n {
        text.push_str(&format!("sensor-{i:04},SN-{i:04},L{}\n", i % 3));
    }
    std::fs::write(w.path().join("devices.csv"), text).unwrap();
}

/// The actions allowed by the JSON policy under `## {heading}` in docs/aws-permissions.md.
fn documented(heading: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/aws-permissions.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no `## {heading}` section"));
    let block = section
        .split("```json\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("`## {heading}`: no json block"));
    let doc: serde_json::Value = serde_json::from_str(block).unwrap();
    let mut out = Vec::new();
    for st in doc["Statement"].as_array().unwrap() {
        match &st["Action"] {
            serde_json::Value::String(a) => out.push(a.clone()),
            serde_json::Value::Array(l) => {
                out.extend(l.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            _ => {}
        }
    }
    out
}

/// Every IoT, IAM and S3 operation the local AWS served in `from..to` (iotreg's commands, not
/// the test's own reads) is allowed by the documented policies (the commands' sections and
/// bulk registration's). S3's lifecycle calls log as "?" (see below) and are both in the bulk
/// section.
fn assert_documented(emu: &Emulator, from: usize, to: usize) {
    let mut allowed = documented("Bulk registration");
    for s in ["plan and status", "up", "down", "verify", "device"] {
        allowed.extend(documented(s));
    }
    for (service, op) in emu.requests().into_iter().take(to).skip(from) {
        let action = match (service.as_str(), op.as_str()) {
            ("s3", "?") => continue,
            ("s3", "HeadBucket" | "ListObjectsV2") => "s3:ListBucket".to_string(),
            ("s3", op) => format!("s3:{op}"),
            ("iot" | "iot-data", op) => format!("iot:{op}"),
            ("iam", op) => format!("iam:{op}"),
            _ => continue,
        };
        assert!(
            allowed.iter().any(|a| a.eq_ignore_ascii_case(&action)),
            "{action} is not in docs/aws-permissions.md"
        );
    }
}

fn count(emu: &Emulator, since: usize, op: &str) -> usize {
    emu.requests()
        .into_iter()
        .skip(since)
        .filter(|(_, o)| o == op)
        .count()
}

/// The DER of the public key in a PEM file (a certificate's or a public key's).
fn public_key_der(pem_text: &str) -> Vec<u8> {
    let block = pem::parse(pem_text).unwrap();
    if block.tag() == "CERTIFICATE" {
        let (_, cert) = x509_parser::parse_x509_certificate(block.contents()).unwrap();
        cert.public_key().raw.to_vec()
    } else {
        block.contents().to_vec()
    }
}

/// Every device of `0..n` from outside: the thing with its attributes, exactly one ACTIVE
/// certificate attached to it and to the device policy, whose public key is the local key's,
/// the local certificate file being the registered one; and its shadow.
async fn assert_registered(c: &Clients, w: &Workdir, n: usize) {
    let mut things = BTreeMap::new();
    let mut pages = c.iot.list_things().max_results(250).into_paginator().send();
    while let Some(page) = pages.next().await {
        for t in page.unwrap().things() {
            things.insert(
                t.thing_name().unwrap().to_string(),
                t.attributes().cloned().unwrap_or_default(),
            );
        }
    }
    assert_eq!(things.len(), n, "things");
    let mut certificates = 0;
    let mut pages = c
        .iot
        .list_certificates()
        .page_size(250)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        certificates += page.unwrap().certificates().len();
    }
    assert_eq!(certificates, n, "one certificate per device, no duplicate");
    let policy = w.state().unwrap()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "policy")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..n {
        let name = format!("sensor-{i:04}");
        let attrs = &things[&name];
        assert_eq!(attrs["serial"], format!("SN-{i:04}"), "{name}");
        assert_eq!(attrs["line"], format!("L{}", i % 3), "{name}");
        let principals = c
            .iot
            .list_thing_principals()
            .thing_name(&name)
            .send()
            .await
            .unwrap()
            .principals()
            .to_vec();
        assert_eq!(principals.len(), 1, "{name}: {principals:?}");
        let id = principals[0].rsplit('/').next().unwrap();
        let desc = c
            .iot
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .unwrap()
            .certificate_description
            .unwrap();
        assert_eq!(desc.status().unwrap().as_str(), "ACTIVE", "{name}");
        let registered = desc.certificate_pem().unwrap();
        let dir = w.path().join(".iotreg");
        let local_cert =
            std::fs::read_to_string(dir.join(format!("{name}-certificate.pem.crt"))).unwrap();
        assert_eq!(
            local_cert.trim(),
            registered.trim(),
            "{name}: certificate file"
        );
        let public = std::fs::read_to_string(dir.join(format!("{name}-public.pem.key"))).unwrap();
        assert_eq!(
            public_key_der(registered),
            public_key_der(&public),
            "{name}: the certificate is for the local key"
        );
        let attached = c
            .iot
            .list_attached_policies()
            .target(&principals[0])
            .send()
            .await
            .unwrap();
        assert!(
            attached
                .policies()
                .iter()
                .any(|p| p.policy_name() == Some(policy.as_str())),
            "{name}: policy attached"
        );
        assert!(
            c.data
                .get_thing_shadow()
                .thing_name(&name)
                .send()
                .await
                .is_ok(),
            "{name}: shadow"
        );
    }
}

/// What of this deployment's is left in IAM and S3 (the emulator's own report bucket, which
/// stands for AWS's, is not the account's).
async fn leftovers(c: &Clients) -> Vec<String> {
    let mut out = Vec::new();
    for r in c.iam.list_roles().send().await.unwrap().roles() {
        out.push(format!("role {}", r.role_name()));
    }
    for b in c.s3.list_buckets().send().await.unwrap().buckets() {
        let name = b.name().unwrap_or_default();
        if !name.starts_with("iot-registration-reports-") {
            out.push(format!("bucket {name}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_300_is_registered_by_one_task_and_torn_down_whole() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    manifest(&w, 300);
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_documented(&emu, 0, emu.requests().len());
    assert_eq!(count(&emu, 0, "StartThingRegistrationTask"), 1);
    // Not one device went the per-device way.
    for op in ["CreateThing", "CreateCertificateFromCsr", "AttachPolicy"] {
        assert_eq!(count(&emu, 0, op), 0, "{op}");
    }
    let c = emu.clients().await;
    assert_registered(&c, &w, 300).await;
    let suffix = w.suffix();
    assert!(leftovers(&c)
        .await
        .contains(&format!("role iotreg-bulk-registration-{suffix}")));

    // verify and the device commands treat bulk-registered devices as any others.
    let before = emu.requests().len();
    w.ok(&["verify", "--skip-e2e"]);
    assert_documented(&emu, before, emu.requests().len());
    w.ok(&["device", "publish", "sensor-0123"]);

    // A second up: the plan's reads only (the fleet in pages), no write, no task. HeadBucket is
    // a read; the lifecycle rule's GET and PUT share a path and method with their deprecated
    // twins in botocore's model, so the request log names both "?". The plan's read of the
    // bucket is a HeadBucket and a lifecycle GET: a "?" more would be a PUT.
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let writes = emu.writes_since(before);
    let heads = writes.iter().filter(|w| *w == "s3:HeadBucket").count();
    assert_eq!(heads, 1, "{writes:?}");
    let others: Vec<&String> = writes.iter().filter(|w| *w != "s3:HeadBucket").collect();
    assert_eq!(others, ["s3:?"], "only the lifecycle rule read");

    let before = emu.requests().len();
    w.ok(&["down"]);
    assert_documented(&emu, before, emu.requests().len());
    let inv = inventory(&c).await;
    assert_eq!((inv.things, inv.certificates, inv.policies), (0, 0, 0));
    assert_eq!(leftovers(&c).await, Vec::<String>::new());
    assert!(!w.path().join(".iotreg").exists(), "keys and state removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_killed_while_the_task_starts_resumes_it_without_a_second_one() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    manifest(&w, 100);
    // The task is started, its answer (the task id) never reaches iotreg.
    let mut child = emu.start_held(
        &w,
        &["up", "--fleet", "devices.csv"],
        "StartThingRegistrationTask",
        30,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let keys_before: Vec<String> = (0..100)
        .map(|i| {
            std::fs::read_to_string(
                w.path()
                    .join(format!(".iotreg/sensor-{i:04}-private.pem.key")),
            )
            .unwrap()
        })
        .collect();
    let before = emu.requests().len();
    let up = w.ok(&["up", "--fleet", "devices.csv"]);
    assert!(
        up.stderr().contains("taking over and resuming"),
        "{}",
        up.all()
    );
    assert_eq!(count(&emu, before, "StartThingRegistrationTask"), 0);
    let c = emu.clients().await;
    let tasks = c
        .iot
        .list_thing_registration_tasks()
        .send()
        .await
        .unwrap()
        .task_ids()
        .to_vec();
    assert_eq!(
        tasks.len(),
        1,
        "one task: the resumed run found it by its input\n{}",
        up.all()
    );
    for (i, key) in keys_before.iter().enumerate() {
        let now = std::fs::read_to_string(
            w.path()
                .join(format!(".iotreg/sensor-{i:04}-private.pem.key")),
        )
        .unwrap();
        assert_eq!(&now, key, "sensor-{i:04}: the key made before the kill");
    }
    assert_registered(&c, &w, 100).await;
    w.ok(&["verify", "--skip-e2e"]);
    w.ok(&["down"]);
    assert_eq!(leftovers(&c).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn someone_elses_task_in_progress_is_refused_and_nothing_is_started() {
    // Their task runs at 5 lines a second: in progress for the whole test.
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_REGISTRATION_RATE", "5")]);
    let c = emu.clients().await;
    let role = iot_role(&c, "their-registration-role").await;
    let bucket = Bucket::create(&c.s3, "their-inputs", false).await;
    let lines: String = (0..1000)
        .map(|i| format!("{{\"ThingName\": \"theirs-{i}\"}}\n"))
        .collect();
    bucket.put("in.jsonl", lines.into_bytes()).await;
    let template = r#"{"Parameters": {"ThingName": {"Type": "String"}}, "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}}}"#;
    let theirs = c
        .iot
        .start_thing_registration_task()
        .template_body(template)
        .input_file_bucket("their-inputs")
        .input_file_key("in.jsonl")
        .role_arn(role.arn())
        .send()
        .await
        .unwrap()
        .task_id
        .unwrap();

    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    manifest(&w, 10);
    let before = emu.requests().len();
    let up = w.run(&["up", "--fleet", "devices.csv"]);
    assert_eq!(up.code(), 1, "{}", up.all());
    assert!(
        up.all()
            .contains(&format!("bulk registration task {theirs} (started ")),
        "{}",
        up.all()
    );
    assert!(up.all().contains("Nothing was started"), "{}", up.all());
    assert_eq!(count(&emu, before, "StartThingRegistrationTask"), 0);
    assert_eq!(count(&emu, before, "PutObject"), 0, "no input uploaded");
    let status = c
        .iot
        .describe_thing_registration_task()
        .task_id(&theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.status().unwrap().as_str(),
        "InProgress",
        "not trampled"
    );
    let things = c.iot.list_things().send().await.unwrap();
    assert!(
        things
            .things()
            .iter()
            .all(|t| t.thing_name().unwrap().starts_with("theirs-")),
        "no device of ours"
    );
    c.iot
        .stop_thing_registration_task()
        .task_id(&theirs)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bulk_settings_exit_2_before_any_request() {
    let emu = Emulator::start();
    for (config, needle) in [
        ("[fleet]\nmode = \"batch\"\n", "batch"),
        (
            "[fleet]\nmode = \"bulk\"\nbulk_bucket = \"Not_A_Bucket\"\n",
            "fleet.bulk_bucket",
        ),
        (
            "[fleet]\nmode = \"bulk\"\n[certificate]\nmode = \"aws-generated\"\n",
            "fleet.mode",
        ),
    ] {
        let w = emu.workdir();
        std::fs::write(w.path().join("iotreg.toml"), config).unwrap();
        manifest(&w, 3);
        let before = emu.requests().len();
        let r = w.run(&["up", "--fleet", "devices.csv"]);
        assert_eq!(r.code(), 2, "{config}: {}", r.all());
        assert!(r.stderr().contains(needle), "{config}: {}", r.stderr());
        assert_eq!(emu.requests().len(), before, "{config}: no request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_with_their_own_csrs_are_registered_with_no_private_key_on_this_disk() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    // The devices' side: each key stays in this process (the device), only its CSR is written.
    std::fs::create_dir(w.path().join("csrs")).unwrap();
    let mut keys = Vec::new();
    let mut text = String::from("thing_name,serial,line,csr\n");
    for i in 0..100 {
        let name = format!("sensor-{i:04}");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        std::fs::write(w.path().join(format!("csrs/{name}.csr")), csr).unwrap();
        text.push_str(&format!("{name},SN-{i:04},L{},csrs/{name}.csr\n", i % 3));
        keys.push(key);
    }
    std::fs::write(w.path().join("devices.csv"), text).unwrap();
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_eq!(count(&emu, 0, "StartThingRegistrationTask"), 1);
    assert_eq!(count(&emu, 0, "CreateCertificateFromCsr"), 0);
    assert_eq!(
        private_keys_under(w.path()),
        Vec::<std::path::PathBuf>::new(),
        "no private key on the operator's disk"
    );
    let c = emu.clients().await;
    for (i, key) in keys.iter().enumerate() {
        let name = format!("sensor-{i:04}");
        let principals = c
            .iot
            .list_thing_principals()
            .thing_name(&name)
            .send()
            .await
            .unwrap()
            .principals()
            .to_vec();
        assert_eq!(principals.len(), 1, "{name}");
        let pem = c
            .iot
            .describe_certificate()
            .certificate_id(principals[0].rsplit('/').next().unwrap())
            .send()
            .await
            .unwrap()
            .certificate_description
            .unwrap()
            .certificate_pem
            .unwrap();
        assert_eq!(
            public_key_der(&pem),
            key.public_key_der(),
            "{name}: issued for the device's own key"
        );
        let local =
            std::fs::read_to_string(w.path().join(format!(".iotreg/{name}-certificate.pem.crt")))
                .unwrap();
        assert_eq!(local.trim(), pem.trim(), "{name}: certificate file");
    }
    // A second up writes nothing for them: recorded as the per-device path records them.
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_eq!(count(&emu, before, "StartThingRegistrationTask"), 0);
    assert_eq!(count(&emu, before, "CreateCertificateFromCsr"), 0);
    w.ok(&["down"]);
    assert_eq!(leftovers(&c).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_in_errors_is_named_with_awss_code_and_registered_by_the_next_up() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    // Someone else's thing with one of the fleet's names: the template never takes it over.
    c.iot
        .create_thing()
        .thing_name("sensor-0002")
        .send()
        .await
        .unwrap();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    manifest(&w, 5);
    let up = w.run(&["up", "--fleet", "devices.csv"]);
    assert_eq!(up.code(), 1, "{}", up.all());
    assert!(
        up.all()
            .contains("sensor-0002 failed: ResourceConflictsException"),
        "each failed device on a line of its own\n{}",
        up.all()
    );
    assert!(
        up.all().contains("sensor-0002: ResourceConflictsException"),
        "and in the summary\n{}",
        up.all()
    );
    // The others are in place; the failed one kept its key and intents.
    let principals = |name: &'static str| {
        let c = &c;
        async move {
            c.iot
                .list_thing_principals()
                .thing_name(name)
                .send()
                .await
                .unwrap()
                .principals()
                .len()
        }
    };
    assert_eq!(principals("sensor-0004").await, 1);
    assert_eq!(principals("sensor-0002").await, 0, "not taken over");
    assert!(w
        .path()
        .join(".iotreg/sensor-0002-private.pem.key")
        .exists());

    c.iot
        .delete_thing()
        .thing_name("sensor-0002")
        .send()
        .await
        .unwrap();
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_eq!(count(&emu, 0, "StartThingRegistrationTask"), 2);
    assert_registered(&c, &w, 5).await;
    w.ok(&["down"]);
    assert_eq!(leftovers(&c).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn up_killed_while_reading_the_reports_of_its_finished_task_reads_them_again() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    manifest(&w, 50);
    // The task id is recorded and the task done; the kill comes before its devices are.
    let mut child = emu.start_held(
        &w,
        &["up", "--fleet", "devices.csv"],
        "ListThingRegistrationTaskReports",
        30,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_eq!(count(&emu, before, "StartThingRegistrationTask"), 0);
    assert_eq!(
        count(&emu, before, "ListThingRegistrationTasks"),
        1,
        "only the check for a foreign task: the id was recorded"
    );
    let c = emu.clients().await;
    let tasks = c.iot.list_thing_registration_tasks().send().await.unwrap();
    assert_eq!(tasks.task_ids().len(), 1);
    assert_registered(&c, &w, 50).await;
    w.ok(&["down"]);
    assert_eq!(leftovers(&c).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_group_attached_policy_devices_join_the_group_and_verify() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!("{CONFIG}group = \"sensors-{{{{suffix}}}}\"\n[policy]\nattach_to = \"group\"\n"),
    )
    .unwrap();
    manifest(&w, 20);
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_eq!(count(&emu, 0, "AttachPolicy"), 1, "once, to the group");
    assert_eq!(
        count(&emu, 0, "AddThingToThingGroup"),
        0,
        "joined by the template"
    );
    let c = emu.clients().await;
    let group = format!("sensors-{}", w.suffix());
    let members = c
        .iot
        .list_things_in_thing_group()
        .thing_group_name(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(members.things().len(), 20);
    let v = w.run(&["verify", "--skip-e2e"]);
    assert_eq!(v.code(), 0, "{}", v.all());
    w.ok(&["device", "publish", "sensor-0007"]);
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let writes = emu.writes_since(before);
    assert!(
        writes.iter().all(|w| w == "s3:HeadBucket" || w == "s3:?"),
        "{writes:?}"
    );
    w.ok(&["down"]);
    assert_eq!(leftovers(&c).await, Vec::<String>::new());
}
