//! The commands: each turns settings into a deployment, runs the engine and reports.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::aws::{self, Clients};
use crate::cli::OutputFormat;
use crate::engine::{self, Ctx, Direction, Outcome, Resource, StepReport, Store};
use crate::keys::KeyFiles;
use crate::output::{self, Progress, ResourceLine};
use crate::plan::{self, Planned};
use crate::resources::monitoring::Monitoring;
use crate::resources::{self, Deployment, Env};
use crate::retry::Backoff;
use crate::settings::{self, Action, BadInput, Settings, VerifyOptions};
use crate::state::{self, Phase, State, StateLock};
use crate::templates;

/// The process exit status (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    Failure = 1,
    BadInput = 2,
    /// `plan --detailed-exitcode`: the deployment differs from the config.
    ChangesPending = 3,
    Interrupted = 130,
}

pub async fn run(settings: Settings, cancel: Arc<AtomicBool>) -> Result<ExitStatus> {
    crate::ratelimit::install(crate::ratelimit::Limiter::new(
        &settings.config.aws.rate_limits,
    ));
    let progress = Arc::new(Progress::new(settings.verbosity));
    if settings.verbosity >= 1 {
        let p = progress.clone();
        aws::show_failure_details(move |text| p.line(text));
    }
    match settings.action {
        Action::Up { dry_run: false } => up(&settings, progress, cancel).await,
        Action::Up { dry_run: true } => plan_command(&settings, false, true).await,
        Action::Plan { detailed_exitcode } => {
            plan_command(&settings, detailed_exitcode, false).await
        }
        Action::Down { wait } => down(&settings, progress, cancel, wait).await,
        Action::Status => status(&settings).await,
        Action::Verify(ref options) => verify(&settings, options).await,
    }
}

/// Loads the state, checking it belongs to this region; the account is checked once known.
fn load_state(settings: &Settings, region: &str) -> Result<Option<State>> {
    let state = state::load(&settings.state_path).map_err(bad_input_if)?;
    if let Some(s) = &state {
        s.check_region(&settings.state_path, region)
            .map_err(bad_input_if)?;
    }
    Ok(state)
}

/// Puts the fleet, if any, into the deployment: the manifest's devices for `up` and `plan`
/// (`needs_manifest`), the state's for the others. A deployment with devices recorded is
/// never planned without its manifest: that would read as "delete the whole fleet".
fn with_fleet(
    settings: &Settings,
    d: &mut Deployment,
    state: &State,
    needs_manifest: bool,
    sample: Option<usize>,
) -> Result<()> {
    let f = &settings.fleet;
    let devices = match &f.manifest {
        Some(m) => Some(m.devices.clone()),
        None if state.devices.is_empty() => return Ok(()),
        None if needs_manifest => {
            return Err(BadInput(format!(
                "{} records a fleet of {} devices: pass its manifest with --fleet FILE (or set fleet.manifest); `down` needs none",
                settings.state_path.display(),
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
        sample,
    }));
    Ok(())
}

/// A config that pins a suffix must agree with the state's.
fn check_pinned_suffix(settings: &Settings, state: Option<&State>) -> Result<()> {
    if let (Some(s), Some(pinned)) = (state, &settings.config.suffix) {
        if &s.suffix != pinned {
            return Err(BadInput(format!(
                "suffix: the config pins {pinned:?} but {} records {:?}; remove the pin or use another --state",
                settings.state_path.display(),
                s.suffix
            ))
            .into());
        }
    }
    Ok(())
}

fn bad_input_if(e: state::StateError) -> anyhow::Error {
    if e.is_bad_input() {
        anyhow::Error::new(BadInput(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

struct Session {
    clients: Clients,
    region: String,
}

async fn connect(settings: &Settings) -> Result<Session> {
    let sdk = aws::sdk_config(&settings.remote).await;
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
        BadInput(
            "no AWS region: pass --region, set AWS_REGION, or set a region in the AWS profile"
                .into(),
        )
    })?;
    Ok(Session {
        clients: Clients::new(&sdk),
        region,
    })
}

fn warn_if_previous_died(lock: &StateLock, progress: &Progress) {
    if let Some(pid) = &lock.previous_died {
        progress.warn(&format!(
            "a previous iotreg run (pid {pid}) ended without releasing its lock (killed or crashed); taking over and resuming from its state"
        ));
    }
}

fn generate_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 6];
    getrandom::getrandom(&mut bytes).expect("OS randomness");
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

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
    let monitoring = Monitoring {
        enabled: m.enabled,
        topic_arn: format!(
            "arn:{}:sns:{region}:{account}:{topic_name}",
            aws::partition(region)
        ),
        topic_name,
        alert_email: m.alert_email.clone(),
        policy_name: resources::monitoring::POLICY_NAME.into(),
        dashboard_name: settings::name(&m.dashboard_name, suffix),
        dashboard_body: if m.enabled {
            t.dashboard.render_json(&vars).map_err(bad)?
        } else {
            serde_json::Value::Null
        },
        alarms: resources::monitoring::alarms(&function_name, &rule_name),
    };
    let mut environment = c.function.environment.clone();
    if monitoring.enabled {
        environment.insert(
            crate::config::ALERT_TOPIC_VARIABLE.into(),
            monitoring.topic_arn.clone(),
        );
    }
    Ok(Deployment {
        suffix: suffix.to_string(),
        region: region.to_string(),
        account: account.to_string(),
        partition: aws::partition(region).to_string(),
        thing_type_name: c.thing_type.name.clone(),
        thing_type_description: c.thing_type.description.clone(),
        key_files: KeyFiles::for_thing(&settings.key_dir, &thing_name),
        thing_name,
        attributes: c.thing.attributes.clone(),
        certificate_mode: c.certificate.mode,
        key_dir: settings.key_dir.clone(),
        policy_name: settings::name(&c.policy.name, suffix),
        policy_document: t.policy.render_json(&vars).map_err(bad)?,
        role_name: settings::name(&c.role.name, suffix),
        trust_policy: t.trust.render_json(&vars).map_err(bad)?,
        managed_policies: c
            .role
            .managed_policies
            .iter()
            .map(|arn| arn.replacen("arn:aws:", &format!("arn:{}:", aws::partition(region)), 1))
            .collect(),
        function_name,
        function_description: c.function.description.clone(),
        runtime: c.function.runtime.clone(),
        memory_mb: c.function.memory_mb as i32,
        timeout_s: c.function.timeout_s as i32,
        handler: format!("{module}.lambda_handler"),
        environment,
        code_sha256: templates::code_sha256(&zip),
        zip,
        rule_name,
        rule_description: c.rule.description.clone(),
        rule_sql: c.rule.sql.trim().to_string(),
        rule_sql_version: c.rule.sql_version.clone(),
        rule_enabled: c.rule.enabled,
        shadow: if c.shadow.enabled {
            Some(t.shadow.render_json(&vars).map_err(bad)?)
        } else {
            None
        },
        iam_retry: Backoff::IAM_PROPAGATION,
        write_settle: std::time::Duration::from_secs_f64(c.aws.attempt_timeout_s),
        wait_for_thing_type,
        sweep_duplicates: true,
        fleet: None,
        monitoring,
    })
}

#[derive(Serialize)]
struct UpSummary<'a> {
    command: &'static str,
    ok: bool,
    region: &'a str,
    account: &'a str,
    suffix: &'a str,
    plan: &'a [Planned],
    resources: Vec<ResourceLine>,
    counts: std::collections::BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<FilesJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_endpoint: Option<String>,
    elapsed_ms: u128,
}

#[derive(Serialize)]
struct FilesJson {
    certificate: String,
    public_key: String,
    private_key: String,
}

fn lines(reports: &[StepReport], state: &State) -> Vec<ResourceLine> {
    reports
        .iter()
        .map(|r| ResourceLine {
            key: r.key.clone(),
            kind: r.kind.clone(),
            name: state
                .get(&r.key)
                .map(|rec| rec.name.clone())
                .unwrap_or_else(|| r.name.clone()),
            arn: state.get(&r.key).and_then(|rec| rec.arn.clone()),
            outcome: match &r.result {
                Ok(o) => o.label().to_string(),
                Err(_) => "failed".into(),
            },
            detail: match &r.result {
                Ok(o) => o.detail().map(str::to_string),
                Err(e) => Some(e.clone()),
            },
        })
        .collect()
}

fn counts(lines: &[ResourceLine]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        *m.entry(l.outcome.clone()).or_insert(0) += 1;
    }
    m
}

fn counts_text(c: &std::collections::BTreeMap<String, usize>) -> String {
    c.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn up(
    settings: &Settings,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<ExitStatus> {
    let timer = output::Timer::start();
    let session = connect(settings).await?;
    // Everything that can be refused locally is refused before the lock and any AWS call.
    let existing = load_state(settings, &session.region)?;
    check_pinned_suffix(settings, existing.as_ref())?;
    let _lock = StateLock::acquire(&settings.state_path)?;
    warn_if_previous_died(&_lock, &progress);
    // Re-read under the lock: another run may have changed it since.
    let existing = load_state(settings, &session.region)?;
    let account = session.clients.account().await?;
    if let Some(s) = &existing {
        s.check_account(&settings.state_path, &account)
            .map_err(bad_input_if)?;
    }
    // Some(()) when this run starts a deployment under a new random suffix.
    let mut fresh = None;
    let state = match existing {
        Some(s) => s,
        None => {
            let suffix = match &settings.config.suffix {
                Some(pinned) => pinned.clone(),
                None => {
                    fresh = Some(());
                    generate_suffix()
                }
            };
            State::new(&session.region, &account, &suffix)
        }
    };
    let mut d = deployment(settings, &state.suffix, &session.region, &account, false)?;
    with_fleet(settings, &mut d, &state, true, None)?;
    state::ensure_private_dir(&settings.key_dir)
        .with_context(|| format!("{}: cannot create directory", settings.key_dir.display()))?;
    if let Some(dir) = settings.state_path.parent() {
        state::ensure_private_dir(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    // Saved before the first create, so even a crash in the first step keeps the suffix.
    state::save(&settings.state_path, &state)?;
    progress.line(&format!(
        "iotreg up: deployment {} in {} (account {})",
        state.suffix, session.region, account
    ));
    let store = Arc::new(Store::new(settings.state_path.clone(), state));
    let env = Arc::new(Env {
        aws: session.clients,
        d,
    });
    let plan = resources::plan(&env);
    let strays = resources::strays(&env, &store.snapshot());
    let cx = Ctx::new(store.clone(), progress.clone(), cancel.clone());
    // A deployment with nothing recorded and a fresh random suffix cannot exist yet: only the
    // shared thing type is worth looking up.
    let read_live = fresh.is_none();
    let planned = compute_plan(&plan, &strays, &cx, read_live).await?;
    if settings.output == OutputFormat::Text {
        println!("plan: {}", plan::summary(&planned));
        print!("{}", plan::render(&planned));
    }
    let blocked: Vec<String> = planned
        .iter()
        .filter(|p| !p.applicable)
        .map(|p| {
            format!(
                "{} {}: {}",
                p.kind,
                p.name,
                p.note.as_deref().unwrap_or("cannot be applied")
            )
        })
        .collect();
    if !blocked.is_empty() {
        anyhow::bail!(
            "nothing applied: the plan has steps up cannot carry out:\n  {}",
            blocked.join("\n  ")
        );
    }
    // A fleet's plan compares the manifest with the state, not with every live device, so
    // "no change" proves nothing about drift there: with a fleet, up always runs its reads.
    let reports = if plan::has_changes(&planned) || env.d.fleet.is_some() {
        let mut reports = engine::run(&plan, Direction::Up, &cx).await;
        // What the config no longer wants goes last, once the rest stands (the thing has left
        // a retired type, for one). Read again: a rename retires its type during the run.
        let strays = resources::strays(&env, &store.snapshot());
        if !strays.is_empty() && reports.iter().all(|r| r.result.is_ok()) {
            reports.extend(engine::run(&strays, Direction::Down, &cx).await);
        }
        reports
    } else {
        // In sync: the reads just made are the proof; nothing to write.
        plan.iter()
            .map(|r| StepReport {
                key: r.key().to_string(),
                kind: r.kind().to_string(),
                name: r.name(),
                result: Ok(Outcome::Unchanged),
                elapsed: std::time::Duration::ZERO,
            })
            .collect()
    };
    let ok = reports.iter().all(|r| r.result.is_ok());
    let data_endpoint = if ok {
        match env.aws.data_endpoint().await {
            Ok(e) => Some(e),
            Err(e) => {
                progress.warn(&format!("could not look up the device data endpoint: {e}"));
                None
            }
        }
    } else {
        None
    };
    let final_state = store.snapshot();
    let resource_lines = lines(&reports, &final_state);
    let counts = counts(&resource_lines);
    let files = final_state.get(resources::CERTIFICATE).map(|_| FilesJson {
        certificate: env.d.key_files.certificate.display().to_string(),
        public_key: env.d.key_files.public_key.display().to_string(),
        private_key: env.d.key_files.private_key.display().to_string(),
    });
    match settings.output {
        OutputFormat::Json => output::print_json(&UpSummary {
            command: "up",
            ok,
            region: &env.d.region,
            account: &env.d.account,
            suffix: &env.d.suffix,
            plan: &planned,
            resources: resource_lines,
            counts,
            files,
            data_endpoint,
            elapsed_ms: timer.elapsed().as_millis(),
        }),
        OutputFormat::Text => {
            println!(
                "{} deployment {} ({}, account {}): {} in {}",
                if ok { "up:" } else { "up FAILED:" },
                env.d.suffix,
                env.d.region,
                env.d.account,
                counts_text(&counts),
                output::fmt_duration(timer.elapsed())
            );
            output::print_table(&resource_lines);
            if let Some(f) = files {
                println!("certificate:   {}", f.certificate);
                println!("public key:    {}", f.public_key);
                println!("private key:   {}", f.private_key);
            }
            if let Some(e) = data_endpoint {
                println!("data endpoint: {e}");
            }
        }
    }
    Ok(if cancel.load(std::sync::atomic::Ordering::SeqCst) {
        ExitStatus::Interrupted
    } else if ok {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

#[derive(Serialize)]
struct DownSummary<'a> {
    command: &'static str,
    ok: bool,
    suffix: &'a str,
    resources: Vec<ResourceLine>,
    remaining: Vec<String>,
    state_removed: bool,
}

async fn down(
    settings: &Settings,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    wait: bool,
) -> Result<ExitStatus> {
    let session = connect(settings).await?;
    load_state(settings, &session.region)?;
    let _lock = StateLock::acquire(&settings.state_path)?;
    warn_if_previous_died(&_lock, &progress);
    let Some(state) = load_state(settings, &session.region)? else {
        progress.line(&format!(
            "iotreg down: nothing to do ({} does not exist)",
            settings.state_path.display()
        ));
        if settings.output == OutputFormat::Json {
            output::print_json(&serde_json::json!({
                "command": "down", "ok": true, "resources": [], "remaining": [], "state_removed": false
            }));
        }
        _lock.remove_file();
        return Ok(ExitStatus::Success);
    };
    let account = session.clients.account().await?;
    state
        .check_account(&settings.state_path, &account)
        .map_err(bad_input_if)?;
    let mut d = deployment(settings, &state.suffix, &session.region, &account, wait)?;
    with_fleet(settings, &mut d, &state, false, None)?;
    progress.line(&format!(
        "iotreg down: deployment {} in {} (account {})",
        state.suffix, session.region, account
    ));
    let suffix = state.suffix.clone();
    let store = Arc::new(Store::new(settings.state_path.clone(), state));
    let env = Arc::new(Env {
        aws: session.clients,
        d,
    });
    // The configured stack and whatever else the state records (a stray shadow, a retired type).
    let plan = resources::everything(&env, &store.snapshot());
    let cx = Ctx::new(store.clone(), progress.clone(), cancel.clone());
    let reports = engine::run(&plan, Direction::Down, &cx).await;
    let left = store.snapshot();
    // Records of resources not in today's plan (e.g. shadow initialisation turned off since).
    let strays: Vec<String> = left
        .resources
        .iter()
        .filter(|r| !plan.iter().any(|p| p.key() == r.key))
        .map(|r| format!("{} {}", r.kind, r.name))
        .collect();
    let pending_only = left.resources.iter().all(|r| {
        (r.key == resources::THING_TYPE || r.key == resources::THING_TYPE_RETIRED)
            && r.phase != Phase::Intent
    }) && reports.iter().all(|r| r.result.is_ok());
    if left.get(resources::CERTIFICATE).is_none() {
        env.d.key_files.remove_all().with_context(|| {
            format!("cannot remove key files in {}", settings.key_dir.display())
        })?;
    }
    let state_removed = left.resources.is_empty();
    if state_removed {
        remove_local(settings, &_lock)?;
    }
    let resource_lines = lines(&reports, &left);
    let remaining: Vec<String> = left
        .resources
        .iter()
        .map(|r| format!("{} {}", r.kind, r.name))
        .chain(strays)
        .collect();
    let ok = state_removed || pending_only;
    match settings.output {
        OutputFormat::Json => output::print_json(&DownSummary {
            command: "down",
            ok,
            suffix: &suffix,
            resources: resource_lines,
            remaining: remaining.clone(),
            state_removed,
        }),
        OutputFormat::Text => {
            let c = counts(&resource_lines);
            println!(
                "{} deployment {suffix}: {}",
                if ok { "down:" } else { "down INCOMPLETE:" },
                counts_text(&c)
            );
            output::print_table(&resource_lines);
            if state_removed {
                println!("state and key files removed");
            } else {
                println!("still recorded in {}:", settings.state_path.display());
                for r in &remaining {
                    println!("  {r}");
                }
            }
        }
    }
    Ok(if cancel.load(std::sync::atomic::Ordering::SeqCst) {
        ExitStatus::Interrupted
    } else if ok {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// After a complete `down`: the state file, its lock, and the key directory if empty.
fn remove_local(settings: &Settings, lock: &StateLock) -> Result<()> {
    match std::fs::remove_file(&settings.state_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("{}: cannot remove", settings.state_path.display()))
        }
    }
    lock.remove_file();
    // Only the directory iotreg makes by default, and only when empty: a directory the user
    // named with --state or key_dir is theirs to keep.
    for dir in [
        Some(settings.key_dir.as_path()),
        settings.state_path.parent(),
    ]
    .into_iter()
    .flatten()
    {
        if dir.file_name() == Some(std::ffi::OsStr::new(".iotreg")) {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(())
}

/// What the read-only commands (status, verify) work with: the deployment resolved against
/// the live account, its plan, and a context over an in-memory copy of the state that is
/// never saved.
struct ReadOnly {
    env: Arc<Env>,
    plan: Vec<Box<dyn crate::engine::Resource>>,
    cx: Ctx,
    account: String,
}

async fn read_only(
    settings: &Settings,
    session: Session,
    state: &State,
    sample: Option<usize>,
) -> Result<ReadOnly> {
    let account = session.clients.account().await?;
    state
        .check_account(&settings.state_path, &account)
        .map_err(bad_input_if)?;
    let mut d = deployment(settings, &state.suffix, &session.region, &account, false)?;
    with_fleet(settings, &mut d, state, false, sample)?;
    let env = Arc::new(Env {
        aws: session.clients,
        d,
    });
    let plan = resources::plan(&env);
    let store = Arc::new(Store::new(settings.state_path.clone(), state.clone()));
    let cx = Ctx::new(
        store,
        Arc::new(Progress::new(-1)),
        Arc::new(AtomicBool::new(false)),
    );
    Ok(ReadOnly {
        env,
        plan,
        cx,
        account,
    })
}

#[derive(Serialize)]
struct StatusJson<'a> {
    command: &'static str,
    deployed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<&'a str>,
    resources: Vec<ResourceLine>,
}

async fn status(settings: &Settings) -> Result<ExitStatus> {
    let session = connect(settings).await?;
    let Some(state) = load_state(settings, &session.region)? else {
        match settings.output {
            OutputFormat::Json => output::print_json(&StatusJson {
                command: "status",
                deployed: false,
                suffix: None,
                resources: vec![],
            }),
            OutputFormat::Text => println!(
                "nothing deployed ({} does not exist)",
                settings.state_path.display()
            ),
        }
        return Ok(ExitStatus::Success);
    };
    let ReadOnly { plan, cx, .. } = read_only(settings, session, &state, None).await?;
    let probes = futures_util::future::join_all(plan.iter().map(|r| r.probe(&cx))).await;
    let mut all_present = true;
    let resource_lines: Vec<ResourceLine> = plan
        .iter()
        .zip(probes)
        .map(|(r, p)| {
            let rec = state.get(r.key());
            let (outcome, detail, arn) = match p {
                Ok(Some(arn)) => ("present".to_string(), None, Some(arn)),
                Ok(None) => {
                    all_present = false;
                    ("missing".to_string(), None, rec.and_then(|r| r.arn.clone()))
                }
                Err(e) => {
                    all_present = false;
                    ("unknown".to_string(), Some(e.to_string()), None)
                }
            };
            let detail = detail.or_else(|| match rec.map(|r| r.phase) {
                None => Some("not in state".into()),
                Some(Phase::Intent) => Some("create was interrupted; run `iotreg up`".into()),
                Some(Phase::Borrowed) => Some("shared; not owned by this deployment".into()),
                Some(Phase::Created) => rec
                    .and_then(|r| r.data_str("deletable_after"))
                    .map(|t| format!("deprecated; deletable after {t}")),
            });
            ResourceLine {
                key: r.key().to_string(),
                kind: r.kind().to_string(),
                name: r.name(),
                arn,
                outcome,
                detail,
            }
        })
        .collect();
    match settings.output {
        OutputFormat::Json => output::print_json(&StatusJson {
            command: "status",
            deployed: true,
            suffix: Some(&state.suffix),
            resources: resource_lines,
        }),
        OutputFormat::Text => {
            println!(
                "deployment {} ({}, account {}){}",
                state.suffix,
                state.region,
                state.account,
                if all_present { "" } else { ": incomplete" }
            );
            output::print_table(&resource_lines);
        }
    }
    Ok(ExitStatus::Success)
}

#[derive(Serialize)]
struct VerifyJson<'a> {
    command: &'static str,
    ok: bool,
    suffix: &'a str,
    passed: usize,
    failed: usize,
    skipped: usize,
    checks: &'a [crate::verify::Timed],
}

async fn verify(settings: &Settings, options: &VerifyOptions) -> Result<ExitStatus> {
    use crate::engine::{Check, CheckStatus};
    let timer = output::Timer::start();
    let session = connect(settings).await?;
    let Some(state) = load_state(settings, &session.region)? else {
        return Err(BadInput(format!(
            "nothing deployed: {} does not exist; run `iotreg up` first",
            settings.state_path.display()
        ))
        .into());
    };
    let ReadOnly {
        env,
        plan,
        cx,
        account,
    } = read_only(settings, session, &state, options.sample).await?;
    let progress = Progress::new(settings.verbosity);
    progress.line(&format!(
        "iotreg verify: deployment {} in {} (account {})",
        state.suffix, state.region, account
    ));
    let mut checks = crate::verify::resource_checks(&plan, &cx).await;
    let e2e_started = std::time::Instant::now();
    let e2e = if options.skip_e2e {
        let mut skipped = vec![Check::skip(
            crate::verify::E2E,
            "data path",
            "skipped with --skip-e2e",
        )];
        if env.d.monitoring.enabled {
            skipped.push(Check::skip(
                crate::verify::E2E_ALERT,
                "alert",
                "skipped with --skip-e2e",
            ));
        }
        skipped
    } else {
        progress.line(&format!(
            "  … publishing a test reading and waiting up to {}s for it in the function's log",
            options.timeout.as_secs_f64()
        ));
        crate::verify::data_path(&env, options.timeout).await
    };
    let seconds = e2e_started.elapsed().as_secs_f64() / e2e.len() as f64;
    checks.extend(
        e2e.into_iter()
            .map(|check| crate::verify::Timed { check, seconds }),
    );
    let count = |s: CheckStatus| checks.iter().filter(|c| c.check.status == s).count();
    let (passed, failed, skipped) = (
        count(CheckStatus::Pass),
        count(CheckStatus::Fail),
        count(CheckStatus::Skip),
    );
    if let Some(path) = &options.junit {
        let xml = crate::verify::junit(&state.suffix, &checks, timer.elapsed());
        crate::verify::write_junit(path, &xml)
            .with_context(|| format!("{}: cannot write JUnit report", path.display()))?;
    }
    match settings.output {
        OutputFormat::Json => output::print_json(&VerifyJson {
            command: "verify",
            ok: failed == 0,
            suffix: &state.suffix,
            passed,
            failed,
            skipped,
            checks: &checks,
        }),
        OutputFormat::Text => {
            println!(
                "verify {} deployment {} ({}, account {}): {passed} passed, {failed} failed, {skipped} skipped",
                if failed == 0 { "OK:" } else { "FAILED:" },
                state.suffix,
                state.region,
                account
            );
            output::print_checks(&checks);
        }
    }
    Ok(if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// The plan of every wanted resource (read concurrently) and of every stray.
async fn compute_plan(
    wanted: &[Box<dyn Resource>],
    strays: &[Box<dyn Resource>],
    cx: &Ctx,
    read_live: bool,
) -> Result<Vec<Planned>> {
    let results = futures_util::future::join_all(
        wanted
            .iter()
            .map(|r| engine::plan_one(r.as_ref(), cx, read_live)),
    )
    .await;
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(p) => planned.push(p),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("cannot plan: {}", errors.join("; "));
    }
    planned.extend(
        strays
            .iter()
            .filter_map(|r| engine::plan_delete(r.as_ref(), cx)),
    );
    Ok(planned)
}

#[derive(Serialize)]
struct PlanJson<'a> {
    command: &'static str,
    /// False when nothing is deployed yet (every resource is planned as create).
    deployed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<&'a str>,
    region: &'a str,
    account: &'a str,
    in_sync: bool,
    /// False when up would refuse the plan (a conflict, a replace it does not do).
    applicable: bool,
    counts: std::collections::BTreeMap<&'static str, usize>,
    resources: &'a [Planned],
}

/// Shown instead of a suffix before the first `up` chooses one.
const NEW_SUFFIX: &str = "<new>";

/// `plan`, and `up --dry-run`: read-only, no lock, nothing written locally either.
async fn plan_command(settings: &Settings, detailed: bool, dry_run: bool) -> Result<ExitStatus> {
    let session = connect(settings).await?;
    let existing = load_state(settings, &session.region)?;
    check_pinned_suffix(settings, existing.as_ref())?;
    let account = session.clients.account().await?;
    if let Some(s) = &existing {
        s.check_account(&settings.state_path, &account)
            .map_err(bad_input_if)?;
    }
    let deployed = existing.is_some();
    let (state, read_live) = match existing {
        Some(s) => (s, true),
        None => match &settings.config.suffix {
            Some(pinned) => (State::new(&session.region, &account, pinned), true),
            None => (State::new(&session.region, &account, NEW_SUFFIX), false),
        },
    };
    let mut d = deployment(settings, &state.suffix, &session.region, &account, false)?;
    with_fleet(settings, &mut d, &state, true, None)?;
    let env = Arc::new(Env {
        aws: session.clients,
        d,
    });
    let wanted = resources::plan(&env);
    let strays = resources::strays(&env, &state);
    let store = Arc::new(Store::new(settings.state_path.clone(), state.clone()));
    let cx = Ctx::new(
        store,
        Arc::new(Progress::new(-1)),
        Arc::new(AtomicBool::new(false)),
    );
    let planned = compute_plan(&wanted, &strays, &cx, read_live).await?;
    let in_sync = !plan::has_changes(&planned);
    let applicable = planned.iter().all(|p| p.applicable);
    match settings.output {
        OutputFormat::Json => output::print_json(&PlanJson {
            command: if dry_run { "up --dry-run" } else { "plan" },
            deployed,
            suffix: deployed.then_some(state.suffix.as_str()),
            region: &state.region,
            account: &account,
            in_sync,
            applicable,
            counts: plan::counts(&planned),
            resources: &planned,
        }),
        OutputFormat::Text => {
            let what = if deployed {
                format!("deployment {}", state.suffix)
            } else {
                "new deployment".to_string()
            };
            println!(
                "{} {what} in {} (account {account}): {}",
                if dry_run { "up --dry-run:" } else { "plan:" },
                state.region,
                plan::summary(&planned)
            );
            print!("{}", plan::render(&planned));
            if !applicable {
                println!(
                    "up cannot carry out this plan as it stands: see the notes above (it would apply nothing)"
                );
            }
            if dry_run {
                println!("nothing applied (--dry-run)");
            }
        }
    }
    Ok(if detailed && !in_sync {
        ExitStatus::ChangesPending
    } else {
        ExitStatus::Success
    })
}
