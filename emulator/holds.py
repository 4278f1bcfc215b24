"""Test-control endpoint for crash testing: hold one response of an operation.

    POST /iotreg-test/hold          {"operation": "CreateThing", "seconds": 20}
    POST /iotreg-test/reset-holds
    GET  /iotreg-test/holds

(``GET /iotreg-test/gateway``, the device gateway's ports and CA file, is
registered by server.py through ``Holds.add_route``.)

Arming a hold makes the NEXT request whose resolved operation (the same
resolution as the request log, emulator/request_log.py) equals ``operation``
be processed normally by moto (its effect happens), then, before its response
is sent, append its request-log line with ``"held": true`` (if a request log
is configured; that request gets no other line) and sleep ``seconds`` (capped
at 60) in that request's server thread; then the response is sent (a client
that has gone away meanwhile is ignored quietly).  The hold is consumed by
that one request; other requests keep being served by other threads.

Several holds may be armed at once (one per operation); arming an operation
again replaces its hold.  ``reset-holds`` and moto's ``/moto-api/reset`` clear
all armed holds (a request already sleeping keeps sleeping).  Requests to
``/iotreg-test/...`` are answered here (never reach moto), need no SigV4 and
are not logged.  Request threads are daemon threads, so a hold in progress
never delays shutdown.

The wiring (resolution, logging, sleeping) lives in
``request_log.RequestLogMiddleware``; this module is the registry and the
HTTP endpoint.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any, Callable, Iterable

PREFIX = "/iotreg-test"
MAX_SECONDS = 60.0
MAX_BODY = 64 * 1024


class Holds:
    """Thread-safe one-shot holds: operation name -> seconds."""

    def __init__(self, on_arm: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._holds: dict[str, float] = {}
        self._on_arm = on_arm
        self._extra_routes: dict[str, tuple[str, Callable[[], tuple[int, dict]]]] = {}

    def arm(self, operation: str, seconds: float) -> dict[str, float]:
        seconds = min(float(seconds), MAX_SECONDS)
        with self._lock:
            self._holds[operation] = seconds
            armed = dict(self._holds)
        if self._on_arm is not None:
            self._on_arm()
        return armed

    def armed(self) -> dict[str, float]:
        with self._lock:
            return dict(self._holds)

    def any(self) -> bool:
        return bool(self._holds)  # a racy peek is fine: decided per request

    def take(self, operation: str | None) -> float | None:
        """Consume the hold for ``operation``; its seconds, or None."""
        if operation is None or not self._holds:
            return None
        with self._lock:
            return self._holds.pop(operation, None)

    def clear(self) -> None:
        with self._lock:
            self._holds.clear()

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    # -- HTTP endpoint -----------------------------------------------------

    def add_route(self, suffix: str, method: str, handler: Callable[[], tuple[int, dict]]) -> None:
        """Serve ``PREFIX + suffix`` for another component (e.g. ``/gateway``).

        ``handler()`` returns (HTTP status, JSON body); a request body is ignored."""
        self._extra_routes[PREFIX + suffix] = (method, handler)

    @staticmethod
    def is_control(environ: dict[str, Any]) -> bool:
        path = environ.get("PATH_INFO", "")
        return path == PREFIX or path.startswith(PREFIX + "/")

    def handle(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "").rstrip("/")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        routes = {
            PREFIX + "/hold": ("POST", self._hold),
            PREFIX + "/reset-holds": ("POST", self._reset),
            PREFIX + "/holds": ("GET", self._list),
        }
        if path in self._extra_routes:
            allowed, extra = self._extra_routes[path]
            if method != allowed:
                return _answer(start_response, 405, {"error": f"use {allowed}"}, [("Allow", allowed)])
            _read_body(environ)
            code, body = extra()
            return _answer(start_response, code, body)
        if path not in routes:
            return _answer(start_response, 404, {"error": f"unknown test-control path {path or '/'}"})
        allowed, handler = routes[path]
        if method != allowed:
            return _answer(start_response, 405, {"error": f"use {allowed}"}, [("Allow", allowed)])
        try:
            body = handler(environ)
        except ValueError as error:
            return _answer(start_response, 400, {"error": str(error)})
        return _answer(start_response, 200, body)

    def _hold(self, environ: dict[str, Any]) -> dict:
        request = _read_json(environ)
        if not isinstance(request, dict):
            raise ValueError('body must be a JSON object {"operation": NAME, "seconds": N}')
        unknown = sorted(set(request) - {"operation", "seconds"})
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        operation = request.get("operation")
        seconds = request.get("seconds")
        if not isinstance(operation, str) or not operation:
            raise ValueError('"operation" must be a non-empty string (e.g. "CreateThing")')
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ValueError('"seconds" must be a number')
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError('"seconds" must be a finite number >= 0')
        return {"armed": self.arm(operation, seconds)}

    def _reset(self, environ: dict[str, Any]) -> dict:
        _read_body(environ)  # drain whatever was sent
        self.clear()
        return {"armed": {}}

    def _list(self, environ: dict[str, Any]) -> dict:  # noqa: ARG002
        return {"armed": self.armed()}


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as error:
        raise ValueError("bad Content-Length") from error
    if length > MAX_BODY:
        raise ValueError("body too large")
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _read_json(environ: dict[str, Any]) -> Any:
    body = _read_body(environ)
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"body is not JSON: {error}") from error


def _answer(start_response: Callable, code: int, body: dict, extra=()) -> list[bytes]:
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    data = json.dumps(body).encode("utf-8")
    start_response(
        f"{code} {reasons[code]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra],
    )
    return [data]
