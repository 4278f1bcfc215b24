//! The device's side end to end on the local AWS and its device gateway: a bundle written by
//! iotreg used unchanged by clients other people wrote (mosquitto's, paho-mqtt); `device
//! simulate` for one device and a fleet; `verify` as the device, and each sabotage it must
//! name; bad input refused in one line within the connect timeout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::drift;
use crate::support::*;

/// No client-side rate limits: the local AWS has no quotas.
const NO_LIMITS: &str = "[aws.rate_limits]\n\"*\" = 0\n";

/// Whether `needle` shows up in the function's log within `wait` (polled).
async fn logged(c: &Clients, suffix: &str, needle: &str, wait: Duration) -> bool {
    let group = format!("/aws/lambda/iot-data-processor-{suffix}");
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(out) = c
            .logs
            .filter_log_events()
            .log_group_name(&group)
            .filter_pattern(format!("\"{needle}\""))
            .send()
            .await
        {
            if out
                .events()
                .iter()
                .any(|e| e.message().is_some_and(|m| m.contains(needle)))
            {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The lines of the bundle's README.txt that are mosquitto_pub commands.
fn readme_commands(bundle: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(bundle.join("README.txt"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("mosquitto_pub "))
        .map(str::to_string)
        .collect()
}

fn connection(bundle: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(bundle.join("connection.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_works_unchanged_with_mosquitto_and_paho() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let thing = format!("temperature-sensor-{s}");
    w.ok(&["device", "bundle", "--out", "bundle"]);
    let bundle = w.path().join("bundle");
    let conn = connection(&bundle);
    assert_eq!(conn["client_id"], thing.as_str());
    assert_eq!(conn["endpoint"], "localhost");

    // 1. The README's own commands, run as written from the bundle directory: port 8883's and
    //    the ALPN one on 443's. Each reading carries its own timestamp; find it in the log.
    let commands = readme_commands(&bundle);
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands[1].contains("--tls-alpn x-amzn-mqtt-ca"));
    for (i, command) in commands.iter().enumerate() {
        // The same reading twice would be indistinguishable: give each its own timestamp.
        let mark = format!("2031-01-0{}T00:00:00.000Z", i + 1);
        let at = command.find("\"timestamp\":\"").unwrap() + "\"timestamp\":\"".len();
        let end = at + command[at..].find('"').unwrap();
        let command = format!("{}{mark}{}", &command[..at], &command[end..]);
        let out = Command::new("sh")
            .args(["-c", &command])
            .current_dir(&bundle)
            .output()
            .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/clients.sh installs it)");
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            logged(&c, &s, &mark, Duration::from_secs(20)).await,
            "the reading published by `{command}` did not reach the function's log"
        );
    }

    // 2. mosquitto_sub hears the shadow's delta when the service changes the desired state.
    let port = conn["ports"]["mqtt"].as_u64().unwrap().to_string();
    let delta = format!("$aws/things/{thing}/shadow/update/delta");
    // stdbuf: mosquitto_sub's stdout is a pipe here, which C's stdio would buffer in blocks.
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(["--cafile", "ca.pem", "--cert", "certificate.pem.crt"])
        .args(["--key", "private.pem.key", "-h", "localhost", "-p", &port])
        .args([
            "-i", &thing, "-t", &delta, "-q", "1", "-C", "1", "-W", "20", "-d",
        ])
        .current_dir(&bundle)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its output, line by line, read on a thread: the desired change is made once the
    // gateway has answered the subscription (mosquitto_sub -d prints "Subscribed").
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = sub.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut heard = Vec::new();
    while !heard.iter().any(|l: &String| l.starts_with("Subscribed")) {
        match lines_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => heard.push(line),
            Err(e) => panic!("mosquitto_sub never subscribed ({e}): {heard:?}"),
        }
    }
    c.data
        .update_thing_shadow()
        .thing_name(&thing)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(
            r#"{"state": {"desired": {"colour": "amber"}}}"#,
        ))
        .send()
        .await
        .unwrap();
    let out = sub.wait_with_output().unwrap();
    reader.join().unwrap();
    heard.extend(lines_rx.try_iter());
    assert!(
        out.status.success()
            && heard
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|d| d["state"]["colour"] == "amber"),
        "mosquitto_sub: {heard:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 3. paho-mqtt, given only the bundle directory.
    let out = Command::new(python())
        .arg(repo().join("tests/it/support/paho_device.py"))
        .arg(&bundle)
        .arg(format!("paho-{s}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "paho: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logged(&c, &s, &format!("paho-{s}"), Duration::from_secs(20)).await);

    // 4. The bundle's private key is the device's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(bundle.join("private.pem.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// The names of the failed checks, and the reasons of those named `name`.
fn failed(r: &Run) -> Vec<(String, String)> {
    r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn reason_of<'a>(failures: &'a [(String, String)], name: &str) -> &'a str {
    failures
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("{name} did not fail: {failures:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_as_the_device_names_each_sabotage_and_up_repairs_it() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    // Every protocol the gateway speaks.
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[device]\nprotocols = [\"mqtt\", \"mqtt-443\", \"https\", \"wss\"]\n",
    )
    .unwrap();
    w.ok(&["up"]);
    let s = w.suffix();
    let thing = format!("temperature-sensor-{s}");
    let policy = format!("device-policy-{s}");

    let r = w.ok(&["verify", "--output", "json"]);
    let checks = r.json()["checks"].as_array().unwrap().clone();
    let passed = |name: &str| {
        checks
            .iter()
            .filter(|c| c["name"] == name && c["status"] == "pass")
            .count()
    };
    assert_eq!(passed("policy.authorization"), 1);
    assert_eq!(
        passed("device.connect"),
        3,
        "mqtt, mqtt-443, wss: {checks:#?}"
    );
    assert_eq!(passed("device.publish"), 4, "and https: {checks:#?}");
    for name in ["device.e2e", "device.shadow", "device.least_privilege"] {
        assert_eq!(passed(name), 1, "{name}: {checks:#?}");
    }
    // The shadow key verify used is gone again, and the shadow is as configured.
    w.ok(&["verify", "--skip-e2e"]);

    let cert_arn = c
        .iot
        .list_thing_principals()
        .thing_name(&thing)
        .send()
        .await
        .unwrap()
        .principals()[0]
        .clone();
    let cert_id = cert_arn.rsplit('/').next().unwrap().to_string();
    // verify exits 1 and each named check fails with a reason containing its fragment; then
    // `up` repairs it and verify passes again.
    let caught_and_repaired = |what: &str, expected: &[(&str, &str)]| {
        let verify = || w.run(&["verify", "--skip-e2e", "--output", "json"]);
        let r = verify();
        assert_eq!(r.code(), 1, "{what}: {}", r.all());
        let f = failed(&r);
        for (name, fragment) in expected {
            let reason = reason_of(&f, name);
            assert!(
                reason.contains(fragment),
                "{what}: {name}: {reason:?} lacks {fragment:?}"
            );
        }
        w.ok(&["up"]);
        let r = verify();
        assert_eq!(r.code(), 0, "after up ({what}): {:?}", failed(&r));
    };

    // 1. The policy detached: the device is refused at CONNECT.
    c.iot
        .detach_policy()
        .policy_name(&policy)
        .target(&cert_arn)
        .send()
        .await
        .unwrap();
    caught_and_repaired(
        "policy detached",
        &[
            ("policy.attached_to_certificate", "not attached"),
            ("device.connect", "CONNACK 5"),
            ("policy.authorization", "IMPLICIT_DENY"),
        ],
    );

    // 2. The certificate deactivated: the TLS handshake is refused.
    c.iot
        .update_certificate()
        .certificate_id(&cert_id)
        .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
        .send()
        .await
        .unwrap();
    caught_and_repaired(
        "certificate deactivated",
        &[
            ("certificate.active", "INACTIVE"),
            ("device.connect", "TLS handshake"),
        ],
    );

    // 3. The policy edited to drop Publish: the gateway closes the connection on the publish.
    let doc: serde_json::Value = serde_json::from_str(
        c.iot
            .get_policy()
            .policy_name(&policy)
            .send()
            .await
            .unwrap()
            .policy_document()
            .unwrap(),
    )
    .unwrap();
    let mut edited = doc.clone();
    edited["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Action"] != serde_json::json!(["iot:Publish"]));
    drift::policy_document(&c, &drift::Names::new(&s), &edited.to_string()).await;
    caught_and_repaired(
        "Publish dropped from the policy",
        &[
            ("policy.document", "differs"),
            ("device.publish", "closed the connection after a publish"),
            ("policy.authorization", "iot:Publish"),
        ],
    );

    // 4. The certificate attached to another thing instead: CONNECT as the thing is refused.
    c.iot
        .create_thing()
        .thing_name("intruder")
        .send()
        .await
        .unwrap();
    c.iot
        .detach_thing_principal()
        .thing_name(&thing)
        .principal(&cert_arn)
        .send()
        .await
        .unwrap();
    c.iot
        .attach_thing_principal()
        .thing_name("intruder")
        .principal(&cert_arn)
        .send()
        .await
        .unwrap();
    caught_and_repaired(
        "certificate moved to another thing",
        &[
            ("certificate.attached_to_thing", "not attached"),
            ("device.connect", "CONNACK 5"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_recipes_policy_is_reported_and_its_shadow_over_mqtt_is_skipped_with_the_reason() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[policy]\npreset = \"recipe\"\n",
    )
    .unwrap();
    w.ok(&["up"]);
    let r = w.ok(&["verify", "--skip-e2e", "--output", "json"]);
    let checks = r.json()["checks"].as_array().unwrap().clone();
    let find = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap().clone();
    assert!(find("policy.document")["reason"]
        .as_str()
        .unwrap()
        .contains("the built-in recipe policy"));
    assert_eq!(find("device.publish")["status"], "pass");
    let shadow = find("device.shadow");
    assert_eq!(shadow["status"], "skip");
    assert!(shadow["reason"]
        .as_str()
        .unwrap()
        .contains("does not let the device use its shadow over MQTT"));
    // And --skip-device leaves every device check out, saying so.
    let r = w.ok(&["verify", "--skip-e2e", "--skip-device", "--output", "json"]);
    let names: Vec<String> = r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("device.")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn simulate_one_device_and_a_fleet_of_fifty() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), NO_LIMITS).unwrap();
    let mut manifest = String::from("thing_name,serial\n");
    for i in 0..50 {
        manifest.push_str(&format!("sim-{i:02},SN-{i:02}\n"));
    }
    std::fs::write(w.path().join("devices.csv"), manifest).unwrap();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let s = w.suffix();

    // One device, named (a fleet has no single device to default to), three readings.
    let r = w.ok(&[
        "device",
        "simulate",
        "sim-00",
        "--count",
        "3",
        "--interval",
        "0.1",
        "--output",
        "json",
    ]);
    let j = r.json();
    assert_eq!(j["devices"], 1);
    assert_eq!(j["publishes"], 3);
    assert_eq!(j["pubacks"], 3);
    assert_eq!(j["shadow_updates"], 1);

    // Every fleet device at once, bounded: one connect, two readings, one shadow update each.
    let r = w.ok(&[
        "device",
        "simulate",
        "--fleet",
        "--count",
        "2",
        "--interval",
        "0.1",
        "--output",
        "json",
    ]);
    let j = r.json();
    assert_eq!(j["devices"], 50, "{j}");
    assert_eq!(j["connects_ok"], 50, "{j}");
    assert_eq!(j["publishes"], 100);
    assert_eq!(j["pubacks"], 100);
    assert_eq!(j["shadow_updates"], 50);
    assert!(j["latency_p99_ms"].as_f64().unwrap() >= j["latency_p50_ms"].as_f64().unwrap());
    // A fleet device's reading went through the rules engine to the function.
    assert!(logged(&c, &s, "sim-49", Duration::from_secs(20)).await);
    // The shadow of a fleet device holds what it reported.
    let shadow = c
        .data
        .get_thing_shadow()
        .thing_name("sim-07")
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(shadow.payload().unwrap().as_ref()).unwrap();
    assert!(doc["state"]["reported"].is_object(), "{doc}");

    // verify checks a sample of fleet devices as devices too.
    let r = w.ok(&["verify", "--skip-e2e", "--sample", "2", "--output", "json"]);
    let connects = r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "device.connect" && c["status"] == "pass")
        .count();
    assert_eq!(connects, 2, "two fleet devices");
}

#[test]
fn bad_device_input_is_one_line_within_the_timeout() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[device]\nconnect_timeout_s = 3\n",
    )
    .unwrap();
    w.ok(&["up"]);
    let s = w.suffix();
    let one_line = |r: &Run, code: i32, needle: &str| {
        assert_eq!(r.code(), code, "{}", r.all());
        let err = r.stderr();
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(needle), "{needle:?} not in {err}");
    };

    // An unknown thing: bad input.
    let r = w.run(&["device", "publish", "no-such-thing"]);
    one_line(&r, 2, "unknown thing");

    // A CA that is not the gateway's: the TLS handshake is refused, naming the CA.
    let other_ca = w.path().join("other-ca.pem");
    // A real CA, just not the gateway's: Amazon Root CA 1, as iotreg embeds it.
    std::fs::write(
        &other_ca,
        include_str!("../../src/device/AmazonRootCA1.pem"),
    )
    .unwrap();
    let r = w
        .command(&["device", "publish"])
        .env("IOTREG_DEVICE_CA_FILE", &other_ca)
        .output()
        .unwrap();
    one_line(&Run(r), 1, "not signed by the configured CA");

    // An unreachable endpoint: refused at once, never a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let started = Instant::now();
    let r = w
        .command(&["device", "publish"])
        .env("IOTREG_DEVICE_MQTT_PORT", &port)
        .output()
        .unwrap();
    one_line(&Run(r), 1, "cannot reach");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The private key missing: bad input naming the file.
    let key = w
        .path()
        .join(format!(".iotreg/temperature-sensor-{s}-private.pem.key"));
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let r = w.run(&["device", "publish"]);
    one_line(&r, 2, "private.pem.key");
    let r = w.run(&["device", "bundle", "--out", "b"]);
    one_line(&r, 2, "private.pem.key");
    std::fs::write(&key, saved).unwrap();

    // A CA file that is not there: bad input naming the variable.
    let r = w
        .command(&["device", "publish"])
        .env("IOTREG_DEVICE_CA_FILE", w.path().join("missing.pem"))
        .output()
        .unwrap();
    one_line(&Run(r), 2, "missing.pem");
}
