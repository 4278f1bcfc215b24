//! `iotreg device publish [THING]`: one reading as the device, QoS 1, and the time to its
//! PUBACK (or to the HTTPS answer).

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::{device_error, Deployed};
use crate::commands::{report, ExitStatus, Summary, Verdict};
use crate::device::{self, https, Protocol, Session};
use crate::output::Progress;
use crate::settings::Settings;

pub async fn publish(
    settings: &Settings,
    progress: &Progress,
    thing: Option<&str>,
    protocol: Protocol,
    message: Option<&str>,
) -> Result<ExitStatus> {
    let deployed = Deployed::load(settings).await?;
    let files = deployed.device(thing)?;
    let endpoint = deployed.endpoint(progress).await?;
    let signer = deployed.signer(protocol).await?;
    let timeout = settings.device.timeout;
    let topic = device::reading_topic(&files.thing);
    let payload = match message {
        Some(m) => m.to_string(),
        None => device::normal_reading(&files.thing).to_string(),
    };
    let port = endpoint.port(protocol);
    progress.line(&format!(
        "iotreg device publish: {} → {} over {protocol} ({})",
        files.thing,
        topic,
        endpoint.authority(port)
    ));
    let started = Instant::now();
    let (connect, latency) = if protocol == Protocol::Https {
        let identity = files.identity().map_err(device_error)?;
        let latency = https::publish(&endpoint, &identity, &topic, payload.into_bytes(), timeout)
            .await
            .map_err(device_error)?;
        (None, latency)
    } else {
        let mut session = Session::connect(
            &endpoint,
            &files,
            &files.thing,
            protocol,
            signer.as_ref(),
            timeout,
        )
        .await
        .map_err(device_error)?;
        let connect = started.elapsed();
        let latency = session
            .publish_qos1(&topic, payload)
            .await
            .map_err(device_error)?;
        session.disconnect().await.map_err(device_error)?;
        (Some(connect), latency)
    };
    let summary = PublishSummary {
        command: "device publish",
        ok: true,
        thing: files.thing.clone(),
        protocol,
        endpoint: endpoint.authority(port),
        topic,
        connect,
        latency,
    };
    Ok(report(settings, &summary))
}

#[derive(Serialize)]
pub struct PublishSummary {
    command: &'static str,
    ok: bool,
    thing: String,
    protocol: Protocol,
    endpoint: String,
    topic: String,
    /// Connecting (TCP, TLS, CONNACK); none for HTTPS, which connects per request.
    #[serde(rename = "connect_ms", serialize_with = "optional_ms")]
    connect: Option<Duration>,
    /// Publish to PUBACK (MQTT), or request to answer (HTTPS); fractional, as a local PUBACK
    /// takes well under a millisecond.
    #[serde(rename = "latency_ms", serialize_with = "ms")]
    latency: Duration,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(to_ms(*d))
}

fn optional_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ms(d, s),
        None => s.serialize_none(),
    }
}

/// Milliseconds to the microsecond.
fn to_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl fmt::Display for PublishSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ack = if self.protocol == Protocol::Https {
            "HTTP 200"
        } else {
            "PUBACK"
        };
        write!(
            f,
            "published to {} as {} over {} ({}): {ack} in {:.1}ms",
            self.topic,
            self.thing,
            self.protocol,
            self.endpoint,
            to_ms(self.latency)
        )?;
        if let Some(c) = self.connect {
            write!(f, " (connected in {:.1}ms)", to_ms(c))?;
        }
        writeln!(f)
    }
}

impl Summary for PublishSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: self.ok,
            ..Verdict::default()
        }
    }
}
