//! Self-tests of the fault-injecting proxy (tests/it/support/proxy.rs).
//!
//! Why: the end-to-end "bad day" tests are only as trustworthy as the faults they inject. These
//! tests pin down that a healthy proxy is invisible (requests and answers pass byte for byte),
//! that each fault kind looks exactly like what the real service sends, that decisions replay
//! from a seed, and that the proxy goes away cleanly. A tiny upstream server written here stands
//! in for the emulator, and a minimal blocking client stands in for the SDK, so every byte on
//! the wire is under the test's control. Two tests use the real SDK clients to check that they
//! recognise the injected errors (S3's too), and that an SDK's S3 upload passes unchanged; one
//! sends the S3 state backend's calls through the proxy to the real emulator (moto decodes a
//! streaming aws-chunked upload, answers the conditional writes, the proxy a denied GetObject).

use crate::support::proxy::{decide, FaultConfig, FaultKind, FaultProxy, Matcher, Rule, Stats};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Loopback upstream: records every raw request, answers 200 with "METHOD PATH".

struct Upstream {
    url: String,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        // The accept thread lives as long as the test process; nothing else ever connects.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                thread::spawn(move || upstream_conn(stream, seen));
            }
        });
        Upstream { url, requests }
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, i: usize) -> Vec<u8> {
        self.requests.lock().unwrap()[i].clone()
    }
}

fn upstream_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: yes\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn upstream_conn(mut stream: TcpStream, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    // The proxy must always frame forwarded bodies with Content-Length.
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "upstream got a chunked request: {head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while raw.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let mut words = head.split(' ');
    let method = words.next().unwrap().to_string();
    let path = words.next().unwrap().to_string();
    seen.lock().unwrap().push(raw);
    let answer = match path.as_str() {
        "/chunked-response" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                                X-Upstream: chunked\r\n\r\n\
                                5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
            .to_string(),
        "/no-length" => "HTTP/1.1 200 OK\r\nX-Upstream: eof\r\n\r\nbody until the end".to_string(),
        _ => upstream_response(&format!("{method} {path}")),
    };
    let _ = stream.write_all(answer.as_bytes());
    if path == "/linger" {
        // Ignores Connection: close for a while: the proxy must go by Content-Length.
        thread::sleep(Duration::from_secs(3));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Minimal blocking client.

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

fn addr_of(url: &str) -> &str {
    url.strip_prefix("http://").unwrap()
}

/// Sends `request` as is and reads the answer until the proxy closes the connection.
fn exchange(url: &str, request: &[u8], timeout: Duration) -> io::Result<Resp> {
    let mut stream = TcpStream::connect(addr_of(url))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(parse_response(raw))
}

fn parse_response(raw: Vec<u8>) -> Resp {
    let end = find(&raw, b"\r\n\r\n").expect("no response head") + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.trim_end().split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let body = raw[end..].to_vec();
    let resp = Resp {
        status,
        headers,
        body,
        raw,
    };
    if let Some(n) = resp.header("content-length") {
        assert_eq!(n.parse::<usize>().unwrap(), resp.body.len(), "{resp:?}");
    }
    resp
}

fn signed_get(path: &str, service: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: example.test\r\nX-Amz-Date: 20261127T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261127/us-east-1/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=0123abcd\r\nConnection: keep-alive\r\n\r\n"
    )
}

fn get(url: &str, path: &str, service: &str) -> Resp {
    exchange(
        url,
        signed_get(path, service).as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap()
}

fn config(seed: u64, rate: f64, kinds: &[FaultKind]) -> FaultConfig {
    FaultConfig {
        seed,
        rate,
        kinds: kinds.to_vec(),
        delay: Duration::from_millis(10),
        ..FaultConfig::default()
    }
}

fn only(kind: FaultKind, n: usize, requests: usize, forwarded: usize) -> Stats {
    let mut stats = Stats {
        requests,
        forwarded,
        ..Stats::default()
    };
    stats.faults.insert(kind.name(), n);
    stats
}

// ---------------------------------------------------------------------------------------------
// Rate 0: the proxy is invisible.

#[test]
fn rate_zero_forwards_get_byte_for_byte() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(1, 0.0, &FaultKind::ALL));
    let request = signed_get("/things?max=5", "iot");
    let resp = exchange(&proxy.url(), request.as_bytes(), Duration::from_secs(10)).unwrap();

    // Only the hop-by-hop Connection header changes.
    let expected = request.replace(
        "Connection: keep-alive\r\n\r\n",
        "Connection: close\r\n\r\n",
    );
    assert_eq!(String::from_utf8(up.request(0)).unwrap(), expected);
    // The answer is relayed unchanged (its Connection: close was already last).
    assert_eq!(
        String::from_utf8(resp.raw).unwrap(),
        upstream_response("GET /things?max=5")
    );
    assert_eq!(
        proxy.stats(),
        Stats {
            requests: 1,
            forwarded: 1,
            ..Stats::default()
        }
    );
}

#[test]
fn rate_zero_forwards_post_body_byte_for_byte() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(1, 0.0, &FaultKind::ALL));
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut request = format!(
        "POST /2015-03-31/functions HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\
         x-amz-content-sha256: abc\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let resp = exchange(&proxy.url(), &request, Duration::from_secs(10)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "POST /2015-03-31/functions");
    assert!(up.request(0) == request, "request changed on the way");
}

#[test]
fn rate_zero_dechunks_a_chunked_request() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(1, 0.0, &FaultKind::ALL));
    let request = "PUT /things/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
                   X-Amz-Date: 20261127T000000Z\r\n\r\n\
                   4\r\n{\"a\"\r\nA;name=value\r\n:1234567}\n\r\n0\r\nX-Trailer: x\r\n\r\n";
    let resp = exchange(&proxy.url(), request.as_bytes(), Duration::from_secs(10)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "PUT /things/a");
    assert_eq!(
        String::from_utf8(up.request(0)).unwrap(),
        "PUT /things/a HTTP/1.1\r\nHost: h\r\nX-Amz-Date: 20261127T000000Z\r\n\
         Content-Length: 14\r\nConnection: close\r\n\r\n{\"a\":1234567}\n"
    );
}

#[test]
fn rate_zero_answers_expect_100_continue() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(1, 0.0, &FaultKind::ALL));
    let mut stream = TcpStream::connect(addr_of(&proxy.url())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"abc").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(raw).text(), "POST /x");
    assert_eq!(
        String::from_utf8(up.request(0)).unwrap(),
        "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    );
}

#[test]
fn rate_zero_relays_every_response_framing() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(1, 0.0, &FaultKind::ALL));

    let chunked = get(&proxy.url(), "/chunked-response", "iot");
    assert_eq!(chunked.header("x-upstream"), Some("chunked"));
    assert_eq!(chunked.header("connection"), Some("close"));
    assert_eq!(
        chunked.body,
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    );

    let eof = get(&proxy.url(), "/no-length", "iot");
    assert_eq!(eof.header("x-upstream"), Some("eof"));
    assert_eq!(eof.text(), "body until the end");

    // The upstream keeps the connection open after a Content-Length answer.
    let started = Instant::now();
    let linger = get(&proxy.url(), "/linger", "iot");
    assert_eq!(linger.text(), "GET /linger");
    assert!(started.elapsed() < Duration::from_secs(2), "waited for EOF");
}

// ---------------------------------------------------------------------------------------------
// Rate 1: each kind on its own.

#[test]
fn unavailable_answers_503_without_forwarding() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(7, 1.0, &[FaultKind::Unavailable]));
    let resp = get(&proxy.url(), "/things", "iot");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.text(), r#"{"message":"injected 503"}"#);
    assert_eq!(up.count(), 0);
    assert_eq!(proxy.stats(), only(FaultKind::Unavailable, 1, 1, 0));
}

#[test]
fn throttle_has_each_services_shape() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(7, 1.0, &[FaultKind::Throttle]));
    let url = proxy.url();
    let rest_json = |service: &str, status: u16, error_type: &str, body: &str| {
        let resp = get(&url, "/x", service);
        assert_eq!(resp.status, status, "{service}");
        assert_eq!(
            resp.header("x-amzn-ErrorType"),
            Some(error_type),
            "{service}"
        );
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.text(), body, "{service}");
    };
    rest_json(
        "iot",
        400,
        "ThrottlingException",
        r#"{"message":"Rate exceeded"}"#,
    );
    rest_json(
        "iotdata",
        429,
        "ThrottlingException",
        r#"{"message":"Rate exceeded"}"#,
    );
    rest_json(
        "lambda",
        429,
        "TooManyRequestsException",
        r#"{"Type":"User","message":"Rate exceeded","Reason":"CallerRateLimitExceeded"}"#,
    );

    for (service, ns) in [
        ("iam", "https://iam.amazonaws.com/doc/2010-05-08/"),
        ("sts", "https://sts.amazonaws.com/doc/2011-06-15/"),
    ] {
        let resp = get(&url, "/", service);
        assert_eq!(resp.status, 400);
        assert_eq!(resp.header("content-type"), Some("text/xml"));
        assert_eq!(
            resp.text(),
            format!(
                "<ErrorResponse xmlns=\"{ns}\"><Error><Type>Sender</Type><Code>Throttling</Code>\
                 <Message>Rate exceeded</Message></Error><RequestId>injected</RequestId>\
                 </ErrorResponse>"
            )
        );
    }

    let logs = get(&url, "/", "logs");
    assert_eq!(logs.status, 400);
    assert_eq!(
        logs.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    assert_eq!(
        logs.text(),
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
    );

    // A service it does not know, or no signature at all: a plain 503 (S3: see below).
    let unknown = get(&url, "/", "kinesis");
    assert_eq!(unknown.status, 503);
    assert_eq!(unknown.text(), r#"{"message":"injected 503"}"#);
    let unsigned = exchange(
        &url,
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(unsigned.status, 503);

    assert_eq!(up.count(), 0);
    assert_eq!(proxy.stats(), only(FaultKind::Throttle, 8, 8, 0));
}

#[test]
fn reset_breaks_the_connection() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(7, 1.0, &[FaultKind::Reset]));
    let err = exchange(
        &proxy.url(),
        signed_get("/things", "iot").as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert_eq!(up.count(), 0);
    assert_eq!(proxy.stats(), only(FaultKind::Reset, 1, 1, 0));
}

#[test]
fn delay_forwards_at_once_and_holds_the_answer_past_the_client_timeout() {
    let up = Upstream::start();
    let delay = Duration::from_millis(1500);
    let proxy = FaultProxy::start(
        &up.url,
        FaultConfig {
            delay,
            ..config(7, 1.0, &[FaultKind::Delay])
        },
    );
    let started = Instant::now();
    let err = exchange(
        &proxy.url(),
        signed_get("/things", "iot").as_bytes(),
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert!(started.elapsed() < delay);
    // The write happened before the client gave up; only the answer was late.
    assert_eq!(up.count(), 1, "forwarded at once");
    assert_eq!(proxy.stats(), only(FaultKind::Delay, 1, 1, 1));
}

#[test]
fn forward_then_500_reaches_upstream_but_answers_500() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(7, 1.0, &[FaultKind::ForwardThen500]));
    let resp = get(&proxy.url(), "/things/a", "iot");
    assert_eq!(resp.status, 500);
    assert_eq!(resp.header("x-amzn-ErrorType"), Some("InternalFailure"));
    assert_eq!(
        resp.text(),
        r#"{"message":"injected 500 after forwarding"}"#
    );
    assert_eq!(up.count(), 1);
    assert!(up.request(0).starts_with(b"GET /things/a HTTP/1.1\r\n"));

    let iam = get(&proxy.url(), "/", "iam");
    assert_eq!(iam.status, 500);
    assert!(
        iam.text().contains("<Code>InternalFailure</Code>"),
        "{}",
        iam.text()
    );
    assert_eq!(up.count(), 2);
    assert_eq!(proxy.stats(), only(FaultKind::ForwardThen500, 2, 2, 2));
}

// ---------------------------------------------------------------------------------------------
// Decisions.

#[test]
fn same_seed_same_decisions() {
    let kinds = FaultKind::ALL;
    let a: Vec<_> = (0..500).map(|i| decide(42, i, 0.5, &kinds)).collect();
    let b: Vec<_> = (0..500).map(|i| decide(42, i, 0.5, &kinds)).collect();
    let c: Vec<_> = (0..500).map(|i| decide(43, i, 0.5, &kinds)).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    for kind in kinds {
        assert!(a.contains(&Some(kind)), "{kind:?} never chosen");
    }

    // And over the wire: two proxies with the same seed spoil the same requests the same way.
    let up = Upstream::start();
    let statuses = |seed: u64| -> Vec<u16> {
        let kinds = [FaultKind::Unavailable, FaultKind::ForwardThen500];
        let proxy = FaultProxy::start(&up.url, config(seed, 0.5, &kinds));
        let seen: Vec<u16> = (0..40)
            .map(|_| get(&proxy.url(), "/x", "iot").status)
            .collect();
        let expected: Vec<u16> = (0..40)
            .map(|i| match decide(seed, i, 0.5, &kinds) {
                None => 200,
                Some(FaultKind::Unavailable) => 503,
                Some(_) => 500,
            })
            .collect();
        assert_eq!(seen, expected);
        seen
    };
    let first = statuses(9);
    assert_eq!(first, statuses(9));
    assert_ne!(first, statuses(10));
    for status in [200, 500, 503] {
        assert!(first.contains(&status), "{status} never seen");
    }
}

#[test]
fn rate_point_three_spoils_about_a_third() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(2026, 0.3, &[FaultKind::Unavailable]));
    let faults = (0..200)
        .filter(|_| get(&proxy.url(), "/x", "iot").status == 503)
        .count();
    assert!((30..=90).contains(&faults), "{faults} faults");
    let stats = proxy.stats();
    assert_eq!(stats.requests, 200);
    assert_eq!(stats.total_faults(), faults);
    assert_eq!(stats.forwarded, 200 - faults);
    assert_eq!(up.count(), 200 - faults);
}

#[test]
fn set_rate_applies_to_later_requests() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(3, 1.0, &[FaultKind::Unavailable]));
    assert_eq!(get(&proxy.url(), "/x", "iot").status, 503);
    proxy.set_rate(0.0);
    assert_eq!(get(&proxy.url(), "/x", "iot").status, 200);
    proxy.set_rate(1.0);
    assert_eq!(get(&proxy.url(), "/x", "iot").status, 503);
    assert_eq!(proxy.stats(), only(FaultKind::Unavailable, 2, 3, 1));
}

// ---------------------------------------------------------------------------------------------
// Lifecycle.

#[test]
fn drop_closes_the_port_promptly() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(
        &up.url,
        FaultConfig {
            delay: Duration::from_secs(60),
            ..config(5, 1.0, &[FaultKind::Delay])
        },
    );
    let addr = proxy.addr();
    // One idle connection and one request held by a long Delay must not hold Drop up.
    let idle = TcpStream::connect(addr).unwrap();
    let mut held = TcpStream::connect(addr).unwrap();
    held.write_all(signed_get("/x", "iot").as_bytes()).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while proxy.stats().requests < 1 && Instant::now() < end {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proxy.stats().requests, 1);

    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(TcpStream::connect(addr).is_err(), "still listening");
    // Delay forwards at once and holds only the answer; Drop must not wait for it.
    assert_eq!(up.count(), 1, "forwarded at once");
    drop(idle);
}

/// The real SDK clients read the injected throttles as throttling errors, and the proxy
/// works from inside a tokio runtime.
#[tokio::test]
async fn sdk_recognises_injected_throttles() {
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;

    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(11, 1.0, &[FaultKind::Throttle]));
    let sdk = aws_types::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(proxy.url())
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
            aws_sdk_iot::config::Credentials::new("AKID", "secret", None, None, "test"),
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();

    let iot = aws_sdk_iot::Client::new(&sdk).list_things().send().await;
    assert_eq!(iot.unwrap_err().code(), Some("ThrottlingException"));
    let data = aws_sdk_iotdataplane::Client::new(&sdk)
        .get_thing_shadow()
        .thing_name("t")
        .send()
        .await;
    assert_eq!(data.unwrap_err().code(), Some("ThrottlingException"));
    let lambda = aws_sdk_lambda::Client::new(&sdk)
        .list_functions()
        .send()
        .await;
    assert_eq!(lambda.unwrap_err().code(), Some("TooManyRequestsException"));
    let iam = aws_sdk_iam::Client::new(&sdk).list_roles().send().await;
    assert_eq!(iam.unwrap_err().code(), Some("Throttling"));
    let sts = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await;
    assert_eq!(sts.unwrap_err().code(), Some("Throttling"));
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk)
        .describe_log_groups()
        .send()
        .await;
    assert_eq!(logs.unwrap_err().code(), Some("ThrottlingException"));

    assert_eq!(up.count(), 0);
    assert_eq!(proxy.stats(), only(FaultKind::Throttle, 6, 6, 0));
    drop(proxy);
}

// ---------------------------------------------------------------------------------------------
// S3: its error shapes, choosing requests (`only`), canned errors (`deny`).

const S3_SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
    <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>\
    <RequestId>injected</RequestId><HostId>injected</HostId></Error>";
const S3_INTERNAL_ERROR: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
    <Error><Code>InternalError</Code>\
    <Message>We encountered an internal error. Please try again.</Message>\
    <RequestId>injected</RequestId><HostId>injected</HostId></Error>";
const S3_ACCESS_DENIED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
    <Error><Code>AccessDenied</Code><Message>Access Denied</Message>\
    <RequestId>injected</RequestId><HostId>injected</HostId></Error>";

/// A SigV4-signed (by shape) request with a body framed by Content-Length.
fn signed(method: &str, path: &str, service: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: example.test\r\nX-Amz-Date: 20261127T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261127/us-east-1/{service}/aws4_request, \
         SignedHeaders=content-length;host;x-amz-date, Signature=0123abcd\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn send(url: &str, method: &str, path: &str, service: &str) -> Resp {
    exchange(
        url,
        &signed(method, path, service, b""),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// The answer's raw bytes, for a HEAD request (whose Content-Length does not describe a body).
fn head_raw(url: &str, path: &str, service: &str) -> String {
    let mut stream = TcpStream::connect(addr_of(url)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&signed("HEAD", path, service, b""))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    String::from_utf8(raw).unwrap()
}

fn s3_head(status_line: &str, body_len: usize) -> String {
    format!(
        "{status_line}\r\nContent-Type: application/xml\r\nx-amz-request-id: injected\r\n\
         x-amz-id-2: injected\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn matcher_matches_service_method_path_and_query() {
    let state_get = Matcher::service("s3")
        .method("GET")
        .path_ends_with("/state.json");
    assert!(state_get.matches("GET", "/bkt/env/state.json", Some("s3")));
    assert!(state_get.matches("get", "/bkt/state.json?versionId=3", Some("S3")));
    for (method, target, service) in [
        ("PUT", "/bkt/env/state.json", Some("s3")),
        ("GET", "/bkt/env/state.json.lock", Some("s3")),
        ("GET", "/bkt/env/state.json.journal/0000000001", Some("s3")),
        ("GET", "/bkt?prefix=env/state.json", Some("s3")),
        ("GET", "/bkt/env/state.json", Some("iot")),
        ("GET", "/bkt/env/state.json", None),
    ] {
        assert!(
            !state_get.matches(method, target, service),
            "{method} {target} {service:?}"
        );
    }

    // A path substring matches the lock and the journal too; never the query string.
    let contains = Matcher::default().path_contains("/state.json");
    assert!(contains.matches("PUT", "/bkt/state.json.lock", Some("s3")));
    assert!(contains.matches("GET", "/bkt/state.json.journal/0000000001", None));
    assert!(!contains.matches("GET", "/bkt?prefix=%2Fstate.json", Some("s3")));

    let list = Matcher::service("s3").query_contains("list-type=2");
    assert!(list.matches("GET", "/bkt?list-type=2&prefix=env%2F", Some("s3")));
    assert!(!list.matches("GET", "/bkt/list-type=2", Some("s3")));

    // Nothing set: everything, signed or not.
    assert!(Matcher::default().matches("POST", "/", None));
    assert_eq!(
        Matcher::service("s3")
            .method("DELETE")
            .path_contains(".lock"),
        Matcher {
            service: Some("s3".into()),
            method: Some("DELETE".into()),
            path_contains: Some(".lock".into()),
            ..Matcher::default()
        }
    );
}

#[test]
fn s3_throttle_and_internal_error_are_s3_xml() {
    let up = Upstream::start();
    let throttling = FaultProxy::start(&up.url, config(7, 1.0, &[FaultKind::Throttle]));
    let resp = get(&throttling.url(), "/bkt/env/state.json", "s3");
    assert_eq!(
        String::from_utf8(resp.raw).unwrap(),
        format!(
            "{}{S3_SLOW_DOWN}",
            s3_head("HTTP/1.1 503 Slow Down", S3_SLOW_DOWN.len())
        )
    );
    // HEAD (HeadObject): the same status and headers, no body.
    assert_eq!(
        head_raw(&throttling.url(), "/bkt/env/state.json", "s3"),
        s3_head("HTTP/1.1 503 Slow Down", S3_SLOW_DOWN.len())
    );
    assert_eq!(up.count(), 0);
    assert_eq!(throttling.stats(), only(FaultKind::Throttle, 2, 2, 0));

    let failing = FaultProxy::start(&up.url, config(7, 1.0, &[FaultKind::ForwardThen500]));
    let resp = exchange(
        &failing.url(),
        &signed("PUT", "/bkt/env/state.json", "s3", b"{\"serial\":2}"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(resp.status, 500);
    assert_eq!(resp.header("content-type"), Some("application/xml"));
    assert_eq!(resp.header("x-amzn-RequestId"), None);
    assert_eq!(resp.text(), S3_INTERNAL_ERROR);
    // The write reached the upstream first.
    assert_eq!(up.count(), 1);
    assert!(up.request(0).ends_with(b"\r\n\r\n{\"serial\":2}"));
    assert_eq!(failing.stats(), only(FaultKind::ForwardThen500, 1, 1, 1));
}

#[test]
fn only_spoils_matching_requests_and_relays_the_rest() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(
        &up.url,
        FaultConfig {
            only: Some(Matcher::service("s3")),
            ..config(7, 1.0, &[FaultKind::Unavailable])
        },
    );
    assert_eq!(get(&proxy.url(), "/things", "iot").status, 200);
    assert_eq!(get(&proxy.url(), "/bkt/state.json", "s3").status, 503);
    let unsigned = exchange(
        &proxy.url(),
        b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(unsigned.status, 200);
    assert_eq!(up.count(), 2);
    assert_eq!(
        proxy.stats(),
        Stats {
            exempt: 2,
            ..only(FaultKind::Unavailable, 1, 3, 2)
        }
    );
}

#[test]
fn only_and_deny_keep_the_seeded_sequence_for_matching_requests() {
    let up = Upstream::start();
    let kinds = [FaultKind::Unavailable, FaultKind::ForwardThen500];
    let proxy = FaultProxy::start(
        &up.url,
        FaultConfig {
            only: Some(Matcher::service("s3").method("PUT")),
            deny: vec![Rule::access_denied(
                Matcher::service("s3").path_ends_with("/denied"),
            )],
            ..config(9, 0.5, &kinds)
        },
    );
    let mut seen = Vec::new();
    for i in 0..40 {
        // Interleaved: requests outside `only` and denied ones take no decision.
        assert_eq!(send(&proxy.url(), "GET", "/bkt/k", "s3").status, 200);
        assert_eq!(send(&proxy.url(), "PUT", "/things/t", "iot").status, 200);
        assert_eq!(send(&proxy.url(), "PUT", "/bkt/denied", "s3").status, 403);
        seen.push(send(&proxy.url(), "PUT", &format!("/bkt/k{i}"), "s3").status);
    }
    let expected: Vec<u16> = (0..40)
        .map(|i| match decide(9, i, 0.5, &kinds) {
            None => 200,
            Some(FaultKind::Unavailable) => 503,
            Some(_) => 500,
        })
        .collect();
    assert_eq!(seen, expected);
    let stats = proxy.stats();
    assert_eq!(stats.requests, 160);
    assert_eq!(stats.exempt, 80);
    assert_eq!(stats.denied, 40);
    assert_eq!(
        stats.total_faults(),
        expected.iter().filter(|s| **s != 200).count()
    );
}

#[test]
fn deny_answers_an_s3_error_without_forwarding() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(
        &up.url,
        FaultConfig {
            deny: vec![
                Rule::access_denied(
                    Matcher::service("s3")
                        .method("GET")
                        .path_ends_with("/state.json"),
                ),
                Rule::s3_error(
                    Matcher::service("s3").method("DELETE"),
                    404,
                    "NoSuchBucket",
                    "The specified bucket does not exist",
                ),
            ],
            // Faults for everything else: a denied request is answered by its rule.
            ..config(3, 1.0, &[FaultKind::Unavailable])
        },
    );
    let url = proxy.url();
    let denied = get(&url, "/bkt/env/state.json", "s3");
    assert_eq!(
        String::from_utf8(denied.raw).unwrap(),
        format!(
            "{}{S3_ACCESS_DENIED}",
            s3_head("HTTP/1.1 403 Forbidden", S3_ACCESS_DENIED.len())
        )
    );
    // HEAD is not GET: it meets the 503 instead, without a body.
    let head = head_raw(&url, "/bkt/env/state.json", "s3");
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let gone = send(&url, "DELETE", "/bkt/env/state.json.lock", "s3");
    assert_eq!(gone.status, 404);
    assert!(gone.text().contains(
        "<Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message>"
    ));
    // Not matching: the lock, another service, a write; they meet the 503s instead.
    assert_eq!(get(&url, "/bkt/env/state.json.lock", "s3").status, 503);
    assert_eq!(get(&url, "/bkt/env/state.json", "iot").status, 503);
    assert_eq!(send(&url, "PUT", "/bkt/env/state.json", "s3").status, 503);
    assert_eq!(up.count(), 0);
    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.denied, stats.forwarded), (6, 2, 0));
    assert_eq!(stats.fault("unavailable"), 4);
}

#[test]
fn set_deny_applies_to_later_requests() {
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, FaultConfig::default());
    let state = Matcher::service("s3").path_ends_with("/state.json");
    assert_eq!(get(&proxy.url(), "/bkt/state.json", "s3").status, 200);
    proxy.set_deny(vec![Rule::access_denied(state)]);
    assert_eq!(get(&proxy.url(), "/bkt/state.json", "s3").status, 403);
    assert_eq!(get(&proxy.url(), "/bkt/other.json", "s3").status, 200);
    proxy.set_deny(Vec::new());
    assert_eq!(get(&proxy.url(), "/bkt/state.json", "s3").status, 200);
    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.forwarded, stats.denied), (4, 3, 1));
}

#[test]
fn rate_zero_relays_an_s3_streaming_upload_byte_for_byte() {
    // What a client without a known length sends: aws-chunked content (the SigV4 trailer
    // form) inside HTTP chunked framing. The proxy undoes only the HTTP chunking; every
    // signed header and the aws-chunked bytes reach the upstream unchanged.
    let up = Upstream::start();
    let proxy = FaultProxy::start(&up.url, config(1, 0.0, &FaultKind::ALL));
    let aws_chunked = "b\r\n{\"serial\":1\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
    let head = "PUT /bkt/env/state.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\n\
                Content-Encoding: aws-chunked\r\nx-amz-decoded-content-length: 11\r\n\
                x-amz-trailer: x-amz-checksum-crc32\r\nX-Amz-Date: 20261127T000000Z\r\n\
                Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261127/us-east-1/s3/aws4_request, \
                SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;\
                x-amz-decoded-content-length;x-amz-trailer, Signature=0123abcd\r\n";
    let (first, second) = aws_chunked.split_at(20);
    let request = format!(
        "{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    let resp = exchange(&proxy.url(), request.as_bytes(), Duration::from_secs(10)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        String::from_utf8(up.request(0)).unwrap(),
        format!(
            "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{aws_chunked}",
            aws_chunked.len()
        )
    );
}

fn sdk_config(url: &str) -> aws_types::SdkConfig {
    aws_types::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
            aws_sdk_iot::config::Credentials::new("AKID", "secret", None, None, "test"),
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build()
}

/// An S3 client as iotreg's state backend builds one for an endpoint URL: path-style.
fn s3_client(sdk: &aws_types::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

fn header_of(request: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(request);
    let head = text.split("\r\n\r\n").next().unwrap();
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn body_of(request: &[u8]) -> &[u8] {
    &request[find(request, b"\r\n\r\n").unwrap() + 4..]
}

/// The SDK's S3 requests are signed for `s3`, path-style; an in-memory PutObject body goes
/// through as sent (Content-Length, its SHA-256 signed, a CRC32 header); the injected S3
/// errors read as S3's own.
#[tokio::test]
async fn sdk_s3_requests_pass_and_injected_s3_errors_read_as_s3s() {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    use sha2::{Digest, Sha256};

    let up = Upstream::start();
    let proxy = FaultProxy::start(
        &up.url,
        FaultConfig {
            only: Some(Matcher::service("s3").method("PUT")),
            deny: vec![Rule::access_denied(
                Matcher::service("s3")
                    .method("GET")
                    .path_ends_with("/state.json"),
            )],
            ..config(11, 0.0, &[FaultKind::Throttle])
        },
    );
    let s3 = s3_client(&sdk_config(&proxy.url()));
    let payload = br#"{"serial":7,"resources":[]}"#.to_vec();
    s3.put_object()
        .bucket("bkt")
        .key("env/state.json")
        .if_match("\"0123\"")
        .body(ByteStream::from(payload.clone()))
        .send()
        .await
        .unwrap();
    let put = up.request(0);
    // Path-style, with the SDK's `x-id` query parameter (matchers look at the path alone).
    assert!(put.starts_with(b"PUT /bkt/env/state.json?x-id=PutObject HTTP/1.1\r\n"));
    let auth = header_of(&put, "authorization").unwrap();
    assert!(auth.contains("/us-east-1/s3/aws4_request"), "{auth}");
    let signed_headers = auth.split("SignedHeaders=").nth(1).unwrap();
    assert!(signed_headers.contains("content-length;"), "{auth}");
    assert!(!signed_headers.contains("transfer-encoding"), "{auth}");
    assert_eq!(header_of(&put, "if-match").as_deref(), Some("\"0123\""));
    assert_eq!(
        header_of(&put, "content-length"),
        Some(payload.len().to_string())
    );
    assert_eq!(
        header_of(&put, "x-amz-content-sha256"),
        Some(
            Sha256::digest(&payload)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        )
    );
    assert!(header_of(&put, "x-amz-checksum-crc32").is_some());
    assert_eq!(header_of(&put, "content-encoding"), None);
    assert_eq!(body_of(&put), payload);

    let denied = s3
        .get_object()
        .bucket("bkt")
        .key("env/state.json")
        .send()
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("AccessDenied"));
    assert_eq!(denied.message(), Some("Access Denied"));
    assert_eq!(
        denied.raw_response().map(|r| r.status().as_u16()),
        Some(403)
    );

    proxy.set_rate(1.0);
    let throttled = s3
        .put_object()
        .bucket("bkt")
        .key("env/state.json.lock")
        .if_none_match("*")
        .body(ByteStream::from_static(b"holder"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(throttled.code(), Some("SlowDown"));
    assert_eq!(
        throttled.raw_response().map(|r| r.status().as_u16()),
        Some(503)
    );
    // Reads are outside `only`: relayed although the rate is 1.
    s3.list_objects_v2()
        .bucket("bkt")
        .prefix("env/")
        .send()
        .await
        .unwrap_err(); // the stub upstream's text body is no ListObjectsV2 answer
    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.denied, stats.exempt), (4, 1, 1));
    assert_eq!(stats.fault("throttle"), 1);
    assert_eq!(up.count(), 2);
    assert!(up
        .request(1)
        .starts_with(b"GET /bkt/?list-type=2&prefix=env%2F HTTP/1.1\r\n"));
    drop(proxy);
}

/// Through the proxy to the real emulator: the state backend's S3 calls, a streaming
/// (aws-chunked) upload decoded by moto, conditional writes answered by moto, and a denied
/// GetObject of the state answered by the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn s3_state_calls_through_the_proxy_to_the_emulator() {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;

    let emu = crate::support::Emulator::start();
    let proxy = FaultProxy::start(
        &emu.url,
        FaultConfig {
            deny: vec![Rule::access_denied(
                Matcher::service("s3")
                    .method("GET")
                    .path_ends_with("/env/state.json"),
            )],
            ..FaultConfig::default()
        },
    );
    let s3 = s3_client(&sdk_config(&proxy.url()));
    s3.create_bucket().bucket("state-bkt").send().await.unwrap();

    let lock = s3
        .put_object()
        .bucket("state-bkt")
        .key("env/state.json.lock")
        .if_none_match("*")
        .body(ByteStream::from_static(b"holder 1"))
        .send()
        .await
        .unwrap();
    let again = s3
        .put_object()
        .bucket("state-bkt")
        .key("env/state.json.lock")
        .if_none_match("*")
        .body(ByteStream::from_static(b"holder 2"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some("PreconditionFailed"));
    assert_eq!(again.raw_response().map(|r| r.status().as_u16()), Some(412));

    // A streaming body (from a file) goes aws-chunked with a CRC32 trailer.
    let dir = tempfile::tempdir().unwrap();
    let segment: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(dir.path().join("segment"), &segment).unwrap();
    s3.put_object()
        .bucket("state-bkt")
        .key("env/state.json.journal/0000000001")
        .if_none_match("*")
        .body(
            ByteStream::from_path(dir.path().join("segment"))
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let back = s3
        .get_object()
        .bucket("state-bkt")
        .key("env/state.json.journal/0000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(back.body.collect().await.unwrap().into_bytes(), segment);

    let state = s3
        .put_object()
        .bucket("state-bkt")
        .key("env/state.json")
        .if_none_match("*")
        .body(ByteStream::from_static(b"{\"serial\":1}"))
        .send()
        .await
        .unwrap();
    let stale = s3
        .put_object()
        .bucket("state-bkt")
        .key("env/state.json")
        .if_match("\"00000000000000000000000000000000\"")
        .body(ByteStream::from_static(b"{\"serial\":2}"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some("PreconditionFailed"));
    let denied = s3
        .get_object()
        .bucket("state-bkt")
        .key("env/state.json")
        .send()
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("AccessDenied"));
    let head = s3
        .head_object()
        .bucket("state-bkt")
        .key("env/state.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), state.e_tag());

    let listed = s3
        .list_objects_v2()
        .bucket("state-bkt")
        .prefix("env/state.json.journal/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["env/state.json.journal/0000000001"]);
    s3.delete_object()
        .bucket("state-bkt")
        .key("env/state.json.lock")
        .if_match(lock.e_tag().unwrap())
        .send()
        .await
        .unwrap();

    let stats = proxy.stats();
    assert_eq!(stats.denied, 1);
    assert_eq!(stats.forwarded, stats.requests - 1);
    drop(proxy);
}
