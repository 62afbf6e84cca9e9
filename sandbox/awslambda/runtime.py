"""Lambda Invoke for the sandbox: runs the real handler in a local Python process (moto needs Docker).

Each function configuration (role, code hash, handler, environment) gets warm worker processes, as
Lambda keeps containers warm: the handler module is imported once, not per invoke. A new worker is
forked from a process that has imported boto3 already (sandbox.awslambda.warm_start), so it starts
about as fast as a Lambda runtime does. A function's
first invocation after its configuration changed stops the old configuration's idle workers (a busy
one stops when it finishes). The worker gets the
function's environment with its AWS calls pointed at the sandbox, and its output is written to the
function's log group. A timeout kills the worker and reports what Lambda reports.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
import zipfile
from pathlib import Path
from typing import IO, Any

from moto.awslambda.models import LambdaFunction

from sandbox.awslambda import invocations as lambda_invocations
from sandbox.iam.enforcement import AUTHORITY

ROOT = Path(__file__).resolve().parents[2]
WORKERS_PER_FUNCTION = 8  # concurrent executions per function configuration; more invocations wait their turn
INIT_TIMEOUT = 10.0  # Lambda's init phase limit


class Forked:
    """A worker forked by sandbox.awslambda.warm_start: the part of Popen the pool uses, by the pidfd the
    warm-start process opened on it before it could exit (the worker is that process's child, not this
    one's, so its pid alone could name another process once it is gone)."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self.returncode = -1  # exited; its status went to its parent, which the kernel reaped
            os.close(self._pidfd)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        if self.returncode is None:
            select.select([self._pidfd], [], [], timeout)
        result = self.poll()
        if result is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
        return result


class WarmStart:
    """The warm-start process (sandbox.awslambda.warm_start): started on first use, it forks workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.failure = ""  # why it could not start: workers then start as new processes

    def _start(self) -> socket.socket | None:
        if self._control is not None and self._process is not None and self._process.poll() is None:
            return self._control
        if self.failure:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-m", "sandbox.awslambda.warm_start", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            cwd=str(ROOT),
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 - only a fallback for a missing HOME
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        ours.settimeout(INIT_TIMEOUT * 3)
        try:
            ready = ours.recv(64)
        except OSError:
            ready = b""
        if not ready:
            self.failure = "the warm-start process did not start"
            self._discard()
            ours.close()
            return None
        ours.settimeout(INIT_TIMEOUT)  # a fork answers in milliseconds; a hung process is replaced
        self._control = ours
        return ours

    def _discard(self) -> None:
        """Stops the warm-start process (its workers run on); the next fork starts another."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)

    def start(self) -> bool:
        """Starts the process now if it is not running (else on the first fork); whether it runs."""
        with self._lock:
            return self._start() is not None

    def fork(self, code_dir: Path, handler: str, env: dict[str, str], fds: tuple[int, int]) -> Forked | None:
        """A worker forked with these pipe ends as its stdin and stdout; None when none can be forked."""
        request = json.dumps({"cwd": str(code_dir), "handler": handler, "environment": env}).encode()
        with self._lock:
            control = self._start()
            if control is None:
                return None
            try:
                socket.send_fds(control, [request], list(fds))
            except OSError as error:
                if error.errno == errno.EMSGSIZE:  # an environment too large for one message: not forked
                    return None
                self._discard()
                return None
            try:
                answer, pidfds, _, _ = socket.recv_fds(control, 1024, 1)
            except OSError:
                answer, pidfds = b"", []
            if not answer or len(pidfds) != 1:
                for fd in pidfds:
                    os.close(fd)
                self._discard()
                return None
            return Forked(json.loads(answer)["pid"], pidfds[0])

    def stop(self) -> None:
        with self._lock:
            self._discard()


# What the warm-start process has imported besides the standard library: boto3, botocore and what they
# import. A function that brings its own copy of any of them (Lambda imports the function's first) is
# started as a new process, which a fork would hand the warm-start process's copy instead.
PRELOADED = ("boto3", "botocore", "s3transfer", "urllib3", "jmespath", "dateutil", "six")


def forkable(code_dir: Path, env: dict[str, str]) -> bool:
    """Whether a worker forked from the warm-start process runs the function as a new Python process
    would: not when its code brings a module that process has imported (a package, a module file or a
    .pth), nor when its environment sets what Python reads only when it starts (PYTHON* variables)."""
    if any((k.startswith("PYTHON") and k != "PYTHONDONTWRITEBYTECODE") or k == "AWS_DATA_PATH" for k in env):
        return False
    if any(code_dir.glob("*.pth")):
        return False
    return not any((code_dir / name).exists() or (code_dir / f"{name}.py").exists() for name in PRELOADED)


class Worker:
    def __init__(self, code_dir: Path, handler: str, env: dict[str, str], warm: WarmStart | None = None) -> None:
        worker_env = {**env, "LAMBDA_TASK_ROOT": str(code_dir)}  # the runtime's: it replaces a function's own
        forked = None
        self.stdin: IO[str]
        self.stdout: IO[str]
        if warm is not None and forkable(code_dir, env):
            stdin_read, stdin_write = os.pipe()
            stdout_read, stdout_write = os.pipe()
            try:
                forked = warm.fork(code_dir, handler, worker_env, (stdin_read, stdout_write))
            finally:
                os.close(stdin_read)
                os.close(stdout_write)
            if forked is None:
                os.close(stdin_write)
                os.close(stdout_read)
            else:
                self.process: subprocess.Popen[str] | Forked = forked
                self.stdin = os.fdopen(stdin_write, "w", buffering=1)
                self.stdout = os.fdopen(stdout_read, "r")
        if forked is None:
            started = subprocess.Popen(
                # -P: the working directory (the function's code) is not put on the path before the worker
                # itself is imported from the project; the worker then puts it first, as Lambda's runtime does.
                [sys.executable, "-P", "-m", "sandbox.awslambda.worker", handler],
                cwd=str(code_dir),  # as /var/task is in Lambda
                env=worker_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
            assert started.stdin is not None and started.stdout is not None
            self.process, self.stdin, self.stdout = started, started.stdin, started.stdout
        self.init_logs = ""
        ready = self._read_line(INIT_TIMEOUT)
        if ready is None:
            self.stop()
            raise RuntimeError(f"the function did not finish its init phase in {INIT_TIMEOUT:.0f} s")
        self.init_logs = json.loads(ready).get("logs", "")

    def _read_line(self, timeout: float) -> str | None:
        """The worker's next line, or None when it wrote none within the timeout (or exited).

        The worker writes exactly one line per request and nothing else, so nothing is left in the
        pipe's read buffer between requests and waiting on the descriptor is exact.
        """
        ready, _, _ = select.select([self.stdout], [], [], timeout)
        if not ready:
            return None
        return self.stdout.readline() or None

    def invoke(self, event: Any, timeout: float) -> dict[str, Any] | None:
        """The worker's answer, or None when it did not answer in time (the worker is then gone)."""
        request_id = str(uuid.uuid4())
        try:
            self.stdin.write(json.dumps({"event": event, "requestId": request_id, "timeout": timeout}) + "\n")
            self.stdin.flush()
        except BrokenPipeError:
            return None
        if not self.alive():
            return None
        line = self._read_line(timeout)
        if line is None:
            if self.alive():
                self.stop()
                return {"timeout": True, "requestId": request_id}
            return None
        return json.loads(line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=5)
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass


class WorkerPool:
    def __init__(self, state_dir: Path, endpoint: str) -> None:
        self.code_root = state_dir / "lambda"
        self.endpoint = endpoint
        self._idle: dict[str, list[Worker]] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._current: dict[str, str] = {}  # function ARN -> the key of its configuration in force
        self._lock = threading.Lock()
        self._extract_lock = threading.Lock()
        self.warm_start = WarmStart()

    def _key(self, fn: LambdaFunction) -> str:
        # The role is part of it: a worker holds credentials of its function's role session.
        parts = [fn.function_arn, fn.role, fn.code_sha_256, fn.handler, fn.environment_vars]
        config = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(config.encode()).hexdigest()[:16]

    def _code_dir(self, fn: LambdaFunction, key: str) -> Path:
        target = self.code_root / f"{fn.function_name}-{key}"
        with self._extract_lock:  # the first burst of concurrent invokes extracts the code once
            return self._extract(fn, target)

    def _extract(self, fn: LambdaFunction, target: Path) -> Path:
        if not target.exists():
            staging = target.with_suffix(".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            with zipfile.ZipFile(io.BytesIO(fn.code_bytes)) as archive:
                archive.extractall(staging)
            staging.rename(target)
        return target

    def _environment(self, fn: LambdaFunction) -> dict[str, str]:
        # Credentials of the function's own role session: its AWS calls are checked against its
        # execution role (sandbox.request_pipeline.iam_requests), as Lambda's are.
        access_key, secret = AUTHORITY.function_credentials(fn.function_arn, fn.role, fn.function_name)
        credentials = {
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": f"sandbox-session-{access_key}",
        }
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 - only a fallback for a missing HOME
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
            "SANDBOX_FUNCTION_ARN": fn.function_arn,
            **{k: str(v) for k, v in fn.environment_vars.items()},
            **credentials,  # reserved, as in Lambda: the function's own variables cannot replace them
        }

    def invoke(self, fn: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        """(payload, errored, logs), as moto's own invoke returns them.

        At most WORKERS_PER_FUNCTION run at once; a burst beyond that waits for a warm worker
        instead of starting (and then discarding) one process per extra invocation, which on a
        2-core machine cost more than it served.
        """
        key = self._key(fn)
        with self._lock:
            slots = self._slots.setdefault(key, threading.BoundedSemaphore(WORKERS_PER_FUNCTION))
            stale = self._retire(fn.function_arn, key)
        for worker in stale:  # a changed configuration (role, code, environment): the old workers go
            worker.stop()
        with slots:
            return self._invoke(fn, key, event)

    def _retire(self, function_arn: str, key: str) -> list[Worker]:
        """Makes `key` the function's configuration in force; returns the idle workers of the one before
        (call with the lock held). Busy ones stop when they finish (`_invoke`)."""
        previous = self._current.get(function_arn)
        self._current[function_arn] = key
        if previous is None or previous == key:
            return []
        self._slots.pop(previous, None)
        return self._idle.pop(previous, [])

    def _invoke(self, fn: LambdaFunction, key: str, event: Any) -> tuple[str, bool, str]:
        with self._lock:
            idle = self._idle.get(key)
            worker = idle.pop() if idle else None
        init_logs = ""
        if worker is None or not worker.alive():
            try:
                worker = Worker(self._code_dir(fn, key), fn.handler, self._environment(fn), self.warm_start)
            except RuntimeError as error:
                return json.dumps({"errorType": "Runtime.InitError", "errorMessage": str(error)}), True, ""
            init_logs = worker.init_logs
        answer = worker.invoke(event, float(fn.timeout))
        if answer is None:
            return (
                json.dumps({"errorType": "Runtime.ExitError", "errorMessage": "the function process exited"}),
                True,
                "",
            )
        if answer.get("timeout"):
            message = f"Task timed out after {float(fn.timeout):.2f} seconds"
            return json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": message}), True, message + "\n"
        with self._lock:
            current = self._current.get(fn.function_arn) == key
            idle = self._idle.setdefault(key, []) if current else []
            keep = current and len(idle) < WORKERS_PER_FUNCTION
            if keep:
                idle.append(worker)
        if not keep:  # its configuration was replaced while it ran, or enough are idle
            worker.stop()
        if "error" in answer:
            return json.dumps(answer["error"]), True, init_logs + answer["logs"]
        return answer["payload"], False, init_logs + answer["logs"]

    def stop(self) -> None:
        with self._lock:
            for workers in self._idle.values():
                for worker in workers:
                    worker.stop()
            self._idle.clear()
        self.warm_start.stop()


def install(pool: WorkerPool) -> None:
    """Replaces moto's Docker-based invoke with the local worker pool."""

    def _invoke_lambda(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        self.logs_backend.ensure_log_group(self.logs_group_name)
        if isinstance(event, (str, bytes)):
            event = json.loads(event or "{}")
        with lambda_invocations.invocation(self) as outcome:  # throttling and AWS/Lambda metrics
            payload, errored, logs = pool.invoke(self, event if event is not None else {})
            outcome.ended(errored, payload, logs)
        if logs:
            self.save_logs(logs)
        return payload, errored, logs

    LambdaFunction._invoke_lambda = _invoke_lambda
