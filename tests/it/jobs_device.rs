//! Devices that take jobs, end to end on the local AWS (its jobs engine and the device
//! gateway's jobs MQTT API): a fleet deployed by `iotreg up` with a policy template that
//! allows the jobs topics; jobs made with the SDK as an operator would (a firmware update
//! whose URL AWS presigns through a role, a configuration change rolled out two a minute
//! with an in-progress timeout, an operation no device knows); `iotreg device simulate
//! --jobs` playing the fleet; and a device written with paho-mqtt taking a job. Everything is
//! checked from outside: DescribeJobExecution and DescribeJob, the things' shadows, and the
//! devices the deterministic draws pick, worked out here from the documented formula.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_iot::types::{
    JobExecutionStatus, JobExecutionsRolloutConfig, PresignedUrlConfig, TimeoutConfig,
};
use sha2::{Digest, Sha256};

use crate::support::*;

/// One scaled minute of the jobs engine, in seconds: rollout rates and timeouts pass quickly.
const JOBS_MINUTE: &str = "2";

/// The default device policy plus the statements iotreg adds for jobs (the built-in
/// policy's, with job templates): Publish, Subscribe and Receive on the thing's own `$aws/things/<thing>/jobs/*`.
const POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["iot:Connect"],
     "Resource": ["arn:{{partition}}:iot:{{region}}:{{account}}:client/${iot:Connection.Thing.ThingName}"]},
    {"Effect": "Allow", "Action": ["iot:Publish"],
     "Resource": [
       "arn:{{partition}}:iot:{{region}}:{{account}}:topic/sensor/temperature/${iot:Connection.Thing.ThingName}",
       "arn:{{partition}}:iot:{{region}}:{{account}}:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/update",
       "arn:{{partition}}:iot:{{region}}:{{account}}:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/get"]},
    {"Effect": "Allow", "Action": ["iot:Subscribe"],
     "Resource": ["arn:{{partition}}:iot:{{region}}:{{account}}:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"]},
    {"Effect": "Allow", "Action": ["iot:Receive"],
     "Resource": ["arn:{{partition}}:iot:{{region}}:{{account}}:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"]},
    {"Effect": "Allow", "Action": ["iot:Publish"],
     "Resource": ["arn:{{partition}}:iot:{{region}}:{{account}}:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"]},
    {"Effect": "Allow", "Action": ["iot:Subscribe"],
     "Resource": ["arn:{{partition}}:iot:{{region}}:{{account}}:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"]},
    {"Effect": "Allow", "Action": ["iot:Receive"],
     "Resource": ["arn:{{partition}}:iot:{{region}}:{{account}}:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"]}
  ]
}"#;

const THINGS: [&str; 5] = ["jobdev-0", "jobdev-1", "jobdev-2", "jobdev-3", "jobdev-4"];

/// The draw as docs/device.md gives it, written again here so that the test checks the
/// formula rather than reusing it: the first 8 bytes of SHA-256("<kind>\n<seed>\n<thing>\n<job>"),
/// big-endian, over 2^64, against the rate.
fn picked(kind: &str, rate: f64, seed: u64, thing: &str, job: &str) -> bool {
    let digest = Sha256::digest(format!("{kind}\n{seed}\n{thing}\n{job}").as_bytes());
    let x = u64::from_be_bytes(digest[..8].try_into().unwrap());
    (x as f64) / 2f64.powi(64) < rate
}

fn predicted(kind: &str, rate: f64, seed: u64, job: &str) -> BTreeSet<String> {
    THINGS
        .iter()
        .filter(|t| picked(kind, rate, seed, t, job))
        .map(|t| t.to_string())
        .collect()
}

/// A fleet of THINGS deployed with the jobs policy, on an emulator whose jobs minute is short.
struct Fleet {
    emu: Emulator,
    w: Workdir,
    c: Clients,
}

async fn fleet() -> Fleet {
    let emu = Emulator::start_with(&[("IOTREG_EMULATOR_JOBS_MINUTE", JOBS_MINUTE)]);
    let w = emu.workdir();
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[aws.rate_limits]\n\"*\" = 0\n\n[policy]\ntemplate = \"policy.json\"\n",
    )
    .unwrap();
    std::fs::write(w.path().join("policy.json"), POLICY).unwrap();
    let mut manifest = String::from("thing_name,serial\n");
    for (i, t) in THINGS.iter().enumerate() {
        manifest.push_str(&format!("{t},SN-{i}\n"));
    }
    std::fs::write(w.path().join("devices.csv"), manifest).unwrap();
    // The jobs statements end in `/*` under the thing-name variable: the lint lets them be.
    w.ok(&["up", "--fleet", "devices.csv"]);
    let c = emu.clients().await;
    Fleet { emu, w, c }
}

async fn thing_arns(c: &Clients, things: &[&str]) -> Vec<String> {
    let mut arns = Vec::new();
    for t in things {
        let d = c.iot.describe_thing().thing_name(*t).send().await.unwrap();
        arns.push(d.thing_arn().unwrap().to_string());
    }
    arns
}

/// The execution as the service describes it: status and statusDetails.
async fn execution(
    c: &Clients,
    job: &str,
    thing: &str,
) -> (
    JobExecutionStatus,
    std::collections::HashMap<String, String>,
) {
    let e = c
        .iot
        .describe_job_execution()
        .job_id(job)
        .thing_name(thing)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeJobExecution {job} {thing}: {e:?}"))
        .execution
        .unwrap();
    let details = e
        .status_details()
        .and_then(|d| d.details_map())
        .cloned()
        .unwrap_or_default();
    (e.status().unwrap().clone(), details)
}

async fn reported(c: &Clients, thing: &str) -> serde_json::Value {
    let out = c
        .data
        .get_thing_shadow()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    doc["state"]["reported"].clone()
}

/// The things named in a summary list of {thing, job_id}, for `job`.
fn named(list: &serde_json::Value, job: &str) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|p| p["job_id"] == job)
        .map(|p| p["thing"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_takes_a_firmware_job_and_exactly_the_predicted_devices_fail() {
    let f = fleet().await;
    let (w, c) = (&f.w, &f.c);
    const JOB: &str = "fw-2-0-0";
    let predicted_failures = predicted("fail", 0.4, 7, JOB);
    assert!(
        (1..THINGS.len()).contains(&predicted_failures.len()),
        "the draw should split the fleet for the test to mean something: {predicted_failures:?}"
    );

    // The operator's side: the firmware in a bucket, a role AWS IoT presigns with, the job.
    let firmware: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha: String = Sha256::digest(&firmware)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let bucket = Bucket::create(&c.s3, "firmware-updates", false).await;
    bucket.put("sensor/fw-2.0.0.bin", firmware.clone()).await;
    let role = iot_role(c, "iot-firmware-presign").await;
    let document = serde_json::json!({"operation": "firmware_update", "firmware": {
        "version": "2.0.0", "file": "fw-2.0.0.bin", "size": firmware.len(), "sha256": sha,
        "url": format!("${{aws:iot:s3-presigned-url-v2:https://s3.{REGION}.amazonaws.com/firmware-updates/sensor/fw-2.0.0.bin}}")}});
    c.iot
        .create_job()
        .job_id(JOB)
        .set_targets(Some(thing_arns(c, &THINGS).await))
        .document(document.to_string())
        .presigned_url_config(
            PresignedUrlConfig::builder()
                .role_arn(role.arn())
                .expires_in_sec(600)
                .build(),
        )
        .send()
        .await
        .unwrap();

    // The deployment's shadow reports a version already (the recipe's 1.0.0).
    let mut before = std::collections::BTreeMap::new();
    for thing in THINGS {
        before.insert(thing, reported(c, thing).await["firmware_version"].clone());
        assert_ne!(before[thing], "2.0.0");
    }
    let started = Instant::now();
    let r = w.run(&[
        "device",
        "simulate",
        "--fleet",
        "--jobs",
        "--fail-rate",
        "0.4",
        "--seed",
        "7",
        "--linger",
        "2",
        "--output",
        "json",
    ]);
    assert_eq!(r.code(), 0, "{}", r.all());
    // Lingering 2 s after the last job, not the default 10.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let j = r.json();
    let k = predicted_failures.len();
    assert_eq!(
        named(&j["simulated_failures"], JOB),
        predicted_failures,
        "{j}"
    );
    assert_eq!(j["devices"], 5, "{j}");
    assert_eq!(j["connects_ok"], 5, "{j}");
    assert_eq!(j["executions"], 5, "{j}");
    assert_eq!(j["succeeded"], 5 - k, "{j}");
    assert_eq!(j["failed"], k, "{j}");
    assert_eq!(j["jobs"][JOB]["SUCCEEDED"], 5 - k, "{j}");
    // Every device downloaded the whole firmware, the failing ones too (they fail after).
    assert_eq!(j["firmware_bytes"], 5 * firmware.len(), "{j}");
    for d in j["per_device"].as_array().unwrap() {
        let thing = d["thing"].as_str().unwrap();
        let e = &d["jobs"][0];
        assert_eq!(e["job_id"], JOB, "{d}");
        assert_eq!(e["execution_number"], 1, "{d}");
        assert!(e["version"].as_u64().is_some(), "{d}");
        let expected = if predicted_failures.contains(thing) {
            "FAILED"
        } else {
            "SUCCEEDED"
        };
        assert_eq!(e["status"], expected, "{d}");
    }

    // From outside: each execution as the device ended it, and the shadow it reported.
    for thing in THINGS {
        let (status, details) = execution(c, JOB, thing).await;
        let shadow = reported(c, thing).await;
        if predicted_failures.contains(thing) {
            assert_eq!(status, JobExecutionStatus::Failed, "{thing}");
            assert_eq!(details["reason"], "simulated failure", "{thing}");
            assert_eq!(
                shadow["firmware_version"], before[thing],
                "{thing}: {shadow}"
            );
        } else {
            assert_eq!(status, JobExecutionStatus::Succeeded, "{thing}");
            assert_eq!(details["firmware_version"], "2.0.0", "{thing}");
            assert_eq!(shadow["firmware_version"], "2.0.0", "{thing}: {shadow}");
        }
    }
    let job = c.iot.describe_job().job_id(JOB).send().await.unwrap();
    let details = job.job().unwrap().job_process_details().unwrap();
    assert_eq!(details.number_of_succeeded_things(), Some((5 - k) as i32));
    assert_eq!(details.number_of_failed_things(), Some(k as i32));

    // A device written by someone else takes a configuration change, as iotreg's did.
    let one = *THINGS
        .iter()
        .find(|t| !predicted_failures.contains(**t))
        .unwrap();
    c.iot
        .create_job()
        .job_id("cfg-interval")
        .set_targets(Some(thing_arns(c, &[one]).await))
        .document(r#"{"operation":"config","set":{"reporting_interval":30}}"#)
        .send()
        .await
        .unwrap();
    let gw = f.emu.gateway();
    let keys = w.path().join(".iotreg");
    let out = std::process::Command::new(python())
        .arg(repo().join("tests/it/support/paho_jobs.py"))
        .args([
            gw.endpoint.as_str(),
            &gw.mqtt.to_string(),
            gw.ca_file.to_str().unwrap(),
            keys.join(format!("{one}-certificate.pem.crt"))
                .to_str()
                .unwrap(),
            keys.join(format!("{one}-private.pem.key"))
                .to_str()
                .unwrap(),
            one,
            "--once",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["job_id"], "cfg-interval", "{line}");
    assert_eq!(line["status"], "SUCCEEDED", "{line}");
    let (status, details) = execution(c, "cfg-interval", one).await;
    assert_eq!(status, JobExecutionStatus::Succeeded);
    assert_eq!(details["applied"], "reporting_interval=30");
    // Reported state is merged: the firmware version stays beside the new config.
    let shadow = reported(c, one).await;
    assert_eq!(shadow["config"]["reporting_interval"], 30, "{shadow}");
    assert_eq!(shadow["firmware_version"], "2.0.0", "{shadow}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_out_config_change_with_devices_going_offline_and_an_unknown_operation() {
    let f = fleet().await;
    let (w, c) = (&f.w, &f.c);
    const JOB: &str = "cfg-rollout";
    const ODD: &str = "reboot-now";
    let offline = predicted("offline", 0.4, 3, JOB);
    assert!(
        (1..THINGS.len()).contains(&offline.len()),
        "the draw should split the fleet: {offline:?}"
    );
    // The unknown operation goes to a device that neither goes offline with it nor with the
    // rolled-out job (which may come first or second).
    let odd_target = *THINGS
        .iter()
        .find(|t| !offline.contains(**t) && !picked("offline", 0.4, 3, t, ODD))
        .expect("a device that stays online for both jobs");

    // Two executions a (2-second) minute, so most devices hear of theirs by notify-next while
    // connected; one minute IN_PROGRESS at most.
    c.iot
        .create_job()
        .job_id(JOB)
        .set_targets(Some(thing_arns(c, &THINGS).await))
        .document(r#"{"operation":"config","set":{"reporting_interval":15,"eco":true}}"#)
        .job_executions_rollout_config(
            JobExecutionsRolloutConfig::builder()
                .maximum_per_minute(2)
                .build(),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .in_progress_timeout_in_minutes(1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.iot
        .create_job()
        .job_id(ODD)
        .set_targets(Some(thing_arns(c, &[odd_target]).await))
        .document(r#"{"operation":"reboot"}"#)
        .send()
        .await
        .unwrap();

    let r = w.run(&[
        "device",
        "simulate",
        "--fleet",
        "--jobs",
        "--offline-rate",
        "0.4",
        "--seed",
        "3",
        "--linger",
        "8",
        "--output",
        "json",
    ]);
    assert_eq!(r.code(), 0, "{}", r.all());
    let j = r.json();
    assert_eq!(named(&j["went_offline"], JOB), offline, "{j}");
    assert_eq!(j["offline"], offline.len(), "{j}");
    assert_eq!(j["succeeded"], 5 - offline.len(), "{j}");
    assert_eq!(j["rejected"], 1, "{j}");
    assert_eq!(j["jobs"][ODD]["REJECTED"], 1, "{j}");

    for thing in THINGS {
        let (status, _) = execution(c, JOB, thing).await;
        if offline.contains(thing) {
            // Taken, then left: the service times it out after its minute.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut status = status;
            while status != JobExecutionStatus::TimedOut && Instant::now() < deadline {
                assert_eq!(status, JobExecutionStatus::InProgress, "{thing}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                status = execution(c, JOB, thing).await.0;
            }
            assert_eq!(status, JobExecutionStatus::TimedOut, "{thing}");
            assert!(reported(c, thing).await.get("config").is_none(), "{thing}");
        } else {
            assert_eq!(status, JobExecutionStatus::Succeeded, "{thing}");
            let shadow = reported(c, thing).await;
            assert_eq!(
                shadow["config"]["reporting_interval"], 15,
                "{thing}: {shadow}"
            );
            assert_eq!(shadow["config"]["eco"], true, "{thing}: {shadow}");
        }
    }
    let (status, details) = execution(c, ODD, odd_target).await;
    assert_eq!(status, JobExecutionStatus::Rejected);
    assert_eq!(details["reason"], "unknown operation \"reboot\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_download_and_work_left_at_max_duration_fail_the_run_by_name() {
    let f = fleet().await;
    let (w, c) = (&f.w, &f.c);

    // A policy without the jobs topics is refused before any connection (exit 2), naming
    // what is missing: the same deployment seen through a config with the built-in policy.
    std::fs::write(
        w.path().join("plain.toml"),
        "[aws.rate_limits]\n\"*\" = 0\n",
    )
    .unwrap();
    let r = w.run(&[
        "--config",
        "plain.toml",
        "device",
        "simulate",
        "jobdev-0",
        "--jobs",
    ]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(
        r.stderr()
            .contains("iot:Publish on topic/$aws/things/jobdev-0/jobs/start-next"),
        "{}",
        r.all()
    );

    // A firmware URL that answers 404 (no such bucket on the local S3): the device reports
    // FAILED with the reason, as a device would, and the run fails naming it.
    let gone = format!("{}/no-such-firmware-bucket/fw.bin", f.emu.url);
    let doc = serde_json::json!({"operation": "firmware_update", "firmware": {"version": "3.0.0",
        "size": 10, "sha256": "0".repeat(64), "url": gone}});
    c.iot
        .create_job()
        .job_id("fw-gone")
        .set_targets(Some(thing_arns(c, &["jobdev-1"]).await))
        .document(doc.to_string())
        .send()
        .await
        .unwrap();
    let r = w.run(&[
        "device", "simulate", "jobdev-1", "--jobs", "--linger", "1", "--output", "json",
    ]);
    assert_eq!(r.code(), 1, "{}", r.all());
    let j = r.json();
    assert_eq!(j["failed"], 1, "{j}");
    assert_eq!(j["simulated_failures"], serde_json::json!([]), "{j}");
    assert_eq!(j["failures"][0]["thing"], "jobdev-1", "{j}");
    let error = j["failures"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("job fw-gone: firmware download failed: GET "),
        "{error}"
    );
    assert!(error.contains("HTTP 404"), "{error}");
    let (status, details) = execution(c, "fw-gone", "jobdev-1").await;
    assert_eq!(status, JobExecutionStatus::Failed);
    assert!(details["reason"].contains("HTTP 404"), "{details:?}");

    // A firmware server that never answers, and a run bounded at 3 s: the device is cut off
    // mid-execution, which fails the run naming the job; the execution stays IN_PROGRESS.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = stall.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            open.push(s);
        }
    });
    let doc = serde_json::json!({"operation": "firmware_update", "firmware": {"version": "3.0.0",
        "size": 10, "sha256": "0".repeat(64), "url": format!("http://127.0.0.1:{port}/fw.bin")}});
    c.iot
        .create_job()
        .job_id("fw-stall")
        .set_targets(Some(thing_arns(c, &["jobdev-2"]).await))
        .document(doc.to_string())
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    let r = w.run(&[
        "device",
        "simulate",
        "jobdev-2",
        "--jobs",
        "--max-duration",
        "3",
        "--output",
        "json",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    held.abort();
    assert_eq!(r.code(), 1, "{}", r.all());
    let j = r.json();
    assert_eq!(j["max_duration_reached"], true, "{j}");
    assert_eq!(
        j["failures"][0]["error"], "--max-duration reached with job fw-stall not finished",
        "{j}"
    );
    assert_eq!(
        j["per_device"][0]["jobs"][0]["status"], "IN_PROGRESS",
        "{j}"
    );
    let (status, details) = execution(c, "fw-stall", "jobdev-2").await;
    assert_eq!(status, JobExecutionStatus::InProgress);
    assert_eq!(details["step"], "downloading");
}
