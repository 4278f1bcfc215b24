//! The TOML configuration file: its schema, defaults (the recipe's exact values) and validation.
//!
//! Every key is optional. Validation happens here, before any AWS call, so that a typo can never
//! leave half a stack behind. Names may contain `{{suffix}}`, replaced by the deployment suffix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod analytics;
pub mod jobs;

/// A configuration problem: always "bad input" (exit 2), always naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

pub const SUFFIX_PLACEHOLDER: &str = "{{suffix}}";

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Pins the deployment suffix; otherwise one is generated on the first `up` and kept in state.
    pub suffix: Option<String>,
    /// Where key material goes; defaults to the state file's directory.
    pub key_dir: Option<PathBuf>,
    pub thing_type: ThingTypeConfig,
    pub thing: ThingConfig,
    pub certificate: CertificateConfig,
    pub policy: PolicyConfig,
    pub role: RoleConfig,
    pub function: FunctionConfig,
    pub rule: RuleConfig,
    pub shadow: ShadowConfig,
    pub fleet: FleetConfig,
    pub monitoring: MonitoringConfig,
    pub aws: AwsConfig,
    pub device: DeviceConfig,
    pub state: StateConfig,
    pub provisioning: ProvisioningConfig,
    pub jobs: jobs::JobsConfig,
    pub job_templates: Vec<jobs::JobTemplateConfig>,
    pub analytics: analytics::AnalyticsConfig,
}

/// Where the state lives (`--state` wins). Without this section: the local file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// The local file (backend "local"); default `.iotreg/state.json`.
    pub path: Option<PathBuf>,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// The bucket's region, when it is not the run's.
    pub region: Option<String>,
    /// SSE-KMS with this key for every object iotreg writes.
    pub kms_key_id: Option<String>,
    /// `up` refuses a bucket without versioning.
    pub require_versioning: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Local,
    S3,
}

impl StateConfig {
    /// The location this section names; None: it names none (the default applies).
    pub fn location(&self) -> Result<Option<crate::state::Location>, (String, String)> {
        use crate::state::{Location, S3Location};
        let s3_only = [
            ("bucket", self.bucket.is_some()),
            ("key", self.key.is_some()),
            ("region", self.region.is_some()),
            ("kms_key_id", self.kms_key_id.is_some()),
        ];
        match self.backend {
            StateBackend::Local => {
                if let Some((field, _)) = s3_only.iter().find(|(_, set)| *set) {
                    return Err((format!("state.{field}"), "only for backend = \"s3\"".into()));
                }
                Ok(self.path.clone().map(Location::Local))
            }
            StateBackend::S3 => {
                if self.path.is_some() {
                    return Err((
                        "state.path".into(),
                        "only for backend = \"local\" (S3 takes bucket and key)".into(),
                    ));
                }
                let need = |field: &str, v: &Option<String>| {
                    v.clone().ok_or_else(|| {
                        (
                            format!("state.{field}"),
                            "required with backend = \"s3\"".into(),
                        )
                    })
                };
                let (bucket, key) = (need("bucket", &self.bucket)?, need("key", &self.key)?);
                let mut loc = S3Location::parse(&format!("s3://{bucket}/{key}"))
                    .map_err(|m| ("state".to_string(), m))?;
                loc.region = self.region.clone();
                loc.kms_key_id = self.kms_key_id.clone();
                Ok(Some(Location::S3(loc)))
            }
        }
    }
}

/// How the device side (`iotreg device …`, and the device checks of `verify`) reaches the
/// device gateway. Endpoint, CA file and ports can also come from `IOTREG_DEVICE_*` variables
/// (resolved in settings), which win over these.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// What `verify` proves by connecting as the device, one check each.
    pub protocols: Vec<crate::device::Protocol>,
    /// The gateway's host name; default: DescribeEndpoint `iot:Data-ATS` at use time.
    pub endpoint: Option<String>,
    /// The CA that signs the gateway's certificate; default: Amazon Root CA 1 (built in).
    pub ca_file: Option<PathBuf>,
    pub mqtt_port: u16,
    /// MQTT with ALPN `x-amzn-mqtt-ca`, and MQTT over WebSockets.
    pub alpn_port: u16,
    pub https_port: u16,
    /// Bounds every device operation (connect, a PUBACK, a SUBACK, an HTTPS answer).
    pub connect_timeout_s: f64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            protocols: vec![crate::device::Protocol::Mqtt],
            endpoint: None,
            ca_file: None,
            mqtt_port: 8883,
            alpn_port: 443,
            https_port: 8443,
            connect_timeout_s: 10.0,
        }
    }
}

/// The architecture diagram's monitoring: an SNS topic for the handler's HIGH alerts,
/// CloudWatch alarms notifying it, and a dashboard.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// On by default: the diagram's monitoring is part of the system.
    pub enabled: bool,
    pub topic_name: String,
    pub dashboard_name: String,
    /// An address subscribed to the alert topic (AWS emails it a confirmation link).
    pub alert_email: Option<String>,
    /// A dashboard body template file replacing the built-in one.
    pub dashboard_template: Option<PathBuf>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            topic_name: "iot-temperature-alerts-{{suffix}}".into(),
            dashboard_name: "iot-device-registry-{{suffix}}".into(),
            alert_email: None,
            dashboard_template: None,
        }
    }
}

/// The variable through which the function learns the alert topic (set by iotreg).
pub const ALERT_TOPIC_VARIABLE: &str = "ALERT_TOPIC_ARN";

/// A fleet of devices from a manifest, instead of the recipe's one thing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// CSV manifest (header with `thing_name`; other columns are attributes). `--fleet` wins.
    pub manifest: Option<PathBuf>,
    /// Devices in flight at once. `--concurrency` wins.
    pub concurrency: u32,
    /// How new devices are registered: one API call at a time per device, or server-side by
    /// one bulk registration task (src/resources/bulk).
    pub mode: FleetMode,
    /// Bulk mode: the bucket for the registration input. Unset, iotreg creates one named from
    /// the account, region and suffix, and deletes it on `down`.
    pub bulk_bucket: Option<String>,
    /// A static thing group every device joins (`{{suffix}}` is replaced); None: no group.
    pub group: Option<String>,
    /// How many recorded devices `up`, `plan` and `verify` read one by one (chosen at random),
    /// for what no paged call returns. `--sample N` and `--full` win.
    pub sample: u64,
    /// Fleet Indexing on for the account: registry, shadows and connectivity, which `plan`,
    /// `up` and `verify` then read in pages (src/resources/indexing.rs).
    pub indexing: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            manifest: None,
            concurrency: 16,
            mode: FleetMode::Api,
            bulk_bucket: None,
            group: None,
            sample: crate::resources::fleet::DEFAULT_SAMPLE as u64,
            indexing: false,
        }
    }
}

/// How devices get their certificates: from `up` (none), or by fleet provisioning by claim,
/// where devices provision themselves at first boot with a shared claim certificate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProvisioningMode {
    #[default]
    None,
    Claim,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    pub mode: ProvisioningMode,
    /// The FLEET_PROVISIONING template (AWS: 1 to 36 of [0-9A-Za-z_-]).
    pub template_name: String,
    /// The role AWS IoT assumes to create the devices' things and certificates.
    pub role_name: String,
    /// The policy of the claim certificate (provisioning topics only).
    pub claim_policy_name: String,
    /// A pre-provisioning hook allowing only the manifest's serial numbers.
    pub hook: bool,
    pub hook_function_name: String,
    pub hook_role_name: String,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        ProvisioningConfig {
            mode: ProvisioningMode::None,
            template_name: "fleet-template-{{suffix}}".into(),
            role_name: "iot-provisioning-role-{{suffix}}".into(),
            claim_policy_name: "claim-policy-{{suffix}}".into(),
            hook: true,
            hook_function_name: "provisioning-hook-{{suffix}}".into(),
            hook_role_name: "provisioning-hook-role-{{suffix}}".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FleetMode {
    /// CreateThing, CreateCertificateFromCsr, AttachPolicy, AttachThingPrincipal per device.
    #[default]
    Api,
    /// StartThingRegistrationTask with a provisioning template and a JSON-lines input in S3.
    Bulk,
}

/// Why `name` is not an S3 bucket name AWS accepts (general purpose buckets: 3 to 63 of
/// lower-case letters, digits, dots and hyphens, beginning and ending with a letter or digit,
/// no two adjacent dots, not shaped like an IP address).
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Err(format!(
            "{name:?} is {len} characters long; S3 allows 3 to 63"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "{name:?} contains {c:?}; S3 allows lower-case letters, digits, '.' and '-'"
        ));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err(format!(
            "{name:?} must begin and end with a letter or digit"
        ));
    }
    if name.contains("..") {
        return Err(format!("{name:?} contains two adjacent dots"));
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err(format!("{name:?} is shaped like an IP address"));
    }
    Ok(())
}

/// How iotreg calls AWS: bounds on every call, so a hung endpoint is an error, never a hang.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub connect_timeout_s: f64,
    /// One HTTP attempt, from sending to the whole response.
    pub attempt_timeout_s: f64,
    /// One call including its retries.
    pub call_timeout_s: f64,
    /// Attempts per call for throttling, 5xx and network errors (the SDK's standard retry).
    pub max_attempts: u32,
    /// Requests per second per API operation, over AWS IoT's default quotas (0: no limit).
    pub rate_limits: BTreeMap<String, f64>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            connect_timeout_s: 5.0,
            attempt_timeout_s: 35.0,
            call_timeout_s: 120.0,
            max_attempts: 5,
            rate_limits: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThingTypeConfig {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThingConfig {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateMode {
    /// ECDSA P-256 key generated locally, certificate issued from a CSR: the key never travels.
    #[default]
    Local,
    /// CreateKeysAndCertificate, as the recipe does: AWS generates the key and returns it once.
    AwsGenerated,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateConfig {
    pub mode: CertificateMode,
    /// The device's own PEM CSR: its key was made on the device and never leaves it, so iotreg
    /// sends the CSR and writes only the certificate (single device; a fleet's is the
    /// manifest's `csr` column).
    pub csr_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub name: String,
    /// Which built-in policy document to deploy (ignored when `template` is set).
    pub preset: PolicyPreset,
    /// A policy document template file replacing the built-in one.
    pub template: Option<PathBuf>,
    /// Where the device policy is attached: to each device's certificate, or once to the
    /// fleet's thing group (`fleet.group`), where AWS applies it to every member connecting
    /// with its thing name as client id.
    pub attach_to: AttachTo,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AttachTo {
    #[default]
    Certificate,
    Group,
}

/// The built-in device policies. Both scope every grant to the device's own thing name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyPreset {
    /// Connect, publish readings, and keep the shadow over MQTT (publish to its `update`/`get`
    /// topics, subscribe to and receive their `accepted`/`rejected`/`delta` replies), plus the
    /// shadow's HTTP actions. What a device needs to use every feature of the stack over MQTT.
    #[default]
    MqttShadow,
    /// The recipe's policy exactly: Connect, Publish readings, and the shadow's HTTP actions
    /// (iot:GetThingShadow / iot:UpdateThingShadow) only, so a device cannot use its shadow
    /// over MQTT.
    Recipe,
}

impl PolicyPreset {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyPreset::MqttShadow => "mqtt-shadow",
            PolicyPreset::Recipe => "recipe",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    pub name: String,
    pub managed_policies: Vec<String>,
    pub trust_template: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionConfig {
    pub name: String,
    pub description: String,
    pub runtime: String,
    pub memory_mb: i64,
    pub timeout_s: i64,
    /// File name of the handler inside the zip; the handler is `<module>.lambda_handler`.
    pub handler_file: String,
    /// A handler source file replacing the built-in one.
    pub source: Option<PathBuf>,
    /// Environment variables of the function (none by default, as in the recipe).
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub name: String,
    pub description: String,
    pub sql: String,
    pub sql_version: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    pub enabled: bool,
    pub template: Option<PathBuf>,
}

impl Default for ThingTypeConfig {
    fn default() -> Self {
        ThingTypeConfig {
            name: "TemperatureSensor".into(),
            description: "Temperature sensor devices for production monitoring".into(),
        }
    }
}

impl Default for ThingConfig {
    fn default() -> Self {
        let attributes = [
            ("deviceType", "temperature"),
            ("manufacturer", "SensorCorp"),
            ("model", "TC-2000"),
            ("location", "ProductionFloor-A"),
            ("firmware", "1.0.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        ThingConfig {
            name: "temperature-sensor-{{suffix}}".into(),
            attributes,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            name: "device-policy-{{suffix}}".into(),
            preset: PolicyPreset::default(),
            template: None,
            attach_to: AttachTo::default(),
        }
    }
}

pub const LAMBDA_BASIC_EXECUTION: &str =
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";

impl Default for RoleConfig {
    fn default() -> Self {
        RoleConfig {
            name: "iot-lambda-role-{{suffix}}".into(),
            managed_policies: vec![LAMBDA_BASIC_EXECUTION.into()],
            trust_template: None,
        }
    }
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            name: "iot-data-processor-{{suffix}}".into(),
            description: "Process IoT sensor data from temperature devices".into(),
            runtime: "python3.12".into(),
            memory_mb: 256,
            timeout_s: 60,
            handler_file: "lambda-function.py".into(),
            source: None,
            environment: BTreeMap::new(),
        }
    }
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            name: "sensor_data_rule_{{suffix}}".into(),
            description: "Route temperature sensor data to Lambda for processing and alerting"
                .into(),
            sql: crate::templates::RULE_SQL.trim().into(),
            sql_version: "2016-03-23".into(),
            enabled: true,
        }
    }
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            enabled: true,
            template: None,
        }
    }
}

/// Loads the config: the named file (which must exist), else `iotreg.toml` in the working
/// directory when present, else the defaults. Returns the config and the file it came from.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from("iotreg.toml");
            if !p.exists() {
                let config = Config::default();
                config.validate(Path::new("<defaults>"))?;
                return Ok((config, None));
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let config = parse(&text, &path)?;
    Ok((config, Some(path)))
}

pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: one_line_toml_error(&e),
    })?;
    config.validate(path)?;
    // Relative template paths are relative to the config file, not the working directory.
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(config.with_paths_relative_to(base))
}

/// toml's Display spans several lines with a source excerpt; the contract is one line.
fn one_line_toml_error(e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => format!("invalid TOML at byte {}: {message}", span.start),
        None => format!("invalid TOML: {message}"),
    }
}

/// A name pattern with a representative suffix substituted, so lengths are checked realistically.
fn sample_name(pattern: &str, suffix: Option<&str>) -> String {
    pattern.replace(SUFFIX_PLACEHOLDER, suffix.unwrap_or("a1b2c3"))
}

struct NameRule {
    max: usize,
    allowed: fn(char) -> bool,
    describe: &'static str,
}

const THING_NAME: NameRule = NameRule {
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'),
    describe: "letters, digits, ':', '_' and '-'",
};
const POLICY_NAME: NameRule = NameRule {
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-'),
    describe: "letters, digits and _+=,.@-",
};
const ROLE_NAME: NameRule = NameRule {
    max: 64,
    ..POLICY_NAME
};
const FUNCTION_NAME: NameRule = NameRule {
    max: 64,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
    describe: "letters, digits, '_' and '-'",
};
const RULE_NAME: NameRule = NameRule {
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || c == '_',
    describe: "letters, digits and '_' (no hyphens)",
};
/// CreateProvisioningTemplate's templateName: `^[0-9A-Za-z_-]+$`, 1 to 36.
const TEMPLATE_NAME: NameRule = NameRule {
    max: 36,
    ..FUNCTION_NAME
};
const TOPIC_NAME: NameRule = NameRule {
    max: 256,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
    describe: "letters, digits, '_' and '-'",
};
const DASHBOARD_NAME: NameRule = NameRule {
    max: 255,
    ..TOPIC_NAME
};
const ATTRIBUTE_NAME: NameRule = NameRule {
    max: 128,
    allowed: |c| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c),
    describe: "letters, digits and _.,@/:#-",
};
const ATTRIBUTE_VALUE: NameRule = NameRule {
    max: 800,
    allowed: |c| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c),
    describe: "letters, digits and _.,@/:#=[]- (no spaces)",
};

/// AWS's rules for a thing name, an attribute name and an attribute value, for the manifest.
pub fn check_thing_name(v: &str) -> Result<(), String> {
    check_name(v, &THING_NAME, false)
}
pub fn check_attribute_name(v: &str) -> Result<(), String> {
    check_name(v, &ATTRIBUTE_NAME, false)
}
pub fn check_attribute_value(v: &str) -> Result<(), String> {
    check_name(v, &ATTRIBUTE_VALUE, true)
}

fn check_name(value: &str, rule: &NameRule, allow_empty: bool) -> Result<(), String> {
    if value.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err("must not be empty".into())
        };
    }
    if value.chars().count() > rule.max {
        return Err(format!(
            "{:?} is {} characters long; AWS allows at most {}",
            value,
            value.chars().count(),
            rule.max
        ));
    }
    if let Some(bad) = value.chars().find(|c| !(rule.allowed)(*c)) {
        return Err(format!(
            "{value:?} contains {bad:?}; AWS allows only {}",
            rule.describe
        ));
    }
    Ok(())
}

pub fn validate_suffix(suffix: &str) -> Result<(), String> {
    if suffix.is_empty() || suffix.len() > 32 {
        return Err(format!("{suffix:?} must be 1 to 32 characters"));
    }
    if !suffix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(format!(
            "{suffix:?} may contain only lowercase letters and digits"
        ));
    }
    Ok(())
}

impl Config {
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        if let Some(s) = &self.suffix {
            validate_suffix(s).map_err(|m| invalid("suffix", m))?;
        }
        self.state
            .location()
            .map_err(|(field, m)| invalid(&field, m))?;
        let suffix = self.suffix.as_deref();
        let p = &self.provisioning;
        let names: [(&str, &str, &NameRule); 13] = [
            (
                "provisioning.template_name",
                &p.template_name,
                &TEMPLATE_NAME,
            ),
            ("provisioning.role_name", &p.role_name, &ROLE_NAME),
            (
                "provisioning.claim_policy_name",
                &p.claim_policy_name,
                &POLICY_NAME,
            ),
            (
                "provisioning.hook_function_name",
                &p.hook_function_name,
                &FUNCTION_NAME,
            ),
            ("provisioning.hook_role_name", &p.hook_role_name, &ROLE_NAME),
            ("thing_type.name", &self.thing_type.name, &THING_NAME),
            ("thing.name", &self.thing.name, &THING_NAME),
            ("policy.name", &self.policy.name, &POLICY_NAME),
            ("role.name", &self.role.name, &ROLE_NAME),
            ("function.name", &self.function.name, &FUNCTION_NAME),
            ("rule.name", &self.rule.name, &RULE_NAME),
            (
                "monitoring.topic_name",
                &self.monitoring.topic_name,
                &TOPIC_NAME,
            ),
            (
                "monitoring.dashboard_name",
                &self.monitoring.dashboard_name,
                &DASHBOARD_NAME,
            ),
        ];
        for (field, pattern, rule) in names {
            check_name(&sample_name(pattern, suffix), rule, false)
                .map_err(|m| invalid(field, m))?;
        }
        if let Some(group) = &self.fleet.group {
            check_name(&sample_name(group, suffix), &THING_NAME, false)
                .map_err(|m| invalid("fleet.group", m))?;
        }
        jobs::validate(&self.jobs, &self.job_templates, suffix)
            .map_err(|(field, m)| invalid(&field, m))?;
        analytics::validate(&self.analytics, suffix).map_err(|(field, m)| invalid(&field, m))?;
        // The detector publishes what it finds to the alert topic, which monitoring deploys.
        if self.analytics.enabled && !self.monitoring.enabled {
            return Err(invalid(
                "analytics.enabled",
                "the detector alerts through the alert topic: set monitoring.enabled = true".into(),
            ));
        }
        check_name(
            &sample_name(&self.jobs.presign_role_name, suffix),
            &ROLE_NAME,
            false,
        )
        .map_err(|m| invalid("jobs.presign_role_name", m))?;
        if self.policy.attach_to == AttachTo::Group && self.fleet.group.is_none() {
            return Err(invalid(
                "policy.attach_to",
                "\"group\" needs the group: set fleet.group".into(),
            ));
        }
        if self.thing_type.description.chars().count() > 2028 {
            return Err(invalid(
                "thing_type.description",
                "AWS allows at most 2028 characters".into(),
            ));
        }
        if self.thing.attributes.len() > 50 {
            return Err(invalid(
                "thing.attributes",
                format!(
                    "{} attributes; AWS allows at most 50",
                    self.thing.attributes.len()
                ),
            ));
        }
        for (k, v) in &self.thing.attributes {
            check_name(k, &ATTRIBUTE_NAME, false)
                .map_err(|m| invalid(&format!("thing.attributes.{k}"), format!("name {m}")))?;
            check_name(v, &ATTRIBUTE_VALUE, true)
                .map_err(|m| invalid(&format!("thing.attributes.{k}"), format!("value {m}")))?;
        }
        for (i, arn) in self.role.managed_policies.iter().enumerate() {
            if !arn.starts_with("arn:") || !arn.contains(":policy/") {
                return Err(invalid(
                    &format!("role.managed_policies[{i}]"),
                    format!("{arn:?} is not an IAM policy ARN"),
                ));
            }
        }
        if !(128..=10240).contains(&self.function.memory_mb) {
            return Err(invalid(
                "function.memory_mb",
                format!(
                    "{} is out of range; Lambda allows 128 to 10240 MB",
                    self.function.memory_mb
                ),
            ));
        }
        if !(1..=900).contains(&self.function.timeout_s) {
            return Err(invalid(
                "function.timeout_s",
                format!(
                    "{} is out of range; Lambda allows 1 to 900 seconds",
                    self.function.timeout_s
                ),
            ));
        }
        for key in self.function.environment.keys() {
            // Lambda's documented pattern for variable names: [a-zA-Z]([a-zA-Z0-9_])+
            let mut chars = key.chars();
            let ok = key.len() >= 2
                && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(invalid(
                    &format!("function.environment.{key}"),
                    "a variable name is a letter then letters, digits or '_' (two characters at least)".into(),
                ));
            }
        }
        let env_size: usize = self
            .function
            .environment
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if env_size > 4096 {
            return Err(invalid(
                "function.environment",
                format!("{env_size} bytes; Lambda allows 4 KB of variables in all"),
            ));
        }
        if self.monitoring.enabled && self.function.environment.contains_key(ALERT_TOPIC_VARIABLE) {
            return Err(invalid(
                &format!("function.environment.{ALERT_TOPIC_VARIABLE}"),
                "set by iotreg to the alert topic while monitoring.enabled is true".into(),
            ));
        }
        if let Some(email) = &self.monitoring.alert_email {
            // What SNS needs to send the confirmation: one '@' with text on both sides and
            // no whitespace. Whether the mailbox exists only the confirmation can tell.
            let ok = email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.contains('@')
            }) && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(invalid(
                    "monitoring.alert_email",
                    format!("{email:?} is not an email address"),
                ));
            }
        }
        if !(1..=256).contains(&self.fleet.concurrency) {
            return Err(invalid(
                "fleet.concurrency",
                format!("{} is out of range: 1 to 256", self.fleet.concurrency),
            ));
        }
        if let Some(bucket) = &self.fleet.bulk_bucket {
            check_bucket_name(bucket).map_err(|why| invalid("fleet.bulk_bucket", why))?;
        }
        // A bulk registration template issues certificates from CSRs (or registers existing
        // ones): it has no way to hand back a private key made by AWS.
        if self.fleet.mode == FleetMode::Bulk && self.certificate.mode != CertificateMode::Local {
            return Err(invalid(
                "fleet.mode",
                "\"bulk\" registers certificates from CSRs and needs certificate.mode = \"local\""
                    .into(),
            ));
        }
        // Two ways of making the fleet's devices: up registers them in bulk, or they register
        // themselves by claim. One fleet, one way.
        if self.fleet.mode == FleetMode::Bulk && self.provisioning.mode == ProvisioningMode::Claim {
            return Err(invalid(
                "fleet.mode",
                "\"bulk\" has up register the manifest's devices, while provisioning.mode = \"claim\" has devices register themselves: choose one".into(),
            ));
        }
        for (op, rate) in &self.aws.rate_limits {
            if !rate.is_finite() || *rate < 0.0 {
                return Err(invalid(
                    &format!("aws.rate_limits.{op}"),
                    format!("{rate} is not a rate (requests per second, 0 for no limit)"),
                ));
            }
        }
        if self.function.runtime.trim().is_empty() {
            return Err(invalid("function.runtime", "must not be empty".into()));
        }
        let module = self.function.handler_file.strip_suffix(".py");
        if module.is_none_or(|m| m.is_empty() || m.contains('/')) {
            return Err(invalid(
                "function.handler_file",
                format!(
                    "{:?} must be a .py file name without directories",
                    self.function.handler_file
                ),
            ));
        }
        if self.function.description.chars().count() > 256 {
            return Err(invalid(
                "function.description",
                "Lambda allows at most 256 characters".into(),
            ));
        }
        for (field, value) in [
            ("aws.connect_timeout_s", self.aws.connect_timeout_s),
            ("aws.attempt_timeout_s", self.aws.attempt_timeout_s),
            ("aws.call_timeout_s", self.aws.call_timeout_s),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 3600.0) {
                return Err(invalid(
                    field,
                    format!("{value} must be a number of seconds above 0 and at most 3600"),
                ));
            }
        }
        if !(1..=20).contains(&self.aws.max_attempts) {
            return Err(invalid(
                "aws.max_attempts",
                format!("{} must be 1 to 20", self.aws.max_attempts),
            ));
        }
        let d = &self.device;
        if !(d.connect_timeout_s.is_finite()
            && d.connect_timeout_s > 0.0
            && d.connect_timeout_s <= 3600.0)
        {
            return Err(invalid(
                "device.connect_timeout_s",
                format!(
                    "{} must be a number of seconds above 0 and at most 3600",
                    d.connect_timeout_s
                ),
            ));
        }
        for (field, port) in [
            ("device.mqtt_port", d.mqtt_port),
            ("device.alpn_port", d.alpn_port),
            ("device.https_port", d.https_port),
        ] {
            if port == 0 {
                return Err(invalid(field, "must be a port, 1 to 65535".into()));
            }
        }
        if let Some(host) = &d.endpoint {
            crate::device::check_host(host).map_err(|m| invalid("device.endpoint", m))?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &d.protocols {
            if !seen.insert(p) {
                return Err(invalid("device.protocols", format!("{p} is listed twice")));
            }
        }
        let sql = self.rule.sql.trim();
        if sql.is_empty() {
            return Err(invalid("rule.sql", "must not be empty".into()));
        }
        if !sql.to_ascii_uppercase().starts_with("SELECT ") {
            return Err(invalid(
                "rule.sql",
                format!("{sql:?} is not a SELECT statement"),
            ));
        }
        if !matches!(
            self.rule.sql_version.as_str(),
            "2015-10-08" | "2016-03-23" | "beta"
        ) {
            return Err(invalid(
                "rule.sql_version",
                format!(
                    "{:?} is not one of 2015-10-08, 2016-03-23, beta",
                    self.rule.sql_version
                ),
            ));
        }
        Ok(())
    }

    fn with_paths_relative_to(mut self, base: &Path) -> Config {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        };
        fix(&mut self.key_dir);
        fix(&mut self.policy.template);
        fix(&mut self.role.trust_template);
        fix(&mut self.function.source);
        fix(&mut self.shadow.template);
        fix(&mut self.fleet.manifest);
        fix(&mut self.monitoring.dashboard_template);
        fix(&mut self.device.ca_file);
        for t in &mut self.job_templates {
            fix(&mut t.firmware);
            fix(&mut t.document);
        }
        self
    }
}

#[cfg(test)]
mod tests;
