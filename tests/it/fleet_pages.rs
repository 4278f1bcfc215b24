//! A fleet read in pages: 2,000 devices with drift made from outside on 20 of them (attributes,
//! a certificate made INACTIVE, a shadow's desired state). `plan` names exactly those 20, `up`
//! writes for exactly those, and a no-op run reads the fleet with page calls plus its sample.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;

const DEVICES: usize = 2000;
/// Page calls AWS answers with at most 250 records (100 for SearchIndex).
const LIST_PAGE: usize = 250;
const SEARCH_PAGE: usize = 100;
/// The per-device reads a sampled device makes (one each), and the writes a repair makes.
const PER_DEVICE_READS: &[&str] = &[
    "DescribeThing",
    "DescribeCertificate",
    "ListAttachedPolicies",
    "ListThingPrincipals",
    "GetThingShadow",
];

fn config(extra: &str) -> String {
    format!("[aws.rate_limits]\n\"*\" = 0\n\n[fleet]\nindexing = true\n{extra}")
}

fn manifest(w: &Workdir) {
    let mut text = String::from("thing_name,serial,line\n");
    for i in 0..DEVICES {
        text.push_str(&format!("sensor-{i:04},SN-{i:04},L{}\n", i % 3));
    }
    std::fs::write(w.path().join("devices.csv"), text).unwrap();
}

/// Every request since `start` as (operation, path).
fn requests_since(emu: &Emulator, start: usize) -> Vec<(String, String)> {
    emu.requests_with_paths()
        .into_iter()
        .skip(start)
        .map(|(_, op, path)| (op, path))
        .collect()
}

fn count(reqs: &[(String, String)], op: &str) -> usize {
    reqs.iter().filter(|(o, _)| o == op).count()
}

/// The device a write names in its path (things/NAME, things/NAME/shadow), or the certificate.
fn target(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["things", name, ..] => name.to_string(),
        ["certificates", id, ..] => format!("certificate {id}"),
        _ => path.to_string(),
    }
}

/// 20 distinct devices spread over the fleet, from a fixed seed: 7 get an attribute edited, 7
/// a certificate made INACTIVE, 6 a desired shadow value changed.
fn victims() -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut picked = BTreeSet::new();
    while picked.len() < 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        picked.insert((x % DEVICES as u64) as usize);
    }
    let mut v: Vec<String> = picked
        .into_iter()
        .map(|i| format!("sensor-{i:04}"))
        .collect();
    // Shuffle the kinds over the fleet rather than by name.
    v.rotate_left(3);
    v
}

/// The id of `thing`'s certificate: the one principal attached to it, as AWS has it.
async fn certificate_of(c: &Clients, thing: &str) -> String {
    let p = c
        .iot
        .list_thing_principals()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    assert_eq!(p.principals().len(), 1, "{thing}: {p:?}");
    p.principals()[0].rsplit('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_on_20_of_2000_devices_is_planned_and_repaired_exactly() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), config("")).unwrap();
    manifest(&w);
    w.ok(&["up", "--fleet", "devices.csv"]);
    let c = emu.clients().await;

    // A no-op run reads the fleet in pages plus its sample (100 devices by default).
    let before = emu.requests().len();
    let up = w.ok(&["up", "--fleet", "devices.csv"]);
    let reqs = requests_since(&emu, before);
    assert_eq!(
        emu.writes_since(before),
        Vec::<String>::new(),
        "{}",
        up.all()
    );
    assert_eq!(count(&reqs, "ListThings"), DEVICES.div_ceil(LIST_PAGE));
    assert_eq!(count(&reqs, "SearchIndex"), DEVICES.div_ceil(SEARCH_PAGE));
    assert!(count(&reqs, "ListCertificates") >= DEVICES.div_ceil(LIST_PAGE));
    assert!(count(&reqs, "ListTargetsForPolicy") >= DEVICES.div_ceil(LIST_PAGE));
    for op in PER_DEVICE_READS {
        let n = count(&reqs, op);
        assert!(
            n <= 100,
            "{op}: {n} calls, more than the sample of 100 devices: {}",
            up.all()
        );
    }
    assert_eq!(
        count(&reqs, "ListThingPrincipals"),
        100,
        "the sample reads what no page returns"
    );
    assert!(
        reqs.len() < 700,
        "{} requests for a no-op up of {DEVICES} devices",
        reqs.len()
    );

    // Drift from outside on 20 devices.
    let victims = victims();
    let (attrs, rest) = victims.split_at(7);
    let (certs, shadows) = rest.split_at(7);
    for name in attrs {
        let n = drift::Names {
            thing: name.clone(),
            ..drift::Names::new("")
        };
        drift::attribute(&c, &n, "line", "Moved-Outside").await;
    }
    for name in certs {
        c.iot
            .update_certificate()
            .certificate_id(certificate_of(&c, name).await)
            .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
            .send()
            .await
            .unwrap();
    }
    for name in shadows {
        let n = drift::Names {
            thing: name.clone(),
            ..drift::Names::new("")
        };
        drift::shadow(
            &c,
            &n,
            serde_json::json!({"state": {"desired": {"temperature_threshold": 99}}}),
        )
        .await;
    }
    let wanted: BTreeSet<String> = victims.iter().cloned().collect();

    // plan names exactly those 20, with what differs and where it came from.
    let plan = w.run(&[
        "plan",
        "--fleet",
        "devices.csv",
        "--detailed-exitcode",
        "--output",
        "json",
    ]);
    assert_eq!(plan.code(), 3, "{}", plan.all());
    let json = plan.json();
    let fleet = json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "fleet")
        .unwrap()
        .clone();
    let named: BTreeMap<String, serde_json::Value> = fleet["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["thing"].as_str().unwrap().to_string(), d["steps"].clone()))
        .collect();
    assert_eq!(
        named.keys().cloned().collect::<BTreeSet<_>>(),
        wanted,
        "{fleet:#}"
    );
    for name in attrs {
        let s = named[name].to_string();
        assert!(
            s.contains("attributes.line") && s.contains("Moved-Outside"),
            "{s}"
        );
        assert!(s.contains("\"drift\""), "{s}");
    }
    for name in certs {
        let s = named[name].to_string();
        assert!(s.contains("\"status\"") && s.contains("INACTIVE"), "{s}");
    }
    for name in shadows {
        let s = named[name].to_string();
        assert!(
            s.contains("desired.temperature_threshold") && s.contains("99"),
            "{s}"
        );
    }
    let text = w.run(&["plan", "--fleet", "devices.csv"]);
    assert!(
        text.stdout().contains(
            "20 of 2000 devices differ: 7 attributes, 7 certificates INACTIVE, 6 shadows"
        ),
        "{}",
        text.stdout()
    );

    // up writes for exactly those devices, and what plan said is what it repairs.
    let before = emu.requests().len();
    let up = w.ok(&["up", "--fleet", "devices.csv"]);
    let reqs = requests_since(&emu, before);
    let writes: Vec<(String, String)> = reqs
        .iter()
        .filter(|(op, _)| !is_read(op))
        .cloned()
        .collect();
    let mut cert_ids: BTreeMap<String, String> = BTreeMap::new();
    for n in certs {
        cert_ids.insert(
            format!("certificate {}", certificate_of(&c, n).await),
            n.clone(),
        );
    }
    let written: BTreeSet<String> = writes
        .iter()
        .map(|(_, p)| {
            let t = target(p);
            cert_ids.get(&t).cloned().unwrap_or(t)
        })
        .collect();
    assert_eq!(written, wanted, "{writes:?}\n{}", up.all());
    assert_eq!(count(&writes, "UpdateThing"), 7, "{writes:?}");
    assert_eq!(count(&writes, "UpdateCertificate"), 7, "{writes:?}");
    assert_eq!(count(&writes, "UpdateThingShadow"), 6, "{writes:?}");
    assert_eq!(writes.len(), 20, "{writes:?}");

    // Repaired, as seen from outside, and a second plan has nothing to do.
    for name in attrs {
        let t = c
            .iot
            .describe_thing()
            .thing_name(name)
            .send()
            .await
            .unwrap();
        let i: usize = name["sensor-".len()..].parse().unwrap();
        assert_eq!(t.attributes().unwrap()["line"], format!("L{}", i % 3));
    }
    for name in certs {
        let d = c
            .iot
            .describe_certificate()
            .certificate_id(certificate_of(&c, name).await)
            .send()
            .await
            .unwrap();
        assert_eq!(
            d.certificate_description()
                .unwrap()
                .status()
                .unwrap()
                .as_str(),
            "ACTIVE"
        );
    }
    for name in shadows {
        let s = c
            .data
            .get_thing_shadow()
            .thing_name(name)
            .send()
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(s.payload().unwrap().as_ref()).unwrap();
        assert_eq!(doc["state"]["desired"]["temperature_threshold"], 75);
    }
    let again = w.run(&["plan", "--fleet", "devices.csv", "--detailed-exitcode"]);
    assert_eq!(again.code(), 0, "{}", again.all());
}

/// mosquitto's client options to connect as `thing` with its own key and certificate.
fn as_device(gw: &Gateway, w: &Workdir, thing: &str) -> Vec<String> {
    let keys = w.path().join(".iotreg");
    let file = |s: &str| keys.join(format!("{thing}-{s}")).display().to_string();
    vec![
        "--cafile".into(),
        gw.ca_file.display().to_string(),
        "--cert".into(),
        file("certificate.pem.crt"),
        "--key".into(),
        file("private.pem.key"),
        "-h".into(),
        gw.endpoint.clone(),
        "-p".into(),
        gw.mqtt.to_string(),
        "-i".into(),
        thing.into(),
    ]
}

/// One reading from `thing` with mosquitto_pub: it connects, publishes and disconnects.
fn mosquitto_pub(gw: &Gateway, w: &Workdir, thing: &str) {
    let out = std::process::Command::new("mosquitto_pub")
        .args(as_device(gw, w, thing))
        .args(["-t", &format!("sensor/temperature/{thing}"), "-q", "1"])
        .args(["-m", r#"{"temperature": 21.5}"#])
        .output()
        .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/clients.sh installs it)");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `thing` connected with mosquitto_sub, once it has subscribed; kill it to disconnect.
fn mosquitto_sub(gw: &Gateway, w: &Workdir, thing: &str) -> std::process::Child {
    use std::io::BufRead;
    // stdbuf: mosquitto_sub's stdout is a pipe here, which C's stdio would buffer in blocks.
    let mut child = std::process::Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(as_device(gw, w, thing))
        .args([
            "-t",
            &format!("$aws/things/{thing}/shadow/update/delta"),
            "-d",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("Subscribed") => break,
            Some(Ok(_)) => {}
            other => panic!("mosquitto_sub never subscribed: {other:?}"),
        }
    }
    // Keep reading so the pipe never fills.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_counts_connectivity_from_the_index_and_names_drift() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), config("sample = 5\n")).unwrap();
    let mut text = String::from("thing_name,serial\n");
    for i in 0..30 {
        text.push_str(&format!("sensor-{i:04},SN-{i:04}\n"));
    }
    std::fs::write(w.path().join("devices.csv"), text).unwrap();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let c = emu.clients().await;
    // Fleet Indexing is on, with shadows and connectivity, as the config asks.
    let conf = c.iot.get_indexing_configuration().send().await.unwrap();
    let t = conf.thing_indexing_configuration().unwrap();
    assert_eq!(t.thing_indexing_mode().as_str(), "REGISTRY_AND_SHADOW");
    assert_eq!(
        t.thing_connectivity_indexing_mode().unwrap().as_str(),
        "STATUS"
    );
    // Two devices connect (with mosquitto's client, their own certificates) and one of them
    // stays connected; one device's reported state catches up with its desired state.
    let gw = emu.gateway();
    let mut held = mosquitto_sub(&gw, &w, "sensor-0001");
    mosquitto_pub(&gw, &w, "sensor-0002");
    let n = drift::Names {
        thing: "sensor-0003".into(),
        ..drift::Names::new("")
    };
    drift::shadow(
        &c,
        &n,
        serde_json::json!({"state": {"reported": {
            "temperature_threshold": 75, "reporting_interval": 60, "active": true, "alert_enabled": true
        }}}),
    )
    .await;
    let v = w.run(&["verify", "--skip-e2e", "--skip-device", "--output", "json"]);
    held.kill().ok();
    held.wait().ok();
    let checks = v.json()["checks"].clone();
    let find = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {checks:#}"))
    };
    let conn = find("fleet.connectivity");
    assert_eq!(conn["status"], "pass", "{conn}");
    let reason = conn["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "1 of 30 devices connected now, 2 connected in the last 24 h, 28 never connected"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("29 shadows whose reported state lags the desired one"),
        "{reason}"
    );
    let devices = find("fleet.devices");
    assert_eq!(devices["status"], "pass", "{devices}");
    assert!(
        devices["reason"]
            .as_str()
            .unwrap()
            .contains("5 of 30 devices one by one"),
        "{devices}"
    );
    // Drift on a device the sample need not include is found from the pages.
    drift::attribute(
        &c,
        &drift::Names {
            thing: "sensor-0017".into(),
            ..drift::Names::new("")
        },
        "serial",
        "SN-XXXX",
    )
    .await;
    let v = w.run(&["verify", "--skip-e2e", "--skip-device"]);
    assert_eq!(v.code(), 1, "{}", v.all());
    assert!(
        v.stdout().contains("sensor-0017: thing.configuration"),
        "{}",
        v.stdout()
    );
    // down puts the account's indexing back as it found it.
    w.ok(&["down"]);
    let conf = c.iot.get_indexing_configuration().send().await.unwrap();
    assert_eq!(
        conf.thing_indexing_configuration()
            .map_or("OFF", |t| t.thing_indexing_mode().as_str()),
        "OFF"
    );
}
