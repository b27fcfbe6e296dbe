"""Hypothesis strategies for the fuzzing suite (`tests/test_fuzz.py`): hostile input of every kind.

Values that only exist at run time (the state of the login just started, the sealed session
cookie, "now") are drawn as symbols, `Sym("state")` or `RelTime(-700)`, and resolved by the test:
the strategies stay static, and a falsifying example reads as what it means.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st

from tests.support.hostile_provider import REMOVE

__all__ = [
    "OPEN_REDIRECTS",
    "RawJSON",
    "RelTime",
    "Sym",
    "dump_json",
    "encode_pairs",
    "hostile_text",
    "json_values",
]


@dataclasses.dataclass(frozen=True)
class Sym:
    """A value known only at run time (the flow's state, the sealed session, ...)."""

    name: str

    def __repr__(self) -> str:
        return f"Sym({self.name!r})"


@dataclasses.dataclass(frozen=True)
class RelTime:
    """A NumericDate `offset` seconds from the moment the token is made."""

    offset: int | float


@dataclasses.dataclass(frozen=True)
class RawJSON:
    """JSON text put in verbatim (numbers past Python's int-to-str limit, `1e999`, `-0`, ...)."""

    text: str


# -- text -------------------------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\x00",
    "\t",
    "\n",
    "\r\n",
    "\x1b[31mred",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "\ud800",
    "\udfff",
    "\udcff",
    "\ud83d",
    "é",
    "ÿ",
    "\U0001d518\U0001d52b",
    "%",
    "%00",
    "%0d%0aSet-Cookie:%20x=1",
    "%ff",
    "%ED%A0%80",
    "+",
    "&",
    "=",
    ";",
    ",",
    "#",
    "?",
    "/",
    '"',
    "'",
    "<script>alert(1)</script>",
    '"><script>alert(1)</script>',
    "' onmouseover='alert(1)",
    "null",
    "[]",
    "{}",
    "0",
    "-1",
    "1e999",
    "NaN",
    "//evil.example",
    "https://evil.example/",
]

#: Payloads of open-redirect advisories (oauth2-proxy, mod_auth_openidc) and their relatives.
OPEN_REDIRECTS = [
    "//evil.example",
    "///evil.example",
    "////evil.example/",
    "/\\evil.example",
    "\\/evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/ /evil.example",
    "/\x0b/evil.example",
    "/\x00/evil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "/%20/evil.example",
    "/%2F/evil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "%2F%2Fevil.example",
    "/.//evil.example",
    "/..//evil.example",
    "/./\\evil.example",
    "/.%2e//evil.example",
    "/%2e%2e/%2fevil.example",
    "/..\\evil.example",
    "/\u3000/evil.example",
    "/\u2028/evil.example",
    "/\ufeff/evil.example",
    "/\u0085/evil.example",
    "https://evil.example",
    "https:evil.example",
    "https:/evil.example",
    "HTTPS://evil.example",
    "http://app.test",
    "https://app.test.evil.example/",
    "https://app.test@evil.example/",
    "//app.test@evil.example",
    "/@evil.example",
    "javascript:alert(1)",
    "jAvAsCrIpT:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    " //evil.example",
    "\t//evil.example",
    "\x00//evil.example",
    "evil.example",
    ".",
    "..",
    "",
    "/",
    "/reports?year=2024",
    "/a/b/../c?x=1&y=%2F%2F#frag",
]

_SURROGATE_TEXT = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)


def _huge(pieces: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda piece, count: (piece or "A") * count, pieces, st.integers(min_value=1000, max_value=70000))


def hostile_text(*, max_size: int = 30, huge: bool = True) -> st.SearchStrategy[str]:
    """Unicode (lone surrogates included), surrogate-escaped bytes, nasty classics, huge repeats."""
    parts: list[st.SearchStrategy[str]] = [
        st.sampled_from(NASTY),
        st.text(max_size=max_size),
        st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=max_size),
        # Lone surrogates inside other text (legal in JSON as escapes, never valid UTF-8).
        st.builds(lambda a, b, c: a + b + c, st.text(max_size=4), _SURROGATE_TEXT, st.text(max_size=4)),
        st.binary(max_size=max_size).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    ]
    if huge:
        parts.append(_huge(st.sampled_from(["A", "é", "\ud800", "%", "/", "=", ";", "\x00"])))
    return st.one_of(*parts)


def to_bytes(text: str) -> bytes:
    """Text as raw bytes on the wire: UTF-8, with lone surrogates passed through as their (invalid) encoding."""
    return text.encode("utf-8", "surrogatepass")


def encode_pairs(pairs: list[tuple[str, str, str]], separator: bytes = b"&") -> bytes:
    """A query string (or form body) from `(name, value, mode)`: mode `quote`, `plus`, `raw` or `bare`."""
    out: list[bytes] = []
    for name, value, mode in pairs:
        if mode == "raw":
            out.append(to_bytes(name) + b"=" + to_bytes(value))
        elif mode == "bare":  # a name without "="
            out.append(to_bytes(name))
        elif mode == "plus":
            out.append(f"{_plus(name)}={_plus(value)}".encode("ascii"))
        else:
            out.append(f"{_quote(name)}={_quote(value)}".encode("ascii"))
    return separator.join(out)


def _quote(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


def _plus(text: str) -> str:
    return quote_plus(text, safe="", errors="surrogatepass")


ENCODINGS = st.sampled_from(["quote", "quote", "quote", "plus", "raw", "bare"])


# -- JSON -------------------------------------------------------------------------------------


def _json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        hostile_text(max_size=12),
        st.sampled_from(
            [
                RawJSON("1" * 5000),
                RawJSON("-" + "9" * 4400),
                RawJSON("1e999"),
                RawJSON("-1e999"),
                RawJSON("1E400"),
                RawJSON("-0"),
                RawJSON("0.0000000000000000000001"),
                RawJSON('"\\ud800"'),
                RawJSON('"\\udc00\\ud800"'),
                RawJSON('"\\u0000"'),
                RawJSON("[" * 3000 + "]" * 3000),
            ]
        ),
    )


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, and a few that only raw JSON text can say."""
    return st.recursive(
        _json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(hostile_text(max_size=8, huge=False), children, max_size=3),
        ),
        max_leaves=6,
    )


def dump_json(value: Any) -> bytes:
    """`value` as JSON bytes (ASCII, so lone surrogates survive as escapes; NaN and Infinity as
    Python writes them), with every `RawJSON` put in verbatim."""
    raws: list[str] = []

    def default(obj: object) -> object:
        if isinstance(obj, RawJSON):
            raws.append(obj.text)
            return f"\x00raw{len(raws) - 1}\x00"
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, separators=(",", ":"), default=default)
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0000raw{index}\\u0000"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def mutations(
    keys: st.SearchStrategy[str], special: st.SearchStrategy[Any], *, max_size: int = 4
) -> st.SearchStrategy[dict[str, Any]]:
    """Overrides for a JSON object: members replaced by hostile values, removed (`REMOVE`), or added.

    Mostly the members that matter (`keys`), and mostly their near misses (`special`)."""
    return st.dictionaries(
        st.one_of(keys, keys, keys, hostile_text(max_size=8, huge=False)),
        st.one_of(st.just(REMOVE), special, special, json_values()),
        max_size=max_size,
    )


def rel_times() -> st.SearchStrategy[RelTime]:
    return st.builds(
        RelTime,
        st.one_of(
            st.sampled_from([-(10**6), -3600, -700, -665, -400, -61, -59, 0, 59, 61, 120, 3600, 10**6, 10**12]),
            st.integers(min_value=-(10**7), max_value=10**7),
            st.floats(min_value=-1e6, max_value=1e6),
        ),
    )
