"""OpenID Connect Front-Channel Logout 1.0: the provider's iframe ends sessions (`PKCE_FRONTCHANNEL_LOGOUT_PATH`)."""

from __future__ import annotations

import pytest

from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.site import SESSION_COOKIE, assert_logged, login, open_site

PATH = "/auth/frontchannel-logout"
SID = "op-session-7f3a"


async def test_iss_and_sid_end_that_provider_sessions_everywhere() -> None:
    async with open_site(frontchannel_logout_path=PATH) as site:
        site.hostile.sid = SID
        assert (await login(site.client, site.hostile)).status_code == 303
        other_browser = site.browser()
        # The provider's iframe: cross-site, so our SameSite=Lax cookie is not sent along.
        answer = await other_browser.get(PATH, params={"iss": site.hostile.issuer, "sid": SID})
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        csp = answer.headers["content-security-policy"]
        assert "frame-ancestors https://op.test" in csp and "'self'" not in csp  # framed by the provider only
        after = await site.client.get("/", headers=BROWSER_HEADERS)
        assert after.status_code == 302  # signed out: a page load goes to the provider again


async def test_another_sid_leaves_the_session_alone() -> None:
    async with open_site(frontchannel_logout_path=PATH) as site:
        site.hostile.sid = SID
        await login(site.client, site.hostile)
        await site.browser().get(PATH, params={"iss": site.hostile.issuer, "sid": "someone-else"})
        assert (await site.client.get("/")).text.startswith("hello")


@pytest.mark.parametrize(
    "params",
    [{"iss": "https://evil.example", "sid": SID}, {"iss": "https://op.test"}, {"sid": SID}],
    ids=["other-issuer", "no-sid", "no-iss"],
)
async def test_a_request_naming_another_issuer_or_no_sid_is_refused(
    params: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with open_site(frontchannel_logout_path=PATH) as site:
        site.hostile.sid = SID
        await login(site.client, site.hostile)
        answer = await site.browser().get(PATH, params=params)
        assert answer.status_code == 400
        assert answer.json() == {"error": "logout_token_invalid"}
        assert_logged(caplog, "logout_token_invalid")
        assert (await site.client.get("/")).text.startswith("hello")


async def test_without_parameters_the_cookie_it_brought_ends() -> None:
    async with open_site(frontchannel_logout_path=PATH) as site:
        await login(site.client, site.hostile)
        answer = await site.client.get(PATH)
        assert answer.status_code == 200
        assert any(
            value.startswith(f"{SESSION_COOKIE}=;") or "Max-Age=0" in value
            for value in answer.headers.get_list("set-cookie")
        )
        assert (await site.client.get("/", headers=BROWSER_HEADERS)).status_code == 302


async def test_only_get_and_head() -> None:
    async with open_site(frontchannel_logout_path=PATH) as site:
        answer = await site.client.post(PATH, params={"iss": site.hostile.issuer, "sid": SID})
        assert answer.status_code == 405


async def test_off_unless_configured() -> None:
    async with open_site() as site:
        site.hostile.sid = SID
        await login(site.client, site.hostile)
        answer = await site.browser().get(PATH, params={"iss": site.hostile.issuer, "sid": SID})
        assert answer.status_code == 302  # an ordinary protected path: this browser is sent to sign in
        assert (await site.client.get("/")).text.startswith("hello")


def test_the_path_must_differ_from_the_others() -> None:
    from pkce_middleware import ConfigError
    from tests.support.site import make_config

    with pytest.raises(ConfigError, match="PKCE_FRONTCHANNEL_LOGOUT_PATH"):
        make_config(frontchannel_logout_path="/auth/logout")
    with pytest.raises(ConfigError, match="PKCE_FRONTCHANNEL_LOGOUT_PATH"):
        make_config(frontchannel_logout_path="no-slash")
