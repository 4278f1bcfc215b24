//! End to end: the real binary against the local AWS, looked at from the outside.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

/// A deployment made by `up --output json`, and what the tests look at. Keep it whole
/// (`let d = deployed().await;`): a `let Deployed { w, .. } = ...` would drop the emulator
/// there and then.
struct Deployed {
    _emu: Emulator,
    w: Workdir,
    c: Clients,
    /// The deployment's suffix.
    s: String,
    /// What `up` printed.
    run: Run,
}

async fn deployed() -> Deployed {
    let emu = Emulator::start();
    let w = emu.workdir();
    let run = w.ok(&["up", "--output", "json"]);
    let s = w.suffix();
    let c = emu.clients().await;
    Deployed {
        _emu: emu,
        w,
        c,
        s,
        run,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_the_recipe_stack_with_its_exact_settings() {
    let d = deployed().await;
    let run = &d.run;
    let summary = run.json();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["counts"]["created"], STEPS, "{}", run.all());
    let s = &d.s;
    assert_eq!(s.len(), 6);
    assert!(s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    let c = &d.c;
    // Exactly the ten resources, nothing more.
    assert_eq!(inventory(c).await, Inventory::one_of_each());
    // The summary names the data endpoint and the files.
    assert!(summary["data_endpoint"]
        .as_str()
        .unwrap()
        .contains("-ats.iot."));
    assert!(summary["files"]["private_key"]
        .as_str()
        .unwrap()
        .ends_with("-private.pem.key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_the_thing_type_and_the_thing_with_their_settings() {
    let d = deployed().await;
    let (c, s) = (&d.c, &d.s);
    // 1. Thing type.
    let tt = c
        .iot
        .describe_thing_type()
        .thing_type_name("TemperatureSensor")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tt.thing_type_properties().unwrap().thing_type_description(),
        Some("Temperature sensor devices for production monitoring")
    );

    // 2. Thing with type and attributes.
    let thing_name = format!("temperature-sensor-{s}");
    let thing = c
        .iot
        .describe_thing()
        .thing_name(&thing_name)
        .send()
        .await
        .unwrap();
    assert_eq!(thing.thing_type_name(), Some("TemperatureSensor"));
    let attrs = thing.attributes().unwrap();
    for (k, v) in [
        ("deviceType", "temperature"),
        ("manufacturer", "SensorCorp"),
        ("model", "TC-2000"),
        ("location", "ProductionFloor-A"),
        ("firmware", "1.0.0"),
    ] {
        assert_eq!(attrs.get(k).map(String::as_str), Some(v), "attribute {k}");
    }
    assert_eq!(attrs.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn up_registers_an_active_certificate_for_the_local_key_and_keeps_the_key_private() {
    let d = deployed().await;
    let (w, c, s, run) = (&d.w, &d.c, &d.s, &d.run);
    let thing_name = format!("temperature-sensor-{s}");
    // 3. Certificate: ACTIVE, and its public key is the local key's.
    let certs = c.iot.list_certificates().send().await.unwrap();
    assert_eq!(certs.certificates().len(), 1);
    let cert_id = certs.certificates()[0].certificate_id().unwrap();
    let desc = c
        .iot
        .describe_certificate()
        .certificate_id(cert_id)
        .send()
        .await
        .unwrap();
    let desc = desc.certificate_description().unwrap();
    assert_eq!(desc.status().unwrap().as_str(), "ACTIVE");
    let key_dir = w.path().join(".iotreg");
    let local_cert =
        std::fs::read_to_string(key_dir.join(format!("{thing_name}-certificate.pem.crt"))).unwrap();
    assert_eq!(
        local_cert.trim(),
        desc.certificate_pem().unwrap().trim(),
        "local certificate file is the registered one"
    );
    let private_path = key_dir.join(format!("{thing_name}-private.pem.key"));
    let private = std::fs::read_to_string(&private_path).unwrap();
    assert!(private.contains("PRIVATE KEY"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&private_path), 0o600, "private key file mode");
    assert_eq!(mode(&key_dir), 0o700, "key directory mode");
    assert_eq!(mode(&key_dir.join("state.json")), 0o600, "state file mode");
    // The certificate was issued for the local key (the CSR path): compare SPKI via openssl-free
    // means: the public key file's body must appear in neither state nor stdout, and the
    // registered certificate must carry the same public key as the local public key file.
    let public =
        std::fs::read_to_string(key_dir.join(format!("{thing_name}-public.pem.key"))).unwrap();
    assert!(public.contains("PUBLIC KEY"));
    assert_eq!(
        spki_of_cert(desc.certificate_pem().unwrap()),
        pem_body(&public),
        "certificate carries the locally generated public key"
    );

    // The state never holds the private key.
    let state_text = std::fs::read_to_string(key_dir.join("state.json")).unwrap();
    assert!(!state_text.contains("PRIVATE KEY"));
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!state_text.contains(line), "private key material in state");
        assert!(!run.stdout().contains(line) && !run.stderr().contains(line));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_the_policy_and_both_attachments() {
    let d = deployed().await;
    let (c, s) = (&d.c, &d.s);
    let thing_name = format!("temperature-sensor-{s}");
    let cert_arn = c
        .iot
        .list_certificates()
        .send()
        .await
        .unwrap()
        .certificates()[0]
        .certificate_arn()
        .unwrap()
        .to_string();
    // 4. Policy with region and account filled in, policy variables literal.
    let policy = c
        .iot
        .get_policy()
        .policy_name(format!("device-policy-{s}"))
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(policy.policy_document().unwrap()).unwrap();
    assert_eq!(
        doc["Statement"][0]["Resource"][0],
        format!("arn:aws:iot:{REGION}:{ACCOUNT}:client/${{iot:Connection.Thing.ThingName}}")
    );
    assert_eq!(doc["Statement"][0]["Action"][0], "iot:Connect");
    assert_eq!(
        doc["Statement"][1]["Resource"][0],
        format!(
            "arn:aws:iot:{REGION}:{ACCOUNT}:topic/sensor/temperature/${{iot:Connection.Thing.ThingName}}"
        )
    );
    // The default policy lets the device keep its shadow over MQTT: its update/get topics,
    // and their replies subscribed to and received.
    let thing_var = "${iot:Connection.Thing.ThingName}";
    assert_eq!(
        doc["Statement"][1]["Resource"][1],
        format!("arn:aws:iot:{REGION}:{ACCOUNT}:topic/$aws/things/{thing_var}/shadow/update")
    );
    assert_eq!(doc["Statement"][2]["Action"][0], "iot:Subscribe");
    assert_eq!(
        doc["Statement"][2]["Resource"][2],
        format!(
            "arn:aws:iot:{REGION}:{ACCOUNT}:topicfilter/$aws/things/{thing_var}/shadow/update/delta"
        )
    );
    assert_eq!(doc["Statement"][3]["Action"][0], "iot:Receive");
    assert_eq!(
        doc["Statement"][4]["Action"],
        serde_json::json!(["iot:GetThingShadow", "iot:UpdateThingShadow"])
    );

    // 5. Attachments: policy → certificate, certificate → thing.
    let attached = c
        .iot
        .list_attached_policies()
        .target(&cert_arn)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = attached
        .policies()
        .iter()
        .map(|p| p.policy_name().unwrap())
        .collect();
    assert_eq!(names, [format!("device-policy-{s}")]);
    let principals = c
        .iot
        .list_thing_principals()
        .thing_name(&thing_name)
        .send()
        .await
        .unwrap();
    assert_eq!(principals.principals(), std::slice::from_ref(&cert_arn));
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_the_role_and_the_function_with_their_settings() {
    let d = deployed().await;
    let (c, s) = (&d.c, &d.s);
    // 6. Role trusted by Lambda with the basic execution policy.
    let role = c
        .iam
        .get_role()
        .role_name(format!("iot-lambda-role-{s}"))
        .send()
        .await
        .unwrap();
    let role = role.role().unwrap();
    let trust = percent_decode(role.assume_role_policy_document().unwrap());
    let trust: serde_json::Value = serde_json::from_str(&trust).unwrap();
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "lambda.amazonaws.com"
    );
    assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
    let attached = c
        .iam
        .list_attached_role_policies()
        .role_name(role.role_name())
        .send()
        .await
        .unwrap();
    let arns: Vec<_> = attached
        .attached_policies()
        .iter()
        .map(|p| p.policy_arn().unwrap())
        .collect();
    assert_eq!(
        arns,
        ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
    );

    // 7. Function.
    let f = c
        .lambda
        .get_function()
        .function_name(format!("iot-data-processor-{s}"))
        .send()
        .await
        .unwrap();
    let cfg = f.configuration().unwrap();
    assert_eq!(cfg.runtime().unwrap().as_str(), "python3.12");
    assert_eq!(cfg.memory_size(), Some(256));
    assert_eq!(cfg.timeout(), Some(60));
    assert_eq!(cfg.handler(), Some("lambda-function.lambda_handler"));
    assert_eq!(cfg.role(), Some(role.arn()));
    assert_eq!(
        cfg.description(),
        Some("Process IoT sensor data from temperature devices")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_the_rule_and_the_invoke_permission_scoped_to_it() {
    let d = deployed().await;
    let (c, s) = (&d.c, &d.s);
    let function_arn = c
        .lambda
        .get_function()
        .function_name(format!("iot-data-processor-{s}"))
        .send()
        .await
        .unwrap()
        .configuration()
        .unwrap()
        .function_arn()
        .unwrap()
        .to_string();
    // 8. Rule.
    let rule_name = format!("sensor_data_rule_{s}");
    let rule = c
        .iot
        .get_topic_rule()
        .rule_name(&rule_name)
        .send()
        .await
        .unwrap();
    let body = rule.rule().unwrap();
    assert_eq!(
        body.sql(),
        Some("SELECT *, topic(3) as device, timestamp() as aws_timestamp FROM 'sensor/temperature/+'")
    );
    assert_eq!(body.aws_iot_sql_version(), Some("2016-03-23"));
    assert_eq!(body.rule_disabled(), Some(false));
    assert_eq!(body.actions().len(), 1);
    assert_eq!(
        body.actions()[0].lambda().unwrap().function_arn(),
        function_arn
    );

    // 9. Invoke permission scoped to the rule.
    let p = c
        .lambda
        .get_policy()
        .function_name(&function_arn)
        .send()
        .await
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(p.policy().unwrap()).unwrap();
    let stmts = p["Statement"].as_array().unwrap();
    assert_eq!(stmts.len(), 1);
    assert_eq!(stmts[0]["Sid"], "iot-lambda-permission");
    assert_eq!(stmts[0]["Principal"]["Service"], "iot.amazonaws.com");
    assert_eq!(
        stmts[0]["Condition"]["ArnLike"]["AWS:SourceArn"],
        format!("arn:aws:iot:{REGION}:{ACCOUNT}:rule/{rule_name}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_the_shadow_with_the_recipe_state() {
    let d = deployed().await;
    let (c, s) = (&d.c, &d.s);
    let thing_name = format!("temperature-sensor-{s}");
    // 10. Shadow with the recipe's desired and reported state.
    let shadow = c
        .data
        .get_thing_shadow()
        .thing_name(&thing_name)
        .send()
        .await
        .unwrap();
    let shadow: serde_json::Value =
        serde_json::from_slice(shadow.payload().unwrap().as_ref()).unwrap();
    assert_eq!(
        shadow["state"]["desired"],
        serde_json::json!({"temperature_threshold": 75, "reporting_interval": 60, "active": true, "alert_enabled": true})
    );
    assert_eq!(shadow["state"]["reported"]["temperature"], 22.5);
    assert_eq!(shadow["state"]["reported"]["battery_level"], 95);
    assert_eq!(shadow["state"]["reported"]["firmware_version"], "1.0.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_up_makes_no_write_call() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let before = emu.requests().len();
    let second = w.ok(&["up", "--output", "json"]);
    let writes = emu.writes_since(before);
    assert!(writes.is_empty(), "second up wrote: {writes:?}");
    assert!(
        emu.requests().len() > before + 10,
        "the second up did read the live resources"
    );
    assert_eq!(
        second.json()["counts"]["unchanged"],
        STEPS,
        "{}",
        second.all()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn down_leaves_nothing_including_the_log_group() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let c = emu.clients().await;
    // Lambda creates this group on first invocation; the recipe's cleanup forgets it.
    c.logs
        .create_log_group()
        .log_group_name(format!("/aws/lambda/iot-data-processor-{s}"))
        .send()
        .await
        .unwrap();
    let down = w.ok(&["down"]);
    assert!(
        down.stdout().contains("state and key files removed"),
        "{}",
        down.all()
    );
    assert_eq!(inventory(&c).await, Inventory::default());
    assert!(
        !w.path().join(".iotreg").exists(),
        "state, lock and key files are gone"
    );
    // A second down has nothing to do and says so.
    let again = w.ok(&["down"]);
    assert!(again.stderr().contains("nothing to do"), "{}", again.all());
    // And status agrees.
    let status = w.ok(&["status", "--output", "json"]);
    assert_eq!(status.json()["deployed"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_each_resource_and_what_is_missing() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let status = w.ok(&["status", "--output", "json"]).json();
    let resources = status["resources"].as_array().unwrap();
    assert_eq!(resources.len(), STEPS);
    assert!(
        resources.iter().all(|r| r["outcome"] == "present"),
        "{status}"
    );
    let c = emu.clients().await;
    c.iot
        .delete_topic_rule()
        .rule_name(format!("sensor_data_rule_{s}"))
        .send()
        .await
        .unwrap();
    let status = w.ok(&["status", "--output", "json"]).json();
    let rule = status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "rule")
        .unwrap();
    assert_eq!(rule["outcome"], "missing");
    let text = w.ok(&["status"]).stdout();
    assert!(text.contains("incomplete"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_repairs_what_was_deleted_or_changed_behind_its_back() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let c = emu.clients().await;
    let thing = format!("temperature-sensor-{s}");
    let rule = format!("sensor_data_rule_{s}");
    let cert = c
        .iot
        .list_certificates()
        .send()
        .await
        .unwrap()
        .certificates()[0]
        .clone();
    let cert_id = cert.certificate_id().unwrap();
    // Sabotage: deactivate the certificate, detach it from the thing, disable the rule,
    // remove the permission, delete the shadow.
    c.iot
        .update_certificate()
        .certificate_id(cert_id)
        .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
        .send()
        .await
        .unwrap();
    c.iot
        .detach_thing_principal()
        .thing_name(&thing)
        .principal(cert.certificate_arn().unwrap())
        .send()
        .await
        .unwrap();
    c.iot
        .disable_topic_rule()
        .rule_name(&rule)
        .send()
        .await
        .unwrap();
    c.lambda
        .remove_permission()
        .function_name(format!("iot-data-processor-{s}"))
        .statement_id("iot-lambda-permission")
        .send()
        .await
        .unwrap();
    c.data
        .delete_thing_shadow()
        .thing_name(&thing)
        .send()
        .await
        .unwrap();
    let up = w.ok(&["up", "--output", "json"]).json();
    let outcome = |key: &str| {
        up["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome("certificate"), "updated");
    assert_eq!(outcome("thing_principal"), "created");
    assert_eq!(outcome("rule"), "updated");
    assert_eq!(outcome("permission"), "created");
    assert_eq!(outcome("shadow"), "created");
    assert_eq!(outcome("thing"), "unchanged");
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
    let desc = c
        .iot
        .describe_certificate()
        .certificate_id(cert_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        desc.certificate_description()
            .unwrap()
            .status()
            .unwrap()
            .as_str(),
        "ACTIVE",
        "the same certificate, re-activated"
    );
    let r = c
        .iot
        .get_topic_rule()
        .rule_name(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.rule().unwrap().rule_disabled(), Some(false));
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// The base64 SubjectPublicKeyInfo of a certificate PEM.
fn spki_of_cert(cert_pem: &str) -> String {
    use base64::Engine;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    base64::engine::general_purpose::STANDARD.encode(cert.public_key().raw)
}
