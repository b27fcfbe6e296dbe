"""Claims as a session keeps them: deeply read-only, and without what only served validation.

One opened `Session` serves every request of its cookie (`SessionCodec`'s cache), so an app that
appended to `request.user.claims["groups"]` would change the claims of every later request, and
of the cookie sealed at the next write. The claims are frozen once, when the session is built:
free per request, where a deep copy per request would not be.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

__all__: list[str] = []

#: ID token members that only served validation; they would only make the cookie larger.
_VALIDATION_ONLY_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})
#: What JSON decodes to besides lists and objects: immutable already, so never copied.
_ATOMS = frozenset({str, int, float, bool, type(None)})


class _FrozenDict(dict[str, Any]):
    """A JSON object inside the claims (`address`, say): still a `dict`, so `json.dumps`, `==` and
    `.copy()` (which gives a plain, mutable dict) work as before, but one that refuses changes."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the claims are read-only; change a copy (claims.copy(), copy.deepcopy(claims))")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        # copy, deepcopy and pickle make plain dicts (the default would rebuild one item by item).
        return dict, (dict(self),)


def _frozen(value: Any) -> Any:
    """`value` (decoded JSON) that nobody can change: lists become tuples, objects `_FrozenDict`s."""
    if type(value) in _ATOMS:  # most claims: a type lookup, not a chain of isinstance calls
        return value
    if isinstance(value, list | tuple):
        return tuple([item if type(item) in _ATOMS else _frozen(item) for item in value])
    if isinstance(value, Mapping):
        return _FrozenDict({key: item if type(item) in _ATOMS else _frozen(item) for key, item in value.items()})
    return value


def frozen_claims(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType({k: v if type(v) in _ATOMS else _frozen(v) for k, v in claims.items()})


def kept(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """The claims as a session keeps them: frozen, without those that only served validation."""
    return MappingProxyType(
        {k: v if type(v) in _ATOMS else _frozen(v) for k, v in claims.items() if k not in _VALIDATION_ONLY_CLAIMS}
    )


def frozen_parsed(claims: dict[str, Any]) -> Mapping[str, Any]:
    """`frozen_claims` of a dict just decoded, which nobody else holds: frozen in place, not copied."""
    for key, value in claims.items():
        if type(value) not in _ATOMS:
            claims[key] = _frozen(value)  # a value replaced, no key added: the iteration stays valid
    return MappingProxyType(claims)


def kept_parsed(claims: dict[str, Any]) -> Mapping[str, Any]:
    """`kept` of a dict just decoded, which nobody else holds."""
    for name in _VALIDATION_ONLY_CLAIMS:
        claims.pop(name, None)
    return frozen_parsed(claims)
