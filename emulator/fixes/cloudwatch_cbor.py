"""Fix: CloudWatch answers the Smithy RPC v2 CBOR protocol that current AWS SDKs speak.

AWS behaviour restored
    CloudWatch (signing name ``monitoring``) accepts, besides the query and
    JSON 1.0 protocols, Smithy RPC v2 CBOR: ``POST /service/GraniteServiceVersion20100801/operation/<Operation>``
    with ``smithy-protocol: rpc-v2-cbor`` and a CBOR body. It answers with
    ``smithy-protocol: rpc-v2-cbor``, ``Content-Type: application/cbor`` and a
    CBOR body (timestamps as tag 1 epoch seconds, ``double`` members as
    floats, blobs as byte strings); an error keeps its HTTP status, its body
    is a CBOR map with ``__type`` and ``message``, and, as the service is
    ``awsQueryCompatible``, the ``x-amzn-query-error: <Code>;Sender`` header
    carries the query error code the SDKs match on (``ResourceNotFound`` for
    a missing dashboard). aws-sdk-cloudwatch for Rust (1.140, what cargo
    resolves today) speaks only this protocol; boto3 prefers JSON 1.0 for
    the same service, so Python tests never noticed.

What moto 5.2.1 does instead
    Serves CloudWatch over query and JSON 1.0 only (moto has no CBOR support,
    getmoto/moto#9195); a CBOR request matches no route, and every call of
    the Rust SDK fails to parse the answer.

The bridge (in front of moto's dispatcher): the CBOR request is decoded and
re-sent to moto as the equivalent JSON 1.0 request (``X-Amz-Target:
GraniteServiceVersion20100801.<Operation>``; both protocols share one
model), and moto's JSON answer is re-encoded as CBOR following botocore's
cloudwatch model for the operation's output or error shape (so a ``double``
that moto wrote as ``60`` is still a CBOR float, as strict decoders need).
An operation without output gets an empty body. A body that is not CBOR is
a 400 ``SerializationException``.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import re
import threading
from typing import Any

from . import _cbor
from ._util import patch

# Smithy service shape name in the URL -> botocore service whose JSON 1.0
# protocol moto serves (its targetPrefix is the same name).
SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}
_PATH = re.compile(r"^/service/([^/]+)/operation/([A-Za-z0-9]+)/?$")
_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def _model(service: str):
    with _models_lock:
        if service not in _models:
            import botocore.session

            _models[service] = botocore.session.get_session().get_service_model(service)
        return _models[service]


# -- CBOR request -> JSON 1.0 request ---------------------------------------


def _to_json(value: Any) -> Any:
    """JSON protocol form of a decoded CBOR value (CBOR is self-describing)."""
    if isinstance(value, _cbor.Timestamp):
        return float(value)  # JSON 1.0 timestamps are epoch seconds too
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items() if v is not None}
    return value


# -- JSON 1.0 answer -> CBOR answer -------------------------------------------


def _epoch(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _cbor.Timestamp(value)
    if isinstance(value, str):
        from botocore.utils import parse_timestamp

        try:
            return _cbor.Timestamp(parse_timestamp(value).timestamp())
        except (ValueError, TypeError):
            return value
    return value


def _number(value: Any, cast) -> Any:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return cast(float(value.replace("Infinity", "inf")))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return cast(value)
    return value


def _to_cbor(value: Any, shape: Any) -> Any:
    """Python value for the CBOR encoder, typed by the botocore shape when known."""
    kind = getattr(shape, "type_name", None)
    if isinstance(value, dict):
        if kind == "structure":
            members = shape.members
            return {k: _to_cbor(v, members.get(k)) for k, v in value.items() if v is not None}
        if kind == "map":
            return {k: _to_cbor(v, shape.value) for k, v in value.items()}
        return {k: _to_cbor(v, None) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        member = shape.member if kind == "list" else None
        return [_to_cbor(v, member) for v in value]
    if kind == "timestamp":
        return _epoch(value)
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value)
        except ValueError:
            return value
    if kind == "double":
        return _number(value, float)
    if kind == "float":
        return _number(value, _cbor.Float32)
    if kind in ("integer", "long", "short", "byte") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _error_shape(operation_model: Any, service_model: Any, error_type: str):
    name = error_type.rsplit("#", 1)[-1].split(":", 1)[0]
    shapes = list(getattr(operation_model, "error_shapes", None) or [])
    for shape in shapes:
        if shape.name == name or shape.metadata.get("error", {}).get("code") == name:
            return shape
    try:
        return service_model.shape_for(name)
    except Exception:  # noqa: BLE001 - botocore's NoShapeFoundError
        return None


def _cbor_error(start_response, status: str, error_type: str, message: str):
    body = _cbor.encode({"__type": error_type, "message": message})
    start_response(
        status,
        [
            ("Content-Type", "application/cbor"),
            ("smithy-protocol", "rpc-v2-cbor"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


def _bridge(original, app, environ, start_response, prefix: str, service: str, operation: str):
    from werkzeug.wsgi import get_input_stream

    service_model = _model(service)
    try:
        operation_model = service_model.operation_model(operation)
    except Exception:  # noqa: BLE001 - unknown operation: moto answers it
        operation_model = None

    body = get_input_stream(environ).read()
    try:
        if "gzip" in environ.get("HTTP_CONTENT_ENCODING", "").lower():
            body = gzip.decompress(body)  # CloudWatch PutMetricData may be compressed
        params = _cbor.decode(body) if body else {}
    except (_cbor.CBORError, OSError, EOFError) as error:
        return _cbor_error(start_response, "400 Bad Request", "SerializationException", f"invalid CBOR body: {error}")
    if not isinstance(params, dict):
        return _cbor_error(start_response, "400 Bad Request", "SerializationException", "the body must be a CBOR map")

    json_body = json.dumps(_to_json(params)).encode("utf-8")
    inner = dict(environ)
    inner.pop("HTTP_CONTENT_ENCODING", None)
    inner.update(
        {
            "PATH_INFO": "/",
            "RAW_URI": "/",
            "REQUEST_URI": "/",
            "CONTENT_TYPE": "application/x-amz-json-1.0",
            "CONTENT_LENGTH": str(len(json_body)),
            "HTTP_X_AMZ_TARGET": f"{prefix}.{operation}",
            "wsgi.input": io.BytesIO(json_body),
        }
    )
    captured: dict[str, Any] = {}
    chunks: list[bytes] = []

    def capture(status, headers, exc_info=None):  # noqa: ARG001
        captured["status"], captured["headers"] = status, list(headers)
        return chunks.append

    result = original(app, inner, capture)
    try:
        for chunk in result:
            chunks.append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()
    status = captured.get("status", "500 Internal Server Error")
    code = int(status.split()[0])
    raw = b"".join(chunks)

    if 200 <= code < 300:
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            payload = {}
        output = operation_model.output_shape if operation_model is not None else None
        out = b"" if operation_model is not None and output is None else _cbor.encode(_to_cbor(payload, output))
    else:
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            text = raw.decode("utf-8", errors="replace").strip()[:1000]
            payload = {"__type": "InternalFailure" if code >= 500 else "ValidationError", "message": text}
        error_type = str(payload.get("__type") or ("InternalFailure" if code >= 500 else "ValidationError"))
        shape = _error_shape(operation_model, service_model, error_type)
        fields = _to_cbor({k: v for k, v in payload.items() if k != "__type"}, shape)
        out = _cbor.encode({"__type": error_type, **fields})

    dropped = {"content-type", "content-length", "x-amzn-errortype"}
    headers = [(k, v) for k, v in captured.get("headers", []) if k.lower() not in dropped]
    headers += [
        ("Content-Type", "application/cbor"),
        ("smithy-protocol", "rpc-v2-cbor"),
        ("Content-Length", str(len(out))),
    ]
    start_response(status, headers)
    return [out]


def _make_call(original):
    def __call__(self, environ, start_response):  # noqa: N807
        match = _PATH.match(environ.get("PATH_INFO", ""))
        if match and match.group(1) in SERVICES and environ.get("REQUEST_METHOD") == "POST":
            prefix, operation = match.groups()
            return _bridge(original, self, environ, start_response, prefix, SERVICES[prefix], operation)
        return original(self, environ, start_response)

    return __call__


def apply() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = getattr(DomainDispatcherApplication, "_emulator_orig___call__", DomainDispatcherApplication.__call__)
    patch(DomainDispatcherApplication, "__call__", _make_call(original))
