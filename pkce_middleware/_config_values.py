"""The parsers and checkers behind `PKCEConfig`'s options: turning a `PKCE_*` variable's text
into a value (`_PARSERS`, named by each field's `parse` metadata), checking secret keys, URLs and
paths, and showing a default in the README's option table (`_show`).

A wrong value raises `ConfigError` naming the variable, never the value (it may be a secret).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import CommaSeparatedStrings, Secret

from ._exceptions import ConfigError

__all__ = ["LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_MIN_KEY_LENGTH = 32
_MIN_KEY_BITS = 128
_MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def _show(value: object, parse: str) -> str:
    if value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{(' ' if parse == 'scopes' else ',').join(value)}`" if value else "none"
    return f"`{value}`"


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str.strip,
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "secret": lambda raw: Secret(raw.strip()),
    "secrets": lambda raw: tuple(Secret(item) for item in CommaSeparatedStrings(raw) if item),
    "list": lambda raw: tuple(item for item in CommaSeparatedStrings(raw) if item),
    "scopes": str.split,
}


def _check_secret_keys(keys: str | Secret | Iterable[str | Secret]) -> tuple[Secret, ...]:
    if isinstance(keys, Secret):
        keys = [keys]
    elif isinstance(keys, str):
        keys = [key.strip() for key in keys.split(",") if key.strip()]  # "new,old", as in PKCE_SECRET_KEY
    checked = tuple(Secret(str(key)) for key in keys)
    if not checked:
        raise ConfigError(f"PKCE_SECRET_KEY is required but empty; make one with: {_MAKE_A_KEY}")
    for index, key in enumerate(checked, start=1):
        if _estimated_bits(str(key)) < _MIN_KEY_BITS or len(str(key).encode()) < _MIN_KEY_LENGTH:
            raise ConfigError(
                f"PKCE_SECRET_KEY key #{index} is too weak: use at least {_MIN_KEY_LENGTH} random characters, "
                f"e.g. {_MAKE_A_KEY}"
            )
    return checked


def _estimated_bits(key: str) -> float:
    # A rough (Shannon) estimate: it cannot prove randomness, but it does refuse "aaaa..." and
    # "changeme" repeated, which are the mistakes people actually make.
    counts = Counter(key)
    per_char = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values()) if key else 0.0
    return per_char * len(key)


def _check_url(name: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise ConfigError(f"{name} must be an absolute http(s) URL without a fragment")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(f"{name} must use https (plain http is allowed only for localhost and 127.0.0.1)")


def _check_path(name: str, value: str) -> str:
    if not value.startswith("/") or value.startswith("//") or "?" in value or "#" in value:
        raise ConfigError(f"{name} must hold absolute paths such as /auth/logout")
    return value
