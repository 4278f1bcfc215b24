//! The engine. It knows resources only through the [`Resource`] trait (no AWS types):
//! [`planning`] turns one comparison of desired and live fields into a planned change, and
//! [`runner`] runs `ensure` forward and `destroy` in reverse along the declared dependencies,
//! starting every step whose prerequisites are done (so independent chains such as IAM and IoT
//! overlap), with state saved through [`Ctx`] after every change.
//!
//! Resource modules implement [`Kind`]: what the config wants, the one read of what is live,
//! and the calls that carry out a planned change. Every `Kind` is a [`Resource`], whose plan,
//! ensure and check all go through the same comparison, so `plan`, `up` and `verify` cannot
//! judge a resource differently.

use crate::plan::{Change, Fields, Planned};
use crate::state::{Phase, Record, StateError};
use crate::verify::Check;

mod ctx;
pub mod planning;
mod runner;

pub use ctx::Ctx;
pub use planning::plan_delete;
pub use runner::{run, Direction, StepReport};

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

    /// What a delete did: `Deleted` when there was something to delete, else `Absent`.
    pub fn deleted_if(existed: bool) -> Outcome {
        if existed {
            Outcome::Deleted
        } else {
            Outcome::Absent
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
    /// The plan has a step `up` does not carry out by itself (a rename AWS cannot do, a field
    /// it cannot change in place); the note says what to do.
    #[error("{kind} {name:?}: {note}")]
    Refused {
        kind: String,
        name: String,
        note: String,
    },
}

impl StepError {
    /// A step that never ran (a prerequisite failed, or the run was interrupted), as opposed
    /// to one that ran and failed.
    pub fn is_skip(&self) -> bool {
        matches!(self, StepError::Skipped(_) | StepError::Interrupted)
    }
}

/// Observer of the run, for progress display.
pub trait Events: Send + Sync {
    fn started(&self, key: &str, kind: &str, name: &str);
    fn progress(&self, key: &str, message: &str);
    fn finished(&self, report: &StepReport);
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

/// What every resource is: a place in the state and in the dependency graph.
pub trait Meta: Send + Sync {
    /// Stable key of this resource in the state file.
    fn key(&self) -> &str;
    /// Human label, e.g. "IoT policy".
    fn kind(&self) -> &str;
    /// The resource's name as the user would look for it.
    fn name(&self) -> String;
    /// Keys that must be ensured before this one (and destroyed after it).
    fn depends_on(&self) -> &[&'static str];
    /// Why a recorded resource the config no longer wants is deleted.
    fn delete_note(&self) -> String {
        "no longer wanted by the config".into()
    }
}

/// A step of the engine. Implemented by every [`Kind`]; a resource that plans for a whole
/// collection of others (a fleet) implements it directly.
#[async_trait::async_trait]
pub trait Resource: Meta {
    /// What `up` would do, read-only. `read_live` false plans a deployment that cannot exist
    /// yet (no state, no pinned suffix): only shared resources are looked up.
    async fn plan(&self, cx: &Ctx, read_live: bool) -> Result<Planned, StepError>;
    /// Plans, then carries out that plan.
    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError>;
    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError>;
    /// Read-only: the live resource's ARN (or another identifier) if it exists.
    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError>;
    /// Read-only: verify's checks. An AWS error fails the checks it prevented.
    async fn check(&self, cx: &Ctx) -> Vec<Check>;
    /// What the config wants of it, as the plan compares it (None: a resource that plans
    /// for others, like a fleet).
    fn wanted(&self, _cx: &Ctx) -> Option<Fields> {
        None
    }
}

/// A planned change handed to [`Kind::apply`], with the live resource it was planned from.
pub struct Step<L> {
    pub plan: Planned,
    /// The live resource (None for a create).
    pub live: Option<L>,
    /// What the state records of it before the step.
    pub record: Option<Record>,
}

impl<L> Step<L> {
    /// Whether the plan changes this field.
    pub fn changes(&self, field: &str) -> bool {
        self.plan.changes.iter().any(|c| c.field == field)
    }
    /// The outcome of a step that found its resource live: `Updated` with what it changed
    /// (`updated`), else adopted (first recorded now) or unchanged.
    pub fn outcome(&self, updated: Option<String>) -> Outcome {
        match updated {
            Some(what) => Outcome::Updated(what),
            None if self.plan.action == crate::plan::Action::Adopt => Outcome::Adopted,
            None => Outcome::Unchanged,
        }
    }
    /// The record of the live resource: the state's (an intent to finish, or one to refresh)
    /// or, for a resource first recorded now, a new one; as created either way.
    pub fn live_record(&self, key: &str, kind: &str, name: &str) -> Record {
        let mut rec = self
            .record
            .clone()
            .unwrap_or_else(|| Record::new(key, kind, Phase::Created, name));
        rec.phase = Phase::Created;
        rec
    }
    /// The planned field changes as one line: `memory_mb: 128 → 256, …`.
    pub fn summary(&self) -> String {
        crate::plan::describe(&self.plan.changes)
    }
}

/// What verify judges one resource by: the live resource and its differences from the config
/// (the same comparison as the plan's).
pub struct Seen<'a, L> {
    pub live: Option<&'a L>,
    pub changes: &'a [Change],
    pub record: Option<&'a Record>,
    /// The resource as verify names it, e.g. `thing temperature-sensor-abc123`.
    pub resource: String,
}

/// One kind of resource, in `resources/`, one file per kind.
#[async_trait::async_trait]
pub trait Kind: Meta {
    /// The live resource as AWS describes it, kept from the read for `apply`.
    type Live: Send + Sync;

    /// What the config wants, as fields comparable with [`Kind::fields`]'s.
    fn desired(&self, cx: &Ctx) -> Fields;
    /// The one read of the live resource: None when it does not exist. Shared by plan, up
    /// (which hands it to `apply`), status and verify.
    async fn read(&self, cx: &Ctx) -> Result<Option<Self::Live>, StepError>;
    /// The live resource as the same fields as [`Kind::desired`]. The one comparison of a
    /// resource kind is `desired` against this: adding a field is one line in each.
    fn fields(&self, live: &Self::Live) -> Fields;
    /// The identifier `status` shows (an ARN).
    fn identify(&self, live: &Self::Live) -> String;
    /// Carries out the planned change (`step.plan.action`: create, adopt, update, a link's
    /// replace, or no change, where only the record may need writing). Conflicts and steps up
    /// does not carry out never reach it.
    async fn apply(&self, cx: &Ctx, step: Step<Self::Live>) -> Result<Outcome, StepError>;
    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError>;
    /// verify's name for the comparison, e.g. `thing.configuration`.
    fn check_name(&self) -> &'static str;
    /// Every check [`Kind::checks`] makes (each fails with the error when the read fails).
    fn check_names(&self) -> Vec<&'static str> {
        vec![self.check_name()]
    }
    /// verify's checks. The default is the comparison itself; a kind adds checks that look at
    /// something else (local key files) or says more of what it saw (an alarm's state).
    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Self::Live>) -> Vec<Check> {
        vec![planning::comparison_check(self.check_name(), &seen)]
    }

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
    /// Whether `up` may plan a resource this state has no record of as a create without
    /// reading it first: its create call is idempotent, and the read is one AWS rate-limits
    /// hard (a fleet's pace). `plan` still reads.
    fn create_unread(&self) -> bool {
        false
    }
    /// Whether the recorded resource is another one than the config names (a rename).
    fn renamed(&self, rec: &Record) -> bool {
        rec.name != self.name()
    }
    /// What a replace means for this resource and whether `up` carries it out.
    fn replacement(&self, why: &Replacement) -> (String, bool) {
        planning::default_replacement(self.link(), why)
    }
}

#[async_trait::async_trait]
impl<K: Kind> Resource for K {
    async fn plan(&self, cx: &Ctx, read_live: bool) -> Result<Planned, StepError> {
        Ok(planning::observe(self, cx, read_live).await?.0)
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let record = cx.record(self.key());
        let read_live = !(record.is_none() && self.create_unread());
        let (plan, live) = planning::observe(self, cx, read_live).await?;
        planning::refuse_unless_applicable(&plan)?;
        let outcome = self.apply(cx, Step { plan, live, record }).await?;
        // Ensured means live equals desired: remember it, for the next plan's origins. Asked
        // after the apply, since what is wanted can depend on the record it wrote (the
        // properties of a thing type this deployment created are its to compare).
        cx.set_applied(self.key(), self.desired(cx))?;
        Ok(outcome)
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        Kind::destroy(self, cx).await
    }

    async fn probe(&self, cx: &Ctx) -> Result<Option<String>, StepError> {
        Ok(self.read(cx).await?.map(|live| self.identify(&live)))
    }

    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        planning::check(self, cx).await
    }

    fn wanted(&self, cx: &Ctx) -> Option<Fields> {
        Some(self.desired(cx))
    }
}
