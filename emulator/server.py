#!/usr/bin/env python3
"""iotreg's local AWS emulator: moto's multi-service server with fixes.

Usage:
    python3 emulator/server.py --host 127.0.0.1 --port 0

Serves the same dispatcher that ``moto_server`` uses (every service on one
port, requests routed by their SigV4 signing service / Host header) on a
threaded werkzeug server.  Before serving it applies the fixes in
``emulator/fixes/`` which make moto 5.2.1 answer like real AWS where iotreg
can tell the difference (see emulator/README.md).

Once the socket is listening, exactly one line is written to stdout:

    iotreg-emulator listening on http://HOST:PORT

after which stdout is redirected to stderr, so nothing else ever appears on
stdout.  SIGTERM / SIGINT shut the server down and the process exits 0.

``--jobs-minute SECONDS`` (or $IOTREG_EMULATOR_JOBS_MINUTE, default 60) is how
many real seconds one AWS minute lasts for the jobs engine (emulator/jobs/).

``--request-log FILE`` (or $IOTREG_EMULATOR_REQUEST_LOG) appends one JSON line
per AWS API request to FILE; see emulator/request_log.py.

``POST /iotreg-test/hold`` {"operation": ..., "seconds": ...} holds the next
response of that operation (crash testing); see emulator/holds.py.

The data path moto lacks (iot-data Publish -> topic rules -> Lambda handler
run with python3 -> CloudWatch Logs, and Lambda Invoke without Docker) lives
in emulator/datapath/.

The device gateway (emulator/gateway/: MQTT 3.1.1 over TLS with client
certificates, HTTPS publish, MQTT over SigV4 WebSockets, device shadow
topics) runs in the same process on two more ports of 127.0.0.1;
``GET /iotreg-test/gateway`` reports them.  ``--no-gateway`` leaves it out.

Lambda event source mappings of Kinesis streams are run by a poller thread
(emulator/datapath/stream_poller.py); ``GET /iotreg-test/event-source-mappings``
shows their counters and checkpoints (emulator-only).

The gateway and the rules engine publish AWS IoT's CloudWatch metrics
(Connect.Success, PublishIn.Success, TopicMatch, ...) into the emulator's
CloudWatch through emulator/metrics.py, about once a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

# Must be set before moto is imported: moto reads it when the IAM backend is
# built (AWS-managed policies such as AWSLambdaBasicExecutionRole exist).
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
# Fake credentials in case a moto code path builds a boto3 client itself.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind (0 = a free port)"
    )
    parser.add_argument(
        "--thing-type-delete-delay",
        type=float,
        default=None,
        metavar="SECONDS",
        help="refuse DeleteThingType until SECONDS after DeprecateThingType "
        "(AWS: 300; default: $IOTREG_EMULATOR_THING_TYPE_DELETE_DELAY or 0)",
    )
    parser.add_argument(
        "--request-log",
        default=None,
        metavar="FILE",
        help="append one JSON line per AWS API request to FILE "
        '({"service", "operation", "method", "path", "status"}; '
        "default: $IOTREG_EMULATOR_REQUEST_LOG, unset = no log)",
    )
    parser.add_argument(
        "--jobs-minute",
        type=float,
        default=None,
        metavar="SECONDS",
        help="real seconds one AWS minute lasts for the jobs engine: rollout rates, "
        "in-progress and step timeouts (default: $IOTREG_EMULATOR_JOBS_MINUTE or 60)",
    )
    parser.add_argument(
        "--no-gateway",
        action="store_true",
        help="do not start the device gateway (MQTT / HTTPS / WebSockets data endpoint)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log every request to stderr (werkzeug access log)",
    )
    args = parser.parse_args(argv)
    if args.request_log is None:
        args.request_log = os.environ.get("IOTREG_EMULATOR_REQUEST_LOG") or None
    if args.request_log == "":
        parser.error("--request-log needs a file name")
    if args.jobs_minute is not None and not args.jobs_minute > 0:
        parser.error("--jobs-minute must be a positive number of seconds")
    return args


def build_app():
    """moto's multi-service WSGI app, with the emulator's fixes applied."""
    import datapath
    import fixes
    import metrics

    fixes.apply_all()
    datapath.apply()  # rules engine -> Lambda (python) -> CloudWatch Logs
    metrics.apply()  # AWS/IoT metrics into CloudWatch; /moto-api/reset drops unflushed ones
    metrics.start()

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        create_backend_app,
    )

    return DomainDispatcherApplication(create_backend_app)


def _gateway_info(device_gateway) -> tuple[int, dict]:
    if device_gateway is None:
        return 404, {"error": "the device gateway is not running (--no-gateway)"}
    return 200, device_gateway.info()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.thing_type_delete_delay is not None:
        os.environ["IOTREG_EMULATOR_THING_TYPE_DELETE_DELAY"] = str(
            args.thing_type_delete_delay
        )
    if args.jobs_minute is not None:
        # Read by the jobs engine (emulator/jobs/clock.py) whenever it needs the minute.
        os.environ["IOTREG_EMULATOR_JOBS_MINUTE"] = repr(args.jobs_minute)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(
        logging.INFO if args.verbose else logging.WARNING
    )

    request_log = None
    if args.request_log is not None:
        from request_log import RequestLog

        try:
            request_log = RequestLog(args.request_log)
        except OSError as error:
            sys.stderr.write(f"iotreg-emulator: cannot open request log: {error}\n")
            return 2

    from holds import Holds
    from request_log import RequestLogMiddleware

    # The middleware serves the /iotreg-test/ endpoint (holds.py) always and
    # writes the request log when one is configured.
    app = RequestLogMiddleware(build_app(), request_log)
    app.holds = Holds(on_arm=app.warm_up)
    if request_log is not None:
        app.warm_up()  # indexes botocore's service models in the background

    from werkzeug.serving import make_server

    server = make_server(args.host, args.port, app, threaded=True)
    host, port = server.server_address[:2]
    # moto uses MOTO_PORT when it builds URLs pointing back at itself.
    os.environ["MOTO_PORT"] = str(port)
    import datapath

    loopback = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    loopback = f"[{loopback}]" if ":" in loopback and not loopback.startswith("[") else loopback
    # Lambda handlers run by the emulator send their own AWS calls here.
    datapath.set_endpoint(f"http://{loopback}:{port}")
    # Lambda event source mappings of Kinesis streams are polled from now on.
    datapath.start()
    from datapath import stream_poller

    app.holds.add_route("/event-source-mappings", "GET", lambda: (200, stream_poller.snapshot()))

    # The device gateway (emulated AWS IoT data endpoint: MQTT over TLS,
    # HTTPS publish, MQTT over WebSockets) is listening before the line below
    # is printed; GET /iotreg-test/gateway reports its ports and CA file.
    import metrics

    device_gateway = None
    if not args.no_gateway:
        import gateway

        try:
            device_gateway = gateway.Gateway(host="127.0.0.1", verbose=args.verbose).start()
        except RuntimeError as error:
            sys.stderr.write(f"iotreg-emulator: {error}\n")
            server.server_close()
            return 2
    app.holds.add_route("/gateway", "GET", lambda: _gateway_info(device_gateway))

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    worker = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True
    )
    worker.start()

    display_host = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"iotreg-emulator listening on http://{display_host}:{port}\n")
    sys.stdout.flush()
    # Anything printed later (moto prints a few diagnostics) goes to stderr so
    # that stdout carries exactly the one line above.
    sys.stdout = sys.stderr

    while not stop.wait(0.2):
        if not worker.is_alive():
            if device_gateway is not None:
                device_gateway.stop()
            datapath.shutdown()
            metrics.stop()
            return 1
    if device_gateway is not None:
        device_gateway.stop()  # closes client connections, removes the CA file
    server.shutdown()
    server.server_close()
    worker.join(timeout=5)
    datapath.shutdown()  # kill handlers still running, remove unpacked code
    metrics.stop()  # the last values recorded go into CloudWatch; the flusher ends
    if request_log is not None:
        request_log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
