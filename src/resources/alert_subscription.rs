//! The optional email subscription to the alert topic (`monitoring.alert_email`). AWS emails
//! the address a confirmation link; until it is followed the subscription is pending, which
//! `up` and `verify` report without failing: only the address's owner can confirm it.

use std::sync::Arc;

use super::sdk::{self, op};
use super::{Env, ALERT_SUBSCRIPTION, ALERT_TOPIC};
use crate::engine::{Ctx, Kind, Meta, Outcome, Replacement, Seen, Step, StepError};
use crate::plan::{Action, Fields};
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "SNS email subscription";
/// What SNS lists instead of an ARN for a subscription not yet confirmed (documented value).
const PENDING: &str = "PendingConfirmation";

pub struct AlertSubscription(pub Arc<Env>);

/// A subscription of the address to the topic, as listed.
pub struct Live {
    /// The ARN, or None while pending (SNS lists no ARN then).
    arn: Option<String>,
}

impl Meta for AlertSubscription {
    fn key(&self) -> &str {
        ALERT_SUBSCRIPTION
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.monitoring.alert_email.clone().unwrap_or_default()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[ALERT_TOPIC]
    }
}

#[async_trait::async_trait]
impl Kind for AlertSubscription {
    type Live = Live;

    /// The address subscribed to this deployment's own topic is this deployment's.
    fn adopts_unowned(&self) -> bool {
        true
    }
    fn replacement(&self, why: &Replacement) -> (String, bool) {
        match why {
            Replacement::Renamed { from } => (
                format!("the address changed: {from} is unsubscribed, the new one subscribed"),
                true,
            ),
            Replacement::Immutable { .. } => (String::new(), true),
        }
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<Live>, StepError> {
        self.find(&self.name()).await
    }

    fn fields(&self, _live: &Live) -> Fields {
        Fields::new()
    }

    fn identify(&self, live: &Live) -> String {
        live.arn.clone().unwrap_or_else(|| PENDING.to_string())
    }

    async fn apply(&self, cx: &Ctx, step: Step<Live>) -> Result<Outcome, StepError> {
        let email = self.name();
        let m = &self.0.d.monitoring;
        let mut record = step.record.clone();
        let mut live = step.live;
        if step.plan.action == Action::Replace {
            // A new address: the old one goes first, then the new one is looked for.
            if let Some(old) = &record {
                self.unsubscribe(old).await?;
                cx.forget(ALERT_SUBSCRIPTION)?;
            }
            record = None;
            live = self.find(&email).await?;
        }
        if let Some(live) = live {
            let mut rec = Record::new(ALERT_SUBSCRIPTION, KIND, Phase::Created, &email);
            // A pending subscription is listed without its ARN: keep the one recorded.
            rec.arn = live
                .arn
                .clone()
                .or_else(|| record.as_ref().and_then(|r| r.arn.clone()));
            let kept = cx.keep(record.as_ref(), rec)?;
            return Ok(match live.arn {
                None => Outcome::Pending(awaiting(&email)),
                Some(_) => kept,
            });
        }
        let mut rec = cx.intent(Record::new(ALERT_SUBSCRIPTION, KIND, Phase::Intent, &email))?;
        // Subscribe is idempotent for the same topic, protocol and address. Without
        // ReturnSubscriptionArn an email subscription answers "pending confirmation" in place
        // of its ARN, which `down` needs.
        let out = sdk::send(
            op(KIND, &email, "Subscribe"),
            self.0
                .aws
                .sns
                .subscribe()
                .topic_arn(&m.topic_arn)
                .protocol("email")
                .endpoint(&email)
                .return_subscription_arn(true)
                .send(),
        )
        .await?;
        rec.phase = Phase::Created;
        rec.arn = out.subscription_arn;
        cx.commit(rec)?;
        Ok(match self.find(&email).await? {
            Some(Live { arn: Some(_) }) => Outcome::Created,
            _ => Outcome::Pending(awaiting(&email)),
        })
    }

    fn check_name(&self) -> &'static str {
        "alerts.subscription"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Live>) -> Vec<Check> {
        let name = self.check_name();
        let email = self.name();
        let res = &seen.resource;
        vec![match seen.live {
            Some(Live { arn: Some(_) }) => {
                Check::pass(name, res, format!("{email} is subscribed and confirmed"))
            }
            // Not a failure: only the address's owner can confirm, and CI never will.
            Some(Live { arn: None }) => Check::pass(
                name,
                res,
                format!("{email} is subscribed, pending confirmation: {HOW}"),
            ),
            None => Check::fail(
                name,
                res,
                format!(
                    "{email} is not subscribed to {}",
                    self.0.d.monitoring.topic_name
                ),
            ),
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(ALERT_SUBSCRIPTION) else {
            return Ok(Outcome::Absent);
        };
        let outcome = self.unsubscribe(&rec).await?;
        cx.forget(ALERT_SUBSCRIPTION)?;
        Ok(outcome)
    }
}

const HOW: &str =
    "AWS emailed it a link, and alerts reach it once the link is followed (unconfirmed subscriptions expire after 3 days)";

fn awaiting(email: &str) -> String {
    format!("{email} pending confirmation: {HOW}")
}

impl AlertSubscription {
    /// The address's email subscription to the alert topic, if any (paginated listing).
    async fn find(&self, email: &str) -> Result<Option<Live>, StepError> {
        let m = &self.0.d.monitoring;
        let mut token: Option<String> = None;
        loop {
            let Some(page) = sdk::find(
                op(KIND, email, "ListSubscriptionsByTopic"),
                self.0
                    .aws
                    .sns
                    .list_subscriptions_by_topic()
                    .topic_arn(&m.topic_arn)
                    .set_next_token(token.clone())
                    .send(),
                |e| e.is_not_found_exception(),
            )
            .await?
            else {
                return Ok(None); // no topic, no subscription
            };
            if let Some(s) = page
                .subscriptions()
                .iter()
                .find(|s| s.protocol() == Some("email") && s.endpoint() == Some(email))
            {
                let arn = s.subscription_arn().filter(|a| a.starts_with("arn:"));
                return Ok(Some(Live {
                    arn: arn.map(str::to_string),
                }));
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(None);
            }
        }
    }

    /// Removes a recorded subscription.
    async fn unsubscribe(&self, rec: &Record) -> Result<Outcome, StepError> {
        let Some(arn) = rec.arn.as_deref().filter(|a| a.starts_with("arn:")) else {
            return Ok(Outcome::Retained(
                "no subscription ARN on record; deleting the topic removes it".into(),
            ));
        };
        let sns = &self.0.aws.sns;
        match sns.unsubscribe().subscription_arn(arn).send().await {
            Ok(_) => Ok(Outcome::Deleted),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(Outcome::Absent)
            }
            // AWS may refuse to unsubscribe a subscription still pending confirmation; it
            // expires on its own, and goes with the topic.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_parameter_exception())
                    && matches!(self.find(&rec.name).await, Ok(Some(Live { arn: None }))) =>
            {
                Ok(Outcome::Retained(
                    "pending confirmation, which AWS does not let anyone unsubscribe; it expires after 3 days, or goes with the topic".into(),
                ))
            }
            Err(e) => Err(crate::aws::failed(KIND, &rec.name, "Unsubscribe", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sns::operation::list_subscriptions_by_topic::ListSubscriptionsByTopicOutput;
    use aws_sdk_sns::operation::subscribe::SubscribeOutput;
    use aws_sdk_sns::operation::unsubscribe::UnsubscribeOutput;
    use aws_sdk_sns::types::Subscription;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::resources::testing::{monitoring_harness, recorded, Harness};

    const SUB: &str = "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123:1";

    /// The topic's subscriptions: `email` confirmed.
    fn listed(email: &'static str) -> Rule {
        mock!(aws_sdk_sns::Client::list_subscriptions_by_topic).then_output(move || {
            ListSubscriptionsByTopicOutput::builder()
                .subscriptions(
                    Subscription::builder()
                        .protocol("email")
                        .endpoint(email)
                        .subscription_arn(SUB)
                        .build(),
                )
                .build()
        })
    }

    fn with_email(rules: &[&Rule], records: Vec<Record>) -> Harness {
        let mut h = monitoring_harness(rules, &[], records);
        let env = std::sync::Arc::get_mut(&mut h.env).expect("harness owns the env");
        env.d.monitoring.alert_email = Some("ops@example.com".into());
        h
    }

    #[tokio::test]
    async fn no_change_makes_no_write() {
        let list = listed("ops@example.com");
        let rec = recorded(ALERT_SUBSCRIPTION, KIND, "ops@example.com", Some(SUB));
        let h = with_email(&[&list], vec![rec]);
        let sub = AlertSubscription(h.env.clone());
        assert_eq!(
            sub.plan(&h.cx, true).await.unwrap().action,
            Action::NoChange
        );
        assert_eq!(sub.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_new_address_unsubscribes_the_old_and_subscribes_the_new_as_planned() {
        // Listed: only the old address; the new one is not subscribed yet.
        let list = listed("old@example.com");
        let unsubscribe = mock!(aws_sdk_sns::Client::unsubscribe)
            .match_requests(|r| r.subscription_arn() == Some(SUB))
            .then_output(|| UnsubscribeOutput::builder().build());
        let subscribe = mock!(aws_sdk_sns::Client::subscribe)
            .match_requests(|r| r.endpoint() == Some("ops@example.com"))
            .then_output(|| {
                SubscribeOutput::builder()
                    .subscription_arn("pending")
                    .build()
            });
        let rec = recorded(ALERT_SUBSCRIPTION, KIND, "old@example.com", Some(SUB));
        let h = with_email(&[&list, &unsubscribe, &subscribe], vec![rec]);
        let sub = AlertSubscription(h.env.clone());
        let plan = sub.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Replace);
        assert!(plan.applicable);
        let outcome = sub.ensure(&h.cx).await.unwrap();
        assert!(matches!(outcome, Outcome::Pending(_)), "{outcome:?}");
        assert_eq!((unsubscribe.num_calls(), subscribe.num_calls()), (1, 1));
        assert_eq!(
            h.cx.record(ALERT_SUBSCRIPTION).unwrap().name,
            "ops@example.com"
        );
    }
}
