//! The state a run works on: the file plus its in-memory copy, saved after every change.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::s3::S3State;
use super::{DeviceState, Journal, Row, State, StateError};
use crate::plan::Fields;

/// Where a store's saves and journal lines go.
enum Sink {
    Local {
        path: PathBuf,
        journal: Mutex<Journal>,
    },
    S3(Arc<S3State>),
    /// A copy the read-only commands work on: writing to it is a bug, refused.
    Detached,
}

/// A state plus the in-memory copy, saved after every mutation under one mutex so that
/// concurrent steps never interleave writes.
pub struct Store {
    sink: Sink,
    state: Mutex<State>,
    /// S3 only: changes made with [`Store::update_lazy`] that no write has carried yet.
    dirty: std::sync::atomic::AtomicBool,
    /// Plan order: records are kept in it so the file reads top to bottom like the stack.
    order: Mutex<Vec<String>>,
}

impl Store {
    pub fn new(path: PathBuf, state: State) -> Store {
        Store {
            sink: Sink::Local {
                journal: Mutex::new(Journal::new(&path)),
                path,
            },
            state: Mutex::new(state),
            dirty: std::sync::atomic::AtomicBool::new(false),
            order: Mutex::new(Vec::new()),
        }
    }

    /// A store over a copy of the state that is never written back (status, verify).
    pub fn detached(state: State) -> Store {
        Store {
            sink: Sink::Detached,
            state: Mutex::new(state),
            dirty: std::sync::atomic::AtomicBool::new(false),
            order: Mutex::new(Vec::new()),
        }
    }

    /// A store kept in S3: each full save a conditional PUT, the journal as segments.
    pub fn remote(s3: Arc<S3State>, state: State) -> Store {
        Store {
            sink: Sink::S3(s3),
            state: Mutex::new(state),
            dirty: std::sync::atomic::AtomicBool::new(false),
            order: Mutex::new(Vec::new()),
        }
    }

    /// Changes one fleet device's entry and appends it to the journal: the cost does not grow
    /// with the fleet. `durable` (an intent): on disk before this returns. (Lock order: state,
    /// then journal, everywhere.)
    pub fn update_device<T>(
        &self,
        device: &str,
        durable: bool,
        f: impl FnOnce(&mut DeviceState) -> T,
    ) -> Result<T, StateError> {
        let mut guard = self.state.lock().expect("state mutex");
        // Unpacked, changed, packed again: the row that goes in is the journal line's.
        let mut entry = guard.devices.get(device).unwrap_or_default();
        let out = f(&mut entry);
        let line = if entry.records.is_empty() {
            guard.devices.remove_row(device);
            Journal::row_line(device, None)
        } else {
            let row = Row::pack(device, &entry);
            let line = Journal::row_line(device, Some(&row));
            guard.devices.insert_row(device.to_string(), row);
            line
        };
        match &self.sink {
            Sink::Local { journal, .. } => {
                // Lines go out in the order of the changes (the journal is taken before the
                // state is let go), but readers and other devices' changes need not wait for
                // the disk.
                let mut journal = journal.lock().expect("journal mutex");
                drop(guard);
                journal.append_line(&line, durable)?;
            }
            Sink::S3(s3) => {
                // Handed over in order under the state's lock; the wait for S3 is outside
                // it, so devices that wait at the same time share one segment.
                let ticket = s3.enqueue(line);
                drop(guard);
                if durable {
                    s3.flush(ticket)?;
                }
            }
            Sink::Detached => return Err(read_only()),
        }
        Ok(out)
    }

    /// fdatasync calls the journal has made.
    #[cfg(test)]
    pub fn journal_syncs(&self) -> u64 {
        match &self.sink {
            Sink::Local { journal, .. } => journal.lock().expect("journal mutex").syncs(),
            Sink::S3(_) | Sink::Detached => 0,
        }
    }

    /// The fleet devices recorded, by thing name.
    pub fn device_names(&self) -> std::collections::BTreeSet<String> {
        let s = self.state.lock().expect("state mutex");
        s.devices.keys().cloned().collect()
    }

    pub fn has_device(&self, device: &str) -> bool {
        let s = self.state.lock().expect("state mutex");
        s.devices.contains_key(device)
    }

    /// What `up` last applied to one of a device's resources.
    pub fn device_applied(&self, device: &str, key: &str) -> Option<Fields> {
        let s = self.state.lock().expect("state mutex");
        s.devices.get(device)?.applied.remove(key)
    }

    /// Writes the whole state and folds the journal in.
    pub fn compact(&self) -> Result<(), StateError> {
        self.update(|_| ())
    }

    /// Reads the in-memory state under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().expect("state mutex"))
    }

    /// The order records are kept in (the plan's), so the file reads like the stack.
    pub fn set_order(&self, keys: Vec<String>) {
        *self.order.lock().expect("order mutex") = keys;
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().expect("state mutex").clone()
    }

    /// A change that need not be stored before the next call goes out: a commit, what was
    /// applied, a forgotten record. Lost in a crash, it leaves what a crash just before it
    /// leaves (an intent without its commit, the record of something just deleted), which
    /// the next run resolves by looking. Locally it is written at once as ever (a local
    /// write costs a rename); in S3 it rides on the next write, or on [`Store::flush`].
    pub fn update_lazy<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StateError> {
        if !matches!(self.sink, Sink::S3(_)) {
            return self.update(f);
        }
        let mut guard = self.state.lock().expect("state mutex");
        let out = f(&mut guard);
        self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(out)
    }

    /// Writes what [`Store::update_lazy`] left unwritten, if anything (the end of a run).
    pub fn flush(&self) -> Result<(), StateError> {
        if self.dirty.load(std::sync::atomic::Ordering::SeqCst) {
            self.update(|_| ())?;
        }
        Ok(())
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StateError> {
        let mut guard = self.state.lock().expect("state mutex");
        // Whatever lazy changes there are go with this write (cleared before it: one made
        // meanwhile waits for the state's lock, and so for a later write).
        self.dirty.store(false, std::sync::atomic::Ordering::SeqCst);
        let out = f(&mut guard);
        let order = self.order.lock().expect("order mutex");
        let rank = |k: &str| order.iter().position(|o| o == k).unwrap_or(usize::MAX);
        guard.resources.sort_by_key(|r| rank(&r.key));
        guard.serial += 1;
        match &self.sink {
            Sink::Local { path, journal } => {
                super::save(path, &guard)?;
                journal.lock().expect("journal mutex").clear()?;
            }
            // Folds the journal's segments in.
            Sink::S3(s3) => s3.save(&guard)?,
            Sink::Detached => return Err(read_only()),
        }
        Ok(out)
    }
}

impl Drop for Store {
    /// A run that ended without [`Store::flush`] (an error on the way out) still stores its
    /// last changes.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            eprintln!("iotreg: warning: the state's last changes were not stored: {e}");
        }
    }
}

/// What a write to a detached store comes to (a read-only command that tried to write).
fn read_only() -> StateError {
    StateError::S3 {
        path: PathBuf::from("<read-only copy>"),
        message: "a read-only command tried to change the state (a bug: nothing was written)"
            .into(),
    }
}
