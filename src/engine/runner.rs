//! The runner: carries out the steps along their dependencies, overlapping what is independent.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{Ctx, Outcome, Resource, StepError};

#[derive(Debug)]
pub struct StepReport {
    pub key: String,
    pub kind: String,
    pub name: String,
    pub result: Result<Outcome, StepError>,
    pub elapsed: Duration,
}

impl StepReport {
    /// The outcome's label, `failed`, or `skipped` for a step that never ran.
    pub fn label(&self) -> &'static str {
        match &self.result {
            Ok(o) => o.label(),
            Err(e) if e.is_skip() => "skipped",
            Err(_) => "failed",
        }
    }
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
            // A dependency outside this run (a retired thing type that is not there, the
            // monitoring stack when it is off) constrains nothing. That every name is a real
            // resource is the registry's test (resources::tests).
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
                    },
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
            result,
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
        result: Err(reason),
        elapsed: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Events, Kind, Meta, Step};
    use crate::plan::{Action, Fields};
    use crate::state::{self, Phase, Record, State, Store};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

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

    impl Meta for Fake {
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
    }

    #[async_trait::async_trait]
    impl Kind for Fake {
        type Live = ();
        fn desired(&self, _cx: &Ctx) -> Fields {
            Fields::new()
        }
        async fn read(&self, _cx: &Ctx) -> Result<Option<()>, StepError> {
            Ok(self
                .cloud
                .lock()
                .unwrap()
                .contains(&self.key.to_string())
                .then_some(()))
        }
        fn fields(&self, _live: &()) -> Fields {
            Fields::new()
        }
        fn identify(&self, _live: &()) -> String {
            self.key.to_string()
        }
        fn check_name(&self) -> &'static str {
            "fake.exists"
        }
        async fn apply(&self, cx: &Ctx, step: Step<()>) -> Result<Outcome, StepError> {
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.log.lock().unwrap().push(format!("up {}", self.key));
            if self.fail_on == Some(Direction::Up) {
                return Err(StepError::Failed(format!("{} broke", self.key)));
            }
            if step.plan.action != Action::Create {
                return Ok(Outcome::Unchanged);
            }
            cx.intent(Record::new(self.key, "fake", Phase::Intent, self.key))?;
            self.cloud.lock().unwrap().push(self.key.to_string());
            cx.commit(Record::new(self.key, "fake", Phase::Created, self.key))?;
            Ok(Outcome::Created)
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
                Err(e) => format!("{} {}: {e}", r.key, r.label()),
            })
            .collect()
    }

    #[tokio::test]
    async fn up_respects_dependencies_and_overlaps_independent_steps() {
        let w = World::new();
        let reports = run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        assert!(reports
            .iter()
            .all(|r| matches!(r.result, Ok(Outcome::Created))));
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
        assert!(reports
            .iter()
            .all(|r| matches!(r.result, Ok(Outcome::Unchanged))));
        assert_eq!(w.cloud.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn down_runs_in_reverse_dependency_order() {
        let w = World::new();
        run(&w.plan(&[]), Direction::Up, &w.cx()).await;
        w.log.lock().unwrap().clear();
        let reports = run(&w.plan(&[]), Direction::Down, &w.cx()).await;
        assert!(reports
            .iter()
            .all(|r| matches!(r.result, Ok(Outcome::Deleted))));
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
                "b failed: b broke",
                "c created",
                "d skipped: skipped: fake b did not complete",
                "e skipped: skipped: fake b did not complete"
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
        assert_eq!(o[3], "d failed: d broke");
        assert!(o[1].starts_with("b skipped: "), "{o:?}");
        assert!(o[0].starts_with("a skipped: "), "{o:?}");
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
        assert_eq!(
            reloaded.devices.get("sensor-1").unwrap().records[0].phase,
            Phase::Intent
        );
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
            assert!(matches!(r.result, Err(StepError::Interrupted)), "{r:?}");
        }
        assert!(w.cloud.lock().unwrap().is_empty());
        assert!(w.log.lock().unwrap().is_empty(), "no step ran");
    }
}
