//! Planning: one comparison of what the config wants with what is live, turned into the
//! planned change that `plan` shows, `up` carries out and `verify` judges.

use super::{Ctx, Kind, Meta, Replacement, Seen, StepError};
use crate::plan::{self, Action, Change, Fields, Origin, Planned};
use crate::state::{Phase, Record};
use crate::verify::Check;

/// Reads a resource (unless `read_live` is false and it is not shared) and plans it. Returns
/// the live resource too, for `apply`.
pub async fn observe<K: Kind + ?Sized>(
    r: &K,
    cx: &Ctx,
    read_live: bool,
) -> Result<(Planned, Option<K::Live>), StepError> {
    let rec = cx.record(r.key());
    // A rename is a replace whatever is live under the new name. Only a link, which follows
    // the rename, reads under the new name, so that its apply can tell whether the new link
    // already stands.
    if let Some(rec) = rec.as_ref().filter(|rec| rec.phase != Phase::Intent) {
        if r.renamed(rec) {
            let mut plan = renamed(r, rec);
            let live = if r.link() { r.read(cx).await? } else { None };
            if let Some(l) = &live {
                plan.changes
                    .extend(plan::compare(&r.desired(cx), &r.fields(l), None));
            }
            return Ok((plan, live));
        }
    }
    let live = if read_live || r.shared() {
        r.read(cx).await?
    } else {
        None
    };
    let fields = live.as_ref().map(|l| r.fields(l));
    let plan = decide(
        r,
        rec.as_ref(),
        &r.desired(cx),
        fields.as_ref(),
        cx.applied(r.key()).as_ref(),
    );
    Ok((plan, live))
}

/// The plan of a renamed resource: a replace, which `up` carries out only for a link.
fn renamed<K: Kind + ?Sized>(r: &K, rec: &Record) -> Planned {
    let (note, applicable) = r.replacement(&Replacement::Renamed {
        from: rec.name.clone(),
    });
    let mut p = Planned::new(r.key(), r.kind(), &r.name(), Action::Replace);
    p.changes = vec![Change {
        field: "name".into(),
        from: Some(rec.name.clone().into()),
        to: Some(r.name().into()),
        origin: Origin::Config,
    }];
    p.note = Some(note);
    p.applicable = applicable;
    p
}

/// The planned change, from the record, the wanted fields, the live ones (None: absent) and
/// what was last applied (for the origin of each difference).
fn decide<K: Kind + ?Sized>(
    r: &K,
    rec: Option<&Record>,
    want: &Fields,
    live: Option<&Fields>,
    applied: Option<&Fields>,
) -> Planned {
    let mut p = Planned::new(r.key(), r.kind(), &r.name(), Action::NoChange);
    let Some(live) = live else {
        p.action = Action::Create;
        p.note = match rec.map(|r| r.phase) {
            Some(Phase::Intent) => Some(
                "an earlier create was interrupted; up looks for its result before creating".into(),
            ),
            Some(_) => Some("recorded in the state but gone: deleted outside iotreg".into()),
            None => None,
        };
        return p;
    };
    p.changes = plan::compare(want, live, applied);
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
    p
}

/// `up` refuses what it does not carry out by itself: a resource it does not own, a replace
/// it leaves to the user. The plan shown before the run refuses these already; this holds for
/// a step whose world changed in between.
pub fn refuse_unless_applicable(plan: &Planned) -> Result<(), StepError> {
    match plan.action {
        Action::Conflict => Err(StepError::NotOurs {
            kind: plan.kind.clone(),
            name: plan.name.clone(),
        }),
        _ if !plan.applicable => Err(StepError::Refused {
            kind: plan.kind.clone(),
            name: plan.name.clone(),
            note: plan.note.clone().unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// What a replace means by default: a link follows the rename of what it links; anything
/// else is left to the user, as AWS cannot rename it or change the field in place.
pub fn default_replacement(link: bool, why: &Replacement) -> (String, bool) {
    match why {
        Replacement::Renamed { from } if link => (
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

/// The plan of a recorded resource the config no longer wants.
pub fn plan_delete(r: &dyn Meta, cx: &Ctx) -> Option<Planned> {
    let rec = cx.record(r.key())?;
    Some(Planned::new(r.key(), r.kind(), &rec.name, Action::Delete).with_note(r.delete_note()))
}

/// verify's view of a resource: the same read and comparison as the plan's, handed to the
/// kind's checks.
pub async fn check<K: Kind + ?Sized>(r: &K, cx: &Ctx) -> Vec<Check> {
    let resource = format!("{} {}", r.kind(), r.name());
    let live = match r.read(cx).await {
        Ok(live) => live,
        Err(e) => {
            // The checks the failed read prevented, each failing with the error.
            return r
                .check_names()
                .iter()
                .map(|name| Check::fail(name, &resource, e.to_string()))
                .collect();
        }
    };
    let changes = match &live {
        Some(l) => plan::compare(&r.desired(cx), &r.fields(l), None),
        None => Vec::new(),
    };
    let record = cx.record(r.key());
    let seen = Seen {
        live: live.as_ref(),
        changes: &changes,
        record: record.as_ref(),
        resource,
    };
    r.checks(cx, seen).await
}

/// The comparison as one check: passes when live equals desired, else names what differs.
pub fn comparison_check<L>(name: &str, seen: &Seen<'_, L>) -> Check {
    let res = &seen.resource;
    match seen.live {
        None => Check::fail(name, res, format!("{res} does not exist")),
        Some(_) if seen.changes.is_empty() => Check::pass(name, res, "as configured"),
        Some(_) => Check::fail(
            name,
            res,
            format!("{res} differs: {}", plan::describe(seen.changes)),
        ),
    }
}
