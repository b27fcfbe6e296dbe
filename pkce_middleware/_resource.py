"""The protected resource: who a request's access token speaks for, and how to answer without one.

`ResourceServer.authenticate` turns an `Authorization: Bearer` (or `DPoP`) header into a
`TokenInfo`. A JWT access token is verified locally with the provider's keys (an unknown `kid`
refetches them at most once per interval, as for ID tokens); an opaque one is introspected. Both
results are cached until the token expires (an introspection answer for at most
`PKCE_INTROSPECTION_CACHE_TTL`), so a token seen before costs a dictionary lookup. A DPoP-bound
token needs a fresh proof on every request, and a proof is accepted once.

It also serves the RFC 9728 metadata document and writes the `WWW-Authenticate` challenges that
point clients to it (RFC 9728 section 5.1, RFC 6750 section 3, RFC 9449 section 7.1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ._bearer import (
    DPOP_ALGORITHMS,
    DPOP_PROOF_WINDOW,
    AccessTokenValidator,
    ExpiringCache,
    Presented,
    TokenInfo,
    check_dpop_proof,
)
from ._config import PKCEConfig
from ._exceptions import BearerError, BearerUnavailable, InsufficientScope, Reason
from ._provider import Provider
from ._rules import rule_path
from ._session import OIDCCredentials, OIDCUser
from ._websockets import routed_paths

__all__ = ["Mode", "TokenCredentials", "TokenUser"]

METADATA_PATH = "/.well-known/oauth-protected-resource"
#: Verified tokens and introspection answers remembered per process.
MAX_CACHED_TOKENS = 10_000
#: Introspection calls in flight per process; more tokens wait their turn.
MAX_CONCURRENT_INTROSPECTIONS = 16
#: DPoP proof `jti`s remembered per process, each for the proof window.
MAX_SEEN_PROOFS = 100_000


class TokenUser(OIDCUser):
    """The caller of a request authenticated by an access token; `request.user` in Starlette.

    `identity` is the token's `sub`, or its client for a client-credentials token without one;
    `claims` are the token's claims (from its JWT, or from introspection).
    """

    __slots__ = ("_identity",)

    def __init__(self, info: TokenInfo) -> None:
        super().__init__(info.claims)
        self._identity = info.subject

    @property
    def identity(self) -> str:
        return self._identity

    def __repr__(self) -> str:
        return f"TokenUser(identity={self.identity!r})"


class TokenCredentials(OIDCCredentials):
    """The access token a request came with; `request.auth` in Starlette, so `@requires("api:read")`
    checks the token's scopes. An `OIDCCredentials` (`access_token`, `expires_at`; no ID token), so
    code written for sessions works unchanged."""

    __slots__ = ("claims", "client_id", "dpop_bound")

    def __init__(self, info: TokenInfo, access_token: str) -> None:
        super().__init__(info.scopes, access_token=access_token, id_token="", expires_at=int(info.expires_at))
        self.claims = info.claims
        self.client_id = info.client_id
        #: Whether the token is bound to a key (RFC 9449) and came with a valid proof.
        self.dpop_bound = info.jkt is not None

    def __repr__(self) -> str:
        return f"TokenCredentials(client_id={self.client_id!r}, scopes={self.scopes!r}, dpop_bound={self.dpop_bound})"


Mode = Literal["session", "bearer", "either"]
_MODES = ("session", "bearer", "either")


class Modes:
    """How each path authenticates: a session (the default), an access token, or either.

    Longest prefix wins, as for rules. A path whose dot segments or repeated slashes make it
    resolve to a prefix of another mode has no mode (`None`): it is refused, since the app may
    route it either way.
    """

    def __init__(self, bearer_paths: Sequence[str], modes: Mapping[str, Mode]) -> None:
        prefixes = {path.rstrip("/") or "/": "bearer" for path in bearer_paths}
        for path, mode in modes.items():
            if mode not in _MODES:
                raise ValueError(f"modes[{path!r}] must be one of {', '.join(_MODES)}, not {mode!r}")
            if not path.startswith("/") or path.startswith("//") or "?" in path or "#" in path:
                raise ValueError(f"modes: {path!r} is not an absolute path such as /api")
            prefixes[rule_path(path).rstrip("/") or "/"] = mode
        self._prefixes = tuple(sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True))
        #: False when every path takes sessions: the per-request lookup is then skipped.
        self.active = any(mode != "session" for _, mode in self._prefixes)

    def for_request(self, path: str) -> Mode | None:
        resolved = rule_path(path)
        mode = self._match(resolved)
        if resolved != path and self._match(path) != mode:
            return None
        return mode

    def for_scope(self, scope: Scope) -> Mode:
        """The mode of the path the app routes on; a `BearerError` (400) for one that has none."""
        mode = self.for_request(routed_paths(scope)[-1])
        if mode is None:
            raise BearerError("a path that resolves across modes", error=Reason.BEARER_MALFORMED, status_code=400)
        return mode

    def _match(self, path: str) -> Mode:
        for prefix, mode in self._prefixes:
            if prefix == "/" or path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/"):
                return cast(Mode, mode)
        return "session"


class ResourceServer:
    def __init__(self, config: PKCEConfig, provider: Provider) -> None:
        assert config.resource is not None
        self.resource = config.resource
        self._config = config
        self._provider = provider
        parts = urlsplit(self.resource)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        suffix = parts.path.rstrip("/")
        #: RFC 9728 section 3.1: the well-known path, with the resource's path after it.
        self.metadata_path = METADATA_PATH + suffix
        self.metadata_url = self._origin + self.metadata_path
        # Section 3.1 removes only a slash right after the host: a client builds the URL of
        # `https://host/mcp/` with `/mcp/`, which must be found too.
        self._metadata_paths = {self.metadata_path, METADATA_PATH}
        if parts.path not in ("", "/"):
            self._metadata_paths.add(METADATA_PATH + parts.path)
        self.dpop = config.dpop
        self._validator = AccessTokenValidator(
            issuer=config.issuer,
            resource=self.resource,
            algorithms=config.id_token_algorithms,
            leeway=config.clock_leeway,
        )
        self._verified = ExpiringCache(MAX_CACHED_TOKENS)
        self._proofs = ExpiringCache(MAX_SEEN_PROOFS)
        self._introspecting = asyncio.Semaphore(MAX_CONCURRENT_INTROSPECTIONS)

    @property
    def paths(self) -> dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]]:
        """The metadata document's paths: the suffixed form (also with the resource's trailing slash, if
        it has one) and, for a resource with a path, the plain one."""
        return dict.fromkeys(sorted(self._metadata_paths), self.metadata_endpoint)

    async def authenticate(self, scope: Scope, presented: Presented) -> TokenInfo:
        """The token's `TokenInfo` if it is valid here, bound proofs and scopes included."""
        now = time.time()
        token = presented.token
        info: TokenInfo | None = self._verified.get(token, now)
        if info is None:
            if self._validator.is_jwt(token):
                info = await self._provider.verify_access_token(token, self._validator, now=now)
                until = info.expires_at
            else:
                # Each unknown opaque string costs the provider a call: only so many at once.
                info = await self._introspected(token, now)
                until = min(info.expires_at, now + self._config.introspection_cache_ttl)
            # Until `exp`: after it, the token is checked again (the leeway may still let it pass).
            self._verified.put(token, info, until)
        if info.jkt is not None:
            self._check_proof(scope, presented, info, now)
        elif presented.scheme == "dpop":
            raise BearerError("DPoP scheme with a token bound to no key", error=Reason.BEARER_INVALID)
        required = self._config.bearer_required_scopes
        missing = [needed for needed in required if needed not in info.scopes]
        if missing:
            # RFC 6750 section 3: the challenge's `scope` is what a token needs here, all of it; naming
            # only the missing ones would have the client ask for a token that lacks the others.
            raise InsufficientScope(f"sub={info.subject!r} lacks {' '.join(missing)}", scopes=required)
        return info

    async def _introspected(self, token: str, now: float) -> TokenInfo:
        try:
            # The wait for a slot has the same deadline as a call: a flood of junk tokens makes
            # others wait at most that long, then answers 503, rather than queueing without end.
            async with asyncio.timeout(self._config.http_timeout):
                await self._introspecting.acquire()
        except TimeoutError:
            raise BearerUnavailable("every introspection slot busy", error=Reason.INTROSPECTION_UNAVAILABLE) from None
        try:
            return await self._provider.introspect(token, resource=self.resource, now=now)
        finally:
            self._introspecting.release()

    def _check_proof(self, scope: Scope, presented: Presented, info: TokenInfo, now: float) -> None:
        assert info.jkt is not None
        if not self.dpop:
            # Not "dpop_required": with DPoP off no proof would help, and the client must not retry with one.
            raise BearerError("a DPoP-bound token, and PKCE_DPOP is off", error=Reason.BEARER_INVALID)
        if presented.scheme != "dpop":
            # RFC 9449 section 7.2: a bound token sent as a bearer token is refused (no downgrade).
            raise BearerError("a DPoP-bound token without its proof", error=Reason.DPOP_REQUIRED)
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1").split("?", 1)[0] if raw_path else scope["path"]
        jti, iat = check_dpop_proof(
            presented.proof,
            method=scope["method"] if scope["type"] == "http" else "GET",
            url=self._origin + path,
            access_token=presented.token,
            jkt=info.jkt,
            now=now,
            leeway=self._config.clock_leeway,
        )
        # Section 11.1: a proof is used once; it is remembered for as long as its iat is accepted.
        until = iat + DPOP_PROOF_WINDOW + 2 * self._config.clock_leeway
        recorded = self._proofs.add_new(f"{info.jkt} {jti}", until, now)
        if recorded is None:
            # Full of proofs still inside their window: forgetting one would let it be replayed.
            raise BearerUnavailable("DPoP replay cache full", error=Reason.DPOP_CACHE_FULL)
        if not recorded:
            raise BearerError("DPoP proof replayed", error=Reason.DPOP_REPLAYED)

    # -- answers ---------------------------------------------------------------------------------

    def challenges(self, exc: BearerError | None) -> list[str]:
        """`WWW-Authenticate` values for a refusal (RFC 6750 section 3, RFC 9728 section 5.1, RFC 9449
        section 7.1): the Bearer challenge pointing at the metadata, and a DPoP one when DPoP is on."""
        bearer = f'Bearer realm="{self.resource}", resource_metadata="{self.metadata_url}"'
        dpop = f'DPoP algs="{" ".join(DPOP_ALGORITHMS)}"'
        code = exc.oauth_error if exc is not None else None
        if code is not None and exc is not None:
            detail = f', error="{code}", error_description="{exc.message}"'
            if isinstance(exc, InsufficientScope):
                detail += f', scope="{" ".join(exc.scopes)}"'
            if code == "invalid_dpop_proof" and self.dpop:
                dpop += detail
            else:
                bearer += detail
        return [bearer, dpop] if self.dpop else [bearer]

    def metadata(self) -> dict[str, Any]:
        """RFC 9728 section 2."""
        document: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": [self._config.issuer],
            "bearer_methods_supported": ["header"],
        }
        if self._config.bearer_required_scopes:
            document["scopes_supported"] = list(self._config.bearer_required_scopes)
        if self.dpop:
            document["dpop_signing_alg_values_supported"] = list(DPOP_ALGORITHMS)
        return document

    async def metadata_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            response: Response = Response(status_code=405, headers={"Allow": "GET, HEAD"})
        else:
            # Public and the same for everyone: caches and agents may keep it for an hour.
            response = JSONResponse(
                self.metadata(), headers={"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"}
            )
        await response(scope, receive, send)
