//! Fleet Indexing for the account (`fleet.indexing = true`): the registry, the classic
//! shadows and connectivity indexed, so that a fleet's shadows and connection state are read
//! with SearchIndex, 100 things a page, rather than one call per device.
//!
//! It is an account-wide setting, not a resource with a name: `up` turns the two modes on and
//! keeps the rest of the configuration as it finds it (custom fields, named shadows, Device
//! Defender, the filter); the record keeps the modes it found, and `down` puts those back only
//! when this deployment changed them. Indexing that was on before stays on.

use std::sync::Arc;

use aws_sdk_iot::operation::get_indexing_configuration::GetIndexingConfigurationOutput;
use aws_sdk_iot::types::{
    ThingConnectivityIndexingMode, ThingIndexingConfiguration, ThingIndexingMode,
};

use super::sdk::{self, op};
use super::{Env, FLEET_INDEXING};
use crate::engine::{Ctx, Kind, Meta, Outcome, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};

const KIND: &str = "fleet indexing";
const NAME: &str = "AWS_Things";
const MODE: &str = "thing_indexing_mode";
const CONNECTIVITY: &str = "thing_connectivity_indexing_mode";
/// What the record keeps of the configuration found before this deployment changed it.
const PREVIOUS_MODE: &str = "previous_thing_indexing_mode";
const PREVIOUS_CONNECTIVITY: &str = "previous_thing_connectivity_indexing_mode";

pub struct Indexing(pub Arc<Env>);

impl Meta for Indexing {
    fn key(&self) -> &str {
        FLEET_INDEXING
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        NAME.into()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
    fn delete_note(&self) -> String {
        "fleet.indexing is off in the config: the indexing modes found before are put back".into()
    }
}

fn modes(mode: &str, connectivity: &str) -> Fields {
    Fields::from([
        (MODE.to_string(), mode.into()),
        (CONNECTIVITY.to_string(), connectivity.into()),
    ])
}

/// The thing indexing configuration's two modes, as AWS names them (OFF when unset).
fn live_modes(live: &GetIndexingConfigurationOutput) -> (String, String) {
    let t = live.thing_indexing_configuration();
    (
        t.map_or("OFF", |t| t.thing_indexing_mode().as_str())
            .to_string(),
        t.and_then(|t| t.thing_connectivity_indexing_mode())
            .map_or("OFF", |c| c.as_str())
            .to_string(),
    )
}

#[async_trait::async_trait]
impl Kind for Indexing {
    type Live = GetIndexingConfigurationOutput;

    fn desired(&self, _cx: &Ctx) -> Fields {
        modes(
            ThingIndexingMode::RegistryAndShadow.as_str(),
            ThingConnectivityIndexingMode::Status.as_str(),
        )
    }

    /// The account's configuration: always there (all OFF when never set).
    async fn read(&self, _cx: &Ctx) -> Result<Option<GetIndexingConfigurationOutput>, StepError> {
        sdk::send(
            op(KIND, NAME, "GetIndexingConfiguration"),
            self.0.aws.iot.get_indexing_configuration().send(),
        )
        .await
        .map(Some)
    }

    fn fields(&self, live: &GetIndexingConfigurationOutput) -> Fields {
        let (mode, connectivity) = live_modes(live);
        modes(&mode, &connectivity)
    }

    fn identify(&self, live: &GetIndexingConfigurationOutput) -> String {
        let (mode, connectivity) = live_modes(live);
        format!("{NAME} ({mode}, connectivity {connectivity})")
    }

    fn shared(&self) -> bool {
        true
    }

    fn adopts_unowned(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        cx: &Ctx,
        step: Step<GetIndexingConfigurationOutput>,
    ) -> Result<Outcome, StepError> {
        let live = step
            .live
            .as_ref()
            .expect("the indexing configuration is always read");
        let (mode, connectivity) = live_modes(live);
        // First recorded now: remember what was there, for `down`.
        let mut rec = step.record.clone().unwrap_or_else(|| {
            let mut r = Record::new(FLEET_INDEXING, KIND, Phase::Created, NAME);
            r.data.insert(PREVIOUS_MODE.into(), mode.clone().into());
            r.data
                .insert(PREVIOUS_CONNECTIVITY.into(), connectivity.clone().into());
            r
        });
        rec.phase = Phase::Created;
        let updated = if step.plan.changes.is_empty() {
            None
        } else {
            self.set(
                live,
                ThingIndexingMode::RegistryAndShadow,
                ThingConnectivityIndexingMode::Status,
            )
            .await?;
            Some(format!(
                "turned on (was {mode}, connectivity {connectivity}); AWS builds the index before SearchIndex answers"
            ))
        };
        cx.save(step.record.as_ref(), rec)?;
        Ok(step.outcome(updated))
    }

    fn check_name(&self) -> &'static str {
        "fleet.indexing"
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(FLEET_INDEXING) else {
            return Ok(Outcome::Absent);
        };
        let was = (
            rec.data_str(PREVIOUS_MODE).unwrap_or("OFF").to_string(),
            rec.data_str(PREVIOUS_CONNECTIVITY)
                .unwrap_or("OFF")
                .to_string(),
        );
        let Some(live) = self.read(cx).await? else {
            return Ok(Outcome::Absent);
        };
        let now = live_modes(&live);
        let ours = modes(&now.0, &now.1) == self.desired(cx);
        if !ours || now == was {
            // On before this deployment, or changed since by someone else: theirs to keep.
            cx.forget(FLEET_INDEXING)?;
            return Ok(Outcome::Retained(format!(
                "account-wide; left as it is ({}, connectivity {})",
                now.0, now.1
            )));
        }
        self.set(
            &live,
            ThingIndexingMode::from(was.0.as_str()),
            ThingConnectivityIndexingMode::from(was.1.as_str()),
        )
        .await?;
        cx.forget(FLEET_INDEXING)?;
        Ok(Outcome::Deleted)
    }
}

impl Indexing {
    /// Sets the two modes, keeping the rest of the thing indexing configuration as it is.
    async fn set(
        &self,
        live: &GetIndexingConfigurationOutput,
        mode: ThingIndexingMode,
        connectivity: ThingConnectivityIndexingMode,
    ) -> Result<(), StepError> {
        let t = live.thing_indexing_configuration();
        let config = ThingIndexingConfiguration::builder()
            .thing_indexing_mode(mode)
            .thing_connectivity_indexing_mode(connectivity)
            .set_named_shadow_indexing_mode(t.and_then(|t| t.named_shadow_indexing_mode().cloned()))
            .set_device_defender_indexing_mode(
                t.and_then(|t| t.device_defender_indexing_mode().cloned()),
            )
            .set_custom_fields(
                t.map(|t| t.custom_fields().to_vec())
                    .filter(|v| !v.is_empty()),
            )
            .set_filter(t.and_then(|t| t.filter().cloned()))
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: {e}")))?;
        sdk::send(
            op(KIND, NAME, "UpdateIndexingConfiguration"),
            self.0
                .aws
                .iot
                .update_indexing_configuration()
                .thing_indexing_configuration(config)
                .send(),
        )
        .await?;
        Ok(())
    }
}
