//! The advisory lock held on a state file for a whole run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{ensure_private_dir, parent_dir, StateError};

/// An exclusive advisory lock on `<state>.lock`, held until dropped. The kernel releases it when
/// the process dies, so a crashed run never leaves a lock behind that blocks the next one.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
    /// The pid of an earlier holder that died without releasing cleanly (killed or crashed).
    pub previous_died: Option<String>,
}

impl StateLock {
    pub fn acquire(state_path: &Path) -> Result<StateLock, StateError> {
        let path = lock_path(state_path);
        let lock_err = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        ensure_private_dir(&parent_dir(&path)).map_err(lock_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(StateError::Locked {
                    path: state_path.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        // A clean exit empties the file; a pid left in it is a run that died holding the lock.
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let previous = previous.trim().to_string();
        let previous_died = (!previous.is_empty() && !Path::new("/proc").join(&previous).exists())
            .then_some(previous);
        // Only the holder writes its pid, so a reader that fails to lock sees the holder's.
        file.set_len(0).map_err(lock_err)?;
        file.rewind().map_err(lock_err)?;
        write!(file, "{}", std::process::id()).map_err(lock_err)?;
        file.sync_all().map_err(lock_err)?;
        Ok(StateLock {
            file,
            path,
            previous_died,
        })
    }

    /// Removes the lock file while still holding the lock (after a complete `down`).
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Released cleanly: no pid left behind to be mistaken for a dead holder.
        let _ = self.file.set_len(0);
    }
}

fn lock_path(state_path: &Path) -> PathBuf {
    let mut name = state_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    state_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_at_once_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let held = StateLock::acquire(&path).unwrap();
        let e = StateLock::acquire(&path).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        StateLock::acquire(&path).unwrap();
    }

    #[test]
    fn a_holder_that_died_is_reported_and_a_clean_release_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        drop(StateLock::acquire(&path).unwrap());
        assert_eq!(StateLock::acquire(&path).unwrap().previous_died, None);
        // A pid that cannot exist, as left by a run killed while holding the lock.
        std::fs::write(lock_path(&path), "4194304999").unwrap();
        let lock = StateLock::acquire(&path).unwrap();
        assert_eq!(lock.previous_died.as_deref(), Some("4194304999"));
    }
}
