//! Shared state in S3: the lock, conditional writes, the state commands, and bad input, seen
//! from outside (the bucket's objects, the stack in the emulator, exit codes and messages).

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

const KEY: &str = "prod/iot/state.json";

/// An emulator, its clients, and a state bucket (versioned unless said otherwise).
async fn setup(versioned: bool) -> (Emulator, Clients, Bucket) {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let bucket = Bucket::create(&c.s3, "acme-iot-state", versioned).await;
    (emu, c, bucket)
}

/// The lock id a refused command printed (`iotreg force-unlock ID`).
fn lock_id(stderr: &str) -> String {
    stderr
        .split("iotreg force-unlock ")
        .nth(1)
        .unwrap_or_else(|| panic!("no lock id in: {stderr}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_and_down_keep_everything_in_the_bucket_and_leave_nothing_behind() {
    let (emu, c, bucket) = setup(true).await;
    let w = emu.workdir();
    let state = bucket.url(KEY);
    let r = w.ok(&["--state", &state, "up"]);
    assert!(
        r.stderr()
            .contains(&format!("state: {state} (versioning on")),
        "{}",
        r.all()
    );
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
    // The state is in the bucket, the lock released; nothing but the keys on this machine.
    assert_eq!(bucket.keys().await, [KEY]);
    let stored = bucket.json(KEY).await.unwrap();
    assert_eq!(stored["suffix"], w_suffix(&stored));
    assert!(!w.path().join(".iotreg/state.json").exists());
    let keys: Vec<_> = std::fs::read_dir(w.path().join(".iotreg"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "certificate and keys: {keys:?}");
    let (text, _) = bucket.get(KEY).await.unwrap();
    assert!(!String::from_utf8_lossy(&text).contains("PRIVATE KEY"));

    // Another machine (another working directory) sees the same deployment.
    let other = emu.workdir();
    let again = other
        .ok(&["--state", &state, "up", "--output", "json"])
        .json();
    assert_eq!(again["suffix"], stored["suffix"]);
    assert_eq!(again["counts"]["unchanged"], STEPS);
    let plan = other.run(&["--state", &state, "plan", "--detailed-exitcode"]);
    assert_eq!(plan.code(), 0, "{}", plan.all());
    other.ok(&["--state", &state, "status"]);

    let r = other.ok(&["--state", &state, "down"]);
    assert!(
        r.stdout().contains("state and key files removed"),
        "{}",
        r.all()
    );
    assert_eq!(inventory(&c).await, Inventory::default());
    assert_eq!(
        bucket.keys().await,
        Vec::<String>::new(),
        "state and lock gone"
    );
    let r = other.ok(&["--state", &state, "down"]);
    assert!(r.stderr().contains("nothing to do"), "{}", r.all());
}

fn w_suffix(v: &serde_json::Value) -> serde_json::Value {
    v["suffix"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_ups_at_once_one_runs_and_the_other_names_the_holder() {
    let (emu, c, bucket) = setup(true).await;
    let state = bucket.url(KEY);
    let (a, b) = (emu.workdir(), emu.workdir());
    // A holds the lock, paused inside AWS.
    let first = emu.start_held(&a, &["--state", &state, "up"], "CreateThing", 8);
    let second = b.run(&["--state", &state, "up"]);
    assert_eq!(second.code(), 1, "{}", second.all());
    let err = second.stderr();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!("iotreg: error: {state}: locked by ")),
        "{err}"
    );
    assert!(
        err.contains(&format!("(pid {}, `iotreg up`, since ", first.id())),
        "{err}"
    );
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", Run(out).all());
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
    assert_eq!(bucket.keys().await, [KEY]);
    // B, refused, created nothing and wrote nothing: no second deployment anywhere.
    assert!(!b.path().join(".iotreg").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holder_leaves_its_lock_and_force_unlock_lets_up_resume() {
    let (emu, c, bucket) = setup(true).await;
    // Killed right after AWS made each of these: the intent is in S3, the answer never came.
    for op in ["CreateThing", "CreateCertificateFromCsr", "CreateFunction"] {
        let state = bucket.url(&format!("{op}/state.json"));
        let w = emu.workdir();
        let mut child = emu.start_held(&w, &["--state", &state, "up"], op, 20);
        let pid = child.id();
        child.kill().unwrap();
        child.wait().unwrap();

        let refused = w.run(&["--state", &state, "up"]);
        assert_eq!(refused.code(), 1, "after a kill at {op}: {}", refused.all());
        assert!(
            refused
                .stderr()
                .contains(&format!("(pid {pid}, `iotreg up`")),
            "{}",
            refused.all()
        );
        let id = lock_id(&refused.stderr());
        let wrong = w.run(&["--state", &state, "force-unlock", "not-the-id", "--yes"]);
        assert_eq!(wrong.code(), 2, "{}", wrong.all());
        let unasked = w.run(&["--state", &state, "force-unlock", &id]);
        assert_eq!(
            unasked.code(),
            2,
            "no terminal, no --yes: {}",
            unasked.all()
        );
        assert!(bucket.get(&format!("{op}/state.json.lock")).await.is_some());
        w.ok(&["--state", &state, "force-unlock", &id, "--yes"]);
        assert!(bucket.get(&format!("{op}/state.json.lock")).await.is_none());

        let r = w.ok(&["--state", &state, "up"]);
        assert_eq!(
            inventory(&c).await,
            Inventory::one_of_each(),
            "after a kill at {op}:\n{}",
            r.all()
        );
        w.ok(&["--state", &state, "down"]);
        assert_eq!(inventory(&c).await, Inventory::default(), "{op}");
        assert_eq!(bucket.keys().await, Vec::<String>::new(), "{op}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_over_a_stale_etag_is_refused_and_nothing_is_lost() {
    let (emu, c, bucket) = setup(true).await;
    let state = bucket.url(KEY);
    let w = emu.workdir();
    let child = emu.start_held(&w, &["--state", &state, "up"], "CreateThing", 4);
    // Another writer, in between, as careful as iotreg (conditional on what it read): the
    // state as it stands, rewritten, as a run whose lock was forced would.
    let theirs = loop {
        let (body, etag) = bucket.get(KEY).await.unwrap();
        let mut theirs: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let thing = theirs["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "thing")
            .unwrap()
            .clone();
        assert_eq!(
            thing["phase"], "intent",
            "the thing's intent was in S3 before the call"
        );
        theirs["serial"] = (theirs["serial"].as_u64().unwrap() + 100).into();
        let theirs = serde_json::to_vec(&theirs).unwrap();
        if bucket.put_if(KEY, theirs.clone(), &etag).await {
            break theirs;
        }
    };

    let out = Run(child.wait_with_output().unwrap());
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(
        out.all().contains(&format!(
            "{state}: the state changed since this run read it"
        )),
        "{}",
        out.all()
    );
    // Their write stands; ours was not put over it.
    assert_eq!(bucket.get(KEY).await.unwrap().0, theirs);
    // The lock was still ours: released.
    assert!(bucket.get(&format!("{KEY}.lock")).await.is_none());
    // Nothing lost: the thing made before the refusal is found from its intent.
    let r = w.ok(&["--state", &state, "up"]);
    assert_eq!(inventory(&c).await, Inventory::one_of_each(), "{}", r.all());
    w.ok(&["--state", &state, "down"]);
    assert_eq!(inventory(&c).await, Inventory::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unversioned_bucket_is_warned_about_and_refused_when_versioning_is_required() {
    let (emu, c, bucket) = setup(false).await;
    let state = bucket.url(KEY);
    let w = emu.workdir();
    let r = w.run(&["--state", &state, "up", "--require-versioning"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(
        r.stderr().contains("--require-versioning") && r.stderr().contains("versioning is off"),
        "{}",
        r.all()
    );
    assert_eq!(inventory(&c).await, Inventory::default());
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    // The same from the config.
    std::fs::write(
        w.path().join("iotreg.toml"),
        format!(
            "[state]\nbackend = \"s3\"\nbucket = \"{}\"\nkey = \"{KEY}\"\nrequire_versioning = true\n",
            bucket.name
        ),
    )
    .unwrap();
    assert_eq!(w.run(&["up"]).code(), 2);
    // Not required: a warning, and up goes on.
    std::fs::remove_file(w.path().join("iotreg.toml")).unwrap();
    let r = w.ok(&["--state", &state, "up"]);
    assert!(
        r.stderr().contains(&format!(
            "warning: bucket {}: versioning is off",
            bucket.name
        )),
        "{}",
        r.all()
    );
    w.ok(&["--state", &state, "down"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_commands_read_repair_and_move_the_state() {
    let (emu, c, bucket) = setup(true).await;
    let w = emu.workdir();
    let s3 = bucket.url(KEY);
    w.ok(&["up"]);
    let local = std::fs::read(w.path().join(".iotreg/state.json")).unwrap();

    // list / show / pull, local.
    let list = w.ok(&["state", "list"]).stdout();
    assert_eq!(list.lines().count(), STEPS, "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("thing ") && l.ends_with("created")),
        "{list}"
    );
    let listed = w.ok(&["state", "list", "--output", "json"]).json();
    assert_eq!(listed["records"].as_array().unwrap().len(), STEPS);
    let thing = w.ok(&["state", "show", "thing"]).json();
    assert_eq!(thing["kind"], "thing");
    let pulled = w.ok(&["state", "pull"]).json();
    assert_eq!(
        pulled,
        serde_json::from_slice::<serde_json::Value>(&local).unwrap()
    );
    let r = w.run(&["state", "show", "nothing-here"]);
    assert_eq!(r.code(), 2, "{}", r.all());

    // migrate local → S3: read back, a marker left behind that every command refuses.
    let r = w.ok(&["state", "migrate", "--to", &s3]);
    assert!(r.stdout().contains("read back"), "{}", r.all());
    assert_eq!(bucket.keys().await, [KEY]);
    assert_eq!(bucket.get(KEY).await.unwrap().0, local, "the same bytes");
    for cmd in [&["up"][..], &["status"], &["state", "list"], &["down"]] {
        let r = w.run(cmd);
        assert_eq!(r.code(), 2, "{cmd:?}: {}", r.all());
        assert!(
            r.stderr().contains(&format!(
                "the state was moved to {s3} by `iotreg state migrate`"
            )),
            "{cmd:?}: {}",
            r.all()
        );
    }
    assert_eq!(
        inventory(&c).await,
        Inventory::one_of_each(),
        "nothing was made twice"
    );
    let r = w.ok(&["--state", &s3, "up", "--output", "json"]).json();
    assert_eq!(r["counts"]["unchanged"], STEPS);

    // rm: forgotten, not deleted; push puts it back, refused when older.
    let before = w.ok(&["--state", &s3, "state", "pull"]).stdout();
    std::fs::write(w.path().join("before.json"), &before).unwrap();
    w.ok(&["--state", &s3, "state", "rm", "shadow"]);
    assert!(w.run(&["--state", &s3, "state", "show", "shadow"]).code() == 2);
    assert_eq!(inventory(&c).await.shadows, 1, "rm deletes nothing in AWS");
    let r = w.run(&["--state", &s3, "state", "push", "before.json"]);
    assert_eq!(r.code(), 2, "an older serial: {}", r.all());
    assert!(
        r.stderr().contains("is older than the stored state's"),
        "{}",
        r.all()
    );
    w.ok(&["--state", &s3, "state", "push", "before.json", "--force"]);
    let shadow = w.ok(&["--state", &s3, "state", "show", "shadow"]).json();
    assert_eq!(shadow["kind"], "device shadow");
    let r = w.run(&["--state", &s3, "state", "rm", "shadow", "no-such"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    w.ok(&["--state", &s3, "state", "show", "shadow"]);
    // Another deployment's state is refused.
    let mut other: serde_json::Value = serde_json::from_str(&before).unwrap();
    other["suffix"] = "zzz999".into();
    other["serial"] = 100_000.into();
    std::fs::write(w.path().join("other.json"), other.to_string()).unwrap();
    let r = w.run(&["--state", &s3, "state", "push", "other.json"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(r.stderr().contains("not zzz999"), "{}", r.all());

    // migrate S3 → local: the marker is replaced, and the state is what S3 held.
    let in_s3 = bucket.get(KEY).await.unwrap().0;
    w.ok(&[
        "--state",
        &s3,
        "state",
        "migrate",
        "--to",
        ".iotreg/state.json",
    ]);
    assert_eq!(
        std::fs::read(w.path().join(".iotreg/state.json")).unwrap(),
        in_s3
    );
    let marker = bucket.json(KEY).await.unwrap();
    assert_eq!(marker["moved_to"], ".iotreg/state.json");
    w.ok(&["down"]);
    assert_eq!(inventory(&c).await, Inventory::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_round_trips_local_to_s3_to_local_unchanged() {
    let (emu, _c, bucket) = setup(true).await;
    let w = emu.workdir();
    let s3 = bucket.url(KEY);
    w.ok(&["up"]);
    let original = std::fs::read(w.path().join(".iotreg/state.json")).unwrap();
    w.ok(&["state", "migrate", "--to", &s3]);
    w.ok(&[
        "--state",
        &s3,
        "state",
        "migrate",
        "--to",
        ".iotreg/state.json",
    ]);
    assert_eq!(
        std::fs::read(w.path().join(".iotreg/state.json")).unwrap(),
        original,
        "identical, byte for byte"
    );
    // A destination that holds a state is not overwritten.
    let other = emu.workdir();
    let r = other.run(&["--state", &s3, "up"]);
    assert_eq!(
        r.code(),
        2,
        "the marker is not a place to deploy to: {}",
        r.all()
    );
    bucket.put(KEY, original.clone()).await;
    let r = w.run(&["state", "migrate", "--to", &s3]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(r.stderr().contains("already holds a state"), "{}", r.all());
    w.ok(&["down"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_state_locations_fail_with_one_line_and_create_nothing() {
    let (emu, c, bucket) = setup(true).await;
    let w = emu.workdir();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--state", "s3://acme-iot-state", "up"],
            2,
            "has no object key",
        ),
        (&["--state", "s3://Acme/state.json", "up"], 2, "lowercase"),
        (
            &["--state", "s3://acme-iot-state/dir/", "status"],
            2,
            "names a folder",
        ),
        (
            &["--state", "s3://no-such-bucket-here/state.json", "up"],
            2,
            "bucket no-such-bucket-here does not exist",
        ),
        (
            &["--state", "s3://no-such-bucket-here/state.json", "status"],
            2,
            "bucket no-such-bucket-here does not exist",
        ),
        (
            &[
                "--state",
                "s3://acme-iot-state/x.json",
                "state",
                "migrate",
                "--to",
                "s3://a",
            ],
            2,
            "--to",
        ),
        (
            &["--state", &bucket.url(KEY), "force-unlock", "abc", "--yes"],
            2,
            "no lock is held",
        ),
        (
            &["force-unlock", "abc", "--yes"],
            2,
            "a local state's lock is released by the system",
        ),
    ];
    for (args, code, says) in cases {
        let r = w.run(args);
        assert_eq!(r.code(), *code, "{args:?}: {}", r.all());
        assert_eq!(r.stderr().lines().count(), 1, "{args:?}: {}", r.all());
        assert!(r.stderr().contains(says), "{args:?}: {}", r.all());
    }
    // No credentials: said as for a local state, not as a failed S3 read.
    for cmd in [
        &["up"][..],
        &["status"],
        &["state", "pull"],
        &["device", "bundle", "--out", "b"],
    ] {
        let mut args = vec!["--state", "s3://acme-iot-state/k.json"];
        args.extend_from_slice(cmd);
        let r = Run(w
            .command(&args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap());
        assert_eq!(r.code(), 2, "{cmd:?}: {}", r.all());
        assert!(
            r.stderr()
                .starts_with("iotreg: error: no AWS credentials found"),
            "{cmd:?}: {}",
            r.all()
        );
        assert_eq!(r.stderr().lines().count(), 1, "{}", r.all());
    }
    // A [state] section that is wrong is the config's error.
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[state]\nbackend = \"s3\"\nbucket = \"acme-iot-state\"\n",
    )
    .unwrap();
    let r = w.run(&["up"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(
        r.stderr().contains("iotreg.toml: state.key: required"),
        "{}",
        r.all()
    );
    assert_eq!(inventory(&c).await, Inventory::default());
    assert_eq!(bucket.keys().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_journals_to_segments_and_a_killed_fleet_resumes_from_them() {
    let (emu, c, bucket) = setup(true).await;
    let state = bucket.url(KEY);
    let w = emu.workdir();
    let manifest: String = std::iter::once("thing_name,serial\n".to_string())
        .chain((0..24).map(|i| format!("sensor-{i:03},SN-{i:03}\n")))
        .collect();
    std::fs::write(w.path().join("fleet.csv"), manifest).unwrap();
    // Killed mid-fleet: device intents are in segments, the full state not yet rewritten.
    let mut child = w
        .command(&["--state", &state, "up", "--fleet", "fleet.csv"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let keys = bucket.keys().await;
        if keys.iter().filter(|k| k.contains(".journal/")).count() >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the fleet finished before segments showed: {keys:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no segments: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let pulled = w.ok(&["--state", &state, "state", "pull"]).json();
    assert!(
        !pulled["devices"]
            .as_object()
            .map(|d| d.is_empty())
            .unwrap_or(true),
        "the segments are replayed on read"
    );
    let refused = w.run(&["--state", &state, "up", "--fleet", "fleet.csv"]);
    assert_eq!(refused.code(), 1, "{}", refused.all());
    w.ok(&[
        "--state",
        &state,
        "force-unlock",
        &lock_id(&refused.stderr()),
        "--yes",
    ]);
    w.ok(&["--state", &state, "up", "--fleet", "fleet.csv"]);
    let inv = inventory(&c).await;
    // The fleet's devices are the things (no single thing beside them).
    assert_eq!(
        (inv.things, inv.certificates, inv.shadows),
        (24, 24, 24),
        "{inv:?}"
    );
    // Folded in at the end: only the state object remains.
    assert_eq!(bucket.keys().await, [KEY]);
    let stored = bucket.json(KEY).await.unwrap();
    assert_eq!(stored["devices"].as_object().unwrap().len(), 24);
    w.ok(&["--state", &state, "down"]);
    assert_eq!(inventory(&c).await, Inventory::default());
    assert_eq!(bucket.keys().await, Vec::<String>::new());
}

use crate::support::proxy::{FaultConfig, FaultKind, FaultProxy, Matcher, Rule};

/// A proxy in front of the emulator that spoils only S3 requests (IoT and the rest pass).
fn s3_faults(emu: &Emulator, only: Matcher, kinds: Vec<FaultKind>, seed: u64) -> FaultProxy {
    FaultProxy::start(
        &emu.url,
        FaultConfig {
            seed,
            rate: 0.3,
            kinds,
            delay: Duration::from_millis(2500),
            only: Some(only),
            ..FaultConfig::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_after_a_conditional_write_is_settled_by_reading_back() {
    let (emu, c, bucket) = setup(true).await;
    // Three in ten S3 writes land and then answer 500. Sent again blindly, each would meet
    // its own ETag (412) and look like another writer; read back, each is found to be ours.
    let proxy = s3_faults(
        &emu,
        Matcher::service("s3").method("PUT"),
        vec![FaultKind::ForwardThen500],
        14,
    );
    let w = Workdir::new(&proxy.url());
    let state = bucket.url(KEY);
    let r = w.ok(&["--state", &state, "up"]);
    assert!(
        proxy.stats().fault("forward_then_500") >= 3,
        "{:?}",
        proxy.stats()
    );
    assert!(!r.stderr().contains("changed since"), "{}", r.all());
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
    w.ok(&["--state", &state, "down"]);
    assert_eq!(inventory(&c).await, Inventory::default());
    assert_eq!(bucket.keys().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn up_and_down_converge_through_30_percent_faults_on_s3() {
    let (emu, c, bucket) = setup(true).await;
    let proxy = s3_faults(
        &emu,
        Matcher::service("s3"),
        vec![
            FaultKind::Throttle,
            FaultKind::ForwardThen500,
            FaultKind::Reset,
        ],
        3,
    );
    let w = Workdir::new(&proxy.url());
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[aws]\nattempt_timeout_s = 2\ncall_timeout_s = 60\nmax_attempts = 10\n",
    )
    .unwrap();
    let state = bucket.url(KEY);
    w.ok(&["--state", &state, "up"]);
    assert_eq!(inventory(&c).await, Inventory::one_of_each());
    let again = w.ok(&["--state", &state, "up", "--output", "json"]).json();
    assert_eq!(again["counts"]["unchanged"], STEPS);
    w.ok(&["--state", &state, "down"]);
    assert_eq!(inventory(&c).await, Inventory::default());
    assert_eq!(bucket.keys().await, Vec::<String>::new());
    let stats = proxy.stats();
    for kind in ["throttle", "forward_then_500", "reset"] {
        assert!(stats.fault(kind) > 0, "{kind}: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_on_the_state_object_is_one_line_and_creates_nothing() {
    let (emu, c, bucket) = setup(true).await;
    let proxy = FaultProxy::start(
        &emu.url,
        FaultConfig {
            deny: vec![Rule::access_denied(
                Matcher::service("s3").path_ends_with(&format!("/{KEY}")),
            )],
            ..FaultConfig::default()
        },
    );
    let w = Workdir::new(&proxy.url());
    let state = bucket.url(KEY);
    for cmd in ["up", "status", "down"] {
        let r = w.run(&["--state", &state, cmd]);
        assert_eq!(r.code(), 1, "{cmd}: {}", r.all());
        let err = r.stderr();
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!(
                "iotreg: error: state \"{state}\": GetObject failed (AccessDenied)"
            )),
            "{cmd}: {}",
            r.all()
        );
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("iotreg: error"))
                .count(),
            1,
            "{}",
            r.all()
        );
    }
    assert_eq!(inventory(&c).await, Inventory::default());
    assert_eq!(bucket.keys().await, Vec::<String>::new());
}
