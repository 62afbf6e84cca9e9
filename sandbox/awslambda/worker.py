"""A warm Lambda "container": imports one handler once and serves invocations over a pipe.

Started by ``sandbox.awslambda.runtime`` in the function's code folder, with its environment. Requests and
answers are JSON lines on stdin and on a private copy of stdout; whatever the handler prints is
captured per invocation and returned as that invocation's log (as Lambda does).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
import time
import traceback
from typing import Any


class Context:
    """The parts of the Lambda context object handlers use."""

    def __init__(self, request_id: str, timeout: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.invoked_function_arn = os.environ.get("SANDBOX_FUNCTION_ARN", "")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    handler_name = sys.argv[1]
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray writes to fd 1 (C extensions) must not corrupt the protocol
    # The function's code (LAMBDA_TASK_ROOT, the working directory) goes first on the path once the
    # worker's own modules are loaded, as Lambda's runtime does: its files do not replace the worker's
    # (unless the function sets PYTHONPATH to its own folder).
    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd())
    module_name, function_name = handler_name.rsplit(".", 1)
    handler: Any = None
    init_log = io.StringIO()
    # Lambda's init phase: imports run once, before (and not counted in) the first invocation's timeout.
    with contextlib.redirect_stdout(init_log), contextlib.redirect_stderr(init_log):
        try:
            handler = getattr(importlib.import_module(module_name), function_name)
        except Exception:  # noqa: BLE001 - reported by the first invocation, as Lambda reports init errors
            traceback.print_exc()
    answers.write(json.dumps({"ready": True, "logs": init_log.getvalue()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        captured = io.StringIO()
        started = time.monotonic()
        answer: dict[str, Any]
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                if handler is None:  # cold start: import once, like a Lambda container
                    handler = getattr(importlib.import_module(module_name), function_name)
                result = handler(request["event"], Context(request["requestId"], request["timeout"]))
                answer = {"payload": json.dumps(result)}
            except Exception as error:  # noqa: BLE001 - reported to the caller as Lambda does
                answer = {
                    "error": {
                        "errorMessage": str(error),
                        "errorType": type(error).__name__,
                        "stackTrace": traceback.format_tb(error.__traceback__),
                    }
                }
                traceback.print_exc()
        duration = (time.monotonic() - started) * 1000
        answer["logs"] = (
            f"START RequestId: {request['requestId']} Version: $LATEST\n"
            + captured.getvalue()
            + f"END RequestId: {request['requestId']}\n"
            + f"REPORT RequestId: {request['requestId']}\tDuration: {duration:.2f} ms\n"
        )
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
