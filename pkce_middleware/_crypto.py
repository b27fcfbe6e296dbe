"""Sealed (encrypted and authenticated) values for cookies: AES-256-GCM with per-purpose keys.

A sealed value is `base64url(version || key id || nonce || ciphertext+tag)`, unpadded; that exact
spelling is the only one that opens:

* every configured secret is stretched with HKDF-SHA256 into one key per *purpose* (`"session"`,
  `"flow"`), and the purpose is also the AEAD's associated data, so a value sealed for one cookie
  never opens as another;
* the nonce is 96 fresh random bits per seal (never a counter or a constant: mod_auth_openidc
  CVE-2021-32791);
* the 4-byte key id lets `open` pick the right key directly, so rotation (`new,old`) costs nothing
  on the hot path and `is_current` tells when a value should be sealed again with the newest key.

References:
    RFC 5116 (AEAD), RFC 5869 (HKDF), NIST SP 800-38D section 8.2.2 (random 96-bit nonces).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import _base64url

__all__: list[str] = []

_VERSION = b"\x01"
_KID_SIZE = 4
_NONCE_SIZE = 12
_HEADER_SIZE = len(_VERSION) + _KID_SIZE + _NONCE_SIZE
_TAG_SIZE = 16


class Sealer:
    """Seals and opens byte strings for one purpose, with a keyring whose first key seals."""

    def __init__(self, secrets: Sequence[str], purpose: str, *, max_length: int = 16384) -> None:
        if not secrets:
            raise ValueError("at least one secret is needed")
        self._aad = f"pkce_middleware:{purpose}".encode()
        self._max_length = max_length
        self._keys: dict[bytes, AESGCM] = {}
        for secret in secrets:
            key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"pkce_middleware v1 " + purpose.encode()
            ).derive(secret.encode())
            kid = hashlib.sha256(b"kid" + key).digest()[:_KID_SIZE]
            self._keys.setdefault(kid, AESGCM(key))
        self._current_kid = next(iter(self._keys))
        # Version and key id are the first 40 bits: six characters and four bits of the seventh,
        # whose last two bits are the nonce's. Comparing text answers `is_current` on every
        # request without decoding anything (one spelling per value of those two bits).
        self._current_heads = frozenset(
            _base64url.encode(_VERSION + self._current_kid + bytes([bits << 6]))[:7] for bits in range(4)
        )

    def __repr__(self) -> str:
        return f"Sealer(purpose={self._aad.decode()!r}, keys={len(self._keys)})"

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._keys[self._current_kid].encrypt(nonce, plaintext, self._aad)
        return _base64url.encode(_VERSION + self._current_kid + nonce + sealed)

    def open(self, value: str) -> bytes | None:
        """The plaintext, or `None` when the value is malformed, forged, or sealed with an unknown key.

        Only the canonical encoding opens, the one `seal` writes (see `_base64url`).
        """
        if len(value) > self._max_length:
            return None
        raw = _base64url.decode(value)
        if raw is None:
            return None
        if len(raw) < _HEADER_SIZE + _TAG_SIZE or raw[:1] != _VERSION:
            return None
        aead = self._keys.get(raw[1 : 1 + _KID_SIZE])
        if aead is None:
            return None
        try:
            return aead.decrypt(raw[1 + _KID_SIZE : _HEADER_SIZE], raw[_HEADER_SIZE:], self._aad)
        except InvalidTag:
            return None

    def is_current(self, value: str) -> bool:
        """Whether `value` was sealed with the newest key (so re-sealing would change nothing)."""
        return value[:7] in self._current_heads
