//! `iotreg state …` and `iotreg force-unlock`: read, repair and move the state, and break a
//! lock left by a run that is gone. None of them calls IoT: they work on the state alone.

use std::fmt;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use serde::Serialize;

use super::{bad_input_if, connect, open_backend, preflight, read_unlocked, take_lock, ExitStatus};
use super::{report, Needs, Summary, Verdict};
use crate::output::{self, Progress};
use crate::settings::{BadInput, Settings, StateAction};
use crate::state::{self, Backend, Location, Phase, Record, State, MOVED_TO};

pub async fn run(
    settings: &Settings,
    progress: &Progress,
    action: &StateAction,
) -> Result<ExitStatus> {
    match action {
        StateAction::List => list(settings).await,
        StateAction::Show { address } => show(settings, address).await,
        StateAction::Pull => pull(settings).await,
        StateAction::Push { file, force } => push(settings, progress, file, *force).await,
        StateAction::Rm { addresses } => rm(settings, progress, addresses).await,
        StateAction::Migrate { to } => migrate(settings, progress, to).await,
    }
}

/// The state as it stands, no lock taken (read-only). A local state needs no AWS.
async fn read(settings: &Settings) -> Result<State> {
    read_unlocked(settings)
        .await?
        .ok_or_else(|| BadInput(format!("no state: {} does not exist", settings.state)).into())
}

/// One record of the state, as `state list` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    /// A stack resource, by its key.
    Resource(String),
    /// A fleet device, all its records.
    Device(String),
    /// One record of a fleet device.
    DeviceRecord(String, String),
}

impl Address {
    fn parse(s: &str) -> Result<Address, BadInput> {
        let bad = || {
            BadInput(format!(
                "{s:?} is not a state address: KEY, fleet/THING or fleet/THING/KEY (see `iotreg state list`)"
            ))
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            ["fleet", thing] => Ok(Address::Device(thing.to_string())),
            ["fleet", thing, key] => Ok(Address::DeviceRecord(thing.to_string(), key.to_string())),
            [key] if *key != "fleet" => Ok(Address::Resource(key.to_string())),
            _ => Err(bad()),
        }
    }

    /// The record's JSON, or None when the state has no such record.
    fn find(&self, s: &State) -> Option<serde_json::Value> {
        let json = |v: Result<serde_json::Value, _>| v.expect("state records serialise");
        match self {
            Address::Resource(k) => s.get(k).map(|r| json(serde_json::to_value(r))),
            Address::Device(t) => s.devices.get(t).map(|d| json(serde_json::to_value(d))),
            Address::DeviceRecord(t, k) => s
                .devices
                .get(t)?
                .get(k)
                .map(|r| json(serde_json::to_value(r))),
        }
    }

    /// Forgets the record; false when the state has none there.
    fn remove(&self, s: &mut State) -> bool {
        match self {
            Address::Resource(k) => {
                let had = s.get(k).is_some();
                s.remove(k);
                had
            }
            Address::Device(t) => s.devices.remove(t).is_some(),
            Address::DeviceRecord(t, k) => {
                let Some(mut d) = s.devices.get(t) else {
                    return false;
                };
                let had = d.get(k).is_some();
                d.remove(k);
                if d.records.is_empty() {
                    s.devices.remove(t);
                } else {
                    s.devices.insert(t.clone(), d);
                }
                had
            }
        }
    }
}

#[derive(Serialize)]
struct Line {
    address: String,
    kind: String,
    name: String,
    phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    arn: Option<String>,
}

impl Line {
    fn of(address: String, r: &Record) -> Line {
        Line {
            address,
            kind: r.kind.clone(),
            name: r.name.clone(),
            phase: r.phase,
            arn: r.arn.clone(),
        }
    }
}

#[derive(Serialize)]
struct ListSummary {
    command: &'static str,
    suffix: String,
    serial: u64,
    records: Vec<Line>,
}

impl fmt::Display for ListSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .records
            .iter()
            .map(|l| l.address.len())
            .max()
            .unwrap_or(0);
        let kind = self.records.iter().map(|l| l.kind.len()).max().unwrap_or(0);
        for l in &self.records {
            let phase = match l.phase {
                Phase::Created => "created",
                Phase::Intent => "intent",
                Phase::Borrowed => "borrowed",
            };
            writeln!(
                f,
                "{:width$}  {:kind$}  {}  {phase}",
                l.address, l.kind, l.name
            )?;
        }
        Ok(())
    }
}

impl Summary for ListSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: true,
            ..Verdict::default()
        }
    }
}

async fn list(settings: &Settings) -> Result<ExitStatus> {
    let s = read(settings).await?;
    let mut records: Vec<Line> = s
        .resources
        .iter()
        .map(|r| Line::of(r.key.clone(), r))
        .collect();
    for (thing, d) in &s.devices {
        records.extend(
            d.records
                .iter()
                .map(|r| Line::of(format!("fleet/{thing}/{}", r.key), r)),
        );
    }
    let summary = ListSummary {
        command: "state list",
        suffix: s.suffix.clone(),
        serial: s.serial,
        records,
    };
    Ok(report(settings, &summary))
}

async fn show(settings: &Settings, address: &str) -> Result<ExitStatus> {
    let a = Address::parse(address)?;
    let s = read(settings).await?;
    let found = a.find(&s).ok_or_else(|| {
        BadInput(format!(
            "{}: no record at {address:?} (`iotreg state list` lists them)",
            settings.state
        ))
    })?;
    output::print_json(&found);
    Ok(ExitStatus::Success)
}

async fn pull(settings: &Settings) -> Result<ExitStatus> {
    let s = read(settings).await?;
    output::print_json(&s);
    Ok(ExitStatus::Success)
}

/// What a command that changed the state says it did.
#[derive(Serialize)]
struct Changed {
    command: &'static str,
    #[serde(skip)]
    text: String,
    serial: u64,
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.text)
    }
}

impl Summary for Changed {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: true,
            ..Verdict::default()
        }
    }
}

async fn push(
    settings: &Settings,
    progress: &Progress,
    file: &std::path::Path,
    force: bool,
) -> Result<ExitStatus> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", file.display())))?;
    let pushed = State::parse(&text, file).map_err(|e| BadInput(e.to_string()))?;
    let needs = Needs {
        lock: true,
        pinned_suffix: false,
    };
    let session = preflight(settings, needs, progress).await?;
    pushed
        .check_region(file, &session.region)
        .and_then(|_| pushed.check_account(file, &session.account))
        .map_err(|e| BadInput(e.to_string()))?;
    let serial = match &session.state {
        None => pushed.serial,
        Some(current) => {
            if current.suffix != pushed.suffix {
                return Err(BadInput(format!(
                    "{}: holds deployment {}, not {} as {} does: push a state of the same deployment, or use another --state",
                    settings.state,
                    current.suffix,
                    pushed.suffix,
                    file.display()
                ))
                .into());
            }
            let mut same = pushed.clone();
            same.serial = current.serial;
            if &same == current {
                progress.line(&format!(
                    "{}: already holds this state; nothing to push",
                    settings.state
                ));
                return Ok(report(
                    settings,
                    &Changed {
                        command: "state push",
                        text: "state unchanged".into(),
                        serial: current.serial,
                    },
                ));
            }
            if pushed.serial <= current.serial && !force {
                let older = if pushed.serial < current.serial {
                    "older than"
                } else {
                    "the same as"
                };
                return Err(BadInput(format!(
                    "{}: serial {} is {older} the stored state's ({}): it would undo later changes; pull the current state, make the change there, and push that (or --force)",
                    file.display(),
                    pushed.serial,
                    current.serial
                ))
                .into());
            }
            pushed.serial.max(current.serial)
        }
    };
    let store = session
        .backend
        .store(session.state.clone().unwrap_or_else(|| pushed.clone()));
    let written = store.update(|s| {
        *s = pushed;
        s.serial = serial;
        s.serial + 1
    })?;
    Ok(report(
        settings,
        &Changed {
            command: "state push",
            text: format!(
                "pushed {} to {} (serial {written})",
                file.display(),
                settings.state
            ),
            serial: written,
        },
    ))
}

/// The preflight of a command that changes a recorded state: the session, lock held, and
/// the state, which must exist.
async fn locked(settings: &Settings, progress: &Progress) -> Result<(super::Session, State)> {
    let needs = Needs {
        lock: true,
        pinned_suffix: false,
    };
    let mut session = preflight(settings, needs, progress).await?;
    let Some(current) = session.state.take() else {
        return Err(BadInput(format!("no state: {} does not exist", settings.state)).into());
    };
    Ok((session, current))
}

async fn rm(settings: &Settings, progress: &Progress, addresses: &[String]) -> Result<ExitStatus> {
    let parsed = addresses
        .iter()
        .map(|a| Address::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let (session, current) = locked(settings, progress).await?;
    for (a, text) in parsed.iter().zip(addresses) {
        if a.find(&current).is_none() {
            return Err(BadInput(format!(
                "{}: no record at {text:?}; nothing was removed (`iotreg state list` lists them)",
                settings.state
            ))
            .into());
        }
    }
    let store = session.backend.store(current);
    let serial = store.update(|s| {
        for a in &parsed {
            a.remove(s);
        }
        s.serial
    })?;
    Ok(report(
        settings,
        &Changed {
            command: "state rm",
            text: format!(
                "forgot {} (nothing was deleted in AWS; serial {serial})",
                addresses.join(", ")
            ),
            serial,
        },
    ))
}

async fn migrate(settings: &Settings, progress: &Progress, to: &Location) -> Result<ExitStatus> {
    if to == &settings.state {
        return Err(BadInput(format!("--to: the state is already at {to}")).into());
    }
    let (session, current) = locked(settings, progress).await?;
    let dest = Backend::open(to, &session.sdk, settings.remote.endpoint_url.is_some());
    if let Location::Local(p) = to {
        if let Some(dir) = p.parent() {
            state::ensure_private_dir(dir)
                .map_err(|e| BadInput(format!("--to: {}: cannot create: {e}", dir.display())))?;
        }
    }
    let _dest_lock = take_lock(&dest, settings.action.name(), progress).await?;
    // A marker left by an earlier migration may be overwritten; a state may not.
    match dest.load().await {
        Ok(None) | Err(state::StateError::Moved { .. }) => {}
        Ok(Some(there)) => {
            return Err(BadInput(format!(
                "--to: {to} already holds a state (deployment {}); remove it first or choose another place",
                there.suffix
            ))
            .into())
        }
        Err(e) => return Err(bad_input_if(e)),
    }
    dest.save(&current)?;
    let back = dest.load().await.map_err(bad_input_if)?;
    if back.as_ref() != Some(&current) {
        return Err(anyhow::anyhow!(
            "{to}: the state read back differs from what was written; {} is unchanged and still in use",
            settings.state
        ));
    }
    let marker = serde_json::json!({
        MOVED_TO: to.to_string(),
        "moved_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "serial": current.serial,
    });
    let mut bytes = serde_json::to_vec_pretty(&marker).expect("marker serialises");
    bytes.push(b'\n');
    match &session.backend {
        Backend::Local(p) => {
            crate::fsutil::write_atomic(p, &bytes, 0o600).map_err(|source| {
                state::StateError::Write {
                    path: p.clone(),
                    source,
                }
            })?;
            let journal = state::journal_path(p);
            if journal.exists() {
                std::fs::remove_file(&journal).map_err(|source| state::StateError::Write {
                    path: journal,
                    source,
                })?;
            }
        }
        Backend::S3(s3) => s3.save_bytes(bytes)?,
    }
    Ok(report(
        settings,
        &Changed {
            command: "state migrate",
            text: format!(
                "moved the state of deployment {} to {to} (serial {}, read back and compared); {} now only points there: use --state {to} (or set [state]) from now on",
                current.suffix, current.serial, settings.state
            ),
            serial: current.serial,
        },
    ))
}

/// `iotreg force-unlock LOCK_ID`.
pub async fn force_unlock(settings: &Settings, lock_id: &str, yes: bool) -> Result<ExitStatus> {
    let Location::S3(_) = &settings.state else {
        return Err(BadInput(format!(
            "{}: a local state's lock is released by the system when the run holding it ends: there is nothing to force (if a run is still going, stop it)",
            settings.state
        ))
        .into());
    };
    let (sdk, _) = connect(settings).await?;
    let backend = open_backend(settings, &sdk);
    let s3 = backend.s3().expect("an S3 location");
    let Some((holder, etag)) = s3.read_lock().await? else {
        return Err(BadInput(format!("{}: no lock is held", settings.state)).into());
    };
    if holder.id != lock_id {
        return Err(BadInput(format!(
            "{}: the lock held is {}, not {lock_id:?}; nothing was changed",
            settings.state, holder.id
        ))
        .into());
    }
    if !yes
        && !confirm(&format!(
            "Break the lock on {} held by {holder}?\nOnly do this if that run is gone. [y/N] ",
            settings.state
        ))?
    {
        return Err(BadInput("force-unlock: not confirmed; nothing was changed".into()).into());
    }
    if !s3.delete_lock(&etag).await? {
        anyhow::bail!(
            "{}: the lock changed hands while asking; nothing was deleted",
            settings.state
        );
    }
    Ok(report(
        settings,
        &Changed {
            command: "force-unlock",
            text: format!("lock {lock_id} on {} broken", settings.state),
            serial: 0,
        },
    ))
}

/// Asks on the terminal; without one, only `--yes` can confirm.
fn confirm(question: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            BadInput("force-unlock: not a terminal to confirm on; pass --yes".into()).into(),
        );
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("thing").unwrap(),
            Address::Resource("thing".into())
        );
        assert_eq!(
            Address::parse("fleet/s-1").unwrap(),
            Address::Device("s-1".into())
        );
        assert_eq!(
            Address::parse("fleet/s-1/certificate").unwrap(),
            Address::DeviceRecord("s-1".into(), "certificate".into())
        );
        for bad in ["", "fleet", "fleet/", "a//b", "x/y", "fleet/a/b/c"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remove_forgets_only_what_is_addressed() {
        let mut s = State::new("us-east-1", "123456789012", "abc123");
        s.put(Record::new("thing", "thing", Phase::Created, "t"));
        s.put(Record::new("policy", "policy", Phase::Created, "p"));
        let mut d = state::DeviceState::default();
        d.put(Record::new("thing", "thing", Phase::Created, "s-1"));
        d.put(Record::new(
            "certificate",
            "certificate",
            Phase::Created,
            "c",
        ));
        s.devices.insert("s-1".into(), d);
        assert!(Address::parse("thing").unwrap().remove(&mut s));
        assert!(!Address::parse("thing").unwrap().remove(&mut s));
        assert!(s.get("policy").is_some());
        assert!(Address::parse("fleet/s-1/certificate")
            .unwrap()
            .remove(&mut s));
        assert_eq!(s.devices.get("s-1").unwrap().records.len(), 1);
        assert!(Address::parse("fleet/s-1/thing").unwrap().remove(&mut s));
        assert!(s.devices.is_empty(), "a device with no records left goes");
    }
}
