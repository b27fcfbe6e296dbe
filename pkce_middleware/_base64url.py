"""Unpadded base64url (RFC 4648 section 5), the spelling of sealed cookies and of JWT segments.

`decode` takes only the canonical spelling, the one `encode` writes: a sealed cookie is a bearer
credential, and letting `=` padding, `+`/`/`, whitespace or stray bits in the last character give
other spellings of the same value would let a copy pass for a different one.

pybase64 (libbase64's SIMD codecs) does the work: opening a session cookie this process has not
seen is mostly decoding its 2-3 kB, which the standard library's `binascii` does about five times
slower. Its own checks are not the whole canonical rule (with `altchars` it also takes `+` and
`/`, and it ignores the unused bits of the last character), so the rest is checked here.
"""

from __future__ import annotations

import binascii

import pybase64

__all__: list[str] = []

_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Which last characters an unpadded encoding may end with, by its length modulo 4: after 2 or 3
#: characters of a final group, 4 or 2 low bits are unused and must be zero (RFC 4648 section 3.5).
_LAST_CHARACTERS = (_URLSAFE, "", _URLSAFE[::16], _URLSAFE[::4])
_PADDING = ("", "===", "==", "=")


def encode(data: bytes) -> str:
    return pybase64.b64encode_as_string(data, altchars=b"-_").rstrip("=")


def decode(text: str) -> bytes | None:
    """The bytes `text` spells, or `None` unless `encode` would write exactly `text`."""
    if "+" in text or "/" in text or "=" in text:
        return None
    if text and text[-1] not in _LAST_CHARACTERS[len(text) % 4]:
        return None
    try:
        # Refuses anything outside the alphabet (non-ASCII too) and a length 1 more than a
        # multiple of 4, which no byte string encodes to.
        return pybase64.b64decode(text + _PADDING[len(text) % 4], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
