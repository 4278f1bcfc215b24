//! `e2e.anomaly`: the analytics path end to end. A probe device (a name no real device has,
//! so the detector starts it with no history) publishes a burst of normal readings and then
//! one outlier through iot-data Publish; the analytics rule puts them on the stream, the
//! mapping runs the detector, and the detector logs every anomaly it publishes to the alert
//! topic. The check passes when the detector's log shows exactly one anomaly for the probe:
//! the outlier's z-score, with its SNS MessageId. A device's readings share a partition key,
//! so they reach the detector in order: once the outlier's line is there, anything the normal
//! readings raised is there too.

use std::time::Duration;

use aws_sdk_iotdataplane::primitives::Blob;

use super::Check;
use crate::resources::Env;

pub const E2E_ANOMALY: &str = "e2e.anomaly";
/// Readings before the outlier, at least (more when `analytics.min_history` asks for more).
const NORMAL_READINGS: usize = 30;
const BASELINE: f64 = 22.0;
/// The normal readings' wobble around the baseline, in tenths of a degree: no two in a row
/// equal (not stuck), no trend (no rate), a spread for the z-score to measure against.
const WOBBLE: [f64; 5] = [0.0, 1.0, -1.0, 0.5, -0.5];

/// One anomaly the detector logged.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Logged {
    pub device: String,
    pub rule: String,
    pub value: f64,
    #[serde(default)]
    pub score: Option<f64>,
    #[serde(default)]
    pub message_id: Option<String>,
}

/// The anomalies in the detector's log lines (`ANOMALY {json}`), for `device`.
pub fn anomalies_in(lines: &[String], device: &str) -> Vec<Logged> {
    lines
        .iter()
        .filter_map(|l| l.find("ANOMALY {").map(|i| &l[i + "ANOMALY ".len()..]))
        .filter_map(|json| serde_json::from_str::<Logged>(json.trim()).ok())
        .filter(|a| a.device == device)
        .collect()
}

/// The probe's readings: the normal burst, then the outlier (far enough out for any
/// threshold iotreg accepts: the wobble's MAD is 0.05 °C, the outlier 15 °C away).
pub fn probe_readings(min_history: u32) -> (Vec<f64>, f64) {
    let n = NORMAL_READINGS.max(min_history as usize + 5);
    let normal = (0..n)
        .map(|i| BASELINE + WOBBLE[i % WOBBLE.len()] / 10.0)
        .collect();
    (normal, BASELINE + 15.0)
}

pub async fn anomaly(env: &Env, timeout: Duration) -> Check {
    let Some(a) = env.d.analytics.as_deref() else {
        return Check::skip(E2E_ANOMALY, "anomaly", "analytics is off");
    };
    let probe = super::marker();
    let topic = crate::device::reading_topic(&probe);
    let group = format!("/aws/lambda/{}", a.function.name);
    let res = format!(
        "anomaly {topic} → {} → {} → {group}",
        a.rule.name, a.stream_name
    );
    let (normal, outlier) = probe_readings(a.min_history);
    let data = match env.aws.data().await {
        Ok(c) => c,
        Err(e) => return Check::fail(E2E_ANOMALY, &res, e.to_string()),
    };
    let since_ms = crate::state::now_ms().saturating_sub(60_000) as i64;
    for (i, value) in normal.iter().chain(std::iter::once(&outlier)).enumerate() {
        let payload = crate::device::reading(&probe, *value, 45.0, 87);
        crate::ratelimit::acquire("Publish").await;
        if let Err(e) = data
            .publish()
            .topic(&topic)
            .qos(1)
            .payload(Blob::new(payload.to_string()))
            .send()
            .await
        {
            let e = crate::aws::failed("topic", &topic, "iot-data:Publish", e);
            return Check::fail(E2E_ANOMALY, &res, format!("reading {}: {e}", i + 1));
        }
    }
    let found = super::poll(timeout, || async {
        let found = anomalies_in(&lines(env, &group, &probe, since_ms).await?, &probe);
        let outlier_seen = found.iter().any(|f| f.value == outlier);
        Ok((found, outlier_seen))
    })
    .await;
    match found {
        Ok((found, _)) => judge(&res, normal.len(), outlier, &found, timeout),
        Err(e) => Check::fail(E2E_ANOMALY, &res, e),
    }
}

/// Exactly one anomaly, the outlier's z-score, or a failure saying what was seen instead.
pub fn judge(res: &str, normal: usize, outlier: f64, found: &[Logged], timeout: Duration) -> Check {
    let describe = |f: &Logged| format!("{} at {}", f.rule, f.value);
    match found {
        [] => Check::fail(
            E2E_ANOMALY,
            res,
            format!(
                "published {normal} normal readings and an outlier of {outlier} °C; no anomaly was logged within {}s. \
                 Check the analytics rule, the stream and the mapping (analytics.*)",
                timeout.as_secs_f64()
            ),
        ),
        [one] if one.value == outlier && one.rule == "zscore" => Check::pass(
            E2E_ANOMALY,
            res,
            format!(
                "{normal} normal readings raised no alert; the outlier {outlier} °C raised one zscore alert (score {}, SNS MessageId {})",
                one.score.map(|s| format!("{s:.1}")).unwrap_or_else(|| "?".into()),
                one.message_id.as_deref().unwrap_or("?")
            ),
        ),
        _ => Check::fail(
            E2E_ANOMALY,
            res,
            format!(
                "expected one zscore alert for the outlier {outlier} °C after {normal} normal readings, got {}: {}",
                found.len(),
                found.iter().map(describe).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
}

/// The detector's log lines naming the probe since `since_ms`.
async fn lines(env: &Env, group: &str, probe: &str, since_ms: i64) -> Result<Vec<String>, String> {
    let pattern = format!("\"{probe}\"");
    Ok(
        super::log_events(env, group, Some(&pattern), None, since_ms)
            .await?
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.message().map(str::to_string))
            // An endpoint that ignores the pattern returns everything.
            .filter(|m| m.contains(probe))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(rule: &str, value: f64) -> Logged {
        Logged {
            device: "p".into(),
            rule: rule.into(),
            value,
            score: Some(99.0),
            message_id: Some("m-1".into()),
        }
    }

    #[test]
    fn the_probe_is_normal_then_one_outlier() {
        let (normal, outlier) = probe_readings(10);
        assert_eq!(normal.len(), 30);
        assert!(normal.windows(2).all(|w| w[0] != w[1]), "no stuck run");
        assert_eq!(probe_readings(60).0.len(), 65);
        assert_eq!(outlier, 37.0);
    }

    #[test]
    fn anomalies_are_read_from_the_detector_lines() {
        let lines = vec![
            "[INFO]\t2026-11-30T21:00:00Z\treq\tANOMALY {\"device\": \"p\", \"rule\": \"zscore\", \"value\": 37.0, \"score\": 101.2, \"message_id\": \"m-1\"}".to_string(),
            "ANOMALY {\"device\": \"q\", \"rule\": \"stuck\", \"value\": 1.0}".to_string(),
            "summary p 31 records".to_string(),
        ];
        let found = anomalies_in(&lines, "p");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, "zscore");
        assert_eq!(found[0].message_id.as_deref(), Some("m-1"));
    }

    #[test]
    fn exactly_the_outliers_zscore_passes() {
        let t = Duration::from_secs(1);
        assert_eq!(
            judge("r", 30, 37.0, &[logged("zscore", 37.0)], t).status,
            super::super::CheckStatus::Pass
        );
        for found in [
            vec![],
            vec![logged("zscore", 37.0), logged("rate", 22.1)],
            vec![logged("rate", 37.0)],
            vec![logged("zscore", 22.1)],
        ] {
            let c = judge("r", 30, 37.0, &found, t);
            assert_eq!(c.status, super::super::CheckStatus::Fail, "{found:?}");
        }
    }
}
