"""Envelope signing: both algorithms, exact bytes, key pinning, typed failures."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysys.errors import IntegrityError, KeyringError
from raysys.signing.envelope import Sealer
from raysys.signing.keyring import (
    Keyring,
    generate_key,
    load_keyring_file,
    load_keyring_text,
    write_keyring_file,
)

pytestmark = pytest.mark.unit


@pytest.fixture(params=["hmac-sha256", "ed25519"])
def sealer(request: pytest.FixtureRequest) -> Sealer:
    return Sealer(Keyring([generate_key(request.param)]))


def test_round_trip_keeps_body_and_metadata(sealer: Sealer) -> None:
    data = sealer.seal("task", {"id": "a", "payload": [1, "x", None]})
    opened = sealer.open(data, "task")
    assert opened.body == {"id": "a", "payload": [1, "x", None]}
    assert opened.kid == sealer.keyring.active.kid
    assert opened.alg == sealer.keyring.active.alg
    assert opened.nonce and opened.iat > 0


def test_two_seals_of_one_body_differ_by_nonce(sealer: Sealer) -> None:
    assert sealer.seal("task", {"a": 1}) != sealer.seal("task", {"a": 1})


@settings(max_examples=200, deadline=None)
@given(index=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_rejected(index: int, bit: int) -> None:
    sealer = Sealer(Keyring([generate_key()]))
    data = bytearray(sealer.seal("task", {"id": "t1", "payload": {"n": 12345}}))
    data[index % len(data)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        sealer.open(bytes(data), "task")


def test_wrong_purpose_is_rejected(sealer: Sealer) -> None:
    data = sealer.seal("completion", {"id": "a"})
    with pytest.raises(IntegrityError) as err:
        sealer.open(data, "task")
    assert err.value.reason == "purpose_mismatch"


def test_unknown_key_is_rejected() -> None:
    data = Sealer(Keyring([generate_key()])).seal("task", {})
    with pytest.raises(IntegrityError) as err:
        Sealer(Keyring([generate_key()])).open(data, "task")
    assert err.value.reason == "unknown_key"


def test_algorithm_swap_in_header_is_rejected() -> None:
    key = generate_key("hmac-sha256")
    sealer = Sealer(Keyring([key]))
    data = sealer.seal("task", {"id": "a"})
    swapped = data.replace(b".hmac-sha256.", b".ed25519.", 1)
    with pytest.raises(IntegrityError) as err:
        sealer.open(swapped, "task")
    assert err.value.reason == "algorithm_mismatch"


def test_key_id_swap_is_rejected() -> None:
    k1, k2 = generate_key(), generate_key(status="verify-only")
    sealer = Sealer(Keyring([k1, k2]))
    data = sealer.seal("task", {"id": "a"})
    swapped = data.replace(k1.kid.encode(), k2.kid.encode(), 1)
    with pytest.raises(IntegrityError) as err:
        sealer.open(swapped, "task")
    assert err.value.reason == "bad_signature"


def test_payload_rewritten_with_valid_json_is_rejected(sealer: Sealer) -> None:
    data = sealer.seal("task", {"id": "a", "kind": "noop"})
    head, raw = data.rsplit(b".", 1)[0], data.split(b".", 4)[4]
    doc = json.loads(raw)
    doc["body"]["kind"] = "fail"
    forged = head + b"." + json.dumps(doc).encode()
    with pytest.raises(IntegrityError):
        sealer.open(forged, "task")


def test_revoked_key_verifies_nothing() -> None:
    key = generate_key()
    data = Sealer(Keyring([key])).seal("task", {})
    with pytest.raises(IntegrityError) as err:
        Sealer(Keyring([key.with_status("revoked")])).open(data, "task")
    assert err.value.reason == "revoked_key"


def test_verify_only_key_verifies_but_cannot_sign() -> None:
    key = generate_key()
    data = Sealer(Keyring([key])).seal("task", {"x": 1})
    verify_only = Sealer(Keyring([key.with_status("verify-only")]))
    assert verify_only.open(data, "task").body == {"x": 1}
    with pytest.raises(KeyringError):
        verify_only.seal("task", {})


@pytest.mark.parametrize(
    "garbage",
    [b"", b"RS1", b"RS1....", b"XX1.k.hmac-sha256.AAAA.{}", b"RS1.k!.hmac-sha256.AAAA.{}",
     b"RS1.k1.hmac-sha256.zz.{}", b"\xff" * 50, b"RS1.k1.hmac-sha256.AAAA." + b"[" * 5000],
)
def test_garbage_gets_a_typed_error(sealer: Sealer, garbage: bytes) -> None:
    with pytest.raises(IntegrityError):
        sealer.open(garbage, "task")


def test_oversized_envelope_is_refused_before_parsing(sealer: Sealer) -> None:
    with pytest.raises(IntegrityError) as err:
        sealer.open(b"RS1." + b"a" * (2 << 20), "task")
    assert err.value.reason == "malformed"


def test_ed25519_public_only_keyring_verifies() -> None:
    key = generate_key("ed25519")
    data = Sealer(Keyring([key])).seal("task", {"x": 1})
    doc = key.to_json()
    del doc["private"]
    doc["status"] = "verify-only"
    ring = load_keyring_text(json.dumps({"keys": [doc]}), source="test")
    assert Sealer(ring).open(data, "task").body == {"x": 1}


def test_keyring_file_round_trip_is_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ring = Keyring([generate_key(), generate_key("ed25519", status="verify-only")])
    path = tmp_path / "keys.json"
    write_keyring_file(path, ring)
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_keyring_file(path)
    assert [k.kid for k in again.keys()] == [k.kid for k in ring.keys()]
    data = Sealer(ring).seal("task", {})
    assert Sealer(again).open(data, "task").body == {}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"keys": [{"kid": "k1", "alg": "hmac-sha256",
                    "secret": base64.b64encode(b"x" * 16).decode()}]}, "at least 32"),
        ({"keys": [{"kid": "k1", "alg": "md5", "secret": "AAAA"}]}, "unknown algorithm"),
        ({"keys": [{"kid": "bad id", "alg": "hmac-sha256", "secret": "AAAA"}]}, "must match"),
        ({"keys": [{"kid": "k1", "alg": "hmac-sha256", "secret": "%%%"}]}, "base64"),
        ({"nokeys": []}, "'keys' list"),
        ({"keys": [{"kid": "k1", "alg": "ed25519"}]}, "needs 'private' or 'public'"),
    ],
)
def test_bad_keyrings_name_the_problem(doc: dict, fragment: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(KeyringError, match=fragment):
        load_keyring_text(json.dumps(doc), source="test")


def test_two_active_keys_are_refused() -> None:
    with pytest.raises(KeyringError, match="active"):
        Keyring([generate_key(), generate_key()])


def test_missing_keyring_file_says_how_to_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyringError, match="raysys keys new"):
        load_keyring_file(tmp_path / "nope.json")


def test_signature_with_uppercase_hex_is_rejected() -> None:
    """Stored bytes must be exactly what was signed: no alternative encodings."""
    sealer = Sealer(Keyring([generate_key()]))
    data = sealer.seal("task", {"id": "a"})
    head = data.split(b".", 4)
    head[3] = head[3].upper()
    assert head[3] != data.split(b".", 4)[3]
    with pytest.raises(IntegrityError, match="does not match"):
        sealer.open(b".".join(head), "task")
