//! The SDK-level test harness: a deployment with mocked AWS clients (`aws-smithy-mocks`) and
//! an in-memory state, for the resource modules' own tests and `mock_tests`. A call no rule
//! matches fails the test, so a test that gives only read rules proves no write is sent.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_mocks::{mock_client, Rule, RuleMode};

use super::{
    CertificateSpec, Deployment, Env, FunctionSpec, PolicySpec, RoleSpec, RuleSpec, ThingSpec,
    ThingTypeSpec,
};
use crate::engine::{Ctx, Events, Outcome, Resource, StepReport};
use crate::plan::Planned;
use crate::retry::Backoff;
use crate::state::{Phase, Record, State, Store};

pub struct NoEvents;
impl Events for NoEvents {
    fn started(&self, _: &str, _: &str, _: &str) {}
    fn progress(&self, _: &str, _: &str) {}
    fn finished(&self, _: &StepReport) {}
}

pub struct Harness {
    pub env: Arc<Env>,
    pub cx: Ctx,
    pub _dir: tempfile::TempDir,
}

pub fn deployment(dir: &std::path::Path) -> Deployment {
    let zip = crate::templates::lambda_zip("lambda-function.py", "x = 1").unwrap();
    Deployment {
        suffix: "abc123".into(),
        region: "us-east-1".into(),
        account: "123456789012".into(),
        partition: "aws".into(),
        thing_type: ThingTypeSpec {
            name: "TemperatureSensor".into(),
            description: "d".into(),
        },
        thing: ThingSpec {
            name: "temperature-sensor-abc123".into(),
            attributes: BTreeMap::new(),
        },
        certificate: CertificateSpec {
            mode: crate::config::CertificateMode::Local,
            key_dir: dir.to_path_buf(),
            key_files: crate::keys::KeyFiles::for_thing(dir, "temperature-sensor-abc123"),
            sweep_duplicates: true,
            csr: None,
        },
        policy: PolicySpec {
            name: "device-policy-abc123".into(),
            document: serde_json::json!({"Version": "2012-10-17", "Statement": []}),
            origin: "the built-in mqtt-shadow policy".into(),
            preset: Some(crate::config::PolicyPreset::MqttShadow),
        },
        role: RoleSpec {
            name: "iot-lambda-role-abc123".into(),
            trust_policy: serde_json::json!({}),
            managed_policies: vec![],
            inline_policy: None,
        },
        function: FunctionSpec {
            name: "iot-data-processor-abc123".into(),
            description: "d".into(),
            runtime: "python3.12".into(),
            memory_mb: 256,
            timeout_s: 60,
            handler: "lambda-function.lambda_handler".into(),
            environment: Default::default(),
            code_sha256: crate::templates::code_sha256(&zip),
            zip,
        },
        fleet: None,
        indexing: false,
        bulk: Arc::new(crate::resources::bulk::BulkSpec::new(
            false,
            None,
            "abc123",
            "us-east-1",
            "123456789012",
            "aws",
        )),
        group: None,
        jobs: Arc::new(crate::resources::jobs::JobsSpec {
            store: crate::resources::bucket::BucketSpec {
                name: "iotreg-jobs-123456789012-us-east-1-abc123".into(),
                own: true,
                prefix: "iotreg-jobs/abc123/".into(),
                expire_days: None,
            },
            presign_role: RoleSpec {
                name: "iot-jobs-presign-abc123".into(),
                trust_policy: serde_json::json!({}),
                managed_policies: vec![],
                inline_policy: None,
            },
            url_expires_s: 3600,
            templates: vec![],
        }),
        provisioning: None,
        analytics: None,
        rule: RuleSpec {
            name: "sensor_data_rule_abc123".into(),
            description: "d".into(),
            sql: "SELECT * FROM 'a'".into(),
            sql_version: "2016-03-23".into(),
            enabled: true,
        },
        shadow: None,
        // Real backoff shape, tiny delays: the logic is what is under test, not the clock.
        iam_retry: Backoff {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            budget: Duration::from_millis(40),
        },
        wait_for_thing_type: false,
        write_settle: Duration::from_millis(1),
        monitoring: crate::resources::monitoring::Monitoring {
            enabled: false,
            topic_name: "iot-temperature-alerts-abc123".into(),
            topic_arn: "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123".into(),
            alert_email: None,
            policy_name: crate::resources::monitoring::POLICY_NAME.into(),
            dashboard_name: "iot-device-registry-abc123".into(),
            dashboard_body: serde_json::json!({"widgets": []}),
            alarms: crate::resources::monitoring::alarms(
                "iot-data-processor-abc123",
                "sensor_data_rule_abc123",
                "abc123",
                "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123",
            ),
        },
    }
}

pub fn harness(
    iot: &[&Rule],
    iam: &[&Rule],
    lambda: &[&Rule],
    logs: &[&Rule],
    records: Vec<Record>,
    tweak: impl FnOnce(&mut Deployment),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clients = crate::aws::Clients::from_parts(
        mock_client!(aws_sdk_iot, RuleMode::MatchAny, iot),
        mock_client!(aws_sdk_iam, RuleMode::MatchAny, iam),
        mock_client!(aws_sdk_lambda, RuleMode::MatchAny, lambda),
        mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, logs),
    );
    let mut d = deployment(dir.path());
    tweak(&mut d);
    let mut state = State::new("us-east-1", "123456789012", "abc123");
    for r in records {
        state.put(r);
    }
    let store = Arc::new(Store::new(dir.path().join("state.json"), state));
    let cx = Ctx::new(store, Arc::new(NoEvents), Arc::new(AtomicBool::new(false)));
    Harness {
        env: Arc::new(Env::new(clients, d)),
        cx,
        _dir: dir,
    }
}

/// Error metadata as AWS sends it: the code is what `failed()` reports.
pub fn meta(code: &str, message: &str) -> aws_smithy_types::error::ErrorMetadata {
    aws_smithy_types::error::ErrorMetadata::builder()
        .code(code)
        .message(message)
        .build()
}

/// A harness whose SNS and CloudWatch clients answer with the given rules, monitoring on.
pub fn monitoring_harness(sns: &[&Rule], cloudwatch: &[&Rule], records: Vec<Record>) -> Harness {
    let mut h = harness(&[], &[], &[], &[], records, |d| d.monitoring.enabled = true);
    let env = Arc::get_mut(&mut h.env).expect("harness owns the env");
    env.aws.sns = mock_client!(aws_sdk_sns, RuleMode::MatchAny, sns);
    env.aws.cloudwatch = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, cloudwatch);
    h
}

pub fn recorded(key: &str, kind: &str, name: &str, arn: Option<&str>) -> Record {
    let mut r = Record::new(key, kind, Phase::Created, name);
    r.arn = arn.map(str::to_string);
    r
}

/// Plans a resource, then ensures it: the plan, and what ensure did (both must succeed).
pub async fn plan_then_ensure(r: &dyn Resource, cx: &Ctx) -> (Planned, Outcome) {
    let plan = r.plan(cx, true).await.unwrap();
    (plan, r.ensure(cx).await.unwrap())
}

/// The fields a plan changes, in order.
pub fn changed_fields(p: &Planned) -> Vec<&str> {
    p.changes.iter().map(|c| c.field.as_str()).collect()
}

/// A harness with analytics on (the config's defaults), whose Kinesis, DynamoDB, SQS and
/// Lambda clients answer with the given rules.
pub fn analytics_harness(
    kinesis: &[&Rule],
    dynamodb: &[&Rule],
    sqs: &[&Rule],
    lambda: &[&Rule],
    records: Vec<Record>,
) -> Harness {
    let mut h = harness(&[], &[], lambda, &[], records, |d| {
        d.analytics = Some(super::analytics::spec(
            &crate::config::analytics::AnalyticsConfig::default(),
            |p| p.replace("{{suffix}}", "abc123"),
            |service, resource| format!("arn:aws:{service}:us-east-1:123456789012:{resource}"),
            "python3.12",
            "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-abc123",
            crate::config::LAMBDA_BASIC_EXECUTION.into(),
            vec![1, 2, 3],
        ));
    });
    let env = Arc::get_mut(&mut h.env).expect("harness owns the env");
    env.aws.kinesis = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, kinesis);
    env.aws.dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, dynamodb);
    env.aws.sqs = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, sqs);
    h
}
