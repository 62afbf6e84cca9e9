"""The sandbox's HTTP front: moto's WSGI app on persistent HTTP/1.1 connections, behind a guard
that makes Terraform's retries of its writes at-most-once.

The Terraform AWS provider retries a request whose response it did not read (a dropped connection,
a slow answer), with the same `amz-sdk-invocation-id`. AWS de-duplicates nothing either, but its
answers rarely go missing; against moto server on a loaded 2-core machine they sometimes do, and the
provider's retry of a create that already succeeded then fails ("already exists") or applies twice.
So a retry *from Terraform* of a write that already completed gets the first attempt's answer again.
Nothing else is replayed: a function's or a tool's SDK retry runs again and meets AWS's own answer
(for the hook: a conditional write that already happened), as on AWS.
"""

from __future__ import annotations

import functools
import io
import json
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from moto.core import responses as moto_responses
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.dynamodb.fast_path import DynamoDBFastPath
from sandbox.iot_data_plane.certificate_authority import CertificateAuthority
from sandbox.iot_data_plane.certificate_validity import CertificateValiditySwitch
from sandbox.request_pipeline.faults import DropConnection, FaultSwitch
from sandbox.request_pipeline.iam_requests import FunctionCallsChecked
from sandbox.request_pipeline.model_validation import RequestsValidated

REMEMBERED = 4096
TERRAFORM_AGENT = "terraform-provider-aws/"  # in the provider's User-Agent


class RetriesAtMostOnce:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._answers: OrderedDict[str, tuple[str, list[tuple[str, str]], bytes]] = OrderedDict()
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.replayed = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        invocation = environ.get("HTTP_AMZ_SDK_INVOCATION_ID")
        if (
            not invocation
            or environ.get("REQUEST_METHOD") in ("GET", "HEAD")
            or TERRAFORM_AGENT not in environ.get("HTTP_USER_AGENT", "")
        ):
            return self.app(environ, start_response)
        while True:
            with self._lock:
                answer = self._answers.get(invocation)
                if answer is not None:
                    self.replayed += 1
                    start_response(answer[0], answer[1])
                    return [answer[2]]
                running = self._running.get(invocation)
                if running is None:
                    self._running[invocation] = threading.Event()
                    break
            running.wait(timeout=60)  # the first attempt is still running: answer as it answers
        try:
            recorded: dict[str, Any] = {}

            def record(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
                recorded["status"], recorded["headers"] = status, headers
                return lambda _: None

            body = b"".join(self.app(environ, record))
            status, headers = recorded["status"], recorded["headers"]
            if status.startswith("2"):
                with self._lock:
                    self._answers[invocation] = (status, headers, body)
                    while len(self._answers) > REMEMBERED:
                        self._answers.popitem(last=False)
            start_response(status, headers)
            return [body]
        finally:
            with self._lock:
                self._running.pop(invocation).set()


class Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, with its host -> service lookup remembered.

    moto looks the host up again for every request (listing its own package folder each time, under
    one global lock): a tenth of the sandbox's CPU when devices provision. The answer depends on
    the host name alone.
    """

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one dispatcher per process, kept for its life
    def get_backend_for_host(self, host: str | None) -> Any:
        return super().get_backend_for_host(host)


MAX_BODY = 100 * 1024 * 1024  # above any AWS request body (a Lambda zip uploaded directly is at most 50 MB)


class _Refused(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


class KeepAliveRequestHandler(MotoRequestHandler):
    """HTTP/1.1 with persistent connections, each answer sent in one write, no access log.

    werkzeug's development server closes the connection after every answer, so each AWS call of a
    Lambda function paid a TCP connection, a server thread and a 10 ms drain wait (about a quarter
    of the local AWS's CPU while devices provision). Here the request body is read to its end
    before the application runs, so the next request on the connection starts clean, and the
    answer goes out with its Content-Length and TCP_NODELAY (no Nagle / delayed-ACK stall). A
    client that asks for `Connection: close`, or speaks HTTP/1.0, gets its connection closed; a
    request whose body cannot be framed unambiguously (two Content-Lengths, Content-Length with
    Transfer-Encoding) or is larger than MAX_BODY is refused and its connection closed.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = -1  # buffered: headers and body leave together at handle_one_request's flush
    timeout = 300  # an idle connection's thread ends after this

    def handle_expect_100(self) -> bool:
        ok = super().handle_expect_100()
        self.wfile.flush()  # the client waits for it before sending the body
        return ok

    def run_wsgi(self) -> None:
        self.environ = environ = self.make_environ()
        if self.request_version != "HTTP/1.1":
            self.close_connection = True
        try:
            body = self._read_body(environ)
        except _Refused as refused:
            self.close_connection = True
            self._answer(refused.code, refused.reason, [("Content-Type", "text/plain")], str(refused).encode())
            return
        environ["wsgi.input"] = io.BytesIO(body)
        if environ.pop("wsgi.input_terminated", None):
            environ["CONTENT_LENGTH"] = str(len(body))  # was chunked: now a body of known length
        try:
            status, headers, data = _call(self.server.app, environ)
        except DropConnection:  # the fault switch's lost answer: the request was applied, no answer goes out
            self.close_connection = True
            return
        except Exception:  # noqa: BLE001 - the client gets a 500, the log the traceback
            self.server.log("error", f"Error on request {self.command} {self.path}:\n{traceback.format_exc()}")
            status, headers, data = "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal error"
        code, _, reason = status.partition(" ")
        self._answer(int(code), reason, headers, data)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1 or (lengths and "Transfer-Encoding" in self.headers):
            raise _Refused(400, "Bad Request", "ambiguous request framing (Content-Length)")
        try:
            if environ.get("wsgi.input_terminated"):  # chunked: werkzeug's DechunkedInput reads to the last chunk
                pieces, total = [], 0
                while piece := environ["wsgi.input"].read(65536):
                    total += len(piece)
                    if total > MAX_BODY:
                        raise _Refused(413, "Request Entity Too Large", f"request body over {MAX_BODY} bytes")
                    pieces.append(piece)
                return b"".join(pieces)
            length = int(lengths[0]) if lengths else 0
        except (OSError, ValueError):
            raise _Refused(400, "Bad Request", "unreadable request body") from None
        if length < 0:
            raise _Refused(400, "Bad Request", "negative Content-Length")
        if length > MAX_BODY:
            raise _Refused(413, "Request Entity Too Large", f"request body over {MAX_BODY} bytes")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise _Refused(400, "Bad Request", "the connection closed inside the request body")
        return body

    def _answer(self, code: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(code, reason or None)
        bodiless = self.command == "HEAD" or code < 200 or code in (204, 304)
        for name, value in headers:
            lowered = name.lower()
            if lowered in ("connection", "transfer-encoding") or (lowered == "content-length" and not bodiless):
                continue
            self.send_header(name, value)
        if not bodiless:
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not bodiless:
            self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def log_error(self, format: str, *args: Any) -> None:
        if not format.startswith("Request timed out"):  # an idle keep-alive connection, closed
            super().log_error(format, *args)


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Runs a WSGI application to the end: its status, headers and whole body."""
    answer: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        answer["status"], answer["headers"] = status, headers
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return answer["status"], answer["headers"], b"".join(chunks)


def install() -> None:
    """moto lists a response class's methods (inspect.getmembers) on every request to find the
    action's handler; a class's methods do not change once every patch that adds methods is in, so
    each class is listed once (the last patch at boot)."""
    if hasattr(moto_responses.method_names_from_class, "cache_info"):
        return
    list_methods = moto_responses.method_names_from_class
    moto_responses.method_names_from_class = functools.lru_cache(maxsize=None)(lambda cls: frozenset(list_methods(cls)))


HEALTH_PATH = "/_sandbox/health"


class HealthEndpoint:
    """Answers GET /_sandbox/health with the sandbox's own report (what `sandbox up` and `status` wait
    for); every other request goes to the local AWS."""

    def __init__(self, app: Callable[..., Iterable[bytes]], report: Callable[[], dict[str, Any]]) -> None:
        self.app, self.report = app, report

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH:
            return self.app(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(self.report()).encode()]


def serve(port: int, report: Callable[[], dict[str, Any]], authority: CertificateAuthority) -> BaseWSGIServer:
    """Starts the sandbox's local AWS on 127.0.0.1:port in a background thread, with the sandbox's own
    paths: its health, the fault switch and the device-certificate validity switch."""
    # A function's request is checked against its role before anything answers it (the fast path included);
    # an injected fault (python -m sandbox fault) then stands in for the service itself; what the
    # service's model refuses is refused before anything is looked up.
    local_aws = FunctionCallsChecked(
        FaultSwitch(RetriesAtMostOnce(RequestsValidated(DynamoDBFastPath(Dispatcher(create_backend_app)))))
    )
    app = HealthEndpoint(CertificateValiditySwitch(local_aws, authority), report)
    server = make_server("127.0.0.1", port, app, True, request_handler=KeepAliveRequestHandler)
    threading.Thread(target=server.serve_forever, name="local-aws", daemon=True).start()
    return server
