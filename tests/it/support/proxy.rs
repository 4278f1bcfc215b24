//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1, placed between iotreg and the emulator.
//!
//! Why: the emulator always answers promptly and correctly, but iotreg has to survive a bad day
//! at AWS: throttling, 5xx answers, dropped connections, answers that come too late, and writes
//! that took effect although the caller saw an error. This proxy spoils a share of requests in
//! exactly those ways so the end-to-end tests can prove that retries, idempotency and cleanup
//! hold up.
//!
//! Why it is built like this:
//! - Decisions are a pure function of (seed, request sequence number) (splitmix64), so a failing
//!   run can be replayed with the same seed. Sequence numbers are handed out in the order
//!   complete requests arrive.
//! - Blocking std threads (one listener, one thread per connection) so it works the same
//!   whether or not the caller is inside a tokio runtime, and needs no extra crates.
//! - One request per client connection, answered with `Connection: close` (the SDK simply
//!   reconnects), and a fresh upstream connection per request, also `Connection: close`. That
//!   keeps request boundaries, and so fault decisions, unambiguous.
//! - Requests are forwarded unchanged apart from hop-by-hop framing: `Connection`,
//!   `Keep-Alive`, `Proxy-Connection` and `Expect` are dropped (the proxy answers
//!   `100 Continue` itself), `Connection: close` is appended, and a chunked body is de-chunked
//!   and sent with `Content-Length`. Every other header (Host and all SigV4-signed ones) and the
//!   body go through byte for byte. Responses likewise: only `Connection`/`Keep-Alive` are
//!   replaced by `Connection: close`; the body, chunked or not, is relayed as received.
//! - Fault kinds:
//!   - `Unavailable`: `503` with `{"message":"injected 503"}`, not forwarded.
//!   - `Throttle`: the throttling error the calling service really sends (service taken from
//!     the SigV4 credential scope), not forwarded; `503` for a service it does not know.
//!   - `Reset`: the request is read, then the connection is closed with a TCP RST (SO_LINGER 0),
//!     not forwarded.
//!   - `Delay`: the request is forwarded at once, and its answer held for `delay` before it is
//!     relayed (if the client is still there). The client's timeout fires first, so the write
//!     happened but the caller never learns it did. Counted as forwarded.
//!   - `ForwardThen500`: forwarded and the upstream answer read completely (so the effect
//!     happened), then discarded and replaced by a service-shaped `500`.
//! - S3 (signing name `s3`, path-style requests such as `PUT /bucket/key`): `Throttle` answers
//!   what S3 sends when it throttles, `503 Slow Down` with the REST-XML error
//!   `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>...`
//!   (`application/xml`, `x-amz-request-id`); `ForwardThen500` answers `500` `InternalError`
//!   "We encountered an internal error. Please try again.". `Unavailable` stays the generic
//!   JSON `503` for every service (a load balancer's, not S3's). The SDK sends an in-memory
//!   PutObject body with `Content-Length` (its CRC32 in `x-amz-checksum-crc32`, the payload's
//!   SHA-256 in `x-amz-content-sha256`) and a streaming one aws-chunked
//!   (`Content-Encoding: aws-chunked`, `x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER`,
//!   still framed by `Content-Length`): both are relayed byte for byte. Only the HTTP-level
//!   `Transfer-Encoding: chunked` is ever undone, and SigV4 never signs `Transfer-Encoding`
//!   (aws-sigv4 excludes it) nor a `Content-Length` that was not sent, so signatures stay valid.
//! - Injected answers to `HEAD` requests carry no body (HTTP forbids one), only the status and
//!   headers, as S3 answers a failed HeadObject.
//! - Choosing requests (all optional; by default every request is a candidate, as before):
//!   - [`FaultConfig::only`]: a [`Matcher`] (signing service, method, a substring or suffix of
//!     the path, a substring of the query); only matching requests are considered for faults
//!     and take a sequence number. Others are relayed untouched and do not shift the seeded
//!     decisions.
//!   - [`FaultConfig::deny`] (or [`FaultProxy::set_deny`]): [`Rule`]s answering matching
//!     requests with a canned S3-style error (e.g. `403 AccessDenied` for GetObject of the
//!     state) instead of forwarding them. Checked first (the first matching rule wins); a
//!     denied request takes no sequence number either.
//! - Drop stops the listener and shuts down every open socket, so all threads end promptly and
//!   the port is closed by the time `drop` returns.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted in either direction.
const MAX_BODY: usize = 256 * 1024 * 1024;
/// How long a client may stay silent before its connection is dropped.
const CLIENT_IDLE: Duration = Duration::from_secs(120);
/// How long the upstream may stay silent mid-response.
const UPSTREAM_IDLE: Duration = Duration::from_secs(120);
const UPSTREAM_CONNECT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Unavailable,
    Throttle,
    Reset,
    Delay,
    ForwardThen500,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Unavailable,
        FaultKind::Throttle,
        FaultKind::Reset,
        FaultKind::Delay,
        FaultKind::ForwardThen500,
    ];

    /// The key used in [`Stats::faults`].
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Unavailable => "unavailable",
            FaultKind::Throttle => "throttle",
            FaultKind::Reset => "reset",
            FaultKind::Delay => "delay",
            FaultKind::ForwardThen500 => "forward_then_500",
        }
    }
}

/// What the proxy does. `FaultConfig::default()` is a proxy that spoils nothing: rate 0, no
/// kinds, no filter, no rules.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    pub seed: u64,
    /// Share of requests that get a fault, 0.0..=1.0 (clamped).
    pub rate: f64,
    /// Kinds to choose from, uniformly; empty means no faults.
    pub kinds: Vec<FaultKind>,
    /// How long `Delay` holds a request.
    pub delay: Duration,
    /// Only requests matching this are considered for faults (and take a sequence number);
    /// the others are relayed untouched. `None`: every request, as before.
    pub only: Option<Matcher>,
    /// Requests matching one of these rules (the first that matches) get its canned error
    /// instead of being forwarded, whatever the fault decisions; they take no sequence number.
    pub deny: Vec<Rule>,
}

/// Which requests a fault filter or a [`Rule`] applies to: every field that is set must match,
/// so `Matcher::default()` matches every request.
///
/// ```ignore
/// Matcher::service("s3")                                  // every S3 request
/// Matcher::service("s3").method("GET").path_ends_with("/state.json")
/// Matcher::default().method("PUT").path_contains(".lock") // any service
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matcher {
    /// SigV4 signing name from the credential scope (`s3`, `iot`, `iotdata`, `lambda`, `iam`,
    /// `sts`, `logs`, ...), compared ignoring case. An unsigned request has none and does not
    /// match a matcher that names one.
    pub service: Option<String>,
    /// HTTP method (`GET`, `PUT`, `DELETE`, `HEAD`, `POST`), compared ignoring case.
    pub method: Option<String>,
    /// A substring of the request path exactly as sent: percent-encoded, without the query
    /// string. For S3 (path-style) that is `/bucket/key`, e.g. `/state.json` or
    /// `/my-bucket/env/state.json.lock`.
    pub path_contains: Option<String>,
    /// How the path (as for `path_contains`) must end: `/state.json` matches the state object
    /// but not `/state.json.lock` nor `/state.json.journal/0000000001`, which `path_contains`
    /// would.
    pub path_ends_with: Option<String>,
    /// A substring of the query string as sent (after `?`), e.g. `list-type=2`.
    pub query_contains: Option<String>,
}

impl Matcher {
    /// Every request signed for `service` (its SigV4 signing name).
    pub fn service(service: &str) -> Matcher {
        Matcher {
            service: Some(service.to_string()),
            ..Matcher::default()
        }
    }

    /// Also requires this HTTP method.
    pub fn method(mut self, method: &str) -> Matcher {
        self.method = Some(method.to_string());
        self
    }

    /// Also requires the path to contain `part`.
    pub fn path_contains(mut self, part: &str) -> Matcher {
        self.path_contains = Some(part.to_string());
        self
    }

    /// Also requires the path to end with `end`.
    pub fn path_ends_with(mut self, end: &str) -> Matcher {
        self.path_ends_with = Some(end.to_string());
        self
    }

    /// Also requires the query string to contain `part`.
    pub fn query_contains(mut self, part: &str) -> Matcher {
        self.query_contains = Some(part.to_string());
        self
    }

    /// Whether a request matches: `target` is the request target from the request line
    /// (`/bucket/key?x=y`), `service` the signing name of its credential scope.
    pub fn matches(&self, method: &str, target: &str, service: Option<&str>) -> bool {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        self.service
            .as_deref()
            .is_none_or(|want| service.is_some_and(|s| s.eq_ignore_ascii_case(want)))
            && self
                .method
                .as_deref()
                .is_none_or(|want| method.eq_ignore_ascii_case(want))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|part| path.contains(part))
            && self
                .path_ends_with
                .as_deref()
                .is_none_or(|end| path.ends_with(end))
            && self
                .query_contains
                .as_deref()
                .is_none_or(|part| query.contains(part))
    }
}

/// A canned error for matching requests, answered instead of forwarding them, in S3's
/// REST-XML error shape: `<Error><Code>{code}</Code><Message>{message}</Message>...`
/// (`application/xml`, `x-amz-request-id`), as S3 answers for a bucket policy or IAM denial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub when: Matcher,
    /// HTTP status, e.g. 403.
    pub status: u16,
    /// The S3 error code, e.g. `AccessDenied`.
    pub code: String,
    pub message: String,
}

impl Rule {
    /// Any S3-style error: `Rule::s3_error(when, 404, "NoSuchBucket", "The specified bucket does not exist")`.
    pub fn s3_error(when: Matcher, status: u16, code: &str, message: &str) -> Rule {
        Rule {
            when,
            status,
            code: code.to_string(),
            message: message.to_string(),
        }
    }

    /// `403 AccessDenied` "Access Denied", what S3 answers a request it does not authorize.
    pub fn access_denied(when: Matcher) -> Rule {
        Rule::s3_error(when, 403, "AccessDenied", "Access Denied")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Complete requests received from clients.
    pub requests: usize,
    /// Requests written to the upstream.
    pub forwarded: usize,
    /// Faults injected, by [`FaultKind::name`]; kinds never injected are absent.
    pub faults: BTreeMap<&'static str, usize>,
    /// Requests answered by a [`Rule`] (not forwarded, no fault decision).
    pub denied: usize,
    /// Requests outside [`FaultConfig::only`], relayed without a fault decision.
    pub exempt: usize,
}

impl Stats {
    pub fn fault(&self, name: &str) -> usize {
        self.faults.get(name).copied().unwrap_or(0)
    }

    pub fn total_faults(&self) -> usize {
        self.faults.values().sum()
    }
}

/// The fault (if any) for request number `seq`: a pure function of its inputs, so the same seed
/// replays the same sequence of decisions.
pub fn decide(seed: u64, seq: u64, rate: f64, kinds: &[FaultKind]) -> Option<FaultKind> {
    if kinds.is_empty() || rate.is_nan() || rate <= 0.0 {
        return None;
    }
    let mut seed_state = seed;
    let mut state = splitmix64(&mut seed_state) ^ seq;
    let roll = (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
    if roll >= rate {
        return None;
    }
    let pick = splitmix64(&mut state) % kinds.len() as u64;
    Some(kinds[pick as usize])
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    seed: u64,
    kinds: Vec<FaultKind>,
    delay: Duration,
    only: Option<Matcher>,
    deny: Mutex<Vec<Rule>>,
    rate_bits: AtomicU64,
    seq: AtomicU64,
    stop: AtomicBool,
    stats: Mutex<Stats>,
    /// Clones of every open client and upstream socket, to shut them down on Drop.
    open: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// A socket registered in `Shared::open`; deregistered (its clone closed) before the socket
/// itself closes, so closing it really closes the connection.
struct Tracked {
    stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.shared.open).remove(&self.id);
    }
}

impl Shared {
    fn track(self: &Arc<Self>, stream: TcpStream) -> io::Result<Tracked> {
        let clone = stream.try_clone()?;
        let mut open = lock(&self.open);
        // Checked under the lock Drop sweeps with: a socket is either swept or refused.
        if self.stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("fault proxy stopping"));
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        open.insert(id, clone);
        Ok(Tracked {
            stream,
            id,
            shared: Arc::clone(self),
        })
    }

    /// Sleeps `d` unless the proxy stops first; true if the full time passed.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` ("http://127.0.0.1:PORT"),
    /// which must be a loopback address. Panics if it cannot (test infrastructure).
    pub fn start(upstream: &str, config: FaultConfig) -> FaultProxy {
        let upstream = parse_upstream(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fault proxy: nonblocking listener");
        let addr = listener.local_addr().expect("fault proxy: local_addr");
        let shared = Arc::new(Shared {
            upstream,
            seed: config.seed,
            kinds: config.kinds,
            delay: config.delay,
            only: config.only,
            deny: Mutex::new(config.deny),
            rate_bits: AtomicU64::new(clamp_rate(config.rate).to_bits()),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("fault proxy: spawn listener thread");
        FaultProxy {
            addr,
            shared,
            listener: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Changes the fault rate for requests decided from now on (clamped to 0.0..=1.0).
    pub fn set_rate(&self, rate: f64) {
        self.shared
            .rate_bits
            .store(clamp_rate(rate).to_bits(), Ordering::SeqCst);
    }

    /// Replaces the deny rules for requests arriving from now on (empty: deny nothing).
    pub fn set_deny(&self, rules: Vec<Rule>) {
        *lock(&self.shared.deny) = rules;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The listener notices within one poll interval and closes the port on its way out;
        // after this join no new worker can appear.
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        for s in lock(&self.shared.open).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for w in workers {
            let _ = w.join();
        }
    }
}

fn parse_upstream(upstream: &str) -> SocketAddr {
    let rest = upstream.strip_prefix("http://").unwrap_or(upstream);
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = authority
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("fault proxy: bad upstream {upstream:?}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("fault proxy: upstream {upstream:?} has no address"));
    assert!(
        addr.ip().is_loopback(),
        "fault proxy: upstream {upstream:?} is not a loopback address"
    );
    addr
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor owned by `listener`, which outlives the call.
        unsafe { libc::poll(&mut pfd, 1, 20) };
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let conn_shared = Arc::clone(&shared);
                let spawned = thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || serve(conn_shared, stream));
                let mut workers = lock(&shared.workers);
                workers.retain(|h| !h.is_finished());
                if let Ok(h) = spawned {
                    workers.push(h);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // E.g. out of descriptors: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One client connection: one request, one answer (or fault), then close.
fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(CLIENT_IDLE));
    let Ok(mut client) = shared.track(stream) else {
        return;
    };
    let req = match read_request(&mut client.stream) {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => {
            if e.kind() == io::ErrorKind::InvalidData {
                let _ = client.stream.write_all(&canned(
                    400,
                    "Bad Request",
                    "application/json",
                    &[],
                    r#"{"message":"fault proxy: malformed request"}"#,
                ));
                finish(client);
            }
            return;
        }
    };

    let service = req.service.as_deref();
    let denied = lock(&shared.deny)
        .iter()
        .find(|rule| rule.when.matches(&req.method, &req.target, service))
        .map(|rule| s3_error(rule.status, &rule.code, &rule.message));
    if let Some(answer) = denied {
        {
            let mut stats = lock(&shared.stats);
            stats.requests += 1;
            stats.denied += 1;
        }
        if client
            .stream
            .write_all(&without_body_for(&req.method, answer))
            .is_ok()
        {
            finish(client);
        }
        return;
    }
    let candidate = shared
        .only
        .as_ref()
        .is_none_or(|only| only.matches(&req.method, &req.target, service));

    let fault = if candidate {
        let seq = shared.seq.fetch_add(1, Ordering::SeqCst);
        let rate = f64::from_bits(shared.rate_bits.load(Ordering::SeqCst));
        decide(shared.seed, seq, rate, &shared.kinds)
    } else {
        None
    };
    {
        let mut stats = lock(&shared.stats);
        stats.requests += 1;
        if !candidate {
            stats.exempt += 1;
        }
        if let Some(kind) = fault {
            *stats.faults.entry(kind.name()).or_default() += 1;
        }
    }

    let injected = |answer: Vec<u8>| without_body_for(&req.method, answer);
    let answer = match fault {
        None => relay(&shared, &req),
        Some(FaultKind::Unavailable) => injected(unavailable()),
        Some(FaultKind::Throttle) => injected(throttle(service)),
        Some(FaultKind::Reset) => {
            reset(client);
            return;
        }
        Some(FaultKind::Delay) => {
            // Forwarded at once; only the answer is late, past the client's timeout.
            let answer = relay(&shared, &req);
            if !shared.sleep(shared.delay) {
                return;
            }
            answer
        }
        Some(FaultKind::ForwardThen500) => match forward(&shared, &req) {
            Ok(_) => injected(internal_error(service)),
            Err(_) => injected(bad_gateway()),
        },
    };
    if client.stream.write_all(&answer).is_ok() {
        finish(client);
    }
}

/// Closes gracefully: our side first, then a short drain so unread client bytes do not turn
/// the close into a reset that could destroy the answer in flight.
fn finish(mut client: Tracked) {
    let _ = client.stream.flush();
    let _ = client.stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(500);
    let _ = client
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match client.stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

/// Closes with a TCP RST: SO_LINGER with a zero timeout, then close.
fn reset(client: Tracked) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is a live socket owned by `client.stream`; the option value points
    // to a properly sized `linger` that outlives the call.
    unsafe {
        libc::setsockopt(
            client.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast::<libc::c_void>(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // Tracked::drop closes the registered clone first, so this closes the last descriptor.
    drop(client);
}

/// Forwards and returns the upstream answer as it goes to the client, or a 502.
fn relay(shared: &Arc<Shared>, req: &Request) -> Vec<u8> {
    match forward(shared, req) {
        Ok(resp) => resp.to_client(),
        Err(_) => without_body_for(&req.method, bad_gateway()),
    }
}

fn forward(shared: &Arc<Shared>, req: &Request) -> io::Result<Response> {
    let stream = TcpStream::connect_timeout(&shared.upstream, UPSTREAM_CONNECT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(UPSTREAM_IDLE))?;
    let mut up = shared.track(stream)?;
    up.stream.write_all(&req.to_upstream())?;
    up.stream.flush()?;
    lock(&shared.stats).forwarded += 1;
    read_response(&mut up.stream, &req.method)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 framing

struct Request {
    method: String,
    /// The request target from the request line (`/bucket/key?x=y`).
    target: String,
    /// Start line and header lines, without line ends.
    lines: Vec<Vec<u8>>,
    body: Vec<u8>,
    chunked: bool,
    /// Signing name from the SigV4 credential scope.
    service: Option<String>,
}

impl Request {
    fn to_upstream(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        out.extend_from_slice(&self.lines[0]);
        out.extend_from_slice(b"\r\n");
        for line in &self.lines[1..] {
            let name = header_name(line);
            let hop = matches!(
                name.as_str(),
                "connection" | "keep-alive" | "proxy-connection" | "expect"
            );
            let framing =
                self.chunked && matches!(name.as_str(), "transfer-encoding" | "content-length");
            if hop || framing {
                continue;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        if self.chunked {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

struct Response {
    lines: Vec<Vec<u8>>,
    /// The body exactly as received (still chunk-encoded if it was).
    body: Vec<u8>,
}

impl Response {
    fn to_client(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        out.extend_from_slice(&self.lines[0]);
        out.extend_from_slice(b"\r\n");
        for line in &self.lines[1..] {
            let name = header_name(line);
            if matches!(
                name.as_str(),
                "connection" | "keep-alive" | "proxy-connection"
            ) {
                continue;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("fault proxy: {msg}"))
}

fn header_name(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end])
        .trim()
        .to_ascii_lowercase()
}

fn header_value(line: &[u8]) -> String {
    match line.iter().position(|&b| b == b':') {
        Some(i) => String::from_utf8_lossy(&line[i + 1..]).trim().to_string(),
        None => String::new(),
    }
}

fn find_header(lines: &[Vec<u8>], name: &str) -> Option<String> {
    lines[1..]
        .iter()
        .find(|l| header_name(l) == name)
        .map(|l| header_value(l))
}

fn is_chunked(lines: &[Vec<u8>]) -> bool {
    find_header(lines, "transfer-encoding").is_some_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    })
}

fn content_length(lines: &[Vec<u8>]) -> io::Result<Option<usize>> {
    match find_header(lines, "content-length") {
        None => Ok(None),
        Some(v) => {
            let n: usize = v.parse().map_err(|_| invalid("bad Content-Length"))?;
            if n > MAX_BODY {
                return Err(invalid("body too large"));
            }
            Ok(Some(n))
        }
    }
}

/// `Credential=AKID/20261127/us-east-1/iot/aws4_request` → `iot`.
fn signing_service(lines: &[Vec<u8>]) -> Option<String> {
    let auth = find_header(lines, "authorization")?;
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    cred.split('/').nth(3).map(str::to_string)
}

fn split_lines(head: &[u8]) -> Vec<Vec<u8>> {
    // `head` ends with CRLF CRLF.
    let head = &head[..head.len() - 4];
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}

fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut rd = Reader::default();
    let Some(head) = rd.head(stream)? else {
        return Ok(None);
    };
    let lines = split_lines(&head);
    let start = String::from_utf8_lossy(&lines[0]).to_string();
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = match parts.next() {
        Some(target) if !method.is_empty() => target.to_string(),
        _ => return Err(invalid("bad request line")),
    };
    if find_header(&lines, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = is_chunked(&lines);
    let body = if chunked {
        rd.chunked(stream)?.0
    } else {
        match content_length(&lines)? {
            Some(n) => rd.exact(stream, n)?,
            None => Vec::new(),
        }
    };
    let service = signing_service(&lines);
    Ok(Some(Request {
        method,
        target,
        lines,
        body,
        chunked,
        service,
    }))
}

fn read_response(stream: &mut TcpStream, method: &str) -> io::Result<Response> {
    let mut rd = Reader::default();
    loop {
        let head = rd
            .head(stream)?
            .ok_or_else(|| invalid("upstream closed without an answer"))?;
        let lines = split_lines(&head);
        let status: u16 = String::from_utf8_lossy(&lines[0])
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        if (100..200).contains(&status) {
            continue; // interim answer; the real one follows
        }
        let body = if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 {
            Vec::new()
        } else if is_chunked(&lines) {
            rd.chunked(stream)?.1
        } else if let Some(n) = content_length(&lines)? {
            rd.exact(stream, n)?
        } else {
            rd.until_eof(stream)?
        };
        return Ok(Response { lines, body });
    }
}

/// Buffered reads that keep bytes read past the current item.
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    fn fill(&mut self, r: &mut impl Read) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match r.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The head through its blank line; None on a clean close before any byte.
    fn head(&mut self, r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0;
        loop {
            if let Some(i) = find(&self.buf[searched..], b"\r\n\r\n") {
                let end = searched + i + 4;
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            searched = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("head too large"));
            }
            if self.fill(r)? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    fn line(&mut self, r: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut searched = 0;
        loop {
            if let Some(i) = find(&self.buf[searched..], b"\r\n") {
                let end = searched + i + 2;
                return Ok(self.buf.drain(..end).collect());
            }
            searched = self.buf.len().saturating_sub(1);
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if self.fill(r)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn exact(&mut self, r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill(r)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn until_eof(&mut self, r: &mut impl Read) -> io::Result<Vec<u8>> {
        while self.fill(r)? > 0 {
            if self.buf.len() > MAX_BODY {
                return Err(invalid("body too large"));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// A chunked body: (decoded, raw bytes as received including trailers).
    fn chunked(&mut self, r: &mut impl Read) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut decoded = Vec::new();
        let mut raw = Vec::new();
        loop {
            let line = self.line(r)?;
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size_text = text.trim_end().split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                loop {
                    let trailer = self.line(r)?;
                    raw.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        return Ok((decoded, raw));
                    }
                }
            }
            if decoded.len() + size > MAX_BODY {
                return Err(invalid("body too large"));
            }
            let data = self.exact(r, size + 2)?;
            if !data.ends_with(b"\r\n") {
                return Err(invalid("chunk not followed by CRLF"));
            }
            decoded.extend_from_slice(&data[..size]);
            raw.extend_from_slice(&data);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Injected answers

fn canned(
    status: u16,
    reason: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    out.push_str(&format!("Content-Type: {content_type}\r\n"));
    out.push_str("x-amzn-RequestId: injected\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    out.push_str("Connection: close\r\n\r\n");
    out.push_str(body);
    out.into_bytes()
}

fn query_error(
    service: &str,
    status: u16,
    reason: &str,
    kind: &str,
    code: &str,
    msg: &str,
) -> Vec<u8> {
    let ns = if service == "sts" {
        "https://sts.amazonaws.com/doc/2011-06-15/"
    } else {
        "https://iam.amazonaws.com/doc/2010-05-08/"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{ns}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{msg}</Message></Error><RequestId>injected</RequestId></ErrorResponse>"
    );
    canned(status, reason, "text/xml", &[], &body)
}

fn unavailable() -> Vec<u8> {
    canned(
        503,
        "Service Unavailable",
        "application/json",
        &[],
        r#"{"message":"injected 503"}"#,
    )
}

fn bad_gateway() -> Vec<u8> {
    canned(
        502,
        "Bad Gateway",
        "application/json",
        &[],
        r#"{"message":"fault proxy: upstream failed"}"#,
    )
}

/// An S3 REST-XML error, as S3 sends it (no `x-amzn-RequestId`: S3 has its own two ids).
fn s3_error(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>injected</RequestId>\
         <HostId>injected</HostId></Error>"
    );
    let mut out = format!("HTTP/1.1 {status} {}\r\n", s3_reason(status, code));
    out.push_str("Content-Type: application/xml\r\n");
    out.push_str("x-amz-request-id: injected\r\n");
    out.push_str("x-amz-id-2: injected\r\n");
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    out.push_str("Connection: close\r\n\r\n");
    out.push_str(&body);
    out.into_bytes()
}

fn s3_reason(status: u16, code: &str) -> &'static str {
    match (status, code) {
        (503, "SlowDown") => "Slow Down",
        (400, _) => "Bad Request",
        (403, _) => "Forbidden",
        (404, _) => "Not Found",
        (409, _) => "Conflict",
        (412, _) => "Precondition Failed",
        (500, _) => "Internal Server Error",
        (503, _) => "Service Unavailable",
        _ => "Error",
    }
}

/// An injected answer as it goes to the client: without its body for a `HEAD` request (the
/// status line and headers, `Content-Length` included, are kept).
fn without_body_for(method: &str, mut answer: Vec<u8>) -> Vec<u8> {
    if method.eq_ignore_ascii_case("HEAD") {
        if let Some(i) = find(&answer, b"\r\n\r\n") {
            answer.truncate(i + 4);
        }
    }
    answer
}

/// The throttling error each service really sends, by SigV4 signing name.
fn throttle(service: Option<&str>) -> Vec<u8> {
    const MSG: &str = r#"{"message":"Rate exceeded"}"#;
    match service {
        Some("s3") => s3_error(503, "SlowDown", "Please reduce your request rate."),
        Some("iot") => canned(
            400,
            "Bad Request",
            "application/json",
            &[("x-amzn-ErrorType", "ThrottlingException")],
            MSG,
        ),
        Some("iotdata") => canned(
            429,
            "Too Many Requests",
            "application/json",
            &[("x-amzn-ErrorType", "ThrottlingException")],
            MSG,
        ),
        Some("lambda") => canned(
            429,
            "Too Many Requests",
            "application/json",
            &[("x-amzn-ErrorType", "TooManyRequestsException")],
            r#"{"Type":"User","message":"Rate exceeded","Reason":"CallerRateLimitExceeded"}"#,
        ),
        Some(s @ ("iam" | "sts")) => query_error(
            s,
            400,
            "Bad Request",
            "Sender",
            "Throttling",
            "Rate exceeded",
        ),
        Some("logs") => canned(
            400,
            "Bad Request",
            "application/x-amz-json-1.1",
            &[],
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ),
        _ => unavailable(),
    }
}

/// A service-shaped 500 for `ForwardThen500`.
fn internal_error(service: Option<&str>) -> Vec<u8> {
    const MSG: &str = "injected 500 after forwarding";
    match service {
        Some("s3") => s3_error(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        Some(s @ ("iam" | "sts")) => query_error(
            s,
            500,
            "Internal Server Error",
            "Receiver",
            "InternalFailure",
            MSG,
        ),
        Some("logs") => canned(
            500,
            "Internal Server Error",
            "application/x-amz-json-1.1",
            &[],
            &format!(r#"{{"__type":"InternalFailure","message":"{MSG}"}}"#),
        ),
        Some("iot" | "iotdata" | "lambda") => canned(
            500,
            "Internal Server Error",
            "application/json",
            &[("x-amzn-ErrorType", "InternalFailure")],
            &format!(r#"{{"message":"{MSG}"}}"#),
        ),
        _ => canned(
            500,
            "Internal Server Error",
            "application/json",
            &[],
            &format!(r#"{{"message":"{MSG}"}}"#),
        ),
    }
}
