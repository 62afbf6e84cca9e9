"""The sandbox's HTTP front: moto's WSGI app behind a guard that makes SDK retries at-most-once.

AWS SDKs retry a request whose response they did not read (a dropped connection, a slow answer),
with the same `amz-sdk-invocation-id`. AWS de-duplicates nothing either, but its answers rarely go
missing; against moto server on a loaded 2-core machine they sometimes do, and the retry of a
create that already succeeded then fails ("already exists") or, worse, applies twice (two
AddPermission statements, so `terraform destroy` waits forever). Here a retry of a write that
already completed gets the first attempt's answer again instead of running twice.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import BaseWSGIServer, make_server

REMEMBERED = 4096


class RetriesAtMostOnce:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._answers: OrderedDict[str, tuple[str, list[tuple[str, str]], bytes]] = OrderedDict()
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.replayed = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        invocation = environ.get("HTTP_AMZ_SDK_INVOCATION_ID")
        if not invocation or environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
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


class QuietRequestHandler(MotoRequestHandler):
    """No access-log line per request (werkzeug writes one through a colour filter, under a lock)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


def serve(port: int) -> BaseWSGIServer:
    """Starts the sandbox's local AWS on 127.0.0.1:port in a background thread."""
    app = RetriesAtMostOnce(Dispatcher(create_backend_app))
    server = make_server("127.0.0.1", port, app, True, request_handler=QuietRequestHandler)
    threading.Thread(target=server.serve_forever, name="local-aws", daemon=True).start()
    return server
