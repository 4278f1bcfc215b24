"""GetBucketVersioning answers with a VersioningConfiguration root, as S3 does."""

from __future__ import annotations

import urllib.request
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def raw_versioning(emulator, bucket: str) -> ET.Element:
    # Path-style GET ?versioning, signed loosely (moto does not check signatures): the
    # body as a client sees it, before botocore's lenient parsing.
    req = urllib.request.Request(
        f"{emulator.url}/{bucket}?versioning",
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=0"
        },
    )
    with urllib.request.urlopen(req) as r:
        return ET.fromstring(r.read())


def test_never_versioned_bucket_has_an_empty_versioning_configuration(emulator, aws, name):
    bucket = f"v-{name}".lower()[:60]
    aws("s3").create_bucket(Bucket=bucket)
    root = raw_versioning(emulator, bucket)
    assert root.tag == f"{NS}VersioningConfiguration"
    assert list(root) == []
    assert "Status" not in aws("s3").get_bucket_versioning(Bucket=bucket)


def test_enabled_and_suspended_are_the_status_of_a_versioning_configuration(emulator, aws, name):
    bucket = f"v-{name}".lower()[:60]
    s3 = aws("s3")
    s3.create_bucket(Bucket=bucket)
    for status in ["Enabled", "Suspended"]:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
        root = raw_versioning(emulator, bucket)
        assert root.tag == f"{NS}VersioningConfiguration"
        assert [(c.tag, c.text) for c in root] == [(f"{NS}Status", status)]
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == status
