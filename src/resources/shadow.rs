//! The classic device shadow. `up` writes the recipe's desired and reported state when the
//! shadow does not exist; afterwards it only converges the desired state, because the reported
//! state belongs to the device.

use std::sync::Arc;

use aws_sdk_iotdataplane::primitives::Blob;
use serde_json::{Map, Value};

use super::fleet::view::Paged;
use super::sdk::{self, op};
use super::{Env, SHADOW, THING};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::{Change, Fields};
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "device shadow";
const PREFIX: &str = "desired.";

pub struct Shadow(pub Arc<Env>);

impl Meta for Shadow {
    fn key(&self) -> &str {
        SHADOW
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.thing.name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[THING]
    }
    fn delete_note(&self) -> String {
        "shadow initialisation is off in the config (shadow.enabled = false)".into()
    }
}

#[async_trait::async_trait]
impl Kind for Shadow {
    /// The live shadow document.
    type Live = Value;

    /// Each key of the configured desired state.
    fn desired(&self, _cx: &Ctx) -> Fields {
        self.want_desired()
            .into_iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v))
            .collect()
    }

    /// The live shadow document, or None when the thing has no shadow.
    async fn read(&self, _cx: &Ctx) -> Result<Option<Value>, StepError> {
        let thing = &self.0.d.thing.name;
        match self.0.view.as_ref().map(|v| v.shadow(thing)) {
            Some(Paged::Found(doc)) => return Ok(Some(doc)),
            Some(Paged::Absent) => return Ok(None),
            _ => {}
        }
        let data = self.0.aws.data().await?;
        let live = sdk::find(
            op(KIND, thing, "GetThingShadow"),
            data.get_thing_shadow().thing_name(thing).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(live
            .and_then(|o| o.payload)
            .and_then(|p| serde_json::from_slice::<Value>(p.as_ref()).ok()))
    }

    /// Only the keys iotreg sets: a shadow update merges, so other keys (set by an
    /// application) are not its concern, and sending ours would not remove them anyway.
    fn fields(&self, live: &Value) -> Fields {
        let live_desired = live.pointer("/state/desired");
        self.want_desired()
            .keys()
            .filter_map(|k| {
                live_desired
                    .and_then(|d| d.get(k))
                    .map(|v| (format!("{PREFIX}{k}"), v.clone()))
            })
            .collect()
    }

    fn identify(&self, _live: &Value) -> String {
        format!("shadow of {}", self.0.d.thing.name)
    }

    fn link(&self) -> bool {
        true
    }

    async fn apply(&self, cx: &Ctx, step: Step<Value>) -> Result<Outcome, StepError> {
        let Some(doc) = &self.0.d.shadow else {
            return Ok(Outcome::Unchanged);
        };
        let thing = &self.0.d.thing.name;
        let rec = Record::new(SHADOW, KIND, Phase::Created, thing);
        let (payload, outcome) = match &step.live {
            // Create (or a rename's replace): the recipe's whole document, reported included.
            None => (doc.clone(), Outcome::Created),
            // Adopt or no change (or a rename's replace whose shadow stands as wanted): only
            // the record may need writing.
            Some(_)
                if !step
                    .plan
                    .changes
                    .iter()
                    .any(|c| c.field.starts_with(PREFIX)) =>
            {
                return cx.keep(step.record.as_ref(), rec);
            }
            // The desired keys that differ; the reported state belongs to the device.
            Some(_) => (
                desired_update(&step.plan.changes),
                Outcome::Updated(step.summary()),
            ),
        };
        let data = self.0.aws.data().await?;
        cx.intent(rec.clone())?;
        sdk::send(
            op(KIND, thing, "UpdateThingShadow"),
            data.update_thing_shadow()
                .thing_name(thing)
                .payload(Blob::new(payload.to_string()))
                .send(),
        )
        .await?;
        cx.commit(rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "shadow.desired"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Value>) -> Vec<Check> {
        let resource = format!("{KIND} of {}", self.0.d.thing.name);
        if self.0.d.shadow.is_none() {
            return vec![Check::skip(
                self.check_name(),
                &resource,
                "shadow initialisation is off",
            )];
        }
        let seen = Seen { resource, ..seen };
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if check.status == CheckStatus::Pass {
            check.reason = "desired state as configured".into();
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(SHADOW) else {
            return Ok(Outcome::Absent);
        };
        let data = self.0.aws.data().await?;
        let deleted = sdk::find(
            op(KIND, &rec.name, "DeleteThingShadow"),
            data.delete_thing_shadow().thing_name(&rec.name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(SHADOW)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

impl Shadow {
    /// The desired section of the configured document (empty when initialisation is off).
    fn want_desired(&self) -> Map<String, Value> {
        self.0
            .d
            .shadow
            .as_ref()
            .and_then(|doc| doc.pointer("/state/desired"))
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default()
    }
}

/// The shadow update that sets the planned desired keys (a key to remove is sent as null).
fn desired_update(changes: &[Change]) -> Value {
    let desired: Map<String, Value> = changes
        .iter()
        .filter_map(|c| {
            let key = c.field.strip_prefix(PREFIX)?;
            Some((key.to_string(), c.to.clone().unwrap_or(Value::Null)))
        })
        .collect();
    serde_json::json!({"state": {"desired": desired}})
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use serde_json::json;

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::*;

    /// The iot-data plane, faked at the HTTP level: the harness has no mocked data client,
    /// and `Clients` builds it lazily from its `SdkConfig`, whose HTTP client this replaces.
    /// GET answers with `shadow` (404 without one); every request is logged.
    #[derive(Debug, Clone)]
    struct DataPlane {
        shadow: Option<Value>,
        log: Arc<Mutex<Vec<(String, String)>>>,
    }

    impl DataPlane {
        /// The requests sent with `method`, by body.
        fn sent(&self, method: &str) -> Vec<String> {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter(|(m, _)| m == method)
                .map(|(_, body)| body.clone())
                .collect()
        }
    }

    impl HttpConnector for DataPlane {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let method = request.method().to_string();
            let body = String::from_utf8_lossy(request.body().bytes().unwrap_or_default());
            self.log
                .lock()
                .unwrap()
                .push((method.clone(), body.to_string()));
            let (status, body) = match (method.as_str(), &self.shadow) {
                ("GET", Some(doc)) => (200, doc.to_string()),
                ("GET", None) => (404, r#"{"message":"No shadow exists"}"#.to_string()),
                _ => (200, "{}".to_string()),
            };
            let mut response =
                HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
            if status == 404 {
                response
                    .headers_mut()
                    .insert("x-amzn-ErrorType", "ResourceNotFoundException");
            }
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    const WANT: &str = r#"{"state": {"desired": {"temperature_threshold": 75, "active": true},
                                    "reported": {"temperature": 20}}}"#;

    /// A shadow step with the recipe's document, the data plane answering with `live`.
    fn setup(live: Option<Value>, recorded: bool) -> (Harness, DataPlane) {
        let records = if recorded {
            vec![recorded_shadow()]
        } else {
            vec![]
        };
        let mut h = harness(&[], &[], &[], &[], records, |d| {
            d.shadow = Some(serde_json::from_str(WANT).unwrap());
        });
        let plane = DataPlane {
            shadow: live,
            log: Default::default(),
        };
        let connector = plane.clone();
        let env = Arc::get_mut(&mut h.env).expect("harness owns the env");
        env.aws.sdk_config = aws_types::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_types::sdk_config::RetryConfig::disabled())
            .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
                aws_sdk_iotdataplane::config::Credentials::for_tests(),
            ))
            .http_client(http_client_fn(move |_, _| {
                SharedHttpConnector::new(connector.clone())
            }))
            .build();
        (h, plane)
    }

    fn recorded_shadow() -> Record {
        Record::new(SHADOW, KIND, Phase::Created, "temperature-sensor-abc123")
    }

    /// What the device made of it: reported state, an application's desired key, and the
    /// configured desired keys with `threshold`.
    fn live(threshold: i64) -> Value {
        json!({"state": {
            "desired": {"temperature_threshold": threshold, "active": true, "colour": "red"},
            "reported": {"temperature": 31.5}
        }})
    }

    /// `plan` and `ensure` from the same live shadow: the plan's action, and the outcome.
    async fn plan_then_ensure(h: &Harness) -> (Action, Outcome) {
        let r = Shadow(h.env.clone());
        let plan = Resource::plan(&r, &h.cx, true).await.unwrap();
        let outcome = r.ensure(&h.cx).await.unwrap();
        (plan.action, outcome)
    }

    #[tokio::test]
    async fn no_change_writes_nothing() {
        let (h, plane) = setup(Some(live(75)), true);
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!((action, outcome), (Action::NoChange, Outcome::Unchanged));
        assert_eq!(plane.sent("GET").len(), 2, "one read each");
        assert!(plane.sent("POST").is_empty(), "no write");
        assert!(plane.sent("DELETE").is_empty(), "no write");
        assert_eq!(h.cx.record(SHADOW), Some(recorded_shadow()));
    }

    #[tokio::test]
    async fn a_changed_desired_key_is_updated_alone() {
        let (h, plane) = setup(Some(live(90)), true);
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!(action, Action::Update);
        assert_eq!(
            outcome,
            Outcome::Updated("desired.temperature_threshold: 90 → 75".into())
        );
        let sent = plane.sent("POST");
        assert_eq!(sent.len(), 1, "one UpdateThingShadow");
        // The planned key only: the device's reported state and the application's key are
        // not touched.
        let payload: Value = serde_json::from_str(&sent[0]).unwrap();
        assert_eq!(
            payload,
            json!({"state": {"desired": {"temperature_threshold": 75}}})
        );
        assert_eq!(h.cx.record(SHADOW), Some(recorded_shadow()));
    }

    #[tokio::test]
    async fn a_missing_shadow_is_created_with_the_whole_document() {
        let (h, plane) = setup(None, false);
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!((action, outcome), (Action::Create, Outcome::Created));
        let sent = plane.sent("POST");
        assert_eq!(sent.len(), 1);
        let payload: Value = serde_json::from_str(&sent[0]).unwrap();
        assert_eq!(payload, serde_json::from_str::<Value>(WANT).unwrap());
        assert_eq!(h.cx.record(SHADOW).unwrap().phase, Phase::Created);
    }

    #[tokio::test]
    async fn a_live_shadow_as_wanted_is_adopted_without_a_write() {
        // Not recorded (an interrupted create's answer was lost, or a link found live).
        let (h, plane) = setup(Some(live(75)), false);
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!((action, outcome), (Action::Adopt, Outcome::Adopted));
        assert!(plane.sent("POST").is_empty(), "no write");
        assert_eq!(h.cx.record(SHADOW), Some(recorded_shadow()));
    }

    #[tokio::test]
    async fn an_adopted_shadow_that_differs_is_updated() {
        let (h, plane) = setup(Some(live(90)), false);
        let (action, outcome) = plan_then_ensure(&h).await;
        assert_eq!(action, Action::Adopt);
        assert!(matches!(outcome, Outcome::Updated(_)), "{outcome:?}");
        assert_eq!(plane.sent("POST").len(), 1);
        assert_eq!(h.cx.record(SHADOW), Some(recorded_shadow()));
    }

    #[tokio::test]
    async fn verify_names_the_differing_key() {
        let (h, _plane) = setup(Some(live(90)), true);
        let checks = Shadow(h.env.clone()).check(&h.cx).await;
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].name, "shadow.desired");
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert_eq!(
            checks[0].reason,
            "device shadow of temperature-sensor-abc123 differs: desired.temperature_threshold: 90 → 75"
        );
        let (h, _plane) = setup(Some(live(75)), true);
        let checks = Shadow(h.env.clone()).check(&h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Pass);
        assert_eq!(checks[0].reason, "desired state as configured");
    }

    #[test]
    fn only_the_configured_desired_keys_are_compared() {
        let h = harness(&[], &[], &[], &[], vec![], |d| {
            d.shadow = Some(serde_json::from_str(WANT).unwrap());
        });
        let r = Shadow(h.env.clone());
        // Extra live keys (an application's) and the reported state are not compared.
        assert_eq!(r.fields(&live(75)), r.desired(&h.cx));
        assert_ne!(r.fields(&live(70)), r.desired(&h.cx));
        // No desired section live: every configured key is missing.
        assert!(r.fields(&json!({"state": {"reported": {}}})).is_empty());
    }
}
