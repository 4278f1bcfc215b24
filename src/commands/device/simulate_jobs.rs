//! `iotreg device simulate --jobs`: devices that take AWS IoT jobs, one or every fleet device,
//! all connected at once (a rollout notifies them over time), each a task of its own on the
//! runtime (no thread per device), the connects paced by `--concurrency`.
//!
//! Per device: connect with its own certificate; subscribe to `notify-next` and the answers
//! to its requests (and its shadow's); then, for the next pending execution (asked with
//! DescribeJobExecution `$next`, or handed over by `notify-next`): StartNextPendingJobExecution
//! with the step as statusDetails (IN_PROGRESS); do the work (download and check the firmware,
//! or apply the configuration); report the result in the classic shadow; UpdateJobExecution
//! SUCCEEDED (or FAILED / REJECTED with the reason); and again, until nothing is pending and
//! nothing new is notified for `--linger` seconds. `--fail-rate` and `--offline-rate` pick
//! devices by a deterministic draw ([`jobs::draw`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value};

use super::simulate::{devices, list_failures, progress_bar, Failure};
use super::Deployed;
use crate::commands::{report, ExitStatus, Summary, Verdict};
use crate::device::jobs::{self, Execution, JobsClient, Operation, Updated};
use crate::device::{policy, sigv4::Signer, DeviceError, DeviceFiles, Endpoint, Protocol, Session};
use crate::output::Progress;
use crate::settings::{BadInput, JobsOptions, Settings, SimulateOptions};

/// Devices named per line of the summary before "and N more".
const LISTED: usize = 10;

pub async fn simulate(
    settings: &Settings,
    progress: &Progress,
    o: &SimulateOptions,
    j: &JobsOptions,
) -> Result<ExitStatus> {
    let deployed = Deployed::load(settings).await?;
    let things = devices(settings, &deployed, o)?;
    // A device is disconnected for a topic its policy does not allow: refuse before any
    // connection, naming what is missing, rather than watch every device be thrown out.
    let doc = deployed.policy()?;
    let mut gaps = policy::jobs_gaps(&doc, &things[0]);
    gaps.extend(policy::shadow_gaps(&doc, &things[0]));
    if !gaps.is_empty() {
        return Err(BadInput(format!(
            "--jobs: the deployed device policy does not let {} use the jobs and shadow MQTT topics it needs: {}",
            things[0],
            gaps.join(", ")
        ))
        .into());
    }
    let endpoint = deployed.endpoint(progress).await?;
    let signer = deployed.signer(o.protocol).await?;
    progress.line(&format!(
        "iotreg device simulate --jobs: {} device(s) over {} ({}), linger {}s, at most {}s",
        things.len(),
        o.protocol,
        endpoint.authority(endpoint.port(o.protocol)),
        j.linger.as_secs_f64(),
        j.max_duration.as_secs_f64(),
    ));
    let bar = progress_bar(settings.verbosity, things.len());
    let started = Instant::now();
    let player = Arc::new(Player {
        endpoint,
        signer,
        key_dir: settings.key_dir.clone(),
        protocol: o.protocol,
        timeout: settings.device.timeout,
        jobs: j.clone(),
        connects: tokio::sync::Semaphore::new(o.concurrency),
        deadline: started + j.max_duration,
    });
    let tasks: Vec<_> = things
        .into_iter()
        .map(|thing| {
            let (player, bar) = (player.clone(), bar.clone());
            let name = thing.clone();
            let task = tokio::spawn(async move {
                let run = player.device(thing).await;
                bar.inc(1);
                if let Some(e) = run.errors.last() {
                    bar.set_message(format!("last failure: {}: {e}", run.thing));
                }
                run
            });
            (name, task)
        })
        .collect();
    let mut runs = Vec::with_capacity(tasks.len());
    for (thing, task) in tasks {
        runs.push(task.await.unwrap_or_else(|e| DeviceRun {
            errors: vec![format!("the device's task ended abnormally: {e}")],
            ..DeviceRun::new(thing)
        }));
    }
    bar.finish_and_clear();
    let summary = JobsSummary::new(
        o.protocol,
        &runs,
        started.elapsed(),
        j.max_duration,
        settings.verbosity >= 1,
    );
    Ok(report(settings, &summary))
}

/// What every device shares.
struct Player {
    endpoint: Endpoint,
    signer: Option<Signer>,
    key_dir: std::path::PathBuf,
    protocol: Protocol,
    timeout: Duration,
    jobs: JobsOptions,
    /// Connects in flight at once (`--concurrency`); a connected device gives its permit back.
    connects: tokio::sync::Semaphore,
    /// The end of `--max-duration`.
    deadline: Instant,
}

/// One execution as the device saw it end.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ExecutionReport {
    job_id: String,
    /// SUCCEEDED, FAILED or REJECTED as the device reported it; OFFLINE when it took the
    /// execution and went away; CANCELED, REMOVED or TIMED_OUT when the service ended it
    /// before the device's update; IN_PROGRESS when the device stopped on an error or at
    /// `--max-duration`.
    status: String,
    execution_number: Option<u64>,
    /// The execution's version after the device's last accepted update.
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// How one device's run went.
#[derive(Debug, Default)]
struct DeviceRun {
    thing: String,
    connected: bool,
    executions: Vec<ExecutionReport>,
    /// Jobs the device failed on purpose (`--fail-rate`).
    simulated_failures: Vec<String>,
    /// The job it took before it went offline (`--offline-rate`).
    offline: Option<String>,
    firmware_bytes: u64,
    /// What went wrong that a healthy device and service would not do (exit 1).
    errors: Vec<String>,
    /// The job the device was executing, or had been told of, when last seen.
    busy: Option<String>,
    /// `--max-duration` ended the device's run.
    cut: bool,
}

impl DeviceRun {
    fn new(thing: String) -> DeviceRun {
        DeviceRun {
            thing,
            ..DeviceRun::default()
        }
    }

    fn last(&mut self) -> Option<&mut ExecutionReport> {
        self.executions.last_mut()
    }
}

/// What an execution left the device to do next.
enum Next {
    Continue,
    /// The device went offline: its run is over.
    Offline,
}

impl Player {
    async fn device(&self, thing: String) -> DeviceRun {
        let mut run = DeviceRun::new(thing);
        match tokio::time::timeout_at(self.deadline.into(), self.play(&mut run)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => run.errors.push(e.to_string()),
            Err(_) => {
                run.cut = true;
                // A device waiting with nothing pending has no work outstanding.
                if let Some(job) = &run.busy {
                    run.errors.push(format!(
                        "--max-duration reached with job {job} not finished"
                    ));
                }
            }
        }
        run
    }

    async fn play(&self, run: &mut DeviceRun) -> Result<(), DeviceError> {
        let files = DeviceFiles::for_thing(&self.key_dir, &run.thing);
        let mut client = JobsClient::new(&run.thing);
        let mut session = {
            let _permit = self.connects.acquire().await;
            let mut s = Session::connect(
                &self.endpoint,
                &files,
                &run.thing,
                self.protocol,
                self.signer.as_ref(),
                self.timeout,
            )
            .await?;
            run.connected = true;
            client.subscribe(&mut s).await?;
            s.shadow_subscribe().await?;
            s
        };
        let notify = client.topics().notify_next();
        // The device's configuration as the config jobs set it.
        let mut config = Map::new();
        let mut hint: Option<Execution> = None;
        let mut quiet_since = Instant::now();
        loop {
            let next = match hint.take() {
                Some(e) if e.job_document.is_some() => Some(e),
                _ => {
                    // What is next is asked afresh: older notifications are stale.
                    session.discard(|m| m.topic == notify);
                    client.peek_next(&mut session).await?
                }
            };
            if let Some(next) = next {
                run.busy = Some(next.job_id.clone());
                match self
                    .execute(&mut session, &mut client, next, run, &mut config)
                    .await?
                {
                    Next::Continue => {}
                    Next::Offline => {
                        // Gone without a word (no DISCONNECT): the service sees the device
                        // vanish, and the execution stays IN_PROGRESS until it times out.
                        drop(session);
                        return Ok(());
                    }
                }
                run.busy = None;
                quiet_since = Instant::now();
                continue;
            }
            match self
                .notification(&mut session, &notify, quiet_since + self.jobs.linger)
                .await?
            {
                Some(e) => {
                    run.busy = Some(e.job_id.clone());
                    hint = Some(e);
                }
                None => break,
            }
        }
        session.disconnect().await
    }

    /// The next `notify-next` that names an execution, until `until`; None when none came.
    /// Everything else that arrives meanwhile is dropped: no answer is awaited while idle.
    async fn notification(
        &self,
        session: &mut Session,
        notify: &str,
        until: Instant,
    ) -> Result<Option<Execution>, DeviceError> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match session.next_message(left).await? {
                None => return Ok(None),
                Some(m) if m.topic == notify => {
                    if let Some(e) = m.json().as_ref().and_then(Execution::from_answer) {
                        return Ok(Some(e));
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// Starts the next execution and carries it out. `peeked` is what was seen to be next;
    /// the execution StartNextPendingJobExecution answers with is the one carried out.
    async fn execute(
        &self,
        session: &mut Session,
        client: &mut JobsClient,
        peeked: Execution,
        run: &mut DeviceRun,
        config: &mut Map<String, Value>,
    ) -> Result<Next, DeviceError> {
        let step = peeked.operation().ok().map(|op| op.step());
        let Some(mut execution) = client.start_next(session, step.as_ref()).await? else {
            // Canceled or removed between the two requests: nothing to do.
            return Ok(Next::Continue);
        };
        let job = execution.job_id.clone();
        let number = execution.execution_number;
        if run
            .executions
            .iter()
            .any(|e| e.job_id == job && e.execution_number == number && e.status != "IN_PROGRESS")
        {
            // Taking it again would loop for the rest of the run.
            return Err(DeviceError::Protocol(format!(
                "StartNextPendingJobExecution handed back job {job} execution {} that this device had already finished",
                number.map_or("?".into(), |n| n.to_string())
            )));
        }
        run.busy = Some(job.clone());
        run.executions.push(ExecutionReport {
            job_id: job.clone(),
            status: execution.status.clone(),
            execution_number: number,
            version: execution.version_number,
            reason: None,
        });
        let j = &self.jobs;
        if jobs::picked(jobs::OFFLINE, j.offline_rate, j.seed, &run.thing, &job) {
            run.offline = Some(job);
            if let Some(last) = run.last() {
                last.status = "OFFLINE".into();
            }
            return Ok(Next::Offline);
        }
        let op = match execution.operation() {
            Ok(op) => op,
            Err(reason) => {
                self.finish(session, client, &execution, "REJECTED", &reason, run)
                    .await?;
                return Ok(Next::Continue);
            }
        };
        if step.as_ref() != Some(&op.step()) {
            // The next execution changed between the look and the start: say the step of
            // the one that started.
            match client
                .update(session, &execution, "IN_PROGRESS", &op.step())
                .await?
            {
                Updated::Accepted { version } => execution.version_number = version,
                Updated::Rejected(r) => return Err(rejected(&job, "IN_PROGRESS", &r)),
            }
        }
        match &op {
            Operation::Firmware(firmware) => {
                let download = jobs::download(firmware, self.timeout).await;
                run.firmware_bytes += download.bytes;
                if let Err(reason) = download.result {
                    self.finish(session, client, &execution, "FAILED", &reason, run)
                        .await?;
                    // Reported to the job as a device would; not a simulated failure, so
                    // the run names it and fails.
                    run.errors
                        .push(format!("job {job}: firmware download failed: {reason}"));
                    return Ok(Next::Continue);
                }
            }
            Operation::Config(change) => {
                config.extend(change.set.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if jobs::picked(jobs::FAIL, j.fail_rate, j.seed, &run.thing, &job) {
            run.simulated_failures.push(job.clone());
            self.finish(
                session,
                client,
                &execution,
                "FAILED",
                "simulated failure",
                run,
            )
            .await?;
            return Ok(Next::Continue);
        }
        // The shadow says what the device now runs before the job says it succeeded.
        session.shadow_update_reported(op.reported()).await?;
        let end = End {
            status: "SUCCEEDED",
            details: op.succeeded_details(),
            reason: None,
        };
        self.finish_with(session, client, &execution, end, run)
            .await?;
        Ok(Next::Continue)
    }

    /// A terminal update with `{"reason": ...}`.
    async fn finish(
        &self,
        session: &mut Session,
        client: &mut JobsClient,
        execution: &Execution,
        status: &str,
        reason: &str,
        run: &mut DeviceRun,
    ) -> Result<(), DeviceError> {
        let end = End {
            status,
            details: jobs::reason_details(reason),
            reason: Some(jobs::detail_value(reason)),
        };
        self.finish_with(session, client, execution, end, run).await
    }

    async fn finish_with(
        &self,
        session: &mut Session,
        client: &mut JobsClient,
        execution: &Execution,
        end: End<'_>,
        run: &mut DeviceRun,
    ) -> Result<(), DeviceError> {
        let status = end.status;
        let updated = client
            .update(session, execution, status, &end.details)
            .await?;
        let last = run.last();
        match updated {
            Updated::Accepted { version } => {
                if let Some(last) = last {
                    last.status = status.into();
                    last.version = version;
                    last.reason = end.reason;
                }
                Ok(())
            }
            Updated::Rejected(r) => match r.ended_by_service() {
                // Canceled with force, removed or timed out meanwhile: the execution is
                // over, and the device goes on with the next one.
                Some(ended) => {
                    if let Some(last) = last {
                        last.status = ended.into();
                        last.reason = Some(format!("{status} update rejected: {r}"));
                    }
                    Ok(())
                }
                // The execution is still pending on the service's side; taking the next
                // one would hand this one back forever.
                None => Err(rejected(&execution.job_id, status, &r)),
            },
        }
    }
}

/// How the device ends an execution: the status, its statusDetails, and the reason the
/// summary shows.
struct End<'a> {
    status: &'a str,
    details: Value,
    reason: Option<String>,
}

fn rejected(job: &str, status: &str, r: &jobs::Rejection) -> DeviceError {
    DeviceError::Protocol(format!("job {job}: the {status} update was rejected: {r}"))
}

#[derive(Debug, Serialize)]
struct Picked {
    thing: String,
    job_id: String,
}

#[derive(Debug, Serialize)]
struct DeviceReport {
    thing: String,
    jobs: Vec<ExecutionReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct JobsSummary {
    command: &'static str,
    ok: bool,
    protocol: Protocol,
    devices: usize,
    connects_ok: usize,
    connects_failed: usize,
    /// Executions the devices started.
    executions: usize,
    succeeded: usize,
    failed: usize,
    rejected: usize,
    offline: usize,
    /// Ended by the service before the device's update (CANCELED, REMOVED, TIMED_OUT).
    ended_by_service: usize,
    /// Per job id: executions by the status the device saw them end with.
    jobs: BTreeMap<String, BTreeMap<String, usize>>,
    firmware_bytes: u64,
    /// The devices `--fail-rate` picked, with the job.
    simulated_failures: Vec<Picked>,
    /// The devices `--offline-rate` picked, with the job they left IN_PROGRESS.
    went_offline: Vec<Picked>,
    /// `--max-duration` came before every device was done.
    max_duration_reached: bool,
    failures: Vec<Failure>,
    per_device: Vec<DeviceReport>,
    seconds: f64,
    #[serde(skip)]
    max_duration: Duration,
    /// `-v`: name the picked devices in the text too.
    #[serde(skip)]
    verbose: bool,
}

impl JobsSummary {
    fn new(
        protocol: Protocol,
        runs: &[DeviceRun],
        elapsed: Duration,
        max_duration: Duration,
        verbose: bool,
    ) -> JobsSummary {
        let all = || runs.iter().flat_map(|r| r.executions.iter());
        let count = |status: &str| all().filter(|e| e.status == status).count();
        let mut jobs: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for e in all() {
            *jobs
                .entry(e.job_id.clone())
                .or_default()
                .entry(e.status.clone())
                .or_default() += 1;
        }
        let mut failures: Vec<Failure> = runs
            .iter()
            .flat_map(|r| {
                r.errors.iter().map(|e| Failure {
                    thing: r.thing.clone(),
                    error: e.clone(),
                })
            })
            .collect();
        failures.sort_by(|a, b| a.thing.cmp(&b.thing));
        let picked = |f: &dyn Fn(&DeviceRun) -> Vec<String>| {
            let mut v: Vec<Picked> = runs
                .iter()
                .flat_map(|r| {
                    f(r).into_iter().map(|job_id| Picked {
                        thing: r.thing.clone(),
                        job_id,
                    })
                })
                .collect();
            v.sort_by(|a, b| (&a.thing, &a.job_id).cmp(&(&b.thing, &b.job_id)));
            v
        };
        let connects_ok = runs.iter().filter(|r| r.connected).count();
        let mut per_device: Vec<DeviceReport> = runs
            .iter()
            .map(|r| DeviceReport {
                thing: r.thing.clone(),
                jobs: r.executions.clone(),
                errors: r.errors.clone(),
            })
            .collect();
        per_device.sort_by(|a, b| a.thing.cmp(&b.thing));
        JobsSummary {
            command: "device simulate --jobs",
            ok: failures.is_empty(),
            protocol,
            devices: runs.len(),
            connects_ok,
            connects_failed: runs.len() - connects_ok,
            executions: all().count(),
            succeeded: count("SUCCEEDED"),
            failed: count("FAILED"),
            rejected: count("REJECTED"),
            offline: count("OFFLINE"),
            ended_by_service: ["CANCELED", "REMOVED", "TIMED_OUT"]
                .iter()
                .map(|s| count(s))
                .sum(),
            jobs,
            firmware_bytes: runs.iter().map(|r| r.firmware_bytes).sum(),
            simulated_failures: picked(&|r| r.simulated_failures.clone()),
            went_offline: picked(&|r| r.offline.iter().cloned().collect()),
            max_duration_reached: runs.iter().any(|r| r.cut),
            failures,
            per_device,
            seconds: elapsed.as_secs_f64(),
            max_duration,
            verbose,
        }
    }
}

/// `a (j), b (j), … and N more`.
fn names(list: &[Picked]) -> String {
    let mut text = list
        .iter()
        .take(LISTED)
        .map(|p| format!("{} ({})", p.thing, p.job_id))
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > LISTED {
        text.push_str(&format!(" and {} more", list.len() - LISTED));
    }
    text
}

impl fmt::Display for JobsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulate --jobs {} {} device(s) over {} in {:.1}s: {} connected, {} failed to connect",
            if self.ok { "OK:" } else { "FAILED:" },
            self.devices,
            self.protocol,
            self.seconds,
            self.connects_ok,
            self.connects_failed
        )?;
        write!(
            f,
            "  executions {}: {} SUCCEEDED, {} FAILED ({} simulated), {} REJECTED, {} went offline",
            self.executions,
            self.succeeded,
            self.failed,
            self.simulated_failures.len(),
            self.rejected,
            self.offline
        )?;
        if self.ended_by_service > 0 {
            write!(f, ", {} ended by the service", self.ended_by_service)?;
        }
        writeln!(f)?;
        for (job, statuses) in &self.jobs {
            let counts: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
            writeln!(f, "  job {job}: {}", counts.join(", "))?;
        }
        writeln!(f, "  firmware downloaded: {} bytes", self.firmware_bytes)?;
        if self.verbose {
            if !self.simulated_failures.is_empty() {
                writeln!(
                    f,
                    "  simulated failures: {}",
                    names(&self.simulated_failures)
                )?;
            }
            if !self.went_offline.is_empty() {
                writeln!(f, "  went offline: {}", names(&self.went_offline))?;
            }
        }
        if self.max_duration_reached {
            writeln!(
                f,
                "  --max-duration ({}s) reached before every device was done",
                self.max_duration.as_secs_f64()
            )?;
        }
        list_failures(f, &self.failures)
    }
}

impl Summary for JobsSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: self.ok,
            ..Verdict::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(job: &str, status: &str, n: u64) -> ExecutionReport {
        ExecutionReport {
            job_id: job.into(),
            status: status.into(),
            execution_number: Some(n),
            version: Some(3),
            reason: None,
        }
    }

    #[test]
    fn the_summary_counts_executions_per_status_and_job_and_names_the_picked_devices() {
        let ok = DeviceRun {
            connected: true,
            executions: vec![
                execution("fw", "SUCCEEDED", 1),
                execution("cfg", "SUCCEEDED", 1),
            ],
            firmware_bytes: 100,
            ..DeviceRun::new("d1".into())
        };
        let failed = DeviceRun {
            connected: true,
            executions: vec![execution("fw", "FAILED", 1)],
            simulated_failures: vec!["fw".into()],
            firmware_bytes: 100,
            ..DeviceRun::new("d2".into())
        };
        let offline = DeviceRun {
            connected: true,
            executions: vec![execution("fw", "OFFLINE", 1)],
            offline: Some("fw".into()),
            ..DeviceRun::new("d3".into())
        };
        let s = JobsSummary::new(
            Protocol::Mqtt,
            &[offline, failed, ok],
            Duration::from_secs(3),
            Duration::from_secs(600),
            true,
        );
        assert!(s.ok);
        assert_eq!((s.devices, s.connects_ok, s.executions), (3, 3, 4));
        assert_eq!((s.succeeded, s.failed, s.rejected, s.offline), (2, 1, 0, 1));
        assert_eq!(s.firmware_bytes, 200);
        assert_eq!(s.jobs["fw"]["SUCCEEDED"], 1);
        assert_eq!(s.jobs["fw"]["FAILED"], 1);
        assert_eq!(s.jobs["fw"]["OFFLINE"], 1);
        assert_eq!(s.jobs["cfg"]["SUCCEEDED"], 1);
        let text = s.to_string();
        assert!(text.starts_with("simulate --jobs OK: 3 device(s) over mqtt in 3.0s: 3 connected, 0 failed to connect\n"), "{text}");
        assert!(
            text.contains(
                "  executions 4: 2 SUCCEEDED, 1 FAILED (1 simulated), 0 REJECTED, 1 went offline\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  job fw: 1 FAILED, 1 OFFLINE, 1 SUCCEEDED\n"),
            "{text}"
        );
        assert!(text.contains("  simulated failures: d2 (fw)\n"), "{text}");
        assert!(text.contains("  went offline: d3 (fw)\n"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["simulated_failures"][0]["thing"], "d2");
        assert_eq!(json["went_offline"][0]["job_id"], "fw");
        // Sorted by thing, each with its executions.
        assert_eq!(json["per_device"][0]["thing"], "d1");
        assert_eq!(
            json["per_device"][0]["jobs"][0],
            serde_json::json!({"job_id": "fw", "status": "SUCCEEDED", "execution_number": 1, "version": 3})
        );
        assert!(json.get("verbose").is_none());
        // Without -v the text does not list the picked devices.
        let quiet = JobsSummary::new(
            Protocol::Mqtt,
            &[],
            Duration::ZERO,
            Duration::from_secs(600),
            false,
        );
        assert!(!quiet.to_string().contains("simulated failures"));
    }

    #[test]
    fn an_unexpected_error_or_work_left_at_max_duration_fails_the_run() {
        let refused = DeviceRun {
            errors: vec!["TLS handshake with h:1 refused: x".into()],
            ..DeviceRun::new("d1".into())
        };
        let cut = DeviceRun {
            connected: true,
            cut: true,
            executions: vec![execution("fw", "IN_PROGRESS", 1)],
            errors: vec!["--max-duration reached with job fw not finished".into()],
            ..DeviceRun::new("d2".into())
        };
        let s = JobsSummary::new(
            Protocol::Mqtt,
            &[refused, cut],
            Duration::from_secs(1),
            Duration::from_secs(5),
            false,
        );
        assert!(!s.ok);
        assert_eq!(s.connects_failed, 1);
        assert!(s.max_duration_reached);
        let text = s.to_string();
        assert!(
            text.contains("  --max-duration (5s) reached before every device was done\n"),
            "{text}"
        );
        assert!(
            text.contains("  ✗ d1: TLS handshake with h:1 refused: x\n"),
            "{text}"
        );
        assert!(
            text.contains("  ✗ d2: --max-duration reached with job fw not finished\n"),
            "{text}"
        );
        // A device cut while idle has no work outstanding.
        let idle = DeviceRun {
            connected: true,
            cut: true,
            ..DeviceRun::new("d3".into())
        };
        let s = JobsSummary::new(
            Protocol::Mqtt,
            &[idle],
            Duration::ZERO,
            Duration::from_secs(5),
            false,
        );
        assert!(s.ok && s.max_duration_reached);
    }
}
