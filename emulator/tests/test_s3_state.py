"""S3 as iotreg's shared state backend (issue 14) uses it, against the emulator.

iotreg keeps its state in a bucket: ``KEY`` (the state, replaced only with
``If-Match: <etag>``, first written with ``If-None-Match: *``), ``KEY.lock``
(a create-only lock: PutObject ``If-None-Match: *``, released with DeleteObject
``If-Match: <etag>``) and ``KEY.journal/0000000001`` ... (create-only journal
segments, listed with ListObjectsV2 by prefix).  It also reads the bucket's
versioning, public access block and default encryption, and may write with
SSE-KMS.  Every behaviour it relies on is checked here with boto3 against the
server; the ones moto 5.2.1 got wrong are fixed by ``fixes/s3_conditional.py``
(atomic conditional writes, DeleteObject ``If-Match: *``) and
``fixes/s3_bucket_defaults.py`` (SSE-S3 default encryption, Block Public
Access on new buckets).  The race the lock closes is shown in-process, with
moto's own handler and with the fix, where a slowed write makes it certain.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import error_code, http_status, start_emulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fixes import s3_bucket_defaults, s3_conditional  # noqa: E402

QUOTED_MD5 = re.compile(r'^"[0-9a-f]{32}"$')
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


@pytest.fixture
def s3(aws):
    return aws("s3")


@pytest.fixture
def bucket(s3, name):
    """A fresh bucket (names are per test; all tests share one emulator)."""
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def versioned(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def fails(call, **kwargs) -> tuple[int, str, dict]:
    """(HTTP status, error code, error dict) of a call that must fail."""
    with pytest.raises(ClientError) as excinfo:
        call(**kwargs)
    return http_status(excinfo), error_code(excinfo), excinfo.value.response["Error"]


def body_of(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def headers(response: dict) -> dict:
    return response["ResponseMetadata"]["HTTPHeaders"]


# ---------------------------------------------------------------------------
# Missing bucket, missing key


def test_missing_bucket_is_no_such_bucket(s3, name):
    missing = f"{name}-missing"
    for call, kwargs in (
        (s3.get_object, {"Key": "state.json"}),
        (s3.put_object, {"Key": "state.json.lock", "Body": b"x", "IfNoneMatch": "*"}),
        (s3.delete_object, {"Key": "state.json.lock", "IfMatch": '"0123"'}),
        (s3.list_objects_v2, {"Prefix": "state.json.journal/"}),
        (s3.get_bucket_versioning, {}),
        (s3.get_bucket_encryption, {}),
        (s3.get_public_access_block, {}),
    ):
        status, code, error = fails(call, Bucket=missing, **kwargs)
        assert (status, code) == (404, "NoSuchBucket"), call
        assert error["BucketName"] == missing
    # HEAD has no body: the status is all there is.
    status, code, _ = fails(s3.head_object, Bucket=missing, Key="state.json")
    assert (status, code) == (404, "404")


def test_missing_key_is_no_such_key(s3, bucket):
    status, code, error = fails(s3.get_object, Bucket=bucket, Key="state.json")
    assert (status, code) == (404, "NoSuchKey")
    assert error["Key"] == "state.json"
    status, code, _ = fails(s3.head_object, Bucket=bucket, Key="state.json")
    assert (status, code) == (404, "404")
    # An unconditional delete of a missing key succeeds (S3 has nothing to say).
    response = s3.delete_object(Bucket=bucket, Key="state.json")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204


# ---------------------------------------------------------------------------
# The lock: create-only PutObject, conditional DeleteObject


def test_if_none_match_star_creates_once(s3, bucket):
    created = s3.put_object(Bucket=bucket, Key="state.json.lock", Body=b"holder-1", IfNoneMatch="*")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert QUOTED_MD5.match(created["ETag"])

    status, code, error = fails(
        s3.put_object, Bucket=bucket, Key="state.json.lock", Body=b"holder-2", IfNoneMatch="*"
    )
    assert (status, code) == (412, "PreconditionFailed")
    assert error["Condition"] == "If-None-Match"
    assert error["Message"] == "At least one of the pre-conditions you specified did not hold"
    assert body_of(s3, bucket, "state.json.lock") == b"holder-1"
    assert s3.head_object(Bucket=bucket, Key="state.json.lock")["ETag"] == created["ETag"]

    # Another key is unaffected.
    s3.put_object(Bucket=bucket, Key="other.lock", Body=b"x", IfNoneMatch="*")


def test_delete_if_match_right_and_wrong_etag(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="state.json.lock", Body=b"me", IfNoneMatch="*")["ETag"]
    other = s3.put_object(Bucket=bucket, Key="x", Body=b"someone else")["ETag"]

    status, code, error = fails(
        s3.delete_object, Bucket=bucket, Key="state.json.lock", IfMatch=other
    )
    assert (status, code) == (412, "PreconditionFailed")
    assert error["Condition"] == "If-Match"
    assert body_of(s3, bucket, "state.json.lock") == b"me"  # still held

    released = s3.delete_object(Bucket=bucket, Key="state.json.lock", IfMatch=etag)
    assert released["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert fails(s3.get_object, Bucket=bucket, Key="state.json.lock")[1] == "NoSuchKey"
    # Free again: the next holder can take it.
    s3.put_object(Bucket=bucket, Key="state.json.lock", Body=b"next", IfNoneMatch="*")


def test_delete_if_match_of_a_missing_object_is_no_such_key(s3, bucket):
    # What AWS documents: a conditional delete "only appl[ies] to the current
    # version of the object", and If-Match (an ETag, or '*') checks that the
    # object exists and is unchanged (User Guide, "How to perform conditional
    # deletes", docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html;
    # API reference, DeleteObject IfMatch).  When there is no object the guide
    # says the delete fails; measured on S3 (eu-west-1, reported in
    # ministackorg/ministack#1475, confirmed by its maintainer) the answer is
    # 404 NoSuchKey, for an ETag and for '*', never the 204 an unconditional
    # delete of a missing key gets.  So a lock released twice, or after someone
    # broke it, is told apart from a successful release.
    etag = s3.put_object(Bucket=bucket, Key="state.json.lock", Body=b"me")["ETag"]
    s3.delete_object(Bucket=bucket, Key="state.json.lock", IfMatch=etag)
    for if_match in (etag, "*"):
        status, code, _ = fails(s3.delete_object, Bucket=bucket, Key="state.json.lock", IfMatch=if_match)
        assert (status, code) == (404, "NoSuchKey"), if_match


def test_delete_if_match_star_deletes_any_current_object(s3, bucket):
    """Fixed: moto compared '*' with the ETag and answered 412."""
    s3.put_object(Bucket=bucket, Key="state.json.lock", Body=b"whoever")
    response = s3.delete_object(Bucket=bucket, Key="state.json.lock", IfMatch="*")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert fails(s3.head_object, Bucket=bucket, Key="state.json.lock")[0] == 404


# ---------------------------------------------------------------------------
# The state: first write create-only, later writes compare-and-swap


def test_state_first_write_then_if_match(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"v":1}', IfNoneMatch="*")["ETag"]
    # A second "first write" (another process that also saw no state) loses.
    assert fails(
        s3.put_object, Bucket=bucket, Key="state.json", Body=b'{"v":"other"}', IfNoneMatch="*"
    )[:2] == (412, "PreconditionFailed")

    second = s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"v":2}', IfMatch=first)["ETag"]
    assert second != first
    assert body_of(s3, bucket, "state.json") == b'{"v":2}'

    # A writer still holding the first ETag must not overwrite the newer state.
    status, code, error = fails(
        s3.put_object, Bucket=bucket, Key="state.json", Body=b'{"v":"stale"}', IfMatch=first
    )
    assert (status, code) == (412, "PreconditionFailed")
    assert error["Condition"] == "If-Match"
    assert body_of(s3, bucket, "state.json") == b'{"v":2}'

    # The ETag works with or without its quotes.
    third = s3.put_object(
        Bucket=bucket, Key="state.json", Body=b'{"v":3}', IfMatch=second.strip('"')
    )["ETag"]
    assert body_of(s3, bucket, "state.json") == b'{"v":3}'
    assert s3.head_object(Bucket=bucket, Key="state.json")["ETag"] == third


def test_put_if_match_of_a_missing_object_is_no_such_key(s3, bucket):
    # User Guide, "How to prevent object overwrites with conditional writes":
    # If-Match on a key with no current object fails with 404 Not Found
    # (NoSuchKey), not 412, and writes nothing.
    status, code, _ = fails(
        s3.put_object, Bucket=bucket, Key="state.json", Body=b"{}", IfMatch='"0123456789abcdef0123456789abcdef"'
    )
    assert (status, code) == (404, "NoSuchKey")
    assert fails(s3.head_object, Bucket=bucket, Key="state.json")[0] == 404


def test_etag_stable_and_quoted(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"a":1}')
    etag = put["ETag"]
    assert QUOTED_MD5.match(etag)
    assert headers(put)["etag"] == etag  # the raw header, quotes included
    head = s3.head_object(Bucket=bucket, Key="state.json")
    got = s3.get_object(Bucket=bucket, Key="state.json")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="state.json")["Contents"]
    assert head["ETag"] == got["ETag"] == etag
    assert [(o["Key"], o["ETag"]) for o in listed] == [("state.json", etag)]
    # The same bytes again: the same ETag; other bytes: another.
    assert s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"a":1}')["ETag"] == etag
    assert s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"a":2}')["ETag"] != etag
    # The ETag (an MD5 here) names the content, not the write: after A -> B -> A
    # the first ETag matches again.  A compare-and-swap on it cannot tell, so
    # state content must change with every write (e.g. carry a serial).
    s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"a":1}')
    assert s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"a":3}', IfMatch=etag)["ETag"] != etag


def test_journal_segments_and_prefix_listing(s3, bucket):
    prefix = "env/state.json.journal/"
    for n in (1, 2, 3):
        s3.put_object(Bucket=bucket, Key=f"{prefix}{n:010d}", Body=f"segment {n}".encode(), IfNoneMatch="*")
    s3.put_object(Bucket=bucket, Key="env/state.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="env/state.json.lock", Body=b"x")
    s3.put_object(Bucket=bucket, Key="other/state.json.journal/0000000001", Body=b"x")

    # A segment is written once.
    assert fails(
        s3.put_object, Bucket=bucket, Key=f"{prefix}{2:010d}", Body=b"again", IfNoneMatch="*"
    )[:2] == (412, "PreconditionFailed")

    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert [o["Key"] for o in listed["Contents"]] == [f"{prefix}{n:010d}" for n in (1, 2, 3)]
    assert listed["KeyCount"] == 3 and listed["IsTruncated"] is False
    assert all(QUOTED_MD5.match(o["ETag"]) for o in listed["Contents"])
    assert body_of(s3, bucket, f"{prefix}{2:010d}") == b"segment 2"

    s3.delete_object(Bucket=bucket, Key=f"{prefix}{1:010d}")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]] == [
        f"{prefix}{n:010d}" for n in (2, 3)
    ]
    empty = s3.list_objects_v2(Bucket=bucket, Prefix="nothing/")
    assert empty["KeyCount"] == 0 and "Contents" not in empty


# ---------------------------------------------------------------------------
# Versioned bucket


def test_versioned_bucket_conditional_writes(s3, versioned):
    bucket = versioned
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    lock = s3.put_object(Bucket=bucket, Key="state.json.lock", Body=b"me", IfNoneMatch="*")
    assert lock["VersionId"] not in (None, "", "null")
    assert fails(
        s3.put_object, Bucket=bucket, Key="state.json.lock", Body=b"you", IfNoneMatch="*"
    )[:2] == (412, "PreconditionFailed")

    first = s3.put_object(Bucket=bucket, Key="state.json", Body=b"1", IfNoneMatch="*")
    second = s3.put_object(Bucket=bucket, Key="state.json", Body=b"2", IfMatch=first["ETag"])
    assert second["VersionId"] != first["VersionId"]
    assert fails(
        s3.put_object, Bucket=bucket, Key="state.json", Body=b"stale", IfMatch=first["ETag"]
    )[:2] == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "state.json") == b"2"

    # Releasing the lock leaves a delete marker; the key then counts as absent.
    assert fails(s3.delete_object, Bucket=bucket, Key="state.json.lock", IfMatch=second["ETag"])[:2] == (
        412,
        "PreconditionFailed",
    )
    released = s3.delete_object(Bucket=bucket, Key="state.json.lock", IfMatch=lock["ETag"])
    assert released["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert released["DeleteMarker"] is True
    assert fails(s3.get_object, Bucket=bucket, Key="state.json.lock")[:2] == (404, "NoSuchKey")
    # Conditions look at the current version only (a delete marker: no object).
    for if_match in (lock["ETag"], "*"):
        assert fails(s3.delete_object, Bucket=bucket, Key="state.json.lock", IfMatch=if_match)[:2] == (
            404,
            "NoSuchKey",
        )
    assert fails(
        s3.put_object, Bucket=bucket, Key="state.json.lock", Body=b"x", IfMatch=lock["ETag"]
    )[:2] == (404, "NoSuchKey")
    again = s3.put_object(Bucket=bucket, Key="state.json.lock", Body=b"next", IfNoneMatch="*")
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    versions = s3.list_object_versions(Bucket=bucket, Prefix="state.json.lock")
    assert len(versions["Versions"]) == 2 and len(versions["DeleteMarkers"]) == 1


# ---------------------------------------------------------------------------
# Bucket settings iotreg reads


def test_bucket_versioning_status(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)  # never enabled
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"


def test_public_access_block_default_and_missing(s3, bucket):
    """Fixed: a new bucket blocks all public access (moto: no configuration)."""
    all_on = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == all_on

    relaxed = dict(all_on, BlockPublicPolicy=False, RestrictPublicBuckets=False)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=relaxed)
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == relaxed

    s3.delete_public_access_block(Bucket=bucket)
    status, code, _ = fails(s3.get_public_access_block, Bucket=bucket)
    assert (status, code) == (404, "NoSuchPublicAccessBlockConfiguration")


def test_bucket_encryption_default_sse_s3(s3, bucket):
    """Fixed: every bucket has SSE-S3 default encryption (moto: 404 ...NotFoundError)."""
    sse_s3 = [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}]
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"] == sse_s3

    kms = [
        {
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY},
            "BucketKeyEnabled": True,
        }
    ]
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": kms})
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"] == kms

    # DeleteBucketEncryption resets to SSE-S3; ServerSideEncryptionConfigurationNotFoundError
    # is not answered for a general purpose bucket any more.
    s3.delete_bucket_encryption(Bucket=bucket)
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"] == sse_s3


# ---------------------------------------------------------------------------
# Object encryption


def test_put_with_sse_kms(s3, bucket):
    put = s3.put_object(
        Bucket=bucket,
        Key="state.json",
        Body=b"{}",
        IfNoneMatch="*",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=KMS_KEY,
    )
    assert headers(put)["x-amz-server-side-encryption"] == "aws:kms"
    assert headers(put)["x-amz-server-side-encryption-aws-kms-key-id"] == KMS_KEY
    for read in (s3.head_object, s3.get_object):
        response = read(Bucket=bucket, Key="state.json")
        assert response["ServerSideEncryption"] == "aws:kms"
        assert response["SSEKMSKeyId"] == KMS_KEY
        assert response["ETag"] == put["ETag"]
    # A conditional replacement keeps whatever encryption the new request asks for.
    s3.put_object(
        Bucket=bucket,
        Key="state.json",
        Body=b'{"v":2}',
        IfMatch=put["ETag"],
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=KMS_KEY,
    )
    assert s3.head_object(Bucket=bucket, Key="state.json")["SSEKMSKeyId"] == KMS_KEY


def test_put_without_sse_headers_is_sse_s3(s3, bucket):
    """Fixed: objects get the bucket's default SSE-S3 (moto: no encryption header)."""
    put = s3.put_object(Bucket=bucket, Key="state.json", Body=b"{}")
    assert put["ServerSideEncryption"] == "AES256"
    assert s3.head_object(Bucket=bucket, Key="state.json")["ServerSideEncryption"] == "AES256"
    assert "SSEKMSKeyId" not in put


# ---------------------------------------------------------------------------
# Concurrency: one winner


def race(calls) -> list[object]:
    """Run the callables at once, one thread each; their results or exceptions."""
    results: list[object] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except ClientError as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def outcome(result) -> str:
    if isinstance(result, ClientError):
        return result.response["Error"]["Code"]
    return "ok"


def test_concurrent_lock_takers_over_http_one_winner(emulator, s3, bucket):
    clients = [emulator.client("s3") for _ in range(8)]
    for round_ in range(40):
        key = f"state{round_}.json.lock"
        calls = [
            (lambda c=c, i=i: c.put_object(Bucket=bucket, Key=key, Body=f"holder {i}".encode(), IfNoneMatch="*"))
            for i, c in enumerate(clients)
        ]
        outcomes = sorted(outcome(r) for r in race(calls))
        assert outcomes == ["PreconditionFailed"] * 7 + ["ok"], (round_, outcomes)


@pytest.fixture
def in_process_s3(monkeypatch):
    """moto in this process (fixes applied), with every object write slowed down.

    The 0.2 s sleep sits between a request's precondition check and its write,
    which makes the race certain where the server only loses it now and then.
    """
    from moto import mock_aws
    from moto.s3.models import S3Backend

    s3_bucket_defaults.apply()
    s3_conditional.apply()
    write = S3Backend.put_object

    def slow_write(self, *args, **kwargs):
        time.sleep(0.2)
        return write(self, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", slow_write)
    with mock_aws():
        config = Config(retries={"total_max_attempts": 1})
        clients = [boto3.client("s3", region_name="us-east-1", config=config) for _ in range(6)]
        clients[0].create_bucket(Bucket="race")
        yield clients


def without_the_lock(monkeypatch):
    from moto.s3.responses import S3Response

    monkeypatch.setattr(S3Response, "put_object", S3Response._emulator_orig_put_object)


@pytest.mark.parametrize("locked", [False, True], ids=["moto", "fixed"])
def test_create_only_race_in_process(in_process_s3, monkeypatch, locked):
    if not locked:
        without_the_lock(monkeypatch)
    calls = [
        (lambda c=c, i=i: c.put_object(Bucket="race", Key="k.lock", Body=f"holder {i}".encode(), IfNoneMatch="*"))
        for i, c in enumerate(in_process_s3)
    ]
    outcomes = [outcome(r) for r in race(calls)]
    winners = outcomes.count("ok")
    if locked:
        assert winners == 1, outcomes
        assert outcomes.count("PreconditionFailed") == 5
        holder = outcomes.index("ok")
        assert body_of(in_process_s3[0], "race", "k.lock") == f"holder {holder}".encode()
    else:
        assert winners > 1, outcomes  # moto 5.2.1: several processes "hold" the lock


@pytest.mark.parametrize("locked", [False, True], ids=["moto", "fixed"])
def test_compare_and_swap_race_in_process(in_process_s3, monkeypatch, locked):
    s3 = in_process_s3[0]
    etag = s3.put_object(Bucket="race", Key="state.json", Body=b"v1")["ETag"]
    if not locked:
        without_the_lock(monkeypatch)
    calls = [
        (lambda c=c, i=i: c.put_object(Bucket="race", Key="state.json", Body=f"v2 by {i}".encode(), IfMatch=etag))
        for i, c in enumerate(in_process_s3)
    ]
    outcomes = [outcome(r) for r in race(calls)]
    if locked:
        assert outcomes.count("ok") == 1, outcomes
        assert outcomes.count("PreconditionFailed") == 5
        assert body_of(s3, "race", "state.json") == f"v2 by {outcomes.index('ok')}".encode()
    else:
        assert outcomes.count("ok") > 1, outcomes  # lost updates


def test_apply_twice_keeps_one_lock_layer():
    from moto.s3.models import FakeBucket, S3Backend
    from moto.s3.responses import S3Response

    for _ in range(2):
        s3_bucket_defaults.apply()
        s3_conditional.apply()
    for name in ("put_object", "delete_object"):
        handler = getattr(S3Response, name)
        assert s3_conditional.is_locked(handler), name
        assert not s3_conditional.is_locked(handler.__wrapped__), name
    assert S3Response.put_object.__wrapped__ is S3Response._emulator_orig_put_object
    assert S3Response.delete_object.__wrapped__ is s3_conditional._delete_object
    for owner, name in (
        (S3Backend, "get_bucket_encryption"),
        (S3Backend, "put_object"),
        (FakeBucket, "__init__"),
    ):
        # One layer over moto's original, whose qualified name is still moto's.
        assert getattr(owner, f"_emulator_orig_{name}").__qualname__ == f"{owner.__name__}.{name}"


# ---------------------------------------------------------------------------
# Request log and holds know S3's operations (crash tests hold the state write)


def test_request_log_and_hold_name_the_state_operations(tmp_path):
    log = tmp_path / "requests.jsonl"
    server = start_emulator("--no-gateway", "--request-log", str(log))
    try:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="logged")
        arm = urllib.request.Request(
            f"{server.url}/iotreg-test/hold",
            data=json.dumps({"operation": "PutObject", "seconds": 0}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(arm, timeout=10) as answer:
            assert json.load(answer) == {"armed": {"PutObject": 0.0}}
        etag = s3.put_object(Bucket="logged", Key="env/state.json.lock", Body=b"x", IfNoneMatch="*")["ETag"]
        with pytest.raises(ClientError):
            s3.put_object(Bucket="logged", Key="env/state.json.lock", Body=b"y", IfNoneMatch="*")
        s3.head_object(Bucket="logged", Key="env/state.json.lock")
        s3.get_object(Bucket="logged", Key="env/state.json.lock")
        s3.list_objects_v2(Bucket="logged", Prefix="env/state.json.journal/")
        s3.get_bucket_versioning(Bucket="logged")
        s3.get_public_access_block(Bucket="logged")
        s3.get_bucket_encryption(Bucket="logged")
        s3.delete_object(Bucket="logged", Key="env/state.json.lock", IfMatch=etag)
    finally:
        assert server.stop() == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {line["service"] for line in lines} == {"s3"}
    assert [(line["operation"], line["method"], line["path"], line["status"]) for line in lines] == [
        ("CreateBucket", "PUT", "/logged", 200),
        ("PutObject", "PUT", "/logged/env/state.json.lock", 200),
        ("PutObject", "PUT", "/logged/env/state.json.lock", 412),
        ("HeadObject", "HEAD", "/logged/env/state.json.lock", 200),
        ("GetObject", "GET", "/logged/env/state.json.lock", 200),
        ("ListObjectsV2", "GET", "/logged", 200),
        ("GetBucketVersioning", "GET", "/logged", 200),
        ("GetPublicAccessBlock", "GET", "/logged", 200),
        ("GetBucketEncryption", "GET", "/logged", 200),
        ("DeleteObject", "DELETE", "/logged/env/state.json.lock", 204),
    ]
    assert [line.get("held") for line in lines[:3]] == [None, True, None]
