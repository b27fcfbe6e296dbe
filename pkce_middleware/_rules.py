"""Who may enter: rules on the signed-in user's claims, for the whole app and per path, and the
step-up they can ask for (a stronger or a more recent login).

A `Require` holds up to four kinds of rule: email (allowed domains or addresses, and a verified
address), groups (membership in one of them, read from a claim path), `acr` (how the user
authenticated) and `max_age` (how long ago). A user must pass every kind that is set. Email and
group rules can only refuse (403): another login of the same user would not change them. `acr`
and `max_age` ask for a new login at the provider (step-up), since that can meet them.

`Rules` resolves the rule of a path once per request: the longest matching prefix among the path
rules, each merged over the global rule (a kind the path rule does not set is the global one).
Everything here is plain computation on claims already validated, with no I/O, so it runs on
every request; its cost is in `benchmarks/`.

References:
    OpenID Connect Core 1.0 sections 2 (`acr`, `auth_time`), 3.1.2.1 (`acr_values`, `max_age`)
    and 3.1.3.7 (checking `auth_time` when `max_age` was sent); RFC 9470 (step-up).
"""

from __future__ import annotations

import dataclasses
import posixpath
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypedDict

from ._exceptions import AccessDenied, Reason, StepUpRequired

__all__ = ["Require"]

#: The email-verified claim as some providers send it (AWS Cognito: the string "true").
_TRUE_STRINGS = frozenset({"true"})
#: What an `acr` value cannot hold: they are sent space-separated and echoed in a quoted string.
_UNQUOTABLE = frozenset(' "\\')
#: Paths whose rules `Rules.for_request` remembers.
_MAX_PATHS = 4096
#: Sessions whose email/group verdict a rule remembers (about as many as the session cache holds).
_MAX_VERDICTS = 4096


def _strings(name: str, values: Sequence[str] | None, *, lower: bool = False) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        # Require(groups="admins") would otherwise allow the groups "a", "d", "m", ...
        raise TypeError(f"Require({name}=...) takes a list of strings, not one string")
    if any(not isinstance(value, str) for value in values):
        raise TypeError(f"Require({name}=...) takes a list of strings")
    checked = tuple(ascii_lower(value.strip()) if lower else value.strip() for value in values)
    if not all(checked):
        raise ValueError(f"Require({name}=...) needs non-empty strings")
    return checked


class RuleOptions(TypedDict, total=False):
    """`Require`'s keywords, which the route helpers (`restrict`, FastAPI's `require`) take as they are."""

    email_domains: Sequence[str] | None
    emails: Sequence[str] | None
    groups: Sequence[str] | None
    groups_claim: str | None
    acr_values: Sequence[str] | None
    max_age: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Require:
    """A rule on the signed-in user, for the whole app (the `PKCE_ALLOWED_*` options), a path
    (`PKCEMiddleware(rules={"/admin": Require(groups=["admins"])})`) or a route (`@restrict(...)`,
    or FastAPI's `Depends(require(...))`).

    `email_domains` (a leading `*.` allows subdomains) and `emails` are compared case-insensitively
    with the `email` claim, which must also be verified (`email_verified`); the email kind passes
    when either list matches. `groups`: the user must be in one of them, read from `groups_claim`
    (a claim name, or a dotted path such as `realm_access.roles`; a list or a single string).
    `acr_values`: the login's `acr` must be one of them. `max_age`: the login (`auth_time`) must be
    at most this many seconds old. A browser that fails `acr_values` or `max_age` is sent to the
    provider again (step-up); one that fails the others gets a 403.

    On a path rule, a kind left at `None` is the global rule's; an empty list lifts that kind there.
    """

    email_domains: Sequence[str] | None = None
    emails: Sequence[str] | None = None
    groups: Sequence[str] | None = None
    groups_claim: str | None = None
    acr_values: Sequence[str] | None = None
    max_age: int | None = None
    # Compiled in __post_init__ for the per-request check.
    _exact_domains: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    _parent_domains: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _emails: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    _groups: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    _acr: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    _check_email: bool = dataclasses.field(init=False, repr=False, compare=False)
    _groups_claim: str = dataclasses.field(init=False, repr=False, compare=False)
    _verdicts: dict[int, tuple[Mapping[str, Any], Reason | None]] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised once, so every check can trust the values
        domains = _strings("email_domains", self.email_domains, lower=True)
        for domain in domains or ():
            bare = domain.removeprefix("*.")
            if "@" in bare or "*" in bare or "/" in bare or "." not in bare.strip("."):
                raise ValueError(f"Require(email_domains=...): {domain!r} is not a domain such as example.com")
        emails = _strings("emails", self.emails, lower=True)
        if any(email.count("@") != 1 or email.startswith("@") for email in emails or ()):
            raise ValueError("Require(emails=...) needs whole addresses such as ann@example.com")
        set_(self, "email_domains", domains)
        set_(self, "emails", emails)
        set_(self, "groups", _strings("groups", self.groups))
        set_(self, "acr_values", _strings("acr_values", self.acr_values))
        if any(
            not value.isprintable() or " " in value or '"' in value or "\\" in value for value in self.acr_values or ()
        ):
            # Sent space-separated, and echoed in a quoted WWW-Authenticate parameter (RFC 9470).
            raise ValueError("Require(acr_values=...) takes one value per item, without spaces, quotes or backslashes")
        if self.groups_claim is not None and not self.groups_claim.strip("."):
            raise ValueError("Require(groups_claim=...) must name a claim")
        if self.max_age is not None and (type(self.max_age) is not int or not 0 <= self.max_age <= 10**9):
            raise ValueError("Require(max_age=...) must be a number of seconds, 0 or more")
        set_(self, "_exact_domains", frozenset(d for d in domains or () if not d.startswith("*.")))
        set_(self, "_parent_domains", tuple(d[1:] for d in domains or () if d.startswith("*.")))
        set_(self, "_emails", frozenset(emails or ()))
        set_(self, "_groups", frozenset(self.groups or ()))
        set_(self, "_acr", frozenset(self.acr_values or ()))
        set_(self, "_check_email", bool(domains or emails))
        set_(self, "_groups_claim", self.groups_claim or "groups")
        set_(self, "_verdicts", {})

    @property
    def restricts(self) -> bool:
        """Whether this rule can refuse anyone (an empty `Require()` lets every user in)."""
        return bool(self.email_domains or self.emails or self.groups or self.acr_values) or self.max_age is not None

    def over(self, base: Require) -> Require:
        """This rule where it speaks, `base` where it does not (a path rule over the global one)."""
        own_email = self.email_domains is not None or self.emails is not None
        return Require(
            email_domains=(self.email_domains or ()) if own_email else base.email_domains,
            emails=(self.emails or ()) if own_email else base.emails,
            groups=self.groups if self.groups is not None else base.groups,
            groups_claim=self.groups_claim or base.groups_claim,
            acr_values=self.acr_values if self.acr_values is not None else base.acr_values,
            max_age=self.max_age if self.max_age is not None else base.max_age,
        )

    # -- the checks ------------------------------------------------------------------------------

    def refusal(self, claims: Mapping[str, Any]) -> Reason | None:
        """Why the email or group rule refuses these claims, or `None` (no step-up can change these).

        A session's claims are one read-only mapping for all its requests (`_session`), so the
        answer is remembered per mapping: the checks run once per session and process, and a
        request pays a dictionary lookup. Other mappings (a plain dict could change) are checked
        every time.
        """
        if type(claims) is not MappingProxyType:
            return self._refusal(claims)
        known = self._verdicts.get(id(claims))
        if known is not None and known[0] is claims:
            return known[1]
        reason = self._refusal(claims)
        if len(self._verdicts) >= _MAX_VERDICTS:
            self._verdicts.clear()  # cheaper than LRU bookkeeping on every hit; refilled as sessions come back
        # The mapping is kept with its verdict, so its id cannot be reused while the entry lives.
        self._verdicts[id(claims)] = (claims, reason)
        return reason

    def _refusal(self, claims: Mapping[str, Any]) -> Reason | None:
        if self._check_email:
            reason = self._email_refusal(claims)
            if reason is not None:
                return reason
        if self._groups and not _member(claim_at(claims, self._groups_claim), self._groups):
            return Reason.GROUP_NOT_ALLOWED
        return None

    def _email_refusal(self, claims: Mapping[str, Any]) -> Reason | None:
        email = claims.get("email")
        # One "@" only: `a@evil.test@example.com` is no address a mail server would agree on.
        if type(email) is not str or email.count("@") != 1:
            return Reason.EMAIL_NOT_ALLOWED
        verified = claims.get("email_verified")
        if verified is not True and not (type(verified) is str and verified.lower() in _TRUE_STRINGS):
            return Reason.EMAIL_UNVERIFIED
        email = ascii_lower(email)
        if email in self._emails:
            return None
        domain = email[email.rindex("@") + 1 :]
        if domain in self._exact_domains or (self._parent_domains and domain.endswith(self._parent_domains)):
            return None
        return Reason.EMAIL_NOT_ALLOWED

    def step_up_reason(self, claims: Mapping[str, Any], *, now: float, leeway: int) -> Reason | None:
        """Why this login is not strong or recent enough, or `None`.

        `max_age` is held against `auth_time` with the clock leeway: the provider's clock is not
        ours, and without it a short `max_age` would send a user who just signed in straight back.
        """
        if self._acr:
            acr = claims.get("acr")
            # A string only: a list or an object in the token must not be hashed (and raise) here.
            if type(acr) is not str or acr not in self._acr:
                return Reason.ACR_NOT_ALLOWED
        if self.max_age is not None:
            auth_time = claims.get("auth_time")
            if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
                return Reason.LOGIN_TOO_OLD
            # NaN, infinities, huge integers and times in the future date no login (and would make
            # the subtraction below pass, or overflow).
            if not 0 <= auth_time <= now + leeway or now - auth_time > self.max_age + leeway:
                return Reason.LOGIN_TOO_OLD
        return None

    def check(
        self, claims: Mapping[str, Any], *, now: float | None = None, leeway: int
    ) -> AccessDenied | StepUpRequired | None:
        """The refusal of a request with these claims: 403 (`AccessDenied`), a step-up, or `None`.
        `now` defaults to the clock, read only when a `max_age` needs it."""
        reason = self.refusal(claims)
        if reason is not None:
            return AccessDenied(f"sub={claims.get('sub')!r}", error=reason)
        if not self._acr and self.max_age is None:
            return None
        reason = self.step_up_reason(claims, now=time.time() if now is None else now, leeway=leeway)
        if reason is not None:
            return StepUpRequired(
                f"sub={claims.get('sub')!r}",
                error=reason,
                acr_values=tuple(self.acr_values or ()),
                max_age=self.max_age,
            )
        return None


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """`text` with A-Z lowered and nothing else: `str.lower` would turn the Kelvin sign into "k",
    so `x@\u212apmg.com`, another domain to the provider that verified it, would pass as kpmg.com."""
    return text.translate(_ASCII_LOWER)


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named `path`, or, when there is none, the value at its dotted path.

    A whole name is tried first because namespaced claims (Auth0's `https://example.com/roles`)
    hold dots of their own.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _member(value: Any, allowed: frozenset[str]) -> bool:
    """Whether the groups claim `value` (a list, or a single string) names one of `allowed`."""
    if type(value) is str:
        return value in allowed
    if isinstance(value, list | tuple):
        try:
            return not allowed.isdisjoint(value)
        except TypeError:  # an unhashable member (an object in the list) must not raise
            return any(type(item) is str and item in allowed for item in value)
    return False


def rule_path(path: str) -> str:
    """`path` as rules see it: dot segments resolved and repeated slashes collapsed.

    A server or app that resolves `/public/../admin` to `/admin` must not let it ride on the
    rule of `/public`; most paths have neither, and are returned as they are.
    """
    if "//" not in path and "/." not in path:
        return path
    resolved = posixpath.normpath("/" + path.lstrip("/"))
    resolved = "/" + resolved.lstrip("/")  # normpath keeps a leading "//"
    return resolved + "/" if path.endswith("/") and resolved != "/" else resolved


class Rules:
    """The rule of every path: path rules over the global one, longest prefix first."""

    def __init__(self, base: Require, paths: Mapping[str, Require]) -> None:
        self.base = base
        prefixes: list[tuple[str, Require]] = []
        for prefix, rule in paths.items():
            if not isinstance(rule, Require):
                raise TypeError(f"rules[{prefix!r}] must be a Require")
            if not prefix.startswith("/") or prefix.startswith("//") or "?" in prefix or "#" in prefix:
                raise ValueError(f"rules: {prefix!r} is not an absolute path such as /admin")
            prefixes.append((rule_path(prefix).rstrip("/") or "/", rule.over(base)))
        prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        self._paths = tuple(prefixes)
        self._base = base if base.restricts else None
        self._base_only: tuple[Require, ...] = (self._base,) if self._base is not None else ()
        #: The rules of paths seen lately (a request's path is mostly one of a few).
        self._by_path: dict[str, tuple[Require, ...]] = {}
        #: False when nothing can refuse anyone: the per-request check is then skipped entirely.
        self.active = self._base is not None or any(rule.restricts for _, rule in prefixes)

    def for_path(self, path: str) -> Require | None:
        """The rule for `path` (dot segments resolved), or `None` when it lets everyone in."""
        return self._match(rule_path(path)) if self._paths else self._base

    def for_request(self, path: str) -> tuple[Require, ...]:
        """Every rule a request for `path` must pass (none: everyone is let in).

        A path with dot segments or repeated slashes must pass both the rule of the path it
        resolves to and that of the path as sent: an app routing on the path as sent (Starlette's
        `Mount("/admin")` serves `/admin/../public`) must not see it under the rule of `/public`,
        nor one that resolves it (`/public/../admin`) under the rule of `/public`.
        """
        if not self._paths:
            return self._base_only
        known = self._by_path.get(path)
        if known is not None:
            return known
        resolved = rule_path(path)
        rule = self._match(resolved)
        literal = self._match(path) if resolved != path else rule
        found = tuple(r for r in (rule, literal if literal is not rule else None) if r is not None)
        if len(self._by_path) >= _MAX_PATHS:
            self._by_path.clear()  # paths are the client's: a bounded memo, refilled as they come back
        self._by_path[path] = found
        return found

    def _match(self, path: str) -> Require | None:
        for prefix, rule in self._paths:
            if prefix == "/" or path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/"):
                return rule if rule.restricts else None
        return self._base
