//! The CloudWatch dashboard of the stack: the function's invocations, errors and duration, the
//! rule's matched messages and failed actions, and the alerts published. PutDashboard creates
//! or replaces the whole body.

use std::sync::Arc;

use super::{Env, DASHBOARD};
use crate::engine::{Ctx, Legacy as Resource, Outcome, Replacement, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, found};

const KIND: &str = "CloudWatch dashboard";

pub struct Dashboard(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Dashboard {
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

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        Ok(self
            .live(&self.name())
            .await?
            .map(|(_, body)| Fields::from([("body".to_string(), body)])))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let name = self.name();
        let want = &self.0.d.monitoring.dashboard_body;
        let mut record = cx.record(DASHBOARD);
        let previous = record.take_if(|r| r.name != name);
        let live = self.live(&name).await?;
        // Renamed: the old dashboard goes first, while the record still names it, so a crash
        // in between leaves nothing unrecorded (the next run deletes it again, or finds it gone).
        if let Some(old) = &previous {
            if live.is_some() {
                return Err(StepError::NotOurs {
                    kind: KIND.into(),
                    name,
                });
            }
            self.delete(&old.name).await?;
        }
        let mut rec = Record::new(DASHBOARD, KIND, Phase::Created, &name);
        let outcome = match live {
            Some((arn, body)) => {
                if record.is_none() {
                    return Err(StepError::NotOurs {
                        kind: KIND.into(),
                        name,
                    });
                }
                rec.arn = arn;
                if &body == want {
                    return cx.keep(record.as_ref(), rec);
                }
                Outcome::Updated("body".into())
            }
            None => {
                cx.intent(rec.clone())?;
                Outcome::Created
            }
        };
        let out = call!(
            self.0
                .aws
                .cloudwatch
                .put_dashboard()
                .dashboard_name(&name)
                .dashboard_body(want.to_string())
                .send(),
            KIND,
            &name,
            "PutDashboard"
        );
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

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let name = self.name();
        Ok(self.live(&name).await?.map(|(arn, _)| arn.unwrap_or(name)))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "dashboard.body";
        let name = self.name();
        let res = format!("{KIND} {name}");
        let live = crate::check_try!(self.live(&name).await, [NAME], res);
        let want = &self.0.d.monitoring.dashboard_body;
        let widgets = want["widgets"].as_array().map_or(0, Vec::len);
        vec![match live {
            None => Check::fail(NAME, &res, format!("{res} does not exist")),
            Some((_, body)) if &body == want => Check::pass(
                NAME,
                &res,
                format!("{widgets} widgets, as the rendered template"),
            ),
            Some(_) => Check::fail(
                NAME,
                &res,
                format!("{res}: its body differs from the rendered template"),
            ),
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(DASHBOARD) else {
            return Ok(Outcome::Absent);
        };
        let deleted = self.delete(&rec.name).await?;
        cx.forget(DASHBOARD)?;
        Ok(if deleted {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

impl Dashboard {
    /// Deletes a dashboard; false when it was already gone.
    async fn delete(&self, name: &str) -> Result<bool, StepError> {
        // DeleteDashboards' error model has no not-found variant, but AWS (and moto) answer
        // a missing dashboard with the code ResourceNotFound.
        Ok(crate::gone_by_code!(
            self.0
                .aws
                .cloudwatch
                .delete_dashboards()
                .dashboard_names(name)
                .send(),
            "ResourceNotFound",
            KIND,
            name,
            "DeleteDashboards"
        ))
    }

    /// The live dashboard's ARN and body (unparseable text kept as text), or None.
    async fn live(
        &self,
        name: &str,
    ) -> Result<Option<(Option<String>, serde_json::Value)>, StepError> {
        let out = found!(
            self.0
                .aws
                .cloudwatch
                .get_dashboard()
                .dashboard_name(name)
                .send(),
            is_dashboard_not_found_error,
            KIND,
            name,
            "GetDashboard"
        );
        Ok(out.map(|o| {
            let text = o.dashboard_body().unwrap_or_default();
            let body = serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.to_string()));
            (o.dashboard_arn().map(str::to_string), body)
        }))
    }
}
