"""One login attempt: the PKCE verifier, `state`, `nonce` and where to go afterwards.

The attempt lives in its own sealed cookie whose name is derived from `state`, so parallel tabs
each finish their own login. The browser can neither read nor change it (AEAD), and the
callback accepts a `state` only once per process.

References:
    RFC 7636 (PKCE; S256 only, as RFC 9700 section 2.1.1 asks),
    RFC 6749 section 10.12 and RFC 9700 section 4.7 (state as CSRF protection),
    OpenID Connect Core 1.0 section 3.1.2.1 (nonce).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import string
import time
from collections import OrderedDict
from urllib.parse import unquote, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ._crypto import Sealer

__all__: list[str] = []

#: How long a user may spend at the provider before the attempt is void.
FLOW_MAX_AGE = 600
#: Parallel attempts kept per browser; beyond this the oldest cookie is dropped, so XHR storms
#: cannot grow the Cookie header without bound (mod_auth_openidc #331, oauth2-proxy #2163).
MAX_PARALLEL_FLOWS = 4

_STATE_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


@dataclasses.dataclass(frozen=True, repr=False)
class LoginAttempt:
    state: str
    nonce: str
    code_verifier: str
    #: The provider this attempt went to (RFC 9700 section 4.4.2: mix-up defence).
    issuer: str
    redirect_uri: str
    return_to: str
    created_at: int

    @classmethod
    def start(cls, *, issuer: str, redirect_uri: str, return_to: str, now: int | None = None) -> LoginAttempt:
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            # 32 CSPRNG bytes give a 43-character verifier, the shortest RFC 7636 allows.
            code_verifier=secrets.token_urlsafe(32),
            issuer=issuer,
            redirect_uri=redirect_uri,
            return_to=safe_return_path(return_to),
            created_at=int(time.time()) if now is None else now,
        )

    @property
    def code_challenge(self) -> str:
        return str(create_s256_code_challenge(self.code_verifier))

    def expired(self, now: float) -> bool:
        return not (self.created_at - 60 <= now < self.created_at + FLOW_MAX_AGE)

    def __repr__(self) -> str:
        return f"LoginAttempt(return_to={self.return_to!r}, created_at={self.created_at})"


def flow_cookie_suffix(state: str) -> str | None:
    """The cookie-name suffix for `state`, or `None` when `state` could not be one of ours."""
    if not 20 <= len(state) <= 128 or not _STATE_ALPHABET.issuperset(state):
        return None
    return hashlib.sha256(state.encode()).hexdigest()[:16]


class FlowCodec:
    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal(self, attempt: LoginAttempt) -> str:
        return self._sealer.seal(json.dumps(dataclasses.asdict(attempt), separators=(",", ":")).encode())

    def open(self, value: str) -> LoginAttempt | None:
        plaintext = self._sealer.open(value)
        if plaintext is None:
            return None
        try:
            data = json.loads(plaintext)
            attempt = LoginAttempt(**data)
        except (ValueError, TypeError):
            return None
        return attempt


class UsedStates:
    """States already redeemed in this process, so a replayed callback stops before the token call.

    Bounded in size and in time: an entry is only needed until its attempt would have expired
    anyway. Several processes each keep their own (the provider still refuses a reused code).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max_entries = max_entries

    def claim(self, state: str, now: float) -> bool:
        """Record `state`; `False` if it had been claimed before."""
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= self._max_entries):
            self._seen.popitem(last=False)
        key = hashlib.sha256(state.encode()).hexdigest()
        if key in self._seen:
            return False
        self._seen[key] = now + FLOW_MAX_AGE
        return True


def safe_return_path(target: str) -> str:
    """`target` if a browser would resolve it to a path on this origin, else `/`.

    Only path-absolute references pass. Rejected: absolute and scheme-relative URLs, backslashes
    (browsers read `/\\evil` as `//evil`), control characters and whitespace (`/\\t/evil`), dot
    segments that lead to `//` (`/.//evil`), and percent-encoded forms of all of these in the path,
    should anything between here and the browser decode it once more. Allow-listing the shape, not
    deny-listing payloads, is the lesson of mod_auth_openidc CVE-2021-32786/CVE-2022-23527 and
    oauth2-proxy GHSA-j7px-6hwj-hpjg; the dot-segment rule is oauth2-proxy's validator's.
    """
    if not _is_local_path(target):
        return "/"
    path = target.split("?", 1)[0]
    decoded = _CONTROL.sub("", unquote(path))
    if _ESCAPE.match(decoded) or "\\" in decoded or _ESCAPE.match(path):
        return "/"
    return target


#: A slash, then nothing, whitespace or dots, then another slash: how a path becomes an authority.
_ESCAPE = re.compile(r"[/\\](?:[\s\v]*|\.{1,2})[/\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _is_local_path(target: str) -> bool:
    if not target.startswith("/") or target[1:2] in ("/", "\\"):
        return False
    if "\\" in target or any(ch <= " " or ch == "\x7f" for ch in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc
