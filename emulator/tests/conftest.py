"""Shared fixtures: start emulator/server.py on a free port, talk boto3 to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

import boto3
import pytest
from botocore.config import Config

SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server.py")
LISTENING = re.compile(r"^iotreg-emulator listening on (http://127\.0\.0\.1:(\d+))$")
START_TIMEOUT = 60.0

# Fake credentials only: nothing here may ever reach real AWS.
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
for _key, _value in FAKE_ENV.items():
    os.environ[_key] = _value
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)


@dataclass
class Emulator:
    process: subprocess.Popen
    url: str
    port: int
    startup_seconds: float
    first_line: str
    stderr_path: str
    extra_stdout: list[str] = field(default_factory=list)

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            # total_max_attempts: one attempt, so a 500 fails the test instead of being retried away
            # ("max_attempts": 1 would still allow one retry).
            config=Config(retries={"total_max_attempts": 1}),
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if not os.environ.get("IOTREG_EMULATOR_KEEP_LOGS"):
            try:
                os.unlink(self.stderr_path)
            except OSError:
                pass
        return self.process.returncode

    def log(self) -> str:
        with open(self.stderr_path, errors="replace") as handle:
            return handle.read()


def start_emulator(*extra_args: str, env: dict | None = None, cwd: str | None = None) -> Emulator:
    stderr = tempfile.NamedTemporaryFile(
        prefix="iotreg-emulator-", suffix=".log", delete=False
    )
    child_env = dict(os.environ)
    child_env.update(FAKE_ENV)
    for key, value in (env or {}).items():  # None removes a variable
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, SERVER, "--host", "127.0.0.1", "--port", "0", *extra_args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env,
        cwd=cwd,
    )
    stderr.close()

    first: list[str] = []
    ready = threading.Event()

    def read_first_line() -> None:
        first.append(process.stdout.readline())
        ready.set()

    threading.Thread(target=read_first_line, daemon=True).start()
    if not ready.wait(START_TIMEOUT):
        process.kill()
        process.wait()
        raise RuntimeError(f"emulator did not start in {START_TIMEOUT}s; see {stderr.name}")
    elapsed = time.monotonic() - started
    line = first[0].rstrip("\n")
    match = LISTENING.match(line)
    if not match:
        process.kill()
        process.wait()
        log = open(stderr.name).read()[-4000:]
        raise RuntimeError(f"unexpected first line {line!r}; stderr:\n{log}")

    emulator = Emulator(
        process=process,
        url=match.group(1),
        port=int(match.group(2)),
        startup_seconds=elapsed,
        first_line=line,
        stderr_path=stderr.name,
    )

    def drain() -> None:  # keep the pipe empty; remember anything extra
        for extra in process.stdout:
            emulator.extra_stdout.append(extra)

    threading.Thread(target=drain, daemon=True).start()
    return emulator


@pytest.fixture(scope="session")
def emulator():
    server = start_emulator()
    try:
        yield server
    finally:
        server.stop()


def clients_of(emulator):
    """A boto3 client per service on `emulator`, each made once (the `aws` fixtures)."""
    cache: dict[str, object] = {}

    def get(service: str):
        if service not in cache:
            cache[service] = emulator.client(service)
        return cache[service]

    return get


@pytest.fixture(scope="session")
def aws(emulator):
    return clients_of(emulator)


@pytest.fixture
def name():
    """A fresh resource name per test (all tests share one emulator)."""
    return f"t{uuid.uuid4().hex[:12]}"


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def http_status(excinfo) -> int:
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]
