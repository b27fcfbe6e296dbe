from __future__ import annotations

import base64
import secrets

from pkce_middleware._crypto import Sealer

NEW, OLD = secrets.token_urlsafe(32), secrets.token_urlsafe(32)


def test_round_trip_and_fresh_nonce() -> None:
    sealer = Sealer([NEW], "session")
    first, second = sealer.seal(b"payload"), sealer.seal(b"payload")
    assert first != second  # a fresh random nonce every time
    assert sealer.open(first) == sealer.open(second) == b"payload"
    assert b"payload" not in base64.urlsafe_b64decode(first + "==")


def test_purpose_is_bound() -> None:
    value = Sealer([NEW], "flow").seal(b"attempt")
    assert Sealer([NEW], "session").open(value) is None


def test_tampering_anywhere_is_detected() -> None:
    sealer = Sealer([NEW], "session")
    raw = bytearray(base64.urlsafe_b64decode(sealer.seal(b"x" * 40) + "=="))
    for index in range(len(raw)):
        forged = bytearray(raw)
        forged[index] ^= 0x01
        assert sealer.open(base64.urlsafe_b64encode(bytes(forged)).decode()) is None


def test_garbage_is_refused_quietly() -> None:
    sealer = Sealer([NEW], "session")
    for value in ["", "!!!", "a", "AQ", "x" * 20000, "\x00\xff", base64.urlsafe_b64encode(b"\x01" * 40).decode()]:
        assert sealer.open(value) is None


def test_rotation_new_seals_old_still_opens() -> None:
    old_value = Sealer([OLD], "session").seal(b"before")
    rotated = Sealer([NEW, OLD], "session")
    assert rotated.open(old_value) == b"before"
    assert not rotated.is_current(old_value)
    new_value = rotated.seal(b"after")
    assert rotated.is_current(new_value)
    assert Sealer([OLD], "session").open(new_value) is None


def test_retired_key_no_longer_opens() -> None:
    assert Sealer([NEW], "session").open(Sealer([OLD], "session").seal(b"x")) is None


def test_is_current_answers_for_every_nonce() -> None:
    """`is_current` compares the text of the key id, whose last character also holds nonce bits."""
    keys = [secrets.token_urlsafe(32) for _ in range(3)]
    sealers = [Sealer(keys[index:] + keys[:index], "session") for index in range(3)]
    for _ in range(200):
        for index, sealer in enumerate(sealers):
            value = sealer.seal(b"x")
            assert [other.is_current(value) for other in sealers] == [other is sealer for other in sealers]
            assert all(other.open(value) == b"x" for other in sealers)
            assert not sealers[index - 1].is_current(value[:6])
    assert not sealers[0].is_current("")
