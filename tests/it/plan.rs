//! `iotreg plan`: snapshots of what it prints for a fresh deployment, a deployment in sync, each
//! kind of drift made outside iotreg and each kind of config change, taken against the local
//! AWS with a pinned suffix so that names are stable. Between snapshots `up` applies the plan,
//! so each snapshot shows one difference. Also: plan writes nothing, and up refuses (writing
//! nothing) a plan it cannot carry out.

use crate::support::*;

const SUFFIX: &str = "snap01";

/// Writes iotreg.toml: the pinned suffix plus `extra`.
fn config(w: &Workdir, extra: &str) {
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!("suffix = \"{SUFFIX}\"\n{extra}"),
    )
    .unwrap();
}

/// Runs `plan --detailed-exitcode`, checks its exit code and that it wrote nothing.
fn plan(emu: &Emulator, w: &Workdir, code: i32) -> String {
    let before = emu.requests().len();
    let r = w.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code(), code, "{}", r.all());
    assert_eq!(emu.writes_since(before), Vec::<String>::new(), "plan wrote");
    r.stdout()
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_each_drift() {
    let emu = Emulator::start();
    let w = emu.workdir();
    config(&w, "");
    insta::assert_snapshot!("fresh_pinned_suffix", plan(&emu, &w, 3));
    w.ok(&["up"]);
    insta::assert_snapshot!("no_change", plan(&emu, &w, 0));
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);

    drift::attribute(&c, &n, "location", "Somewhere-Else").await;
    insta::assert_snapshot!("drift_attribute", plan(&emu, &w, 3));
    w.ok(&["up"]);
    drift::policy_document(&c, &n, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#).await;
    insta::assert_snapshot!("drift_policy_document", plan(&emu, &w, 3));
    w.ok(&["up"]);
    drift::rule_sql(&c, &n, "SELECT * FROM 'sensor/#'").await;
    insta::assert_snapshot!("drift_rule_sql", plan(&emu, &w, 3));
    w.ok(&["up"]);
    drift::memory(&c, &n, 1024).await;
    insta::assert_snapshot!("drift_function_memory", plan(&emu, &w, 3));
    w.ok(&["up"]);
    drift::shadow(
        &c,
        &n,
        serde_json::json!({"state": {"desired": {"temperature_threshold": 90}}}),
    )
    .await;
    insta::assert_snapshot!("drift_shadow_desired", plan(&emu, &w, 3));
    w.ok(&["up"]);
    // A resource deleted outside iotreg is planned as create again.
    c.iot
        .delete_topic_rule()
        .rule_name(&n.rule)
        .send()
        .await
        .unwrap();
    insta::assert_snapshot!("drift_rule_deleted", plan(&emu, &w, 3));
    w.ok(&["up"]);
    assert_eq!(plan(&emu, &w, 0), insta_no_change());

    // A second state that pins the same suffix finds every named resource taken.
    let other = emu.workdir();
    config(&other, "");
    insta::assert_snapshot!("conflict", plan(&emu, &other, 3));
    let before = emu.requests().len();
    let refused = other.run(&["up"]);
    assert_eq!(refused.code(), 1, "{}", refused.all());
    assert!(
        refused.stderr().contains("nothing applied"),
        "{}",
        refused.all()
    );
    assert_eq!(emu.writes_since(before), Vec::<String>::new());
}

/// The in-sync plan, as snapshotted above (read back so both tests compare with one text).
fn insta_no_change() -> String {
    let snap = std::fs::read_to_string(repo().join("tests/it/snapshots/it__plan__no_change.snap"))
        .unwrap();
    // The snapshot file starts with a front matter block closed by "---".
    let body = snap.splitn(3, "---\n").nth(2).unwrap();
    format!("{}\n", body.trim_end())
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_each_config_change() {
    let emu = Emulator::start();
    let w = emu.workdir();
    // Before any up, with no pin: nothing can exist yet under a suffix not chosen.
    insta::assert_snapshot!("fresh", plan(&emu, &w, 3));
    config(&w, "");
    w.ok(&["up"]);
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);

    let attrs = "[thing.attributes]\ndeviceType = \"temperature\"\nmanufacturer = \"SensorCorp\"\nmodel = \"TC-2000\"\nlocation = \"Line-3\"\nfirmware = \"1.1.0\"\n";
    config(&w, attrs);
    insta::assert_snapshot!("config_attributes", plan(&emu, &w, 3));
    w.ok(&["up"]);
    let with_memory = format!("{attrs}[function]\nmemory_mb = 512\n");
    config(&w, &with_memory);
    insta::assert_snapshot!("config_function_memory", plan(&emu, &w, 3));
    w.ok(&["up"]);
    // Config and drift on the same field: memory edited in the config and outside.
    config(&w, &format!("{attrs}[function]\nmemory_mb = 768\n"));
    drift::memory(&c, &n, 1024).await;
    insta::assert_snapshot!("config_and_drift", plan(&emu, &w, 3));
    w.ok(&["up"]);
    config(
        &w,
        &format!(
            "{attrs}[function]\nmemory_mb = 768\n[function.environment]\nSTAGE = \"line-3\"\n"
        ),
    );
    insta::assert_snapshot!("config_function_environment", plan(&emu, &w, 3));
    w.ok(&["up"]);
    let base = format!("{attrs}[function]\nmemory_mb = 768\n");
    config(
        &w,
        &format!("{base}[rule]\nsql = \"SELECT * FROM 'sensor/temperature/#'\"\nenabled = false\n"),
    );
    insta::assert_snapshot!("config_rule", plan(&emu, &w, 3));
    w.ok(&["up"]);
    config(&w, &base);
    w.ok(&["up"]);

    // Shadow initialisation turned off: the recorded shadow is deleted by up.
    config(&w, &format!("{base}[shadow]\nenabled = false\n"));
    insta::assert_snapshot!("config_shadow_off", plan(&emu, &w, 3));
    w.ok(&["up"]);
    assert!(c
        .data
        .get_thing_shadow()
        .thing_name(&n.thing)
        .send()
        .await
        .is_err());
    let no_shadow = plan(&emu, &w, 0);
    assert!(!no_shadow.contains("shadow"), "{no_shadow}");
    config(&w, &base);
    w.ok(&["up"]);

    // A thing type's description cannot change: a replace that up will not do in place.
    config(
        &w,
        &format!("{base}[thing_type]\ndescription = \"Temperature sensors, line 3\"\n"),
    );
    insta::assert_snapshot!("config_thing_type_description", plan(&emu, &w, 3));
    let before = emu.requests().len();
    let refused = w.run(&["up"]);
    assert_eq!(refused.code(), 1, "{}", refused.all());
    assert!(
        refused.stderr().contains("rename thing_type.name"),
        "{}",
        refused.all()
    );
    assert_eq!(emu.writes_since(before), Vec::<String>::new());

    // Renaming the type replaces it: the thing moves to the new type, the old one goes.
    let thing_id = |c: &Clients| {
        let iot = c.iot.clone();
        let thing = n.thing.clone();
        async move {
            let t = iot.describe_thing().thing_name(thing).send().await.unwrap();
            (
                t.thing_id().unwrap().to_string(),
                t.thing_type_name().unwrap_or_default().to_string(),
            )
        }
    };
    let (id_before, _) = thing_id(&c).await;
    config(
        &w,
        &format!("{base}[thing_type]\nname = \"TemperatureSensorV2\"\ndescription = \"Temperature sensors, line 3\"\n"),
    );
    insta::assert_snapshot!("config_thing_type_rename", plan(&emu, &w, 3));
    w.ok(&["up"]);
    assert_eq!(
        thing_id(&c).await,
        (id_before, "TemperatureSensorV2".to_string()),
        "same thing, new type"
    );
    assert!(c
        .iot
        .describe_thing_type()
        .thing_type_name("TemperatureSensor")
        .send()
        .await
        .is_err());
    plan(&emu, &w, 0);

    // Other renames are refused with the way out.
    config(
        &w,
        &format!("{base}[thing_type]\nname = \"TemperatureSensorV2\"\ndescription = \"Temperature sensors, line 3\"\n[policy]\nname = \"sensor-policy-{{{{suffix}}}}\"\n"),
    );
    insta::assert_snapshot!("config_policy_rename", plan(&emu, &w, 3));
    assert_eq!(w.run(&["up"]).code(), 1);
    w.ok(&["down"]);
}
