//! Under 30% injected faults — 503s, service-correct throttling, connection resets, answers
//! delayed past the client's timeout, and writes that happen but answer 500 — `up`,
//! `verify --skip-e2e` and `down` each succeed and leave exactly the right resources,
//! counted from outside (directly, not through the proxy).

use std::time::Duration;

use crate::support::proxy::{FaultConfig, FaultKind, FaultProxy};
use crate::support::*;

const KINDS: [FaultKind; 5] = [
    FaultKind::Unavailable,
    FaultKind::Throttle,
    FaultKind::Reset,
    FaultKind::Delay,
    FaultKind::ForwardThen500,
];

/// The first seed from `from` whose first 80 decisions include every fault kind, so each run
/// (which makes well over 80 requests) meets all five, whatever order its requests take.
fn seed_with_every_kind(from: u64) -> u64 {
    (from..)
        .find(|&seed| {
            let drawn: Vec<FaultKind> = (0..80)
                .filter_map(|seq| proxy::decide(seed, seq, 0.3, &KINDS))
                .collect();
            KINDS.iter().all(|k| drawn.contains(k))
        })
        .unwrap()
}

async fn survive(from: u64) {
    let seed = seed_with_every_kind(from);
    let emu = Emulator::start();
    let c = emu.clients().await;
    let proxy = FaultProxy::start(
        &emu.url,
        FaultConfig {
            seed,
            rate: 0.3,
            kinds: KINDS.to_vec(),
            delay: Duration::from_millis(2500),
            ..FaultConfig::default()
        },
    );
    let w = Workdir::new(&proxy.url());
    // Short attempts so a delayed answer times out quickly; enough attempts that a call
    // failing every one of them at 30% is vanishingly rare.
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[aws]\nattempt_timeout_s = 1\ncall_timeout_s = 60\nmax_attempts = 10\n",
    )
    .unwrap();
    let up = w.ok(&["up"]);
    let inv = inventory(&c).await;
    if inv != Inventory::one_of_each() {
        let log = std::fs::read_to_string(&emu.request_log).unwrap_or_default();
        for l in log.lines().filter(|l| l.contains("Certificate")) {
            eprintln!("{l}");
        }
        eprintln!("{}", up.all());
    }
    assert_eq!(inv, Inventory::one_of_each(), "seed {seed} after up");
    w.ok(&["verify", "--skip-e2e"]);
    let again = w.ok(&["up", "--output", "json"]).json();
    assert_eq!(
        again["counts"]["unchanged"], STEPS,
        "seed {seed}: converged"
    );
    w.ok(&["down"]);
    assert_eq!(
        inventory(&c).await,
        Inventory::default(),
        "seed {seed} after down"
    );
    let stats = proxy.stats();
    for kind in [
        "unavailable",
        "throttle",
        "reset",
        "delay",
        "forward_then_500",
    ] {
        assert!(
            stats.fault(kind) > 0,
            "seed {seed}: no {kind} fault in {stats:?}"
        );
    }
    assert!(stats.requests >= 80, "{stats:?}");
    eprintln!("seed {seed}: {stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_faults_seed_1() {
    survive(100).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_faults_seed_2() {
    survive(200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_faults_seed_3() {
    survive(300).await;
}
