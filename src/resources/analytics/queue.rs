//! The failure destination: an SQS queue where the event source mapping sends the record of
//! a batch it gave up on (which shard, which sequence numbers), kept for SQS's longest
//! retention so that someone can look at the readings and replay them.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{AnalyticsSpec, QUEUE, QUEUE_RETENTION_S};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::retry::Backoff;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "SQS queue";
const RETENTION: &str = "message_retention_s";
/// SQS refuses a queue of a name deleted in the last 60 seconds (a `down` then an `up`).
const RECREATE_WAIT: Backoff = Backoff {
    initial: std::time::Duration::from_secs(2),
    max_delay: std::time::Duration::from_secs(10),
    budget: std::time::Duration::from_secs(90),
};

pub struct Queue(pub Arc<Env>);

/// The queue's URL and attributes.
pub struct LiveQueue {
    pub url: String,
    pub attributes: HashMap<QueueAttributeName, String>,
}

impl LiveQueue {
    fn attribute(&self, name: QueueAttributeName) -> &str {
        self.attributes.get(&name).map(String::as_str).unwrap_or("")
    }
}

impl Queue {
    fn spec(&self) -> Option<&AnalyticsSpec> {
        super::of(&self.0.d)
    }
}

impl Meta for Queue {
    fn key(&self) -> &str {
        QUEUE
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec()
            .map(|s| s.queue_name.clone())
            .unwrap_or_default()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

#[async_trait::async_trait]
impl Kind for Queue {
    type Live = LiveQueue;

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([(RETENTION.to_string(), QUEUE_RETENTION_S.to_string().into())])
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<LiveQueue>, StepError> {
        let name =
            crate::resources::name_to_read(self.spec().map(|s| s.queue_name.as_str()), cx, QUEUE);
        let sqs = &self.0.aws.sqs;
        let Some(url) = url(&self.0, &name).await? else {
            return Ok(None);
        };
        let attributes = sdk::find(
            op(KIND, &name, "GetQueueAttributes"),
            sqs.get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::All)
                .send(),
            |e| e.is_queue_does_not_exist(),
        )
        .await?;
        Ok(attributes.map(|a| LiveQueue {
            url,
            attributes: a.attributes.unwrap_or_default(),
        }))
    }

    fn fields(&self, live: &LiveQueue) -> Fields {
        Fields::from([(
            RETENTION.to_string(),
            live.attribute(QueueAttributeName::MessageRetentionPeriod)
                .into(),
        )])
    }

    fn identify(&self, live: &LiveQueue) -> String {
        live.attribute(QueueAttributeName::QueueArn).to_string()
    }

    async fn apply(&self, cx: &Ctx, step: Step<LiveQueue>) -> Result<Outcome, StepError> {
        let spec = super::configured(&self.0.d)?;
        let sqs = &self.0.aws.sqs;
        let name = &spec.queue_name;
        let retention = QUEUE_RETENTION_S.to_string();
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(QUEUE, KIND, Phase::Intent, name))?;
            let mut delays = RECREATE_WAIT.delays();
            // CreateQueue with the same attributes returns the existing queue: a retry after
            // a lost answer is harmless, so there is no already-exists case to adopt.
            loop {
                crate::ratelimit::acquire("CreateQueue").await;
                let sent = sqs
                    .create_queue()
                    .queue_name(name)
                    .attributes(QueueAttributeName::MessageRetentionPeriod, &retention)
                    .send()
                    .await;
                match sent {
                    Ok(_) => break,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_queue_deleted_recently()) =>
                    {
                        let Some(delay) = delays.next() else {
                            return Err(crate::aws::failed(KIND, name, "CreateQueue", e));
                        };
                        cx.progress("SQS keeps a deleted queue's name for 60 s: waiting");
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => return Err(crate::aws::failed(KIND, name, "CreateQueue", e)),
                }
            }
            rec.phase = Phase::Created;
            rec.arn = Some(spec.queue_arn.clone());
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        if step.changes(RETENTION) {
            sdk::send(
                op(KIND, name, "SetQueueAttributes"),
                sqs.set_queue_attributes()
                    .queue_url(&live.url)
                    .attributes(QueueAttributeName::MessageRetentionPeriod, &retention)
                    .send(),
            )
            .await?;
        }
        let outcome = step.outcome((!step.plan.changes.is_empty()).then(|| step.summary()));
        let mut rec = step.live_record(QUEUE, KIND, name);
        rec.arn = Some(self.identify(live)).filter(|a| !a.is_empty());
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "analytics.failures"
    }

    /// The comparison, and how many failed batches wait in the queue: information, since a
    /// record there is a reading the detector could not take, not a fault of the deployment.
    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, LiveQueue>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if let (CheckStatus::Pass, Some(live)) = (check.status, seen.live) {
            let waiting = live.attribute(QueueAttributeName::ApproximateNumberOfMessages);
            check.reason = format!(
                "{} failed batch record(s) waiting, kept {} days",
                if waiting.is_empty() { "?" } else { waiting },
                QUEUE_RETENTION_S / 86_400
            );
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(QUEUE) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        let Some(url) = url(&self.0, name).await? else {
            cx.forget(QUEUE)?;
            return Ok(Outcome::Absent);
        };
        let deleted = sdk::find(
            op(KIND, name, "DeleteQueue"),
            self.0.aws.sqs.delete_queue().queue_url(&url).send(),
            |e| e.is_queue_does_not_exist(),
        )
        .await?;
        cx.forget(QUEUE)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

/// The queue's URL, or None when there is no such queue.
pub async fn url(env: &Env, name: &str) -> Result<Option<String>, StepError> {
    let out = sdk::find(
        op(KIND, name, "GetQueueUrl"),
        env.aws.sqs.get_queue_url().queue_name(name).send(),
        |e| e.is_queue_does_not_exist(),
    )
    .await?;
    Ok(out.and_then(|o| o.queue_url))
}
