//! The thing type. Shared by design: several deployments (and other tools) may use
//! `TemperatureSensor`, so `down` deletes it only if this deployment created it and no thing
//! uses it any more. AWS deletes a thing type only five minutes after DeprecateThingType;
//! `down` deprecates, records when, and finishes on a later run (or waits with `--wait`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_iot::operation::describe_thing_type::DescribeThingTypeOutput;

use super::sdk::{self, op};
use super::{Env, THING_TYPE, THING_TYPE_RETIRED};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Replacement, Seen, Step, StepError};
use crate::plan::{Action, Fields};
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "thing type";
/// Marks a thing type iotreg created, so the last iotreg deployment using it may delete it,
/// while a type made by anyone else is never touched.
pub const MANAGED_BY: (&str, &str) = ("managed-by", "iotreg");
/// AWS's documented delay between deprecating a thing type and being allowed to delete it.
pub const DEPRECATION_DELAY: Duration = Duration::from_secs(5 * 60);

/// The live type, and whether this deployment manages its properties (it created it).
pub struct Live {
    out: DescribeThingTypeOutput,
    manages_properties: bool,
}

/// The thing type the config names (key `thing_type`), or one it replaced by a rename that is
/// still being deleted (key `thing_type_retired`: only ever destroyed).
pub struct ThingType {
    env: Arc<Env>,
    key: &'static str,
    name: String,
}

impl ThingType {
    pub fn current(env: Arc<Env>) -> ThingType {
        let name = env.d.thing_type.name.clone();
        ThingType {
            env,
            key: THING_TYPE,
            name,
        }
    }
    pub fn retired(env: Arc<Env>, name: &str) -> ThingType {
        ThingType {
            env,
            key: THING_TYPE_RETIRED,
            name: name.to_string(),
        }
    }
    /// Whether this deployment manages the type's properties: it created the type. A type
    /// that was already there (Borrowed) is used as it is.
    fn manages_properties(&self, cx: &Ctx) -> bool {
        cx.record(self.key)
            .is_some_and(|r| r.phase != Phase::Borrowed)
    }
}

impl Meta for ThingType {
    fn key(&self) -> &str {
        self.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
    fn delete_note(&self) -> String {
        "replaced by a renamed thing type; deleted once no thing uses it (AWS allows that five minutes after deprecation)".into()
    }
}

#[async_trait::async_trait]
impl Kind for ThingType {
    type Live = Live;

    fn shared(&self) -> bool {
        true
    }
    fn adopts_unowned(&self) -> bool {
        true
    }
    fn immutable(&self) -> &'static [&'static str] {
        &["description"]
    }
    fn replacement(&self, why: &Replacement) -> (String, bool) {
        match why {
            Replacement::Renamed { from } => (
                format!(
                    "renamed from {from:?}: up creates (or shares) {:?}, moves the thing to it, then deletes {from:?} if this deployment created it and nothing else uses it (AWS allows that five minutes after deprecation; a later up or down finishes it)",
                    self.name
                ),
                true,
            ),
            Replacement::Immutable { fields } => (
                format!(
                    "thing types are immutable (AWS cannot change their {}), so this is a replace; up does not delete and recreate a type under the same name, since other things may use it: rename thing_type.name to replace it (the thing moves to the new type), or keep the old value",
                    fields.join(", ")
                ),
                false,
            ),
        }
    }

    fn desired(&self, cx: &Ctx) -> Fields {
        let mut f = Fields::new();
        f.insert("deprecated".into(), false.into());
        if self.manages_properties(cx) {
            f.insert(
                "description".into(),
                self.env.d.thing_type.description.clone().into(),
            );
        }
        f
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<Live>, StepError> {
        let out = sdk::find(
            op(KIND, &self.name, "DescribeThingType"),
            self.env
                .aws
                .iot
                .describe_thing_type()
                .thing_type_name(&self.name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(out.map(|out| Live {
            out,
            manages_properties: self.manages_properties(cx),
        }))
    }

    fn fields(&self, live: &Live) -> Fields {
        let mut f = Fields::new();
        f.insert("deprecated".into(), deprecated(&live.out).into());
        // Only a type this deployment created is compared by its properties; a shared one
        // is used as it is.
        if live.manages_properties {
            let description = live
                .out
                .thing_type_properties()
                .and_then(|p| p.thing_type_description())
                .unwrap_or_default();
            f.insert("description".into(), description.into());
        }
        f
    }

    fn identify(&self, live: &Live) -> String {
        live.out.thing_type_arn().unwrap_or_default().to_string()
    }

    async fn apply(&self, cx: &Ctx, step: Step<Live>) -> Result<Outcome, StepError> {
        if step.plan.action == Action::Replace {
            return self.replace(cx, step).await;
        }
        let name = &self.name;
        let Some(live) = &step.live else {
            return self.create(cx).await;
        };
        let record = step.record.as_ref();
        let ours = record.is_some_and(|r| r.phase != Phase::Borrowed);
        let mut rec = record
            .cloned()
            .unwrap_or_else(|| Record::new(THING_TYPE, KIND, Phase::Borrowed, name));
        if record.is_some_and(|r| r.phase == Phase::Intent) {
            rec.phase = Phase::Created;
        }
        rec.arn = live.out.thing_type_arn().map(str::to_string);
        rec.data.remove("deprecated_at_ms");
        if step.changes("deprecated") {
            if !ours {
                return Err(StepError::Failed(format!(
                    "{KIND} {name:?} is deprecated by someone else, and AWS refuses new things of a deprecated type; undeprecate it or configure another thing_type.name"
                )));
            }
            // A `down` that stopped half way deprecated it; this deployment wants it back.
            sdk::send(
                op(KIND, name, "DeprecateThingType(undo)"),
                self.env
                    .aws
                    .iot
                    .deprecate_thing_type()
                    .thing_type_name(name)
                    .undo_deprecate(true)
                    .send(),
            )
            .await?;
            cx.commit(rec)?;
            return Ok(Outcome::Updated("undeprecated".into()));
        }
        let outcome = match record {
            Some(r) if r.phase != Phase::Intent => Outcome::Unchanged,
            _ => Outcome::Adopted,
        };
        if record != Some(&rec) {
            cx.commit(rec)?;
        }
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "thing_type.exists"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Live>) -> Vec<Check> {
        let res = &seen.resource;
        let name = self.check_name();
        vec![match seen.live {
            Some(l) if deprecated(&l.out) => Check::fail(
                name,
                res,
                format!("{res} is deprecated: new things cannot use it"),
            ),
            Some(_) if seen.changes.is_empty() => Check::pass(name, res, format!("{res} exists")),
            _ => planning::comparison_check(name, &seen),
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(mut rec) = cx.record(self.key) else {
            return Ok(Outcome::Absent);
        };
        let iot = &self.env.aws.iot;
        let name = rec.name.clone();
        let users = sdk::send(
            op(KIND, &name, "ListThings"),
            iot.list_things()
                .thing_type_name(&name)
                .max_results(1)
                .send(),
        )
        .await?;
        if !users.things().is_empty() {
            cx.forget(self.key)?;
            return Ok(Outcome::Retained(
                "other things still use it; the last deployment to leave deletes it".into(),
            ));
        }
        if rec.phase == Phase::Borrowed && !self.made_by_iotreg(&rec).await? {
            cx.forget(self.key)?;
            return Ok(Outcome::Retained(
                "not created by iotreg; left for its owner".into(),
            ));
        }
        let Some(live) = self.read(cx).await? else {
            cx.forget(self.key)?;
            return Ok(Outcome::Absent);
        };
        let meta = live.out.thing_type_metadata();
        let deprecated_at = match meta.and_then(|m| m.deprecation_date()) {
            Some(t) if meta.is_some_and(|m| m.deprecated()) => {
                SystemTime::try_from(*t).unwrap_or_else(|_| SystemTime::now())
            }
            _ => {
                sdk::send(
                    op(KIND, &name, "DeprecateThingType"),
                    iot.deprecate_thing_type().thing_type_name(&name).send(),
                )
                .await?;
                SystemTime::now()
            }
        };
        let deletable_at = deprecated_at + DEPRECATION_DELAY;
        // Wall clock once, to place the deadline; the monotonic clock for the waiting.
        let deadline = tokio::time::Instant::now()
            + deletable_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
        loop {
            match iot.delete_thing_type().thing_type_name(&name).send().await {
                Ok(_) => {
                    cx.forget(self.key)?;
                    return Ok(Outcome::Deleted);
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    cx.forget(self.key)?;
                    return Ok(Outcome::Absent);
                }
                // AWS answers InvalidRequestException while the five minutes run; it has no
                // dedicated code for this, so any InvalidRequest inside the window means "not yet".
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_invalid_request_exception())
                        && tokio::time::Instant::now() < deadline + Duration::from_secs(60) =>
                {
                    if !self.wait_for_deprecation() || cx.cancelled() {
                        rec.data.insert(
                            "deletable_after".into(),
                            humantime::format_rfc3339_seconds(deletable_at)
                                .to_string()
                                .into(),
                        );
                        cx.commit(rec)?;
                        return Ok(Outcome::Pending(format!(
                            "deprecated; AWS allows deleting it after {} (run `iotreg down` again then, or `iotreg down --wait`)",
                            humantime::format_rfc3339_seconds(deletable_at)
                        )));
                    }
                    let wait = deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .max(Duration::from_secs(5));
                    cx.progress(&format!(
                        "waiting {}s for AWS's five-minute deprecation delay",
                        wait.as_secs()
                    ));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(crate::aws::failed(KIND, &name, "DeleteThingType", e)),
            }
        }
    }
}

impl ThingType {
    /// A rename: the old type is retired (deleted after the thing has moved off it), and the
    /// configured one is planned and ensured as if new.
    async fn replace(&self, cx: &Ctx, step: Step<Live>) -> Result<Outcome, StepError> {
        let Some(old) = step.record else {
            return Err(StepError::Failed(format!(
                "{KIND} {:?}: a rename with no record of the old type",
                self.name
            )));
        };
        if let Some(prev) = cx.record(THING_TYPE_RETIRED).filter(|p| p.name != old.name) {
            return Err(StepError::Failed(format!(
                "{KIND} {:?}, replaced earlier, is still being deleted; run `iotreg up` again once AWS allows it (five minutes after deprecation)",
                prev.name
            )));
        }
        let mut retired = old.clone();
        retired.key = THING_TYPE_RETIRED.into();
        cx.commit(retired)?;
        cx.forget(THING_TYPE)?;
        cx.progress(&format!("replacing {:?}", old.name));
        let (plan, live) = planning::observe(self, cx, true).await?;
        planning::refuse_unless_applicable(&plan)?;
        self.apply(
            cx,
            Step {
                plan,
                live,
                record: None,
            },
        )
        .await
    }

    async fn create(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let name = &self.name;
        let rec = cx.intent(Record::new(THING_TYPE, KIND, Phase::Intent, name))?;
        let props = aws_sdk_iot::types::ThingTypeProperties::builder()
            .thing_type_description(&self.env.d.thing_type.description)
            .build();
        let tag = aws_sdk_iot::types::Tag::builder()
            .key(MANAGED_BY.0)
            .value(MANAGED_BY.1)
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: {e}")))?;
        let created = sdk::create(
            op(KIND, name, "CreateThingType"),
            self.env
                .aws
                .iot
                .create_thing_type()
                .thing_type_name(name)
                .thing_type_properties(props)
                .tags(tag)
                .send(),
            |e| e.is_resource_already_exists_exception(),
        )
        .await;
        let mut rec = rec;
        match created {
            Ok(out) => {
                rec.phase = Phase::Created;
                rec.arn = out.thing_type_arn;
                cx.commit(rec)?;
                Ok(Outcome::Created)
            }
            // Another deployment created it between our read and our create: share it.
            Err(StepError::ExistsAfterCreate { .. }) => {
                rec.phase = Phase::Borrowed;
                cx.commit(rec)?;
                Ok(Outcome::Adopted)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the type carries iotreg's tag (some iotreg deployment created it).
    async fn made_by_iotreg(&self, rec: &Record) -> Result<bool, StepError> {
        let Some(arn) = &rec.arn else {
            return Ok(false);
        };
        let tags = sdk::find(
            op(KIND, &rec.name, "ListTagsForResource"),
            self.env
                .aws
                .iot
                .list_tags_for_resource()
                .resource_arn(arn)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(tags.is_some_and(|t| {
            t.tags()
                .iter()
                .any(|tag| tag.key() == MANAGED_BY.0 && tag.value() == Some(MANAGED_BY.1))
        }))
    }

    fn wait_for_deprecation(&self) -> bool {
        self.env.d.wait_for_thing_type
    }
}

fn deprecated(live: &DescribeThingTypeOutput) -> bool {
    live.thing_type_metadata().is_some_and(|m| m.deprecated())
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::deprecate_thing_type::DeprecateThingTypeOutput;
    use aws_sdk_iot::types::{ThingTypeMetadata, ThingTypeProperties};
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::resources::testing::harness;

    fn recorded(phase: Phase) -> Record {
        Record::new(THING_TYPE, KIND, phase, "TemperatureSensor")
    }

    fn live(deprecated: bool, description: &'static str) -> Rule {
        mock!(aws_sdk_iot::Client::describe_thing_type).then_output(move || {
            DescribeThingTypeOutput::builder()
                .thing_type_name("TemperatureSensor")
                .thing_type_arn("arn:aws:iot:us-east-1:123456789012:thingtype/TemperatureSensor")
                .thing_type_properties(
                    ThingTypeProperties::builder()
                        .thing_type_description(description)
                        .build(),
                )
                .thing_type_metadata(ThingTypeMetadata::builder().deprecated(deprecated).build())
                .build()
        })
    }

    #[tokio::test]
    async fn no_change_makes_no_write() {
        let read = live(false, "d");
        let mut rec = recorded(Phase::Created);
        rec.arn = Some("arn:aws:iot:us-east-1:123456789012:thingtype/TemperatureSensor".into());
        let h = harness(&[&read], &[], &[], &[], vec![rec], |_| {});
        let t = ThingType::current(h.env.clone());
        assert_eq!(t.plan(&h.cx, true).await.unwrap().action, Action::NoChange);
        assert_eq!(t.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_deprecated_own_type_is_undeprecated_as_planned() {
        let read = live(true, "d");
        let undo = mock!(aws_sdk_iot::Client::deprecate_thing_type)
            .match_requests(|r| r.undo_deprecate() == Some(true))
            .then_output(|| DeprecateThingTypeOutput::builder().build());
        let h = harness(
            &[&read, &undo],
            &[],
            &[],
            &[],
            vec![recorded(Phase::Created)],
            |_| {},
        );
        let t = ThingType::current(h.env.clone());
        let plan = t.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Update);
        assert_eq!(plan.changes[0].field, "deprecated");
        assert_eq!(
            t.ensure(&h.cx).await.unwrap(),
            Outcome::Updated("undeprecated".into())
        );
        assert_eq!(undo.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_shared_type_is_adopted_and_its_description_not_compared() {
        let read = live(false, "someone else's words");
        let h = harness(&[&read], &[], &[], &[], vec![], |_| {});
        let t = ThingType::current(h.env.clone());
        let plan = t.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Adopt);
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        assert_eq!(t.ensure(&h.cx).await.unwrap(), Outcome::Adopted);
        assert_eq!(h.cx.record(THING_TYPE).unwrap().phase, Phase::Borrowed);
    }

    #[tokio::test]
    async fn a_changed_description_of_an_own_type_is_refused_not_written() {
        let read = live(false, "old words");
        let h = harness(
            &[&read],
            &[],
            &[],
            &[],
            vec![recorded(Phase::Created)],
            |_| {},
        );
        let t = ThingType::current(h.env.clone());
        let plan = t.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Replace);
        assert!(!plan.applicable);
        let e = t.ensure(&h.cx).await.unwrap_err();
        assert!(matches!(e, StepError::Refused { .. }), "{e}");
    }
}
