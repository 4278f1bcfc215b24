//! The event source mapping that runs the detector on the stream's records: batches of
//! `analytics.batch_size` gathered for up to `analytics.batching_window_s`, from where
//! `analytics.starting_position` says, retried `analytics.retries` times and split in two on
//! each error (bisect) until the failing record is alone; a batch given up on is described in
//! the failure queue and the shard moves on.
//!
//! It is read by listing the mappings of the stream and the function (one call, and how an
//! interrupted create's mapping is found again: the stream and the function are this
//! deployment's own, so their mapping is too).

use std::sync::Arc;

use aws_sdk_lambda::operation::create_event_source_mapping::CreateEventSourceMappingError;
use aws_sdk_lambda::types::{
    DestinationConfig, EventSourceMappingConfiguration, EventSourcePosition, OnFailure,
};

use super::{AnalyticsSpec, Poll, DETECTOR, DETECTOR_ROLE, MAPPING, QUEUE, STREAM};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Replacement, Seen, Step, StepError};
use crate::plan::Action;
use crate::plan::Fields;
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::retry::Backoff;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "event source mapping";
const FUNCTION: &str = "function";
const SOURCE: &str = "stream";
const BATCH: &str = "batch_size";
const WINDOW: &str = "batching_window_s";
const POSITION: &str = "starting_position";
const RETRIES: &str = "retries";
const BISECT: &str = "bisect_on_error";
const ON_FAILURE: &str = "on_failure";
const ENABLED: &str = "enabled";
/// A mapping is Creating, Enabling or Updating for seconds; Lambda refuses to change or
/// delete it meanwhile.
const SETTLE: Backoff = Backoff {
    initial: std::time::Duration::from_millis(250),
    max_delay: std::time::Duration::from_secs(5),
    budget: std::time::Duration::from_secs(180),
};

pub struct Mapping(pub Arc<Env>);

impl Mapping {
    fn spec(&self) -> Option<&AnalyticsSpec> {
        super::of(&self.0.d)
    }
}

impl Meta for Mapping {
    fn key(&self) -> &str {
        MAPPING
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec()
            .map(|s| format!("{} → {}", s.stream_name, s.function.name))
            .unwrap_or_default()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[STREAM, DETECTOR, QUEUE, DETECTOR_ROLE]
    }
}

#[async_trait::async_trait]
impl Kind for Mapping {
    type Live = EventSourceMappingConfiguration;

    fn desired(&self, cx: &Ctx) -> Fields {
        let Some(s) = self.spec() else {
            return Fields::new();
        };
        let function = cx.record(DETECTOR).and_then(|r| r.arn).unwrap_or_default();
        let m = &s.mapping;
        Fields::from([
            (FUNCTION.to_string(), function.into()),
            (SOURCE.to_string(), s.stream_arn.clone().into()),
            (BATCH.to_string(), m.batch_size.into()),
            (WINDOW.to_string(), m.batching_window_s.into()),
            (POSITION.to_string(), m.starting_position.as_str().into()),
            (RETRIES.to_string(), m.retries.into()),
            (BISECT.to_string(), m.bisect_on_error.into()),
            (ON_FAILURE.to_string(), s.queue_arn.clone().into()),
            (ENABLED.to_string(), true.into()),
        ])
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<EventSourceMappingConfiguration>, StepError> {
        let rec = cx.record(MAPPING);
        let id = rec.as_ref().and_then(|r| r.id.clone());
        // A recorded mapping is read by its id, whatever the config now names.
        if let Some(id) = &id {
            let found = sdk::find(
                op(KIND, id, "GetEventSourceMapping"),
                self.0.aws.lambda.get_event_source_mapping().uuid(id).send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
            if let Some(o) = found {
                return Ok(Some(from_get(o)));
            }
        }
        let Some(s) = self.spec() else {
            return Ok(None);
        };
        let mut found = None;
        sdk::each_page(
            op(KIND, &self.name(), "ListEventSourceMappings"),
            self.0
                .aws
                .lambda
                .list_event_source_mappings()
                .event_source_arn(&s.stream_arn)
                .function_name(&s.function.name)
                .into_paginator()
                .send(),
            |e| e.is_resource_not_found_exception(),
            |page| {
                // One being deleted (a `down` moments ago) is gone for planning.
                if found.is_none() {
                    found = page
                        .event_source_mappings
                        .unwrap_or_default()
                        .into_iter()
                        .find(|m| m.state() != Some("Deleting"));
                }
            },
        )
        .await?;
        Ok(found)
    }

    fn fields(&self, m: &EventSourceMappingConfiguration) -> Fields {
        let enabled = !matches!(m.state(), Some("Disabled" | "Disabling"));
        Fields::from([
            (
                FUNCTION.to_string(),
                m.function_arn().unwrap_or_default().into(),
            ),
            (
                SOURCE.to_string(),
                m.event_source_arn().unwrap_or_default().into(),
            ),
            (BATCH.to_string(), m.batch_size().unwrap_or(0).into()),
            (
                WINDOW.to_string(),
                m.maximum_batching_window_in_seconds().unwrap_or(0).into(),
            ),
            (
                POSITION.to_string(),
                m.starting_position()
                    .map(|p| p.as_str())
                    .unwrap_or_default()
                    .into(),
            ),
            (
                RETRIES.to_string(),
                m.maximum_retry_attempts().unwrap_or(-1).into(),
            ),
            (
                BISECT.to_string(),
                m.bisect_batch_on_function_error().unwrap_or(false).into(),
            ),
            (
                ON_FAILURE.to_string(),
                m.destination_config()
                    .and_then(|d| d.on_failure())
                    .and_then(|f| f.destination())
                    .unwrap_or_default()
                    .into(),
            ),
            (ENABLED.to_string(), enabled.into()),
        ])
    }

    fn identify(&self, m: &EventSourceMappingConfiguration) -> String {
        m.event_source_mapping_arn()
            .map(str::to_string)
            .unwrap_or_else(|| {
                self.0.d.arn(
                    "lambda",
                    &format!("event-source-mapping:{}", m.uuid().unwrap_or_default()),
                )
            })
    }

    /// Where a mapping starts is fixed when it is created, as is what it reads.
    fn immutable(&self) -> &'static [&'static str] {
        &[POSITION, SOURCE]
    }

    /// Its stream and function are this deployment's own: a mapping between them found
    /// without a record is the one an interrupted `up` created.
    fn adopts_unowned(&self) -> bool {
        true
    }

    /// A mapping holds nothing but its checkpoint: replacing it is safe, and `up` does it.
    fn replacement(&self, why: &Replacement) -> (String, bool) {
        let what = match why {
            Replacement::Renamed { from } => format!("was {from:?}"),
            Replacement::Immutable { fields } => format!("{} changed", fields.join(", ")),
        };
        (
            format!("{what}: Lambda cannot change that in place; the mapping is deleted and created again"),
            true,
        )
    }

    async fn apply(
        &self,
        cx: &Ctx,
        step: Step<EventSourceMappingConfiguration>,
    ) -> Result<Outcome, StepError> {
        let s = super::configured(&self.0.d)?;
        let lambda = &self.0.aws.lambda;
        let name = self.name();
        let m = &s.mapping;
        let function = &s.function.name;
        let failure = DestinationConfig::builder()
            .on_failure(OnFailure::builder().destination(&s.queue_arn).build())
            .build();
        let mut live = step.live.as_ref();
        if step.plan.action == Action::Replace {
            // A new starting position (or another stream or function) needs a new mapping: the
            // old one goes first; the create below waits while it is still being deleted.
            let old = step
                .record
                .as_ref()
                .and_then(|r| r.id.clone())
                .or_else(|| live.and_then(|l| l.uuid()).map(str::to_string));
            if let Some(id) = old {
                self.delete(cx, &id).await?;
            }
            live = None;
        }
        let Some(live) = live else {
            let mut rec = cx.intent(Record::new(MAPPING, KIND, Phase::Intent, &name))?;
            let mut delays = self.0.d.iam_retry.delays();
            let mut deleting = SETTLE.delays();
            let out = loop {
                crate::ratelimit::acquire("CreateEventSourceMapping").await;
                let sent = lambda
                    .create_event_source_mapping()
                    .event_source_arn(&s.stream_arn)
                    .function_name(function)
                    .batch_size(m.batch_size as i32)
                    .maximum_batching_window_in_seconds(m.batching_window_s as i32)
                    .starting_position(EventSourcePosition::from(m.starting_position.as_str()))
                    .maximum_retry_attempts(m.retries as i32)
                    .bisect_batch_on_function_error(m.bisect_on_error)
                    .destination_config(failure.clone())
                    .enabled(true)
                    .send()
                    .await;
                match sent {
                    Ok(out) => break out,
                    // The mapping of the same stream and function exists: our own create whose
                    // answer was lost (the engine reads again and adopts it), or one still
                    // being deleted, which is waited out.
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_conflict_exception()) =>
                    {
                        if self.read(cx).await?.is_some() {
                            return Err(StepError::ExistsAfterCreate {
                                kind: KIND.into(),
                                name,
                            });
                        }
                        let Some(delay) = deleting.next() else {
                            return Err(crate::aws::failed(
                                KIND,
                                &name,
                                "CreateEventSourceMapping",
                                e,
                            ));
                        };
                        cx.progress("waiting for the previous mapping to finish deleting");
                        tokio::time::sleep(delay).await;
                    }
                    // Lambda checks the function's role for the stream's read permissions when
                    // the mapping is created; a new role's policy takes seconds to propagate.
                    // AWS gives that no code of its own (an InvalidParameterValueException like
                    // any bad parameter): its message names the permission it lacks.
                    Err(e) if is_role_not_ready(&e) => {
                        let Some(delay) = delays.next() else {
                            return Err(crate::aws::failed(
                                KIND,
                                &name,
                                "CreateEventSourceMapping",
                                e,
                            ));
                        };
                        cx.progress("waiting for the detector's role to propagate");
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => {
                        return Err(crate::aws::failed(
                            KIND,
                            &name,
                            "CreateEventSourceMapping",
                            e,
                        ))
                    }
                }
            };
            let id = out.uuid.clone().unwrap_or_default();
            rec.id = Some(id.clone());
            rec.arn = Some(out.event_source_mapping_arn.clone().unwrap_or_else(|| {
                self.0
                    .d
                    .arn("lambda", &format!("event-source-mapping:{id}"))
            }));
            // Recorded before the wait: the mapping exists now, whatever the wait says.
            cx.commit(rec.clone())?;
            self.wait_settled(cx, &id).await?;
            rec.phase = Phase::Created;
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let id = live.uuid().unwrap_or_default().to_string();
        if !step.plan.changes.is_empty() {
            self.wait_settled(cx, &id).await?;
            sdk::send(
                op(KIND, &name, "UpdateEventSourceMapping"),
                lambda
                    .update_event_source_mapping()
                    .uuid(&id)
                    .function_name(function)
                    .batch_size(m.batch_size as i32)
                    .maximum_batching_window_in_seconds(m.batching_window_s as i32)
                    .maximum_retry_attempts(m.retries as i32)
                    .bisect_batch_on_function_error(m.bisect_on_error)
                    .destination_config(failure)
                    .enabled(true)
                    .send(),
            )
            .await?;
            self.wait_settled(cx, &id).await?;
        }
        let outcome = step.outcome((!step.plan.changes.is_empty()).then(|| step.summary()));
        let mut rec = step.live_record(MAPPING, KIND, &name);
        rec.id = Some(id);
        rec.arn = Some(self.identify(live));
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "analytics.mapping"
    }

    /// The comparison (enabled, reading the stream into the detector as configured) and
    /// Lambda's own word on it: its state and the last processing result.
    async fn checks(
        &self,
        _cx: &Ctx,
        seen: Seen<'_, EventSourceMappingConfiguration>,
    ) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        let Some(live) = seen.live else {
            return vec![check];
        };
        let state = live.state().unwrap_or("unknown");
        if check.status == CheckStatus::Pass && state != "Enabled" {
            let why = live
                .state_transition_reason()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return vec![Check::fail(
                self.check_name(),
                &seen.resource,
                format!("{} is {state}{why}", seen.resource),
            )];
        }
        if check.status == CheckStatus::Pass {
            let s = self.spec().expect("a wanted mapping has its spec");
            let m = &s.mapping;
            check.reason = format!(
                "Enabled, {} → {}: batches of {} within {} s from {}, {} retries{}, failures to {}; last result {}",
                s.stream_name,
                s.function.name,
                m.batch_size,
                m.batching_window_s,
                m.starting_position.as_str(),
                m.retries,
                if m.bisect_on_error { ", split on error" } else { "" },
                s.queue_name,
                live.last_processing_result().unwrap_or("none yet"),
            );
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(MAPPING) else {
            return Ok(Outcome::Absent);
        };
        let id = match rec.id.clone() {
            Some(id) => id,
            // An intent without an id: the create's answer was lost; find it by what it joins.
            None => match self.read(cx).await? {
                Some(live) => live.uuid().unwrap_or_default().to_string(),
                None => {
                    cx.forget(MAPPING)?;
                    return Ok(Outcome::Absent);
                }
            },
        };
        let deleted = self.delete(cx, &id).await?;
        cx.forget(MAPPING)?;
        Ok(Outcome::deleted_if(deleted))
    }
}

impl Mapping {
    /// Deletes the mapping `id` once it has settled (Lambda refuses to delete one in
    /// transition); false when it was already gone.
    async fn delete(&self, cx: &Ctx, id: &str) -> Result<bool, StepError> {
        self.wait_settled(cx, id).await?;
        let deleted = sdk::find(
            op(KIND, id, "DeleteEventSourceMapping"),
            self.0
                .aws
                .lambda
                .delete_event_source_mapping()
                .uuid(id)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(deleted.is_some())
    }

    /// Polls until the mapping has left its transitional states (Creating, Enabling,
    /// Updating), bounded. A mapping that is gone, or ends Disabled, has settled.
    async fn wait_settled(&self, cx: &Ctx, id: &str) -> Result<(), StepError> {
        let what = format!("{KIND} {id}");
        super::wait_until(cx, SETTLE, &what, || async {
            let found = sdk::find(
                op(KIND, id, "GetEventSourceMapping"),
                self.0.aws.lambda.get_event_source_mapping().uuid(id).send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
            Ok(match found.as_ref().and_then(|m| m.state()) {
                None | Some("Enabled" | "Disabled") => Poll::Done,
                Some(state) => Poll::Waiting(state.to_string()),
            })
        })
        .await
    }
}

/// Lambda's answer while the function's role cannot read the stream yet (see the create).
fn is_role_not_ready(e: &aws_sdk_lambda::error::SdkError<CreateEventSourceMappingError>) -> bool {
    match e.as_service_error() {
        Some(CreateEventSourceMappingError::InvalidParameterValueException(e)) => {
            e.message().is_some_and(|m| m.contains("permission"))
        }
        _ => false,
    }
}

/// GetEventSourceMapping's answer as the listing's configuration type.
fn from_get(
    o: aws_sdk_lambda::operation::get_event_source_mapping::GetEventSourceMappingOutput,
) -> EventSourceMappingConfiguration {
    EventSourceMappingConfiguration::builder()
        .set_uuid(o.uuid)
        .set_starting_position(o.starting_position)
        .set_batch_size(o.batch_size)
        .set_maximum_batching_window_in_seconds(o.maximum_batching_window_in_seconds)
        .set_event_source_arn(o.event_source_arn)
        .set_function_arn(o.function_arn)
        .set_last_processing_result(o.last_processing_result)
        .set_state(o.state)
        .set_state_transition_reason(o.state_transition_reason)
        .set_destination_config(o.destination_config)
        .set_maximum_retry_attempts(o.maximum_retry_attempts)
        .set_bisect_batch_on_function_error(o.bisect_batch_on_function_error)
        .set_event_source_mapping_arn(o.event_source_mapping_arn)
        .build()
}
