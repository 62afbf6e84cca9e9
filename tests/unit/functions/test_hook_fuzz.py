"""Property: whatever a device (or a broken caller) sends, the hook answers a denial, never raises,
and writes nothing to the registry."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.support import Registry

NAMES = ["SerialNumber", "DeviceType", "Manufacturer", "FirmwareVersion", "Location", "ThingName"]
text = st.text(max_size=300)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=6
)
plausible_parameters = st.fixed_dictionaries(
    {},
    optional={
        "SerialNumber": st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,70}", fullmatch=True), values),
        "DeviceType": st.one_of(st.sampled_from(["temperature-sensor", "gateway", "toaster", ""]), values),
        "Manufacturer": st.one_of(st.sampled_from(["AcmeIoT", "Acme IoT", ""]), values),
        "FirmwareVersion": st.one_of(st.from_regex(r"v?\d{1,8}(\.\d{1,8}){0,3}", fullmatch=True), values),
        "Location": values,
        "ThingName": values,
    },
)
parameters = st.one_of(plausible_parameters, st.dictionaries(st.sampled_from(NAMES) | text, values, max_size=8), values)
events = st.one_of(
    values,
    st.fixed_dictionaries(
        {"parameters": parameters},
        optional={
            "certificateId": st.one_of(st.from_regex(r"[0-9a-f]{64}", fullmatch=True), values),
            "claimCertificateId": values,
            "certificatePem": values,
            "clientId": values,
            "templateArn": values,
        },
    ),
)


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(event=events)
def test_any_malformed_or_unenrolled_event_is_denied_without_exception_or_write(
    hook: ModuleType, registry: Registry, event: Any
) -> None:
    answer = hook.handler(event)

    assert answer == {"allowProvisioning": False}
    assert registry.items() == []
