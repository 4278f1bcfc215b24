"""Job documents: ``documentSource`` objects in the emulator's S3, and presigned URLs.

What AWS does (developer guide "Managing jobs" -> "Presigned URLs",
create-manage-jobs.html, and "Jobs concepts", key-concepts-jobs.html; API
reference CreateJob ``documentSource`` and ``presignedUrlConfig``):

* ``documentSource`` is "an S3 link, or S3 object URL, to the job document",
  e.g. ``https://s3.region-code.amazonaws.com/example-firmware/device-firmware.1.0``.
* A document may hold placeholders ``${aws:iot:s3-presigned-url:URL}`` (the
  older form) or ``${aws:iot:s3-presigned-url-v2:URL}`` (the form the current
  guide shows), URL = ``https://s3.region.amazonaws.com/<bucket>/<key>``.
  "When a device requests the job document, AWS IoT generates the presigned
  URL and replaces the placeholder URL with the presigned URL"; presigned URLs
  "are generated when Jobs receives an MQTT request for the job document" and
  are valid ``presignedUrlConfig.expiresInSec`` (60-3600, default 3600).
  The job's ``presignedUrlConfig.roleArn`` names a role that AWS IoT assumes
  (its trust policy must name ``iot.amazonaws.com``) and that may read the
  bucket.  GetJobDocument returns the placeholders as they are ("placeholder
  URLs aren't replaced", manage-job-cli.html).

What the emulator does:

* Both placeholder forms; the URL may be path-style
  (``https://s3[.-]<region>.amazonaws.com/<bucket>/<key>``,
  ``https://s3.amazonaws.com/<bucket>/<key>``) or virtual-hosted
  (``https://<bucket>.s3[.-]<region>.amazonaws.com/<key>``); the key is
  URL-decoded.  Each is replaced by a path-style SigV4 presigned GET URL on the
  emulator's own S3 (``http://127.0.0.1:<port>/<bucket>/<key>?X-Amz-...``,
  signed in-process with the fake credentials, ``X-Amz-Expires`` =
  expiresInSec) that a plain GET downloads.
* Only when the job has a presignedUrlConfig whose roleArn is an existing
  IAM role trusting ``iot.amazonaws.com`` (its permissions are not checked;
  neither is the object's existence: a missing object fails the download with
  S3's NoSuchKey, as it would on AWS).  Otherwise ``PresignError``: the device's
  request is rejected (see gateway/jobs.py; what AWS answers is not documented).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

PLACEHOLDER = re.compile(r"\$\{aws:iot:s3-presigned-url(?:-v2)?:([^}]+)\}")
_PATH_HOST = re.compile(r"^s3(?:[.-][a-z0-9-]+)?(?:\.dualstack\.[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?$")
_VIRTUAL_HOST = re.compile(r"^(?P<bucket>.+)\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?$")


class PresignError(Exception):
    """The document's placeholders cannot be replaced (no usable role)."""


def parse_s3_url(url: str) -> tuple[str, str] | None:
    """(bucket, key) of an S3 object URL (path-style, virtual-hosted or s3://), else None."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url.strip())
    if parts.scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
    elif parts.scheme in ("https", "http"):
        host = (parts.hostname or "").lower()
        path = parts.path.lstrip("/")
        virtual = _VIRTUAL_HOST.match(host)
        if _PATH_HOST.match(host):
            bucket, _, key = path.partition("/")
        elif virtual:
            bucket, key = virtual["bucket"], path
        else:
            return None
    else:
        return None
    key = unquote(key)
    if not bucket or not key:
        return None
    return bucket, key


def read_source(account: str, url: str) -> str:
    """The text of a ``documentSource`` object in the emulator's S3 (InvalidRequest if none)."""
    from moto.s3.models import s3_backends

    from .validate import invalid

    located = parse_s3_url(url)
    if located is None:
        raise invalid(f"documentSource is not an S3 object URL: {url}")
    bucket, key = located
    try:
        obj = s3_backends[account]["aws"].get_object(bucket, key)
    except Exception:  # noqa: BLE001 - MissingBucket and friends
        obj = None
    if obj is None:
        raise invalid(f"The job document s3://{bucket}/{key} could not be read")
    try:
        return bytes(obj.value).decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"The job document s3://{bucket}/{key} is not UTF-8 text")


def has_placeholders(document: str) -> bool:
    return PLACEHOLDER.search(document or "") is not None


def _role_usable(role_arn: str | None) -> str | None:
    """Why the role cannot be used to presign, or None when it can."""
    from moto.iam.models import iam_backends

    if not role_arn:
        return "the job has no presignedUrlConfig.roleArn"
    parts = role_arn.split(":")
    account = parts[4] if len(parts) >= 6 else ""
    try:
        role = iam_backends[account]["global"].get_role_by_arn(role_arn)
    except Exception:  # noqa: BLE001 - IAMNotFoundException, unknown account
        return f"the role {role_arn} does not exist"
    from gateway.provisioning import trusts_iot

    if not trusts_iot(role.assume_role_policy_document):
        return f"the role {role_arn} cannot be assumed by AWS IoT (iot.amazonaws.com)"
    return None


_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def presign(region: str, bucket: str, key: str, expires: int) -> str:
    """A path-style presigned GET URL of the object on the emulator's S3 (signed locally)."""
    import botocore.session
    from botocore.config import Config
    from datapath.lambda_runtime import endpoint_url

    base = endpoint_url()
    with _clients_lock:
        client = _clients.get((base, region))
        if client is None:
            client = botocore.session.get_session().create_client(
                "s3", region_name=region, endpoint_url=base,
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
            _clients[(base, region)] = client
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)


def resolve(document: str, presigned_url_config: dict | None, region: str) -> Any:
    """The document as the device gets it: placeholders presigned, parsed as JSON."""
    if has_placeholders(document):
        config = presigned_url_config or {}
        why = _role_usable(config.get("roleArn"))
        if why is not None:
            raise PresignError(f"Cannot generate presigned URLs for the job document: {why}")
        expires = int(config.get("expiresInSec") or 3600)

        def replace(match: re.Match) -> str:
            located = parse_s3_url(match.group(1))
            if located is None:
                raise PresignError(f"Cannot generate a presigned URL for {match.group(1)}: not an S3 object URL")
            url = presign(region, located[0], located[1], expires)
            # The placeholder sits inside a JSON string: keep the text valid JSON.
            return json.dumps(url)[1:-1]

        document = PLACEHOLDER.sub(replace, document)
    return json.loads(document)
