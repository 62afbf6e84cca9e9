"""The device-certificate validity switch: how long the device certificates the local IoT issues from
now on are valid, changed while the sandbox runs, so expiry and rotation can be tried in seconds
against a stack already deployed (no restart, no new deployment).

  python -m sandbox certificate-validity            the validity in force
  python -m sandbox certificate-validity SECONDS    device certificates issued from now on: this long
  python -m sandbox certificate-validity default    back to what the sandbox started with
                                                    (SandboxCertificateValiditySeconds, else 10 years)

Certificates already issued keep their dates, as on AWS. It covers the same certificates as
SandboxCertificateValiditySeconds (sandbox/iot/certificates_from_sandbox_ca.py). The
server answers GET, PUT and DELETE on /_sandbox/certificate-validity; this module's `main` drives it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from sandbox.iot_data_plane.certificate_authority import CertificateAuthority
from sandbox.state import validity_seconds

VALIDITY_PATH = "/_sandbox/certificate-validity"


class CertificateValiditySwitch:
    """WSGI layer: answers /_sandbox/certificate-validity; every other request goes on to ``app``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], authority: CertificateAuthority) -> None:
        self.app, self.authority = app, authority
        self.started_with = authority.device_validity

    def report(self) -> dict[str, Any]:
        seconds = int(self.authority.device_validity.total_seconds())
        return {"seconds": seconds, "default": self.authority.device_validity == self.started_with}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != VALIDITY_PATH:
            return self.app(environ, start_response)
        method, status = environ.get("REQUEST_METHOD"), "200 OK"
        if method == "PUT":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                asked = json.loads(environ["wsgi.input"].read(length) or b"{}")
                seconds = validity_seconds(str(asked.get("seconds", "")), "seconds")
            except (ValueError, AttributeError) as error:
                start_response("400 Bad Request", [("Content-Type", "application/json")])
                return [json.dumps({"error": str(error)}).encode()]
            # One attribute, read once per issued certificate: a certificate gets the old or the new validity.
            self.authority.device_validity = timedelta(seconds=seconds)
            print(f"sandbox: device certificates issued from now on are valid {seconds} s", flush=True)
        elif method == "DELETE":
            self.authority.device_validity = self.started_with
            print("sandbox: device certificate validity back to the sandbox's start setting", flush=True)
        elif method != "GET":
            status = "405 Method Not Allowed"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(self.report()).encode()]


def request(endpoint: str, method: str, seconds: int | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """The validity in force after the request: {"seconds": N, "default": bool}. OSError when nothing
    answers, ValueError for a value the server refused."""
    data = json.dumps({"seconds": seconds}).encode() if seconds is not None else None
    headers = {"Content-Type": "application/json"}
    call = urllib.request.Request(f"{endpoint}{VALIDITY_PATH}", data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:  # noqa: S310 - local http
            text = answer.read()
    except urllib.error.HTTPError as refused:
        try:
            said = json.loads(refused.read() or b"{}").get("error")
        except ValueError:
            said = None
        raise ValueError(said or f"{endpoint} refused the validity switch: {refused}") from None
    try:
        return dict(json.loads(text))
    except ValueError:
        raise ValueError(f"{endpoint} answered, but not as a sandbox with the validity switch") from None


def describe(report: dict[str, Any]) -> str:
    said = f"device certificates issued from now on are valid {report['seconds']} s"
    return said + (" (the sandbox's start setting)" if report.get("default") else "")


def main(argv: list[str], endpoint: str) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox certificate-validity",
        description="How long the device certificates the sandbox issues from now on are valid.",
    )
    parser.add_argument("value", nargs="?", help="whole seconds, or 'default' (none: say the validity in force)")
    args = parser.parse_args(argv)
    try:
        if args.value is None:
            report = request(endpoint, "GET")
        elif args.value == "default":
            report = request(endpoint, "DELETE")
        else:
            report = request(endpoint, "PUT", validity_seconds(args.value, "certificate-validity"))
    except ValueError as refused:
        print(f"sandbox: error: {refused}", file=sys.stderr)
        return 2
    except OSError as error:
        said = f"the sandbox does not answer at {endpoint} ({error}): start it with `make sandbox-up`"
        print(f"sandbox: error: {said}", file=sys.stderr)
        return 1
    print(f"sandbox: {describe(report)}")
    return 0
