//! The monitoring of the architecture diagram, as the config wants it: the alert topic, the
//! role's permission to publish to it, the alarms that notify it and the dashboard. Pure
//! data, resolved once with the deployment; the resources are in `alert_topic`,
//! `alert_subscription`, `alert_policy`, `alarm` and `dashboard`.

/// The monitoring resources' names and settings. Always resolved (the names are needed to
/// delete what an earlier `up` made), and only deployed when `enabled`.
#[derive(Debug, Clone)]
pub struct Monitoring {
    pub enabled: bool,
    pub topic_name: String,
    pub topic_arn: String,
    pub alert_email: Option<String>,
    /// The role's inline policy allowing `sns:Publish` on the topic only.
    pub policy_name: String,
    pub dashboard_name: String,
    pub dashboard_body: serde_json::Value,
    pub alarms: Vec<AlarmSpec>,
}

/// One CloudWatch alarm: a metric's statistic over one period at or above a threshold,
/// notifying `actions` when it goes into ALARM.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSpec {
    /// Its key in the state.
    pub key: &'static str,
    /// verify's check of it.
    pub check: &'static str,
    pub name: String,
    pub description: String,
    pub namespace: String,
    pub metric: String,
    /// Name/value pairs, in the order given; CloudWatch matches a metric by all of them.
    pub dimensions: Vec<(String, String)>,
    pub statistic: String,
    pub period_s: i32,
    pub evaluation_periods: i32,
    pub threshold: f64,
    pub comparison: String,
    /// No data means nothing happened (no invocations, no failures): not an alarm.
    pub treat_missing_data: String,
    /// What it notifies when it goes into ALARM: the alert topic.
    pub actions: Vec<String>,
}

pub const ALARM_FUNCTION_ERRORS: &str = "alarm_function_errors";
pub const ALARM_FUNCTION_THROTTLES: &str = "alarm_function_throttles";
pub const ALARM_RULE_FAILURES: &str = "alarm_rule_failures";
pub const ALARM_CONNECT_AUTH_ERRORS: &str = "alarm_connect_auth_errors";

/// Refused connections in 5 minutes that raise the connect-failure alarm. A device retrying
/// with a wrong certificate or client id refuses itself at its reconnect rate, so a few
/// refusals are one device's mistake and five in five minutes a pattern. Fixed, like the other
/// alarms' thresholds (docs/decisions.md).
pub const CONNECT_AUTH_ERROR_THRESHOLD: f64 = 5.0;

/// The key and check a job's failure alarm has: `iotreg job start` makes it and records its
/// name with the job (not under this key), and `down` deletes it with the job.
pub const ALARM_JOB_FAILURES: &str = "alarm_job_failures";

/// The name of the role's inline policy that lets the function publish alerts.
pub const POLICY_NAME: &str = "publish-temperature-alerts";

fn five_minutes(
    (key, check): (&'static str, &'static str),
    name: String,
    description: String,
    (namespace, metric): (&str, &str),
    dimensions: Vec<(String, String)>,
    topic_arn: &str,
) -> AlarmSpec {
    AlarmSpec {
        key,
        check,
        name,
        description,
        namespace: namespace.into(),
        metric: metric.into(),
        dimensions,
        statistic: "Sum".into(),
        period_s: 300,
        evaluation_periods: 1,
        threshold: 1.0,
        comparison: "GreaterThanOrEqualToThreshold".into(),
        treat_missing_data: "notBreaching".into(),
        actions: vec![topic_arn.to_string()],
    }
}

/// The deployment's alarms, each notifying the alert topic: the function's errors and
/// throttles and the rule's failed actions (issue 7), and refused device connections.
pub fn alarms(
    function_name: &str,
    rule_name: &str,
    suffix: &str,
    topic_arn: &str,
) -> Vec<AlarmSpec> {
    let function = vec![("FunctionName".to_string(), function_name.to_string())];
    vec![
        five_minutes(
            (ALARM_FUNCTION_ERRORS, "alarm.function_errors"),
            format!("{function_name}-errors"),
            format!("Lambda function {function_name} failed at least once in 5 minutes"),
            ("AWS/Lambda", "Errors"),
            function.clone(),
            topic_arn,
        ),
        five_minutes(
            (ALARM_FUNCTION_THROTTLES, "alarm.function_throttles"),
            format!("{function_name}-throttles"),
            format!("Lambda function {function_name} was throttled at least once in 5 minutes"),
            ("AWS/Lambda", "Throttles"),
            function,
            topic_arn,
        ),
        // AWS IoT reports rule-action metrics per rule and action type.
        five_minutes(
            (ALARM_RULE_FAILURES, "alarm.rule_failures"),
            format!("{rule_name}-failed-actions"),
            format!(
                "Topic rule {rule_name} failed to invoke its Lambda action at least once in 5 minutes"
            ),
            ("AWS/IoT", "Failure"),
            vec![
                ("RuleName".to_string(), rule_name.to_string()),
                ("ActionType".to_string(), "Lambda".to_string()),
            ],
            topic_arn,
        ),
        // AWS IoT reports the message broker's metrics per protocol only (MQTT or HTTP; a
        // CONNECT is always MQTT), so this counts every device of the account and region,
        // not only this deployment's.
        AlarmSpec {
            threshold: CONNECT_AUTH_ERROR_THRESHOLD,
            ..five_minutes(
                (ALARM_CONNECT_AUTH_ERRORS, "alarm.connect_auth_errors"),
                format!("iot-connect-auth-errors-{suffix}"),
                format!(
                    "AWS IoT refused {CONNECT_AUTH_ERROR_THRESHOLD} or more MQTT connections as not \
                     authorized (Connect.AuthError, every device of the account and region) in 5 \
                     minutes"
                ),
                ("AWS/IoT", "Connect.AuthError"),
                vec![("Protocol".to_string(), "MQTT".to_string())],
                topic_arn,
            )
        },
    ]
}

/// The alarm on a job's failed executions: AWS IoT's `FailedJobExecutionTotalCount`, the
/// number of the job's executions whose status is FAILED, reported per `JobId` (so it is made
/// per job: an alarm cannot use a SEARCH expression). Its Maximum over 5 minutes at 1 or more
/// raises it, and it stays in ALARM while AWS reports the failures; no data (a job with no
/// failure, or one AWS no longer reports) is not an alarm. It notifies the alert topic, so
/// there is none while monitoring is off. Named after the deployment and the job; `iotreg job
/// start` records its name with the job, and `down` deletes it with the job.
pub fn job_failure_alarm(d: &super::Deployment, job_id: &str) -> Option<AlarmSpec> {
    let m = &d.monitoring;
    if !m.enabled {
        return None;
    }
    Some(AlarmSpec {
        statistic: "Maximum".into(),
        ..five_minutes(
            (ALARM_JOB_FAILURES, "alarm.job_failures"),
            format!("iot-job-failures-{}-{job_id}", d.suffix),
            format!("Job {job_id}: at least one of its executions FAILED"),
            ("AWS/IoT", "FailedJobExecutionTotalCount"),
            vec![("JobId".to_string(), job_id.to_string())],
            &m.topic_arn,
        )
    })
}

/// The inline policy document: publish to the alert topic, nothing else.
pub fn publish_policy(topic_arn: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "sns:Publish",
            "Resource": topic_arn,
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "arn:aws:sns:us-east-1:1:iot-temperature-alerts-s1";

    #[test]
    fn alarms_watch_the_function_the_rule_and_refused_connections() {
        let a = alarms("iot-data-processor-s1", "sensor_data_rule_s1", "s1", TOPIC);
        let names: Vec<&str> = a.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "iot-data-processor-s1-errors",
                "iot-data-processor-s1-throttles",
                "sensor_data_rule_s1-failed-actions",
                "iot-connect-auth-errors-s1"
            ]
        );
        assert!(a.iter().all(|a| a.period_s == 300
            && a.statistic == "Sum"
            && a.comparison == "GreaterThanOrEqualToThreshold"
            && a.actions == [TOPIC]));
        let thresholds: Vec<f64> = a.iter().map(|a| a.threshold).collect();
        assert_eq!(thresholds, [1.0, 1.0, 1.0, 5.0]);
        assert_eq!(
            a[2].dimensions,
            [
                ("RuleName".to_string(), "sensor_data_rule_s1".to_string()),
                ("ActionType".to_string(), "Lambda".to_string())
            ]
        );
        let connect = &a[3];
        assert_eq!(
            (connect.namespace.as_str(), connect.metric.as_str()),
            ("AWS/IoT", "Connect.AuthError")
        );
        assert_eq!(
            connect.dimensions,
            [("Protocol".to_string(), "MQTT".to_string())]
        );
        assert_eq!(
            (connect.key, connect.check),
            (ALARM_CONNECT_AUTH_ERRORS, "alarm.connect_auth_errors")
        );
        // Every key is its own record in the state.
        let mut keys: Vec<&str> = a.iter().map(|a| a.key).collect();
        keys.dedup();
        assert_eq!(keys.len(), a.len());
    }

    #[test]
    fn a_jobs_failure_alarm_watches_its_failed_executions_and_notifies_the_topic() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = crate::resources::testing::deployment(dir.path());
        d.monitoring.enabled = true;
        let a = job_failure_alarm(&d, "fw-2-0-0").unwrap();
        assert_eq!(a.name, "iot-job-failures-abc123-fw-2-0-0");
        assert!(a
            .name
            .starts_with(&format!("iot-job-failures-{}-", d.suffix)));
        assert_eq!(
            (a.namespace.as_str(), a.metric.as_str()),
            ("AWS/IoT", "FailedJobExecutionTotalCount")
        );
        assert_eq!(
            a.dimensions,
            [("JobId".to_string(), "fw-2-0-0".to_string())]
        );
        assert_eq!(
            (a.statistic.as_str(), a.period_s, a.evaluation_periods),
            ("Maximum", 300, 1)
        );
        assert_eq!(
            (
                a.threshold,
                a.comparison.as_str(),
                a.treat_missing_data.as_str()
            ),
            (1.0, "GreaterThanOrEqualToThreshold", "notBreaching")
        );
        assert_eq!(a.actions, [d.monitoring.topic_arn.clone()]);
        assert!(a.description.contains("fw-2-0-0"), "{}", a.description);
        // Without monitoring there is no topic to notify: no alarm.
        d.monitoring.enabled = false;
        assert_eq!(job_failure_alarm(&d, "fw-2-0-0"), None);
    }

    #[test]
    fn the_policy_allows_publishing_to_the_topic_only() {
        let p = publish_policy("arn:aws:sns:us-east-1:1:t");
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(p["Statement"][0]["Action"], "sns:Publish");
        assert_eq!(p["Statement"][0]["Resource"], "arn:aws:sns:us-east-1:1:t");
    }
}
