//! The command line (clap only). Everything here is resolved into [`crate::settings::Settings`]
//! before any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::device::Protocol;

#[derive(Debug, Parser)]
#[command(
    name = "iotreg",
    version,
    about = "Provision, verify and tear down an AWS IoT device-registry stack as code",
    after_help = "Exit codes: 0 success, 1 an operation failed, 2 bad input (nothing was changed), 3 changes pending (plan --detailed-exitcode), 130 interrupted."
)]
pub struct Cli {
    /// Config file (TOML). Default: ./iotreg.toml when present, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// State recording what this deployment owns: a file, or s3://BUCKET/KEY to share it
    /// (default: [state] in the config, else .iotreg/state.json).
    #[arg(long, global = true, value_name = "FILE|S3_URL", help_heading = GLOBAL)]
    pub state: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Output format for stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text, help_heading = GLOBAL)]
    pub output: OutputFormat,
    /// More detail on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    #[command(flatten)]
    pub fleet_before: FleetArgsBefore,
    #[command(subcommand)]
    pub command: Command,
}

/// The heading of the options every subcommand takes, so that each subcommand's help shows its
/// own options apart from them.
const GLOBAL: &str = "Global options";

/// `--fleet` and `--concurrency` before the subcommand (`iotreg --fleet FILE up`), where
/// earlier versions took them: still accepted so that scripts written then keep working
/// (ignored, as they were, by the commands that take no fleet), but no longer shown.
#[derive(Debug, Default, Args)]
pub struct FleetArgsBefore {
    #[arg(long = "fleet", value_name = "FILE", hide = true)]
    pub fleet: Option<PathBuf>,
    #[arg(long = "concurrency", value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: Option<u32>,
}

/// Where and as whom to call AWS. Unset values come from the standard AWS chain.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// AWS region (default: the standard chain, e.g. AWS_REGION or the profile's region).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub region: Option<String>,
    /// Named profile from the AWS config files.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub profile: Option<String>,
    /// Send every AWS call to this endpoint (an emulator such as the bundled local AWS).
    #[arg(
        long,
        global = true,
        env = "AWS_ENDPOINT_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = GLOBAL
    )]
    pub endpoint_url: Option<String>,
}

/// The fleet options, taken by `up` and `plan` only (the others work from the state).
#[derive(Debug, Default, Args)]
pub struct FleetArgs {
    /// Fleet manifest: CSV with a header, `thing_name` required, other columns become thing
    /// attributes (default: fleet.manifest in the config).
    #[arg(long, value_name = "FILE")]
    pub fleet: Option<PathBuf>,
    /// Fleet devices in flight at once (default: fleet.concurrency in the config, 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: Option<u32>,
    #[command(flatten)]
    pub reads: ReadArgs,
}

/// How much of a fleet is read device by device (what no paged call returns).
#[derive(Debug, Default, Clone, Copy, Args)]
pub struct ReadArgs {
    /// For a fleet: read N devices chosen at random one by one, besides the pages that cover
    /// every device (default: fleet.sample in the config, 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// For a fleet: read every device one by one (slow on a large fleet: AWS allows some of
    /// those calls 10 times a second).
    #[arg(long, conflicts_with = "sample")]
    pub full: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or converge the stack (idempotent; resumes after a crash).
    Up {
        /// Deploy a device policy that fails the least-privilege lint (iot:*, Resource "*",
        /// or iot:Connect without the thing-name policy variable).
        #[arg(long)]
        allow_broad_policy: bool,
        /// Print the plan and stop: apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete fleet devices the state has and the manifest no longer lists.
        #[arg(long)]
        prune: bool,
        /// With the state in S3: refuse a bucket without versioning (state.require_versioning).
        #[arg(long)]
        require_versioning: bool,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Show what `up` would do, resource by resource and field by field, and whether each
    /// difference comes from the config or from a change made outside iotreg. Read-only.
    Plan {
        /// Exit 0 when in sync and 3 when changes are pending (1 and 2 as always).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Plan as `up --prune` would: fleet devices gone from the manifest are deleted.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Tear the stack down in reverse order.
    Down {
        /// Wait out AWS's five-minute thing-type deprecation delay instead of leaving it pending.
        #[arg(long)]
        wait: bool,
    },
    /// Show each resource of the deployment and whether it exists.
    Status,
    /// Prove the deployment works: every resource and link, then a reading end to end.
    Verify {
        /// Also write the results as JUnit XML to FILE (its directory must exist).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Skip the end-to-end data-path check (for endpoints without a rules engine).
        #[arg(long)]
        skip_e2e: bool,
        /// Skip the checks made as the device (its own certificate over MQTT, and
        /// TestAuthorization of its policy).
        #[arg(long)]
        skip_device: bool,
        /// Seconds to wait for the test reading to show in the function's log.
        #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = positive_seconds)]
        timeout: f64,
        #[command(flatten)]
        reads: ReadArgs,
        /// For a fleet with the index's connectivity: count devices connected within this many
        /// hours.
        #[arg(long, value_name = "HOURS", default_value = "24", value_parser = positive_hours)]
        connected_within: f64,
    },
    /// Act as a device: a connection bundle, one publish, or a simulated device or fleet.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Jobs on the devices: start, follow, cancel and list rollouts and configuration changes
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Read and repair the state: list, show, pull, push, rm, migrate.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Break a lock left by a run that is gone (a killed CI job): only the lock with this id.
    ForceUnlock {
        /// The lock id, as the refused command printed it.
        lock_id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// What `iotreg job` does.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Start a job from a job template of the config, or a configuration change (--set).
    /// Prints the job's id.
    Start {
        /// The template's name in the config (`[[job_templates]]` name).
        #[arg(required_unless_present = "set")]
        template: Option<String>,
        /// `group` (the fleet's thing group) and/or thing names. Default: the group when
        /// fleet.group is set, else every device the state records (at most 10 things).
        #[arg(long, num_args = 1.., value_name = "group|THING")]
        targets: Vec<String>,
        /// A configuration change instead of a template: KEY=VALUE, repeatable. Devices apply
        /// it and report it in their shadow (`reported.config`).
        #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "template")]
        set: Vec<String>,
        /// Keep running on devices that join the target group later (CONTINUOUS).
        #[arg(long)]
        continuous: bool,
        /// The job's id (default: the template's name, or `config`, and the UTC time).
        #[arg(long, value_name = "ID")]
        job_id: Option<String>,
    },
    /// A job's executions counted by status, its progress and abort state, and how many
    /// devices report its firmware version or settings in their shadow.
    Status {
        id: String,
        /// Follow the job with a live line until it is done; exit 1 if it was cancelled or
        /// any execution failed, timed out or was rejected.
        #[arg(long)]
        watch: bool,
        /// Seconds between two looks with --watch.
        #[arg(long, value_name = "S", default_value = "2", value_parser = positive_seconds)]
        interval: f64,
        /// With --watch: give up after S seconds with the job still running (exit 1).
        #[arg(long, value_name = "S", requires = "watch", value_parser = watch_seconds)]
        timeout: Option<f64>,
        /// Skip reading the target devices' shadows.
        #[arg(long)]
        no_reported: bool,
    },
    /// Cancel a job: queued executions are cancelled; with --force, executions in progress too.
    Cancel {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// The jobs this deployment started, with their status.
    List,
}

/// What `iotreg state` does. Addresses are a stack resource's key (`thing`, `certificate`,
/// …), `fleet/THING` for a fleet device, `fleet/THING/KEY` for one of its records.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// One line per record: address, kind, name, phase.
    List,
    /// One record (or a fleet device's records) as JSON.
    Show { address: String },
    /// The whole state as JSON on stdout (a fleet's journal folded in).
    Pull,
    /// Replace the state with FILE (locked): refused for another deployment's state or an
    /// older serial.
    Push {
        file: PathBuf,
        /// Also replace a state with the same or a newer serial.
        #[arg(long)]
        force: bool,
    },
    /// Forget records without deleting anything in AWS (locked).
    Rm {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Copy the state to another place (locked at both ends, verified by reading it back),
    /// and leave a marker where it was so nothing keeps using the old place.
    Migrate {
        /// s3://BUCKET/KEY or a file.
        #[arg(long, value_name = "FILE|S3_URL")]
        to: String,
    },
}

/// What `iotreg device` does, as the device (with its certificate and key from `up`).
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Write everything one device needs to connect into a directory: certificate, key, CA,
    /// connection.json, an AWS IoT Device Client config and a README with a mosquitto_pub
    /// command.
    Bundle {
        /// The thing (default: the deployment's only device).
        thing: Option<String>,
        /// The directory to write (created 0700 when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Publish one reading as the device (QoS 1) and print the time to its PUBACK.
    Publish {
        /// The thing (default: the deployment's only device).
        thing: Option<String>,
        /// mqtt, mqtt-443, https or wss (default: the first of device.protocols).
        #[arg(long, value_name = "P", value_parser = protocol)]
        protocol: Option<Protocol>,
        /// The message, a JSON document (default: a reading shaped like verify's).
        #[arg(long, value_name = "JSON")]
        message: Option<String>,
    },
    /// Play a device at first boot under claim provisioning: make a key, connect with the
    /// claim certificate, get a certificate for a CSR, register through the template, write
    /// `<thing>-certificate.pem.crt` and `<thing>-private.pem.key`, reconnect as the thing and
    /// publish a reading.
    Provision {
        /// Fleet provisioning by claim (the only way `provision` knows).
        #[arg(long, required = true)]
        claim: bool,
        /// The device's serial number (what the pre-provisioning hook allows or refuses).
        #[arg(long, value_name = "SN")]
        serial: String,
        /// The thing name to register (default: the manifest's for the serial, else the
        /// serial itself).
        #[arg(long, value_name = "NAME")]
        thing: Option<String>,
    },
    /// Act as the device, or every fleet device at once: connect, publish readings, update
    /// the reported shadow and answer a delta; prints a summary with PUBACK latencies.
    /// With --claim: provision --count devices by claim concurrently instead. With
    /// --pattern: readings shaped like an anomaly (for the analytics detector).
    #[command(group(clap::ArgGroup::new("seeded").args(["jobs", "pattern"]).multiple(true)))]
    Simulate {
        /// The thing (default: the deployment's only device).
        #[arg(conflicts_with_all = ["fleet", "claim"])]
        thing: Option<String>,
        /// Provision devices by claim, --count of them, each publishing one reading.
        #[arg(long, conflicts_with = "fleet")]
        claim: bool,
        /// With --claim: the serials to use, one a line (default: the manifest's
        /// serial_number column).
        #[arg(long, value_name = "FILE", requires = "claim")]
        serials: Option<PathBuf>,
        /// Every fleet device the state records, concurrently.
        #[arg(long)]
        fleet: bool,
        /// Readings per device; with --claim, devices to provision.
        #[arg(long, value_name = "N", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        /// Seconds between a device's readings.
        #[arg(long, value_name = "S", default_value = "1", value_parser = interval_seconds)]
        interval: f64,
        /// mqtt, mqtt-443, https or wss (default: the first of device.protocols).
        #[arg(long, value_name = "P", value_parser = protocol)]
        protocol: Option<Protocol>,
        /// Devices connected at once.
        #[arg(long, value_name = "N", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=4096))]
        concurrency: u32,
        /// Leave the shadow alone: connect and publish only.
        #[arg(long)]
        no_shadow: bool,
        /// The readings' shape: normal (noise around the device's baseline), drift (a steady
        /// climb faster than analytics.max_rate), stuck (one value repeated) or spike (one
        /// reading far out); the anomaly starts after analytics.min_history + 5 readings.
        #[arg(long, value_name = "P", value_parser = pattern, conflicts_with_all = ["jobs", "claim"])]
        pattern: Option<crate::device::pattern::Pattern>,
        /// Take jobs instead of publishing readings: every device stays connected, takes its
        /// pending and newly notified job executions over the AWS IoT Jobs MQTT API (a
        /// firmware update downloaded and checked, or a configuration change), reports the
        /// result in its shadow and to the job, and disconnects after --linger seconds with
        /// nothing new.
        #[arg(long, conflicts_with_all = ["claim", "no_shadow", "count", "interval"])]
        jobs: bool,
        /// With --jobs: the probability (0 to 1) that a device fails an execution, drawn
        /// from the thing, the job id and --seed (the same inputs always draw the same).
        #[arg(long, value_name = "P", requires = "jobs", value_parser = rate)]
        fail_rate: Option<f64>,
        /// With --jobs: the probability (0 to 1) that a device takes an execution and then
        /// drops its connection for the rest of the run, drawn like --fail-rate.
        #[arg(long, value_name = "P", requires = "jobs", value_parser = rate)]
        offline_rate: Option<f64>,
        /// With --jobs: the seed of the --fail-rate and --offline-rate draws; with --pattern,
        /// of the readings' noise [default: 0].
        #[arg(long, value_name = "N", requires = "seeded")]
        seed: Option<u64>,
        /// With --jobs: seconds a device with no pending job waits for a new one before it
        /// disconnects [default: 10].
        #[arg(long, value_name = "S", requires = "jobs", value_parser = interval_seconds)]
        linger: Option<f64>,
        /// With --jobs: seconds the whole run may take; reached with a job still being
        /// executed, it fails (exit 1) [default: 600].
        #[arg(long, value_name = "S", requires = "jobs", value_parser = run_seconds)]
        max_duration: Option<f64>,
    },
}

fn protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

fn pattern(s: &str) -> Result<crate::device::pattern::Pattern, String> {
    s.parse()
}

fn interval_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 3600")),
    }
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a probability from 0 to 1")),
    }
}

fn run_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of seconds (at most 86400)"
        )),
    }
}

fn watch_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 7.0 * 86400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of seconds (at most 7 days)"
        )),
    }
}

fn positive_hours(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 8760.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of hours (at most 8760, a year)"
        )),
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of seconds (at most 3600)"
        )),
    }
}
