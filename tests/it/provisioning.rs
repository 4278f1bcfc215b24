//! Provisioning at fleet scale, end to end on the local AWS: devices that bring their own CSR
//! (their keys made by openssl, as a factory would, and never on the operator's disk), a fleet's
//! thing group with the device policy attached to the group, devices proven from their side with
//! mosquitto's client, and bad provisioning input refused before any request.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const NO_LIMITS: &str = "[aws.rate_limits]\n\"*\" = 0\n";

/// A device's key and CSR made by openssl in `factory` (the device's side): returns the key's
/// path; the CSR is `<name>.csr` beside it.
fn factory_device(factory: &Path, name: &str, key_args: &[&str]) -> PathBuf {
    std::fs::create_dir_all(factory).unwrap();
    let key = factory.join(format!("{name}.key"));
    let csr = factory.join(format!("{name}.csr"));
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("openssl");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("openssl").args(key_args).arg("-out").arg(&key));
    run(Command::new("openssl")
        .args(["req", "-new", "-subj", &format!("/CN={name}"), "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    key
}

const P256: &[&str] = &[
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
];

/// One QoS 1 publish with mosquitto_pub as the device: its certificate, its key, its client id.
fn mosquitto_pub(
    gw: &Gateway,
    cert: &Path,
    key: &Path,
    client_id: &str,
    topic: &str,
) -> std::process::Output {
    Command::new("mosquitto_pub")
        .arg("--cafile")
        .arg(&gw.ca_file)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["-h", &gw.endpoint, "-p", &gw.mqtt.to_string()])
        .args([
            "-i",
            client_id,
            "-t",
            topic,
            "-q",
            "1",
            "-m",
            "{\"temperature\": 21.5}",
        ])
        .output()
        .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/clients.sh installs it)")
}

async fn certificates(c: &Clients) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pages = c
        .iot
        .list_certificates()
        .page_size(250)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for cert in page.unwrap().certificates() {
            out.push((
                cert.certificate_id().unwrap().to_string(),
                cert.status().unwrap().as_str().to_string(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_only_devices_get_certificates_for_their_own_keys_and_a_killed_up_resumes() {
    let emu = Emulator::start();
    let w = emu.workdir();
    let c = emu.clients().await;
    // The factory is outside the operator's working directory: the device's side.
    let factory = tempfile::tempdir().unwrap();
    let mut csv = String::from("thing_name,serial_number,csr\n");
    for i in 0..20 {
        let name = format!("sensor-{i:04}");
        factory_device(factory.path(), &name, P256);
        csv.push_str(&format!(
            "{name},SN-{i:04},{}\n",
            factory.path().join(format!("{name}.csr")).display()
        ));
    }
    std::fs::write(w.path().join("devices.csv"), csv).unwrap();
    std::fs::write(w.path().join("iotreg.toml"), NO_LIMITS).unwrap();

    // Killed while AWS issues a certificate: the next run finds it by the CSR's public key.
    let mut child = emu.start_held(
        &w,
        &["up", "--fleet", "devices.csv", "--concurrency", "1"],
        "CreateCertificateFromCsr",
        30,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let up = w.ok(&["up", "--fleet", "devices.csv", "--output", "json"]);
    assert_eq!(up.json()["ok"], true);
    let certs = certificates(&c).await;
    assert_eq!(
        certs.len(),
        20,
        "one certificate per device, no duplicate: {certs:?}"
    );
    assert!(certs.iter().all(|(_, s)| s == "ACTIVE"), "{certs:?}");

    // No private key anywhere on the operator's side.
    assert_eq!(private_keys_under(w.path()), Vec::<PathBuf>::new());

    // verify: each certificate carries its CSR's key; connecting as a device is the device's.
    let v = w.run(&["verify", "--skip-e2e", "--output", "json"]);
    assert_eq!(v.code(), 0, "{}", v.all());
    let checks = v.json()["checks"].as_array().unwrap().clone();
    let fleet = checks
        .iter()
        .find(|c| c["name"] == "fleet.devices")
        .unwrap();
    assert_eq!(fleet["status"], "pass", "{fleet}");
    assert!(checks.iter().any(|c| c["name"] == "device.connect"
        && c["status"] == "skip"
        && c["reason"].as_str().unwrap().contains("own CSR")));

    // The device, with its own key (from the factory) and the certificate iotreg wrote,
    // connects and publishes with mosquitto's client.
    let gw = emu.gateway();
    let out = mosquitto_pub(
        &gw,
        &w.path().join(".iotreg/sensor-0007-certificate.pem.crt"),
        &factory.path().join("sensor-0007.key"),
        "sensor-0007",
        "sensor/temperature/sensor-0007",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A device with a new key (a new CSR): plan names it, up reissues only its certificate.
    factory_device(factory.path(), "sensor-0003", P256);
    let plan = w.run(&["plan", "--fleet", "devices.csv", "--detailed-exitcode"]);
    assert_eq!(plan.code(), 3, "{}", plan.all());
    assert!(
        plan.stdout()
            .contains("1 of 20 devices differ: 1 certificates to reissue")
            && plan
                .stdout()
                .contains("sensor-0003:\n        ~ certificate: public_key_sha256: "),
        "{}",
        plan.stdout()
    );
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let writes = emu.writes_since(before);
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.ends_with(":CreateCertificateFromCsr"))
            .count(),
        1,
        "{writes:?}"
    );
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.ends_with(":DeleteCertificate"))
            .count(),
        1,
        "{writes:?}"
    );
    let out = mosquitto_pub(
        &gw,
        &w.path().join(".iotreg/sensor-0003-certificate.pem.crt"),
        &factory.path().join("sensor-0003.key"),
        "sensor-0003",
        "sensor/temperature/sensor-0003",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(certificates(&c).await.len(), 20);

    w.ok(&["down"]);
    assert_eq!(certificates(&c).await, vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_device_with_its_own_csr() {
    let emu = Emulator::start();
    let w = emu.workdir();
    let factory = tempfile::tempdir().unwrap();
    let key = factory_device(factory.path(), "device", P256);
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!(
            "[certificate]\ncsr_file = \"{}\"\n",
            factory.path().join("device.csr").display()
        ),
    )
    .unwrap();
    w.ok(&["up"]);
    assert_eq!(private_keys_under(w.path()), Vec::<PathBuf>::new());
    let v = w.run(&["verify", "--skip-e2e", "--output", "json"]);
    assert_eq!(v.code(), 0, "{}", v.all());
    let files = v.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "certificate.local_files")
        .cloned()
        .unwrap();
    assert_eq!(files["status"], "pass", "{files}");
    assert!(
        files["reason"].as_str().unwrap().contains("device's CSR"),
        "{files}"
    );
    let thing = format!("temperature-sensor-{}", w.suffix());
    let out = mosquitto_pub(
        &emu.gateway(),
        &w.path()
            .join(format!(".iotreg/{thing}-certificate.pem.crt")),
        &key,
        &thing,
        &format!("sensor/temperature/{thing}"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.ok(&["down"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_attached_policy_admits_members_only() {
    let emu = Emulator::start();
    let w = emu.workdir();
    let c = emu.clients().await;
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!("{NO_LIMITS}[fleet]\ngroup = \"sensors-{{{{suffix}}}}\"\n[policy]\nattach_to = \"group\"\n"),
    )
    .unwrap();
    let mut csv = String::from("thing_name,serial_number\n");
    for i in 0..10 {
        csv.push_str(&format!("sensor-{i:04},SN-{i:04}\n"));
    }
    std::fs::write(w.path().join("devices.csv"), csv).unwrap();
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let calls: Vec<String> = emu.requests()[before..]
        .iter()
        .map(|(_, op)| op.clone())
        .collect();
    // One AttachPolicy in all (the group's), none per certificate.
    assert_eq!(
        calls.iter().filter(|op| *op == "AttachPolicy").count(),
        1,
        "{calls:?}"
    );
    let s = w.suffix();
    let group = format!("sensors-{s}");
    let policy = format!("device-policy-{s}");
    let targets = c
        .iot
        .list_targets_for_policy()
        .policy_name(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(targets.targets().len(), 1, "{:?}", targets.targets());
    assert!(targets.targets()[0].contains(&format!("thinggroup/{group}")));
    let members = c
        .iot
        .list_things_in_thing_group()
        .thing_group_name(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(members.things().len(), 10);

    // A member connects and publishes with its thing name as client id (mosquitto's client).
    let gw = emu.gateway();
    let files = |t: &str| {
        (
            w.path().join(format!(".iotreg/{t}-certificate.pem.crt")),
            w.path().join(format!(".iotreg/{t}-private.pem.key")),
        )
    };
    let (cert, key) = files("sensor-0001");
    let out = mosquitto_pub(
        &gw,
        &cert,
        &key,
        "sensor-0001",
        "sensor/temperature/sensor-0001",
    );
    assert!(
        out.status.success(),
        "member: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same device out of the group has no policy at all: refused.
    c.iot
        .remove_thing_from_thing_group()
        .thing_group_name(&group)
        .thing_name("sensor-0002")
        .send()
        .await
        .unwrap();
    let (cert, key) = files("sensor-0002");
    let out = mosquitto_pub(
        &gw,
        &cert,
        &key,
        "sensor-0002",
        "sensor/temperature/sensor-0002",
    );
    assert!(!out.status.success(), "a non-member was let in");
    // verify names the device that left; up puts it back, with one call.
    let v = w.run(&["verify", "--skip-e2e"]);
    assert_eq!(v.code(), 1, "{}", v.all());
    assert!(
        v.stdout().contains("sensor-0002: thing_group.member"),
        "{}",
        v.stdout()
    );
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_eq!(
        emu.writes_since(before),
        vec!["iot:AddThingToThingGroup".to_string()]
    );
    let out = mosquitto_pub(
        &gw,
        &cert,
        &key,
        "sensor-0002",
        "sensor/temperature/sensor-0002",
    );
    assert!(
        out.status.success(),
        "back in the group: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // verify as the devices: TestAuthorization counts the group's policy for their client ids,
    // and a sampled device connects and publishes through the gateway.
    let v = w.run(&["verify", "--skip-e2e", "--output", "json"]);
    assert_eq!(v.code(), 0, "{}", v.all());
    let checks = v.json()["checks"].as_array().unwrap().clone();
    for name in [
        "policy.attached_to_group",
        "thing_group.configuration",
        "policy.authorization",
        "device.connect",
    ] {
        assert!(
            checks
                .iter()
                .any(|c| c["name"] == name && c["status"] == "pass"),
            "{name}: {checks:#?}"
        );
    }

    // Back to one attachment per certificate: the group's is retired, each certificate's made.
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!("{NO_LIMITS}[fleet]\ngroup = \"sensors-{{{{suffix}}}}\"\n"),
    )
    .unwrap();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let targets = c
        .iot
        .list_targets_for_policy()
        .policy_name(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(targets.targets().len(), 10, "{:?}", targets.targets());
    assert!(targets.targets().iter().all(|t| t.contains(":cert/")));

    w.ok(&["down"]);
    let groups = c.iot.list_thing_groups().send().await.unwrap();
    assert_eq!(groups.thing_groups().len(), 0);
    assert_eq!(c.iot.list_things().send().await.unwrap().things().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_csrs_and_duplicate_serials_are_refused_before_any_call() {
    let emu = Emulator::start();
    let w = emu.workdir();
    let factory = tempfile::tempdir().unwrap();
    factory_device(factory.path(), "good", P256);
    factory_device(
        factory.path(),
        "weak",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ],
    );
    std::fs::write(
        factory.path().join("junk.csr"),
        "-----BEGIN CERTIFICATE REQUEST-----\nnope\n",
    )
    .unwrap();
    let f = |n: &str| factory.path().join(n).display().to_string();
    let csv = format!(
        "thing_name,serial_number,csr\n\
         sensor-1,SN-1,{}\n\
         sensor-2,SN-2,{}\n\
         sensor-3,SN-3,{}\n\
         sensor-4,SN-1,\n",
        f("good.csr"),
        f("weak.csr"),
        f("junk.csr")
    );
    std::fs::write(w.path().join("devices.csv"), csv).unwrap();
    let before = emu.requests().len();
    let up = w.run(&["up", "--fleet", "devices.csv"]);
    assert_eq!(up.code(), 2, "{}", up.all());
    let err = up.stderr();
    for expected in [
        "3 problems",
        "line 3: column csr:",
        "1024 bits; AWS IoT requires at least 2048",
        "line 4: column csr:",
        "line 5: column serial_number: \"SN-1\" is already on line 2",
    ] {
        assert!(err.contains(expected), "{expected} in:\n{err}");
    }
    assert_eq!(emu.requests().len(), before, "no request");
    // The single device's CSR file, and a CSR with AWS-generated keys.
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!("[certificate]\ncsr_file = \"{}\"\n", f("weak.csr")),
    )
    .unwrap();
    let up = w.run(&["up"]);
    assert_eq!(up.code(), 2, "{}", up.all());
    assert!(
        up.stderr().contains("certificate.csr_file"),
        "{}",
        up.stderr()
    );
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!(
            "[certificate]\nmode = \"aws-generated\"\ncsr_file = \"{}\"\n",
            f("good.csr")
        ),
    )
    .unwrap();
    let up = w.run(&["up"]);
    assert_eq!(up.code(), 2, "{}", up.all());
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[policy]\nattach_to = \"group\"\n",
    )
    .unwrap();
    let up = w.run(&["up"]);
    assert_eq!(up.code(), 2, "{}", up.all());
    assert!(up.stderr().contains("fleet.group"), "{}", up.stderr());
    assert_eq!(emu.requests().len(), before, "no request");
}
