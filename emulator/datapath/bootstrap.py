"""Child side of an emulated Lambda invocation (run by lambda_runtime.py).

Started as ``python3 bootstrap.py`` with the function's environment, its code
unpacked in the working directory (LAMBDA_TASK_ROOT). Reads one JSON request
from stdin::

    {"handler": "module.function", "event": <any JSON>, "request_id": "...",
     "function_name": ..., "function_version": ..., "invoked_function_arn": ...,
     "memory_limit_in_mb": "128", "timeout_ms": 3000,
     "log_group_name": ..., "log_stream_name": ...}

and writes JSON frames, one per line, to the original stdout (the "telemetry"
channel; fd 1 itself is pointed at stderr so stray writes to it land in the
log as plain lines)::

    {"k": "log", "m": "<one log event>"}      a logging record / the error report
    {"k": "line", "m": "<one line>"}          a line printed to sys.stdout/stderr
    {"k": "start"}                             init done, the handler starts now
    {"k": "result", "payload": "<json>", "maxrss_kb": N}
    {"k": "error", "error": {errorMessage, errorType, requestId, stackTrace},
     "maxrss_kb": N}

Logging is set up as AWS's Python runtime (awslambdaric) does it: a handler
on the root logger whose format is
``[%(levelname)s]\\t%(asctime)s.%(msecs)03dZ\\t%(aws_request_id)s\\t%(message)s\\n``
(asctime in UTC, ``%Y-%m-%dT%H:%M:%S``); each record is one log event, so a
multi-line message stays one event. An unhandled exception is reported as
one event ``[ERROR] Type: message\\nTraceback (most recent call last):\\n...``
(indentation of the traceback lines as U+00A0, like the runtime's framed log
sink) and as the error payload.
"""

import importlib
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback

ERROR_LOG_IDENT = "\u00a0"


class Channel:
    def __init__(self, fd):
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()

    def send(self, frame):
        data = (json.dumps(frame, ensure_ascii=True) + "\n").encode("ascii")
        with self._lock:
            self._file.write(data)


class LineWriter:
    """sys.stdout / sys.stderr: every complete line becomes one log event."""

    def __init__(self, channel, name):
        self._channel = channel
        self._buffer = ""
        self._lock = threading.Lock()
        self.name = name
        self.encoding = "utf-8"
        self.errors = "strict"

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._buffer += text
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                self._channel.send({"k": "line", "m": line + "\n"})
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def close_partial(self):
        with self._lock:
            if self._buffer:
                self._channel.send({"k": "line", "m": self._buffer + "\n"})
                self._buffer = ""

    def isatty(self):
        return False

    def fileno(self):
        return 2

    def readable(self):
        return False

    def writable(self):
        return True


_REQUEST_ID = ""


class LambdaLoggerFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _REQUEST_ID
        return True


class LambdaLoggerHandler(logging.Handler):
    def __init__(self, channel):
        super().__init__()
        self._channel = channel

    def emit(self, record):
        try:
            self._channel.send({"k": "log", "m": self.format(record)})
        except Exception:  # noqa: BLE001 - as logging.Handler does
            self.handleError(record)


class LambdaContext:
    def __init__(self, request):
        self.aws_request_id = request["request_id"]
        self.function_name = request["function_name"]
        self.function_version = request["function_version"]
        self.invoked_function_arn = request["invoked_function_arn"]
        self.memory_limit_in_mb = request["memory_limit_in_mb"]
        self.log_group_name = request["log_group_name"]
        self.log_stream_name = request["log_stream_name"]
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_ms = int(time.time() * 1000) + int(request["timeout_ms"])

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, message):
        sys.stdout.write(message)

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id={},log_group_name={},log_stream_name={},"
            "function_name={},memory_limit_in_mb={},function_version={},"
            "invoked_function_arn={},client_context=None,identity=None])".format(
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
            )
        )


class FaultException(Exception):
    def __init__(self, error_type, message, trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.msg = message
        self.trace = trace


def maxrss_kb():
    # VmHWM is this program's own peak (ru_maxrss would include the
    # emulator's memory, inherited through fork before exec).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except Exception:  # noqa: BLE001
        return 0


def load_handler(handler, task_root):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as error:
        raise FaultException("Runtime.MalformedHandlerName", f"Bad handler '{handler}': {error}")
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                "Runtime.BuiltInModuleConflict",
                f"Cannot use built-in module {modname} as a handler module",
            )
        path = os.path.join(task_root, modname.replace(".", "/") + ".py")
        if os.path.isfile(path):
            # A module name may contain characters no import statement
            # allows (lambda-function.py): load it by its path.
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(modname, None)
                raise
        else:
            module = importlib.import_module(modname.replace("/", "."))
    except FaultException:
        raise
    except ImportError as error:
        raise FaultException(
            "Runtime.ImportModuleError", f"Unable to import module '{modname}': {error}"
        )
    except SyntaxError as error:
        trace = [f'  File "{error.filename}" Line {error.lineno}\n    {error.text}']
        raise FaultException(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {error}", trace
        )
    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultException(
            "Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'"
        )


def make_error(message, error_type, stack_trace, request_id):
    return {
        "errorMessage": message if message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id or "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def error_from_exception(exc_info, request_id):
    etype, value, tb = exc_info
    frames = traceback.extract_tb(tb)
    me = os.path.abspath(__file__)
    while frames and os.path.abspath(frames[0].filename) == me:
        frames = frames[1:]
    return make_error(str(value), etype.__name__, traceback.format_list(frames), request_id)


def format_error(error):
    """The [ERROR] log event, as awslambdaric's text-format log_error writes it."""
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    stack = error.get("stackTrace")
    if stack is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack:
            if element == "":
                lines.append("")
                continue
            for line in element.splitlines():
                stripped = line.lstrip(" ")
                lines.append(ERROR_LOG_IDENT * (len(line) - len(stripped)) + stripped)
    return "\n".join(lines)


def watch_parent(parent):
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(137)


def main():
    global _REQUEST_ID
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    channel = Channel(os.dup(1))
    os.dup2(2, 1)  # raw writes to fd 1 (C code, child processes) -> stderr lines
    out = LineWriter(channel, "<stdout>")
    err = LineWriter(channel, "<stderr>")
    sys.stdout, sys.stderr = out, err
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()

    _REQUEST_ID = request["request_id"]
    logging.Formatter.converter = time.gmtime
    handler = LambdaLoggerHandler(channel)
    handler.setFormatter(
        logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S",
        )
    )
    handler.addFilter(LambdaLoggerFilter())
    logging.getLogger().addHandler(handler)

    task_root = os.getcwd()
    if task_root not in sys.path:
        sys.path.insert(0, task_root)

    def finish(frame):
        out.close_partial()
        err.close_partial()
        frame["maxrss_kb"] = maxrss_kb()
        channel.send(frame)

    try:
        function = load_handler(request["handler"], task_root)
    except FaultException as fault:
        error = make_error(fault.msg, fault.error_type, fault.trace, None)
        channel.send({"k": "log", "m": format_error(error)})
        finish({"k": "error", "error": error, "init": True})
        return 0
    except Exception:  # noqa: BLE001 - module-level code raised
        error = error_from_exception(sys.exc_info(), None)
        channel.send({"k": "log", "m": format_error(error)})
        finish({"k": "error", "error": error, "init": True})
        return 0

    channel.send({"k": "start"})
    context = LambdaContext(request)
    try:
        response = function(request["event"], context)
        try:
            payload = json.dumps(response)
        except (TypeError, ValueError) as error:
            raise FaultException("Runtime.MarshalError", f"Unable to marshal response: {error}")
    except FaultException as fault:
        error = make_error(fault.msg, fault.error_type, fault.trace, request["request_id"])
    except Exception:  # noqa: BLE001 - the handler raised
        error = error_from_exception(sys.exc_info(), request["request_id"])
    else:
        finish({"k": "result", "payload": payload})
        return 0
    channel.send({"k": "log", "m": format_error(error)})
    finish({"k": "error", "error": error})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
