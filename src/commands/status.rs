//! `iotreg status`: each resource of the deployment and whether it exists. Read-only.

use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::{preflight_deployed, read_only, report, ExitStatus, Needs, ReadOnly};
use super::{Summary, Verdict};
use crate::output::{Progress, ResourceLine, Table};
use crate::settings::Settings;
use crate::state::Phase;

pub async fn status(settings: &Settings, progress: &Progress) -> Result<ExitStatus> {
    let needs = Needs {
        lock: false,
        pinned_suffix: false,
    };
    let Some((session, state)) = preflight_deployed(settings, needs, progress).await? else {
        return Ok(report(
            settings,
            &StatusSummary {
                command: "status",
                deployed: false,
                suffix: None,
                resources: vec![],
                state_path: settings.state.label(),
                region: String::new(),
                account: String::new(),
                all_present: false,
            },
        ));
    };
    let ReadOnly { plan, cx, .. } = read_only(settings, session, &state)?;
    let probes = futures_util::future::join_all(plan.iter().map(|r| r.probe(&cx))).await;
    let mut all_present = true;
    let resources: Vec<ResourceLine> = plan
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
    let summary = StatusSummary {
        command: "status",
        deployed: true,
        suffix: Some(state.suffix.clone()),
        resources,
        state_path: settings.state.label(),
        region: state.region.clone(),
        account: state.account.clone(),
        all_present,
    };
    Ok(report(settings, &summary))
}

#[derive(Serialize)]
pub struct StatusSummary {
    command: &'static str,
    deployed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    suffix: Option<String>,
    resources: Vec<ResourceLine>,
    #[serde(skip)]
    state_path: PathBuf,
    #[serde(skip)]
    region: String,
    #[serde(skip)]
    account: String,
    #[serde(skip)]
    all_present: bool,
}

impl fmt::Display for StatusSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(suffix) = &self.suffix else {
            return writeln!(
                f,
                "nothing deployed ({} does not exist)",
                self.state_path.display()
            );
        };
        writeln!(
            f,
            "deployment {suffix} ({}, account {}){}",
            self.region,
            self.account,
            if self.all_present { "" } else { ": incomplete" }
        )?;
        write!(f, "{}", Table(&self.resources))
    }
}

impl Summary for StatusSummary {
    /// Status reports; a missing resource is what it shows, not a failure of the command.
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: true,
            ..Verdict::default()
        }
    }
}
