"""Device attestation at the hook: a device enrolled with a factory public key provisions only with its
signature over this attempt (serial, new certificate id, template name); every refusal leaves the
registry as it was."""

from __future__ import annotations

import base64
from types import ModuleType

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.unit.support import Registry, event, load_hook, log_records

DENY = {"allowProvisioning": False}
TEMPLATE = "IoTProvisioning-dev-fleet"  # the template of support.event's templateArn
CERTIFICATE = "a" * 64


def new_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def public_der(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sign(
    hook: ModuleType,
    key: ec.EllipticCurvePrivateKey,
    serial: str = "SN-0001",
    certificate: str = CERTIFICATE,
    template: str = TEMPLATE,
) -> str:
    return base64.b64encode(
        key.sign(hook.attestation_message(serial, certificate, template), ec.ECDSA(hashes.SHA256()))
    ).decode()


def reason(capsys: pytest.CaptureFixture[str]) -> str:
    return str(log_records(capsys.readouterr().out)[-1]["reason"])


def test_given_a_keyed_device_when_it_signs_this_attempt_then_it_provisions(
    hook: ModuleType, registry: Registry
) -> None:
    key = new_key()
    registry.enroll("SN-0001", factoryPublicKey=public_der(key))

    answer = hook.handler(event(AttestationSignature=sign(hook, key)))

    assert answer == {"allowProvisioning": True, "parameterOverrides": {"ThingName": "temperature-sensor-SN-0001"}}
    item = registry.get("SN-0001")
    assert item is not None and item["status"] == "provisioning" and item["certificateId"] == CERTIFICATE


def test_given_a_signature_in_raw_r_s_form_then_it_is_accepted_as_secure_elements_produce_it(
    hook: ModuleType, registry: Registry
) -> None:
    key = new_key()
    registry.enroll("SN-0001", factoryPublicKey=public_der(key))
    r, s = decode_dss_signature(base64.b64decode(sign(hook, key)))
    raw = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()

    assert hook.handler(event(AttestationSignature=raw))["allowProvisioning"] is True


@pytest.mark.parametrize(
    ("case", "signature_of"),
    [
        ("no signature", lambda hook, key: None),
        ("another key", lambda hook, key: sign(hook, new_key())),
        ("another certificate id", lambda hook, key: sign(hook, key, certificate="b" * 64)),
        ("another serial", lambda hook, key: sign(hook, key, serial="SN-0002")),
        ("another template", lambda hook, key: sign(hook, key, template="Other-dev-fleet")),
        ("not base64", lambda hook, key: "not*base64!"),
        ("base64 but not DER", lambda hook, key: base64.b64encode(b"\x30\x05garbage").decode()),
        ("a truncated signature", lambda hook, key: sign(hook, key)[:40]),
    ],
)
def test_given_a_keyed_device_when_the_signature_is_not_its_own_for_this_attempt_then_denied_unchanged(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str], case: str, signature_of: object
) -> None:
    key = new_key()
    registry.enroll("SN-0001", factoryPublicKey=public_der(key))
    before = registry.get("SN-0001")
    signature = signature_of(hook, key)  # type: ignore[operator]

    answer = hook.handler(event(**({"AttestationSignature": signature} if signature else {})))

    assert answer == DENY, case
    assert registry.get("SN-0001") == before
    assert reason(capsys) == "ATTESTATION_FAILED"


def test_given_attestation_required_when_an_enrolled_device_has_no_key_then_denied_unchanged(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = load_hook(monkeypatch, REQUIRE_ATTESTATION="true")
    registry.enroll("SN-0001")
    before = registry.get("SN-0001")

    assert hook.handler(event(AttestationSignature=sign(hook, new_key()))) == DENY

    assert registry.get("SN-0001") == before
    record = log_records(capsys.readouterr().out)[-1]
    assert record["reason"] == "ATTESTATION_FAILED"
    assert "without a factory key" in record["detail"]


def test_given_attestation_required_when_the_serial_is_unknown_then_it_is_still_not_enrolled(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = load_hook(monkeypatch, REQUIRE_ATTESTATION="true")

    assert hook.handler(event(SerialNumber="SN-9999")) == DENY

    assert registry.items() == []
    assert reason(capsys) == "NOT_ENROLLED"  # what the serial-guessing alarm counts, with ATTESTATION_FAILED


def test_given_attestation_required_when_a_keyed_device_signs_then_it_provisions(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = load_hook(monkeypatch, REQUIRE_ATTESTATION="true")
    key = new_key()
    registry.enroll("SN-0001", factoryPublicKey=public_der(key))

    assert hook.handler(event(AttestationSignature=sign(hook, key)))["allowProvisioning"] is True


def test_given_attestation_not_required_when_a_device_without_key_registers_then_old_behaviour(
    hook: ModuleType, registry: Registry
) -> None:
    registry.enroll("SN-0001")
    registry.enroll("SN-0002")

    assert hook.handler(event())["allowProvisioning"] is True
    # A device that signs although no key is enrolled for it (newer firmware, older manifest) is admitted too.
    assert (
        hook.handler(event(SerialNumber="SN-0002", AttestationSignature=sign(hook, new_key(), "SN-0002")))[
            "allowProvisioning"
        ]
        is True
    )


def test_given_the_enrolled_key_changes_after_the_check_then_the_write_is_refused(
    hook: ModuleType, registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The write requires the key the signature was checked with: a re-enrollment with a new key between
    the read and the write refuses the attempt instead of admitting a signature of the old key."""
    old, new = new_key(), new_key()
    registry.enroll("SN-0001", factoryPublicKey=public_der(old))
    read = hook.Registry.factory_key_of

    def read_then_reenroll(self: object, serial: str) -> tuple[bool, str]:
        answer = read(self, serial)
        registry.enroll("SN-0001", factoryPublicKey=public_der(new))
        return answer

    monkeypatch.setattr(hook.Registry, "factory_key_of", read_then_reenroll)
    assert hook.handler(event(AttestationSignature=sign(hook, old))) == DENY
    assert registry.get("SN-0001") == {
        "serialNumber": "SN-0001",
        "deviceType": "temperature-sensor",
        "status": "enrolled",
        "factoryPublicKey": public_der(new),
    }
    assert reason(capsys) == "ATTESTATION_FAILED"


@pytest.mark.parametrize(
    ("enrolled", "why"),
    [
        (lambda: public_der(new_key(ec.SECP384R1())), "P-256"),
        (lambda: "bm90IGEga2V5", "not an EC public key"),
    ],
)
def test_given_an_enrolled_key_the_hook_cannot_use_then_denied_and_says_why(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str], enrolled: object, why: str
) -> None:
    registry.enroll("SN-0001", factoryPublicKey=enrolled())  # type: ignore[operator]

    assert hook.handler(event(AttestationSignature=sign(hook, new_key()))) == DENY

    record = log_records(capsys.readouterr().out)[-1]
    assert record["reason"] == "ATTESTATION_FAILED"
    assert why in record["detail"]


def test_factory_keys_are_read_from_pem_or_base64_der_and_only_p256(hook: ModuleType) -> None:
    key = new_key()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert hook.factory_key(pem.decode()).to_der() == hook.factory_key(public_der(key)).to_der()
    with pytest.raises(ValueError, match="P-256"):
        hook.factory_key(public_der(new_key(ec.SECP256K1())))


@pytest.mark.parametrize(
    ("parameters", "prefix"),
    [({"ThingName": "claim-boiler"}, "claim-"), ({}, "temperature-")],
)
def test_given_a_thing_name_taking_the_claim_client_id_prefix_then_denied_without_touching_registry(
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    parameters: dict[str, str],
    prefix: str,
) -> None:
    """A thing named with the prefix could be connected to by the claim certificate (the claim policy
    grants Connect on client/<prefix>*) and knocked off: no device may get such a name."""
    hook = load_hook(monkeypatch, CLAIM_CLIENT_ID_PREFIX=prefix)
    registry.enroll("SN-0001", thingName=parameters.get("ThingName", "temperature-sensor-SN-0001"))
    before = registry.get("SN-0001")

    assert hook.handler(event(**parameters)) == DENY

    assert registry.get("SN-0001") == before
    record = log_records(capsys.readouterr().out)[-1]
    assert record["reason"] == "INVALID_PARAMETERS"
    assert prefix in record["detail"]


def test_given_an_enrolled_thing_name_taking_the_prefix_when_the_device_names_none_then_denied_unchanged(
    hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registry enrolled before the prefix existed may hold such a name: the write refuses it too."""
    registry.enroll("SN-0001", thingName="claim-boiler")
    before = registry.get("SN-0001")

    assert hook.handler(event()) == DENY

    assert registry.get("SN-0001") == before
    record = log_records(capsys.readouterr().out)[-1]
    assert (record["reason"], "enrolled thing name claim-boiler" in record["detail"]) == ("INVALID_PARAMETERS", True)


@pytest.mark.parametrize("sent", ["", "none"])
def test_the_templates_default_signature_is_no_signature(
    sent: str, hook: ModuleType, registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """The template declares AttestationSignature with the default "none" (not "": AWS does not say whether a
    parameter may default to empty); a device that sends it, or nothing, has sent no signature."""
    from iot_fleet.documents import PARAMETER_DEFAULTS

    assert PARAMETER_DEFAULTS["AttestationSignature"] == hook.NO_ATTESTATION_SIGNATURE
    registry.enroll("SN-0001", factoryPublicKey=public_der(new_key()))
    before = registry.get("SN-0001")

    assert hook.handler(event(AttestationSignature=sent)) == DENY

    assert registry.get("SN-0001") == before
    assert "sent no AttestationSignature" in log_records(capsys.readouterr().out)[-1]["detail"]
