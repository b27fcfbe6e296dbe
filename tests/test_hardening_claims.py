"""Issue #10 (finding 9): the claims an app sees are read-only all the way down.

The opened `Session` is cached per cookie value and serves every request of that cookie; with
only the top level read-only, `request.user.claims["groups"].append("admin")` changed what every
later request saw, and was sealed into the cookie at its next re-issue. Claims are now frozen once,
when a session is built (lists become tuples, objects read-only dicts), which costs nothing per
request; sealing still writes plain JSON, and claims equal to the ID token's are not stored twice.
"""

from __future__ import annotations

import base64
import copy
import json
import pickle
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pkce_middleware import PKCEMiddleware
from pkce_middleware._crypto import Sealer
from pkce_middleware._session import Session, SessionCodec
from pkce_middleware.testing import FakeProvider, session_cookies

KEY = secrets.token_urlsafe(32)
CLAIMS: dict[str, Any] = {
    "sub": "alice",
    "iss": "https://idp.test",
    "aud": ["client", "other"],
    "groups": ["staff"],
    "address": {"country": "NZ", "lines": ["1 Main St"]},
    "nonce": "n-1",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(claims: Mapping[str, Any]) -> str:
    return f"{b64url(json.dumps({'alg': 'none'}).encode())}.{b64url(json.dumps(dict(claims)).encode())}."


def new_session(claims: Mapping[str, Any] = CLAIMS, *, id_token: str | None = None) -> Session:
    token = {"access_token": "at", "id_token": unsigned_jwt(claims) if id_token is None else id_token}
    return Session.new(claims=claims, token=token, scopes=["openid"], now=time.time(), max_age=3600)


def payload(sealer: Sealer, value: str) -> dict[str, Any]:
    plaintext = sealer.open(value)
    assert plaintext is not None
    data: dict[str, Any] = json.loads(plaintext)
    return data


def assert_deeply_read_only(claims: Mapping[str, Any]) -> None:
    with pytest.raises(TypeError):
        claims["groups"] = ["admin"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        claims["groups"].append("admin")
    with pytest.raises(TypeError):
        claims["groups"][0] = "admin"
    with pytest.raises(TypeError):
        claims["address"]["country"] = "XX"
    with pytest.raises(TypeError):
        claims["address"].update(country="XX")
    with pytest.raises(TypeError):
        claims["address"].setdefault("admin", True)
    with pytest.raises(TypeError):
        del claims["address"]["country"]
    address: Any = claims["address"]
    with pytest.raises(TypeError):
        address |= {"admin": True}
    with pytest.raises(AttributeError):
        claims["address"]["lines"].append("2 Main St")


def test_opened_claims_are_read_only_all_the_way_down() -> None:
    sealer = Sealer([KEY], "session")
    codec = SessionCodec(sealer)
    value = codec.seal(new_session())
    session = codec.open(value)
    assert session is not None
    assert_deeply_read_only(session.user().claims)
    again = codec.open(value)  # the cached Session: what the next request of this cookie gets
    assert again is session
    assert again.claims["groups"] == ("staff",)
    assert again.claims["address"] == {"country": "NZ", "lines": ("1 Main St",)}


def test_claims_stored_apart_from_the_id_token_are_frozen_too() -> None:
    codec = SessionCodec(Sealer([KEY], "session"))
    session = new_session(id_token="")  # PKCE_SESSION_ID_TOKEN=false: the claims are in the cookie
    opened = codec.open(codec.seal(session))
    assert opened is not None
    assert_deeply_read_only(opened.claims)


def test_an_edit_through_one_request_is_not_sealed_into_the_cookie() -> None:
    """Before, the edit went into the cached Session, then into the cookie at its next write."""
    sealer = Sealer([KEY], "session")
    codec = SessionCodec(sealer)
    session = codec.open(codec.seal(new_session(id_token="")))
    assert session is not None
    with pytest.raises((AttributeError, TypeError)):
        session.claims["groups"].append("admin")
    with pytest.raises((AttributeError, TypeError)):
        session.claims["address"]["country"] = "XX"
    resealed = payload(sealer, codec.seal(session))["c"]
    assert resealed["groups"] == ["staff"] and resealed["address"]["country"] == "NZ"


def test_a_new_session_does_not_share_the_callers_lists() -> None:
    claims = copy.deepcopy(CLAIMS)
    session = new_session(claims)
    claims["groups"].append("admin")
    claims["address"]["country"] = "XX"
    assert session.claims["groups"] == ("staff",) and session.claims["address"]["country"] == "NZ"
    assert "nonce" not in session.claims
    assert_deeply_read_only(session.claims)


def test_refreshed_claims_are_frozen() -> None:
    session = new_session({**CLAIMS, "sid": "s-1"})
    refreshed_claims = {**CLAIMS, "groups": ["staff", "ops"]}
    refreshed = session.refreshed(
        {"access_token": "at-2", "id_token": unsigned_jwt(refreshed_claims)}, refreshed_claims, 1
    )
    assert refreshed.claims["groups"] == ("staff", "ops") and refreshed.claims["sid"] == "s-1"
    assert "nonce" not in refreshed.claims
    assert_deeply_read_only(refreshed.claims)


def test_sealing_writes_plain_json_and_does_not_store_the_id_token_claims_twice() -> None:
    sealer = Sealer([KEY], "session")
    codec = SessionCodec(sealer)
    session = new_session()
    assert payload(sealer, codec.seal(session))["c"] is None  # lists and objects compare equal once frozen
    opened = codec.open(codec.seal(session))
    assert opened is not None
    assert payload(sealer, codec.seal(opened))["c"] is None
    different = Session.new(
        claims={**CLAIMS, "groups": ["staff", "extra"]},
        token={"access_token": "at", "id_token": unsigned_jwt(CLAIMS)},
        scopes=["openid"],
        now=time.time(),
        max_age=3600,
    )
    stored = payload(sealer, codec.seal(different))["c"]
    assert stored["groups"] == ["staff", "extra"]
    assert stored["address"] == {"country": "NZ", "lines": ["1 Main St"]}
    assert stored["aud"] == ["client", "other"]


def test_frozen_claims_still_work_as_plain_data() -> None:
    claims = new_session().claims
    assert json.loads(json.dumps(dict(claims))) == {k: v for k, v in CLAIMS.items() if k != "nonce"}
    frozen = {"aud": ("client", "other"), "groups": ("staff",), "address": {"country": "NZ", "lines": ("1 Main St",)}}
    assert claims == {**{k: v for k, v in CLAIMS.items() if k != "nonce"}, **frozen}
    assert "staff" in claims["groups"] and claims["address"]["country"] == "NZ"
    for mutable in (
        claims["address"].copy(),
        copy.copy(claims["address"]),
        pickle.loads(pickle.dumps(claims["address"])),
    ):
        assert type(mutable) is dict
        mutable["country"] = "XX"
    deep = copy.deepcopy(dict(claims))
    deep["address"]["admin"] = True
    assert claims["address"] == {"country": "NZ", "lines": ("1 Main St",)}


# -- through the middleware ---------------------------------------------------------------------------


async def grab(request: Request) -> Response:
    """An app that edits the claims it was given, as a careless (or hostile) handler might."""
    claims = request.user.claims
    seen = {"groups": list(claims["groups"]), "address": dict(claims["address"])}
    edits = 0
    attempts: list[Callable[[], object]] = [
        lambda: claims["groups"].append("admin"),
        lambda: claims["address"].__setitem__("country", "XX"),
    ]
    for edit in attempts:
        try:
            edit()
            edits += 1
        except (AttributeError, TypeError):
            pass
    return JSONResponse({"seen": seen, "edits": edits, "claims": dict(claims)})


class NoProvider(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected call to the provider: {request.url}")


@pytest.fixture
async def middleware() -> AsyncIterator[PKCEMiddleware]:
    middleware = PKCEMiddleware(
        Starlette(routes=[Route("/", grab)]), config=FakeProvider().config(), transport=NoProvider()
    )
    yield middleware
    await middleware.aclose()


async def test_one_requests_edit_is_not_seen_by_the_next(middleware: PKCEMiddleware) -> None:
    claims = {"groups": ["staff"], "address": {"country": "NZ"}}
    cookies = await session_cookies(middleware, sub="alice", claims=claims)
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="https://app.test") as client:
        first = (await client.get("/", headers={"Cookie": header})).json()
        second = (await client.get("/", headers={"Cookie": header})).json()
    assert first["seen"] == second["seen"] == {"groups": ["staff"], "address": {"country": "NZ"}}
    assert first["edits"] == second["edits"] == 0
    # and a handler can still hand the claims on as JSON
    assert second["claims"]["address"] == {"country": "NZ"} and second["claims"]["groups"] == ["staff"]
