//! The device's side of AWS IoT Jobs over MQTT: the reserved topics, the request payloads, the
//! executions AWS answers with, the job documents iotreg writes (a firmware update or a
//! configuration change), the firmware download with its size and SHA-256 check, and the
//! deterministic draws `device simulate --jobs` uses to decide which devices fail or go
//! offline. It knows no command line; [`JobsClient`] drives the exchange on a [`Session`].
//!
//! Topics and payloads are the AWS IoT developer guide's "Jobs device MQTT API operations"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/jobs-mqtt-api.html>), the data
//! types of "Jobs device MQTT and HTTPS APIs and data types"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/jobs-mqtt-https-api.html>), the
//! ErrorResponse of "Jobs API operations"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/jobs-api.html#jobs-mqtt-error-response>)
//! and "Jobs notifications"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/jobs-comm-notifications.html>).

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::mqtt::Message;
use super::{DeviceError, Session};

/// AWS's limit on a statusDetails value (UpdateJobExecution: at most 1,024 characters).
const DETAIL_MAX: usize = 1024;

/// The reserved jobs topics of one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(thing: &str) -> Topics {
        Topics {
            base: format!("$aws/things/{thing}/jobs"),
        }
    }

    /// StartNextPendingJobExecution.
    pub fn start_next(&self) -> String {
        format!("{}/start-next", self.base)
    }

    /// DescribeJobExecution of the next pending execution (`jobId` = `$next`).
    pub fn next_get(&self) -> String {
        format!("{}/$next/get", self.base)
    }

    /// UpdateJobExecution of `job_id`.
    pub fn update(&self, job_id: &str) -> String {
        format!("{}/{job_id}/update", self.base)
    }

    /// NextJobExecutionChanged: the next pending execution changed.
    pub fn notify_next(&self) -> String {
        format!("{}/notify-next", self.base)
    }

    /// What a jobs device subscribes to: the next-execution notification and the answers to
    /// its three requests. The `+` covers every job's `update` answers with one filter.
    pub fn subscriptions(&self) -> Vec<String> {
        let b = &self.base;
        vec![
            format!("{b}/notify-next"),
            format!("{b}/start-next/accepted"),
            format!("{b}/start-next/rejected"),
            format!("{b}/+/update/accepted"),
            format!("{b}/+/update/rejected"),
            format!("{b}/$next/get/accepted"),
            format!("{b}/$next/get/rejected"),
        ]
    }

    /// The topics a device publishes its requests to (for the policy check); `job` stands for
    /// any job id.
    pub fn requests(&self, job: &str) -> Vec<String> {
        vec![self.start_next(), self.next_get(), self.update(job)]
    }
}

/// An execution as AWS describes it to the device (JobExecution): the fields a device acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub job_id: String,
    pub status: String,
    pub execution_number: Option<u64>,
    pub version_number: Option<u64>,
    /// The document as AWS hands it over: a JSON value (a string holding JSON is read too).
    pub job_document: Option<Value>,
}

/// A number AWS may write as a number or, per the documentation's syntax, a string.
fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Execution {
    /// The `execution` object of an answer or notification; None when it has none (no
    /// pending execution) or it lacks a job id.
    pub fn from_answer(answer: &Value) -> Option<Execution> {
        let e = answer.get("execution")?;
        Some(Execution {
            job_id: e.get("jobId")?.as_str()?.to_string(),
            status: e
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            execution_number: number(e.get("executionNumber")),
            version_number: number(e.get("versionNumber")),
            job_document: e.get("jobDocument").cloned(),
        })
    }

    /// The execution's document, parsed into what the device knows how to do; Err is the
    /// reason the device rejects it.
    pub fn operation(&self) -> Result<Operation, String> {
        match &self.job_document {
            None => Err("the execution carries no job document".into()),
            Some(doc) => Operation::parse(doc),
        }
    }
}

/// What a job asks the device to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Firmware(Firmware),
    Config(ConfigChange),
}

/// `{"operation":"firmware_update","firmware":{"version","file","size","sha256","url"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Firmware {
    pub version: String,
    pub file: Option<String>,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub url: String,
}

/// `{"operation":"config","set":{"key": scalar, ...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    pub set: Map<String, Value>,
}

impl Operation {
    /// Reads a job document. A document held in a JSON string is parsed first. Every way it
    /// can be unusable is a reason, which the device sends as REJECTED.
    pub fn parse(doc: &Value) -> Result<Operation, String> {
        let parsed;
        let doc = match doc {
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text)
                    .map_err(|e| format!("the job document is not JSON: {e}"))?;
                &parsed
            }
            other => other,
        };
        let Some(obj) = doc.as_object() else {
            return Err("the job document is not a JSON object".into());
        };
        match obj.get("operation").and_then(Value::as_str) {
            Some("firmware_update") => {
                Firmware::parse(obj.get("firmware")).map(Operation::Firmware)
            }
            Some("config") => ConfigChange::parse(obj.get("set")).map(Operation::Config),
            Some(other) => Err(format!("unknown operation {other:?}")),
            None => Err("the job document has no \"operation\"".into()),
        }
    }

    /// The statusDetails sent with IN_PROGRESS (by start-next).
    pub fn step(&self) -> Value {
        match self {
            Operation::Firmware(_) => json!({"step": "downloading"}),
            Operation::Config(_) => json!({"step": "applying"}),
        }
    }

    /// What the device reports in its classic shadow before it says SUCCEEDED.
    pub fn reported(&self) -> Value {
        match self {
            Operation::Firmware(f) => json!({"firmware_version": f.version}),
            Operation::Config(c) => json!({"config": c.set}),
        }
    }

    /// The statusDetails sent with SUCCEEDED.
    pub fn succeeded_details(&self) -> Value {
        match self {
            Operation::Firmware(f) => json!({"firmware_version": f.version}),
            Operation::Config(c) => json!({"applied": c.applied()}),
        }
    }
}

impl Firmware {
    fn parse(v: Option<&Value>) -> Result<Firmware, String> {
        let f = v
            .and_then(Value::as_object)
            .ok_or("firmware_update: the document has no \"firmware\" object")?;
        let text = |name: &str| -> Result<String, String> {
            match f.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(format!(
                    "firmware_update: firmware.{name} is missing or not a non-empty string"
                )),
            }
        };
        let version = text("version")?;
        let url = text("url")?;
        let size = f
            .get("size")
            .and_then(Value::as_u64)
            .ok_or("firmware_update: firmware.size is missing or not a whole number of bytes")?;
        let sha256 = text("sha256")?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("firmware_update: firmware.sha256 is not 64 hex digits".into());
        }
        let file = f.get("file").and_then(Value::as_str).map(str::to_string);
        Ok(Firmware {
            version,
            file,
            size,
            sha256,
            url,
        })
    }
}

impl ConfigChange {
    fn parse(v: Option<&Value>) -> Result<ConfigChange, String> {
        let set = v
            .and_then(Value::as_object)
            .ok_or("config: the document has no \"set\" object")?;
        if set.is_empty() {
            return Err("config: \"set\" is empty".into());
        }
        for (k, v) in set {
            if !(v.is_number() || v.is_boolean() || v.is_string()) {
                return Err(format!(
                    "config: set.{k} is not a number, boolean or string"
                ));
            }
        }
        Ok(ConfigChange { set: set.clone() })
    }

    /// `key=value` pairs in the document's order, comma-separated: the statusDetails value
    /// that says what was applied (a string, as statusDetails values must be).
    pub fn applied(&self) -> String {
        self.set
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A statusDetails value as AWS accepts it: no control characters, 1 to 1,024 characters.
pub fn detail_value(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(DETAIL_MAX)
        .collect();
    if clean.trim().is_empty() {
        "-".into()
    } else {
        clean
    }
}

/// `{"reason": ...}`, the statusDetails of FAILED and REJECTED.
pub fn reason_details(reason: &str) -> Value {
    json!({"reason": detail_value(reason)})
}

/// The StartNextPendingJobExecution request.
pub fn start_next_request(token: &str, status_details: Option<&Value>) -> Value {
    let mut r = json!({"clientToken": token});
    if let Some(d) = status_details {
        r["statusDetails"] = d.clone();
    }
    r
}

/// The DescribeJobExecution request for `$next`, with the document.
pub fn next_get_request(token: &str) -> Value {
    json!({"clientToken": token, "includeJobDocument": true})
}

/// The UpdateJobExecution request: the new status and its details, the version the device
/// last saw (AWS rejects the update with VersionMismatch if it moved on meanwhile) and the
/// execution number, asking for the execution's state back.
pub fn update_request(
    token: &str,
    status: &str,
    status_details: &Value,
    expected_version: Option<u64>,
    execution_number: Option<u64>,
) -> Value {
    let mut r = json!({
        "status": status,
        "statusDetails": status_details,
        "includeJobExecutionState": true,
        "clientToken": token,
    });
    if let Some(v) = expected_version {
        r["expectedVersion"] = json!(v);
    }
    if let Some(n) = execution_number {
        r["executionNumber"] = json!(n);
    }
    r
}

/// A `…/rejected` answer (ErrorResponse).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: String,
    pub message: String,
    /// The execution's status as the answer gives it (`executionState.status`), if it does.
    pub execution_status: Option<String>,
}

impl Rejection {
    pub fn from_answer(answer: &Value) -> Rejection {
        let text = |k: &str| {
            answer
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Rejection {
            code: text("code"),
            message: text("message"),
            execution_status: answer
                .pointer("/executionState/status")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// The service ended the execution before the device's update (canceled, removed, timed
    /// out): the update comes too late, which a device meets when a job is canceled with
    /// force or times out, rather than a fault of the device.
    pub fn ended_by_service(&self) -> Option<&str> {
        self.execution_status
            .as_deref()
            .filter(|s| matches!(*s, "CANCELED" | "REMOVED" | "TIMED_OUT"))
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(s) = &self.execution_status {
            write!(f, " (execution {s})")?;
        }
        Ok(())
    }
}

/// How an update came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    /// Accepted; the execution's version after it, when the answer says.
    Accepted {
        version: Option<u64>,
    },
    Rejected(Rejection),
}

/// The deterministic draw behind `--fail-rate` and `--offline-rate`: the first 8 bytes of
/// SHA-256(`"<kind>\n<seed>\n<thing>\n<job id>"`), big-endian, as a fraction of 2^64. The
/// same inputs always give the same value, so a test can tell beforehand which devices a
/// rate picks.
pub fn draw(kind: &str, seed: u64, thing: &str, job_id: &str) -> f64 {
    let digest = Sha256::digest(format!("{kind}\n{seed}\n{thing}\n{job_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^64 as f64 is exact; the quotient is in [0, 1).
    u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0
}

/// Whether the draw of `kind` picks this device for this job at `rate` (0 never, 1 always).
pub fn picked(kind: &str, rate: f64, seed: u64, thing: &str, job_id: &str) -> bool {
    draw(kind, seed, thing, job_id) < rate
}

/// The draw kinds.
pub const FAIL: &str = "fail";
pub const OFFLINE: &str = "offline";

/// Checks a download against the document's size and SHA-256 as it streams in, so that no
/// body is ever held whole.
#[derive(Debug)]
pub struct Check {
    expected_size: u64,
    expected_sha256: String,
    received: u64,
    hash: Sha256,
}

impl Check {
    pub fn new(firmware: &Firmware) -> Check {
        Check {
            expected_size: firmware.size,
            expected_sha256: firmware.sha256.to_ascii_lowercase(),
            received: 0,
            hash: Sha256::new(),
        }
    }

    /// One piece of the body; Err once there is more than the document's size.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.received += chunk.len() as u64;
        if self.received > self.expected_size {
            return Err(format!(
                "size mismatch: more than the document's {} bytes",
                self.expected_size
            ));
        }
        self.hash.update(chunk);
        Ok(())
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// The whole body: its size and SHA-256 as the document says.
    pub fn finish(self) -> Result<(), String> {
        if self.received != self.expected_size {
            return Err(format!(
                "size mismatch: {} bytes, the document says {}",
                self.received, self.expected_size
            ));
        }
        let got: String = self
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != self.expected_sha256 {
            return Err(format!(
                "SHA-256 mismatch: {got}, the document says {}",
                self.expected_sha256
            ));
        }
        Ok(())
    }
}

/// A download's result: the bytes that came (counted whatever the outcome), and Err with the
/// reason it is unusable.
#[derive(Debug)]
pub struct Download {
    pub bytes: u64,
    pub result: Result<(), String>,
}

pub use crate::http_get::redact;

/// GETs the firmware at its URL (`http://`, or `https://` checked against the system's root
/// certificates) and checks its size and SHA-256 while it streams. The connection and the
/// answer's headers must come within `timeout`, and so must each piece of the body.
pub async fn download(firmware: &Firmware, timeout: Duration) -> Download {
    let mut check = Check::new(firmware);
    let result = fetch(&firmware.url, timeout, &mut check).await;
    let bytes = check.received();
    Download {
        bytes,
        result: result.and_then(|()| check.finish()),
    }
}

async fn fetch(url: &str, timeout: Duration, check: &mut Check) -> Result<(), String> {
    let shown = redact(url).to_string();
    let fail = |e: &dyn std::fmt::Display| format!("GET {shown}: {e}");
    if url.contains("${aws:iot:s3-presigned-url") {
        // AWS replaces the placeholder only for a job with a presignedUrlConfig.
        return Err(fail(&"the presigned-URL placeholder was not replaced (does the job have a presignedUrlConfig?)"));
    }
    let deadline = Instant::now() + timeout;
    let head = crate::http_get::get(url);
    let response = tokio::time::timeout_at(deadline.into(), head)
        .await
        .map_err(|_| fail(&format!("no answer within {}s", timeout.as_secs_f64())))??;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        // A little of the body says why (S3's error document).
        let text = tokio::time::timeout(timeout, body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| {
                String::from_utf8_lossy(&b.to_bytes())
                    .trim()
                    .chars()
                    .take(200)
                    .collect::<String>()
            })
            .unwrap_or_default();
        return Err(fail(&format!(
            "HTTP {}{}",
            status.as_u16(),
            if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            }
        )));
    }
    loop {
        let frame = tokio::time::timeout(timeout, body.frame())
            .await
            .map_err(|_| fail(&format!("the body stalled for {}s", timeout.as_secs_f64())))?;
        match frame {
            None => return Ok(()),
            Some(Err(e)) => return Err(fail(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    check.update(&data).map_err(|e| fail(&e))?;
                }
            }
        }
    }
}

/// The jobs exchange of one device on its MQTT session: each request carries its own
/// clientToken and waits for the answer that echoes it.
pub struct JobsClient {
    topics: Topics,
    thing: String,
    tokens: u64,
}

impl JobsClient {
    pub fn new(thing: &str) -> JobsClient {
        JobsClient {
            topics: Topics::new(thing),
            thing: thing.to_string(),
            tokens: 0,
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Subscribes to the notification and the answers (one SUBACK).
    pub async fn subscribe(&self, session: &mut Session) -> Result<(), DeviceError> {
        session.subscribe(&self.topics.subscriptions()).await
    }

    fn token(&mut self) -> String {
        self.tokens += 1;
        format!("iotreg-jobs-{}-{}", self.thing, self.tokens)
    }

    /// Publishes `request` to `topic` and waits for `topic/accepted` or `topic/rejected`
    /// carrying this request's clientToken.
    async fn ask(
        &mut self,
        session: &mut Session,
        topic: &str,
        mut request: Value,
    ) -> Result<Result<Value, Rejection>, DeviceError> {
        let token = self.token();
        request["clientToken"] = json!(token);
        session.publish_qos1(topic, request.to_string()).await?;
        let accepted = format!("{topic}/accepted");
        let rejected = format!("{topic}/rejected");
        let deadline = Instant::now() + session.timeout();
        let awaited = format!("{accepted} or rejected for clientToken {token}");
        let answer = session
            .wait_for(
                |m: &Message| {
                    (m.topic == accepted || m.topic == rejected)
                        && m.json().is_some_and(|j| {
                            j.get("clientToken").and_then(Value::as_str) == Some(&token)
                        })
                },
                deadline,
                &awaited,
            )
            .await?;
        let body = answer.json().unwrap_or_default();
        Ok(if answer.topic == accepted {
            Ok(body)
        } else {
            Err(Rejection::from_answer(&body))
        })
    }

    /// The next pending execution with its document (DescribeJobExecution `$next`), or None.
    pub async fn peek_next(
        &mut self,
        session: &mut Session,
    ) -> Result<Option<Execution>, DeviceError> {
        let topic = self.topics.next_get();
        match self.ask(session, &topic, next_get_request("")).await? {
            Ok(answer) => Ok(Execution::from_answer(&answer)),
            // No pending execution may be answered as not found rather than as an empty
            // answer; either way there is nothing to do.
            Err(r) if r.code == "ResourceNotFound" => Ok(None),
            Err(r) => Err(DeviceError::Protocol(format!(
                "{} DescribeJobExecution $next rejected: {r}",
                self.thing
            ))),
        }
    }

    /// StartNextPendingJobExecution with these statusDetails: the execution it started (or
    /// resumed), or None when nothing is pending.
    pub async fn start_next(
        &mut self,
        session: &mut Session,
        status_details: Option<&Value>,
    ) -> Result<Option<Execution>, DeviceError> {
        let topic = self.topics.start_next();
        match self
            .ask(session, &topic, start_next_request("", status_details))
            .await?
        {
            Ok(answer) => Ok(Execution::from_answer(&answer)),
            Err(r) => Err(DeviceError::Protocol(format!(
                "{} StartNextPendingJobExecution rejected: {r}",
                self.thing
            ))),
        }
    }

    /// UpdateJobExecution of `execution` to `status` with `details`.
    pub async fn update(
        &mut self,
        session: &mut Session,
        execution: &Execution,
        status: &str,
        details: &Value,
    ) -> Result<Updated, DeviceError> {
        let topic = self.topics.update(&execution.job_id);
        let request = update_request(
            "",
            status,
            details,
            execution.version_number,
            execution.execution_number,
        );
        Ok(match self.ask(session, &topic, request).await? {
            Ok(answer) => Updated::Accepted {
                version: number(answer.pointer("/executionState/versionNumber")),
            },
            Err(r) => Updated::Rejected(r),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firmware_doc() -> Value {
        json!({"operation": "firmware_update", "firmware": {
            "version": "2.0.0", "file": "fw.bin", "size": 3,
            "sha256": "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            "url": "http://127.0.0.1:1/b/fw.bin?X-Amz-Signature=s"}})
    }

    #[test]
    fn the_topics_are_the_reserved_jobs_topics() {
        let t = Topics::new("t1");
        assert_eq!(t.start_next(), "$aws/things/t1/jobs/start-next");
        assert_eq!(t.next_get(), "$aws/things/t1/jobs/$next/get");
        assert_eq!(t.update("fw-1"), "$aws/things/t1/jobs/fw-1/update");
        assert_eq!(t.notify_next(), "$aws/things/t1/jobs/notify-next");
        let subs = t.subscriptions();
        assert!(subs.contains(&"$aws/things/t1/jobs/+/update/accepted".to_string()));
        assert!(subs.contains(&"$aws/things/t1/jobs/start-next/rejected".to_string()));
        assert_eq!(subs.len(), 7);
    }

    #[test]
    fn a_firmware_document_is_read_with_its_step_report_and_details() {
        let op = Operation::parse(&firmware_doc()).unwrap();
        let Operation::Firmware(f) = &op else {
            panic!("{op:?}")
        };
        assert_eq!(f.version, "2.0.0");
        assert_eq!(f.size, 3);
        assert_eq!(f.file.as_deref(), Some("fw.bin"));
        // Hex is compared in lowercase.
        assert!(f.sha256.starts_with("ba7816bf"));
        assert_eq!(op.step(), json!({"step": "downloading"}));
        assert_eq!(op.reported(), json!({"firmware_version": "2.0.0"}));
        assert_eq!(op.succeeded_details(), json!({"firmware_version": "2.0.0"}));
        // The same document as a JSON string.
        let text = Value::String(firmware_doc().to_string());
        assert_eq!(Operation::parse(&text).unwrap(), op);
    }

    #[test]
    fn a_config_document_is_read_with_its_step_report_and_details() {
        let doc = json!({"operation": "config",
            "set": {"reporting_interval": 30, "verbose": true, "mode": "eco"}});
        let op = Operation::parse(&doc).unwrap();
        assert_eq!(op.step(), json!({"step": "applying"}));
        assert_eq!(
            op.reported(),
            json!({"config": {"reporting_interval": 30, "verbose": true, "mode": "eco"}})
        );
        assert_eq!(
            op.succeeded_details(),
            json!({"applied": "reporting_interval=30,verbose=true,mode=eco"})
        );
        let one =
            Operation::parse(&json!({"operation": "config", "set": {"reporting_interval": 30}}))
                .unwrap();
        assert_eq!(
            one.succeeded_details(),
            json!({"applied": "reporting_interval=30"})
        );
    }

    #[test]
    fn unusable_documents_give_the_reason_to_reject() {
        let cases = [
            (
                json!({"operation": "reboot"}),
                "unknown operation \"reboot\"",
            ),
            (json!({"set": {}}), "no \"operation\""),
            (json!([1, 2]), "not a JSON object"),
            (Value::String("{not json".into()), "not JSON"),
            (
                json!({"operation": "config", "set": {}}),
                "\"set\" is empty",
            ),
            (
                json!({"operation": "config", "set": {"a": [1]}}),
                "set.a is not a number",
            ),
            (json!({"operation": "config"}), "no \"set\" object"),
            (
                json!({"operation": "firmware_update"}),
                "no \"firmware\" object",
            ),
        ];
        for (doc, expected) in cases {
            let e = Operation::parse(&doc).unwrap_err();
            assert!(e.contains(expected), "{doc}: {e}");
        }
        let mut bad = firmware_doc();
        bad["firmware"]["sha256"] = json!("abc");
        assert!(Operation::parse(&bad).unwrap_err().contains("64 hex"));
        let mut bad = firmware_doc();
        bad["firmware"]["size"] = json!(-1);
        assert!(Operation::parse(&bad)
            .unwrap_err()
            .contains("firmware.size"));
        let mut bad = firmware_doc();
        bad["firmware"].as_object_mut().unwrap().remove("version");
        assert!(Operation::parse(&bad)
            .unwrap_err()
            .contains("firmware.version"));
        let no_doc = Execution {
            job_id: "j".into(),
            status: "IN_PROGRESS".into(),
            execution_number: Some(1),
            version_number: Some(2),
            job_document: None,
        };
        assert!(no_doc.operation().unwrap_err().contains("no job document"));
    }

    #[test]
    fn executions_are_read_from_answers_and_notifications() {
        let answer = json!({"execution": {"jobId": "fw-1", "thingName": "t1",
            "status": "IN_PROGRESS", "versionNumber": 2, "executionNumber": 1,
            "jobDocument": firmware_doc()}, "clientToken": "c", "timestamp": 1});
        let e = Execution::from_answer(&answer).unwrap();
        assert_eq!(e.job_id, "fw-1");
        assert_eq!(e.status, "IN_PROGRESS");
        assert_eq!((e.execution_number, e.version_number), (Some(1), Some(2)));
        assert!(matches!(e.operation(), Ok(Operation::Firmware(_))));
        // Numbers written as strings, as the documentation's syntax shows them.
        let quoted =
            json!({"execution": {"jobId": "j", "versionNumber": "3", "executionNumber": "4"}});
        let e = Execution::from_answer(&quoted).unwrap();
        assert_eq!((e.execution_number, e.version_number), (Some(4), Some(3)));
        // No pending execution: start-next's answer and notify-next have no `execution`.
        assert_eq!(Execution::from_answer(&json!({"timestamp": 1})), None);
        assert_eq!(Execution::from_answer(&json!({"execution": {}})), None);
    }

    #[test]
    fn the_request_payloads() {
        let step = json!({"step": "downloading"});
        assert_eq!(
            start_next_request("c1", Some(&step)),
            json!({"clientToken": "c1", "statusDetails": {"step": "downloading"}})
        );
        assert_eq!(start_next_request("c1", None), json!({"clientToken": "c1"}));
        assert_eq!(
            next_get_request("c2"),
            json!({"clientToken": "c2", "includeJobDocument": true})
        );
        assert_eq!(
            update_request(
                "c3",
                "SUCCEEDED",
                &json!({"firmware_version": "2.0.0"}),
                Some(2),
                Some(1)
            ),
            json!({"status": "SUCCEEDED", "statusDetails": {"firmware_version": "2.0.0"},
                   "includeJobExecutionState": true, "clientToken": "c3",
                   "expectedVersion": 2, "executionNumber": 1})
        );
        assert_eq!(
            update_request(
                "c4",
                "FAILED",
                &reason_details("simulated failure"),
                None,
                None
            ),
            json!({"status": "FAILED", "statusDetails": {"reason": "simulated failure"},
                   "includeJobExecutionState": true, "clientToken": "c4"})
        );
    }

    #[test]
    fn detail_values_are_what_aws_accepts() {
        assert_eq!(detail_value("a\nb"), "a b");
        assert_eq!(detail_value(""), "-");
        assert_eq!(detail_value(&"x".repeat(2000)).chars().count(), 1024);
    }

    #[test]
    fn rejections_say_whether_the_service_ended_the_execution() {
        let r = Rejection::from_answer(&json!({"code": "InvalidStateTransition",
            "message": "canceled", "clientToken": "c",
            "executionState": {"status": "CANCELED", "versionNumber": 3}}));
        assert_eq!(r.ended_by_service(), Some("CANCELED"));
        assert_eq!(
            r.to_string(),
            "InvalidStateTransition: canceled (execution CANCELED)"
        );
        let r = Rejection::from_answer(&json!({"code": "VersionMismatch", "message": "m",
            "executionState": {"status": "IN_PROGRESS"}}));
        assert_eq!(r.ended_by_service(), None);
        let r = Rejection::from_answer(&json!({"code": "InvalidJson"}));
        assert_eq!(r.to_string(), "InvalidJson");
    }

    #[test]
    fn the_draw_is_stable_and_its_formula_is_the_documented_one() {
        let a = draw(FAIL, 7, "sensor-0001", "fw-1");
        assert_eq!(a, draw(FAIL, 7, "sensor-0001", "fw-1"));
        assert!((0.0..1.0).contains(&a));
        // Every input changes it.
        assert_ne!(a, draw(OFFLINE, 7, "sensor-0001", "fw-1"));
        assert_ne!(a, draw(FAIL, 8, "sensor-0001", "fw-1"));
        assert_ne!(a, draw(FAIL, 7, "sensor-0002", "fw-1"));
        assert_ne!(a, draw(FAIL, 7, "sensor-0001", "fw-2"));
        // The formula, by hand: SHA-256("fail\n0\nt\nj"), first 8 bytes big-endian / 2^64.
        let digest = Sha256::digest(b"fail\n0\nt\nj");
        let x = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(draw(FAIL, 0, "t", "j"), x as f64 / 2f64.powi(64));
        // Values worked out apart from this code (Python's hashlib), so that a change of
        // formula cannot pass unnoticed: tests and users predict devices with it.
        assert_eq!(x, 0x989040471caec045);
        assert!((draw(FAIL, 0, "t", "j") - 0.595951096879328).abs() < 1e-12);
        assert!((draw(OFFLINE, 7, "sensor-0001", "fw-1") - 0.27115148321508986).abs() < 1e-12);
        assert!(!picked(FAIL, 0.0, 7, "sensor-0001", "fw-1"));
        assert!(picked(FAIL, 1.0, 7, "sensor-0001", "fw-1"));
    }

    #[test]
    fn the_rate_is_honoured_over_ten_thousand_draws() {
        for kind in [FAIL, OFFLINE] {
            for rate in [0.05, 0.4, 0.9] {
                let n = (0..10_000)
                    .filter(|i| picked(kind, rate, 3, &format!("sensor-{i:05}"), "fw-2.0.0"))
                    .count();
                let share = n as f64 / 10_000.0;
                assert!(
                    (share - rate).abs() <= 0.01,
                    "{kind} at {rate}: {share} of 10,000"
                );
            }
        }
    }

    fn firmware(body: &[u8]) -> Firmware {
        Firmware {
            version: "2.0.0".into(),
            file: None,
            size: body.len() as u64,
            sha256: Sha256::digest(body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            url: String::new(),
        }
    }

    #[test]
    fn the_check_takes_size_and_sha256() {
        let f = firmware(b"hello firmware");
        let mut c = Check::new(&f);
        c.update(b"hello ").unwrap();
        c.update(b"firmware").unwrap();
        assert_eq!(c.received(), 14);
        c.finish().unwrap();

        let mut c = Check::new(&f);
        c.update(b"hello firmwarX").unwrap();
        let e = c.finish().unwrap_err();
        assert!(e.starts_with("SHA-256 mismatch: "), "{e}");
        assert!(
            e.ends_with(&format!("the document says {}", f.sha256)),
            "{e}"
        );

        let mut c = Check::new(&f);
        c.update(b"hello").unwrap();
        assert_eq!(
            c.finish().unwrap_err(),
            "size mismatch: 5 bytes, the document says 14"
        );

        let mut c = Check::new(&f);
        let e = c.update(b"hello firmware and more").unwrap_err();
        assert_eq!(e, "size mismatch: more than the document's 14 bytes");
    }

    /// A one-shot HTTP server answering each connection with `answers` in turn.
    async fn serve(answers: Vec<(String, Vec<u8>)>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(
                    req.starts_with("GET /b/fw.bin?X-Amz-Signature=s HTTP/1.1"),
                    "{req}"
                );
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(&body).await.unwrap();
            }
        });
        port
    }

    #[tokio::test]
    async fn a_download_is_checked_and_refusals_are_reasons() {
        let body = b"\x7fELF firmware 2.0.0".to_vec();
        let mut corrupt = body.clone();
        corrupt[5] ^= 1;
        let port = serve(vec![
            ("200 OK".into(), body.clone()),
            ("200 OK".into(), corrupt),
            (
                "403 Forbidden".into(),
                b"<Error><Code>AccessDenied</Code></Error>".to_vec(),
            ),
        ])
        .await;
        let mut f = firmware(&body);
        f.url = format!("http://127.0.0.1:{port}/b/fw.bin?X-Amz-Signature=s");
        let t = Duration::from_secs(5);
        let ok = download(&f, t).await;
        assert_eq!(ok.bytes, body.len() as u64);
        ok.result.unwrap();
        let bad = download(&f, t).await;
        assert_eq!(bad.bytes, body.len() as u64);
        assert!(bad.result.unwrap_err().contains("SHA-256 mismatch"));
        let refused = download(&f, t).await.result.unwrap_err();
        assert_eq!(
            refused,
            format!("GET http://127.0.0.1:{port}/b/fw.bin: HTTP 403: <Error><Code>AccessDenied</Code></Error>")
        );
        // The signature never shows in a reason.
        assert!(!refused.contains("Signature"));
        f.url = "${aws:iot:s3-presigned-url-v2:https://s3.us-east-1.amazonaws.com/b/fw.bin}".into();
        assert!(download(&f, t)
            .await
            .result
            .unwrap_err()
            .contains("placeholder was not replaced"));
        f.url = "ftp://x/fw.bin".into();
        assert!(download(&f, t)
            .await
            .result
            .unwrap_err()
            .contains("not an http(s) link"));
    }
}
