//! The commands, one module each. What they share lives here: the exit status and the one
//! place it is decided, the preflight every command starts with (state, connection, checks,
//! lock, account), and the printing of a command's summary as text or JSON.

pub mod device;
pub mod down;
pub mod job;
pub mod plan;
pub mod state;
pub mod status;
pub mod up;
pub mod verify;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use crate::aws::{self, AwsFailure, Clients, CredentialsProblem};
use crate::deployment::{deployment, with_fleet};
use crate::engine::{Ctx, Resource, StepError, StepReport};
use crate::output::{self, Progress, ResourceLine};
use crate::resources::{self, Env};
use crate::settings::{Action, BadInput, Settings};
use crate::state::Store;
use crate::state::{Backend, Location, Lock, State, StateError};

/// The process exit status: 0 success, 1 an operation failed, 2 bad input (nothing changed),
/// 3 changes pending (`plan --detailed-exitcode`), 130 interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    Failure = 1,
    BadInput = 2,
    /// `plan --detailed-exitcode`: the deployment differs from the config.
    ChangesPending = 3,
    Interrupted = 130,
}

/// How a command that ran to its end came out, as its summary tells it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verdict {
    pub ok: bool,
    /// A Ctrl-C stopped the run before everything was done (up and down watch for it).
    pub interrupted: bool,
    /// Only `plan --detailed-exitcode` reports pending changes.
    pub changes_pending: bool,
}

impl ExitStatus {
    /// The one place a run's outcome becomes an exit status: an interruption outranks a
    /// failure, which outranks pending changes.
    pub fn of(v: Verdict) -> ExitStatus {
        if v.interrupted {
            ExitStatus::Interrupted
        } else if !v.ok {
            ExitStatus::Failure
        } else if v.changes_pending {
            ExitStatus::ChangesPending
        } else {
            ExitStatus::Success
        }
    }

    /// A run that ended in an error: the user's input (nothing was changed), or a failure.
    pub fn of_error(e: &anyhow::Error) -> ExitStatus {
        if e.downcast_ref::<BadInput>().is_some() {
            ExitStatus::BadInput
        } else {
            ExitStatus::Failure
        }
    }
}

/// What a command prints on stdout when it is done: `Display` is the text output,
/// `Serialize` the JSON output (`--output json`).
pub trait Summary: fmt::Display + Serialize {
    fn verdict(&self) -> Verdict;
}

/// Prints the summary in the chosen format and returns the exit status it stands for.
pub fn report(settings: &Settings, summary: &impl Summary) -> ExitStatus {
    output::print(settings.output, summary);
    ExitStatus::of(summary.verdict())
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
        Action::Up { dry_run: false } => up::up(&settings, progress, cancel).await,
        Action::Up { dry_run: true } => plan::plan(&settings, &progress, false, true).await,
        Action::Plan { detailed_exitcode } => {
            plan::plan(&settings, &progress, detailed_exitcode, false).await
        }
        Action::Down { wait } => down::down(&settings, progress, cancel, wait).await,
        Action::Status => status::status(&settings, &progress).await,
        Action::Verify(ref options) => verify::verify(&settings, &progress, options).await,
        Action::Device(ref action) => device::run(&settings, &progress, action).await,
        Action::Job(ref action) => job::run(&settings, progress.clone(), action).await,
        Action::State(ref action) => state::run(&settings, &progress, action).await,
        Action::ForceUnlock { ref lock_id, yes } => {
            state::force_unlock(&settings, lock_id, yes).await
        }
    }
}

/// What a command asks of the preflight.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// Hold the state lock for the whole run (the commands that change things).
    pub lock: bool,
    /// Refuse a config that pins a suffix other than the state's (the commands that plan).
    pub pinned_suffix: bool,
}

/// A command's connection to AWS, with the state read and checked against it.
pub struct Session {
    /// The AWS configuration it was made with (for a second backend: `state migrate`).
    pub sdk: aws_types::SdkConfig,
    pub clients: Clients,
    pub region: String,
    pub account: String,
    /// Where the state is read and written.
    pub backend: Backend,
    /// The state as read (under the lock, when one is held).
    pub state: Option<State>,
    /// Held until dropped; `None` for the read-only commands.
    pub lock: Option<Lock>,
}

/// The preflight of `up` and `plan`, which work with or without a recorded deployment.
pub async fn preflight(settings: &Settings, needs: Needs, progress: &Progress) -> Result<Session> {
    let state = read_local_state(settings)?;
    checked_session(settings, state, needs, progress).await
}

/// The preflight of `down`, `status` and `verify`, which work on a recorded deployment:
/// `None` when there is none. For a local state that is known from the file alone, so then
/// nothing is asked of AWS (nor of the user: no region is needed) and nothing is written.
pub async fn preflight_deployed(
    settings: &Settings,
    needs: Needs,
    progress: &Progress,
) -> Result<Option<(Session, State)>> {
    let state = read_local_state(settings)?;
    if state.is_none() && matches!(settings.state, Location::Local(_)) {
        return Ok(None);
    }
    let mut session = checked_session(settings, state, needs, progress).await?;
    Ok(match session.state.take() {
        Some(state) => Some((session, state)),
        None => {
            // Removed under our feet by another run's `down` (or, in S3, never there).
            if let Some(Lock::Local(lock)) = &session.lock {
                lock.remove_file();
            }
            None
        }
    })
}

/// The AWS configuration a command starts from, and the region it works in.
pub async fn connect(settings: &Settings) -> Result<(aws_types::SdkConfig, String)> {
    let sdk = aws::sdk_config(&settings.remote).await;
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
        BadInput(
            "no AWS region: pass --region, set AWS_REGION, or set a region in the AWS profile"
                .into(),
        )
    })?;
    Ok((sdk, region))
}

/// The backend of the configured state, on this connection.
pub fn open_backend(settings: &Settings, sdk: &aws_types::SdkConfig) -> Backend {
    Backend::open(&settings.state, sdk, settings.remote.endpoint_url.is_some())
}

/// Reads the state through `backend`, the user's input errors as such (exit 2): for a state
/// in S3 that includes missing credentials, said as for any other first call.
pub async fn load_state(settings: &Settings, backend: &Backend) -> Result<Option<State>> {
    match backend.load().await {
        Err(StateError::Aws(f)) if f.is_credentials_problem() => {
            Err(BadInput(credentials_problem(settings, &f)).into())
        }
        r => r.map_err(bad_input_if),
    }
}

/// Takes the state's lock for `command`, saying so when an earlier local holder died.
pub async fn take_lock(backend: &Backend, command: &str, progress: &Progress) -> Result<Lock> {
    // A missing bucket shows here first when the lock comes before any read.
    let lock = backend.lock(command).await.map_err(bad_input_if)?;
    if let Some(pid) = lock.previous_died() {
        progress.warn(&format!(
            "a previous iotreg run (pid {pid}) ended without releasing its lock (killed or crashed); taking over and resuming from its state"
        ));
    }
    Ok(lock)
}

/// Connect → region check → pinned suffix → account → lock (and read again, and check again)
/// → account check. A state in S3 is read once connected: before the lock by the commands
/// that take none, only under it by those that do. Everything that can be refused locally, or with the one read that
/// learns the account, is refused before the lock: a refused run leaves no `.iotreg/` behind.
async fn checked_session(
    settings: &Settings,
    state: Option<State>,
    needs: Needs,
    progress: &Progress,
) -> Result<Session> {
    let (sdk, region) = connect(settings).await?;
    let clients = Clients::new(&sdk);
    let backend = open_backend(settings, &sdk);
    let state = match &backend {
        Backend::Local(_) => state,
        // Read once, under the lock, below: a read before it would cost two more requests.
        Backend::S3(_) if needs.lock => None,
        Backend::S3(_) => load_state(settings, &backend).await?,
    };
    check_region(settings, state.as_ref(), &region)?;
    if needs.pinned_suffix {
        check_pinned_suffix(settings, state.as_ref())?;
    }
    let account = account(settings, &clients).await?;
    let (state, lock) = if needs.lock {
        let lock = take_lock(&backend, settings.action.name(), progress).await?;
        // Read again under the lock: another run may have changed it since.
        let state = load_state(settings, &backend).await?;
        check_region(settings, state.as_ref(), &region)?;
        if needs.pinned_suffix {
            check_pinned_suffix(settings, state.as_ref())?;
        }
        (state, Some(lock))
    } else {
        (state, None)
    };
    if let Some(s) = &state {
        s.check_account(&settings.state.label(), &account)
            .map_err(bad_input_if)?;
    }
    Ok(Session {
        sdk,
        clients,
        region,
        account,
        backend,
        state,
        lock,
    })
}

/// The state as it stands, no lock taken, for the commands that read it without a session
/// (`state list|show|pull`, the device commands): a local one without AWS, one in S3 over a
/// connection made for it.
pub async fn read_unlocked(settings: &Settings) -> Result<Option<State>> {
    match &settings.state {
        Location::Local(_) => read_local_state(settings),
        Location::S3(_) => {
            let (sdk, _) = connect(settings).await?;
            load_state(settings, &open_backend(settings, &sdk)).await
        }
    }
}

/// The local state file, read before anything is asked of AWS; None for S3 (read once
/// connected) or when there is no file.
fn read_local_state(settings: &Settings) -> Result<Option<State>> {
    match &settings.state {
        Location::Local(p) => crate::state::load(p).map_err(bad_input_if),
        Location::S3(_) => Ok(None),
    }
}

/// A state belongs to the region it was made in.
fn check_region(settings: &Settings, state: Option<&State>, region: &str) -> Result<()> {
    if let Some(s) = state {
        s.check_region(&settings.state.label(), region)
            .map_err(bad_input_if)?;
    }
    Ok(())
}

/// A config that pins a suffix must agree with the state's.
fn check_pinned_suffix(settings: &Settings, state: Option<&State>) -> Result<()> {
    if let (Some(s), Some(pinned)) = (state, &settings.config.suffix) {
        if &s.suffix != pinned {
            return Err(BadInput(format!(
                "suffix: the config pins {pinned:?} but {} records {:?}; remove the pin or use another --state",
                settings.state,
                s.suffix
            ))
            .into());
        }
    }
    Ok(())
}

/// The account the credentials belong to: the first AWS call of every command, so this is
/// where missing credentials show. They are the user's input, not an AWS failure (exit 2).
async fn account(settings: &Settings, clients: &Clients) -> Result<String> {
    match clients.account().await {
        Ok(account) => Ok(account),
        Err(StepError::Aws(f)) if f.is_credentials_problem() => {
            Err(BadInput(credentials_problem(settings, &f)).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// One line saying where the standard chain looked (aws-config's default provider chain, in
/// its order), or what is wrong with the setup it found.
fn credentials_problem(settings: &Settings, f: &AwsFailure) -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let profile = settings
        .remote
        .profile
        .clone()
        .or_else(|| var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let files = format!(
        "{} and {}",
        var("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| "~/.aws/credentials".into()),
        var("AWS_CONFIG_FILE").unwrap_or_else(|| "~/.aws/config".into())
    );
    match &f.cause {
        aws::Cause::Credentials(CredentialsProblem::Invalid(why)) => {
            format!("AWS credentials: profile {profile:?} in {files}: {why}")
        }
        _ => {
            let imds = match var("AWS_EC2_METADATA_DISABLED") {
                Some(v) if v.eq_ignore_ascii_case("true") => {
                    "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)"
                }
                _ => "EC2 instance metadata",
            };
            format!(
                "no AWS credentials found: looked in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile {profile:?} in {files}, web identity and container credentials, {imds}; set one of them or pass --profile"
            )
        }
    }
}

pub fn bad_input_if(e: StateError) -> anyhow::Error {
    if e.is_bad_input() {
        anyhow::Error::new(BadInput(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

/// A context whose progress goes nowhere and that is never cancelled, over a store that is
/// never saved: for the read-only commands.
fn read_only_ctx(state: &State) -> Ctx {
    let store = Arc::new(Store::detached(state.clone()));
    Ctx::new(
        store,
        Arc::new(Progress::new(-1)),
        Arc::new(AtomicBool::new(false)),
    )
}

/// What the read-only commands (status, verify) work with: the deployment resolved against
/// the live account, its plan, and a context over an in-memory copy of the state.
struct ReadOnly {
    env: Arc<Env>,
    plan: Vec<Box<dyn Resource>>,
    cx: Ctx,
}

fn read_only(settings: &Settings, session: Session, state: &State) -> Result<ReadOnly> {
    let mut d = deployment(
        settings,
        &state.suffix,
        &session.region,
        &session.account,
        false,
    )?;
    with_fleet(settings, &mut d, state, false)?;
    let env = Arc::new(Env::new(session.clients, d));
    let plan = resources::plan(&env);
    let cx = read_only_ctx(state);
    Ok(ReadOnly { env, plan, cx })
}

/// One summary line per step report, named as the state records it.
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
            outcome: r.label().to_string(),
            detail: match &r.result {
                Ok(o) => o.detail().map(str::to_string),
                Err(e) => Some(e.to_string()),
            },
        })
        .collect()
}

fn counts(lines: &[ResourceLine]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.outcome.clone()).or_insert(0) += 1;
    }
    m
}

fn counts_text(c: &BTreeMap<String, usize>) -> String {
    c.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_of_each_verdict() {
        let v = |ok, interrupted, changes_pending| {
            ExitStatus::of(Verdict {
                ok,
                interrupted,
                changes_pending,
            })
        };
        assert_eq!(v(true, false, false), ExitStatus::Success);
        assert_eq!(v(false, false, false), ExitStatus::Failure);
        assert_eq!(v(true, false, true), ExitStatus::ChangesPending);
        assert_eq!(v(false, false, true), ExitStatus::Failure);
        assert_eq!(v(false, true, false), ExitStatus::Interrupted);
        assert_eq!(v(true, true, true), ExitStatus::Interrupted);
        let bad = anyhow::Error::new(BadInput("x".into()));
        assert_eq!(ExitStatus::of_error(&bad), ExitStatus::BadInput);
        assert_eq!(
            ExitStatus::of_error(&anyhow::anyhow!("x")),
            ExitStatus::Failure
        );
    }
}
