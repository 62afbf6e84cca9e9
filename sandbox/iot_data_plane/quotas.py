"""AWS IoT Core's default fleet-provisioning quotas, enforced per account as AWS enforces them (SandboxQuotas).

With `SandboxQuotas=aws` each fleet-provisioning MQTT API of an account (and Region) gets a token bucket
filled at AWS's default rate: a request that finds it empty is refused with the control plane's throttling
error, so a client's behaviour under throttling is tried here before it meets AWS. With `none` (the default)
nothing is throttled.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

# Requests per second per account per Region, AWS IoT Core's defaults (Service Quotas, adjustable on request):
# https://docs.aws.amazon.com/general/latest/gr/iot-core.html (fleet provisioning).
AWS_DEFAULT_RATES: Mapping[str, float] = {
    "CreateKeysAndCertificate": 10.0,
    "CreateCertificateFromCsr": 20.0,
    "RegisterThing": 10.0,
}
# The rejected topic's answer to a throttled request: status 429, the code AWS's embedded C SDK gives for
# "Server has too many requests from clients" (aws-iot-device-sdk-embedded-C, aws_iot_provisioning_types.h,
# AWS_IOT_PROVISIONING_SERVER_STATUS_TOO_MANY_REQUESTS); the error code and message are the IoT service
# model's ThrottlingException and its text. The developer guide documents none of them: not verified on AWS.
THROTTLED_STATUS, THROTTLED_CODE, THROTTLED_MESSAGE = 429, "ThrottlingException", "The rate exceeds the limit."


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; full at the start. Each admitted request takes one."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(
                f"a token bucket needs a positive rate and room for a request (rate {rate}, burst {burst})"
            )
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._at = burst, clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
            self._at = max(self._at, now)  # a clock that steps back credits no time twice
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class Quotas:
    """One bucket per account, Region and API, filled at `rates` (an API not named is never throttled).
    A bucket holds one second of requests, so a quiet account admits that many at once: AWS documents no
    burst for these quotas, and this one is an assumption (not verified on AWS)."""

    def __init__(self, rates: Mapping[str, float], clock: Callable[[], float] = time.monotonic) -> None:
        self.rates, self.clock = dict(rates), clock
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        self.throttled: Counter[str] = Counter()  # requests refused, by API

    def admit(self, account_id: str, region: str, api: str) -> bool:
        rate = self.rates.get(api)
        if rate is None:
            return True
        with self._lock:
            bucket = self._buckets.get((account_id, region, api))
            if bucket is None:
                bucket = self._buckets[account_id, region, api] = TokenBucket(rate, rate, self.clock)
        if bucket.take():
            return True
        with self._lock:
            self.throttled[api] += 1
        return False

    def describe(self) -> str:
        return ", ".join(f"{api} {rate:g}/s" for api, rate in sorted(self.rates.items()))


def for_setting(setting: str, clock: Callable[[], float] = time.monotonic) -> Quotas | None:
    """The quotas a SandboxQuotas setting (sandbox.state.quotas) stands for: None for `none`."""
    return Quotas(AWS_DEFAULT_RATES, clock) if setting == "aws" else None
