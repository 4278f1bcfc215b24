//! One module per resource kind, each with its ensure / destroy. The plan below lists them in
//! the recipe's order with the dependencies that let the engine overlap independent chains.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::aws::Clients;
use crate::config::CertificateMode;
use crate::engine::Resource;
use crate::keys::KeyFiles;

pub mod alarm;
pub mod alert_policy;
pub mod alert_subscription;
pub mod alert_topic;
pub mod analytics;
pub mod bucket;
pub mod bulk;
pub mod certificate;
pub mod claim_certificate;
pub mod dashboard;
pub mod fleet;
pub mod function;
pub mod indexing;
pub mod jobs;
pub mod link;
pub mod monitoring;
pub mod permission;
pub mod policy;
pub mod policy_attachment;
pub mod provisioned;
pub mod provisioning_template;
pub mod role;
pub mod rule;
pub mod sdk;
pub mod shadow;
pub mod thing;
pub mod thing_group;
pub mod thing_principal;
pub mod thing_type;

#[cfg(test)]
mod mock_tests;
#[cfg(test)]
pub(crate) mod testing;

/// Everything a resource needs to know, resolved once: names with the suffix filled in,
/// templates rendered, the Lambda package built; one spec per resource kind.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub suffix: String,
    pub region: String,
    pub account: String,
    pub partition: String,
    pub thing_type: ThingTypeSpec,
    pub thing: ThingSpec,
    pub certificate: CertificateSpec,
    pub policy: PolicySpec,
    pub role: RoleSpec,
    pub function: FunctionSpec,
    pub rule: RuleSpec,
    /// The shadow document to initialise with, or None when shadow initialisation is off.
    pub shadow: Option<serde_json::Value>,
    /// The alert topic, alarms and dashboard (deployed when enabled).
    pub monitoring: monitoring::Monitoring,
    /// A fleet of devices instead of the recipe's one thing.
    pub fleet: Option<Arc<fleet::FleetSpec>>,
    /// Fleet Indexing turned on for the account (`fleet.indexing`).
    pub indexing: bool,
    /// Bulk registration of the fleet's new devices (`fleet.mode = "bulk"`), its role and
    /// bucket.
    pub bulk: Arc<bulk::BulkSpec>,
    /// Job templates, their firmware bucket and pre-signing role (`[[job_templates]]`).
    pub jobs: Arc<jobs::JobsSpec>,
    /// The static thing group every device joins (`fleet.group`).
    pub group: Option<thing_group::GroupSpec>,
    /// Fleet provisioning by claim: devices register themselves (no device of the recipe's).
    pub provisioning: Option<ProvisioningSpec>,
    /// Telemetry analytics: the stream, its rule, the anomaly detector (`[analytics]`).
    pub analytics: Option<Arc<analytics::AnalyticsSpec>>,
    pub iam_retry: crate::retry::Backoff,
    /// How long a timed-out call may still be running on the server (the attempt timeout).
    pub write_settle: std::time::Duration,
    /// `down --wait`: wait out the thing type's deprecation delay instead of leaving it pending.
    pub wait_for_thing_type: bool,
}

#[derive(Debug, Clone)]
pub struct ThingTypeSpec {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct ThingSpec {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct CertificateSpec {
    pub mode: CertificateMode,
    pub key_dir: PathBuf,
    /// This device's key, public key and certificate files.
    pub key_files: KeyFiles,
    /// After a certificate create that succeeded at once, still look for duplicates of its
    /// key. On for the single device; a fleet sweeps only after retried creates, since each
    /// sweep reads every certificate created meanwhile (quadratic across a fleet).
    pub sweep_duplicates: bool,
    /// The device's own CSR: the certificate is issued for it and no key is made here.
    pub csr: Option<crate::keys::Csr>,
}

#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub name: String,
    pub document: serde_json::Value,
    /// Which policy this is, for verify: "the built-in mqtt-shadow policy", "the built-in
    /// recipe policy" or "the template FILE".
    pub origin: String,
    /// The built-in policy deployed, None for a template file: what `verify` expects the
    /// device to be allowed.
    pub preset: Option<crate::config::PolicyPreset>,
}

#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub name: String,
    pub trust_policy: serde_json::Value,
    pub managed_policies: Vec<String>,
    /// An inline policy of the role's own (name, document).
    pub inline_policy: Option<InlinePolicy>,
}

#[derive(Debug, Clone)]
pub struct InlinePolicy {
    pub name: String,
    pub document: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub name: String,
    pub description: String,
    pub runtime: String,
    pub memory_mb: i32,
    pub timeout_s: i32,
    pub handler: String,
    pub environment: BTreeMap<String, String>,
    pub zip: Vec<u8>,
    pub code_sha256: String,
}

#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub name: String,
    pub description: String,
    pub sql: String,
    pub sql_version: String,
    pub enabled: bool,
}

/// Fleet provisioning by claim: the template, its role, the claim certificate and policy,
/// and the pre-provisioning hook.
#[derive(Debug, Clone)]
pub struct ProvisioningSpec {
    pub template_name: String,
    pub description: String,
    /// The template body (FLEET_PROVISIONING), as JSON.
    pub body: serde_json::Value,
    /// The role AWS IoT assumes to provision (trusted by iot.amazonaws.com).
    pub role: RoleSpec,
    pub claim_policy: PolicySpec,
    /// The claim certificate's key, public key and certificate files (`claim-…`).
    pub claim_files: KeyFiles,
    pub hook: Option<HookSpec>,
}

/// The pre-provisioning hook: a function whose package carries the allowed serials, and its
/// execution role.
#[derive(Debug, Clone)]
pub struct HookSpec {
    pub role: RoleSpec,
    pub function: FunctionSpec,
}

impl Deployment {
    pub fn template_arn(&self, name: &str) -> String {
        self.arn("iot", &format!("provisioningtemplate/{name}"))
    }
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }
    pub fn rule_arn(&self) -> String {
        self.arn("iot", &format!("rule/{}", self.rule.name))
    }
}

pub struct Env {
    pub aws: Clients,
    pub d: Deployment,
    /// A fleet device's live state read in pages with the rest of the fleet: its resources
    /// read from it instead of calling AWS one device at a time (None: they call).
    pub view: Option<Arc<fleet::view::FleetView>>,
}

impl Env {
    pub fn new(aws: Clients, d: Deployment) -> Env {
        Env { aws, d, view: None }
    }
}

pub const THING_TYPE: &str = "thing_type";
/// A thing type replaced by a rename, kept in the state until it is deleted.
pub const THING_TYPE_RETIRED: &str = "thing_type_retired";
pub const THING: &str = "thing";
pub const CERTIFICATE: &str = "certificate";
pub const POLICY: &str = "policy";
pub const POLICY_ATTACHMENT: &str = "policy_attachment";
pub const THING_PRINCIPAL: &str = "thing_principal";
pub const ROLE: &str = "role";
pub const FUNCTION: &str = "function";
pub const RULE: &str = "rule";
pub const PERMISSION: &str = "permission";
pub const SHADOW: &str = "shadow";
pub const FLEET: &str = "fleet";
pub const FLEET_INDEXING: &str = "fleet_indexing";
pub const ALERT_TOPIC: &str = "alert_topic";
pub const ALERT_SUBSCRIPTION: &str = "alert_subscription";
pub const ALERT_POLICY: &str = "alert_policy";
pub const DASHBOARD: &str = "dashboard";
pub const THING_GROUP: &str = "thing_group";
pub const GROUP_MEMBERSHIP: &str = "group_membership";
pub const GROUP_POLICY: &str = "group_policy";
pub const PROVISIONING_ROLE: &str = "provisioning_role";
pub const CLAIM_CERTIFICATE: &str = "claim_certificate";
pub const CLAIM_POLICY: &str = "claim_policy";
pub const CLAIM_POLICY_ATTACHMENT: &str = "claim_policy_attachment";
pub const HOOK_ROLE: &str = "hook_role";
pub const HOOK_FUNCTION: &str = "hook_function";
pub const HOOK_PERMISSION: &str = "hook_permission";
pub const PROVISIONING_TEMPLATE: &str = "provisioning_template";
pub const PROVISIONED: &str = "provisioned_devices";

/// Every resource kind in the recipe's order, with what decides whether the config wants it.
/// The single-device stack, a fleet device's own stack, the monitoring stack and the strays
/// are all read off this one list.
struct Entry {
    /// Part of each device's own stack: in the single stack without a fleet, and in every
    /// fleet device's stack with one.
    device: bool,
    /// Whether the config wants it (besides the device rule above).
    wanted: fn(&Deployment) -> bool,
    /// Whether a recorded one the config no longer wants is deleted as a stray. (The fleet is
    /// wanted while the state records devices; a renamed thing type retires its own way.)
    stray: bool,
    make: fn(&Arc<Env>) -> Vec<Box<dyn Resource>>,
}

fn one(r: impl Resource + 'static) -> Vec<Box<dyn Resource>> {
    vec![Box::new(r)]
}

fn always(_: &Deployment) -> bool {
    true
}

fn monitoring(d: &Deployment) -> bool {
    d.monitoring.enabled
}

fn claim(d: &Deployment) -> bool {
    d.provisioning.is_some()
}

fn hook(d: &Deployment) -> bool {
    d.provisioning.as_ref().is_some_and(|p| p.hook.is_some())
}

const REGISTRY: &[Entry] = &[
    Entry {
        device: false,
        wanted: always,
        stray: false,
        make: |env| one(thing_type::ThingType::current(env.clone())),
    },
    Entry {
        device: true,
        wanted: always,
        stray: true,
        make: |env| one(thing::Thing(env.clone())),
    },
    Entry {
        device: true,
        wanted: always,
        stray: true,
        make: |env| one(certificate::Certificate(env.clone())),
    },
    Entry {
        device: false,
        wanted: always,
        stray: true,
        make: |env| one(policy::Policy::device(env.clone())),
    },
    Entry {
        device: false,
        wanted: |d| d.group.is_some(),
        stray: true,
        make: |env| one(thing_group::ThingGroup(env.clone())),
    },
    Entry {
        device: true,
        wanted: |d| !d.group.as_ref().is_some_and(|g| g.policy),
        stray: true,
        make: |env| one(policy_attachment::new(env.clone())),
    },
    Entry {
        device: false,
        wanted: |d| d.group.as_ref().is_some_and(|g| g.policy),
        stray: true,
        make: |env| one(thing_group::GroupPolicy(env.clone())),
    },
    Entry {
        device: true,
        wanted: always,
        stray: true,
        make: |env| one(thing_principal::new(env.clone())),
    },
    Entry {
        device: true,
        wanted: |d| d.group.is_some(),
        stray: true,
        make: |env| one(thing_group::Membership(env.clone())),
    },
    Entry {
        device: false,
        wanted: always,
        stray: true,
        make: |env| one(role::Role::lambda(env.clone())),
    },
    Entry {
        device: false,
        wanted: bulk::wanted,
        stray: true,
        make: |env| one(role::Role(env.clone(), &role::BULK)),
    },
    Entry {
        device: false,
        wanted: bulk::wanted,
        stray: true,
        make: |env| one(bucket::Bucket(env.clone(), &bulk::BUCKET)),
    },
    Entry {
        device: false,
        wanted: monitoring,
        stray: true,
        make: |env| one(alert_topic::AlertTopic(env.clone())),
    },
    Entry {
        device: false,
        wanted: |d| d.monitoring.enabled && d.monitoring.alert_email.is_some(),
        stray: true,
        make: |env| one(alert_subscription::AlertSubscription(env.clone())),
    },
    Entry {
        device: false,
        wanted: monitoring,
        stray: true,
        make: |env| one(alert_policy::AlertPolicy(env.clone())),
    },
    Entry {
        device: false,
        wanted: always,
        stray: true,
        make: |env| one(function::Function::processor(env.clone())),
    },
    Entry {
        device: false,
        wanted: always,
        stray: true,
        make: |env| one(rule::Rule::processor(env.clone())),
    },
    Entry {
        device: false,
        wanted: always,
        stray: true,
        make: |env| one(permission::Permission::rule(env.clone())),
    },
    Entry {
        device: false,
        wanted: |d| d.indexing,
        stray: true,
        make: |env| one(indexing::Indexing(env.clone())),
    },
    Entry {
        device: false,
        wanted: |d| d.fleet.is_some(),
        stray: false,
        make: |env| one(fleet::Fleet::new(env.clone())),
    },
    Entry {
        device: false,
        wanted: claim,
        stray: true,
        make: |env| one(role::Role(env.clone(), &role::PROVISIONING)),
    },
    Entry {
        device: false,
        wanted: claim,
        stray: true,
        make: |env| one(claim_certificate::ClaimCertificate::new(env.clone())),
    },
    Entry {
        device: false,
        wanted: claim,
        stray: true,
        make: |env| one(policy::Policy(env.clone(), &policy::CLAIM)),
    },
    Entry {
        device: false,
        wanted: claim,
        stray: true,
        make: |env| one(claim_certificate::attachment(env.clone())),
    },
    Entry {
        device: false,
        wanted: hook,
        stray: true,
        make: |env| one(role::Role(env.clone(), &role::HOOK)),
    },
    Entry {
        device: false,
        wanted: hook,
        stray: true,
        make: |env| one(function::Function(env.clone(), &function::HOOK)),
    },
    Entry {
        device: false,
        wanted: hook,
        stray: true,
        make: |env| {
            one(permission::Permission(
                env.clone(),
                &permission::HOOK_INVOKE,
            ))
        },
    },
    Entry {
        device: false,
        wanted: claim,
        stray: true,
        make: |env| one(provisioning_template::Template(env.clone())),
    },
    Entry {
        device: false,
        wanted: claim,
        stray: true,
        make: |env| one(provisioned::Provisioned(env.clone())),
    },
    Entry {
        device: false,
        wanted: jobs::firmware_wanted,
        stray: true,
        make: |env| one(bucket::Bucket(env.clone(), &jobs::BUCKET)),
    },
    Entry {
        device: false,
        wanted: jobs::presign_wanted,
        stray: true,
        make: |env| one(role::Role(env.clone(), &role::JOBS)),
    },
    Entry {
        device: false,
        wanted: jobs::wanted,
        // A template dropped from the config is found by its record (see `strays`).
        stray: false,
        make: |env| {
            jobs::JobTemplate::all(env)
                .into_iter()
                .map(|t| Box::new(t) as Box<dyn Resource>)
                .collect()
        },
    },
    Entry {
        device: true,
        wanted: |d| d.shadow.is_some(),
        stray: true,
        make: |env| one(shadow::Shadow(env.clone())),
    },
    Entry {
        device: false,
        wanted: monitoring,
        stray: true,
        make: |env| {
            alarm::Alarm::all(env)
                .into_iter()
                .map(|a| Box::new(a) as Box<dyn Resource>)
                .collect()
        },
    },
    Entry {
        device: false,
        wanted: monitoring,
        stray: true,
        make: |env| one(dashboard::Dashboard(env.clone())),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(analytics::stream::Stream(env.clone())),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(role::Role(env.clone(), &role::ANALYTICS_RULE)),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(rule::Rule(env.clone(), &rule::ANALYTICS)),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(analytics::table::Table(env.clone())),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(analytics::queue::Queue(env.clone())),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(role::Role(env.clone(), &role::DETECTOR)),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(function::Function(env.clone(), &function::DETECTOR)),
    },
    Entry {
        device: false,
        wanted: analytics::wanted,
        stray: true,
        make: |env| one(analytics::mapping::Mapping(env.clone())),
    },
];

/// The stack as the config wants it, in the recipe's order: the one device's thing,
/// certificate, attachments and shadow, or, for a fleet, the fleet step (each device's own
/// resources, see [`device_plan`]).
pub fn plan(env: &Arc<Env>) -> Vec<Box<dyn Resource>> {
    // With claim provisioning the devices make their own things and certificates.
    let single = env.d.fleet.is_none() && env.d.provisioning.is_none();
    REGISTRY
        .iter()
        .filter(|e| (e.wanted)(&env.d) && (single || !e.device))
        .flat_map(|e| (e.make)(env))
        .collect()
}

/// One device's resources, for a fleet device's own deployment (its thing name, attributes
/// and key files).
pub fn device_plan(env: &Arc<Env>) -> Vec<Box<dyn Resource>> {
    REGISTRY
        .iter()
        .filter(|e| e.device && (e.wanted)(&env.d))
        .flat_map(|e| (e.make)(env))
        .collect()
}

/// A fleet device's resources its records have and the config no longer wants (the policy
/// attachment after `policy.attach_to = "group"`, the membership after `fleet.group` went,
/// the shadow after shadow initialisation was turned off): `up` retires them device by device.
pub fn device_strays(env: &Arc<Env>, recorded: impl Fn(&str) -> bool) -> Vec<Box<dyn Resource>> {
    let wanted: Vec<String> = device_plan(env)
        .iter()
        .map(|r| r.key().to_string())
        .collect();
    REGISTRY
        .iter()
        .filter(|e| e.device && e.stray)
        .flat_map(|e| (e.make)(env))
        .filter(|r| !wanted.iter().any(|w| w == r.key()) && recorded(r.key()))
        .collect()
}

/// Resources the state records but the config no longer wants (shadow initialisation turned
/// off, monitoring turned off or its email removed, a thing type replaced by a rename, the one
/// device's resources after a switch to a fleet): `up` deletes them after converging the rest,
/// and `down` deletes them with the rest.
pub fn strays(env: &Arc<Env>, state: &crate::state::State) -> Vec<Box<dyn Resource>> {
    let wanted: Vec<String> = plan(env).iter().map(|r| r.key().to_string()).collect();
    let mut out: Vec<Box<dyn Resource>> = REGISTRY
        .iter()
        .filter(|e| e.stray)
        .flat_map(|e| (e.make)(env))
        .filter(|r| !wanted.iter().any(|w| w == r.key()) && state.get(r.key()).is_some())
        .collect();
    if let Some(rec) = state.get(THING_TYPE_RETIRED) {
        out.push(Box::new(thing_type::ThingType::retired(
            env.clone(),
            &rec.name,
        )));
    }
    // Job templates the config no longer has, by their records.
    for rec in &state.resources {
        if let Some(name) = rec.key.strip_prefix(jobs::TEMPLATE_PREFIX) {
            if env.d.jobs.template(name).is_none() {
                out.push(Box::new(jobs::RetiredTemplate::new(env.clone(), name)));
            }
        }
    }
    out
}

/// Everything `down` destroys: the configured stack and the strays.
pub fn everything(env: &Arc<Env>, state: &crate::state::State) -> Vec<Box<dyn Resource>> {
    let mut all = plan(env);
    all.extend(strays(env, state));
    // Jobs `iotreg job start` started: only `down` retires them (`up` never touches jobs).
    if state
        .resources
        .iter()
        .any(|r| r.key.starts_with(jobs::JOB_PREFIX))
    {
        all.push(Box::new(jobs::Started(env.clone())));
    }
    all
}

/// The name a resource is read by: the configured one, or, for one the config no longer wants
/// (a stray, only ever deleted), its record's.
pub fn name_to_read(configured: Option<&str>, cx: &crate::engine::Ctx, key: &str) -> String {
    match configured {
        Some(name) => name.to_string(),
        None => cx.record(key).map(|r| r.name).unwrap_or_default(),
    }
}

/// The failing checks of a resource that this state has no record of.
pub fn not_deployed(names: &[&str], resource: &str) -> Vec<crate::verify::Check> {
    names
        .iter()
        .map(|n| {
            crate::verify::Check::fail(n, resource, "not recorded in the state: run `iotreg up`")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::testing::harness;
    use super::*;

    /// Every shape of deployment: the one device with everything on, with monitoring and the
    /// shadow off, and a fleet.
    fn variants() -> Vec<Arc<Env>> {
        let everything_on = |d: &mut Deployment| {
            d.monitoring.enabled = true;
            d.monitoring.alert_email = Some("ops@example.com".into());
            d.shadow = Some(serde_json::json!({"state": {}}));
        };
        let fleet = move |d: &mut Deployment| {
            everything_on(d);
            d.fleet = Some(Arc::new(fleet::FleetSpec {
                devices: Some(vec![]),
                concurrency: 1,
                prune: false,
                per_device: fleet::PerDevice::Sample(fleet::DEFAULT_SAMPLE),
                connected_within: std::time::Duration::from_secs(3600),
            }));
            d.indexing = true;
        };
        let tweaks: [&dyn Fn(&mut Deployment); 3] = [&everything_on, &|_| {}, &fleet];
        tweaks
            .into_iter()
            .map(|t| harness(&[], &[], &[], &[], vec![], t).env)
            .collect()
    }

    /// Every key a resource can have, whatever the config: what a dependency may name.
    fn all_keys(env: &Arc<Env>) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = REGISTRY
            .iter()
            .flat_map(|e| (e.make)(env))
            .map(|r| r.key().to_string())
            .collect();
        keys.insert(THING_TYPE_RETIRED.into());
        keys
    }

    #[test]
    fn every_dependency_names_a_resource_and_the_graph_has_no_cycle() {
        for env in variants() {
            let known = all_keys(&env);
            let stacks = [plan(&env), device_plan(&env)];
            for stack in &stacks {
                for r in stack {
                    for dep in r.depends_on() {
                        assert!(
                            known.contains(*dep),
                            "{} depends on {dep:?}, which no resource is",
                            r.key()
                        );
                    }
                }
                // Kahn's algorithm over the dependencies within the stack: every step must
                // become ready, or some of them wait on each other.
                let keys: BTreeSet<&str> = stack.iter().map(|r| r.key()).collect();
                let mut waiting: BTreeMap<&str, BTreeSet<&str>> = stack
                    .iter()
                    .map(|r| {
                        let deps = r.depends_on().iter().copied();
                        (r.key(), deps.filter(|d| keys.contains(d)).collect())
                    })
                    .collect();
                while let Some(ready) = waiting
                    .iter()
                    .find(|(_, deps)| deps.is_empty())
                    .map(|(k, _)| *k)
                {
                    waiting.remove(ready);
                    for deps in waiting.values_mut() {
                        deps.remove(ready);
                    }
                }
                assert!(waiting.is_empty(), "a dependency cycle among {waiting:?}");
            }
        }
    }

    #[test]
    fn stacks_are_read_off_the_registry() {
        let envs = variants();
        let keys = |rs: Vec<Box<dyn Resource>>| -> Vec<String> {
            rs.iter().map(|r| r.key().to_string()).collect()
        };
        let single = keys(plan(&envs[0]));
        assert_eq!(
            single,
            [
                "thing_type",
                "thing",
                "certificate",
                "policy",
                "policy_attachment",
                "thing_principal",
                "role",
                "alert_topic",
                "alert_subscription",
                "alert_policy",
                "function",
                "rule",
                "permission",
                "shadow",
                "alarm_function_errors",
                "alarm_function_throttles",
                "alarm_rule_failures",
                "alarm_connect_auth_errors",
                "dashboard"
            ]
        );
        let bare = keys(plan(&envs[1]));
        assert_eq!(
            bare,
            [
                "thing_type",
                "thing",
                "certificate",
                "policy",
                "policy_attachment",
                "thing_principal",
                "role",
                "function",
                "rule",
                "permission"
            ]
        );
        let fleet = keys(plan(&envs[2]));
        assert!(fleet.contains(&"fleet".to_string()));
        assert!(!fleet.contains(&"thing".to_string()));
        assert_eq!(
            keys(device_plan(&envs[2])),
            [
                "thing",
                "certificate",
                "policy_attachment",
                "thing_principal",
                "shadow"
            ]
        );
    }

    #[test]
    fn what_the_config_dropped_is_a_stray_only_when_recorded() {
        let env = &variants()[1]; // monitoring and shadow off
        let mut state = crate::state::State::new("us-east-1", "123456789012", "abc123");
        assert!(strays(env, &state).is_empty());
        for key in [SHADOW, DASHBOARD, THING_TYPE_RETIRED] {
            state.put(crate::state::Record::new(
                key,
                key,
                crate::state::Phase::Created,
                "old",
            ));
        }
        let stray: Vec<String> = strays(env, &state)
            .iter()
            .map(|r| r.key().to_string())
            .collect();
        assert_eq!(stray, [SHADOW, DASHBOARD, THING_TYPE_RETIRED]);
    }
}
