"""SandboxQuotas (sandbox/iot_data_plane/quotas.py, sandbox/state.py): AWS IoT Core's default fleet-provisioning
rates as token buckets per account, Region and API, on a clock the tests move by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.iot_data_plane.quotas import AWS_DEFAULT_RATES, Quotas, TokenBucket, for_setting


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admitted(take: object, times: int) -> int:
    return sum(bool(take()) for _ in range(times))  # type: ignore[operator]


# Rates and steps are powers of two, so the clock's arithmetic is exact and each count is the bucket's own.
def test_a_bucket_starts_full_admits_its_burst_at_once_then_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=8, burst=8, clock=clock)

    assert admitted(bucket.take, 12) == 8  # one second of requests at once, no more
    clock.now += 1 / 16
    assert admitted(bucket.take, 5) == 0  # half a token is not a request
    clock.now += 1 / 16
    assert admitted(bucket.take, 5) == 1
    clock.now += 7 / 16
    assert admitted(bucket.take, 5) == 3  # 3.5 tokens: three requests, half a token kept
    clock.now += 1 / 16
    assert admitted(bucket.take, 5) == 1


def test_an_idle_bucket_holds_no_more_than_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=8, burst=8, clock=clock)
    admitted(bucket.take, 8)

    clock.now += 3600  # an hour with no requests

    assert admitted(bucket.take, 100) == 8


def test_over_a_long_run_a_busy_bucket_admits_its_rate_and_no_more() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=8, burst=8, clock=clock)
    start, let_in = clock.now, 0
    for step in range(100 * 32 + 1):  # 32 requests a second, from the first instant to 100 s later
        clock.now = start + step / 32
        let_in += bucket.take()

    assert let_in == 8 + 100 * 8  # the burst, then the rate


def test_each_account_region_and_api_has_a_bucket_of_its_own_and_only_quoted_apis_are_throttled() -> None:
    clock = Clock()
    quotas = Quotas(AWS_DEFAULT_RATES, clock)

    assert admitted(lambda: quotas.admit("111111111111", "us-east-1", "RegisterThing"), 12) == 10
    assert admitted(lambda: quotas.admit("111111111111", "us-east-1", "CreateKeysAndCertificate"), 12) == 10
    assert admitted(lambda: quotas.admit("111111111111", "us-east-1", "CreateCertificateFromCsr"), 25) == 20
    assert admitted(lambda: quotas.admit("222222222222", "us-east-1", "RegisterThing"), 12) == 10
    assert admitted(lambda: quotas.admit("111111111111", "eu-west-1", "RegisterThing"), 12) == 10
    assert admitted(lambda: quotas.admit("111111111111", "us-east-1", "GetThingShadow"), 100) == 100
    assert quotas.throttled == {"RegisterThing": 6, "CreateKeysAndCertificate": 2, "CreateCertificateFromCsr": 5}


def test_the_aws_setting_stands_for_aws_iot_cores_default_rates_and_none_for_no_quotas() -> None:
    quotas = for_setting("aws")

    assert quotas is not None
    assert quotas.rates == {"CreateKeysAndCertificate": 10.0, "CreateCertificateFromCsr": 20.0, "RegisterThing": 10.0}
    assert for_setting("none") is None


@pytest.mark.parametrize(
    ("value", "setting"), [(None, "none"), ("", "none"), ("none", "none"), ("aws", "aws"), ("AWS", "aws")]
)
def test_sandbox_quotas_is_aws_or_none_and_none_when_unset(
    monkeypatch: pytest.MonkeyPatch, value: str | None, setting: str
) -> None:
    from sandbox.state import quotas

    if value is None:
        monkeypatch.delenv("SandboxQuotas", raising=False)
    else:
        monkeypatch.setenv("SandboxQuotas", value)

    assert quotas() == setting


def test_sandbox_up_refuses_a_quota_setting_it_cannot_take_before_it_starts_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sandbox.__main__ import main

    monkeypatch.setenv("SandboxQuotas", "fast")
    monkeypatch.setenv("IOT_SANDBOX_DIR", str(tmp_path / "sandbox"))

    assert main(["up"]) == 2

    said = capsys.readouterr().err
    assert "sandbox: error: SandboxQuotas=fast: give aws" in said and "or none" in said
    assert not (tmp_path / "sandbox").exists()  # no state, no log, no process


def test_a_clock_that_steps_back_credits_no_time_twice() -> None:
    from sandbox.iot_data_plane.quotas import TokenBucket

    now = [100.0]
    bucket = TokenBucket(rate=10.0, burst=10.0, clock=lambda: now[0])
    assert sum(bucket.take() for _ in range(10)) == 10
    now[0] = 99.0
    assert not bucket.take()
    now[0] = 100.0  # back where it was drained: no time has passed
    assert not bucket.take()
    now[0] = 100.5
    assert sum(bucket.take() for _ in range(10)) == 5
