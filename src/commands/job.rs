//! `iotreg job …`: start a job from a job template or a configuration change, follow its
//! rollout, cancel it, list the deployment's jobs.
//!
//! A started job is recorded (`job/<id>`) before CreateJob is sent, under the state's lock,
//! so that `down` cancels and deletes it whatever happened after. Reading a job takes no lock.
//!
//! AWS (IoT API reference, CreateJob): targets are thing and thing-group ARNs, at most 100
//! (the AWS IoT Jobs quotas); `targetSelection = CONTINUOUS` keeps the job open for things
//! added to a target group later, so it needs a group among the targets; a job made from a
//! template (`jobTemplateArn`) takes its document, rollout, abort, timeout, retry and
//! pre-signed URL configurations from it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use aws_sdk_iot::types::{Job, JobStatus, TargetSelection};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;

use super::{preflight_deployed, report, ExitStatus, Needs, Summary, Verdict};
use crate::aws::{self, Clients};
use crate::deployment::deployment;
use crate::engine::Ctx;
use crate::output::Progress;
use crate::resources::jobs::{self, started, JOB_PREFIX, TEMPLATE_PREFIX};
use crate::resources::{self, Deployment};
use crate::settings::{BadInput, JobAction, Settings};
use crate::state::{Phase, Record, State};

/// CreateJob's most targets (things and groups).
const MAX_TARGETS: usize = 100;
/// Shadows read at once by `job status`.
const SHADOW_READS: usize = 16;

pub async fn run(
    settings: &Settings,
    progress: Arc<Progress>,
    action: &JobAction,
) -> Result<ExitStatus> {
    match action {
        JobAction::Start {
            template,
            targets,
            set,
            continuous,
            job_id,
        } => {
            start(
                settings,
                &progress,
                template.as_deref(),
                targets,
                set,
                *continuous,
                job_id.as_deref(),
            )
            .await
        }
        JobAction::Status {
            id,
            watch,
            interval,
            timeout,
            reported,
        } => {
            let watch = watch.then_some(Watch {
                interval: *interval,
                timeout: *timeout,
            });
            status(settings, &progress, id, watch, *reported).await
        }
        JobAction::Cancel { id, force } => cancel(settings, &progress, id, *force).await,
        JobAction::List => list(settings, &progress).await,
    }
}

/// The deployment a job command works on: the state, its clients, the resolved deployment.
struct Deployed {
    clients: Clients,
    state: State,
    d: Deployment,
    session: super::Session,
}

async fn deployed(settings: &Settings, progress: &Progress, lock: bool) -> Result<Deployed> {
    let needs = Needs {
        lock,
        pinned_suffix: false,
    };
    let Some((session, state)) = preflight_deployed(settings, needs, progress).await? else {
        return Err(BadInput(format!(
            "nothing deployed: {} does not exist; run `iotreg up` first",
            settings.state
        ))
        .into());
    };
    let d = deployment(
        settings,
        &state.suffix,
        &session.region,
        &session.account,
        false,
    )?;
    Ok(Deployed {
        clients: session.clients.clone(),
        state,
        d,
        session,
    })
}

/// The devices the state records: the single thing, or the fleet's.
fn devices(state: &State) -> Vec<String> {
    let mut out: Vec<String> = state
        .get(resources::THING)
        .map(|r| r.name.clone())
        .into_iter()
        .collect();
    out.extend(state.devices.keys().cloned());
    out
}

/// `--targets` as ARNs: `group` is the fleet's thing group, anything else a recorded device.
fn target_arns(d: &Deployment, state: &State, targets: &[String]) -> Result<Vec<String>, BadInput> {
    let group_arn = |d: &Deployment| {
        d.group
            .as_ref()
            .map(|g| d.arn("iot", &format!("thinggroup/{}", g.name)))
            .ok_or_else(|| BadInput("--targets group: the config sets no fleet.group".into()))
    };
    let known = devices(state);
    let thing_arn = |t: &str| -> Result<String, BadInput> {
        if !known.iter().any(|k| k == t) {
            return Err(BadInput(format!(
                "--targets: {t:?} is not a device of this deployment (the state records {} device(s))",
                known.len()
            )));
        }
        Ok(d.arn("iot", &format!("thing/{t}")))
    };
    let arns: Vec<String> = if targets.is_empty() {
        if d.group.is_some() {
            vec![group_arn(d)?]
        } else {
            if known.len() > MAX_TARGETS {
                return Err(BadInput(format!(
                    "{} devices and no fleet.group: AWS takes at most {MAX_TARGETS} targets a job; set fleet.group (and run `iotreg up`), or name the targets",
                    known.len()
                )));
            }
            known
                .iter()
                .map(|t| thing_arn(t))
                .collect::<Result<_, _>>()?
        }
    } else {
        targets
            .iter()
            .map(|t| {
                if t == "group" {
                    group_arn(d)
                } else {
                    thing_arn(t)
                }
            })
            .collect::<Result<_, _>>()?
    };
    if arns.is_empty() {
        return Err(BadInput(
            "no device to target: the state records none".into(),
        ));
    }
    if arns.len() > MAX_TARGETS {
        return Err(BadInput(format!(
            "{} targets: AWS takes at most {MAX_TARGETS} a job; target the group instead",
            arns.len()
        )));
    }
    Ok(arns)
}

/// A job id from a name and the time: `<name>-<yyyymmddThhmmss>`, within AWS's 64.
fn new_job_id(name: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let room = 64 - stamp.len() - 1;
    let name: String = name.chars().take(room).collect();
    format!("{name}-{stamp}")
}

#[derive(Debug, Serialize)]
struct Started {
    job_id: String,
    job_arn: String,
    template: Option<String>,
    targets: Vec<String>,
    target_selection: String,
    document: Option<Value>,
}

impl fmt::Display for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.job_id)
    }
}

impl Summary for Started {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: true,
            ..Verdict::default()
        }
    }
}

async fn start(
    settings: &Settings,
    progress: &Progress,
    template: Option<&str>,
    targets: &[String],
    set: &[(String, Value)],
    continuous: bool,
    job_id: Option<&str>,
) -> Result<ExitStatus> {
    let dep = deployed(settings, progress, true).await?;
    let (d, state) = (&dep.d, &dep.state);
    let spec = match template {
        Some(name) => {
            let spec = d
                .jobs
                .template(name)
                .ok_or_else(|| BadInput(format!("no job template {name:?} in the config")))?;
            if state.get(&format!("{TEMPLATE_PREFIX}{name}")).is_none() {
                return Err(BadInput(format!(
                    "job template {name:?} is not deployed yet: run `iotreg up`"
                ))
                .into());
            }
            Some(spec)
        }
        None => None,
    };
    let arns = target_arns(d, state, targets)?;
    if continuous && !arns.iter().any(|a| a.contains(":thinggroup/")) {
        return Err(BadInput(
            "--continuous needs a thing group among the targets (AWS: only a group gains members later)".into(),
        )
        .into());
    }
    let id = match job_id {
        Some(id) => id.to_string(),
        None => new_job_id(template.unwrap_or("config")),
    };
    let key = format!("{JOB_PREFIX}{id}");
    if state.get(&key).is_some() {
        return Err(BadInput(format!(
            "job {id:?} is already recorded: pick another --job-id"
        ))
        .into());
    }
    let document = spec.is_none().then(|| jobs::config_document(set));
    let store = Arc::new(dep.session.backend.store(state.clone()));
    let cx = Ctx::new(
        store.clone(),
        Arc::new(crate::engine::Silent),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let mut rec = Record::new(&key, started::KIND, Phase::Intent, &id);
    rec.arn = Some(d.arn("iot", &format!("job/{id}")));
    rec.data
        .insert("template".into(), template.map(str::to_string).into());
    rec.data.insert("targets".into(), arns.clone().into());
    rec.data.insert("continuous".into(), continuous.into());
    // With monitoring on, an alarm on the job's failed executions: named in the record before
    // anything is made, so `down` deletes it with the job whatever happens after.
    let alarm = resources::monitoring::job_failure_alarm(d, &id);
    if let Some(a) = &alarm {
        rec.data
            .insert(started::ALARM.into(), a.name.clone().into());
    }
    let mut rec = cx.intent(rec)?;
    let selection = if continuous {
        TargetSelection::Continuous
    } else {
        TargetSelection::Snapshot
    };
    let description = match template {
        Some(t) => format!("iotreg {}: {t}", state.suffix),
        None => format!("iotreg {}: configuration change", state.suffix),
    };
    let mut call = dep
        .clients
        .iot
        .create_job()
        .job_id(&id)
        .set_targets(Some(arns.clone()))
        .target_selection(selection.clone())
        .description(&description);
    call = match (spec, &document) {
        (Some(spec), _) => call.job_template_arn(d.arn("iot", &format!("jobtemplate/{}", spec.id))),
        (None, Some(doc)) => call.document(doc.to_string()),
        (None, None) => unreachable!("a configuration change has its document"),
    };
    crate::ratelimit::acquire("CreateJob").await;
    let job_arn = match call.send().await {
        Ok(out) => out.job_arn().map(str::to_string),
        Err(e) => {
            let service = e.as_service_error();
            let exists = service.is_some_and(|s| s.is_resource_already_exists_exception());
            let invalid = service.is_some_and(|s| s.is_invalid_request_exception());
            let failed = aws::failed(started::KIND, &id, "CreateJob", e);
            if exists {
                // Our own create whose answer was lost (the SDK retried it) is the job with
                // this run's description: it is this run's. Anyone else's is bad input.
                let found = describe(&dep.clients, &id).await?;
                if found.description() != Some(description.as_str()) {
                    cx.forget(&key)?;
                    store.flush()?;
                    return Err(BadInput(format!(
                        "{failed}: another job has the id {id:?}; pick another --job-id"
                    ))
                    .into());
                }
                found.job_arn().map(str::to_string)
            } else if invalid {
                // Refused: nothing was made, so nothing is left for `down` to look for.
                cx.forget(&key)?;
                store.flush()?;
                return Err(BadInput(failed.to_string()).into());
            } else {
                // The job may exist (an answer lost for good): the intent stays for `down`.
                return Err(failed.into());
            }
        }
    };
    rec.phase = Phase::Created;
    if let Some(arn) = job_arn {
        rec.arn = Some(arn);
    }
    cx.commit(rec.clone())?;
    store.flush()?;
    if let Some(a) = &alarm {
        resources::alarm::put_alarm(&dep.clients.cloudwatch, a)
            .await
            .map_err(|e| anyhow::anyhow!("job {id} started, but its alarm was not made: {e}"))?;
    }
    progress.line(&format!(
        "iotreg job start: {id} on {} target(s){}",
        arns.len(),
        if continuous { ", continuous" } else { "" }
    ));
    let summary = Started {
        job_arn: rec.arn.clone().unwrap_or_default(),
        job_id: id,
        template: template.map(str::to_string),
        targets: arns,
        target_selection: selection.as_str().to_string(),
        document,
    };
    Ok(report(settings, &summary))
}

/// AWS's execution statuses, in the order `job status` shows them.
const STATUSES: [&str; 8] = [
    "QUEUED",
    "IN_PROGRESS",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "REJECTED",
    "REMOVED",
    "CANCELED",
];
/// The statuses that count as a failed rollout.
const FAILURES: [&str; 3] = ["FAILED", "TIMED_OUT", "REJECTED"];

#[derive(Debug, Serialize)]
pub struct JobReport {
    pub job_id: String,
    pub status: String,
    pub target_selection: String,
    /// Executions by AWS's status names.
    pub executions: BTreeMap<&'static str, i64>,
    pub total: i64,
    /// The things the job's targets name (a group's members counted), when read: the rollout
    /// creates executions over time, so `total` grows towards it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeted: Option<i64>,
    /// Executions in a final status.
    pub done: i64,
    /// `done` over `targeted` (or over `total` when the targets were not counted).
    pub progress_percent: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub force_canceled: bool,
    /// The abort criteria, as AWS has them.
    pub abort: Vec<Value>,
    /// What the devices report in their shadows for this job's document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<Reported>,
    #[serde(skip)]
    watched: bool,
    /// --watch gave up (its --timeout) with the job still running.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gave_up: bool,
}

#[derive(Debug, Serialize)]
pub struct Reported {
    /// `firmware_version = 2.0.0` or `config.reporting_interval = 30`.
    pub what: String,
    /// Devices among the job's executions whose shadow reports it.
    pub devices: usize,
    pub matching: usize,
}

impl JobReport {
    fn from_job(job: &Job) -> JobReport {
        let p = job.job_process_details();
        let n = |v: Option<i32>| i64::from(v.unwrap_or(0));
        let executions: BTreeMap<&'static str, i64> = STATUSES
            .iter()
            .map(|s| {
                let v = match *s {
                    "QUEUED" => n(p.and_then(|p| p.number_of_queued_things())),
                    "IN_PROGRESS" => n(p.and_then(|p| p.number_of_in_progress_things())),
                    "SUCCEEDED" => n(p.and_then(|p| p.number_of_succeeded_things())),
                    "FAILED" => n(p.and_then(|p| p.number_of_failed_things())),
                    "TIMED_OUT" => n(p.and_then(|p| p.number_of_timed_out_things())),
                    "REJECTED" => n(p.and_then(|p| p.number_of_rejected_things())),
                    "REMOVED" => n(p.and_then(|p| p.number_of_removed_things())),
                    _ => n(p.and_then(|p| p.number_of_canceled_things())),
                };
                (*s, v)
            })
            .collect();
        let total: i64 = executions.values().sum();
        let done = total - executions["QUEUED"] - executions["IN_PROGRESS"];
        JobReport {
            job_id: job.job_id().unwrap_or_default().to_string(),
            status: job
                .status()
                .map(|s| s.as_str())
                .unwrap_or("UNKNOWN")
                .to_string(),
            target_selection: job
                .target_selection()
                .map(|s| s.as_str())
                .unwrap_or("SNAPSHOT")
                .to_string(),
            progress_percent: if total == 0 {
                0.0
            } else {
                (done as f64 * 1000.0 / total as f64).round() / 10.0
            },
            executions,
            total,
            targeted: None,
            done,
            reason_code: job.reason_code().map(str::to_string),
            comment: job.comment().map(str::to_string),
            force_canceled: job.force_canceled().unwrap_or(false),
            abort: job
                .abort_config()
                .map(|a| {
                    a.criteria_list()
                        .iter()
                        .map(|c| {
                            serde_json::json!({
                                "failure_type": c.failure_type().as_str(),
                                "threshold_percentage": c.threshold_percentage(),
                                "min_executed_things": c.min_number_of_executed_things(),
                                "action": c.action().as_str(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            reported: None,
            watched: false,
            gave_up: false,
        }
    }

    /// Whether the job has nothing left to do: finished, or (continuous) nothing queued or
    /// running among the executions so far.
    fn settled(&self) -> bool {
        match self.status.as_str() {
            "COMPLETED" | "CANCELED" | "DELETION_IN_PROGRESS" => true,
            _ => {
                self.target_selection == "CONTINUOUS"
                    && self.total > 0
                    && self.executions["QUEUED"] + self.executions["IN_PROGRESS"] == 0
            }
        }
    }

    /// Counts the targeted things; the progress is then over them.
    fn set_targeted(&mut self, targeted: i64) {
        self.targeted = Some(targeted);
        let of = targeted.max(self.total);
        self.progress_percent = if of == 0 {
            0.0
        } else {
            (self.done as f64 * 1000.0 / of as f64).round() / 10.0
        };
    }

    fn failures(&self) -> i64 {
        FAILURES.iter().map(|s| self.executions[s]).sum()
    }

    /// One line: status, progress and the non-zero counts.
    pub fn line(&self) -> String {
        let counts: Vec<String> = STATUSES
            .iter()
            .filter(|s| self.executions[*s] > 0)
            .map(|s| format!("{s} {}", self.executions[s]))
            .collect();
        format!(
            "{} {}: {}/{} done ({}%){}{}",
            self.job_id,
            self.status,
            self.done,
            self.targeted.unwrap_or(self.total).max(self.total),
            self.progress_percent,
            if counts.is_empty() { "" } else { " · " },
            counts.join(" · ")
        )
    }
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "job {} ({})", self.job_id, self.target_selection)?;
        writeln!(f, "  status:     {}", self.status)?;
        match self.targeted {
            Some(t) if t > self.total => writeln!(
                f,
                "  progress:   {} of {t} targeted devices done ({}%); {} executions so far",
                self.done, self.progress_percent, self.total
            )?,
            _ => writeln!(
                f,
                "  progress:   {} of {} executions done ({}%)",
                self.done, self.total, self.progress_percent
            )?,
        }
        for s in STATUSES {
            if self.executions[s] > 0 {
                writeln!(f, "  {s:<11} {}", self.executions[s])?;
            }
        }
        for a in &self.abort {
            writeln!(
                f,
                "  abort:      {} >= {}% once {} executed -> {}",
                a["failure_type"].as_str().unwrap_or_default(),
                a["threshold_percentage"],
                a["min_executed_things"],
                a["action"].as_str().unwrap_or_default()
            )?;
        }
        if self.status == "CANCELED" {
            writeln!(
                f,
                "  cancelled:  {}{}{}",
                self.reason_code.as_deref().unwrap_or("(no reason code)"),
                self.comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default(),
                if self.force_canceled { " (forced)" } else { "" }
            )?;
        }
        if let Some(r) = &self.reported {
            writeln!(
                f,
                "  reported:   {} of {} devices report {}",
                r.matching, r.devices, r.what
            )?;
        }
        if self.gave_up {
            writeln!(
                f,
                "  watch:      gave up (--timeout) with the job still running"
            )?;
        }
        Ok(())
    }
}

impl Summary for JobReport {
    /// Read, it is a success; followed with --watch, only a rollout that ended with every
    /// execution succeeded is.
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: !self.watched
                || (!self.gave_up && self.status != "CANCELED" && self.failures() == 0),
            ..Verdict::default()
        }
    }
}

async fn describe(clients: &Clients, id: &str) -> Result<Job> {
    crate::ratelimit::acquire("DescribeJob").await;
    let out = clients
        .iot
        .describe_job()
        .job_id(id)
        .send()
        .await
        .map_err(|e| {
            let missing = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception());
            let failed = aws::failed(started::KIND, id, "DescribeJob", e);
            if missing {
                anyhow::Error::new(BadInput(format!("no job {id:?}: {failed}")))
            } else {
                anyhow::Error::new(failed)
            }
        })?;
    out.job
        .ok_or_else(|| anyhow::anyhow!("DescribeJob {id}: the answer has no job"))
}

/// How `job status --watch` follows a job.
#[derive(Debug, Clone, Copy)]
struct Watch {
    interval: Duration,
    /// Give up with the job still running after this long.
    timeout: Option<Duration>,
}

async fn status(
    settings: &Settings,
    progress: &Progress,
    id: &str,
    watch: Option<Watch>,
    reported: bool,
) -> Result<ExitStatus> {
    let dep = deployed(settings, progress, false).await?;
    let clients = &dep.clients;
    let first = describe(clients, id).await?;
    let targeted = count_targets(clients, first.targets()).await?;
    let mut job = JobReport::from_job(&first);
    job.set_targeted(targeted);
    if let Some(w) = watch {
        let deadline = w.timeout.map(|t| std::time::Instant::now() + t);
        let tty = std::io::stderr().is_terminal() && settings.verbosity >= 0;
        let bar = if tty {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut last = String::new();
        loop {
            let line = job.line();
            if tty {
                bar.set_message(line.clone());
            } else if line != last {
                // Without a terminal (CI logs): a line each time something changed.
                progress.line(&line);
            }
            last = line;
            if job.settled() {
                break;
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                job.gave_up = true;
                break;
            }
            tokio::time::sleep(w.interval).await;
            job = JobReport::from_job(&describe(clients, id).await?);
            job.set_targeted(targeted);
        }
        bar.finish_and_clear();
        job.watched = true;
    }
    if reported {
        job.reported = read_reported(clients, id).await?;
    }
    Ok(report(settings, &job))
}

/// The things `targets` name: a thing ARN is one, a group its members (its child groups'
/// too, as AWS targets them), read when the status is first asked.
async fn count_targets(clients: &Clients, targets: &[String]) -> Result<i64> {
    let mut n = 0i64;
    for arn in targets {
        let Some(group) = arn.split_once(":thinggroup/").map(|(_, g)| g) else {
            n += 1;
            continue;
        };
        let mut pages = clients
            .iot
            .list_things_in_thing_group()
            .thing_group_name(group)
            .recursive(true)
            .max_results(250)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| aws::failed("thing group", group, "ListThingsInThingGroup", e))?;
            n += page.things().len() as i64;
        }
    }
    Ok(n)
}

/// What the job's document asks devices to report, and how many of its executions' devices
/// do (their classic shadow's `reported`): None for a document iotreg did not write.
async fn read_reported(clients: &Clients, id: &str) -> Result<Option<Reported>> {
    crate::ratelimit::acquire("GetJobDocument").await;
    let doc = clients
        .iot
        .get_job_document()
        .job_id(id)
        .send()
        .await
        .map_err(|e| aws::failed(started::KIND, id, "GetJobDocument", e))?;
    let Some(doc) = doc
        .document()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    else {
        return Ok(None);
    };
    let Some(want) = Wanted::of(&doc) else {
        return Ok(None);
    };
    let things = execution_things(clients, id).await?;
    let data = clients.data().await?;
    let matching = stream::iter(things.iter())
        .map(|thing| {
            let want = &want;
            async move {
                crate::ratelimit::acquire("GetThingShadow").await;
                let shadow = data.get_thing_shadow().thing_name(thing).send().await;
                match shadow {
                    Ok(out) => Ok(out
                        .payload
                        .and_then(|p| serde_json::from_slice::<Value>(p.as_ref()).ok())
                        .is_some_and(|s| want.met_by(&s["state"]["reported"]))),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_not_found_exception()) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(aws::failed("device shadow", thing, "GetThingShadow", e)),
                }
            }
        })
        .buffer_unordered(SHADOW_READS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<bool>, _>>()?
        .into_iter()
        .filter(|m| *m)
        .count();
    Ok(Some(Reported {
        what: want.describe(),
        devices: things.len(),
        matching,
    }))
}

/// What a device that took the job reports: its firmware's version, or the settings.
#[derive(Debug, PartialEq)]
enum Wanted {
    Firmware(Value),
    Config(serde_json::Map<String, Value>),
}

impl Wanted {
    fn of(doc: &Value) -> Option<Wanted> {
        match doc["operation"].as_str()? {
            "firmware_update" => Some(Wanted::Firmware(doc["firmware"]["version"].clone())),
            "config" => doc["set"].as_object().cloned().map(Wanted::Config),
            _ => None,
        }
    }

    fn met_by(&self, reported: &Value) -> bool {
        match self {
            Wanted::Firmware(v) => &reported["firmware_version"] == v,
            Wanted::Config(set) => set
                .iter()
                .all(|(k, v)| &reported["config"][k.as_str()] == v),
        }
    }

    fn describe(&self) -> String {
        match self {
            Wanted::Firmware(v) => format!("firmware_version = {}", plain(v)),
            Wanted::Config(set) => set
                .iter()
                .map(|(k, v)| format!("config.{k} = {}", plain(v)))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

fn plain(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// The things the job has executions for (paged, 250 a page at most).
async fn execution_things(clients: &Clients, id: &str) -> Result<Vec<String>> {
    let mut things = Vec::new();
    let mut pages = clients
        .iot
        .list_job_executions_for_job()
        .job_id(id)
        .max_results(250)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| aws::failed(started::KIND, id, "ListJobExecutionsForJob", e))?;
        for e in page.execution_summaries() {
            if let Some(arn) = e.thing_arn() {
                let thing = arn.rsplit('/').next().unwrap_or(arn).to_string();
                if !things.contains(&thing) {
                    things.push(thing);
                }
            }
        }
    }
    Ok(things)
}

async fn cancel(
    settings: &Settings,
    progress: &Progress,
    id: &str,
    force: bool,
) -> Result<ExitStatus> {
    let dep = deployed(settings, progress, false).await?;
    let clients = &dep.clients;
    crate::ratelimit::acquire("CancelJob").await;
    clients
        .iot
        .cancel_job()
        .job_id(id)
        .force(force)
        .comment("iotreg job cancel")
        .send()
        .await
        .map_err(|e| {
            let bad = e.as_service_error().is_some_and(|s| {
                s.is_resource_not_found_exception() || s.is_invalid_request_exception()
            });
            let failed = aws::failed(started::KIND, id, "CancelJob", e);
            if bad {
                anyhow::Error::new(BadInput(failed.to_string()))
            } else {
                anyhow::Error::new(failed)
            }
        })?;
    progress.line(&format!(
        "iotreg job cancel: {id} cancelled{}",
        if force {
            " (with the executions in progress)"
        } else {
            ""
        }
    ));
    let report = JobReport::from_job(&describe(clients, id).await?);
    Ok(super::report(settings, &report))
}

#[derive(Debug, Serialize)]
struct JobList {
    jobs: Vec<Listed>,
}

#[derive(Debug, Serialize)]
struct Listed {
    job_id: String,
    template: Option<String>,
    /// AWS's status, or `GONE` when AWS no longer has the job.
    status: String,
    targets: usize,
}

impl fmt::Display for JobList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.jobs.is_empty() {
            return writeln!(f, "no jobs started by this deployment");
        }
        for j in &self.jobs {
            writeln!(
                f,
                "{:<48} {:<12} {:<20} {} target(s)",
                j.job_id,
                j.status,
                j.template.as_deref().unwrap_or("(configuration)"),
                j.targets
            )?;
        }
        Ok(())
    }
}

impl Summary for JobList {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: true,
            ..Verdict::default()
        }
    }
}

/// The jobs the state records, with their status from ListJobs (one paged read for all).
async fn list(settings: &Settings, progress: &Progress) -> Result<ExitStatus> {
    let dep = deployed(settings, progress, false).await?;
    let mut live: BTreeMap<String, JobStatus> = BTreeMap::new();
    let mut pages = dep
        .clients
        .iot
        .list_jobs()
        .max_results(250)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws::failed(started::KIND, "*", "ListJobs", e))?;
        for j in page.jobs() {
            if let (Some(id), Some(s)) = (j.job_id(), j.status()) {
                live.insert(id.to_string(), s.clone());
            }
        }
    }
    let jobs = dep
        .state
        .resources
        .iter()
        .filter(|r| r.key.starts_with(JOB_PREFIX))
        .map(|r| Listed {
            job_id: r.name.clone(),
            template: r.data_str("template").map(str::to_string),
            status: live
                .get(&r.name)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "GONE".into()),
            targets: r
                .data
                .get("targets")
                .and_then(|t| t.as_array())
                .map_or(0, Vec::len),
        })
        .collect();
    Ok(report(settings, &JobList { jobs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_ids_fit_aws_pattern() {
        let id = new_job_id(&"x".repeat(80));
        assert!(id.len() <= 64, "{id}");
        crate::config::jobs::check_job_id(&id).unwrap();
        crate::config::jobs::check_job_id(&new_job_id("fw-v2")).unwrap();
    }

    #[test]
    fn what_devices_report_is_read_off_the_document() {
        let fw = json!({"operation": "firmware_update", "firmware": {"version": "2.0.0"}});
        let want = Wanted::of(&fw).unwrap();
        assert!(want.met_by(&json!({"firmware_version": "2.0.0"})));
        assert!(!want.met_by(&json!({"firmware_version": "1.0.0"})));
        assert_eq!(want.describe(), "firmware_version = 2.0.0");
        let cfg = jobs::config_document(&[("reporting_interval".into(), json!(30))]);
        let want = Wanted::of(&cfg).unwrap();
        assert!(want.met_by(&json!({"config": {"reporting_interval": 30, "other": 1}})));
        assert!(!want.met_by(&json!({"config": {"reporting_interval": "30"}})));
        assert_eq!(want.describe(), "config.reporting_interval = 30");
        assert_eq!(Wanted::of(&json!({"operation": "reboot"})), None);
    }
}
