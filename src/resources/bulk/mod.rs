//! Bulk registration (`fleet.mode = "bulk"`): a fleet's new devices are registered server-side
//! by one StartThingRegistrationTask instead of five API calls per device, each device then
//! recorded exactly as the per-device path records it (thing, certificate with its public key
//! fingerprint, policy attachment, thing attachment, applied settings), so `verify`, `down`,
//! `device …` and a later `up` work on it unchanged. Devices already recorded go through the
//! per-device path as before (reads only when all is in place).
//!
//! What AWS does (AWS IoT developer guide, "Bulk registration"
//! docs.aws.amazon.com/iot/latest/developerguide/bulk-provisioning.html, and "Provisioning
//! templates" …/provision-template.html; API reference StartThingRegistrationTask,
//! DescribeThingRegistrationTask, ListThingRegistrationTasks,
//! ListThingRegistrationTaskReports):
//! * StartThingRegistrationTask takes a provisioning template body, an S3 bucket and key, and
//!   a role ARN that lets AWS IoT read that object (trusted by iot.amazonaws.com, with the
//!   managed policy `AWSIoTThingsRegistration`). The object is newline-delimited JSON, one
//!   line of parameter values per device.
//! * Only one bulk registration task runs at a time per account.
//! * DescribeThingRegistrationTask gives `status` (InProgress, Completed, Failed, Cancelled,
//!   Cancelling), `successCount`, `failureCount`, `percentageProgress`, `message`,
//!   `inputFileBucket` and `inputFileKey`; ListThingRegistrationTasks lists task ids, by
//!   status if asked.
//! * ListThingRegistrationTaskReports (reportType RESULTS or ERRORS) gives `resourceLinks`,
//!   links to JSON-lines files (see [`report`] for their lines).
//! * Template: `AWS::IoT::Thing` (ThingName, AttributePayload, ThingTypeName, ThingGroups,
//!   OverrideSettings DO_NOTHING | REPLACE | FAIL | MERGE for an existing thing),
//!   `AWS::IoT::Certificate` (CertificateSigningRequest, Status ACTIVE),
//!   `AWS::IoT::Policy` (PolicyName of an existing policy): the certificate is attached to
//!   the thing and the policy to the certificate.
//! * The task's calls count against the account's IoT quotas like any other.
//!
//! What iotreg does, and where it had to choose:
//! * One template per set of attribute names (a template's AttributePayload names its
//!   attributes; a device whose row leaves a cell empty has another set): the groups run as
//!   one task each, one after another (one task per account). Parameters: `ThingName`, `CSR`
//!   and `A0`, `A1`, … for the attribute values in the group's name order.
//! * The thing's OverrideSettings are FAIL: a same-named thing this deployment did not make is
//!   never taken over (as the per-device path refuses it); that device fails with AWS's code
//!   and stays retryable.
//! * Before anything is sent, every device's key is on disk (0600) and its intents (thing,
//!   and certificate with the key's fingerprint and the input key) are in the state; the
//!   input key and template are recorded (`bulk_task`) before the object is uploaded and the
//!   task started. A killed `up` finds its task again by that input key (the task id is
//!   recorded too once known, but the start call's answer may have been lost), waits for it
//!   and reads its reports instead of starting another; if no task has that input, the task
//!   was never started and it is started now.
//! * A task in progress whose input is not one of ours is another deployment's (or
//!   someone's): `up` stops with its id and start time, starting nothing.
//! * A new role may not be assumable at once (IAM propagation): an InvalidRequestException
//!   from StartThingRegistrationTask naming the role is retried for two minutes, like
//!   CreateFunction's (guessed: the exact message AWS gives is not documented).
//! * Each returned certificate is checked to carry its device's public key before it is
//!   written next to the key and recorded; a certificate for another key is deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_iot::types::{CertificateStatus, ReportType, Status as TaskStatus};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::certificate::KEY_ON_DEVICE;
use super::sdk::{self, op};
use super::{
    policy_attachment, thing_group, thing_principal, Deployment, Env, RoleSpec, CERTIFICATE,
    SHADOW, THING,
};
use crate::engine::{Ctx, Meta, Outcome, Resource, Silent, StepError};
use crate::keys::{self, DeviceKey, KeyFiles};
use crate::manifest::Device;
use crate::plan::Fields;
use crate::state::{Phase, Record};

pub mod report;
#[cfg(test)]
mod tests;

/// The bulk input's bucket.
pub const BUCKET: crate::resources::bucket::Slot = crate::resources::bucket::Slot {
    key: BULK_BUCKET,
    check: "bulk.bucket",
    field: "fleet.bulk_bucket",
    delete_note: "fleet.mode is no longer \"bulk\"",
    expiry_field: "expire_input_after_days",
    rule_id: "iotreg-bulk-input-expiry",
    forget_with: &[BULK_TASK],
    spec: |d| &d.bulk.store,
};

pub const BULK_ROLE: &str = "bulk_role";
pub const BULK_BUCKET: &str = "bulk_bucket";
/// The bulk runs in flight: their input keys, templates and task ids (a top-level record).
pub const BULK_TASK: &str = "bulk_task";
/// Days after which the bucket's lifecycle rule deletes an input object. A resumed `up` finds
/// its task by the input key and re-reads it for the device order, so the object must outlive
/// any reasonable pause between a killed run and the next (a long weekend); it holds only
/// CSRs and attributes, but nothing needs it once the devices are recorded, and `down`
/// deletes it anyway.
pub const EXPIRE_DAYS: i32 = 7;
const KIND: &str = "bulk registration";
const FINGERPRINT: &str = "public_key_sha256";
/// On a certificate intent: the input object the device is in.
const INPUT: &str = "bulk_input";
/// A report link's GET.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// What the deployment says about bulk registration (present whatever the mode, so that a
/// role and bucket left from an earlier bulk run are known to `down`).
#[derive(Debug, Clone)]
pub struct BulkSpec {
    /// `fleet.mode = "bulk"`.
    pub enabled: bool,
    /// The input's bucket (`fleet.bulk_bucket`, or iotreg's own).
    pub store: crate::resources::bucket::BucketSpec,
    pub role: RoleSpec,
    /// The first wait between two DescribeThingRegistrationTask calls (doubling to 10 s).
    pub poll: Duration,
}

impl BulkSpec {
    pub fn new(
        enabled: bool,
        bucket: Option<&str>,
        suffix: &str,
        region: &str,
        account: &str,
        partition: &str,
    ) -> BulkSpec {
        BulkSpec {
            enabled,
            store: crate::resources::bucket::BucketSpec {
                // At most 9 + 12 + 1 + 14 + 1 + 6 = 43 characters, within S3's 63.
                name: bucket
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("iotreg-{account}-{region}-{suffix}")),
                own: bucket.is_none(),
                prefix: format!("iotreg-bulk/{suffix}/"),
                expire_days: Some(EXPIRE_DAYS),
            },
            role: RoleSpec {
                name: format!("iotreg-bulk-registration-{suffix}"),
                trust_policy: json!({
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": {"Service": "iot.amazonaws.com"},
                        "Action": "sts:AssumeRole"
                    }]
                }),
                managed_policies: vec![format!(
                    "arn:{partition}:iam::aws:policy/service-role/AWSIoTThingsRegistration"
                )],
                inline_policy: None,
            },
            poll: Duration::from_millis(500),
        }
    }
}

/// Whether the deployment registers its fleet in bulk (its role and bucket are wanted).
pub fn wanted(d: &Deployment) -> bool {
    d.bulk.enabled && d.fleet.is_some()
}

/// One bulk run in flight, as recorded before its task starts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Pending {
    input_key: String,
    template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_id: Option<String>,
}

/// How each device handled here went: Created, or AWS's code and message.
pub type Results = BTreeMap<String, Result<Outcome, String>>;

/// Registers in bulk the devices of `devices` that have no records yet (or only a bulk
/// intent), after finishing any run a killed `up` left; returns how each device handled here
/// went. The others are left to the per-device path.
pub async fn register(
    env: &Arc<Env>,
    cx: &Ctx,
    devices: &[Device],
    concurrency: usize,
) -> Result<Results, StepError> {
    let run = Run {
        env: env.clone(),
        cx,
        concurrency,
    };
    let pending = run.pending();
    let fresh: Vec<&Device> = devices.iter().filter(|d| run.is_candidate(d)).collect();
    if pending.is_empty() && fresh.is_empty() {
        return Ok(Results::new());
    }
    let ours: Vec<String> = pending.iter().map(|p| p.input_key.clone()).collect();
    run.refuse_foreign(&ours).await?;
    let by_name: BTreeMap<&str, &Device> =
        devices.iter().map(|d| (d.thing_name.as_str(), d)).collect();
    let mut results = Results::new();
    for p in pending {
        run.finish(p, &by_name, &mut results).await?;
    }
    // What is left: devices never sent, and those whose recorded run was never started.
    let mut groups: BTreeMap<Vec<String>, Vec<&Device>> = BTreeMap::new();
    for d in devices {
        if !results.contains_key(&d.thing_name) && run.is_candidate(d) {
            groups
                .entry(d.attributes.keys().cloned().collect())
                .or_default()
                .push(d);
        }
    }
    for (names, group) in groups {
        if cx.cancelled() {
            break;
        }
        let p = run.prepare(&names, &group, &mut results).await?;
        if let Some(p) = p {
            run.finish(p, &by_name, &mut results).await?;
        }
    }
    Ok(results)
}

struct Run<'a> {
    env: Arc<Env>,
    cx: &'a Ctx,
    concurrency: usize,
}

impl Run<'_> {
    fn d(&self) -> &Deployment {
        &self.env.d
    }

    fn pending(&self) -> Vec<Pending> {
        self.cx
            .record(BULK_TASK)
            .and_then(|r| r.data.get("runs").cloned())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    /// Rewrites the record of runs in flight (durably: a resume depends on it).
    fn set_pending(&self, runs: &[Pending]) -> Result<(), StepError> {
        if runs.is_empty() {
            return self.cx.forget(BULK_TASK);
        }
        let mut rec = Record::new(BULK_TASK, KIND, Phase::Intent, "runs in flight");
        rec.data.insert("runs".into(), json!(runs));
        self.cx.intent(rec)?;
        Ok(())
    }

    /// A device this run registers: nothing recorded, or only what a bulk run recorded
    /// before sending it (its intents).
    fn is_candidate(&self, d: &Device) -> bool {
        self.cx
            .store()
            .read(|s| match s.devices.get(&d.thing_name) {
                None => true,
                Some(e) => {
                    e.records.iter().all(|r| r.phase == Phase::Intent)
                        && e.get(CERTIFICATE)
                            .is_some_and(|c| c.data.contains_key(INPUT))
                }
            })
    }

    fn device_cx(&self, name: &str) -> Ctx {
        self.cx.for_device(name, Arc::new(Silent))
    }

    /// Stops (an error, nothing started) when a task in progress is not one of ours.
    async fn refuse_foreign(&self, ours: &[String]) -> Result<(), StepError> {
        let iot = &self.env.aws.iot;
        let bucket = &self.d().bulk.store.name;
        let mut next: Option<String> = None;
        loop {
            let page = sdk::send(
                op(KIND, bucket, "ListThingRegistrationTasks"),
                iot.list_thing_registration_tasks()
                    .status(TaskStatus::InProgress)
                    .set_next_token(next.clone())
                    .send(),
            )
            .await?;
            for id in page.task_ids() {
                let t = self.describe(id).await?;
                // It may have ended between the list and the describe.
                let running = matches!(
                    t.status(),
                    Some(TaskStatus::InProgress | TaskStatus::Cancelling)
                );
                let mine = t.input_file_bucket() == Some(bucket.as_str())
                    && t.input_file_key()
                        .is_some_and(|k| ours.iter().any(|o| o == k));
                if running && !mine {
                    let started = t
                        .creation_date()
                        .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                        .unwrap_or_else(|| "at an unknown time".into());
                    return Err(StepError::Failed(format!(
                        "bulk registration task {id} (started {started}, input s3://{}/{}) is in progress in this account and is not this deployment's; AWS runs one at a time per account. Nothing was started: wait for it to finish (or stop it: aws iot stop-thing-registration-task --task-id {id}), then run `iotreg up` again",
                        t.input_file_bucket().unwrap_or("?"),
                        t.input_file_key().unwrap_or("?"),
                    )));
                }
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                return Ok(());
            }
        }
    }

    async fn describe(
        &self,
        id: &str,
    ) -> Result<aws_sdk_iot::operation::describe_thing_registration_task::DescribeThingRegistrationTaskOutput, StepError>
    {
        sdk::send(
            op(KIND, id, "DescribeThingRegistrationTask"),
            self.env
                .aws
                .iot
                .describe_thing_registration_task()
                .task_id(id)
                .send(),
        )
        .await
    }

    /// The task whose input is `key` in our bucket, by its recorded id or else by a search of
    /// every task the account lists.
    async fn find_task(&self, p: &Pending) -> Result<Option<String>, StepError> {
        if let Some(id) = &p.task_id {
            return Ok(Some(id.clone()));
        }
        let iot = &self.env.aws.iot;
        let bucket = &self.d().bulk.store.name;
        let mut next: Option<String> = None;
        loop {
            let page = sdk::send(
                op(KIND, &p.input_key, "ListThingRegistrationTasks"),
                iot.list_thing_registration_tasks()
                    .set_next_token(next.clone())
                    .send(),
            )
            .await?;
            for id in page.task_ids() {
                let t = self.describe(id).await?;
                if t.input_file_bucket() == Some(bucket.as_str())
                    && t.input_file_key() == Some(p.input_key.as_str())
                {
                    return Ok(Some(id.clone()));
                }
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                return Ok(None);
            }
        }
    }

    /// Makes the group's keys and intents, records the run, uploads its input. None when
    /// no device of the group could be prepared (each failure is in `results`).
    async fn prepare(
        &self,
        names: &[String],
        group: &[&Device],
        results: &mut Results,
    ) -> Result<Option<Pending>, StepError> {
        let d = self.d();
        let input_key = format!(
            "{}{}-{}/input.jsonl",
            d.bulk.store.prefix,
            crate::state::now_ms(),
            crate::deployment::generate_suffix()
        );
        let template = template(d, names).to_string();
        let mut lines = String::new();
        let mut sent = 0;
        for dev in group {
            match self.intend(dev, &input_key) {
                Ok(csr) => {
                    let mut line = serde_json::Map::new();
                    line.insert("ThingName".into(), dev.thing_name.clone().into());
                    line.insert("CSR".into(), csr.into());
                    for (i, n) in names.iter().enumerate() {
                        line.insert(format!("A{i}"), dev.attributes[n].clone().into());
                    }
                    lines.push_str(&Value::Object(line).to_string());
                    lines.push('\n');
                    sent += 1;
                }
                Err(e) => {
                    results.insert(dev.thing_name.clone(), Err(e));
                }
            }
        }
        if sent == 0 {
            return Ok(None);
        }
        let p = Pending {
            input_key: input_key.clone(),
            template,
            task_id: None,
        };
        let mut runs = self.pending();
        runs.push(p.clone());
        self.set_pending(&runs)?;
        sdk::send(
            op(KIND, &input_key, "PutObject"),
            self.env
                .aws
                .s3
                .put_object()
                .bucket(&d.bulk.store.name)
                .key(&input_key)
                .content_type("application/x-ndjson")
                .body(lines.into_bytes().into())
                .send(),
        )
        .await?;
        Ok(Some(p))
    }

    /// The device's CSR, from its own key (made now, or the one its earlier intent names)
    /// or the manifest's `csr` (then no key is made here), and its intents, on disk before
    /// anything is sent.
    fn intend(&self, dev: &Device, input_key: &str) -> Result<String, String> {
        let d = self.d();
        let name = &dev.thing_name;
        let dcx = self.device_cx(name);
        let (fingerprint, csr) = match &dev.csr {
            Some(csr) => (csr.fingerprint.clone(), csr.pem.clone()),
            None => {
                let files = KeyFiles::for_thing(&d.certificate.key_dir, name);
                crate::state::ensure_private_dir(&d.certificate.key_dir)
                    .map_err(|e| format!("{}: {e}", d.certificate.key_dir.display()))?;
                let wanted = dcx
                    .record(CERTIFICATE)
                    .and_then(|r| r.data_str(FINGERPRINT).map(str::to_string));
                let key = match (wanted, DeviceKey::load(&files.private_key).ok()) {
                    (Some(fp), Some(k)) if k.fingerprint() == fp => k,
                    _ => {
                        let k = DeviceKey::generate().map_err(|e| e.to_string())?;
                        keys::write_private(&files.private_key, &k.private_pem(), 0o600)
                            .map_err(|e| e.to_string())?;
                        keys::write_private(&files.public_key, &k.public_pem(), 0o644)
                            .map_err(|e| e.to_string())?;
                        k
                    }
                };
                (
                    key.fingerprint(),
                    key.csr_pem(name).map_err(|e| e.to_string())?,
                )
            }
        };
        if dcx.record(THING).is_none() {
            dcx.intent(Record::new(THING, "thing", Phase::Intent, name))
                .map_err(|e| e.to_string())?;
        }
        let mut rec = Record::new(CERTIFICATE, "certificate", Phase::Intent, "pending");
        rec.data.insert(FINGERPRINT.into(), fingerprint.into());
        if dev.csr.is_some() {
            rec.data.insert(KEY_ON_DEVICE.into(), true.into());
        }
        rec.data.insert(INPUT.into(), input_key.into());
        dcx.intent(rec).map_err(|e| e.to_string())?;
        Ok(csr)
    }

    /// Starts the run's task unless it exists, waits for it, reads its reports and records
    /// its devices; then the run is no longer in flight.
    async fn finish(
        &self,
        mut p: Pending,
        devices: &BTreeMap<&str, &Device>,
        results: &mut Results,
    ) -> Result<(), StepError> {
        let Some(input) = self.input_names(&p.input_key).await? else {
            // Recorded but never uploaded: never started either. Its devices' intents remain;
            // they go into a new run.
            self.drop_pending(&p.input_key)?;
            return Ok(());
        };
        let id = match self.find_task(&p).await? {
            Some(id) => id,
            None => {
                self.refuse_foreign(std::slice::from_ref(&p.input_key))
                    .await?;
                self.start(&p).await?
            }
        };
        if p.task_id.as_deref() != Some(id.as_str()) {
            p.task_id = Some(id.clone());
            let runs: Vec<Pending> = self
                .pending()
                .into_iter()
                .map(|r| {
                    if r.input_key == p.input_key {
                        p.clone()
                    } else {
                        r
                    }
                })
                .collect();
            self.set_pending(&runs)?;
        }
        let task = self.wait(&id, input.len()).await?;
        let (registered, failures, problems) = self.reports(&id, &input).await?;
        // Devices finish concurrently: a DescribeThing each, the records, the shadow.
        let done: Vec<(String, Result<Outcome, String>)> = stream::iter(registered)
            .map(|r| async move {
                let name = r.thing.clone();
                let outcome = match devices.get(name.as_str()) {
                    Some(dev) => self.record_device(dev, r).await,
                    None => Err("registered, but no longer in the manifest".to_string()),
                };
                (name, outcome)
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        for (name, outcome) in done {
            results.insert(name, outcome);
        }
        for f in failures {
            // Each by name: the fleet's summary names only the first failure.
            self.cx
                .progress(&format!("{} failed: {}: {}", f.thing, f.code, f.message));
            results.insert(f.thing, Err(format!("{}: {}", f.code, f.message)));
        }
        let why = format!(
            "not in task {id}'s reports (status {}{}{})",
            task.status().map(|s| s.as_str()).unwrap_or("unknown"),
            task.message()
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default(),
            if problems.is_empty() {
                String::new()
            } else {
                format!("; {}", problems.join("; "))
            }
        );
        for name in &input {
            results
                .entry(name.clone())
                .or_insert_with(|| Err(why.clone()));
        }
        self.drop_pending(&p.input_key)
    }

    fn drop_pending(&self, key: &str) -> Result<(), StepError> {
        let runs: Vec<Pending> = self
            .pending()
            .into_iter()
            .filter(|r| r.input_key != key)
            .collect();
        self.set_pending(&runs)
    }

    /// The input's thing names in line order (a report's `offset`), or None when the object
    /// is not there.
    async fn input_names(&self, key: &str) -> Result<Option<Vec<String>>, StepError> {
        let bucket = &self.d().bulk.store.name;
        let got = sdk::find(
            op(KIND, key, "GetObject"),
            self.env.aws.s3.get_object().bucket(bucket).key(key).send(),
            |e| e.is_no_such_key(),
        )
        .await?;
        let Some(got) = got else {
            return Ok(None);
        };
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| StepError::Failed(format!("{KIND}: reading s3://{bucket}/{key}: {e}")))?
            .into_bytes();
        Ok(Some(
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str::<Value>(l)
                        .ok()
                        .and_then(|v| v["ThingName"].as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .collect(),
        ))
    }

    async fn start(&self, p: &Pending) -> Result<String, StepError> {
        let d = self.d();
        let role_arn = self
            .cx
            .record(BULK_ROLE)
            .and_then(|r| r.arn)
            .ok_or_else(|| StepError::Failed(format!("{KIND}: the role's ARN is not recorded")))?;
        let mut delays = d.iam_retry.delays();
        loop {
            crate::ratelimit::acquire("StartThingRegistrationTask").await;
            let sent = self
                .env
                .aws
                .iot
                .start_thing_registration_task()
                .template_body(&p.template)
                .input_file_bucket(&d.bulk.store.name)
                .input_file_key(&p.input_key)
                .role_arn(&role_arn)
                .send()
                .await;
            match sent {
                Ok(out) => {
                    return out.task_id.ok_or_else(|| {
                        StepError::Failed(format!(
                            "{KIND}: StartThingRegistrationTask returned no task id"
                        ))
                    })
                }
                Err(e)
                    if e.as_service_error().is_some_and(|s| {
                        s.is_invalid_request_exception()
                            && s.message()
                                .is_some_and(|m| m.to_lowercase().contains("role"))
                    }) =>
                {
                    let Some(delay) = delays.next() else {
                        return Err(crate::aws::failed(
                            KIND,
                            &p.input_key,
                            "StartThingRegistrationTask",
                            e,
                        ));
                    };
                    self.cx
                        .progress("waiting for the new role to be assumable by AWS IoT");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(crate::aws::failed(
                        KIND,
                        &p.input_key,
                        "StartThingRegistrationTask",
                        e,
                    ))
                }
            }
        }
    }

    /// Polls the task until it is over, with a progress line.
    async fn wait(
        &self,
        id: &str,
        total: usize,
    ) -> Result<aws_sdk_iot::operation::describe_thing_registration_task::DescribeThingRegistrationTaskOutput, StepError>
    {
        let started = Instant::now();
        let mut delay = self.d().bulk.poll;
        loop {
            let t = self.describe(id).await?;
            let status = t.status().cloned().unwrap_or(TaskStatus::InProgress);
            self.cx.progress(&format!(
                "{}/{total} registered, {} failed ({}%), task {id} {}, {:.0}s",
                t.success_count(),
                t.failure_count(),
                t.percentage_progress(),
                status.as_str(),
                started.elapsed().as_secs_f64()
            ));
            if matches!(
                status,
                TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
            ) {
                return Ok(t);
            }
            if self.cx.cancelled() {
                return Err(StepError::Failed(format!(
                    "interrupted while bulk registration task {id} runs; the next `iotreg up` waits for it and records its devices"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn reports(
        &self,
        id: &str,
        input: &[String],
    ) -> Result<(Vec<report::Registered>, Vec<report::Failure>, Vec<String>), StepError> {
        let mut registered = Vec::new();
        let mut failures = Vec::new();
        let mut problems = Vec::new();
        for kind in [ReportType::Results, ReportType::Errors] {
            let mut next: Option<String> = None;
            loop {
                let page = sdk::send(
                    op(KIND, id, "ListThingRegistrationTaskReports"),
                    self.env
                        .aws
                        .iot
                        .list_thing_registration_task_reports()
                        .task_id(id)
                        .report_type(kind.clone())
                        .set_next_token(next.clone())
                        .send(),
                )
                .await?;
                for link in page.resource_links() {
                    let text = report::fetch(link, FETCH_TIMEOUT)
                        .await
                        .map_err(|e| StepError::Failed(format!("{KIND} task {id}: {e}")))?;
                    if kind == ReportType::Results {
                        let (ok, bad) = report::results(&text, input);
                        registered.extend(ok);
                        problems.extend(bad);
                    } else {
                        failures.extend(report::errors(&text, input));
                    }
                }
                next = page.next_token().map(str::to_string);
                if next.is_none() {
                    break;
                }
            }
        }
        Ok((registered, failures, problems))
    }

    /// Records a registered device as the per-device path would have, after checking its
    /// certificate is for its key; then initialises its shadow.
    async fn record_device(&self, dev: &Device, r: report::Registered) -> Result<Outcome, String> {
        let d = self.d();
        let name = &dev.thing_name;
        let dcx = self.device_cx(name);
        let cert_intent = dcx
            .record(CERTIFICATE)
            .ok_or("registered, but its certificate intent is gone from the state")?;
        let expected = cert_intent.data_str(FINGERPRINT).unwrap_or_default();
        let got =
            keys::certificate_key_fingerprint(&r.certificate_pem).map_err(|e| e.to_string())?;
        if got != expected {
            self.delete_stray_certificate(&r).await?;
            return Err(format!(
                "the task issued certificate {} for another public key than the CSR's (deleted it)",
                r.certificate_id
            ));
        }
        let files = KeyFiles::for_thing(&d.certificate.key_dir, name);
        crate::state::ensure_private_dir(&d.certificate.key_dir)
            .map_err(|e| format!("{}: {e}", d.certificate.key_dir.display()))?;
        keys::write_private(&files.certificate, &r.certificate_pem, 0o644)
            .map_err(|e| e.to_string())?;
        let thing = sdk::send(
            op("thing", name, "DescribeThing"),
            self.env.aws.iot.describe_thing().thing_name(name).send(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut thing_rec = dcx
            .record(THING)
            .unwrap_or_else(|| Record::new(THING, "thing", Phase::Intent, name));
        thing_rec.phase = Phase::Created;
        thing_rec.arn = thing.thing_arn().map(str::to_string).or(Some(r.thing_arn));
        thing_rec.id = thing.thing_id().map(str::to_string);
        let mut thing_fields = Fields::new();
        thing_fields.insert(
            "thing_type".into(),
            thing.thing_type_name().unwrap_or_default().into(),
        );
        for (k, v) in thing.attributes().into_iter().flatten() {
            thing_fields.insert(format!("attributes.{k}"), v.clone().into());
        }
        let mut cert_rec = cert_intent;
        cert_rec.phase = Phase::Created;
        cert_rec.name = r.certificate_id.clone();
        cert_rec.id = Some(r.certificate_id.clone());
        cert_rec.arn = Some(r.certificate_arn.clone());
        cert_rec.data.remove(INPUT);
        // The device's own steps name its records: the same names and kinds as theirs.
        let env = Arc::new(Env::new(
            self.env.aws.clone(),
            super::fleet::device_deployment(d, name, dev.attributes.clone(), dev.csr.clone()),
        ));
        let link = |step: &dyn Meta| {
            let mut rec = Record::new(step.key(), step.kind(), Phase::Created, step.name());
            rec.data
                .insert("certificate_arn".into(), r.certificate_arn.clone().into());
            rec
        };
        let mut links = vec![link(&thing_principal::new(env.clone()))];
        // With the policy on the group, no certificate has it attached.
        let group_policy = d.group.as_ref().is_some_and(|g| g.policy);
        if !group_policy {
            links.push(link(&policy_attachment::new(env.clone())));
        }
        let membership = d.group.as_ref().map(|g| {
            let step = thing_group::Membership(env.clone());
            let mut rec = Record::new(step.key(), step.kind(), Phase::Created, step.name());
            // The group it joined, as the membership step records it.
            rec.id = Some(g.name.clone());
            rec
        });
        // What the certificate step wants of it, as that step would have recorded it.
        let mut status = Fields::from([(
            "status".to_string(),
            CertificateStatus::Active.as_str().into(),
        )]);
        if let Some(csr) = &dev.csr {
            status.insert(FINGERPRINT.into(), csr.fingerprint.clone().into());
        }
        self.cx
            .store()
            .update_device(name, false, |e| {
                e.put(thing_rec);
                e.put(cert_rec);
                e.applied.insert(THING.into(), thing_fields);
                e.applied.insert(CERTIFICATE.into(), status);
                for rec in links.into_iter().chain(membership) {
                    e.applied.insert(rec.key.clone(), Fields::new());
                    e.put(rec);
                }
            })
            .map_err(|e| e.to_string())?;
        if d.shadow.is_some() {
            let shadow = super::shadow::Shadow(env);
            debug_assert_eq!(shadow.key(), SHADOW);
            shadow.ensure(&dcx).await.map_err(|e| e.to_string())?;
        }
        Ok(Outcome::Created)
    }

    /// A certificate issued for a key that is not the device's: useless without its private
    /// key, which nobody has. Detached and deleted rather than left ACTIVE.
    async fn delete_stray_certificate(&self, r: &report::Registered) -> Result<(), String> {
        let iot = &self.env.aws.iot;
        let id = &r.certificate_id;
        let arn = &r.certificate_arn;
        let e = |e: StepError| e.to_string();
        sdk::send(
            op("certificate", id, "UpdateCertificate"),
            iot.update_certificate()
                .certificate_id(id)
                .new_status(CertificateStatus::Inactive)
                .send(),
        )
        .await
        .map_err(e)?;
        sdk::find(
            op("certificate", id, "DetachThingPrincipal"),
            iot.detach_thing_principal()
                .thing_name(&r.thing)
                .principal(arn)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await
        .map_err(e)?;
        sdk::find_by_code(
            op("certificate", id, "DetachPolicy"),
            iot.detach_policy()
                .policy_name(&self.d().policy.name)
                .target(arn)
                .send(),
            "ResourceNotFoundException",
        )
        .await
        .map_err(e)?;
        sdk::send(
            op("certificate", id, "DeleteCertificate"),
            iot.delete_certificate().certificate_id(id).send(),
        )
        .await
        .map_err(e)?;
        Ok(())
    }
}

/// The provisioning template for devices with the attribute names `names` (sorted): the
/// thing with its type and attributes (and in `fleet.group`), the certificate ACTIVE from the
/// CSR, the deployment's device policy by name (unless the group carries it).
pub fn template(d: &Deployment, names: &[String]) -> Value {
    let mut parameters = serde_json::Map::new();
    parameters.insert("ThingName".into(), json!({"Type": "String"}));
    parameters.insert("CSR".into(), json!({"Type": "String"}));
    let mut attributes = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        parameters.insert(format!("A{i}"), json!({"Type": "String"}));
        attributes.insert(n.clone(), json!({"Ref": format!("A{i}")}));
    }
    let mut thing = json!({
        "Type": "AWS::IoT::Thing",
        "OverrideSettings": {
            "AttributePayload": "FAIL",
            "ThingTypeName": "FAIL",
            "ThingGroups": "FAIL"
        },
        "Properties": {
            "ThingName": {"Ref": "ThingName"},
            "ThingTypeName": d.thing_type.name,
            "AttributePayload": attributes
        }
    });
    if let Some(g) = &d.group {
        thing["Properties"]["ThingGroups"] = json!([g.name]);
    }
    let mut resources = serde_json::Map::new();
    resources.insert("thing".into(), thing);
    resources.insert(
        "certificate".into(),
        json!({
            "Type": "AWS::IoT::Certificate",
            "Properties": {
                "CertificateSigningRequest": {"Ref": "CSR"},
                "Status": "ACTIVE"
            }
        }),
    );
    // With `policy.attach_to = "group"` the group carries the policy: none on the certificate.
    if !d.group.as_ref().is_some_and(|g| g.policy) {
        resources.insert(
            "policy".into(),
            json!({
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyName": d.policy.name}
            }),
        );
    }
    json!({"Parameters": parameters, "Resources": resources})
}
