//! `up` converges in place: config changes and drift made outside iotreg are applied or
//! repaired without replacing what must survive (the thing, its certificate), the device's
//! reported state is never overwritten, and repeated policy edits never reach AWS's limit of
//! five versions.

mod common;

use common::*;

fn outcome(up: &serde_json::Value, key: &str) -> (String, String) {
    let r = up["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap();
    (
        r["outcome"].as_str().unwrap().to_string(),
        r["detail"].as_str().unwrap_or("").to_string(),
    )
}

async fn identity(c: &Clients, thing: &str) -> (String, String) {
    let t = c
        .iot
        .describe_thing()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    let p = c
        .iot
        .list_thing_principals()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    (t.thing_id().unwrap().to_string(), p.principals()[0].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_from_outside_is_repaired_in_place() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let c = emu.clients().await;
    let thing = format!("temperature-sensor-{s}");
    let function = format!("iot-data-processor-{s}");
    let rule = format!("sensor_data_rule_{s}");
    let before = identity(&c, &thing).await;

    // Five drifts: an attribute, the policy document, the rule's SQL, the function's memory,
    // and the shadow's desired state (while the device has reported its own state).
    c.iot
        .update_thing()
        .thing_name(&thing)
        .attribute_payload(
            aws_sdk_iot::types::AttributePayload::builder()
                .attributes("location", "Somewhere-Else")
                .merge(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.iot
        .create_policy_version()
        .policy_name(format!("device-policy-{s}"))
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"}]}"#)
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    let rule_now = c
        .iot
        .get_topic_rule()
        .rule_name(&rule)
        .send()
        .await
        .unwrap();
    let action = rule_now.rule().unwrap().actions()[0].clone();
    c.iot
        .replace_topic_rule()
        .rule_name(&rule)
        .topic_rule_payload(
            aws_sdk_iot::types::TopicRulePayload::builder()
                .sql("SELECT * FROM 'sensor/#'")
                .actions(action)
                .rule_disabled(false)
                .aws_iot_sql_version("2016-03-23")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.lambda
        .update_function_configuration()
        .function_name(&function)
        .memory_size(1024)
        .send()
        .await
        .unwrap();
    let shadow_update = |doc: serde_json::Value| {
        let data = c.data.clone();
        let thing = thing.clone();
        async move {
            data.update_thing_shadow()
                .thing_name(thing)
                .payload(aws_sdk_iotdataplane::primitives::Blob::new(doc.to_string()))
                .send()
                .await
                .unwrap();
        }
    };
    shadow_update(serde_json::json!({"state": {"reported": {"temperature": 31.5, "firmware_version": "1.0.1"}}})).await;
    shadow_update(serde_json::json!({"state": {"desired": {"temperature_threshold": 90}}})).await;

    // verify sees every drift; up repairs all of them.
    let v = w.run(&["verify", "--skip-e2e", "--output", "json"]);
    assert_eq!(v.code(), 1);
    let failing: Vec<String> = v.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for check in [
        "thing.configuration",
        "policy.document",
        "rule.configuration",
        "function.configuration",
        "shadow.desired",
    ] {
        assert!(
            failing.contains(&check.to_string()),
            "{check} in {failing:?}"
        );
    }
    let up = w.ok(&["up", "--output", "json"]).json();
    for key in ["thing", "policy", "rule", "function", "shadow"] {
        assert_eq!(
            outcome(&up, key).0,
            "updated",
            "{key}: {:?}",
            outcome(&up, key)
        );
    }
    assert!(outcome(&up, "thing")
        .1
        .contains("location: \"Somewhere-Else\" → \"ProductionFloor-A\""));
    assert!(outcome(&up, "function").1.contains("memory: 1024 → 256"));
    w.ok(&["verify", "--skip-e2e"]);
    // The same thing and the same certificate: repaired in place, not replaced.
    assert_eq!(identity(&c, &thing).await, before);
    // The device's reported state survived; the desired state is the configured one again.
    let shadow = c
        .data
        .get_thing_shadow()
        .thing_name(&thing)
        .send()
        .await
        .unwrap();
    let shadow: serde_json::Value =
        serde_json::from_slice(shadow.payload().unwrap().as_ref()).unwrap();
    assert_eq!(shadow["state"]["reported"]["temperature"], 31.5);
    assert_eq!(shadow["state"]["reported"]["firmware_version"], "1.0.1");
    assert_eq!(shadow["state"]["desired"]["temperature_threshold"], 75);
    // And a further up has nothing to do.
    let again = w.ok(&["up", "--output", "json"]).json();
    assert_eq!(again["counts"]["unchanged"], 11, "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_change_is_applied_by_up_in_place() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let c = emu.clients().await;
    let thing = format!("temperature-sensor-{s}");
    let before = identity(&c, &thing).await;
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[function]\nmemory_mb = 512\n\n[thing.attributes]\ndeviceType = \"temperature\"\nmanufacturer = \"SensorCorp\"\nmodel = \"TC-2000\"\nlocation = \"Line-3\"\nfirmware = \"1.0.0\"\n",
    )
    .unwrap();
    let up = w.ok(&["up", "--output", "json"]).json();
    assert_eq!(outcome(&up, "thing").0, "updated");
    assert!(outcome(&up, "thing")
        .1
        .contains("\"ProductionFloor-A\" → \"Line-3\""));
    assert_eq!(outcome(&up, "function").0, "updated");
    let t = c
        .iot
        .describe_thing()
        .thing_name(&thing)
        .send()
        .await
        .unwrap();
    assert_eq!(t.attributes().unwrap()["location"], "Line-3");
    let f = c
        .lambda
        .get_function()
        .function_name(format!("iot-data-processor-{s}"))
        .send()
        .await
        .unwrap();
    assert_eq!(f.configuration().unwrap().memory_size(), Some(512));
    assert_eq!(
        identity(&c, &thing).await,
        before,
        "same thing, same certificate"
    );
    w.ok(&["verify", "--skip-e2e"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_survives_six_edits_without_reaching_the_version_limit() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let c = emu.clients().await;
    let policy = format!("device-policy-{}", w.suffix());
    for edit in 1..=6 {
        let doc = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/edit-{edit}"}}]}}"#
        );
        // An outside editor must always find room for a new version.
        c.iot
            .create_policy_version()
            .policy_name(&policy)
            .policy_document(doc)
            .set_as_default(true)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "edit {edit}: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                )
            });
        let up = w.ok(&["up", "--output", "json"]).json();
        assert_eq!(outcome(&up, "policy").0, "updated", "edit {edit}");
        let versions = c
            .iot
            .list_policy_versions()
            .policy_name(&policy)
            .send()
            .await
            .unwrap();
        assert!(
            versions.policy_versions().len() <= 2,
            "edit {edit}: {:?}",
            versions.policy_versions()
        );
        w.ok(&["verify", "--skip-e2e"]);
    }
}
