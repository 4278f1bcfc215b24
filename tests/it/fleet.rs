//! Fleets end to end on the local AWS: a manifest of devices provisioned with the shared stack,
//! looked at from outside with the SDK; a second `up` that writes nothing; rows added, changed
//! and removed; a fleet `up` killed in the middle and resumed without duplicates or orphans;
//! bad manifests refused before any request; `down` leaving nothing.

use std::collections::BTreeMap;

use crate::support::proxy::{FaultConfig, FaultKind, FaultProxy};
use crate::support::*;

/// No client-side rate limits: the local AWS has no quotas, and the tests should not wait for
/// AWS's (the limiter itself has unit tests).
const NO_LIMITS: &str = "[aws.rate_limits]\n\"*\" = 0\n";

fn manifest(w: &Workdir, rows: std::ops::Range<usize>, line_of: impl Fn(usize) -> String) {
    let mut text = String::from("thing_name,serial,line\n");
    for i in rows {
        text.push_str(&line_of(i));
        text.push('\n');
    }
    std::fs::write(w.path().join("devices.csv"), text).unwrap();
}

fn row(i: usize) -> String {
    format!("sensor-{i:04},SN-{i:04},L{}", i % 3)
}

/// What exists in the account, counted from outside with paginated reads.
#[derive(Debug, Default, PartialEq)]
struct Fleet {
    things: BTreeMap<String, BTreeMap<String, String>>,
    /// Certificate ids by status.
    certificates: BTreeMap<String, String>,
    /// Principals attached to each thing.
    principals: BTreeMap<String, Vec<String>>,
    /// Targets of each policy.
    policy_targets: BTreeMap<String, Vec<String>>,
    shadows: usize,
}

async fn fleet(c: &Clients) -> Fleet {
    let mut f = Fleet::default();
    let mut pages = c.iot.list_things().max_results(250).into_paginator().send();
    while let Some(page) = pages.next().await {
        for t in page.unwrap().things() {
            let name = t.thing_name().unwrap().to_string();
            f.things.insert(
                name.clone(),
                t.attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            );
        }
    }
    for name in f.things.keys() {
        let p = c
            .iot
            .list_thing_principals()
            .thing_name(name)
            .send()
            .await
            .unwrap();
        f.principals.insert(name.clone(), p.principals().to_vec());
        if c.data
            .get_thing_shadow()
            .thing_name(name)
            .send()
            .await
            .is_ok()
        {
            f.shadows += 1;
        }
    }
    let mut pages = c
        .iot
        .list_certificates()
        .page_size(250)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for cert in page.unwrap().certificates() {
            f.certificates.insert(
                cert.certificate_arn().unwrap().to_string(),
                cert.status().unwrap().as_str().to_string(),
            );
        }
    }
    let policies = c.iot.list_policies().send().await.unwrap();
    for p in policies.policies() {
        let name = p.policy_name().unwrap();
        let mut targets = Vec::new();
        let mut pages = c
            .iot
            .list_targets_for_policy()
            .policy_name(name)
            .page_size(250)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            targets.extend(page.unwrap().targets().iter().cloned());
        }
        f.policy_targets.insert(name.to_string(), targets);
    }
    f
}

/// Every device has its attributes, exactly one active certificate attached to it and to the
/// shared policy, and a shadow; no certificate is left over.
fn assert_complete(f: &Fleet, devices: std::ops::Range<usize>) {
    assert_eq!(f.things.len(), devices.len(), "things");
    assert_eq!(f.shadows, devices.len(), "shadows");
    assert_eq!(
        f.certificates.len(),
        devices.len(),
        "certificates: {:?}",
        f.certificates
    );
    assert!(
        f.certificates.values().all(|s| s == "ACTIVE"),
        "{:?}",
        f.certificates
    );
    let targets: Vec<&String> = f.policy_targets.values().flatten().collect();
    assert_eq!(f.policy_targets.len(), 1, "one shared policy");
    for i in devices {
        let name = format!("sensor-{i:04}");
        let attrs = &f.things[&name];
        assert_eq!(attrs["serial"], format!("SN-{i:04}"), "{name}");
        assert_eq!(attrs["line"], format!("L{}", i % 3), "{name}");
        assert_eq!(attrs["model"], "TC-2000", "{name}: the config's defaults");
        let principals = &f.principals[&name];
        assert_eq!(principals.len(), 1, "{name}: {principals:?}");
        assert!(f.certificates.contains_key(&principals[0]), "{name}");
        assert!(targets.contains(&&principals[0]), "{name}: policy attached");
    }
}

/// A fleet deployment and what the tests look at. Keep it whole (`let d = deployed(..).await;`):
/// a `let Deployed { w, .. } = ...` would drop the emulator there and then.
struct Deployed {
    emu: Emulator,
    w: Workdir,
    c: Clients,
}

/// The shared stack and devices `0..n` from the manifest (rows from `row`), no rate limits.
async fn deployed(n: usize) -> Deployed {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), NO_LIMITS).unwrap();
    manifest(&w, 0..n, row);
    w.ok(&["up", "--fleet", "devices.csv"]);
    let c = emu.clients().await;
    Deployed { emu, w, c }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_300_from_a_manifest() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), NO_LIMITS).unwrap();
    manifest(&w, 0..300, row);
    let up = w
        .ok(&["up", "--fleet", "devices.csv", "--output", "json"])
        .json();
    assert_eq!(up["ok"], true);
    let c = emu.clients().await;
    assert_complete(&fleet(&c).await, 0..300);
    // Key files per device, the private key private.
    for i in [0, 299] {
        let key = w
            .path()
            .join(format!(".iotreg/sensor-{i:04}-private.pem.key"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_fleet_up_writes_nothing_and_plan_agrees() {
    let d = deployed(300).await;
    let (emu, w) = (&d.emu, &d.w);
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_eq!(emu.writes_since(before), Vec::<String>::new());
    assert_eq!(
        w.run(&["plan", "--fleet", "devices.csv", "--detailed-exitcode"])
            .code(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_on_one_device_is_named_by_verify_and_repaired_in_place() {
    let d = deployed(300).await;
    let (emu, w, c) = (&d.emu, &d.w, &d.c);
    // Drift on one device (its certificate deactivated, an attribute edited outside): verify
    // names it, up repairs it in place.
    let cert_arn = fleet(c).await.principals["sensor-0005"][0].clone();
    c.iot
        .update_certificate()
        .certificate_id(cert_arn.rsplit('/').next().unwrap())
        .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
        .send()
        .await
        .unwrap();
    let device = drift::Names {
        thing: "sensor-0005".into(),
        ..drift::Names::new("")
    };
    drift::attribute(c, &device, "line", "Somewhere-Else").await;
    let v = w.run(&["verify", "--skip-e2e"]);
    assert_eq!(v.code(), 1, "{}", v.all());
    assert!(
        v.stdout().contains("sensor-0005: certificate.active"),
        "{}",
        v.stdout()
    );
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let writes = emu.writes_since(before);
    for op in [":UpdateCertificate", ":UpdateThing"] {
        assert_eq!(
            writes.iter().filter(|w| w.ends_with(op)).count(),
            1,
            "{op}: {writes:?}"
        );
    }
    assert_complete(&fleet(c).await, 0..300);
}

#[tokio::test(flavor = "multi_thread")]
async fn up_refuses_to_work_on_a_fleet_without_its_manifest() {
    let d = deployed(300).await;
    let no_manifest = d.w.run(&["up"]);
    assert_eq!(no_manifest.code(), 2, "{}", no_manifest.all());
    assert!(no_manifest
        .stderr()
        .contains("records a fleet of 300 devices"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_added_and_changed_are_planned_and_applied_exactly() {
    let d = deployed(300).await;
    let (emu, w, c) = (&d.emu, &d.w, &d.c);
    // Ten rows more and one attribute changed: plan says so, up does exactly that.
    manifest(w, 0..310, |i| {
        if i == 7 {
            "sensor-0007,SN-0007,L9".into()
        } else {
            row(i)
        }
    });
    let plan = w.run(&["plan", "--fleet", "devices.csv", "--detailed-exitcode"]);
    assert_eq!(plan.code(), 3, "{}", plan.all());
    assert!(
        plan.stdout()
            .contains("10 to create; 1 of 300 devices differ: 1 attributes"),
        "{}",
        plan.stdout()
    );
    assert!(
        plan.stdout().contains(
            "sensor-0007:\n        ~ thing: attributes.line: \"L1\" → \"L9\"   [config change]"
        ),
        "{}",
        plan.stdout()
    );
    let before = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let writes = emu.writes_since(before);
    let count = |op: &str| {
        writes
            .iter()
            .filter(|w| w.ends_with(&format!(":{op}")))
            .count()
    };
    assert_eq!(count("CreateThing"), 10, "{writes:?}");
    assert_eq!(count("CreateCertificateFromCsr"), 10, "{writes:?}");
    assert_eq!(count("UpdateThing"), 1, "{writes:?}");
    let f = fleet(c).await;
    assert_eq!(f.things.len(), 310);
    assert_eq!(f.things["sensor-0007"]["line"], "L9");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_the_shared_stack_and_a_sample_of_devices() {
    let d = deployed(310).await;
    let v =
        d.w.run(&["verify", "--skip-e2e", "--sample", "25", "--output", "json"]);
    assert_eq!(v.code(), 0, "{}", v.all());
    let checks = v.json()["checks"].clone();
    let devices = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "fleet.devices")
        .unwrap()
        .clone();
    let reason = devices["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "310 devices: thing, active certificate, attachments, shadow as configured"
        ) && reason.contains("25 of 310 devices one by one"),
        "{devices}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_removed_are_kept_and_reported_then_deleted_with_prune() {
    let d = deployed(310).await;
    let (w, c) = (&d.w, &d.c);
    manifest(w, 0..305, row);
    let kept = w.ok(&["up", "--fleet", "devices.csv"]);
    assert!(
        kept.stdout().contains("no longer in the manifest"),
        "{}",
        kept.all()
    );
    assert_eq!(fleet(c).await.things.len(), 310);
    w.ok(&["up", "--fleet", "devices.csv", "--prune"]);
    let f = fleet(c).await;
    assert_eq!(f.things.len(), 305);
    assert_eq!(f.certificates.len(), 305);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_retires_the_whole_fleet_without_its_manifest() {
    let d = deployed(300).await;
    let (w, c) = (&d.w, &d.c);
    // down retires the whole fleet without the manifest, and everything else.
    std::fs::remove_file(w.path().join("devices.csv")).unwrap();
    w.ok(&["down"]);
    assert_eq!(inventory(c).await, Inventory::default());
    assert_eq!(fleet(c).await, Fleet::default());
    assert!(!w.path().join(".iotreg").exists(), "state and keys removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_up_killed_in_the_middle_resumes_without_duplicates_or_orphans() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), NO_LIMITS).unwrap();
    manifest(&w, 0..120, row);
    let c = emu.clients().await;
    // Killed twice, each time with a call carried out and its answer not yet back (and the
    // other devices in flight at whatever step they were).
    for op in ["CreateCertificateFromCsr", "AttachThingPrincipal"] {
        let mut child = emu.start_held(&w, &["up", "--fleet", "devices.csv"], op, 30);
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let partial = fleet(&c).await;
    assert!(partial.things.len() < 120, "killed before the end");
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert_complete(&fleet(&c).await, 0..120);
    w.ok(&["down"]);
    assert_eq!(fleet(&c).await, Fleet::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_manifest_is_refused_before_any_request_naming_each_line() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(
        w.path().join("devices.csv"),
        "thing_name,serial\nsensor-1,SN-1\n,SN-2\nsensor 3,SN-3\nsensor-1,SN-4\nsensor-5,SN 5\nsensor-6\n",
    )
    .unwrap();
    for args in [
        &["up", "--fleet", "devices.csv"][..],
        &["plan", "--fleet", "devices.csv"][..],
    ] {
        let r = w.run(args);
        assert_eq!(r.code(), 2, "{}", r.all());
        for line in [
            "devices.csv: 5 problems:",
            "line 3: column thing_name: must not be empty",
            "line 4: column thing_name: \"sensor 3\"",
            "line 5: column thing_name: \"sensor-1\" is already on line 2",
            "line 6: column serial: \"SN 5\"",
            "line 7: 1 fields, the header has 2",
        ] {
            assert!(r.stderr().contains(line), "{line} in {}", r.all());
        }
    }
    assert_eq!(
        emu.requests(),
        Vec::<(String, String)>::new(),
        "no request at all"
    );
    assert!(!w.path().join(".iotreg").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_slows_a_fleet_down_instead_of_failing_it() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    // A third of all requests answered with the service's own throttling error, on top of
    // AWS's default per-API rates (kept on here).
    let proxy = FaultProxy::start(
        &emu.url,
        FaultConfig {
            seed: 7,
            rate: 0.33,
            kinds: vec![FaultKind::Throttle],
            delay: std::time::Duration::ZERO,
            ..FaultConfig::default()
        },
    );
    let w = Workdir::new(&proxy.url());
    std::fs::write(w.path().join("iotreg.toml"), "[aws]\nmax_attempts = 10\n").unwrap();
    manifest(&w, 0..24, row);
    w.ok(&["up", "--fleet", "devices.csv"]);
    assert!(proxy.stats().fault("throttle") > 20, "{:?}", proxy.stats());
    assert_complete(&fleet(&c).await, 0..24);
    w.ok(&["down"]);
    assert_eq!(fleet(&c).await, Fleet::default());
}
