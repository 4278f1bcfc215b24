//! The detector's state: one DynamoDB item per device (its recent readings, its stuck run,
//! which rules are firing, the last stream record it processed), billed per request, and
//! expired by DynamoDB's TTL some days after a device's last reading so that decommissioned
//! devices (and verify's probes) do not stay forever.

use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::{AnalyticsSpec, Poll, TABLE};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "DynamoDB table";
/// The partition key: the device's name (the stream's partition key).
pub const KEY_ATTRIBUTE: &str = "device";
/// The attribute the detector stamps with the epoch second its item may be dropped.
pub const TTL_ATTRIBUTE: &str = "expires_at";
const KEY: &str = "key";
const BILLING: &str = "billing_mode";
const TTL: &str = "ttl_attribute";

pub struct Table(pub Arc<Env>);

/// DescribeTable's answer and the table's TTL setting (DescribeTimeToLive).
pub struct LiveTable {
    pub table: TableDescription,
    pub ttl: Option<String>,
}

impl Table {
    fn spec(&self) -> Option<&AnalyticsSpec> {
        super::of(&self.0.d)
    }
}

impl Meta for Table {
    fn key(&self) -> &str {
        TABLE
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec()
            .map(|s| s.table_name.clone())
            .unwrap_or_default()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

#[async_trait::async_trait]
impl Kind for Table {
    type Live = LiveTable;

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([
            (
                BILLING.to_string(),
                BillingMode::PayPerRequest.as_str().into(),
            ),
            (KEY.to_string(), format!("{KEY_ATTRIBUTE} (S)").into()),
            (TTL.to_string(), TTL_ATTRIBUTE.into()),
        ])
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<LiveTable>, StepError> {
        let name =
            crate::resources::name_to_read(self.spec().map(|s| s.table_name.as_str()), cx, TABLE);
        // A table being deleted (a `down` moments ago) is gone for planning: `up` waits for it
        // to go before creating the new one.
        let Some(table) = describe(&self.0, &name)
            .await?
            .filter(|t| t.table_status() != Some(&TableStatus::Deleting))
        else {
            return Ok(None);
        };
        let ttl = sdk::find(
            op(KIND, &name, "DescribeTimeToLive"),
            self.0
                .aws
                .dynamodb
                .describe_time_to_live()
                .table_name(&name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?
        .and_then(|o| o.time_to_live_description)
        .filter(|t| {
            matches!(
                t.time_to_live_status(),
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
        })
        .and_then(|t| t.attribute_name().map(str::to_string));
        Ok(Some(LiveTable { table, ttl }))
    }

    fn fields(&self, live: &LiveTable) -> Fields {
        let t = &live.table;
        // A table created before on-demand billing reports no summary: provisioned.
        let billing = t
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .unwrap_or(&BillingMode::Provisioned)
            .as_str()
            .to_string();
        let key = t
            .key_schema()
            .iter()
            .map(|k| {
                let ty = t
                    .attribute_definitions()
                    .iter()
                    .find(|a| a.attribute_name() == k.attribute_name())
                    .map(|a| a.attribute_type().as_str().to_string())
                    .unwrap_or_else(|| "?".into());
                let role = match k.key_type() {
                    KeyType::Hash => "",
                    _ => " range",
                };
                format!("{} ({ty}){role}", k.attribute_name())
            })
            .collect::<Vec<_>>()
            .join(", ");
        Fields::from([
            (BILLING.to_string(), billing.into()),
            (KEY.to_string(), key.into()),
            (TTL.to_string(), live.ttl.clone().unwrap_or_default().into()),
        ])
    }

    fn identify(&self, live: &LiveTable) -> String {
        live.table.table_arn().unwrap_or_default().to_string()
    }

    /// A table's key cannot change: a different key is a replace (and the state goes).
    fn immutable(&self) -> &'static [&'static str] {
        &[KEY]
    }

    async fn apply(&self, cx: &Ctx, step: Step<LiveTable>) -> Result<Outcome, StepError> {
        let spec = super::configured(&self.0.d)?;
        let db = &self.0.aws.dynamodb;
        let name = &spec.table_name;
        let build =
            |e: aws_sdk_dynamodb::error::BuildError| StepError::Failed(format!("{KIND}: {e}"));
        let Some(live) = &step.live else {
            wait_deleted(&self.0, cx, name).await?;
            let mut rec = cx.intent(Record::new(TABLE, KIND, Phase::Intent, name))?;
            let out = sdk::create(
                op(KIND, name, "CreateTable"),
                db.create_table()
                    .table_name(name)
                    .billing_mode(BillingMode::PayPerRequest)
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(KEY_ATTRIBUTE)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .map_err(build)?,
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(KEY_ATTRIBUTE)
                            .key_type(KeyType::Hash)
                            .build()
                            .map_err(build)?,
                    )
                    .send(),
                |e| e.is_resource_in_use_exception(),
            )
            .await?;
            // UpdateTimeToLive needs an ACTIVE table.
            wait_active(&self.0, cx, name).await?;
            self.set_ttl(name).await?;
            rec.phase = Phase::Created;
            rec.arn = out
                .table_description
                .and_then(|t| t.table_arn)
                .or_else(|| Some(spec.table_arn.clone()));
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        if step.changes(BILLING) {
            sdk::send(
                op(KIND, name, "UpdateTable"),
                db.update_table()
                    .table_name(name)
                    .billing_mode(BillingMode::PayPerRequest)
                    .send(),
            )
            .await?;
            wait_active(&self.0, cx, name).await?;
        }
        if step.changes(TTL) {
            self.set_ttl(name).await?;
        }
        let outcome = step.outcome((!step.plan.changes.is_empty()).then(|| step.summary()));
        let mut rec = step.live_record(TABLE, KIND, name);
        rec.arn = live.table.table_arn().map(str::to_string);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "analytics.table"
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, LiveTable>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        let Some(live) = seen.live else {
            return vec![check];
        };
        let status = live
            .table
            .table_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "unknown".into());
        if status != TableStatus::Active.as_str() && status != TableStatus::Updating.as_str() {
            return vec![Check::fail(
                self.check_name(),
                &seen.resource,
                format!("{} is {status}", seen.resource),
            )];
        }
        if check.status == CheckStatus::Pass {
            check.reason = format!(
                "{status}, on-demand, keyed by {KEY_ATTRIBUTE}, items expire by {TTL_ATTRIBUTE}; about {} device(s)",
                live.table.item_count().unwrap_or(0)
            );
        }
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(TABLE) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        let deleted = sdk::find(
            op(KIND, name, "DeleteTable"),
            self.0.aws.dynamodb.delete_table().table_name(name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(TABLE)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

impl Table {
    async fn set_ttl(&self, name: &str) -> Result<(), StepError> {
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: {e}")))?;
        sdk::send(
            op(KIND, name, "UpdateTimeToLive"),
            self.0
                .aws
                .dynamodb
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(spec)
                .send(),
        )
        .await?;
        Ok(())
    }
}

async fn describe(env: &Env, name: &str) -> Result<Option<TableDescription>, StepError> {
    let out = sdk::find(
        op(KIND, name, "DescribeTable"),
        env.aws.dynamodb.describe_table().table_name(name).send(),
        |e| e.is_resource_not_found_exception(),
    )
    .await?;
    Ok(out.and_then(|o| o.table))
}

/// Waits (bounded) for a table of this name that is being deleted to be gone: DynamoDB
/// refuses to create a table while one of the same name is DELETING.
async fn wait_deleted(env: &Env, cx: &Ctx, name: &str) -> Result<(), StepError> {
    let what = format!("{KIND} {name:?} (of the same name)");
    super::wait_until(cx, super::TRANSITION, &what, || async {
        Ok(match describe(env, name).await? {
            Some(t) if t.table_status() == Some(&TableStatus::Deleting) => {
                Poll::Waiting("DELETING".into())
            }
            _ => Poll::Done,
        })
    })
    .await
}

/// Polls until the table is ACTIVE (bounded).
async fn wait_active(env: &Env, cx: &Ctx, name: &str) -> Result<(), StepError> {
    let what = format!("{KIND} {name:?}");
    super::wait_until(cx, super::TRANSITION, &what, || async {
        Ok(
            match describe(env, name)
                .await?
                .and_then(|t| t.table_status().cloned())
            {
                Some(TableStatus::Active) => Poll::Done,
                Some(s) => Poll::Waiting(s.as_str().to_string()),
                None => Poll::Waiting("not yet visible".into()),
            },
        )
    })
    .await
}
