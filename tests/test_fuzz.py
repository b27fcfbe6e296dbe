"""A fuzzing suite that stays (issue #10): the whole middleware, in process, under hostile input.

Each property drives `PKCEMiddleware` (around a recording app, in front of an in-process hostile
provider) with raw ASGI calls built from Hypothesis-generated input, and holds every answer to
the same rules (`tests.support.fuzz_harness.check_reply`):

* no exception escapes the middleware, and no 5xx but the documented 502/503/504;
* no session cookie is set and the app is not reached without a valid login;
* a `Location` is a same-origin path or the provider's authorization/end-session endpoint;
* every `pkce_middleware` log line is free of control characters;

plus what each kind of input adds (a logout from another origin leaves the session alive, a
back-channel logout answered 200 really ends the session, a refresh never changes the user...).

Each property also carries explicit `@example`s: regression seeds for defects the fuzzer found,
run in every profile.

Budgets: `HYPOTHESIS_PROFILE=ci` (the default, what `make test` runs) runs a fixed, derandomized
set of a few thousand examples; `HYPOTHESIS_PROFILE=fuzz` (`make fuzz`) runs over 100,000 random
ones. The counts per property are printed at the end of the run, and written as JSON to the file
named by `$FUZZ_REPORT` when that is set.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import pytest
from authlib.oidc.core.util import create_half_hash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from joserfc.jwk import Key, RSAKey
from joserfc.jws import JWSRegistry

from pkce_middleware._session import Session
from pkce_middleware.testing import session_cookies
from tests.support.fuzz_harness import (
    APP_HOST,
    BROWSER_ACCEPT,
    CHUNK_NAMES,
    END_SESSION_ENDPOINT,
    Flow,
    FuzzSite,
    FuzzStats,
    Harness,
    PropertyStats,
    Reply,
    Scripted,
    audience_ok,
    begin_flow,
    browser_resolves_same_origin,
    check_reply,
    is_number,
    reference_cookies,
    reference_session,
)
from tests.support.fuzz_strategies import (
    ENCODINGS,
    OPEN_REDIRECTS,
    RawJSON,
    RelTime,
    Sym,
    dump_json,
    encode_pairs,
    hostile_text,
    json_values,
    mutations,
    rel_times,
    to_bytes,
)
from tests.support.hostile_provider import BACKCHANNEL_LOGOUT_EVENT, REMOVE, b64url, rsa_key
from tests.support.site import (
    APP_ORIGIN,
    CALLBACK_PATH,
    CLIENT_ID,
    FLOW_COOKIE_PREFIX,
    ISSUER,
    SESSION_COOKIE,
    seal_session,
)

# -- budgets -----------------------------------------------------------------------------------

#: `HYPOTHESIS_PROFILE=fuzz` for the long run; anything else (unset, `ci`) is the CI budget.
PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "fuzz-ci"
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
}
# Named apart from Hypothesis's own built-in "ci" profile, and only ever used through the
# `settings` decorators below, so that nothing else in the test run changes.
settings.register_profile("fuzz-ci", derandomize=True, **_COMMON)
settings.register_profile("fuzz", derandomize=False, **_COMMON)

#: Examples per property: a few thousand for `make test`, over 100,000 for `make fuzz`.
BUDGETS = {
    "fuzz-ci": {
        "callback": 380,
        "cookies": 520,
        "logout": 220,
        "backchannel": 400,
        "token_answers": 400,
        "refresh": 230,
        "targets": 350,
    },
    "fuzz": {
        "callback": 12_000,
        "cookies": 22_000,
        "logout": 14_000,
        "backchannel": 15_000,
        "token_answers": 13_000,
        "refresh": 10_000,
        "targets": 16_000,
    },
}


def budget(name: str) -> settings:
    """The settings of property `name`; `FUZZ_MAX_EXAMPLES=n` gives every property n examples (a quick look)."""
    override = os.environ.get("FUZZ_MAX_EXAMPLES")
    return settings(settings.get_profile(PROFILE), max_examples=int(override) if override else BUDGETS[PROFILE][name])


STATS = FuzzStats()


class _Summary:
    """Prints the counts after the run (and writes them to `$FUZZ_REPORT`)."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not STATS.properties:
            return
        terminalreporter.section("fuzz")
        for line in STATS.summary():
            terminalreporter.write_line(line)
        report = os.environ.get("FUZZ_REPORT")
        if report:
            with open(report, "w", encoding="utf-8") as file:
                file.write(STATS.as_json() + "\n")
            terminalreporter.write_line(f"  written to {report}")


@pytest.fixture(scope="module")
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    STATS.profile = PROFILE
    if not request.config.pluginmanager.has_plugin("pkce-fuzz-summary"):
        request.config.pluginmanager.register(_Summary(), "pkce-fuzz-summary")
    with Harness(STATS) as opened:
        yield opened


# -- shared pieces ------------------------------------------------------------------------------

SUB = "fuzz-user"
LEEWAY = 60
#: Seconds of slack in the reference checks, so a slow example never turns a boundary into a finding.
SLACK = 5
ACCEPTS = {
    "html": [BROWSER_ACCEPT],
    "json": [(b"accept", b"application/json")],
    "none": [],
    "xhr": [BROWSER_ACCEPT, (b"x-requested-with", b"XMLHttpRequest")],
    "cors": [BROWSER_ACCEPT, (b"sec-fetch-mode", b"cors")],
}
accepts = st.sampled_from(sorted(ACCEPTS))


def op_key(site: FuzzSite) -> Key:
    return site.hostile.signing_key


def attacker_key() -> RSAKey:
    return rsa_key("attacker-key")


def sign(header: Any, payload: bytes, mode: str, key: Key) -> str:
    """A compact JWS of `payload` under `header`; `mode` says how (or whether) it is signed."""
    signing_input = f"{b64url(dump_json(header))}.{b64url(payload)}"
    rs256 = JWSRegistry.algorithms["RS256"]
    if mode == "op":
        signature = rs256.sign(signing_input.encode("ascii"), key)
    elif mode == "attacker":
        signature = rs256.sign(signing_input.encode("ascii"), attacker_key())
    elif mode == "tamper":
        flipped = bytearray(rs256.sign(signing_input.encode("ascii"), key))
        flipped[0] ^= 0x01
        signature = bytes(flipped)
    elif mode == "hmac_public":
        assert isinstance(key, RSAKey)
        signature = hmac.digest(key.as_pem(private=False), signing_input.encode("ascii"), "sha256")
    else:  # "none"
        signature = b""
    return f"{signing_input}.{b64url(signature)}"


SIGNATURES = st.sampled_from(["op", "op", "op", "op", "attacker", "tamper", "hmac_public", "none"])


def resolve(value: Any, symbols: dict[str, Any], now: int) -> Any:
    """`value` with every `Sym` and `RelTime` in it replaced by its run-time value."""
    if isinstance(value, Sym):
        return symbols[value.name]
    if isinstance(value, RelTime):
        return now + value.offset
    if isinstance(value, list):
        return [resolve(item, symbols, now) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item, symbols, now) for key, item in value.items()}
    return value


def apply(target: dict[str, Any], overrides: dict[str, Any], symbols: dict[str, Any], now: int) -> dict[str, Any]:
    result = dict(target)
    for name, value in overrides.items():
        if value is REMOVE:
            result.pop(name, None)
        else:
            result[name] = resolve(value, symbols, now)
    return result


def tweak(value: str, how: str) -> str:
    """A near miss of `value` (or `value` itself for "same"/"percent", which decode to it)."""
    if how == "upper":
        return value.upper()
    if how == "append":
        return value + "x"
    if how == "drop_last":
        return value[:-1]
    if how == "space":
        return " " + value
    if how == "unicode":
        return value + "é"
    if how == "double":
        return value + value
    if how == "percent":
        return "".join(f"%{ord(ch):02X}" for ch in value)
    return value


TWEAKS = st.sampled_from(
    ["same", "same", "same", "upper", "append", "drop_last", "space", "unicode", "double", "percent"]
)


def noncanonical(value: str, how: str) -> str:
    """Another spelling of a sealed (unpadded base64url) value, or a near miss of it."""
    if how == "padded":
        return value + "=="
    if how == "std_alphabet":
        return value.replace("-", "+").replace("_", "/")
    if how == "last_bits":
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        if len(value) % 4 in (2, 3):
            return value[:-1] + alphabet[alphabet.index(value[-1]) ^ 1]
        return value + "A"
    if how == "quoted":
        return f'"{value}"'
    if how == "inner_space":
        return value[:10] + " " + value[10:]
    if how == "inner_newline":
        return value[:10] + "\n" + value[10:]
    if how == "percent":
        return f"%{ord(value[0]):02X}{value[1:]}"
    if how == "truncated":
        return value[:-1]
    if how == "extended":
        return value + "A"
    if how == "swapcase":
        return value.swapcase()
    return value


NONCANONICAL = st.sampled_from(
    [
        "padded",
        "std_alphabet",
        "last_bits",
        "quoted",
        "inner_space",
        "inner_newline",
        "percent",
        "truncated",
        "extended",
        "swapcase",
    ]
)


def session_value(reply: Reply) -> str | None:
    """The session cookie value a reply sets, chunks reassembled."""
    set_ = {c.name: c.value for c in reply.session_set()}
    value = set_.get(SESSION_COOKIE)
    if value is not None and value.startswith("~") and value[1:].isdigit():
        return "".join(set_.get(name, "") for name in CHUNK_NAMES[: int(value[1:])])
    return value


def opened_session(site: FuzzSite, reply: Reply) -> Session:
    value = session_value(reply)
    assert value is not None, "a session cookie was set but none could be read back"
    session = site.open_session(value)
    assert session is not None, "the session cookie set does not open"
    return session


async def minted_session(site: FuzzSite, sub: str = SUB, **claims: Any) -> str:
    cookies = await session_cookies(site.middleware, sub=sub, claims=claims or None)
    assert list(cookies) == [SESSION_COOKIE], cookies
    return cookies[SESSION_COOKIE]


async def still_signed_in(harness: Harness, site: FuzzSite, sealed: str, stats: PropertyStats) -> bool:
    """Whether the session cookie `sealed` still lets a page load reach the app."""
    reply = await harness.call(
        site,
        raw_path=b"/after",
        headers=[BROWSER_ACCEPT, (b"cookie", f"{SESSION_COOKIE}={sealed}".encode())],
        stats=stats,
    )
    check_reply(reply, session_allowed=True, what="the follow-up page load")
    return reply.authenticated


def cookie_headers(parts: Sequence[str], splits: Sequence[int]) -> list[tuple[bytes, bytes]]:
    """`parts` (already `name=value` text and separators) as one or several `cookie` headers."""
    text = "".join(parts)
    raw = to_bytes(text)
    cuts = sorted({min(max(0, cut), len(raw)) for cut in splits})
    pieces, start = [], 0
    for cut in [*cuts, len(raw)]:
        pieces.append(raw[start:cut])
        start = cut
    return [(b"cookie", piece) for piece in pieces if piece] or ([(b"cookie", raw)] if raw else [])


# -- 1. callback queries -------------------------------------------------------------------------

CALLBACK_NAMES = st.one_of(
    st.sampled_from(
        ["state", "code", "iss", "error", "error_description", "error_uri", "session_state", "STATE", "state ", "Code"]
    ),
    hostile_text(max_size=10),
)
CALLBACK_VALUES = st.one_of(
    st.builds(lambda name, how: (Sym(name), how), st.sampled_from(["state", "code", "iss"]), TWEAKS),
    hostile_text().map(lambda text: (text, "same")),
)


@st.composite
def callback_queries(draw: st.DrawFn) -> list[tuple[Any, Any, str, str]]:
    """`(name, value, tweak, encoding)`: a real answer with mutations, or anything at all."""
    if draw(st.integers(0, 9)) == 0:
        pairs = draw(st.lists(st.tuples(CALLBACK_NAMES, CALLBACK_VALUES), max_size=6))
    else:
        pairs = [("code", (Sym("code"), "same")), ("state", (Sym("state"), "same")), ("iss", (Sym("iss"), "same"))]
        for op in draw(st.lists(st.sampled_from(["drop", "dup", "set", "rename", "insert", "swap"]), max_size=4)):
            where = draw(st.integers(0, 8)) % (len(pairs) or 1)
            if op == "drop" and pairs:
                pairs.pop(where)
            elif op == "dup" and pairs:
                pairs.insert(draw(st.integers(0, 8)) % (len(pairs) + 1), pairs[where])
            elif op == "set" and pairs:
                pairs[where] = (pairs[where][0], draw(CALLBACK_VALUES))
            elif op == "rename" and pairs:
                pairs[where] = (draw(CALLBACK_NAMES), pairs[where][1])
            elif op == "swap" and len(pairs) > 1:
                other = draw(st.integers(0, 8)) % len(pairs)
                pairs[where], pairs[other] = pairs[other], pairs[where]
            else:
                pairs.insert(where, (draw(CALLBACK_NAMES), draw(CALLBACK_VALUES)))
    encodings = draw(st.lists(ENCODINGS, min_size=len(pairs), max_size=len(pairs)))
    return [(name, value, how, mode) for (name, (value, how)), mode in zip(pairs, encodings, strict=True)]


FLOW_PLACEMENTS = st.sampled_from(
    [
        "genuine",
        "genuine",
        "genuine",
        "absent",
        "empty_name",
        "bare_value",
        "other_flow",
        "smuggled",
        "smuggled_comma",
        "junk_first",
        "junk_after",
        "noncanonical",
        "session_name",
        "prefix_less",
        "spaces",
        "second_header",
    ]
)
JUNK_COOKIES = st.lists(st.tuples(hostile_text(max_size=12, huge=False), hostile_text(max_size=40)), max_size=2)


def flow_cookie_parts(flow: Flow, placement: str, how: str) -> tuple[list[str], list[int]]:
    name, value = flow.cookie_name, flow.cookie_value
    pairs = {
        "genuine": [f"{name}={value}"],
        "absent": [],
        "empty_name": [f"={value}"],
        "bare_value": [value],
        "other_flow": [f"{FLOW_COOKIE_PREFIX}0123456789abcdef={value}"],
        "smuggled": [f"foo=x {name}={value}"],
        "smuggled_comma": [f"foo=x,{name}={value}"],
        "junk_first": [f"{name}=junk", f"{name}={value}"],
        "junk_after": [f"{name}={value}", f"{name}=junk"],
        "noncanonical": [f"{name}={noncanonical(value, how)}"],
        "session_name": [f"{SESSION_COOKIE}={value}"],
        "prefix_less": [f"{name.removeprefix('__Host-')}={value}"],
        "spaces": [f" {name} =\t{value} "],
        "second_header": ["a=b", f"{name}={value}"],
    }[placement]
    return pairs, ([3] if placement == "second_header" else [])


@budget("callback")
# Regression seeds (run in every profile): an `error` answer whose non-ASCII `state` met a real flow
# cookie sent under the empty name made `secrets.compare_digest` raise (500).
@example(
    query=[("error", "", "same", "quote"), ("state", "\x80", "same", "quote")],
    placement="empty_name",
    how="padded",
    junk=[],
    junk_first=False,
    method="GET",
    accept="html",
)
@given(
    query=callback_queries(),
    placement=FLOW_PLACEMENTS,
    how=NONCANONICAL,
    junk=JUNK_COOKIES,
    junk_first=st.booleans(),
    method=st.sampled_from(["GET", "GET", "GET", "GET", "HEAD", "POST", "PUT"]),
    accept=accepts,
)
def test_callback_queries(
    harness: Harness,
    query: list[tuple[Any, Any, str, str]],
    placement: str,
    how: str,
    junk: list[tuple[str, str]],
    junk_first: bool,
    method: str,
    accept: str,
) -> None:
    """Hostile callback queries, with and without this browser's flow cookie: a session only for the
    one real answer (one state, one code, our iss, no error) with the genuine flow cookie."""
    site = harness.site("callback")
    with harness.example("callback") as stats:
        harness.run(_callback(harness, site, stats, query, placement, how, junk, junk_first, method, accept))


async def _callback(
    harness: Harness,
    site: FuzzSite,
    stats: PropertyStats,
    query: list[tuple[Any, Any, str, str]],
    placement: str,
    how: str,
    junk: list[tuple[str, str]],
    junk_first: bool,
    method: str,
    accept: str,
) -> None:
    flow = await begin_flow(harness, site, stats=stats)
    code = site.hostile.issue_code(nonce=flow.nonce, challenge=flow.challenge)
    symbols = {"state": flow.state, "code": code, "iss": ISSUER}
    pairs = [
        (
            symbols[name.name] if isinstance(name, Sym) else name,
            tweak(symbols[value.name], tweak_how) if isinstance(value, Sym) else value,
            mode,
        )
        for name, value, tweak_how, mode in query
    ]
    query_string = encode_pairs(pairs)
    parts, splits = flow_cookie_parts(flow, placement, how)
    junk_parts = [f"{name}={value}" for name, value in junk]
    parts = junk_parts + parts if junk_first else parts + junk_parts
    headers = [*ACCEPTS[accept], *cookie_headers(["; ".join(parts)], splits)]
    reply = await harness.call(
        site, method=method, raw_path=CALLBACK_PATH.encode(), query=query_string, headers=headers, stats=stats
    )

    params = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    values: dict[str, list[str]] = {}
    for name, value in params:
        values.setdefault(name, []).append(value)
    flow_genuine = reference_cookies(headers).get(flow.cookie_name) == flow.cookie_value
    legit = (
        method == "GET"
        and values.get("state") == [flow.state]
        and values.get("code") == [code]
        and values.get("iss") == [ISSUER]
        and "error" not in values
        and flow_genuine
    )
    check_reply(reply, session_allowed=legit, what=f"callback, legit={legit}")
    assert not reply.reached, "the app was reached from the callback path"
    if legit:
        assert reply.status == 303 and reply.session_set(), f"the real answer did not log in: {reply.status}"
        assert opened_session(site, reply).sub == site.hostile.sub


# -- 2. cookie headers ---------------------------------------------------------------------------

COOKIE_NAMES = st.one_of(
    st.sampled_from(
        [
            Sym("session"),
            Sym("session"),
            Sym("chunk0"),
            Sym("chunk1"),
            Sym("chunk2"),
            Sym("chunk3"),
            Sym("flow"),
            Sym("other_flow"),
            "",
            "foo",
            f"{SESSION_COOKIE}.4",
            f"{SESSION_COOKIE}.00",
            f"{SESSION_COOKIE}.-1",
            "__host-pkce_session",
            "__Secure-pkce_session",
            "pkce_session",
            f" {SESSION_COOKIE}",
            f"{SESSION_COOKIE}\t",
            f"x {SESSION_COOKIE}",
        ]
    ),
    hostile_text(max_size=12, huge=False),
)
COOKIE_VALUES = st.one_of(
    st.sampled_from(
        [
            Sym("S"),
            Sym("S"),
            Sym("S"),
            Sym("F"),
            Sym("marker"),
            Sym("piece0"),
            Sym("piece1"),
            Sym("piece2"),
            Sym("piece3"),
            Sym("smuggled_S"),
            "~1",
            "~5",
            "~0",
            "~9",
            "~99999999",
            "~",
            "~2x",
            "~-2",
            "~ 2",
            " ~2",
        ]
    ),
    st.builds(lambda how: Sym(f"noncanonical:{how}"), NONCANONICAL),
    hostile_text(max_size=40),
)
SEPARATORS = st.sampled_from(["; ", "; ", "; ", ";", " ; ", ";;", "; ;", ";\t", " ", ", ", ",", "\t"])


@dataclasses.dataclass(frozen=True)
class CookiePiece:
    name: Any
    value: Any
    with_equals: bool
    separator: str


RANDOM_PIECES = st.builds(
    CookiePiece, COOKIE_NAMES, COOKIE_VALUES, st.sampled_from([True, True, True, False]), SEPARATORS
)


SPOILS = st.sampled_from(["value", "value", "name", "separator", "equals"])


@st.composite
def cookie_jars(draw: st.DrawFn) -> list[CookiePiece]:
    """What a browser (or an attacker) sends: the session whole, in `~N` chunks, or not at all,
    around hostile extra cookies, with a few of the real pieces spoiled."""
    shape = draw(st.sampled_from(["whole", "whole", "chunked", "chunked", "none"]))
    if shape == "whole":
        pieces = [CookiePiece(Sym("session"), Sym("S"), True, "; ")]
    elif shape == "chunked":
        pieces = [CookiePiece(Sym("session"), Sym("marker"), True, "; ")]
        pieces += [CookiePiece(Sym(f"chunk{i}"), Sym(f"piece{i}"), True, "; ") for i in range(4)]
        pieces = draw(st.permutations(pieces))
    else:
        pieces = []
    if draw(st.booleans()):  # this browser's login flow (it matters on the callback)
        pieces.insert(draw(st.integers(0, len(pieces))), CookiePiece(Sym("flow"), Sym("F"), True, "; "))
    for _ in range(draw(st.integers(0, 2))):
        if pieces:
            where = draw(st.integers(0, len(pieces) - 1))
            spoil = draw(SPOILS)
            if spoil == "value":
                pieces[where] = dataclasses.replace(pieces[where], value=draw(COOKIE_VALUES))
            elif spoil == "name":
                pieces[where] = dataclasses.replace(pieces[where], name=draw(COOKIE_NAMES))
            elif spoil == "separator":
                pieces[where] = dataclasses.replace(pieces[where], separator=draw(SEPARATORS))
            else:
                pieces[where] = dataclasses.replace(pieces[where], with_equals=False)
    for extra in draw(st.lists(RANDOM_PIECES, max_size=4)):
        pieces.insert(draw(st.integers(0, len(pieces))), extra)
    return pieces


@budget("cookies")
@given(
    pieces=cookie_jars(),
    chunks=st.integers(2, 4),
    cuts=st.lists(st.floats(0.05, 0.95), min_size=3, max_size=3),
    splits=st.lists(st.integers(0, 6000), max_size=2),
    lead=st.sampled_from(["", "", "; ", " ", "=; "]),
    target=st.sampled_from(["home", "home", "home_api", "login", "logout_post", "logout_get", "callback"]),
)
def test_cookie_headers(
    harness: Harness,
    pieces: list[CookiePiece],
    chunks: int,
    cuts: list[float],
    splits: list[int],
    lead: str,
    target: str,
) -> None:
    """Hostile Cookie headers around a valid sealed session (and flow): smuggled names, chunks and
    `~N` markers, duplicates, non-canonical spellings. The app is reached, and a session cookie
    set, only when the browser really sent the session as a cookie of its own."""
    site = harness.site("cookies")
    with harness.example("cookies") as stats:
        harness.run(_cookies(harness, site, stats, pieces, chunks, cuts, splits, lead, target))


async def _cookies(
    harness: Harness,
    site: FuzzSite,
    stats: PropertyStats,
    pieces: list[CookiePiece],
    chunks: int,
    cuts: list[float],
    splits: list[int],
    lead: str,
    target: str,
) -> None:
    sealed = await minted_session(site)
    flow = await begin_flow(harness, site, stats=stats) if target == "callback" else None
    bounds = sorted({max(1, min(len(sealed) - 1, int(len(sealed) * cut))) for cut in cuts[: chunks - 1]})
    split_points = [0, *bounds, len(sealed)]
    chunk_values = [sealed[a:b] for a, b in itertools.pairwise(split_points)]
    symbols: dict[str, str] = {
        "session": SESSION_COOKIE,
        "flow": flow.cookie_name if flow else f"{FLOW_COOKIE_PREFIX}00000000deadbeef",
        "other_flow": f"{FLOW_COOKIE_PREFIX}0123456789abcdef",
        "S": sealed,
        "F": flow.cookie_value if flow else "no-flow",
        "marker": f"~{chunks}",
        "smuggled_S": f"x {SESSION_COOKIE}={sealed}",
    }
    for index in range(4):
        symbols[f"chunk{index}"] = CHUNK_NAMES[index]
        symbols[f"piece{index}"] = chunk_values[index] if index < len(chunk_values) else ""

    def text(item: Any) -> str:
        if not isinstance(item, Sym):
            return str(item)
        if item.name.startswith("noncanonical:"):
            return noncanonical(sealed, item.name.partition(":")[2])
        return symbols[item.name]

    parts = [lead]
    for index, piece in enumerate(pieces):
        if index:
            parts.append(piece.separator)
        parts.append(f"{text(piece.name)}={text(piece.value)}" if piece.with_equals else text(piece.value))
    cookies = cookie_headers(parts, splits)

    method, raw_path, query, headers = "GET", b"/page", b"", [BROWSER_ACCEPT, *cookies]
    code = None
    if target == "home_api":
        headers = [(b"accept", b"application/json"), *cookies]
    elif target == "login":
        raw_path, query = b"/auth/login", b"next=%2Freports"
    elif target == "logout_post":
        method, raw_path, headers = "POST", b"/auth/logout", [*headers, (b"origin", APP_ORIGIN.encode())]
    elif target == "logout_get":
        raw_path = b"/auth/logout"
    elif target == "callback":
        assert flow is not None
        code = site.hostile.issue_code(nonce=flow.nonce, challenge=flow.challenge)
        raw_path = CALLBACK_PATH.encode()
        query = encode_pairs([("code", code, "quote"), ("state", flow.state, "quote"), ("iss", ISSUER, "quote")])

    reply = await harness.call(site, method=method, raw_path=raw_path, query=query, headers=headers, stats=stats)
    jar = reference_cookies(cookies)
    valid = reference_session(jar, sealed)
    flow_genuine = flow is not None and jar.get(flow.cookie_name) == flow.cookie_value
    check_reply(reply, session_allowed=valid or flow_genuine, what=f"target={target}, valid session={valid}")
    if reply.authenticated:
        assert valid, "the app was reached though the browser sent no valid session cookie of its own"
        assert reply.identity() == SUB
    if valid and target in ("home", "home_api"):
        assert reply.authenticated, f"a valid session the browser sent was not honoured: {reply.status}"
    if reply.session_set() and not flow_genuine:
        assert opened_session(site, reply).sub == SUB


# -- 3. logout requests ---------------------------------------------------------------------------

ORIGINS = st.one_of(
    st.sampled_from(
        [
            APP_ORIGIN,
            APP_ORIGIN,
            "https://evil.example",
            "null",
            "",
            "https://app.test:443",
            "HTTPS://APP.TEST",
            "https://app.test/",
            "http://app.test",
            "https://app.test.evil.example",
            " https://app.test",
            "https://app.test\x00",
        ]
    ),
    hostile_text(max_size=20, huge=False),
)
FETCH_SITES = st.one_of(
    st.sampled_from(["same-origin", "same-origin", "same-site", "cross-site", "none", "Same-Origin", " same-origin"]),
    hostile_text(max_size=12, huge=False),
)
CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-8",
            "Application/X-WWW-Form-URLEncoded",
            " application/x-www-form-urlencoded ;",
            "application/json",
            "multipart/form-data; boundary=xyz",
            "text/plain",
            "",
        ]
    ),
    hostile_text(max_size=30, huge=False),
)
BODIES = st.one_of(
    st.lists(st.binary(max_size=80), max_size=3),
    st.builds(lambda size: [b"logout_token=" + b"A" * size], st.sampled_from([65_536, 65_537, 70_000, 300_000])),
)


@budget("logout")
@given(
    method=st.sampled_from(["POST", "POST", "POST", "POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "post"]),
    with_session=st.booleans(),
    origins=st.lists(ORIGINS, max_size=2),
    fetch_sites=st.lists(FETCH_SITES, max_size=2),
    content_type=CONTENT_TYPES,
    body=BODIES,
    accept=accepts,
)
def test_logout_requests(
    harness: Harness,
    method: str,
    with_session: bool,
    origins: list[str],
    fetch_sites: list[str],
    content_type: str | None,
    body: list[bytes],
    accept: str,
) -> None:
    """Hostile logout requests: only a same-origin POST (by `Origin`, else `Sec-Fetch-Site`) ends
    the session, and then for good (a copy of the cookie no longer opens); nothing else ends it,
    and no session cookie is ever set."""
    site = harness.site("logout")
    with harness.example("logout") as stats:
        harness.run(
            _logout(harness, site, stats, method, with_session, origins, fetch_sites, content_type, body, accept)
        )


async def _logout(
    harness: Harness,
    site: FuzzSite,
    stats: PropertyStats,
    method: str,
    with_session: bool,
    origins: list[str],
    fetch_sites: list[str],
    content_type: str | None,
    body: list[bytes],
    accept: str,
) -> None:
    sealed = await minted_session(site) if with_session else None
    headers = [*ACCEPTS[accept]]
    headers += [(b"origin", to_bytes(origin)) for origin in origins]
    headers += [(b"sec-fetch-site", to_bytes(value)) for value in fetch_sites]
    if content_type is not None:
        headers.append((b"content-type", to_bytes(content_type)))
    if sealed is not None:
        headers.append((b"cookie", f"{SESSION_COOKIE}={sealed}".encode()))
    reply = await harness.call(site, method=method, raw_path=b"/auth/logout", headers=headers, body=body, stats=stats)
    check_reply(reply, session_allowed=False, what="logout")
    assert not reply.reached
    origin = to_bytes(origins[0]).decode("latin-1") if origins else None
    fetch_site = to_bytes(fetch_sites[0]).decode("latin-1") if fetch_sites else None
    # `trusted`: the request may end the session; `certain`: a browser's logout that must end it.
    if origin is not None and origin.strip() != "null":
        trusted, certain = denotes_app_origin(origin), origin == APP_ORIGIN
    else:
        trusted = fetch_site == "same-origin"
        certain = trusted and origin is None
    if method == "POST" and certain:
        assert reply.status == 303, reply.status
        location = reply.header("location") or ""
        assert location == "/" or location.startswith(END_SESSION_ENDPOINT + "?"), location
    if sealed is None:
        return
    alive = await still_signed_in(harness, site, sealed, stats)
    if method == "POST" and certain:
        assert reply.session_deleted(), "a logout did not delete the session cookie"
        assert not alive, "after the logout, a copy of the session cookie still opens"
    if not alive:
        assert method == "POST" and trusted, (
            f"a {method} logout with origin={origins!r} sec-fetch-site={fetch_sites!r} ended the session"
        )


def denotes_app_origin(value: str) -> bool:
    """Whether an `Origin` value names this app's origin (RFC 6454: scheme and host compared
    case-insensitively, the default port optional)."""
    match = re.fullmatch(r"(https)://([^/?#@\\\s:]+)(?::(\d{1,5}))?", value.strip(), flags=re.IGNORECASE)
    return match is not None and match[2].lower() == APP_HOST and int(match[3] or 443) == 443


# -- 4. back-channel logout -----------------------------------------------------------------------

BCL_SUB, BCL_SID = "bcl-user", "bcl-sid"
LOGOUT_CLAIM_KEYS = st.sampled_from(["iss", "sub", "aud", "iat", "exp", "jti", "events", "sid", "nonce", "nbf", "typ"])
LOGOUT_SPECIAL = st.one_of(
    rel_times(),
    st.sampled_from(
        [
            Sym("issuer"),
            Sym("client_id"),
            Sym("jti"),
            Sym("event"),
            ISSUER + "/",
            "https://evil.example",
            [CLIENT_ID],
            [CLIENT_ID, "other"],
            [],
            {BACKCHANNEL_LOGOUT_EVENT: {}},
            {BACKCHANNEL_LOGOUT_EVENT: None},
            {BACKCHANNEL_LOGOUT_EVENT: []},
            {"http://schemas.openid.net/event/backchannel-logout ": {}},
            [BACKCHANNEL_LOGOUT_EVENT],
            BCL_SUB,
            BCL_SID,
            "",
        ]
    ),
)
HEADER_KEYS = st.sampled_from(["alg", "typ", "kid", "crit", "jwk", "jku", "b64", "zip", "cty"])
HEADER_SPECIAL = st.sampled_from(
    [
        "none",
        "None",
        "HS256",
        "RS256",
        "RS512",
        "ES256",
        "PS256",
        "logout+jwt",
        "application/logout+jwt",
        "JWT",
        "op-key-1",
        "op-key-2",
        ["exp"],
        ["b64"],
        False,
        "DEF",
        Sym("kid"),
    ]
)


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """A logout or ID token: claims (mutated) or a raw payload, a header (mutated), a signature."""

    kind: str
    claims: dict[str, Any]
    header: dict[str, Any]
    signature: str
    payload: bytes = b""
    text: str = ""


def token_specs(claim_keys: st.SearchStrategy[str], special: st.SearchStrategy[Any]) -> st.SearchStrategy[TokenSpec]:
    return st.one_of(
        st.builds(
            TokenSpec,
            st.just("claims"),
            mutations(claim_keys, special),
            mutations(HEADER_KEYS, HEADER_SPECIAL, max_size=2),
            SIGNATURES,
        ),
        st.builds(
            TokenSpec,
            st.just("claims"),
            st.just({}),
            st.just({}),
            st.just("op"),
        ),
        st.builds(
            TokenSpec,
            st.just("raw_payload"),
            st.just({}),
            mutations(HEADER_KEYS, HEADER_SPECIAL, max_size=1),
            SIGNATURES,
            payload=st.one_of(
                json_values().map(dump_json),
                st.binary(max_size=40),
                st.sampled_from([b"[" * 5000, b'{"iss": 1' * 10, b"\xff\xfe", b"", b"null", b"[]", b'"x"', b"1e999"]),
            ),
        ),
        st.builds(
            TokenSpec,
            st.just("text"),
            st.just({}),
            st.just({}),
            st.just("none"),
            text=st.one_of(
                hostile_text(),
                st.sampled_from(["", ".", "..", "...", "a.b.c", "e30.e30.", "e30.e30.e30", "W10.W10.", "WzFd.e30.AA"]),
                st.builds(
                    lambda h, p: f"{b64url(dump_json(h))}.{b64url(dump_json(p))}.",
                    json_values(),
                    json_values(),
                ),
            ),
        ),
    )


@dataclasses.dataclass(frozen=True)
class LogoutBody:
    kind: str
    fields: list[tuple[Any, Any, str]]
    raw: bytes = b""


LOGOUT_BODIES = st.one_of(
    st.builds(
        LogoutBody,
        st.just("form"),
        st.lists(
            st.tuples(
                st.one_of(st.just("logout_token"), st.sampled_from(["logout_token ", "LOGOUT_TOKEN", "token", ""])),
                st.one_of(st.just(Sym("token")), st.just(Sym("token")), hostile_text()),
                ENCODINGS,
            ),
            min_size=0,
            max_size=3,
        ),
    ),
    st.integers(0, 2).map(lambda _: LogoutBody("form", [("logout_token", Sym("token"), "quote")])),
    st.builds(LogoutBody, st.just("raw"), st.just([]), st.binary(max_size=200)),
    st.builds(
        LogoutBody,
        st.just("raw"),
        st.just([]),
        st.builds(lambda n: b"logout_token=" + b"A" * n, st.sampled_from([65_000, 65_536, 65_537, 200_000])),
    ),
)


@budget("backchannel")
@given(
    token=token_specs(LOGOUT_CLAIM_KEYS, LOGOUT_SPECIAL),
    body=LOGOUT_BODIES,
    # Mostly the real form (so tokens are judged), else any media type.
    content_type=st.integers(0, 3).flatmap(
        lambda pick: CONTENT_TYPES if pick == 0 else st.just("application/x-www-form-urlencoded")
    ),
    method=st.sampled_from(["POST", "POST", "POST", "POST", "POST", "GET", "PUT"]),
    chunks=st.integers(1, 4),
    disconnect=st.sampled_from([False] * 9 + [True]),
)
def test_backchannel_logout(
    harness: Harness,
    token: TokenSpec,
    body: LogoutBody,
    content_type: str | None,
    method: str,
    chunks: int,
    disconnect: bool,
) -> None:
    """Hostile back-channel logout requests and logout tokens: 200 only for a token that passes every
    rule of Back-Channel Logout 1.0 section 2.6 (and not seen before), and then its session is over;
    otherwise 400/405/413, or 502-504 for the provider's trouble."""
    site = harness.site("backchannel")
    with harness.example("backchannel") as stats:
        harness.run(_backchannel(harness, site, stats, token, body, content_type, method, chunks, disconnect))


ACCEPTED_JTIS: set[str] = set()


def build_token(
    site: FuzzSite, spec: TokenSpec, base: dict[str, Any], symbols: dict[str, Any], now: int, *, typ: str = "JWT"
) -> tuple[str, Any, Any]:
    """The compact token of `spec`, with the header and payload as built (for the reference checks)."""
    header = apply({"alg": "RS256", "typ": typ, "kid": op_key(site).kid}, spec.header, symbols, now)
    if spec.kind == "text":
        return spec.text, None, None
    if spec.kind == "raw_payload":
        return sign(header, spec.payload, spec.signature, op_key(site)), header, None
    claims = apply(base, spec.claims, symbols, now)
    return sign(header, dump_json(claims), spec.signature, op_key(site)), header, claims


def header_ok(header: Any, site: FuzzSite, signature: str) -> bool:
    """A header a careful relying party accepts, on a token validly signed with the provider's key."""
    return (
        signature == "op"
        and isinstance(header, dict)
        and header.get("alg") == "RS256"
        and header.get("kid", op_key(site).kid) == op_key(site).kid
        and "crit" not in header
    )


def is_logout_type(typ: Any) -> bool:
    return isinstance(typ, str) and typ.lower().removeprefix("application/") == "logout+jwt"


def logout_token_problem(claims: Any, header: Any, now: int) -> str | None:
    """Why a logout token (as built) must be refused, by Back-Channel Logout 1.0 section 2.6."""
    if not isinstance(claims, dict):
        return "claims are not an object"
    if "typ" in header and header["typ"] is not None and not is_logout_type(header["typ"]):
        return "typ"
    if claims.get("iss") != ISSUER:
        return "iss"
    if not audience_ok(claims.get("aud")):
        return "aud"
    iat = claims.get("iat")
    if not is_number(iat) or not now - 600 - LEEWAY - SLACK <= iat <= now + LEEWAY + SLACK:
        return "iat"
    if "exp" in claims and not (is_number(claims["exp"]) and claims["exp"] > now - LEEWAY - SLACK):
        return "exp"
    if "nbf" in claims and not (is_number(claims["nbf"]) and claims["nbf"] <= now + LEEWAY + SLACK):
        return "nbf"
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or jti in ACCEPTED_JTIS:
        return "jti"
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        return "events"
    if "nonce" in claims:
        return "nonce"
    for name in ("sid", "sub"):
        if name in claims and (not isinstance(claims[name], str) or not claims[name]):
            return name
    if "sid" not in claims and "sub" not in claims:
        return "sid/sub"
    return None


async def _backchannel(
    harness: Harness,
    site: FuzzSite,
    stats: PropertyStats,
    spec: TokenSpec,
    body: LogoutBody,
    content_type: str | None,
    method: str,
    chunks: int,
    disconnect: bool,
) -> None:
    sealed = await minted_session(site, sub=BCL_SUB, sid=BCL_SID)
    now = int(time.time())
    jti = secrets.token_urlsafe(16)
    symbols = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "jti": jti,
        "event": BACKCHANNEL_LOGOUT_EVENT,
        "kid": op_key(site).kid,
    }
    base = {
        "iss": ISSUER,
        "sub": BCL_SUB,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": jti,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        "sid": BCL_SID,
    }
    token, header, claims = build_token(site, spec, base, symbols, now, typ="logout+jwt")
    if body.kind == "form":
        raw = encode_pairs(
            [(name, token if isinstance(value, Sym) else value, mode) for name, value, mode in body.fields]
        )
    else:
        raw = body.raw
    size = -(-len(raw) // chunks) or 1
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)] or [b""]
    headers = [(b"content-type", to_bytes(content_type))] if content_type is not None else []
    reply = await harness.call(
        site,
        method=method,
        raw_path=b"/auth/backchannel-logout",
        headers=headers,
        body=pieces,
        disconnect=disconnect,
        stats=stats,
    )
    check_reply(reply, session_allowed=False, what="back-channel logout")
    assert not reply.reached
    assert not reply.set_cookies, reply.set_cookies
    assert reply.status in (200, 400, 405, 413, 502, 503, 504), reply.status
    assert reply.header("cache-control") == "no-store", reply.header("cache-control")
    if reply.status != 200:
        return
    # Section 2.8: 200 only for a token that passes every rule.
    tokens = [v for n, v in parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if n == "logout_token"]
    assert method == "POST" and not disconnect, "200 for a request that is no complete POST"
    assert (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded", content_type
    assert tokens == [token], "200 without exactly one logout_token (the one built)"
    assert spec.kind == "claims", f"200 for a {spec.kind} token"
    assert header_ok(header, site, spec.signature), (
        f"200 for a token with header {header!r}, signature {spec.signature}"
    )
    problem = logout_token_problem(claims, header, now)
    assert problem is None, f"200 for a logout token with a bad {problem}: {claims!r}"
    assert isinstance(claims, dict)
    ACCEPTED_JTIS.add(claims["jti"])
    ends = claims["sid"] == BCL_SID if "sid" in claims else claims["sub"] == BCL_SUB
    if ends:
        assert not await still_signed_in(harness, site, sealed, stats), (
            "the logout was acknowledged, the session lives on"
        )


# -- 5. token endpoint answers ---------------------------------------------------------------------

ID_CLAIM_KEYS = st.sampled_from(
    ["iss", "sub", "aud", "exp", "iat", "nonce", "at_hash", "azp", "auth_time", "nbf", "sid", "name", "email"]
)
ID_SPECIAL = st.one_of(
    rel_times(),
    st.sampled_from(
        [
            Sym("issuer"),
            Sym("client_id"),
            Sym("nonce"),
            Sym("other_nonce"),
            Sym("at_hash"),
            Sym("at_hash_unicode"),
            Sym("nonce_unicode"),
            "é" * 43,
            "\ud800" * 43,
            ISSUER + "/",
            "https://evil.example",
            [CLIENT_ID],
            [CLIENT_ID, "other"],
            [],
            "",
            SUB,
        ]
    ),
)
ANSWER_KEYS = st.sampled_from(
    ["access_token", "token_type", "expires_in", "id_token", "refresh_token", "scope", "error"]
)
ANSWER_SPECIAL = st.sampled_from(
    [
        "bearer",
        "BEARER",
        "Bearer ",
        "mac",
        "DPoP",
        "",
        -1,
        0,
        1e308,
        "300",
        10**20,
        True,
        Sym("access_token"),
        Sym("id_token"),
        "openid profile",
        "openid \x00 admin",
        RawJSON("1" * 5000),
    ]
)
ERROR_BODIES = st.one_of(
    st.builds(lambda e, d: dump_json({"error": e, "error_description": d}), json_values(), json_values()),
    st.binary(max_size=60),
    st.just(b""),
)


@dataclasses.dataclass(frozen=True)
class TokenAnswer:
    kind: str
    status: int = 200
    answer: dict[str, Any] = dataclasses.field(default_factory=dict)
    id_token: TokenSpec | None = None
    raw: bytes = b""
    content_type: bytes = b"application/json"


def token_answers() -> st.SearchStrategy[TokenAnswer]:
    return st.one_of(
        st.builds(
            TokenAnswer,
            st.just("json"),
            st.just(200),
            st.one_of(st.just({}), mutations(ANSWER_KEYS, ANSWER_SPECIAL, max_size=3)),
            token_specs(ID_CLAIM_KEYS, ID_SPECIAL),
        ),
        st.builds(
            TokenAnswer,
            st.just("status"),
            st.sampled_from([400, 401, 403, 404, 429, 500, 502, 503, 504, 302, 204, 201, 299, 599]),
            raw=ERROR_BODIES,
        ),
        st.builds(
            TokenAnswer,
            st.just("raw"),
            st.just(200),
            raw=st.one_of(
                st.binary(max_size=80),
                json_values().map(dump_json),
                st.sampled_from([b"[" * 100_000, b" " * 600_000, b"\xef\xbb\xbf{}", b"{}" * 3, b"\x00"]),
            ),
            content_type=st.sampled_from([b"application/json", b"text/html", b""]),
        ),
    )


def id_token_problem(claims: Any, header: Any, nonce: str | None, access_token: Any, now: int) -> str | None:
    """Why an ID token (as built) must be refused, by OpenID Connect Core 1.0 section 3.1.3.7."""
    if not isinstance(claims, dict):
        return "claims are not an object"
    if is_logout_type(header.get("typ")):
        return "typ"
    if claims.get("iss") != ISSUER:
        return "iss"
    if not audience_ok(claims.get("aud")):
        return "aud"
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        return "sub"
    if not is_number(claims.get("exp")) or claims["exp"] <= now - LEEWAY - SLACK:
        return "exp"
    iat = claims.get("iat")
    if not is_number(iat) or not now - 600 - LEEWAY - SLACK <= iat <= now + LEEWAY + SLACK:
        return "iat"
    if "nbf" in claims and not (is_number(claims["nbf"]) and claims["nbf"] <= now + LEEWAY + SLACK):
        return "nbf"
    if nonce is not None and claims.get("nonce") != nonce:
        return "nonce"
    if "azp" in claims and claims["azp"] != CLIENT_ID:
        return "azp"
    at_hash = claims.get("at_hash")
    if at_hash is not None and (
        not isinstance(access_token, str) or at_hash != create_half_hash(access_token, "RS256").decode()
    ):
        return "at_hash"
    return None


def answer_problem(data: Any, *, id_token_required: bool) -> str | None:
    """Why a token endpoint answer (RFC 6749 section 5.1) must be refused."""
    if not isinstance(data, dict):
        return "not an object"
    if not isinstance(data.get("access_token"), str) or not data["access_token"]:
        return "access_token"
    if not isinstance(data.get("token_type"), str) or data["token_type"].lower() != "bearer":
        return "token_type"
    for name in ("id_token", "refresh_token"):
        if name in data and data[name] is None and not (name == "id_token" and id_token_required):
            continue
        if (name in data or (name == "id_token" and id_token_required)) and (
            not isinstance(data.get(name), str) or not data[name]
        ):
            return name
    return None


def build_answer(
    site: FuzzSite, spec: TokenAnswer, id_claims: dict[str, Any], symbols: dict[str, Any], now: int
) -> tuple[Scripted, Any, Any, Any, str]:
    """The scripted answer, and what the reference checks need: the answer as parsed, the ID
    token's header and claims as built, and the ID token."""
    if spec.kind != "json":
        return Scripted(spec.status, spec.raw, spec.content_type), None, None, None, ""
    assert spec.id_token is not None
    id_token, header, claims = build_token(site, spec.id_token, id_claims, symbols, now)
    symbols = {**symbols, "id_token": id_token}
    answer = {
        "access_token": symbols["access_token"],
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
        "refresh_token": secrets.token_urlsafe(24),
    }
    answer = apply(answer, spec.answer, symbols, now)
    body = dump_json(answer)
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    return Scripted(200, body, spec.content_type), parsed, header, claims, id_token


@budget("token_answers")
# Regression seeds: a non-ASCII `nonce` or `at_hash` made `secrets.compare_digest` raise (500).
@example(answer=TokenAnswer("json", 200, {}, TokenSpec("claims", {"nonce": Sym("nonce_unicode")}, {}, "op")))
@example(answer=TokenAnswer("json", 200, {}, TokenSpec("claims", {"at_hash": Sym("at_hash_unicode")}, {}, "op")))
@given(answer=token_answers())
def test_token_endpoint_answers(harness: Harness, answer: TokenAnswer) -> None:
    """Hostile token endpoint answers and ID tokens (wrong types, lone surrogates, huge values,
    broken signatures): a session only for an answer and ID token that pass every check."""
    site = harness.site("token_answers")
    with harness.example("token_answers") as stats:
        harness.run(_token_answers(harness, site, stats, answer))


async def _token_answers(harness: Harness, site: FuzzSite, stats: PropertyStats, spec: TokenAnswer) -> None:
    flow = await begin_flow(harness, site, stats=stats)
    now = int(time.time())
    access_token = secrets.token_urlsafe(32)
    symbols = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "nonce": flow.nonce,
        "other_nonce": secrets.token_urlsafe(32),
        "nonce_unicode": flow.nonce[:-1] + "é",
        "at_hash": create_half_hash(access_token, "RS256").decode(),
        "at_hash_unicode": create_half_hash(access_token, "RS256").decode()[:-1] + "é",
        "access_token": access_token,
        "kid": op_key(site).kid,
        "jti": secrets.token_urlsafe(8),
        "event": BACKCHANNEL_LOGOUT_EVENT,
    }
    id_claims = {
        "iss": ISSUER,
        "sub": SUB,
        "aud": CLIENT_ID,
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 5,
        "nonce": flow.nonce,
        "at_hash": symbols["at_hash"],
        "name": "Fuzz User",
    }
    scripted, parsed, header, claims, id_token = build_answer(site, spec, id_claims, symbols, now)
    site.provider.token_answer = scripted
    query = encode_pairs([("code", "any-code", "quote"), ("state", flow.state, "quote"), ("iss", ISSUER, "quote")])
    headers = [BROWSER_ACCEPT, (b"cookie", f"{flow.cookie_name}={flow.cookie_value}".encode())]
    reply = await harness.call(site, raw_path=CALLBACK_PATH.encode(), query=query, headers=headers, stats=stats)
    check_reply(reply, session_allowed=True, what="callback with a scripted token answer")
    assert not reply.reached
    pristine = spec.kind == "json" and spec.answer == {} and spec.id_token == TokenSpec("claims", {}, {}, "op")
    if pristine:
        assert reply.status == 303 and reply.session_set(), f"a correct answer did not log in: {reply.status}"
    if not reply.session_set():
        return
    assert spec.kind == "json", f"a session from a {spec.kind} answer"
    assert spec.id_token is not None
    problem = answer_problem(parsed, id_token_required=True)
    assert problem is None, f"a session from a token answer with a bad {problem}: {parsed!r}"
    assert parsed["id_token"] == id_token, "a session from an ID token the provider did not sign as built"
    assert spec.id_token.kind == "claims", f"a session from a {spec.id_token.kind} ID token"
    assert header_ok(header, site, spec.id_token.signature), f"a session from an ID token with header {header!r}"
    problem = id_token_problem(claims, header, flow.nonce, parsed["access_token"], now)
    assert problem is None, f"a session from an ID token with a bad {problem}: {claims!r}"
    session = opened_session(site, reply)
    assert session.sub == claims["sub"] and session.access_token == parsed["access_token"]


# -- 6. refresh answers --------------------------------------------------------------------------


@budget("refresh")
@example(
    answer=TokenAnswer("json", 200, {}, TokenSpec("claims", {"at_hash": Sym("at_hash_unicode")}, {}, "op")),
    expired=True,
    with_id_token=True,
)
@given(
    answer=token_answers(),
    expired=st.booleans(),
    with_id_token=st.booleans(),
)
def test_refresh_answers(harness: Harness, answer: TokenAnswer, expired: bool, with_id_token: bool) -> None:
    """Hostile answers to a silent refresh: the user never changes, a new access token is taken only
    from an answer that passes every check, and an expired one is never served after a failed refresh."""
    site = harness.site("refresh")
    with harness.example("refresh") as stats:
        harness.run(_refresh(harness, site, stats, answer, expired, with_id_token))


async def _refresh(
    harness: Harness, site: FuzzSite, stats: PropertyStats, spec: TokenAnswer, expired: bool, with_id_token: bool
) -> None:
    now = int(time.time())
    old_access, old_refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    previous = {"sub": SUB, "iss": ISSUER, "aud": CLIENT_ID, "iat": now - 100, "auth_time": now - 200, "name": "F"}
    sealed = seal_session(
        site.middleware,
        id=secrets.token_urlsafe(12),
        claims=previous,
        access_token=old_access,
        refresh_token=old_refresh,
        access_expires_at=now - 30 if expired else now + 30,
        created_at=now - 100,
        last_seen=now,
    )
    access_token = secrets.token_urlsafe(32)
    symbols = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "nonce": secrets.token_urlsafe(32),
        "other_nonce": secrets.token_urlsafe(32),
        "nonce_unicode": "é",
        "at_hash": create_half_hash(access_token, "RS256").decode(),
        "at_hash_unicode": create_half_hash(access_token, "RS256").decode()[:-1] + "é",
        "access_token": access_token,
        "kid": op_key(site).kid,
        "jti": secrets.token_urlsafe(8),
        "event": BACKCHANNEL_LOGOUT_EVENT,
    }
    id_claims = {
        "iss": ISSUER,
        "sub": SUB,
        "aud": CLIENT_ID,
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 200,
        "at_hash": symbols["at_hash"],
    }
    if spec.kind == "json" and not with_id_token:
        spec = dataclasses.replace(spec, answer={**spec.answer, "id_token": spec.answer.get("id_token", REMOVE)})
    scripted, parsed, header, claims, id_token = build_answer(site, spec, id_claims, symbols, now)
    site.provider.token_answer = scripted
    headers = [BROWSER_ACCEPT, (b"cookie", f"{SESSION_COOKIE}={sealed}".encode())]
    reply = await harness.call(site, raw_path=b"/page", headers=headers, stats=stats)
    check_reply(reply, session_allowed=True, what="a page load that refreshes")
    if reply.authenticated:
        assert reply.identity() == SUB, f"a refresh changed the user to {reply.identity()!r}"

    problem = answer_problem(parsed, id_token_required=False) if spec.kind == "json" else spec.kind
    if problem is None and isinstance(parsed, dict) and parsed.get("id_token") is not None:
        assert spec.id_token is not None
        if parsed["id_token"] != id_token or spec.id_token.kind != "claims":
            problem = "id_token"
        elif not header_ok(header, site, spec.id_token.signature):
            problem = "id_token header"
        else:
            problem = id_token_problem(claims, header, None, parsed["access_token"], now)
            if problem is None and isinstance(claims, dict):
                if claims.get("sub") != SUB:
                    problem = "sub changed"
                elif claims.get("iat", 0) < previous["iat"]:
                    problem = "iat older"
                elif "auth_time" in claims and claims["auth_time"] != previous["auth_time"]:
                    problem = "auth_time changed"
    if expired and problem is not None:
        assert not reply.authenticated, f"an expired access token was served after a refresh refused for {problem}"
    if reply.session_set():
        session = opened_session(site, reply)
        assert session.sub == SUB, f"the re-issued session is for {session.sub!r}"
        if session.access_token != old_access:
            assert problem is None, f"a new access token taken from an answer with a bad {problem}: {parsed!r}"
            assert session.access_token == parsed["access_token"]
        if session.refresh_token != old_refresh:
            assert problem is None and session.refresh_token == parsed.get("refresh_token")


# -- 7. request targets and `next` ---------------------------------------------------------------

PATH_ATOMS = st.one_of(
    st.sampled_from(
        [
            *("", ".", "..", "%2e", "%2e%2e", ".%2e", "%2f", "%2F%2F", "%5c", "\\", "static", "Static", "auth"),
            *("callback", "login", "logout", "backchannel-logout", "evil.example", "%00", ";", "?", "#", "%3F"),
            *("%23", "@", ":"),
        ]
    ),
    hostile_text(max_size=10, huge=False),
)
RAW_PATHS = st.one_of(
    st.sampled_from(
        [
            b"/",
            b"//evil.example",
            b"/static",
            b"/static/",
            b"/static/x.css",
            b"/static/..",
            b"/static/../admin",
            b"/static/%2e%2e/admin",
            b"/static%2f..%2fadmin",
            b"/static/./x",
            b"/static//x",
            b"/staticky",
            b"/auth/callback",
            b"/auth/login",
            b"/auth/logout",
            b"/auth/backchannel-logout",
            b"/auth/callback/",
            b"/AUTH/LOGIN",
            b"/auth//login",
            b"*",
            b"",
            b"http://app.test/",
            b"https://evil.example/x",
        ]
        + [to_bytes(p) for p in OPEN_REDIRECTS if p.startswith(("/", "\\"))]
    ),
    st.builds(
        lambda prefix, atoms, raw: (
            prefix + b"/".join(to_bytes(a) if raw else to_bytes(a).replace(b"%", b"%25") for a in atoms)
        ),
        st.sampled_from([b"/", b"//", b"/static/", b""]),
        st.lists(PATH_ATOMS, max_size=6),
        st.booleans(),
    ),
    st.binary(max_size=40).map(lambda raw: b"/" + raw),
    st.integers(1000, 70000).map(lambda n: b"/" + b"a" * n),
)
NEXT_VALUES = st.one_of(
    st.sampled_from(OPEN_REDIRECTS),
    st.integers(1000, 20000).map(lambda n: "/" + "a" * n),
    hostile_text(),
    hostile_text(max_size=20, huge=False).map(lambda text: "/" + text),
)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on a path as the app sees it."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if len(out) > 0:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def reference_public(path: str) -> bool:
    normal = remove_dot_segments(path) if path.startswith("/") else path
    return normal == "/static" or normal.startswith("/static/")


@budget("targets")
# Regression seeds: a `next` (or a page) long enough for the flow cookie to pass 4096 bytes.
@example(
    kind="login",
    raw_path=b"/",
    query=[],
    nexts=[("/" + "a" * 2729, "quote")],
    with_session=False,
    accept="html",
    method="GET",
    complete=True,
)
@example(
    kind="page",
    raw_path=b"/" + b"a" * 12000,
    query=[],
    nexts=[],
    with_session=False,
    accept="html",
    method="GET",
    complete=True,
)
@given(
    kind=st.sampled_from(["page", "page", "login"]),
    raw_path=RAW_PATHS,
    query=st.lists(st.tuples(hostile_text(max_size=8), hostile_text(max_size=20), ENCODINGS), max_size=2),
    nexts=st.lists(st.tuples(NEXT_VALUES, ENCODINGS), max_size=3),
    with_session=st.booleans(),
    accept=accepts,
    method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST"]),
    complete=st.booleans(),
)
def test_request_targets(
    harness: Harness,
    kind: str,
    raw_path: bytes,
    query: list[tuple[str, str, str]],
    nexts: list[tuple[str, str]],
    with_session: bool,
    accept: str,
    method: str,
    complete: bool,
) -> None:
    """Hostile request targets (raw paths, queries) and `next` values at the login path: every
    redirect stays on the origin, also the one at the end of the login they start; the app is
    reached without a session only on a public path (`/static`), and then anonymously."""
    site = harness.site("targets", public_paths=("/static",))
    with harness.example("targets") as stats:
        harness.run(
            _targets(harness, site, stats, kind, raw_path, query, nexts, with_session, accept, method, complete)
        )


async def _targets(
    harness: Harness,
    site: FuzzSite,
    stats: PropertyStats,
    kind: str,
    raw_path: bytes,
    query: list[tuple[str, str, str]],
    nexts: list[tuple[str, str]],
    with_session: bool,
    accept: str,
    method: str,
    complete: bool,
) -> None:
    sealed = await minted_session(site) if with_session else None
    headers = [*ACCEPTS[accept]]
    if sealed is not None:
        headers.append((b"cookie", f"{SESSION_COOKIE}={sealed}".encode()))
    if kind == "login":
        raw_path = b"/auth/login"
    pairs = [*query, *(("next", value, mode) for value, mode in nexts)] if kind == "login" else query
    query_string = encode_pairs(pairs)
    reply = await harness.call(site, method=method, raw_path=raw_path, query=query_string, headers=headers, stats=stats)
    check_reply(reply, session_allowed=with_session, what=f"{kind} {raw_path[:200]!r}")
    path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
    if reply.reached and not reply.authenticated:
        assert reference_public(path), f"the app was reached without a session on {path[:200]!r}"
    if reply.authenticated:
        assert with_session, "the app was reached as a user without a session"
    if reply.status == 401 and reply.header("content-type") == "application/json":
        login_url = json.loads(reply.body)["login_url"]
        assert login_url.startswith("/auth/login?next=") and browser_resolves_same_origin(login_url), login_url
    location = reply.header("location") or ""
    if not (complete and reply.status == 302 and location.startswith(site.hostile.authorization_endpoint + "?")):
        return
    # Finish the login this started: where does the browser land?
    params = dict(parse_qsl(urlsplit(location).query))
    flows = [c for c in reply.set_cookies if c.name.startswith(FLOW_COOKIE_PREFIX) and not c.deletes]
    assert len(flows) == 1, reply.set_cookies
    code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    back = await harness.call(
        site,
        raw_path=CALLBACK_PATH.encode(),
        query=encode_pairs([("code", code, "quote"), ("state", params["state"], "quote"), ("iss", ISSUER, "quote")]),
        headers=[BROWSER_ACCEPT, (b"cookie", f"{flows[0].name}={flows[0].value}".encode())],
        stats=stats,
    )
    check_reply(back, session_allowed=True, what=f"the end of a login started at {raw_path[:200]!r}")
    assert back.status == 303 and back.session_set(), f"the login did not finish: {back.status}"


def test_budgets_add_up() -> None:
    """`make fuzz` generates at least 100,000 inputs; `make test` a few thousand."""
    assert sum(BUDGETS["fuzz"].values()) >= 100_000
    assert 2000 <= sum(BUDGETS["fuzz-ci"].values()) <= 5000
