"""The middleware's sign-in endpoints: login, the provider choice, and the provider's callback.

Each endpoint does the I/O (cookies, provider calls, the store) between checks made without I/O
elsewhere (`_flow` for the callback), and answers every refusal through the app's `on_error` hook
or the default page. The sign-out endpoints live in `_logout_routes`; `Routes` registers them too,
so the middleware has one table of paths.

References:
    RFC 9700 section 4.7.1 (callback checks before the code is redeemed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from ._components import Components
from ._cookies import CookieWriter, request_cookies
from ._exceptions import (
    AccessDenied,
    BearerError,
    CallbackError,
    ChooseProvider,
    LoginError,
    LoginRequired,
    PKCEMiddlewareError,
    Reason,
    StepUpRequired,
    StoreUnavailable,
)
from ._flow import (
    FLOW_MAX_AGE,
    MAX_PARALLEL_FLOWS,
    Callback,
    LoginFlow,
    check_callback,
    check_issuer,
    safe_return_path,
)
from ._forms import MAX_QUERY, read_form
from ._guards import who
from ._hooks import Hooks, log_refusal
from ._logout_routes import LogoutRoutes
from ._origins import Origins
from ._responses import NO_STORE
from ._rules import Require
from ._websockets import refused_socket

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

DEFAULT_CALLBACK_PATH = "/auth/callback"
#: Flow cookies looked at (and at most deleted) per login.
MAX_FLOW_COOKIES_READ = 16


class Routes:
    def __init__(self, components: Components, hooks: Hooks) -> None:
        self._parts = components
        self._hooks = hooks
        config = components.config
        self._cookies = components.cookies
        redirect = urlsplit(config.redirect_uri) if config.redirect_uri else None
        self.origins = Origins(f"{redirect.scheme}://{redirect.netloc}" if redirect else None, config.websocket_origins)
        #: Each provider's identity in flows (its issuer, or a plain provider's authorization endpoint).
        self._issuers = {name: own.provider_id for name, _, own in config.each_provider}
        # Sign-out shares the origins (a logout POST must be same-origin; its default landing is ours).
        logout = LogoutRoutes(components, hooks, self.origins)
        self.paths: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            config.callback_path or DEFAULT_CALLBACK_PATH: self.callback,
            config.login_path: self.login,
            **logout.paths,
        }

    # -- login ---------------------------------------------------------------------------------

    async def login(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET <login_path>?next=/path`: start a login on purpose (a link, or a SPA after a 401).

        `prompt=login` (or `select_account`) makes the provider ask who is signing in, and
        `acr_values`/`max_age` ask for a stronger or more recent login (step-up): with any of them a
        new login starts even over a live session, which it replaces once it succeeds.
        """
        if scope["method"] not in ("GET", "HEAD"):
            await Response(status_code=405, headers={"Allow": "GET, HEAD", **NO_STORE})(scope, receive, send)
            return
        query = scope["query_string"]
        # A query too long to hold a target we would keep is not even parsed (decoding costs).
        params = dict(parse_qsl(query.decode("latin-1"))) if len(query) <= MAX_QUERY else {}
        target = params.get("next", "/")
        demand = _demand(params)
        session = await self._parts.lifecycle.live(scope)
        provider = params.get("provider")
        if provider is not None and provider not in self._parts.providers:
            exc = LoginError("no such provider", error=Reason.UNKNOWN_PROVIDER, retry_url=safe_return_path(target))
            await (await self._hooks.error_response(exc, scope, receive))(scope, receive, send)
            return
        if session is not None and demand is None and provider is None:
            # Sent back to a target whose rule refuses this session, the browser would come here again
            # (a public page sees a refused user as anonymous, and its "Sign in" or `restrict` links
            # here): the refusal is said instead, and a step-up is started.
            refusal = self._refusal_at(target, session.claims)
            if refusal is None:
                await RedirectResponse(safe_return_path(target), 303, headers=NO_STORE)(scope, receive, send)
                return
            if isinstance(refusal, AccessDenied):
                await (await self._hooks.error_response(refusal, scope, receive))(scope, receive, send)
                return
        if provider is None and session is not None:
            provider = session.provider  # a step-up or an account switch stays with the session's provider
        live = session is not None
        await self.start_login(
            scope, receive, send, return_to=target, demand=demand, keep_session=live, provider=provider
        )

    async def start_login(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        return_to: str,
        demand: Demand | None = None,
        keep_session: bool = False,
        provider: str | None = None,
    ) -> None:
        """Send the browser to the provider, with a new flow cookie.

        Without an explicit `demand`, the login asks for what the rule of `return_to` needs (its
        `acr_values` and `max_age`), so that landing there does not need a second login. With
        several providers and none chosen, the browser is shown the choice first.
        """
        config = self._parts.config
        if provider is None:
            if len(self._parts.providers) > 1:
                await self._choice(scope, receive, send, return_to=return_to)
                return
            provider = next(iter(self._parts.providers))
        own = self._parts.providers[provider]
        redirect_uri = config.redirect_uri or self.origin(scope) + DEFAULT_CALLBACK_PATH
        wanted = self._demand_of(return_to)
        if demand is None:
            demand = wanted
        else:
            # Each kind on its own: a link may ask for more (another acr, a shorter max_age), never
            # for less than the target needs; the callback holds the login to the target's rule too.
            ages = [age for age in (demand.max_age, wanted.max_age) if age is not None]
            demand = dataclasses.replace(
                demand, acr_values=demand.acr_values or wanted.acr_values, max_age=min(ages) if ages else None
            )
        flow = LoginFlow.start(
            issuer=self._issuers[provider],
            redirect_uri=redirect_uri,
            return_to=return_to,
            acr_values=demand.acr_values,
            max_age=demand.max_age,
            prompt=demand.prompt,
            provider=provider,
        )
        try:
            url = await own.authorization_url(flow)
        except LoginError as exc:
            exc.retry_url = flow.return_to
            await (await self._hooks.error_response(exc, scope, receive))(scope, receive, send)
            return
        response = RedirectResponse(url, 302, headers=NO_STORE)
        for name in self._stale_flows(request_cookies(scope)):
            self._cookies.delete(response, name)
        if not keep_session:
            # A session that did not open is dead; a fresh login must not build on it (fixation).
            await self.forget_session(scope, response)
        name = self._cookies.flow_prefix + flow.cookie_suffix
        # A form_post callback is a cross-site POST: only a SameSite=None cookie goes along with it.
        cross_site = config.response_mode == "form_post"
        self._cookies.set(response, name, self._parts.flows.seal(flow), max_age=FLOW_MAX_AGE, cross_site=cross_site)
        await response(scope, receive, send)

    async def _choice(self, scope: Scope, receive: Receive, send: Send, *, return_to: str) -> None:
        """Several providers and no choice yet: the page that asks (through `on_error`, so the app
        can render its own; `ChooseProvider` carries the names and the target)."""
        target = safe_return_path(return_to)
        if scope.get("path") != self._parts.config.login_path:
            # Elsewhere (a protected page), to the login path, which shows the choice and keeps `next`.
            query = urlencode([("next", target)])
            await RedirectResponse(f"{self._parts.config.login_path}?{query}", 302, headers=NO_STORE)(
                scope, receive, send
            )
            return
        choice = ChooseProvider(
            login_path=self._parts.config.login_path,
            providers=tuple((name, display) for name, display, _ in self._parts.config.each_provider),
            next_path=target,
        )
        # Each button's answer redirects to its provider's authorization endpoint, which the page's
        # `form-action` must allow: discovery names it (loaded at startup; for a provider down, its issuer's).
        providers = self._parts.providers.values()
        await asyncio.gather(*(own.metadata() for own in providers), return_exceptions=True)
        targets = {origin for own in providers if (origin := own.authorization_origin) is not None}
        response = await self._hooks.error_response(choice, scope, receive, form_targets=targets)
        await response(scope, receive, send)

    def _rule_of(self, return_to: str) -> Require | None:
        return self._parts.rules.for_path(unquote(urlsplit(safe_return_path(return_to)).path))

    def _refusal_at(self, return_to: str, claims: Mapping[str, Any]) -> AccessDenied | StepUpRequired | None:
        """Why the rule of `return_to` would not let these claims in, or `None`."""
        rule = self._rule_of(return_to)
        refusal = rule.check(claims, now=time.time(), leeway=self._parts.config.clock_leeway) if rule else None
        if isinstance(refusal, AccessDenied):
            refusal.who, refusal.switch_url = who(claims), self._switch_url(return_to)
        return refusal

    def _switch_url(self, return_to: str) -> str:
        """The login that asks who signs in, coming back to `return_to`."""
        query = urlencode([("next", safe_return_path(return_to)), ("prompt", "login")])
        return f"{self._parts.config.login_path}?{query}"

    def _demand_of(self, return_to: str) -> Demand:
        rule = self._rule_of(return_to)
        if rule is None:
            return Demand()
        return Demand(acr_values=tuple(rule.acr_values or ()), max_age=rule.max_age)

    def origin(self, scope: Scope) -> str:
        return self.origins.of_app(scope)

    def _stale_flows(self, cookies: dict[str, str]) -> list[str]:
        """Flow cookies to drop so that, with the new one, at most MAX_PARALLEL_FLOWS remain."""
        now = time.time()
        stale, live = [], []
        # Only the first few: a browser loaded with thousands of junk flow cookies gets a bounded
        # answer (each login then cleans up some more), and we open only a bounded number.
        names = [name for name in cookies if name.startswith(self._cookies.flow_prefix)][:MAX_FLOW_COOKIES_READ]
        for name in names:
            flow = self._parts.flows.open(cookies[name])
            if flow is None or flow.expired(now):
                stale.append(name)
            else:
                live.append((flow.created_at, name))
        live.sort()
        return stale + [name for _, name in live[: max(0, len(live) - MAX_PARALLEL_FLOWS + 1)]]

    async def refuse(
        self,
        exc: PKCEMiddlewareError,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        challenges: Callable[[BearerError | None], list[str]] | None = None,
        token_too: bool = False,
    ) -> None:
        """Answer a request the middleware does not let through. `challenges`: the resource server's
        `WWW-Authenticate` values, when there are bearer paths; `token_too`: the path also takes
        tokens, so a 401 also says how to get one."""
        if isinstance(exc, BearerError) and challenges is not None and not exc.challenges:
            exc.challenges = challenges(exc)
        if scope["type"] == "websocket":
            await refused_socket(exc, scope, send)
            return
        response = await self._hooks.error_response(exc, scope, receive)
        if isinstance(exc, LoginRequired):
            await self.forget_session(scope, response)
            if token_too and challenges is not None:
                # RFC 9728 section 5.1: an agent finds its way to a token from here too.
                response.raw_headers.extend(
                    (b"www-authenticate", value.encode("latin-1")) for value in challenges(None)
                )
        await response(scope, receive, send)

    async def forget_session(self, scope: Scope, response: Response) -> None:
        """Delete a session cookie that no longer opens, so the browser stops sending it."""
        if any(name.startswith(self._cookies.session_name) for name in request_cookies(scope)):
            cookies = CookieWriter()
            try:
                await self._parts.store.discard(None, scope, cookies)
            except StoreUnavailable as exc:
                log_refusal(exc, scope)  # the cookie is dead either way; the store forgets it by TTL
                self._cookies.delete(cookies, self._cookies.session_name)
            response.raw_headers.extend(cookies.raw_headers)

    # -- callback ------------------------------------------------------------------------------

    async def callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        cookies = request_cookies(scope)
        flow_name: str | None = None
        try:
            if self._parts.config.response_mode == "form_post":
                # The provider's page posts the answer (OAuth 2.0 Form Post Response Mode).
                if scope["method"] != "POST":
                    raise CallbackError("callback must be a POST (form_post)", error=Reason.METHOD_NOT_ALLOWED)
                body = await read_form(scope, receive, limit=MAX_QUERY, refused=_callback_refused)
                callback = Callback.parse("GET", body)
            else:
                callback = Callback.parse(scope["method"], scope["query_string"])
            suffix = callback.flow_cookie_suffix
            flow_name = self._cookies.flow_prefix + suffix if suffix else None
            response = await self._finish_login(scope, receive, callback, cookies.get(flow_name or ""))
        except PKCEMiddlewareError as exc:
            response = await self._hooks.error_response(exc, scope, receive)
        if flow_name is not None and flow_name in cookies:
            # Used or failed, the flow is over either way.
            self._cookies.delete(response, flow_name)
        await response(scope, receive, send)

    async def _finish_login(
        self, scope: Scope, receive: Receive, callback: Callback, flow_value: str | None
    ) -> Response:
        """The checks that need no network first (RFC 9700 section 4.7.1), then the code redemption."""
        parts = self._parts
        finished_elsewhere = callback.error is None and callback.state and flow_value is None
        if finished_elsewhere and await parts.lifecycle.live(scope) is not None:
            # Another tab already finished this login; nothing to do but carry on.
            return RedirectResponse("/", 303, headers=NO_STORE)
        now = int(time.time())
        flow = check_callback(callback, flow_value, parts.flows, issuers=self._issuers, now=now)
        # The provider this flow went to, and no other: its metadata, its `iss`, its token endpoint.
        provider = parts.providers[flow.provider]
        metadata = await provider.metadata()
        code = check_issuer(callback, issuer=metadata.issuer, iss_supported=metadata.iss_parameter_supported)
        if not parts.used_states.claim(flow.state, now):
            raise CallbackError("state already used", error=Reason.STATE_REPLAYED)
        token, claims = await provider.redeem(flow, code, now=now)
        self._check_rules(flow, claims)
        writer = CookieWriter()
        session = parts.lifecycle.start(claims, token, flow.provider)
        await self._hooks.logged_in(scope, receive, session.user())
        await parts.start_session(session, scope, writer)
        response = RedirectResponse(flow.return_to, 303, headers=NO_STORE)
        response.raw_headers.extend(writer.raw_headers)
        logger.info("login ok: sub=%r", session.sub)
        return response

    def _check_rules(self, flow: LoginFlow, claims: Mapping[str, Any]) -> None:
        """Refuse, before any session exists, a login that the rule of its target or this flow's
        demands (the `acr_values`/`max_age` it asked for; OIDC Core 3.1.3.7) do not let in.

        The target's rule, not the global one: a path rule that lifts the global email rule for
        partners must let them sign in there.
        """
        rule = self._rule_of(flow.return_to)
        leeway = self._parts.config.clock_leeway
        reason = rule.refusal(claims) if rule is not None else None
        if reason is None and rule is not None:
            # The target's own acr and max_age as well as what the flow asked for: a login link
            # that asked for a weaker acr must not make a session the target would refuse.
            reason = rule.step_up_reason(claims, now=time.time(), leeway=leeway)
        if reason is None and (flow.acr_values or flow.max_age is not None):
            demand = Require(acr_values=flow.acr_values or None, max_age=flow.max_age)
            reason = demand.step_up_reason(claims, now=time.time(), leeway=leeway)
        if reason is not None:
            switch = self._switch_url(flow.return_to)
            raise AccessDenied(f"at login: sub={claims.get('sub')!r}", error=reason, who=who(claims), switch_url=switch)


@dataclasses.dataclass(frozen=True, slots=True)
class Demand:
    """What a login asks of the provider beyond a plain sign-in."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None
    prompt: str | None = None


#: `prompt` values a login link may ask for: both only make the provider ask who signs in.
_PROMPTS = frozenset({"login", "select_account"})


def _demand(params: Mapping[str, str]) -> Demand | None:
    """The step-up or account switch a login link asks for; `None` for a plain login.

    Anyone can link here, so a value we would not send ourselves is ignored, not passed on.
    """
    prompt = params.get("prompt") if params.get("prompt") in _PROMPTS else None
    try:
        acr = Require(acr_values=params.get("acr_values", "").split() or None).acr_values or ()
    except ValueError:
        acr = ()
    raw_age = params.get("max_age", "")
    max_age = int(raw_age) if raw_age.isascii() and raw_age.isdigit() and len(raw_age) <= 9 else None
    if prompt is None and not acr and max_age is None:
        return None
    return Demand(acr_values=tuple(acr), max_age=max_age, prompt=prompt)


def _callback_refused(detail: str, status: int) -> Exception:
    return CallbackError(detail, error=Reason.BAD_CALLBACK, status_code=status)
