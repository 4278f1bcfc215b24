"""Run a Lambda function's Python handler from its stored zip, as Lambda does.

moto 5.2.1 invokes functions only inside Docker. The emulator instead runs the
handler with its own interpreter (``sys.executable``, which has boto3) in a
subprocess (bootstrap.py), and writes what the handler logs to CloudWatch Logs
the way Lambda does:

* log group ``/aws/lambda/<function name>`` (created if missing), one new
  stream per invocation named ``YYYY/MM/DD/[$LATEST]<32 hex>`` (UTC date);
* events (timestamp = the time the emulator received the line, epoch ms),
  each message ending with a newline as Lambda's do::

      START RequestId: <id> Version: $LATEST\\n
      [INFO]\\t2026-11-27T18:00:00.123Z\\t<id>\\t<message>\\n   (logging record)
      <printed line>\\n                                      (print(), one per line)
      [ERROR] <Type>: <message>\\nTraceback (most recent call last):\\n...
      <ts> <id> Task timed out after 3.00 seconds\\n         (timeout only)
      END RequestId: <id>\\n
      REPORT RequestId: <id>\\tDuration: 12.34 ms\\tBilled Duration: 13 ms\\tMemory Size: 128 MB\\tMax Memory Used: 45 MB\\t\\n

  (a timed-out invocation's REPORT has ``Status: timeout\\t`` before the
  newline).

The function's Timeout is enforced from the moment the handler is called
(the module import - Lambda's init phase - may take up to 10 s more); on
expiry the process group is killed. Environment: the function's variables,
then Lambda's (AWS_REGION, AWS_DEFAULT_REGION, AWS_LAMBDA_FUNCTION_NAME, ...),
fake credentials ``testing``/``testing`` and AWS_ENDPOINT_URL = the emulator,
so the handler's own boto3 calls land here. Variables a function sets that
could point boto3 elsewhere (AWS_ENDPOINT_URL*, AWS_PROFILE, proxies, ...)
are dropped.

``apply()`` replaces moto's Docker-based ``LambdaFunction.invoke`` for
zip-packaged python runtimes (Invoke API: RequestResponse, Event, DryRun;
LogType=Tail); other functions keep moto's behaviour.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")
INIT_TIMEOUT = 10.0  # Lambda's on-demand init phase limit
TAIL_BYTES = 4096
BACKGROUND_WORKERS = 16

_state = {"endpoint_url": None}
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_logs_lock = threading.Lock()
_code_lock = threading.Lock()
_code_root: str | None = None
_background: queue.Queue = queue.Queue()
_workers: list[threading.Thread] = []
_workers_lock = threading.Lock()


def note(message: str) -> None:
    """One diagnostic line on stderr (never raises)."""
    try:
        sys.stderr.write(f"iotreg-emulator: datapath: {message}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


def set_endpoint(url: str) -> None:
    """The URL handlers' boto3 clients use (AWS_ENDPOINT_URL): the emulator."""
    _state["endpoint_url"] = url


def endpoint_url() -> str:
    url = _state["endpoint_url"]
    if url:
        return url
    port = os.environ.get("MOTO_PORT", "5000")
    return f"http://127.0.0.1:{port}"


def handles(fn: Any) -> bool:
    """Whether the emulator runs this function itself (zip, python runtime)."""
    runtime = str(getattr(fn, "run_time", "") or "")
    return (
        runtime.startswith("python")
        and getattr(fn, "package_type", "Zip") == "Zip"
        and bool(getattr(fn, "code_bytes", b""))
    )


# -- CloudWatch Logs ---------------------------------------------------------


class LogWriter:
    """Writes one invocation's events into moto's logs backend, in-process."""

    def __init__(self, account_id: str, region: str, group: str, stream: str, fn: Any = None):
        from moto.logs.models import logs_backends

        self.backend = logs_backends[account_id][region]
        # The function whose invocation this is: once it is deleted, a group deleted too (by
        # `down`) is not recreated for the rest of its output.
        self.fn = fn
        self.group = group
        self.stream = stream
        self.messages: list[str] = []
        self._last = 0
        with _logs_lock:
            self._ensure()

    def _ensure(self) -> None:
        self.backend.ensure_log_group(self.group)
        self.backend.ensure_log_stream(self.group, self.stream)

    def emit(self, message: str) -> None:
        if not message:
            return
        self.messages.append(message)
        with _logs_lock:
            now = max(int(time.time() * 1000), self._last)
            self._last = now
            event = [{"timestamp": now, "message": message}]
            try:
                self.backend.put_log_events(self.group, self.stream, event)
            except Exception:  # noqa: BLE001 - group/stream deleted meanwhile
                if self.fn is not None and not _still_exists(self.fn):
                    note(f"log of {self.group} dropped: the function and its log group were deleted")
                    return
                try:
                    self._ensure()
                    self.backend.put_log_events(self.group, self.stream, event)
                except Exception as error:  # noqa: BLE001
                    note(f"cannot write to log group {self.group}: {error!r}")

    def tail(self) -> str:
        text = "".join(m if m.endswith("\n") else m + "\n" for m in self.messages)
        data = text.encode("utf-8")[-TAIL_BYTES:]
        return base64.b64encode(data).decode("ascii")


# -- code --------------------------------------------------------------------


def _code_dir(fn: Any) -> str:
    """The function's zip unpacked (once per code digest) in a private temp dir."""
    global _code_root
    import hashlib

    digest = getattr(fn, "code_digest", None) or hashlib.sha256(fn.code_bytes).hexdigest()
    with _code_lock:
        if _code_root is None or not os.path.isdir(_code_root):
            _code_root = tempfile.mkdtemp(prefix="iotreg-emulator-lambda-")
        target = os.path.join(_code_root, digest)
        if not os.path.isdir(target):
            staging = tempfile.mkdtemp(dir=_code_root, prefix="unpack-")
            try:
                with zipfile.ZipFile(_BytesReader(fn.code_bytes)) as archive:
                    archive.extractall(staging)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return target


def _BytesReader(data: bytes):  # noqa: N802 - tiny factory
    return io.BytesIO(data)


def cleanup() -> None:
    """Kill running handlers and remove unpacked code (server shutdown)."""
    global _code_root
    with _children_lock:
        children = list(_children)
    for child in children:
        _kill(child)
    with _code_lock:
        if _code_root is not None:
            shutil.rmtree(_code_root, ignore_errors=True)
            _code_root = None


# -- environment -------------------------------------------------------------

_DROPPED_PREFIXES = ("AWS_ENDPOINT_URL",)
_DROPPED = {
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CA_BUNDLE",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
}


def build_env(fn: Any, version: str, group: str, stream: str, task_root: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in (getattr(fn, "environment_vars", None) or {}).items():
        if key in _DROPPED or key.startswith(_DROPPED_PREFIXES):
            continue
        env[str(key)] = str(value)
    env.update(
        {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PYTHONUTF8": "1",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LAMBDA_TASK_ROOT": task_root,
            "_HANDLER": str(fn.handler or ""),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": version,
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout),
            "AWS_LAMBDA_LOG_GROUP_NAME": group,
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": endpoint_url(),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.pop("AWS_SESSION_TOKEN", None)
    return env


# -- one invocation ----------------------------------------------------------


@dataclass
class Result:
    request_id: str
    payload: bytes
    error: dict | None = None
    timed_out: bool = False
    duration_ms: float = 0.0
    log_tail_b64: str = ""
    log_stream: str = ""
    messages: list = field(default_factory=list)


def _iso_now() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _version(fn: Any) -> str:
    version = str(getattr(fn, "version", "$LATEST") or "$LATEST")
    return version


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            process.kill()
        except OSError:
            pass


def _peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def invoke(fn: Any, event: Any, invoked_arn: str | None = None) -> Result:
    """Run the handler once (blocking); logs go to CloudWatch Logs."""
    request_id = str(uuid.uuid4())
    version = _version(fn)
    now = datetime.now(timezone.utc)
    group = f"/aws/lambda/{fn.function_name}"
    stream = f"{now:%Y/%m/%d}/[{version}]{uuid.uuid4().hex}"
    log = LogWriter(fn.account_id, fn.region, group, stream, fn)
    log.emit(f"START RequestId: {request_id} Version: {version}\n")

    timeout = float(fn.timeout or 3)
    memory = int(fn.memory_size or 128)
    launched = time.monotonic()
    state: dict[str, Any] = {"frame": None, "start": None, "maxrss_kb": 0}
    started = threading.Event()
    finished = threading.Event()

    def fail(error_type: str, message: str) -> Result:
        error = {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": []}
        log.emit(f"[ERROR] {error_type}: {message}")
        return _finish(log, request_id, error, False, time.monotonic() - launched, memory, 0, stream)

    try:
        task_root = _code_dir(fn)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        return fail("Runtime.InvalidZipFile", f"Could not unzip the function's code: {error}")

    request = {
        "handler": str(fn.handler or ""),
        "event": event,
        "request_id": request_id,
        "function_name": fn.function_name,
        "function_version": version,
        "invoked_function_arn": invoked_arn or fn.function_arn,
        "memory_limit_in_mb": str(memory),
        "timeout_ms": int(timeout * 1000),
        "log_group_name": group,
        "log_stream_name": stream,
    }
    try:
        process = subprocess.Popen(
            [sys.executable, BOOTSTRAP],
            cwd=task_root,
            env=build_env(fn, version, group, stream, task_root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as error:
        return fail("Runtime.ExitError", f"RequestId: {request_id} Error: cannot start python3: {error}")
    with _children_lock:
        _children.add(process)

    def read_frames() -> None:
        for raw in process.stdout:
            try:
                frame = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            kind = frame.get("k")
            if kind in ("log", "line"):
                if not finished.is_set():
                    log.emit(str(frame.get("m", "")))
            elif kind == "start":
                state["start"] = time.monotonic()
                started.set()
            elif kind in ("result", "error") and not finished.is_set():
                state["end"] = time.monotonic()
                state["frame"] = frame
                state["maxrss_kb"] = int(frame.get("maxrss_kb") or 0)
                finished.set()
        finished.set()  # EOF: the process is gone (or closed its channel)

    def read_stderr() -> None:
        for raw in process.stderr:
            if not finished.is_set() or state.get("frame") is not None:
                line = raw.decode("utf-8", errors="replace")
                log.emit(line if line.endswith("\n") else line + "\n")

    readers = [
        threading.Thread(target=read_frames, name="lambda-frames", daemon=True),
        threading.Thread(target=read_stderr, name="lambda-stderr", daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        process.stdin.write(json.dumps(request).encode("utf-8"))
        process.stdin.close()
    except (BrokenPipeError, OSError, TypeError, ValueError) as error:
        if isinstance(error, (TypeError, ValueError)):
            note(f"event for {fn.function_name} is not JSON: {error!r}")
        try:
            process.stdin.close()
        except OSError:
            pass

    timed_out = False
    try:
        # Init (module import): up to INIT_TIMEOUT; then the function's Timeout.
        deadline = launched + INIT_TIMEOUT
        while not started.is_set() and not finished.is_set():
            if time.monotonic() >= deadline:
                timed_out = True
                break
            started.wait(0.02)
        if not timed_out and started.is_set() and not finished.is_set():
            if not finished.wait(max(state["start"] + timeout - time.monotonic(), 0)):
                timed_out = not finished.is_set()
        if timed_out:
            state["maxrss_kb"] = _peak_rss_kb(process.pid)
            finished.set()
            _kill(process)
        else:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
            _kill(process)  # whatever the handler left running (Lambda freezes it)
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        for reader in readers:
            reader.join(timeout=2.0)
    finally:
        with _children_lock:
            _children.discard(process)
        for pipe in (process.stdout, process.stderr):
            try:
                pipe.close()
            except OSError:
                pass

    if timed_out:
        began = state["start"] if state["start"] is not None else launched
        log.emit(f"{_iso_now()} {request_id} Task timed out after {timeout:.2f} seconds\n")
        error = {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds",
        }
        return _finish(log, request_id, error, True, time.monotonic() - began, memory, state["maxrss_kb"], stream)

    frame = state["frame"]
    began = state["start"] if state["start"] is not None else launched
    elapsed = state.get("end", time.monotonic()) - began
    if frame is None:
        code = process.returncode
        status = f"signal: {signal.Signals(-code).name.lower()[3:]}" if code is not None and code < 0 else f"exit status {code}"
        message = f"RequestId: {request_id} Error: Runtime exited with error: {status}"
        log.emit(f"{message}\nRuntime.ExitError\n")
        error = {"errorType": "Runtime.ExitError", "errorMessage": message}
        return _finish(log, request_id, error, False, elapsed, memory, state["maxrss_kb"], stream)
    if frame["k"] == "error":
        return _finish(log, request_id, frame["error"], False, elapsed, memory, state["maxrss_kb"], stream)
    result = _finish(log, request_id, None, False, elapsed, memory, state["maxrss_kb"], stream)
    result.payload = str(frame.get("payload", "null")).encode("utf-8")
    return result


def _finish(log: LogWriter, request_id: str, error: dict | None, timed_out: bool,
            seconds: float, memory: int, maxrss_kb: int, stream: str) -> Result:
    duration = max(seconds * 1000.0, 0.01)
    used = max(1, math.ceil(maxrss_kb / 1024)) if maxrss_kb else 1
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration:.2f} ms",
        f"Billed Duration: {max(1, math.ceil(duration))} ms",
        f"Memory Size: {memory} MB",
        f"Max Memory Used: {min(used, memory)} MB",
    ]
    if timed_out:
        fields.append("Status: timeout")
    log.emit(f"END RequestId: {request_id}\n")
    log.emit("\t".join(fields) + "\t\n")
    payload = json.dumps(error).encode("utf-8") if error is not None else b"null"
    return Result(
        request_id=request_id,
        payload=payload,
        error=error,
        timed_out=timed_out,
        duration_ms=duration,
        log_tail_b64=log.tail(),
        log_stream=stream,
        messages=list(log.messages),
    )


# -- background (Event) invocations -------------------------------------------


def _still_exists(fn: Any) -> bool:
    """Whether the function an event was queued for still exists."""
    from moto.awslambda.utils import get_backend

    try:
        get_backend(fn.account_id, fn.region).get_function(fn.function_arn)
    except Exception:  # noqa: BLE001 - UnknownFunctionException and the like
        return False
    return True


def _worker() -> None:
    while True:
        fn, event, invoked_arn = _background.get()
        # AWS discards the queued events of a deleted function: running them anyway would
        # write logs (and recreate the log group `down` just deleted) for a function gone.
        if not _still_exists(fn):
            note(f"asynchronous invocation of {getattr(fn, 'function_name', '?')} dropped: "
                 "the function was deleted")
            continue
        try:
            invoke(fn, event, invoked_arn)
        except Exception as error:  # noqa: BLE001 - never kill the worker
            note(f"invocation of {getattr(fn, 'function_name', '?')} failed: {error!r}")


def submit(fn: Any, event: Any, invoked_arn: str | None = None) -> None:
    """Invoke asynchronously (Lambda's Event invocation type)."""
    with _workers_lock:
        while len(_workers) < BACKGROUND_WORKERS:
            thread = threading.Thread(target=_worker, name=f"lambda-{len(_workers)}", daemon=True)
            thread.start()
            _workers.append(thread)
    _background.put((fn, event, invoked_arn))


# -- moto patch: the Invoke API ----------------------------------------------


def _invalid_content(message: str):
    from moto.awslambda.exceptions import LambdaClientError

    error = LambdaClientError("InvalidRequestContentException", message)
    error.code = 400
    return error


def _make_invoke(original):
    def invoke_api(self, body, request_headers, response_headers):
        if not handles(self):
            return original(self, body, request_headers, response_headers)
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _invalid_content(f"Could not parse request body into json: {error}") from None
        try:
            event = json.loads(body) if body and body.strip() else {}
        except ValueError as error:
            raise _invalid_content(
                f"Could not parse request body into json: Could not parse payload into json: {error}"
            ) from None
        headers = request_headers or {}
        invocation_type = headers.get("x-amz-invocation-type") or headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        response_headers["x-amz-executed-version"] = _version(self)
        if invocation_type == "DryRun":
            return b""
        if invocation_type == "Event":
            submit(self, event, self.function_arn)
            return b""
        result = invoke(self, event, self.function_arn)
        if result.error is not None:
            response_headers["x-amz-function-error"] = "Unhandled"
        response_headers["x-amz-log-result"] = result.log_tail_b64
        return result.payload

    invoke_api._iotreg_datapath = True
    return invoke_api


def apply() -> None:
    from moto.awslambda.models import LambdaFunction

    current = LambdaFunction.invoke
    if getattr(current, "_iotreg_datapath", False):
        return
    LambdaFunction._emulator_orig_invoke = current
    LambdaFunction.invoke = _make_invoke(current)
