//! `iotreg verify`: every resource's checks, then the data path end to end — a test reading
//! published to the device topic must be routed by the rule to the function, whose log shows
//! it with the right alert level — and the report as text, JSON or JUnit XML.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_iotdataplane::primitives::Blob;
use serde::Serialize;

use crate::engine::{Ctx, Resource};
use crate::resources::Env;

pub mod anomaly;
pub mod authorization;
pub mod device;

/// The device's own checks (`verify --skip-device` skips them).
pub const DEVICE_AUTHORIZATION: &str = "policy.authorization";

/// The result of one verification check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// Stable dotted name, e.g. `certificate.active` (a JUnit testcase name).
    pub name: String,
    /// The resource it is about, e.g. `thing temperature-sensor-abc123`.
    pub resource: String,
    pub status: CheckStatus,
    /// Why it passed, failed or was skipped: names what differs.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
    Skip,
}

impl Check {
    pub fn new(name: &str, resource: &str, ok: bool, reason: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            resource: resource.into(),
            status: if ok {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            reason: reason.into(),
        }
    }
    pub fn pass(name: &str, resource: &str, reason: impl Into<String>) -> Check {
        Check::new(name, resource, true, reason)
    }
    pub fn fail(name: &str, resource: &str, reason: impl Into<String>) -> Check {
        Check::new(name, resource, false, reason)
    }
    pub fn skip(name: &str, resource: &str, reason: impl Into<String>) -> Check {
        Check {
            status: CheckStatus::Skip,
            ..Check::new(name, resource, true, reason)
        }
    }
}

pub const E2E: &str = "e2e.data_path";
pub const E2E_ALERT: &str = "e2e.alert";
const READING: f64 = 85.5;
const EXPECTED_LEVEL: &str = "HIGH";

/// A check with how long it took, for JUnit.
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    #[serde(flatten)]
    pub check: Check,
    pub seconds: f64,
}

/// Runs every resource's checks concurrently; results in plan order.
pub async fn resource_checks(plan: &[Box<dyn Resource>], cx: &Ctx) -> Vec<Timed> {
    let runs = plan.iter().map(|r| async move {
        let t0 = Instant::now();
        let checks = r.check(cx).await;
        let seconds = t0.elapsed().as_secs_f64() / checks.len().max(1) as f64;
        checks
            .into_iter()
            .map(|check| Timed { check, seconds })
            .collect::<Vec<_>>()
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

pub fn marker() -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("OS randomness");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("iotreg-verify-{hex}")
}

/// The alert level a handler invocation logged, from the recipe's messages (or an explicit
/// `alert_level` in the output).
pub fn level_in(block: &[String]) -> Option<&'static str> {
    for line in block {
        if line.contains("High temperature alert") || line.contains("\"alert_level\": \"HIGH\"") {
            return Some("HIGH");
        }
        if line.contains("Moderate temperature warning")
            || line.contains("\"alert_level\": \"MEDIUM\"")
        {
            return Some("MEDIUM");
        }
        if line.contains("Normal temperature reading")
            || line.contains("\"alert_level\": \"NORMAL\"")
        {
            return Some("NORMAL");
        }
    }
    None
}

/// The invocation around `index` in one stream's events: from its `START RequestId:` line to
/// its `END RequestId:` line. Lambda runs one invocation at a time per stream, so the block is
/// exactly that invocation's output, whatever format the handler logs in. None while the
/// invocation is still running (no `END` yet): its later lines may not have been written.
pub fn invocation_block(events: &[String], index: usize) -> Option<&[String]> {
    let start = events[..=index]
        .iter()
        .rposition(|e| e.starts_with("START RequestId:"))
        .unwrap_or(0);
    let end = events[index..]
        .iter()
        .position(|e| e.starts_with("END RequestId:"))?;
    Some(&events[start..=index + end])
}

/// The alert a HIGH reading's invocation published, from the handler's log lines: its SNS
/// MessageId (SNS gives one only once the topic has accepted the message), or why not.
pub fn alert_in(block: &[String], topic_arn: &str) -> Result<String, String> {
    let published = format!("Alert published to {topic_arn}: MessageId ");
    for line in block {
        if let Some(at) = line.find(&published) {
            return Ok(line[at + published.len()..].trim().to_string());
        }
        if let Some(at) = line.find("Alert not published") {
            return Err(line[at..].trim().to_string());
        }
    }
    Err(format!(
        "the invocation logged no \"Alert published to {topic_arn}\" line (a handler without the alert, or ALERT_TOPIC_ARN not set?)"
    ))
}

/// Publishes the test reading and waits (polling, bounded) for the function's log to show it:
/// the `e2e.data_path` check, and with monitoring on the `e2e.alert` check (the handler's
/// alert for the reading reached the alert topic).
pub async fn data_path(env: &Env, timeout: Duration) -> Vec<Check> {
    let d = &env.d;
    let topic = format!("sensor/temperature/{}", d.thing.name);
    let group = format!("/aws/lambda/{}", d.function.name);
    let res = format!("data path {topic} → {} → {group}", d.rule.name);
    let m = &d.monitoring;
    let alert_res = format!("alert {} → {}", d.function.name, m.topic_name);
    // Whatever stops the data path also stops the alert that depends on it.
    let fail = |reason: String| {
        let mut out = vec![Check::fail(E2E, &res, reason)];
        if m.enabled {
            out.push(Check::fail(
                E2E_ALERT,
                &alert_res,
                "no invocation to look at: see e2e.data_path",
            ));
        }
        out
    };
    let marker = marker();
    let payload = serde_json::json!({
        "temperature": READING,
        "humidity": 65,
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "device": d.thing.name,
        "battery_level": 87,
        "iotreg_verify": marker,
    });
    // Allow for clock skew between this machine and the log timestamps.
    let since_ms = crate::state::now_ms().saturating_sub(60_000) as i64;
    let data = match env.aws.data().await {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = data
        .publish()
        .topic(&topic)
        .qos(1)
        .payload(Blob::new(payload.to_string()))
        .send()
        .await
    {
        return fail(crate::aws::failed("topic", &topic, "iot-data:Publish", e).to_string());
    }
    let (block, stream) = match wait_for_marker(env, &marker, since_ms, timeout).await {
        Ok(found) => found,
        Err(WaitError::Failed(e)) => return fail(e),
        Err(WaitError::TimedOut) => {
            return fail(format!(
                "published an {READING} °C reading ({marker}) to {topic}, but it did not appear in {group} within {}s. \
                 Check that the rule is enabled and may invoke the function. If this endpoint has no data path \
                 (e.g. plain moto, which runs no rules engine), use --skip-e2e",
                timeout.as_secs_f64()
            ))
        }
    };
    let level = level_in(&block);
    let mut out = vec![match level {
        Some(l) if l == EXPECTED_LEVEL => Check::pass(
            E2E,
            &res,
            format!("reading {READING} °C ({marker}) reached {group} (stream {stream}) with alert level {l}"),
        ),
        Some(l) => Check::fail(
            E2E,
            &res,
            format!("reading {READING} °C reached {group} but was classified {l}, expected {EXPECTED_LEVEL}"),
        ),
        None => Check::fail(
            E2E,
            &res,
            format!("reading {READING} °C reached {group} (stream {stream}) but the invocation logged no alert level"),
        ),
    }];
    if m.enabled {
        out.push(match alert_in(&block, &m.topic_arn) {
            Ok(id) => Check::pass(
                E2E_ALERT,
                &alert_res,
                format!(
                    "the {READING} °C reading's alert reached {} (SNS MessageId {id})",
                    m.topic_name
                ),
            ),
            Err(why) => Check::fail(
                E2E_ALERT,
                &alert_res,
                format!(
                    "no alert for the {READING} °C reading reached {}: {why}",
                    m.topic_name
                ),
            ),
        });
    }
    out
}

/// Why a reading was not found in the function's log.
pub enum WaitError {
    /// The log could not be read.
    Failed(String),
    /// Not there within the timeout.
    TimedOut,
}

/// Polls (backing off, bounded by `timeout`) the function's log for the invocation that
/// logged `marker`: its log lines and the stream name.
pub async fn wait_for_marker(
    env: &Env,
    marker: &str,
    since_ms: i64,
    timeout: Duration,
) -> Result<(Vec<String>, String), WaitError> {
    let group = format!("/aws/lambda/{}", env.d.function.name);
    let found = poll(timeout, || async {
        let found = find_marker(env, &group, marker, since_ms).await?;
        let done = found.is_some();
        Ok((found, done))
    })
    .await;
    match found {
        Ok((Some(found), _)) => Ok(found),
        Ok((None, _)) => Err(WaitError::TimedOut),
        Err(e) => Err(WaitError::Failed(e)),
    }
}

/// Calls `attempt` until it says it is done or `timeout` has passed, backing off from 250 ms
/// to 2 s between calls (what an end-to-end check waits for takes seconds to show in a log):
/// the last value, and whether it was done.
pub async fn poll<T, F, Fut>(timeout: Duration, mut attempt: F) -> Result<(T, bool), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(T, bool), String>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(250);
    loop {
        let (value, done) = attempt().await?;
        if done || Instant::now() >= deadline {
            return Ok((value, done));
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The events of a log group since `start_ms` (milliseconds), optionally only those matching a
/// filter pattern or in one stream, every page up to 20 (polled checks look at seconds of
/// log). None while the group does not exist: it appears with the function's first invocation.
pub async fn log_events(
    env: &Env,
    group: &str,
    pattern: Option<&str>,
    stream: Option<&str>,
    start_ms: i64,
) -> Result<Option<Vec<aws_sdk_cloudwatchlogs::types::FilteredLogEvent>>, String> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..20 {
        let mut call = env
            .aws
            .logs
            .filter_log_events()
            .log_group_name(group)
            .start_time(start_ms)
            .set_filter_pattern(pattern.map(str::to_string))
            .set_next_token(token.clone());
        if let Some(stream) = stream {
            call = call.log_stream_names(stream);
        }
        let page = match call.send().await {
            Ok(p) => p,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => {
                return Err(crate::aws::failed("log group", group, "FilterLogEvents", e).to_string())
            }
        };
        events.extend(page.events().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(Some(events))
}

/// Finds the marker's event; returns its invocation's log lines and the stream name.
async fn find_marker(
    env: &Env,
    group: &str,
    marker: &str,
    since_ms: i64,
) -> Result<Option<(Vec<String>, String)>, String> {
    let pattern = format!("\"{marker}\"");
    let Some(found) = log_events(env, group, Some(&pattern), None, since_ms).await? else {
        return Ok(None);
    };
    // Confirm locally: an emulator that ignores the pattern would return everything.
    let Some(hit) = found
        .iter()
        .find(|e| e.message().is_some_and(|m| m.contains(marker)))
    else {
        return Ok(None);
    };
    let stream = hit.log_stream_name().unwrap_or_default().to_string();
    let from = hit.timestamp().unwrap_or(since_ms) - 60_000;
    let events: Vec<String> = log_events(env, group, None, Some(&stream), from)
        .await?
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.message().map(str::to_string))
        .collect();
    let Some(index) = events.iter().position(|m| m.contains(marker)) else {
        return Ok(None);
    };
    // Until the invocation has ended, keep polling: its alert line may still be on its way.
    Ok(invocation_block(&events, index).map(|block| (block.to_vec(), stream)))
}

/// JUnit XML: one testcase per check; failures carry the reason, skips are marked skipped.
pub fn junit(deployment: &str, checks: &[Timed], total: Duration) -> String {
    let count = |s: CheckStatus| checks.iter().filter(|c| c.check.status == s).count();
    let (failures, skipped) = (count(CheckStatus::Fail), count(CheckStatus::Skip));
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let header = format!(
        "name=\"iotreg verify\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\"",
        checks.len(),
        total.as_secs_f64()
    );
    xml.push_str(&format!("<testsuites {header}>\n  <testsuite {header}>\n"));
    for t in checks {
        let c = &t.check;
        xml.push_str(&format!(
            "    <testcase classname=\"iotreg.{}\" name=\"{}\" time=\"{:.3}\">\n",
            escape(deployment),
            escape(&c.name),
            t.seconds
        ));
        match c.status {
            CheckStatus::Fail => xml.push_str(&format!(
                "      <failure message=\"{}\">{}: {}</failure>\n",
                escape(&c.reason),
                escape(&c.resource),
                escape(&c.reason)
            )),
            CheckStatus::Skip => xml.push_str(&format!(
                "      <skipped message=\"{}\"/>\n",
                escape(&c.reason)
            )),
            CheckStatus::Pass => xml.push_str(&format!(
                "      <system-out>{}: {}</system-out>\n",
                escape(&c.resource),
                escape(&c.reason)
            )),
        }
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Writes the JUnit file whole or not at all, so CI never reads half a report.
pub fn write_junit(path: &Path, xml: &str) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path, xml.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_invocation_block_is_bounded_by_start_and_end() {
        let ev = lines(&[
            "START RequestId: a Version: $LATEST",
            "[INFO]\tt\ta\tReceived IoT data: {\"temperature\": 20}",
            "[INFO]\tt\ta\tNormal temperature reading: 20°C from d",
            "END RequestId: a",
            "START RequestId: b Version: $LATEST",
            "[INFO]\tt\tb\tReceived IoT data: {\"iotreg_verify\": \"m\"}",
            "[WARNING]\tt\tb\tHigh temperature alert: 85.5°C from d",
            "END RequestId: b",
            "REPORT RequestId: b",
        ]);
        let block = invocation_block(&ev, 5).unwrap();
        assert_eq!(block.len(), 4);
        assert_eq!(level_in(block), Some("HIGH"));
        assert_eq!(level_in(invocation_block(&ev, 1).unwrap()), Some("NORMAL"));
        // An invocation still running (no END yet) is not judged.
        assert_eq!(invocation_block(&ev[..6], 5), None);
    }

    #[test]
    fn the_alert_is_read_from_the_invocation() {
        let arn = "arn:aws:sns:us-east-1:1:alerts";
        let block = lines(&[
            "[WARNING]\tt\tb\tHigh temperature alert: 85.5°C from d",
            "[INFO]\tt\tb\tAlert published to arn:aws:sns:us-east-1:1:alerts: MessageId 42-a",
        ]);
        assert_eq!(alert_in(&block, arn), Ok("42-a".to_string()));
        // Published to another topic is not this deployment's alert.
        assert!(alert_in(&block, "arn:aws:sns:us-east-1:1:other").is_err());
        let failed = lines(&[
            "[ERROR]\tt\tb\tAlert not published to arn:aws:sns:us-east-1:1:alerts: AuthorizationError",
        ]);
        let why = alert_in(&failed, arn).unwrap_err();
        assert!(why.contains("AuthorizationError"), "{why}");
    }

    #[test]
    fn levels_follow_the_recipes_messages() {
        assert_eq!(
            level_in(&lines(&["Moderate temperature warning: 65°C from d"])),
            Some("MEDIUM")
        );
        assert_eq!(level_in(&lines(&["nothing here"])), None);
    }

    #[test]
    fn junit_has_a_testcase_per_check_with_failures_and_skips() {
        let t = |c| Timed {
            check: c,
            seconds: 0.5,
        };
        let checks = vec![
            t(Check::pass("thing.configuration", "thing x", "ok")),
            t(Check::fail(
                "rule.configuration",
                "topic rule r",
                "enabled: false → true <&>",
            )),
            t(Check::skip(E2E, "data path", "--skip-e2e")),
        ];
        let xml = junit("abc123", &checks, Duration::from_secs(2));
        assert!(xml.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""));
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert!(
            xml.contains("<failure message=\"enabled: false → true &lt;&amp;&gt;\">topic rule r: ")
        );
        assert!(xml.contains("<skipped message=\"--skip-e2e\"/>"));
        assert!(xml.contains("classname=\"iotreg.abc123\" name=\"thing.configuration\""));
    }
}
