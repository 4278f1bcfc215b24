//! A bad day, end to end: shared thing types, concurrent runs, signals, secrets, permissions,
//! the policy lint and a hung endpoint.

use std::os::unix::fs::PermissionsExt;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::*;

fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

async fn thing_type_exists(c: &Clients) -> bool {
    c.iot
        .describe_thing_type()
        .thing_type_name("TemperatureSensor")
        .send()
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_deployments_share_the_thing_type_and_the_last_one_out_removes_it() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let (a, b) = (emu.workdir(), emu.workdir());
    a.ok(&["up"]);
    let second = b.ok(&["up", "--output", "json"]).json();
    let tt = &second["resources"][0];
    assert_eq!(tt["key"], "thing_type");
    assert_eq!(
        tt["outcome"], "adopted",
        "the second deployment shares the type"
    );
    assert_ne!(a.suffix(), b.suffix());
    let down_a = a.ok(&["down", "--output", "json"]).json();
    assert_eq!(down_a["resources"][0]["outcome"], "retained");
    assert!(
        thing_type_exists(&c).await,
        "still used by the second deployment"
    );
    b.ok(&["down"]);
    assert!(
        !thing_type_exists(&c).await,
        "the last deployment out removed it"
    );
    assert_eq!(inventory(&c).await, Inventory::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thing_type_made_by_someone_else_is_never_deleted() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    c.iot
        .create_thing_type()
        .thing_type_name("TemperatureSensor")
        .send()
        .await
        .unwrap();
    let w = emu.workdir();
    w.ok(&["up"]);
    let down = w.ok(&["down", "--output", "json"]).json();
    assert_eq!(down["resources"][0]["outcome"], "retained");
    assert!(thing_type_exists(&c).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_the_same_state_fails_at_once_naming_the_holder() {
    let emu = Emulator::start();
    let w = emu.workdir();
    w.ok(&["up"]);
    // Hold a write of `up` (after a sabotage there is one to make) while the others try.
    let c = emu.clients().await;
    c.iot
        .disable_topic_rule()
        .rule_name(format!("sensor_data_rule_{}", w.suffix()))
        .send()
        .await
        .unwrap();
    let first = emu.start_held(&w, &["up"], "EnableTopicRule", 4);
    let pid = first.id();
    for args in [["up"], ["down"]] {
        let t0 = Instant::now();
        let r = w.run(&args);
        assert_eq!(r.code(), 1, "{args:?}: {}", r.all());
        assert!(
            r.stderr()
                .contains(&format!("locked by another iotreg run (pid {pid})")),
            "{args:?}: {}",
            r.all()
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "failed at once");
    }
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The state file is whole and the stack intact.
    assert!(w.state().is_some());
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_holding_the_lock_is_taken_over_with_a_warning() {
    let emu = Emulator::start();
    let w = emu.workdir();
    let mut child = emu.start_held(&w, &["up"], "CreatePolicy", 10);
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let r = w.ok(&["up"]);
    assert!(
        r.stderr().contains(&format!(
            "a previous iotreg run (pid {pid}) ended without releasing its lock"
        )),
        "{}",
        r.all()
    );
    let c = emu.clients().await;
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_finishes_the_step_in_flight_saves_state_and_exits_130() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    let child = emu.start_held(&w, &["up", "--output", "json"], "CreateFunction", 2);
    let t0 = Instant::now();
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "waited for the step in flight"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let function = summary["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "function")
        .unwrap();
    assert_eq!(
        function["outcome"], "created",
        "the in-flight step completed"
    );
    let state = w.state().unwrap();
    let rec = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "function")
        .unwrap()
        .clone();
    assert_eq!(rec["phase"], "created", "and was saved");
    // Nothing new was started after the interrupt: the rule (which needs the function) is absent.
    assert!(c
        .iot
        .list_topic_rules()
        .send()
        .await
        .unwrap()
        .rules()
        .is_empty());
    w.ok(&["up"]);
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_ctrl_c_exits_at_once_and_state_stays_consistent() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    let child = emu.start_held(&w, &["up"], "CreateFunction", 20);
    let t0 = Instant::now();
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "did not wait for the held call"
    );
    // The state file parses, and the next up converges without duplicates.
    assert!(w.state().is_some());
    w.ok(&["up"]);
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
    w.ok(&["down"]);
    assert_eq!(inventory(&c).await, Inventory::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_private_key_never_appears_in_any_output() {
    let emu = Emulator::start();
    let w = emu.workdir();
    let mut outputs = String::new();
    for args in [
        &["-vv", "up"][..],
        &["-vv", "up", "--output", "json"],
        &["-vv", "status", "--output", "json"],
        &["-vv", "verify", "--output", "json"],
    ] {
        outputs.push_str(&w.ok(args).all());
    }
    let dir = w.path().join(".iotreg");
    let key_file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-private.pem.key"))
        .unwrap();
    let key = std::fs::read_to_string(&key_file).unwrap();
    let state = std::fs::read_to_string(dir.join("state.json")).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("state.json")), 0o600);
    outputs.push_str(&w.ok(&["-vv", "down"]).all());
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!outputs.contains(line), "private key material in output");
        assert!(!state.contains(line), "private key material in state");
    }
    assert!(!outputs.contains("PRIVATE KEY") && !state.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_never_written_where_others_can_write() {
    let emu = Emulator::start();
    let w = emu.workdir();
    let shared = w.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(w.path().join("iotreg.toml"), "key_dir = \"shared\"\n").unwrap();
    let r = w.run(&["up"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(
        r.stderr().contains("is writable by other users"),
        "{}",
        r.all()
    );
    assert!(emu.requests().is_empty());
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
    w.ok(&["up"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broad_policy_needs_an_explicit_flag() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(
        w.path().join("broad.json"),
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}"#,
    )
    .unwrap();
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[policy]\ntemplate = \"broad.json\"\n",
    )
    .unwrap();
    let r = w.run(&["up"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(r
        .stderr()
        .contains("broad.json: the device policy is broader than least privilege"));
    assert!(r.stderr().contains("\"iot:*\"") && r.stderr().contains("--allow-broad-policy"));
    assert!(emu.requests().is_empty());
    w.ok(&["up", "--allow-broad-policy"]);
}

#[test]
fn a_hung_endpoint_is_an_error_naming_the_call_not_a_hang() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("iotreg.toml"),
        "[aws]\nattempt_timeout_s = 1\ncall_timeout_s = 3\nmax_attempts = 2\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iotreg"))
        .arg("up")
        .current_dir(dir.path())
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        stderr.contains("GetCallerIdentity"),
        "names the call: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("timeout") || stderr.contains("timed out"),
        "{stderr}"
    );
    drop(accepted);
}
