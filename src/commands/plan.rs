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
    with_fleet(settings, &mut d, &state, true)?;
    let env = Arc::new(Env::new(session.clients, d));
    let wanted = resources::plan(&env);
    let strays = resources::strays(&env, &state);
    let cx = read_only_ctx(&state);
    let planned = compute_plan(&wanted, &strays, &cx, read_live, settings.verbosity >= 1).await?;
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
    show_all_errors: bool,
) -> Result<Vec<Planned>> {
    let results =
        futures_util::future::join_all(wanted.iter().map(|r| r.plan(cx, read_live))).await;
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(p) => planned.push(p),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(CannotPlan {
            errors,
            show_all: show_all_errors,
        }
        .into());
    }
    planned.extend(
        strays
            .iter()
            .filter_map(|r| engine::plan_delete(r.as_ref(), cx)),
    );
    Ok(planned)
}

/// Reads that failed while planning: one line each, the first few unless `-v`.
#[derive(Debug, thiserror::Error)]
pub struct CannotPlan {
    errors: Vec<String>,
    show_all: bool,
}

/// How many failed reads a plan lists without `-v`: when every read fails alike (no network,
/// a wrong endpoint), the first few say it all.
const FIRST_ERRORS: usize = 3;

impl fmt::Display for CannotPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.errors.as_slice() {
            return write!(f, "cannot plan: {only}");
        }
        write!(f, "cannot plan: {} reads failed:", self.errors.len())?;
        let shown = if self.show_all {
            self.errors.len()
        } else {
            FIRST_ERRORS
        };
        for e in self.errors.iter().take(shown) {
            write!(f, "\n  {e}")?;
        }
        if self.errors.len() > shown {
            write!(
                f,
                "\n  … and {} more (-v for all)",
                self.errors.len() - shown
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_failed_reads_show_the_first_few_and_a_count() {
        let errors: Vec<String> = (1..=17).map(|i| format!("read {i} failed")).collect();
        let text = CannotPlan {
            errors: errors.clone(),
            show_all: false,
        }
        .to_string();
        assert_eq!(
            text,
            "cannot plan: 17 reads failed:\n  read 1 failed\n  read 2 failed\n  read 3 failed\n  … and 14 more (-v for all)"
        );
        let all = CannotPlan {
            errors,
            show_all: true,
        }
        .to_string();
        assert_eq!(all.lines().count(), 18);
        assert!(!all.contains("more"));
        let one = CannotPlan {
            errors: vec!["thing \"t\": DescribeThing failed (HTTP 500)".into()],
            show_all: false,
        };
        assert_eq!(
            one.to_string(),
            "cannot plan: thing \"t\": DescribeThing failed (HTTP 500)"
        );
    }
}
