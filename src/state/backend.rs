//! The state's backend: a local file or an S3 object, behind one interface for the commands.

use std::path::PathBuf;
use std::sync::Arc;

use super::location::Location;
use super::s3::{S3Lock, S3State};
use super::{State, StateError, StateLock, Store};

/// Where a command reads, locks and writes its state.
#[derive(Clone)]
pub enum Backend {
    Local(PathBuf),
    S3(Arc<S3State>),
}

/// The lock a command holds for its whole run; released when dropped.
#[derive(Debug)]
pub enum Lock {
    Local(StateLock),
    S3(S3Lock),
}

impl Lock {
    /// The pid of an earlier local holder that died holding the lock (an S3 lock left by a
    /// dead run is not taken over: it is reported, and `force-unlock` breaks it).
    pub fn previous_died(&self) -> Option<&str> {
        match self {
            Lock::Local(l) => l.previous_died.as_deref(),
            Lock::S3(_) => None,
        }
    }

    /// Releases the lock now (dropping it does the same), reporting a failure.
    pub fn release(self) -> Result<(), StateError> {
        match self {
            Lock::Local(l) => {
                drop(l);
                Ok(())
            }
            Lock::S3(mut l) => l.release(),
        }
    }
}

impl Backend {
    /// The backend for `location`. S3 needs the run's AWS configuration; `endpoint_url`: an
    /// endpoint URL is set (an emulator: path-style addressing).
    pub fn open(location: &Location, sdk: &aws_types::SdkConfig, endpoint_url: bool) -> Backend {
        match location {
            Location::Local(p) => Backend::Local(p.clone()),
            Location::S3(s) => Backend::S3(Arc::new(S3State::new(sdk, s.clone(), endpoint_url))),
        }
    }

    pub async fn load(&self) -> Result<Option<State>, StateError> {
        match self {
            Backend::Local(p) => super::load(p),
            Backend::S3(s) => s.load().await,
        }
    }

    pub async fn lock(&self, command: &str) -> Result<Lock, StateError> {
        match self {
            Backend::Local(p) => StateLock::acquire(p).map(Lock::Local),
            Backend::S3(s) => s.lock(command).await.map(Lock::S3),
        }
    }

    /// Writes the whole state (for S3: conditional on the version last read or written).
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        match self {
            Backend::Local(p) => super::save(p, state),
            Backend::S3(s) => s.save(state),
        }
    }

    /// The store a run works on, saving through this backend.
    pub fn store(&self, state: State) -> Store {
        match self {
            Backend::Local(p) => Store::new(p.clone(), state),
            Backend::S3(s) => Store::remote(s.clone(), state),
        }
    }

    /// After a complete `down`: the state (and for S3 its journal segments) removed. The
    /// lock goes when it is released.
    pub async fn remove(&self) -> Result<(), StateError> {
        match self {
            Backend::Local(p) => {
                for path in [p.clone(), super::journal_path(p)] {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(StateError::Write { path, source }),
                    }
                }
                Ok(())
            }
            Backend::S3(s) => s.remove().await,
        }
    }

    pub fn s3(&self) -> Option<&Arc<S3State>> {
        match self {
            Backend::S3(s) => Some(s),
            Backend::Local(_) => None,
        }
    }
}
