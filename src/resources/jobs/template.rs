//! One job template of `[[job_templates]]`, with its firmware object.
//!
//! AWS has no UpdateJobTemplate (IoT API reference: CreateJobTemplate, DescribeJobTemplate,
//! DeleteJobTemplate): a template whose document or configuration changed is replaced, the old
//! one deleted before the new one is created under the same id. Jobs already started keep
//! the document they were created with, so the firmware object they link to stays in the
//! bucket until `down`; a new firmware file is a new object (its key carries the hash).

use std::sync::Arc;

use aws_sdk_iot::operation::describe_job_template::DescribeJobTemplateOutput;
use aws_sdk_iot::types::{
    AbortAction, AbortConfig, AbortCriteria, ExponentialRolloutRate, JobExecutionFailureType,
    JobExecutionsRetryConfig, JobExecutionsRolloutConfig, PresignedUrlConfig, RateIncreaseCriteria,
    RetryCriteria, RetryableFailureType, TimeoutConfig,
};
use serde_json::{json, Value};

use super::{TemplateSpec, JOBS_BUCKET, PRESIGN_ROLE, TEMPLATE_PREFIX};
use crate::engine::{Ctx, Kind, Meta, Outcome, Replacement, Step, StepError};
use crate::plan::{Action, Fields};
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::state::{Phase, Record};

const KIND: &str = "IoT job template";
const DOCUMENT: &str = "document";
const DESCRIPTION: &str = "description";
const ROLLOUT: &str = "rollout";
const ABORT: &str = "abort";
const TIMEOUT: &str = "timeout";
const RETRY: &str = "retry";
const PRESIGNED: &str = "presigned_url";
/// The firmware object's key when it is in the bucket (the one field an update can mend).
const FIRMWARE: &str = "firmware_object";
/// Everything AWS cannot change in place.
const IMMUTABLE: &[&str] = &[
    DOCUMENT,
    DESCRIPTION,
    ROLLOUT,
    ABORT,
    TIMEOUT,
    RETRY,
    PRESIGNED,
];

/// A template of the config, or one the state records and the config dropped (then only
/// `down` and `up`'s stray removal touch it).
pub struct JobTemplate {
    env: Arc<Env>,
    key: String,
    name: String,
}

pub type RetiredTemplate = JobTemplate;

impl JobTemplate {
    pub fn new(env: Arc<Env>, name: &str) -> JobTemplate {
        JobTemplate {
            env,
            key: format!("{TEMPLATE_PREFIX}{name}"),
            name: name.to_string(),
        }
    }

    /// Every template the config has.
    pub fn all(env: &Arc<Env>) -> Vec<JobTemplate> {
        env.d
            .jobs
            .templates
            .iter()
            .map(|t| JobTemplate::new(env.clone(), &t.name))
            .collect()
    }

    fn spec(&self) -> Option<&TemplateSpec> {
        self.env.d.jobs.template(&self.name)
    }

    fn id(&self, cx: &Ctx) -> String {
        match self.spec() {
            Some(t) => t.id.clone(),
            None => cx.record(&self.key).map(|r| r.name).unwrap_or_default(),
        }
    }
}

/// The live template and whether its firmware object is in the bucket.
pub struct Live {
    template: DescribeJobTemplateOutput,
    firmware_present: bool,
}

impl Meta for JobTemplate {
    fn key(&self) -> &str {
        &self.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec().map(|t| t.id.clone()).unwrap_or_default()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[JOBS_BUCKET, PRESIGN_ROLE]
    }
    fn delete_note(&self) -> String {
        format!("job template {:?} is no longer in the config", self.name)
    }
}

#[async_trait::async_trait]
impl Kind for JobTemplate {
    type Live = Live;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let Some(t) = self.spec() else {
            return Fields::new();
        };
        let d = &self.env.d;
        let presigned = t.presigned.then(|| {
            json!({
                "roleArn": d.jobs.role_arn(d),
                "expiresInSec": d.jobs.url_expires_s,
            })
        });
        let mut f = Fields::from([
            (DOCUMENT.to_string(), t.document.clone()),
            (DESCRIPTION.to_string(), t.description.clone().into()),
            (ROLLOUT.to_string(), t.rollout.clone().unwrap_or_default()),
            (ABORT.to_string(), t.abort.clone().unwrap_or_default()),
            (TIMEOUT.to_string(), t.timeout.clone().unwrap_or_default()),
            (RETRY.to_string(), t.retry.clone().unwrap_or_default()),
            (PRESIGNED.to_string(), presigned.unwrap_or_default()),
        ]);
        if let Some(fw) = &t.firmware {
            f.insert(FIRMWARE.into(), fw.key.clone().into());
        }
        f
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<Live>, StepError> {
        let id = self.id(cx);
        let found = sdk::find(
            op(KIND, &id, "DescribeJobTemplate"),
            self.env
                .aws
                .iot
                .describe_job_template()
                .job_template_id(&id)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        let Some(template) = found else {
            return Ok(None);
        };
        let firmware_present = match self.spec().and_then(|t| t.firmware.as_ref()) {
            Some(fw) => self.object_exists(&fw.key).await?,
            None => false,
        };
        Ok(Some(Live {
            template,
            firmware_present,
        }))
    }

    fn fields(&self, live: &Live) -> Fields {
        let t = &live.template;
        let document = t
            .document()
            .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.into())))
            .unwrap_or_default();
        let mut f = Fields::from([
            (DOCUMENT.to_string(), document),
            (
                DESCRIPTION.to_string(),
                t.description().unwrap_or_default().into(),
            ),
            (
                ROLLOUT.to_string(),
                t.job_executions_rollout_config()
                    .map(rollout_json)
                    .unwrap_or_default(),
            ),
            (
                ABORT.to_string(),
                t.abort_config().map(abort_json).unwrap_or_default(),
            ),
            (
                TIMEOUT.to_string(),
                t.timeout_config()
                    .and_then(|c| c.in_progress_timeout_in_minutes())
                    .map(|m| json!({ "inProgressTimeoutInMinutes": m }))
                    .unwrap_or_default(),
            ),
            (
                RETRY.to_string(),
                t.job_executions_retry_config()
                    .map(retry_json)
                    .unwrap_or_default(),
            ),
            (
                PRESIGNED.to_string(),
                t.presigned_url_config()
                    .filter(|p| p.role_arn().is_some())
                    .map(|p| json!({ "roleArn": p.role_arn(), "expiresInSec": p.expires_in_sec() }))
                    .unwrap_or_default(),
            ),
        ]);
        if let Some(fw) = self.spec().and_then(|t| t.firmware.as_ref()) {
            f.insert(
                FIRMWARE.into(),
                if live.firmware_present {
                    fw.key.clone().into()
                } else {
                    Value::Null
                },
            );
        }
        f
    }

    fn identify(&self, live: &Live) -> String {
        live.template
            .job_template_arn()
            .unwrap_or_default()
            .to_string()
    }

    fn immutable(&self) -> &'static [&'static str] {
        IMMUTABLE
    }

    fn replacement(&self, why: &Replacement) -> (String, bool) {
        match why {
            Replacement::Immutable { fields } => (
                format!(
                    "AWS cannot update a job template ({} changed): up deletes it and creates it again under the same id; jobs already started keep their document",
                    fields.join(", ")
                ),
                true,
            ),
            other => crate::engine::planning::default_replacement(false, other),
        }
    }

    async fn apply(&self, cx: &Ctx, step: Step<Live>) -> Result<Outcome, StepError> {
        let Some(t) = self.spec() else {
            return Err(StepError::Failed(format!(
                "{KIND} {:?} is not in the config",
                self.name
            )));
        };
        let record = || {
            let mut rec = Record::new(&self.key, KIND, Phase::Created, &t.id);
            rec.arn = Some(self.env.d.arn("iot", &format!("jobtemplate/{}", t.id)));
            rec.data.insert("name".into(), t.name.clone().into());
            if let Some(fw) = &t.firmware {
                rec.data
                    .insert("firmware_key".into(), fw.key.clone().into());
                rec.data
                    .insert("firmware_version".into(), fw.version.clone().into());
            }
            rec
        };
        if step.live.is_some() && step.plan.action != Action::Replace {
            // Only the firmware object can be missing: put it back.
            let updated = if step.changes(FIRMWARE) {
                self.upload().await?;
                Some(format!("{FIRMWARE} uploaded again"))
            } else {
                None
            };
            let outcome = step.outcome(updated);
            let mut rec = record();
            rec.intent_at_ms = step.record.as_ref().and_then(|r| r.intent_at_ms);
            cx.save(step.record.as_ref(), rec)?;
            return Ok(outcome);
        }
        let replacing = step.live.is_some();
        if replacing {
            self.delete(&t.id).await?;
        }
        let mut rec = cx.intent(record())?;
        self.upload().await?;
        self.create(t).await?;
        rec.phase = Phase::Created;
        cx.commit(rec)?;
        Ok(if replacing {
            Outcome::Updated("replaced".into())
        } else {
            Outcome::Created
        })
    }

    fn check_name(&self) -> &'static str {
        "jobs.template"
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(&self.key) else {
            return Ok(Outcome::Absent);
        };
        let existed = self.delete(&rec.name).await?;
        cx.forget(&self.key)?;
        Ok(Outcome::deleted_if(existed))
    }
}

impl JobTemplate {
    async fn create(&self, t: &TemplateSpec) -> Result<(), StepError> {
        let d = &self.env.d;
        let mut call = self
            .env
            .aws
            .iot
            .create_job_template()
            .job_template_id(&t.id)
            .description(&t.description)
            .document(t.document.to_string())
            .set_job_executions_rollout_config(t.rollout.as_ref().map(rollout_sdk))
            .set_abort_config(t.abort.as_ref().map(abort_sdk))
            .set_timeout_config(t.timeout.as_ref().map(|v| {
                TimeoutConfig::builder()
                    .set_in_progress_timeout_in_minutes(v["inProgressTimeoutInMinutes"].as_i64())
                    .build()
            }))
            .set_job_executions_retry_config(t.retry.as_ref().map(retry_sdk));
        if t.presigned {
            call = call.presigned_url_config(
                PresignedUrlConfig::builder()
                    .role_arn(d.jobs.role_arn(d))
                    .expires_in_sec(d.jobs.url_expires_s)
                    .build(),
            );
        }
        sdk::create(op(KIND, &t.id, "CreateJobTemplate"), call.send(), |e| {
            e.is_conflict_exception()
        })
        .await?;
        Ok(())
    }

    /// Deletes the template; false when it was already gone.
    async fn delete(&self, id: &str) -> Result<bool, StepError> {
        let deleted = sdk::find(
            op(KIND, id, "DeleteJobTemplate"),
            self.env
                .aws
                .iot
                .delete_job_template()
                .job_template_id(id)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(deleted.is_some())
    }

    async fn object_exists(&self, key: &str) -> Result<bool, StepError> {
        let bucket = &self.env.d.jobs.store.name;
        let head = sdk::find(
            op("S3 object", key, "HeadObject"),
            self.env.aws.s3.head_object().bucket(bucket).key(key).send(),
            |e| e.is_not_found(),
        )
        .await?;
        Ok(head.is_some())
    }

    /// Puts the firmware file in the bucket, unless it is there already (its key is its hash).
    async fn upload(&self) -> Result<(), StepError> {
        let Some(fw) = self.spec().and_then(|t| t.firmware.as_ref()) else {
            return Ok(());
        };
        if self.object_exists(&fw.key).await? {
            return Ok(());
        }
        // The file may have changed since the config was read: what is sent must be what the
        // document's size and SHA-256 say.
        let (size, sha256) = super::hash_file(&fw.path)
            .map_err(|e| StepError::Failed(format!("{}: {e}", fw.path.display())))?;
        if (size, sha256.as_str()) != (fw.size, fw.sha256.as_str()) {
            return Err(StepError::Failed(format!(
                "{} changed while iotreg ran (its SHA-256 is no longer the document's): run again",
                fw.path.display()
            )));
        }
        let body = aws_sdk_s3::primitives::ByteStream::from_path(&fw.path)
            .await
            .map_err(|e| StepError::Failed(format!("{}: {e}", fw.path.display())))?;
        let bucket = &self.env.d.jobs.store.name;
        sdk::send(
            op("S3 object", &fw.key, "PutObject"),
            self.env
                .aws
                .s3
                .put_object()
                .bucket(bucket)
                .key(&fw.key)
                .content_type("application/octet-stream")
                .body(body)
                .send(),
        )
        .await?;
        Ok(())
    }
}

fn rollout_sdk(v: &Value) -> JobExecutionsRolloutConfig {
    let mut b = JobExecutionsRolloutConfig::builder()
        .set_maximum_per_minute(v["maximumPerMinute"].as_i64().map(|m| m as i32));
    let e = &v["exponentialRate"];
    if e.is_object() {
        let c = &e["rateIncreaseCriteria"];
        b = b.set_exponential_rate(
            ExponentialRolloutRate::builder()
                .set_base_rate_per_minute(e["baseRatePerMinute"].as_i64().map(|m| m as i32))
                .set_increment_factor(e["incrementFactor"].as_f64())
                .rate_increase_criteria(
                    RateIncreaseCriteria::builder()
                        .set_number_of_notified_things(
                            c["numberOfNotifiedThings"].as_i64().map(|n| n as i32),
                        )
                        .set_number_of_succeeded_things(
                            c["numberOfSucceededThings"].as_i64().map(|n| n as i32),
                        )
                        .build(),
                )
                .build()
                .ok(),
        );
    }
    b.build()
}

fn rollout_json(c: &JobExecutionsRolloutConfig) -> Value {
    if let Some(e) = c.exponential_rate() {
        let criteria = e.rate_increase_criteria();
        let criteria = match (
            criteria.and_then(|c| c.number_of_notified_things()),
            criteria.and_then(|c| c.number_of_succeeded_things()),
        ) {
            (Some(n), _) => json!({ "numberOfNotifiedThings": n }),
            (None, s) => json!({ "numberOfSucceededThings": s }),
        };
        return json!({ "exponentialRate": {
            "baseRatePerMinute": e.base_rate_per_minute(),
            "incrementFactor": e.increment_factor(),
            "rateIncreaseCriteria": criteria,
        }});
    }
    match c.maximum_per_minute() {
        Some(m) => json!({ "maximumPerMinute": m }),
        None => Value::Null,
    }
}

fn abort_sdk(v: &Value) -> AbortConfig {
    let criteria = v["criteriaList"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            AbortCriteria::builder()
                .failure_type(JobExecutionFailureType::from(
                    c["failureType"].as_str().unwrap_or_default(),
                ))
                .action(AbortAction::Cancel)
                .threshold_percentage(c["thresholdPercentage"].as_f64().unwrap_or_default())
                .min_number_of_executed_things(
                    c["minNumberOfExecutedThings"].as_i64().unwrap_or(1) as i32
                )
                .build()
                .ok()
        })
        .collect();
    AbortConfig::builder()
        .set_criteria_list(Some(criteria))
        .build()
        .expect("criteria_list is set")
}

fn abort_json(c: &AbortConfig) -> Value {
    let list: Vec<Value> = c
        .criteria_list()
        .iter()
        .map(|a| {
            json!({
                "failureType": a.failure_type().as_str(),
                "action": a.action().as_str(),
                "thresholdPercentage": a.threshold_percentage(),
                "minNumberOfExecutedThings": a.min_number_of_executed_things(),
            })
        })
        .collect();
    if list.is_empty() {
        return Value::Null;
    }
    json!({ "criteriaList": list })
}

fn retry_sdk(v: &Value) -> JobExecutionsRetryConfig {
    let criteria = v["criteriaList"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            RetryCriteria::builder()
                .failure_type(RetryableFailureType::from(
                    c["failureType"].as_str().unwrap_or_default(),
                ))
                .number_of_retries(c["numberOfRetries"].as_i64().unwrap_or_default() as i32)
                .build()
                .ok()
        })
        .collect();
    JobExecutionsRetryConfig::builder()
        .set_criteria_list(Some(criteria))
        .build()
        .expect("criteria_list is set")
}

fn retry_json(c: &JobExecutionsRetryConfig) -> Value {
    let list: Vec<Value> = c
        .criteria_list()
        .iter()
        .map(|r| {
            json!({
                "failureType": r.failure_type().as_str(),
                "numberOfRetries": r.number_of_retries(),
            })
        })
        .collect();
    if list.is_empty() {
        return Value::Null;
    }
    json!({ "criteriaList": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_round_trip_through_the_sdk_types() {
        let rollout = json!({ "exponentialRate": {
            "baseRatePerMinute": 10,
            "incrementFactor": 2.0,
            "rateIncreaseCriteria": { "numberOfSucceededThings": 5 },
        }});
        assert_eq!(rollout_json(&rollout_sdk(&rollout)), rollout);
        let constant = json!({ "maximumPerMinute": 100 });
        assert_eq!(rollout_json(&rollout_sdk(&constant)), constant);
        let abort = json!({ "criteriaList": [{
            "failureType": "FAILED",
            "action": "CANCEL",
            "thresholdPercentage": 10.0,
            "minNumberOfExecutedThings": 10,
        }]});
        assert_eq!(abort_json(&abort_sdk(&abort)), abort);
        let retry =
            json!({ "criteriaList": [{ "failureType": "TIMED_OUT", "numberOfRetries": 2 }]});
        assert_eq!(retry_json(&retry_sdk(&retry)), retry);
    }
}
