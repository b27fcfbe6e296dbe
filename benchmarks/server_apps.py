"""The apps `bench_server` and `soak` serve under uvicorn: one hello app, behind nothing or behind a login layer.

Each is imported by a uvicorn process of its own (`python -m uvicorn benchmarks.server_apps:<name>
--factory`) and configured through its environment, which `bench_server` sets:

* `bare`: the hello app alone, the baseline;
* `pkce`: `PKCEMiddleware(hello, config=PKCEConfig.from_environ())`, so the `PKCE_*` variables
  choose the store (`PKCE_SESSION_STORE=cookie` or a Redis URL) and the provider;
* `authlib_recipe`: the Authlib + Starlette `SessionMiddleware` recipe: a request whose session has
  no `user` is sent to the provider by Authlib's `authorize_redirect`, any other reaches the same
  hello response. The key of SessionMiddleware is `BENCH_SESSION_SECRET`; the provider is
  `PKCE_ISSUER` and `PKCE_CLIENT_ID`, as for `pkce`.

The hello response is the same in all three (`200`, `hello`, with a Content-Length), so the rows of
the table differ only in the layer in front of it.

`soak` serves `whoami`: `PKCEMiddleware` (configured by `PKCE_*`, as `pkce`) in front of an app that
answers every path with the signed-in user's identity (`sub`) and nothing else, so the soak can
tell whose session answered each request.
"""

from __future__ import annotations

import logging
import os

from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pkce_middleware import PKCEConfig, PKCEMiddleware

__all__ = ["BODY", "authlib_recipe", "bare", "pkce", "whoami"]

BODY = b"hello"
HEADERS = ((b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(BODY)).encode()))


async def send_hello(send: Send) -> None:
    """The hello response, in messages made for this response: a layer in front may add headers to
    them in place (the middleware's Set-Cookie, SessionMiddleware's `Vary: Cookie`), so one shared
    message would collect every earlier response's headers."""
    start: Message = {"type": "http.response.start", "status": 200, "headers": list(HEADERS)}
    await send(start)
    await send({"type": "http.response.body", "body": BODY, "more_body": False})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """200 `hello` over HTTP, and a well-behaved lifespan (uvicorn runs with `--lifespan on`)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send_hello(send)


async def send_identity(scope: Scope, receive: Receive, send: Send) -> None:
    """200 with the identity of `scope["user"]` (what PKCEMiddleware set for this request) as the body."""
    if scope["type"] == "lifespan":
        await hello(scope, receive, send)
        return
    body = str(scope["user"].identity).encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def bare() -> ASGIApp:
    return hello


def pkce() -> ASGIApp:
    return PKCEMiddleware(hello, config=PKCEConfig.from_environ())


def whoami() -> ASGIApp:
    """`send_identity` behind the middleware, whose log (INFO and up) goes to stderr: the soak reads it."""
    logger = logging.getLogger("pkce_middleware")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("pkce_middleware %(levelname)s %(message)s [%(asctime)s]"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return PKCEMiddleware(send_identity, config=PKCEConfig.from_environ())


def authlib_recipe() -> ASGIApp:
    """Authlib's Starlette client behind SessionMiddleware, as its documentation writes the login check.

    The check is the recipe's (`request.session.get("user")`, else `authorize_redirect`), in front
    of the hello response itself rather than behind Starlette's router, so that this row, like the
    pkce rows, adds only the login layer to `bare`. Authlib reads the provider's metadata only when
    it redirects, which a request with a session never does.
    """
    from authlib.integrations.starlette_client import OAuth  # only this server needs it

    issuer = os.environ["PKCE_ISSUER"].rstrip("/")
    oauth = OAuth()
    oauth.register(
        "op",
        client_id=os.environ["PKCE_CLIENT_ID"],
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"},
    )
    client = oauth.create_client("op")

    async def homepage(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await hello(scope, receive, send)
            return
        request = Request(scope, receive)
        if not request.session.get("user"):
            response: Response = await client.authorize_redirect(request, f"{request.base_url}auth")
            await response(scope, receive, send)
            return
        await send_hello(send)

    return SessionMiddleware(homepage, secret_key=os.environ["BENCH_SESSION_SECRET"], https_only=True)
