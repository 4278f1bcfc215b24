//! Fleet operations end to end on the local AWS: job templates deployed by `up`, jobs started
//! with `iotreg job start`, devices played by `iotreg device simulate --jobs` (and, in
//! `jobs_device`, by paho-mqtt), and what happened read from the outside: the job's
//! executions, the devices' shadows, the request log.
//!
//! The emulator runs the jobs engine with a short "minute" (`IOTREG_EMULATOR_JOBS_MINUTE`
//! seconds), so rollout rates and timeouts given in minutes play out in seconds.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::*;

const NO_LIMITS: &str = "[aws.rate_limits]\n\"*\" = 0\n";

/// A fleet of `devices` in a thing group, with monitoring off, and `templates` (TOML) after
/// it; `fw.bin` is written beside the config.
fn fleet(emu: &Emulator, devices: usize, templates: &str) -> Workdir {
    fleet_with(emu, devices, templates, false)
}

fn fleet_with(emu: &Emulator, devices: usize, templates: &str, monitoring: bool) -> Workdir {
    let w = emu.workdir();
    std::fs::write(w.path().join("fw.bin"), firmware_bytes()).unwrap();
    let mut csv = String::from("thing_name,serial_number\n");
    for i in 1..=devices {
        csv.push_str(&format!("sensor-{i:04},SN-{i:04}\n"));
    }
    std::fs::write(w.path().join("devices.csv"), csv).unwrap();
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!(
            "{NO_LIMITS}[fleet]\nmanifest = \"devices.csv\"\nconcurrency = 32\ngroup = \"sensors-{{{{suffix}}}}\"\n[monitoring]\nenabled = {monitoring}\n{templates}"
        ),
    )
    .unwrap();
    w.ok(&["up"]);
    w
}

fn firmware_bytes() -> Vec<u8> {
    (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

const FIRMWARE: &str = r#"
[[job_templates]]
name = "fw-v2"
firmware = "fw.bin"
version = "2.0.0"
"#;

fn start(w: &Workdir, args: &[&str]) -> String {
    let mut all = vec!["job", "start"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let run = w.ok(&all);
    run.json()["job_id"].as_str().unwrap().to_string()
}

/// Every fleet device takes its jobs; the run must succeed.
fn simulate(w: &Workdir, args: &[&str]) -> Run {
    let mut all = vec!["device", "simulate", "--fleet", "--jobs"];
    if !args.contains(&"--linger") {
        all.extend_from_slice(&["--linger", "3"]);
    }
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    w.ok(&all)
}

fn status(w: &Workdir, id: &str, watch: bool) -> Run {
    let mut args = vec!["job", "status", id, "--output", "json"];
    if watch {
        args.extend_from_slice(&["--watch", "--interval", "0.5"]);
    }
    w.run(&args)
}

/// Every execution of the job: thing name -> (status, executionNumber), read with the SDK.
async fn executions(c: &Clients, id: &str) -> BTreeMap<String, (String, i64)> {
    let mut out = BTreeMap::new();
    let mut pages = c
        .iot
        .list_job_executions_for_job()
        .job_id(id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for e in page.unwrap().execution_summaries() {
            let thing = e
                .thing_arn()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            let s = e.job_execution_summary().unwrap();
            out.insert(
                thing,
                (
                    s.status().unwrap().as_str().to_string(),
                    s.execution_number().unwrap_or_default(),
                ),
            );
        }
    }
    out
}

async fn reported(c: &Clients, thing: &str) -> Value {
    let out = c
        .data
        .get_thing_shadow()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(out.payload.unwrap().as_ref()).unwrap();
    doc["state"]["reported"].clone()
}

fn count(report: &Value, status: &str) -> i64 {
    report["executions"][status].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firmware_rollout_reaches_every_device_of_a_100_device_fleet() {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", "2")]);
    let c = emu.clients().await;
    let w = fleet(
        &emu,
        100,
        &format!(
            "{FIRMWARE}timeout_minutes = 30\n[job_templates.rollout]\nmaximum_per_minute = 1000\n[[job_templates.abort]]\nfailure_type = \"FAILED\"\nthreshold_percentage = 10\nmin_executed_things = 10\n"
        ),
    );
    let s = w.suffix();
    // The template as AWS has it: the document names the firmware and links it through the
    // pre-signing role; the firmware is in the bucket under its hash.
    let t = c
        .iot
        .describe_job_template()
        .job_template_id(format!("fw-v2-{s}"))
        .send()
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(t.document().unwrap()).unwrap();
    let sha = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(firmware_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(doc["firmware"]["sha256"], sha);
    assert_eq!(doc["firmware"]["size"], 50_000);
    let url = doc["firmware"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("${aws:iot:s3-presigned-url-v2:https://s3.us-east-1.amazonaws.com/"),
        "{url}"
    );
    assert_eq!(
        t.presigned_url_config().unwrap().role_arn(),
        Some(format!("arn:aws:iam::123456789012:role/iot-jobs-presign-{s}").as_str())
    );
    let plan = w.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code(), 0, "{}", plan.all());

    let id = start(&w, &["fw-v2"]);
    simulate(&w, &[]);
    let st = status(&w, &id, true);
    assert_eq!(st.code(), 0, "{}", st.all());
    let report = st.json();
    assert_eq!(report["status"], "COMPLETED", "{report}");
    assert_eq!(count(&report, "SUCCEEDED"), 100, "{report}");
    assert_eq!(report["reported"]["matching"], 100, "{report}");
    assert_eq!(report["reported"]["what"], "firmware_version = 2.0.0");
    // From the outside: every execution SUCCEEDED, every shadow reports the version.
    let ex = executions(&c, &id).await;
    assert_eq!(ex.len(), 100);
    assert!(ex.values().all(|(st, _)| st == "SUCCEEDED"), "{ex:?}");
    for i in [1, 50, 100] {
        let r = reported(&c, &format!("sensor-{i:04}")).await;
        assert_eq!(r["firmware_version"], "2.0.0", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_with_20_percent_failures_aborts_at_a_10_percent_threshold() {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", "2")]);
    let c = emu.clients().await;
    // 20 a (two-second) minute: the 100 devices would be reached over 10 seconds, and the
    // abort comes after the first 10 executions are done.
    let w = fleet(
        &emu,
        100,
        &format!(
            "{FIRMWARE}[job_templates.rollout]\nmaximum_per_minute = 20\n[[job_templates.abort]]\nfailure_type = \"FAILED\"\nthreshold_percentage = 10\nmin_executed_things = 10\n"
        ),
    );
    let id = start(&w, &["fw-v2"]);
    simulate(&w, &["--fail-rate", "0.2", "--seed", "7"]);
    let st = status(&w, &id, true);
    assert_eq!(
        st.code(),
        1,
        "a cancelled rollout fails --watch: {}",
        st.all()
    );
    let report = st.json();
    assert_eq!(report["status"], "CANCELED", "{report}");
    let executed = count(&report, "SUCCEEDED") + count(&report, "FAILED");
    assert!(executed >= 10, "{report}");
    assert!(
        count(&report, "FAILED") * 10 >= executed,
        "aborted at >= 10% failed: {report}"
    );
    assert!(executed < 100, "the abort stopped the rollout: {report}");
    // No device started the job after the abort: every execution a device took began before
    // the job was cancelled, and the rest never left the queue.
    let job = c
        .iot
        .describe_job()
        .job_id(&id)
        .send()
        .await
        .unwrap()
        .job
        .unwrap();
    let cancelled_at = job.completed_at().or(job.last_updated_at()).unwrap().secs();
    let ex = executions(&c, &id).await;
    let mut started = 0;
    for (thing, (status, _)) in &ex {
        let e = c
            .iot
            .describe_job_execution()
            .job_id(&id)
            .thing_name(thing)
            .send()
            .await
            .unwrap()
            .execution
            .unwrap();
        if let Some(at) = e.started_at() {
            if status != "CANCELED" && status != "QUEUED" {
                started += 1;
                assert!(
                    at.secs() <= cancelled_at,
                    "{thing} started at {} after the abort at {cancelled_at}",
                    at.secs()
                );
            }
        }
    }
    assert!(started < 100, "{started}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_execution_a_device_abandons_times_out_and_is_retried() {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", "1")]);
    let c = emu.clients().await;
    let w = fleet(
        &emu,
        3,
        &format!(
            "{FIRMWARE}timeout_minutes = 1\n[[job_templates.retry]]\nfailure_type = \"TIMED_OUT\"\nretries = 1\n"
        ),
    );
    let id = start(&w, &["fw-v2", "--targets", "sensor-0001"]);
    // The device takes the job and drops off: the execution times out after a (one-second)
    // minute and is queued again (the one retry), where it waits for the device.
    simulate(&w, &["--offline-rate", "1", "--linger", "1"]);
    let mut waited = 0;
    while executions(&c, &id).await["sensor-0001"] != ("QUEUED".to_string(), 2) {
        waited += 1;
        assert!(waited < 100, "no retry: {:?}", executions(&c, &id).await);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first = c
        .iot
        .describe_job_execution()
        .job_id(&id)
        .thing_name("sensor-0001")
        .execution_number(1)
        .send()
        .await
        .unwrap()
        .execution
        .unwrap();
    assert_eq!(first.status().unwrap().as_str(), "TIMED_OUT");
    // The retry waits for a device that is gone: --watch gives up at its --timeout.
    let st = w.run(&[
        "job",
        "status",
        &id,
        "--watch",
        "--interval",
        "0.2",
        "--timeout",
        "1",
        "--output",
        "json",
    ]);
    assert_eq!(st.code(), 1, "{}", st.all());
    assert_eq!(st.json()["gave_up"], true, "{}", st.all());
    assert_eq!(st.json()["status"], "IN_PROGRESS", "{}", st.all());
    // Back, the device takes the retry and drops off again: no retry is left, the job ends.
    simulate(&w, &["--offline-rate", "1", "--linger", "1"]);
    let st = status(&w, &id, true);
    assert_eq!(
        st.code(),
        1,
        "a timed-out execution fails --watch: {}",
        st.all()
    );
    let report = st.json();
    assert_eq!(report["status"], "COMPLETED", "{report}");
    assert_eq!(count(&report, "TIMED_OUT"), 1, "{report}");
    assert_eq!(
        executions(&c, &id).await["sensor-0001"],
        ("TIMED_OUT".to_string(), 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_job_reaches_no_device_and_down_removes_jobs_templates_firmware_and_role() {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", "2")]);
    let c = emu.clients().await;
    // With monitoring on: each job gets an alarm on its failed executions.
    let w = fleet_with(&emu, 5, FIRMWARE, true);
    let s = w.suffix();
    let id = start(&w, &["fw-v2"]);
    let alarm = format!("iot-job-failures-{s}-{id}");
    let alarms = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(&alarm)
        .send()
        .await
        .unwrap();
    let a = &alarms.metric_alarms()[0];
    assert_eq!(a.metric_name(), Some("FailedJobExecutionTotalCount"));
    assert_eq!(a.dimensions()[0].value(), Some(id.as_str()));
    let cancel = w.run(&["job", "cancel", &id, "--output", "json"]);
    assert_eq!(cancel.code(), 0, "{}", cancel.all());
    assert_eq!(cancel.json()["status"], "CANCELED");
    simulate(&w, &["--linger", "1"]);
    let ex = executions(&c, &id).await;
    assert!(ex.values().all(|(st, _)| st == "CANCELED"), "{ex:?}");
    // Still the version the recipe's shadow document starts with.
    let r = reported(&c, "sensor-0001").await;
    assert_eq!(r["firmware_version"], "1.0.0", "{r}");
    let list = w.ok(&["job", "list", "--output", "json"]).json();
    assert_eq!(list["jobs"][0]["job_id"], id.as_str());
    assert_eq!(list["jobs"][0]["status"], "CANCELED");

    // A new firmware version: AWS cannot update a template, so plan says replace and up
    // deletes and creates it; the job already started keeps its document.
    let config = std::fs::read_to_string(w.path().join("iotreg.toml")).unwrap();
    std::fs::write(
        w.path().join("iotreg.toml"),
        config.replace("version = \"2.0.0\"", "version = \"2.0.1\""),
    )
    .unwrap();
    let plan = w.run(&["plan", "--detailed-exitcode", "--output", "json"]);
    assert_eq!(plan.code(), 3, "{}", plan.all());
    let planned = plan.json();
    let step = planned["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "job_template/fw-v2")
        .unwrap_or_else(|| panic!("{planned}"))
        .clone();
    assert_eq!(step["action"], "replace", "{step}");
    let before = emu.requests().len();
    w.ok(&["up"]);
    let ops: Vec<String> = emu.requests()[before..]
        .iter()
        .map(|(_, op)| op.clone())
        .filter(|op| op.contains("JobTemplate"))
        .collect();
    assert!(
        ops.ends_with(&[
            "DeleteJobTemplate".to_string(),
            "CreateJobTemplate".to_string()
        ]),
        "{ops:?}"
    );
    let t = c
        .iot
        .describe_job_template()
        .job_template_id(format!("fw-v2-{s}"))
        .send()
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(t.document().unwrap()).unwrap();
    assert_eq!(doc["firmware"]["version"], "2.0.1");
    let old = c.iot.get_job_document().job_id(&id).send().await.unwrap();
    assert!(old.document().unwrap().contains("2.0.0"));
    assert_eq!(w.run(&["plan", "--detailed-exitcode"]).code(), 0);

    // A second job left running: down cancels it, then deletes it.
    let running = start(&w, &["fw-v2"]);
    let before = emu.requests().len();
    w.ok(&["down"]);
    let ops: Vec<String> = emu.requests()[before..]
        .iter()
        .map(|(_, op)| op.clone())
        .collect();
    // The cancelled job is only deleted; the running one is cancelled, then deleted.
    let n = |op: &str| ops.iter().filter(|o| *o == op).count();
    assert_eq!((n("CancelJob"), n("DeleteJob")), (1, 2), "{ops:?}");
    let cancel = ops.iter().position(|o| o == "CancelJob").unwrap();
    assert!(ops[cancel..].iter().any(|o| o == "DeleteJob"), "{ops:?}");
    for job in [&id, &running] {
        let gone = c.iot.describe_job().job_id(job.as_str()).send().await;
        assert!(
            gone.is_err()
                || gone.unwrap().job.unwrap().status().map(|s| s.as_str())
                    == Some("DELETION_IN_PROGRESS"),
            "{job} still there"
        );
    }
    let templates = c.iot.list_job_templates().send().await.unwrap();
    assert!(templates.job_templates().is_empty());
    let alarms = c
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(format!("iot-job-failures-{s}-"))
        .send()
        .await
        .unwrap();
    assert!(alarms.metric_alarms().is_empty(), "{alarms:?}");
    let bucket = format!("iotreg-jobs-123456789012-us-east-1-{s}");
    assert!(
        c.s3.head_bucket().bucket(&bucket).send().await.is_err(),
        "bucket gone"
    );
    assert!(c
        .iam
        .get_role()
        .role_name(format!("iot-jobs-presign-{s}"))
        .send()
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continuous_job_reaches_devices_that_join_the_group_later() {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", "2")]);
    let c = emu.clients().await;
    let w = fleet(&emu, 3, FIRMWARE);
    let id = start(&w, &["fw-v2", "--continuous"]);
    simulate(&w, &[]);
    assert_eq!(executions(&c, &id).await.len(), 3);
    // A fourth device joins the fleet (and so the group): the job reaches it too.
    let mut csv = std::fs::read_to_string(w.path().join("devices.csv")).unwrap();
    csv.push_str("sensor-0004,SN-0004\n");
    std::fs::write(w.path().join("devices.csv"), csv).unwrap();
    w.ok(&["up"]);
    simulate(&w, &[]);
    let ex = executions(&c, &id).await;
    assert_eq!(ex.len(), 4, "{ex:?}");
    assert_eq!(ex["sensor-0004"].0, "SUCCEEDED", "{ex:?}");
    let r = reported(&c, "sensor-0004").await;
    assert_eq!(r["firmware_version"], "2.0.0");
    let st = status(&w, &id, false).json();
    assert_eq!(st["target_selection"], "CONTINUOUS");
    assert_eq!(count(&st, "SUCCEEDED"), 4, "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_change_reaches_every_devices_reported_state() {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", "2")]);
    let c = emu.clients().await;
    let w = fleet(&emu, 20, FIRMWARE);
    let id = start(&w, &["--set", "reporting_interval=30", "--set", "mode=eco"]);
    simulate(&w, &[]);
    let st = status(&w, &id, true);
    assert_eq!(st.code(), 0, "{}", st.all());
    let report = st.json();
    assert_eq!(count(&report, "SUCCEEDED"), 20, "{report}");
    assert_eq!(report["reported"]["matching"], 20, "{report}");
    for i in 1..=20 {
        let r = reported(&c, &format!("sensor-{i:04}")).await;
        assert_eq!(r["config"]["reporting_interval"], 30, "{r}");
        assert_eq!(r["config"]["mode"], "eco", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_job_templates_are_refused_before_any_call() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("doc.json"), "{\"operation\": ").unwrap();
    let cases = [
        (
            "[[job_templates]]\nname = \"cfg\"\ndocument = \"doc.json\"\n",
            "not JSON",
        ),
        (
            "[[job_templates]]\nname = \"fw\"\nfirmware = \"missing.bin\"\nversion = \"1\"\n",
            "missing.bin",
        ),
        (
            "[[job_templates]]\nname = \"fw\"\nfirmware = \"doc.json\"\nversion = \"1\"\n[job_templates.rollout]\nmaximum_per_minute = 5000\n",
            "job_templates[0].rollout.maximum_per_minute: 5000 is out of range; AWS allows 1 to 1000",
        ),
        (
            "[[job_templates]]\nname = \"fw\"\nfirmware = \"doc.json\"\nversion = \"1\"\n[job_templates.rollout]\nbase_rate_per_minute = 10\nincrement_factor = 9.0\nnotified_things = 5\n",
            "increment_factor: 9 is out of range",
        ),
        (
            "[[job_templates]]\nname = \"fw\"\nfirmware = \"doc.json\"\nversion = \"1\"\n[[job_templates.abort]]\nfailure_type = \"FAILED\"\nthreshold_percentage = 150\nmin_executed_things = 1\n",
            "threshold_percentage",
        ),
    ];
    for (toml, expected) in cases {
        std::fs::write(w.path().join("iotreg.toml"), toml).unwrap();
        let before = emu.requests().len();
        let up = w.run(&["up"]);
        assert_eq!(up.code(), 2, "{toml}: {}", up.all());
        assert!(
            up.stderr().contains(expected),
            "{expected} in:\n{}",
            up.stderr()
        );
        assert_eq!(emu.requests().len(), before, "{toml}: no request");
    }
    // A template the config does not have, and a bad --set, before any call too.
    std::fs::write(w.path().join("iotreg.toml"), "").unwrap();
    let before = emu.requests().len();
    let run = w.run(&["job", "start", "nope"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr().contains("no job template \"nope\""),
        "{}",
        run.stderr()
    );
    let run = w.run(&["job", "start", "--set", "novalue"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert_eq!(emu.requests().len(), before, "no request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_start_killed_after_create_job_landed_is_found_and_retired_by_down() {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", "2")]);
    let c = emu.clients().await;
    let w = fleet(&emu, 3, FIRMWARE);
    let s = w.suffix();
    // CreateJob lands, its answer is held, and iotreg is killed meanwhile: only the intent,
    // written before the call, says the job may exist.
    let mut child = emu.start_held(
        &w,
        &["job", "start", "fw-v2", "--job-id", "killed-start"],
        "CreateJob",
        20,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let job = c
        .iot
        .describe_job()
        .job_id("killed-start")
        .send()
        .await
        .unwrap();
    assert_eq!(job.job.unwrap().status().unwrap().as_str(), "IN_PROGRESS");
    let state = w.state().unwrap();
    let rec = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "job/killed-start")
        .unwrap_or_else(|| panic!("{state}"))
        .clone();
    assert_eq!(rec["phase"], "intent", "{rec}");
    let list = w.ok(&["job", "list", "--output", "json"]).json();
    assert_eq!(list["jobs"][0]["status"], "IN_PROGRESS", "{list}");
    let before = emu.requests().len();
    w.ok(&["down"]);
    let ops: Vec<String> = emu.requests()[before..]
        .iter()
        .map(|(_, op)| op.clone())
        .collect();
    assert!(ops.contains(&"CancelJob".to_string()), "{ops:?}");
    let gone = c.iot.describe_job().job_id("killed-start").send().await;
    assert!(
        gone.is_err()
            || gone.unwrap().job.unwrap().status().map(|s| s.as_str())
                == Some("DELETION_IN_PROGRESS"),
        "the job is still there"
    );
    assert!(c
        .iot
        .describe_job_template()
        .job_template_id(format!("fw-v2-{s}"))
        .send()
        .await
        .is_err());
}
