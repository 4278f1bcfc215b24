//! The Kinesis data stream the analytics rule feeds and the detector reads: on-demand unless
//! `analytics.shards` provisions a count. Kinesis creates (and resizes) a stream
//! asynchronously, and refuses most calls until it is ACTIVE, so every write waits for that.

use std::sync::Arc;

use aws_sdk_kinesis::types::{
    ScalingType, StreamDescriptionSummary, StreamMode, StreamModeDetails, StreamStatus,
};

use super::{AnalyticsSpec, Poll, STREAM};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "Kinesis stream";
const MODE: &str = "mode";
const SHARDS: &str = "shards";

pub struct Stream(pub Arc<Env>);

impl Stream {
    fn spec(&self) -> Option<&AnalyticsSpec> {
        super::of(&self.0.d)
    }
    fn mode(&self) -> StreamMode {
        match self.spec().and_then(|s| s.shards) {
            Some(_) => StreamMode::Provisioned,
            None => StreamMode::OnDemand,
        }
    }
}

impl Meta for Stream {
    fn key(&self) -> &str {
        STREAM
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec()
            .map(|s| s.stream_name.clone())
            .unwrap_or_default()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

#[async_trait::async_trait]
impl Kind for Stream {
    type Live = StreamDescriptionSummary;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let mut f = Fields::from([(MODE.to_string(), self.mode().as_str().into())]);
        // An on-demand stream sizes itself: its shard count is not the config's to compare.
        if let Some(n) = self.spec().and_then(|s| s.shards) {
            f.insert(SHARDS.into(), n.into());
        }
        f
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<StreamDescriptionSummary>, StepError> {
        let name =
            crate::resources::name_to_read(self.spec().map(|s| s.stream_name.as_str()), cx, STREAM);
        // A stream being deleted (a `down` moments ago) is gone for planning: `up` waits for it
        // to go before creating the new one.
        Ok(describe(&self.0, &name)
            .await?
            .filter(|s| s.stream_status() != &StreamStatus::Deleting))
    }

    fn fields(&self, live: &StreamDescriptionSummary) -> Fields {
        let mode = live
            .stream_mode_details()
            .map(|m| m.stream_mode().as_str().to_string())
            // Streams from before on-demand existed report no mode: they are provisioned.
            .unwrap_or_else(|| StreamMode::Provisioned.as_str().to_string());
        let mut f = Fields::from([(MODE.to_string(), mode.into())]);
        if self.spec().and_then(|s| s.shards).is_some() {
            f.insert(SHARDS.into(), live.open_shard_count().into());
        }
        f
    }

    fn identify(&self, live: &StreamDescriptionSummary) -> String {
        live.stream_arn().to_string()
    }

    async fn apply(
        &self,
        cx: &Ctx,
        step: Step<StreamDescriptionSummary>,
    ) -> Result<Outcome, StepError> {
        let spec = super::configured(&self.0.d)?;
        let kinesis = &self.0.aws.kinesis;
        let name = &spec.stream_name;
        let mode = StreamModeDetails::builder()
            .stream_mode(self.mode())
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: {e}")))?;
        let Some(live) = &step.live else {
            wait_deleted(&self.0, cx, name).await?;
            let mut rec = cx.intent(Record::new(STREAM, KIND, Phase::Intent, name))?;
            sdk::create(
                op(KIND, name, "CreateStream"),
                kinesis
                    .create_stream()
                    .stream_name(name)
                    .set_shard_count(spec.shards.map(|n| n as i32))
                    .stream_mode_details(mode)
                    .send(),
                |e| e.is_resource_in_use_exception(),
            )
            .await?;
            wait_active(&self.0, cx, name).await?;
            rec.phase = Phase::Created;
            rec.arn = Some(spec.stream_arn.clone());
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        if step.changes(MODE) {
            wait_active(&self.0, cx, name).await?;
            sdk::send(
                op(KIND, name, "UpdateStreamMode"),
                kinesis
                    .update_stream_mode()
                    .stream_arn(live.stream_arn())
                    .stream_mode_details(mode)
                    .send(),
            )
            .await?;
        }
        if let (true, Some(n)) = (step.changes(SHARDS), spec.shards) {
            wait_active(&self.0, cx, name).await?;
            sdk::send(
                op(KIND, name, "UpdateShardCount"),
                kinesis
                    .update_shard_count()
                    .stream_name(name)
                    .target_shard_count(n as i32)
                    .scaling_type(ScalingType::UniformScaling)
                    .send(),
            )
            .await?;
        }
        if !step.plan.changes.is_empty() {
            wait_active(&self.0, cx, name).await?;
        }
        let outcome = step.outcome((!step.plan.changes.is_empty()).then(|| step.summary()));
        let mut rec = step.live_record(STREAM, KIND, name);
        rec.arn = Some(live.stream_arn().to_string());
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "analytics.stream"
    }

    /// The comparison, and whether records can be put: ACTIVE (or UPDATING, which still
    /// takes records).
    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, StreamDescriptionSummary>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        let Some(live) = seen.live else {
            return vec![check];
        };
        let status = live.stream_status();
        if !matches!(status, StreamStatus::Active | StreamStatus::Updating) {
            return vec![Check::fail(
                self.check_name(),
                &seen.resource,
                format!("{} is {}", seen.resource, status.as_str()),
            )];
        }
        if check.status == CheckStatus::Pass {
            let mode = match self.mode() {
                StreamMode::OnDemand => "on-demand".to_string(),
                _ => "provisioned".to_string(),
            };
            check.reason = format!(
                "{}, {mode}, {} open shard(s), records kept {} h",
                status.as_str(),
                live.open_shard_count(),
                live.retention_period_hours()
            );
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(STREAM) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        // The mapping reading it is a consumer of the stream's only through Lambda; a
        // registered enhanced fan-out consumer would block the delete, so they go with it.
        let deleted = sdk::find(
            op(KIND, name, "DeleteStream"),
            self.0
                .aws
                .kinesis
                .delete_stream()
                .stream_name(name)
                .enforce_consumer_deletion(true)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(STREAM)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

/// The stream's summary, or None when there is no such stream.
pub async fn describe(
    env: &Env,
    name: &str,
) -> Result<Option<StreamDescriptionSummary>, StepError> {
    let out = sdk::find(
        op(KIND, name, "DescribeStreamSummary"),
        env.aws
            .kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send(),
        |e| e.is_resource_not_found_exception(),
    )
    .await?;
    Ok(out.and_then(|o| o.stream_description_summary))
}

/// Waits (bounded) for a stream of this name that is being deleted to be gone: Kinesis refuses
/// to create a stream while one of the same name is DELETING.
async fn wait_deleted(env: &Env, cx: &Ctx, name: &str) -> Result<(), StepError> {
    let what = format!("{KIND} {name:?} (of the same name)");
    super::wait_until(cx, super::TRANSITION, &what, || async {
        Ok(match describe(env, name).await? {
            Some(s) if s.stream_status() == &StreamStatus::Deleting => {
                Poll::Waiting("DELETING".into())
            }
            _ => Poll::Done,
        })
    })
    .await
}

/// Polls until the stream is ACTIVE (bounded).
async fn wait_active(env: &Env, cx: &Ctx, name: &str) -> Result<(), StepError> {
    let what = format!("{KIND} {name:?}");
    super::wait_until(cx, super::TRANSITION, &what, || async {
        match describe(env, name).await? {
            Some(s) if s.stream_status() == &StreamStatus::Active => Ok(Poll::Done),
            Some(s) => Ok(Poll::Waiting(s.stream_status().as_str().to_string())),
            None => Err(StepError::Failed(format!(
                "{KIND} {name:?} disappeared while waiting for it to become ACTIVE"
            ))),
        }
    })
    .await
}
