//! A fleet: one device per manifest row, each with the single device's resources (thing,
//! certificate from a locally made key, policy and thing attachments, shadow) and the same
//! crash safety, since each device runs the same resource code on its own records (a device
//! scope of the state, journalled). Devices run `concurrency` at a time; every AWS call waits
//! for its operation's rate limit (see `ratelimit`), and throttling is retried with backoff.
//!
//! The recorded devices are read in pages ([`view`]) and each is planned from them by its own
//! resource code ([`survey`]); only the devices that differ, and the new ones, are run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use super::bulk::{BULK_BUCKET, BULK_ROLE};
use super::{
    device_plan, Deployment, Env, FLEET, FLEET_INDEXING, GROUP_POLICY, PERMISSION, POLICY, THING,
    THING_GROUP, THING_TYPE,
};
use crate::engine::{self, Ctx, Direction, Meta, Outcome, Resource, Silent, StepError, StepReport};
use crate::keys::KeyFiles;
use crate::manifest::Device;
use crate::plan::{Action, Change, Fields, Origin, Planned};
use crate::state::{Phase, Record};
use crate::verify::Check;

mod survey;
pub mod view;

use survey::Survey;

const KIND: &str = "fleet";
/// Devices read one by one (at random) by default, besides the pages.
pub const DEFAULT_SAMPLE: usize = 100;

/// Which recorded devices get the reads no page covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerDevice {
    /// This many, chosen at random each run.
    Sample(usize),
    /// Every one.
    Full,
}

/// What the command line and config say about the fleet.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The manifest's devices; None when the command works from the state (down, verify,
    /// status).
    pub devices: Option<Vec<Device>>,
    pub concurrency: usize,
    /// Delete devices the state has and the manifest no longer lists.
    pub prune: bool,
    /// Which devices `up`, `plan` and `verify` read one by one.
    pub per_device: PerDevice,
    /// verify: "connected lately" means within this long.
    pub connected_within: Duration,
}

pub struct Fleet(
    pub Arc<Env>,
    /// The survey `plan` made, for the `ensure` of the same run: `up` repairs exactly what its
    /// plan named, without reading the fleet twice.
    Mutex<Option<Arc<Survey>>>,
);

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
    pub fn new(env: Arc<Env>) -> Fleet {
        Fleet(env, Mutex::new(None))
    }

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
        let env = Arc::new(Env::new(
            self.0.aws.clone(),
            device_deployment(&self.0.d, name, attributes, csr),
        ));
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
            FLEET_INDEXING,
        ]
    }
}

/// A fleet plans, applies and checks its devices itself, each with the single device's
/// resource code in its own state scope, reading the fleet's pages rather than one call per
/// device (see [`survey`]).
#[async_trait::async_trait]
impl Resource for Fleet {
    async fn plan(&self, cx: &Ctx, read_live: bool) -> Result<Planned, StepError> {
        self.plan_devices(cx, read_live).await
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
        let tally = Tally::new(devices.len());
        // The recorded devices first, in pages: only those that differ are run (and read
        // again, one by one) below; the others are left as they are, unread.
        // Bulk mode picks its own candidates among all the manifest's devices (a device whose
        // registration task was recorded is resumed by it), as before pages were read.
        let all = self.0.d.bulk.enabled.then(|| devices.clone());
        let (known, new): (Vec<Device>, Vec<Device>) = devices
            .into_iter()
            .partition(|d| recorded.contains(&d.thing_name));
        let planned = self.1.lock().expect("survey").take();
        let survey = if known.is_empty() {
            None
        } else if let Some(sv) = planned.filter(|sv| sv.surveyed == known.len()) {
            Some(sv)
        } else {
            cx.progress(&format!(
                "reading {} recorded devices in pages",
                known.len()
            ));
            Some(Arc::new(self.survey(cx, targets(&known), true).await?))
        };
        let mut todo = new;
        if let Some(sv) = &survey {
            for (name, e) in &sv.failed {
                tally.record(cx, name, Err(e.clone()));
            }
            for dev in known {
                if sv.drifted.contains_key(&dev.thing_name) {
                    todo.push(dev);
                } else if !sv.failed.iter().any(|(n, _)| *n == dev.thing_name) {
                    tally.record(cx, &dev.thing_name, Ok(Outcome::Unchanged));
                }
            }
        }
        // Bulk mode registers the new devices server-side first; the rest (and any device
        // it did not handle) go one at a time as below.
        let bulk = match &all {
            Some(all) => super::bulk::register(&self.0, cx, all, self.spec().concurrency).await?,
            None => Default::default(),
        };
        let to_run: std::collections::HashSet<&str> =
            todo.iter().map(|d| d.thing_name.as_str()).collect();
        for (name, result) in &bulk {
            // A device the survey counted as in place is not counted twice.
            if to_run.contains(name.as_str()) {
                tally.record(cx, name, result.clone());
            }
        }
        let t = &tally;
        stream::iter(todo)
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
        if let Some(sv) = &survey {
            text.push_str(&format!("; {}, {}", sv.summary(), sv.reads()));
        }
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
        let names: Vec<String> = Self::recorded(cx).into_iter().collect();
        let total = names.len();
        if total == 0 {
            return vec![Check::fail(NAME, KIND, "no device recorded in the state")];
        }
        let res = format!("{KIND} of {total} devices");
        // Each device as `up` last applied it: its attributes from the state.
        let targets: Vec<survey::Target> = names
            .iter()
            .map(|name| survey::Target {
                name: name.clone(),
                attributes: cx
                    .store()
                    .device_applied(name, THING)
                    .map(|f| attributes_of(&f))
                    .unwrap_or_default(),
                csr: None,
            })
            .collect();
        let sv = match self.survey(cx, targets, false).await {
            Ok(sv) => sv,
            Err(e) => {
                return vec![
                    Check::fail(NAME, &res, e.to_string()),
                    Check::fail(CONNECTIVITY, &res, e.to_string()),
                ]
            }
        };
        // The sampled devices, and those the pages show differ, get verify's own checks, each
        // with its own reads: what differs in its words, and what no plan looks at (the local
        // key files).
        let full: BTreeSet<String> = sv
            .sampled
            .iter()
            .chain(sv.drifted.keys())
            .cloned()
            .collect();
        let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let f = &failures;
        stream::iter(full)
            .map(|name| async move {
                let attributes = cx
                    .store()
                    .device_applied(&name, THING)
                    .map(|f| attributes_of(&f))
                    .unwrap_or_default();
                let env = Arc::new(Env::new(
                    self.0.aws.clone(),
                    device_deployment(&self.0.d, &name, attributes, None),
                ));
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
        let mut failures = failures.into_inner().expect("failures");
        failures.sort();
        for (name, e) in &sv.failed {
            failures.push(format!("{name}: {e}"));
        }
        let devices =
            if failures.is_empty() {
                Check::pass(
                    NAME,
                    &res,
                    format!(
                    "{total} devices: thing, active certificate, attachments{} as configured; {}",
                    if self.0.d.shadow.is_some() { ", shadow" } else { "" },
                    sv.reads()
                ),
                )
            } else {
                Check::fail(
                    NAME,
                    &res,
                    format!(
                        "{}{} problems: {}",
                        // The pages' count (the sample's devices are counted by their checks).
                        if sv.drifted.is_empty() {
                            String::new()
                        } else {
                            format!("pages: {}; ", sv.summary())
                        },
                        failures.len(),
                        failures
                            .iter()
                            .take(10)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                )
            };
        vec![devices, self.connectivity(&sv, &names, &res)]
    }
}

/// verify's fleet counts from the index.
const CONNECTIVITY: &str = "fleet.connectivity";

impl Fleet {
    /// Connected now, connected lately, never connected, and shadows whose reported state
    /// lags the desired one: counted over the index's pages (no call per device).
    fn connectivity(&self, sv: &Survey, names: &[String], res: &str) -> Check {
        let view = &sv.view;
        if !view.has_connectivity() && !view.has_shadows() {
            let why = if view.notes.is_empty() {
                "the account's fleet index has no connectivity or shadows (fleet.indexing = true turns it on)".to_string()
            } else {
                view.notes.join("; ")
            };
            return Check::skip(CONNECTIVITY, res, why);
        }
        let within = self.spec().connected_within;
        let since = crate::state::now_ms() as i64 - within.as_millis() as i64;
        let (mut now, mut lately, mut never, mut lagging, mut indexed) = (0, 0, 0, 0, 0);
        for name in names {
            if view.indexed(name) {
                indexed += 1;
            }
            if let Some(c) = view.connectivity(name) {
                if c.connected {
                    now += 1;
                }
                match c.timestamp_ms {
                    Some(t) if c.connected || t >= since => lately += 1,
                    None if !c.connected => never += 1,
                    _ => {}
                }
            }
            if view.indexed_shadow(name).is_some_and(lags) {
                lagging += 1;
            }
        }
        let total = names.len();
        let hours = within.as_secs_f64() / 3600.0;
        let mut parts = Vec::new();
        if view.has_connectivity() {
            parts.push(format!(
                "{now} of {total} devices connected now, {lately} connected in the last {hours} h, {never} never connected"
            ));
        }
        if view.has_shadows() {
            parts.push(format!(
                "{lagging} shadows whose reported state lags the desired one"
            ));
        }
        if indexed < total {
            parts.push(format!(
                "{} devices not in the index yet (AWS updates it within seconds)",
                total - indexed
            ));
        }
        Check::pass(CONNECTIVITY, res, parts.join("; "))
    }
}

/// Whether an indexed shadow's reported state lags its desired one: a desired key whose
/// reported value differs.
fn lags(shadow: &serde_json::Value) -> bool {
    let Some(desired) = shadow.get("desired").and_then(|d| d.as_object()) else {
        return false;
    };
    let reported = shadow.get("reported");
    desired
        .iter()
        .any(|(k, v)| reported.and_then(|r| r.get(k)) != Some(v))
}

/// The survey's targets: the manifest's devices with what it wants of each.
fn targets(devices: &[Device]) -> Vec<survey::Target> {
    devices
        .iter()
        .map(|d| survey::Target {
            name: d.thing_name.clone(),
            attributes: d.attributes.clone(),
            csr: d.csr.clone(),
        })
        .collect()
}

impl Fleet {
    /// Compares the manifest with the state and, for the recorded devices, with what is live
    /// (the survey): new devices, devices that differ (each with its steps), devices gone
    /// from the manifest.
    async fn plan_devices(&self, cx: &Ctx, read_live: bool) -> Result<Planned, StepError> {
        let Some(devices) = self.spec().devices.as_ref() else {
            // Only `up` and `plan` plan, and both have the manifest.
            return Ok(Planned::new(FLEET, KIND, &self.name(), Action::Create));
        };
        let recorded = Self::recorded(cx);
        let mut p = Planned::new(FLEET, KIND, &self.name(), Action::NoChange);
        let known: Vec<Device> = devices
            .iter()
            .filter(|d| recorded.contains(&d.thing_name))
            .cloned()
            .collect();
        let new = devices.len() - known.len();
        let survey = if known.is_empty() || !read_live {
            None
        } else {
            let sv = self.survey(cx, targets(&known), true).await?;
            if let Some((name, e)) = sv.failed.first() {
                return Err(StepError::Failed(format!(
                    "{} of {} devices could not be read; first, {name}: {e}",
                    sv.failed.len(),
                    sv.surveyed
                )));
            }
            let sv = Arc::new(sv);
            *self.1.lock().expect("survey") = Some(sv.clone());
            Some(sv)
        };
        let wanted: BTreeSet<&str> = devices.iter().map(|d| d.thing_name.as_str()).collect();
        let removed: Vec<&String> = recorded
            .iter()
            .filter(|n| !wanted.contains(n.as_str()))
            .collect();
        if recorded.len() != devices.len() || new > 0 {
            p.changes.push(Change {
                field: "devices".into(),
                from: Some(recorded.len().into()),
                to: Some(
                    (devices.len() + if self.spec().prune { 0 } else { removed.len() }).into(),
                ),
                origin: Origin::Config,
            });
        }
        let mut notes = Vec::new();
        if new > 0 {
            notes.push(format!("{new} to create"));
        }
        let drifted = survey.as_ref().map_or(0, |sv| sv.drifted.len());
        if let Some(sv) = &survey {
            notes.push(sv.summary());
            p.devices = sv.device_plans();
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
        if let Some(sv) = &survey {
            notes.push(sv.reads());
        }
        p.action = if recorded.is_empty() {
            Action::Create
        } else if new > 0 || drifted > 0 || (self.spec().prune && !removed.is_empty()) {
            Action::Update
        } else {
            Action::NoChange
        };
        if !notes.is_empty() {
            p.note = Some(notes.join("; "));
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
