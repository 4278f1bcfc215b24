//! The deployer's IAM policy in docs/aws-permissions.md against what iotreg really calls: every
//! command a user can run (plan, up in its variants, status, verify with the end-to-end check,
//! down; one device and a fleet; repairs, config changes, removals, a resumed crash) runs on
//! the local AWS, and every operation its request log records during that command must be
//! allowed by that command's section of the document. A new AWS call cannot ship undocumented.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;

/// The document's sections, by the command groups they cover.
const PLAN_AND_STATUS: &str = "plan and status";
const UP: &str = "up";
const DOWN: &str = "down";
const VERIFY: &str = "verify";
const DEVICE: &str = "device";
const JOB: &str = "job";
const SECTIONS: [&str; 6] = [PLAN_AND_STATUS, UP, DOWN, VERIFY, DEVICE, JOB];

/// No client-side rate limits: the local AWS has no quotas.
const NO_LIMITS: &str = "[aws.rate_limits]\n\"*\" = 0\n";

/// The allowed actions of each section of docs/aws-permissions.md: a level-2 heading per command
/// group, followed by exactly one fenced `json` block holding an IAM policy document.
fn documented() -> BTreeMap<String, Vec<String>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/aws-permissions.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut block: Option<String> = None;
    for line in text.lines() {
        if let Some(body) = block.as_mut() {
            if line.trim_start().starts_with("```") {
                let section = current.clone().unwrap();
                let doc: serde_json::Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("section {section:?}: the json block: {e}"));
                let actions = sections.get_mut(&section).unwrap();
                assert!(
                    actions.is_empty(),
                    "section {section:?} has more than one json block"
                );
                actions.extend(allowed_actions(&section, &doc));
                block = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
        } else if let Some(heading) = line.strip_prefix("## ") {
            let heading = heading.trim().to_string();
            current = SECTIONS
                .contains(&heading.as_str())
                .then(|| heading.clone());
            if current.is_some() {
                assert!(
                    sections.insert(heading.clone(), Vec::new()).is_none(),
                    "section {heading:?} appears twice"
                );
            }
        } else if line.trim_start().starts_with("```json") && current.is_some() {
            block = Some(String::new());
        }
    }
    for s in SECTIONS {
        let actions = sections
            .get(s)
            .unwrap_or_else(|| panic!("{}: no `## {s}` section", path.display()));
        assert!(!actions.is_empty(), "section {s:?}: no json policy block");
    }
    sections
}

/// The actions an IAM policy document allows.
fn allowed_actions(section: &str, doc: &serde_json::Value) -> Vec<String> {
    assert_eq!(doc["Version"], "2012-10-17", "section {section:?}: Version");
    let statements = doc["Statement"]
        .as_array()
        .unwrap_or_else(|| panic!("section {section:?}: Statement is not a list"));
    let mut out = Vec::new();
    for s in statements {
        if s["Effect"] != "Allow" {
            continue;
        }
        match &s["Action"] {
            serde_json::Value::String(a) => out.push(a.clone()),
            serde_json::Value::Array(list) => {
                out.extend(list.iter().map(|a| a.as_str().unwrap().to_string()))
            }
            other => panic!("section {section:?}: Action {other}"),
        }
    }
    out
}

/// IAM action names are case-insensitive and may end in or contain `*`.
fn allows(patterns: &[String], action: &str) -> bool {
    fn glob(p: &[u8], a: &[u8]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((b'*', rest)) => (0..=a.len()).any(|i| glob(rest, &a[i..])),
            Some((c, rest)) => a
                .split_first()
                .is_some_and(|(d, tail)| c.eq_ignore_ascii_case(d) && glob(rest, tail)),
        }
    }
    patterns
        .iter()
        .any(|p| glob(p.as_bytes(), action.as_bytes()))
}

/// The IAM action a logged request needs, or None when it needs no permission. The request log
/// names botocore's services; CloudWatch signs as `monitoring`. An unknown service or an
/// unresolved operation comes back as itself, so it fails the check visibly.
fn iam_action(service: &str, operation: &str) -> Option<String> {
    let prefix = match service {
        "iot" | "iot-data" => "iot",
        "iam" => "iam",
        "lambda" => "lambda",
        "logs" => "logs",
        "sns" => "sns",
        "cloudwatch" | "monitoring" => "cloudwatch",
        "kinesis" => "kinesis",
        "dynamodb" => "dynamodb",
        "sqs" => "sqs",
        // The jobs' firmware bucket (the shared state in S3 has a test of its own).
        "s3" => return Some(s3_action(operation)),
        // "You don't need any permissions to perform this operation" (STS API reference).
        "sts" if operation == "GetCallerIdentity" => return None,
        other => return Some(format!("unknown service {other:?}: {operation}")),
    };
    Some(format!("{prefix}:{operation}"))
}

/// What each command group made the local AWS do, with the command lines that did it.
#[derive(Default)]
struct Seen {
    actions: BTreeMap<&'static str, BTreeMap<String, BTreeSet<String>>>,
}

impl Seen {
    /// Runs iotreg, expects `code`, and files the requests logged meanwhile under `section`.
    fn run(
        &mut self,
        emu: &Emulator,
        w: &Workdir,
        section: &'static str,
        args: &[&str],
        code: i32,
    ) {
        let before = emu.requests().len();
        let r = w.run(args);
        assert_eq!(r.code(), code, "iotreg {args:?}:\n{}", r.all());
        self.since(emu, before, section, &args.join(" "));
    }

    fn since(&mut self, emu: &Emulator, before: usize, section: &'static str, what: &str) {
        for (service, operation) in emu.requests().into_iter().skip(before) {
            // The deployed Lambda handler publishes its alert with the function's role, not
            // the deployer's identity; its calls reach the same local AWS with the same fake
            // credentials, so the log cannot tell them apart. iotreg itself never calls
            // sns:Publish: HIGH readings make the handler do it, verify's and those of the
            // simulated devices, whose handler runs asynchronously and may finish while the
            // next command runs.
            if service == "sns" && operation == "Publish" {
                continue;
            }
            // Likewise the anomaly detector reads and writes its per-device state with its own
            // role; iotreg only creates, reads and deletes the table.
            if service == "dynamodb"
                && matches!(operation.as_str(), "BatchGetItem" | "BatchWriteItem")
            {
                continue;
            }
            if let Some(action) = iam_action(&service, &operation) {
                self.actions
                    .entry(section)
                    .or_default()
                    .entry(action)
                    .or_default()
                    .insert(what.to_string());
            }
        }
    }

    fn saw(&self, section: &str, action: &str) -> bool {
        self.actions
            .get(section)
            .is_some_and(|a| a.contains_key(action))
    }
}

fn config(w: &Workdir, text: &str) {
    std::fs::write(w.path().join("iotreg.toml"), text).unwrap();
}

fn manifest(w: &Workdir, rows: std::ops::Range<usize>) {
    let mut text = String::from("thing_name,serial,line\n");
    for i in rows {
        text.push_str(&format!("perm-sensor-{i:02},SN-{i:02},L{}\n", i % 2));
    }
    std::fs::write(w.path().join("devices.csv"), text).unwrap();
}

/// Changes made from outside, so that `plan`, `verify` and `up` take their repair paths.
async fn sabotage(c: &Clients, suffix: &str) {
    let n = drift::Names::new(suffix);
    drift::attribute(c, &n, "location", "Somewhere-Else").await;
    drift::memory(c, &n, 1024).await;
    drift::shadow(
        c,
        &n,
        serde_json::json!({"state": {"desired": {"sampling_rate": 1}}}),
    )
    .await;
    c.iot
        .disable_topic_rule()
        .rule_name(&n.rule)
        .send()
        .await
        .unwrap();
    let cert_arn = c
        .iot
        .list_thing_principals()
        .thing_name(&n.thing)
        .send()
        .await
        .unwrap()
        .principals()[0]
        .clone();
    let cert_id = cert_arn.rsplit('/').next().unwrap().to_string();
    c.iot
        .update_certificate()
        .certificate_id(&cert_id)
        .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
        .send()
        .await
        .unwrap();
    c.iot
        .detach_policy()
        .policy_name(&n.policy)
        .target(&cert_arn)
        .send()
        .await
        .unwrap();
    // The invoke permission replaced by one any rule may use.
    c.lambda
        .remove_permission()
        .function_name(&n.function)
        .statement_id("iot-lambda-permission")
        .send()
        .await
        .unwrap();
    c.lambda
        .add_permission()
        .function_name(&n.function)
        .statement_id("iot-lambda-permission")
        .principal("iot.amazonaws.com")
        .action("lambda:InvokeFunction")
        .send()
        .await
        .unwrap();
    c.iam
        .delete_role_policy()
        .role_name(format!("iot-lambda-role-{suffix}"))
        .policy_name("publish-temperature-alerts")
        .send()
        .await
        .unwrap();
    c.cloudwatch
        .delete_alarms()
        .alarm_names(format!("iot-data-processor-{suffix}-errors"))
        .send()
        .await
        .unwrap();
}

/// `up` SIGKILLed once CreateCertificateFromCsr has been carried out, before its answer.
fn kill_up(emu: &Emulator, w: &Workdir, seen: &mut Seen) {
    let before = emu.requests().len();
    let mut child = emu.start_held(w, &["up"], "CreateCertificateFromCsr", 10);
    child.kill().unwrap();
    child.wait().unwrap();
    // Calls still in flight when it died are logged as they finish.
    std::thread::sleep(std::time::Duration::from_millis(500));
    seen.since(emu, before, UP, "up (killed)");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_of_every_command_is_in_the_documented_policy() {
    let doc = documented();
    let emu = Emulator::start();
    let c = emu.clients().await;
    let mut seen = Seen::default();

    // A thing type another deployment (with an email subscription) made: the one below
    // borrows it.
    let other = emu.workdir();
    config(&other, "[monitoring]\nalert_email = \"team@example.com\"\n");
    seen.run(&emu, &other, UP, &["up"], 0);

    // One device, with an email subscription: its whole life.
    let w = emu.workdir();
    config(&w, "[monitoring]\nalert_email = \"ops@example.com\"\n");
    seen.run(&emu, &w, PLAN_AND_STATUS, &["plan"], 0);
    seen.run(&emu, &w, UP, &["up", "--dry-run"], 0);
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(
        &emu,
        &w,
        PLAN_AND_STATUS,
        &["plan", "--detailed-exitcode"],
        0,
    );
    seen.run(&emu, &w, PLAN_AND_STATUS, &["status"], 0);
    seen.run(&emu, &w, VERIFY, &["verify", "--junit", "verify.xml"], 0);
    let suffix = w.suffix();

    // Changed from outside: plan and verify see it, up repairs it.
    sabotage(&c, &suffix).await;
    seen.run(
        &emu,
        &w,
        PLAN_AND_STATUS,
        &["plan", "--detailed-exitcode"],
        3,
    );
    seen.run(&emu, &w, PLAN_AND_STATUS, &["status"], 0);
    seen.run(&emu, &w, VERIFY, &["verify", "--timeout", "5"], 1);
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, VERIFY, &["verify"], 0);

    // Config changes applied in place, renames, removals.
    config(
        &w,
        "[monitoring]\nalert_email = \"oncall@example.com\"\ndashboard_name = \"perm-{{suffix}}\"\n\
         [thing]\nattributes = { deviceType = \"temperature\", location = \"Line-B\" }\n\
         [function]\nmemory_mb = 512\nsource = \"handler.py\"\n[function.environment]\nLEVEL = \"debug\"\n\
         [rule]\nsql = \"SELECT * FROM 'sensor/temperature/+'\"\nenabled = false\n\
         [policy]\ntemplate = \"policy.json\"\n[role]\ntrust_template = \"trust.json\"\n\
         managed_policies = [\n  \"arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole\",\n  \"arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess\",\n]\n",
    );
    let template =
        |name: &str| std::fs::read_to_string(repo().join("templates").join(name)).unwrap();
    let write = |name: &str, text: String| std::fs::write(w.path().join(name), text).unwrap();
    write(
        "handler.py",
        format!(
            "# a handler of one's own\n{}",
            template("lambda-function.py")
        ),
    );
    write(
        "trust.json",
        template("lambda-trust-policy.json")
            .replace("\"Effect\"", "\"Sid\": \"Lambda\", \"Effect\""),
    );
    write(
        "policy.json",
        template("device-policy.json").replace("sensor/temperature", "sensor/temp"),
    );
    seen.run(
        &emu,
        &w,
        PLAN_AND_STATUS,
        &["plan", "--detailed-exitcode"],
        3,
    );
    seen.run(&emu, &w, UP, &["up"], 0);
    // The other deployment leaves; the shared type stays, since this one's thing uses it.
    seen.run(&emu, &other, DOWN, &["down"], 0);
    // The thing type renamed (a replace up carries out: the borrowed type, now unused, is
    // checked for iotreg's tag and deleted), the shadow and monitoring turned off.
    config(
        &w,
        "[thing_type]\nname = \"PermissionsSensor\"\n[shadow]\nenabled = false\n\
         [monitoring]\nenabled = false\n",
    );
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, VERIFY, &["verify", "--skip-e2e"], 0);
    seen.run(&emu, &w, DOWN, &["down"], 0);
    seen.run(&emu, &w, DOWN, &["down"], 0);

    // Killed with a certificate issued but unanswered: plan and status see the intent, and
    // down finds the certificate by its public key.
    let k = emu.workdir();
    kill_up(&emu, &k, &mut seen);
    seen.run(&emu, &k, PLAN_AND_STATUS, &["plan"], 0);
    seen.run(&emu, &k, PLAN_AND_STATUS, &["status"], 0);
    seen.run(&emu, &k, DOWN, &["down"], 0);
    // The same, resumed by up.
    let w = emu.workdir();
    kill_up(&emu, &w, &mut seen);
    seen.run(&emu, &w, UP, &["up"], 0);

    // The recipe's certificate mode (AWS makes the key), on the thing type made above; the
    // first deployment leaves, and the last user of the type checks its tag and deletes it.
    let g = emu.workdir();
    config(&g, "[certificate]\nmode = \"aws-generated\"\n");
    seen.run(&emu, &g, UP, &["up"], 0);
    seen.run(&emu, &g, VERIFY, &["verify", "--skip-e2e"], 0);
    seen.run(&emu, &w, DOWN, &["down"], 0);
    seen.run(&emu, &g, DOWN, &["down", "--wait"], 0);

    // A fleet: planned, provisioned, checked, shrunk with --prune, retired.
    let w = emu.workdir();
    config(&w, NO_LIMITS);
    manifest(&w, 0..5);
    seen.run(
        &emu,
        &w,
        PLAN_AND_STATUS,
        &["plan", "--fleet", "devices.csv"],
        0,
    );
    seen.run(&emu, &w, UP, &["up", "--fleet", "devices.csv"], 0);
    seen.run(&emu, &w, UP, &["up", "--fleet", "devices.csv"], 0);
    seen.run(&emu, &w, PLAN_AND_STATUS, &["status"], 0);
    seen.run(&emu, &w, VERIFY, &["verify", "--sample", "2"], 0);
    // The device commands, as the devices (the gateway's endpoint set, as on a device).
    seen.run(
        &emu,
        &w,
        DEVICE,
        &["device", "bundle", "perm-sensor-01", "--out", "b"],
        0,
    );
    seen.run(
        &emu,
        &w,
        DEVICE,
        &["device", "publish", "perm-sensor-01"],
        0,
    );
    seen.run(
        &emu,
        &w,
        DEVICE,
        &[
            "device",
            "simulate",
            "--fleet",
            "--count",
            "1",
            "--interval",
            "0.1",
        ],
        0,
    );
    seen.run(
        &emu,
        &w,
        DEVICE,
        &["device", "publish", "perm-sensor-01", "--protocol", "wss"],
        0,
    );
    manifest(&w, 0..3);
    seen.run(
        &emu,
        &w,
        UP,
        &["up", "--fleet", "devices.csv", "--prune"],
        0,
    );
    seen.run(&emu, &w, DOWN, &["down"], 0);

    // A fleet in a thing group with the policy on the group; then back to the certificates
    // and out of the group (up retires the group, its attachment and the memberships).
    let w = emu.workdir();
    let grouped = format!(
        "{NO_LIMITS}[fleet]\ngroup = \"perm-group-{{{{suffix}}}}\"\n[policy]\nattach_to = \"group\"\n"
    );
    config(&w, &grouped);
    manifest(&w, 0..3);
    seen.run(&emu, &w, UP, &["up", "--fleet", "devices.csv"], 0);
    seen.run(
        &emu,
        &w,
        PLAN_AND_STATUS,
        &["plan", "--fleet", "devices.csv"],
        0,
    );
    seen.run(&emu, &w, PLAN_AND_STATUS, &["status"], 0);
    seen.run(
        &emu,
        &w,
        VERIFY,
        &["verify", "--skip-e2e", "--skip-device"],
        0,
    );
    config(&w, NO_LIMITS);
    seen.run(&emu, &w, UP, &["up", "--fleet", "devices.csv"], 0);
    config(&w, &grouped);
    seen.run(&emu, &w, UP, &["up", "--fleet", "devices.csv"], 0);
    seen.run(&emu, &w, DOWN, &["down"], 0);

    // Claim provisioning: the template, the claim certificate and the hook; two devices
    // provisioning themselves (as devices: no AWS API call) and one refused; a changed
    // allow-list (a new hook package); down retiring the provisioned devices.
    let w = emu.workdir();
    let claim = format!(
        "{NO_LIMITS}[provisioning]\nmode = \"claim\"\n[fleet]\nmanifest = \"devices.csv\"\n"
    );
    config(&w, &claim);
    std::fs::write(
        w.path().join("devices.csv"),
        "thing_name,serial_number\nclaim-01,SN-01\nclaim-02,SN-02\n",
    )
    .unwrap();
    seen.run(&emu, &w, PLAN_AND_STATUS, &["plan"], 0);
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(
        &emu,
        &w,
        DEVICE,
        &["device", "provision", "--claim", "--serial", "SN-01"],
        0,
    );
    std::fs::write(w.path().join("serials.txt"), "SN-02\nROGUE\n").unwrap();
    seen.run(
        &emu,
        &w,
        DEVICE,
        &[
            "device",
            "simulate",
            "--claim",
            "--count",
            "2",
            "--serials",
            "serials.txt",
        ],
        0,
    );
    seen.run(&emu, &w, PLAN_AND_STATUS, &["status"], 0);
    seen.run(&emu, &w, VERIFY, &["verify", "--skip-e2e"], 0);
    std::fs::write(
        w.path().join("devices.csv"),
        "thing_name,serial_number\nclaim-01,SN-01\nclaim-02,SN-02\nclaim-03,SN-03\n",
    )
    .unwrap();
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, DOWN, &["down"], 0);

    // Fleet operations: job templates with firmware, jobs started, followed, cancelled,
    // listed, a template replaced, and down retiring a running job.
    let w = emu.workdir();
    std::fs::write(w.path().join("fw.bin"), b"firmware v2").unwrap();
    manifest(&w, 0..3);
    let jobs_config = |version: &str| {
        format!(
            "{NO_LIMITS}[fleet]\nmanifest = \"devices.csv\"\ngroup = \"perm-{{{{suffix}}}}\"\n[[job_templates]]\nname = \"fw\"\nfirmware = \"fw.bin\"\nversion = \"{version}\"\n[job_templates.rollout]\nmaximum_per_minute = 100\n"
        )
    };
    config(&w, &jobs_config("2.0.0"));
    seen.run(&emu, &w, PLAN_AND_STATUS, &["plan"], 0);
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, PLAN_AND_STATUS, &["plan"], 0);
    seen.run(&emu, &w, PLAN_AND_STATUS, &["status"], 0);
    seen.run(
        &emu,
        &w,
        VERIFY,
        &["verify", "--skip-e2e", "--skip-device"],
        0,
    );
    let before = emu.requests().len();
    let started = w.ok(&["job", "start", "fw", "--output", "json"]);
    seen.since(&emu, before, JOB, "job start fw");
    let id = started.json()["job_id"].as_str().unwrap().to_string();
    seen.run(&emu, &w, JOB, &["job", "status", &id], 0);
    seen.run(&emu, &w, JOB, &["job", "list"], 0);
    seen.run(&emu, &w, JOB, &["job", "cancel", &id], 0);
    seen.run(
        &emu,
        &w,
        JOB,
        &[
            "job",
            "start",
            "--set",
            "reporting_interval=30",
            "--job-id",
            "perm-config",
        ],
        0,
    );
    config(&w, &jobs_config("2.0.1"));
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, JOB, &["job", "start", "fw"], 0);
    seen.run(&emu, &w, DOWN, &["down"], 0);

    // Telemetry analytics: deployed, verified end to end (the probe's anomaly), changed
    // (provisioned shards, a batch size, a threshold), turned off (its resources strays that
    // `up` deletes), deployed again and taken down.
    let w = emu.workdir();
    let analytics = |extra: &str| format!("{NO_LIMITS}[analytics]\nenabled = true\n{extra}");
    config(&w, &analytics(""));
    seen.run(&emu, &w, PLAN_AND_STATUS, &["plan"], 0);
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, PLAN_AND_STATUS, &["status"], 0);
    seen.run(&emu, &w, VERIFY, &["verify", "--skip-device"], 0);
    config(
        &w,
        &analytics("shards = 2\nbatch_size = 50\nthreshold = 5.0\n"),
    );
    seen.run(&emu, &w, PLAN_AND_STATUS, &["plan"], 0);
    seen.run(&emu, &w, UP, &["up"], 0);
    config(&w, NO_LIMITS);
    seen.run(&emu, &w, UP, &["up"], 0);
    config(&w, &analytics(""));
    seen.run(&emu, &w, UP, &["up"], 0);
    seen.run(&emu, &w, DOWN, &["down"], 0);

    // Every action seen in a command is allowed by its section.
    let mut missing = Vec::new();
    for (section, actions) in &seen.actions {
        for (action, commands) in actions {
            if !allows(&doc[*section], action) {
                let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
                missing.push(format!(
                    "  ## {section}: {action}  (called by: iotreg {})",
                    commands.join("; iotreg ")
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/aws-permissions.md does not allow what these commands called:\n{}",
        missing.join("\n")
    );

    // The test saw what it is about.
    for (section, action) in [
        (VERIFY, "iot:Publish"),
        (VERIFY, "logs:FilterLogEvents"),
        (VERIFY, "iot:TestAuthorization"),
        (VERIFY, "iot:UpdateThingShadow"),
        (UP, "iot:ListTagsForResource"),
        (DOWN, "iot:ListTagsForResource"),
        (UP, "iot:CreateCertificateFromCsr"),
        (UP, "iot:ListCertificates"),
        (DOWN, "iot:ListCertificates"),
        (UP, "iot:CreateKeysAndCertificate"),
        (UP, "cloudwatch:PutMetricAlarm"),
        (UP, "lambda:UpdateFunctionCode"),
        (UP, "iam:UpdateAssumeRolePolicy"),
        (UP, "lambda:RemovePermission"),
        (DOWN, "sns:Unsubscribe"),
        (DOWN, "cloudwatch:DeleteDashboards"),
        (UP, "iot:CreateProvisioningTemplate"),
        (DOWN, "iot:DeleteProvisioningTemplate"),
        (DOWN, "iot:ListThings"),
        (UP, "iot:CreateJobTemplate"),
        (UP, "iot:DeleteJobTemplate"),
        (UP, "s3:PutObject"),
        (JOB, "iot:CreateJob"),
        (JOB, "iot:GetThingShadow"),
        (JOB, "iot:CancelJob"),
        (DOWN, "iot:CancelJob"),
        (DOWN, "iot:DeleteJob"),
        (DOWN, "s3:DeleteBucket"),
        (UP, "kinesis:CreateStream"),
        (UP, "kinesis:UpdateStreamMode"),
        (UP, "kinesis:DeleteStream"),
        (UP, "dynamodb:CreateTable"),
        (UP, "dynamodb:UpdateTimeToLive"),
        (UP, "sqs:CreateQueue"),
        (UP, "lambda:CreateEventSourceMapping"),
        (UP, "lambda:UpdateEventSourceMapping"),
        (UP, "lambda:DeleteEventSourceMapping"),
        (VERIFY, "lambda:GetEventSourceMapping"),
        (DOWN, "dynamodb:DeleteTable"),
        (DOWN, "sqs:DeleteQueue"),
    ] {
        assert!(seen.saw(section, action), "{section}: never saw {action}");
    }
    // Named in the issue: verify's publish and log read, the thing type's ownership check.
    // And what the local AWS cannot show: on AWS, CreateFunction and UpdateFunctionConfiguration
    // pass the role (iam:PassRole); GetTopicRule answers a missing rule with
    // UnauthorizedException, which iotreg settles with ListTopicRules; and the shadow's data
    // endpoint is looked up first (iot:DescribeEndpoint) wherever the shadow is read or written.
    for (section, action) in [
        (VERIFY, "iot:Publish"),
        (VERIFY, "logs:FilterLogEvents"),
        (UP, "iot:ListTagsForResource"),
        (DOWN, "iot:ListTagsForResource"),
        (UP, "iam:PassRole"),
        (PLAN_AND_STATUS, "iot:ListTopicRules"),
        (UP, "iot:ListTopicRules"),
        (DOWN, "iot:ListTopicRules"),
        (VERIFY, "iot:ListTopicRules"),
        (PLAN_AND_STATUS, "iot:DescribeEndpoint"),
        (UP, "iot:DescribeEndpoint"),
        (DOWN, "iot:DescribeEndpoint"),
        (VERIFY, "iot:DescribeEndpoint"),
        // The device commands look the endpoint up when it is not configured, and a WebSocket
        // connection is authorized by IAM (the local AWS enforces neither).
        (DEVICE, "iot:DescribeEndpoint"),
        (DEVICE, "iot:Connect"),
        (DEVICE, "iot:Receive"),
        // CreateJob from a template with a pre-signing role hands AWS IoT that role.
        (JOB, "iam:PassRole"),
    ] {
        assert!(
            allows(&doc[section], action),
            "docs/aws-permissions.md, ## {section}: {action} is missing"
        );
    }
}

/// The two S3 policies of `## Shared state in S3`: the first json block (the commands that
/// write the state) and the one under `### Read-only identities`.
fn documented_s3() -> (Vec<String>, Vec<String>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/aws-permissions.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let section = text
        .split("\n## Shared state in S3\n")
        .nth(1)
        .expect("a `## Shared state in S3` section")
        .split("\n## ")
        .next()
        .unwrap();
    let first_json = |s: &str, what: &str| -> Vec<String> {
        let body = s
            .split("```json\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap_or_else(|| panic!("{what}: no json block"));
        let doc: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}"));
        allowed_actions(what, &doc)
    };
    let (writing, read_only) = section
        .split_once("\n### Read-only identities\n")
        .expect("a `### Read-only identities` subsection");
    (
        first_json(writing, "Shared state in S3"),
        first_json(read_only, "Read-only identities"),
    )
}

/// The IAM action an S3 operation needs (S3's actions are not all named after operations).
fn s3_action(operation: &str) -> String {
    match operation {
        // HeadBucket is authorized as s3:ListBucket (S3 API reference, HeadBucket).
        "ListObjectsV2" | "ListObjects" | "HeadBucket" => "s3:ListBucket".into(),
        "HeadObject" => "s3:GetObject".into(),
        "DeleteObjects" => "s3:DeleteObject".into(),
        "GetPublicAccessBlock" => "s3:GetBucketPublicAccessBlock".into(),
        "GetBucketEncryption" => "s3:GetEncryptionConfiguration".into(),
        op => format!("s3:{op}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_s3_call_of_the_shared_state_is_in_the_documented_policy() {
    let (writing, read_only) = documented_s3();
    let emu = Emulator::start();
    let c = emu.clients().await;
    let bucket = Bucket::create(&c.s3, "perm-iot-state", true).await;
    let state = bucket.url("perm/state.json");
    // Per command line: the S3 actions it needed, and whether it only reads.
    let mut seen: Vec<(String, bool, BTreeSet<String>)> = Vec::new();
    let mut run = |w: &Workdir, args: &[&str], code: i32, reads_only: bool| {
        let before = emu.requests().len();
        let mut full = vec!["--state", state.as_str()];
        full.extend_from_slice(args);
        let r = w.run(&full);
        assert_eq!(r.code(), code, "iotreg {full:?}:\n{}", r.all());
        let actions = emu
            .requests()
            .into_iter()
            .skip(before)
            .filter(|(service, _)| service == "s3")
            .map(|(_, op)| s3_action(&op))
            .collect();
        seen.push((args.join(" "), reads_only, actions));
        r
    };
    let w = emu.workdir();
    config(&w, NO_LIMITS);
    manifest(&w, 0..4);
    run(&w, &["plan"], 0, true);
    run(&w, &["up", "--fleet", "devices.csv"], 0, false);
    run(&w, &["plan", "--fleet", "devices.csv"], 0, true);
    run(&w, &["status"], 0, true);
    run(&w, &["verify", "--skip-e2e", "--sample", "1"], 0, true);
    run(&w, &["state", "list"], 0, true);
    run(&w, &["state", "show", "policy"], 0, true);
    let pulled = run(&w, &["state", "pull"], 0, true).stdout();
    std::fs::write(w.path().join("s.json"), pulled).unwrap();
    run(
        &w,
        &["device", "bundle", "perm-sensor-01", "--out", "b"],
        0,
        true,
    );
    run(
        &w,
        &["state", "rm", "fleet/perm-sensor-03/shadow"],
        0,
        false,
    );
    run(&w, &["state", "push", "s.json", "--force"], 0, false);
    // Killed holding the lock, then the lock forced.
    let mut child = emu.start_held(
        &w,
        &["--state", &state, "up", "--fleet", "devices.csv", "--prune"],
        "DescribeThing",
        10,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let refused = run(&w, &["up", "--fleet", "devices.csv"], 1, false).stderr();
    let id = refused
        .split("iotreg force-unlock ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    run(&w, &["force-unlock", &id, "--yes"], 0, false);
    run(&w, &["state", "migrate", "--to", "local.json"], 0, false);
    let back = emu.workdir();
    std::fs::copy(w.path().join("local.json"), back.path().join("local.json")).unwrap();
    for f in ["iotreg.toml", "devices.csv"] {
        std::fs::copy(w.path().join(f), back.path().join(f)).unwrap();
    }
    let r = back.run(&["--state", "local.json", "state", "migrate", "--to", &state]);
    assert_eq!(r.code(), 0, "{}", r.all());
    run(&w, &["down"], 0, false);
    assert_eq!(bucket.keys().await, Vec::<String>::new());

    let mut missing = Vec::new();
    let mut all = BTreeSet::new();
    for (what, reads_only, actions) in &seen {
        let policy = if *reads_only { &read_only } else { &writing };
        for a in actions {
            all.insert(a.clone());
            if !allows(policy, a) {
                missing.push(format!("{a} (by `{what}`)"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/aws-permissions.md, ## Shared state in S3 does not allow:\n{}",
        missing.join("\n")
    );
    for a in [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:GetBucketVersioning",
        "s3:GetBucketPublicAccessBlock",
        "s3:GetEncryptionConfiguration",
    ] {
        assert!(all.contains(a), "never saw {a}: {all:?}");
    }
}
