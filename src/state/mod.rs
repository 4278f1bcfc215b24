//! The state file: the single record of what a deployment owns.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory) so a crash at any
//! instant leaves either the old or the new state, never a torn one. Guarded by an advisory
//! lock held for the whole run ([`lock`]). It holds names, ARNs and ids, never key material.
//! A fleet's device changes go to an append-only [`journal`] beside it; [`Store`] is the
//! in-memory copy a run works on, saved after every change.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod backend;
mod devices;
mod file;
mod journal;
mod location;
mod lock;
mod s3;
mod store;

pub use backend::{Backend, Lock};
pub use devices::{Devices, Row};
pub use journal::{journal_path, Journal};
pub use location::{Location, S3Location};
pub use lock::StateLock;
pub use s3::{release_held_locks, S3State};
pub use store::Store;

/// The one field of the marker `state migrate` leaves where a state used to be.
pub const MOVED_TO: &str = "moved_to";

pub const SCHEMA_VERSION: u32 = 4;
/// Version 1 had no `applied`, version 2 no `serial`: they read as version 4 with nothing
/// applied on record and serial 0. Versions 1–3 hold each fleet device as an object;
/// version 4 packs each into a row on a line of its own ([`file`]).
const OLDEST_READABLE: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: cannot read state file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write state file: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt state file ({message}); restore it from a backup or move it aside")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: schema_version {found} is newer than this iotreg understands ({SCHEMA_VERSION}); upgrade iotreg")]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("{path}: region: the state belongs to region {state}, but this run targets {current}; pass --region {state} or use another --state")]
    OtherRegion {
        path: PathBuf,
        state: String,
        current: String,
    },
    #[error("{path}: account: the state belongs to account {state}, but the credentials are for account {current}; use that account's credentials or another --state")]
    OtherAccount {
        path: PathBuf,
        state: String,
        current: String,
    },
    #[error("{path}: locked by another iotreg run (pid {pid}); wait for it to finish")]
    Locked { path: PathBuf, pid: String },
    #[error("{path}: cannot lock state: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A lock in S3 held by another run, with who and since when.
    #[error("{path}: locked by {holder}; wait for it to finish, or if that run is gone: iotreg force-unlock {}", holder.id)]
    HeldBy {
        path: PathBuf,
        holder: Box<s3::Holder>,
    },
    /// Another writer changed the state since this run read it.
    #[error("{path}: the state changed since this run read it (another writer, or a lock that was forced): stopped before writing over it; nothing recorded is lost, run the command again")]
    Conflict { path: PathBuf },
    #[error("{path}: the fleet journal cannot be written: {message}")]
    Journal { path: PathBuf, message: String },
    #[error("{path}: bucket {bucket} does not exist; create it (see docs/state.md) or fix --state / [state] bucket")]
    NoBucket { path: PathBuf, bucket: String },
    #[error("{path}: {message}")]
    S3 { path: PathBuf, message: String },
    #[error(transparent)]
    Aws(crate::aws::AwsFailure),
    /// `state migrate` moved the state away and left this marker.
    #[error("{path}: the state was moved to {to} by `iotreg state migrate`; use --state {to} (or set [state] to it)")]
    Moved { path: PathBuf, to: String },
}

impl StateError {
    /// Whether this is the user's input (exit 2) rather than an operational failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StateError::Corrupt { .. }
                | StateError::NewerSchema { .. }
                | StateError::NoBucket { .. }
                | StateError::Moved { .. }
                | StateError::OtherRegion { .. }
                | StateError::OtherAccount { .. }
        )
    }
}

/// Where a resource is in its life, as far as this deployment knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A create call may have been sent; its result was not recorded yet. Resume looks it up.
    Intent,
    /// Exists and belongs to this deployment.
    Created,
    /// Exists, used by this deployment, but not ours to delete (a shared thing type).
    Borrowed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub key: String,
    pub kind: String,
    pub phase: Phase,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unix milliseconds when the intent was written; bounds the search on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_at_ms: Option<u64>,
    /// Resource-specific facts (e.g. a public key fingerprint, a deprecation time).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, serde_json::Value>,
}

impl Record {
    pub fn new(key: &str, kind: &str, phase: Phase, name: impl Into<String>) -> Record {
        Record {
            key: key.to_string(),
            kind: kind.to_string(),
            phase,
            name: name.into(),
            arn: None,
            id: None,
            intent_at_ms: None,
            data: BTreeMap::new(),
        }
    }

    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(|v| v.as_str())
    }
}

/// The state. Serialised (`state pull`) it is the stored file's JSON; the file itself is
/// written and read by [`file`], a device per line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct State {
    pub schema_version: u32,
    pub region: String,
    pub account: String,
    pub suffix: String,
    /// Full writes of this state so far: `state push` refuses a copy older than the stored one.
    #[serde(default)]
    pub serial: u64,
    /// Records in plan order (the order the engine created them).
    pub resources: Vec<Record>,
    /// Per resource key, the settings `up` last applied (what the config wanted then), so a
    /// plan can tell a config change from a change made outside iotreg.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// A fleet's devices by thing name, each with its own records (thing, certificate,
    /// attachments, shadow), held packed ([`Devices`]). Their changes go to the journal (see
    /// [`Journal`]), not a rewrite.
    #[serde(skip_serializing_if = "Devices::is_empty")]
    pub devices: Devices,
}

/// One fleet device's part of the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    pub records: Vec<Record>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl DeviceState {
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.key == key)
    }
    pub fn put(&mut self, record: Record) {
        match self.records.iter_mut().find(|r| r.key == record.key) {
            Some(slot) => *slot = record,
            None => self.records.push(record),
        }
    }
    pub fn remove(&mut self, key: &str) {
        self.records.retain(|r| r.key != key);
        self.applied.remove(key);
    }
}

impl State {
    pub fn new(region: &str, account: &str, suffix: &str) -> State {
        State {
            schema_version: SCHEMA_VERSION,
            region: region.into(),
            account: account.into(),
            suffix: suffix.into(),
            serial: 0,
            resources: Vec::new(),
            applied: BTreeMap::new(),
            devices: Devices::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Record> {
        self.resources.iter().find(|r| r.key == key)
    }

    /// Inserts or replaces the record with the same key, keeping the first-seen position.
    pub fn put(&mut self, record: Record) {
        match self.resources.iter_mut().find(|r| r.key == record.key) {
            Some(slot) => *slot = record,
            None => self.resources.push(record),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.resources.retain(|r| r.key != key);
        self.applied.remove(key);
    }

    /// The state as stored, locally and in S3 alike (so a `migrate` round trip is exact):
    /// see [`file`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        file::write(self, &mut bytes).expect("writing to memory");
        bytes
    }

    pub fn parse(text: &str, path: &Path) -> Result<State, StateError> {
        match file::read_lines(text.as_bytes(), path)? {
            file::Read::State(state) => Ok(state),
            file::Read::Whole(_) => file::read_whole(text, path),
        }
    }

    /// Refuses a state that belongs elsewhere: acting on it would touch someone else's resources.
    pub fn check_region(&self, path: &Path, region: &str) -> Result<(), StateError> {
        if self.region != region {
            return Err(StateError::OtherRegion {
                path: path.to_path_buf(),
                state: self.region.clone(),
                current: region.into(),
            });
        }
        Ok(())
    }

    pub fn check_account(&self, path: &Path, account: &str) -> Result<(), StateError> {
        if self.account != account {
            return Err(StateError::OtherAccount {
                path: path.to_path_buf(),
                state: self.account.clone(),
                current: account.into(),
            });
        }
        Ok(())
    }
}

/// Reads the state file; `None` when it does not exist (nothing deployed).
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    let read_err = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_err(source)),
    };
    // A line at a time: the file is never held whole (see `file`).
    let reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut state = match file::read_lines(reader, path)? {
        file::Read::State(state) => state,
        file::Read::Whole(Some(text)) => file::read_whole(&text, path)?,
        file::Read::Whole(None) => {
            let text = std::fs::read_to_string(path).map_err(read_err)?;
            file::read_whole(&text, path)?
        }
    };
    let journal = journal_path(path);
    match std::fs::File::open(&journal) {
        Ok(f) => journal::replay(
            &mut state,
            std::io::BufReader::with_capacity(1 << 20, f),
            &journal,
        )?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StateError::Read {
                path: journal,
                source,
            })
        }
    }
    Ok(Some(state))
}

/// Writes `state` to `path` atomically, mode 0600, streamed (never whole in memory).
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    crate::fsutil::write_atomic_with(path, 0o600, |w| file::write(state, w)).map_err(|source| {
        StateError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

pub(crate) use crate::fsutil::parent_dir;

/// Creates `dir` (and parents) with mode 0700 where missing.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State::new("us-east-1", "123456789012", "abc123");
        let mut r = Record::new(
            "thing",
            "thing",
            Phase::Created,
            "temperature-sensor-abc123",
        );
        r.arn = Some("arn:aws:iot:us-east-1:123456789012:thing/x".into());
        s.put(r);
        s
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn save_replaces_whole_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &sample()).unwrap();
        let mut bigger = sample();
        for i in 0..50 {
            bigger.put(Record::new(
                &format!("k{i}"),
                "thing",
                Phase::Intent,
                "n".repeat(100),
            ));
        }
        save(&path, &bigger).unwrap();
        save(&path, &sample()).unwrap();
        // A shorter write after a longer one must not leave a tail of the old content.
        assert_eq!(load(&path).unwrap(), Some(sample()));
    }

    #[test]
    fn missing_state_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("nope.json")).unwrap(), None);
    }

    #[test]
    fn bad_states_are_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let full = serde_json::to_string(&sample()).unwrap();
        let cases = [
            (full[..full.len() / 2].to_string(), "corrupt"),
            ("hello".to_string(), "corrupt"),
            (
                full.replace(
                    &format!("\"schema_version\":{SCHEMA_VERSION}"),
                    "\"schema_version\":7",
                ),
                "newer",
            ),
            (full.replace(",\"suffix\":\"abc123\"", ""), "corrupt"),
            (full.replace("abc123", "../../x"), "corrupt"),
        ];
        for (text, kind) in cases {
            std::fs::write(&path, &text).unwrap();
            let e = load(&path).unwrap_err();
            assert!(e.is_bad_input(), "{text}: {e}");
            assert!(e.to_string().contains(kind), "{text}: {e}");
            assert!(e.to_string().starts_with(&path.display().to_string()));
        }
    }

    #[test]
    fn foreign_region_and_account_are_refused() {
        let s = sample();
        let p = Path::new("s.json");
        assert!(s.check_region(p, "us-east-1").is_ok());
        assert!(matches!(
            s.check_region(p, "eu-west-1"),
            Err(StateError::OtherRegion { .. })
        ));
        assert!(matches!(
            s.check_account(p, "999999999999"),
            Err(StateError::OtherAccount { .. })
        ));
    }

    #[test]
    fn put_keeps_order_and_replaces() {
        let mut s = State::new("r", "a", "s");
        s.put(Record::new("a", "k", Phase::Intent, "1"));
        s.put(Record::new("b", "k", Phase::Intent, "2"));
        s.put(Record::new("a", "k", Phase::Created, "3"));
        let keys: Vec<_> = s.resources.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(s.get("a").unwrap().phase, Phase::Created);
    }
}

#[cfg(test)]
mod bench;
