//! `iotreg up`: create or converge the stack (idempotent; resumes after a crash).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::plan::compute_plan;
use super::{counts, counts_text, lines, preflight, report, ExitStatus, Needs, Session};
use super::{Summary, Verdict};
use crate::cli::OutputFormat;
use crate::deployment::{deployment, generate_suffix, with_fleet};
use crate::engine::{self, Ctx, Direction, Outcome, Resource, StepReport};
use crate::output::{self, Progress, ResourceLine, Table};
use crate::plan::{self, Planned};
use crate::resources::{self, Env};
use crate::settings::{BadInput, Settings};
use crate::state::Store;
use crate::state::{self, Lock, State};

pub async fn up(
    settings: &Settings,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<ExitStatus> {
    let timer = output::Timer::start();
    let needs = Needs {
        lock: true,
        pinned_suffix: true,
    };
    let session = preflight(settings, needs, &progress).await?;
    if let Some(s3) = session.backend.s3() {
        check_bucket(settings, s3, &progress).await?;
    }
    let run = Run::start(settings, session, &progress, &cancel)?;

    // Plan: every wanted resource, and what the config no longer wants.
    let wanted = resources::plan(&run.env);
    let strays = resources::strays(&run.env, &run.store.snapshot());
    let verbose = settings.verbosity >= 1;
    let planned = compute_plan(&wanted, &strays, &run.cx, run.read_live, verbose).await?;
    if settings.output == OutputFormat::Text {
        output::print_text(&Preview(&planned));
    }

    // Guard: a plan with a step up cannot carry out is refused whole, before any change.
    refuse_blocked(&planned)?;

    let reports = run.apply(&wanted, &planned).await;
    // What waited for a later write is stored now.
    run.store.flush()?;

    let summary = run.summary(planned, reports, &timer, &progress).await;
    Ok(report(settings, &summary))
}

/// One `up` under way: the deployment, its store and context, and the lock held throughout.
struct Run {
    env: Arc<Env>,
    store: Arc<Store>,
    cx: Ctx,
    cancel: Arc<AtomicBool>,
    /// False for a deployment with nothing recorded and a fresh random suffix: it cannot
    /// exist yet, so only the shared thing type is worth looking up.
    read_live: bool,
    _lock: Option<Lock>,
}

impl Run {
    /// Chooses the suffix of a new deployment and saves the state before the first create, so
    /// even a crash in the first step keeps the suffix.
    fn start(
        settings: &Settings,
        mut session: Session,
        progress: &Arc<Progress>,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Run> {
        let (region, account) = (&session.region, &session.account);
        let mut fresh = false;
        let loaded = session.state.is_some();
        let state = match session.state.take() {
            Some(s) => s,
            None => {
                let suffix = match &settings.config.suffix {
                    Some(pinned) => pinned.clone(),
                    None => {
                        fresh = true;
                        generate_suffix()
                    }
                };
                State::new(region, account, &suffix)
            }
        };
        let mut d = deployment(settings, &state.suffix, region, account, false)?;
        with_fleet(settings, &mut d, &state, true)?;
        let dirs = [
            Some(settings.key_dir.as_path()),
            settings.state.local_path().and_then(|p| p.parent()),
        ];
        for dir in dirs.into_iter().flatten() {
            state::ensure_private_dir(dir)
                .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        }
        // Saved before the first create, so even a crash in the first step keeps the suffix. A
        // state just read from S3 is there already: writing it again would cost a request.
        if !(loaded && matches!(session.backend, state::Backend::S3(_))) {
            session.backend.save(&state)?;
        }
        progress.line(&format!(
            "iotreg up: deployment {} in {region} (account {account})",
            state.suffix
        ));
        let store = Arc::new(session.backend.store(state));
        let env = Arc::new(Env::new(session.clients, d));
        Ok(Run {
            env,
            cx: Ctx::new(store.clone(), progress.clone(), cancel.clone()),
            store,
            cancel: cancel.clone(),
            read_live: !fresh,
            _lock: session.lock,
        })
    }

    async fn apply(&self, wanted: &[Box<dyn Resource>], planned: &[Planned]) -> Vec<StepReport> {
        // A fleet's plan reads the fleet too (in pages, and its sample whole), so its "no
        // change" is as good a proof as a single device's.
        if !plan::has_changes(planned) {
            // In sync: the reads just made are the proof; nothing to write.
            return wanted
                .iter()
                .map(|r| StepReport {
                    key: r.key().to_string(),
                    kind: r.kind().to_string(),
                    name: r.name(),
                    result: Ok(Outcome::Unchanged),
                    elapsed: Duration::ZERO,
                })
                .collect();
        }
        let mut reports = engine::run(wanted, Direction::Up, &self.cx).await;
        // What the config no longer wants goes last, once the rest stands (the thing has left
        // a retired type, for one). Read again: a rename retires its type during the run.
        let strays = resources::strays(&self.env, &self.store.snapshot());
        if !strays.is_empty() && reports.iter().all(|r| r.result.is_ok()) {
            reports.extend(engine::run(&strays, Direction::Down, &self.cx).await);
        }
        reports
    }

    async fn summary(
        &self,
        planned: Vec<Planned>,
        reports: Vec<StepReport>,
        timer: &output::Timer,
        progress: &Progress,
    ) -> UpSummary {
        let d = &self.env.d;
        let ok = reports.iter().all(|r| r.result.is_ok());
        let data_endpoint = if ok {
            match self.env.aws.data_endpoint().await {
                Ok(e) => Some(e),
                Err(e) => {
                    progress.warn(&format!("could not look up the device data endpoint: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let final_state = self.store.snapshot();
        let resources = lines(&reports, &final_state);
        // The device's files, or with claim provisioning the claim's (what the factory needs).
        let key_files = match &d.provisioning {
            Some(p) => final_state
                .get(resources::CLAIM_CERTIFICATE)
                .map(|_| &p.claim_files),
            None => final_state
                .get(resources::CERTIFICATE)
                .map(|_| &d.certificate.key_files),
        };
        let files = key_files.map(|k| Files {
            certificate: k.certificate.display().to_string(),
            public_key: k.public_key.display().to_string(),
            private_key: k.private_key.display().to_string(),
        });
        UpSummary {
            command: "up",
            ok,
            region: d.region.clone(),
            account: d.account.clone(),
            suffix: d.suffix.clone(),
            plan: planned,
            counts: counts(&resources),
            resources,
            files,
            data_endpoint,
            elapsed: timer.elapsed(),
            interrupted: self.cancel.load(Ordering::SeqCst),
        }
    }
}

/// Reports what the state's bucket does to keep it safe; refuses one without versioning when
/// asked to (`--require-versioning`), before anything is written.
async fn check_bucket(settings: &Settings, s3: &state::S3State, progress: &Progress) -> Result<()> {
    let safety = s3.safety().await;
    let found = if safety.found.is_empty() {
        String::new()
    } else {
        format!(" ({})", safety.found.join(", "))
    };
    progress.line(&format!("state: {}{found}", settings.state));
    if settings.require_versioning && safety.versioning != Some(true) {
        let why = safety
            .warnings
            .first()
            .cloned()
            .unwrap_or_else(|| "versioning is off".into());
        return Err(BadInput(format!(
            "{}: --require-versioning: {why}; nothing was changed",
            settings.state
        ))
        .into());
    }
    for w in &safety.warnings {
        progress.warn(w);
    }
    Ok(())
}

/// Refuses the whole plan, applying nothing, when it has steps up cannot carry out.
fn refuse_blocked(planned: &[Planned]) -> Result<()> {
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
    Ok(())
}

/// The plan as text, printed before anything is applied.
struct Preview<'a>(&'a [Planned]);

impl fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan: {}", plan::summary(self.0))?;
        f.write_str(&plan::render(self.0))
    }
}

#[derive(Serialize)]
pub struct UpSummary {
    command: &'static str,
    ok: bool,
    region: String,
    account: String,
    suffix: String,
    plan: Vec<Planned>,
    resources: Vec<ResourceLine>,
    counts: BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Files>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_endpoint: Option<String>,
    #[serde(rename = "elapsed_ms", serialize_with = "output::millis")]
    elapsed: Duration,
    #[serde(skip)]
    interrupted: bool,
}

#[derive(Serialize)]
struct Files {
    certificate: String,
    public_key: String,
    private_key: String,
}

impl fmt::Display for UpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} deployment {} ({}, account {}): {} in {}",
            if self.ok { "up:" } else { "up FAILED:" },
            self.suffix,
            self.region,
            self.account,
            counts_text(&self.counts),
            output::fmt_duration(self.elapsed)
        )?;
        write!(f, "{}", Table(&self.resources))?;
        if let Some(files) = &self.files {
            writeln!(f, "certificate:   {}", files.certificate)?;
            writeln!(f, "public key:    {}", files.public_key)?;
            writeln!(f, "private key:   {}", files.private_key)?;
        }
        if let Some(e) = &self.data_endpoint {
            writeln!(f, "data endpoint: {e}")?;
        }
        Ok(())
    }
}

impl Summary for UpSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: self.ok,
            interrupted: self.interrupted,
            changes_pending: false,
        }
    }
}
