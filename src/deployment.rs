//! A deployment resolved from the settings: names with the suffix filled in, rendered
//! templates, the fleet. Moved unchanged from the former `app.rs`.

use std::sync::Arc;

use anyhow::Result;

use crate::aws;
use crate::keys::KeyFiles;
use crate::resources::monitoring::Monitoring;
use crate::resources::{
    self, CertificateSpec, Deployment, FunctionSpec, HookSpec, PolicySpec, ProvisioningSpec,
    RoleSpec, RuleSpec, ThingSpec, ThingTypeSpec,
};
use crate::retry::Backoff;
use crate::settings::{self, BadInput, Settings};
use crate::state::State;
use crate::templates;

/// Resolves names and renders templates for a suffix, region and account.
pub fn deployment(
    settings: &Settings,
    suffix: &str,
    region: &str,
    account: &str,
    wait_for_thing_type: bool,
) -> Result<Deployment> {
    let c = &settings.config;
    let vars = settings::template_vars(c, suffix, region, account);
    let bad = |e: templates::TemplateError| anyhow::Error::new(BadInput(e.to_string()));
    let t = &settings.templates;
    let handler_source = t.handler.text.clone();
    let zip = templates::lambda_zip(&c.function.handler_file, &handler_source).map_err(bad)?;
    let module = c
        .function
        .handler_file
        .strip_suffix(".py")
        .unwrap_or(&c.function.handler_file);
    let thing_name = settings::name(&c.thing.name, suffix);
    let check_name = |field: &str, value: &str| -> Result<()> {
        // Names were validated with a sample suffix; a pinned long suffix is re-checked here.
        if value.len() > 128 {
            return Err(BadInput(format!("{field}: {value:?} is too long")).into());
        }
        Ok(())
    };
    check_name("thing.name", &thing_name)?;
    let function_name = settings::name(&c.function.name, suffix);
    let rule_name = settings::name(&c.rule.name, suffix);
    let m = &c.monitoring;
    let topic_name = settings::name(&m.topic_name, suffix);
    let topic_arn = format!(
        "arn:{}:sns:{region}:{account}:{topic_name}",
        aws::partition(region)
    );
    let monitoring = Monitoring {
        enabled: m.enabled,
        alarms: resources::monitoring::alarms(&function_name, &rule_name, suffix, &topic_arn),
        topic_arn,
        topic_name,
        alert_email: m.alert_email.clone(),
        policy_name: resources::monitoring::POLICY_NAME.into(),
        dashboard_name: settings::name(&m.dashboard_name, suffix),
        dashboard_body: if m.enabled {
            t.dashboard.render_json(&vars).map_err(bad)?
        } else {
            serde_json::Value::Null
        },
    };
    let mut environment = c.function.environment.clone();
    if monitoring.enabled {
        environment.insert(
            crate::config::ALERT_TOPIC_VARIABLE.into(),
            monitoring.topic_arn.clone(),
        );
    }
    let group = c
        .fleet
        .group
        .as_ref()
        .map(|g| crate::resources::thing_group::GroupSpec {
            name: settings::name(g, suffix),
            description: format!("Devices of iotreg deployment {suffix}"),
            policy: c.policy.attach_to == crate::config::AttachTo::Group,
        });
    Ok(Deployment {
        group: group.clone(),
        suffix: suffix.to_string(),
        region: region.to_string(),
        account: account.to_string(),
        partition: aws::partition(region).to_string(),
        thing_type: ThingTypeSpec {
            name: c.thing_type.name.clone(),
            description: c.thing_type.description.clone(),
        },
        certificate: CertificateSpec {
            mode: c.certificate.mode,
            key_dir: settings.key_dir.clone(),
            key_files: KeyFiles::for_thing(&settings.key_dir, &thing_name),
            sweep_duplicates: true,
            csr: settings.csr.clone(),
        },
        thing: ThingSpec {
            name: thing_name,
            attributes: c.thing.attributes.clone(),
        },
        policy: PolicySpec {
            name: settings::name(&c.policy.name, suffix),
            document: settings.device_policy(&vars).map_err(bad)?,
            origin: match &c.policy.template {
                Some(file) => format!("the template {}", file.display()),
                None => format!("the built-in {} policy", c.policy.preset.as_str()),
            },
            preset: c.policy.template.is_none().then_some(c.policy.preset),
        },
        role: RoleSpec {
            name: settings::name(&c.role.name, suffix),
            trust_policy: t.trust.render_json(&vars).map_err(bad)?,
            managed_policies: c
                .role
                .managed_policies
                .iter()
                .map(|arn| in_partition(arn, region))
                .collect(),
            inline_policy: None,
        },
        function: FunctionSpec {
            name: function_name,
            description: c.function.description.clone(),
            runtime: c.function.runtime.clone(),
            memory_mb: c.function.memory_mb as i32,
            timeout_s: c.function.timeout_s as i32,
            handler: format!("{module}.lambda_handler"),
            environment,
            code_sha256: templates::code_sha256(&zip),
            zip,
        },
        rule: RuleSpec {
            name: rule_name,
            description: c.rule.description.clone(),
            sql: c.rule.sql.trim().to_string(),
            sql_version: c.rule.sql_version.clone(),
            enabled: c.rule.enabled,
        },
        shadow: if c.shadow.enabled {
            Some(t.shadow.render_json(&vars).map_err(bad)?)
        } else {
            None
        },
        provisioning: provisioning(settings, suffix, region, account, group.as_ref())?,
        analytics: if c.analytics.enabled {
            let zip = templates::lambda_zip(
                resources::analytics::DETECTOR_FILE,
                templates::ANOMALY_DETECTOR,
            )
            .map_err(bad)?;
            let partition = aws::partition(region);
            Some(resources::analytics::spec(
                &c.analytics,
                |pattern| settings::name(pattern, suffix),
                |service, resource| {
                    format!("arn:{partition}:{service}:{region}:{account}:{resource}")
                },
                &c.function.runtime,
                &monitoring.topic_arn,
                in_partition(crate::config::LAMBDA_BASIC_EXECUTION, region),
                zip,
            ))
        } else {
            None
        },
        iam_retry: Backoff::IAM_PROPAGATION,
        write_settle: std::time::Duration::from_secs_f64(c.aws.attempt_timeout_s),
        wait_for_thing_type,
        fleet: None,
        indexing: settings.config.fleet.indexing,
        jobs: Arc::new(resources::jobs::spec(
            &c.jobs,
            &c.job_templates,
            settings.job_files.as_deref(),
            suffix,
            region,
            account,
            aws::partition(region),
        )),
        bulk: Arc::new(resources::bulk::BulkSpec::new(
            c.fleet.mode == crate::config::FleetMode::Bulk,
            c.fleet.bulk_bucket.as_deref(),
            suffix,
            region,
            account,
            aws::partition(region),
        )),
        monitoring,
    })
}

/// An AWS-managed policy's ARN (written for the `aws` partition) in the region's partition.
fn in_partition(arn: &str, region: &str) -> String {
    arn.replacen("arn:aws:", &format!("arn:{}:", aws::partition(region)), 1)
}

/// AWS's managed policy for the role fleet provisioning assumes.
pub const THINGS_REGISTRATION: &str =
    "arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration";
/// The manifest column holding a device's serial number.
pub use crate::manifest::SERIAL_COLUMN;
/// The file in the hook's package listing the allowed serials.
pub const ALLOWED_FILE: &str = "allowed-serials.json";
const HOOK_FILE: &str = "provisioning_hook.py";

/// Claim provisioning, when configured: the template, its role, the claim policy and files,
/// and the hook with the manifest's serials.
fn provisioning(
    settings: &Settings,
    suffix: &str,
    region: &str,
    account: &str,
    group: Option<&crate::resources::thing_group::GroupSpec>,
) -> Result<Option<ProvisioningSpec>> {
    let c = &settings.config;
    let p = &c.provisioning;
    if p.mode != crate::config::ProvisioningMode::Claim {
        return Ok(None);
    }
    let partition = aws::partition(region);
    let template_name = settings::name(&p.template_name, suffix);
    let policy_name = settings::name(&c.policy.name, suffix);
    let hook = if p.hook {
        let serials = match &settings.fleet.manifest {
            Some(m) => allowed_serials(m)?,
            // `down` retires whatever the state records; it needs no allow-list.
            None if matches!(settings.action, settings::Action::Down { .. }) => vec![],
            None => return Err(BadInput(format!(
                "provisioning.mode = \"claim\" with the hook on needs the fleet manifest (fleet.manifest or --fleet FILE): its {SERIAL_COLUMN} column is the list of devices allowed to provision"
            ))
            .into()),
        };
        let allowed = serde_json::to_vec(&serde_json::json!({ "serials": serials }))?;
        let zip = crate::templates::lambda_zip_files(&[
            (HOOK_FILE, crate::templates::PROVISIONING_HOOK.as_bytes()),
            (ALLOWED_FILE, &allowed),
        ])
        .map_err(|e| BadInput(e.to_string()))?;
        Some(HookSpec {
            role: RoleSpec {
                name: settings::name(&p.hook_role_name, suffix),
                trust_policy: resources::role::trust_policy("lambda.amazonaws.com"),
                managed_policies: vec![in_partition(crate::config::LAMBDA_BASIC_EXECUTION, region)],
                inline_policy: None,
            },
            function: FunctionSpec {
                name: settings::name(&p.hook_function_name, suffix),
                description: "Allows fleet provisioning only for the manifest's serial numbers"
                    .into(),
                runtime: c.function.runtime.clone(),
                memory_mb: 128,
                // AWS fails the provisioning request when the hook takes longer than 5 s.
                timeout_s: 5,
                handler: "provisioning_hook.lambda_handler".into(),
                environment: Default::default(),
                code_sha256: crate::templates::code_sha256(&zip),
                zip,
            },
        })
    } else {
        None
    };
    Ok(Some(ProvisioningSpec {
        body: resources::provisioning_template::body(
            &template_name,
            &c.thing_type.name,
            &policy_name,
            group,
        ),
        description: "iotreg fleet provisioning by claim".into(),
        role: RoleSpec {
            name: settings::name(&p.role_name, suffix),
            trust_policy: resources::role::trust_policy("iot.amazonaws.com"),
            managed_policies: vec![in_partition(THINGS_REGISTRATION, region)],
            inline_policy: None,
        },
        claim_policy: PolicySpec {
            name: settings::name(&p.claim_policy_name, suffix),
            document: claim_policy(partition, region, account, &template_name),
            origin: "the built-in claim policy".into(),
            preset: None,
        },
        claim_files: resources::claim_certificate::files(&settings.key_dir),
        template_name,
        hook,
    }))
}

/// The claim certificate's policy, after AWS's example for fleet provisioning: connect, and
/// publish, subscribe and receive on the certificate and template topics only (exact
/// resources, so the claim can do nothing else).
pub fn claim_policy(
    partition: &str,
    region: &str,
    account: &str,
    template: &str,
) -> serde_json::Value {
    let arn =
        |kind: &str, topic: &str| format!("arn:{partition}:iot:{region}:{account}:{kind}/{topic}");
    let certificates = "$aws/certificates/create-from-csr/*";
    let provision = format!("$aws/provisioning-templates/{template}/provision/*");
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": arn("client", "*")
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [arn("topic", certificates), arn("topic", &provision)]
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [arn("topicfilter", certificates), arn("topicfilter", &provision)]
            }
        ]
    })
}

/// The manifest's serial numbers: every row must have one (the hook's allow-list, and the thing
/// a serial provisions as). That no two are the same the manifest itself checks.
pub fn allowed_serials(m: &crate::manifest::Manifest) -> Result<Vec<String>, BadInput> {
    let problems: Vec<String> = m
        .devices
        .iter()
        .filter(|d| d.attributes.get(SERIAL_COLUMN).is_none_or(|s| s.is_empty()))
        .map(|d| format!("device {} has no {SERIAL_COLUMN}", d.thing_name))
        .collect();
    if !problems.is_empty() {
        return Err(BadInput(format!(
            "the fleet manifest cannot serve claim provisioning: {}",
            problems.join("; ")
        )));
    }
    Ok(m.devices
        .iter()
        .filter_map(|d| d.attributes.get(SERIAL_COLUMN).cloned())
        .collect())
}

/// Puts the fleet, if any, into the deployment: the manifest's devices for `up` and `plan`
/// (`needs_manifest`), the state's for the others. A deployment with devices recorded is
/// never planned without its manifest: that would read as "delete the whole fleet".
pub fn with_fleet(
    settings: &Settings,
    d: &mut Deployment,
    state: &State,
    needs_manifest: bool,
) -> Result<()> {
    let f = &settings.fleet;
    if settings.config.provisioning.mode == crate::config::ProvisioningMode::Claim {
        // The manifest is the hook's allow-list: its devices provision themselves. A fleet
        // `up` made earlier is still retired by `down` (from the state).
        if state.devices.is_empty() {
            return Ok(());
        }
        if needs_manifest {
            return Err(BadInput(format!(
                "{} records a fleet of {} devices made by `up`; claim provisioning cannot take them over: run `iotreg down` first, or set provisioning.mode = \"none\"",
                settings.state,
                state.devices.len()
            ))
            .into());
        }
    }
    let claim = settings.config.provisioning.mode == crate::config::ProvisioningMode::Claim;
    let devices = match f.manifest.as_ref().filter(|_| !claim) {
        Some(m) => Some(m.devices.clone()),
        None if state.devices.is_empty() => return Ok(()),
        None if claim => None,
        None if needs_manifest => {
            return Err(BadInput(format!(
                "{} records a fleet of {} devices: pass its manifest with --fleet FILE (or set fleet.manifest); `down` needs none",
                settings.state,
                state.devices.len()
            ))
            .into())
        }
        None => None,
    };
    d.fleet = Some(Arc::new(resources::fleet::FleetSpec {
        devices,
        concurrency: f.concurrency,
        prune: f.prune,
        per_device: f.per_device,
        connected_within: f.connected_within,
    }));
    Ok(())
}

/// A new deployment's random suffix: six of [a-z0-9].
pub fn generate_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 6];
    getrandom::getrandom(&mut bytes).expect("OS randomness");
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}
