"""The HTTP calls to the identity provider, through one shared `httpx.AsyncClient`.

Each call has one deadline, start to finish (httpx's timeouts are per read, so a provider that
drips bytes would otherwise hold a request open for ever), and a cap on the size of what it reads.
Its failures leave as `ProviderError`/`ProviderTimeout` with the reason codes of its `Call`.
Token endpoint calls carry our client authentication. What the answers mean is for `_provider`
and the modules beside it (`_provider_keys`, `_provider_userinfo`, `_provider_bearer`), and,
without I/O, `_discovery` and `_tokens`, to decide.

References:
    RFC 6749 sections 2.3.1 (client authentication) and 4.1.3 (token request).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any
from urllib.parse import quote_plus

import httpx
from authlib.oauth2.auth import ClientAuth

from ._config import PKCEConfig
from ._discovery import ProviderMetadata
from ._exceptions import ProviderError, ProviderTimeout, Reason
from ._tokens import Grant, check_token_answer

__all__: list[str] = []

MAX_RESPONSE_BYTES = 512 * 1024


@dataclasses.dataclass(frozen=True)
class Call:
    """One kind of call to the provider, and the reason codes of its failures."""

    name: str
    #: An error status (for GETs; a token call's status is judged by `check_token_answer`).
    failed: Reason
    #: Not JSON, or larger than we read.
    unreadable: Reason
    timeout: Reason


DISCOVERY = Call("discovery", Reason.DISCOVERY_FAILED, Reason.DISCOVERY_INVALID, Reason.DISCOVERY_TIMEOUT)
JWKS = Call("jwks", Reason.JWKS_FAILED, Reason.JWKS_INVALID, Reason.JWKS_TIMEOUT)
USERINFO = Call("userinfo", Reason.USERINFO_FAILED, Reason.USERINFO_INVALID, Reason.USERINFO_TIMEOUT)
INTROSPECTION = Call(
    "introspection",
    Reason.INTROSPECTION_UNAVAILABLE,
    Reason.INTROSPECTION_UNAVAILABLE,
    Reason.INTROSPECTION_UNAVAILABLE,
)


def token_call(grant: Grant) -> Call:
    return Call(grant.name, grant.endpoint_error, grant.unreadable, grant.timeout)


class ProviderClient:
    """The HTTP client of one provider: calls with a deadline and a size cap, and client authentication."""

    def __init__(self, config: PKCEConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport
        self.client = self._new_client()

    async def aclose(self) -> None:
        await self.client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=self._config.http_timeout,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "pkce_middleware"},
        )

    def open(self) -> httpx.AsyncClient:
        """The client, replaced if closed; never two open at once (no await between test and swap)."""
        if self.client.is_closed:
            self.client = self._new_client()
        return self.client

    def client_auth(self, metadata: ProviderMetadata) -> ClientAuth:
        config = self._config
        secret = config.client_secret_value
        method = config.token_endpoint_auth_method
        if method is None:
            if secret is None:
                method = "none"
            elif "client_secret_basic" not in metadata.token_endpoint_auth_methods and (
                "client_secret_post" in metadata.token_endpoint_auth_methods
            ):
                method = "client_secret_post"
            else:
                method = "client_secret_basic"
        if method == "client_secret_basic":
            # RFC 6749 section 2.3.1: both parts are form-encoded before they are joined by ":".
            return ClientAuth(quote_plus(config.client_id), quote_plus(secret or ""), method)
        return ClientAuth(config.client_id, secret, method)

    async def post_token(self, metadata: ProviderMetadata, body: str, grant: Grant) -> dict[str, Any]:
        """POST `body` to the token endpoint with our client authentication; the checked answer."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        url, headers, body = self.client_auth(metadata).prepare("POST", metadata.token_endpoint, headers, body)
        response, data = await self.call("POST", url, token_call(grant), headers=headers, content=body)
        return check_token_answer(response.status_code, data, grant)

    async def get_json(self, url: str, call: Call) -> Any:
        response, data = await self.call("GET", url, call)
        if response.status_code != 200:
            raise ProviderError(f"{call.name} at {url} answered HTTP {response.status_code}", error=call.failed)
        return data

    async def call(self, method: str, url: str, call: Call, **kwargs: Any) -> tuple[httpx.Response, Any]:
        """One request with one deadline and a size cap; the body parsed as JSON."""
        response, body = await self.call_raw(method, url, call, **kwargs)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: JSON nested a thousand deep
            if response.status_code != 200:
                # An error status with an HTML (or empty) body: the status is the news, not the body.
                return response, None
            raise ProviderError(
                f"{call.name} answer (HTTP {response.status_code}) is not JSON", error=call.unreadable
            ) from None
        return response, data

    async def call_raw(self, method: str, url: str, call: Call, **kwargs: Any) -> tuple[httpx.Response, bytes]:
        """One request with one deadline and a size cap; the body as bytes."""
        client = self.open()
        try:
            async with asyncio.timeout(self._config.http_timeout):
                async with client.stream(method, url, **kwargs) as response:
                    chunks = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_RESPONSE_BYTES:
                            raise ProviderError(
                                f"{call.name} answer larger than {MAX_RESPONSE_BYTES} bytes", error=call.unreadable
                            )
                        chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderTimeout(
                f"{call.name} at {url} took longer than {self._config.http_timeout}s", error=call.timeout
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ProviderError(
                f"{call.name} at {url} failed: {type(exc).__name__}", error=Reason.PROVIDER_UNREACHABLE
            ) from None
        return response, b"".join(chunks)
