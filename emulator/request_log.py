"""``--request-log FILE``: one JSON line per AWS API request the emulator serves.

Each request (except moto's own ``/moto-api/...`` endpoints and the
test-control ``/iotreg-test/...`` ones, see holds.py) appends, once its
response status is known and before the response body is sent, exactly one
line to FILE (append mode, flushed at once, one lock for the threaded server):

    {"service": "iot", "operation": "CreateThing", "method": "POST", "path": "/things/foo", "status": 200}

``service`` is the botocore service name and ``operation`` the AWS operation
name, both resolved from the request alone with botocore's service models:

* service: the SigV4 credential scope's signing name (Authorization header, or
  ``X-Amz-Credential`` of a presigned URL) is looked up among the services'
  ``metadata.signingName`` (else ``endpointPrefix``), so ``iotdata`` ->
  ``iot-data``.  When several services share one signing name, the one whose
  operations match the request wins.  Unsigned requests fall back to the
  ``X-Amz-Target`` prefix (``metadata.targetPrefix``) or to the moto backend
  that served the request.
* operation, by the service's protocol(s):
  ``query``/``ec2``: the ``Action`` parameter (query string or form body);
  ``json``: the ``X-Amz-Target`` header (``Prefix.Operation``);
  ``smithy-rpc-v2-cbor``: ``/service/<name>/operation/<Operation>``;
  ``rest-json``/``rest-xml``: HTTP method + raw (still percent-encoded) path
  matched against every operation's ``http.requestUri`` template (``{label}``
  = one path segment, ``{label+}`` = one or more segments, ``?key`` /
  ``?key=value`` in the template = required query parameters).  The most
  specific match wins (more required query keys, then more literal
  characters, then fewer labels); a tie is broken by the operations'
  required header / query-string members present in the request.
  Only a name that exists in the model is logged; anything unresolved or
  still ambiguous is ``null`` (never a guess).

``path`` is the decoded request path without the query string; ``status`` is
the HTTP status code as an integer.
A request held by an armed hold (holds.py) gets ``"held": true`` as a sixth
key of its only line.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sys
import threading
import zlib
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, quote, urlsplit

_SCOPE_RE = re.compile(r"Credential=([^,\s]+)")
_CBOR_PATH_RE = re.compile(r"^/service/([^/]+)/operation/([^/?]+)/?$")
_LABEL_RE = re.compile(r"\{([^}]+)\}")


def _wsgi_str_to_text(value: str) -> str:
    """A WSGI 'native string' (latin-1 of the raw bytes) as real text."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# ---------------------------------------------------------------------------
# botocore service models


class _RestRoute:
    __slots__ = ("operation", "method", "regex", "query", "literal", "labels", "required", "slash")

    def __init__(self, operation: str, method: str, request_uri: str, required: tuple):
        self.operation = operation
        self.method = method.upper()
        path, _, query = request_uri.partition("?")
        self.query: list[tuple[str, str | None]] = []
        for part in query.split("&"):
            if not part:
                continue
            key, eq, value = part.partition("=")
            self.query.append((key, value if eq else None))
        # A trailing slash may be missing or extra (moto serves with
        # strict_slashes=False); an exact match is preferred.
        self.slash = len(path) > 1 and path.endswith("/")
        if len(path) > 1:
            path = path.rstrip("/")
        pattern, last, literal, labels = "", 0, 0, 0
        for match in _LABEL_RE.finditer(path):
            text = path[last : match.start()]
            pattern += re.escape(text)
            literal += len(text)
            pattern += ".+" if match.group(1).endswith("+") else "[^/]+"
            labels += 1
            last = match.end()
        pattern += re.escape(path[last:])
        literal += len(path) - last
        self.regex = re.compile("^" + pattern + "/?$")
        self.literal = literal
        self.labels = labels
        # (location, wire name) of required header / query-string members.
        self.required = required

    def matches(self, method: str, raw_path: str, query: dict[str, list[str]]) -> bool:
        if method != self.method or not self.regex.match(raw_path):
            return False
        for key, value in self.query:
            if key not in query:
                return False
            if value is not None and value not in query[key]:
                return False
        return True

    def exact_slash(self, raw_path: str) -> bool:
        return self.slash == (len(raw_path) > 1 and raw_path.endswith("/"))

    def score(self) -> tuple[int, int, int]:
        return (len(self.query), self.literal, -self.labels)

    def required_present(self, headers: dict[str, str], query: dict[str, list[str]]) -> int | None:
        """How many required header/query members are present; None if one is missing."""
        count = 0
        for location, name in self.required:
            present = name.lower() in headers if location == "header" else name in query
            if not present:
                return None
            count += 1
        return count


class _Service:
    """One botocore service model, reduced to what routing needs."""

    def __init__(self, name: str, model: dict):
        self.name = name
        metadata = model.get("metadata", {})
        self.protocols = list(metadata.get("protocols") or [metadata.get("protocol")])
        self.target_prefix = metadata.get("targetPrefix")
        operations = model.get("operations", {})
        self.operations = set(operations)
        self.routes: list[_RestRoute] = []
        if any(p in ("rest-json", "rest-xml") for p in self.protocols):
            shapes = model.get("shapes", {})
            for op_name, op in operations.items():
                http = op.get("http") or {}
                if "requestUri" not in http:
                    continue
                required = []
                shape = shapes.get((op.get("input") or {}).get("shape", ""), {})
                for member in shape.get("required", []):
                    ref = shape.get("members", {}).get(member, {})
                    if ref.get("location") in ("header", "querystring"):
                        required.append((ref["location"], ref.get("locationName", member)))
                self.routes.append(
                    _RestRoute(op_name, http.get("method", "POST"), http["requestUri"], tuple(required))
                )

    # -- per protocol --------------------------------------------------------

    def resolve(self, request: "_Request") -> tuple[str | None, bool]:
        """(operation, exact): exact is False only for a rest route matched
        with a missing or extra trailing slash."""
        for protocol in self.protocols:
            if protocol in ("query", "ec2"):
                operation = request.action()
            elif protocol == "json":
                operation = self._from_target(request.target)
            elif protocol == "smithy-rpc-v2-cbor":
                match = _CBOR_PATH_RE.match(request.raw_path)
                operation = match.group(2) if match and request.method == "POST" else None
            elif protocol in ("rest-json", "rest-xml"):
                operation, exact = self._from_rest(request)
                if operation in self.operations:
                    return operation, exact
                continue
            else:
                operation = None
            if operation in self.operations:
                return operation, True
        return None, False

    def _from_target(self, target: str | None) -> str | None:
        if not target or "." not in target:
            return None
        prefix, _, operation = target.rpartition(".")
        if self.target_prefix and prefix != self.target_prefix:
            return None
        return operation

    def _from_rest(self, request: "_Request") -> tuple[str | None, bool]:
        matched = [r for r in self.routes if r.matches(request.method, request.raw_path, request.query)]
        if not matched:
            return None, False
        exact = [r for r in matched if r.exact_slash(request.raw_path)]
        matched = exact or matched
        return self._pick(matched, request), bool(exact)

    @staticmethod
    def _pick(matched: list[_RestRoute], request: "_Request") -> str | None:
        best = max(r.score() for r in matched)
        top = [r for r in matched if r.score() == best]
        if len({r.operation for r in top}) == 1:
            return top[0].operation
        # Same route for several operations (e.g. S3 PutObject / CopyObject):
        # keep those whose required header/query members are all present and
        # prefer the one that needs (and got) the most of them.
        scored = []
        for route in top:
            present = route.required_present(request.headers, request.query)
            if present is not None:
                scored.append((present, route.operation))
        if not scored:
            return None
        most = max(present for present, _ in scored)
        winners = {op for present, op in scored if present == most}
        return winners.pop() if len(winners) == 1 else None


class ServiceModels:
    """Lazily loaded index of botocore's service models (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loader = None
        self._index: dict[str, dict] | None = None  # service -> metadata
        self._services: dict[str, _Service] = {}

    def _get_loader(self):
        if self._loader is None:
            from botocore.loaders import create_loader

            self._loader = create_loader()
        return self._loader

    def _metadata(self, loader, name: str) -> dict:
        """A service's metadata without parsing its whole model (fast path)."""
        try:
            version = loader.determine_latest_version(name, "service-2")
            for search_path in loader.search_paths:
                base = os.path.join(search_path, name, version, "service-2.json")
                if os.path.exists(base + ".gz"):
                    with gzip.open(base + ".gz", "rt", encoding="utf-8") as handle:
                        head = handle.read(16384)
                elif os.path.exists(base):
                    with open(base, encoding="utf-8") as handle:
                        head = handle.read(16384)
                else:
                    continue
                start = head.find("{", head.find('"metadata"'))
                metadata, _ = json.JSONDecoder().raw_decode(head, start)
                if isinstance(metadata, dict) and "endpointPrefix" in metadata:
                    return metadata
                break
        except (OSError, ValueError, zlib.error, EOFError):
            pass
        return loader.load_service_model(name, "service-2").get("metadata", {})

    def index(self) -> dict[str, dict]:
        with self._lock:
            if self._index is None:
                loader = self._get_loader()
                index = {}
                for name in loader.list_available_services("service-2"):
                    try:
                        index[name] = self._metadata(loader, name)
                    except Exception:  # noqa: BLE001 - a broken model is skipped
                        continue
                self._index = index
            return self._index

    def service(self, name: str) -> _Service | None:
        with self._lock:
            cached = self._services.get(name)
        if cached is not None:
            return cached
        if name not in self.index():
            return None
        built = _Service(name, self._get_loader().load_service_model(name, "service-2"))
        with self._lock:
            return self._services.setdefault(name, built)

    def by_signing_name(self, signing_name: str) -> list[str]:
        index = self.index()
        exact = [n for n, m in index.items() if (m.get("signingName") or m.get("endpointPrefix")) == signing_name]
        if exact:
            return exact
        lowered = signing_name.lower()
        return [
            n for n, m in index.items() if (m.get("signingName") or m.get("endpointPrefix", "")).lower() == lowered
        ]

    def by_target_prefix(self, prefix: str) -> list[str]:
        return [n for n, m in self.index().items() if m.get("targetPrefix") == prefix]

    def by_moto_backend(self, backend: str | None) -> str | None:
        if not backend:
            return None
        backend = {"awslambda": "lambda", "iotdata": "iot-data"}.get(backend, backend)
        index = self.index()
        if backend in index:
            return backend
        matches = [n for n in index if _norm(n) == _norm(backend)]
        return matches[0] if len(matches) == 1 else None


# ---------------------------------------------------------------------------
# one request


class _Request:
    def __init__(self, environ: dict[str, Any], form_body: bytes | None):
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = _wsgi_str_to_text(environ.get("PATH_INFO", "")) or "/"
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        if raw.startswith(("http://", "https://")):
            raw = urlsplit(raw).path
        raw = raw.split("?", 1)[0]
        self.raw_path = raw or quote(self.path, safe="/") or "/"
        self.query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            self.headers["content-type"] = environ["CONTENT_TYPE"]
        self.target = environ.get("HTTP_X_AMZ_TARGET")
        self.form_body = form_body
        self._form: dict[str, list[str]] | None = None

    def signing_name(self) -> str | None:
        auth = self.headers.get("authorization", "")
        match = _SCOPE_RE.search(auth)
        scope = match.group(1) if match else (self.query.get("X-Amz-Credential") or [None])[0]
        if not scope:
            return None
        parts = scope.split("/")
        # access-key / date / region / service / aws4_request
        return parts[-2] if len(parts) >= 5 and parts[-1] == "aws4_request" else None

    def action(self) -> str | None:
        if "Action" in self.query:
            return self.query["Action"][0]
        if self._form is None:
            self._form = {}
            if self.form_body:
                try:
                    self._form = parse_qs(self.form_body.decode("utf-8"), keep_blank_values=True)
                except (UnicodeDecodeError, ValueError):
                    pass
        return (self._form.get("Action") or [None])[0]


def resolve(models: ServiceModels, request: _Request, moto_backend: str | None = None) -> tuple[str | None, str | None]:
    """(botocore service name, operation name) for one request; None where unknown."""
    signing = request.signing_name()
    if signing:
        candidates = models.by_signing_name(signing)
    elif request.target and "." in request.target:
        candidates = models.by_target_prefix(request.target.rpartition(".")[0])
    else:
        candidates = []
    moto_service = models.by_moto_backend(moto_backend)
    if not candidates and moto_service:
        candidates = [moto_service]

    resolved, inexact = [], []
    for name in candidates:
        service = models.service(name)
        operation, exact = service.resolve(request) if service else (None, False)
        if operation:
            (resolved if exact else inexact).append((name, operation))
    resolved = resolved or inexact
    if len(resolved) == 1:
        return resolved[0]
    pool = [name for name, _ in resolved] or candidates
    pick = _prefer(pool, signing, moto_service)
    if pick is None:
        return None, None
    return pick, dict(resolved).get(pick)


def _prefer(pool: list[str], signing: str | None, moto_service: str | None) -> str | None:
    if len(pool) == 1:
        return pool[0]
    # Several services accept this request: the moto backend that served it,
    # else the service named like the signing name, else unknown.
    if moto_service in pool:
        return moto_service
    if signing in pool:
        return signing
    return None


# ---------------------------------------------------------------------------
# the WSGI middleware


class RequestLog:
    """Append-only, line-buffered, thread-safe JSON-lines writer."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._handle = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict) -> None:
        line = json.dumps(record) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def _is_moto_api(environ: dict[str, Any]) -> bool:
    # The same test moto's DomainDispatcherApplication uses to route to moto_api.
    path = environ.get("PATH_INFO", "")
    return path.startswith("/moto-api") or path == "/favicon.ico"


class RequestLogMiddleware:
    """Wraps moto's dispatcher; writes one RequestLog line per request."""

    BACKEND_KEY = "iotreg.emulator.moto_backend"

    def __init__(
        self,
        app: Callable,
        log: RequestLog | None,
        models: ServiceModels | None = None,
        holds: Any = None,
    ):
        """``log`` None = no request log (the middleware may still serve
        ``holds``, a ``holds.Holds``: the /iotreg-test/ endpoint)."""
        self.app = app
        self.log = log
        self.models = models or ServiceModels()
        self.holds = holds
        self._warned = False
        self._warm_lock = threading.Lock()
        self._warming: threading.Thread | None = None
        # Remember which moto backend served each request (fallback for
        # unsigned requests).
        get_application = getattr(app, "get_application", None)
        if get_application is not None:
            key = self.BACKEND_KEY

            def recording_get_application(environ):
                backend_app = get_application(environ)
                environ[key] = getattr(backend_app, "service", None)
                return backend_app

            app.get_application = recording_get_application

    WARM_SERVICES = ("sts", "iam", "iot", "iot-data", "lambda", "logs")

    def warm_up(self) -> threading.Thread:
        """Index botocore's models (and load iotreg's services) in the background.

        Takes about 0.3 s; a request arriving earlier waits for the index.
        """

        with self._warm_lock:
            if self._warming is not None:
                return self._warming

        def run() -> None:
            try:
                self.models.index()
                for name in self.WARM_SERVICES:
                    self.models.service(name)
            except Exception as error:  # noqa: BLE001 - retried lazily per request
                print(f"iotreg-emulator: request log: warm-up failed: {error!r}", file=sys.stderr)

        with self._warm_lock:
            if self._warming is None:
                self._warming = threading.Thread(target=run, name="request-log-warm-up", daemon=True)
                self._warming.start()
            return self._warming

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        holds = self.holds
        if holds is not None and holds.is_control(environ):
            return holds.handle(environ, start_response)  # not logged, no SigV4
        if _is_moto_api(environ):
            result = self.app(environ, start_response)
            if (
                holds is not None
                and environ.get("PATH_INFO") == "/moto-api/reset"
                and environ.get("REQUEST_METHOD", "").upper() == "POST"
            ):
                holds.clear()
            return result
        if self.log is None and (holds is None or not holds.any()):
            return self.app(environ, start_response)  # nothing to log or hold

        form_body = self._read_form_body(environ)
        status: list[int] = []

        def recording_start_response(status_line, headers, exc_info=None):
            try:
                code = int(str(status_line).split(None, 1)[0])
            except (ValueError, IndexError):
                code = 0
            status[:] = [code]
            return start_response(status_line, headers, exc_info)

        logged = threading.Event()

        def emit(code: int) -> None:
            if not logged.is_set():
                logged.set()
                self._emit(environ, form_body, code)

        try:
            result = self.app(environ, recording_start_response)
        except BaseException:
            emit(status[0] if status else 500)
            raise
        if status:
            emit(status[0])
            return result
        return _LogOnFirstChunk(result, status, emit)

    @staticmethod
    def _read_form_body(environ: dict[str, Any]) -> bytes | None:
        """Read a form-encoded body (query protocol) and put it back for moto."""
        if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length <= 0:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        encoding = environ.get("HTTP_CONTENT_ENCODING", "").lower()
        try:
            if encoding == "gzip":
                return gzip.decompress(body)
            if encoding == "deflate":
                return zlib.decompress(body)
        except (OSError, zlib.error, EOFError):
            return None
        return body

    def _emit(self, environ: dict[str, Any], form_body: bytes | None, code: int) -> None:
        """Write the request's log line; first serve an armed hold (holds.py).

        Runs in the request's thread once the status is known and before the
        response is sent: a held request's line gets ``"held": true`` (it is
        its only line) and the thread then sleeps before answering.
        """
        record = self._record(environ, form_body, code)
        seconds = self.holds.take(record["operation"]) if self.holds is not None else None
        if seconds is not None:
            record["held"] = True
        if self.log is not None:
            try:
                self.log.write(record)
            except (OSError, ValueError) as error:
                if not self._warned:
                    self._warned = True
                    print(f"iotreg-emulator: request log: cannot write: {error!r}", file=sys.stderr)
        if seconds is not None:
            self.holds.sleep(seconds)

    def _record(self, environ: dict[str, Any], form_body: bytes | None, code: int) -> dict:
        request = None
        service = operation = None
        try:
            request = _Request(environ, form_body)
            service, operation = resolve(self.models, request, environ.get(self.BACKEND_KEY))
        except Exception as error:  # noqa: BLE001 - logging must never break a request
            if not self._warned:
                self._warned = True
                print(f"iotreg-emulator: request log: cannot resolve operation: {error!r}", file=sys.stderr)
        record = {
            "service": service,
            "operation": operation,
            "method": request.method if request else environ.get("REQUEST_METHOD"),
            "path": request.path if request else environ.get("PATH_INFO"),
            "status": code,
        }
        return record


class _LogOnFirstChunk:
    """For an app that calls start_response lazily: log once the status exists."""

    def __init__(self, result: Iterable[bytes], status: list[int], emit: Callable[[int], None]):
        self._result = result
        self._status = status
        self._emit = emit

    def __iter__(self):
        try:
            for chunk in self._result:
                if self._status:
                    self._emit(self._status[0])
                yield chunk
        except BaseException:
            self._emit(self._status[0] if self._status else 500)
            raise
        if self._status:
            self._emit(self._status[0])

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self._emit(self._status[0] if self._status else 500)
