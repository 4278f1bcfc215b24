//! `up` converges in place: config changes and drift made outside iotreg are applied or
//! repaired without replacing what must survive (the thing, its certificate), the device's
//! reported state is never overwritten, and repeated policy edits never reach AWS's limit of
//! five versions.

use crate::support::*;

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

/// A deployment and what the tests look at: the emulator, the working directory, clients, the
/// thing's name and its identity (thing id, certificate) right after `up`. Keep it whole
/// (`let d = deployed().await;`): a `let Deployed { w, .. } = ...` would drop the emulator there
/// and then.
struct Deployed {
    emu: Emulator,
    w: Workdir,
    c: Clients,
    s: String,
    thing: String,
    before: (String, String),
}

async fn deployed() -> Deployed {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    let s = w.suffix();
    let c = emu.clients().await;
    let thing = format!("temperature-sensor-{s}");
    let before = identity(&c, &thing).await;
    Deployed {
        emu,
        w,
        c,
        s,
        thing,
        before,
    }
}

/// A deployment with five drifts made from outside: an attribute, the policy document, the
/// rule's SQL, the function's memory, and the shadow's desired state (while the device has
/// reported its own state).
async fn drifted() -> Deployed {
    let d = deployed().await;
    let (c, n) = (&d.c, drift::Names::new(&d.s));
    drift::attribute(c, &n, "location", "Somewhere-Else").await;
    drift::policy_document(c, &n, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"}]}"#).await;
    drift::rule_sql(c, &n, "SELECT * FROM 'sensor/#'").await;
    drift::memory(c, &n, 1024).await;
    drift::shadow(c, &n, serde_json::json!({"state": {"reported": {"temperature": 31.5, "firmware_version": "1.0.1"}}})).await;
    drift::shadow(
        c,
        &n,
        serde_json::json!({"state": {"desired": {"temperature_threshold": 90}}}),
    )
    .await;
    d
}

/// plan names each drifted resource, attributes it to a change outside iotreg, exits 3, and
/// writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn drift_from_outside_is_planned_as_drift() {
    let d = drifted().await;
    let (emu, w) = (&d.emu, &d.w);
    let writes = emu.requests().len();
    let plan = w.run(&["plan", "--detailed-exitcode", "--output", "json"]);
    assert_eq!(plan.code(), 3, "{}", plan.all());
    assert_eq!(emu.writes_since(writes), Vec::<String>::new(), "plan wrote");
    let plan = plan.json();
    let planned = |key: &str| {
        plan["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap()
            .clone()
    };
    for (key, field) in [
        ("thing", "attributes.location"),
        ("policy", "document"),
        ("rule", "sql"),
        ("function", "memory_mb"),
        ("shadow", "desired.temperature_threshold"),
    ] {
        let p = planned(key);
        assert_eq!(p["action"], "update", "{key}: {p}");
        assert_eq!(p["changes"].as_array().unwrap().len(), 1, "{key}: {p}");
        assert_eq!(p["changes"][0]["field"], field, "{key}: {p}");
        assert_eq!(p["changes"][0]["origin"], "drift", "{key}: {p}");
    }
    assert_eq!(plan["counts"]["update"], 5, "{plan}");
    assert_eq!(plan["counts"]["no change"], STEPS - 5, "{plan}");
    let f = planned("function");
    assert_eq!(
        (&f["changes"][0]["from"], &f["changes"][0]["to"]),
        (&serde_json::json!(1024), &serde_json::json!(256))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_sees_every_drift_from_outside() {
    let d = drifted().await;
    let w = &d.w;
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
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_from_outside_is_repaired_in_place() {
    let d = drifted().await;
    let (w, c, thing) = (&d.w, &d.c, &d.thing);
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
    assert!(outcome(&up, "function").1.contains("memory_mb: 1024 → 256"));
    w.ok(&["verify", "--skip-e2e"]);
    // The same thing and the same certificate: repaired in place, not replaced.
    assert_eq!(identity(c, thing).await, d.before);
    // The device's reported state survived; the desired state is the configured one again.
    let shadow = c
        .data
        .get_thing_shadow()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    let shadow: serde_json::Value =
        serde_json::from_slice(shadow.payload().unwrap().as_ref()).unwrap();
    assert_eq!(shadow["state"]["reported"]["temperature"], 31.5);
    assert_eq!(shadow["state"]["reported"]["firmware_version"], "1.0.1");
    assert_eq!(shadow["state"]["desired"]["temperature_threshold"], 75);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_drift_is_repaired_a_further_up_has_nothing_to_do() {
    let d = drifted().await;
    let w = &d.w;
    w.ok(&["up"]);
    // A further up has nothing to do, and plan agrees.
    let again = w.ok(&["up", "--output", "json"]).json();
    assert_eq!(again["counts"]["unchanged"], STEPS, "{again}");
    let plan = w.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code(), 0, "{}", plan.all());
}

/// A deployment whose config then changes two things: the thing's location attribute and the
/// function's memory.
async fn reconfigured() -> Deployed {
    let d = deployed().await;
    std::fs::write(
        d.w.path().join("iotreg.toml"),
        "[function]\nmemory_mb = 512\n\n[thing.attributes]\ndeviceType = \"temperature\"\nmanufacturer = \"SensorCorp\"\nmodel = \"TC-2000\"\nlocation = \"Line-3\"\nfirmware = \"1.0.0\"\n",
    )
    .unwrap();
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_change_is_planned_as_a_config_change() {
    let d = reconfigured().await;
    let w = &d.w;
    // plan shows both edits as config changes.
    let plan = w.run(&["plan", "--detailed-exitcode", "--output", "json"]);
    assert_eq!(plan.code(), 3, "{}", plan.all());
    let changes: Vec<(String, String)> = plan.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["changes"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("attributes.location".to_string(), "config".to_string()),
            ("memory_mb".to_string(), "config".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn up_dry_run_shows_a_config_change_and_applies_nothing() {
    let d = reconfigured().await;
    let (emu, w) = (&d.emu, &d.w);
    let writes = emu.requests().len();
    let dry = w.ok(&["up", "--dry-run"]);
    assert!(
        dry.stdout()
            .contains("memory_mb: 256 → 512   [config change]"),
        "{}",
        dry.all()
    );
    assert!(dry.stdout().contains("nothing applied (--dry-run)"));
    assert_eq!(
        emu.writes_since(writes),
        Vec::<String>::new(),
        "--dry-run wrote"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_change_is_applied_by_up_in_place() {
    let d = reconfigured().await;
    let (w, c, s, thing) = (&d.w, &d.c, &d.s, &d.thing);
    let up = w.ok(&["up", "--output", "json"]).json();
    assert_eq!(outcome(&up, "thing").0, "updated");
    assert!(outcome(&up, "thing")
        .1
        .contains("\"ProductionFloor-A\" → \"Line-3\""));
    assert_eq!(outcome(&up, "function").0, "updated");
    let t = c
        .iot
        .describe_thing()
        .thing_name(thing)
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
        identity(c, thing).await,
        d.before,
        "same thing, same certificate"
    );
    w.ok(&["verify", "--skip-e2e"]);
    assert_eq!(w.run(&["plan", "--detailed-exitcode"]).code(), 0);
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
        drift::policy_document(&c, &drift::Names::new(&w.suffix()), &doc).await;
        let plan = w.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(plan.code(), 3, "edit {edit}: {}", plan.all());
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
        assert_eq!(
            w.run(&["plan", "--detailed-exitcode"]).code(),
            0,
            "edit {edit}"
        );
    }
}
