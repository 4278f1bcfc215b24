//! The thing: the device's registry entry, with its type and attributes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_iot::types::AttributePayload;

use super::{Env, THING, THING_TYPE, THING_TYPE_RETIRED};
use crate::engine::{Check, Ctx, Outcome, Resource, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::{call, done, found};

const KIND: &str = "thing";

pub struct Thing(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Thing {
    fn key(&self) -> &str {
        THING
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.thing_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        // The retired type is deleted only once the thing has left it (and in `down`, after
        // the thing is gone).
        &[THING_TYPE, THING_TYPE_RETIRED]
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        let d = &self.0.d;
        fields(
            &d.thing_type_name,
            d.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        Ok(self.live(&self.0.d.thing_name).await?.map(|l| {
            fields(
                l.thing_type_name().unwrap_or_default(),
                l.attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
        }))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let d = &self.0.d;
        let iot = &self.0.aws.iot;
        let name = &d.thing_name;
        let record = cx.record(THING);
        let live = self.live(name).await?;
        if let Some(live) = live {
            let Some(mut rec) = record.clone() else {
                return Err(StepError::NotOurs {
                    kind: KIND.into(),
                    name: name.clone(),
                });
            };
            let was_intent = rec.phase == Phase::Intent;
            rec.phase = Phase::Created;
            rec.arn = live.thing_arn().map(str::to_string);
            rec.id = live.thing_id().map(str::to_string);
            let diff = differences(
                live.thing_type_name(),
                live.attributes(),
                &d.thing_type_name,
                &d.attributes,
            );
            let outcome = if diff.is_empty() {
                if was_intent {
                    Outcome::Adopted
                } else {
                    Outcome::Unchanged
                }
            } else {
                call!(
                    iot.update_thing()
                        .thing_name(name)
                        .thing_type_name(&d.thing_type_name)
                        .attribute_payload(payload(&d.attributes, live.attributes()))
                        .send(),
                    KIND,
                    name,
                    "UpdateThing"
                );
                Outcome::Updated(diff.join(", "))
            };
            if record.as_ref() != Some(&rec) {
                cx.commit(rec)?;
            }
            return Ok(outcome);
        }
        let mut rec = cx.intent(Record::new(THING, KIND, Phase::Intent, name))?;
        let out = crate::create!(
            iot.create_thing()
                .thing_name(name)
                .thing_type_name(&d.thing_type_name)
                .attribute_payload(payload(&d.attributes, None))
                .send(),
            is_resource_already_exists_exception,
            cx,
            THING,
            KIND,
            name,
            "CreateThing"
        );
        rec.phase = Phase::Created;
        rec.arn = out.thing_arn;
        rec.id = out.thing_id;
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let name = &self.0.d.thing_name;
        Ok(self
            .live(name)
            .await?
            .map(|o| o.thing_arn.unwrap_or_default()))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        let d = &self.0.d;
        let name = &d.thing_name;
        let res = format!("{KIND} {name}");
        let live = self.live(name).await;
        let Some(live) = crate::check_try!(live, ["thing.configuration"], res) else {
            return vec![Check::fail(
                "thing.configuration",
                &res,
                format!("{res} does not exist"),
            )];
        };
        let diff = differences(
            live.thing_type_name(),
            live.attributes(),
            &d.thing_type_name,
            &d.attributes,
        );
        vec![if diff.is_empty() {
            Check::pass(
                "thing.configuration",
                &res,
                format!(
                    "type {} and {} attributes as configured",
                    d.thing_type_name,
                    d.attributes.len()
                ),
            )
        } else {
            Check::fail(
                "thing.configuration",
                &res,
                format!("{res} differs: {}", diff.join(", ")),
            )
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(THING) else {
            return Ok(Outcome::Absent);
        };
        let iot = &self.0.aws.iot;
        let name = &rec.name;
        // AWS refuses to delete a thing with principals attached; ours were detached by the
        // attachment step, anything else attached would block deletion, so detach it too.
        if let Some(p) = found!(
            iot.list_thing_principals().thing_name(name).send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "ListThingPrincipals"
        ) {
            for principal in p.principals() {
                done!(
                    iot.detach_thing_principal()
                        .thing_name(name)
                        .principal(principal)
                        .send(),
                    is_resource_not_found_exception,
                    KIND,
                    name,
                    "DetachThingPrincipal"
                );
            }
        }
        let deleted = done!(
            iot.delete_thing().thing_name(name).send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "DeleteThing"
        );
        cx.forget(THING)?;
        Ok(if deleted {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
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

/// Human-readable differences between the live thing and the desired one.
pub fn differences(
    live_type: Option<&str>,
    live_attrs: Option<&HashMap<String, String>>,
    want_type: &str,
    want_attrs: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if live_type != Some(want_type) {
        out.push(format!(
            "type: {:?} → {want_type:?}",
            live_type.unwrap_or("")
        ));
    }
    let empty = HashMap::new();
    let live = live_attrs.unwrap_or(&empty);
    for (k, v) in want_attrs {
        match live.get(k) {
            Some(l) if l == v => {}
            Some(l) => out.push(format!("{k}: {l:?} → {v:?}")),
            None => out.push(format!("{k}: (none) → {v:?}")),
        }
    }
    let mut extra: Vec<_> = live
        .keys()
        .filter(|k| !want_attrs.contains_key(*k))
        .collect();
    extra.sort();
    for k in extra {
        out.push(format!("{k}: {:?} → (removed)", live[k]));
    }
    out
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

impl Thing {
    /// The live resource, or None when it does not exist: the one read that ensure, probe,
    /// check and destroy share.
    async fn live(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_iot::operation::describe_thing::DescribeThingOutput>, StepError>
    {
        Ok(found!(
            self.0.aws.iot.describe_thing().thing_name(name).send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "DescribeThing"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_field() {
        let want: BTreeMap<String, String> = [("location", "Line-3"), ("model", "TC-2000")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let live: HashMap<String, String> = [("location", "ProductionFloor-A"), ("old", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = differences(Some("T"), Some(&live), "T", &want);
        assert_eq!(
            d,
            [
                "location: \"ProductionFloor-A\" → \"Line-3\"",
                "model: (none) → \"TC-2000\"",
                "old: \"x\" → (removed)"
            ]
        );
        let same: HashMap<String, String> = want.clone().into_iter().collect();
        assert!(differences(Some("T"), Some(&same), "T", &want).is_empty());
    }
}
