//! `iotreg down`: tear the stack down in reverse order.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{counts, counts_text, lines, preflight_deployed, report, ExitStatus, Needs};
use super::{Summary, Verdict};
use crate::deployment::{deployment, with_fleet};
use crate::engine::{self, Ctx, Direction};
use crate::output::{Progress, ResourceLine, Table};
use crate::resources::{self, Env};
use crate::settings::Settings;
use crate::state::{Lock, Phase};

pub async fn down(
    settings: &Settings,
    progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    wait: bool,
) -> Result<ExitStatus> {
    let needs = Needs {
        lock: true,
        pinned_suffix: false,
    };
    let Some((session, state)) = preflight_deployed(settings, needs, &progress).await? else {
        progress.line(&format!(
            "iotreg down: nothing to do ({} does not exist)",
            settings.state
        ));
        return Ok(report(settings, &DownSummary::nothing_to_do()));
    };
    let (lock, backend) = (session.lock, session.backend);
    let (region, account) = (&session.region, &session.account);
    let mut d = deployment(settings, &state.suffix, region, account, wait)?;
    with_fleet(settings, &mut d, &state, false)?;
    progress.line(&format!(
        "iotreg down: deployment {} in {region} (account {account})",
        state.suffix
    ));
    let suffix = state.suffix.clone();
    let store = Arc::new(backend.store(state));
    let env = Arc::new(Env::new(session.clients, d));
    // The configured stack and whatever else the state records (a stray shadow, a retired type).
    let plan = resources::everything(&env, &store.snapshot());
    let cx = Ctx::new(store.clone(), progress.clone(), cancel.clone());
    let reports = engine::run(&plan, Direction::Down, &cx).await;
    // What waited for a later write is stored now (before the state is removed, if it is).
    store.flush()?;
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
        env.d.certificate.key_files.remove_all().with_context(|| {
            format!("cannot remove key files in {}", settings.key_dir.display())
        })?;
    }
    if left.get(resources::CLAIM_CERTIFICATE).is_none() {
        resources::claim_certificate::files(&settings.key_dir)
            .remove_all()
            .with_context(|| {
                format!(
                    "cannot remove claim key files in {}",
                    settings.key_dir.display()
                )
            })?;
    }
    let state_removed = left.resources.is_empty();
    if state_removed {
        backend.remove().await?;
        remove_local(settings, lock)?;
    }
    let remaining = left
        .resources
        .iter()
        .map(|r| format!("{} {}", r.kind, r.name))
        .chain(strays)
        .collect();
    let summary = DownSummary {
        command: "down",
        ok: state_removed || pending_only,
        suffix: Some(suffix),
        resources: lines(&reports, &left),
        remaining,
        state_removed,
        state_path: settings.state.label(),
        interrupted: cancel.load(Ordering::SeqCst),
    };
    Ok(report(settings, &summary))
}

/// After a complete `down`, the state removed: its lock, and the key directory if empty.
fn remove_local(settings: &Settings, lock: Option<Lock>) -> Result<()> {
    match lock {
        Some(Lock::Local(lock)) => lock.remove_file(),
        // Released now, so that a failure to release is reported.
        Some(lock) => lock.release()?,
        None => {}
    }
    // Only the directory iotreg makes by default, and only when empty: a directory the user
    // named with --state or key_dir is theirs to keep.
    for dir in [
        Some(settings.key_dir.as_path()),
        settings.state.local_path().and_then(|p| p.parent()),
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

#[derive(Serialize)]
pub struct DownSummary {
    command: &'static str,
    ok: bool,
    /// None when nothing was deployed: then the text output is empty (stderr says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<String>,
    resources: Vec<ResourceLine>,
    remaining: Vec<String>,
    state_removed: bool,
    #[serde(skip)]
    state_path: PathBuf,
    #[serde(skip)]
    interrupted: bool,
}

impl DownSummary {
    fn nothing_to_do() -> DownSummary {
        DownSummary {
            command: "down",
            ok: true,
            suffix: None,
            resources: vec![],
            remaining: vec![],
            state_removed: false,
            state_path: PathBuf::new(),
            interrupted: false,
        }
    }
}

impl fmt::Display for DownSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(suffix) = &self.suffix else {
            return Ok(());
        };
        writeln!(
            f,
            "{} deployment {suffix}: {}",
            if self.ok { "down:" } else { "down INCOMPLETE:" },
            counts_text(&counts(&self.resources))
        )?;
        write!(f, "{}", Table(&self.resources))?;
        if self.state_removed {
            writeln!(f, "state and key files removed")?;
        } else {
            writeln!(f, "still recorded in {}:", self.state_path.display())?;
            for r in &self.remaining {
                writeln!(f, "  {r}")?;
            }
        }
        Ok(())
    }
}

impl Summary for DownSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: self.ok,
            interrupted: self.interrupted,
            changes_pending: false,
        }
    }
}
