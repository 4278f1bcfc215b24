//! The CloudWatch dashboard of the stack: the function's invocations, errors and duration, the
//! rule's matched messages and failed actions, the alerts published, the devices' connections
//! and messages, and each job's executions (templates/dashboard.json). PutDashboard creates or
//! replaces the whole body.

use std::sync::Arc;

use serde_json::Value;

use super::sdk::{self, op};
use super::{Env, DASHBOARD};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Replacement, Seen, Step, StepError};
use crate::plan::{Action, Fields};
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "CloudWatch dashboard";

pub struct Dashboard(pub Arc<Env>);

impl Meta for Dashboard {
    fn key(&self) -> &str {
        DASHBOARD
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.monitoring.dashboard_name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

/// The live dashboard: its ARN and body (unparseable text kept as text).
pub struct Live {
    arn: Option<String>,
    body: Value,
}

#[async_trait::async_trait]
impl Kind for Dashboard {
    type Live = Live;

    /// Nothing refers to a dashboard by name: a rename is a new one and the old one deleted.
    fn replacement(&self, why: &Replacement) -> (String, bool) {
        match why {
            Replacement::Renamed { from } => (
                format!("renamed: {from:?} is deleted and the new dashboard saved"),
                true,
            ),
            Replacement::Immutable { .. } => (String::new(), true),
        }
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([(
            "body".to_string(),
            self.0.d.monitoring.dashboard_body.clone(),
        )])
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<Live>, StepError> {
        self.live(&self.name()).await
    }

    fn fields(&self, live: &Live) -> Fields {
        Fields::from([("body".to_string(), live.body.clone())])
    }

    fn identify(&self, live: &Live) -> String {
        live.arn.clone().unwrap_or_else(|| self.name())
    }

    async fn apply(&self, cx: &Ctx, step: Step<Live>) -> Result<Outcome, StepError> {
        let name = self.name();
        let mut live = step.live;
        let mut record = step.record.clone();
        if step.plan.action == Action::Replace {
            // Renamed: the old dashboard goes first, while the record still names it, so a
            // crash in between leaves nothing unrecorded (the next run deletes it again, or
            // finds it gone). A dashboard already under the new name is not ours to replace.
            live = self.live(&name).await?;
            if live.is_some() {
                return Err(StepError::NotOurs {
                    kind: KIND.into(),
                    name,
                });
            }
            if let Some(old) = record.take() {
                self.delete(&old.name).await?;
            }
        }
        let mut rec = Record::new(DASHBOARD, KIND, Phase::Created, &name);
        let outcome = match live {
            Some(live) => {
                rec.arn = live.arn;
                if !step.plan.changes.iter().any(|c| c.field == "body") {
                    return cx.keep(record.as_ref(), rec);
                }
                Outcome::Updated("body".into())
            }
            None => {
                cx.intent(rec.clone())?;
                Outcome::Created
            }
        };
        let out = sdk::send(
            op(KIND, &name, "PutDashboard"),
            self.0
                .aws
                .cloudwatch
                .put_dashboard()
                .dashboard_name(&name)
                .dashboard_body(self.0.d.monitoring.dashboard_body.to_string())
                .send(),
        )
        .await?;
        if rec.arn.is_none() {
            // Dashboards are global: their ARN has no region.
            let d = &self.0.d;
            rec.arn = Some(format!(
                "arn:{}:cloudwatch::{}:dashboard/{name}",
                d.partition, d.account
            ));
        }
        cx.commit(rec)?;
        // The dashboard is saved even when some widget is off; say what CloudWatch said.
        let warnings: Vec<&str> = out
            .dashboard_validation_messages()
            .iter()
            .filter_map(|m| m.message())
            .collect();
        Ok(if warnings.is_empty() {
            outcome
        } else {
            Outcome::Updated(format!(
                "{}, but CloudWatch reports: {}",
                outcome.label(),
                warnings.join("; ")
            ))
        })
    }

    fn check_name(&self) -> &'static str {
        "dashboard.body"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Live>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        if seen.live.is_some() {
            let widgets = self.0.d.monitoring.dashboard_body["widgets"]
                .as_array()
                .map_or(0, Vec::len);
            check.reason = if check.status == CheckStatus::Pass {
                format!("{widgets} widgets, as the rendered template")
            } else {
                format!(
                    "{}: its body differs from the rendered template",
                    seen.resource
                )
            };
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(DASHBOARD) else {
            return Ok(Outcome::Absent);
        };
        let deleted = self.delete(&rec.name).await?;
        cx.forget(DASHBOARD)?;
        Ok(Outcome::deleted_if(deleted))
    }
}

impl Dashboard {
    /// Deletes a dashboard; false when it was already gone.
    async fn delete(&self, name: &str) -> Result<bool, StepError> {
        // DeleteDashboards' error model has no not-found variant, but AWS (and moto) answer
        // a missing dashboard with the code ResourceNotFound.
        let deleted = sdk::find_by_code(
            op(KIND, name, "DeleteDashboards"),
            self.0
                .aws
                .cloudwatch
                .delete_dashboards()
                .dashboard_names(name)
                .send(),
            "ResourceNotFound",
        )
        .await?;
        Ok(deleted.is_some())
    }

    /// The live dashboard's ARN and body (unparseable text kept as text), or None.
    async fn live(&self, name: &str) -> Result<Option<Live>, StepError> {
        let out = sdk::find(
            op(KIND, name, "GetDashboard"),
            self.0
                .aws
                .cloudwatch
                .get_dashboard()
                .dashboard_name(name)
                .send(),
            |e| e.is_dashboard_not_found_error(),
        )
        .await?;
        Ok(out.map(|o| {
            let text = o.dashboard_body().unwrap_or_default();
            let body =
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
            Live {
                arn: o.dashboard_arn().map(str::to_string),
                body,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudwatch::operation::delete_dashboards::DeleteDashboardsOutput;
    use aws_sdk_cloudwatch::operation::get_dashboard::{GetDashboardError, GetDashboardOutput};
    use aws_sdk_cloudwatch::operation::put_dashboard::PutDashboardOutput;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::resources::testing::{monitoring_harness, recorded};

    const NAME: &str = "iot-device-registry-abc123";

    fn live(name: &'static str, body: &'static str) -> Rule {
        mock!(aws_sdk_cloudwatch::Client::get_dashboard)
            .match_requests(move |r| r.dashboard_name() == Some(name))
            .then_output(move || {
                GetDashboardOutput::builder()
                    .dashboard_name(name)
                    .dashboard_arn(format!("arn:aws:cloudwatch::123456789012:dashboard/{name}"))
                    .dashboard_body(body)
                    .build()
            })
    }

    fn put() -> Rule {
        mock!(aws_sdk_cloudwatch::Client::put_dashboard)
            .match_requests(|r| r.dashboard_name() == Some(NAME))
            .then_output(|| PutDashboardOutput::builder().build())
    }

    fn rec(name: &str) -> Record {
        recorded(DASHBOARD, KIND, name, None)
    }

    #[tokio::test]
    async fn no_change_makes_no_write() {
        // The harness's body is {"widgets": []}.
        let read = live(NAME, r#"{"widgets":[]}"#);
        let h = monitoring_harness(&[], &[&read], vec![rec(NAME)]);
        let dashboard = Dashboard(h.env.clone());
        assert_eq!(
            dashboard.plan(&h.cx, true).await.unwrap().action,
            Action::NoChange
        );
        assert_eq!(dashboard.ensure(&h.cx).await.unwrap(), Outcome::Adopted);
        // The record gains its ARN on that first pass; after it, nothing is written at all.
        assert_eq!(dashboard.ensure(&h.cx).await.unwrap(), Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_changed_body_is_one_put_dashboard_as_planned() {
        let read = live(NAME, r#"{"widgets":[{"type":"text"}]}"#);
        let put = put();
        let h = monitoring_harness(&[], &[&read, &put], vec![rec(NAME)]);
        let dashboard = Dashboard(h.env.clone());
        assert_eq!(
            dashboard.plan(&h.cx, true).await.unwrap().action,
            Action::Update
        );
        assert_eq!(
            dashboard.ensure(&h.cx).await.unwrap(),
            Outcome::Updated("body".into())
        );
        assert_eq!(put.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_renamed_dashboard_deletes_the_old_one_then_saves_the_new() {
        let new_missing = mock!(aws_sdk_cloudwatch::Client::get_dashboard)
            .match_requests(|r| r.dashboard_name() == Some(NAME))
            .then_error(|| {
                GetDashboardError::DashboardNotFoundError(
                    aws_sdk_cloudwatch::types::error::DashboardNotFoundError::builder().build(),
                )
            });
        let delete = mock!(aws_sdk_cloudwatch::Client::delete_dashboards)
            .match_requests(|r| r.dashboard_names() == ["old-dashboard"])
            .then_output(|| DeleteDashboardsOutput::builder().build());
        let put = put();
        let h = monitoring_harness(
            &[],
            &[&new_missing, &delete, &put],
            vec![rec("old-dashboard")],
        );
        let dashboard = Dashboard(h.env.clone());
        let plan = dashboard.plan(&h.cx, true).await.unwrap();
        assert_eq!(plan.action, Action::Replace);
        assert!(plan.applicable);
        assert_eq!(dashboard.ensure(&h.cx).await.unwrap(), Outcome::Created);
        assert_eq!((delete.num_calls(), put.num_calls()), (1, 1));
        assert_eq!(h.cx.record(DASHBOARD).unwrap().name, NAME);
    }
}
