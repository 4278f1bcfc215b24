//! The plan runner. It knows resources only through the [`Resource`] trait (no AWS types), runs
//! `ensure` forward and `destroy` in reverse along the declared dependencies, starts every step
//! whose prerequisites are done (so independent chains such as IAM and IoT overlap), and saves
//! state through [`Ctx`] after every change.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::plan::{self, Action, Change, Fields, Origin, Planned};
use crate::state::{self, DeviceState, Journal, Phase, Record, State, StateError};

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// Found live and taken over: after a crash (an intent), or a shared resource.
    Adopted,
    /// Changed in place; the text says what.
    Updated(String),
    Unchanged,
    Deleted,
    /// Nothing to delete: it was already gone (or never created).
    Absent,
    /// Left in place on purpose; the text says why (e.g. shared with another deployment).
    Retained(String),
    /// Started but cannot finish yet; the text says when it can (e.g. a deprecated thing type).
    Pending(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Adopted => "adopted",
            Outcome::Updated(_) => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
            Outcome::Retained(_) => "retained",
            Outcome::Pending(_) => "pending",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Updated(s) | Outcome::Retained(s) | Outcome::Pending(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An operation failed; the message already names the resource, call, code and advice.
    #[error("{0}")]
    Failed(String),
    /// An AWS call failed; one line naming the resource, call and answer (see `aws::failed`).
    #[error(transparent)]
    Aws(crate::aws::AwsFailure),
    #[error("{kind} {name:?} already exists but this state does not own it; delete it, or pin another suffix in the config")]
    NotOurs { kind: String, name: String },
    #[error(transparent)]
    State(#[from] StateError),
    /// A create answered "already exists": most often our own earlier attempt, whose answer was
    /// lost and which the SDK retried. The intent is kept, so reading again adopts it.
    #[error("{kind} {name:?}: the create call answered that it already exists, and it could not be read back; run `iotreg up` again")]
    ExistsAfterCreate { kind: String, name: String },
    #[error("skipped: {0} did not complete")]
    Skipped(String),
    #[error("not started: interrupted")]
    Interrupted,
}

/// The result of one verification check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Stable dotted name, e.g. `certificate.active` (a JUnit testcase name).
    pub name: String,
    /// The resource it is about, e.g. `thing temperature-sensor-abc123`.
    pub resource: String,
    pub status: CheckStatus,
    /// Why it passed, failed or was skipped: names what differs.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
    Skip,
}

impl Check {
    pub fn new(name: &str, resource: &str, ok: bool, reason: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            resource: resource.into(),
            status: if ok {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            reason: reason.into(),
        }
    }
    pub fn pass(name: &str, resource: &str, reason: impl Into<String>) -> Check {
        Check::new(name, resource, true, reason)
    }
    pub fn fail(name: &str, resource: &str, reason: impl Into<String>) -> Check {
        Check::new(name, resource, false, reason)
    }
    pub fn skip(name: &str, resource: &str, reason: impl Into<String>) -> Check {
        Check {
            status: CheckStatus::Skip,
            ..Check::new(name, resource, true, reason)
        }
    }
}

/// One kind of resource. Implementations live in `resources/`, one file per kind.
#[async_trait::async_trait]
pub trait Resource: Send + Sync {
    /// Stable key of this resource in the state file.
    fn key(&self) -> &str;
    /// Human label, e.g. "IoT policy".
    fn kind(&self) -> &str;
    /// The resource's name as the user would look for it.
    fn name(&self) -> String;
    /// Keys that must be ensured before this one (and destroyed after it).
    fn depends_on(&self) -> &[&'static str];
    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError>;
    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError>;
    /// Read-only: the live resource's ARN (or another identifier) if it exists.
    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError>;
    /// Read-only: compares live with desired. An AWS error fails the checks it prevented.
    async fn check(&self, cx: &Ctx) -> Vec<Check>;
    /// What the config wants, as fields comparable with [`Resource::observe`]'s.
    fn desired(&self, cx: &Ctx) -> Fields;
    /// Read-only: the live resource as the same fields as [`Resource::desired`], or None when
    /// it does not exist. Must judge exactly as `ensure` does, so a plan never disagrees with it.
    async fn observe(&self, cx: &Ctx) -> Result<Option<Fields>, StepError>;
    /// Fields AWS cannot change in place: a difference in one is a replace.
    fn immutable(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether it links two resources (an attachment, a thing's shadow) rather than standing
    /// alone: found live, it is taken over; it follows a rename of what it links.
    fn link(&self) -> bool {
        false
    }
    /// Whether `up` takes over a live resource this state has no record of (a shared thing
    /// type, a link between resources it owns) instead of refusing it.
    fn adopts_unowned(&self) -> bool {
        self.link()
    }
    /// Whether it can exist before this deployment does (its name carries no suffix).
    fn shared(&self) -> bool {
        false
    }
    /// Whether the recorded resource is another one than the config names (a rename).
    fn renamed(&self, rec: &Record) -> bool {
        rec.name != self.name()
    }
    /// What a replace means for this resource and whether `up` carries it out.
    fn replacement(&self, why: &Replacement) -> (String, bool) {
        match why {
            Replacement::Renamed { from } if self.link() => (
                format!("was {from:?}: follows the rename of what it links"),
                true,
            ),
            Replacement::Renamed { from } => (
                format!(
                    "renamed from {from:?}: AWS cannot rename it, and iotreg does not replace it on its own; restore the old name, or run `iotreg down` then `iotreg up`"
                ),
                false,
            ),
            Replacement::Immutable { fields } => (
                format!(
                    "AWS cannot change {} in place; run `iotreg down` then `iotreg up` to recreate it",
                    fields.join(", ")
                ),
                false,
            ),
        }
    }
    /// Why a recorded resource the config no longer wants is deleted.
    fn delete_note(&self) -> String {
        "no longer wanted by the config".into()
    }
    /// A plan this resource makes itself (a fleet summarises its devices); None: the generic
    /// field comparison.
    async fn own_plan(&self, _cx: &Ctx) -> Option<Result<Planned, StepError>> {
        None
    }
}

/// Events nobody watches (a fleet device's steps: the fleet reports for them).
pub struct Silent;
impl Events for Silent {
    fn started(&self, _: &str, _: &str, _: &str) {}
    fn progress(&self, _: &str, _: &str) {}
    fn finished(&self, _: &StepReport) {}
}

/// Why a resource would be replaced rather than updated.
pub enum Replacement {
    Renamed { from: String },
    Immutable { fields: Vec<String> },
}

/// What `up` would do to one resource, read-only. `read_live` false plans a deployment that
/// cannot exist yet (no state, no pinned suffix): only shared resources are looked up.
pub async fn plan_one(r: &dyn Resource, cx: &Ctx, read_live: bool) -> Result<Planned, StepError> {
    if let Some(own) = r.own_plan(cx).await {
        return own;
    }
    let rec = cx.record(r.key());
    let mut p = Planned::new(r.key(), r.kind(), &r.name(), Action::NoChange);
    if let Some(rec) = rec.as_ref().filter(|rec| rec.phase != Phase::Intent) {
        if r.renamed(rec) {
            let (note, applicable) = r.replacement(&Replacement::Renamed {
                from: rec.name.clone(),
            });
            p.action = Action::Replace;
            p.changes = vec![Change {
                field: "name".into(),
                from: Some(rec.name.clone().into()),
                to: Some(r.name().into()),
                origin: Origin::Config,
            }];
            p.note = Some(note);
            p.applicable = applicable;
            return Ok(p);
        }
    }
    let live = if read_live || r.shared() {
        r.observe(cx).await?
    } else {
        None
    };
    let want = r.desired(cx);
    let Some(live) = live else {
        p.action = Action::Create;
        p.note = match rec.map(|r| r.phase) {
            Some(Phase::Intent) => Some(
                "an earlier create was interrupted; up looks for its result before creating".into(),
            ),
            Some(_) => Some("recorded in the state but gone: deleted outside iotreg".into()),
            None => None,
        };
        return Ok(p);
    };
    let applied = cx.applied(r.key());
    p.changes = plan::compare(&want, &live, applied.as_ref());
    match rec {
        None if !r.adopts_unowned() => {
            p.action = Action::Conflict;
            p.note = Some(format!(
                "{} already exists but this state does not own it; delete it, or pin another suffix in the config",
                r.kind()
            ));
            p.applicable = false;
            p.changes.clear();
        }
        None => {
            p.action = Action::Adopt;
            p.note = Some("exists; up records it as part of this deployment".into());
        }
        Some(rec) if rec.phase == Phase::Intent => {
            p.action = Action::Adopt;
            p.note = Some("an interrupted create had made it; up records it".into());
        }
        Some(_) if p.changes.is_empty() => {}
        Some(_) => {
            let fixed: Vec<String> = p
                .changes
                .iter()
                .filter(|c| r.immutable().contains(&c.field.as_str()))
                .map(|c| c.field.clone())
                .collect();
            if fixed.is_empty() {
                p.action = Action::Update;
            } else {
                let (note, applicable) = r.replacement(&Replacement::Immutable { fields: fixed });
                p.action = Action::Replace;
                p.note = Some(note);
                p.applicable = applicable;
            }
        }
    }
    Ok(p)
}

/// The plan of a recorded resource the config no longer wants.
pub fn plan_delete(r: &dyn Resource, cx: &Ctx) -> Option<Planned> {
    let rec = cx.record(r.key())?;
    Some(Planned::new(r.key(), r.kind(), &rec.name, Action::Delete).with_note(r.delete_note()))
}

/// Observer of the run, for progress display.
pub trait Events: Send + Sync {
    fn started(&self, key: &str, kind: &str, name: &str);
    fn progress(&self, key: &str, message: &str);
    fn finished(&self, report: &StepReport);
}

/// A state file plus the in-memory copy, saved after every mutation under one mutex so that
/// concurrent steps never interleave writes.
pub struct Store {
    journal: Mutex<Journal>,
    path: PathBuf,
    state: Mutex<State>,
    /// Plan order: records are kept in it so the file reads top to bottom like the stack.
    order: Mutex<Vec<String>>,
}

impl Store {
    pub fn new(path: PathBuf, state: State) -> Store {
        Store {
            journal: Mutex::new(Journal::new(&path)),
            path,
            state: Mutex::new(state),
            order: Mutex::new(Vec::new()),
        }
    }

    /// Changes one fleet device's entry and appends it to the journal: the cost does not grow
    /// with the fleet. `durable` (an intent): on disk before this returns. (Lock order: state,
    /// then journal, everywhere.)
    pub fn update_device<T>(
        &self,
        device: &str,
        durable: bool,
        f: impl FnOnce(&mut DeviceState) -> T,
    ) -> Result<T, StateError> {
        let mut guard = self.state.lock().expect("state mutex");
        let entry = guard.devices.entry(device.to_string()).or_default();
        let out = f(entry);
        let keep = !entry.records.is_empty();
        if !keep {
            guard.devices.remove(device);
        }
        let line = Journal::line(device, guard.devices.get(device));
        // Lines go out in the order of the changes (the journal is taken before the state is
        // let go), but readers and other devices' changes need not wait for the disk.
        let mut journal = self.journal.lock().expect("journal mutex");
        drop(guard);
        journal.append_line(&line, durable)?;
        Ok(out)
    }

    /// fdatasync calls the journal has made.
    #[cfg(test)]
    pub fn journal_syncs(&self) -> u64 {
        self.journal.lock().expect("journal mutex").syncs()
    }

    /// The fleet devices recorded, by thing name.
    pub fn device_names(&self) -> std::collections::BTreeSet<String> {
        let s = self.state.lock().expect("state mutex");
        s.devices.keys().cloned().collect()
    }

    pub fn has_device(&self, device: &str) -> bool {
        let s = self.state.lock().expect("state mutex");
        s.devices.contains_key(device)
    }

    /// What `up` last applied to one of a device's resources.
    pub fn device_applied(&self, device: &str, key: &str) -> Option<Fields> {
        let s = self.state.lock().expect("state mutex");
        s.devices.get(device)?.applied.get(key).cloned()
    }

    /// Writes the whole state and folds the journal in.
    pub fn compact(&self) -> Result<(), StateError> {
        self.update(|_| ())
    }

    fn set_order(&self, keys: Vec<String>) {
        *self.order.lock().expect("order mutex") = keys;
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().expect("state mutex").clone()
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StateError> {
        let mut guard = self.state.lock().expect("state mutex");
        let out = f(&mut guard);
        let order = self.order.lock().expect("order mutex");
        let rank = |k: &str| order.iter().position(|o| o == k).unwrap_or(usize::MAX);
        guard.resources.sort_by_key(|r| rank(&r.key));
        state::save(&self.path, &guard)?;
        self.journal.lock().expect("journal mutex").clear()?;
        Ok(out)
    }
}

/// What a step sees of the engine: the state and a way to report progress.
pub struct Ctx {
    store: Arc<Store>,
    events: Arc<dyn Events>,
    cancel: Arc<AtomicBool>,
    current: Option<String>,
    /// A fleet device: records are that device's (same keys as the single stack's).
    device: Option<String>,
}

impl Ctx {
    pub fn new(store: Arc<Store>, events: Arc<dyn Events>, cancel: Arc<AtomicBool>) -> Ctx {
        Ctx {
            store,
            events,
            cancel,
            current: None,
            device: None,
        }
    }

    fn for_step(&self, key: &str) -> Ctx {
        Ctx {
            store: self.store.clone(),
            events: self.events.clone(),
            cancel: self.cancel.clone(),
            current: Some(key.to_string()),
            device: self.device.clone(),
        }
    }

    /// The context of one fleet device, reporting to `events`.
    pub fn for_device(&self, device: &str, events: Arc<dyn Events>) -> Ctx {
        Ctx {
            store: self.store.clone(),
            events,
            cancel: self.cancel.clone(),
            current: None,
            device: Some(device.to_string()),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn record(&self, key: &str) -> Option<Record> {
        let s = self.store.state.lock().expect("state mutex");
        match &self.device {
            Some(d) => s.devices.get(d).and_then(|e| e.get(key)).cloned(),
            None => s.get(key).cloned(),
        }
    }

    /// Writes a record. A fleet device's journal line waits for the disk only when `durable`;
    /// the single stack's state file is always rewritten in full and synced.
    fn put(&self, record: Record, durable: bool) -> Result<(), StepError> {
        match &self.device {
            Some(d) => self.store.update_device(d, durable, |e| e.put(record))?,
            None => self.store.update(|s| s.put(record))?,
        }
        Ok(())
    }

    /// Records that a create call is about to be sent, before it is sent: on disk when this
    /// returns, so that a crash after the call leaves something to look for.
    pub fn intent(&self, mut record: Record) -> Result<Record, StepError> {
        record.phase = Phase::Intent;
        record.intent_at_ms = Some(state::now_ms());
        self.put(record.clone(), true)?;
        Ok(record)
    }

    /// Records a resource as existing (created, adopted or borrowed). For a fleet device it
    /// need not wait for the disk: lost, it leaves the intent, which resume looks up.
    pub fn commit(&self, record: Record) -> Result<(), StepError> {
        self.put(record, false)
    }

    /// What `up` last applied to this resource, if known.
    pub fn applied(&self, key: &str) -> Option<Fields> {
        let s = self.store.state.lock().expect("state mutex");
        match &self.device {
            Some(d) => s.devices.get(d).and_then(|e| e.applied.get(key)).cloned(),
            None => s.applied.get(key).cloned(),
        }
    }

    /// Records what an `ensure` just brought the resource to. Saved only when it differs.
    fn set_applied(&self, key: &str, fields: Fields) -> Result<(), StepError> {
        if self.record(key).is_none() || self.applied(key).as_ref() == Some(&fields) {
            return Ok(());
        }
        match &self.device {
            // Advisory (it labels a plan's differences): no need to wait for the disk.
            Some(d) => self.store.update_device(d, false, |e| {
                e.applied.insert(key.to_string(), fields);
            })?,
            None => self.store.update(|s| {
                s.applied.insert(key.to_string(), fields);
            })?,
        }
        Ok(())
    }

    /// A resource found live as wanted: Unchanged when the state already says so, else the
    /// record is written and it counts as Adopted.
    pub fn keep(&self, recorded: Option<&Record>, record: Record) -> Result<Outcome, StepError> {
        if recorded == Some(&record) {
            return Ok(Outcome::Unchanged);
        }
        self.commit(record)?;
        Ok(Outcome::Adopted)
    }

    pub fn forget(&self, key: &str) -> Result<(), StepError> {
        match &self.device {
            // Lost, a record of something deleted is found gone by the next run.
            Some(d) => self.store.update_device(d, false, |e| e.remove(key))?,
            None => self.store.update(|s| s.remove(key))?,
        }
        Ok(())
    }

    pub fn progress(&self, message: &str) {
        if let Some(key) = &self.current {
            self.events.progress(key, message);
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct StepReport {
    pub key: String,
    pub kind: String,
    pub name: String,
    pub result: Result<Outcome, String>,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// Runs the plan. In `Up`, a step starts when everything it depends on is ensured; in `Down`,
/// when everything that depends on it is destroyed. A failed step skips only the steps that
/// need it; independent chains carry on, so one failure never strands unrelated work.
/// Reports come back in plan order.
pub async fn run(plan: &[Box<dyn Resource>], direction: Direction, cx: &Ctx) -> Vec<StepReport> {
    if cx.device.is_none() {
        cx.store
            .set_order(plan.iter().map(|r| r.key().to_string()).collect());
    }
    let index: HashMap<&str, usize> = plan.iter().enumerate().map(|(i, r)| (r.key(), i)).collect();
    // prerequisites[i]: steps that must succeed before step i runs in this direction.
    let mut prerequisites: Vec<Vec<usize>> = vec![Vec::new(); plan.len()];
    for (i, r) in plan.iter().enumerate() {
        for dep in r.depends_on() {
            let Some(&d) = index.get(dep) else { continue };
            match direction {
                Direction::Up => prerequisites[i].push(d),
                Direction::Down => prerequisites[d].push(i),
            }
        }
    }

    let mut reports: Vec<Option<StepReport>> = (0..plan.len()).map(|_| None).collect();
    let mut succeeded: HashSet<usize> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut started: HashSet<usize> = HashSet::new();

    loop {
        for i in 0..plan.len() {
            if started.contains(&i) || reports[i].is_some() {
                continue;
            }
            let r = &plan[i];
            if let Some(&bad) = prerequisites[i]
                .iter()
                .find(|p| reports[**p].as_ref().is_some_and(|rep| rep.result.is_err()))
            {
                let reason =
                    StepError::Skipped(format!("{} {}", plan[bad].kind(), plan[bad].name()));
                reports[i] = Some(skip_report(r.as_ref(), reason));
                continue;
            }
            if !prerequisites[i].iter().all(|p| succeeded.contains(p)) {
                continue;
            }
            if cx.cancelled() {
                reports[i] = Some(skip_report(r.as_ref(), StepError::Interrupted));
                continue;
            }
            started.insert(i);
            let step_cx = cx.for_step(r.key());
            let name = r.name();
            cx.events.started(r.key(), r.kind(), &name);
            running.push(async move {
                let t0 = Instant::now();
                let result = match direction {
                    Direction::Up => match r.ensure(&step_cx).await {
                        // Read again: the intent makes the existing resource adoptable.
                        Err(StepError::ExistsAfterCreate { .. }) => r.ensure(&step_cx).await,
                        other => other,
                    }
                    .and_then(|outcome| {
                        // Ensured means live equals desired: remember it, for the next plan.
                        step_cx.set_applied(r.key(), r.desired(&step_cx))?;
                        Ok(outcome)
                    }),
                    Direction::Down => r.destroy(&step_cx).await,
                };
                (i, result, t0.elapsed())
            });
        }
        // Skips can unlock further skips; loop until nothing new is decided.
        let undecided_ready = (0..plan.len()).any(|i| {
            !started.contains(&i)
                && reports[i].is_none()
                && prerequisites[i]
                    .iter()
                    .any(|p| reports[*p].as_ref().is_some_and(|rep| rep.result.is_err()))
        });
        if undecided_ready {
            continue;
        }
        let Some((i, result, elapsed)) = running.next().await else {
            break;
        };
        let r = &plan[i];
        if result.is_ok() {
            succeeded.insert(i);
        }
        let report = StepReport {
            key: r.key().to_string(),
            kind: r.kind().to_string(),
            name: r.name(),
            result: result.map_err(|e| e.to_string()),
            elapsed,
        };
        cx.events.finished(&report);
        reports[i] = Some(report);
    }
    reports
        .into_iter()
        .zip(plan)
        .map(|(rep, r)| {
            rep.unwrap_or_else(|| {
                skip_report(r.as_ref(), StepError::Skipped("a prerequisite".into()))
            })
        })
        .collect()
}

fn skip_report(r: &dyn Resource, reason: StepError) -> StepReport {
    StepReport {
        key: r.key().to_string(),
        kind: r.kind().to_string(),
        name: r.name(),
        result: Err(reason.to_string()),
        elapsed: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A fake resource with an in-memory "cloud", to test the engine without AWS.
    struct Fake {
        key: &'static str,
        deps: Vec<&'static str>,
        cloud: Arc<Mutex<Vec<String>>>,
        log: Arc<Mutex<Vec<String>>>,
        fail_on: Option<Direction>,
        in_flight: Arc<AtomicUsize>,
        max_in_flight: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Resource for Fake {
        fn key(&self) -> &str {
            self.key
        }
        fn kind(&self) -> &str {
            "fake"
        }
        fn name(&self) -> String {
            self.key.to_string()
        }
        fn depends_on(&self) -> &[&'static str] {
            &self.deps
        }
        async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.log.lock().unwrap().push(format!("up {}", self.key));
            if self.fail_on == Some(Direction::Up) {
                return Err(StepError::Failed(format!("{} broke", self.key)));
            }
            if self.cloud.lock().unwrap().contains(&self.key.to_string()) {
                return Ok(Outcome::Unchanged);
            }
            cx.intent(Record::new(self.key, "fake", Phase::Intent, self.key))?;
            self.cloud.lock().unwrap().push(self.key.to_string());
            cx.commit(Record::new(self.key, "fake", Phase::Created, self.key))?;
            Ok(Outcome::Created)
        }
        async fn check(&self, _cx: &Ctx) -> Vec<Check> {
            vec![]
        }
        fn desired(&self, _cx: &Ctx) -> Fields {
            Fields::new()
        }
        async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
            let exists = self.cloud.lock().unwrap().contains(&self.key.to_string());
            Ok(exists.then(Fields::new))
        }
        async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
            let exists = self.cloud.lock().unwrap().contains(&self.key.to_string());
            Ok(exists.then(|| self.key.to_string()))
        }
        async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
            self.log.lock().unwrap().push(format!("down {}", self.key));
            if self.fail_on == Some(Direction::Down) {
                return Err(StepError::Failed(format!("{} broke", self.key)));
            }
            let mut cloud = self.cloud.lock().unwrap();
            let before = cloud.len();
            cloud.retain(|k| k != self.key);
            let gone = before != cloud.len();
            drop(cloud);
            cx.forget(self.key)?;
            Ok(if gone {
                Outcome::Deleted
            } else {
                Outcome::Absent
            })
        }
    }

    struct NoEvents;
    impl Events for NoEvents {
        fn started(&self, _: &str, _: &str, _: &str) {}
        fn progress(&self, _: &str, _: &str) {}
        fn finished(&self, _: &StepReport) {}
    }

    struct World {
        cloud: Arc<Mutex<Vec<String>>>,
        log: Arc<Mutex<Vec<String>>>,
        max_in_flight: Arc<AtomicUsize>,
        dir: tempfile::TempDir,
    }

    impl World {
        fn new() -> World {
            World {
                cloud: Default::default(),
                log: Default::default(),
                max_in_flight: Default::default(),
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn plan(&self, fail: &[(&'static str, Direction)]) -> Vec<Box<dyn Resource>> {
            // a -> b -> d, c independent, e depends on b and c.
            let spec: [(&'static str, Vec<&'static str>); 5] = [
                ("a", vec![]),
                ("b", vec!["a"]),
                ("c", vec![]),
                ("d", vec!["b"]),
                ("e", vec!["b", "c"]),
            ];
            let in_flight = Arc::new(AtomicUsize::new(0));
            spec.into_iter()
                .map(|(key, deps)| {
                    Box::new(Fake {
                        key,
                        deps,
                        cloud: self.cloud.clone(),
                        log: self.log.clone(),
                        fail_on: fail.iter().find(|(k, _)| *k == key).map(|(_, d)| *d),
                        in_flight: in_flight.clone(),
                        max_in_flight: self.max_in_flight.clone(),
                    }) as Box<dyn Resource>
                })
                .collect()
        }
        fn cx(&self) -> Ctx {
            let path = self.dir.path().join("state.json");
            let state = state::load(&path)
                .unwrap()
                .unwrap_or_else(|| State::new("r", "a", "s"));
            Ctx::new(
                Arc::new(Store::new(path, state)),
                Arc::new(NoEvents),
                Arc::new(AtomicBool::new(false)),
            )
        }
        fn position(&self, entry: &str) -> usize {
            self.log
                .lock()
                .unwrap()
                .iter()
                .position(|e| e == entry)
                .unwrap()
        }
    }

    fn outcomes(reports: &[StepReport]) -> Vec<String> {
        reports
            .iter()
            .map(|r| match &r.result {
                Ok(o) => format!("{} {}", r.key, o.label()),
                Err(e) => format!("{} error: {e}", r.key),
            })
            .collect()
    }

    #[tokio::test]
    async fn up_respects_dependencies_and_overlaps_independent_steps() {
        let w = World::new();
        let reports = run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        assert!(reports.iter().all(|r| r.result == Ok(Outcome::Created)));
        assert!(w.position("up a") < w.position("up b"));
        assert!(w.position("up b") < w.position("up d"));
        assert!(w.position("up c") < w.position("up e"));
        assert!(
            w.max_in_flight.load(Ordering::SeqCst) >= 2,
            "a and c run together"
        );
        let state = w.cx().store.snapshot();
        assert_eq!(state.resources.len(), 5);
        assert!(state.resources.iter().all(|r| r.phase == Phase::Created));
        let keys: Vec<_> = state.resources.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            ["a", "b", "c", "d", "e"],
            "plan order, not completion order"
        );
    }

    #[tokio::test]
    async fn second_up_changes_nothing() {
        let w = World::new();
        run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        let reports = run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        assert!(reports.iter().all(|r| r.result == Ok(Outcome::Unchanged)));
        assert_eq!(w.cloud.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn down_runs_in_reverse_dependency_order() {
        let w = World::new();
        run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        w.log.lock().unwrap().clear();
        let reports = run(&w.plan(&[]), Direction::Down, &w.cx()).await;
        assert!(reports.iter().all(|r| r.result == Ok(Outcome::Deleted)));
        assert!(w.position("down d") < w.position("down b"));
        assert!(w.position("down e") < w.position("down b"));
        assert!(w.position("down e") < w.position("down c"));
        assert!(w.position("down b") < w.position("down a"));
        assert!(w.cloud.lock().unwrap().is_empty());
        assert!(w.cx().store.snapshot().resources.is_empty());
    }

    #[tokio::test]
    async fn a_failure_skips_dependents_only() {
        let w = World::new();
        let reports = run(&w.plan(&[("b", Direction::Up)]), Direction::Up, &w.cx()).await;
        assert_eq!(
            outcomes(&reports),
            [
                "a created",
                "b error: b broke",
                "c created",
                "d error: skipped: fake b did not complete",
                "e error: skipped: fake b did not complete"
            ]
        );
        // A rerun without the fault converges.
        let reports = run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        assert_eq!(
            outcomes(&reports),
            [
                "a unchanged",
                "b created",
                "c unchanged",
                "d created",
                "e created"
            ]
        );
    }

    #[tokio::test]
    async fn down_failure_keeps_what_the_failed_step_needs() {
        let w = World::new();
        run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        let reports = run(&w.plan(&[("d", Direction::Down)]), Direction::Down, &w.cx()).await;
        let o = outcomes(&reports);
        assert_eq!(o[3], "d error: d broke");
        assert!(o[1].starts_with("b error: skipped"), "{o:?}");
        assert!(o[0].starts_with("a error: skipped"), "{o:?}");
        assert_eq!(o[4], "e deleted");
        assert_eq!(o[2], "c deleted");
        let left: Vec<_> = w.cloud.lock().unwrap().clone();
        assert_eq!(left, ["a", "b", "d"]);
    }

    #[test]
    fn a_fleet_device_waits_for_the_disk_only_for_its_intents() {
        let w = World::new();
        let path = w.dir.path().join("state.json");
        state::save(&path, &State::new("r", "a", "s")).unwrap();
        let cx = w.cx().for_device("sensor-1", Arc::new(NoEvents));
        let rec = Record::new("thing", "thing", Phase::Created, "sensor-1");
        cx.intent(rec.clone()).unwrap();
        assert_eq!(cx.store.journal_syncs(), 1);
        cx.commit(rec.clone()).unwrap();
        cx.set_applied("thing", Fields::new()).unwrap();
        cx.forget("thing").unwrap();
        assert_eq!(
            cx.store.journal_syncs(),
            1,
            "commit, applied and forget ride along"
        );
        cx.intent(rec).unwrap();
        assert_eq!(cx.store.journal_syncs(), 2);
        // Everything was written, in order: a reload sees the last change.
        let reloaded = state::load(&path).unwrap().unwrap();
        assert_eq!(reloaded.devices["sensor-1"].records[0].phase, Phase::Intent);
    }

    #[tokio::test]
    async fn cancellation_starts_nothing_new() {
        let w = World::new();
        let cx = w.cx();
        cx.cancel.store(true, Ordering::SeqCst);
        let reports = run(&w.plan(&[]), Direction::Up, &cx).await;
        assert!(reports.iter().all(|r| r.result.is_err()));
        for root in ["a", "c"] {
            let r = reports.iter().find(|r| r.key == root).unwrap();
            assert_eq!(r.result, Err("not started: interrupted".into()));
        }
        assert!(w.cloud.lock().unwrap().is_empty());
        assert!(w.log.lock().unwrap().is_empty(), "no step ran");
    }
}
