"""The pytest plugin of the test kit, registered as the `pytest11` entry point `pkce_middleware`.

Active as soon as the package is installed (no conftest needed). Its fixtures hand out the kit's
functions, typed for a test's annotations:

* `pkce_login` -> `login` (`PKCELogin`): `await pkce_login(client, middleware, sub=..., ...)`,
  any session store, Redis included (await it on the loop the app runs on);
* `pkce_login_sync` -> `login_sync` (`PKCELoginSync`): the same from a plain `def` test, cookie
  store only;
* `pkce_fake_provider` -> a fresh `FakeProvider`.

Only pytest imports this module; `pkce_middleware.testing` itself works without pytest.
"""

from __future__ import annotations

import pytest

from pkce_middleware.testing import FakeProvider, PKCELogin, PKCELoginSync, login, login_sync

__all__ = ["pkce_fake_provider", "pkce_login", "pkce_login_sync"]


@pytest.fixture
def pkce_login() -> PKCELogin:
    """`await pkce_login(client, middleware, sub="alice", claims={...}, scopes=[...])`: see `login`."""
    return login


@pytest.fixture
def pkce_login_sync() -> PKCELoginSync:
    """`pkce_login_sync(client, middleware, sub="alice", ...)` for the cookie store: see `login_sync`."""
    return login_sync


@pytest.fixture
def pkce_fake_provider() -> FakeProvider:
    """A fresh `FakeProvider` on `https://idp.test`, logging everyone in as `test-user`."""
    return FakeProvider()
