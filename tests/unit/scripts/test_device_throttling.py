"""The device client under AWS IoT's throttling (scripts/device_client.py): a throttled step is asked again with
exponential backoff and full jitter, within a bounded number of attempts and time, and counted; any other
refusal is final. The fleet simulator adds up the throttled attempts (scripts/simulate_fleet.py)."""

from __future__ import annotations

import argparse
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from awsiot import V2ServiceException, iotidentity

from scripts import device_client as device
from scripts import simulate_fleet


def refused(status: int, code: str, message: str) -> V2ServiceException:
    """What the SDK raises for an answer on the rejected topic."""
    error = iotidentity.ErrorResponse(status_code=status, error_code=code, error_message=message)
    return V2ServiceException("the request was rejected", None, error)


THROTTLED = refused(
    429, "ThrottlingException", "The rate exceeds the limit."
)  # the sandbox's answer (SandboxQuotas=aws)


def answered(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
    return future


class Identity:
    """The SDK's identity client on a claim connection, answering each request from a script."""

    def __init__(self, certificate: list[Any], register: list[Any]) -> None:
        self.certificate, self.register = certificate, register
        self.asked: list[tuple[str, Any]] = []

    def _answer(self, step: str, request: Any, script: list[Any]) -> Future[Any]:
        self.asked.append((step, request))
        return answered(script.pop(0))

    def create_keys_and_certificate(self, request: Any) -> Future[Any]:
        return self._answer("CreateKeysAndCertificate", request, self.certificate)

    def create_certificate_from_csr(self, request: Any) -> Future[Any]:
        return self._answer("CreateCertificateFromCsr", request, self.certificate)

    def register_thing(self, request: Any) -> Future[Any]:
        return self._answer("RegisterThing", request, self.register)


class Claim:
    client = object()
    closed = False

    def close(self) -> None:
        self.closed = True


CREATED = iotidentity.CreateKeysAndCertificateResponse(
    certificate_id="c0ffee",
    certificate_pem="-----BEGIN CERTIFICATE-----\n",
    private_key="key",
    certificate_ownership_token="t1",
)
REGISTERED = iotidentity.RegisterThingResponse(thing_name="gateway-SN-1", device_configuration={})


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the client sleeps between attempts (none really slept)."""
    slept: list[float] = []
    monkeypatch.setattr(device.time, "sleep", slept.append)
    return slept


def provision(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, identity: Identity, claim: Claim, **extra: Any
) -> dict[str, Any]:
    monkeypatch.setattr(device.iotidentity, "IotIdentityClientV2", lambda client, options: identity)
    options = {
        "serial_number": "SN-1",
        "device_type": "gateway",
        "manufacturer": "AcmeIoT",
        "firmware_version": "",
        "location": "",
        "thing_name": "",
        "csr": False,
        "key_type": "ec",
        "output_dir": str(tmp_path),
        "client_id": None,
        "timeout": 5.0,
        "skip_device_check": True,
        "factory_key": None,
    }
    args = argparse.Namespace(**{**options, **extra})
    target = device.Target("127.0.0.1", 8883, "", "fleet", "claim.pem", "claim.key", iot_core_limits=False)
    return device.provision(args, target, claim=claim)  # type: ignore[arg-type]


def test_a_throttled_register_thing_is_asked_again_with_the_same_token_and_the_device_provisions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, waits: list[float]
) -> None:
    identity, claim = Identity([CREATED], [THROTTLED, THROTTLED, REGISTERED]), Claim()

    result = provision(monkeypatch, tmp_path, identity, claim)

    assert result["thingName"] == "gateway-SN-1"
    assert result["throttledAttempts"] == {"RegisterThing": 2}
    registers = [request for step, request in identity.asked if step == "RegisterThing"]
    assert len(registers) == 3
    assert {r.certificate_ownership_token for r in registers} == {"t1"}  # a throttled request used nothing up
    assert len(waits) == 2 and 0 <= waits[0] <= 0.1 and 0 <= waits[1] <= 0.2  # full jitter, doubling
    assert claim.closed


def test_a_step_still_throttled_when_its_attempts_run_out_fails_saying_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, waits: list[float]
) -> None:
    identity, claim = Identity([THROTTLED] * 4, []), Claim()

    with pytest.raises(device.Failure) as failed:
        provision(monkeypatch, tmp_path, identity, claim, csr=True, throttle_attempts=4)

    assert failed.value.code == device.CERTIFICATE_REJECTED
    assert str(failed.value).startswith(
        "certificate creation rejected: CreateCertificateFromCsr still THROTTLED after 4 attempts in "
    )
    assert "(last answer 429 ThrottlingException: The rate exceeds the limit.)" in str(failed.value)
    assert failed.value.throttled == {"CreateCertificateFromCsr": 4}
    assert [step for step, _ in identity.asked] == ["CreateCertificateFromCsr"] * 4  # and no RegisterThing
    assert len(waits) == 3
    assert claim.closed


def test_a_refusal_that_is_not_throttling_is_final(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, waits: list[float]
) -> None:
    denied = refused(403, "ACCESS_DENIED", "Provisioning was denied by the pre-provisioning hook")
    identity = Identity([CREATED], [denied])

    with pytest.raises(device.Failure) as failed:
        provision(monkeypatch, tmp_path, identity, Claim())

    assert failed.value.code == device.REGISTER_REJECTED
    assert str(failed.value) == (
        "RegisterThing rejected: 403 ACCESS_DENIED: Provisioning was denied by the pre-provisioning hook"
    )
    assert [step for step, _ in identity.asked] == ["CreateKeysAndCertificate", "RegisterThing"]
    assert (waits, failed.value.throttled) == ([], {})


@pytest.mark.parametrize(
    ("error", "is_throttling"),
    [
        (THROTTLED, True),
        (refused(429, "TooManyRequests", "slow down"), True),
        (refused(400, "Throttling", "Rate exceeded"), True),
        (refused(400, "TooManyRequestsException", ""), True),
        (refused(400, "LimitExceededException", "Rate exceeded for RegisterThing"), True),
        (refused(400, "", "Rate exceeded"), True),  # no code: the message says it
        (refused(400, "InvalidParameters", "Fn::FindInMap found no types/Rate exceeded"), False),  # device's text
        (refused(400, "InvalidCertificateOwnershipToken", "Certificate ownership token is invalid"), False),
        (refused(400, "InvalidParameters", "parameters must be an object of strings"), False),
        (refused(403, "ACCESS_DENIED", "Provisioning was denied"), False),
        (refused(500, "InternalFailure", "boom"), False),
        (TimeoutError(), False),
        (V2ServiceException("no answer", TimeoutError(), None), False),
    ],
)
def test_throttling_is_told_apart_from_every_other_refusal(error: BaseException, is_throttling: bool) -> None:
    assert device.throttled(error) is is_throttling


def test_the_waits_double_from_base_up_to_the_cap_and_each_is_drawn_from_zero() -> None:
    backoff = device.Backoff(base=0.1, cap=4.0)
    assert backoff.wait(5000, lambda low, high: high) == 4.0  # however many retries a budget allows

    longest = [backoff.wait(n, lambda low, high: high) for n in range(8)]
    shortest = [backoff.wait(n, lambda low, high: low) for n in range(8)]

    assert longest == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 4.0, 4.0])
    assert shortest == [0.0] * 8


def test_no_wait_that_would_end_past_the_time_budget_is_begun() -> None:
    """Each request takes a second here and every wait is its longest: 1 + 1 + 1 + 2 + 1 + 4 + 1 = 11 s, and
    the next wait (4 s, the cap) would end at 15 s, past the 14 s budget: the client stops after four requests."""
    clock = [0.0]

    def request() -> None:
        clock[0] += 1.0
        raise THROTTLED

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    counts: Counter[str] = Counter()
    with pytest.raises(device.ThrottlingExhausted, match=r"RegisterThing still THROTTLED after 4 attempts in 11\.0 s"):
        device.retry_throttled(
            "RegisterThing",
            request,
            device.Backoff(base=1.0, cap=4.0, attempts=30, budget=14.0),
            counts,
            sleep=sleep,
            clock=lambda: clock[0],
            uniform=lambda low, high: high,
        )
    assert counts == {"RegisterThing": 4}


def test_a_backoff_that_could_never_retry_is_refused() -> None:
    with pytest.raises(ValueError, match="a backoff needs"):
        device.Backoff(attempts=0)
    with pytest.raises(ValueError, match="a backoff needs"):
        device.Backoff(base=1.0, cap=0.5)


def test_the_simulator_reports_the_fleets_throttled_attempts_by_step_and_devices() -> None:
    per_device = [{"RegisterThing": 3}, {}, {"CreateCertificateFromCsr": 1, "RegisterThing": 2}, {"RegisterThing": 0}]

    summary = simulate_fleet.throttling(per_device)

    assert summary == {
        "throttled_attempts": 6,
        "throttled_by_step": {"CreateCertificateFromCsr": 1, "RegisterThing": 5},
        "throttled_devices": 2,
        "throttled_most": 3,
    }
    assert simulate_fleet.throttling_line(summary) == (
        "  throttled 6 requests (CreateCertificateFromCsr 1, RegisterThing 5) from 2 devices,"
        " each asked again with backoff (at most 3 times for one step)"
    )
    assert simulate_fleet.throttling_line(simulate_fleet.throttling([{}, {}])) == ""


@pytest.mark.parametrize(
    "given", [["--throttle-attempts", "0"], ["--throttle-seconds", "-5"], ["--throttle-attempts", "x"]]
)
def test_a_retry_budget_that_is_not_above_zero_is_a_usage_error(
    given: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        device.parser().parse_args(["--serial-number", "SN-1", *given])
    assert stopped.value.code == 2
    assert given[0] in capsys.readouterr().err
