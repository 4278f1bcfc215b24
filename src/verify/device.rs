//! `verify` as the device: the checks made with the device's own certificate and key, the way
//! the device itself will connect in the field. Everything the cloud-side checks cannot see
//! (a policy that refuses the device, a client id that does not match the thing name, a
//! certificate attached to the wrong thing, the wrong endpoint or CA) fails here.
//!
//! - `device.connect`: mutual-TLS connect with the device's files, client id = thing name
//!   (once per MQTT protocol of `device.protocols`);
//! - `device.publish`: a QoS 1 publish to its reading topic is acknowledged (per protocol;
//!   HTTPS: `POST /topics/…` answered 200);
//! - `device.e2e`: a marked reading the device published reaches the rule → function → log
//!   (and, with monitoring, the function's alert reaches the alert topic);
//! - `device.shadow`: a reported update is accepted, and a desired change made through the
//!   service arrives at the device as a delta, which it answers;
//! - `device.least_privilege`: connecting with another thing's client id, and publishing to
//!   another thing's topic, are both refused by the gateway.

use std::time::Duration;

use aws_sdk_iotdataplane::primitives::Blob;
use serde_json::{json, Value};

use super::{wait_for_marker, Check, WaitError};
use crate::device::sigv4::Signer;
use crate::device::{DeviceError, DeviceFiles, Endpoint, Protocol, Session};
use crate::resources::Env;

pub const CONNECT: &str = "device.connect";
pub const PUBLISH: &str = "device.publish";
pub const E2E: &str = "device.e2e";
pub const SHADOW: &str = "device.shadow";
pub const LEAST_PRIVILEGE: &str = "device.least_privilege";

/// The reading the device publishes for `device.e2e`: HIGH, so that with monitoring its alert
/// goes out too (the same reading as `e2e.data_path`).
const READING: f64 = 85.5;

/// What every device's checks share.
pub struct Run<'a> {
    pub env: &'a Env,
    pub endpoint: &'a Endpoint,
    /// SigV4 credentials, when `wss` is among the protocols.
    pub signer: Option<&'a Signer>,
    pub protocols: &'a [Protocol],
    /// Bounds every connect and every wait for an answer from the gateway.
    pub timeout: Duration,
    /// How long the reading may take to show in the function's log.
    pub e2e_timeout: Duration,
    pub skip_e2e: bool,
    /// The device policy as deployed: whether the shadow over MQTT is meant to work.
    pub policy: &'a Value,
}

/// The checks for one device; `other` is another thing's name, to act as.
pub async fn checks(run: &Run<'_>, files: &DeviceFiles, other: &str) -> Vec<Check> {
    let thing = &files.thing;
    let mut out = Vec::new();
    // The protocol e2e and the shadow use: the first that connects with the certificate.
    let mut mqtt_ok: Option<Protocol> = None;
    for &protocol in run.protocols {
        let resource = format!(
            "device {thing} over {protocol} ({})",
            run.endpoint.authority(run.endpoint.port(protocol))
        );
        if protocol == Protocol::Https {
            out.push(https_publish(run, files, &resource).await);
            continue;
        }
        let mut session = match connect(run, files, thing, protocol).await {
            Ok(s) => s,
            Err(e) => {
                out.push(Check::fail(CONNECT, &resource, format!("{protocol}: {e}")));
                out.push(Check::fail(
                    PUBLISH,
                    &resource,
                    "not connected: see device.connect",
                ));
                continue;
            }
        };
        out.push(Check::pass(
            CONNECT,
            &resource,
            format!(
                "{protocol}: connected with {}, client id {thing}",
                if protocol == Protocol::Wss {
                    "a SigV4-signed WebSocket"
                } else {
                    "the device's certificate (mutual TLS)"
                }
            ),
        ));
        let topic = crate::device::reading_topic(thing);
        let payload = crate::device::normal_reading(thing).to_string();
        match session.publish_qos1(&topic, payload).await {
            Ok(latency) => out.push(Check::pass(
                PUBLISH,
                &resource,
                format!(
                    "{protocol}: QoS 1 publish to {topic} acknowledged (PUBACK in {})",
                    crate::output::fmt_duration(latency)
                ),
            )),
            Err(e) => {
                out.push(Check::fail(PUBLISH, &resource, format!("{protocol}: {e}")));
                continue;
            }
        }
        // One connection at a time: the gateway, like AWS, drops a connection when another
        // connects with the same client id.
        let _ = session.disconnect().await;
        if mqtt_ok.is_none() && protocol != Protocol::Wss {
            mqtt_ok = Some(protocol);
        }
    }
    let resource = format!("device {thing}");
    let session = match mqtt_ok {
        Some(p) => connect(run, files, thing, p).await.map_err(|e| e.to_string()),
        None => Err(
            "the device could not connect and publish over MQTT with its certificate (see device.connect)".to_string(),
        ),
    };
    match session {
        Err(why) => {
            out.push(skip_or_fail(run, E2E, &resource, &why));
            out.push(Check::fail(SHADOW, &resource, why));
        }
        Ok(mut session) => {
            out.push(if run.skip_e2e {
                Check::skip(E2E, &resource, "skipped with --skip-e2e")
            } else {
                e2e(run, &mut session, &resource).await
            });
            out.push(shadow(run, &mut session, &resource).await);
            let _ = session.disconnect().await;
        }
    }
    out.push(least_privilege(run, files, other, &resource).await);
    out
}

fn skip_or_fail(run: &Run<'_>, name: &str, resource: &str, why: &str) -> Check {
    if run.skip_e2e {
        Check::skip(name, resource, "skipped with --skip-e2e")
    } else {
        Check::fail(name, resource, why)
    }
}

async fn connect(
    run: &Run<'_>,
    files: &DeviceFiles,
    client_id: &str,
    protocol: Protocol,
) -> Result<Session, DeviceError> {
    Session::connect(
        run.endpoint,
        files,
        client_id,
        protocol,
        run.signer,
        run.timeout,
    )
    .await
}

async fn https_publish(run: &Run<'_>, files: &DeviceFiles, resource: &str) -> Check {
    let topic = crate::device::reading_topic(&files.thing);
    let payload = crate::device::normal_reading(&files.thing).to_string();
    let identity = match files.identity() {
        Ok(i) => i,
        Err(e) => return Check::fail(PUBLISH, resource, e.to_string()),
    };
    match crate::device::https::publish(
        run.endpoint,
        &identity,
        &topic,
        payload.into_bytes(),
        run.timeout,
    )
    .await
    {
        Ok(latency) => Check::pass(
            PUBLISH,
            resource,
            format!(
                "https: publish to {topic} with the device's certificate answered 200 in {}",
                crate::output::fmt_duration(latency)
            ),
        ),
        Err(e @ DeviceError::HttpRefused { .. }) => Check::fail(
            PUBLISH,
            resource,
            format!(
                "https: {e} (over HTTPS AWS IoT has no client id, so statements scoped by ${{iot:Connection.Thing.ThingName}} never apply: \
                 the policy needs one scoped by ${{iot:Certificate.Subject.CommonName}}, which the built-in policies add when \
                 device.protocols has https and certificate.mode is local)"
            ),
        ),
        Err(e) => Check::fail(PUBLISH, resource, format!("https: {e}")),
    }
}

/// A marked HIGH reading published by the device, found in the function's log (and its alert).
async fn e2e(run: &Run<'_>, session: &mut Session, resource: &str) -> Check {
    let d = &run.env.d;
    let thing = session.thing().to_string();
    let thing = thing.as_str();
    let marker = super::marker();
    let mut payload = crate::device::reading(thing, READING, 65.0, 87);
    payload["iotreg_verify"] = json!(marker);
    let topic = crate::device::reading_topic(thing);
    let since_ms = crate::state::now_ms().saturating_sub(60_000) as i64;
    if let Err(e) = session.publish_qos1(&topic, payload.to_string()).await {
        return Check::fail(E2E, resource, e.to_string());
    }
    let group = format!("/aws/lambda/{}", d.function.name);
    let (block, stream) = match wait_for_marker(run.env, &marker, since_ms, run.e2e_timeout).await
    {
        Ok(found) => found,
        Err(WaitError::Failed(e)) => return Check::fail(E2E, resource, e),
        Err(WaitError::TimedOut) => {
            return Check::fail(
                E2E,
                resource,
                format!(
                    "the device's reading ({marker}) to {topic} was acknowledged but did not reach {group} within {}s: \
                     is the rule enabled, and may it invoke the function?",
                    run.e2e_timeout.as_secs_f64()
                ),
            )
        }
    };
    let level = super::level_in(&block).unwrap_or("no level");
    let mut reason = format!(
        "the device's {READING} °C reading ({marker}) reached {} → {group} (stream {stream}), alert level {level}",
        d.rule.name
    );
    let m = &d.monitoring;
    if m.enabled {
        match super::alert_in(&block, &m.topic_arn) {
            Ok(id) => reason.push_str(&format!(
                ", and its alert reached {} (SNS MessageId {id})",
                m.topic_name
            )),
            Err(why) => {
                return Check::fail(
                    E2E,
                    resource,
                    format!("{reason}, but no alert reached {}: {why}", m.topic_name),
                )
            }
        }
    }
    Check::pass(E2E, resource, reason)
}

/// Reported update accepted; a desired change made through the service arrives as a delta,
/// which the device answers by reporting it. The key it uses is removed afterwards.
async fn shadow(run: &Run<'_>, session: &mut Session, resource: &str) -> Check {
    if run.env.d.shadow.is_none() {
        // Updating it would create a shadow the deployment says it does not keep.
        return Check::skip(
            SHADOW,
            resource,
            "shadow.enabled = false: the deployment keeps no shadow",
        );
    }
    let thing = session.thing().to_string();
    let gaps = crate::device::policy::shadow_gaps(run.policy, &thing);
    if !gaps.is_empty() {
        return Check::skip(
            SHADOW,
            resource,
            format!(
                "the deployed policy does not let the device use its shadow over MQTT (no {}); policy.preset = \"mqtt-shadow\" does",
                gaps[0]
            ),
        );
    }
    let marker = super::marker();
    let result = shadow_exchange(run, session, &thing, &marker).await;
    // Leave the shadow as it was: null deletes the key from desired and reported.
    let cleanup =
        json!({"state": {"desired": {"iotreg_verify": null}, "reported": {"iotreg_verify": null}}});
    let cleaned = update_as_service(run, &thing, &cleanup).await;
    match (result, cleaned) {
        (Ok(reason), Ok(())) => Check::pass(SHADOW, resource, reason),
        (Ok(reason), Err(e)) => Check::fail(
            SHADOW,
            resource,
            format!("{reason}, but removing the test key failed: {e}"),
        ),
        (Err(e), _) => Check::fail(SHADOW, resource, e),
    }
}

async fn shadow_exchange(
    run: &Run<'_>,
    session: &mut Session,
    thing: &str,
    marker: &str,
) -> Result<String, String> {
    session
        .shadow_update_reported(json!({"iotreg_verify": "reported"}))
        .await
        .map_err(|e| format!("reported update: {e}"))?;
    update_as_service(
        run,
        thing,
        &json!({"state": {"desired": {"iotreg_verify": marker}}}),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + run.timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match session.wait_delta(left).await {
            Ok(Some(state)) if state.get("iotreg_verify") == Some(&json!(marker)) => break,
            // A delta for another change (a key the device never reported): keep waiting.
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Err(format!(
                    "the reported update was accepted, but the desired change ({marker}) made through the service did not arrive as a delta on $aws/things/{thing}/shadow/update/delta within {}s",
                    run.timeout.as_secs_f64()
                ))
            }
            Err(e) => return Err(format!("waiting for the delta: {e}")),
        }
    }
    session
        .shadow_update_reported(json!({"iotreg_verify": marker}))
        .await
        .map_err(|e| format!("answering the delta: {e}"))?;
    Ok(format!(
        "reported update accepted; a desired change ({marker}) made through the service arrived as a delta over MQTT and the device's answer was accepted"
    ))
}

/// An UpdateThingShadow made through the data-plane API, as a backend service would.
async fn update_as_service(run: &Run<'_>, thing: &str, doc: &Value) -> Result<(), String> {
    let data = run.env.aws.data().await.map_err(|e| e.to_string())?;
    data.update_thing_shadow()
        .thing_name(thing)
        .payload(Blob::new(doc.to_string()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| crate::aws::failed("shadow", thing, "UpdateThingShadow", e).to_string())
}

/// Acting as `other` must be refused: its client id with this device's certificate, and a
/// publish to its topic.
async fn least_privilege(run: &Run<'_>, files: &DeviceFiles, other: &str, resource: &str) -> Check {
    // Certificate-authenticated MQTT, over whichever port the deployment proves.
    let Some(protocol) = run
        .protocols
        .iter()
        .copied()
        .find(|p| matches!(p, Protocol::Mqtt | Protocol::Mqtt443))
    else {
        return Check::skip(
            LEAST_PRIVILEGE,
            resource,
            "needs mqtt or mqtt-443 among device.protocols (it acts with the device's certificate over MQTT)",
        );
    };
    let mut problems = Vec::new();
    let mut refusals = Vec::new();
    match connect(run, files, other, protocol).await {
        Ok(s) => {
            let _ = s.disconnect().await;
            problems.push(format!(
                "connected with client id {other} using {}'s certificate: the policy lets a device connect as another",
                files.thing
            ));
        }
        Err(e @ (DeviceError::ConnackRefused { .. } | DeviceError::Closed { .. })) => {
            refusals.push(format!("client id {other}: {}", short(&e)));
        }
        Err(e) => problems.push(format!(
            "connecting as {other} failed for another reason than a refusal: {e}"
        )),
    }
    match connect(run, files, &files.thing, protocol).await {
        Ok(mut s) => {
            let topic = crate::device::reading_topic(other);
            let payload = crate::device::normal_reading(other).to_string();
            match s.publish_qos1(&topic, payload).await {
                Ok(_) => {
                    let _ = s.disconnect().await;
                    problems.push(format!(
                        "a publish to {topic} was acknowledged: the policy lets the device publish as another"
                    ));
                }
                Err(e @ DeviceError::Closed { .. }) => {
                    refusals.push(format!("publish to {topic}: {}", short(&e)));
                }
                Err(e) => problems.push(format!(
                    "publishing to {topic} ended otherwise than by the gateway closing the connection: {e}"
                )),
            }
        }
        Err(e) => problems.push(format!(
            "could not connect as {} to try another thing's topic: {e}",
            files.thing
        )),
    }
    if problems.is_empty() {
        Check::pass(LEAST_PRIVILEGE, resource, refusals.join("; "))
    } else {
        Check::fail(LEAST_PRIVILEGE, resource, problems.join("; "))
    }
}

/// A refusal in a few words, for the pass reason.
fn short(e: &DeviceError) -> String {
    match e {
        DeviceError::ConnackRefused { code, meaning, .. } => {
            format!("refused (CONNACK {code}, {meaning})")
        }
        DeviceError::Closed { .. } => "the gateway closed the connection".into(),
        other => other.to_string(),
    }
}
