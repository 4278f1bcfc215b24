"""SigV4 query-string (presigned URL) verification for MQTT over WebSockets.

AWS IoT authenticates ``GET /mqtt`` WebSocket upgrades by a SigV4-presigned
query string: ``X-Amz-Algorithm=AWS4-HMAC-SHA256``, ``X-Amz-Credential=
<access key>/<yyyymmdd>/<region>/iotdevicegateway/aws4_request``,
``X-Amz-Date``, optional ``X-Amz-Expires``, ``X-Amz-SignedHeaders`` (normally
``host``), ``X-Amz-Signature``, and ``X-Amz-Security-Token`` (session
credentials), which the AWS IoT samples append *after* signing.

The emulator knows one set of credentials (``testing``/``testing``), region
``us-east-1``.  The canonical request is rebuilt from the request as received
(method, path, query parameters sorted and RFC 3986-encoded, the signed
headers); the payload hash may be that of the empty body or
``UNSIGNED-PAYLOAD`` (clients differ).  A URL without ``X-Amz-Expires`` is
valid for 15 minutes after ``X-Amz-Date``; with it, for that many seconds
(at most 7 days).  A date more than 15 minutes in the future is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from urllib.parse import quote, unquote

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
SERVICE = "iotdevicegateway"
ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
DEFAULT_VALIDITY = 900
MAX_EXPIRES = 7 * 24 * 3600
MAX_SKEW = 900


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key.replace("+", "%20")), unquote(value.replace("+", "%20"))))
    return pairs


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def verify_presigned(
    method: str,
    path: str,
    raw_query: str,
    headers: dict[str, str],
    now: datetime.datetime | None = None,
) -> tuple[bool, str]:
    """(ok, reason) for a presigned request; ``headers`` keys are lower case."""
    pairs = parse_query(raw_query)
    params: dict[str, str] = {}
    for key, value in pairs:
        params.setdefault(key, value)
    for required in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if required not in params:
            return False, f"missing {required}"
    if params["X-Amz-Algorithm"] != ALGORITHM:
        return False, f"unsupported algorithm {params['X-Amz-Algorithm']}"
    credential = params["X-Amz-Credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        return False, "malformed X-Amz-Credential"
    access_key, scope_date, region, service, _ = credential
    if access_key != ACCESS_KEY:
        return False, f"unknown access key {access_key!r} (the emulator's is {ACCESS_KEY!r})"
    if region != REGION or service != SERVICE:
        return False, f"credential scope must be {REGION}/{SERVICE}, not {region}/{service}"
    amz_date = params["X-Amz-Date"]
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        return False, "malformed X-Amz-Date"
    if amz_date[:8] != scope_date:
        return False, "X-Amz-Date does not match the credential scope date"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    validity = DEFAULT_VALIDITY
    if "X-Amz-Expires" in params:
        try:
            validity = int(params["X-Amz-Expires"])
        except ValueError:
            return False, "malformed X-Amz-Expires"
        if not 0 < validity <= MAX_EXPIRES:
            return False, "X-Amz-Expires out of range"
    if signed_at - now > datetime.timedelta(seconds=MAX_SKEW):
        return False, "X-Amz-Date is in the future"
    if now > signed_at + datetime.timedelta(seconds=validity):
        return False, "signature expired"

    signed_headers = params["X-Amz-SignedHeaders"].lower().split(";")
    canonical_headers = ""
    for name in signed_headers:
        if name not in headers:
            return False, f"signed header {name!r} missing from the request"
        canonical_headers += f"{name}:{' '.join(headers[name].strip().split())}\n"
    scope = f"{scope_date}/{region}/{service}/aws4_request"
    key = _signing_key(SECRET_KEY, scope_date, region, service)
    signature = params["X-Amz-Signature"]

    # The security token may have been appended after signing (AWS IoT's
    # samples do): try with and without it.
    variants = [pairs]
    if any(k == "X-Amz-Security-Token" for k, _ in pairs):
        variants.append([(k, v) for k, v in pairs if k != "X-Amz-Security-Token"])
    for variant in variants:
        query = "&".join(
            f"{k}={v}"
            for k, v in sorted((_encode(k), _encode(v)) for k, v in variant if k != "X-Amz-Signature")
        )
        for payload_hash in (EMPTY_SHA256, "UNSIGNED-PAYLOAD"):
            canonical = "\n".join(
                [method.upper(), path, query, canonical_headers, ";".join(signed_headers), payload_hash]
            )
            to_sign = "\n".join(
                [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
            )
            expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, signature):
                return True, "ok"
    return False, "signature does not match"
