//! The thing: the device's registry entry, with its type and attributes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_iot::operation::describe_thing::DescribeThingOutput;
use aws_sdk_iot::types::AttributePayload;

use super::fleet::view::Paged;
use super::sdk::{self, op};
use super::{Env, THING, THING_TYPE, THING_TYPE_RETIRED};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "thing";

pub struct Thing(pub Arc<Env>);

impl Meta for Thing {
    fn key(&self) -> &str {
        THING
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.thing.name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        // The retired type is deleted only once the thing has left it (and in `down`, after
        // the thing is gone).
        &[THING_TYPE, THING_TYPE_RETIRED]
    }
}

#[async_trait::async_trait]
impl Kind for Thing {
    type Live = DescribeThingOutput;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let d = &self.0.d;
        fields(
            &d.thing_type.name,
            d.thing
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<DescribeThingOutput>, StepError> {
        let name = &self.0.d.thing.name;
        if let Some(view) = &self.0.view {
            // ListThings has no thing id: the record's stands in for it.
            let id = cx.record(THING).and_then(|r| r.id);
            if let Paged::Found(live) = view.thing(name, id) {
                return Ok(Some(live));
            }
        }
        sdk::find(
            op(KIND, name, "DescribeThing"),
            self.0.aws.iot.describe_thing().thing_name(name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await
    }

    fn fields(&self, live: &DescribeThingOutput) -> Fields {
        fields(
            live.thing_type_name().unwrap_or_default(),
            live.attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    fn identify(&self, live: &DescribeThingOutput) -> String {
        live.thing_arn().unwrap_or_default().to_string()
    }

    async fn apply(&self, cx: &Ctx, step: Step<DescribeThingOutput>) -> Result<Outcome, StepError> {
        let d = &self.0.d;
        let iot = &self.0.aws.iot;
        let name = &d.thing.name;
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(THING, KIND, Phase::Intent, name))?;
            let out = sdk::create(
                op(KIND, name, "CreateThing"),
                iot.create_thing()
                    .thing_name(name)
                    .thing_type_name(&d.thing_type.name)
                    .attribute_payload(payload(&d.thing.attributes, None))
                    .send(),
                |e| e.is_resource_already_exists_exception(),
            )
            .await?;
            rec.phase = Phase::Created;
            rec.arn = out.thing_arn;
            rec.id = out.thing_id;
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let updated = if step.plan.changes.is_empty() {
            None
        } else {
            sdk::send(
                op(KIND, name, "UpdateThing"),
                iot.update_thing()
                    .thing_name(name)
                    .thing_type_name(&d.thing_type.name)
                    .attribute_payload(payload(&d.thing.attributes, live.attributes()))
                    .send(),
            )
            .await?;
            Some(step.summary())
        };
        let outcome = step.outcome(updated);
        let mut rec = step.live_record(THING, KIND, name);
        rec.arn = live.thing_arn().map(str::to_string);
        rec.id = live.thing_id().map(str::to_string);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "thing.configuration"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, DescribeThingOutput>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if check.status == CheckStatus::Pass {
            let d = &self.0.d;
            check.reason = format!(
                "type {} and {} attributes as configured",
                d.thing_type.name,
                d.thing.attributes.len()
            );
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(THING) else {
            return Ok(Outcome::Absent);
        };
        let iot = &self.0.aws.iot;
        let name = &rec.name;
        // AWS refuses to delete a thing with principals attached; ours were detached by the
        // attachment step, anything else attached would block deletion, so detach it too.
        let principals = sdk::find(
            op(KIND, name, "ListThingPrincipals"),
            iot.list_thing_principals().thing_name(name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        for principal in principals.iter().flat_map(|p| p.principals()) {
            sdk::find(
                op(KIND, name, "DetachThingPrincipal"),
                iot.detach_thing_principal()
                    .thing_name(name)
                    .principal(principal)
                    .send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
        }
        let deleted = sdk::find(
            op(KIND, name, "DeleteThing"),
            iot.delete_thing().thing_name(name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(THING)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

/// The plan's view of a thing: its type and each attribute as a field of its own.
fn fields<'a>(thing_type: &str, attributes: impl Iterator<Item = (&'a str, &'a str)>) -> Fields {
    let mut f = Fields::new();
    f.insert("thing_type".into(), thing_type.into());
    for (k, v) in attributes {
        f.insert(format!("attributes.{k}"), v.into());
    }
    f
}

/// The attribute payload: UpdateThing merges attributes, and removes one only when it is sent
/// with an empty value, so live attributes the config dropped are sent empty.
fn payload(
    want: &BTreeMap<String, String>,
    live: Option<&HashMap<String, String>>,
) -> AttributePayload {
    let mut attrs: HashMap<String, String> =
        want.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for k in live.into_iter().flat_map(|l| l.keys()) {
        attrs.entry(k.clone()).or_default();
    }
    AttributePayload::builder()
        .set_attributes(Some(attrs))
        .merge(live.is_some())
        .build()
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::create_thing::CreateThingOutput;
    use aws_sdk_iot::operation::describe_thing::DescribeThingError;
    use aws_sdk_iot::operation::update_thing::UpdateThingOutput;
    use aws_smithy_mocks::mock;

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::harness;

    const NAME: &str = "temperature-sensor-abc123";

    fn recorded() -> Record {
        Record::new(THING, KIND, Phase::Created, NAME)
    }

    fn live(attributes: &[(&str, &str)]) -> aws_smithy_mocks::Rule {
        let attributes: HashMap<String, String> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        mock!(aws_sdk_iot::Client::describe_thing).then_output(move || {
            DescribeThingOutput::builder()
                .thing_name(NAME)
                .thing_type_name("TemperatureSensor")
                .set_attributes(Some(attributes.clone()))
                .build()
        })
    }

    fn located(d: &mut crate::resources::Deployment) {
        d.thing.attributes = BTreeMap::from([("location".to_string(), "Line-3".to_string())]);
    }

    #[tokio::test]
    async fn no_change_makes_no_write() {
        let read = live(&[("location", "Line-3")]);
        // Only the read is mocked: any write would find no rule and fail the step.
        let h = harness(&[&read], &[], &[], &[], vec![recorded()], located);
        let thing = Thing(h.env.clone());
        let plan = thing.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::NoChange);
        assert_eq!(thing.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
        assert_eq!(read.num_calls(), 2, "one read each for plan and ensure");
    }

    #[tokio::test]
    async fn a_changed_attribute_is_one_update_thing_as_planned() {
        let read = live(&[("location", "ProductionFloor-A"), ("old", "x")]);
        let update = mock!(aws_sdk_iot::Client::update_thing)
            .match_requests(|r| {
                let attrs = r.attribute_payload().and_then(|p| p.attributes());
                // UpdateThing merges: a dropped attribute is sent empty to remove it.
                attrs.is_some_and(|a| a["location"] == "Line-3" && a["old"].is_empty())
            })
            .then_output(|| UpdateThingOutput::builder().build());
        let h = harness(&[&read, &update], &[], &[], &[], vec![recorded()], located);
        let thing = Thing(h.env.clone());
        let plan = thing.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Update);
        let fields: Vec<&str> = plan.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["attributes.location", "attributes.old"]);
        let outcome = thing.ensure(&h.cx).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Updated(
                "attributes.location: \"ProductionFloor-A\" → \"Line-3\", attributes.old: \"x\" → (removed)"
                    .into()
            )
        );
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_missing_thing_is_created_with_its_intent_first() {
        let read = mock!(aws_sdk_iot::Client::describe_thing).then_error(|| {
            DescribeThingError::ResourceNotFoundException(
                aws_sdk_iot::types::error::ResourceNotFoundException::builder().build(),
            )
        });
        let create = mock!(aws_sdk_iot::Client::create_thing).then_output(|| {
            CreateThingOutput::builder()
                .thing_arn("arn:aws:iot:us-east-1:123456789012:thing/t")
                .build()
        });
        let h = harness(&[&read, &create], &[], &[], &[], vec![], located);
        let thing = Thing(h.env.clone());
        assert_eq!(
            thing.plan(&h.cx, true).await.unwrap().action,
            Action::Create
        );
        assert_eq!(thing.ensure(&h.cx).await.unwrap(), Outcome::Created);
        assert_eq!(create.num_calls(), 1);
        let rec = h.cx.record(THING).unwrap();
        assert_eq!(rec.phase, Phase::Created);
        assert_eq!(
            rec.arn.as_deref(),
            Some("arn:aws:iot:us-east-1:123456789012:thing/t")
        );
    }

    #[tokio::test]
    async fn a_live_thing_this_state_does_not_own_is_refused_without_a_write() {
        let read = live(&[]);
        let h = harness(&[&read], &[], &[], &[], vec![], |_| {});
        let thing = Thing(h.env.clone());
        assert_eq!(
            thing.plan(&h.cx, true).await.unwrap().action,
            Action::Conflict
        );
        let e = thing.ensure(&h.cx).await.unwrap_err();
        assert!(matches!(e, StepError::NotOurs { .. }), "{e}");
        assert!(h.cx.record(THING).is_none());
    }
}
