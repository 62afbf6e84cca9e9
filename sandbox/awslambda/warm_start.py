"""Lambda workers that start as fast as Lambda's: forked from a process that has imported the runtime's
boto3 already.

Lambda starts a Python function in a runtime whose boto3 is on the path; a sandbox worker used to be a
new Python process that imported boto3 and read botocore's service models itself (about 0.3 s and
50 MB each on the project's machine), so a burst of devices started workers slower than IoT's 5 s hook
deadline allowed. This process imports boto3 and reads the models the functions use once, then forks a
worker per request: the child takes the function's working directory, environment and pipes, and
runs sandbox.awslambda.worker as a started one would. The child's boto3 session is new (its
credentials, Region and endpoint come from its own environment, as they would in a new process); only
botocore's loader, which holds the parsed model files and nothing from the environment, is shared.

A function whose code brings its own copy of a module imported here (boto3, botocore and theirs), or
whose environment sets what Python reads only at its start (PYTHONPATH and the other PYTHON*
variables), is not forked: sandbox.awslambda.runtime starts it as a new process, as before.

Protocol, on a SOCK_SEQPACKET socket from the sandbox: a request is one JSON message
{"cwd", "handler", "environment"} carrying two file descriptors (the worker's stdin and stdout); the
answer is one JSON message {"pid"} carrying a pidfd of the worker, opened before the worker could be
reaped. The process ends when the sandbox's end closes.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any

import boto3
import botocore.session

# The services the project's functions call: their models are read here once.
SERVICES = ("dynamodb", "iot", "iot-data", "cloudwatch", "logs", "sts")
_LOADER: Any = None


def warm() -> None:
    """Reads the models and endpoint rules of SERVICES into one loader, without credentials or Region
    from this process's environment (a client made with explicit dummy ones)."""
    global _LOADER
    session = botocore.session.Session()
    for service in SERVICES:
        session.create_client(
            service,
            region_name="us-east-1",
            aws_access_key_id="warm-start",
            aws_secret_access_key="warm-start",  # noqa: S106 - never sent: no request is made
            endpoint_url="https://warm-start.invalid",
        )
    _LOADER = session.get_component("data_loader")


def share_loader() -> None:
    """The child's default boto3 session, new, with the warm loader (parsed model files only)."""
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION._session.register_component("data_loader", _LOADER)


def _child(control: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    control.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    os.dup2(fds[0], 0)
    os.dup2(fds[1], 1)
    for fd in fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["environment"])
    time.tzset()  # TZ, as a new process reads it
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
    sys.argv = ["sandbox.awslambda.worker", request["handler"]]
    share_loader()
    from sandbox.awslambda import worker

    worker.main()


def _reap(*_: Any) -> None:
    """Collects every worker that has exited (the sandbox watches each through its pidfd)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(control: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        data, fds, _, _ = socket.recv_fds(control, 1 << 20, 2)
        if not data:
            return  # the sandbox closed its end
        request = json.loads(data)
        # No worker is reaped between its fork and its pidfd: its pid cannot name another process yet.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(control, request, fds)
            except BaseException:  # noqa: BLE001 - a worker's end is reported by its pipe closing
                traceback.print_exc()
                code = 1
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:  # noqa: BLE001, S110 - exiting anyway
                        pass
                os._exit(code)
        pidfd = os.pidfd_open(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        for fd in fds:
            os.close(fd)
        socket.send_fds(control, [json.dumps({"pid": pid}).encode()], [pidfd])
        os.close(pidfd)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    warm()
    from sandbox.awslambda import worker  # noqa: F401 - imported once here, not per fork

    gc.collect()
    gc.freeze()  # what is imported stays shared with the workers: no collection copies its pages
    control.send(b'{"ready": true}')
    serve(control)


if __name__ == "__main__":
    main()
