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
            settings.state_path.display()
        ))
        .into());
    };
    let account = session.account.clone();
    let ReadOnly { env, plan, cx } = read_only(settings, session, &state, options.sample)?;
    progress.line(&format!(
        "iotreg verify: deployment {} in {} (account {account})",
        state.suffix, state.region
    ));
    let mut checks = verify::resource_checks(&plan, &cx).await;
    if options.skip_device {
        checks.push(Timed {
            check: Check::skip(
                verify::DEVICE_AUTHORIZATION,
                "device",
                "skipped with --skip-device",
            ),
            seconds: 0.0,
        });
    } else {
        let started = std::time::Instant::now();
        let d = &env.d;
        let thing = d.thing.name.clone();
        let check = match cx.record(crate::resources::CERTIFICATE).and_then(|r| r.arn) {
            Some(arn) => {
                let other = format!("{thing}-not-this-device");
                verify::authorization::check(&env.aws.iot, d, &thing, &arn, &other).await
            }
            None => Check::fail(
                verify::DEVICE_AUTHORIZATION,
                &format!("policy {} for {thing}", d.policy.name),
                "the state records no certificate for the device; run `iotreg up`",
            ),
        };
        checks.push(Timed {
            check,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
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
        skipped
    } else {
        progress.line(&format!(
            "  … publishing a test reading and waiting up to {}s for it in the function's log",
            options.timeout.as_secs_f64()
        ));
        verify::data_path(&env, options.timeout).await
    };
    let seconds = e2e_started.elapsed().as_secs_f64() / e2e.len() as f64;
    checks.extend(e2e.into_iter().map(|check| Timed { check, seconds }));
    // As the device itself, over each of device.protocols.
    let device_started = std::time::Instant::now();
    let device = super::device::verify_checks(settings, progress, options.skip_e2e).await;
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
