//! `iotreg verify` end to end on the local AWS, whose data path runs the deployed handler.

use std::time::{Duration, Instant};

use crate::support::*;

fn junit_cases(xml: &str) -> Vec<(String, &'static str)> {
    xml.split("<testcase ")
        .skip(1)
        .map(|case| {
            let name = case
                .split(" name=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_string();
            let status = if case.contains("<failure") {
                "fail"
            } else if case.contains("<skipped") {
                "skip"
            } else {
                "pass"
            };
            (name, status)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_after_up_and_writes_junit() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let r = w.ok(&["verify", "--junit", "r.xml", "--output", "json"]);
    let report = r.json();
    assert_eq!(report["ok"], true, "{}", r.all());
    let xml = std::fs::read_to_string(w.path().join("r.xml")).unwrap();
    let cases = junit_cases(&xml);
    let passing = cases.iter().filter(|(_, s)| *s == "pass").count();
    assert!(passing >= 9, "{cases:?}");
    assert!(cases.iter().all(|(_, s)| *s == "pass"), "{cases:?}");
    assert!(cases.contains(&("e2e.data_path".into(), "pass")));
    // The reading was found by its marker, with the level the handler logged.
    let e2e = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "e2e.data_path")
        .unwrap();
    let reason = e2e["reason"].as_str().unwrap();
    assert!(reason.contains("iotreg-verify-"), "{reason}");
    assert!(reason.contains("alert level HIGH"), "{reason}");
    // And it is really in the function's log, from the outside.
    let marker = reason
        .split_whitespace()
        .find(|w| w.contains("iotreg-verify-"))
        .unwrap()
        .trim_matches(|c| c == '(' || c == ')');
    let c = emu.clients().await;
    let events = log_messages(&c, &w.suffix()).await;
    assert!(events.iter().any(|m| m.contains(marker)));
}

async fn log_messages(c: &Clients, suffix: &str) -> Vec<String> {
    let out = c
        .logs
        .filter_log_events()
        .log_group_name(format!("/aws/lambda/iot-data-processor-{suffix}"))
        .send()
        .await;
    match out {
        Ok(o) => o
            .events()
            .iter()
            .filter_map(|e| e.message().map(str::to_string))
            .collect(),
        Err(_) => vec![],
    }
}

/// The lines of the invocation that logged `marker` (START .. END), polling up to `wait`.
async fn invocation_of(c: &Clients, suffix: &str, marker: &str, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let events = log_messages(c, suffix).await;
        if let Some(i) = events.iter().position(|m| m.contains(marker)) {
            let start = events[..=i]
                .iter()
                .rposition(|m| m.starts_with("START RequestId:"))
                .unwrap();
            // The invocation's lines arrive as it runs: wait for its END.
            if let Some(end) = events[i..]
                .iter()
                .position(|m| m.starts_with("END RequestId:"))
            {
                return events[start..=i + end].to_vec();
            }
        }
        if Instant::now() >= deadline {
            return vec![];
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn publish(c: &Clients, topic: &str, temperature: f64, marker: &str) {
    let payload = serde_json::json!({"temperature": temperature, "marker": marker});
    c.data
        .publish()
        .topic(topic)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(
            payload.to_string(),
        ))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_from_anyone_are_classified_and_other_topics_ignored() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let c = emu.clients().await;
    let device = format!("temperature-sensor-{s}");
    let topic = format!("sensor/temperature/{device}");
    for (temperature, message) in [
        (65.0, "Moderate temperature warning: 65.0°C from"),
        (20.0, "Normal temperature reading: 20.0°C from"),
        (91.0, "High temperature alert: 91.0°C from"),
    ] {
        let marker = format!("m-{temperature}");
        publish(&c, &topic, temperature, &marker).await;
        let block = invocation_of(&c, &s, &marker, Duration::from_secs(15)).await;
        assert!(!block.is_empty(), "{temperature} °C never reached the log");
        assert!(
            block
                .iter()
                .any(|l| l.contains(message) && l.contains(&device)),
            "{temperature} °C: {block:?}"
        );
    }
    // A topic the rule does not select: nothing arrives.
    publish(&c, &format!("sensor/humidity/{device}"), 99.0, "m-other").await;
    publish(&c, "sensor/temperature/a/b", 99.0, "m-deep").await;
    // A selected marker published after them bounds the wait: once it shows, the others would have.
    publish(&c, &topic, 21.0, "m-fence").await;
    assert!(!invocation_of(&c, &s, "m-fence", Duration::from_secs(15))
        .await
        .is_empty());
    let events = log_messages(&c, &s).await;
    assert!(!events
        .iter()
        .any(|m| m.contains("m-other") || m.contains("m-deep")));
}

fn failing(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                format!("{} {}", c["resource"], c["reason"]),
            )
        })
        .collect()
}

/// After `up`, one sabotage (`what`): verify fails naming the check and the resource, in its JSON
/// and in the JUnit report; then `up` repairs it and verify passes again.
async fn verify_names_the_sabotage_and_up_repairs_it(what: &str) {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let c = emu.clients().await;
    let rule = format!("sensor_data_rule_{s}");
    let function = format!("iot-data-processor-{s}");
    let policy = format!("device-policy-{s}");
    let cert = c
        .iot
        .list_certificates()
        .send()
        .await
        .unwrap()
        .certificates()[0]
        .clone();
    let (cert_id, cert_arn) = (
        cert.certificate_id().unwrap().to_string(),
        cert.certificate_arn().unwrap().to_string(),
    );
    type Sabotage = (&'static str, &'static str, String);
    let sabotages: [Sabotage; 5] = [
        ("deleted rule", "rule.configuration", rule.clone()),
        ("disabled rule", "rule.configuration", rule.clone()),
        ("removed permission", "permission.scoped", function.clone()),
        (
            "deactivated certificate",
            "certificate.active",
            cert_id.clone(),
        ),
        (
            "detached policy",
            "policy.attached_to_certificate",
            policy.clone(),
        ),
    ];
    let (what, check, names) = sabotages
        .iter()
        .find(|(w, _, _)| *w == what)
        .unwrap_or_else(|| panic!("no sabotage {what:?}"));
    match *what {
        "deleted rule" => {
            c.iot
                .delete_topic_rule()
                .rule_name(&rule)
                .send()
                .await
                .unwrap();
        }
        "disabled rule" => {
            c.iot
                .disable_topic_rule()
                .rule_name(&rule)
                .send()
                .await
                .unwrap();
        }
        "removed permission" => {
            c.lambda
                .remove_permission()
                .function_name(&function)
                .statement_id("iot-lambda-permission")
                .send()
                .await
                .unwrap();
        }
        "deactivated certificate" => {
            c.iot
                .update_certificate()
                .certificate_id(&cert_id)
                .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
                .send()
                .await
                .unwrap();
        }
        "detached policy" => {
            c.iot
                .detach_policy()
                .policy_name(&policy)
                .target(&cert_arn)
                .send()
                .await
                .unwrap();
        }
        _ => unreachable!(),
    }
    let r = w.run(&[
        "verify",
        "--timeout",
        "5",
        "--junit",
        "r.xml",
        "--output",
        "json",
    ]);
    assert_eq!(r.code(), 1, "{what}: {}", r.all());
    let fails = failing(&r.json());
    assert!(
        fails
            .iter()
            .any(|(n, why)| n == check && why.contains(names.as_str())),
        "{what}: expected {check} naming {names}, got {fails:?}"
    );
    let xml = std::fs::read_to_string(w.path().join("r.xml")).unwrap();
    assert!(
        junit_cases(&xml).contains(&(check.to_string(), "fail")),
        "{what}: {xml}"
    );
    // Rule and permission sabotage also break the data path itself.
    if matches!(
        *what,
        "deleted rule" | "disabled rule" | "removed permission"
    ) {
        assert!(
            fails.iter().any(|(n, _)| n == "e2e.data_path"),
            "{what}: {fails:?}"
        );
    }
    w.ok(&["up"]);
    let again = w.run(&["verify", "--output", "json"]);
    assert_eq!(
        again.code(),
        0,
        "after repairing {what}: {:?}",
        failing(&again.json())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_a_deleted_rule_and_up_repairs_it() {
    verify_names_the_sabotage_and_up_repairs_it("deleted rule").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_a_disabled_rule_and_up_repairs_it() {
    verify_names_the_sabotage_and_up_repairs_it("disabled rule").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_a_removed_permission_and_up_repairs_it() {
    verify_names_the_sabotage_and_up_repairs_it("removed permission").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_a_deactivated_certificate_and_up_repairs_it() {
    verify_names_the_sabotage_and_up_repairs_it("deactivated certificate").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_a_detached_policy_and_up_repairs_it() {
    verify_names_the_sabotage_and_up_repairs_it("detached policy").await;
}

#[test]
fn skip_e2e_on_plain_moto_passes_and_says_skipped() {
    let moto = PlainMoto::start();
    let w = moto.workdir();
    // Plain moto signs a fresh key instead of the CSR's, so use AWS-generated keys there; and
    // it does not speak the RPC v2 CBOR protocol of aws-sdk-cloudwatch, so no monitoring.
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[certificate]\nmode = \"aws-generated\"\n[monitoring]\nenabled = false\n",
    )
    .unwrap();
    w.ok(&["up"]);
    // Plain moto has no TestAuthorization (and no device gateway): the device checks fail
    // there, saying so and naming the flag that skips them.
    let r = w.run(&["verify", "--skip-e2e"]);
    assert_eq!(r.code(), 1);
    assert!(
        r.stdout().contains("policy.authorization") && r.stdout().contains("--skip-device"),
        "{}",
        r.all()
    );
    let r = w.ok(&[
        "verify",
        "--skip-e2e",
        "--skip-device",
        "--junit",
        "r.xml",
        "--output",
        "json",
    ]);
    let report = r.json();
    let e2e = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "e2e.data_path")
        .unwrap()
        .clone();
    assert_eq!(e2e["status"], "skip");
    assert_eq!(report["failed"], 0, "{}", r.all());
    let xml = std::fs::read_to_string(w.path().join("r.xml")).unwrap();
    assert!(junit_cases(&xml).contains(&("e2e.data_path".into(), "skip")));
    // Without --skip-e2e the missing data path fails, says why, and suggests the flag.
    let r = w.run(&["verify", "--timeout", "2"]);
    assert_eq!(r.code(), 1);
    assert!(
        r.stdout().contains("no data path") && r.stdout().contains("--skip-e2e"),
        "{}",
        r.all()
    );
    w.ok(&["down"]);
}
