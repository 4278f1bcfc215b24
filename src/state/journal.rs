//! The journal beside a fleet's state file: one appended line per device change.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{DeviceState, Row, State, StateError};

/// A journal line as iotreg wrote it before schema 4: the device's entry unpacked, or null
/// once it had none. Lines now hold the packed row instead ([`Journal::row_line`]); a journal
/// left by an older iotreg is still replayed.
#[derive(Deserialize)]
struct UnpackedLine {
    device: String,
    #[serde(default)]
    entry: Option<DeviceState>,
    /// Only so that a torn packed line reads as torn (cut short), not as an unknown field.
    #[serde(default)]
    #[allow(dead_code)]
    row: Option<serde::de::IgnoredAny>,
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
    #[cfg(test)]
    pub fn line(device: &str, entry: Option<&DeviceState>) -> Vec<u8> {
        Journal::row_line(device, entry.map(|e| Row::pack(device, e)).as_ref())
    }

    /// The line recording a device's packed entry (None: the device has no records left):
    /// `{"device":NAME,"row":ROW}`, the row as the state file holds it, or `"row":null`.
    pub fn row_line(device: &str, row: Option<&Row>) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64 + row.map_or(0, |r| r.as_str().len()));
        bytes.extend_from_slice(b"{\"device\":");
        serde_json::to_writer(&mut bytes, device).expect("a name serialises");
        bytes.extend_from_slice(b",\"row\":");
        bytes.extend_from_slice(row.map_or("null", |r| r.as_str()).as_bytes());
        bytes.extend_from_slice(b"}\n");
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
/// Read a line at a time: the journal is never held whole.
pub(super) fn replay(
    state: &mut State,
    mut r: impl std::io::BufRead,
    path: &Path,
) -> Result<(), StateError> {
    let io = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (mut line, mut next) = (String::new(), String::new());
    let mut have = read_line(&mut r, &mut line).map_err(io)?;
    let mut number = 0;
    while have {
        number += 1;
        let more = read_line(&mut r, &mut next).map_err(io)?;
        match apply(state, &line) {
            Ok(()) => {}
            // Torn: cut short, or with blocks a power cut left zeroed.
            Err(e) if e.is_eof() || line.contains('\0') || !more => return Ok(()),
            Err(e) => {
                return Err(StateError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("line {number}: {e}"),
                })
            }
        }
        std::mem::swap(&mut line, &mut next);
        have = more;
    }
    Ok(())
}

/// The next line without its end into `buf`; false at the end. Bytes that are not UTF-8
/// (a torn block) come through replaced, and so fail to parse.
fn read_line(r: &mut impl std::io::BufRead, buf: &mut String) -> std::io::Result<bool> {
    buf.clear();
    let mut bytes = Vec::new();
    if r.read_until(b'\n', &mut bytes)? == 0 {
        return Ok(false);
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    buf.push_str(&String::from_utf8_lossy(&bytes));
    Ok(true)
}

fn apply(state: &mut State, line: &str) -> Result<(), serde_json::Error> {
    if let Some((device, row)) = packed_line(line) {
        match row {
            Some(text) => state.devices.insert_row(device, Row::parse(text)?),
            None => state.devices.remove_row(&device),
        }
        return Ok(());
    }
    let l: UnpackedLine = serde_json::from_str(line)?;
    match l.entry {
        Some(entry) => state.devices.insert(l.device, entry),
        None => state.devices.remove_row(&l.device),
    }
    Ok(())
}

/// A line as [`Journal::row_line`] writes it: the device and its row's text (None: null).
fn packed_line(line: &str) -> Option<(String, Option<&str>)> {
    let rest = line.strip_prefix("{\"device\":")?;
    let mut names = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let name = names.next()?.ok()?;
    let row = rest[names.byte_offset()..]
        .strip_prefix(",\"row\":")?
        .strip_suffix('}')?;
    Some((name, (row != "null").then_some(row)))
}
