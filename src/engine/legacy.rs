//! The resource trait as it was before the plan drove the apply; removed once every kind
//! implements [`super::Kind`].

use super::{Ctx, Meta, Outcome, Replacement, Resource, StepError};
use crate::plan::{self, Action, Change, Fields, Origin, Planned};
use crate::state::{Phase, Record};
use crate::verify::Check;

/// The resource trait before [`super::Kind`], for kinds not moved to it yet: each judged
/// its differences in `ensure` as well as in `observe`. Run through [`Old`].
#[async_trait::async_trait]
pub trait Legacy: Send + Sync {
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
        super::planning::default_replacement(self.link(), why)
    }
    /// Why a recorded resource the config no longer wants is deleted.
    fn delete_note(&self) -> String {
        "no longer wanted by the config".into()
    }
}

/// A [`Legacy`] resource as an engine step.
pub struct Old<T>(pub T);

impl<T: Legacy> Meta for Old<T> {
    fn key(&self) -> &str {
        self.0.key()
    }
    fn kind(&self) -> &str {
        self.0.kind()
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn depends_on(&self) -> &[&'static str] {
        self.0.depends_on()
    }
    fn delete_note(&self) -> String {
        self.0.delete_note()
    }
}

#[async_trait::async_trait]
impl<T: Legacy> Resource for Old<T> {
    async fn plan(&self, cx: &Ctx, read_live: bool) -> Result<Planned, StepError> {
        let r = &self.0;
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
                    "an earlier create was interrupted; up looks for its result before creating"
                        .into(),
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
                    let (note, applicable) =
                        r.replacement(&Replacement::Immutable { fields: fixed });
                    p.action = Action::Replace;
                    p.note = Some(note);
                    p.applicable = applicable;
                }
            }
        }
        Ok(p)
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let outcome = self.0.ensure(cx).await?;
        cx.set_applied(self.0.key(), self.0.desired(cx))?;
        Ok(outcome)
    }
    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        self.0.destroy(cx).await
    }
    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError> {
        self.0.probe(cx).await
    }
    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        self.0.check(cx).await
    }
}
