"""OAuth 2.0 Form Post Response Mode (`PKCE_RESPONSE_MODE=form_post`): the code comes back in a POST."""

from __future__ import annotations

import pytest

from pkce_middleware import ConfigError
from tests.support.site import (
    CALLBACK_PATH,
    FLOW_COOKIE_PREFIX,
    assert_logged,
    begin_login,
    make_config,
    open_site,
)


async def test_the_login_asks_for_form_post_and_the_post_finishes_it() -> None:
    async with open_site(response_mode="form_post") as site:
        response = await site.client.get("/")
        assert response.status_code == 302
        flow_cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(FLOW_COOKIE_PREFIX))
        # A cross-site POST carries only SameSite=None cookies, and browsers want Secure with it.
        assert "samesite=none" in flow_cookie.lower() and "secure" in flow_cookie.lower()
        _, params = await begin_login(site.client, "/deep?x=1")
        assert params["response_mode"] == "form_post"
        code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
        answer = await site.client.post(
            CALLBACK_PATH, data={"code": code, "state": params["state"], "iss": site.hostile.issuer}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/deep?x=1"
        assert (await site.client.get("/")).text.startswith("hello")


async def test_a_get_callback_is_refused_in_form_post_mode(caplog: pytest.LogCaptureFixture) -> None:
    async with open_site(response_mode="form_post") as site:
        _, params = await begin_login(site.client)
        code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
        answer = await site.client.get(CALLBACK_PATH, params={"code": code, "state": params["state"]})
        assert answer.status_code == 400
        assert_logged(caplog, "method_not_allowed")
        assert (await site.client.get("/", headers={"Accept": "application/json"})).status_code == 401


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({"Content-Type": "application/json"}, b"{}", 400),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"state=" + b"x" * 40_000, 413),
    ],
    ids=["not-a-form", "too-large"],
)
async def test_a_post_that_is_no_small_form_is_refused(headers: dict[str, str], content: bytes, status: int) -> None:
    async with open_site(response_mode="form_post") as site:
        await begin_login(site.client)
        answer = await site.client.post(CALLBACK_PATH, headers=headers, content=content)
        assert answer.status_code == status


async def test_query_mode_still_refuses_a_post() -> None:
    async with open_site() as site:
        _, params = await begin_login(site.client)
        assert "response_mode" not in params
        answer = await site.client.post(CALLBACK_PATH, data={"state": params["state"], "code": "x"})
        assert answer.status_code == 400


def test_an_unknown_response_mode_fails_at_startup() -> None:
    with pytest.raises(ConfigError, match="PKCE_RESPONSE_MODE"):
        make_config(response_mode="fragment")
