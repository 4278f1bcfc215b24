//! The state at fleet scale, timed: `bash bench/state.sh` runs it (release build) and prints
//! the figures. Not a test of speed: it checks that what is loaded is what was saved.
//!
//! Each step runs in a process of its own (the test runs itself again), so that the peak
//! memory it reports (VmHWM) is that step's, as a run that loads or saves the state would see.

use super::*;
use std::process::Command;
use std::time::Instant;

/// A fleet device's part of the state as `up --fleet` records it (the records and applied
/// fields were taken from a real run on the local AWS: policy on the certificate, no group).
pub(super) fn device(i: usize) -> DeviceState {
    let name = format!("sensor-{i:06}");
    let cert = format!(
        "{:064x}",
        (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    let cert_arn = format!("arn:aws:iot:us-east-1:123456789012:cert/{cert}");
    let at = 1_796_063_191_249 + i as u64 * 37;
    let mut d = DeviceState::default();
    let mut c = Record::new("certificate", "certificate", Phase::Created, &cert);
    c.arn = Some(cert_arn.clone());
    c.id = Some(cert.clone());
    c.intent_at_ms = Some(at);
    let key_sha = format!(
        "{:064x}",
        (i as u128 + 7).wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15)
    );
    c.data.insert("public_key_sha256".into(), key_sha.into());
    let mut thing = Record::new("thing", "thing", Phase::Created, &name);
    thing.arn = Some(format!("arn:aws:iot:us-east-1:123456789012:thing/{name}"));
    thing.id = Some(format!(
        "{:08x}-{:04x}-4{:03x}-b{:03x}-{:012x}",
        i * 2_654_435_761 % (1 << 32),
        i % 65_536,
        i % 4096,
        (i * 7) % 4096,
        i as u64 * 0x9e37_79b9
    ));
    thing.intent_at_ms = Some(at + 7);
    let mut pa = Record::new(
        "policy_attachment",
        "policy attachment",
        Phase::Created,
        "device-policy-abc123 → certificate",
    );
    pa.data
        .insert("certificate_arn".into(), cert_arn.clone().into());
    let mut tp = Record::new(
        "thing_principal",
        "thing attachment",
        Phase::Created,
        format!("certificate → {name}"),
    );
    tp.data.insert("certificate_arn".into(), cert_arn.into());
    let shadow = Record::new("shadow", "device shadow", Phase::Created, &name);
    for r in [c, thing, pa, tp, shadow] {
        d.put(r);
    }
    let fields = |pairs: &[(&str, serde_json::Value)]| -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    d.applied
        .insert("certificate".into(), fields(&[("status", "ACTIVE".into())]));
    d.applied
        .insert("policy_attachment".into(), BTreeMap::new());
    d.applied.insert(
        "shadow".into(),
        fields(&[
            ("desired.active", true.into()),
            ("desired.alert_enabled", true.into()),
            ("desired.reporting_interval", 60.into()),
            ("desired.temperature_threshold", 75.into()),
        ]),
    );
    d.applied.insert(
        "thing".into(),
        fields(&[
            ("attributes.deviceType", "temperature".into()),
            ("attributes.firmware", "1.0.0".into()),
            ("attributes.line", format!("line-{}", i % 8).into()),
            ("attributes.location", "ProductionFloor-A".into()),
            ("attributes.manufacturer", "SensorCorp".into()),
            ("attributes.model", "TC-2000".into()),
            ("attributes.serial", format!("SN-2025-{i:06}").into()),
            ("thing_type", "TemperatureSensor".into()),
        ]),
    );
    d.applied.insert("thing_principal".into(), BTreeMap::new());
    d
}

pub(super) fn device_name(i: usize) -> String {
    format!("sensor-{i:06}")
}

/// The stack's own records beside the fleet, as a real state has them.
fn fleet_state(n: usize) -> State {
    let mut state = State::new("us-east-1", "123456789012", "abc123");
    for (key, kind, name) in [
        ("thing_type", "thing type", "TemperatureSensor"),
        ("policy", "IoT policy", "device-policy-abc123"),
        ("role", "IAM role", "iot-lambda-role-abc123"),
        ("function", "Lambda function", "iot-data-processor-abc123"),
        ("rule", "topic rule", "sensor_data_rule_abc123"),
    ] {
        let mut r = Record::new(key, kind, Phase::Created, name);
        r.arn = Some(format!("arn:aws:iot:us-east-1:123456789012:{key}/{name}"));
        state.put(r);
    }
    for i in 0..n {
        state.devices.insert(device_name(i), device(i));
    }
    state
}

/// A state file and its journal holding `lines`, loaded.
fn load_with_journal(lines: &[Vec<u8>]) -> Result<State, StateError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    save(&path, &State::new("us-east-1", "123456789012", "abc123")).unwrap();
    std::fs::write(journal_path(&path), lines.concat()).unwrap();
    load(&path).map(Option::unwrap)
}

#[test]
fn the_journal_replays_in_order_and_a_null_entry_removes() {
    let (a, b) = (device(1), device(2));
    let state = load_with_journal(&[
        Journal::line("a", Some(&DeviceState::default())),
        Journal::line("a", Some(&a)),
        Journal::line("b", Some(&b)),
        Journal::line("b", None),
    ])
    .unwrap();
    assert_eq!(state.devices.len(), 1);
    assert_eq!(state.devices.get("a").unwrap(), a);
}

#[test]
fn a_torn_line_ends_the_replay() {
    let whole = Journal::line("a", Some(&device(1)));
    let cut = whole[..whole.len() / 2].to_vec();
    let mut zeroed = Journal::line("b", Some(&device(2)));
    zeroed[10..30].fill(0);
    // Cut short at the end (a kill mid-append).
    let s = load_with_journal(&[whole.clone(), cut.clone()]).unwrap();
    assert_eq!(s.devices.keys().collect::<Vec<_>>(), ["a"]);
    // Cut short, or zeroed by a power cut, before lines that were never synced either.
    for torn in [[cut.clone(), b"\n".to_vec()].concat(), zeroed.clone()] {
        let s = load_with_journal(&[whole.clone(), torn, Journal::line("c", Some(&device(3)))])
            .unwrap();
        assert_eq!(s.devices.keys().collect::<Vec<_>>(), ["a"]);
    }
    // A whole line that is not a journal line is corruption, not a tear.
    let e = load_with_journal(&[b"{\"x\": 1}\n".to_vec(), whole]).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn only_durable_journal_lines_wait_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    save(&path, &State::new("us-east-1", "123456789012", "abc123")).unwrap();
    let mut j = Journal::new(&path);
    j.append("a", Some(&device(1)), true).unwrap();
    j.append("a", Some(&device(2)), false).unwrap();
    j.append("b", Some(&device(3)), false).unwrap();
    assert_eq!(j.syncs(), 1);
    // Not synced is still written: a kill (not a power cut) loses nothing.
    let s = load(&path).unwrap().unwrap();
    assert_eq!(s.devices.get("a").unwrap(), device(2));
    assert_eq!(s.devices.get("b").unwrap(), device(3));
}

/// The state as iotreg held, wrote and read it before schema 4 (`STATE_FORMAT=schema3`), for
/// the "before" figures: every device unpacked in memory, the file pretty JSON read through a
/// `serde_json::Value`, journal lines with the entry unpacked.
mod schema3 {
    use super::super::{DeviceState, Record};
    use super::{device, device_name, BTreeMap, Path};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    pub struct State {
        pub schema_version: u32,
        pub region: String,
        pub account: String,
        pub suffix: String,
        pub serial: u64,
        pub resources: Vec<Record>,
        pub devices: BTreeMap<String, DeviceState>,
    }

    #[derive(Serialize, Deserialize)]
    struct JournalLine {
        device: String,
        entry: Option<DeviceState>,
    }

    pub fn fleet_state(n: usize) -> State {
        let s = super::fleet_state(0);
        State {
            schema_version: 3,
            region: s.region,
            account: s.account,
            suffix: s.suffix,
            serial: 0,
            resources: s.resources,
            devices: (0..n).map(|i| (device_name(i), device(i))).collect(),
        }
    }

    pub fn save(path: &Path, s: &State) {
        let mut bytes = serde_json::to_vec_pretty(s).unwrap();
        bytes.push(b'\n');
        crate::fsutil::write_atomic(path, &bytes, 0o600).unwrap();
    }

    pub fn load(path: &Path) -> State {
        let text = std::fs::read_to_string(path).unwrap();
        let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut state: State = serde_json::from_value(raw).unwrap();
        if let Ok(lines) = std::fs::read_to_string(super::journal_path(path)) {
            for line in lines.lines() {
                let l: JournalLine = serde_json::from_str(line).unwrap();
                match l.entry {
                    Some(e) => state.devices.insert(l.device, e),
                    None => state.devices.remove(&l.device),
                };
            }
        }
        state
    }

    pub fn line(name: &str, entry: Option<&DeviceState>) -> Vec<u8> {
        let l = JournalLine {
            device: name.to_string(),
            entry: entry.cloned(),
        };
        let mut bytes = serde_json::to_vec(&l).unwrap();
        bytes.push(b'\n');
        bytes
    }
}

/// The bench's view of either format.
trait Format {
    const NAME: &'static str;
    type S: PartialEq + std::fmt::Debug;
    fn build(n: usize) -> Self::S;
    fn save(path: &Path, s: &Self::S);
    fn load(path: &Path) -> Self::S;
    fn line(s: &Self::S, name: &str) -> Vec<u8>;
}

struct Packed;
impl Format for Packed {
    const NAME: &'static str = "schema 4";
    type S = State;
    fn build(n: usize) -> State {
        fleet_state(n)
    }
    fn save(path: &Path, s: &State) {
        save(path, s).unwrap()
    }
    fn load(path: &Path) -> State {
        load(path).unwrap().unwrap()
    }
    /// As a fleet run makes it: the entry unpacked, changed, packed again.
    fn line(s: &State, name: &str) -> Vec<u8> {
        Journal::line(name, s.devices.get(name).as_ref())
    }
}

struct Schema3;
impl Format for Schema3 {
    const NAME: &'static str = "schema 3, before";
    type S = schema3::State;
    fn build(n: usize) -> schema3::State {
        schema3::fleet_state(n)
    }
    fn save(path: &Path, s: &schema3::State) {
        schema3::save(path, s)
    }
    fn load(path: &Path) -> schema3::State {
        schema3::load(path)
    }
    fn line(s: &schema3::State, name: &str) -> Vec<u8> {
        schema3::line(name, s.devices.get(name))
    }
}

const PHASE: &str = "IOTREG_BENCH_STATE_PHASE";
const DIR: &str = "IOTREG_BENCH_STATE_DIR";

/// This process's peak resident memory so far (VmHWM), in MB.
fn peak_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb / 1024.0
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[test]
#[ignore = "a benchmark: bash bench/state.sh"]
fn bench_state_at_fleet_scale() {
    let n: usize = std::env::var("DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let Ok(phase) = std::env::var(PHASE) else {
        // The driver: each step in a fresh process of this same test binary.
        let dir = tempfile::tempdir().unwrap();
        // Off the line the test harness has started ("test … ").
        println!();
        for phase in ["write", "load", "replay"] {
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "state::bench::bench_state_at_fleet_scale",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(PHASE, phase)
                .env(DIR, dir.path())
                .env("DEVICES", n.to_string())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            // The harness prints the test's name before what the test prints, on its line.
            for line in stdout
                .lines()
                .filter_map(|l| l.find("state ").map(|i| &l[i..]))
            {
                println!("{line}");
            }
            assert!(
                out.status.success(),
                "step {phase} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        return;
    };
    match std::env::var("STATE_FORMAT").as_deref() {
        Ok("schema3") => step::<Schema3>(n, &phase),
        Ok("packed") | Err(_) => step::<Packed>(n, &phase),
        Ok(other) => panic!("STATE_FORMAT={other}: packed (default) or schema3"),
    }
}

fn step<F: Format>(n: usize, phase: &str) {
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let path = dir.join("state.json");
    // The journal written in the first step, kept aside until the replay step.
    let kept = dir.join("journal.kept");
    match phase {
        "write" => {
            let state = F::build(n);
            let held = peak_mb();
            let t = Instant::now();
            F::save(&path, &state);
            let saved = ms(t);
            let bytes = std::fs::metadata(&path).unwrap().len();
            println!(
                "state {n} devices ({}), write: file {:.1} MB; built in memory, peak {held:.0} MB; \
                 save {saved:.0} ms, peak {:.0} MB",
                F::NAME,
                bytes as f64 / 1e6,
                peak_mb()
            );
            // Progress as a fleet run writes it: one journal line per device change.
            let mut journal = Journal::new(&path);
            let t = Instant::now();
            for i in 0..n {
                let name = device_name(i);
                journal.append_line(&F::line(&state, &name), true).unwrap();
            }
            let appended = t.elapsed();
            // As a fleet device writes them: its intents durable, the rest (commits, what
            // was applied) riding on the next sync. About 5 of a device's 21 lines are intents.
            std::fs::remove_file(journal_path(&path)).unwrap();
            let mut mixed = Journal::new(&path);
            let t = Instant::now();
            for i in 0..n {
                let name = device_name(i);
                mixed
                    .append_line(&F::line(&state, &name), i % 4 == 0)
                    .unwrap();
            }
            let mixed_in = ms(t);
            let journal_bytes = std::fs::metadata(journal_path(&path)).unwrap().len();
            std::fs::rename(journal_path(&path), &kept).unwrap();
            println!(
                "state {n} devices ({}), journal: {n} appends (fdatasync each) {:.0} ms ({:.0} µs \
                 each, {:.1} MB); {n} with one in four synced (a device's mix) {mixed_in:.0} ms",
                F::NAME,
                appended.as_secs_f64() * 1e3,
                appended.as_secs_f64() * 1e6 / n as f64,
                journal_bytes as f64 / 1e6,
            );
        }
        "load" => {
            // A run: load the state, then save it.
            let t = Instant::now();
            let state = F::load(&path);
            let loaded = ms(t);
            let after_load = peak_mb();
            let t = Instant::now();
            F::save(&path, &state);
            let saved = ms(t);
            println!(
                "state {n} devices ({}), load: {loaded:.0} ms, peak {after_load:.0} MB; then save \
                 {saved:.0} ms, peak {:.0} MB",
                F::NAME,
                peak_mb()
            );
            assert_eq!(state, F::build(n));
        }
        "replay" => {
            std::fs::rename(&kept, journal_path(&path)).unwrap();
            let t = Instant::now();
            let state = F::load(&path);
            let loaded = ms(t);
            println!(
                "state {n} devices ({}), load with the {n}-line journal replayed: {loaded:.0} ms, \
                 peak {:.0} MB",
                F::NAME,
                peak_mb()
            );
            assert_eq!(state, F::build(n));
        }
        other => panic!("unknown step {other}"),
    }
}
