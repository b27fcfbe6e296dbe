"""Issue #10: a sealed value opens only in the one encoding `seal` writes (unpadded base64url).

Before, `=` padding, `+`/`/` for `-`/`_`, whitespace, stray characters and non-zero unused bits in
the last character all gave other spellings that opened the same session: a cookie is a bearer
credential, and a copy must not pass for a different value (nor dodge a cache or a denylist keyed
by the value).
"""

from __future__ import annotations

import base64
import os
import secrets
import string
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pkce_middleware import PKCEMiddleware
from pkce_middleware._crypto import Sealer
from pkce_middleware.testing import FakeProvider, session_cookies

KEY = secrets.token_urlsafe(32)
URLSAFE = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def sealed_with(sealer: Sealer, *, remainder: int, needs: str = "") -> str:
    """A sealed value whose length is `remainder` modulo 4 and that contains every char of `needs`."""
    while True:
        value = sealer.seal(os.urandom(40 + secrets.randbelow(3)))
        if len(value) % 4 == remainder and all(char in value for char in needs):
            return value


def flip_unused_bits(value: str) -> str:
    """The same bytes, spelt with a last character whose unused low bits are not zero."""
    last = URLSAFE.index(value[-1])
    unused = {2: 0b1111, 3: 0b11}[len(value) % 4]
    return value[:-1] + URLSAFE[last | unused]


@pytest.mark.parametrize("remainder", [0, 2, 3])
def test_the_canonical_encoding_opens(remainder: int) -> None:
    sealer = Sealer([KEY], "session")
    value = sealed_with(sealer, remainder=remainder)
    assert sealer.open(value) is not None
    assert base64.urlsafe_b64encode(base64.urlsafe_b64decode(value + "==")).rstrip(b"=").decode() == value


@pytest.mark.parametrize(
    "respell",
    [
        pytest.param(lambda v: v + "=" * (-len(v) % 4), id="padding"),
        pytest.param(lambda v: v + "=" * (-len(v) % 4) + "====", id="extra-padding"),
        pytest.param(lambda v: v.replace("-", "+").replace("_", "/"), id="standard-alphabet"),
        # Non-strict decoders skip what is not in the alphabet; four characters keep the padding right.
        pytest.param(lambda v: v[:10] + "    " + v[10:], id="inner-spaces"),
        pytest.param(lambda v: v[:10] + "\r\n" + v[10:20] + "\r\n" + v[20:], id="line-breaks"),
        pytest.param(lambda v: v[:10] + "...." + v[10:], id="inner-dots"),
        pytest.param(lambda v: v[:10] + "=" + v[10:13] + "=" + v[13:16] + "==" + v[16:], id="inner-padding"),
        pytest.param(lambda v: "\t\t  " + v, id="leading-blanks"),
        pytest.param(lambda v: v + "\n\n\n\n", id="trailing-newlines"),
        pytest.param(flip_unused_bits, id="unused-bits"),
    ],
)
@pytest.mark.parametrize("remainder", [2, 3])
def test_other_spellings_of_the_same_bytes_do_not_open(remainder: int, respell: Callable[[str], str]) -> None:
    sealer = Sealer([KEY], "session")
    value = sealed_with(sealer, remainder=remainder, needs="-_")
    variant = respell(value)
    assert variant != value
    assert base64.urlsafe_b64decode(variant.strip() + "====") == base64.urlsafe_b64decode(value + "====")
    assert sealer.open(variant) is None


def test_only_the_exact_value_opens_among_its_one_character_edits() -> None:
    sealer = Sealer([KEY], "flow")
    for remainder in (0, 2, 3):
        value = sealed_with(sealer, remainder=remainder)
        alphabet = URLSAFE + "=+/ \t\n.~%\x00\xff"
        for index in range(len(value) + 1):
            for char in alphabet:
                inserted = value[:index] + char + value[index:]
                assert sealer.open(inserted) is None, inserted
                if index < len(value) and char != value[index]:
                    replaced = value[:index] + char + value[index + 1 :]
                    assert sealer.open(replaced) is None, replaced
            if index < len(value):
                assert sealer.open(value[:index] + value[index + 1 :]) is None


def test_non_ascii_is_refused_quietly() -> None:
    sealer = Sealer([KEY], "session")
    value = sealer.seal(b"x" * 40)
    for variant in (value + "\u00e9", "\u0100" + value, value[:-1] + "\uff21"):
        assert sealer.open(variant) is None


# -- through the middleware ---------------------------------------------------------------------------


async def whoami(request: Request) -> Response:
    return PlainTextResponse(request.user.identity)


class NoProvider(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected call to the provider: {request.url}")


@pytest.fixture
async def middleware() -> AsyncIterator[PKCEMiddleware]:
    middleware = PKCEMiddleware(
        Starlette(routes=[Route("/", whoami)]), config=FakeProvider().config(), transport=NoProvider()
    )
    yield middleware
    await middleware.aclose()


async def test_a_respelt_session_cookie_is_no_session(middleware: PKCEMiddleware) -> None:
    name = "__Host-pkce_session"
    value = ""
    while len(value) % 4 == 0:  # one that padding changes
        value = (await session_cookies(middleware, sub="alice"))[name]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="https://app.test") as client:
        ok = await client.get("/", headers={"Accept": "application/json", "Cookie": f"{name}={value}"})
        padded = value + "=" * (-len(value) % 4)
        respelt = await client.get("/", headers={"Accept": "application/json", "Cookie": f"{name}={padded}"})
    assert (ok.status_code, ok.text) == (200, "alice")
    assert respelt.status_code == 401
