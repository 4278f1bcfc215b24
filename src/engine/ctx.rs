//! What a step sees of the engine: its records in the state, progress reporting, cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Events, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{self, Phase, Record, Store};

/// What a step sees of the engine: the state and a way to report progress.
pub struct Ctx {
    pub(super) store: Arc<Store>,
    pub(super) events: Arc<dyn Events>,
    pub(super) cancel: Arc<AtomicBool>,
    current: Option<String>,
    /// A fleet device: records are that device's (same keys as the single stack's).
    pub(super) device: Option<String>,
    /// A resource kind's code run for another resource (the device certificate's for claim
    /// provisioning's claim certificate): its key, as the code names it, is this one in the
    /// state.
    alias: Option<(&'static str, &'static str)>,
}

impl Ctx {
    pub fn new(store: Arc<Store>, events: Arc<dyn Events>, cancel: Arc<AtomicBool>) -> Ctx {
        Ctx {
            store,
            events,
            cancel,
            current: None,
            device: None,
            alias: None,
        }
    }

    pub(super) fn for_step(&self, key: &str) -> Ctx {
        Ctx {
            store: self.store.clone(),
            events: self.events.clone(),
            cancel: self.cancel.clone(),
            current: Some(key.to_string()),
            device: self.device.clone(),
            alias: self.alias,
        }
    }

    /// This context for code that names its record `from` while it is kept as `to`.
    pub fn aliased(&self, from: &'static str, to: &'static str) -> Ctx {
        Ctx {
            store: self.store.clone(),
            events: self.events.clone(),
            cancel: self.cancel.clone(),
            current: self.current.clone(),
            device: self.device.clone(),
            alias: Some((from, to)),
        }
    }

    /// The key in the state of what the code calls `key`.
    fn state_key<'a>(&self, key: &'a str) -> &'a str {
        match self.alias {
            Some((from, to)) if key == from => to,
            _ => key,
        }
    }

    /// The context of one fleet device, reporting to `events`.
    pub fn for_device(&self, device: &str, events: Arc<dyn Events>) -> Ctx {
        Ctx {
            store: self.store.clone(),
            events,
            cancel: self.cancel.clone(),
            current: None,
            device: Some(device.to_string()),
            alias: None,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn record(&self, key: &str) -> Option<Record> {
        let key = self.state_key(key);
        let mut rec = self.store.read(|s| match &self.device {
            Some(d) => s.devices.get(d).and_then(|e| e.get(key).cloned()),
            None => s.get(key).cloned(),
        });
        // The code sees its own key, so the record compares equal to the one it builds.
        if let (Some(r), Some((from, _))) = (rec.as_mut(), self.alias) {
            if r.key == key {
                r.key = from.to_string();
            }
        }
        rec
    }

    /// Writes a record. A fleet device's journal line waits for the disk only when `durable`;
    /// the single stack's state is rewritten in full at once when `durable`, and otherwise
    /// when the store says (locally at once too; in S3 with the next write).
    fn put(&self, mut record: Record, durable: bool) -> Result<(), StepError> {
        record.key = self.state_key(&record.key).to_string();
        match (&self.device, durable) {
            (Some(d), _) => self.store.update_device(d, durable, |e| e.put(record))?,
            (None, true) => self.store.update(|s| s.put(record))?,
            (None, false) => self.store.update_lazy(|s| s.put(record))?,
        }
        Ok(())
    }

    /// Records that a create call is about to be sent, before it is sent: on disk when this
    /// returns, so that a crash after the call leaves something to look for.
    pub fn intent(&self, mut record: Record) -> Result<Record, StepError> {
        record.phase = Phase::Intent;
        record.intent_at_ms = Some(state::now_ms());
        self.put(record.clone(), true)?;
        Ok(record)
    }

    /// Records a resource as existing (created, adopted or borrowed). For a fleet device it
    /// need not wait for the disk: lost, it leaves the intent, which resume looks up.
    pub fn commit(&self, record: Record) -> Result<(), StepError> {
        self.put(record, false)
    }

    /// What `up` last applied to this resource, if known.
    pub fn applied(&self, key: &str) -> Option<Fields> {
        let key = self.state_key(key);
        self.store.read(|s| match &self.device {
            Some(d) => s.devices.get(d).and_then(|mut e| e.applied.remove(key)),
            None => s.applied.get(key).cloned(),
        })
    }

    /// Records what an `ensure` just brought the resource to. Saved only when it differs.
    pub(super) fn set_applied(&self, key: &str, fields: Fields) -> Result<(), StepError> {
        if self.record(key).is_none() || self.applied(key).as_ref() == Some(&fields) {
            return Ok(());
        }
        let key = self.state_key(key);
        match &self.device {
            // Advisory (it labels a plan's differences): no need to wait for the disk.
            Some(d) => self.store.update_device(d, false, |e| {
                e.applied.insert(key.to_string(), fields);
            })?,
            None => self.store.update_lazy(|s| {
                s.applied.insert(key.to_string(), fields);
            })?,
        }
        Ok(())
    }

    /// A resource found live as wanted: Unchanged when the state already says so, else the
    /// record is written and it counts as Adopted.
    pub fn keep(&self, recorded: Option<&Record>, record: Record) -> Result<Outcome, StepError> {
        Ok(if self.save(recorded, record)? {
            Outcome::Adopted
        } else {
            Outcome::Unchanged
        })
    }

    /// Writes `record` unless the state already has it as it is (`recorded`); true when it
    /// wrote.
    pub fn save(&self, recorded: Option<&Record>, record: Record) -> Result<bool, StepError> {
        let changed = recorded != Some(&record);
        if changed {
            self.commit(record)?;
        }
        Ok(changed)
    }

    pub fn forget(&self, key: &str) -> Result<(), StepError> {
        let key = self.state_key(key);
        match &self.device {
            // Lost, a record of something deleted is found gone by the next run.
            Some(d) => self.store.update_device(d, false, |e| e.remove(key))?,
            None => self.store.update_lazy(|s| s.remove(key))?,
        }
        Ok(())
    }

    pub fn progress(&self, message: &str) {
        if let Some(key) = &self.current {
            self.events.progress(key, message);
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}
