//! Killed at any instant: for every write call a clean `up` makes, the emulator carries the
//! call out and then holds its answer while the test SIGKILLs iotreg, so the resource exists
//! but iotreg never learned of it. The next `up` must converge to exactly one of each resource
//! (the certificate included), and `down` must then leave nothing. Likewise for every write
//! call of `down`. Which writes those are is pinned exactly (UP_WRITES, DOWN_WRITES): a write
//! added or dropped must show up here, and so be killed after, not slip by.

use crate::support::*;

/// Runs `args`, holds `op`, and SIGKILLs iotreg as soon as the held call has been carried out.
fn kill_after(emu: &Emulator, w: &Workdir, args: &[&str], op: &str) {
    let mut child = emu.start_held(w, args, op, 20);
    child.kill().unwrap(); // SIGKILL: no chance to save anything more
    child.wait().unwrap();
}

/// The distinct write operations since `since`, as `service:Operation`, in the order they were
/// first made. One entry per operation name: a hold is armed by operation name, so that is what
/// a kill can follow.
fn unique_writes(emu: &Emulator, since: usize) -> Vec<String> {
    let mut ops: Vec<String> = Vec::new();
    for w in emu.writes_since(since) {
        let op = w.split(':').nth(1).unwrap();
        if !ops.iter().any(|o| o.split(':').nth(1) == Some(op)) {
            ops.push(w);
        }
    }
    ops
}

/// The same operations in a stable order: `up` and `down` run independent chains (IAM, IoT,
/// monitoring) at once, so the order the calls arrive in varies from run to run.
fn sorted(ops: &[String]) -> Vec<&str> {
    let mut s: Vec<&str> = ops.iter().map(String::as_str).collect();
    s.sort_unstable();
    s
}

/// Every write a clean `up` of the default stack makes, one per operation (the four alarms are
/// one PutMetricAlarm each: the kill follows the first), sorted.
const UP_WRITES: &[&str] = &[
    "cloudwatch:PutDashboard",
    "cloudwatch:PutMetricAlarm",
    "iam:AttachRolePolicy",
    "iam:CreateRole",
    "iam:PutRolePolicy",
    "iot-data:UpdateThingShadow",
    "iot:AttachPolicy",
    "iot:AttachThingPrincipal",
    "iot:CreateCertificateFromCsr",
    "iot:CreatePolicy",
    "iot:CreateThing",
    "iot:CreateThingType",
    "iot:CreateTopicRule",
    "lambda:AddPermission",
    "lambda:CreateFunction",
    "sns:CreateTopic",
];

/// Every write a `down` of the default stack makes, one per operation, sorted. DeleteLogGroup is
/// sent whether or not the function was ever invoked (the group may not exist).
const DOWN_WRITES: &[&str] = &[
    "cloudwatch:DeleteAlarms",
    "cloudwatch:DeleteDashboards",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iot-data:DeleteThingShadow",
    "iot:DeleteCertificate",
    "iot:DeletePolicy",
    "iot:DeleteThing",
    "iot:DeleteThingType",
    "iot:DeleteTopicRule",
    "iot:DeprecateThingType",
    "iot:DetachPolicy",
    "iot:DetachThingPrincipal",
    "iot:UpdateCertificate",
    "lambda:DeleteFunction",
    "lambda:RemovePermission",
    "logs:DeleteLogGroup",
    "sns:DeleteTopic",
];

#[tokio::test(flavor = "multi_thread")]
async fn up_killed_after_each_write_converges_without_duplicates_or_orphans() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    w.ok(&["up"]);
    let writes = unique_writes(&emu, 0);
    assert_eq!(sorted(&writes), UP_WRITES, "in the order made: {writes:?}");
    w.ok(&["down"]);
    for op in writes.iter().map(|w| w.split(':').nth(1).unwrap()) {
        emu.reset();
        let w = emu.workdir();
        kill_after(&emu, &w, &["up"], op);
        let r = w.ok(&["up"]);
        assert_eq!(
            inventory(&c).await,
            Inventory::one_of_each(),
            "after a kill at {op}:\n{}",
            r.all()
        );
        let again = w.ok(&["up", "--output", "json"]).json();
        assert_eq!(
            again["counts"]["unchanged"], STEPS,
            "converged after a kill at {op}"
        );
        w.ok(&["down"]);
        assert_eq!(
            inventory(&c).await,
            Inventory::default(),
            "down after a kill at {op}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn down_killed_after_each_write_finishes_on_the_next_down() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    w.ok(&["up"]);
    let start = emu.requests().len();
    w.ok(&["down"]);
    let writes = unique_writes(&emu, start);
    assert_eq!(
        sorted(&writes),
        DOWN_WRITES,
        "in the order made: {writes:?}"
    );
    for op in writes.iter().map(|w| w.split(':').nth(1).unwrap()) {
        emu.reset();
        let w = emu.workdir();
        w.ok(&["up"]);
        kill_after(&emu, &w, &["down"], op);
        let r = w.ok(&["down"]);
        assert_eq!(
            inventory(&c).await,
            Inventory::default(),
            "after a kill at {op}:\n{}",
            r.all()
        );
        assert!(!w.path().join(".iotreg/state.json").exists());
    }
}
