//! `[analytics]`: telemetry analytics. A Kinesis data stream fed by a second topic rule, and
//! an anomaly detector function reading it through an event source mapping, keeping each
//! device's recent readings in a DynamoDB table and publishing what it finds to the alert
//! topic. The ranges are AWS's where AWS has one (Kinesis CreateStream, Lambda
//! CreateEventSourceMapping), and the detector's own otherwise; all are checked here, so a
//! value AWS or the detector would refuse is bad input before any call.

use serde::Deserialize;

use super::{check_name, sample_name, NameRule, FUNCTION_NAME, ROLE_NAME, RULE_NAME};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Off by default: it adds a stream, a table, a queue and a function that cost money.
    pub enabled: bool,
    pub stream_name: String,
    /// Provisioned shards; unset, the stream is on-demand (it scales itself).
    pub shards: Option<u32>,
    /// The topic rule putting each reading on the stream (a second rule, beside the
    /// processor's).
    pub rule_name: String,
    /// The role that rule's Kinesis action assumes (PutRecord on the stream only).
    pub rule_role_name: String,
    pub function_name: String,
    /// The detector's execution role.
    pub role_name: String,
    /// Each device's detector state, one item a device.
    pub table_name: String,
    /// Where the event source mapping sends a batch it gave up on.
    pub failure_queue_name: String,
    /// The reading's field the detector scores.
    pub field: String,
    /// Readings kept per device: the z-score's history.
    pub window: u32,
    /// Readings a device must have sent before its z-score may fire.
    pub min_history: u32,
    /// The robust (median/MAD) z-score above which a reading is an outlier.
    pub threshold: f64,
    /// Identical readings in a row that make a stuck sensor.
    pub stuck_count: u32,
    /// The largest steady change per reading (units of `field`), estimated over
    /// `rate_window` readings.
    pub max_rate: f64,
    pub rate_window: u32,
    /// A device's state is dropped (DynamoDB TTL) this long after its last reading.
    pub state_ttl_days: u32,
    /// The event source mapping: records per invocation, how long to gather them, where a
    /// new mapping starts, retries of a failing batch, and whether to split it on error.
    pub batch_size: u32,
    pub batching_window_s: u32,
    pub starting_position: StartingPosition,
    pub retries: u32,
    pub bisect_on_error: bool,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: false,
            stream_name: "iot-telemetry-{{suffix}}".into(),
            shards: None,
            rule_name: "telemetry_analytics_{{suffix}}".into(),
            rule_role_name: "iot-telemetry-stream-{{suffix}}".into(),
            function_name: "iot-anomaly-detector-{{suffix}}".into(),
            role_name: "iot-anomaly-detector-role-{{suffix}}".into(),
            table_name: "iot-detector-state-{{suffix}}".into(),
            failure_queue_name: "iot-detector-failures-{{suffix}}".into(),
            field: "temperature".into(),
            window: 60,
            min_history: 30,
            threshold: 4.5,
            stuck_count: 10,
            max_rate: 1.0,
            rate_window: 8,
            state_ttl_days: 7,
            batch_size: 100,
            batching_window_s: 1,
            starting_position: StartingPosition::Latest,
            retries: 2,
            bisect_on_error: true,
        }
    }
}

/// Where a new mapping starts reading: new records only, or everything the stream holds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    #[default]
    Latest,
    TrimHorizon,
}

impl StartingPosition {
    pub fn as_str(self) -> &'static str {
        match self {
            StartingPosition::Latest => "LATEST",
            StartingPosition::TrimHorizon => "TRIM_HORIZON",
        }
    }
}

/// Kinesis stream names: `[a-zA-Z0-9_.-]+`, 1 to 128 (CreateStream).
const STREAM_NAME: NameRule = NameRule {
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
    describe: "letters, digits, '_', '.' and '-'",
};
/// DynamoDB table names: `[a-zA-Z0-9_.-]+`, 3 to 255 (CreateTable).
const TABLE_NAME: NameRule = NameRule {
    max: 255,
    ..STREAM_NAME
};
/// SQS queue names: letters, digits, '_' and '-', 1 to 80 (CreateQueue).
const QUEUE_NAME: NameRule = NameRule {
    max: 80,
    ..FUNCTION_NAME
};
/// The field is read from the reading's JSON and passed in an environment variable.
const FIELD_NAME: NameRule = NameRule {
    max: 64,
    ..FUNCTION_NAME
};

type Invalid = (String, String);

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    lo: T,
    hi: T,
    why: &str,
) -> Result<(), Invalid> {
    if value < lo || value > hi {
        return Err((
            format!("analytics.{field}"),
            format!("{value} is out of range; {why} {lo} to {hi}"),
        ));
    }
    Ok(())
}

/// Checks the section whether or not it is enabled: a typo waiting in a disabled section
/// would otherwise surface only on the day it is turned on.
pub fn validate(a: &AnalyticsConfig, suffix: Option<&str>) -> Result<(), Invalid> {
    let names: [(&str, &str, &NameRule); 7] = [
        ("stream_name", &a.stream_name, &STREAM_NAME),
        ("rule_name", &a.rule_name, &RULE_NAME),
        ("rule_role_name", &a.rule_role_name, &ROLE_NAME),
        ("function_name", &a.function_name, &FUNCTION_NAME),
        ("role_name", &a.role_name, &ROLE_NAME),
        ("table_name", &a.table_name, &TABLE_NAME),
        ("failure_queue_name", &a.failure_queue_name, &QUEUE_NAME),
    ];
    for (field, pattern, rule) in names {
        check_name(&sample_name(pattern, suffix), rule, false)
            .map_err(|m| (format!("analytics.{field}"), m))?;
    }
    if sample_name(&a.table_name, suffix).len() < 3 {
        return Err((
            "analytics.table_name".into(),
            "DynamoDB needs 3 characters at least".into(),
        ));
    }
    check_name(&a.field, &FIELD_NAME, false).map_err(|m| ("analytics.field".into(), m))?;
    if let Some(shards) = a.shards {
        // A stream needs one shard at least; 500 is the account's default shard quota in
        // most regions (more is a quota increase, and then an on-demand stream fits better).
        range("shards", shards, 1, 500, "a provisioned stream has")?;
    }
    if !a.threshold.is_finite() {
        return Err(("analytics.threshold".into(), "must be a number".into()));
    }
    // Below 1 nearly every reading is an outlier; above 50 none ever is.
    range(
        "threshold",
        a.threshold,
        1.0,
        50.0,
        "the z-score threshold is",
    )?;
    range("window", a.window, 5, 1000, "a device's history is")?;
    range(
        "min_history",
        a.min_history,
        3,
        a.window,
        "the readings needed are",
    )?;
    range("stuck_count", a.stuck_count, 2, 1000, "a stuck run is")?;
    if !(a.max_rate.is_finite() && a.max_rate > 0.0) {
        return Err((
            "analytics.max_rate".into(),
            format!("{} must be a positive number", a.max_rate),
        ));
    }
    range(
        "rate_window",
        a.rate_window,
        3,
        100,
        "the rate's readings are",
    )?;
    range(
        "state_ttl_days",
        a.state_ttl_days,
        1,
        365,
        "the state is kept",
    )?;
    range("batch_size", a.batch_size, 1, 10_000, "Lambda allows")?;
    range(
        "batching_window_s",
        a.batching_window_s,
        0,
        300,
        "Lambda allows",
    )?;
    // Lambda also allows -1 (until the record expires): a poison record would then hold its
    // shard for the stream's whole retention, so iotreg wants a bound.
    range("retries", a.retries, 0, 10_000, "iotreg allows")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut AnalyticsConfig)) -> Result<(), Invalid> {
        let mut a = AnalyticsConfig::default();
        f(&mut a);
        validate(&a, None)
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(with(|_| {}), Ok(()));
    }

    type Tweak<'a> = &'a dyn Fn(&mut AnalyticsConfig);

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases: [(Tweak, &str); 9] = [
            (&|a| a.shards = Some(0), "analytics.shards"),
            (&|a| a.threshold = 0.5, "analytics.threshold"),
            (&|a| a.threshold = f64::NAN, "analytics.threshold"),
            (&|a| a.min_history = 61, "analytics.min_history"),
            (&|a| a.max_rate = 0.0, "analytics.max_rate"),
            (&|a| a.batch_size = 0, "analytics.batch_size"),
            (
                &|a| a.batching_window_s = 301,
                "analytics.batching_window_s",
            ),
            (&|a| a.stream_name = "a b".into(), "analytics.stream_name"),
            (&|a| a.field = "temp.c".into(), "analytics.field"),
        ];
        for (tweak, field) in cases {
            let err = with(tweak).unwrap_err();
            assert_eq!(err.0, field, "{err:?}");
        }
        assert_eq!(
            with(|a| a.shards = Some(0)).unwrap_err().1,
            "0 is out of range; a provisioned stream has 1 to 500"
        );
    }
}
