//! Settings resolved once from the command line, the config file and the templates, before
//! any AWS call: everything that can be wrong with the user's input is found here (exit 2).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::aws::Remote;
use crate::cli::{Cli, Command, DeviceCommand, FleetArgs, JobCommand, OutputFormat, StateCommand};
use crate::config::{self, Config, SUFFIX_PLACEHOLDER};
use crate::device::{Ca, Endpoint, Protocol};
use crate::resources::fleet::PerDevice;
use crate::state::Location;
use crate::templates::{self, Template};

/// The state file when neither `--state` nor `[state]` names one.
pub const DEFAULT_STATE: &str = ".iotreg/state.json";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Up { dry_run: bool },
    Plan { detailed_exitcode: bool },
    Down { wait: bool },
    Status,
    Verify(VerifyOptions),
    Device(DeviceAction),
    Job(JobAction),
    State(StateAction),
    ForceUnlock { lock_id: String, yes: bool },
}

impl Action {
    /// The command as a lock's holder names it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Up { .. } => "up",
            Action::Plan { .. } => "plan",
            Action::Down { .. } => "down",
            Action::Status => "status",
            Action::Verify(_) => "verify",
            Action::Device(_) => "device",
            Action::Job(JobAction::Start { .. }) => "job start",
            Action::Job(JobAction::Cancel { .. }) => "job cancel",
            Action::Job(_) => "job",
            Action::State(StateAction::Push { .. }) => "state push",
            Action::State(StateAction::Rm { .. }) => "state rm",
            Action::State(StateAction::Migrate { .. }) => "state migrate",
            Action::State(_) => "state",
            Action::ForceUnlock { .. } => "force-unlock",
        }
    }
}

/// `iotreg job …`.
#[derive(Debug, Clone, PartialEq)]
pub enum JobAction {
    Start {
        /// A template's name, or None for a configuration change.
        template: Option<String>,
        targets: Vec<String>,
        set: Vec<(String, serde_json::Value)>,
        continuous: bool,
        job_id: Option<String>,
    },
    Status {
        id: String,
        watch: bool,
        interval: std::time::Duration,
        /// With --watch: give up (exit 1) after this long.
        timeout: Option<std::time::Duration>,
        reported: bool,
    },
    Cancel {
        id: String,
        force: bool,
    },
    List,
}

/// `iotreg state …`.
#[derive(Debug, Clone, PartialEq)]
pub enum StateAction {
    List,
    Show { address: String },
    Pull,
    Push { file: PathBuf, force: bool },
    Rm { addresses: Vec<String> },
    Migrate { to: crate::state::Location },
}

/// `iotreg device …`.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAction {
    Bundle {
        thing: Option<String>,
        out: PathBuf,
    },
    Publish {
        thing: Option<String>,
        protocol: Protocol,
        /// Checked to be JSON.
        message: Option<String>,
    },
    Simulate(SimulateOptions),
    /// `device provision --claim`.
    Provision {
        serial: String,
        thing: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimulateOptions {
    pub thing: Option<String>,
    pub fleet: bool,
    pub count: u32,
    pub interval: std::time::Duration,
    pub protocol: Protocol,
    pub concurrency: usize,
    /// Connect and publish only (`--no-shadow`).
    pub no_shadow: bool,
    /// Provision `count` devices by claim instead.
    pub claim: bool,
    /// With `claim`: the serials file (else the manifest's).
    pub serials: Option<PathBuf>,
    /// `--jobs`: take jobs instead of publishing readings.
    pub jobs: Option<JobsOptions>,
    /// `--pattern`: the readings' shape, where its anomaly starts, and the noise's seed.
    pub pattern: Option<(
        crate::device::pattern::Pattern,
        crate::device::pattern::Shape,
        u64,
    )>,
}

/// `device simulate --jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsOptions {
    /// The probability that a device fails an execution (0 to 1).
    pub fail_rate: f64,
    /// The probability that a device takes an execution and goes offline (0 to 1).
    pub offline_rate: f64,
    /// The seed of both draws.
    pub seed: u64,
    /// How long a device with nothing pending waits for a new job.
    pub linger: std::time::Duration,
    /// The bound on the whole run.
    pub max_duration: std::time::Duration,
}

impl JobsOptions {
    pub const DEFAULT_LINGER_S: f64 = 10.0;
    pub const DEFAULT_MAX_DURATION_S: f64 = 600.0;
}

/// How the device side reaches the gateway: `[device]` with the `IOTREG_DEVICE_*` variables
/// over it, the CA read once.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSettings {
    pub protocols: Vec<Protocol>,
    /// None: DescribeEndpoint `iot:Data-ATS` when needed.
    pub endpoint: Option<String>,
    pub ca: Ca,
    pub mqtt_port: u16,
    pub alpn_port: u16,
    pub https_port: u16,
    pub timeout: std::time::Duration,
}

impl DeviceSettings {
    /// The endpoint at `host` with the configured ports and CA.
    pub fn endpoint_at(&self, host: String) -> Endpoint {
        Endpoint {
            host,
            mqtt_port: self.mqtt_port,
            alpn_port: self.alpn_port,
            https_port: self.https_port,
            ca: self.ca.clone(),
        }
    }

    /// The protocol a device command uses unless told: the first one verify proves.
    pub fn default_protocol(&self) -> Protocol {
        self.protocols.first().copied().unwrap_or(Protocol::Mqtt)
    }

    fn resolve(
        c: &config::DeviceConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DeviceSettings, BadInput> {
        let port =
            |var: &str, configured: u16| -> Result<u16, BadInput> {
                match env(var) {
                    None => Ok(configured),
                    Some(v) => v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        BadInput(format!("{var}: {v:?} is not a port (1 to 65535)"))
                    }),
                }
            };
        let endpoint = match env("IOTREG_DEVICE_ENDPOINT") {
            Some(host) => {
                crate::device::check_host(&host)
                    .map_err(|m| BadInput(format!("IOTREG_DEVICE_ENDPOINT: {m}")))?;
                Some(host)
            }
            None => c.endpoint.clone(),
        };
        let ca = match env("IOTREG_DEVICE_CA_FILE")
            .map(PathBuf::from)
            .or_else(|| c.ca_file.clone())
        {
            Some(path) => Ca::from_file(&path).map_err(|e| BadInput(format!("CA file: {e}")))?,
            None => Ca::amazon_root_ca_1(),
        };
        Ok(DeviceSettings {
            protocols: c.protocols.clone(),
            endpoint,
            ca,
            mqtt_port: port("IOTREG_DEVICE_MQTT_PORT", c.mqtt_port)?,
            alpn_port: port("IOTREG_DEVICE_ALPN_PORT", c.alpn_port)?,
            https_port: port("IOTREG_DEVICE_HTTPS_PORT", c.https_port)?,
            timeout: std::time::Duration::from_secs_f64(c.connect_timeout_s),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyOptions {
    pub junit: Option<PathBuf>,
    pub skip_e2e: bool,
    pub skip_device: bool,
    pub timeout: std::time::Duration,
    pub sample: Option<usize>,
}

/// The fleet as the command line and config give it.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The manifest, loaded and validated (up and plan); None: work from the state.
    pub manifest: Option<std::sync::Arc<crate::manifest::Manifest>>,
    pub concurrency: usize,
    pub prune: bool,
    /// Which recorded devices get the reads no page covers (`--sample N`, `--full`).
    pub per_device: PerDevice,
    /// verify: what "connected lately" means (`--connected-within HOURS`).
    pub connected_within: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub action: Action,
    /// Where the state lives: `--state`, else `[state]`, else `.iotreg/state.json`.
    pub state: crate::state::Location,
    /// `up` refuses an S3 state bucket without versioning.
    pub require_versioning: bool,
    pub key_dir: PathBuf,
    pub remote: Remote,
    pub output: OutputFormat,
    /// -1 quiet, 0 normal, 1+ verbose.
    pub verbosity: i8,
    pub config: Config,
    pub templates: Templates,
    pub fleet: FleetSettings,
    pub device: DeviceSettings,
    /// `certificate.csr_file`, read and checked (up, plan, verify); None: a key is made here.
    pub csr: Option<crate::keys::Csr>,
    /// The job templates' files, read and checked (up, plan, verify); None for the commands
    /// that need only names (`down` and `job start` work without the files).
    pub job_files: Option<std::sync::Arc<crate::resources::jobs::JobFiles>>,
}

#[derive(Debug, Clone)]
pub struct Templates {
    pub policy: Template,
    pub trust: Template,
    pub handler: Template,
    pub shadow: Template,
    pub dashboard: Template,
}

/// Bad input: reported as one line, exit 2, before any AWS call.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl Settings {
    /// The device policy document for these template variables: the template rendered, plus,
    /// for a built-in policy with `https` among `device.protocols`, the statement HTTPS publish
    /// needs. Over HTTPS AWS IoT has no client id, so `${iot:Connection.Thing.ThingName}` has no
    /// value and the built-in statements never apply; the certificate's subject common name
    /// does, and iotreg's certificates (made from a local key) carry the thing name there.
    /// AWS-generated certificates do not (their subject is AWS's), so they get no such
    /// statement and `verify` says why HTTPS is refused.
    pub fn device_policy(
        &self,
        vars: &BTreeMap<&str, String>,
    ) -> Result<serde_json::Value, crate::templates::TemplateError> {
        let mut doc = self.templates.policy.render_json(vars)?;
        let arn = |kind: &str, rest: &str| {
            format!(
                "arn:{}:iot:{}:{}:{kind}/{rest}",
                vars.get("partition").map(String::as_str).unwrap_or("aws"),
                vars.get("region").map(String::as_str).unwrap_or_default(),
                vars.get("account").map(String::as_str).unwrap_or_default(),
            )
        };
        // Devices that take jobs: the jobs MQTT API on the thing's own topics only (AWS IoT
        // developer guide, "Jobs device MQTT API operations": requests are published to and
        // answered on $aws/things/<thing>/jobs/…). A policy template is the user's to write.
        if !self.config.job_templates.is_empty() && self.config.policy.template.is_none() {
            let jobs = "$aws/things/${iot:Connection.Thing.ThingName}/jobs/*";
            if let Some(statements) = doc["Statement"].as_array_mut() {
                statements.push(serde_json::json!({
                    "Effect": "Allow",
                    "Action": ["iot:Publish", "iot:Receive"],
                    "Resource": [arn("topic", jobs)],
                }));
                statements.push(serde_json::json!({
                    "Effect": "Allow",
                    "Action": ["iot:Subscribe"],
                    "Resource": [arn("topicfilter", jobs)],
                }));
            }
        }
        let https = self.device.protocols.contains(&Protocol::Https);
        if https
            && self.config.policy.template.is_none()
            && self.config.certificate.mode == config::CertificateMode::Local
        {
            if let Some(statements) = doc["Statement"].as_array_mut() {
                statements.push(serde_json::json!({
                    "Effect": "Allow",
                    "Action": ["iot:Publish"],
                    "Resource": [arn(
                        "topic",
                        "sensor/temperature/${iot:Certificate.Subject.CommonName}",
                    )],
                }));
            }
        }
        Ok(doc)
    }

    pub fn resolve(cli: Cli) -> Result<Settings, BadInput> {
        let bad = |e: &dyn std::fmt::Display| BadInput(e.to_string());
        let (config, _) = config::load(cli.config.as_deref()).map_err(|e| bad(&e))?;
        let templates = Templates {
            policy: match config.policy.preset {
                config::PolicyPreset::MqttShadow => Template::load(
                    config.policy.template.as_deref(),
                    "device-policy.json",
                    templates::DEVICE_POLICY,
                ),
                config::PolicyPreset::Recipe => Template::load(
                    config.policy.template.as_deref(),
                    "device-policy-recipe.json",
                    templates::DEVICE_POLICY_RECIPE,
                ),
            }
            .map_err(|e| bad(&e))?,
            trust: Template::load(
                config.role.trust_template.as_deref(),
                "lambda-trust-policy.json",
                templates::TRUST_POLICY,
            )
            .map_err(|e| bad(&e))?,
            handler: Template::load(
                config.function.source.as_deref(),
                "lambda-function.py",
                templates::HANDLER,
            )
            .map_err(|e| bad(&e))?,
            shadow: Template::load(
                config.shadow.template.as_deref(),
                "device-shadow.json",
                templates::SHADOW,
            )
            .map_err(|e| bad(&e))?,
            dashboard: Template::load(
                config.monitoring.dashboard_template.as_deref(),
                "dashboard.json",
                templates::DASHBOARD,
            )
            .map_err(|e| bad(&e))?,
        };
        // Render once with stand-in values so a broken template fails now, not half way.
        let sample = template_vars(&config, "a1b2c3", "us-east-1", "000000000000");
        templates.policy.render_json(&sample).map_err(|e| bad(&e))?;
        templates.trust.render_json(&sample).map_err(|e| bad(&e))?;
        if config.shadow.enabled {
            let shadow = templates.shadow.render_json(&sample).map_err(|e| bad(&e))?;
            if shadow
                .pointer("/state")
                .and_then(|s| s.as_object())
                .is_none()
            {
                return Err(BadInput(format!(
                    "{}: a shadow document needs a \"state\" object",
                    templates.shadow.origin
                )));
            }
        }
        if config.monitoring.enabled {
            let body = templates
                .dashboard
                .render_json(&sample)
                .map_err(|e| bad(&e))?;
            if body
                .pointer("/widgets")
                .and_then(|w| w.as_array())
                .is_none()
            {
                return Err(BadInput(format!(
                    "{}: a dashboard body needs a \"widgets\" array",
                    templates.dashboard.origin
                )));
            }
        }
        if let Some(region) = &cli.remote.region {
            if region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(BadInput(format!(
                    "--region: {region:?} is not a region name"
                )));
            }
        }
        if let Some(url) = &cli.remote.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(BadInput(format!(
                    "--endpoint-url: {url:?} must start with http:// or https://"
                )));
            }
        }
        let state = match &cli.state {
            Some(arg) => {
                let mut loc =
                    Location::parse_arg(arg).map_err(|m| BadInput(format!("--state: {m}")))?;
                // The bucket's region and KMS key still come from [state] for the same bucket.
                if let (Location::S3(l), Ok(Some(Location::S3(c)))) =
                    (&mut loc, config.state.location())
                {
                    if l.bucket == c.bucket {
                        l.region = c.region;
                        l.kms_key_id = c.kms_key_id;
                    }
                }
                loc
            }
            None => config
                .state
                .location()
                .ok()
                .flatten()
                .unwrap_or_else(|| Location::Local(PathBuf::from(DEFAULT_STATE))),
        };
        let key_dir = config.key_dir.clone().unwrap_or_else(|| {
            // Keys stay on this machine whatever holds the state: beside a local state file,
            // else in .iotreg/.
            let local = match &state {
                Location::Local(p) => p.clone(),
                Location::S3(_) => PathBuf::from(DEFAULT_STATE),
            };
            match local.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        });
        if matches!(cli.command, Command::Up { .. }) {
            check_key_dir(&key_dir)?;
        }
        // Only up and plan take the fleet options; the others work from the state. Given
        // after the subcommand, they win over the same given before it (the older form).
        let (fleet_args, wants_manifest) = match &cli.command {
            Command::Up { fleet, .. } | Command::Plan { fleet, .. } => (
                FleetArgs {
                    fleet: fleet.fleet.clone().or(cli.fleet_before.fleet.clone()),
                    concurrency: fleet.concurrency.or(cli.fleet_before.concurrency),
                    reads: fleet.reads,
                },
                true,
            ),
            _ => (FleetArgs::default(), false),
        };
        let manifest_path = fleet_args
            .fleet
            .clone()
            .or_else(|| config.fleet.manifest.clone());
        // With claim provisioning the manifest is the hook's allow-list, which every command
        // that builds the hook (all but `down`) needs, and the device simulator's serials.
        let claim = config.provisioning.mode == crate::config::ProvisioningMode::Claim;
        let is_down = matches!(cli.command, Command::Down { .. });
        let wants_manifest = wants_manifest || (claim && !is_down);
        let manifest = match manifest_path.filter(|_| wants_manifest) {
            Some(path) => Some(std::sync::Arc::new(
                crate::manifest::load(&path, &config.thing.attributes).map_err(|e| bad(&e))?,
            )),
            None => None,
        };
        let csr = match &config.certificate.csr_file {
            Some(_) if config.certificate.mode == config::CertificateMode::AwsGenerated => {
                return Err(BadInput(
                    "certificate.csr_file: a CSR's key is the device's own, while mode = \"aws-generated\" has AWS make the key; use one or the other".into(),
                ))
            }
            // Read where it matters: `down` and the state commands work without the file.
            Some(path)
                if matches!(
                    cli.command,
                    Command::Up { .. } | Command::Plan { .. } | Command::Verify { .. }
                ) =>
            {
                Some(crate::keys::Csr::load(path).map_err(|e| {
                    BadInput(format!("certificate.csr_file: {e}"))
                })?)
            }
            _ => None,
        };
        let job_files = if matches!(
            cli.command,
            Command::Up { .. } | Command::Plan { .. } | Command::Verify { .. }
        ) {
            Some(std::sync::Arc::new(
                crate::resources::jobs::read_files(&config.job_templates).map_err(|e| bad(&e))?,
            ))
        } else {
            None
        };
        if claim && config.provisioning.hook && !is_down {
            // Bad input, found before any call: the hook cannot be built without its list.
            match &manifest {
                Some(m) => {
                    crate::deployment::allowed_serials(m)?;
                }
                None if matches!(cli.command, Command::Up { .. } | Command::Plan { .. }) => {
                    return Err(BadInput(format!(
                        "provisioning.mode = \"claim\" with the hook on needs the fleet manifest (fleet.manifest or --fleet FILE): its {} column is the list of devices allowed to provision",
                        crate::deployment::SERIAL_COLUMN
                    )))
                }
                None => {}
            }
        }
        let device = DeviceSettings::resolve(&config.device, |var| {
            std::env::var(var).ok().filter(|v| !v.is_empty())
        })?;
        let reads = match &cli.command {
            Command::Verify { reads, .. } => *reads,
            _ => fleet_args.reads,
        };
        let fleet = FleetSettings {
            per_device: if reads.full {
                PerDevice::Full
            } else {
                PerDevice::Sample(reads.sample.unwrap_or(config.fleet.sample) as usize)
            },
            connected_within: std::time::Duration::from_secs_f64(match &cli.command {
                Command::Verify {
                    connected_within, ..
                } => connected_within * 3600.0,
                _ => 24.0 * 3600.0,
            }),
            manifest,
            concurrency: fleet_args.concurrency.unwrap_or(config.fleet.concurrency) as usize,
            prune: matches!(
                cli.command,
                Command::Up { prune: true, .. } | Command::Plan { prune: true, .. }
            ),
        };
        let require_versioning = config.state.require_versioning
            || matches!(
                cli.command,
                Command::Up {
                    require_versioning: true,
                    ..
                }
            );
        Ok(Settings {
            action: match cli.command {
                Command::Up {
                    allow_broad_policy,
                    dry_run,
                    ..
                } => {
                    let doc = templates.policy.render_json(&sample).map_err(|e| bad(&e))?;
                    let problems = crate::lint::broad_policy(&doc);
                    if !problems.is_empty() && !allow_broad_policy {
                        return Err(BadInput(format!(
                            "{}: the device policy is broader than least privilege: {}; fix the template or pass --allow-broad-policy",
                            templates.policy.origin,
                            problems.join("; ")
                        )));
                    }
                    Action::Up { dry_run }
                }
                Command::Plan {
                    detailed_exitcode, ..
                } => Action::Plan { detailed_exitcode },
                Command::Down { wait } => Action::Down { wait },
                Command::Status => Action::Status,
                Command::Verify {
                    junit,
                    skip_e2e,
                    skip_device,
                    timeout,
                    reads,
                    ..
                } => {
                    if let Some(path) = &junit {
                        let dir = match path.parent() {
                            Some(p) if !p.as_os_str().is_empty() => p,
                            _ => std::path::Path::new("."),
                        };
                        if !dir.is_dir() {
                            return Err(BadInput(format!(
                                "--junit: directory {} does not exist",
                                dir.display()
                            )));
                        }
                    }
                    Action::Verify(VerifyOptions {
                        junit,
                        skip_e2e,
                        skip_device,
                        timeout: std::time::Duration::from_secs_f64(timeout),
                        sample: reads.sample.map(|n| n as usize),
                    })
                }
                Command::Device { command } => {
                    Action::Device(device_action(command, &device, &config.analytics)?)
                }
                Command::Job { command } => Action::Job(job_action(command, &config)?),
                Command::State { command } => Action::State(state_action(command)?),
                Command::ForceUnlock { lock_id, yes } => Action::ForceUnlock { lock_id, yes },
            },
            require_versioning,
            state,
            key_dir,
            remote: Remote {
                region: cli.remote.region,
                profile: cli.remote.profile,
                endpoint_url: cli.remote.endpoint_url,
                limits: config.aws.clone(),
            },
            output: cli.output,
            verbosity: if cli.quiet { -1 } else { cli.verbose as i8 },
            config,
            templates,
            fleet,
            device,
            csr,
            job_files,
        })
    }
}

fn job_action(command: JobCommand, config: &config::Config) -> Result<JobAction, BadInput> {
    Ok(match command {
        JobCommand::Start {
            template,
            targets,
            set,
            continuous,
            job_id,
        } => {
            if let Some(t) = &template {
                if !config.job_templates.iter().any(|c| &c.name == t) {
                    let known: Vec<&str> = config
                        .job_templates
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    return Err(BadInput(format!(
                        "job start: no job template {t:?} in the config (it has: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
            }
            if let Some(id) = &job_id {
                config::jobs::check_job_id(id).map_err(|m| BadInput(format!("--job-id: {m}")))?;
            }
            let set = set
                .iter()
                .map(|s| crate::resources::jobs::parse_setting(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| BadInput(format!("--set: {m}")))?;
            JobAction::Start {
                template,
                targets,
                set,
                continuous,
                job_id,
            }
        }
        JobCommand::Status {
            id,
            watch,
            interval,
            timeout,
            no_reported,
        } => JobAction::Status {
            id,
            watch,
            interval: std::time::Duration::from_secs_f64(interval),
            timeout: timeout.map(std::time::Duration::from_secs_f64),
            reported: !no_reported,
        },
        JobCommand::Cancel { id, force } => JobAction::Cancel { id, force },
        JobCommand::List => JobAction::List,
    })
}

fn state_action(command: StateCommand) -> Result<StateAction, BadInput> {
    Ok(match command {
        StateCommand::List => StateAction::List,
        StateCommand::Show { address } => StateAction::Show { address },
        StateCommand::Pull => StateAction::Pull,
        StateCommand::Push { file, force } => StateAction::Push { file, force },
        StateCommand::Rm { addresses } => StateAction::Rm { addresses },
        StateCommand::Migrate { to } => StateAction::Migrate {
            to: Location::parse_arg(&to).map_err(|m| BadInput(format!("--to: {m}")))?,
        },
    })
}

fn device_action(
    command: DeviceCommand,
    device: &DeviceSettings,
    analytics: &crate::config::analytics::AnalyticsConfig,
) -> Result<DeviceAction, BadInput> {
    Ok(match command {
        DeviceCommand::Bundle { thing, out } => {
            // The bundle holds a private key: the same rule as the key directory.
            check_key_dir(&out).map_err(|e| BadInput(e.0.replacen("key_dir", "--out", 1)))?;
            DeviceAction::Bundle { thing, out }
        }
        DeviceCommand::Publish {
            thing,
            protocol,
            message,
        } => {
            if let Some(m) = &message {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(m) {
                    return Err(BadInput(format!("--message: not a JSON document: {e}")));
                }
            }
            DeviceAction::Publish {
                thing,
                protocol: protocol.unwrap_or(device.default_protocol()),
                message,
            }
        }
        DeviceCommand::Simulate {
            thing,
            fleet,
            claim,
            serials,
            count,
            interval,
            protocol,
            concurrency,
            no_shadow,
            pattern,
            jobs,
            fail_rate,
            offline_rate,
            seed,
            linger,
            max_duration,
        } => {
            let protocol = protocol.unwrap_or(device.default_protocol());
            if jobs && protocol == Protocol::Https {
                return Err(BadInput(
                    "--jobs needs MQTT (--protocol mqtt, mqtt-443 or wss): over https a device cannot subscribe to its jobs' notifications and answers".into(),
                ));
            }
            let seconds = std::time::Duration::from_secs_f64;
            let pattern = pattern.map(|p| {
                (
                    p,
                    crate::device::pattern::Shape::new(p, analytics),
                    seed.unwrap_or(0),
                )
            });
            if let Some((p, shape, _)) = &pattern {
                if count < shape.needs {
                    return Err(BadInput(format!(
                        "--pattern {p} needs --count {} at least: the anomaly starts after reading {} (analytics.min_history + 5) and the detector needs {} more to see it",
                        shape.needs,
                        shape.onset,
                        shape.needs - shape.onset
                    )));
                }
            }
            DeviceAction::Simulate(SimulateOptions {
                pattern,
                thing,
                fleet,
                count,
                interval: seconds(interval),
                protocol,
                concurrency: concurrency as usize,
                no_shadow,
                claim,
                serials,
                jobs: jobs.then(|| JobsOptions {
                    fail_rate: fail_rate.unwrap_or(0.0),
                    offline_rate: offline_rate.unwrap_or(0.0),
                    seed: seed.unwrap_or(0),
                    linger: seconds(linger.unwrap_or(JobsOptions::DEFAULT_LINGER_S)),
                    max_duration: seconds(
                        max_duration.unwrap_or(JobsOptions::DEFAULT_MAX_DURATION_S),
                    ),
                }),
            })
        }
        DeviceCommand::Provision {
            claim: _,
            serial,
            thing,
        } => DeviceAction::Provision { serial, thing },
    })
}

/// A name pattern with the suffix filled in.
pub fn name(pattern: &str, suffix: &str) -> String {
    pattern.replace(SUFFIX_PLACEHOLDER, suffix)
}

/// The values every template may use.
pub fn template_vars(
    config: &Config,
    suffix: &str,
    region: &str,
    account: &str,
) -> BTreeMap<&'static str, String> {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    [
        ("region", region.to_string()),
        ("account", account.to_string()),
        ("partition", crate::aws::partition(region).to_string()),
        ("suffix", suffix.to_string()),
        ("thing_type", config.thing_type.name.clone()),
        ("thing_name", name(&config.thing.name, suffix)),
        ("policy_name", name(&config.policy.name, suffix)),
        ("role_name", name(&config.role.name, suffix)),
        ("function_name", name(&config.function.name, suffix)),
        ("rule_name", name(&config.rule.name, suffix)),
        ("topic_name", name(&config.monitoring.topic_name, suffix)),
        (
            "dashboard_name",
            name(&config.monitoring.dashboard_name, suffix),
        ),
        ("now", now),
    ]
    .into_iter()
    .collect()
}

/// Private keys must not land where other users can write: they could replace or plant files.
fn check_key_dir(dir: &std::path::Path) -> Result<(), BadInput> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(()); // created 0700 on first use
    };
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(BadInput(format!(
            "key_dir: {} is writable by other users (mode {:o}); iotreg will not write private keys there. \
             Use a private directory (chmod go-w) or set key_dir",
            dir.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The settings of `iotreg --config FILE status` with FILE holding `config`.
    fn with_config(config: &str) -> Settings {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("iotreg.toml");
        std::fs::write(&file, config).unwrap();
        let cli = Cli::parse_from(["iotreg", "--config", file.to_str().unwrap(), "status"]);
        Settings::resolve(cli).unwrap()
    }

    #[test]
    fn https_among_the_protocols_adds_the_certificate_name_statement_to_built_in_policies() {
        let vars = template_vars(&Config::default(), "abc123", "us-east-1", "123456789012");
        let statements = |config: &str| {
            let doc = with_config(config).device_policy(&vars).unwrap();
            assert_eq!(crate::lint::broad_policy(&doc), Vec::<String>::new());
            doc["Statement"].as_array().unwrap().clone()
        };
        let https = "[device]\nprotocols = [\"mqtt\", \"https\"]\n";
        let added = statements(https);
        assert_eq!(added.len(), 6);
        assert_eq!(
            added[5]["Resource"][0],
            "arn:aws:iot:us-east-1:123456789012:topic/sensor/temperature/${iot:Certificate.Subject.CommonName}"
        );
        assert_eq!(statements("").len(), 5);
        assert_eq!(
            statements(&format!("{https}[policy]\npreset = \"recipe\"\n")).len(),
            4
        );
        // AWS-generated certificates carry AWS's subject, not the thing name: no statement.
        assert_eq!(
            statements(&format!("{https}[certificate]\nmode = \"aws-generated\"\n")).len(),
            5
        );
    }

    /// The settings of `iotreg --config FILE ARGS…` with FILE holding `config`.
    fn with_args(config: &str, args: &[&str]) -> Result<Settings, BadInput> {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("iotreg.toml");
        std::fs::write(&file, config).unwrap();
        let mut argv = vec!["iotreg", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(args);
        Settings::resolve(Cli::parse_from(argv))
    }

    #[test]
    fn simulate_jobs_options_are_resolved_and_bad_values_refused() {
        use clap::Parser;
        let jobs = |args: &[&str]| match with_args("", args).unwrap().action {
            Action::Device(DeviceAction::Simulate(o)) => o.jobs,
            other => panic!("{other:?}"),
        };
        let sim = ["device", "simulate", "--fleet"];
        assert_eq!(jobs(&sim), None);
        let d = jobs(&[&sim[..], &["--jobs"]].concat()).unwrap();
        assert_eq!(
            d,
            JobsOptions {
                fail_rate: 0.0,
                offline_rate: 0.0,
                seed: 0,
                linger: std::time::Duration::from_secs(10),
                max_duration: std::time::Duration::from_secs(600),
            }
        );
        let j = jobs(
            &[
                &sim[..],
                &[
                    "--jobs",
                    "--fail-rate",
                    "0.4",
                    "--offline-rate",
                    "1",
                    "--seed",
                    "7",
                    "--linger",
                    "2.5",
                    "--max-duration",
                    "30",
                ],
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!((j.fail_rate, j.offline_rate, j.seed), (0.4, 1.0, 7));
        assert_eq!(j.linger, std::time::Duration::from_millis(2500));
        assert_eq!(j.max_duration, std::time::Duration::from_secs(30));
        // Over https a device hears nothing: bad input.
        let e =
            with_args("", &[&sim[..], &["--jobs", "--protocol", "https"]].concat()).unwrap_err();
        assert!(e.0.contains("--jobs needs MQTT"), "{e}");
        // Out of range, or without --jobs, or with what only readings use: clap's usage
        // errors (exit 2).
        for bad in [
            &["--jobs", "--fail-rate", "1.5"][..],
            &["--jobs", "--offline-rate", "-0.1"],
            &["--jobs", "--fail-rate", "x"],
            &["--fail-rate", "0.5"],
            &["--seed", "3"],
            &["--jobs", "--linger", "-1"],
            &["--jobs", "--max-duration", "0"],
            &["--jobs", "--count", "3"],
            &["--jobs", "--no-shadow"],
        ] {
            let argv = [&["iotreg"][..], &sim[..], bad].concat();
            let e = Cli::try_parse_from(&argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}: {e}");
        }
        // Without --fleet, which --claim conflicts with anyway.
        let e =
            Cli::try_parse_from(["iotreg", "device", "simulate", "--jobs", "--claim"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("'--jobs' cannot be used with '--claim'"),
            "{e}"
        );
    }

    #[test]
    fn where_the_state_lives_flag_over_config_over_default() {
        let s3 = "[state]\nbackend = \"s3\"\nbucket = \"acme-state\"\nkey = \"p/s.json\"\nregion = \"eu-west-1\"\nkms_key_id = \"k\"\n";
        // No section: the local file, keys beside it, exactly as before.
        let d = with_args("", &["status"]).unwrap();
        assert_eq!(
            d.state,
            Location::Local(PathBuf::from(".iotreg/state.json"))
        );
        assert_eq!(d.key_dir, PathBuf::from(".iotreg"));
        let d = with_args("", &["--state", "elsewhere/st.json", "status"]).unwrap();
        assert_eq!(d.key_dir, PathBuf::from("elsewhere"));
        // The section: S3, with its region and KMS key; keys stay in .iotreg/.
        let d = with_args(s3, &["status"]).unwrap();
        let Location::S3(l) = &d.state else {
            panic!("{:?}", d.state)
        };
        assert_eq!(
            (l.bucket.as_str(), l.key.as_str()),
            ("acme-state", "p/s.json")
        );
        assert_eq!(
            (l.region.as_deref(), l.kms_key_id.as_deref()),
            (Some("eu-west-1"), Some("k"))
        );
        assert_eq!(d.key_dir, PathBuf::from(".iotreg"));
        // --state wins; the same bucket keeps the section's region and key.
        let d = with_args(s3, &["--state", "s3://acme-state/other.json", "status"]).unwrap();
        let Location::S3(l) = &d.state else { panic!() };
        assert_eq!(
            (l.key.as_str(), l.region.as_deref()),
            ("other.json", Some("eu-west-1"))
        );
        let d = with_args(s3, &["--state", "s3://another-bucket/x.json", "status"]).unwrap();
        let Location::S3(l) = &d.state else { panic!() };
        assert_eq!(l.region, None);
        let d = with_args(s3, &["--state", "local.json", "status"]).unwrap();
        assert_eq!(d.state, Location::Local(PathBuf::from("local.json")));
        // require_versioning: the section or the flag.
        assert!(!with_args("", &["up"]).unwrap().require_versioning);
        assert!(
            with_args("", &["up", "--require-versioning"])
                .unwrap()
                .require_versioning
        );
        assert!(
            with_args(&format!("{s3}require_versioning = true\n"), &["up"])
                .unwrap()
                .require_versioning
        );
    }

    #[test]
    fn a_state_section_that_does_not_add_up_is_bad_input() {
        for (config, says) in [
            (
                "[state]\nbackend = \"s3\"\nkey = \"k\"\n",
                "state.bucket: required",
            ),
            (
                "[state]\nbackend = \"s3\"\nbucket = \"acme-state\"\n",
                "state.key: required",
            ),
            (
                "[state]\nbucket = \"acme-state\"\n",
                "state.bucket: only for backend = \"s3\"",
            ),
            (
                "[state]\nbackend = \"s3\"\nbucket = \"acme-state\"\nkey = \"k\"\npath = \"x\"\n",
                "state.path: only for backend",
            ),
            (
                "[state]\nbackend = \"s3\"\nbucket = \"Acme\"\nkey = \"k\"\n",
                "lowercase",
            ),
            (
                "[state]\nbackend = \"gcs\"\n",
                "unknown variant `gcs`, expected `local` or `s3`",
            ),
        ] {
            let e = with_args(config, &["status"]).unwrap_err().to_string();
            assert!(e.contains(says), "{config}: {e}");
        }
        let e = with_args("", &["--state", "s3://acme-state/", "status"]).unwrap_err();
        assert!(e.to_string().starts_with("--state: "), "{e}");
        let e = with_args("", &["state", "migrate", "--to", "s3://x"]).unwrap_err();
        assert!(e.to_string().starts_with("--to: "), "{e}");
    }

    fn resolve(
        c: &config::DeviceConfig,
        vars: &[(&str, &str)],
    ) -> Result<DeviceSettings, BadInput> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DeviceSettings::resolve(c, |k| vars.get(k).cloned())
    }

    #[test]
    fn device_settings_default_to_aws_and_the_environment_wins() {
        let d = resolve(&config::DeviceConfig::default(), &[]).unwrap();
        assert_eq!(d.protocols, vec![Protocol::Mqtt]);
        assert_eq!(d.endpoint, None);
        assert_eq!(d.ca, Ca::amazon_root_ca_1());
        assert_eq!((d.mqtt_port, d.alpn_port, d.https_port), (8883, 443, 8443));
        assert_eq!(d.timeout, std::time::Duration::from_secs(10));

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("local-ca.pem");
        std::fs::write(&ca, crate::device::AMAZON_ROOT_CA_1).unwrap();
        let file = config::DeviceConfig {
            endpoint: Some("gw.example".into()),
            mqtt_port: 1883,
            ..Default::default()
        };
        let ca_path = ca.to_string_lossy().into_owned();
        let d = resolve(
            &file,
            &[
                ("IOTREG_DEVICE_ENDPOINT", "localhost"),
                ("IOTREG_DEVICE_CA_FILE", &ca_path),
                ("IOTREG_DEVICE_MQTT_PORT", "18883"),
                ("IOTREG_DEVICE_ALPN_PORT", "18443"),
                ("IOTREG_DEVICE_HTTPS_PORT", "18444"),
            ],
        )
        .unwrap();
        assert_eq!(d.endpoint.as_deref(), Some("localhost"));
        assert_eq!(d.ca.file_name, "local-ca.pem");
        assert_eq!(
            (d.mqtt_port, d.alpn_port, d.https_port),
            (18883, 18443, 18444)
        );
        // The file's value stands when the variable is not set.
        let d = resolve(&file, &[]).unwrap();
        assert_eq!(
            (d.endpoint.as_deref(), d.mqtt_port),
            (Some("gw.example"), 1883)
        );
    }

    #[test]
    fn bad_device_variables_are_bad_input_naming_the_variable() {
        let c = config::DeviceConfig::default();
        let e = resolve(&c, &[("IOTREG_DEVICE_MQTT_PORT", "0")]).unwrap_err();
        assert_eq!(
            e.0,
            "IOTREG_DEVICE_MQTT_PORT: \"0\" is not a port (1 to 65535)"
        );
        let e = resolve(&c, &[("IOTREG_DEVICE_ENDPOINT", "https://x")]).unwrap_err();
        assert!(e.0.starts_with("IOTREG_DEVICE_ENDPOINT: "), "{}", e.0);
        let e = resolve(&c, &[("IOTREG_DEVICE_CA_FILE", "/nonexistent/ca.pem")]).unwrap_err();
        assert!(e.0.starts_with("CA file: /nonexistent/ca.pem: "), "{}", e.0);
    }
}
