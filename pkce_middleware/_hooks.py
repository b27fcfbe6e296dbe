"""The app's hooks: its own error pages (`on_error`), and word of each login and logout.

    def on_error(request: Request, exc: PKCEMiddlewareError) -> Response | None:
        if wants_html(request):
            return templates.TemplateResponse(request, "error.html", {"exc": exc}, status_code=exc.status_code)
        return None  # the middleware's own JSON answer

    async def on_login(request: Request, user: OIDCUser) -> None:
        await audit.record("login", user.identity, request.client)

    app = PKCEMiddleware(app, on_error=on_error, on_login=on_login, on_logout=on_logout)

Each hook may be a plain or an async function. `on_error` answers `None` to keep the default
answer for that error. `on_login` runs once per finished login, before the session cookie is
written: raising a `PKCEMiddlewareError` there (say `LoginError("not provisioned",
status_code=403)`) refuses the login with that error's page. `on_logout` runs once per sign-out
through the logout path, after the session ended.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from ._exceptions import ChooseProvider, PKCEMiddlewareError, Reason
from ._responses import error_response, wants_html
from ._session import OIDCUser

__all__ = ["OnError", "OnLogin", "OnLogout"]

logger = logging.getLogger("pkce_middleware")

_T = TypeVar("_T")


class OnError(Protocol):
    """`on_error(request, exc)`: the answer for `exc`, or `None` for the middleware's default."""

    def __call__(
        self, request: Request, exc: PKCEMiddlewareError, /
    ) -> Response | Awaitable[Response | None] | None: ...


class OnLogin(Protocol):
    """`on_login(request, user)`, once per finished login."""

    def __call__(self, request: Request, user: OIDCUser, /) -> Awaitable[None] | None: ...


class OnLogout(Protocol):
    """`on_logout(request, user)`, once per sign-out through the logout path."""

    def __call__(self, request: Request, user: OIDCUser, /) -> Awaitable[None] | None: ...


async def _call(hook: Callable[..., _T | Awaitable[_T]], *args: object) -> _T:
    result = hook(*args)
    if inspect.isawaitable(result):
        return await result
    return result


class Hooks:
    def __init__(self, *, on_error: OnError | None, on_login: OnLogin | None, on_logout: OnLogout | None) -> None:
        self._on_error = on_error
        self._on_login = on_login
        self._on_logout = on_logout

    async def error_response(
        self, exc: PKCEMiddlewareError, scope: Scope, receive: Receive, *, form_targets: Iterable[str] = ()
    ) -> Response:
        """Log the refusal, and answer it: the app's page if it gives one, else ours (`form_targets`:
        see `error_response`)."""
        if not isinstance(exc, ChooseProvider):  # a question, not a refusal
            log_refusal(exc, scope)
        request = Request(scope, receive)
        if self._on_error is not None:
            response = await _call(self._on_error, request, exc)
            if response is not None:
                return response
        return error_response(exc, browser=wants_html(request), form_targets=form_targets)

    async def logged_in(self, scope: Scope, receive: Receive, user: OIDCUser) -> None:
        if self._on_login is not None:
            await _call(self._on_login, Request(scope, receive), user)

    async def logged_out(self, scope: Scope, receive: Receive, user: OIDCUser) -> None:
        if self._on_logout is not None:
            await _call(self._on_logout, Request(scope, receive), user)


def log_refusal(exc: PKCEMiddlewareError, scope: Scope) -> None:
    # A request without a session is routine (a bot, an expired tab, a health check): INFO, so
    # anonymous traffic cannot flood the warnings. Every other refusal is worth a look.
    level = logging.INFO if exc.error == Reason.LOGIN_REQUIRED else logging.WARNING
    # %r: the path is the client's, and must not be able to forge log lines.
    logger.log(
        level,
        "login refused: reason=%s status=%d path=%r detail=%s",
        exc.error,
        exc.status_code,
        scope["path"],
        exc.detail,
    )
