//! Shared end-to-end support: a local AWS (the project's emulator, moto underneath) started on
//! 127.0.0.1 on a free port for one test and stopped with it; the real iotreg binary run
//! against it; and SDK clients to look at what it created from the outside.

pub mod drift;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// Steps of a default deployment: the recipe's 11 resources, plus monitoring's topic, publish
/// policy, four alarms and dashboard.
pub const STEPS: usize = 18;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with the emulator's requirements: IOTREG_PYTHON, else the repo's .venv, else
/// python3 on PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("IOTREG_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

pub struct Emulator {
    child: Child,
    pub url: String,
    pub request_log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Plain moto (no project fixes, no data path), for what must work against any emulator.
pub struct PlainMoto {
    child: Child,
    pub url: String,
}

impl PlainMoto {
    pub fn start() -> PlainMoto {
        // moto_server cannot report a port it chose, so take a free one and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let moto = python().with_file_name("moto_server");
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", moto.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        PlainMoto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn workdir(&self) -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
            url: self.url.clone(),
            device_env: Vec::new(),
        }
    }
}

impl Drop for PlainMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    pub fn start() -> Emulator {
        Emulator::start_with(&[])
    }

    /// An emulator with these environment variables (e.g. a bulk registration task's pace).
    pub fn start_with(env: &[(&str, &str)]) -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let request_log = dir.path().join("requests.jsonl");
        let mut child = Command::new(python())
            .arg(repo().join("emulator/server.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--request-log"])
            .arg(&request_log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("emulator.err")).unwrap(),
            ))
            .spawn()
            .expect("start emulator (is the venv installed? see README)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| {
                let err =
                    std::fs::read_to_string(dir.path().join("emulator.err")).unwrap_or_default();
                panic!("emulator did not start: {line:?}\n{err}")
            })
            .to_string();
        Emulator {
            child,
            url,
            request_log,
            _dir: dir,
        }
    }

    /// A fresh working directory and a way to run iotreg in it against this emulator, its
    /// devices pointed at the emulator's device gateway.
    pub fn workdir(&self) -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
            url: self.url.clone(),
            device_env: self.gateway().env(),
        }
    }

    /// Where the emulator's device gateway listens, and the CA its certificates chain to.
    pub fn gateway(&self) -> Gateway {
        let body = http_get(&self.url, "/iotreg-test/gateway");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let port = |k: &str| v["ports"][k].as_u64().unwrap() as u16;
        Gateway {
            endpoint: v["endpoint"].as_str().unwrap().to_string(),
            ca_file: PathBuf::from(v["ca_file"].as_str().unwrap()),
            mqtt: port("mqtt"),
            alpn: port("alpn"),
            https: port("https"),
        }
    }

    pub async fn sdk(&self) -> aws_types::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_iot::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await
    }

    pub async fn clients(&self) -> Clients {
        let c = self.sdk().await;
        Clients {
            iot: aws_sdk_iot::Client::new(&c),
            data: aws_sdk_iotdataplane::Client::new(&c),
            iam: aws_sdk_iam::Client::new(&c),
            lambda: aws_sdk_lambda::Client::new(&c),
            logs: aws_sdk_cloudwatchlogs::Client::new(&c),
            sns: aws_sdk_sns::Client::new(&c),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&c),
            sqs: aws_sdk_sqs::Client::new(&c),
            kinesis: aws_sdk_kinesis::Client::new(&c),
            dynamodb: aws_sdk_dynamodb::Client::new(&c),
            s3: s3_client(&c),
        }
    }

    /// Operations the emulator has served so far, as (service, operation).
    pub fn requests(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.request_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("held").is_none())
            .map(|v| {
                (
                    v["service"].as_str().unwrap_or("?").to_string(),
                    v["operation"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect()
    }

    /// Operations the emulator has served so far, as (service, operation, path).
    pub fn requests_with_paths(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(&self.request_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("held").is_none())
            .map(|v| {
                let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
                (s("service"), s("operation"), s("path"))
            })
            .collect()
    }

    /// Operations that change something (anything not a Get/List/Describe read).
    pub fn writes_since(&self, start: usize) -> Vec<String> {
        self.requests()
            .into_iter()
            .skip(start)
            .filter(|(_, op)| !is_read(op))
            .map(|(s, op)| format!("{s}:{op}"))
            .collect()
    }

    /// Arms a one-shot hold: the next request for `operation` is carried out, then its answer
    /// is delayed by `seconds`, and a line with "held" is logged first.
    pub fn hold(&self, operation: &str, seconds: u64) {
        let body = serde_json::json!({"operation": operation, "seconds": seconds}).to_string();
        http_post(&self.url, "/iotreg-test/hold", &body);
    }

    pub fn reset(&self) {
        http_post(&self.url, "/moto-api/reset", "");
    }

    /// GET on one of the local AWS's test-control endpoints (`/iotreg-test/...`).
    pub fn control_get(&self, path: &str) -> String {
        http_get(&self.url, path)
    }

    /// How many held calls have been carried out so far.
    pub fn held_count(&self) -> usize {
        std::fs::read_to_string(&self.request_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"held\""))
            .count()
    }

    /// Starts iotreg with `op` held for `seconds`, and returns once the held call has been
    /// carried out (the resource exists, iotreg has no answer yet).
    pub fn start_held(&self, w: &Workdir, args: &[&str], op: &str, seconds: u64) -> Child {
        let before = self.held_count();
        self.hold(op, seconds);
        let mut child = w
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.held_count() == before {
            if let Some(s) = child.try_wait().unwrap() {
                panic!("{args:?} ended ({s}) before calling {op}");
            }
            assert!(Instant::now() < deadline, "timed out waiting for {op}");
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }
}

/// IAM returns policy documents URL-encoded (RFC 3986).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

pub fn is_read(op: &str) -> bool {
    ["Get", "List", "Describe", "Search"]
        .iter()
        .any(|p| op.starts_with(p))
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // SIGTERM lets it shut down cleanly; kill as a fallback.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emulator's device gateway (the AWS IoT data endpoint, locally).
#[derive(Debug, Clone)]
pub struct Gateway {
    pub endpoint: String,
    pub ca_file: PathBuf,
    pub mqtt: u16,
    pub alpn: u16,
    pub https: u16,
}

impl Gateway {
    /// The environment that points iotreg's device side at this gateway.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("IOTREG_DEVICE_ENDPOINT".into(), self.endpoint.clone()),
            (
                "IOTREG_DEVICE_CA_FILE".into(),
                self.ca_file.display().to_string(),
            ),
            ("IOTREG_DEVICE_MQTT_PORT".into(), self.mqtt.to_string()),
            ("IOTREG_DEVICE_ALPN_PORT".into(), self.alpn.to_string()),
            ("IOTREG_DEVICE_HTTPS_PORT".into(), self.https.to_string()),
        ]
    }
}

/// Minimal HTTP/1.1 GET of an emulator control endpoint (loopback only): the body.
fn http_get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
        "GET {path}: {resp}"
    );
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Minimal HTTP/1.1 POST to the emulator's control endpoints (loopback only).
fn http_post(url: &str, path: &str, body: &str) {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
        "POST {path}: {resp}"
    );
}

pub struct Clients {
    pub iot: aws_sdk_iot::Client,
    pub data: aws_sdk_iotdataplane::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sns: aws_sdk_sns::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
}

/// A role AWS IoT may assume (a bulk registration's, a job's pre-signing role), made outside
/// iotreg.
pub async fn iot_role(c: &Clients, name: &str) -> aws_sdk_iam::types::Role {
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    c.iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap()
        .role
        .unwrap()
}

/// S3 on the emulator: path-style, as an endpoint URL has no bucket subdomains.
pub fn s3_client(c: &aws_types::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(c)
            .force_path_style(true)
            .build(),
    )
}

/// A state bucket: made (versioned when asked), and what is in it.
pub struct Bucket {
    pub name: String,
    pub s3: aws_sdk_s3::Client,
}

impl Bucket {
    pub async fn create(s3: &aws_sdk_s3::Client, name: &str, versioned: bool) -> Bucket {
        s3.create_bucket().bucket(name).send().await.unwrap();
        if versioned {
            s3.put_bucket_versioning()
                .bucket(name)
                .versioning_configuration(
                    aws_sdk_s3::types::VersioningConfiguration::builder()
                        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .unwrap();
        }
        Bucket {
            name: name.into(),
            s3: s3.clone(),
        }
    }

    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    /// Every key in the bucket (current versions), sorted.
    pub async fn keys(&self) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(&self.name)
            .send()
            .await
            .unwrap();
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    }

    /// An object's body and ETag; None when it does not exist.
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, String)> {
        match self
            .s3
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag().unwrap_or_default().to_string();
                let body = out.body.collect().await.unwrap().into_bytes().to_vec();
                Some((body, etag))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
            Err(e) => panic!("GetObject {key}: {e:?}"),
        }
    }

    pub async fn json(&self, key: &str) -> Option<serde_json::Value> {
        self.get(key)
            .await
            .map(|(b, _)| serde_json::from_slice(&b).unwrap())
    }

    /// Writes `body` if the object's ETag is still `etag`: false when it changed meanwhile.
    pub async fn put_if(&self, key: &str, body: Vec<u8>, etag: &str) -> bool {
        match self
            .s3
            .put_object()
            .bucket(&self.name)
            .key(key)
            .if_match(etag)
            .body(body.into())
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => false,
            Err(e) => panic!("PutObject {key}: {e:?}"),
        }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
}

pub struct Workdir {
    pub dir: tempfile::TempDir,
    url: String,
    /// IOTREG_DEVICE_* for the emulator's device gateway (empty without one).
    device_env: Vec<(String, String)>,
}

impl Workdir {
    /// A working directory whose iotreg talks to `url` (e.g. a fault proxy in front of AWS).
    pub fn new(url: &str) -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
            url: url.to_string(),
            device_env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iotreg"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_ENDPOINT_URL", &self.url)
            // Never let a test reach a real AWS service through instance metadata.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.device_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run(out)
    }

    /// Runs and asserts success, returning the run for inspection.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code(), 0, "iotreg {args:?} failed:\n{}", r.all());
        r
    }

    pub fn state(&self) -> Option<serde_json::Value> {
        std::fs::read_to_string(self.path().join(".iotreg/state.json"))
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap())
    }

    pub fn suffix(&self) -> String {
        self.state().unwrap()["suffix"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| panic!("{e}: {}", self.all()))
    }
}

/// Counts of what exists in the emulator, seen from outside, for "one of each / none" checks.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Inventory {
    pub thing_types: usize,
    pub things: usize,
    pub certificates: usize,
    pub policies: usize,
    pub policy_targets: usize,
    pub thing_principals: usize,
    pub roles: usize,
    pub functions: usize,
    pub rules: usize,
    pub permissions: usize,
    pub shadows: usize,
    pub log_groups: usize,
    pub topics: usize,
    pub subscriptions: usize,
    /// Inline policies of iotreg's roles.
    pub role_policies: usize,
    pub alarms: usize,
    pub dashboards: usize,
}

impl Inventory {
    pub fn one_of_each() -> Inventory {
        Inventory {
            thing_types: 1,
            things: 1,
            certificates: 1,
            policies: 1,
            policy_targets: 1,
            thing_principals: 1,
            roles: 1,
            functions: 1,
            rules: 1,
            permissions: 1,
            shadows: 1,
            log_groups: 0,
            // Monitoring, on by default: the alert topic, the role's publish policy, four
            // alarms and the dashboard (no subscription without monitoring.alert_email).
            topics: 1,
            subscriptions: 0,
            role_policies: 1,
            alarms: 4,
            dashboards: 1,
        }
    }

    /// The stack with `monitoring.enabled = false`.
    pub fn without_monitoring() -> Inventory {
        Inventory {
            topics: 0,
            role_policies: 0,
            alarms: 0,
            dashboards: 0,
            ..Inventory::one_of_each()
        }
    }
}

/// Everything in the account that looks like iotreg's (roles: by name prefix, since IAM also
/// holds AWS-managed material). One page of each list, at AWS's largest page (250): the tests
/// it serves deploy far fewer.
pub async fn inventory(c: &Clients) -> Inventory {
    let mut inv = Inventory::default();
    let types = c.iot.list_thing_types().send().await.unwrap();
    inv.thing_types = types.thing_types().len();
    let things = c.iot.list_things().max_results(250).send().await.unwrap();
    inv.things = things.things().len();
    for t in things.things() {
        let name = t.thing_name().unwrap();
        inv.thing_principals += c
            .iot
            .list_thing_principals()
            .thing_name(name)
            .send()
            .await
            .unwrap()
            .principals()
            .len();
        if c.data
            .get_thing_shadow()
            .thing_name(name)
            .send()
            .await
            .is_ok()
        {
            inv.shadows += 1;
        }
    }
    inv.certificates = c
        .iot
        .list_certificates()
        .page_size(250)
        .send()
        .await
        .unwrap()
        .certificates()
        .len();
    let policies = c.iot.list_policies().send().await.unwrap();
    inv.policies = policies.policies().len();
    for p in policies.policies() {
        inv.policy_targets += c
            .iot
            .list_targets_for_policy()
            .policy_name(p.policy_name().unwrap())
            .page_size(250)
            .send()
            .await
            .unwrap()
            .targets()
            .len();
    }
    let roles = c.iam.list_roles().send().await.unwrap();
    for r in roles
        .roles()
        .iter()
        .filter(|r| r.role_name().starts_with("iot-lambda-role-"))
    {
        inv.roles += 1;
        inv.role_policies += c
            .iam
            .list_role_policies()
            .role_name(r.role_name())
            .send()
            .await
            .unwrap()
            .policy_names()
            .len();
    }
    inv.topics = c.sns.list_topics().send().await.unwrap().topics().len();
    inv.subscriptions = c
        .sns
        .list_subscriptions()
        .send()
        .await
        .unwrap()
        .subscriptions()
        .len();
    inv.alarms = c
        .cloudwatch
        .describe_alarms()
        .send()
        .await
        .unwrap()
        .metric_alarms()
        .len();
    inv.dashboards = c
        .cloudwatch
        .list_dashboards()
        .send()
        .await
        .unwrap()
        .dashboard_entries()
        .len();
    let functions = c.lambda.list_functions().send().await.unwrap();
    inv.functions = functions.functions().len();
    for f in functions.functions() {
        if let Ok(p) = c
            .lambda
            .get_policy()
            .function_name(f.function_name().unwrap())
            .send()
            .await
        {
            let doc: serde_json::Value = serde_json::from_str(p.policy().unwrap()).unwrap();
            inv.permissions += doc["Statement"].as_array().map(|a| a.len()).unwrap_or(0);
        }
    }
    inv.rules = c.iot.list_topic_rules().send().await.unwrap().rules().len();
    inv.log_groups = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/aws/lambda/")
        .send()
        .await
        .unwrap()
        .log_groups()
        .len();
    inv
}

/// Every file under `dir` whose text holds a private key: what must stay empty when devices keep
/// their own keys.
pub fn private_keys_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(private_keys_under(&path));
        } else if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("PRIVATE KEY")) {
            found.push(path);
        }
    }
    found
}

/// A queue's ARN.
pub async fn queue_arn(c: &Clients, url: &str) -> String {
    c.sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone()
}

/// A queue `alert-watcher` subscribed to `topic` (SNS envelopes, not raw): what an on-call
/// person would receive. Its URL.
pub async fn subscribed_queue(c: &Clients, topic: &str) -> String {
    let url = c
        .sqs
        .create_queue()
        .queue_name("alert-watcher")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    c.sns
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(queue_arn(c, &url).await)
        .send()
        .await
        .unwrap();
    url
}

/// Every message body `url` holds or receives (each deleted once read) until `enough` says so
/// or `wait` passes, parsed as JSON.
pub async fn receive(
    c: &Clients,
    url: &str,
    wait: Duration,
    enough: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + wait;
    let mut out: Vec<serde_json::Value> = Vec::new();
    while !enough(&out) && Instant::now() < deadline {
        let got = c
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            c.sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    out
}
