//! `iotreg verify`: prove the deployment works, every resource and link, then a reading end
//! to end. Read-only (apart from the test reading it publishes).

use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{preflight_deployed, read_only, report, ExitStatus, Needs, ReadOnly};
use super::{Summary, Verdict};
use crate::output::{self, Checks, Progress};
use crate::settings::{BadInput, Settings, VerifyOptions};
use crate::verify::{self, Timed};
use crate::verify::{Check, CheckStatus};

pub async fn verify(
    settings: &Settings,
    progress: &Progress,
    options: &VerifyOptions,
) -> Result<ExitStatus> {
    let timer = output::Timer::start();
    let needs = Needs {
        lock: false,
        pinned_suffix: false,
    };
    let Some((session, state)) = preflight_deployed(settings, needs, progress).await? else {
        return Err(BadInput(format!(
            "nothing deployed: {} does not exist; run `iotreg up` first",
            settings.state
        ))
        .into());
    };
    let account = session.account.clone();
    let ReadOnly { env, plan, cx } = read_only(settings, session, &state)?;
    progress.line(&format!(
        "iotreg verify: deployment {} in {} (account {account})",
        state.suffix, state.region
    ));
    let mut checks = verify::resource_checks(&plan, &cx).await;
    let e2e_started = std::time::Instant::now();
    let e2e = if options.skip_e2e {
        let mut skipped = vec![Check::skip(
            verify::E2E,
            "data path",
            "skipped with --skip-e2e",
        )];
        if env.d.monitoring.enabled {
            skipped.push(Check::skip(
                verify::E2E_ALERT,
                "alert",
                "skipped with --skip-e2e",
            ));
        }
        if env.d.analytics.is_some() {
            skipped.push(Check::skip(
                verify::anomaly::E2E_ANOMALY,
                "anomaly",
                "skipped with --skip-e2e",
            ));
        }
        skipped
    } else {
        progress.line(&format!(
            "  … publishing a test reading and waiting up to {}s for it in the function's log",
            options.timeout.as_secs_f64()
        ));
        let mut checks = verify::data_path(&env, options.timeout).await;
        if env.d.analytics.is_some() {
            progress.line(&format!(
                "  … publishing a probe device's normal readings and an outlier, waiting up to {}s for the detector's alert",
                options.timeout.as_secs_f64()
            ));
            checks.push(verify::anomaly::anomaly(&env, options.timeout).await);
        }
        checks
    };
    let seconds = e2e_started.elapsed().as_secs_f64() / e2e.len() as f64;
    checks.extend(e2e.into_iter().map(|check| Timed { check, seconds }));
    // As the device itself: its policy through TestAuthorization, then its own connection.
    let device_started = std::time::Instant::now();
    let device = if options.skip_device {
        vec![Check::skip(
            "device",
            "device",
            "the device checks were skipped with --skip-device",
        )]
    } else {
        device_checks(settings, progress, options, &env, &state).await
    };
    let seconds = device_started.elapsed().as_secs_f64() / device.len().max(1) as f64;
    checks.extend(device.into_iter().map(|check| Timed { check, seconds }));
    let count = |s: CheckStatus| checks.iter().filter(|c| c.check.status == s).count();
    let (passed, failed, skipped) = (
        count(CheckStatus::Pass),
        count(CheckStatus::Fail),
        count(CheckStatus::Skip),
    );
    if let Some(path) = &options.junit {
        let xml = verify::junit(&state.suffix, &checks, timer.elapsed());
        verify::write_junit(path, &xml)
            .with_context(|| format!("{}: cannot write JUnit report", path.display()))?;
    }
    let summary = VerifySummary {
        command: "verify",
        ok: failed == 0,
        suffix: state.suffix.clone(),
        passed,
        failed,
        skipped,
        checks,
        region: state.region.clone(),
        account,
        color: output::stdout_color(),
    };
    Ok(report(settings, &summary))
}

/// Fleet devices checked as the device when `--sample` is not given: each is a connection
/// (several, with least privilege), so not the whole fleet by default.
const DEVICE_SAMPLE: usize = 3;

/// The device checks for the stack's own device and a sample of the fleet's.
async fn device_checks(
    settings: &Settings,
    progress: &Progress,
    options: &VerifyOptions,
    env: &crate::resources::Env,
    state: &crate::state::State,
) -> Vec<Check> {
    use crate::resources::{CERTIFICATE, THING};
    let single = state.get(THING).map(|r| r.name.clone());
    let fleet: Vec<String> = state.devices.keys().cloned().collect();
    let n = options.sample.unwrap_or(DEVICE_SAMPLE);
    let sampled = crate::resources::fleet::sample(fleet.clone(), n.min(fleet.len()));
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    if let Some(t) = &single {
        targets.push((
            t.clone(),
            state.get(CERTIFICATE).and_then(|r| r.arn.clone()),
        ));
    }
    for name in sampled {
        let arn = state
            .devices
            .get(&name)
            .and_then(|e| e.get(CERTIFICATE).and_then(|r| r.arn.clone()));
        targets.push((name, arn));
    }
    // Another thing to try acting as: a real one of this deployment when there is one.
    let everyone: Vec<&String> = single.iter().chain(fleet.iter()).collect();
    let other_than = |thing: &str| -> String {
        everyone
            .iter()
            .find(|t| t.as_str() != thing)
            .map(|t| t.to_string())
            .unwrap_or_else(|| format!("{thing}-not-this-device"))
    };
    let mut out = Vec::new();
    let d = &env.d;
    if d.provisioning.is_some() {
        // The claim policy through AWS's evaluator, as for the device's policy below.
        let claim = state
            .get(crate::resources::CLAIM_CERTIFICATE)
            .and_then(|r| r.arn.clone());
        out.push(match claim {
            Some(arn) => verify::authorization::claim_check(&env.aws.iot, d, &arn).await,
            None => Check::fail(
                verify::authorization::CLAIM_AUTHORIZATION,
                "claim certificate",
                "the state records no claim certificate; run `iotreg up`",
            ),
        });
        if targets.is_empty() {
            // Devices provision themselves; `up` made none to connect as.
            return out;
        }
    }
    for (thing, arn) in &targets {
        out.push(match arn {
            Some(arn) => {
                verify::authorization::check(&env.aws.iot, d, thing, arn, &other_than(thing)).await
            }
            None => Check::fail(
                verify::DEVICE_AUTHORIZATION,
                &format!("policy {} for {thing}", d.policy.name),
                "the state records no certificate for the device; run `iotreg up`",
            ),
        });
    }
    if targets.is_empty() {
        out.push(Check::fail(
            "device",
            "device",
            "the state records no device",
        ));
        return out;
    }
    let device = &settings.device;
    if device.endpoint.is_none() && settings.remote.endpoint_url.is_some() {
        // An emulator answers DescribeEndpoint with a name that is not its gateway; connecting
        // there proves nothing, so say what to set instead of failing on a name lookup.
        out.push(Check::skip(
            "device",
            "device",
            "AWS calls go to --endpoint-url and no device endpoint is set (device.endpoint or IOTREG_DEVICE_ENDPOINT): not connected as the device",
        ));
        return out;
    }
    let deployed = super::device::Deployed::new(settings, state.clone());
    let endpoint = match deployed.endpoint(progress).await {
        Ok(e) => e,
        Err(e) => {
            out.push(Check::fail("device", "device endpoint", format!("{e:#}")));
            return out;
        }
    };
    let signer = if device.protocols.contains(&crate::device::Protocol::Wss) {
        match deployed.signer(crate::device::Protocol::Wss).await {
            Ok(s) => s,
            Err(e) => {
                out.push(Check::fail("device", "device over wss", format!("{e:#}")));
                return out;
            }
        }
    } else {
        None
    };
    let run = verify::device::Run {
        env,
        endpoint: &endpoint,
        signer: signer.as_ref(),
        protocols: &device.protocols,
        timeout: device.timeout,
        e2e_timeout: options.timeout,
        skip_e2e: options.skip_e2e,
        // The policy as this run rendered it for the deployment.
        policy: &d.policy.document,
    };
    let on_device = |thing: &str| {
        let rec = match &single {
            Some(t) if t == thing => state.get(CERTIFICATE).cloned(),
            _ => state
                .devices
                .get(thing)
                .and_then(|e| e.get(CERTIFICATE).cloned()),
        };
        rec.as_ref()
            .and_then(|r| r.data.get(crate::resources::certificate::KEY_ON_DEVICE))
            .and_then(|v| v.as_bool())
            == Some(true)
    };
    for (thing, _) in &targets {
        if on_device(thing) {
            // Issued for the device's own CSR: the key that would prove it is on the device.
            out.push(Check::skip(
                verify::device::CONNECT,
                &format!("device {thing}"),
                "its certificate was issued for the device's own CSR and its private key stays on the device: connecting as it is the device's to do",
            ));
            continue;
        }
        progress.line(&format!(
            "  … connecting as {thing} to {} ({})",
            endpoint.host,
            device
                .protocols
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let files = crate::device::DeviceFiles::for_thing(&settings.key_dir, thing);
        out.extend(verify::device::checks(&run, &files, &other_than(thing)).await);
    }
    out
}

#[derive(Serialize)]
pub struct VerifySummary {
    command: &'static str,
    ok: bool,
    suffix: String,
    passed: usize,
    failed: usize,
    skipped: usize,
    checks: Vec<Timed>,
    #[serde(skip)]
    region: String,
    #[serde(skip)]
    account: String,
    /// Marks in colour (a terminal, NO_COLOR unset).
    #[serde(skip)]
    color: bool,
}

impl fmt::Display for VerifySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "verify {} deployment {} ({}, account {}): {} passed, {} failed, {} skipped",
            if self.failed == 0 { "OK:" } else { "FAILED:" },
            self.suffix,
            self.region,
            self.account,
            self.passed,
            self.failed,
            self.skipped
        )?;
        write!(
            f,
            "{}",
            Checks {
                checks: &self.checks,
                color: self.color
            }
        )
    }
}

impl Summary for VerifySummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: self.failed == 0,
            ..Verdict::default()
        }
    }
}
