//! Killed at any instant: for every write call a clean `up` makes, the emulator carries the
//! call out and then holds its answer while the test SIGKILLs iotreg, so the resource exists
//! but iotreg never learned of it. The next `up` must converge to exactly one of each resource
//! (the certificate included), and `down` must then leave nothing.

use crate::support::*;

/// Runs `args`, holds `op`, and SIGKILLs iotreg as soon as the held call has been carried out.
fn kill_after(emu: &Emulator, w: &Workdir, args: &[&str], op: &str) {
    let mut child = emu.start_held(w, args, op, 20);
    child.kill().unwrap(); // SIGKILL: no chance to save anything more
    child.wait().unwrap();
}

fn unique_writes(emu: &Emulator, since: usize) -> Vec<String> {
    let mut ops: Vec<String> = Vec::new();
    for w in emu.writes_since(since) {
        let op = w.split(':').nth(1).unwrap().to_string();
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread")]
async fn up_killed_after_each_write_converges_without_duplicates_or_orphans() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    w.ok(&["up"]);
    let writes = unique_writes(&emu, 0);
    assert!(writes.len() >= 12, "{writes:?}");
    w.ok(&["down"]);
    for op in &writes {
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
    assert!(writes.len() >= 10, "{writes:?}");
    for op in &writes {
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
