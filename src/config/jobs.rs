//! `[jobs]` and `[[job_templates]]`: AWS IoT Jobs as code. Each template is a firmware file
//! (iotreg uploads it and writes the job document) or a job document file, with its rollout,
//! abort criteria, in-progress timeout and retries. The ranges are AWS's (IoT API reference:
//! CreateJobTemplate, JobExecutionsRolloutConfig, ExponentialRolloutRate, AbortCriteria,
//! TimeoutConfig, RetryCriteria, PresignedUrlConfig), checked here so that a value AWS would
//! refuse is bad input before any call.

use std::path::PathBuf;

use serde::Deserialize;

/// Where firmware goes and how devices reach it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// The bucket for firmware files. Unset, iotreg creates one named from the account,
    /// region and suffix, and deletes it on `down`.
    pub bucket: Option<String>,
    /// The role AWS IoT assumes to sign the firmware's download links (read-only on the
    /// firmware prefix).
    pub presign_role_name: String,
    /// How long a download link is valid (AWS: 60 to 3600 seconds).
    pub url_expires_s: i64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            bucket: None,
            presign_role_name: "iot-jobs-presign-{{suffix}}".into(),
            url_expires_s: 3600,
        }
    }
}

/// One job template.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JobTemplateConfig {
    /// The name `iotreg job start` takes; the template's id in AWS is `<name>-<suffix>`.
    pub name: String,
    pub description: Option<String>,
    /// A firmware file: uploaded, and the job document names its version, size and SHA-256
    /// with a pre-signed download link.
    pub firmware: Option<PathBuf>,
    /// The firmware's version, which devices report in their shadow (required with firmware).
    pub version: Option<String>,
    /// A job document file (JSON) instead of a firmware file.
    pub document: Option<PathBuf>,
    pub rollout: Option<RolloutConfig>,
    /// Cancel the job when too many executions fail (`[[job_templates.abort]]`).
    pub abort: Vec<AbortConfig>,
    /// An execution still IN_PROGRESS after this many minutes is TIMED_OUT.
    pub timeout_minutes: Option<i64>,
    /// Retry failed or timed-out executions (`[[job_templates.retry]]`).
    pub retry: Vec<RetryConfig>,
}

/// How fast executions reach devices: a constant maximum per minute, or an exponential rate.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    pub maximum_per_minute: Option<i32>,
    pub base_rate_per_minute: Option<i32>,
    pub increment_factor: Option<f64>,
    /// The rate increases after this many devices were notified since the last increase…
    pub notified_things: Option<i32>,
    /// …or after this many succeeded (exactly one of the two).
    pub succeeded_things: Option<i32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AbortConfig {
    pub failure_type: FailureType,
    /// The share of executed devices whose executions failed this way, in percent.
    pub threshold_percentage: f64,
    /// Devices that must have executed before the criterion is evaluated.
    pub min_executed_things: i32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub failure_type: FailureType,
    pub retries: i32,
}

/// AWS's failure types (JobExecutionFailureType / RetryableFailureType).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureType {
    Failed,
    Rejected,
    TimedOut,
    All,
}

impl FailureType {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureType::Failed => "FAILED",
            FailureType::Rejected => "REJECTED",
            FailureType::TimedOut => "TIMED_OUT",
            FailureType::All => "ALL",
        }
    }
}

/// Job and job template ids: 1 to 64 of letters, digits, `-` and `_` (AWS's pattern).
pub fn check_job_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!(
            "{id:?} is {} characters long; AWS allows 1 to 64",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{id:?} contains {c:?}; AWS allows letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// The id of a template in AWS: its name and the deployment's suffix.
pub fn template_id(name: &str, suffix: &str) -> String {
    format!("{name}-{suffix}")
}

/// Checks `[jobs]` and every template (with the pinned suffix, else one as long as iotreg
/// makes); (field, message) of the first problem.
pub fn validate(
    jobs: &JobsConfig,
    templates: &[JobTemplateConfig],
    suffix: Option<&str>,
) -> Result<(), (String, String)> {
    if !(60..=3600).contains(&jobs.url_expires_s) {
        return Err((
            "jobs.url_expires_s".into(),
            format!(
                "{} is out of range; AWS allows 60 to 3600 seconds",
                jobs.url_expires_s
            ),
        ));
    }
    if let Some(b) = &jobs.bucket {
        super::check_bucket_name(b).map_err(|m| ("jobs.bucket".to_string(), m))?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in templates.iter().enumerate() {
        let at = |field: &str| format!("job_templates[{i}].{field}");
        let err = |field: &str, m: String| Err((at(field), m));
        if t.name.is_empty() {
            return err("name", "required".into());
        }
        check_job_id(&t.name).map_err(|m| (at("name"), m))?;
        // The suffix is appended: it must fit within AWS's 64 characters too.
        let id = template_id(&t.name, suffix.unwrap_or("a1b2c3"));
        if id.len() > 64 {
            return err(
                "name",
                format!("{id:?}, the name with the deployment suffix, is longer than AWS's 64 characters"),
            );
        }
        if !seen.insert(t.name.as_str()) {
            return err("name", format!("{:?} is used by two templates", t.name));
        }
        match (&t.firmware, &t.document) {
            (Some(_), Some(_)) => {
                return err("document", "give firmware or document, not both".into())
            }
            (None, None) => return err("firmware", "give firmware (a file) or document".into()),
            (Some(_), None) if t.version.as_deref().is_none_or(str::is_empty) => {
                return err("version", "required with firmware".into())
            }
            (None, Some(_)) if t.version.is_some() => {
                return err(
                    "version",
                    "only with firmware (the document is yours)".into(),
                )
            }
            _ => {}
        }
        if let Some(d) = &t.description {
            if d.chars().count() > 2028 {
                return err("description", "AWS allows at most 2028 characters".into());
            }
        }
        if let Some(r) = &t.rollout {
            validate_rollout(r).map_err(|(f, m)| (at(&format!("rollout.{f}")), m))?;
        }
        for (j, a) in t.abort.iter().enumerate() {
            let f = |name: &str| format!("abort[{j}].{name}");
            if !(a.threshold_percentage > 0.0 && a.threshold_percentage <= 100.0) {
                return err(
                    &f("threshold_percentage"),
                    format!(
                        "{} is out of range; AWS allows more than 0 and at most 100",
                        a.threshold_percentage
                    ),
                );
            }
            if a.min_executed_things < 1 {
                return err(
                    &f("min_executed_things"),
                    format!(
                        "{} is out of range; AWS needs at least 1",
                        a.min_executed_things
                    ),
                );
            }
        }
        if let Some(m) = t.timeout_minutes {
            if !(1..=10080).contains(&m) {
                return err(
                    "timeout_minutes",
                    format!("{m} is out of range; AWS allows 1 to 10080 (7 days)"),
                );
            }
        }
        for (j, r) in t.retry.iter().enumerate() {
            if r.failure_type == FailureType::Rejected {
                return err(
                    &format!("retry[{j}].failure_type"),
                    "AWS retries FAILED, TIMED_OUT or ALL, not REJECTED".into(),
                );
            }
            if !(0..=10).contains(&r.retries) {
                return err(
                    &format!("retry[{j}].retries"),
                    format!("{} is out of range; AWS allows 0 to 10", r.retries),
                );
            }
        }
    }
    Ok(())
}

fn validate_rollout(r: &RolloutConfig) -> Result<(), (String, String)> {
    let rate = |field: &str, v: i32| {
        if (1..=1000).contains(&v) {
            Ok(())
        } else {
            Err((
                field.to_string(),
                format!("{v} is out of range; AWS allows 1 to 1000 a minute"),
            ))
        }
    };
    let exponential = r.base_rate_per_minute.is_some()
        || r.increment_factor.is_some()
        || r.notified_things.is_some()
        || r.succeeded_things.is_some();
    match (r.maximum_per_minute, exponential) {
        (None, false) => Err((
            "maximum_per_minute".into(),
            "give maximum_per_minute, or an exponential rate (base_rate_per_minute, increment_factor and notified_things or succeeded_things)".into(),
        )),
        (Some(_), true) => Err((
            "maximum_per_minute".into(),
            "a constant rate or an exponential one, not both".into(),
        )),
        (Some(m), false) => rate("maximum_per_minute", m),
        (None, true) => {
            let base = r.base_rate_per_minute.ok_or_else(|| {
                ("base_rate_per_minute".to_string(), "required for an exponential rate".to_string())
            })?;
            rate("base_rate_per_minute", base)?;
            let factor = r.increment_factor.ok_or_else(|| {
                ("increment_factor".to_string(), "required for an exponential rate".to_string())
            })?;
            if !(1.1..=5.0).contains(&factor) {
                return Err((
                    "increment_factor".into(),
                    format!("{factor} is out of range; AWS allows 1.1 to 5"),
                ));
            }
            match (r.notified_things, r.succeeded_things) {
                (Some(n), None) | (None, Some(n)) if n >= 1 => Ok(()),
                (Some(n), None) => Err((
                    "notified_things".into(),
                    format!("{n} is out of range; AWS needs at least 1"),
                )),
                (None, Some(n)) => Err((
                    "succeeded_things".into(),
                    format!("{n} is out of range; AWS needs at least 1"),
                )),
                _ => Err((
                    "notified_things".into(),
                    "give exactly one of notified_things and succeeded_things".into(),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firmware(name: &str) -> JobTemplateConfig {
        JobTemplateConfig {
            name: name.into(),
            firmware: Some("fw.bin".into()),
            version: Some("2.0.0".into()),
            ..Default::default()
        }
    }

    fn check(t: JobTemplateConfig) -> Result<(), (String, String)> {
        validate(&JobsConfig::default(), &[t], None)
    }

    #[test]
    fn a_firmware_template_with_aws_ranges_is_valid() {
        let mut t = firmware("fw-v2");
        t.rollout = Some(RolloutConfig {
            maximum_per_minute: Some(1000),
            ..Default::default()
        });
        t.abort = vec![AbortConfig {
            failure_type: FailureType::Failed,
            threshold_percentage: 10.0,
            min_executed_things: 10,
        }];
        t.timeout_minutes = Some(10080);
        t.retry = vec![RetryConfig {
            failure_type: FailureType::TimedOut,
            retries: 10,
        }];
        assert_eq!(check(t), Ok(()));
    }

    #[test]
    fn values_aws_refuses_name_their_field() {
        let field = |t: JobTemplateConfig| check(t).unwrap_err().0;
        let mut t = firmware("fw");
        t.rollout = Some(RolloutConfig {
            maximum_per_minute: Some(1001),
            ..Default::default()
        });
        assert_eq!(field(t), "job_templates[0].rollout.maximum_per_minute");
        let mut t = firmware("fw");
        t.rollout = Some(RolloutConfig {
            base_rate_per_minute: Some(10),
            increment_factor: Some(6.0),
            notified_things: Some(5),
            ..Default::default()
        });
        assert_eq!(field(t), "job_templates[0].rollout.increment_factor");
        let mut t = firmware("fw");
        t.rollout = Some(RolloutConfig {
            base_rate_per_minute: Some(10),
            increment_factor: Some(2.0),
            notified_things: Some(5),
            succeeded_things: Some(5),
            ..Default::default()
        });
        assert_eq!(field(t), "job_templates[0].rollout.notified_things");
        let mut t = firmware("fw");
        t.abort = vec![AbortConfig {
            failure_type: FailureType::All,
            threshold_percentage: 101.0,
            min_executed_things: 1,
        }];
        assert_eq!(field(t), "job_templates[0].abort[0].threshold_percentage");
        let mut t = firmware("fw");
        t.timeout_minutes = Some(0);
        assert_eq!(field(t), "job_templates[0].timeout_minutes");
        let mut t = firmware("fw");
        t.retry = vec![RetryConfig {
            failure_type: FailureType::Failed,
            retries: 11,
        }];
        assert_eq!(field(t), "job_templates[0].retry[0].retries");
        let mut t = firmware("fw");
        t.version = None;
        assert_eq!(field(t), "job_templates[0].version");
        let mut t = firmware("fw");
        t.document = Some("doc.json".into());
        assert_eq!(field(t), "job_templates[0].document");
        assert_eq!(field(firmware("bad name")), "job_templates[0].name");
        assert_eq!(field(firmware(&"x".repeat(60))), "job_templates[0].name");
        let two = [firmware("a"), firmware("a")];
        assert_eq!(
            validate(&JobsConfig::default(), &two, None).unwrap_err().0,
            "job_templates[1].name"
        );
        let jobs = JobsConfig {
            url_expires_s: 30,
            ..Default::default()
        };
        assert_eq!(
            validate(&jobs, &[], None).unwrap_err().0,
            "jobs.url_expires_s"
        );
    }
}
