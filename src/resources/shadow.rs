//! The classic device shadow. `up` writes the recipe's desired and reported state when the
//! shadow does not exist; afterwards it only converges the desired state, because the reported
//! state belongs to the device.

use std::sync::Arc;

use aws_sdk_iotdataplane::primitives::Blob;

use super::{Env, SHADOW, THING};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, done, found};

const KIND: &str = "device shadow";

pub struct Shadow(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Shadow {
    fn key(&self) -> &str {
        SHADOW
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.thing_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[THING]
    }

    fn link(&self) -> bool {
        true
    }
    fn delete_note(&self) -> String {
        "shadow initialisation is off in the config (shadow.enabled = false)".into()
    }
    fn desired(&self, _cx: &Ctx) -> Fields {
        let want = self.want_desired();
        want.iter()
            .map(|(k, v)| (format!("desired.{k}"), v.clone()))
            .collect()
    }
    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        // Only the keys iotreg sets: a shadow update merges, so other keys are not its concern.
        let want = self.want_desired();
        Ok(self.live_document().await?.map(|doc| {
            want.keys()
                .filter_map(|k| {
                    doc.pointer("/state/desired")
                        .and_then(|d| d.get(k))
                        .map(|v| (format!("desired.{k}"), v.clone()))
                })
                .collect()
        }))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(doc) = &self.0.d.shadow else {
            return Ok(Outcome::Unchanged);
        };
        let data = self.0.aws.data().await?;
        let thing = &self.0.d.thing_name;
        let record = cx.record(SHADOW);
        let rec = Record::new(SHADOW, KIND, Phase::Created, thing);
        let want_desired = doc.pointer("/state/desired").cloned().unwrap_or_default();
        let live_doc = self.live_document().await?;
        let (payload, outcome) = match live_doc {
            Some(live_doc) => {
                let live_desired = live_doc.pointer("/state/desired");
                if desired_matches(live_desired, &want_desired) {
                    return cx.keep(record.as_ref(), rec);
                }
                (
                    serde_json::json!({"state": {"desired": want_desired}}),
                    Outcome::Updated("desired state".into()),
                )
            }
            None => (doc.clone(), Outcome::Created),
        };
        cx.intent(rec.clone())?;
        call!(
            data.update_thing_shadow()
                .thing_name(thing)
                .payload(Blob::new(payload.to_string()))
                .send(),
            KIND,
            thing,
            "UpdateThingShadow"
        );
        cx.commit(rec)?;
        Ok(outcome)
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let thing = &self.0.d.thing_name;
        Ok(self
            .live_document()
            .await?
            .map(|_| format!("shadow of {thing}")))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "shadow.desired";
        let thing = &self.0.d.thing_name;
        let res = format!("{KIND} of {thing}");
        let Some(doc) = &self.0.d.shadow else {
            return vec![Check::skip(NAME, &res, "shadow initialisation is off")];
        };
        let want = doc.pointer("/state/desired").cloned().unwrap_or_default();
        let live_doc = crate::check_try!(self.live_document().await, [NAME], res);
        let Some(live_doc) = live_doc else {
            return vec![Check::fail(NAME, &res, format!("{res} does not exist"))];
        };
        let ok = desired_matches(live_doc.pointer("/state/desired"), &want);
        vec![Check::new(
            NAME,
            &res,
            ok,
            if ok {
                "desired state as configured".to_string()
            } else {
                format!("{res}: desired state differs from the configured one")
            },
        )]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(SHADOW) else {
            return Ok(Outcome::Absent);
        };
        let data = self.0.aws.data().await?;
        let deleted = done!(
            data.delete_thing_shadow().thing_name(&rec.name).send(),
            is_resource_not_found_exception,
            KIND,
            &rec.name,
            "DeleteThingShadow"
        );
        cx.forget(SHADOW)?;
        Ok(if deleted {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

impl Shadow {
    /// The desired section of the configured document (empty when initialisation is off).
    fn want_desired(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0
            .d
            .shadow
            .as_ref()
            .and_then(|doc| doc.pointer("/state/desired"))
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default()
    }

    /// The live shadow document, or None when the thing has no shadow.
    async fn live_document(&self) -> Result<Option<serde_json::Value>, StepError> {
        let data = self.0.aws.data().await?;
        let thing = &self.0.d.thing_name;
        let live = found!(
            data.get_thing_shadow().thing_name(thing).send(),
            is_resource_not_found_exception,
            KIND,
            thing,
            "GetThingShadow"
        );
        Ok(live
            .and_then(|o| o.payload)
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p.as_ref()).ok()))
    }
}

/// Every desired key has the wanted value. Extra live keys (set by an application) are left
/// alone: a shadow update merges, so sending ours would not remove them anyway.
pub fn desired_matches(live: Option<&serde_json::Value>, want: &serde_json::Value) -> bool {
    let Some(want) = want.as_object() else {
        return true;
    };
    let Some(live) = live.and_then(|l| l.as_object()) else {
        return want.is_empty();
    };
    want.iter().all(|(k, v)| live.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn desired_comparison() {
        let want = json!({"temperature_threshold": 75, "active": true});
        assert!(desired_matches(
            Some(&json!({"temperature_threshold": 75, "active": true, "x": 1})),
            &want
        ));
        assert!(!desired_matches(
            Some(&json!({"temperature_threshold": 70, "active": true})),
            &want
        ));
        assert!(!desired_matches(None, &want));
    }
}
