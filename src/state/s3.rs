//! The state in S3: one object for the state, one for the lock, and a fleet's journal as
//! numbered segment objects. Every write is conditional, so no update is ever lost.
//!
//! - The lock is `KEY.lock`, created with `If-None-Match: *` (only one run can create it) and
//!   deleted with `If-Match` on its own ETag (a run never deletes a lock it does not hold).
//! - The state is `KEY`. Each write carries `If-Match` on the ETag last read or written
//!   (`If-None-Match: *` for the first): if anyone else wrote in between, even a run whose
//!   lock was forced, the write is refused and the run stops.
//! - A fleet's device changes go to `KEY.journal/NNNNNNNNNN` segments, each created with
//!   `If-None-Match: *`. S3 cannot append, so lines wait in memory until an intent needs to
//!   be durable; then every line waiting goes in one segment (group commit: the devices
//!   waiting at that moment share one PUT). A full write of the state folds the segments in
//!   and deletes them.
//!
//! Writes are not retried blindly: after an answer that leaves the outcome unknown (a 5xx,
//! a reset, a timeout), the object is read back. If it holds what was written, the write
//! landed; if it is as it was, the write is sent again; anything else is someone else's
//! write. A blind retry would fail on its own first attempt's ETag, or worse, succeed over
//! someone else's.
//!
//! All S3 traffic runs on a runtime of its own, with an HTTP client of its own: the engine
//! calls the store synchronously (a state write must finish before the create it announces),
//! and a write that needed the engine's runtime to make progress could wait on a worker
//! that is itself waiting for the write.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, ServerSideEncryption};
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};

use super::location::S3Location;
use super::{journal, State, StateError};
use crate::aws::{AwsFailure, Cause};

/// Attempts at a write whose outcome stays unknown before the run gives up.
const WRITE_ATTEMPTS: u32 = 6;

/// Who holds a lock: written as the lock object's body, shown to whoever is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub id: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    /// RFC 3339, UTC.
    pub started: String,
    /// The CI job, when the run is one (GitHub Actions' run URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_run: Option<String>,
}

impl Holder {
    fn new(command: &str) -> Holder {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "unknown".into());
        let ci_run = match (
            var("GITHUB_SERVER_URL"),
            var("GITHUB_REPOSITORY"),
            var("GITHUB_RUN_ID"),
        ) {
            (Some(server), Some(repo), Some(run)) => {
                Some(format!("{server}/{repo}/actions/runs/{run}"))
            }
            _ => None,
        };
        Holder {
            id: new_lock_id(),
            user: var("USER")
                .or_else(|| var("LOGNAME"))
                .unwrap_or_else(|| "unknown".into()),
            host,
            pid: std::process::id(),
            command: command.into(),
            started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ci_run,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (pid {}, `iotreg {}`, since {}",
            self.user, self.host, self.pid, self.command, self.started
        )?;
        if let Some(run) = &self.ci_run {
            write!(f, ", {run}")?;
        }
        write!(f, "; lock id {})", self.id)
    }
}

/// A random version-4 UUID, the form lock ids usually take.
fn new_lock_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the OS random source");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What a failed S3 call comes to, for the decisions the backend makes.
#[derive(Debug, Clone, PartialEq)]
enum Class {
    /// 404 NoSuchKey (or a 404 with no body, as HEAD answers).
    NotFound,
    NoBucket,
    /// 412: the condition of a conditional request did not hold.
    Precondition,
    Denied,
    /// Anything else: the request may or may not have taken effect.
    Unknown,
}

/// By status and error code: S3 documents these codes (NoSuchBucket, PreconditionFailed,
/// AccessDenied, …) but the SDK models none of them for the calls used here, except
/// GetObject's NoSuchKey, which is matched by its type where it is read.
fn class(f: &AwsFailure) -> Class {
    match &f.cause {
        Cause::Service { status, code, .. } => match (status, code.as_deref()) {
            (_, Some("NoSuchBucket")) => Class::NoBucket,
            (_, Some("NoSuchKey")) | (404, None) => Class::NotFound,
            (412, _) | (_, Some("PreconditionFailed")) => Class::Precondition,
            (403, _) | (_, Some("AccessDenied")) => Class::Denied,
            _ => Class::Unknown,
        },
        _ => Class::Unknown,
    }
}

/// The runtime all S3 traffic runs on (see the module doc).
struct Io {
    rt: Option<tokio::runtime::Runtime>,
}

impl Io {
    fn new() -> Io {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("iotreg-state")
            .enable_all()
            .build()
            .expect("a runtime for the state backend");
        Io { rt: Some(rt) }
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().expect("runtime until drop").handle()
    }

    /// Runs `fut` on the backend's runtime and waits for it, from async code.
    async fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        self.handle()
            .spawn(fut)
            .await
            .expect("state backend task panicked")
    }

    /// Runs `fut` on the backend's runtime and waits for it, from synchronous code (the
    /// store, called by the engine's steps). On the engine's runtime the wait hands the
    /// worker's other tasks to another thread first.
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        wait(|| rx.recv().expect("state backend task panicked"))
    }
}

/// Blocks on `f`, telling a multi-threaded tokio runtime first so its other tasks move on.
fn wait<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        // Dropped from async code: a plain drop would block waiting for the runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// What the backend's tasks share: the client, the location, and the state of the writes.
struct Inner {
    loc: S3Location,
    label: PathBuf,
    client: Client,
    /// The same client with the SDK's retries off: writes are retried here, after reading
    /// the object back (see the module doc).
    writer: Client,
    /// The state object's ETag as last read or written; None: it does not exist.
    etag: Mutex<Option<String>>,
    segments: Mutex<Segments>,
    /// One write at a time, in the order they were asked for.
    writes: tokio::sync::Mutex<()>,
}

/// The fleet journal's lines on their way to S3.
#[derive(Default)]
struct Segments {
    pending: Vec<u8>,
    /// Lines handed in so far (a line's ticket is this count after it).
    enqueued: u64,
    /// Lines now in S3, in a segment or folded into the state.
    flushed: u64,
    /// A flush is under way (it takes every line that arrives while it runs).
    flushing: bool,
    next_seq: u64,
    /// The serial of the state object the segments follow: segments are named by it, so a
    /// segment of an older state is never replayed onto a newer one.
    generation: u64,
    /// Segment keys in S3 not yet folded into the state.
    written: Vec<String>,
    /// The failure that stopped the journal; every later wait gets it.
    failed: Option<String>,
    waiters: Vec<(u64, mpsc::SyncSender<Result<(), String>>)>,
}

impl Segments {
    /// Wakes every waiter whose line is now in S3 (or all of them, with the failure).
    fn wake(&mut self) {
        let (flushed, failed) = (self.flushed, self.failed.clone());
        self.waiters.retain(|(ticket, tx)| match &failed {
            Some(e) => {
                let _ = tx.send(Err(e.clone()));
                false
            }
            None if *ticket <= flushed => {
                let _ = tx.send(Ok(()));
                false
            }
            None => true,
        });
    }
}

/// A state kept in S3 (see the module doc).
pub struct S3State {
    inner: Arc<Inner>,
    io: Arc<Io>,
}

/// What an `up` learns about the bucket that holds the state.
#[derive(Debug, Default)]
pub struct Safety {
    /// Some(true): versioning enabled; None: could not be read (the reason in `notes`).
    pub versioning: Option<bool>,
    /// Plain statements of what was found ("public access blocked", …).
    pub found: Vec<String>,
    /// What should be fixed.
    pub warnings: Vec<String>,
}

impl S3State {
    /// A client for the state's bucket: the run's credentials and endpoint, the bucket's own
    /// region when `[state] region` names one, path-style addressing against an endpoint URL
    /// (an emulator has no bucket subdomains).
    pub fn new(sdk: &aws_types::SdkConfig, loc: S3Location, endpoint_url: bool) -> S3State {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        let mut conf = aws_sdk_s3::config::Builder::from(sdk)
            .http_client(http)
            .force_path_style(endpoint_url);
        if let Some(region) = &loc.region {
            conf = conf.region(aws_sdk_s3::config::Region::new(region.clone()));
        }
        let conf = conf.build();
        let writer = conf
            .to_builder()
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        let label = PathBuf::from(format!("s3://{}/{}", loc.bucket, loc.key));
        S3State {
            inner: Arc::new(Inner {
                loc,
                label,
                client: Client::from_conf(conf),
                writer: Client::from_conf(writer),
                etag: Mutex::new(None),
                segments: Mutex::new(Segments::default()),
                writes: tokio::sync::Mutex::new(()),
            }),
            io: Arc::new(Io::new()),
        }
    }

    /// Reads the state and replays its journal segments; None when there is no state object.
    /// Remembers the ETag the next write is conditional on.
    pub async fn load(&self) -> Result<Option<State>, StateError> {
        let inner = self.inner.clone();
        self.io.run(async move { inner.load().await }).await
    }

    /// Writes the whole state (conditional on what was last read), folding the journal in.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let body = state.to_bytes();
        let (inner, serial) = (self.inner.clone(), state.serial);
        self.io
            .block(async move { inner.save(body, Some(serial)).await })
    }

    /// Replaces the state object with `body` (not a state: `migrate`'s marker), dropping
    /// the journal.
    pub fn save_bytes(&self, body: Vec<u8>) -> Result<(), StateError> {
        let inner = self.inner.clone();
        self.io.block(async move { inner.save(body, None).await })
    }

    /// Hands a journal line over; it reaches S3 with the next flush. Cheap: called with the
    /// store's state locked, so lines keep the order of the changes.
    pub fn enqueue(&self, line: Vec<u8>) -> u64 {
        let mut s = self.inner.segments.lock().expect("segments mutex");
        s.pending.extend_from_slice(&line);
        s.enqueued += 1;
        s.enqueued
    }

    /// Waits until the line with this ticket is in S3, flushing if no flush is under way.
    pub fn flush(&self, ticket: u64) -> Result<(), StateError> {
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut s = self.inner.segments.lock().expect("segments mutex");
            if let Some(e) = &s.failed {
                return Err(self.inner.journal_failed(e));
            }
            if s.flushed >= ticket {
                return Ok(());
            }
            s.waiters.push((ticket, tx));
            if !s.flushing {
                s.flushing = true;
                let inner = self.inner.clone();
                self.io
                    .handle()
                    .spawn(async move { inner.flush_all().await });
            }
        }
        match wait(|| rx.recv()) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.inner.journal_failed(&e)),
            Err(_) => Err(self.inner.journal_failed("the journal writer stopped")),
        }
    }

    /// Takes the lock, or says who holds it.
    pub async fn lock(&self, command: &str) -> Result<S3Lock, StateError> {
        let inner = self.inner.clone();
        let holder = Holder::new(command);
        let etag = self
            .io
            .run({
                let holder = holder.clone();
                async move { inner.acquire(&holder).await }
            })
            .await?;
        HELD.lock().expect("held locks").push(Held {
            id: holder.id.clone(),
            inner: self.inner.clone(),
            io: self.io.clone(),
            etag: etag.clone(),
        });
        Ok(S3Lock {
            inner: self.inner.clone(),
            io: self.io.clone(),
            holder,
            etag,
            released: false,
        })
    }

    /// The lock as it stands: its holder and ETag, None when nobody holds it.
    pub async fn read_lock(&self) -> Result<Option<(Holder, String)>, StateError> {
        let inner = self.inner.clone();
        self.io.run(async move { inner.read_lock().await }).await
    }

    /// Deletes the lock with this ETag (and only it): `force-unlock`.
    pub async fn delete_lock(&self, etag: &str) -> Result<bool, StateError> {
        let (inner, etag) = (self.inner.clone(), etag.to_string());
        self.io
            .run(async move {
                let key = inner.loc.lock_key();
                inner.delete_if(&key, &etag).await
            })
            .await
    }

    /// After a complete `down`: the journal segments and the state object go.
    pub async fn remove(&self) -> Result<(), StateError> {
        let inner = self.inner.clone();
        self.io.run(async move { inner.remove().await }).await
    }

    /// Versioning, public access and encryption of the bucket, read for `up`.
    pub async fn safety(&self) -> Safety {
        let inner = self.inner.clone();
        self.io.run(async move { inner.safety().await }).await
    }
}

impl Inner {
    fn failure<E>(&self, key: &str, call: &str, e: &aws_sdk_s3::error::SdkError<E>) -> AwsFailure
    where
        E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
    {
        AwsFailure::new("state", &format!("s3://{}/{key}", self.loc.bucket), call, e)
    }

    fn error(&self, f: AwsFailure) -> StateError {
        match class(&f) {
            Class::NoBucket => StateError::NoBucket {
                path: self.label.clone(),
                bucket: self.loc.bucket.clone(),
            },
            _ => StateError::Aws(f),
        }
    }

    fn conflict(&self) -> StateError {
        StateError::Conflict {
            path: self.label.clone(),
        }
    }

    fn journal_failed(&self, why: &str) -> StateError {
        StateError::Journal {
            path: self.label.clone(),
            message: why.to_string(),
        }
    }

    /// The object's bytes and ETag; None when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StateError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.loc.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            // The one miss the SDK models for GetObject.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                let f = self.failure(key, "GetObject", &e);
                return match class(&f) {
                    Class::NotFound => Ok(None),
                    _ => Err(self.error(f)),
                };
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| StateError::S3 {
            path: self.label.clone(),
            message: format!("GetObject {key}: reading the body: {e}"),
        })?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.loc.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.error(self.failure(prefix, "ListObjectsV2", &e)))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            token = out.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Writes `body` to `key` if the object's ETag is `expect` (None: if it does not
    /// exist), and returns the new ETag. Unknown outcomes are settled by reading back.
    async fn put_if(
        &self,
        key: &str,
        body: &[u8],
        expect: Option<&str>,
    ) -> Result<String, PutError> {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=WRITE_ATTEMPTS {
            let mut put = self
                .writer
                .put_object()
                .bucket(&self.loc.bucket)
                .key(key)
                .content_type("application/json")
                .body(ByteStream::from(body.to_vec()));
            put = match expect {
                Some(etag) => put.if_match(etag),
                None => put.if_none_match("*"),
            };
            if let Some(kms) = &self.loc.kms_key_id {
                put = put
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .ssekms_key_id(kms);
            }
            let f = match put.send().await {
                Ok(out) => return Ok(out.e_tag().unwrap_or_default().to_string()),
                Err(e) => self.failure(key, "PutObject", &e),
            };
            match class(&f) {
                Class::NoBucket | Class::Denied => return Err(PutError::Failed(self.error(f))),
                // Refused, or unknown: what is there now decides.
                Class::Precondition | Class::NotFound | Class::Unknown => {}
            }
            let now = match self.get(key).await {
                Ok(now) => now,
                Err(e) if attempt == WRITE_ATTEMPTS => return Err(PutError::Failed(e)),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    continue;
                }
            };
            match now {
                // Ours: an earlier attempt landed although its answer was lost.
                Some((b, etag)) if b == body => return Ok(etag),
                // As it was: this write did not land.
                Some((_, etag))
                    if Some(etag.as_str()) == expect && class(&f) != Class::Precondition => {}
                None if expect.is_none() && class(&f) != Class::Precondition => {}
                // Someone else's write.
                _ => return Err(PutError::Conflict),
            }
            if attempt == WRITE_ATTEMPTS {
                return Err(PutError::Failed(StateError::Aws(f)));
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        unreachable!("the last attempt returns")
    }

    /// Deletes `key` if its ETag is `etag`: true when it is gone, false when it is someone
    /// else's (another ETag). Unknown outcomes are settled by reading back.
    async fn delete_if(&self, key: &str, etag: &str) -> Result<bool, StateError> {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=WRITE_ATTEMPTS {
            let f = match self
                .writer
                .delete_object()
                .bucket(&self.loc.bucket)
                .key(key)
                .if_match(etag)
                .send()
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) => self.failure(key, "DeleteObject", &e),
            };
            match class(&f) {
                Class::NotFound => return Ok(true),
                Class::NoBucket | Class::Denied => return Err(self.error(f)),
                Class::Precondition | Class::Unknown => {}
            }
            match self.get(key).await {
                Ok(None) => return Ok(true),
                Ok(Some((_, now))) if now != etag => return Ok(false),
                Ok(Some(_)) | Err(_) if attempt < WRITE_ATTEMPTS => {}
                Ok(Some(_)) => return Err(StateError::Aws(f)),
                Err(e) => return Err(e),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        unreachable!("the last attempt returns")
    }

    async fn load(&self) -> Result<Option<State>, StateError> {
        let key = self.loc.key.clone();
        let Some((body, etag)) = self.get(&key).await? else {
            *self.etag.lock().expect("etag mutex") = None;
            return Ok(None);
        };
        // The next write is conditional on this version, whatever it holds (a `migrate`
        // marker is overwritten by the state migrated back).
        *self.etag.lock().expect("etag mutex") = Some(etag);
        let text = String::from_utf8(body).map_err(|_| StateError::Corrupt {
            path: self.label.clone(),
            message: "not UTF-8".into(),
        })?;
        let mut state = State::parse(&text, &self.label)?;
        let segments = self.list(&self.loc.journal_prefix()).await?;
        let own = self.segment_prefix(state.serial);
        let mut next_seq = 0;
        for seg in segments.iter().filter(|k| k.starts_with(&own)) {
            let Some((lines, _)) = self.get(seg).await? else {
                continue;
            };
            let path = PathBuf::from(format!("s3://{}/{seg}", self.loc.bucket));
            journal::replay(&mut state, lines.as_slice(), &path)?;
            if let Ok(n) = seg[own.len()..].parse::<u64>() {
                next_seq = next_seq.max(n + 1);
            }
        }
        let mut s = self.segments.lock().expect("segments mutex");
        s.generation = state.serial;
        s.next_seq = next_seq;
        // All of them, stale ones too: the next full write deletes them.
        s.written = segments;
        Ok(Some(state))
    }

    fn segment_prefix(&self, generation: u64) -> String {
        format!("{}{generation:020}/", self.loc.journal_prefix())
    }

    /// Writes the state object; `generation`: the serial of the state written, which the
    /// journal segments written after it carry (None: not a state, a `migrate` marker).
    async fn save(&self, body: Vec<u8>, generation: Option<u64>) -> Result<(), StateError> {
        // Never key material in a bucket, whatever a future record might carry.
        if body.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err(StateError::S3 {
                path: self.label.clone(),
                message: "refusing to write a state that holds a private key".into(),
            });
        }
        let _turn = self.writes.lock().await;
        // Every line handed in so far is in this state: the store saves with its state
        // locked, and lines are handed in under the same lock.
        let folded = self.segments.lock().expect("segments mutex").enqueued;
        let expect = self.etag.lock().expect("etag mutex").clone();
        let result = match self.put_if(&self.loc.key, &body, expect.as_deref()).await {
            Ok(etag) => Ok(etag),
            Err(PutError::Conflict) => Err(self.conflict()),
            Err(PutError::Failed(e)) => Err(e),
        };
        let old = {
            let mut s = self.segments.lock().expect("segments mutex");
            match result {
                Ok(etag) => *self.etag.lock().expect("etag mutex") = Some(etag),
                Err(e) => {
                    // Devices waiting for their lines learn it too.
                    s.failed = Some(e.to_string());
                    s.wake();
                    return Err(e);
                }
            }
            s.pending.clear();
            s.flushed = s.flushed.max(folded);
            if let Some(g) = generation {
                if g != s.generation {
                    s.generation = g;
                    s.next_seq = 0;
                }
            }
            s.wake();
            std::mem::take(&mut s.written)
        };
        self.delete_segments(&old).await
    }

    /// Deletes folded segments, in batches. One left behind is harmless: it belongs to an
    /// older serial, and a load replays only the segments of the state's own serial.
    async fn delete_segments(&self, keys: &[String]) -> Result<(), StateError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .expect("keys are set");
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("objects are set");
            self.client
                .delete_objects()
                .bucket(&self.loc.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| {
                    self.error(self.failure(&self.loc.journal_prefix(), "DeleteObjects", &e))
                })?;
        }
        Ok(())
    }

    /// Writes every waiting line as segments until none is left, waking waiters as their
    /// lines land. Runs as one task at a time (`flushing`).
    async fn flush_all(self: Arc<Self>) {
        loop {
            let _turn = self.writes.lock().await;
            let (body, upto, seq, generation) = {
                let mut s = self.segments.lock().expect("segments mutex");
                if s.pending.is_empty() || s.failed.is_some() {
                    // Nothing waits: every line landed in a segment or was folded into the
                    // state by a save (a failure is already recorded in `failed`).
                    if s.failed.is_none() {
                        s.flushed = s.enqueued;
                    }
                    s.flushing = false;
                    s.wake();
                    return;
                }
                let seq = s.next_seq;
                s.next_seq += 1;
                (
                    std::mem::take(&mut s.pending),
                    s.enqueued,
                    seq,
                    s.generation,
                )
            };
            let key = format!("{}{seq:010}", self.segment_prefix(generation));
            let result = self.put_if(&key, &body, None).await;
            let mut s = self.segments.lock().expect("segments mutex");
            match result {
                Ok(_) => {
                    s.written.push(key);
                    s.flushed = s.flushed.max(upto);
                }
                Err(PutError::Conflict) => {
                    s.failed = Some(format!(
                        "journal segment {key} was written by someone else: another run is writing this state"
                    ));
                }
                Err(PutError::Failed(e)) => s.failed = Some(e.to_string()),
            }
            s.wake();
        }
    }

    async fn acquire(&self, holder: &Holder) -> Result<String, StateError> {
        let key = self.loc.lock_key();
        let body = serde_json::to_vec_pretty(holder).expect("holder serialises");
        // A lock released between our refused write and our read is free again: try twice.
        for _ in 0..2 {
            match self.put_if(&key, &body, None).await {
                Ok(etag) => return Ok(etag),
                Err(PutError::Failed(e)) => return Err(e),
                Err(PutError::Conflict) => {}
            }
            if let Some((holder, _)) = self.read_lock().await? {
                return Err(StateError::HeldBy {
                    path: self.label.clone(),
                    holder: Box::new(holder),
                });
            }
        }
        Err(StateError::S3 {
            path: self.label.clone(),
            message: "the lock keeps changing hands; try again".into(),
        })
    }

    async fn read_lock(&self) -> Result<Option<(Holder, String)>, StateError> {
        let key = self.loc.lock_key();
        let Some((body, etag)) = self.get(&key).await? else {
            return Ok(None);
        };
        let holder = serde_json::from_slice(&body).unwrap_or_else(|_| Holder {
            id: "unreadable".into(),
            user: "unknown".into(),
            host: "unknown".into(),
            pid: 0,
            command: String::from_utf8_lossy(&body).chars().take(60).collect(),
            started: "unknown".into(),
            ci_run: None,
        });
        Ok(Some((holder, etag)))
    }

    async fn remove(&self) -> Result<(), StateError> {
        let _turn = self.writes.lock().await;
        let segments = self.list(&self.loc.journal_prefix()).await?;
        self.delete_segments(&segments).await?;
        let etag = self.etag.lock().expect("etag mutex").clone();
        if let Some(etag) = etag {
            if !self.delete_if(&self.loc.key, &etag).await? {
                return Err(self.conflict());
            }
        }
        *self.etag.lock().expect("etag mutex") = None;
        Ok(())
    }

    async fn safety(&self) -> Safety {
        let mut s = Safety::default();
        let b = &self.loc.bucket;
        // The three reads at once: each is a round trip `up` waits for.
        let (versioning, public_access, encryption) = tokio::join!(
            self.client.get_bucket_versioning().bucket(b).send(),
            self.client.get_public_access_block().bucket(b).send(),
            self.client.get_bucket_encryption().bucket(b).send(),
        );
        match versioning {
            Ok(out) => {
                let on = out.status() == Some(&BucketVersioningStatus::Enabled);
                s.versioning = Some(on);
                if on {
                    s.found.push("versioning on".into());
                } else {
                    s.warnings.push(format!(
                        "bucket {b}: versioning is off: a bad write cannot be undone (aws s3api put-bucket-versioning --bucket {b} --versioning-configuration Status=Enabled)"
                    ));
                }
            }
            Err(e) => s.warnings.push(format!(
                "bucket {b}: cannot read versioning: {}",
                self.failure("", "GetBucketVersioning", &e)
            )),
        }
        match public_access {
            Ok(out) => {
                let c = out.public_access_block_configuration();
                let all = c.is_some_and(|c| {
                    [
                        c.block_public_acls(),
                        c.ignore_public_acls(),
                        c.block_public_policy(),
                        c.restrict_public_buckets(),
                    ]
                    .iter()
                    .all(|v| *v == Some(true))
                });
                if all {
                    s.found.push("public access blocked".into());
                } else {
                    s.warnings.push(format!(
                        "bucket {b}: public access is not fully blocked (all four settings of its public access block should be on)"
                    ));
                }
            }
            Err(e) => {
                let f = self.failure("", "GetPublicAccessBlock", &e);
                let none = matches!(&f.cause, Cause::Service { code: Some(c), .. } if c == "NoSuchPublicAccessBlockConfiguration");
                s.warnings.push(if none {
                    format!("bucket {b}: no public access block: turn all four settings on")
                } else {
                    format!("bucket {b}: cannot read its public access block: {f}")
                });
            }
        }
        match encryption {
            Ok(out) => {
                let algo = out
                    .server_side_encryption_configuration()
                    .and_then(|c| c.rules().first())
                    .and_then(|r| r.apply_server_side_encryption_by_default())
                    .map(|d| d.sse_algorithm().as_str().to_string());
                match algo {
                    Some(a) => s.found.push(format!("encrypted ({a})")),
                    None => s
                        .warnings
                        .push(format!("bucket {b}: no default encryption")),
                }
            }
            Err(e) => {
                let f = self.failure("", "GetBucketEncryption", &e);
                let none = matches!(&f.cause, Cause::Service { code: Some(c), .. } if c == "ServerSideEncryptionConfigurationNotFoundError");
                s.warnings.push(if none {
                    format!("bucket {b}: no default encryption configured")
                } else {
                    format!("bucket {b}: cannot read its encryption: {f}")
                });
            }
        }
        if let Some(kms) = &self.loc.kms_key_id {
            s.found
                .push(format!("objects written with SSE-KMS key {kms}"));
        }
        s
    }
}

enum PutError {
    /// Someone else's write is there.
    Conflict,
    Failed(StateError),
}

/// The locks this process holds, so that exiting at once (a second Ctrl-C) still releases
/// them: the process is alive and can, unlike one that is killed.
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// A lock this process holds: its id, where it is, and the ETag it was created with.
struct Held {
    id: String,
    inner: Arc<Inner>,
    io: Arc<Io>,
    etag: String,
}

/// Releases every lock still held (each only if still ours), before an immediate exit.
pub fn release_held_locks() {
    let held = std::mem::take(&mut *HELD.lock().expect("held locks"));
    for Held {
        inner, io, etag, ..
    } in held
    {
        let key = inner.loc.lock_key();
        let _ = io.block(async move { inner.delete_if(&key, &etag).await });
    }
}

/// A held lock, released (deleted with `If-Match` on its ETag) when dropped.
pub struct S3Lock {
    inner: Arc<Inner>,
    io: Arc<Io>,
    pub holder: Holder,
    etag: String,
    released: bool,
}

impl std::fmt::Debug for S3Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Lock")
            .field("holder", &self.holder)
            .finish()
    }
}

impl S3Lock {
    /// Deletes the lock if it is still ours; says so when it is not.
    pub fn release(&mut self) -> Result<(), StateError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        HELD.lock()
            .expect("held locks")
            .retain(|h| h.id != self.holder.id);
        let (inner, etag) = (self.inner.clone(), self.etag.clone());
        let key = self.inner.loc.lock_key();
        let ours = self
            .io
            .block(async move { inner.delete_if(&key, &etag).await })?;
        if !ours {
            return Err(StateError::S3 {
                path: self.inner.label.clone(),
                message: format!(
                    "the lock is no longer ours (lock id {} was forced); left the new holder's lock in place",
                    self.holder.id
                ),
            });
        }
        Ok(())
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("iotreg: warning: {e}");
        }
    }
}

#[cfg(test)]
impl S3State {
    /// A state over the given clients (mocks): `client` for reads, `writer` for writes.
    fn with_clients(client: Client, writer: Client, loc: S3Location) -> S3State {
        let label = PathBuf::from(format!("s3://{}/{}", loc.bucket, loc.key));
        S3State {
            inner: Arc::new(Inner {
                loc,
                label,
                client,
                writer,
                etag: Mutex::new(None),
                segments: Mutex::new(Segments::default()),
                writes: tokio::sync::Mutex::new(()),
            }),
            io: Arc::new(Io::new()),
        }
    }
}

#[cfg(test)]
#[path = "s3_tests.rs"]
mod tests;
