//! A fleet's survey: every recorded device compared with what the config wants, each by the
//! single device's own planning code, reading from the fleet's pages ([`FleetView`]) instead
//! of one call per resource. What no page returns (a certificate's attachment to its thing;
//! shadows without the fleet index) is read only for a random sample of devices, or for all
//! with `--full`; the other devices' unpaged resources count as recorded, unless the record
//! itself says they need work (an intent, a rename, a config change). `plan` shows the survey,
//! `up` repairs exactly the devices it names, `verify` fails on them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};

use super::view::FleetView;
use super::{device_deployment, Fleet, PerDevice};
use crate::engine::{Ctx, Resource, Silent, StepError};
use crate::plan::{Action, Planned};
use crate::resources::{
    device_plan, device_strays, Env, CERTIFICATE, GROUP_MEMBERSHIP, POLICY_ATTACHMENT, SHADOW,
    THING, THING_PRINCIPAL,
};
use crate::state::Phase;

/// A device to survey: its name and what the config wants of it.
pub struct Target {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    pub csr: Option<crate::keys::Csr>,
}

pub struct Survey {
    pub view: Arc<FleetView>,
    /// The devices read one by one.
    pub sampled: HashSet<String>,
    /// The devices that differ, with the steps `up` would take for each.
    pub drifted: BTreeMap<String, Vec<Planned>>,
    /// Devices whose reads failed, with the error.
    pub failed: Vec<(String, String)>,
    pub surveyed: usize,
}

impl Survey {
    /// `20 of 2000 devices differ: 12 attributes, 5 certificates INACTIVE, 3 shadows`.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for steps in self.drifted.values() {
            let cats: BTreeSet<String> = steps.iter().map(category).collect();
            for c in cats {
                *counts.entry(c).or_insert(0) += 1;
            }
        }
        let mut by_count: Vec<(String, usize)> = counts.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let what = by_count
            .iter()
            .map(|(c, n)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.drifted.is_empty() {
            format!("all {} recorded devices as configured", self.surveyed)
        } else {
            format!(
                "{} of {} devices differ: {what}",
                self.drifted.len(),
                self.surveyed
            )
        }
    }

    /// How the fleet was read: `read in 45 page calls (ListThings 8, …) and 100 devices one
    /// by one`.
    pub fn reads(&self) -> String {
        let mut s = format!(
            "read in {} page calls ({})",
            self.view.total_calls(),
            self.view.calls_text()
        );
        if self.sampled.len() == self.surveyed {
            s.push_str(&format!(" and every device one by one ({})", self.surveyed));
        } else if !self.sampled.is_empty() {
            s.push_str(&format!(
                " and {} of {} devices one by one, at random, for what no page returns ({}; `--full` reads them all)",
                self.sampled.len(),
                self.surveyed,
                self.unpaged().join(", ")
            ));
        } else {
            s.push_str(&format!(
                "; nothing read one by one, so {} taken as recorded",
                self.unpaged().join(", ")
            ));
        }
        for n in &self.view.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }

    /// What no page covered in this survey.
    fn unpaged(&self) -> Vec<&'static str> {
        let mut v = vec!["thing attachments"];
        if !self.view.has_shadows() {
            v.push("shadows");
        }
        v
    }

    /// The devices that differ, for the plan's JSON.
    pub fn device_plans(&self) -> Vec<crate::plan::DevicePlan> {
        self.drifted
            .iter()
            .map(|(thing, steps)| crate::plan::DevicePlan {
                thing: thing.clone(),
                steps: steps.clone(),
            })
            .collect()
    }
}

/// What a step is about, in the survey's summary.
fn category(p: &Planned) -> String {
    let fields = || p.changes.iter().map(|c| c.field.as_str());
    match (p.key.as_str(), p.action) {
        (_, Action::Delete) => "stray resources".into(),
        (_, Action::Adopt) => "interrupted".into(),
        (THING, Action::Create) => "things missing".into(),
        (THING, _) if fields().any(|f| f == "thing_type") => "thing types".into(),
        (THING, _) => "attributes".into(),
        (CERTIFICATE, Action::Create) => "certificates missing".into(),
        (CERTIFICATE, _) => match p.changes.iter().find(|c| c.field == "status") {
            Some(c) => format!(
                "certificates {}",
                c.from
                    .as_ref()
                    .and_then(|v| v.as_str())
                    .unwrap_or("inactive")
            ),
            None => "certificates to reissue".into(),
        },
        (POLICY_ATTACHMENT, _) => "policy attachments".into(),
        (THING_PRINCIPAL, _) => "thing attachments".into(),
        (GROUP_MEMBERSHIP, _) => "group memberships".into(),
        (SHADOW, Action::Create) => "shadows missing".into(),
        (SHADOW, _) => "shadows".into(),
        (k, _) => k.replace('_', " "),
    }
}

/// Whether a recorded resource no page covers can be taken as recorded: created, under the
/// name the config gives it, with the settings the config still wants.
fn settled(r: &dyn Resource, cx: &Ctx) -> bool {
    let Some(rec) = cx.record(r.key()) else {
        return false;
    };
    if rec.phase != Phase::Created || rec.name != r.name() {
        return false;
    }
    let wanted = r.wanted(cx).unwrap_or_default();
    match cx.applied(r.key()) {
        Some(applied) => applied == wanted,
        None => wanted.is_empty(),
    }
}

impl Fleet {
    /// Surveys `targets` (recorded devices): the pages once, then each device's own plan.
    pub(super) async fn survey(
        &self,
        cx: &Ctx,
        targets: Vec<Target>,
        plan_sampled: bool,
    ) -> Result<Survey, StepError> {
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let sampled: HashSet<String> = match self.spec().per_device {
            PerDevice::Full => names.into_iter().collect(),
            PerDevice::Sample(n) => super::sample(names, n).into_iter().collect(),
        };
        let (whole, paged): (Vec<Target>, Vec<Target>) =
            targets.into_iter().partition(|t| sampled.contains(&t.name));
        let drifted: Mutex<BTreeMap<String, Vec<Planned>>> = Mutex::new(BTreeMap::new());
        let failed: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
        let surveyed = whole.len() + paged.len();
        let (d, f) = (&drifted, &failed);
        let plan_all = |targets: Vec<Target>, view: Option<Arc<FleetView>>| {
            stream::iter(targets)
                .map(move |t| {
                    let view = view.clone();
                    async move {
                        // Planning from the pages makes no call, so it would never yield: give
                        // the sample's reads, polled by the same task, their turn.
                        tokio::task::yield_now().await;
                        match self.plan_device(cx, &t, view).await {
                            Ok(steps) if steps.is_empty() => {}
                            Ok(steps) => {
                                d.lock().expect("drifted").insert(t.name, steps);
                            }
                            Err(e) => f.lock().expect("failed").push((t.name, e.to_string())),
                        }
                    }
                })
                .buffer_unordered(self.spec().concurrency)
                .collect::<Vec<()>>()
        };
        // The sample's own reads need no page: they go while the pages are read and the other
        // devices planned from them (each call paced by its own rate), so a survey takes the
        // longer of the two, not their sum. verify does not plan the sample: its checks read
        // those devices whole anyway.
        let whole = if plan_sampled { whole } else { Vec::new() };
        let from_pages = async {
            let view = Arc::new(FleetView::read(&self.0).await?);
            plan_all(paged, Some(view.clone())).await;
            Ok::<_, StepError>(view)
        };
        let (view, _) = tokio::join!(from_pages, plan_all(whole, None));
        let view = view?;
        let mut failed = failed.into_inner().expect("failed");
        failed.sort();
        Ok(Survey {
            view,
            sampled,
            drifted: drifted.into_inner().expect("drifted"),
            failed,
            surveyed,
        })
    }

    /// One device's planned steps that change something: its resources read from the pages
    /// (`view`), or each with its own call (None: a sampled device).
    async fn plan_device(
        &self,
        cx: &Ctx,
        t: &Target,
        view: Option<Arc<FleetView>>,
    ) -> Result<Vec<Planned>, StepError> {
        let paged = view.is_some();
        let covers = |key: &str| view.as_ref().is_some_and(|v| v.covers(key));
        let env = Arc::new(Env {
            aws: self.0.aws.clone(),
            d: device_deployment(&self.0.d, &t.name, t.attributes.clone(), t.csr.clone()),
            view: view.clone(),
        });
        let dcx = cx.for_device(&t.name, Arc::new(Silent));
        let mut steps = Vec::new();
        for r in device_plan(&env) {
            if paged && !covers(r.key()) && settled(r.as_ref(), &dcx) {
                continue;
            }
            let p = r.plan(&dcx, true).await?;
            if p.action.is_change() {
                steps.push(p);
            }
        }
        for r in device_strays(&env, |k| dcx.record(k).is_some()) {
            if let Some(p) = crate::engine::plan_delete(r.as_ref(), &dcx) {
                steps.push(p);
            }
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Change, Origin};

    fn step(key: &str, action: Action, changes: &[(&str, &str, &str)]) -> Planned {
        let mut p = Planned::new(key, key, "x", action);
        p.changes = changes
            .iter()
            .map(|(f, from, to)| Change {
                field: f.to_string(),
                from: Some((*from).into()),
                to: Some((*to).into()),
                origin: Origin::Drift,
            })
            .collect();
        p
    }

    #[test]
    fn the_summary_counts_devices_per_kind_of_difference() {
        let mut drifted = BTreeMap::new();
        drifted.insert(
            "a".to_string(),
            vec![step(
                THING,
                Action::Update,
                &[("attributes.line", "L1", "L2"), ("attributes.x", "1", "2")],
            )],
        );
        drifted.insert(
            "b".to_string(),
            vec![step(
                CERTIFICATE,
                Action::Update,
                &[("status", "INACTIVE", "ACTIVE")],
            )],
        );
        drifted.insert(
            "c".to_string(),
            vec![
                step(THING, Action::Update, &[("attributes.line", "L1", "L2")]),
                step(SHADOW, Action::Update, &[("desired.t", "99", "75")]),
                step(POLICY_ATTACHMENT, Action::Create, &[]),
            ],
        );
        let sv = Survey {
            view: Arc::new(FleetView::default()),
            sampled: HashSet::new(),
            drifted,
            failed: Vec::new(),
            surveyed: 10,
        };
        assert_eq!(
            sv.summary(),
            "3 of 10 devices differ: 2 attributes, 1 certificates INACTIVE, 1 policy attachments, 1 shadows"
        );
        assert_eq!(sv.device_plans().len(), 3);
        assert!(
            sv.reads()
                .contains("thing attachments, shadows taken as recorded"),
            "{}",
            sv.reads()
        );
    }
}
