//! `iotreg device simulate`: one device, or every fleet device at once (bounded), each doing
//! what a device does — connect, subscribe to its shadow topics, publish readings at QoS 1,
//! report its state to the shadow and answer a delta — and a summary with the PUBACK latencies.

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::Deployed;
use crate::commands::{report, ExitStatus, Summary, Verdict};
use crate::device::{
    self, https, policy, sigv4::Signer, stats, DeviceError, DeviceFiles, Endpoint, Protocol,
    Session,
};
use crate::output::Progress;
use crate::settings::{BadInput, Settings, SimulateOptions};

/// Failures listed in the summary before "and N more".
const LISTED: usize = 10;
/// How long a device waits for a delta after reporting its state.
const DELTA_WAIT: Duration = Duration::from_secs(1);

pub async fn simulate(
    settings: &Settings,
    progress: &Progress,
    o: &SimulateOptions,
) -> Result<ExitStatus> {
    let deployed = Deployed::load(settings).await?;
    let things = devices(settings, &deployed, o)?;
    let policy = deployed.policy()?;
    let endpoint = deployed.endpoint(progress).await?;
    let signer = deployed.signer(o.protocol).await?;
    let shape = match &o.pattern {
        Some((p, s, _)) if *p != device::pattern::Pattern::Normal => {
            format!(", pattern {p} from reading {}", s.onset + 1)
        }
        Some((p, _, _)) => format!(", pattern {p}"),
        None => String::new(),
    };
    progress.line(&format!(
        "iotreg device simulate: {} device(s) over {} ({}), {} reading(s) each{shape}",
        things.len(),
        o.protocol,
        endpoint.authority(endpoint.port(o.protocol)),
        o.count
    ));
    let bar = progress_bar(settings.verbosity, things.len());
    let run = Run {
        endpoint: &endpoint,
        signer: signer.as_ref(),
        key_dir: &settings.key_dir,
        policy: &policy,
        options: o,
        timeout: settings.device.timeout,
    };
    let run = &run;
    let bar_ref = &bar;
    let started = Instant::now();
    let outcomes: Vec<Outcome> = stream::iter(things)
        .map(|thing| async move {
            let outcome = run.device(&thing).await;
            bar_ref.inc(1);
            if let Some(e) = &outcome.error {
                bar_ref.set_message(format!("last failure: {thing}: {e}"));
            }
            outcome
        })
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    let summary = SimulateSummary::new(o.protocol, &outcomes, started.elapsed());
    Ok(report(settings, &summary))
}

/// The devices a simulation plays: every fleet device with `--fleet`, else the one named (or
/// the only one).
pub(super) fn devices(
    settings: &Settings,
    deployed: &Deployed<'_>,
    o: &SimulateOptions,
) -> Result<Vec<String>> {
    if o.fleet {
        if deployed.roster.fleet.is_empty() {
            return Err(BadInput(format!(
                "--fleet: {} records no fleet device",
                settings.state
            ))
            .into());
        }
        Ok(deployed.roster.fleet.clone())
    } else {
        Ok(vec![deployed.device(o.thing.as_deref())?.thing])
    }
}

pub(super) fn progress_bar(verbosity: i8, total: usize) -> indicatif::ProgressBar {
    if verbosity < 0 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} devices, {elapsed} {msg}")
            .expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What every device's run shares.
struct Run<'a> {
    endpoint: &'a Endpoint,
    signer: Option<&'a Signer>,
    key_dir: &'a std::path::Path,
    policy: &'a serde_json::Value,
    options: &'a SimulateOptions,
    timeout: Duration,
}

/// How one device went.
#[derive(Debug, Default)]
struct Outcome {
    connected: bool,
    publishes: u32,
    pubacks: u32,
    latencies: Vec<Duration>,
    shadow_updates: u32,
    deltas_answered: u32,
    /// Why the shadow was left alone (the policy does not allow its topics, or HTTPS).
    shadow_skipped: Option<String>,
    thing: String,
    error: Option<String>,
}

impl Run<'_> {
    async fn device(&self, thing: &str) -> Outcome {
        let mut out = Outcome {
            thing: thing.to_string(),
            ..Outcome::default()
        };
        let files = DeviceFiles::for_thing(self.key_dir, thing);
        let result = if self.options.protocol == Protocol::Https {
            self.over_https(&files, &mut out).await
        } else {
            self.over_mqtt(&files, &mut out).await
        };
        if let Err(e) = result {
            out.error = Some(e.to_string());
        }
        out
    }

    fn reading(&self, thing: &str, i: u32) -> serde_json::Value {
        let temperature = match &self.options.pattern {
            Some((pattern, shape, seed)) => {
                device::pattern::value(*pattern, shape, thing, *seed, i)
            }
            // A gentle, repeatable walk through normal temperatures.
            None => 20.0 + f64::from(i % 10) * 0.5,
        };
        device::reading(thing, temperature, 45.0 + f64::from(i % 5), 87)
    }

    async fn over_mqtt(&self, files: &DeviceFiles, out: &mut Outcome) -> Result<(), DeviceError> {
        let o = self.options;
        let mut session = Session::connect(
            self.endpoint,
            files,
            &files.thing,
            o.protocol,
            self.signer,
            self.timeout,
        )
        .await?;
        out.connected = true;
        let gaps = policy::shadow_gaps(self.policy, &files.thing);
        // A device is refused (disconnected) for a topic its policy does not allow: say so
        // instead of provoking it.
        let shadow = gaps.is_empty() && !o.no_shadow;
        if shadow {
            session.shadow_subscribe().await?;
        } else if o.no_shadow {
            out.shadow_skipped = Some("--no-shadow".into());
        } else {
            out.shadow_skipped = Some(format!(
                "the device policy does not allow the shadow's MQTT topics ({})",
                gaps[0]
            ));
        }
        let topic = device::reading_topic(&files.thing);
        let mut last = serde_json::Value::Null;
        for i in 0..o.count {
            if i > 0 {
                session.idle(o.interval).await?;
            }
            last = self.reading(&files.thing, i);
            out.publishes += 1;
            let latency = session.publish_qos1(&topic, last.to_string()).await?;
            out.pubacks += 1;
            out.latencies.push(latency);
        }
        if shadow {
            let reported = serde_json::json!({
                "temperature": last["temperature"],
                "humidity": last["humidity"],
                "battery_level": last["battery_level"],
                "status": "online",
            });
            session.shadow_update_reported(reported).await?;
            out.shadow_updates += 1;
            if let Some(delta) = session.wait_delta(DELTA_WAIT).await? {
                // Do what was asked: report the desired values as the device's own.
                session.shadow_update_reported(delta).await?;
                out.shadow_updates += 1;
                out.deltas_answered += 1;
            }
        }
        session.disconnect().await
    }

    async fn over_https(&self, files: &DeviceFiles, out: &mut Outcome) -> Result<(), DeviceError> {
        let o = self.options;
        let identity = files.identity()?;
        out.shadow_skipped =
            Some("https publishes only (no subscription for the shadow's answers)".into());
        let topic = device::reading_topic(&files.thing);
        for i in 0..o.count {
            if i > 0 {
                tokio::time::sleep(o.interval).await;
            }
            out.publishes += 1;
            let payload = self.reading(&files.thing, i).to_string().into_bytes();
            let latency =
                https::publish(self.endpoint, &identity, &topic, payload, self.timeout).await?;
            // Each request is its own connection: one that was answered connected.
            out.connected = true;
            out.pubacks += 1;
            out.latencies.push(latency);
        }
        Ok(())
    }
}

/// A device that met something a healthy device would not, as the summaries list it.
#[derive(Debug, Serialize)]
pub(super) struct Failure {
    pub thing: String,
    pub error: String,
}

/// The first failures, one a line, and how many more there are.
pub(super) fn list_failures(f: &mut fmt::Formatter<'_>, failures: &[Failure]) -> fmt::Result {
    for x in failures.iter().take(LISTED) {
        writeln!(f, "  ✗ {}: {}", x.thing, x.error)?;
    }
    if failures.len() > LISTED {
        writeln!(f, "  … and {} more", failures.len() - LISTED)?;
    }
    Ok(())
}

#[derive(Serialize)]
pub struct SimulateSummary {
    command: &'static str,
    ok: bool,
    protocol: Protocol,
    devices: usize,
    connects_ok: usize,
    connects_failed: usize,
    publishes: u64,
    pubacks: u64,
    /// Publish to PUBACK (or HTTPS request to answer), milliseconds.
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    shadow_updates: u64,
    deltas_answered: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_skipped: Option<String>,
    failed: usize,
    failures: Vec<Failure>,
    seconds: f64,
}

impl SimulateSummary {
    fn new(protocol: Protocol, outcomes: &[Outcome], elapsed: Duration) -> SimulateSummary {
        let latencies: Vec<Duration> = outcomes
            .iter()
            .flat_map(|o| o.latencies.iter().copied())
            .collect();
        let (p50, p99) = stats::p50_p99_ms(&latencies);
        let sum = |f: fn(&Outcome) -> u32| outcomes.iter().map(|o| u64::from(f(o))).sum();
        let mut failures: Vec<Failure> = outcomes
            .iter()
            .filter_map(|o| {
                o.error.as_ref().map(|e| Failure {
                    thing: o.thing.clone(),
                    error: e.clone(),
                })
            })
            .collect();
        failures.sort_by(|a, b| a.thing.cmp(&b.thing));
        let failed = failures.len();
        let connects_ok = outcomes.iter().filter(|o| o.connected).count();
        SimulateSummary {
            command: "device simulate",
            ok: failed == 0,
            protocol,
            devices: outcomes.len(),
            connects_ok,
            connects_failed: outcomes.len() - connects_ok,
            publishes: sum(|o| o.publishes),
            pubacks: sum(|o| o.pubacks),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            shadow_updates: sum(|o| o.shadow_updates),
            deltas_answered: sum(|o| o.deltas_answered),
            shadow_skipped: outcomes.iter().find_map(|o| o.shadow_skipped.clone()),
            failed,
            failures,
            seconds: elapsed.as_secs_f64(),
        }
    }
}

impl fmt::Display for SimulateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}ms")).unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "simulate {} {} device(s) over {} in {:.1}s: {} connected, {} failed to connect",
            if self.ok { "OK:" } else { "FAILED:" },
            self.devices,
            self.protocol,
            self.seconds,
            self.connects_ok,
            self.connects_failed
        )?;
        writeln!(
            f,
            "  publishes {}, PUBACKs {}, latency p50 {} p99 {}",
            self.publishes,
            self.pubacks,
            ms(self.latency_p50_ms),
            ms(self.latency_p99_ms)
        )?;
        match &self.shadow_skipped {
            Some(why) => writeln!(f, "  shadow: skipped: {why}")?,
            None => writeln!(
                f,
                "  shadow: {} reported-state updates, {} deltas answered",
                self.shadow_updates, self.deltas_answered
            )?,
        }
        list_failures(f, &self.failures)
    }
}

impl Summary for SimulateSummary {
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

    #[test]
    fn the_summary_adds_up_devices_and_latencies() {
        let ok = |thing: &str, ms: &[u64]| Outcome {
            thing: thing.into(),
            connected: true,
            publishes: ms.len() as u32,
            pubacks: ms.len() as u32,
            latencies: ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            shadow_updates: 1,
            ..Outcome::default()
        };
        let refused = Outcome {
            thing: "d3".into(),
            error: Some("TLS handshake with h:1 refused: x".into()),
            ..Outcome::default()
        };
        let s = SimulateSummary::new(
            Protocol::Mqtt,
            &[ok("d1", &[10, 20]), ok("d2", &[30, 40]), refused],
            Duration::from_secs(2),
        );
        assert!(!s.ok);
        assert_eq!((s.devices, s.connects_ok, s.connects_failed), (3, 2, 1));
        assert_eq!((s.publishes, s.pubacks, s.shadow_updates), (4, 4, 2));
        assert_eq!(
            (s.latency_p50_ms, s.latency_p99_ms),
            (Some(20.0), Some(40.0))
        );
        let text = s.to_string();
        assert!(text.starts_with("simulate FAILED: 3 device(s) over mqtt in 2.0s: 2 connected, 1 failed to connect\n"), "{text}");
        assert!(
            text.contains("  ✗ d3: TLS handshake with h:1 refused: x\n"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["latency_p99_ms"], 40.0);
        assert_eq!(json["failures"][0]["thing"], "d3");
    }
}
