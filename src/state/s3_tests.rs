//! SDK-level tests with `aws-smithy-mocks`, for what the local S3 cannot be made to do on cue:
//! an answer lost after a write landed, a write that did not land, someone else's write in
//! between, a lock held by another run.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectOutput};
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

use super::*;
use crate::state::{DeviceState, Phase, Record};

fn loc() -> S3Location {
    S3Location::parse("s3://iot-state/prod/state.json").unwrap()
}

fn s3_error(status: u16, code: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message><RequestId>r</RequestId></Error>"
    );
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
}

fn backend(rules: &[&Rule]) -> S3State {
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()));
    S3State::with_clients(client.clone(), client, loc())
}

fn state() -> State {
    let mut s = State::new("us-east-1", "123456789012", "abc123");
    s.put(Record::new("thing", "thing", Phase::Created, "t"));
    s
}

fn get_returns(key: &'static str, body: Vec<u8>, etag: &'static str) -> Rule {
    mock!(aws_sdk_s3::Client::get_object)
        .match_requests(move |r| r.key() == Some(key))
        .then_output(move || {
            GetObjectOutput::builder()
                .body(ByteStream::from(body.clone()))
                .e_tag(etag)
                .build()
        })
}

fn get_missing(key: &'static str) -> Rule {
    mock!(aws_sdk_s3::Client::get_object)
        .match_requests(move |r| r.key() == Some(key))
        .then_error(|| {
            GetObjectError::NoSuchKey(aws_sdk_s3::types::error::NoSuchKey::builder().build())
        })
}

/// PutObject answers: each of `answers` in turn (None: success with ETag "new"), recording
/// the conditions sent.
fn puts(
    key: &'static str,
    answers: Vec<Option<(u16, &'static str)>>,
    seen: Arc<Mutex<Vec<String>>>,
) -> Rule {
    let mut seq = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(move |r| {
            if r.key() == Some(key) {
                let cond = match (r.if_match(), r.if_none_match()) {
                    (Some(m), _) => format!("If-Match {m}"),
                    (_, Some(n)) => format!("If-None-Match {n}"),
                    _ => "unconditional".into(),
                };
                seen.lock().unwrap().push(cond);
                true
            } else {
                false
            }
        })
        .sequence();
    for a in answers {
        seq = match a {
            None => seq.output(|| PutObjectOutput::builder().e_tag("\"new\"").build()),
            Some((status, code)) => seq.http_response(move || s3_error(status, code)),
        };
    }
    seq.build()
}

#[test]
fn a_write_that_landed_although_its_answer_was_lost_is_found_by_reading_back() {
    let s = state();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts(
        "prod/state.json",
        vec![Some((500, "InternalError"))],
        seen.clone(),
    );
    // Read back: what was written is there, with a new ETag.
    let get = get_returns("prod/state.json", s.to_bytes(), "\"e2\"");
    let b = backend(&[&put, &get]);
    *b.inner.etag.lock().unwrap() = Some("\"e1\"".into());
    b.save(&s).unwrap();
    assert_eq!(put.num_calls(), 1, "not sent again");
    assert_eq!(*seen.lock().unwrap(), ["If-Match \"e1\""]);
    assert_eq!(b.inner.etag.lock().unwrap().as_deref(), Some("\"e2\""));
}

#[test]
fn a_write_that_did_not_land_is_sent_again_with_the_same_condition() {
    let s = state();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts(
        "prod/state.json",
        vec![Some((503, "SlowDown")), None],
        seen.clone(),
    );
    // Read back: still the version the write was conditional on.
    let get = get_returns("prod/state.json", b"{}".to_vec(), "\"e1\"");
    let b = backend(&[&put, &get]);
    *b.inner.etag.lock().unwrap() = Some("\"e1\"".into());
    b.save(&s).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["If-Match \"e1\"", "If-Match \"e1\""]
    );
    assert_eq!(b.inner.etag.lock().unwrap().as_deref(), Some("\"new\""));
}

#[test]
fn someone_elses_write_in_between_stops_the_run() {
    let s = state();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts(
        "prod/state.json",
        vec![Some((412, "PreconditionFailed"))],
        seen.clone(),
    );
    let get = get_returns("prod/state.json", b"{\"theirs\": 1}".to_vec(), "\"e9\"");
    let b = backend(&[&put, &get]);
    *b.inner.etag.lock().unwrap() = Some("\"e1\"".into());
    let e = b.save(&s).unwrap_err();
    assert!(matches!(e, StateError::Conflict { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("s3://iot-state/prod/state.json: the state changed"),
        "{e}"
    );
    // Also after an unknown outcome: the object is neither ours nor as it was.
    let put = puts("prod/state.json", vec![Some((500, "InternalError"))], seen);
    let b = backend(&[&put, &get]);
    *b.inner.etag.lock().unwrap() = Some("\"e1\"".into());
    assert!(matches!(b.save(&s), Err(StateError::Conflict { .. })));
}

#[test]
fn a_412_on_our_own_earlier_attempt_is_success() {
    let s = state();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts(
        "prod/state.json",
        vec![Some((412, "PreconditionFailed"))],
        seen.clone(),
    );
    let get = get_returns("prod/state.json", s.to_bytes(), "\"e2\"");
    let b = backend(&[&put, &get]);
    // The first write of a new state: create-only.
    b.save(&s).unwrap();
    assert_eq!(*seen.lock().unwrap(), ["If-None-Match *"]);
}

#[test]
fn a_state_holding_a_private_key_never_leaves_the_machine() {
    let mut s = state();
    s.put(Record::new(
        "x",
        "x",
        Phase::Created,
        "-----BEGIN PRIVATE KEY-----",
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts("prod/state.json", vec![None], seen);
    let b = backend(&[&put]);
    let e = b.save(&s).unwrap_err();
    assert!(e.to_string().contains("private key"), "{e}");
    assert_eq!(put.num_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_names_its_holder() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts(
        "prod/state.json.lock",
        vec![Some((412, "PreconditionFailed"))],
        seen.clone(),
    );
    let holder = serde_json::json!({
        "id": "5f3c", "user": "ci", "host": "runner-7", "pid": 42, "command": "up",
        "started": "2026-11-30T10:00:00Z",
        "ci_run": "https://github.com/acme/iot/actions/runs/9"
    });
    let get = get_returns(
        "prod/state.json.lock",
        serde_json::to_vec(&holder).unwrap(),
        "\"l1\"",
    );
    let b = backend(&[&put, &get]);
    let e = b.lock("up").await.unwrap_err();
    assert_eq!(*seen.lock().unwrap(), ["If-None-Match *"]);
    assert_eq!(
        e.to_string(),
        "s3://iot-state/prod/state.json: locked by ci@runner-7 (pid 42, `iotreg up`, since 2026-11-30T10:00:00Z, https://github.com/acme/iot/actions/runs/9; lock id 5f3c); wait for it to finish, or if that run is gone: iotreg force-unlock 5f3c"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unlock_deletes_only_our_own_lock() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts("prod/state.json.lock", vec![None], seen);
    let conditions = Arc::new(Mutex::new(Vec::new()));
    let del = {
        let conditions = conditions.clone();
        mock!(aws_sdk_s3::Client::delete_object)
            .match_requests(move |r| {
                conditions
                    .lock()
                    .unwrap()
                    .push(r.if_match().map(str::to_string));
                true
            })
            .then_http_response(|| s3_error(412, "PreconditionFailed"))
    };
    // Forced and taken by another run: another ETag now.
    let get = get_returns("prod/state.json.lock", b"{}".to_vec(), "\"theirs\"");
    let b = backend(&[&put, &del, &get]);
    let mut lock = b.lock("up").await.unwrap();
    let e = tokio::task::spawn_blocking(move || lock.release())
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("no longer ours"), "{e}");
    assert_eq!(*conditions.lock().unwrap(), [Some("\"new\"".to_string())]);
}

#[test]
fn devices_waiting_at_once_share_one_segment() {
    let bodies = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let put = {
        let bodies = bodies.clone();
        mock!(aws_sdk_s3::Client::put_object)
            .match_requests(move |r| {
                assert_eq!(r.if_none_match(), Some("*"), "segments are create-only");
                assert!(r
                    .key()
                    .unwrap()
                    .starts_with("prod/state.json.journal/00000000000000000007/"));
                bodies
                    .lock()
                    .unwrap()
                    .push(r.body().bytes().unwrap().to_vec());
                true
            })
            .then_output(|| PutObjectOutput::builder().e_tag("\"s\"").build())
    };
    let b = backend(&[&put]);
    b.inner.segments.lock().unwrap().generation = 7;
    let line = |n: &str| crate::state::Journal::line(n, Some(&DeviceState::default()));
    // Three changes handed in; the last one's wait flushes all three.
    let _ = b.enqueue(line("a"));
    let _ = b.enqueue(line("b"));
    let t3 = b.enqueue(line("c"));
    b.flush(t3).unwrap();
    assert_eq!(put.num_calls(), 1);
    assert_eq!(
        bodies.lock().unwrap()[0],
        [line("a"), line("b"), line("c")].concat()
    );
    // Already in S3: no second write.
    b.flush(1).unwrap();
    assert_eq!(put.num_calls(), 1);
    assert_eq!(
        b.inner.segments.lock().unwrap().written,
        ["prod/state.json.journal/00000000000000000007/0000000000"]
    );
}

#[test]
fn a_segment_someone_else_wrote_stops_the_journal_for_good() {
    let put = mock!(aws_sdk_s3::Client::put_object)
        .then_http_response(|| s3_error(412, "PreconditionFailed"));
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(|| {
        GetObjectOutput::builder()
            .body(ByteStream::from_static(
                b"{\"device\":\"z\",\"entry\":null}\n",
            ))
            .e_tag("\"x\"")
            .build()
    });
    let b = backend(&[&put, &get]);
    let t = b.enqueue(crate::state::Journal::line("a", None));
    let e = b.flush(t).unwrap_err();
    assert!(e.to_string().contains("written by someone else"), "{e}");
    let t = b.enqueue(crate::state::Journal::line("b", None));
    assert!(b.flush(t).is_err(), "sticky");
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_state_object_is_nothing_deployed_and_the_first_write_is_create_only() {
    let get = get_missing("prod/state.json");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let put = puts("prod/state.json", vec![None], seen.clone());
    let b = Arc::new(backend(&[&get, &put]));
    assert_eq!(b.load().await.unwrap(), None);
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || b2.save(&state()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), ["If-None-Match *"]);
}
