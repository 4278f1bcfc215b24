//! The SNS topic the handler publishes HIGH temperature alerts to, and the alarms notify.

use std::collections::HashMap;
use std::sync::Arc;

use super::sdk::{self, op};
use super::{Env, ALERT_TOPIC};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "SNS topic";

pub struct AlertTopic(pub Arc<Env>);

impl Meta for AlertTopic {
    fn key(&self) -> &str {
        ALERT_TOPIC
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.monitoring.topic_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

/// The topic's attributes (subscription counts among them).
type Attributes = HashMap<String, String>;

#[async_trait::async_trait]
impl Kind for AlertTopic {
    type Live = Attributes;

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    /// GetTopicAttributes, not CreateTopic: CreateTopic would answer with an existing topic's
    /// ARN, so a topic this deployment does not own would be taken over instead of refused.
    async fn read(&self, _cx: &Ctx) -> Result<Option<Attributes>, StepError> {
        self.attributes(&self.0.d.monitoring.topic_arn).await
    }

    fn fields(&self, _live: &Attributes) -> Fields {
        Fields::new()
    }

    fn identify(&self, _live: &Attributes) -> String {
        self.0.d.monitoring.topic_arn.clone()
    }

    async fn apply(&self, cx: &Ctx, step: Step<Attributes>) -> Result<Outcome, StepError> {
        let m = &self.0.d.monitoring;
        let name = &m.topic_name;
        if step.live.is_some() {
            let mut rec = step.live_record(ALERT_TOPIC, KIND, name);
            rec.arn = Some(m.topic_arn.clone());
            return cx.keep(step.record.as_ref(), rec);
        }
        let mut rec = cx.intent(Record::new(ALERT_TOPIC, KIND, Phase::Intent, name))?;
        // CreateTopic is idempotent: a retry after a lost answer returns the same topic.
        let out = sdk::send(
            op(KIND, name, "CreateTopic"),
            self.0.aws.sns.create_topic().name(name).send(),
        )
        .await?;
        rec.phase = Phase::Created;
        rec.arn = Some(out.topic_arn.unwrap_or_else(|| m.topic_arn.clone()));
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    fn check_name(&self) -> &'static str {
        "alerts.topic"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Attributes>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if let (CheckStatus::Pass, Some(attributes)) = (check.status, seen.live) {
            let count = |k: &str| attributes.get(k).map(String::as_str).unwrap_or("?");
            check.reason = format!(
                "exists; {} subscription(s) confirmed, {} pending confirmation",
                count("SubscriptionsConfirmed"),
                count("SubscriptionsPending")
            );
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(ALERT_TOPIC) else {
            return Ok(Outcome::Absent);
        };
        let arn = rec
            .arn
            .clone()
            .unwrap_or_else(|| self.0.d.monitoring.topic_arn.clone());
        // DeleteTopic succeeds for a topic that does not exist: read first to tell.
        if self.attributes(&arn).await?.is_none() {
            cx.forget(ALERT_TOPIC)?;
            return Ok(Outcome::Absent);
        }
        // Deleting the topic also deletes its subscriptions, confirmed or pending.
        sdk::send(
            op(KIND, &rec.name, "DeleteTopic"),
            self.0.aws.sns.delete_topic().topic_arn(&arn).send(),
        )
        .await?;
        cx.forget(ALERT_TOPIC)?;
        Ok(Outcome::Deleted)
    }
}

impl AlertTopic {
    /// The topic's attributes, or None when it does not exist.
    async fn attributes(&self, arn: &str) -> Result<Option<Attributes>, StepError> {
        let out = sdk::find(
            op(KIND, &self.0.d.monitoring.topic_name, "GetTopicAttributes"),
            self.0.aws.sns.get_topic_attributes().topic_arn(arn).send(),
            |e| e.is_not_found_exception(),
        )
        .await?;
        Ok(out.map(|o| o.attributes.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sns::operation::create_topic::CreateTopicOutput;
    use aws_sdk_sns::operation::get_topic_attributes::{
        GetTopicAttributesError, GetTopicAttributesOutput,
    };
    use aws_smithy_mocks::mock;

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::{monitoring_harness, recorded};

    const ARN: &str = "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123";

    #[tokio::test]
    async fn no_change_makes_no_write() {
        let read = mock!(aws_sdk_sns::Client::get_topic_attributes)
            .then_output(|| GetTopicAttributesOutput::builder().build());
        let rec = recorded(
            ALERT_TOPIC,
            KIND,
            "iot-temperature-alerts-abc123",
            Some(ARN),
        );
        let h = monitoring_harness(&[&read], &[], vec![rec]);
        let topic = AlertTopic(h.env.clone());
        assert_eq!(
            topic.plan(&h.cx, true).await.unwrap().action,
            Action::NoChange
        );
        assert_eq!(topic.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_missing_topic_is_created_as_planned() {
        let read = mock!(aws_sdk_sns::Client::get_topic_attributes).then_error(|| {
            GetTopicAttributesError::NotFoundException(
                aws_sdk_sns::types::error::NotFoundException::builder().build(),
            )
        });
        let create = mock!(aws_sdk_sns::Client::create_topic)
            .then_output(|| CreateTopicOutput::builder().topic_arn(ARN).build());
        let h = monitoring_harness(&[&read, &create], &[], vec![]);
        let topic = AlertTopic(h.env.clone());
        assert_eq!(
            topic.plan(&h.cx, true).await.unwrap().action,
            Action::Create
        );
        assert_eq!(topic.ensure(&h.cx).await.unwrap(), Outcome::Created);
        assert_eq!(create.num_calls(), 1);
        assert_eq!(h.cx.record(ALERT_TOPIC).unwrap().arn.as_deref(), Some(ARN));
    }
}
