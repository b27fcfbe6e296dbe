"""One login flow: the PKCE verifier, `state`, `nonce` and where to go afterwards, and the
callback's checks, done without I/O.

The flow lives in its own sealed cookie (the flow cookie) whose name is derived from `state`, so
parallel tabs each finish their own login. The browser can neither read nor change it (AEAD), and
the callback accepts a `state` only once per process.

The callback is checked in the manner of h11's sans-I/O core: `Callback.parse` reads the request,
`check_callback` holds it against the flow cookie, and `check_issuer` against the provider's
metadata; each takes values and returns a result or raises, so each rule is tested without a
server. The route (`_routes`) does only the I/O between those steps.

References:
    RFC 7636 (PKCE; S256 only, as RFC 9700 section 2.1.1 asks),
    RFC 6749 section 10.12 and RFC 9700 section 4.7 (state as CSRF protection),
    RFC 9700 section 4.7.1 (every check that needs no network before the code is redeemed),
    RFC 9207 (the `iss` authorization response parameter),
    OpenID Connect Core 1.0 section 3.1.2.1 (nonce).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ._crypto import Sealer
from ._exceptions import CallbackError, ProviderRefused, Reason

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: How long a user may spend at the provider before the flow is void.
FLOW_MAX_AGE = 600
#: Parallel flows kept per browser; beyond this the oldest cookie is dropped, so XHR storms
#: cannot grow the Cookie header without bound (mod_auth_openidc #331, oauth2-proxy #2163).
MAX_PARALLEL_FLOWS = 4

#: Longest return target kept in a flow cookie: with the rest of the flow, sealed and encoded,
#: the cookie stays well under the 4096 bytes a browser keeps.
MAX_RETURN_TO_LENGTH = 2048
#: Longer `next` values or request targets are not even looked at.
MAX_TARGET_LENGTH = 8192

_STATE_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


@dataclasses.dataclass(frozen=True, repr=False)
class LoginFlow:
    state: str
    nonce: str
    code_verifier: str
    #: The provider this flow went to (RFC 9700 section 4.4.2: mix-up defence).
    issuer: str
    redirect_uri: str
    return_to: str
    created_at: int
    #: What this login asks of the provider beyond a plain sign-in, and must then get (step-up):
    #: `acr_values` and `max_age` (OIDC Core 3.1.2.1), and `prompt=login` to switch accounts.
    acr_values: tuple[str, ...] = ()
    max_age: int | None = None
    prompt: str | None = None
    #: Which of several providers (`PKCE_PROVIDERS`) it went to; "" with one.
    provider: str = ""

    @classmethod
    def start(
        cls,
        *,
        issuer: str,
        redirect_uri: str,
        return_to: str,
        now: int | None = None,
        acr_values: tuple[str, ...] = (),
        max_age: int | None = None,
        prompt: str | None = None,
        provider: str = "",
    ) -> LoginFlow:
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            # 32 CSPRNG bytes give a 43-character verifier, the shortest RFC 7636 allows.
            code_verifier=secrets.token_urlsafe(32),
            issuer=issuer,
            redirect_uri=redirect_uri,
            return_to=_fitting(safe_return_path(return_to)),
            created_at=int(time.time()) if now is None else now,
            acr_values=acr_values,
            max_age=max_age,
            prompt=prompt,
            provider=provider,
        )

    @property
    def cookie_suffix(self) -> str:
        """The flow cookie's name after the common prefix (derived from `state`)."""
        suffix = flow_cookie_suffix(self.state)
        assert suffix is not None  # `start` makes states of the shape `flow_cookie_suffix` accepts
        return suffix

    @property
    def code_challenge(self) -> str:
        return str(create_s256_code_challenge(self.code_verifier))

    def expired(self, now: float) -> bool:
        return not (self.created_at - 60 <= now < self.created_at + FLOW_MAX_AGE)

    def __repr__(self) -> str:
        return f"LoginFlow(return_to={self.return_to!r}, created_at={self.created_at})"


def flow_cookie_suffix(state: str) -> str | None:
    """The cookie-name suffix for `state`, or `None` when `state` could not be one of ours."""
    if not 20 <= len(state) <= 128 or not _STATE_ALPHABET.issuperset(state):
        return None
    return hashlib.sha256(state.encode()).hexdigest()[:16]


class FlowCodec:
    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal(self, flow: LoginFlow) -> str:
        return self._sealer.seal(json.dumps(dataclasses.asdict(flow), separators=(",", ":")).encode())

    def open(self, value: str) -> LoginFlow | None:
        plaintext = self._sealer.open(value)
        if plaintext is None:
            return None
        try:
            data = json.loads(plaintext)
            flow = LoginFlow(**{**data, "acr_values": tuple(data.get("acr_values", ()))})
        except (ValueError, TypeError):
            return None
        return flow


class UsedStates:
    """States already redeemed in this process, so a replayed callback stops before the token call.

    Bounded in size and in time: an entry is only needed until its flow would have expired
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


_SINGLE_VALUED = ("state", "code", "iss", "error")


@dataclasses.dataclass(frozen=True, slots=True)
class Callback:
    """What the provider's redirect brought back (RFC 6749 section 4.1.2), read once."""

    state: str | None
    code: str | None
    iss: str | None
    error: str | None
    error_description: str | None

    @classmethod
    def parse(cls, method: str, query_string: bytes) -> Callback:
        """The callback's parameters; `CallbackError` for a non-GET or a repeated parameter."""
        if method != "GET":
            raise CallbackError("callback must be a GET", error=Reason.METHOD_NOT_ALLOWED)
        params = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        names = [name for name, _ in params]
        if any(names.count(name) > 1 for name in _SINGLE_VALUED):
            raise CallbackError("a parameter is repeated", error=Reason.DUPLICATE_PARAMETER)
        query = dict(params)
        return cls(
            state=query.get("state"),
            code=query.get("code"),
            iss=query.get("iss"),
            error=query.get("error"),
            error_description=query.get("error_description"),
        )

    @property
    def flow_cookie_suffix(self) -> str | None:
        return flow_cookie_suffix(self.state or "")


def check_callback(
    callback: Callback, flow_value: str | None, flows: FlowCodec, *, issuers: Mapping[str, str], now: int
) -> LoginFlow:
    """The flow this callback finishes, after every check that needs neither network nor store.

    `flow_value` is the flow cookie named after the callback's `state` (`None` if the browser has
    none). Raises `ProviderRefused` for an error answer, else `CallbackError` naming the first
    rule broken.
    """
    if callback.error is not None:
        # Anyone can link to the callback with error=...; the provider's own words are shown
        # only when the answer belongs to a flow of this browser (RFC 9207 section 2.4).
        flow = flows.open(flow_value) if flow_value and callback.state else None
        ours = (
            flow is not None
            and callback.state is not None
            and secrets.compare_digest(flow.state.encode(), callback.state.encode("utf-8", "surrogatepass"))
        )
        if ours and flow is not None and callback.iss is not None and callback.iss != issuers.get(flow.provider):
            # RFC 9207 section 2.4: an error answer is checked too; another issuer's words are not shown.
            raise CallbackError("iss of an error answer is not our issuer (RFC 9207)", error=Reason.ISS_MISMATCH)
        raise ProviderRefused(
            f"the provider answered error={callback.error[:100]!r} ours={ours}",
            provider_error=callback.error,
            provider_description=callback.error_description if ours else None,
        )
    if not callback.state:
        raise CallbackError("no state", error=Reason.STATE_MISSING)
    if flow_value is None:
        raise CallbackError("no flow cookie for this state", error=Reason.FLOW_MISSING)
    flow = flows.open(flow_value)
    if flow is None:
        raise CallbackError("flow cookie does not open", error=Reason.FLOW_INVALID)
    if not _same_state(flow, callback.state):
        raise CallbackError("state differs from the flow's", error=Reason.STATE_MISMATCH)
    # RFC 9700 section 4.4.2: the flow is bound to the provider it went to (`issuers`: name -> id).
    if flow.issuer != issuers.get(flow.provider):
        raise CallbackError("the flow went to another provider", error=Reason.ISSUER_MISMATCH)
    if flow.expired(now):
        raise CallbackError("the flow is too old", error=Reason.FLOW_EXPIRED)
    return flow


def _same_state(flow: LoginFlow, state: str) -> bool:
    # As bytes: `compare_digest` refuses a str with non-ASCII characters, which a query may hold.
    return secrets.compare_digest(flow.state.encode(), state.encode("utf-8", "surrogatepass"))


def check_issuer(callback: Callback, *, issuer: str, iss_supported: bool) -> str:
    """RFC 9207 (mix-up defence) against the provider's metadata; the code to redeem."""
    if callback.iss is None and iss_supported:
        raise CallbackError("iss missing though the provider promises it (RFC 9207)", error=Reason.ISS_MISSING)
    if callback.iss is not None and callback.iss != issuer:
        raise CallbackError("iss is not our issuer (RFC 9207)", error=Reason.ISS_MISMATCH)
    if not callback.code:
        raise CallbackError("no code", error=Reason.CODE_MISSING)
    return callback.code


def safe_return_path(target: str) -> str:
    """`target` if a browser would resolve it to a path on this origin, else `/`.

    Only path-absolute references pass. Rejected: absolute and scheme-relative URLs, backslashes
    (browsers read `/\\evil` as `//evil`), control characters and whitespace (`/\\t/evil`), dot
    segments that lead to `//` (`/.//evil`), and percent-encoded forms of all of these in the path,
    should anything between here and the browser decode it once more. Allow-listing the shape, not
    deny-listing payloads, is the lesson of mod_auth_openidc CVE-2021-32786/CVE-2022-23527 and
    oauth2-proxy GHSA-j7px-6hwj-hpjg; the dot-segment rule is oauth2-proxy's validator's.
    """
    # Before any decoding: a megabyte of `%` must cost nothing (nor fit in a cookie anyway).
    if len(target) > MAX_TARGET_LENGTH or not _is_local_path(target):
        return "/"
    path = target.split("?", 1)[0]
    decoded = _CONTROL.sub("", unquote(path))
    if _ESCAPE.match(decoded) or "\\" in decoded or _ESCAPE.match(path):
        return "/"
    return target


def _fitting(target: str) -> str:
    """`target`, or a shorter return target when it would make the flow cookie too large.

    Browsers drop a cookie over 4096 bytes, and a login whose flow cookie was dropped can never
    finish; the path without its query is the next best place to land, else the home page.
    """
    if len(target) <= MAX_RETURN_TO_LENGTH:
        return target
    path = target.split("?", 1)[0]
    shorter = path if len(path) <= MAX_RETURN_TO_LENGTH else "/"
    logger.warning(
        "return target of %d characters is too long for the flow cookie; using %r", len(target), shorter[:80]
    )
    return shorter


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
