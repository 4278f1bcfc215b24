//! The jobs `iotreg job start` started. Each is recorded (`job/<id>`) before CreateJob is
//! sent, so that `down` finds it even after a crash: `down` cancels a job still running
//! (CancelJob with force, so executions a device holds IN_PROGRESS end too) and deletes it
//! (DeleteJob with force), with the alarm on its failed executions, before the bucket and
//! the role its document relies on go.
//!
//! AWS (IoT API reference): DeleteJob refuses a job IN_PROGRESS unless `force` is true, and
//! "deleting a job can take time"; CancelJob on a job already COMPLETED or CANCELED answers
//! InvalidRequestException; both answer ResourceNotFoundException for an unknown id.

use std::sync::Arc;

use super::{JOBS_BUCKET, JOB_PREFIX, PRESIGN_ROLE, STARTED};
use crate::engine::{Ctx, Meta, Outcome, Resource, StepError};
use crate::plan::{Action, Planned};
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::state::Record;
use crate::verify::Check;

pub const KIND: &str = "IoT job";
/// The record's data: the alarm on the job's failed executions, when one was made.
pub const ALARM: &str = "alarm";

pub struct Started(pub Arc<Env>);

impl Started {
    /// The records of started jobs.
    pub fn records(cx: &Ctx) -> Vec<Record> {
        cx.store().read(|s| {
            s.resources
                .iter()
                .filter(|r| r.key.starts_with(JOB_PREFIX))
                .cloned()
                .collect()
        })
    }

    /// Cancels (when still running) and deletes one job, and its alarm; false when AWS had
    /// no such job any more.
    pub async fn retire(&self, rec: &Record) -> Result<bool, StepError> {
        let iot = &self.0.aws.iot;
        let id = &rec.name;
        let job = sdk::find(
            op(KIND, id, "DescribeJob"),
            iot.describe_job().job_id(id).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        let existed = job.is_some();
        if let Some(status) = job.as_ref().and_then(|j| j.job()).and_then(|j| j.status()) {
            use aws_sdk_iot::types::JobStatus;
            // Anything not finished may still reach devices: cancel it first.
            if !matches!(
                status,
                JobStatus::Completed | JobStatus::Canceled | JobStatus::DeletionInProgress
            ) {
                let cancelled = iot
                    .cancel_job()
                    .job_id(id)
                    .force(true)
                    .comment("iotreg down")
                    .send();
                crate::ratelimit::acquire("CancelJob").await;
                match cancelled.await {
                    Ok(_) => {}
                    // Finished or cancelled meanwhile: nothing left to cancel.
                    Err(e)
                        if e.as_service_error().is_some_and(|s| {
                            s.is_invalid_request_exception() || s.is_resource_not_found_exception()
                        }) => {}
                    Err(e) => return Err(crate::aws::failed(KIND, id, "CancelJob", e)),
                }
            }
        }
        if existed {
            sdk::find(
                op(KIND, id, "DeleteJob"),
                iot.delete_job().job_id(id).force(true).send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
        }
        if let Some(alarm) = rec.data_str(ALARM) {
            crate::resources::alarm::delete_alarm(&self.0.aws.cloudwatch, alarm).await?;
        }
        Ok(existed)
    }
}

impl Meta for Started {
    fn key(&self) -> &str {
        STARTED
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        "started jobs".into()
    }
    /// Destroyed first: before the devices its jobs run on (a deleted thing's execution is
    /// REMOVED, which would end the job unseen) and the bucket and role its documents rely on.
    fn depends_on(&self) -> &[&'static str] {
        &[
            JOBS_BUCKET,
            PRESIGN_ROLE,
            crate::resources::THING,
            crate::resources::FLEET,
            crate::resources::THING_GROUP,
        ]
    }
    fn delete_note(&self) -> String {
        "jobs started by `iotreg job start`".into()
    }
}

#[async_trait::async_trait]
impl Resource for Started {
    async fn plan(&self, cx: &Ctx, _read_live: bool) -> Result<Planned, StepError> {
        let n = Self::records(cx).len();
        let mut p = Planned::new(STARTED, KIND, &self.name(), Action::Delete);
        p.note = Some(format!("{n} job(s) started by `iotreg job start`"));
        Ok(p)
    }

    /// Jobs are started by `iotreg job start`, never by `up`.
    async fn ensure(&self, _cx: &Ctx) -> Result<Outcome, StepError> {
        Ok(Outcome::Unchanged)
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let records = Self::records(cx);
        if records.is_empty() {
            return Ok(Outcome::Absent);
        }
        let mut existed = false;
        for rec in &records {
            cx.progress(&format!("cancelling and deleting job {}", rec.name));
            existed |= self.retire(rec).await?;
            cx.forget(&rec.key)?;
        }
        Ok(Outcome::deleted_if(existed))
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        Ok(None)
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        vec![]
    }
}
