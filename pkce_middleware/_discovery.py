"""What the provider says about itself, checked without I/O: discovery metadata and its JWKS.

`ProviderMetadata.parse` turns the discovery document into the few endpoints and lists the
middleware uses, refusing what contradicts the configuration (`DiscoveryMismatch`) or is unusable;
`parse_jwks` keeps only the public signing keys of a JWKS.

References:
    OpenID Connect Discovery 1.0 sections 3 and 4.3 (the issuer must match),
    RFC 7517 section 5 (a key that cannot be used is ignored), RFC 9207 (the `iss` parameter).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc.jwk import JWKRegistry, Key, KeySet

from ._config import LOOPBACK_HOSTS, PKCEConfig
from ._exceptions import DiscoveryMismatch, ProviderError, Reason

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

_ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})


@dataclasses.dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    id_token_algorithms: tuple[str, ...]
    token_endpoint_auth_methods: tuple[str, ...]
    iss_parameter_supported: bool
    #: RFC 7662 (RFC 8414 metadata); only bearer paths with opaque tokens need it.
    introspection_endpoint: str | None = None
    #: OIDC Core 5.3; used only with `PKCE_USERINFO`.
    userinfo_endpoint: str | None = None

    @classmethod
    def configured(cls, config: PKCEConfig) -> ProviderMetadata:
        """A plain OAuth 2.0 provider's endpoints, from the configuration (there is no discovery)."""
        assert config.authorization_endpoint and config.token_endpoint and config.userinfo_endpoint
        return cls(
            # An issuer only if configured: the `iss` of RFC 9207 answers then has one to match.
            issuer=config.issuer,
            authorization_endpoint=config.authorization_endpoint,
            token_endpoint=config.token_endpoint,
            jwks_uri="",
            end_session_endpoint=None,
            id_token_algorithms=(),
            # RFC 6749 section 2.3.1: basic is the method every provider must take.
            token_endpoint_auth_methods=("client_secret_basic",),
            iss_parameter_supported=False,
            userinfo_endpoint=config.userinfo_endpoint,
        )

    @classmethod
    def parse(cls, data: Any, config: PKCEConfig) -> ProviderMetadata:
        """Checked metadata; `DiscoveryMismatch` for a contradiction, else `ProviderError` (`discovery_invalid`)."""
        if not isinstance(data, dict):
            raise ProviderError("metadata is not a JSON object", error=Reason.DISCOVERY_INVALID)
        if data.get("issuer") != config.issuer:
            # Discovery 4.3: a mismatch means the wrong provider, or a provider lying about itself.
            raise DiscoveryMismatch(
                f"PKCE_ISSUER is {config.issuer!r} but the provider's metadata says issuer "
                f"{_shown(data.get('issuer'))}; they must be identical"
            )
        endpoints = {
            name: _endpoint(data.get(name), name) for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
        }
        end_session = data.get("end_session_endpoint")
        introspection = data.get("introspection_endpoint")
        # Read only when used: a provider's odd userinfo_endpoint must not break logins that never call it.
        userinfo = data.get("userinfo_endpoint") if config.userinfo else None
        if userinfo is None and config.userinfo:
            raise DiscoveryMismatch("PKCE_USERINFO is on, but the provider's metadata names no userinfo_endpoint")
        # Discovery section 3 makes the algorithm list REQUIRED; RS256 is what Core section 15.1 says every OP supports.
        offered = _strings(data, "id_token_signing_alg_values_supported") or ("RS256",)
        algorithms = tuple(alg for alg in config.id_token_algorithms if alg in offered)
        if not algorithms:
            raise DiscoveryMismatch(
                f"PKCE_ID_TOKEN_ALGORITHMS ({', '.join(config.id_token_algorithms)}) shares no algorithm with the "
                f"provider's id_token_signing_alg_values_supported",
                error=Reason.ALGORITHM_MISMATCH,
            )
        return cls(
            issuer=config.issuer,
            end_session_endpoint=None if end_session is None else _endpoint(end_session, "end_session_endpoint"),
            id_token_algorithms=algorithms,
            # Discovery section 3: the default when the member is absent.
            token_endpoint_auth_methods=_strings(data, "token_endpoint_auth_methods_supported")
            or ("client_secret_basic",),
            iss_parameter_supported=data.get("authorization_response_iss_parameter_supported") is True,
            introspection_endpoint=None
            if introspection is None
            else _endpoint(introspection, "introspection_endpoint"),
            userinfo_endpoint=None if userinfo is None else _endpoint(userinfo, "userinfo_endpoint"),
            **endpoints,
        )


def _endpoint(value: object, name: str) -> str:
    if not isinstance(value, str) or not _is_provider_url(value):
        raise ProviderError(f"metadata {name} is missing or not an https URL", error=Reason.DISCOVERY_INVALID)
    return value


def _is_provider_url(value: str) -> bool:
    """https, or http on a loopback host; and parseable by urllib (authlib) and httpx alike.

    A URL only one of them can parse would pass here and fail later, on every login.
    """
    try:
        parts = urlsplit(value)
        port_ok = parts.port != 0  # reading `port` is what validates it
        host_ok = bool(httpx.URL(value).host)  # reading `host` is what decodes an xn-- label
    except (ValueError, httpx.InvalidURL):  # idna's errors are ValueErrors too
        return False
    if not port_ok or not host_ok or not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


def _strings(data: dict[str, Any], name: str) -> tuple[str, ...] | None:
    """A metadata member that must be a JSON array of strings; `None` when absent.

    A bare string must not pass: `"RS256" in "HS256,RS256"` is true.
    """
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProviderError(f"metadata {name} is not a list of strings", error=Reason.DISCOVERY_INVALID)
    return tuple(value)


def _shown(value: object) -> str:
    """A value from the provider, short enough for a log line or an error message."""
    if isinstance(value, str):
        return repr(value[:100])
    # Never repr() the rest: a list nested 900 deep parses, but may not repr on a deeper stack.
    return "nothing" if value is None else f"a JSON {type(value).__name__}"


def parse_jwks(data: Any) -> KeySet:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ProviderError("JWKS is not a key set", error=Reason.JWKS_INVALID)
    keys: list[Key] = []
    unusable = 0
    for item in data["keys"]:
        # Only public signing keys; a symmetric ("oct") key in a JWKS would be a trap for HS* confusion.
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("kty"), str)
            or item["kty"] not in _ASYMMETRIC_KEY_TYPES
            or item.get("use", "sig") != "sig"
        ):
            continue
        if any(member in item for member in ("d", "p", "q")):
            continue
        try:
            key = JWKRegistry.import_key(item)
            key.ensure_kid()  # KeySet() would compute a missing kid outside this try
        except Exception:
            # RFC 7517 section 5: a key we cannot use is ignored, not a reason to refuse its
            # neighbours. joserfc raises whatever its parsing meets (KeyError for an unknown
            # curve, binascii.Error for bad base64, ...), so no narrower class would do.
            unusable += 1
            continue
        keys.append(key)
    if unusable:
        logger.warning("JWKS: ignored %d key(s) that could not be imported", unusable)
    return KeySet(keys)
