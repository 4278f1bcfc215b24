//! Telemetry analytics end to end on the local AWS: `[analytics]` deploys the stream, the
//! second rule and its role, the detector's table, failure queue, role and function, and the
//! event source mapping, each seen from outside; `verify` passes `analytics.*` and
//! `e2e.anomaly`; devices played by `device simulate --pattern` over MQTT (the gateway)
//! produce each kind of anomaly through device → rule → stream → detector → SNS → an SQS
//! queue subscribed to the alert topic; a poison reading is split out to the failure queue
//! while the same shard's later readings still flow; `down` leaves nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_iotdataplane::primitives::Blob;

use crate::support::*;

/// Analytics on, no client-side rate limits (the local AWS has no quotas).
const CONFIG: &str = "[analytics]\nenabled = true\n[aws.rate_limits]\n\"*\" = 0\n";

/// The anomaly alerts among SNS envelopes, by device: (rule, value) in arrival order.
fn anomalies(envelopes: &[serde_json::Value]) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut out: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for e in envelopes {
        let m: serde_json::Value = serde_json::from_str(e["Message"].as_str().unwrap()).unwrap();
        if m["kind"] == "anomaly" {
            out.entry(m["device"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    m["rule"].as_str().unwrap().to_string(),
                    m["value"].as_f64().unwrap(),
                ));
        }
    }
    out
}

/// How many readings of `device` the detector has taken, from its item in the table.
async fn readings_seen(c: &Clients, table: &str, device: &str) -> usize {
    let item = c
        .dynamodb
        .get_item()
        .table_name(table)
        .key(
            "device",
            aws_sdk_dynamodb::types::AttributeValue::S(device.into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    item.item()
        .and_then(|i| i.get("values"))
        .and_then(|v| v.as_l().ok())
        .map(|l| l.len())
        .unwrap_or(0)
}

/// How many readings of `device` the detector has taken once it has `n` of them, polled until
/// `deadline` at the latest.
async fn readings_reach(
    c: &Clients,
    table: &str,
    device: &str,
    n: usize,
    deadline: Instant,
) -> usize {
    loop {
        let seen = readings_seen(c, table, device).await;
        if seen >= n || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_finds_each_pattern_splits_out_a_poison_reading_and_down_leaves_nothing() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    std::fs::write(
        w.path().join("devices.csv"),
        "thing_name\nnormal-0\ndrift-0\nstuck-0\nspike-0\n",
    )
    .unwrap();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let s = w.suffix();
    let stream = format!("iot-telemetry-{s}");
    let table = format!("iot-detector-state-{s}");
    let stream_arn = format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}");

    // From outside: an on-demand stream; the second rule putting each reading on it keyed
    // by the device, as a role that may only PutRecord on that stream.
    let summary = c
        .kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap();
    assert_eq!(
        summary
            .stream_mode_details()
            .unwrap()
            .stream_mode()
            .as_str(),
        "ON_DEMAND"
    );
    let rule = c
        .iot
        .get_topic_rule()
        .rule_name(format!("telemetry_analytics_{s}"))
        .send()
        .await
        .unwrap();
    let action = rule.rule().unwrap().actions()[0].kinesis().unwrap();
    assert_eq!(action.stream_name(), stream);
    assert_eq!(action.partition_key(), Some("${topic(3)}"));
    let role_name = action.role_arn().rsplit('/').next().unwrap().to_string();
    let policy = c
        .iam
        .get_role_policy()
        .role_name(&role_name)
        .policy_name("put-records")
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&percent_decode(policy.policy_document())).unwrap();
    assert_eq!(
        doc["Statement"],
        serde_json::json!([{"Effect": "Allow", "Action": ["kinesis:PutRecord"], "Resource": stream_arn}])
    );
    // The detector's table (keyed by device, on-demand, TTL) and its mapping.
    let t = c
        .dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(t.key_schema()[0].attribute_name(), "device");
    let ttl = c
        .dynamodb
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description().unwrap().attribute_name(),
        Some("expires_at")
    );
    let failures_url = c
        .sqs
        .get_queue_url()
        .queue_name(format!("iot-detector-failures-{s}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let mappings = c
        .lambda
        .list_event_source_mappings()
        .event_source_arn(&stream_arn)
        .send()
        .await
        .unwrap();
    let m = &mappings.event_source_mappings()[0];
    assert_eq!(mappings.event_source_mappings().len(), 1);
    assert_eq!(m.state(), Some("Enabled"));
    assert!(m
        .function_arn()
        .unwrap()
        .ends_with(&format!(":function:iot-anomaly-detector-{s}")));
    assert_eq!(m.bisect_batch_on_function_error(), Some(true));
    assert_eq!(m.maximum_retry_attempts(), Some(2));
    assert_eq!(
        m.destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|f| f.destination()),
        Some(queue_arn(&c, &failures_url).await.as_str())
    );
    // A second `up` and `plan` find it all as configured: no write.
    let start = emu.requests().len();
    w.ok(&["up", "--fleet", "devices.csv"]);
    let r = w.run(&["plan", "--fleet", "devices.csv", "--detailed-exitcode"]);
    assert_eq!(r.code(), 0, "{}", r.all());
    assert_eq!(emu.writes_since(start), Vec::<String>::new());

    // An SQS queue subscribed to the alert topic: what a person or a pager would get.
    let alerts_url = subscribed_queue(
        &c,
        &format!("arn:aws:sns:{REGION}:{ACCOUNT}:iot-temperature-alerts-{s}"),
    )
    .await;

    // verify: the analytics resources and the probe's one anomaly.
    let r = w.ok(&["verify", "--skip-device", "--output", "json"]);
    let checks = r.json()["checks"].as_array().unwrap().clone();
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:?}"))
            .clone()
    };
    for name in [
        "analytics.stream",
        "analytics.rule",
        "analytics.rule_role",
        "analytics.table",
        "analytics.failures",
        "analytics.detector_role",
        "analytics.detector",
        "analytics.mapping",
        "e2e.anomaly",
    ] {
        assert_eq!(check(name)["status"], "pass", "{}", check(name));
    }
    let reason = check("e2e.anomaly")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with(
            "35 normal readings raised no alert; the outlier 37 °C raised one zscore alert"
        ),
        "{reason}"
    );

    // verify's own 85.5 °C test reading (marked iotreg_verify) stayed out of the stream: in
    // the device's history it would be an outlier at every verify.
    assert_eq!(
        readings_seen(&c, &table, &format!("temperature-sensor-{s}")).await,
        0
    );

    // A poison reading in the middle of a burst of one device's good readings, published
    // within the mapping's batching window so that they reach the detector as one batch: the
    // batch fails, is split until the poison reading is alone, which goes to the failure queue
    // after its retries, while its neighbours are all taken, each once.
    // All at once: the window is a second, and a loaded machine must not stretch the burst.
    let burst = (0..21).map(|i| {
        let payload = if i == 10 {
            r#"{"temperature": "hot", "device": "burst-0"}"#.to_string()
        } else {
            format!(
                r#"{{"temperature": {}, "device": "burst-0"}}"#,
                21.0 + f64::from(i % 3) / 10.0
            )
        };
        c.data
            .publish()
            .topic("sensor/temperature/burst-0")
            .qos(1)
            .payload(Blob::new(payload))
            .send()
    });
    for sent in futures_util::future::join_all(burst).await {
        sent.unwrap();
    }

    // Each pattern from its own device, over MQTT through the device gateway.
    for (device, pattern) in [
        ("normal-0", "normal"),
        ("drift-0", "drift"),
        ("stuck-0", "stuck"),
        ("spike-0", "spike"),
    ] {
        let r = w.ok(&[
            "device",
            "simulate",
            device,
            "--pattern",
            pattern,
            "--count",
            "60",
            "--interval",
            "0",
            "--no-shadow",
            "--output",
            "json",
        ]);
        assert_eq!(r.json()["pubacks"], 60, "{}", r.all());
    }
    // Every reading of every device reached the detector (its table says so), and so did
    // the alerts they raised.
    let deadline = Instant::now() + Duration::from_secs(60);
    for device in ["normal-0", "drift-0", "stuck-0", "spike-0"] {
        let seen = readings_reach(&c, &table, device, 60, deadline).await;
        assert_eq!(seen, 60, "{device}");
    }
    let envelopes = receive(&c, &alerts_url, Duration::from_secs(30), |got| {
        let a = anomalies(got);
        ["drift-0", "stuck-0", "spike-0"]
            .iter()
            .all(|d| a.contains_key(*d))
    })
    .await;
    // Anything still on its way would arrive within a few polls.
    let late = receive(&c, &alerts_url, Duration::from_secs(3), |_| false).await;
    let found = anomalies(&[envelopes, late].concat());
    let rules = |d: &str| -> Vec<String> {
        found
            .get(d)
            .map(|v| v.iter().map(|(r, _)| r.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(rules("normal-0"), Vec::<String>::new(), "{found:?}");
    assert_eq!(rules("stuck-0"), ["stuck"], "{found:?}");
    assert_eq!(rules("spike-0"), ["zscore"], "{found:?}");
    assert!(found["spike-0"][0].1 > 30.0, "{found:?}");
    assert!(rules("drift-0").contains(&"rate".to_string()), "{found:?}");
    // The probe's alert reached the topic too, and nothing else did.
    let probes: Vec<&String> = found
        .keys()
        .filter(|d| d.starts_with("iotreg-verify-"))
        .collect();
    assert_eq!(probes.len(), 1, "{found:?}");
    assert_eq!(found.len() - probes.len(), 3, "{found:?}");

    // The poison reading: alone in its batch after bisecting, tried 1 + `retries` times, then
    // described in the failure queue (exactly once); its 20 neighbours were each taken once
    // (the detector's item holds all 20), and every pattern's readings flowed after it.
    let failed = receive(&c, &failures_url, Duration::from_secs(20), |got| {
        !got.is_empty()
    })
    .await;
    let extra = receive(&c, &failures_url, Duration::from_secs(2), |_| false).await;
    assert_eq!(failed.len() + extra.len(), 1, "{failed:?} {extra:?}");
    let info = &failed[0]["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1, "{}", failed[0]);
    assert_eq!(info["startSequenceNumber"], info["endSequenceNumber"]);
    assert_eq!(info["streamArn"], stream_arn.as_str());
    assert_eq!(
        failed[0]["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(failed[0]["requestContext"]["approximateInvokeCount"], 3);
    // The records after the poison one in its shard are taken once it is given up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = readings_reach(&c, &table, "burst-0", 20, deadline).await;
    assert_eq!(seen, 20);
    // The local AWS's own count (an emulator-only endpoint): the batch was split on its way.
    let esm: serde_json::Value =
        serde_json::from_str(&emu.control_get("/iotreg-test/event-source-mappings")).unwrap();
    let counters = esm["mappings"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert!(counters["bisections"].as_u64().unwrap() >= 1, "{counters}");
    assert_eq!(counters["batchesGivenUp"], 1, "{counters}");

    // down: nothing of the analytics stack is left.
    w.ok(&["down"]);
    let streams = c.kinesis.list_streams().send().await.unwrap();
    assert!(streams.stream_names().is_empty(), "{streams:?}");
    let tables = c.dynamodb.list_tables().send().await.unwrap();
    assert!(tables.table_names().is_empty(), "{tables:?}");
    let mappings = c.lambda.list_event_source_mappings().send().await.unwrap();
    assert!(mappings.event_source_mappings().is_empty());
    let queues = c.sqs.list_queues().send().await.unwrap();
    assert_eq!(queues.queue_urls(), std::slice::from_ref(&alerts_url));
    let inv = inventory(&c).await;
    assert_eq!(
        (
            inv.functions,
            inv.rules,
            inv.log_groups,
            inv.topics,
            inv.things
        ),
        (0, 0, 0, 0, 0),
        "{inv:?}"
    );
    let roles = c.iam.list_roles().send().await.unwrap();
    let left: Vec<&str> = roles
        .roles()
        .iter()
        .map(|r| r.role_name())
        .filter(|n| n.ends_with(&s))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pattern_too_short_for_the_detector_is_bad_input() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
    let r = w.run(&["device", "simulate", "--pattern", "stuck", "--count", "20"]);
    assert_eq!(r.code(), 2, "{}", r.all());
    assert!(
        r.stderr()
            .contains("--pattern stuck needs --count 47 at least"),
        "{}",
        r.stderr()
    );
    assert!(emu.requests().is_empty(), "no call was made");
}

/// How many of the analytics stack's own resources exist: streams, tables, queues (the
/// detector's failure queue), event source mappings.
async fn analytics_inventory(c: &Clients) -> (usize, usize, usize, usize) {
    (
        c.kinesis
            .list_streams()
            .send()
            .await
            .unwrap()
            .stream_names()
            .len(),
        c.dynamodb
            .list_tables()
            .send()
            .await
            .unwrap()
            .table_names()
            .len(),
        c.sqs.list_queues().send().await.unwrap().queue_urls().len(),
        c.lambda
            .list_event_source_mappings()
            .send()
            .await
            .unwrap()
            .event_source_mappings()
            .len(),
    )
}

/// Killed right after each of the analytics stack's own creates lands (its answer held, so
/// iotreg never learns of it): the next `up` adopts what was made, one of each, converges, and
/// `down` leaves nothing. (The roles, the rule and the function are the kinds the crash tests
/// already kill after.)
#[tokio::test(flavor = "multi_thread")]
async fn up_killed_after_each_analytics_create_adopts_it_once() {
    let emu = Emulator::start();
    let c = emu.clients().await;
    for op in [
        "CreateStream",
        "CreateTable",
        "UpdateTimeToLive",
        "CreateQueue",
        "CreateEventSourceMapping",
    ] {
        emu.reset();
        let w = emu.workdir();
        std::fs::write(w.path().join("iotreg.toml"), CONFIG).unwrap();
        let mut child = emu.start_held(&w, &["up"], op, 20);
        child.kill().unwrap();
        child.wait().unwrap();
        let r = w.ok(&["up"]);
        assert_eq!(
            analytics_inventory(&c).await,
            (1, 1, 1, 1),
            "after a kill at {op}:\n{}",
            r.all()
        );
        let start = emu.requests().len();
        w.ok(&["up"]);
        assert_eq!(
            emu.writes_since(start),
            Vec::<String>::new(),
            "converged after a kill at {op}"
        );
        w.ok(&["down"]);
        assert_eq!(
            analytics_inventory(&c).await,
            (0, 0, 0, 0),
            "down after a kill at {op}"
        );
    }
}
