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

/// One CloudWatch alarm: a metric's sum over one period at or above a threshold.
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
}

pub const ALARM_FUNCTION_ERRORS: &str = "alarm_function_errors";
pub const ALARM_FUNCTION_THROTTLES: &str = "alarm_function_throttles";
pub const ALARM_RULE_FAILURES: &str = "alarm_rule_failures";

/// The name of the role's inline policy that lets the function publish alerts.
pub const POLICY_NAME: &str = "publish-temperature-alerts";

/// The three alarms of the issue: the function's errors and throttles, and the rule's failed
/// actions (AWS IoT's `Failure` metric, reported per rule and action type).
pub fn alarms(function_name: &str, rule_name: &str) -> Vec<AlarmSpec> {
    let five_minutes =
        |(key, check), name: String, description: String, ns: &str, metric: &str, dims| AlarmSpec {
            key,
            check,
            name,
            description,
            namespace: ns.into(),
            metric: metric.into(),
            dimensions: dims,
            statistic: "Sum".into(),
            period_s: 300,
            evaluation_periods: 1,
            threshold: 1.0,
            comparison: "GreaterThanOrEqualToThreshold".into(),
            treat_missing_data: "notBreaching".into(),
        };
    let function = vec![("FunctionName".to_string(), function_name.to_string())];
    vec![
        five_minutes(
            (ALARM_FUNCTION_ERRORS, "alarm.function_errors"),
            format!("{function_name}-errors"),
            format!("Lambda function {function_name} failed at least once in 5 minutes"),
            "AWS/Lambda",
            "Errors",
            function.clone(),
        ),
        five_minutes(
            (ALARM_FUNCTION_THROTTLES, "alarm.function_throttles"),
            format!("{function_name}-throttles"),
            format!("Lambda function {function_name} was throttled at least once in 5 minutes"),
            "AWS/Lambda",
            "Throttles",
            function,
        ),
        five_minutes(
            (ALARM_RULE_FAILURES, "alarm.rule_failures"),
            format!("{rule_name}-failed-actions"),
            format!(
                "Topic rule {rule_name} failed to invoke its Lambda action at least once in 5 minutes"
            ),
            "AWS/IoT",
            "Failure",
            vec![
                ("RuleName".to_string(), rule_name.to_string()),
                ("ActionType".to_string(), "Lambda".to_string()),
            ],
        ),
    ]
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

    #[test]
    fn alarms_watch_the_function_and_the_rule() {
        let a = alarms("iot-data-processor-s1", "sensor_data_rule_s1");
        let names: Vec<&str> = a.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "iot-data-processor-s1-errors",
                "iot-data-processor-s1-throttles",
                "sensor_data_rule_s1-failed-actions"
            ]
        );
        assert!(a.iter().all(|a| a.threshold == 1.0
            && a.period_s == 300
            && a.comparison == "GreaterThanOrEqualToThreshold"));
        assert_eq!(
            a[2].dimensions,
            [
                ("RuleName".to_string(), "sensor_data_rule_s1".to_string()),
                ("ActionType".to_string(), "Lambda".to_string())
            ]
        );
    }

    #[test]
    fn the_policy_allows_publishing_to_the_topic_only() {
        let p = publish_policy("arn:aws:sns:us-east-1:1:t");
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(p["Statement"][0]["Action"], "sns:Publish");
        assert_eq!(p["Statement"][0]["Resource"], "arn:aws:sns:us-east-1:1:t");
    }
}
