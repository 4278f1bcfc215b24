//! `iotreg device provision --claim` and `iotreg device simulate --claim`: devices at first
//! boot under fleet provisioning by claim (the exchange itself is `device::claim`). What they
//! share: the deployment's template name (config pattern, state's suffix), the claim files `up`
//! wrote, the endpoint, and which thing a serial provisions as (the manifest's row with that
//! serial_number, else the serial itself).

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::{device_error, Deployed};
use crate::commands::{report, ExitStatus, Summary, Verdict};
use crate::device::claim::{self, Provisioned, Request};
use crate::device::{stats, DeviceError, DeviceFiles, Endpoint};
use crate::output::Progress;
use crate::settings::{BadInput, Settings, SimulateOptions};

/// Failures listed in the summary before "and N more".
const LISTED: usize = 10;

/// What every provisioning device shares.
struct Claim {
    endpoint: Endpoint,
    template: String,
    claim: DeviceFiles,
}

async fn prepare(settings: &Settings, progress: &Progress) -> Result<Claim> {
    let deployed = Deployed::load(settings).await?;
    let Some(rec) = deployed.state.get(crate::resources::PROVISIONING_TEMPLATE) else {
        return Err(BadInput(format!(
            "{} records no provisioning template: set provisioning.mode = \"claim\" and run `iotreg up`",
            settings.state
        ))
        .into());
    };
    let files = crate::resources::claim_certificate::files(&settings.key_dir);
    let claim = DeviceFiles {
        thing: claim::CLAIM_CLIENT.into(),
        certificate: files.certificate,
        private_key: files.private_key,
    };
    // Missing claim files are bad input, found before connecting.
    claim.identity().map_err(device_error)?;
    let endpoint = deployed.endpoint(progress).await?;
    Ok(Claim {
        endpoint,
        template: rec.name.clone(),
        claim,
    })
}

/// The thing a serial provisions as: the manifest's, else derived from the serial.
fn thing_for(settings: &Settings, serial: &str) -> String {
    settings
        .fleet
        .manifest
        .as_ref()
        .and_then(|m| {
            m.devices.iter().find(|d| {
                d.attributes
                    .get(crate::deployment::SERIAL_COLUMN)
                    .map(String::as_str)
                    == Some(serial)
            })
        })
        .map(|d| d.thing_name.clone())
        .unwrap_or_else(|| claim::thing_for_serial(serial))
}

impl Claim {
    async fn one(
        &self,
        settings: &Settings,
        serial: &str,
        thing: &str,
    ) -> Result<Provisioned, DeviceError> {
        claim::provision(&Request {
            endpoint: &self.endpoint,
            claim: self.claim.clone(),
            template: &self.template,
            serial,
            thing,
            key_dir: &settings.key_dir,
            timeout: settings.device.timeout,
        })
        .await
    }
}

pub async fn provision(
    settings: &Settings,
    progress: &Progress,
    serial: &str,
    thing: Option<&str>,
) -> Result<ExitStatus> {
    let c = prepare(settings, progress).await?;
    let thing = thing
        .map(str::to_string)
        .unwrap_or_else(|| thing_for(settings, serial));
    progress.line(&format!(
        "iotreg device provision: serial {serial} as {thing} through {} ({})",
        c.template,
        c.endpoint
            .authority(c.endpoint.port(crate::device::Protocol::Mqtt))
    ));
    let summary = match c.one(settings, serial, &thing).await {
        Ok(p) => ProvisionSummary::from_ok(serial, p),
        // A refusal (the hook, a disabled template) is exit 1 with AWS's words; anything
        // else the device could not do is an error as the other device commands report it.
        Err(e @ DeviceError::ProvisioningRejected { .. }) => {
            ProvisionSummary::refused(serial, &thing, &e)
        }
        Err(e) => return Err(device_error(e)),
    };
    Ok(report(settings, &summary))
}

#[derive(Serialize)]
pub struct ProvisionSummary {
    command: &'static str,
    ok: bool,
    serial: String,
    thing: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    seconds: f64,
}

impl ProvisionSummary {
    fn from_ok(serial: &str, p: Provisioned) -> ProvisionSummary {
        ProvisionSummary {
            command: "device provision",
            ok: true,
            serial: serial.into(),
            thing: p.thing,
            certificate_id: Some(p.certificate_id),
            certificate_file: Some(p.certificate_file.display().to_string()),
            private_key_file: Some(p.private_key_file.display().to_string()),
            publish_ms: Some(p.publish_latency.as_secs_f64() * 1000.0),
            rejected_by: None,
            error_code: None,
            error_message: None,
            seconds: p.elapsed.as_secs_f64(),
        }
    }

    fn refused(serial: &str, thing: &str, e: &DeviceError) -> ProvisionSummary {
        let (call, code, message) = match e {
            DeviceError::ProvisioningRejected {
                call,
                code,
                message,
                ..
            } => (Some(*call), Some(code.clone()), Some(message.clone())),
            _ => (None, None, Some(e.to_string())),
        };
        ProvisionSummary {
            command: "device provision",
            ok: false,
            serial: serial.into(),
            thing: thing.into(),
            certificate_id: None,
            certificate_file: None,
            private_key_file: None,
            publish_ms: None,
            rejected_by: call,
            error_code: code,
            error_message: message,
            seconds: 0.0,
        }
    }
}

impl fmt::Display for ProvisionSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            writeln!(
                f,
                "provision OK: serial {} is thing {} (certificate {}), connected as itself and published in {:.1}ms",
                self.serial,
                self.thing,
                self.certificate_id.as_deref().unwrap_or("-"),
                self.publish_ms.unwrap_or(0.0)
            )?;
            writeln!(
                f,
                "  {}\n  {}",
                self.certificate_file.as_deref().unwrap_or("-"),
                self.private_key_file.as_deref().unwrap_or("-")
            )
        } else {
            writeln!(
                f,
                "provision REFUSED: serial {}: {} answered {}: {}",
                self.serial,
                self.rejected_by.unwrap_or("AWS IoT"),
                self.error_code.as_deref().unwrap_or("-"),
                self.error_message.as_deref().unwrap_or("-")
            )
        }
    }
}

impl Summary for ProvisionSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: self.ok,
            ..Verdict::default()
        }
    }
}

/// `device simulate --claim`: `count` devices provisioned concurrently. Serials: the
/// `--serials` file (one a line), else the manifest's serial_number column; the first `count`.
pub async fn simulate(
    settings: &Settings,
    progress: &Progress,
    o: &SimulateOptions,
) -> Result<ExitStatus> {
    let serials: Vec<String> = match &o.serials {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| BadInput(format!("{}: {e}", path.display())))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => match &settings.fleet.manifest {
            Some(m) => crate::deployment::allowed_serials(m)?,
            None => {
                return Err(BadInput(
                    "--claim needs serials: --serials FILE, or a fleet manifest with a serial_number column".into(),
                )
                .into())
            }
        },
    };
    let serials: Vec<String> = serials.into_iter().take(o.count as usize).collect();
    if serials.len() < o.count as usize {
        return Err(BadInput(format!(
            "--count {} but only {} serials are given",
            o.count,
            serials.len()
        ))
        .into());
    }
    let c = prepare(settings, progress).await?;
    progress.line(&format!(
        "iotreg device simulate --claim: {} device(s) through {} ({}), {} at once",
        serials.len(),
        c.template,
        c.endpoint
            .authority(c.endpoint.port(crate::device::Protocol::Mqtt)),
        o.concurrency
    ));
    let started = Instant::now();
    let c = &c;
    let outcomes: Vec<(String, String, Result<Provisioned, DeviceError>)> = stream::iter(serials)
        .map(|serial| async move {
            let thing = thing_for(settings, &serial);
            let result = c.one(settings, &serial, &thing).await;
            (serial, thing, result)
        })
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    Ok(report(
        settings,
        &ClaimSummary::new(&outcomes, started.elapsed()),
    ))
}

#[derive(Serialize)]
struct Device {
    serial: String,
    thing: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
pub struct ClaimSummary {
    command: &'static str,
    ok: bool,
    devices: usize,
    provisioned: usize,
    /// Refused by AWS IoT (the hook, the template): the expected answer for a serial the
    /// manifest does not allow.
    refused: usize,
    /// Anything else (a timeout, a connection refused, a file not written).
    failed: usize,
    publish_p50_ms: Option<f64>,
    publish_p99_ms: Option<f64>,
    refusals: Vec<Device>,
    failures: Vec<Device>,
    seconds: f64,
}

impl ClaimSummary {
    fn new(
        outcomes: &[(String, String, Result<Provisioned, DeviceError>)],
        elapsed: Duration,
    ) -> ClaimSummary {
        let mut latencies = Vec::new();
        let (mut refusals, mut failures) = (Vec::new(), Vec::new());
        for (serial, thing, r) in outcomes {
            let device = |e: &DeviceError| Device {
                serial: serial.clone(),
                thing: thing.clone(),
                error: Some(e.to_string()),
            };
            match r {
                Ok(p) => latencies.push(p.publish_latency),
                Err(e @ DeviceError::ProvisioningRejected { .. }) => refusals.push(device(e)),
                Err(e) => failures.push(device(e)),
            }
        }
        refusals.sort_by(|a, b| a.serial.cmp(&b.serial));
        failures.sort_by(|a, b| a.serial.cmp(&b.serial));
        let (p50, p99) = stats::p50_p99_ms(&latencies);
        ClaimSummary {
            command: "device simulate --claim",
            // Refusals are answers, not failures: a run that includes unknown serials on
            // purpose still succeeds as long as every device got an answer.
            ok: failures.is_empty(),
            devices: outcomes.len(),
            provisioned: latencies.len(),
            refused: refusals.len(),
            failed: failures.len(),
            publish_p50_ms: p50,
            publish_p99_ms: p99,
            refusals,
            failures,
            seconds: elapsed.as_secs_f64(),
        }
    }
}

impl fmt::Display for ClaimSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}ms")).unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "simulate --claim {} {} device(s) in {:.1}s: {} provisioned, {} refused, {} failed",
            if self.ok { "OK:" } else { "FAILED:" },
            self.devices,
            self.seconds,
            self.provisioned,
            self.refused,
            self.failed
        )?;
        writeln!(
            f,
            "  first publish as the new thing: p50 {} p99 {}",
            ms(self.publish_p50_ms),
            ms(self.publish_p99_ms)
        )?;
        for (mark, list) in [("refused", &self.refusals), ("✗", &self.failures)] {
            for x in list.iter().take(LISTED) {
                writeln!(
                    f,
                    "  {mark} {} ({}): {}",
                    x.serial,
                    x.thing,
                    x.error.as_deref().unwrap_or("")
                )?;
            }
            if list.len() > LISTED {
                writeln!(f, "  … and {} more {mark}", list.len() - LISTED)?;
            }
        }
        Ok(())
    }
}

impl Summary for ClaimSummary {
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

    fn ok(thing: &str, ms: u64) -> Result<Provisioned, DeviceError> {
        Ok(Provisioned {
            thing: thing.into(),
            certificate_id: "c".into(),
            certificate_file: "c".into(),
            private_key_file: "k".into(),
            publish_latency: Duration::from_millis(ms),
            elapsed: Duration::from_millis(ms),
        })
    }

    #[test]
    fn refusals_are_counted_apart_from_failures() {
        let outcomes = vec![
            ("SN-1".to_string(), "a".to_string(), ok("a", 5)),
            (
                "SN-X".to_string(),
                "SN-X".to_string(),
                Err(claim::rejection(
                    "RegisterThing",
                    &serde_json::json!({"statusCode": 403, "errorCode": "AccessDenied", "errorMessage": "no"}),
                )),
            ),
            (
                "SN-2".to_string(),
                "b".to_string(),
                Err(DeviceError::Protocol("boom".into())),
            ),
        ];
        let s = ClaimSummary::new(&outcomes, Duration::from_secs(1));
        assert_eq!(
            (s.devices, s.provisioned, s.refused, s.failed),
            (3, 1, 1, 1)
        );
        assert!(!s.ok);
        assert_eq!(s.refusals[0].serial, "SN-X");
        let text = s.to_string();
        assert!(
            text.contains("1 provisioned, 1 refused, 1 failed"),
            "{text}"
        );
        assert!(text.contains("AccessDenied"), "{text}");

        let s = ClaimSummary::new(&outcomes[..2], Duration::from_secs(1));
        assert!(s.ok, "a refusal alone is an answer, not a failure");
    }
}
