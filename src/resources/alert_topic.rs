//! The SNS topic the handler publishes HIGH temperature alerts to, and the alarms notify.

use std::sync::Arc;

use super::{Env, ALERT_TOPIC};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, found};

const KIND: &str = "SNS topic";

pub struct AlertTopic(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for AlertTopic {
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

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        let m = &self.0.d.monitoring;
        Ok(self.attributes(&m.topic_arn).await?.map(|_| Fields::new()))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let m = &self.0.d.monitoring;
        let name = &m.topic_name;
        let record = cx.record(ALERT_TOPIC);
        if self.attributes(&m.topic_arn).await?.is_some() {
            // CreateTopic would answer with the existing topic's ARN: look first, so that a
            // topic this deployment does not own is refused rather than taken over.
            let Some(mut rec) = record.clone() else {
                return Err(StepError::NotOurs {
                    kind: KIND.into(),
                    name: name.clone(),
                });
            };
            rec.phase = Phase::Created;
            rec.arn = Some(m.topic_arn.clone());
            return cx.keep(record.as_ref(), rec);
        }
        let mut rec = cx.intent(Record::new(ALERT_TOPIC, KIND, Phase::Intent, name))?;
        // CreateTopic is idempotent: a retry after a lost answer returns the same topic.
        let out = call!(
            self.0.aws.sns.create_topic().name(name).send(),
            KIND,
            name,
            "CreateTopic"
        );
        rec.phase = Phase::Created;
        rec.arn = Some(out.topic_arn.unwrap_or_else(|| m.topic_arn.clone()));
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let arn = &self.0.d.monitoring.topic_arn;
        Ok(self.attributes(arn).await?.map(|_| arn.clone()))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "alerts.topic";
        let m = &self.0.d.monitoring;
        let res = format!("{KIND} {}", m.topic_name);
        let live = crate::check_try!(self.attributes(&m.topic_arn).await, [NAME], res);
        let Some(attributes) = live else {
            return vec![Check::fail(NAME, &res, format!("{res} does not exist"))];
        };
        let count = |k: &str| attributes.get(k).map(String::as_str).unwrap_or("?");
        vec![Check::pass(
            NAME,
            &res,
            format!(
                "exists; {} subscription(s) confirmed, {} pending confirmation",
                count("SubscriptionsConfirmed"),
                count("SubscriptionsPending")
            ),
        )]
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
        call!(
            self.0.aws.sns.delete_topic().topic_arn(&arn).send(),
            KIND,
            &rec.name,
            "DeleteTopic"
        );
        cx.forget(ALERT_TOPIC)?;
        Ok(Outcome::Deleted)
    }
}

impl AlertTopic {
    /// The topic's attributes, or None when it does not exist.
    async fn attributes(
        &self,
        arn: &str,
    ) -> Result<Option<std::collections::HashMap<String, String>>, StepError> {
        let out = found!(
            self.0.aws.sns.get_topic_attributes().topic_arn(arn).send(),
            is_not_found_exception,
            KIND,
            &self.0.d.monitoring.topic_name,
            "GetTopicAttributes"
        );
        Ok(out.map(|o| o.attributes.unwrap_or_default()))
    }
}
