//! `iotreg plan`, and `up --dry-run`: read-only, no lock, nothing written locally either.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use super::{preflight, read_only_ctx, report, ExitStatus, Needs, Summary, Verdict};
use crate::deployment::{deployment, with_fleet};
use crate::engine::{self, Ctx, Resource};
use crate::output::Progress;
use crate::plan::{self, Planned};
use crate::resources::{self, Env};
use crate::settings::Settings;
use crate::state::State;

/// Shown instead of a suffix before the first `up` chooses one.
const NEW_SUFFIX: &str = "<new>";

pub async fn plan(
    settings: &Settings,
    progress: &Progress,
    detailed: bool,
    dry_run: bool,
) -> Result<ExitStatus> {
    let needs = Needs {
        lock: false,
        pinned_suffix: true,
    };
    let session = preflight(settings, needs, progress).await?;
    let (region, account) = (session.region, session.account);
    let deployed = session.state.is_some();
    let (state, read_live) = match session.state {
        Some(s) => (s, true),
        None => match &settings.config.suffix {
            Some(pinned) => (State::new(&region, &account, pinned), true),
            None => (State::new(&region, &account, NEW_SUFFIX), false),
        },
    };
    let mut d = deployment(settings, &state.suffix, &region, &account, false)?;
    with_fleet(settings, &mut d, &state, true, None)?;
    let env = Arc::new(Env {
        aws: session.clients,
        d,
    });
    let wanted = resources::plan(&env);
    let strays = resources::strays(&env, &state);
    let cx = read_only_ctx(settings, &state);
    let planned = compute_plan(&wanted, &strays, &cx, read_live).await?;
    let summary = PlanSummary {
        command: if dry_run { "up --dry-run" } else { "plan" },
        deployed,
        suffix: deployed.then(|| state.suffix.clone()),
        region: state.region.clone(),
        account,
        in_sync: !plan::has_changes(&planned),
        applicable: planned.iter().all(|p| p.applicable),
        counts: plan::counts(&planned),
        resources: planned,
        dry_run,
        detailed,
    };
    Ok(report(settings, &summary))
}

#[derive(Serialize)]
pub struct PlanSummary {
    command: &'static str,
    /// False when nothing is deployed yet (every resource is planned as create).
    deployed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<String>,
    region: String,
    account: String,
    in_sync: bool,
    /// False when up would refuse the plan (a conflict, a replace it does not do).
    applicable: bool,
    counts: BTreeMap<&'static str, usize>,
    resources: Vec<Planned>,
    #[serde(skip)]
    dry_run: bool,
    /// `--detailed-exitcode`: pending changes exit 3.
    #[serde(skip)]
    detailed: bool,
}

impl fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.suffix {
            Some(suffix) => format!("deployment {suffix}"),
            None => "new deployment".to_string(),
        };
        writeln!(
            f,
            "{} {what} in {} (account {}): {}",
            if self.dry_run {
                "up --dry-run:"
            } else {
                "plan:"
            },
            self.region,
            self.account,
            plan::summary(&self.resources)
        )?;
        f.write_str(&plan::render(&self.resources))?;
        if !self.applicable {
            writeln!(
                f,
                "up cannot carry out this plan as it stands: see the notes above (it would apply nothing)"
            )?;
        }
        if self.dry_run {
            writeln!(f, "nothing applied (--dry-run)")?;
        }
        Ok(())
    }
}

impl Summary for PlanSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: true,
            interrupted: false,
            changes_pending: self.detailed && !self.in_sync,
        }
    }
}

/// The plan of every wanted resource (read concurrently) and of every stray.
pub(super) async fn compute_plan(
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
