//! Fleet provisioning by claim, end to end against the local AWS: `up` in claim mode with a
//! 45-row manifest; 49 devices by `device simulate --claim` (44 of the manifest's serials and
//! 5 it does not list, which the hook refuses) and one by a paho-mqtt client written apart from
//! iotreg with nothing but the claim files, so 50 devices of which exactly 45 become things,
//! each connected as itself and published; `verify`; `down` leaves nothing in IoT, IAM or
//! Lambda. Also: `up` killed mid-way and resumed, and bad input refused before any call.

use std::process::Command;

use crate::support::*;

const DEVICES: usize = 45;

fn manifest(n: usize) -> String {
    let mut csv = String::from("thing_name,serial_number\n");
    for i in 1..=n {
        csv.push_str(&format!("sensor-{i:04},SN-{i:04}\n"));
    }
    csv
}

const CONFIG: &str = "[provisioning]\nmode = \"claim\"\n\n[fleet]\nmanifest = \"devices.csv\"\n\n[monitoring]\nenabled = false\n";

fn claim_workdir(emu: &Emulator, rows: usize) -> Workdir {
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    std::fs::write(w.path().join("devices.csv"), manifest(rows)).unwrap();
    w
}

/// Things made through the template, seen from outside.
async fn provisioned_things(c: &Clients, template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .iot
            .list_things()
            .attribute_name("provisioned_by")
            .attribute_value(template)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            page.things()
                .iter()
                .map(|t| t.thing_name().unwrap().to_string()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

fn template_name(w: &Workdir) -> String {
    format!("fleet-template-{}", w.suffix())
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_provisioning_from_up_to_down() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = claim_workdir(&emu, DEVICES);
    let up = w.ok(&["up", "--output", "json"]);
    let template = template_name(&w);

    // The template as AWS describes it: enabled, its role and hook, the body's marker.
    let t = c
        .iot
        .describe_provisioning_template()
        .template_name(&template)
        .send()
        .await
        .unwrap();
    assert_eq!(t.enabled(), Some(true), "{}", up.all());
    assert!(t
        .provisioning_role_arn()
        .unwrap()
        .contains(":role/iot-provisioning-role-"));
    let hook = t.pre_provisioning_hook().expect("a pre-provisioning hook");
    assert!(hook.target_arn().contains(":function:provisioning-hook-"));
    assert_eq!(hook.payload_version(), Some("2020-04-01"));
    let body: serde_json::Value = serde_json::from_str(t.template_body().unwrap()).unwrap();
    assert_eq!(
        body["Resources"]["thing"]["Properties"]["AttributePayload"]["provisioned_by"],
        template.as_str()
    );
    // up made no device: they provision themselves.
    assert!(provisioned_things(&c, &template).await.is_empty());
    let keys = w.path().join(".iotreg");
    assert!(keys.join("claim-certificate.pem.crt").exists());
    assert!(keys.join("claim-private.pem.key").exists());

    // A second up writes nothing.
    let before = emu.requests().len();
    w.ok(&["up"]);
    assert_eq!(emu.writes_since(before), Vec::<String>::new());

    // One device by a client iotreg did not write, with the claim files up wrote.
    let gw = emu.gateway();
    let paho = Command::new(python())
        .arg(repo().join("tests/it/support/paho_claim.py"))
        .args([
            gw.endpoint.as_str(),
            &gw.mqtt.to_string(),
            gw.ca_file.to_str().unwrap(),
            keys.join("claim-certificate.pem.crt").to_str().unwrap(),
            keys.join("claim-private.pem.key").to_str().unwrap(),
            &template,
            "SN-0045",
            "sensor-0045",
            w.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&paho.stdout);
    assert!(
        paho.status.success(),
        "paho claim client: {said}{}",
        String::from_utf8_lossy(&paho.stderr)
    );
    let said: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    assert_eq!(said["thing"], "sensor-0045");
    assert_eq!(said["puback"], true);

    // 49 more by iotreg: the manifest's other 44 serials and 5 it does not list.
    let mut serials: Vec<String> = (1..=44).map(|i| format!("SN-{i:04}")).collect();
    serials.extend((1..=5).map(|i| format!("ROGUE-{i}")));
    std::fs::write(w.path().join("serials.txt"), serials.join("\n")).unwrap();
    let sim = w.run(&[
        "device",
        "simulate",
        "--claim",
        "--count",
        "49",
        "--serials",
        "serials.txt",
        "--concurrency",
        "16",
        "--output",
        "json",
    ]);
    assert_eq!(sim.code(), 0, "{}", sim.all());
    let s = sim.json();
    assert_eq!(
        (
            &s["devices"],
            &s["provisioned"],
            &s["refused"],
            &s["failed"]
        ),
        (&49.into(), &44.into(), &5.into(), &0.into()),
        "{s}"
    );
    let refused: Vec<&str> = s["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["serial"].as_str().unwrap())
        .collect();
    assert_eq!(
        refused,
        ["ROGUE-1", "ROGUE-2", "ROGUE-3", "ROGUE-4", "ROGUE-5"]
    );

    // Exactly the 45 allowed devices exist, each with its certificate and the device policy,
    // its serial as an attribute; the refused ones left nothing.
    let mut things = provisioned_things(&c, &template).await;
    things.sort();
    let expected: Vec<String> = (1..=45).map(|i| format!("sensor-{i:04}")).collect();
    assert_eq!(things, expected);
    for thing in ["sensor-0001", "sensor-0044", "sensor-0045"] {
        let d = c
            .iot
            .describe_thing()
            .thing_name(thing)
            .send()
            .await
            .unwrap();
        let serial = format!("SN-{}", &thing[7..]);
        assert_eq!(d.attributes().unwrap()["SerialNumber"], serial);
        let principals = c
            .iot
            .list_thing_principals()
            .thing_name(thing)
            .send()
            .await
            .unwrap();
        assert_eq!(principals.principals().len(), 1, "{thing}");
        let policies = c
            .iot
            .list_attached_policies()
            .target(&principals.principals()[0])
            .send()
            .await
            .unwrap();
        assert_eq!(policies.policies().len(), 1, "{thing}");
    }
    // Each device's own files, written by the device, and it is that device as iotreg sees
    // it: `device publish` connects with them.
    for i in 1..=44 {
        assert!(keys.join(format!("sensor-{i:04}-private.pem.key")).exists());
    }

    // One refusal as `device provision` reports it: exit 1, AWS's code and message.
    let one = w.run(&[
        "device",
        "provision",
        "--claim",
        "--serial",
        "ROGUE-9",
        "--output",
        "json",
    ]);
    assert_eq!(one.code(), 1, "{}", one.all());
    let j = one.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["rejected_by"], "RegisterThing", "{j}");
    assert!(
        j["error_code"].as_str().is_some_and(|c| !c.is_empty()),
        "{j}"
    );
    assert!(provisioned_things(&c, &template).await.len() == 45);

    // The hook logged each of its decisions: 49 + 1 + 1 requests reached it, 6 refused.
    let group = format!("/aws/lambda/provisioning-hook-{}", w.suffix());
    let mut decisions: Vec<serde_json::Value> = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .logs
            .filter_log_events()
            .log_group_name(&group)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        decisions.extend(
            page.events()
                .iter()
                .filter_map(|e| e.message())
                .filter_map(|m| m.find('{').map(|i| &m[i..]))
                .filter_map(|m| serde_json::from_str::<serde_json::Value>(m.trim()).ok())
                .filter(|v| v.get("decision").is_some()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let denied: Vec<&str> = decisions
        .iter()
        .filter(|d| d["decision"] == "deny")
        .map(|d| d["serialNumber"].as_str().unwrap())
        .collect();
    assert_eq!(denied.len(), 6, "{decisions:?}");
    assert!(denied.contains(&"ROGUE-9"));
    assert_eq!(
        decisions
            .iter()
            .filter(|d| d["decision"] == "allow")
            .count(),
        45
    );

    // verify in claim mode: the provisioning checks pass.
    let v = w.run(&["verify", "--skip-e2e", "--output", "json"]);
    let checks = v.json()["checks"].clone();
    for name in [
        "provisioning.template",
        "provisioning.role",
        "provisioning.hook_function",
        "provisioning.claim_policy",
        "provisioning.claim_certificate.active",
        "provisioning.claim_certificate.local_files",
        "provisioning.claim_authorization",
    ] {
        let check = checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {}", v.all()));
        assert_eq!(check["status"], "pass", "{check}");
    }

    // down: nothing left in IoT, IAM or Lambda.
    w.ok(&["down"]);
    assert!(c
        .iot
        .list_provisioning_templates()
        .send()
        .await
        .unwrap()
        .templates()
        .is_empty());
    assert_eq!(c.iot.list_things().send().await.unwrap().things().len(), 0);
    // What is left is the refused devices' certificates: issued by CreateCertificateFromCsr,
    // never activated (RegisterThing was refused), and deleted by AWS itself when their
    // ownership token expires. Nothing identifies them as this deployment's.
    let left = c.iot.list_certificates().send().await.unwrap();
    assert_eq!(
        left.certificates().len(),
        6,
        "5 refused by simulate, 1 by provision"
    );
    assert!(left
        .certificates()
        .iter()
        .all(|c| c.status().map(|s| s.as_str()) == Some("PENDING_ACTIVATION")));
    assert_eq!(
        c.iot.list_policies().send().await.unwrap().policies().len(),
        0
    );
    let roles = c.iam.list_roles().send().await.unwrap();
    assert!(
        roles
            .roles()
            .iter()
            .all(|r| !r.role_name().contains("provision")
                && !r.role_name().starts_with("iot-lambda-role-")),
        "{:?}",
        roles
            .roles()
            .iter()
            .map(|r| r.role_name())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        c.lambda
            .list_functions()
            .send()
            .await
            .unwrap()
            .functions()
            .len(),
        0
    );
    assert!(w.state().is_none());
    assert!(!keys.join("claim-private.pem.key").exists());
    assert!(!keys.join("sensor-0001-private.pem.key").exists());
}

/// Killed right after the template and the claim certificate are created (their answers held),
/// `up` resumes to exactly one of each, and `down` then leaves none.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_claim_up_resumes_to_one_of_each() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = claim_workdir(&emu, 3);
    for op in ["CreateCertificateFromCsr", "CreateProvisioningTemplate"] {
        let mut child = emu.start_held(&w, &["up"], op, 20);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    w.ok(&["up"]);
    let templates = c.iot.list_provisioning_templates().send().await.unwrap();
    assert_eq!(templates.templates().len(), 1);
    assert_eq!(
        c.iot
            .list_certificates()
            .send()
            .await
            .unwrap()
            .certificates()
            .len(),
        1,
        "one claim certificate"
    );
    let before = emu.requests().len();
    w.ok(&["up"]);
    assert_eq!(emu.writes_since(before), Vec::<String>::new());
    w.ok(&["down"]);
    assert!(c
        .iot
        .list_provisioning_templates()
        .send()
        .await
        .unwrap()
        .templates()
        .is_empty());
    assert_eq!(
        c.iot
            .list_certificates()
            .send()
            .await
            .unwrap()
            .certificates()
            .len(),
        0
    );
}

/// Claim mode without the allow-list, or with one that cannot serve (no serials, the same
/// serial twice): exit 2 before any AWS call.
#[test]
fn bad_claim_input_is_refused_before_any_call() {
    let emu = Emulator::start();
    let cases: [(&str, Option<&str>, &str); 3] = [
        (
            "[provisioning]\nmode = \"claim\"\n",
            None,
            "needs the fleet manifest",
        ),
        (
            CONFIG,
            Some("thing_name,serial_number\na,SN-1\nb,SN-1\n"),
            "\"SN-1\" is both a's and b's",
        ),
        (
            CONFIG,
            Some("thing_name,line\na,L1\n"),
            "device a has no serial_number",
        ),
    ];
    for (config, csv, expect) in cases {
        let w = emu.workdir();
        std::fs::write(w.path().join("iotreg.toml"), config).unwrap();
        if let Some(csv) = csv {
            std::fs::write(w.path().join("devices.csv"), csv).unwrap();
        }
        for args in [&["up"][..], &["plan"][..]] {
            let r = w.run(args);
            assert_eq!(r.code(), 2, "{config} {args:?}: {}", r.all());
            assert!(r.stderr().contains(expect), "{expect:?}: {}", r.all());
        }
    }
    let template = "[provisioning]\nmode = \"claim\"\ntemplate_name = \"this-name-is-far-too-long-for-a-template\"\n";
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), template).unwrap();
    let r = w.run(&["up"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(
        r.stderr().contains("provisioning.template_name"),
        "{}",
        r.all()
    );
    assert_eq!(emu.requests(), Vec::<(String, String)>::new());
}
