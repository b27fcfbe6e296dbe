"""One line per request, and one per token grant, on stdout (see the package docstring)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from django.http import HttpRequest, HttpResponse


def say(*fields: object) -> None:
    print("DJOP", *fields, flush=True)


def token_fingerprint(token: str) -> str:
    """A token's fingerprint in the log (the start of its SHA-256: the token itself is not logged)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


class RequestLog:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        grant = None
        if request.method == "POST" and request.path.rstrip("/").endswith("/token"):
            # `body` first: Django keeps it, so the view can still read the form afterwards.
            _ = request.body
            grant = (str(request.POST.get("grant_type") or "-"), _client_id(request))
        response = self.get_response(request)
        if grant is not None:
            say("grant", grant[0], grant[1], "ok" if response.status_code == 200 else _error(response))
            issued = _access_token(response)
            if issued is not None:
                say("issued", grant[0], grant[1], token_fingerprint(issued))
        say(request.method, request.path, response.status_code)
        return response


def _client_id(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            user = base64.b64decode(header[6:]).decode("utf-8").split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            return "-"
        return unquote_plus(user) or "-"
    return str(request.POST.get("client_id") or "-")


def _access_token(response: HttpResponse) -> str | None:
    """The access token a successful token response carries."""
    if response.status_code != 200:
        return None
    try:
        body: Any = json.loads(response.content)
    except ValueError:
        return None
    token = body.get("access_token") if isinstance(body, dict) else None
    return token if isinstance(token, str) and token else None


def _error(response: HttpResponse) -> str:
    try:
        body: Any = json.loads(response.content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error else f"http_{response.status_code}"
