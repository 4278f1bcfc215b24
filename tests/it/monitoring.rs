//! Monitoring end to end on the local AWS (issue 7): the alert topic, the role's publish
//! policy, the alarms and the dashboard, seen from outside; a HIGH reading's alert reaching an
//! SQS queue subscribed to the topic; `verify`'s checks; `down`; and monitoring turned off.
//! The device side: a device and refused connections (mosquitto_pub) counted in the
//! local AWS's CloudWatch, read as the dashboard's widgets read them, and the connect-failure
//! alarm's condition met.

use std::time::{Duration, Instant};

use aws_sdk_iotdataplane::primitives::Blob;

use crate::support::*;

fn topic_arn(suffix: &str) -> String {
    format!("arn:aws:sns:{REGION}:{ACCOUNT}:iot-temperature-alerts-{suffix}")
}

/// Every message the queue holds or receives within `wait` (until the first arrive), as the SNS
/// envelopes' parsed JSON.
async fn drain(c: &Clients, url: &str, wait: Duration) -> Vec<serde_json::Value> {
    receive(c, url, wait, |got| !got.is_empty()).await
}

/// Publishes a reading as a device would, and waits until the function has finished with it
/// (its invocation's END line follows the reading in the log).
async fn publish_and_wait(c: &Clients, suffix: &str, temperature: f64, marker: &str) {
    let thing = format!("temperature-sensor-{suffix}");
    let payload = serde_json::json!({
        "temperature": temperature,
        "humidity": 40,
        "timestamp": "2026-11-29T10:00:00Z",
        "battery_level": 90,
        "test_marker": marker,
    });
    c.data
        .publish()
        .topic(format!("sensor/temperature/{thing}"))
        .qos(1)
        .payload(Blob::new(payload.to_string()))
        .send()
        .await
        .unwrap();
    let group = format!("/aws/lambda/iot-data-processor-{suffix}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(out) = c
            .logs
            .filter_log_events()
            .log_group_name(&group)
            .send()
            .await
        {
            let lines: Vec<&str> = out.events().iter().filter_map(|e| e.message()).collect();
            if let Some(i) = lines.iter().position(|l| l.contains(marker)) {
                if lines[i..].iter().any(|l| l.starts_with("END RequestId:")) {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the {temperature} °C reading ({marker}) was not processed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The function's ALERT_TOPIC_ARN, if it has one.
async fn alert_variable(c: &Clients, suffix: &str) -> Option<String> {
    let f = c
        .lambda
        .get_function_configuration()
        .function_name(format!("iot-data-processor-{suffix}"))
        .send()
        .await
        .unwrap();
    f.environment()
        .and_then(|e| e.variables())
        .and_then(|v| v.get("ALERT_TOPIC_ARN").cloned())
}

/// Writes a new config and checks that `plan` now has changes to show; returns its output.
fn reconfigure(w: &Workdir, text: &str) -> String {
    std::fs::write(w.path().join("iotreg.toml"), text).unwrap();
    let r = w.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code(), 3, "{}", r.all());
    r.stdout()
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// A deployment and what the tests look at. Keep it whole (`let d = deployed(..).await;`): a
/// `let Deployed { w, .. } = ...` would drop the emulator there and then.
struct Deployed {
    emu: Emulator,
    w: Workdir,
    c: Clients,
    s: String,
    topic: String,
}

/// `up` with `config` as iotreg.toml (none if empty), and what `up` printed.
async fn deployed(config: &str) -> (Deployed, Run) {
    let emu = Emulator::start();
    let w = emu.workdir();
    if !config.is_empty() {
        std::fs::write(w.path().join("iotreg.toml"), config).unwrap();
    }
    let up = w.ok(&["up"]);
    let c = emu.clients().await;
    let s = w.suffix();
    let topic = topic_arn(&s);
    (
        Deployed {
            emu,
            w,
            c,
            s,
            topic,
        },
        up,
    )
}

/// The default stack, monitoring on.
async fn monitored() -> Deployed {
    deployed("").await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alert_topic_exists_and_the_function_knows_it() {
    let d = monitored().await;
    let (c, s, topic) = (&d.c, &d.s, &d.topic);
    assert_eq!(inventory(c).await, Inventory::one_of_each());
    c.sns
        .get_topic_attributes()
        .topic_arn(topic)
        .send()
        .await
        .expect("the alert topic exists");
    assert_eq!(alert_variable(c, s).await.as_deref(), Some(topic.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_role_may_publish_to_the_topic_and_nothing_else() {
    let d = monitored().await;
    let (c, s, topic) = (&d.c, &d.s, &d.topic);
    let policy = c
        .iam
        .get_role_policy()
        .role_name(format!("iot-lambda-role-{s}"))
        .policy_name("publish-temperature-alerts")
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&percent_decode(policy.policy_document())).unwrap();
    assert_eq!(
        doc["Statement"],
        serde_json::json!([{"Effect": "Allow", "Action": "sns:Publish", "Resource": topic}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn four_alarms_each_notify_the_topic() {
    let d = monitored().await;
    let (c, s, topic) = (&d.c, &d.s, &d.topic);
    let alarms = c.cloudwatch.describe_alarms().send().await.unwrap();
    let mut seen: Vec<(String, String, Vec<String>)> = alarms
        .metric_alarms()
        .iter()
        .map(|a| {
            assert_eq!(a.alarm_actions(), std::slice::from_ref(topic), "{a:?}");
            // Refused connections: 5 in 5 minutes; every other alarm: 1.
            let threshold = if a.metric_name() == Some("Connect.AuthError") {
                5.0
            } else {
                1.0
            };
            assert_eq!(a.threshold(), Some(threshold), "{a:?}");
            assert_eq!(a.statistic().map(|s| s.as_str()), Some("Sum"), "{a:?}");
            assert_eq!(a.period(), Some(300));
            assert_eq!(
                a.comparison_operator().map(|c| c.as_str()),
                Some("GreaterThanOrEqualToThreshold")
            );
            let mut dims: Vec<String> = a
                .dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap(), d.value().unwrap()))
                .collect();
            dims.sort();
            (
                a.namespace().unwrap().to_string(),
                a.metric_name().unwrap().to_string(),
                dims,
            )
        })
        .collect();
    seen.sort();
    let function_dim = vec![format!("FunctionName=iot-data-processor-{s}")];
    assert_eq!(
        seen,
        [
            (
                "AWS/IoT".to_string(),
                "Connect.AuthError".to_string(),
                vec!["Protocol=MQTT".to_string()]
            ),
            (
                "AWS/IoT".to_string(),
                "Failure".to_string(),
                vec![
                    "ActionType=Lambda".to_string(),
                    format!("RuleName=sensor_data_rule_{s}")
                ]
            ),
            (
                "AWS/Lambda".to_string(),
                "Errors".to_string(),
                function_dim.clone()
            ),
            (
                "AWS/Lambda".to_string(),
                "Throttles".to_string(),
                function_dim
            ),
        ]
    );
}

/// The deployment's dashboard body, as CloudWatch returns it.
async fn dashboard_body(c: &Clients, s: &str) -> serde_json::Value {
    let dashboard = c
        .cloudwatch
        .get_dashboard()
        .dashboard_name(format!("iot-device-registry-{s}"))
        .send()
        .await
        .unwrap();
    serde_json::from_str(dashboard.dashboard_body().unwrap()).unwrap()
}

/// One metric a dashboard widget graphs: what a GetMetricData `MetricStat` needs.
#[derive(Debug, Clone, PartialEq)]
struct Graphed {
    namespace: String,
    metric: String,
    dimensions: Vec<(String, String)>,
    stat: String,
    period: i32,
}

/// Every plain metric of the dashboard's metric widgets, with the stat and period each is
/// drawn with (its own options, else its widget's), as the console would query them.
/// Expressions (`[{"expression": ...}]`) are left out.
fn graphed(body: &serde_json::Value) -> Vec<Graphed> {
    let mut out = Vec::new();
    for w in body["widgets"].as_array().unwrap() {
        let props = &w["properties"];
        for m in props["metrics"].as_array().into_iter().flatten() {
            let items = m.as_array().unwrap();
            let Some(namespace) = items[0].as_str() else {
                continue;
            };
            let options = items.last().filter(|o| o.is_object());
            let names: Vec<&str> = items[2..]
                .iter()
                .take_while(|v| v.is_string())
                .map(|v| v.as_str().unwrap())
                .collect();
            let option = |k: &str| options.and_then(|o| o.get(k)).or(props.get(k)).cloned();
            out.push(Graphed {
                namespace: namespace.to_string(),
                metric: items[1].as_str().unwrap().to_string(),
                dimensions: names
                    .chunks(2)
                    .map(|p| (p[0].to_string(), p[1].to_string()))
                    .collect(),
                stat: option("stat")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "Average".into()),
                period: option("period").and_then(|v| v.as_i64()).unwrap_or(300) as i32,
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_function_the_rule_the_alerts_the_devices_and_the_jobs() {
    let d = monitored().await;
    let (c, s) = (&d.c, &d.s);
    let body = dashboard_body(c, s).await;
    let metrics: Vec<String> = graphed(&body)
        .iter()
        .map(|g| {
            let dims: Vec<String> = g
                .dimensions
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{} {} {}", g.namespace, g.metric, dims.join(","))
        })
        .collect();
    for want in [
        format!("AWS/Lambda Invocations FunctionName=iot-data-processor-{s}"),
        format!("AWS/Lambda Errors FunctionName=iot-data-processor-{s}"),
        format!("AWS/Lambda Duration FunctionName=iot-data-processor-{s}"),
        format!("AWS/IoT TopicMatch RuleName=sensor_data_rule_{s}"),
        format!("AWS/IoT Failure RuleName=sensor_data_rule_{s},ActionType=Lambda"),
        format!("AWS/SNS NumberOfMessagesPublished TopicName=iot-temperature-alerts-{s}"),
        "AWS/IoT Connect.Success Protocol=MQTT".to_string(),
        "AWS/IoT Connect.AuthError Protocol=MQTT".to_string(),
        "AWS/IoT Connection.AuthNError Protocol=MQTT".to_string(),
        "AWS/IoT PublishIn.Success Protocol=MQTT".to_string(),
        "AWS/IoT PublishIn.Success Protocol=HTTP".to_string(),
    ] {
        assert!(metrics.contains(&want), "{want} not in {metrics:?}");
    }
    // The jobs' execution counts: one SEARCH per status, so every job (JobId) shows without
    // saving the dashboard again.
    let expressions: Vec<&str> = body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["properties"]["metrics"].as_array().unwrap())
        .filter_map(|m| m[0]["expression"].as_str())
        .collect();
    for status in ["Queued", "InProgress", "Succeded", "Failed", "Canceled"] {
        let want = format!(
            "SEARCH('{{AWS/IoT,JobId}} MetricName=\"{status}JobExecutionTotalCount\"', 'Maximum', 300)"
        );
        assert!(
            expressions.contains(&want.as_str()),
            "{want} not in {expressions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_hears_of_a_high_reading_and_not_of_a_normal_one() {
    let d = monitored().await;
    let (c, s, topic) = (&d.c, &d.s, &d.topic);
    // A subscriber to the topic hears of a 91 °C reading, and of nothing for 21 °C.
    let queue = subscribed_queue(c, topic).await;
    publish_and_wait(c, s, 21.0, "reading-21").await;
    let quiet = drain(c, &queue, Duration::from_secs(2)).await;
    assert!(quiet.is_empty(), "a NORMAL reading alerted: {quiet:?}");
    publish_and_wait(c, s, 91.0, "reading-91").await;
    let alerts = drain(c, &queue, Duration::from_secs(30)).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["TopicArn"], topic.as_str());
    let subject = alerts[0]["Subject"].as_str().unwrap();
    assert!(subject.contains("HIGH"), "{subject}");
    let message: serde_json::Value =
        serde_json::from_str(alerts[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message["device"], format!("temperature-sensor-{s}"));
    assert_eq!(message["alert_level"], "HIGH");
    assert_eq!(message["temperature"], 91.0);
    assert_eq!(message["timestamp"], "2026-11-29T10:00:00Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_each_piece_and_its_alert_reaches_the_topic() {
    let d = monitored().await;
    let (w, c, topic) = (&d.w, &d.c, &d.topic);
    let queue = subscribed_queue(c, topic).await;
    // verify checks each piece, and sees its own 85.5 °C reading's alert reach the topic.
    let r = w.ok(&["verify", "--output", "json"]);
    let report = r.json();
    assert_eq!(report["ok"], true, "{}", r.all());
    for name in [
        "alerts.topic",
        "alerts.publish_policy",
        "alarm.function_errors",
        "alarm.function_throttles",
        "alarm.rule_failures",
        "alarm.connect_auth_errors",
        "dashboard.body",
        "e2e.alert",
    ] {
        assert_eq!(check(&report, name)["status"], "pass", "{name}: {report:#}");
    }
    let alert = check(&report, "e2e.alert")["reason"].as_str().unwrap();
    assert!(alert.contains("SNS MessageId"), "{alert}");
    assert_eq!(check(&report, "device.e2e")["status"], "pass");
    // The queue got verify's alerts too, they really went through the topic: one for the
    // reading verify published through the data API, one for the reading the device published.
    let mut from_verify = drain(c, &queue, Duration::from_secs(30)).await;
    if from_verify.len() < 2 {
        from_verify.extend(drain(c, &queue, Duration::from_secs(10)).await);
    }
    assert_eq!(from_verify.len(), 2, "{from_verify:?}");
    for alert in &from_verify {
        let message: serde_json::Value =
            serde_json::from_str(alert["Message"].as_str().unwrap()).unwrap();
        assert_eq!(message["temperature"], 85.5);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_alerts_went_out_a_second_up_has_nothing_to_do() {
    let d = monitored().await;
    let (emu, w, c, s, topic) = (&d.emu, &d.w, &d.c, &d.s, &d.topic);
    // Readings and verify ran the handler and sent alerts through the topic.
    let _queue = subscribed_queue(c, topic).await;
    publish_and_wait(c, s, 91.0, "reading-91").await;
    w.ok(&["verify"]);
    let before = emu.requests().len();
    w.ok(&["up"]);
    assert_eq!(emu.writes_since(before), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_publish_permission_verify_fails_and_up_restores_it() {
    let d = monitored().await;
    let (w, c, s) = (&d.w, &d.c, &d.s);
    // Without the publish permission, verify says the alert did not get out.
    c.iam
        .delete_role_policy()
        .role_name(format!("iot-lambda-role-{s}"))
        .policy_name("publish-temperature-alerts")
        .send()
        .await
        .unwrap();
    let r = w.run(&["verify", "--output", "json"]);
    assert_eq!(r.code(), 1, "{}", r.all());
    let report = r.json();
    assert_eq!(check(&report, "alerts.publish_policy")["status"], "fail");
    let r = w.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code(), 3, "{}", r.all());
    assert!(
        r.stdout().contains("publish-temperature-alerts"),
        "{}",
        r.all()
    );
    w.ok(&["up"]);
    w.ok(&["plan", "--detailed-exitcode"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_leaves_none_of_it() {
    let d = monitored().await;
    let (w, c, s, topic) = (&d.w, &d.c, &d.s, &d.topic);
    // With a subscriber on the topic, after an alert went out.
    let _queue = subscribed_queue(c, topic).await;
    publish_and_wait(c, s, 91.0, "reading-91").await;
    // down leaves none of it (the test's own queue aside).
    w.ok(&["down"]);
    assert_eq!(inventory(c).await, Inventory::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn monitoring_off_creates_and_checks_none_of_it() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(
        w.path().join("iotreg.toml"),
        "[monitoring]\nenabled = false\n",
    )
    .unwrap();
    w.ok(&["up"]);
    // Every call iotreg (and the handler) makes, leaving out the test's own inventory reads.
    let mut calls = emu.requests();
    let c = emu.clients().await;
    assert_eq!(inventory(&c).await, Inventory::without_monitoring());
    let s = w.suffix();
    assert_eq!(alert_variable(&c, &s).await, None);
    let before_verify = emu.requests().len();
    let r = w.ok(&["verify", "--output", "json"]);
    calls.extend(emu.requests().into_iter().skip(before_verify));
    let report = r.json();
    assert_eq!(report["ok"], true, "{}", r.all());
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("alert")
            || n.starts_with("alarm")
            || n.starts_with("dashboard")
            || *n == "e2e.alert"),
        "{names:?}"
    );
    assert!(names.contains(&"e2e.data_path"), "{names:?}");
    // Not one SNS or CloudWatch call was made, by iotreg or by the handler.
    let monitoring_calls: Vec<&(String, String)> = calls
        .iter()
        .filter(|(s, _)| s == "sns" || s == "cloudwatch")
        .collect();
    assert!(monitoring_calls.is_empty(), "{monitoring_calls:?}");
    w.ok(&["down"]);
    assert_eq!(inventory(&c).await, Inventory::default());
}

/// The subscriptions to `topic`, as "protocol endpoint arn".
async fn subscriptions(c: &Clients, topic: &str) -> Vec<String> {
    let out = c
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(topic)
        .send()
        .await
        .unwrap();
    out.subscriptions()
        .iter()
        .map(|s| {
            format!(
                "{} {} {}",
                s.protocol().unwrap(),
                s.endpoint().unwrap(),
                s.subscription_arn().unwrap()
            )
        })
        .collect()
}

const OPS_EMAIL: &str = "[monitoring]\nalert_email = \"ops@example.com\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_email_is_pending_confirmation_and_verify_says_so() {
    let (d, r) = deployed(OPS_EMAIL).await;
    let (w, c, topic) = (&d.w, &d.c, &d.topic);
    // Pending confirmation is reported, not an error.
    assert!(r.stdout().contains("pending"), "{}", r.all());
    assert!(r.stdout().contains("ops@example.com"), "{}", r.all());
    assert_eq!(
        subscriptions(c, topic).await,
        ["email ops@example.com PendingConfirmation"]
    );
    let r = w.ok(&["verify", "--skip-e2e", "--output", "json"]);
    let report = r.json();
    let topic_check = check(&report, "alerts.topic")["reason"].as_str().unwrap();
    assert!(
        topic_check.contains("0 subscription(s) confirmed, 1 pending"),
        "{topic_check}"
    );
    let sub = check(&report, "alerts.subscription").clone();
    assert_eq!(sub["status"], "pass");
    assert!(
        sub["reason"]
            .as_str()
            .unwrap()
            .contains("pending confirmation"),
        "{sub}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_alert_email_replaces_the_old_one() {
    let (d, _) = deployed(OPS_EMAIL).await;
    let (w, c, topic) = (&d.w, &d.c, &d.topic);
    let plan = reconfigure(w, "[monitoring]\nalert_email = \"oncall@example.com\"\n");
    assert!(plan.contains("ops@example.com"), "{plan}");
    w.ok(&["up"]);
    assert_eq!(
        subscriptions(c, topic).await,
        ["email oncall@example.com PendingConfirmation"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_changed_outside_iotreg_is_drift_and_up_puts_it_back() {
    let (d, _) = deployed(OPS_EMAIL).await;
    let (w, c, s, topic) = (&d.w, &d.c, &d.s, &d.topic);
    let errors = format!("iot-data-processor-{s}-errors");
    let live = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(&errors)
        .send()
        .await
        .unwrap();
    let a = &live.metric_alarms()[0];
    c.cloudwatch
        .put_metric_alarm()
        .alarm_name(&errors)
        .namespace(a.namespace().unwrap())
        .metric_name(a.metric_name().unwrap())
        .set_dimensions(Some(a.dimensions().to_vec()))
        .statistic(a.statistic().unwrap().clone())
        .period(300)
        .evaluation_periods(1)
        .threshold(50.0)
        .comparison_operator(a.comparison_operator().unwrap().clone())
        .send()
        .await
        .unwrap();
    let r = w.run(&["plan", "--detailed-exitcode", "--output", "json"]);
    assert_eq!(r.code(), 3, "{}", r.all());
    let plan = r.json();
    let changed: Vec<&serde_json::Value> = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["action"] != "no_change")
        .collect();
    assert_eq!(changed.len(), 1, "{plan:#}");
    assert_eq!(changed[0]["name"], errors.as_str());
    w.ok(&["up"]);
    let a = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(&errors)
        .send()
        .await
        .unwrap();
    assert_eq!(a.metric_alarms()[0].threshold(), Some(1.0));
    assert_eq!(
        a.metric_alarms()[0].alarm_actions(),
        std::slice::from_ref(topic)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_dashboard_is_replaced() {
    let (d, _) = deployed(OPS_EMAIL).await;
    let (w, c, s) = (&d.w, &d.c, &d.s);
    // The new one saved, the old one deleted.
    let plan = reconfigure(
        w,
        "[monitoring]\nalert_email = \"ops@example.com\"\ndashboard_name = \"fleet-{{suffix}}\"\n",
    );
    assert!(plan.contains("-/+"), "{plan}");
    w.ok(&["up"]);
    let dashboards = c.cloudwatch.list_dashboards().send().await.unwrap();
    let names: Vec<&str> = dashboards
        .dashboard_entries()
        .iter()
        .filter_map(|d| d.dashboard_name())
        .collect();
    assert_eq!(names, [format!("fleet-{s}")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn monitoring_turned_off_is_removed_by_up() {
    let (d, _) = deployed(OPS_EMAIL).await;
    let (w, c, s) = (&d.w, &d.c, &d.s);
    // up removes all of it (the email subscription too), and the function's variable.
    reconfigure(w, "[monitoring]\nenabled = false\n");
    w.ok(&["up"]);
    assert_eq!(inventory(c).await, Inventory::without_monitoring());
    assert_eq!(alert_variable(c, s).await, None);
    w.ok(&["plan", "--detailed-exitcode"]);
    w.ok(&["verify"]);
    w.ok(&["down"]);
    assert_eq!(inventory(c).await, Inventory::default());
}

/// The sum of `g` as GetMetricData draws it, over the last half hour.
async fn drawn(c: &Clients, g: &Graphed) -> f64 {
    let now = std::time::SystemTime::now();
    drawn_from(c, g, now - Duration::from_secs(1800))
        .await
        .iter()
        .sum()
}

/// `g`'s values, one per period from `start` (rounded down to the minute) until now, oldest
/// first.
async fn drawn_from(c: &Clients, g: &Graphed, start: std::time::SystemTime) -> Vec<f64> {
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
    let now = std::time::SystemTime::now();
    let metric = Metric::builder()
        .namespace(&g.namespace)
        .metric_name(&g.metric)
        .set_dimensions(Some(
            g.dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                .collect(),
        ))
        .build();
    let out = c
        .cloudwatch
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("q")
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(g.period)
                        .stat(&g.stat)
                        .build(),
                )
                .build(),
        )
        .start_time(start.into())
        .end_time((now + Duration::from_secs(120)).into())
        .scan_by(ScanBy::TimestampAscending)
        .send()
        .await
        .unwrap();
    out.metric_data_results()
        .iter()
        .flat_map(|r| r.values())
        .copied()
        .collect()
}

/// Runs a shell command in `dir`; whether it succeeded, and its stderr.
fn sh(dir: &std::path::Path, command: &str) -> (bool, String) {
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .output()
        .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/clients.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_and_refused_connections_show_on_the_dashboard_and_meet_the_alarm() {
    let d = monitored().await;
    let (w, c, s) = (&d.w, &d.c, &d.s);
    let thing = format!("temperature-sensor-{s}");
    w.ok(&["device", "bundle", "--out", "bundle"]);
    let bundle = w.path().join("bundle");
    let readme = std::fs::read_to_string(bundle.join("README.txt")).unwrap();
    let publish = readme
        .lines()
        .find(|l| l.starts_with("mosquitto_pub ") && !l.contains("--tls-alpn"))
        .expect("the bundle's mosquitto_pub command")
        .to_string();

    // 1. The device, as its README says: connects, publishes one reading the rule selects.
    let (ok, err) = sh(&bundle, &publish);
    assert!(ok, "{publish}: {err}");

    // 2. Five connections refused as not authorized: a certificate of the account that is not
    //    the device's (no policy, not attached to the thing), with the device's client id.
    let refusals_from = std::time::SystemTime::now();
    let wrong = c
        .iot
        .create_keys_and_certificate()
        .set_as_active(true)
        .send()
        .await
        .unwrap();
    std::fs::write(
        bundle.join("wrong.pem.crt"),
        wrong.certificate_pem().unwrap(),
    )
    .unwrap();
    std::fs::write(
        bundle.join("wrong.pem.key"),
        wrong.key_pair().unwrap().private_key().unwrap(),
    )
    .unwrap();
    let refused = publish
        .replace("certificate.pem.crt", "wrong.pem.crt")
        .replace("private.pem.key", "wrong.pem.key");
    assert_ne!(refused, publish);
    for _ in 0..5 {
        let (ok, err) = sh(&bundle, &refused);
        assert!(!ok, "{refused} was let in");
        assert!(err.contains("not authori"), "{refused}: {err}");
    }
    // 3. One refused in the TLS handshake: a certificate of another CA. It never gets to
    //    CONNECT, so AWS counts it as Connection.AuthNError, not Connect.AuthError.
    let foreign = rcgen::generate_simple_self_signed(vec!["not-from-aws".to_string()]).unwrap();
    std::fs::write(bundle.join("foreign.pem.crt"), foreign.cert.pem()).unwrap();
    std::fs::write(
        bundle.join("foreign.pem.key"),
        foreign.key_pair.serialize_pem(),
    )
    .unwrap();
    let foreign_cmd = publish
        .replace("certificate.pem.crt", "foreign.pem.crt")
        .replace("private.pem.key", "foreign.pem.key");
    let (ok, _) = sh(&bundle, &foreign_cmd);
    assert!(!ok, "{foreign_cmd} was let in");

    // 4. What the dashboard's widgets draw, read from the local AWS's CloudWatch with
    //    GetMetricData as the console would: exactly what happened (this emulator saw nothing
    //    else), once the gateway's counts are flushed (about a second).
    let body = dashboard_body(c, s).await;
    let graphs = graphed(&body);
    let find = |metric: &str, dims: &[(&str, &str)]| -> Graphed {
        graphs
            .iter()
            .find(|g| {
                g.namespace == "AWS/IoT"
                    && g.metric == metric
                    && g.dimensions
                        == dims
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect::<Vec<_>>()
            })
            .unwrap_or_else(|| panic!("the dashboard does not draw {metric} {dims:?}"))
            .clone()
    };
    let rule = format!("sensor_data_rule_{s}");
    let want = [
        (find("Connect.Success", &[("Protocol", "MQTT")]), 1.0),
        (find("PublishIn.Success", &[("Protocol", "MQTT")]), 1.0),
        (find("TopicMatch", &[("RuleName", rule.as_str())]), 1.0),
        (find("Connect.AuthError", &[("Protocol", "MQTT")]), 5.0),
        (find("Connection.AuthNError", &[("Protocol", "MQTT")]), 1.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        seen.clear();
        for (g, _) in &want {
            seen.push(drawn(c, g).await);
        }
        let expected: Vec<f64> = want.iter().map(|(_, v)| *v).collect();
        if seen == expected {
            // One more flush: nothing else arrives.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut again = Vec::new();
            for (g, _) in &want {
                again.push(drawn(c, g).await);
            }
            assert_eq!(again, expected, "{want:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{thing}: the dashboard's metrics are {seen:?}, want {expected:?} ({want:?})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // 5. The connect-failure alarm, as DescribeAlarms defines it: its metric reaches its
    //    threshold within one of its periods, so on AWS it goes to ALARM and notifies the
    //    topic. The local AWS stores alarms but never evaluates them (emulator/README.md), so
    //    its state is not looked at here.
    let alarms = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(format!("iot-connect-auth-errors-{s}"))
        .send()
        .await
        .unwrap();
    let alarm = &alarms.metric_alarms()[0];
    assert_eq!(alarm.alarm_actions(), std::slice::from_ref(&d.topic));
    let as_defined = Graphed {
        namespace: alarm.namespace().unwrap().to_string(),
        metric: alarm.metric_name().unwrap().to_string(),
        dimensions: alarm
            .dimensions()
            .iter()
            .map(|d| {
                (
                    d.name().unwrap().to_string(),
                    d.value().unwrap().to_string(),
                )
            })
            .collect(),
        stat: alarm.statistic().unwrap().as_str().to_string(),
        period: alarm.period().unwrap(),
    };
    // The first period from the minute the refusals began holds all five of them.
    let periods = drawn_from(c, &as_defined, refusals_from).await;
    assert!(
        periods.first().copied().unwrap_or(0.0) >= alarm.threshold().unwrap(),
        "{as_defined:?}: {periods:?} does not reach {:?}",
        alarm.threshold()
    );
    assert_eq!(
        alarm.comparison_operator().map(|o| o.as_str()),
        Some("GreaterThanOrEqualToThreshold")
    );

    // 6. verify checks the new alarm like the others.
    let r = w.ok(&["verify", "--skip-e2e", "--output", "json"]);
    let report = r.json();
    let check = check(&report, "alarm.connect_auth_errors");
    assert_eq!(check["status"], "pass", "{report:#}");
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .contains("AWS/IoT Connect.AuthError"),
        "{check}"
    );
}
