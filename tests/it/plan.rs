//! `iotreg plan`: snapshots of what it prints for a fresh deployment, a deployment in sync, each
//! kind of drift made outside iotreg and each kind of config change, taken against the local
//! AWS with a pinned suffix so that names are stable. Each snapshot has a test of its own, which
//! deploys the config the change starts from and then makes that one change, so each snapshot
//! shows one difference. Also: plan writes nothing, up applies the plan (and after a drift is
//! repaired, plan shows no change), and up refuses (writing nothing) a plan it cannot carry out.

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

/// An emulator and a deployment of the pinned suffix plus `extra`.
fn deployed(extra: &str) -> (Emulator, Workdir) {
    let emu = Emulator::start();
    let w = emu.workdir();
    config(&w, extra);
    w.ok(&["up"]);
    (emu, w)
}

/// `up` applies the plan, after which plan shows no change at all.
fn repaired(emu: &Emulator, w: &Workdir) {
    w.ok(&["up"]);
    assert_eq!(plan(emu, w, 0), insta_no_change());
}

/// The in-sync plan, as snapshotted by plan_in_sync_shows_no_change (read back so that the tests
/// of drift compare with the same text).
fn insta_no_change() -> String {
    let snap = std::fs::read_to_string(repo().join("tests/it/snapshots/it__plan__no_change.snap"))
        .unwrap();
    // The snapshot file starts with a front matter block closed by "---".
    let body = snap.splitn(3, "---\n").nth(2).unwrap();
    format!("{}\n", body.trim_end())
}

// ---------------------------------------------------------------------------------------------
// Drift made outside iotreg.

#[test]
fn plan_of_a_fresh_deployment_with_a_pinned_suffix() {
    let emu = Emulator::start();
    let w = emu.workdir();
    config(&w, "");
    insta::assert_snapshot!("fresh_pinned_suffix", plan(&emu, &w, 3));
}

#[test]
fn plan_in_sync_shows_no_change() {
    let (emu, w) = deployed("");
    insta::assert_snapshot!("no_change", plan(&emu, &w, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_a_drifted_attribute() {
    let (emu, w) = deployed("");
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
    drift::attribute(&c, &n, "location", "Somewhere-Else").await;
    insta::assert_snapshot!("drift_attribute", plan(&emu, &w, 3));
    repaired(&emu, &w);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_a_drifted_policy_document() {
    let (emu, w) = deployed("");
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
    drift::policy_document(&c, &n, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#).await;
    insta::assert_snapshot!("drift_policy_document", plan(&emu, &w, 3));
    repaired(&emu, &w);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_a_drifted_rule_sql() {
    let (emu, w) = deployed("");
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
    drift::rule_sql(&c, &n, "SELECT * FROM 'sensor/#'").await;
    insta::assert_snapshot!("drift_rule_sql", plan(&emu, &w, 3));
    repaired(&emu, &w);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_a_drifted_function_memory() {
    let (emu, w) = deployed("");
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
    drift::memory(&c, &n, 1024).await;
    insta::assert_snapshot!("drift_function_memory", plan(&emu, &w, 3));
    repaired(&emu, &w);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_a_drifted_shadow_desired_state() {
    let (emu, w) = deployed("");
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
    drift::shadow(
        &c,
        &n,
        serde_json::json!({"state": {"desired": {"temperature_threshold": 90}}}),
    )
    .await;
    insta::assert_snapshot!("drift_shadow_desired", plan(&emu, &w, 3));
    repaired(&emu, &w);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_a_resource_deleted_outside_as_a_create() {
    let (emu, w) = deployed("");
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
    // A resource deleted outside iotreg is planned as create again.
    c.iot
        .delete_topic_rule()
        .rule_name(&n.rule)
        .send()
        .await
        .unwrap();
    insta::assert_snapshot!("drift_rule_deleted", plan(&emu, &w, 3));
    repaired(&emu, &w);
}

#[test]
fn plan_names_each_conflict_with_another_state_and_up_refuses_it() {
    let (emu, _w) = deployed("");
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

// ---------------------------------------------------------------------------------------------
// Config changes. Each test first deploys the config its change starts from.

const ATTRS: &str = "[thing.attributes]\ndeviceType = \"temperature\"\nmanufacturer = \"SensorCorp\"\nmodel = \"TC-2000\"\nlocation = \"Line-3\"\nfirmware = \"1.1.0\"\n";

/// ATTRS with the function's memory.
fn with_memory(mb: u32) -> String {
    format!("{ATTRS}[function]\nmemory_mb = {mb}\n")
}

/// The config most changes start from: ATTRS and 768 MB.
fn base() -> String {
    with_memory(768)
}

#[test]
fn plan_of_a_fresh_deployment() {
    let emu = Emulator::start();
    let w = emu.workdir();
    // Before any up, with no pin: nothing can exist yet under a suffix not chosen.
    insta::assert_snapshot!("fresh", plan(&emu, &w, 3));
}

#[test]
fn plan_shows_changed_attributes() {
    let (emu, w) = deployed("");
    config(&w, ATTRS);
    insta::assert_snapshot!("config_attributes", plan(&emu, &w, 3));
    w.ok(&["up"]);
}

#[test]
fn plan_shows_a_changed_function_memory() {
    let (emu, w) = deployed(ATTRS);
    config(&w, &with_memory(512));
    insta::assert_snapshot!("config_function_memory", plan(&emu, &w, 3));
    w.ok(&["up"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_config_and_drift_on_the_same_field() {
    let (emu, w) = deployed(&with_memory(512));
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
    // Config and drift on the same field: memory edited in the config and outside.
    config(&w, &with_memory(768));
    drift::memory(&c, &n, 1024).await;
    insta::assert_snapshot!("config_and_drift", plan(&emu, &w, 3));
    w.ok(&["up"]);
}

#[test]
fn plan_shows_a_function_environment_variable() {
    let (emu, w) = deployed(&base());
    config(
        &w,
        &format!(
            "{ATTRS}[function]\nmemory_mb = 768\n[function.environment]\nSTAGE = \"line-3\"\n"
        ),
    );
    insta::assert_snapshot!("config_function_environment", plan(&emu, &w, 3));
    w.ok(&["up"]);
}

#[test]
fn plan_shows_a_changed_rule() {
    let base = base();
    let (emu, w) = deployed(&format!(
        "{base}[function.environment]\nSTAGE = \"line-3\"\n"
    ));
    config(
        &w,
        &format!("{base}[rule]\nsql = \"SELECT * FROM 'sensor/temperature/#'\"\nenabled = false\n"),
    );
    insta::assert_snapshot!("config_rule", plan(&emu, &w, 3));
    w.ok(&["up"]);
    config(&w, &base);
    w.ok(&["up"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_shadow_initialisation_turned_off() {
    let base = base();
    let (emu, w) = deployed(&base);
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
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
}

#[test]
fn plan_shows_a_thing_type_description_change_as_a_replace_that_up_refuses() {
    let base = base();
    let (emu, w) = deployed(&base);
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
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_a_thing_type_rename_and_up_moves_the_thing_to_the_new_type() {
    let base = base();
    let (emu, w) = deployed(&base);
    let c = emu.clients().await;
    let n = drift::Names::new(SUFFIX);
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
}

#[test]
fn plan_shows_other_renames_and_up_refuses_them() {
    let renamed_type = format!("{}[thing_type]\nname = \"TemperatureSensorV2\"\ndescription = \"Temperature sensors, line 3\"\n", base());
    let (emu, w) = deployed(&renamed_type);
    // Other renames are refused with the way out.
    config(
        &w,
        &format!("{renamed_type}[policy]\nname = \"sensor-policy-{{{{suffix}}}}\"\n"),
    );
    insta::assert_snapshot!("config_policy_rename", plan(&emu, &w, 3));
    assert_eq!(w.run(&["up"]).code(), 1);
    w.ok(&["down"]);
}
