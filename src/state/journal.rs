//! The journal beside a fleet's state file: one appended line per device change.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DeviceState, State, StateError};

/// One journal line: a device's whole entry after a change, or null once it has none.
#[derive(Serialize, Deserialize)]
struct JournalLine {
    device: String,
    entry: Option<DeviceState>,
}

/// The append-only companion of a state file, `<state>.journal`: one line per change to a
/// fleet device, so saving progress costs one small append instead of rewriting a file that
/// grows with the fleet. A full save folds it in and removes it.
///
/// Only an intent must reach the disk before the call it announces, so only durable appends
/// wait for fdatasync (which also carries every line written before them). Any other line
/// lost in a power cut leaves a state a kill at that instant could have left (an intent
/// without its commit, a record of something just deleted), and resume handles those.
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    /// fdatasync calls made (for tests and benchmarks).
    syncs: u64,
}

pub fn journal_path(state_path: &Path) -> PathBuf {
    let mut p = state_path.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

impl Journal {
    pub fn new(state_path: &Path) -> Journal {
        Journal {
            path: journal_path(state_path),
            file: None,
            syncs: 0,
        }
    }

    /// The line recording a device's entry (None: the device has no records left).
    pub fn line(device: &str, entry: Option<&DeviceState>) -> Vec<u8> {
        let line = JournalLine {
            device: device.to_string(),
            entry: entry.cloned(),
        };
        let mut bytes = serde_json::to_vec(&line).expect("journal line serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Appends the device's entry; `durable`: on disk before this returns.
    #[cfg(test)]
    pub fn append(
        &mut self,
        device: &str,
        entry: Option<&DeviceState>,
        durable: bool,
    ) -> Result<(), StateError> {
        self.append_line(&Journal::line(device, entry), durable)
    }

    pub fn append_line(&mut self, line: &[u8], durable: bool) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        if self.file.is_none() {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)
                .map_err(err)?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(line).map_err(err)?;
        if durable {
            f.sync_data().map_err(err)?;
            self.syncs += 1;
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// After a full save: the journal is folded in.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.file = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Applies a journal's lines to a state. A torn line ends the replay: it was never synced, so
/// nothing after it was either (a sync carries every line before it), and no line after it
/// can record an intent whose call was sent. What is skipped is what a kill at that instant
/// would have lost. A line that is whole but not a journal line is corruption.
pub(super) fn replay(state: &mut State, text: &str, path: &Path) -> Result<(), StateError> {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<JournalLine>(line) {
            Ok(JournalLine {
                device,
                entry: Some(e),
            }) => {
                state.devices.insert(device, e);
            }
            Ok(JournalLine {
                device,
                entry: None,
            }) => {
                state.devices.remove(&device);
            }
            // Torn: cut short, or with blocks a power cut left zeroed.
            Err(e) if e.is_eof() || line.contains('\0') || i + 1 == lines.len() => return Ok(()),
            Err(e) => {
                return Err(StateError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(())
}
