"""The local AWS's HTTP front (sandbox/request_pipeline/http_front.py): a retried write answered once,
connections kept open."""

from __future__ import annotations

import threading
import time
from typing import Any


def test_a_terraform_retry_of_a_completed_write_gets_the_first_answer_instead_of_running_twice() -> None:
    from sandbox.request_pipeline.http_front import RetriesAtMostOnce

    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        status = "409 Conflict" if environ["PATH_INFO"] == "/conflict" else "200 OK"
        start_response(status, [("Content-Type", "application/json")])
        return [f'{{"n": {len(calls)}}}'.encode()]

    guarded = RetriesAtMostOnce(app)

    def call(path: str, invocation: str | None, method: str = "POST", agent: str = TERRAFORM) -> tuple[str, bytes]:
        seen: dict[str, str] = {}
        environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "HTTP_USER_AGENT": agent}
        if invocation:
            environ["HTTP_AMZ_SDK_INVOCATION_ID"] = invocation
        body = b"".join(guarded(environ, lambda status, headers: seen.setdefault("status", status)))
        return seen["status"], body

    assert call("/rules/r", "id-1") == ("200 OK", b'{"n": 1}')
    assert call("/rules/r", "id-1") == ("200 OK", b'{"n": 1}')  # the retry: not run again
    assert call("/rules/r", "id-2") == ("200 OK", b'{"n": 2}')  # a new request runs
    assert call("/conflict", "id-3")[0] == "409 Conflict"
    assert call("/conflict", "id-3")[0] == "409 Conflict" and calls.count("/conflict") == 2  # failures re-run
    call("/rules/r", "id-4", method="GET")
    call("/rules/r", "id-4", method="GET")
    assert calls.count("/rules/r") == 4  # reads are never replayed
    function_sdk = "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux lang/python#3.11.7 cfg/retry-mode#standard"
    assert call("/items", "id-5", agent=function_sdk) == ("200 OK", b'{"n": 7}')
    assert call("/items", "id-5", agent=function_sdk) == ("200 OK", b'{"n": 8}')  # not Terraform: runs again, as on AWS


TERRAFORM = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.11.4 (+https://www.terraform.io) terraform-provider-aws/5.100.0 "
    "(+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.36.3 ua/2.1 os/linux lang/go#1.24.2"
)


def test_the_http_front_keeps_connections_open_and_answers_each_request_whole() -> None:
    """Several requests on one connection (a Lambda function's boto3 client does this), each read to
    its end: fixed-length and chunked bodies, HEAD, an application error, and `Connection: close`."""
    import http.client
    import socket

    from werkzeug.serving import make_server

    from sandbox.request_pipeline.http_front import KeepAliveRequestHandler

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "999")])
        return [f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} ".encode(), body]

    server = make_server("127.0.0.1", 0, app, True, request_handler=KeepAliveRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

        def request(method: str, path: str, body: Any = None, **headers: str) -> tuple[int, bytes, Any]:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), response

        assert request("POST", "/a", b'{"x": 1}')[:2] == (200, b'POST /a {"x": 1}')
        local_port = connection.sock.getsockname()[1]
        chunked = iter([b"chunk-1 ", b"chunk-2"])  # http.client sends an iterable with Transfer-Encoding: chunked
        assert request("POST", "/b", chunked)[:2] == (200, b"POST /b chunk-1 chunk-2")
        status, body, response = request("HEAD", "/c")
        assert (status, body, response.getheader("Content-Length")) == (200, b"", "999")
        assert request("POST", "/fail", b"{}")[0] == 500
        assert request("GET", "/d")[:2] == (200, b"GET /d ")
        assert connection.sock.getsockname()[1] == local_port  # all of them on the first connection
        status, body, response = request("GET", "/e", Connection="close")
        assert (status, body, response.getheader("Connection")) == (200, b"GET /e ", "close")
        assert response.will_close

        def raw(*parts: bytes) -> bytes:
            """What the server sends back on one connection, until it closes it (or 2 s pass)."""
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
                answer = b""
                for part in parts:
                    sock.sendall(part)
                    time.sleep(0.1)
                try:
                    while chunk := sock.recv(65536):
                        answer += chunk
                except TimeoutError:
                    answer += b"<still open>"
                return answer

        post = b"POST /f HTTP/1.1\r\nHost: x\r\n"
        continued = raw(post + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n", b"hi")
        assert continued.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") and continued.endswith(
            b"POST /f hi<still open>"
        )
        assert raw(b"GET /g HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").endswith(b"GET /g ")  # closed
        two_lengths = raw(post + b"Content-Length: 3\r\nContent-Length: 0\r\n\r\nabcGET /smuggled HTTP/1.1\r\n\r\n")
        assert two_lengths.startswith(b"HTTP/1.1 400") and b"/smuggled" not in two_lengths
        assert raw(post + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").startswith(
            b"HTTP/1.1 400"
        )
        assert raw(post + b"Content-Length: 100000000000000\r\n\r\nabc").startswith(b"HTTP/1.1 413")
    finally:
        server.shutdown()
