//! A fleet: one device per manifest row, each with the single device's resources (thing,
//! certificate from a locally made key, policy and thing attachments, shadow) and the same
//! crash safety, since each device runs the same resource code on its own records (a device
//! scope of the state, journalled). Devices run `concurrency` at a time; every AWS call waits
//! for its operation's rate limit (see `ratelimit`), and throttling is retried with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use super::bulk::{BULK_BUCKET, BULK_ROLE};
use super::{
    device_plan, Deployment, Env, FLEET, GROUP_POLICY, PERMISSION, POLICY, THING, THING_GROUP,
    THING_TYPE,
};
use crate::engine::{self, Ctx, Direction, Meta, Outcome, Resource, Silent, StepError, StepReport};
use crate::keys::KeyFiles;
use crate::manifest::Device;
use crate::plan::{Action, Change, Fields, Origin, Planned};
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "fleet";
/// Per-device differences listed in a plan before it says "and N more".
const PLAN_LINES: usize = 20;

/// What the command line and config say about the fleet.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The manifest's devices; None when the command works from the state (down, verify,
    /// status).
    pub devices: Option<Vec<Device>>,
    pub concurrency: usize,
    /// Delete devices the state has and the manifest no longer lists.
    pub prune: bool,
    /// verify: check this many devices chosen at random instead of all.
    pub sample: Option<usize>,
}

pub struct Fleet(pub Arc<Env>);

/// The deployment of one device: the fleet's, with the device's name, attributes and files.
pub(super) fn device_deployment(
    d: &Deployment,
    name: &str,
    attributes: BTreeMap<String, String>,
    csr: Option<crate::keys::Csr>,
) -> Deployment {
    let mut dd = d.clone();
    dd.thing.name = name.to_string();
    dd.thing.attributes = attributes;
    dd.certificate.csr = csr;
    dd.certificate.key_files = KeyFiles::for_thing(&d.certificate.key_dir, name);
    dd.certificate.sweep_duplicates = false;
    dd.fleet = None;
    dd
}

/// How one device went: its outcome, or its first error.
fn summarise(reports: &[StepReport]) -> Result<Outcome, String> {
    if let Some(e) = reports.iter().find_map(|r| r.result.as_ref().err()) {
        return Err(e.to_string());
    }
    let outcomes: Vec<&Outcome> = reports
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .collect();
    Ok(if outcomes.iter().all(|o| **o == Outcome::Created) {
        Outcome::Created
    } else if outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Unchanged | Outcome::Adopted))
    {
        Outcome::Unchanged
    } else if outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Deleted | Outcome::Absent))
    {
        Outcome::Deleted
    } else {
        Outcome::Updated(String::new())
    })
}

/// Counts per outcome and the failures, for the summary and the live progress line.
struct Tally {
    total: usize,
    done: AtomicUsize,
    counts: Mutex<BTreeMap<&'static str, usize>>,
    failures: Mutex<Vec<(String, String)>>,
    started: Instant,
    last_report: Mutex<Instant>,
}

impl Tally {
    fn new(total: usize) -> Tally {
        Tally {
            total,
            done: AtomicUsize::new(0),
            counts: Mutex::new(BTreeMap::new()),
            failures: Mutex::new(Vec::new()),
            started: Instant::now(),
            last_report: Mutex::new(Instant::now()),
        }
    }

    fn record(&self, cx: &Ctx, device: &str, result: Result<Outcome, String>) {
        match result {
            Ok(o) => {
                *self
                    .counts
                    .lock()
                    .expect("counts")
                    .entry(o.label())
                    .or_insert(0) += 1
            }
            Err(e) => self
                .failures
                .lock()
                .expect("failures")
                .push((device.to_string(), e)),
        }
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        // A line at most every two seconds (and at the end): readable off a terminal too.
        let mut last = self.last_report.lock().expect("last report");
        if done == self.total || last.elapsed() >= Duration::from_secs(2) {
            *last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            let rate = done as f64 / secs;
            let eta = (self.total - done) as f64 / rate.max(1e-3);
            cx.progress(&format!(
                "{done}/{} devices ({}%), {rate:.1}/s, ETA {eta:.0}s",
                self.total,
                done * 100 / self.total.max(1)
            ));
        }
    }

    fn text(&self) -> String {
        let counts = self.counts.lock().expect("counts");
        let mut parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let failed = self.failures.lock().expect("failures").len();
        if failed > 0 {
            parts.push(format!("{failed} failed"));
        }
        format!(
            "{} devices: {} in {:.1}s",
            self.total,
            parts.join(", "),
            self.started.elapsed().as_secs_f64()
        )
    }

    fn error(&self) -> Option<StepError> {
        // The summary first: it takes the failures lock itself (not reentrant).
        let text = self.text();
        let failures = self.failures.lock().expect("failures");
        let (device, first) = failures.first()?;
        Some(StepError::Failed(format!(
            "{} of {} devices failed ({text}); first, {device}: {first}",
            failures.len(),
            self.total,
        )))
    }
}

impl Fleet {
    fn spec(&self) -> &FleetSpec {
        self.0
            .d
            .fleet
            .as_deref()
            .expect("a fleet step has a fleet spec")
    }

    /// The devices the state records, by name.
    fn recorded(cx: &Ctx) -> BTreeSet<String> {
        cx.store().device_names()
    }

    /// Runs one device's steps in `direction` in its own state scope.
    async fn run_device(
        &self,
        cx: &Ctx,
        name: &str,
        attributes: BTreeMap<String, String>,
        csr: Option<crate::keys::Csr>,
        direction: Direction,
    ) -> Result<Outcome, String> {
        let env = Arc::new(Env {
            aws: self.0.aws.clone(),
            d: device_deployment(&self.0.d, name, attributes, csr),
        });
        let plan = device_plan(&env);
        let dcx = cx.for_device(name, Arc::new(Silent));
        let strays = if direction == Direction::Up {
            super::device_strays(&env, |k| dcx.record(k).is_some())
        } else {
            Vec::new()
        };
        // A task of its own per device: a step waiting for its state write (an intent's
        // journal segment on its way to S3 holds its thread) must not hold up the other
        // devices in flight, which then share that segment or the next.
        let reports = tokio::spawn(async move {
            let mut reports = engine::run(&plan, direction, &dcx).await;
            if !strays.is_empty() && reports.iter().all(|r| r.result.is_ok()) {
                reports.extend(engine::run(&strays, Direction::Down, &dcx).await);
            }
            reports
        })
        .await
        .map_err(|e| format!("the device's task failed: {e}"))?;
        summarise(&reports)
    }

    /// Retires `names`, `concurrency` at a time.
    async fn retire(&self, cx: &Ctx, names: Vec<String>) -> Tally {
        let tally = Tally::new(names.len());
        let t = &tally;
        stream::iter(names)
            .map(|name| async move {
                let mut result = self
                    .run_device(cx, &name, BTreeMap::new(), None, Direction::Down)
                    .await;
                if result.is_ok() && !cx.store().has_device(&name) {
                    // Its certificate is gone: its key files are of no use any more.
                    if let Err(e) =
                        KeyFiles::for_thing(&self.0.d.certificate.key_dir, &name).remove_all()
                    {
                        result = Err(format!("cannot remove its key files: {e}"));
                    }
                }
                t.record(cx, &name, result);
            })
            .buffer_unordered(self.spec().concurrency)
            .collect::<Vec<()>>()
            .await;
        tally
    }
}

impl Meta for Fleet {
    fn key(&self) -> &str {
        FLEET
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        match &self.spec().devices {
            Some(d) => format!("{} devices", d.len()),
            None => "devices".into(),
        }
    }
    fn depends_on(&self) -> &[&'static str] {
        // Devices use the type, the policy and the group; in `down` they go before them. The
        // permission is only there to keep the fleet after the shared chain in the summary.
        // Bulk mode's role and bucket (absent otherwise) come before the devices and go after
        // them.
        &[
            THING_TYPE,
            POLICY,
            PERMISSION,
            THING_GROUP,
            GROUP_POLICY,
            BULK_ROLE,
            BULK_BUCKET,
        ]
    }
}

/// A fleet plans, applies and checks its devices itself, each with the single device's
/// resource code in its own state scope.
#[async_trait::async_trait]
impl Resource for Fleet {
    async fn plan(&self, cx: &Ctx, _read_live: bool) -> Result<Planned, StepError> {
        self.plan_devices(cx)
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let devices = self.spec().devices.clone().ok_or_else(|| {
            StepError::Failed("fleet: no manifest given (--fleet FILE or fleet.manifest)".into())
        })?;
        let recorded = Self::recorded(cx);
        let wanted: BTreeSet<&str> = devices.iter().map(|d| d.thing_name.as_str()).collect();
        let removed: Vec<String> = recorded
            .iter()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        // Bulk mode registers the new devices server-side first; the rest (and any device
        // it did not handle) go one at a time as below.
        let tally = Tally::new(devices.len());
        let bulk = if self.0.d.bulk.enabled {
            super::bulk::register(&self.0, cx, &devices, self.spec().concurrency).await?
        } else {
            Default::default()
        };
        for (name, result) in &bulk {
            tally.record(cx, name, result.clone());
        }
        let t = &tally;
        stream::iter(devices)
            .filter(|dev| std::future::ready(!bulk.contains_key(&dev.thing_name)))
            .map(|dev| async move {
                let result = if cx.cancelled() {
                    Err(StepError::Interrupted.to_string())
                } else {
                    self.run_device(cx, &dev.thing_name, dev.attributes, dev.csr, Direction::Up)
                        .await
                };
                t.record(cx, &dev.thing_name, result);
            })
            .buffer_unordered(self.spec().concurrency)
            .collect::<Vec<()>>()
            .await;
        let mut text = tally.text();
        if !removed.is_empty() {
            if self.spec().prune && tally.error().is_none() {
                let pruned = self.retire(cx, removed.clone()).await;
                cx.store().compact()?;
                if let Some(e) = pruned.error() {
                    return Err(e);
                }
                text.push_str(&format!("; pruned {}", pruned.text()));
            } else {
                text.push_str(&format!(
                    "; {} recorded devices are no longer in the manifest and were kept (`up --prune` deletes them): {}",
                    removed.len(),
                    removed.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        // The fleet's own record (what `status` shows), written with the journal folded in.
        let count = cx.store().device_names().len();
        cx.commit(Record::new(
            FLEET,
            KIND,
            Phase::Created,
            format!("{count} devices"),
        ))?;
        if let Some(e) = tally.error() {
            return Err(e);
        }
        let counts = tally.counts.lock().expect("counts").clone();
        Ok(
            if counts.len() == 1 && counts.contains_key("created") && recorded.is_empty() {
                Outcome::Created
            } else if counts.keys().all(|k| *k == "unchanged") && !text.contains("pruned") {
                if removed.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Retained(text)
                }
            } else {
                Outcome::Updated(text)
            },
        )
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let names: Vec<String> = Self::recorded(cx).into_iter().collect();
        if names.is_empty() {
            cx.forget(FLEET)?;
            return Ok(Outcome::Absent);
        }
        let tally = self.retire(cx, names).await;
        cx.store().compact()?;
        if let Some(e) = tally.error() {
            return Err(e);
        }
        cx.forget(FLEET)?;
        Ok(Outcome::Deleted)
    }

    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError> {
        let n = Self::recorded(cx).len();
        Ok((n > 0).then(|| format!("{n} devices recorded")))
    }

    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "fleet.devices";
        let mut names: Vec<String> = Self::recorded(cx).into_iter().collect();
        let total = names.len();
        if total == 0 {
            return vec![Check::fail(NAME, KIND, "no device recorded in the state")];
        }
        if let Some(n) = self.spec().sample.filter(|n| *n < total) {
            names = sample(names, n);
        }
        let checked = names.len();
        let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let f = &failures;
        stream::iter(names)
            .map(|name| async move {
                let attributes = cx
                    .store()
                    .device_applied(&name, THING)
                    .map(|f| attributes_of(&f))
                    .unwrap_or_default();
                let env = Arc::new(Env {
                    aws: self.0.aws.clone(),
                    d: device_deployment(&self.0.d, &name, attributes, None),
                });
                let dcx = cx.for_device(&name, Arc::new(Silent));
                for r in device_plan(&env) {
                    for c in r.check(&dcx).await {
                        if c.status == crate::verify::CheckStatus::Fail {
                            f.lock()
                                .expect("failures")
                                .push(format!("{name}: {}: {}", c.name, c.reason));
                        }
                    }
                }
            })
            .buffer_unordered(self.spec().concurrency)
            .collect::<Vec<()>>()
            .await;
        let failures = failures.into_inner().expect("failures");
        let res = format!("{KIND} of {total} devices");
        if failures.is_empty() {
            vec![Check::pass(
                NAME,
                &res,
                format!(
                    "{checked} of {total} devices checked: thing, active certificate with its local key, policy and thing attachments{} as configured",
                    if self.0.d.shadow.is_some() { ", shadow" } else { "" }
                ),
            )]
        } else {
            vec![Check::fail(
                NAME,
                &res,
                format!(
                    "{} problems in {checked} devices checked: {}",
                    failures.len(),
                    failures
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )]
        }
    }
}

impl Fleet {
    /// Compares the manifest with the state (what up last applied to each device), without a
    /// live read per device: a fleet's drift is found by `verify` and repaired by `up`.
    fn plan_devices(&self, cx: &Ctx) -> Result<Planned, StepError> {
        let Some(devices) = self.spec().devices.as_ref() else {
            // Only `up` and `plan` plan, and both have the manifest.
            return Ok(Planned::new(FLEET, KIND, &self.name(), Action::Create));
        };
        let recorded = Self::recorded(cx);
        let mut p = Planned::new(FLEET, KIND, &self.name(), Action::NoChange);
        let mut changes = Vec::new();
        let mut new = 0;
        let mut updated = 0;
        for dev in devices {
            if !recorded.contains(&dev.thing_name) {
                new += 1;
                continue;
            }
            let mut key_changed = false;
            if let Some(csr) = &dev.csr {
                let recorded_key = cx.store().read(|st| {
                    st.devices.get(&dev.thing_name).and_then(|e| {
                        e.get(super::CERTIFICATE)
                            .and_then(|r| r.data_str("public_key_sha256").map(str::to_string))
                    })
                });
                if recorded_key
                    .as_deref()
                    .is_some_and(|k| k != csr.fingerprint)
                {
                    // A new key on the device: `up` reissues its certificate.
                    updated += 1;
                    changes.push(Change {
                        field: format!("{}.certificate.public_key_sha256", dev.thing_name),
                        from: recorded_key.map(Into::into),
                        to: Some(csr.fingerprint.clone().into()),
                        origin: Origin::Config,
                    });
                    key_changed = true;
                }
            }
            let applied = cx.store().device_applied(&dev.thing_name, THING);
            let Some(applied) = applied else {
                if !key_changed {
                    updated += 1; // an interrupted device: up finishes it
                }
                continue;
            };
            let was = attributes_of(&applied);
            if was != dev.attributes {
                if !key_changed {
                    updated += 1;
                }
                let keys: BTreeSet<&String> = was.keys().chain(dev.attributes.keys()).collect();
                for k in keys {
                    if was.get(k) != dev.attributes.get(k) {
                        changes.push(Change {
                            field: format!("{}.attributes.{k}", dev.thing_name),
                            from: was.get(k).map(|v| v.clone().into()),
                            to: dev.attributes.get(k).map(|v| v.clone().into()),
                            origin: Origin::Config,
                        });
                    }
                }
            }
        }
        let wanted: BTreeSet<&str> = devices.iter().map(|d| d.thing_name.as_str()).collect();
        let removed: Vec<&String> = recorded
            .iter()
            .filter(|n| !wanted.contains(n.as_str()))
            .collect();
        if recorded.len() != devices.len() || new > 0 {
            changes.insert(
                0,
                Change {
                    field: "devices".into(),
                    from: Some(recorded.len().into()),
                    to: Some(
                        (devices.len() + if self.spec().prune { 0 } else { removed.len() }).into(),
                    ),
                    origin: Origin::Config,
                },
            );
        }
        let more = changes.len().saturating_sub(PLAN_LINES);
        changes.truncate(PLAN_LINES);
        p.changes = changes;
        let mut notes = Vec::new();
        if new > 0 {
            notes.push(format!("{new} to create"));
        }
        if updated > 0 {
            notes.push(format!("{updated} to update"));
        }
        if !removed.is_empty() {
            notes.push(if self.spec().prune {
                format!("{} no longer in the manifest, to delete", removed.len())
            } else {
                format!(
                    "{} no longer in the manifest, kept (`up --prune` deletes them)",
                    removed.len()
                )
            });
        }
        if more > 0 {
            notes.push(format!("{more} more differences not shown"));
        }
        p.action = if recorded.is_empty() {
            Action::Create
        } else if new > 0 || updated > 0 || (self.spec().prune && !removed.is_empty()) {
            Action::Update
        } else {
            Action::NoChange
        };
        if !notes.is_empty() {
            p.note = Some(format!(
                "{} (compared with the state; `verify` reads every device)",
                notes.join(", ")
            ));
        }
        Ok(p)
    }
}

/// The thing attributes among a thing's applied fields.
fn attributes_of(fields: &Fields) -> BTreeMap<String, String> {
    fields
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("attributes.")?;
            Some((name.to_string(), v.as_str().unwrap_or_default().to_string()))
        })
        .collect()
}

/// `n` of `names` chosen at random (a partial Fisher–Yates shuffle).
pub fn sample(mut names: Vec<String>, n: usize) -> Vec<String> {
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed).expect("OS randomness");
    let mut x = u64::from_le_bytes(seed) | 1;
    for i in 0..n.min(names.len()) {
        // xorshift64: plenty for picking devices to check.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = i + (x as usize) % (names.len() - i);
        names.swap(i, j);
    }
    names.truncate(n);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_a_subset_without_repeats() {
        let names: Vec<String> = (0..100).map(|i| format!("d{i}")).collect();
        let s = sample(names.clone(), 10);
        assert_eq!(s.len(), 10);
        let set: BTreeSet<&String> = s.iter().collect();
        assert_eq!(set.len(), 10);
        assert!(s.iter().all(|n| names.contains(n)));
    }

    #[test]
    fn a_failed_device_is_reported_not_waited_for() {
        // Regression: error() used to take the failures lock twice and hang for ever.
        let tally = Tally::new(2);
        tally
            .failures
            .lock()
            .unwrap()
            .push(("sensor-1".into(), "boom".into()));
        *tally.counts.lock().unwrap().entry("created").or_insert(0) += 1;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(tally.error().map(|e| e.to_string()));
        });
        let e = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("error() returned")
            .unwrap();
        assert!(
            e.starts_with("1 of 2 devices failed (2 devices: 1 created, 1 failed in"),
            "{e}"
        );
        assert!(e.ends_with("first, sensor-1: boom"), "{e}");
    }

    #[test]
    fn device_outcomes_summarise() {
        let rep = |r: Result<Outcome, StepError>| StepReport {
            key: "k".into(),
            kind: "k".into(),
            name: "n".into(),
            result: r,
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            summarise(&[rep(Ok(Outcome::Created)), rep(Ok(Outcome::Created))]),
            Ok(Outcome::Created)
        );
        assert_eq!(
            summarise(&[rep(Ok(Outcome::Unchanged)), rep(Ok(Outcome::Adopted))]),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(
            summarise(&[
                rep(Ok(Outcome::Created)),
                rep(Err(StepError::Failed("boom".into())))
            ]),
            Err("boom".into())
        );
    }
}
