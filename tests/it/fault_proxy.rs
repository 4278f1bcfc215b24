//! Self-tests of the fault-injecting proxy (tests/it/support/proxy.rs).
//!
//! Why: the end-to-end "bad day" tests are only as trustworthy as the faults they inject. These
//! tests pin down that a healthy proxy is invisible (requests and answers pass byte for byte),
//! that each fault kind looks exactly like what the real service sends, that decisions replay
//! from a seed, and that the proxy goes away cleanly. A tiny upstream server written here stands
//! in for the emulator, and a minimal blocking client stands in for the SDK, so every byte on
//! the wire is under the test's control. One test uses the real SDK clients to check that they
//! recognise the injected throttling errors.

use crate::support::proxy::{decide, FaultConfig, FaultKind, FaultProxy, Stats};
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

    // A service it does not know, or no signature at all: a plain 503.
    assert_eq!(get(&url, "/", "s3").status, 503);
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
