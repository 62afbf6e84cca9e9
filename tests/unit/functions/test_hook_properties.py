"""Property: whatever parameters arrive for an enrolled serial, an allowed decision implies that every
value the template turns into a thing attribute satisfies AWS's rule for attribute values, that the
thing name satisfies AWS's rule for thing names, and that it is the enrolled one.

The strategies generate near-misses, not only random text: a valid value plus a suffix (a trailing
newline, a space, a control character), Unicode digits and letters in place of ASCII ones. A hole
here is a device AWS refuses only after the hook claimed its serial, locking it out. The same
property, run against the hook's former patterns (`$`-anchored, `\\d`), finds both of their holes;
bench/hook_property.py runs it with 10,000 examples.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from tests.conftest import SUMMARY
from tests.unit.support import ALLOWED, Registry, create_registry, drain_hook_decisions, event, load_hook

# AWS's own rules (API_AttributePayload / API_ThingAttribute, API_CreateThing), matched whole.
AWS_ATTRIBUTE_VALUE = re.compile(r"[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}")
AWS_THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
ATTRIBUTES = {"SerialNumber", "DeviceType", "Manufacturer", "FirmwareVersion", "Location"}
EXAMPLES = int(os.environ.get("HOOK_PROPERTY_EXAMPLES", "400"))

UNICODE_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # Arabic-Indic: `\d` matches them
UNICODE_LETTERS = str.maketrans("aeoAEO", "аеоАЕО")  # Cyrillic look-alikes: `\w` matches them
suffixes = st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", "\u200b", "é", "٣"]) | st.characters(
    categories=["Cc", "Zs", "Nd", "L"]
)


def near_misses(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Half valid values, half near-misses of one: a request with one near-miss among valid values is
    the one that tells whether that value's rule holds."""
    return valid | st.one_of(
        st.tuples(valid, suffixes).map("".join),
        st.tuples(suffixes, valid).map("".join),
        valid.map(lambda v: v.translate(UNICODE_DIGITS)),
        valid.map(lambda v: v.translate(UNICODE_LETTERS)),
        st.tuples(valid, st.integers(0, 20), suffixes).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
        st.tuples(valid, st.integers(0, 20)).map(lambda t: _one_translated(*t)),
        st.tuples(valid, st.integers(0, 20), st.sampled_from("٠١٢٣٤٥٦٧٨٩")).map(lambda t: _after_a_digit(*t)),
    )


def _after_a_digit(value: str, position: int, digit: str) -> str:
    r"""A Unicode digit inserted after an ASCII one ("v1.0.0" -> "v1٣.0.0"): `\d+` takes both."""
    spots = [i + 1 for i, c in enumerate(value) if c in "0123456789"]
    if not spots:
        return value + digit
    i = spots[position % len(spots)]
    return value[:i] + digit + value[i:]


def _one_translated(value: str, position: int) -> str:
    """One character replaced by its Unicode look-alike (a digit by an Arabic-Indic digit, ...)."""
    spots = [i for i, c in enumerate(value) if c.translate(UNICODE_DIGITS) != c or c.translate(UNICODE_LETTERS) != c]
    if not spots:
        return value
    i = spots[position % len(spots)]
    return value[:i] + value[i].translate(UNICODE_DIGITS).translate(UNICODE_LETTERS) + value[i + 1 :]


serials = near_misses(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{2,20}", fullmatch=True))
device_parameters = st.fixed_dictionaries(
    {
        "SerialNumber": serials,
        "DeviceType": st.sampled_from(ALLOWED.split(",")),
        "Manufacturer": near_misses(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.,@/:#-]{0,20}", fullmatch=True)),
    },
    optional={
        "FirmwareVersion": near_misses(
            st.from_regex(r"v(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.[0-9]", fullmatch=True)
        ),
        "Location": near_misses(st.from_regex(r"[A-Za-z0-9_.,@/:#-]{1,20}", fullmatch=True)),
    },
)
# Enrolled thing names are valid: the enrollment tool checks them with the hook's own THING_NAME rule.
enrolled_names = st.none() | st.from_regex(r"[A-Za-z0-9:_-]{1,30}", fullmatch=True)


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, str], str | None]:
    """A device's parameters and its serial's enrolled thing name. When the device names its thing, it is
    a near-miss of the name it will get (anything else is refused as a mismatch before its rule matters)."""
    request = dict(draw(device_parameters))
    enrolled_name = draw(enrolled_names)
    if draw(st.booleans()):
        name = enrolled_name or f"{request['DeviceType']}-{request['SerialNumber']}"
        request["ThingName"] = draw(near_misses(st.just(name)))
    return request, enrolled_name


def violations(hook: ModuleType, registry: Registry, request: dict[str, str], enrolled_name: str | None) -> list[str]:
    """What AWS would refuse (or a wrong thing) in an allowed decision; [] when the hook denies."""
    extra = {"thingName": enrolled_name} if enrolled_name else {}
    registry.enroll(request["SerialNumber"], request["DeviceType"], **extra)  # enrolled: validation decides
    answer = hook.handler(event(**request))
    if not answer.get("allowProvisioning"):
        return []
    found = [
        f"{name}={value!r}"
        for name, value in request.items()
        if name in ATTRIBUTES and not AWS_ATTRIBUTE_VALUE.fullmatch(value)
    ]
    thing = answer["parameterOverrides"]["ThingName"]
    if not AWS_THING_NAME.fullmatch(thing):
        found.append(f"ThingName={thing!r}")
    expected = enrolled_name or f"{request['DeviceType']}-{request['SerialNumber']}"
    if thing != expected:
        found.append(f"thing {thing!r} is not the enrolled {expected!r}")
    return found


@pytest.fixture
def enrolled(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Registry]]:
    with mock_aws():
        registry = Registry(create_registry())
        yield load_hook(monkeypatch), registry
        drain_hook_decisions()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example=requests())
def test_an_allowed_device_only_ever_carries_values_aws_accepts(
    enrolled: tuple[ModuleType, Registry], example: tuple[dict[str, str], str | None]
) -> None:
    hook, registry = enrolled
    assert violations(hook, registry, *example) == []


def _with_former_patterns(hook: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook as it was: `$`-anchored patterns tried with re.match, and `\\d` for digits."""
    former = {
        "SERIAL_NUMBER": r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$",
        "MANUFACTURER": r"^[A-Za-z0-9][A-Za-z0-9_.,@/:#-]{0,63}$",
        "FIRMWARE_VERSION": r"^v(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$",
        "LOCATION": r"^[A-Za-z0-9_.,@/:#-]{1,128}$",
        "THING_NAME": r"^[A-Za-z0-9:_-]{1,128}$",
    }
    for name, pattern in former.items():
        monkeypatch.setattr(hook, name, re.compile(pattern))
    monkeypatch.setattr(hook, "valid", lambda pattern, value: pattern.match(value) is not None)


@pytest.mark.parametrize(
    ("hole", "is_it"),
    [
        ("a valid value with a trailing newline", lambda found: any(v.endswith("\\n'") for v in found)),
        (
            "a version with a non-ASCII digit",
            lambda found: any(f.startswith("FirmwareVersion=") and re.search("[٠-٩]", f) for f in found),
        ),
    ],
)
def test_the_property_finds_the_holes_of_the_former_patterns(
    enrolled: tuple[ModuleType, Registry],
    monkeypatch: pytest.MonkeyPatch,
    hole: str,
    is_it: Callable[[list[str]], bool],
) -> None:
    hook, registry = enrolled
    _with_former_patterns(hook, monkeypatch)
    # The holes are in validation, which runs before the registry: here every valid request finds its
    # serial claimable, answered as the real claim answers (enrolled name, else derived), so the search
    # can afford many examples. The property itself runs against moto above.
    claimed = {"name": None}
    monkeypatch.setattr(
        hook._REGISTRY,
        "claim",
        lambda request, *_: hook.Decision(True, hook.ALLOWED, thing_name=claimed["name"] or request.derived_thing_name),
    )
    monkeypatch.setattr(
        registry, "enroll", lambda serial, device_type, **extra: claimed.update(name=extra.get("thingName"))
    )

    tried = [0]

    def falsifies(example: Any) -> bool:
        tried[0] += 1
        return is_it(violations(hook, registry, *example))

    search = settings(max_examples=20_000, deadline=None, database=None, phases=[Phase.generate])
    example = find(requests(), falsifies, settings=search)
    SUMMARY.append(
        f"hook property, former patterns: {hole} ({tried[0]} examples): {violations(hook, registry, *example)}"
    )
